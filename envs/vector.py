"""Many users replayed at once: the SB3 vector env for training and the batched evaluator.

Both drive one :class:`~interestgym.envs.engine.ReplayEngine` over all their users in lock-step, so
per decision and per scoring point they compute exactly what :class:`InterestReplayEnv` computes for one
user (same candidates, same maths, and per-row results that do not depend on the batch).

* :class:`InterestReplayVecEnv` is a native ``stable_baselines3`` ``VecEnv``: ``n_envs`` slots, each
  replaying a user drawn from the split; a finished slot restarts at once with the next drawn user
  (SB3 conventions: the returned observation is the new user's first one, ``info["terminal_observation"]``
  the finished one, ``info["TimeLimit.truncated"]`` marks ``max_events`` truncation).
* :func:`evaluate_policy` replays every user of a split exactly once with a :class:`Policy` and returns
  per-scoring-point metrics with user ids (for per-user means, bootstrap CIs and paired differences)
  and per-decision actions and features (for plots).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces
from interestgym.envs.engine import ReplayEngine
from interestgym.envs.policies import ResidualPolicy
from interestgym.envs.replay_data import ProtocolSpec, ReplayData, load_replay_data
from interestgym.envs.rollout import replay_users
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvStepReturn,
)

from interestgym.core.features import (
    FEATURE_NAMES,
    observation_bounds,
)
from interestgym.core.interest import ScoringConfig
from interestgym.core.metrics import metric_names
from interestgym.core.protocol import (
    ACTION_NAMES,
    CONTEXT_CHANGE,
    GAIN_CHANGE,
    KEEP_CHANGE,
    SLOT_CHANGE,
    pad_actions,
    residual_action_names,
)
from interestgym.data.dataset import Dataset
from interestgym.errors import InterestGymError

#: The vector env steps its slots in blocks of about this many profile values (slots x the embedding
#: dimension: 256 slots at d = 384) so that a block's working set stays in cache; rows are independent, so
#: the numbers do not depend on it. Measured at 1,024 envs on 10 candidates (benchmarks/recsim_side_by_side.py):
#: at d = 384, blocks of 256 slots step 2x faster than 512 and 1.1x faster than 128; at d = 20 one block of
#: all 1,024 slots is 1.4x faster than blocks of 256.
STEP_BLOCK_VALUES = 256 * 384


def step_block(dim: int) -> int:
    """Slots per engine step at embedding dimension ``dim`` (:data:`STEP_BLOCK_VALUES`)."""
    return max(1, STEP_BLOCK_VALUES // max(dim, 1))


def _replay_data(dataset: str | Path | Dataset | ReplayData, embeddings: str | None, spec: ProtocolSpec) -> ReplayData:
    if isinstance(dataset, ReplayData):
        return dataset
    return load_replay_data(dataset, embeddings, spec)


class InterestReplayVecEnv(VecEnv):
    """``n_envs`` users replayed in lock-step: the env SB3 trains on (same arguments as the single env).

    :param dataset: dataset directory, open Dataset, or precomputed ReplayData.
    :param n_envs: number of parallel slots.
    :param seed: seed of the user draws (``VecEnv.seed`` overrides it at the next reset).
    :param residual_to: a rule the agent acts as a change of (its action space then holds the changes); a rule
        object, its name or ``{"name": NAME, "params": {...}}``, as ``reward_baseline``.
    Other arguments: see :class:`~interestgym.envs.replay.InterestReplayEnv`.
    """

    def __init__(
        self,
        dataset: str | Path | Dataset | ReplayData,
        n_envs: int = 8,
        *,
        embeddings: str | None = None,
        split: str | None = None,
        metric: str = "ndcg@10",
        protocol: ProtocolSpec | dict[str, Any] | str | None = None,
        max_events: int | None = None,
        reward_baseline: Any = None,
        scoring: ScoringConfig | None = None,
        residual_to: Any = None,
        gain_lever: bool = False,
        context_lever: bool = False,
        slot_lever: bool = False,
        change_penalty: float = 0.0,
        window: int | None = None,
        seed: int | None = None,
    ) -> None:
        if n_envs < 1:
            raise InterestGymError(f"n_envs={n_envs}: expected an integer >= 1")
        from interestgym.envs.replay import (
            check_env_arguments,
            resolve_rule,
            resolve_scoring,
        )

        reward_baseline, scoring = resolve_rule(reward_baseline, "reward_baseline"), resolve_scoring(scoring)
        residual_to = resolve_rule(residual_to, "residual_to")
        check_env_arguments(max_events, reward_baseline, scoring)
        spec = ProtocolSpec.resolve(protocol, split)
        self.data = _replay_data(dataset, embeddings, spec)
        if self.data.n_users == 0:
            raise InterestGymError(f"{self.data.dataset_path}: split {self.data.spec.split!r} has no user with a positive event; nothing to replay")
        self.render_mode = None
        self.max_events = max_events
        self.reward_baseline = reward_baseline
        # With ``residual_to`` (a rule) the agent acts by changing the rule's action (ResidualPolicy):
        # its action space gets the fifth, keep-factor component, and it scores like the rule.
        # With ``gain_lever`` (and a reference that scores with the category counts) it also changes the
        # weight each event adds to its category's count.
        # With ``context_lever`` (a reference that scores with the time-slot profiles) it also changes the
        # rate at which the event's slot profile moves.
        # With ``slot_lever`` (a reference that weighs the category counts per time of day) it also scales
        # that weight (lambda) for the scoring after each decision.
        if gain_lever and (residual_to is None or not residual_to.scoring.beta_cat):
            raise InterestGymError("gain_lever: expected a residual reference rule that scores with the category counts (beta_cat > 0)")
        if context_lever and (residual_to is None or not residual_to.scoring.beta_ctx):
            raise InterestGymError("context_lever: expected a residual reference rule that scores with the time-slot profiles (beta_ctx > 0)")
        if slot_lever and (residual_to is None or not residual_to.scoring.slot_category_counts):
            raise InterestGymError("slot_lever: expected a residual reference rule that weighs the category counts per time of day "
                                   "(beta_cat != 0 and category_slot_weight > 0)")
        self.residual = None if residual_to is None else ResidualPolicy(
            residual_to, names=residual_action_names(tracker=self.data.point_tracker_z is not None, gain=gain_lever,
                                                     context=context_lever, slot=slot_lever))
        # A residual agent pays change_penalty * mean(change^2) per decision: it leaves the rule only
        # where the reward pays for it. With ``window``, an episode is a random window of that many
        # decisions of a user's history; the decisions before it are replayed with the reference rule
        # (no reward), so the agent starts from a realistic state and sees more varied situations.
        self.change_penalty = float(change_penalty)
        if window is not None and (residual_to is None or window < 1):
            raise InterestGymError(f"window={window}: expected an integer >= 1, with a reference rule (residual_to) to replay "
                                   "the decisions before the window")
        self.window = window
        self.scoring = self.residual.scoring if self.residual is not None else (scoring or ScoringConfig())
        n_rows = n_envs * (2 if reward_baseline is not None else 1)
        self.engine = ReplayEngine(self.data, n_rows, metric=metric)
        self.engine.set_scoring(slice(0, n_envs), self.scoring)
        if reward_baseline is not None:
            self.engine.set_scoring(slice(n_envs, 2 * n_envs), reward_baseline.scoring)
        self.metric = self.engine.metric
        self._agent_rows = np.arange(n_envs)
        self._ref_rows = np.arange(n_envs, 2 * n_envs) if reward_baseline is not None else np.zeros(0, np.int64)
        self._rng = np.random.default_rng(seed)
        # the users' ids as Python str, once (info dicts and the Gymnasium env's arrays hand them out at every step)
        self._user_id_objects = np.array([str(u) for u in self.data.user_ids], dtype=object)
        self._steps = np.zeros(n_envs, dtype=np.int64)
        self._actions: np.ndarray | None = None
        self._obs: np.ndarray | None = None
        self._started = False
        self._replay_fingerprint: str | None = None
        # a residual agent with a tracker attached also sets the tracker's weight per decision
        n_actions = len(ACTION_NAMES) if self.residual is None else self.residual.n_changes
        super().__init__(
            n_envs,
            spaces.Box(*observation_bounds(self.data.extra_obs), dtype=np.float32),
            spaces.Box(-1.0, 1.0, (n_actions,), dtype=np.float32),
        )

    @property
    def current_user_ids(self) -> list[str]:
        """The user each slot is replaying now."""
        return self._user_id_objects[self.engine.user[self._agent_rows]].tolist()

    # ---------------------------------------------------------------------------------- state
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """(arrays, JSON-able values): where every slot is in its replay and the draw of the next users; with
        :meth:`load_state` on an env built with the same arguments, the same steps follow (a training checkpoint)."""
        if not self._started or self._obs is None or self._actions is not None:
            raise InterestGymError("the vector env's state is taken between steps of a started env (after reset or step_wait)")
        arrays = {f"engine.{name}": value for name, value in self.engine.state_arrays().items()}
        arrays.update({"env.steps": self._steps, "env.obs": self._obs})
        return arrays, {"rng": self._rng.bit_generator.state, "replay": self.replay_fingerprint()}

    def replay_fingerprint(self) -> str:
        """sha256 of the replay's users and decisions (ids, their decision ranges, items and times, the scoring points'
        ranges): the engine's cursors and users index these arrays, so a state is only valid on the same ones (a dataset's
        events changed under the same split give others). Computed once per env."""
        if self._replay_fingerprint is None:
            import hashlib

            digest = hashlib.sha256("\n".join(map(str, self.data.user_ids)).encode("utf-8"))
            for array in (self.data.user_decision_start, self.data.user_decision_end, self.data.decision_item,
                          self.data.decision_ts, self.data.decision_point_start, self.data.decision_point_end):
                digest.update(np.ascontiguousarray(array).tobytes())
            self._replay_fingerprint = digest.hexdigest()
        return self._replay_fingerprint

    def load_state(self, arrays: dict[str, np.ndarray], values: dict[str, Any], where: str = "env state") -> None:
        """Put back what :meth:`state` returned (see there); refuses a state of another dataset, env count or scoring."""
        engine = {name.removeprefix("engine."): value for name, value in arrays.items() if name.startswith("engine.")}
        self.engine.load_state_arrays(engine, where)
        for name, expected in (("env.steps", (self.num_envs,)), ("env.obs", (self.num_envs, self.observation_space.shape[0]))):
            value = arrays.get(name)
            if value is None or value.shape != expected:
                raise InterestGymError(f"{where}: {name} is {None if value is None else value.shape}; expected {expected}")
        self._steps[...] = arrays["env.steps"]
        self._obs = arrays["env.obs"].astype(np.float32, copy=True)
        rng = np.random.default_rng()
        rng.bit_generator.state = values["rng"]
        self._rng = rng
        self._started, self._actions = True, None

    # ---------------------------------------------------------------------------------- episodes
    def _start(self, slots: np.ndarray) -> None:
        users = self._rng.integers(self.data.n_users, size=len(slots))
        self.engine.start(slots, users)
        if len(self._ref_rows):
            self.engine.start(self._ref_rows[slots], users)
        self._steps[slots] = 0
        if self.window is not None:
            self._fast_forward(slots, users)

    def _fast_forward(self, slots: np.ndarray, users: np.ndarray) -> None:
        """Replay each slot's user with the reference rule up to a random start, so that the episode is
        a window of ``window`` decisions (the agent row and its reference row move together)."""
        n_dec = self.data.user_decision_end[users] - self.data.user_decision_start[users]
        skip = np.floor(self._rng.random(len(slots)) * np.maximum(n_dec - 1, 1)).astype(np.int64)
        remaining = skip.copy()
        rule = self.residual.reference  # type: ignore[union-attr]
        while (remaining > 0).any():
            rows = slots[remaining > 0]
            pair = np.concatenate([rows, self._ref_rows[rows]]) if len(self._ref_rows) else rows
            actions = np.asarray(rule.act(self.engine.observe(pair)), dtype=np.float32)
            self.engine.step(pair, actions)
            remaining[remaining > 0] -= 1

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self._rng = np.random.default_rng(self._seeds[0])
        self._reset_seeds()
        given = [o for o in self._options if o]
        self._reset_options()
        if given:
            # one state for every slot: per-slot options (a user for one slot) cannot be honoured, and dropping them would be silent
            raise InterestGymError(f"reset options {given[0]!r} (set_options): this vector env takes none; every slot draws its "
                                   "users (the single env's reset(options={'user_id': ...}) picks one)")
        self._start(self._agent_rows)
        self._started = True
        self.reset_infos = [{"user_id": user_id} for user_id in self.current_user_ids]
        self._obs = self.engine.observe(self._agent_rows)
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        given = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, self.action_space.shape[0])
        if given.shape != expected:  # a flat or otherwise shaped array is not one action per env, whatever reshape makes of it
            raise InterestGymError(f"actions of shape {given.shape}: expected {expected} (one row of {expected[1]} per env) in [-1, 1]")
        self._actions = given
        if not np.isfinite(self._actions).all():
            # a NaN would silently poison the profiles, the rewards and every later observation
            raise InterestGymError(f"actions: {int((~np.isfinite(self._actions)).any(axis=1).sum())} of {self.num_envs} envs got a "
                                   "non-finite action; expected finite numbers in [-1, 1] (a diverged policy?)")

    def _step_blocks(self, rows: np.ndarray, actions: np.ndarray, ref_rows: np.ndarray | None = None,
                     ref_actions: np.ndarray | None = None) -> SimpleNamespace:
        """The engine's step of ``rows`` (and their reference rows), in blocks of :func:`step_block` slots.

        Rows are independent in the engine, so blocks give the same numbers as one step of every row; a
        block keeps the step's working set (profiles, the candidates' vectors) in cache, which a single
        step of 1,024 slots at d = 384 does not (measured 1.6-2x more steps/s at 1,024 envs). Returns the
        per-row fields this env reads, the agent's rows first, then the reference's."""
        parts: list[Any] = []
        size = step_block(self.data.dim)
        for s in range(0, len(rows), size):
            block = slice(s, s + size)
            if ref_rows is None:
                parts.append((self.engine.step(rows[block], actions[block]), None))
            else:
                k = len(rows[block])
                out = self.engine.step(np.concatenate([rows[block], ref_rows[block]]), np.concatenate([actions[block], ref_actions[block]]))
                parts.append((out, k))

        def gather(get: Any) -> np.ndarray | None:
            values = [get(out) for out, _ in parts]
            if values[0] is None:
                return None
            agent = [v if k is None else v[:k] for v, (_, k) in zip(values, parts)]
            ref = [v[k:] for v, (_, k) in zip(values, parts) if k is not None]
            return np.concatenate(agent + ref)

        return SimpleNamespace(
            metrics={self.metric: gather(lambda o: o.metrics[self.metric])}, scored=gather(lambda o: o.scored),
            done=gather(lambda o: o.done), strengths=gather(lambda o: o.strengths),
            tracker_weight=gather(lambda o: o.tracker_weight), count_gain=gather(lambda o: o.count_gain),
            context_rate=gather(lambda o: o.context_rate), slot_weight=gather(lambda o: o.slot_weight),
            keep=gather(lambda o: o.keep))

    def _advance(self, skip: np.ndarray | None = None) -> SimpleNamespace:
        """One decision for every slot (the actions given to :meth:`step_async`), as arrays: what
        :meth:`step_wait` (SB3's list of info dicts) and the Gymnasium vector env (arrays with masks) both
        report, built once and without a Python loop over the slots.

        :param skip: (num_envs,) bool, slots NOT to step (their action is ignored: a Gymnasium ``NEXT_STEP``
            autoreset step of a slot whose user ended at the last step). A skipped slot reports reward 0,
            not scored, neither terminated nor truncated, NaN strengths and levers, and its current observation.

        Fields: ``obs`` (the next observations, finished slots restarted), ``rewards``, ``scored``,
        ``metric`` (the agent's own metric, meaningful where scored), ``terminated``, ``truncated``,
        ``strengths`` (applied), ``levers`` ({name: per-slot values} of the levers the agent has),
        ``finished`` (slots whose user ended), ``final_obs`` (their last observations, aligned with
        ``finished``) and ``final_user_ids`` (their users)."""
        if not self._started or self._actions is None:
            raise InterestGymError("step() before reset(): call reset() first")
        n = self.num_envs
        slots = self._agent_rows if skip is None else np.flatnonzero(~np.asarray(skip, dtype=bool))
        m = len(slots)
        actions = self._actions if self.residual is None else self.residual.compose(self._obs, self._actions)
        actions, given = actions[slots], self._actions[slots]
        rows = self._agent_rows[slots]
        if m == 0:  # every slot skipped: nothing steps
            out = SimpleNamespace(metrics={self.metric: np.zeros(0)}, scored=np.zeros(0, bool), done=np.zeros(0, bool),
                                  strengths=np.zeros((0, 4), np.float32), tracker_weight=None, count_gain=None,
                                  context_rate=None, slot_weight=None, keep=None)
        elif len(self._ref_rows):
            ref_rows = self._ref_rows[slots]
            ref_actions = np.asarray(self.reward_baseline.act(self.engine.observe(ref_rows)), dtype=np.float32)
            # zero keep / tracker changes leave the reference's own as they are (and the agent's, the other way)
            actions, ref_actions = pad_actions(actions, ref_actions)
            out = self._step_blocks(rows, actions, ref_rows, ref_actions)
        else:
            out = self._step_blocks(rows, actions)
        main = out.metrics[self.metric]
        stepped_scored = out.scored[:m]
        stepped_rewards = np.where(stepped_scored, main[:m], 0.0)
        if len(self._ref_rows):
            stepped_rewards = stepped_rewards - np.where(stepped_scored, main[m:], 0.0)
        if self.residual is not None and self.change_penalty:
            stepped_rewards = stepped_rewards - self.change_penalty * np.mean(np.square(given), axis=1)
        self._steps[slots] += 1
        limit = self.window if self.window is not None else self.max_events
        stepped_done = out.done[:m]
        stepped_cut = ~stepped_done & (limit is not None) & (self._steps[slots] >= (limit or 0))
        # the levers as applied, where the agent has them (a context lever's action is as wide as a gain's)
        names = self.residual.names if self.residual is not None else ()
        levers = {"tracker_weight": out.tracker_weight, "count_gain": out.count_gain if GAIN_CHANGE in names else None,
                  "context_rate": out.context_rate if CONTEXT_CHANGE in names else None,
                  "slot_weight": out.slot_weight if SLOT_CHANGE in names else None,
                  "keep": out.keep if KEEP_CHANGE in names else None}
        levers = {k: v[:m] for k, v in levers.items() if v is not None}
        if skip is None:  # every slot stepped: the arrays as they are
            rewards, scored, metric, terminated, truncated = stepped_rewards, stepped_scored, main[:m], stepped_done, stepped_cut
            strengths = out.strengths[:m]
        else:
            def scatter(values: np.ndarray, fill: Any) -> np.ndarray:
                nan = isinstance(fill, float) and np.isnan(fill)  # NaN needs floats (bool / int arrays cannot hold it)
                full = np.full((n,) + values.shape[1:], fill, dtype=np.float64 if nan else values.dtype)
                full[slots] = values
                return full

            rewards, scored, metric = scatter(stepped_rewards, 0.0), scatter(stepped_scored, False), scatter(main[:m], np.nan)
            terminated, truncated = scatter(stepped_done, False), scatter(stepped_cut, False)
            strengths = scatter(out.strengths[:m], np.nan)
            levers = {k: scatter(v, np.nan) for k, v in levers.items()}
        finished = np.flatnonzero(terminated | truncated)
        final_obs = np.zeros((0, self.observation_space.shape[0]), dtype=np.float32)
        final_user_ids = np.zeros(0, dtype=object)
        if len(finished):
            # a truncated user has a real next decision: its observation is the true next state
            ended = terminated[finished]
            final_obs = np.empty((len(finished), self.observation_space.shape[0]), dtype=np.float32)
            if ended.any():
                final_obs[ended] = self.engine.observe(finished[ended], terminal=True)
            if not ended.all():
                final_obs[~ended] = self.engine.observe(finished[~ended])
            final_user_ids = self._user_id_objects[self.engine.user[finished]]
            self._start(finished)
        obs = self.engine.observe(self._agent_rows)
        self._obs = obs
        self._actions = None
        return SimpleNamespace(obs=obs, rewards=rewards, scored=scored, metric=metric, terminated=terminated,
                               truncated=truncated, strengths=strengths, levers=levers,
                               finished=finished, final_obs=final_obs, final_user_ids=final_user_ids)

    def step_wait(self) -> VecEnvStepReturn:
        step = self._advance()
        # the agent's own metric at a scored step (the reward may be baseline-subtracted); what was applied
        # (a residual agent's action is a change; these are the strengths it led to)
        infos: list[dict[str, Any]] = [{"scored": True, "metric": m, "strengths": a} if s else {"scored": False, "strengths": a}
                                       for s, m, a in zip(step.scored.tolist(), step.metric.tolist(), step.strengths)]
        for key, values in step.levers.items():
            for info, value in zip(infos, values.tolist()):
                info[key] = value
        for slot, last, user_id, cut in zip(step.finished.tolist(), step.final_obs, step.final_user_ids,
                                            step.truncated[step.finished].tolist()):
            infos[slot].update({"terminal_observation": last, "TimeLimit.truncated": cut, "user_id": str(user_id)})
        return step.obs, step.rewards.astype(np.float32), step.terminated | step.truncated, infos

    def close(self) -> None:
        return None

    # ------------------------------------------------------------------- VecEnv attribute plumbing
    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        # the slots share one object: an attribute set for some slots would be set for all of them
        some = sorted(set(self._get_indices(indices)))
        if some != list(range(self.num_envs)):
            raise InterestGymError(f"set_attr({attr_name!r}, indices={indices!r}): the {self.num_envs} slots of this vector env "
                                   "share their attributes; expected every slot (indices=None)")
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


# ------------------------------------------------------------------------------------- evaluation
@dataclass
class EvaluationResult:
    """What :func:`evaluate_policy` returns.

    ``points``: one row per scoring point: ``user_id``, ``point_key`` (impression id or "user:k"),
    ``repeat`` (the target is an item the user engaged with before),
    ``decision`` (0-based decision of the user the point follows), then one column per metric.
    ``decisions``: one row per decision: ``user_id``, ``decision``, ``ts``, ``scored``, ``n_points``,
    ``reward`` (the step's reward metric, NaN when unscored), the chosen strengths ``long_strength``,
    ``short_strength``, ``short_weight``, ``popularity_weight`` (in [0, 1]) and one column per metric
    (step means). ``features``: (n_decisions, len(feature_names)) float32 observations aligned with
    ``decisions`` (None if not recorded). ``protocol``: the replay's description.
    """

    policy: str
    metric: str
    metrics: tuple[str, ...]
    protocol: dict[str, Any]
    points: pd.DataFrame
    decisions: pd.DataFrame
    features: np.ndarray | None = None
    feature_names: tuple[str, ...] = field(default=FEATURE_NAMES)

    def per_user(self) -> pd.DataFrame:
        """Mean of every metric over each user's scoring points (index: user_id)."""
        return self.points.groupby("user_id", sort=False)[list(self.metrics)].mean()

    def summary(self) -> dict[str, dict[str, float]]:
        """``{metric: {"mean_over_users": ..., "mean_over_points": ...}}``."""
        per_user = self.per_user()
        return {m: {"mean_over_users": float(per_user[m].mean()), "mean_over_points": float(self.points[m].mean())}
                for m in self.metrics}


def point_table(data: ReplayData, point: np.ndarray, decision: np.ndarray, values: dict[str, np.ndarray]) -> pd.DataFrame:
    """The per-point table every scorer returns (:attr:`EvaluationResult.points`'s columns): user id,
    point key, repeat flag, the user's decision the point follows, then one column per metric.

    :param point: (P,) scoring-point indices; ``decision``: (P,) the global decision each follows.
    """
    user = data.decision_user[decision]
    return pd.DataFrame({
        "user_id": data.user_ids[user],
        "point_key": data.point_key[point],
        "repeat": data.point_repeat[point],
        "decision": decision - data.user_decision_start[user],
        **values,
    })


def evaluate_policy(
    dataset: str | Path | Dataset | ReplayData,
    policy: Any,
    *,
    embeddings: str | None = None,
    split: str | None = None,
    metric: str = "ndcg@10",
    protocol: ProtocolSpec | dict[str, Any] | str | None = None,
    batch_size: int = 1024,
    users: Sequence[str] | None = None,
    record_features: bool = True,
    progress: bool | None = None,
    also: Sequence[str] = (),
) -> EvaluationResult:
    """Replay every user of ``split`` (or ``users``) once with ``policy``, many users at a time.

    :param dataset: dataset directory, open Dataset, or precomputed ReplayData (then the protocol
        arguments are ignored: the data already fixes them).
    :param policy: a :class:`~interestgym.envs.policies.Policy` (``act(obs) -> actions``, ``scoring``).
    :param batch_size: users replayed at once (a finished user's slot takes the next user).
    :param users: restrict to these user ids (default: every user of the split with a decision).
    :param record_features: keep every decision's observation in the result.
    :param progress: a bar over decisions (None: a bar on a terminal, log lines otherwise; False: silent).
    :param also: metrics to measure besides ``metric`` (the one the policy observes) and the defaults.
    """
    # the evaluator's default users are the test split's (the env's are the training users')
    default_split = "test" if protocol is None or isinstance(protocol, str) else None
    spec = ProtocolSpec.resolve(protocol, split or default_split)
    data = _replay_data(dataset, embeddings, spec)
    names = metric_names([metric.strip().lower(), *also])
    dec_parts: list[dict[str, np.ndarray]] = []
    pt_parts: list[dict[str, np.ndarray]] = []
    feat_parts: list[np.ndarray] = []
    engine = None
    for step in replay_users(data, policy, users=users, batch_size=batch_size, metric=metric, progress=progress,
                             desc=f"evaluating {getattr(policy, 'name', 'policy')}", also=also):
        out, engine = step.output, step.engine
        dec_parts.append({"decision": out.decision, "scored": out.scored, "n_points": out.n_points,
                          "strengths": out.strengths, **{f"m:{k}": v for k, v in out.metrics.items()}})
        pt_parts.append({"point": out.point_index, "decision": out.decision[out.point_row],
                         **{f"m:{k}": v for k, v in out.point_metrics.items()}})
        if record_features:
            feat_parts.append(step.observations)
    reward_metric = engine.metric if engine is not None else metric.strip().lower()

    def cat(parts: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
        return np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)

    decision = cat(dec_parts, "decision").astype(np.int64)
    order = np.argsort(decision, kind="stable")
    decision = decision[order]
    user_idx = data.decision_user[decision]
    strengths = np.concatenate([p["strengths"] for p in dec_parts])[order] if dec_parts else np.zeros((0, 4))
    decisions = pd.DataFrame({
        "user_id": data.user_ids[user_idx],
        "decision": decision - data.user_decision_start[user_idx],
        "ts": data.decision_ts[decision],
        "scored": cat(dec_parts, "scored")[order].astype(bool),
        "n_points": cat(dec_parts, "n_points")[order].astype(np.int64),
        "reward": cat(dec_parts, f"m:{reward_metric}")[order],
        **{name: strengths[:, k] for k, name in enumerate(ACTION_NAMES)},
        **{m: cat(dec_parts, f"m:{m}")[order] for m in names},
    })
    point = cat(pt_parts, "point").astype(np.int64)
    porder = np.argsort(point, kind="stable")
    point = point[porder]
    pdec = cat(pt_parts, "decision").astype(np.int64)[porder]
    points = point_table(data, point, pdec, {m: cat(pt_parts, f"m:{m}")[porder] for m in names})
    features = np.concatenate(feat_parts)[order] if record_features and feat_parts else None
    return EvaluationResult(policy=str(getattr(policy, "name", type(policy).__name__)), metric=reward_metric,
                            metrics=tuple(names), protocol=data.describe(), points=points, decisions=decisions,
                            features=features, feature_names=FEATURE_NAMES + tuple(data.extra_obs))


