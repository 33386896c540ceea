"""The replay engine: R users replayed in lock-step on numpy arrays.

A *row* holds one user's replay: a cursor on the user's decisions and the interest state (long- and
short-term profiles, shadow profiles, running statistics, optional category counts and time-slot
profiles). :meth:`ReplayEngine.observe` gives each row's observation at its current decision;
:meth:`ReplayEngine.step` applies the rows' actions (profile updates), scores every scoring point up to
the row's next decision with the updated state, and advances the cursors. The single env drives one
row (two with a reference rule), the vector env and the batched evaluator drive many; there is no
per-user Python loop, and every per-row result is independent of the other rows in the batch (the
maths is element-wise, integer counts or sequential sums), so all of them agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from interestgym.envs.replay_data import ReplayData

from interestgym.core.clock import N_TIME_SLOTS
from interestgym.core.features import (
    FEATURE_INDEX,
    LOG_FEATURES,
    N_FEATURES,
    RUNNING_MEAN_NAMES,
    SHADOW_STRENGTHS,
    STATE_FEATURES,
    encode_features,
    state_quantities,
)
from interestgym.core.interest import ScoringConfig, score_candidates, update_profile
from interestgym.core.metrics import metric_names, parse_metric, ranking_metrics
from interestgym.core.protocol import action_to_strengths
from interestgym.core.transition import (
    DecisionState,
    action_changes,
    apply_keep_change,
    apply_rate_change,
    apply_slot_change,
    apply_tracker_change,
    category_forgetting_factor,
    decision_transition,
    fold_exposure,
    fold_outcomes,
    shown_counts,
    update_category_counts,
    update_slot_category_counts,
)
from interestgym.errors import InterestGymError

_LOG_IDX = np.array([FEATURE_INDEX[n] for n in LOG_FEATURES])
_STATE_IDX = np.array([FEATURE_INDEX[n] for n in STATE_FEATURES])
#: Scoring points gathered per block: small enough that the (block, C, d) candidate tensor stays in
#: cache (measured fastest at 8-16 points on ml-100k with d = 384).
_POINT_BLOCK = 16
#: Rows per block when several rows score the same points (:func:`_shared_points`): their candidates
#: are gathered once, so a block can hold more rows.
_SHARED_BLOCK = 64
#: Rows that score the same point, at least, for the gather to be shared.
_SHARED_MIN = 4
#: Below this many scoring points per step, the three rankings are scored in one metrics call.
_STACK_METRICS_BELOW = 32


#: Observation features a lean engine does not compute (NaN): diagnostics no rule reads, and the
#: policy's own running reward (rows sharing one state score with several rules' weights).
LEAN_SKIPPED_FEATURES: tuple[str, ...] = (
    "reward_ema", "long_metric_ema", "short_metric_ema", *(n for n in STATE_FEATURES if n.startswith("shadow_")))
_LEAN_SKIPPED_IDX = np.array([FEATURE_INDEX[n] for n in LEAN_SKIPPED_FEATURES])
_LEAN_STATE_FEATURES = tuple(n for n in STATE_FEATURES if n not in LEAN_SKIPPED_FEATURES)
_LEAN_STATE_IDX = np.array([FEATURE_INDEX[n] for n in _LEAN_STATE_FEATURES])


@dataclass
class PointScores:
    """What :meth:`ReplayEngine.step` computed at its scoring points before ranking them, kept so that
    :func:`rank_points` can rank the same points with other score weights (a tuning grid's members, later). Everything a point's scores read is here (no live engine state): several steps' points can
    be concatenated (:meth:`concatenate`) and ranked together."""

    point_row: np.ndarray  #: (P,) position of each point's row among the stepped rows
    prow: np.ndarray  #: (P,) engine row of each point
    candidates: np.ndarray  #: (P, C) item indices (padded)
    labels: np.ndarray  #: (P, C) 1 clicked, 0 not, -1 padding
    similarities: np.ndarray  #: (P, C, K) cos with L, S (and the time-slot profile when used)
    tracker_z: np.ndarray | None = None  #: (P, C) the tracker's standardised scores, when some row weighs them
    category_counts: np.ndarray | None = None  #: (P, n_categories) the point's row's counts, when the engine keeps them
    #: (P, n_categories) the point's row's counts in the point's time slot, when the engine keeps them
    slot_category_counts: np.ndarray | None = None
    #: (P, n_categories) the point's row's counts of shown candidates (exposure), when the engine keeps them
    exposure_counts: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """The bytes its arrays hold (a kept point of a many-category catalogue is mostly its rows of counts)."""
        return int(sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray)))

    def take(self, index: np.ndarray) -> PointScores:
        """The points ``index`` (positions or a bool mask), fields as they are."""
        return PointScores(point_row=self.point_row[index], prow=self.prow[index], candidates=self.candidates[index],
                           labels=self.labels[index], similarities=self.similarities[index],
                           tracker_z=None if self.tracker_z is None else self.tracker_z[index],
                           category_counts=None if self.category_counts is None else self.category_counts[index],
                           slot_category_counts=None if self.slot_category_counts is None else self.slot_category_counts[index],
                           exposure_counts=None if self.exposure_counts is None else self.exposure_counts[index])

    @staticmethod
    def concatenate(parts: list[PointScores], row_offsets: np.ndarray | list[int]) -> PointScores:
        """The points of ``parts`` in order, ``point_row`` shifted by each part's ``row_offsets``; candidate
        axes padded to the widest part (candidate 0, label -1, similarity and tracker score 0: what a
        step's own padding holds, so the ranked values do not change)."""
        width = max(p.candidates.shape[1] for p in parts)

        def pad(a: np.ndarray, value: float) -> np.ndarray:
            if a.shape[1] == width:
                return a
            return np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2), constant_values=value)

        optional = {name: None if any(getattr(p, name) is None for p in parts) else
                    np.concatenate([pad(getattr(p, name), 0) if name == "tracker_z" else getattr(p, name) for p in parts])
                    for name in ("tracker_z", "category_counts", "slot_category_counts", "exposure_counts")}
        return PointScores(
            point_row=np.concatenate([p.point_row + off for p, off in zip(parts, row_offsets)]),
            prow=np.concatenate([p.prow for p in parts]),
            candidates=np.concatenate([pad(p.candidates, 0) for p in parts]),
            labels=np.concatenate([pad(p.labels, -1) for p in parts]),
            similarities=np.concatenate([pad(p.similarities, 0) for p in parts]), **optional)


