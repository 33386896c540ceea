"""The replay environment: one user's logged history as a sequence of profile-update decisions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from interestgym.envs.engine import ReplayEngine
from interestgym.envs.replay_data import (
    ProtocolSpec,
    ReplayData,
    load_replay_data,
    targets_without_negatives_text,
)

from interestgym.core.features import (
    FEATURES,
    N_FEATURES,
    observation_bounds,
)
from interestgym.core.interest import ScoringConfig
from interestgym.core.protocol import ACTION_NAMES, stack_actions
from interestgym.core.rules import make_rule
from interestgym.data.dataset import Dataset
from interestgym.errors import InterestGymError

ENV_ID = "interestgym/InterestReplay-v0"


@dataclass(frozen=True, eq=False)
class StepPoints:
    """The scoring points one step ranked for the agent (``info["points"]``).

    One object, not arrays in the info dict: their length changes from step to step, and Gymnasium's
    ``SyncVectorEnv`` / ``AsyncVectorEnv`` stack every array of an info into one batch array (which
    fails on a step with another number of points); an object is kept as it is.
    """

    index: np.ndarray  #: (P,) global scoring-point indices (``ReplayData``'s point order)
    metrics: dict[str, np.ndarray]  #: each metric's value at each point, (P,)

    def __len__(self) -> int:
        return len(self.index)

    def __eq__(self, other: object) -> bool:  # the same points and values (Gymnasium's env checker compares infos)
        if not isinstance(other, StepPoints):
            return NotImplemented
        return (np.array_equal(self.index, other.index) and self.metrics.keys() == other.metrics.keys()
                and all(np.array_equal(v, other.metrics[k], equal_nan=True) for k, v in self.metrics.items()))

    __hash__ = None  # type: ignore[assignment]  (mutable arrays inside: not hashable, as a dict of arrays is not)


def _observation_table() -> str:
    rows = [f"    | {i:<3} | {f.name:<22} | {f.definition:<92} | {f.low:>4g} | {f.high:>3g} |" for i, f in enumerate(FEATURES)]
    head = f"    | {'#':<3} | {'feature':<22} | {'definition':<92} | {'min':>4} | {'max':>3} |"
    sep = f"    |{'-' * 5}|{'-' * 24}|{'-' * 94}|{'-' * 6}|{'-' * 5}|"
    return "\n".join([head, sep, *rows])


class RenderModeError(InterestGymError, TypeError):
    """A render mode was asked for; the env has none. A TypeError too, as Gymnasium's convention for an
    unsupported keyword: SB3's ``make_vec_env`` (which asks for ``rgb_array``) then retries without it."""


def reject_render_mode(render_mode: str | None) -> None:
    if render_mode is not None:
        raise RenderModeError(f"render_mode={render_mode!r}: this env does not render; expected None")


def resolve_rule(value: Any, argument: str) -> Any:
    """A rule given as JSON: its name (default parameters) or ``{"name": NAME, "params": {...}}`` (the form of a
    ``baselines.json`` entry's tuned parameters), made into the rule, so that ``gym.make``'s kwargs, and its
    ``spec.to_json()``, can hold it. Anything else is returned as it is (:func:`check_env_arguments` checks it)."""
    if isinstance(value, str):
        name, params = value, {}
    elif isinstance(value, dict):
        unknown = sorted(set(value) - {"name", "params"})
        params = value.get("params", {})
        if unknown or not isinstance(value.get("name"), str) or not isinstance(params, dict):
            raise InterestGymError(f"{argument}={value!r}: expected a rule, a rule's name, or {{'name': NAME, 'params': "
                                   "{PARAMETER: VALUE, ...}}")
        name = value["name"]
    else:
        return value
    try:
        return make_rule(name, **params)
    except InterestGymError as exc:  # an unknown rule, or a parameter it does not have, of the wrong type or range
        raise InterestGymError(f"{argument}={value!r}: {exc}") from None


def resolve_scoring(value: Any) -> Any:
    """A ScoringConfig given as JSON (a dict of its fields, e.g. ``{"beta_cat": 1.0}``) made into one; anything else
    returned as it is."""
    if not isinstance(value, dict):
        return value
    try:
        return ScoringConfig(**value)
    except InterestGymError as exc:  # a value out of its range
        raise InterestGymError(f"scoring={value!r}: {exc}") from None
    except (TypeError, ValueError) as exc:  # a field ScoringConfig does not have, or a value of the wrong type
        raise InterestGymError(f"scoring={value!r}: {exc}; expected fields of interestgym.core.interest.ScoringConfig") from None