def _as_slice(rows: np.ndarray, n_rows: int) -> np.ndarray | slice:
    """``rows`` as a slice when they are one or two consecutive rows in order, inside ``[0, n_rows)`` (the single env's:
    its row, and the reference rule's), so that the state is read and written without fancy indexing; else ``rows``
    (whose indexing keeps numpy's own meaning of a negative or out-of-range row)."""
    n = len(rows)
    if (n == 1 or n == 2 and rows[1] == rows[0] + 1) and 0 <= rows[0] and rows[n - 1] < n_rows:
        start = int(rows[0])
        return slice(start, start + n)
    return rows


def _shared_points(point_index: np.ndarray) -> np.ndarray | None:
    """When every point of ``point_index`` occurs the same number m >= :data:`_SHARED_MIN` of times (the
    rows of m rules replaying the same users in lock-step): a (U, m) array of positions, one row per
    distinct point; otherwise None."""
    if len(point_index) < 2 * _SHARED_MIN:
        return None
    order = np.argsort(point_index, kind="stable")
    ordered = point_index[order]
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    m = len(point_index) // len(starts)
    if m < _SHARED_MIN or m * len(starts) != len(point_index) or not (np.diff(starts) == m).all():
        return None
    return order.reshape(len(starts), m)


def point_scores(data: ReplayData, points: PointScores, strengths: np.ndarray, beta_cat: np.ndarray,
                 category_prior: np.ndarray, beta_ctx: np.ndarray, beta_trk: np.ndarray,
                 slot_weight: np.ndarray | float = 0.0, exposure_prior: np.ndarray | float = 0.0) -> np.ndarray:
    """Candidate scores (P, C) of ``points`` with per-point strengths (P, 4) and score weights (P,):
    :func:`~interestgym.core.interest.score_candidates` on what the points keep."""
    sims, cand = points.similarities, points.candidates
    return score_candidates(
        sims[..., 0], sims[..., 1], strengths, data.item_popularity[cand],
        beta_cat=beta_cat, category_counts=points.category_counts, candidate_category=data.item_category[cand],
        category_prior=category_prior, cos_context=sims[..., 2] if sims.shape[2] > 2 else None, beta_ctx=beta_ctx,
        tracker_z=points.tracker_z, beta_trk=beta_trk,
        slot_category_counts=points.slot_category_counts, category_slot_weight=slot_weight,
        exposure_counts=points.exposure_counts, exposure_prior=exposure_prior,
    )


def rank_points(data: ReplayData, metric: str, points: PointScores, strengths: np.ndarray, beta_cat: np.ndarray,
                category_prior: np.ndarray, beta_ctx: np.ndarray, beta_trk: np.ndarray,
                slot_weight: np.ndarray | float = 0.0, exposure_prior: np.ndarray | float = 0.0) -> np.ndarray:
    """``metric`` (P,) at ``points`` ranked with per-point strengths and score weights (see :func:`point_scores`).
    Row-wise: a point's value does not depend on the other points ranked with it."""
    scores = point_scores(data, points, strengths, beta_cat, category_prior, beta_ctx, beta_trk, slot_weight, exposure_prior)
    return ranking_metrics(scores, points.labels, [metric])[metric]


def check_scoring_kept(points: PointScores, config: ScoringConfig) -> None:
    """ValueError unless ``points`` keep the state ``config``'s score terms read."""
    if (config.beta_cat != 0 and points.category_counts is None or config.beta_ctx != 0 and points.similarities.shape[2] < 3
            or config.tracker_weight != 0 and points.tracker_z is None
            or config.slot_category_counts and points.slot_category_counts is None
            or config.exposure_counts and points.exposure_counts is None):
        raise ValueError("rank_points: the engine did not keep the category counts / time-slot profiles / tracker "
                         "scores / slot category counts / exposure counts this scoring needs")


@dataclass
class StepOutput:
    """What one :meth:`ReplayEngine.step` produced, for the stepped rows (in the order given).

    ``metrics[name]``: (n,) mean over the step's scoring points (NaN where ``scored`` is False);
    ``decision``: (n,) global decision index stepped; ``done``: (n,) no decision left for the row;
    ``point_row`` / ``point_index`` / ``point_metrics``: one entry per scoring point (row = position in
    the stepped rows, index = global scoring-point index).
    """

    decision: np.ndarray
    metrics: dict[str, np.ndarray]
    scored: np.ndarray
    n_points: np.ndarray
    done: np.ndarray
    strengths: np.ndarray
    point_row: np.ndarray
    point_index: np.ndarray
    point_metrics: dict[str, np.ndarray]
    points: PointScores | None = None
    #: (n,) the tracker's weight in each row's scoring at this decision (the data has a tracker attached), else None
    tracker_weight: np.ndarray | None = None
    #: (n,) what each row's event added to its category's count (the action has a gain column), else None
    count_gain: np.ndarray | None = None
    #: (n,) the rate each row's time-slot profile moved at (the engine keeps slot profiles), else None
    context_rate: np.ndarray | None = None
    #: (n,) lambda of each row's per-slot category counts in this decision's scoring (the engine keeps them), else None
    slot_weight: np.ndarray | None = None
    #: (n,) the keep factor each row's category counts forgot with at this decision (the engine keeps them), else None
    keep: np.ndarray | None = None