def check_env_arguments(max_events: Any, reward_baseline: Any, scoring: Any) -> None:
    """The arguments both envs take, checked alike: one clear error for a value of the wrong kind."""
    if max_events is not None and (isinstance(max_events, (bool, np.bool_)) or not isinstance(max_events, (int, np.integer))
                                   or max_events < 1):
        raise InterestGymError(f"max_events={max_events!r}: expected None or an integer >= 1")
    if reward_baseline is not None and not (callable(getattr(reward_baseline, "act", None))
                                            and isinstance(getattr(reward_baseline, "scoring", None), ScoringConfig)):
        raise InterestGymError(f"reward_baseline={reward_baseline!r}: expected None or a rule (a Policy with act() and a "
                               "ScoringConfig, e.g. interestgym.agents.rules.make_baseline('ema_two_profile')), a rule's name "
                               "or {'name': NAME, 'params': {...}}")
    if scoring is not None and not isinstance(scoring, ScoringConfig):
        raise InterestGymError(f"scoring={scoring!r}: expected None or an interestgym.core.interest.ScoringConfig "
                               "(e.g. ScoringConfig(beta_cat=1.0)) or a dict of its fields")


def _warn_about_protocol(data: ReplayData, spec: ProtocolSpec) -> None:
    """Say what the protocol asked for but cannot have: settings of sampled negatives on logged impressions (they
    are ignored), and fewer negatives than asked where the catalogue, less what is excluded, is too small."""
    import warnings

    from interestgym.envs.replay_data import (
        IGNORED_ON_IMPRESSIONS,
        SAMPLED_NEGATIVES_SETTINGS,
    )

    default = ProtocolSpec()
    if data.protocol == "impressions":
        given = [f"{k}={getattr(spec, k)!r}" for k in SAMPLED_NEGATIVES_SETTINGS if getattr(spec, k) != getattr(default, k)]
        if given:
            warnings.warn(f"{', '.join(given)}: the dataset {IGNORED_ON_IMPRESSIONS}", UserWarning, stacklevel=3)
    short = int(data.counts.get("points_with_fewer_negatives") or 0)
    if short:
        warnings.warn(f"{short:,} of {data.n_points:,} scoring points have fewer than n_negatives={spec.n_negatives} negatives: "
                      "the catalogue, less the items the protocol excludes, holds fewer", UserWarning, stacklevel=3)
    unscored = targets_without_negatives_text(data.counts)
    if unscored:
        warnings.warn(unscored, UserWarning, stacklevel=3)