class ReplayEngine:
    """Interest state and replay cursors of ``n_rows`` users over one :class:`ReplayData`.

    :param data: the precomputed replay arrays.
    :param n_rows: number of rows (users replayed at once).
    :param metric: the reward metric (its step mean is the reward; see :mod:`interestgym.core.metrics`).
    :param also: metrics measured at the scoring points besides ``metric`` and the defaults (a full engine): an
        evaluation's selection metric, while ``metric`` stays the one the policy observes (its running means).
    :param lean: keep only what rules need, for tuning them: no shadow profiles, no L-only / S-only
        rankings, no running reward, and only ``metric`` at the scoring points. The features of
        :data:`LEAN_SKIPPED_FEATURES` are NaN in the observation (a policy reading them acts NaN), every
        other feature, the profiles and ``metric`` are exactly those of a full engine.
    """

    def __init__(self, data: ReplayData, n_rows: int, metric: str = "ndcg@10", *, lean: bool = False,
                 also: Sequence[str] = ()) -> None:
        parse_metric(metric)
        self.data = data
        self.n_rows = int(n_rows)
        self.metric = metric.strip().lower()
        self.lean = bool(lean)
        self.metric_names = (self.metric,) if self.lean else metric_names([self.metric, *also])
        d = data.dim
        r = self.n_rows
        n_shadow = 0 if self.lean else len(SHADOW_STRENGTHS)
        self.long_term = np.zeros((r, d), dtype=np.float32)
        self.short_term = np.zeros((r, d), dtype=np.float32)
        self.shadow = np.zeros((r, n_shadow, d), dtype=np.float32)
        self.reward_ema = np.zeros(r)
        self.drift_ema = np.zeros(r)
        self.short_long_ema = np.zeros(r)
        self.long_metric_ema = np.zeros(r)
        self.short_metric_ema = np.zeros(r)
        self.shadow_cos_ema = np.zeros((r, n_shadow))
        self.cursor = np.zeros(r, dtype=np.int64)
        self.end = np.zeros(r, dtype=np.int64)
        self.user = np.full(r, -1, dtype=np.int64)
        # Per-row fixed scoring configuration (a policy's ScoringConfig).
        self.fixed_p = np.full(r, np.nan)
        self.beta_cat = np.zeros(r)
        self.cat_forgetting = np.ones(r)  # NaN = tied to the action: 1 - a_L
        self.cat_prior = np.ones(r)
        self.beta_ctx = np.zeros(r)
        self.ctx_rate = np.zeros(r)
        self.beta_trk = np.zeros(r)
        self.slot_weight = np.zeros(r)  # lambda of the slot category counts
        self.exposure_prior = np.zeros(r)  # b of the exposure counts (0 = the category term without them)
        self.category_counts: np.ndarray | None = None  # (R, n_categories), allocated when used
        self.slot_category_counts: np.ndarray | None = None  # (R, N_TIME_SLOTS, n_categories), allocated when used
        self.slot_profiles: np.ndarray | None = None  # (R, N_TIME_SLOTS, d), allocated when used
        # (R, n_categories) counts of shown candidates per category, and those shown since the row's last
        # decision (folded in at the next one: core.transition.fold_exposure); allocated when used
        self.exposure_counts: np.ndarray | None = None
        self.exposure_pending: np.ndarray | None = None

    # ------------------------------------------------------------------------------ state
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every per-row array of the engine by attribute name (profiles, running means, cursors, users, counts, the rows'
        scoring configuration): all a replay carries from one step to the next, e.g. for a checkpoint from which a
        training run continues exactly (:meth:`load_state_arrays`). The arrays themselves, not copies."""
        return {name: value for name, value in vars(self).items() if isinstance(value, np.ndarray)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], where: str = "engine state") -> None:
        """Copy :meth:`state_arrays` of an engine of the same data, rows and scoring back in.

        :raises InterestGymError: naming ``where`` and the first array that differs in name, shape or dtype (the state
            of another dataset, env count or scoring)."""
        own = self.state_arrays()
        if set(arrays) != set(own):
            raise InterestGymError(f"{where}: arrays {sorted(set(arrays) ^ set(own))} are in one of it and this replay but not "
                                   "the other; expected the state of a replay of the same data, env count and scoring")
        for name, value in arrays.items():
            if value.shape != own[name].shape or value.dtype != own[name].dtype:
                raise InterestGymError(f"{where}: {name} is {value.dtype} {value.shape}; this replay's is {own[name].dtype} "
                                       f"{own[name].shape} (another dataset, env count or scoring?)")
        for name, value in arrays.items():
            own[name][...] = value

    # ------------------------------------------------------------------------------ configuration
    def set_scoring(self, rows: np.ndarray | slice, config: ScoringConfig) -> None:
        """Give ``rows`` a policy's fixed scoring configuration."""
        self.fixed_p[rows] = np.nan if config.popularity_weight is None else config.popularity_weight
        self.beta_cat[rows] = config.beta_cat
        self.cat_forgetting[rows] = np.nan if config.category_forgetting is None else config.category_forgetting
        self.cat_prior[rows] = config.category_prior
        self.beta_ctx[rows] = config.beta_ctx
        self.ctx_rate[rows] = config.context_rate
        if config.tracker_weight != 0 and self.data.point_tracker_z is None:
            raise InterestGymError(f"a scoring with tracker_weight={config.tracker_weight} needs replay data with a sequence "
                                   "tracker attached (agents.sequence.term.attach_tracker; `--sequence RUN` on the command line)")
        self.beta_trk[rows] = config.tracker_weight
        self.slot_weight[rows] = config.category_slot_weight  # ScoringConfig refuses lambda without beta_cat
        if config.exposure_counts and self.data.protocol != "impressions":
            raise InterestGymError(f"a scoring with category_exposure_prior={config.category_exposure_prior} counts the candidates "
                                   f"each impression showed; this replay's scoring points are {self.data.protocol!r} (sampled "
                                   "negatives, not what the user was shown); expected the impressions protocol")
        self.exposure_prior[rows] = config.category_exposure_prior
        if config.exposure_counts and self.exposure_counts is None:
            self.exposure_counts = np.zeros((self.n_rows, max(self.data.n_categories, 1)))
            self.exposure_pending = np.zeros((self.n_rows, max(self.data.n_categories, 1)))
        if config.beta_cat != 0 and self.category_counts is None:
            self.category_counts = np.zeros((self.n_rows, max(self.data.n_categories, 1)))
        if config.slot_category_counts and self.slot_category_counts is None:
            self.slot_category_counts = np.zeros((self.n_rows, N_TIME_SLOTS, max(self.data.n_categories, 1)))
        if config.beta_ctx != 0 and self.slot_profiles is None:
            self.slot_profiles = np.zeros((self.n_rows, N_TIME_SLOTS, self.data.dim), dtype=np.float32)

    def start(self, rows: np.ndarray, users: np.ndarray) -> None:
        """Start replaying ``users`` (indices into ``data.user_ids``) in ``rows``, from empty state."""
        rows = np.asarray(rows, dtype=np.int64)
        users = np.asarray(users, dtype=np.int64)
        self.user[rows] = users
        self.cursor[rows] = self.data.user_decision_start[users]
        self.end[rows] = self.data.user_decision_end[users]
        for arr in (self.long_term, self.short_term, self.shadow, self.reward_ema, self.drift_ema, self.short_long_ema,
                    self.long_metric_ema, self.short_metric_ema, self.shadow_cos_ema):
            arr[rows] = 0
        if self.category_counts is not None:
            self.category_counts[rows] = 0
        if self.slot_category_counts is not None:
            self.slot_category_counts[rows] = 0
        if self.exposure_counts is not None:
            self.exposure_counts[rows] = 0
            self.exposure_pending[rows] = 0  # type: ignore[index]
        if self.slot_profiles is not None:
            self.slot_profiles[rows] = 0

    # ------------------------------------------------------------------------------- observation
    def observe(self, rows: np.ndarray, *, terminal: bool = False) -> np.ndarray:
        """Observations (n, N_FEATURES + the data's extra observations) float32 at the rows' current decisions.

        ``terminal=True`` describes the row's last stepped decision with the state after its update:
        the placeholder observation returned at the end of an episode.
        """
        rows = np.asarray(rows, dtype=np.int64)
        at = _as_slice(rows, self.n_rows)  # reads only: views where the rows are a run
        dec = self.cursor[at] - (1 if terminal else 0)
        x = self.data.embeddings[self.data.decision_item[dec]]
        long_term, short_term = self.long_term[at], self.short_term[at]
        means = {name: getattr(self, name)[at] for name in RUNNING_MEAN_NAMES}
        shadow_cos = np.zeros((len(rows), len(SHADOW_STRENGTHS))) if self.lean else self.shadow_cos_ema[at]
        raw = state_quantities(x, long_term, short_term, means, shadow_cos)
        extra = self.data.decision_extra_obs  # optional observations after FEATURES (core.features.EXTRA_FEATURES)
        obs = np.empty((len(rows), N_FEATURES + (0 if extra is None else extra.shape[1])), dtype=np.float32)
        if self.lean:  # only the features a lean engine keeps: each column is encoded alone, so the same values
            obs[:, _LEAN_STATE_IDX] = encode_features(raw, _LEAN_STATE_FEATURES, max_action_weight=self.data.max_action_weight)
            obs[:, _LEAN_SKIPPED_IDX] = np.nan
        else:
            obs[:, _STATE_IDX] = encode_features(raw, STATE_FEATURES, max_action_weight=self.data.max_action_weight)
        obs[:, _LOG_IDX] = self.data.decision_log_features[dec]
        if extra is not None:
            obs[:, N_FEATURES:] = extra[dec]
        return obs

    # ------------------------------------------------------------------------------------- step
    def step(self, rows: np.ndarray, actions: np.ndarray, *, rank: bool = True) -> StepOutput:
        """Apply ``actions`` (n, 4) in the env's [-1, 1] box to ``rows`` and advance them one decision
        ((n, 5) for a residual policy: the fifth changes the category keep factor; (n, 6) with a tracker:
        the sixth changes the tracker's weight at this decision; (n, 7): the seventh changes the weight the
        event adds to its category's count; (n, 8): the eighth changes the time-slot profile's update rate;
        (n, 9): the ninth scales the per-slot category counts' lambda in this decision's scoring. Columns in
        :data:`~interestgym.core.protocol.ENV_ACTION_NAMES` order, zeros for what a policy does not change).

        ``rank=False`` (lean engines only): the scoring points' similarities are computed and kept
        (``output.points``) but not ranked: ``metrics`` and ``point_metrics`` are empty, for a caller that
        ranks them later (:func:`rank_points`, e.g. many steps' points at once)."""
        if not rank and not self.lean:
            raise ValueError("step(rank=False) needs a lean engine: a full engine folds the metric into its state")
        data = self.data
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        actions = np.asarray(actions).reshape(n, -1)
        # a residual policy's changes: the category keep factor, the tracker's weight in this decision's
        # scoring, what the event adds to its category's count, the time-slot profile's rate
        changes = action_changes(actions)
        keep_change, tracker_change, gain, context_change = changes.keep, changes.tracker, changes.gain, changes.context
        strengths = action_to_strengths(actions[:, :4])
        fixed = self.fixed_p[rows]
        strengths[:, 3] = np.where(np.isnan(fixed), strengths[:, 3], fixed)
        dec = self.cursor[rows].copy()
        x = data.embeddings[data.decision_item[dec]]

        # Running statistics (measured before the update), profile updates, then the score-term state.
        # (decision_transition returns new arrays: reading the state through views of a run of rows is safe)
        at = _as_slice(rows, self.n_rows)
        before = DecisionState(*(getattr(self, name)[at] for name in DecisionState._fields))
        for name, value in zip(DecisionState._fields, decision_transition(before, x, strengths)):
            getattr(self, name)[at] = value
        forgetting = None
        if self.category_counts is not None:
            forgetting = apply_keep_change(category_forgetting_factor(self.cat_forgetting[rows], strengths), keep_change)
            self.category_counts[rows] = update_category_counts(
                self.category_counts[rows], data.decision_category[dec], forgetting, gain)
            if self.slot_category_counts is not None:
                self.slot_category_counts[rows] = update_slot_category_counts(
                    self.slot_category_counts[rows], data.decision_slot[dec], data.decision_category[dec], forgetting, gain)
            if self.exposure_counts is not None:  # what was shown since the last decision joins, and all forget
                self.exposure_counts[rows] = fold_exposure(self.exposure_counts[rows], self.exposure_pending[rows], forgetting)  # type: ignore[index]
                self.exposure_pending[rows] = 0  # type: ignore[index]
        context_rate = None
        if self.slot_profiles is not None:
            slot = data.decision_slot[dec].astype(np.int64)
            context_rate = apply_rate_change(self.ctx_rate[rows], context_change)
            self.slot_profiles[rows, slot] = update_profile(self.slot_profiles[rows, slot], x, context_rate)

        # Scoring points between this decision and the next, scored with the updated state.
        p_start = data.decision_point_start[dec]
        p_count = data.decision_point_end[dec] - p_start
        if n == 1:  # the single env's row: its points are one run of indices
            point_row = np.zeros(int(p_count[0]), dtype=np.int64)
            point_index = np.arange(int(p_start[0]), int(p_start[0]) + int(p_count[0]), dtype=np.int64)
        else:
            point_row = np.repeat(np.arange(n), p_count)
            first = np.concatenate([[0], np.cumsum(p_count)[:-1]]) if n else np.zeros(0, np.int64)
            point_index = np.repeat(p_start, p_count) + (np.arange(len(point_row)) - np.repeat(first, p_count))
        beta_trk = apply_tracker_change(self.beta_trk[rows], tracker_change)
        # lambda of the per-slot category counts in this decision's scoring (a slot change scales the rule's)
        slot_weight = apply_slot_change(self.slot_weight[rows], changes.slot)
        point_metrics, points = self._score_points(rows, point_row, point_index, strengths, beta_trk, slot_weight, rank)
        if self.exposure_counts is not None and points is not None:
            # the step's impressions were shown (ranked above with the exposure before them): counted from the next
            # decision, from the candidates _score_points gathered for them
            self.exposure_pending[rows] += shown_counts(  # type: ignore[index]
                points.point_row, np.where(points.labels >= 0, data.item_category[points.candidates], -1), n,
                self.exposure_counts.shape[1])

        n_points = p_count.astype(np.int64)
        scored = n_points > 0
        denom = np.where(scored, n_points, 1)
        # bincount adds each row's points in order: a row's sums do not depend on other rows. Every metric in
        # one call: metric m's sum of row r lands in bin m * n + r (the same additions in the same order).
        names = list(point_metrics)
        if names:
            stacked = np.stack([point_metrics[name] for name in names])  # (M, P)
            bins = (point_row + n * np.arange(len(names))[:, None]).ravel()
            totals = np.bincount(bins, weights=stacked.ravel(), minlength=n * len(names)).reshape(len(names), n)
            means = np.where(scored, totals / denom, np.nan)
            sums = dict(zip(names, totals))
            step_metrics = dict(zip(names, means))
        else:
            sums, step_metrics = {}, {}
        if not self.lean:
            folded = (self.reward_ema, self.long_metric_ema, self.short_metric_ema)
            means = fold_outcomes(np.stack([m[at] for m in folded], axis=1),
                                  np.stack([sums[self.metric], sums["_long_only"], sums["_short_only"]], axis=1), n_points)
            for m, column in zip(folded, means.T):
                m[at] = column
        self.cursor[at] += 1
        done = self.cursor[at] >= self.end[at]
        return StepOutput(
            decision=dec, metrics={k: v for k, v in step_metrics.items() if not k.startswith("_")},
            scored=scored, n_points=n_points, done=done, strengths=strengths,
            point_row=point_row, point_index=point_index,
            point_metrics={k: v for k, v in point_metrics.items() if not k.startswith("_")},
            points=points, tracker_weight=beta_trk if data.point_tracker_z is not None else None, count_gain=gain,
            context_rate=None if context_rate is None else np.broadcast_to(context_rate, (n,)),
            slot_weight=None if self.slot_category_counts is None else np.broadcast_to(slot_weight, (n,)),
            keep=forgetting,
        )

    def _score_points(self, rows: np.ndarray, point_row: np.ndarray, point_index: np.ndarray, strengths: np.ndarray,
                      beta_trk: np.ndarray, slot_weight: np.ndarray, rank: bool = True) -> tuple[dict[str, np.ndarray], PointScores | None]:
        data = self.data
        n_pts = len(point_index)
        names = list(self.metric_names) if rank else []
        if n_pts == 0:
            empty = {name: np.zeros(0) for name in names}
            if not self.lean:
                empty["_long_only"] = np.zeros(0)
                empty["_short_only"] = np.zeros(0)
            return empty, None
        cand, labels, length = data.padded_points(point_index)
        width = cand.shape[1]

        prow = rows[point_row]
        long_term = self.long_term[prow]
        short_term = self.short_term[prow]
        use_ctx = self.slot_profiles is not None and np.any(self.beta_ctx[prow] != 0)
        ctx_prof = self.slot_profiles[prow, data.point_slot[point_index].astype(np.int64)] if use_ctx else None
        # Every point is scored with a matrix product of ITS OWN shape (n_candidates x d) @ (d x K):
        # points are grouped by candidate count, so a point's similarities are bit-identical whether it
        # is scored alone (single env) or in a batch (BLAS gives the same result for the same shape).
        profiles = np.stack([long_term, short_term] + ([ctx_prof] if use_ctx else []), axis=2)  # (P, d, K)
        sims = np.zeros((n_pts, width, profiles.shape[2]), dtype=np.float32)
        emb = data.embeddings
        if n_pts == 1 or (length == length[0]).all():  # one candidate count (always, with sampled negatives)
            by_length = [(int(length[0]), np.arange(n_pts))]
        else:
            lengths, groups = np.unique(length, return_inverse=True)
            by_length = [(int(size), np.nonzero(groups == g)[0]) for g, size in enumerate(lengths)]
        for size, members in by_length:
            shared = _shared_points(point_index[members])
            if shared is not None:
                # Rows scoring the same points (e.g. many rules replaying the same users in lock-step): each
                # point's candidates are gathered once and multiplied with each row's profiles, one product
                # of the same (n_candidates x d) @ (d x K) shape per row, as below.
                grid = members[shared]  # (U, m): the m rows of each distinct point
                per_block = max(1, _SHARED_BLOCK // grid.shape[1])
                buf = np.empty((min(per_block, len(grid)), size, data.dim), dtype=np.float32)
                for s in range(0, len(grid), per_block):
                    idx = grid[s:s + per_block]
                    block = buf[: len(idx)]
                    np.take(emb, cand[idx[:, 0], :size], axis=0, out=block)
                    flat = idx.ravel()
                    product = np.matmul(block[:, None], profiles[flat].reshape(idx.shape + profiles.shape[1:]))
                    sims[flat, :size] = product.reshape((len(flat),) + product.shape[2:])
                continue
            buf = np.empty((min(_POINT_BLOCK, len(members)), size, data.dim), dtype=np.float32)
            for s in range(0, len(members), _POINT_BLOCK):
                idx = members[s:s + _POINT_BLOCK]
                block = buf[: len(idx)]
                np.take(emb, cand[idx, :size], axis=0, out=block)
                sims[idx, :size] = np.matmul(block, profiles[idx])
        tracker_z = None
        if data.point_tracker_z is not None:  # kept even when no row weighs it: rank_points may
            lo = data.point_offsets[point_index]
            col = np.arange(width)[None, :]
            valid = col < length[:, None]
            tracker_z = np.where(valid, data.point_tracker_z[np.where(valid, lo[:, None] + col, 0)], 0.0).astype(np.float32)
        counts = self.category_counts[prow] if self.category_counts is not None else None
        slot_counts = None
        if self.slot_category_counts is not None:
            slot_counts = self.slot_category_counts[prow, data.point_slot[point_index].astype(np.int64)]
        points = PointScores(point_row=point_row, prow=prow, candidates=cand, labels=labels, similarities=sims,
                             tracker_z=tracker_z, category_counts=counts, slot_category_counts=slot_counts,
                             exposure_counts=None if self.exposure_counts is None else self.exposure_counts[prow])
        if not rank:
            return {}, points
        cos_long, cos_short = sims[..., 0], sims[..., 1]
        scores = point_scores(data, points, strengths[point_row], self.beta_cat[prow], self.cat_prior[prow],
                              self.beta_ctx[prow], beta_trk[point_row], slot_weight[point_row], self.exposure_prior[prow])
        if self.lean:
            return ranking_metrics(scores, labels, names), points
        # The L-only / S-only rankings feed the observation's comparison statistics. Few points (the
        # single env): one call on the stacked rows saves Python overhead; many points: only the reward
        # metric for the extra rankings. Rows are independent, so both paths give identical numbers.
        if n_pts <= _STACK_METRICS_BELOW:
            stacked = ranking_metrics(np.concatenate([scores, cos_long, cos_short]), np.concatenate([labels, labels, labels]), names)
            out = {name: v[:n_pts] for name, v in stacked.items()}
            out["_long_only"] = stacked[self.metric][n_pts: 2 * n_pts]
            out["_short_only"] = stacked[self.metric][2 * n_pts:]
            return out, points
        out = ranking_metrics(scores, labels, names)
        out["_long_only"] = ranking_metrics(cos_long, labels, [self.metric])[self.metric]
        out["_short_only"] = ranking_metrics(cos_short, labels, [self.metric])[self.metric]
        return out, points


def member_strengths(actions: np.ndarray, config: ScoringConfig) -> np.ndarray:
    """(n, 4) strengths a rule with fixed scoring ``config`` scores with, from its ``actions`` (n, 4+): what
    :meth:`ReplayEngine.step` does with a row's actions and its fixed popularity weight."""
    strengths = action_to_strengths(np.asarray(actions)[:, :4])
    if config.popularity_weight is not None:
        strengths[:, 3] = config.popularity_weight
    return strengths


def score_weights(config: ScoringConfig) -> tuple[float, float, float, float, float, float]:
    """A scoring's fixed score-term weights as :func:`rank_points` takes them: (beta_cat, category_prior,
    beta_ctx, tracker_weight, category_slot_weight, category_exposure_prior)."""
    return (config.beta_cat, config.category_prior, config.beta_ctx, config.tracker_weight, config.category_slot_weight,
            config.category_exposure_prior)