class InterestReplayEnv(gym.Env):
    """Replay of one user's behaviour log, where the agent decides when and how strongly to update the
    user's interest profiles.

    ## Description

    An episode is one user of the chosen split, drawn at every reset with the env's seeded generator (with
    replacement: resets cycle through no fixed order, and some users recur before others come;
    ``reset(options={"user_id": ...})`` picks one). The user's log
    is replayed in time order (events by (ts, seq); an impression logged at the same ts as events is
    replayed *before* them, so the clicks it produced cannot update the profiles before it is scored).
    **Decision points** are the positive feedback events: action weight > 0 in the dataset's
    ``action_weights`` (impression 0, view 0.5, click 1, purchase 3 ...) and, for ``rate`` events, a
    value >= the dataset's ``positive_rating`` (4.0 by default); events whose item has no row in the
    items table are not decisions (counted). Non-positive events are replayed too: they feed the
    observation (time since the last event, event counts) but are not decisions.

    The user carries a long-term profile L and a short-term profile S (unit vectors in the encoder's
    space; the zero vector means "no interest known"). At each decision the agent sees the observation
    and sets the update strengths; the profiles are updated toward the event's item vector x; then every
    **scoring point** up to the next decision is ranked with the updated profiles:

    * datasets with impressions: each logged impression (its candidates and click labels; candidates
      without an item row are dropped and counted, impressions left with no click or no non-click are
      counted and not scored, impressions before the user's first decision are counted and not scored);
    * otherwise: the *next* positive item plus ``n_negatives`` sampled negatives (uniform or
      popularity-weighted, seeded per user) that leave out what ``exclude`` says: the target and the items of
      its moment (``target``), the user's whole log (``log``) or the items seen so far (``past``).

    Candidate sets are precomputed once per (dataset, embeddings, split, protocol, seed), so every
    policy, this env and the batched evaluator see exactly the same candidates.

    ## Action Space

    ``Box(-1, 1, (4,), float32)``. Each component u encodes a number ``(u + 1) / 2`` in [0, 1] (a
    symmetric box is what SB3's PPO expects: its Gaussian starts at mean 0, i.e. 0.5 here):

    | # | name              | meaning                                                         |
    |---|-------------------|-----------------------------------------------------------------|
    | 0 | long_strength     | a_L: ``L <- normalise((1 - a_L) L + a_L x)``; 0 = do not update |
    | 1 | short_strength    | a_S: the same for S                                             |
    | 2 | short_weight      | w: weight of S against L in the score                           |
    | 3 | popularity_weight | p: weight of the popularity prior (fixed if ``scoring`` says so)|

    With ``ScoringConfig(category_forgetting=None)`` a_L also sets the category counts' forgetting,
    ``1 - a_L`` (see ``scoring`` below).

    The score of a candidate c is
    ``(1 - p) (w cos(S, c) + (1 - w) cos(L, c)) + p pop(c) [+ beta_cat log P(cat(c) | user) + beta_ctx cos(T_slot, c)]``
    where pop(c) in [0, 1] is the item's log-popularity among *training* users' positive events
    (normalised by the max; valid / test users' own events never enter it, train episodes do see their
    own events in it). The optional terms come from ``scoring`` (see ScoringConfig). The action type
    is not folded into the strength (no gain g): it is in the observation (``action_weight``), so the
    agent can learn its own per-type strengths and a rule can use it explicitly.

    ## Observation Space

    ``Box(low, high, ({n_features},), float32)``, decision-time features computed from the past only
    (``interestgym.core.features.FEATURES``; rules can decode them with ``FeatureView``):

{table}

    ## Rewards

    The reward of a step is the ranking metric (``metric``, nDCG@10 by default; auc, mrr, first_click_rr,
    hit@K, click@K, precision@K, recall@K, f1@K, ndcg@K) averaged over the scoring points between this decision
    and the next, with expected values over random orders of tied candidates (empty profiles tie
    everything: worth a random ranking). A step without scoring points gives 0 and
    ``info["scored"] = False``. With ``reward_baseline`` (a Policy), the same metric of that reference
    rule, replayed alongside on its own state and the same scoring points, is subtracted.
    ``info["metrics"]`` holds every metric of the step (and ``info["baseline_metrics"]``).

    ## Info

    ``reset`` returns ``user_id`` and ``n_decisions`` (the episode's length without ``max_events``).
    ``step`` returns ``user_id``; ``decision`` (0-based, within the user's decisions); ``ts`` (the
    decision's time, seconds); ``scored`` (the step had scoring points); ``n_points``; ``metrics``
    ({metric: step mean}, empty when not scored); ``strengths`` (the (4,) a_L, a_S, w, p applied: the
    action mapped to [0, 1], clipped there, a fixed p in place of the action's); ``points`` (a
    :class:`StepPoints`: the agent's scoring points, ``.index`` and ``.metrics``, one object so that
    Gymnasium's sync / async vector envs can batch the info); with ``reward_baseline`` also
    ``baseline_metrics``. Actions outside [-1, 1] are clipped to it, not refused.

    ## Starting State

    L, S and every running statistic are zero; the episode starts at the user's first decision.

    ## Episode End

    Terminated after the user's last decision (the observation returned then is a placeholder: the last
    decision's features with the updated profiles). Truncated after ``max_events`` decisions if set.

    ## Arguments

    * ``dataset``: a prepared dataset directory (or an open ``Dataset``).
    * ``embeddings``: the embedding name (may be left out when the dataset holds exactly one).
    * ``split``: ``"train"``, ``"valid"`` or ``"test"`` (default: the protocol's, ``"train"``).
    * ``metric``: reward metric, default ``"ndcg@10"``.
    * ``protocol``: the scoring protocol as ONE object, a :class:`ProtocolSpec` (or a dict of its fields,
      or just a protocol name): ``protocol`` (``"auto"``: impressions if present, else next positive |
      ``"impressions"`` | ``"next_positive"``), ``n_negatives`` (99), ``negatives`` (``"uniform"`` |
      ``"popularity"``), ``exclude`` (``"auto"``: ``"target"`` on logs with repeats, else ``"log"`` |
      ``"target"``: only the target and the items of its moment, the honest protocol for repeats | ``"log"``:
      never an item of the user's whole log, the classic protocol | ``"past"``: only items seen up to the
      scoring point, strictly causal), ``seed`` (0), ``history_negatives`` (0). Settings of sampled negatives
      on a dataset with logged impressions, and a catalogue smaller than ``n_negatives``, are said in a warning.
    * ``max_events``: truncate episodes after this many decisions (None = whole histories).
    * ``reward_baseline``: a Policy whose metric is subtracted from the reward. It acts with all its action
      columns on its own row (a rule with its own count gain acts with 7); the agent's 4 cannot set those
      levers, so copying the rule's first 4 does not give a reward of 0 there (the vector env's residual form,
      ``InterestReplayVecEnv(residual_to=...)``, can). Also taken as JSON: a rule's name (``"ema_two_profile"``,
      default parameters) or ``{"name": NAME, "params": {...}}`` (a ``baselines.json`` entry's tuned parameters),
      so that ``gym.make``'s ``env.spec.to_json()`` can hold it.
    * ``scoring``: a fixed ScoringConfig for the agent's scoring (default: p from the action, no extra terms), or a
      dict of its fields (``{"beta_cat": 1.0}``). With ``beta_cat > 0`` the category counts forget at every decision
      by ``category_forgetting`` (``counts <- f counts + onehot(cat(x))``); ``category_forgetting=None`` ties f to the
      action: ``f = 1 - a_L``, so the agent decides when the category history is forgotten.

    ## Example

    >>> import gymnasium as gym, interestgym.envs                       # doctest: +SKIP
    >>> env = gym.make("interestgym/InterestReplay-v0", dataset="runs/data/ml-100k", split="train")  # doctest: +SKIP
    >>> obs, info = env.reset(seed=0)                                    # doctest: +SKIP
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())  # doctest: +SKIP
    >>> info["scored"], info["metrics"].get("ndcg@10")                   # doctest: +SKIP
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        dataset: str | Path | Dataset,
        embeddings: str | None = None,
        split: str | None = None,
        metric: str = "ndcg@10",
        protocol: ProtocolSpec | dict[str, Any] | str | None = None,
        max_events: int | None = None,
        reward_baseline: Any = None,
        scoring: ScoringConfig | None = None,
        render_mode: str | None = None,
    ) -> None:
        reject_render_mode(render_mode)
        reward_baseline, scoring = resolve_rule(reward_baseline, "reward_baseline"), resolve_scoring(scoring)
        check_env_arguments(max_events, reward_baseline, scoring)
        spec = ProtocolSpec.resolve(protocol, split)
        self.data: ReplayData = load_replay_data(dataset, embeddings, spec)
        if self.data.n_users == 0:
            raise InterestGymError(f"{self.data.dataset_path}: split {self.data.spec.split!r} has no user with a positive event; nothing to replay")
        _warn_about_protocol(self.data, spec)
        self.render_mode = None
        self.max_events = max_events
        self.reward_baseline = reward_baseline
        self.scoring = scoring or ScoringConfig()
        self.engine = ReplayEngine(self.data, 2 if reward_baseline is not None else 1, metric=metric)
        self.engine.set_scoring(slice(0, 1), self.scoring)
        if reward_baseline is not None:
            self.engine.set_scoring(slice(1, 2), reward_baseline.scoring)
        self.metric = self.engine.metric
        self.observation_space = spaces.Box(*observation_bounds(self.data.extra_obs), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (len(ACTION_NAMES),), dtype=np.float32)
        self._rows = np.arange(self.engine.n_rows)
        self._agent_row = self._rows[:1]  # the agent's row (row 1 replays the reference rule, if any)
        self._steps = 0
        self._user = -1
        self._user_id = ""  # str of the episode's user id, made once per episode (not at every step)
        self._first_decision = 0
        self._done = True

    def _where_user_is(self, user_id: str) -> str:
        """Where a user the split's replay does not hold is, for the reset's message (``; it is a 'train' user ...``)."""
        try:
            users = Dataset.open(self.data.dataset_path).users
        except Exception:  # noqa: BLE001 - only a hint in an error message
            return ""
        found = users.loc[users["user_id"].astype(str) == user_id, "split"]
        if found.empty:
            return "; the dataset has no such user"
        split = str(found.iloc[0])
        if split != self.data.spec.split:
            return f"; it is a {split!r} user (make the env with split={split!r})"
        return "; the user has no positive event in its log (nothing to decide on)"

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new user (``options={"user_id": ...}`` picks one; otherwise drawn from ``np_random``)."""
        super().reset(seed=seed)
        options = options or {}
        unknown = sorted(set(options) - {"user_id"})
        if unknown:
            raise InterestGymError(f"reset options {unknown}: not options of this env; expected only 'user_id' (or none: a user "
                                   "drawn at random)")
        if "user_id" in options:
            hits = np.nonzero(self.data.user_ids == str(options["user_id"]))[0]
            if len(hits) == 0:
                raise InterestGymError(f"reset option user_id={options['user_id']!r}: no such user with decisions in split "
                                       f"{self.data.spec.split!r}{self._where_user_is(str(options['user_id']))}")
            user = int(hits[0])
        else:
            user = int(self.np_random.integers(self.data.n_users))
        self._user = user
        self._user_id = str(self.data.user_ids[user])
        self._first_decision = int(self.data.user_decision_start[user])
        self._steps = 0
        self._done = False
        self.engine.start(self._rows, np.full(len(self._rows), user))
        obs = self.engine.observe(self._agent_row)[0]
        info = {"user_id": self._user_id, "n_decisions": int(self.data.user_decision_end[user]) - self._first_decision}
        return obs, info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        # A step is a few hundred microseconds of numpy on tiny arrays, so the per-step Python around
        # the engine is kept lean: the checks are one call each, the info dict is built from scalars
        # read once, and without a reference rule every scoring point is the agent's (no masks).
        if self._done:
            raise InterestGymError("step() called on a finished episode; call reset() first" if self._user >= 0
                                   else "step() called before reset(); call reset() first")
        given = np.asarray(action, dtype=np.float32)
        if given.shape != (4,):  # a (2, 2) or a scalar is not 4 strengths, whatever reshape would make of it
            raise InterestGymError(f"action of shape {given.shape}: expected (4,) in [-1, 1]")
        action = given.reshape(1, 4)
        if not np.isfinite(action).all():
            # a NaN would silently poison the profiles, the reward and every later observation
            raise InterestGymError(f"action {action[0].tolist()}: expected 4 finite numbers in [-1, 1]")
        baseline = self.reward_baseline
        if baseline is not None:
            ref_action = np.asarray(baseline.act(self.engine.observe(self._rows[1:])), dtype=np.float32).reshape(1, -1)
            action = stack_actions([action, ref_action])
        out = self.engine.step(self._rows, action)
        self._steps += 1
        terminated = bool(out.done[0])
        truncated = not terminated and self.max_events is not None and self._steps >= self.max_events
        self._done = terminated or truncated
        scored = bool(out.scored[0])
        metrics = {k: float(v[0]) for k, v in out.metrics.items()} if scored else {}
        reward = metrics.get(self.metric, 0.0)
        if baseline is None:
            # one row stepped: the step's scoring points are all the agent's (fresh arrays every step)
            point_index, point_metrics = out.point_index, out.point_metrics
        else:
            mine = out.point_row == 0
            point_index, point_metrics = out.point_index[mine], {k: v[mine] for k, v in out.point_metrics.items()}
        decision = int(out.decision[0])
        info: dict[str, Any] = {
            "user_id": self._user_id,
            "decision": decision - self._first_decision,
            "ts": int(self.data.decision_ts[decision]),
            "scored": scored,
            "n_points": int(out.n_points[0]),
            "metrics": metrics,
            "strengths": out.strengths[0].copy(),
            "points": StepPoints(point_index, point_metrics),
        }
        if baseline is not None:
            base = {k: float(v[1]) for k, v in out.metrics.items()} if scored else {}
            info["baseline_metrics"] = base
            reward -= base.get(self.metric, 0.0)
        obs = self.engine.observe(self._agent_row, terminal=terminated)[0]
        return obs, float(reward), terminated, truncated, info

    def render(self) -> None:
        return None


InterestReplayEnv.__doc__ = (InterestReplayEnv.__doc__ or "").replace("{table}", _observation_table()).replace("{n_features}", str(N_FEATURES))
