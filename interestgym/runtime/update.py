"""The runtime's per-event state update: one event (:func:`update_one`) and many users (:func:`update_rows`).

Both are the replay engine's ``observe`` + ``step`` for the users concerned, through the same core
functions; they differ only in how the work is laid out:

* :func:`update_rows` moves rows of a :class:`~interestgym.runtime.table.StateTable` (users' states as
  columns) and calls the batched core functions once for all decisions (``state_quantities``,
  ``online_log_quantities``, ``encode_features``, ``decision_transition``, ``update_category_counts``,
  ``update_profile``): numpy's per-call overhead is paid once per batch, not once per user, and the
  per-user Python is a dict lookup for the user's categories. :func:`update_many` (``update_batch``, a
  list of ``UserState``) stacks the states into a table, updates it and takes them back out.
* :func:`update_one` is a service's usual call (one user, one event), where that per-call overhead is
  the whole cost. It reads the counters as Python ints, encodes the observation with
  :class:`~interestgym.runtime.rowfeatures.RowEncoder` (the core's features to the bit, in a handful of
  calls), computes the five cosines of the decision (x with L, S and the shadows) in ONE
  ``cosine_rows`` call over the state's profile block, uses them for both the observation and the
  running statistics, and moves all five profiles with ONE ``update_profile`` call: the operations of
  ``decision_transition``, element for element, without its concatenations.

Bit-equality of the two paths (and so of the one-event path with the engine) is what
``tests/test_runtime_fastpath.py`` and ``tests/test_runtime_table.py`` check on random streams, next to the
replay-parity tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from interestgym.core.clock import time_slot
from interestgym.core.dtw import window_drift
from interestgym.core.features import (
    FEATURE_NAMES,
    RUNNING_MEAN_NAMES,
    SHADOW_STRENGTHS,
    encode_features,
    state_quantities,
)
from interestgym.core.interest import cosine_rows, update_profile
from interestgym.core.log_features import (
    RATING_ACTION,
    is_decision,
    next_category_run,
    online_log_quantities,
)
from interestgym.core.numeric import clip
from interestgym.core.transition import (
    DecisionState,
    action_changes,
    decision_transition,
    ema,
    fold_exposure,
    fold_outcomes,
    one_action,
    update_category_counts,
    update_slot_category_counts,
)
from interestgym.errors import InterestGymError
from interestgym.runtime.state import (
    COUNTERS,
    MEANS_SLICE,
    PENDING_SLICE,
    RUNNING_MEANS,
    SHADOW_COS_SLICE,
    STRENGTHS_SLICE,
    Event,
    UserState,
)
from interestgym.runtime.table import EventBatch, StateTable
from interestgym.runtime.tracker import TrackerTerm

if TYPE_CHECKING:
    from interestgym.runtime.policy import ExportedPolicy

# Counter positions (COUNTERS order).
_N_EVENTS, _N_DECISIONS, _LAST_EVENT_TS, _LAST_DECISION_TS, _LAST_CATEGORY, _CATEGORY_RUN, _PENDING_POINTS = (
    COUNTERS.index(name) for name in (
        "n_events", "n_decisions", "last_event_ts", "last_decision_ts", "last_category", "category_run", "pending_points"))
_M = {name: MEANS_SLICE.start + i for i, name in enumerate(RUNNING_MEANS)}
#: The running means the scoring points' sums (PENDING, in that order) are folded into (stats positions).
_FOLDED_AT = tuple(_M[name] for name in ("reward_ema", "long_metric_ema", "short_metric_ema"))
_FOLDED = np.array(_FOLDED_AT)
_NO_PENDING = [0.0] * (PENDING_SLICE.stop - PENDING_SLICE.start)
#: Stats positions of the running statistics a decision moves, in the order of the cosines they take:
#: drift_ema <- cos(x, L), short_long_ema <- cos(x, S) - cos(x, L), shadow_cos_ema[k] <- cos(x, H_k).
_MOVED_AT = (_M["drift_ema"], _M["short_long_ema"], *range(SHADOW_COS_SLICE.start, SHADOW_COS_SLICE.stop))


def _check_order(policy: ExportedPolicy, state: UserState, ts: int, n_events: int, last_event_ts: int) -> None:
    """The state fits the policy (every part of it the policy reads: ``ExportedPolicy._check_state``) and the event
    comes in time order."""
    policy._check_state(state)
    if n_events > 0 and ts < last_event_ts:
        raise _out_of_order(ts, last_event_ts)


def _out_of_order(ts: int, last_event_ts: int, where: str = "") -> InterestGymError:
    return InterestGymError(f"event ts {ts} is before the user's previous event ({last_event_ts}); expected events in time order{where}")


def _category_of(state: UserState, category: str, last_category: int) -> tuple[int, int, bool]:
    """(index in the user's categories or -1, previous decisions in it, the previous decision had it)."""
    try:
        cat = state.categories.index(category)
    except ValueError:
        return -1, 0, False
    return cat, int(state.category_decisions[cat]), last_category == cat


# -------------------------------------------------------------------------------- one event
def observe_one(policy: ExportedPolicy, state: UserState, event: Event,
                counters: list[int] | None = None) -> tuple[np.ndarray, tuple]:
    """The observation (1, policy.n_obs) of a decision event (the features, then the policy's extra
    observations, :func:`decision_extras`), and what :func:`update_one` reuses of it.

    Pending scoring points are folded into a copy of the stats (the engine folds them at the end of the
    step that scored them, i.e. before this observation); ``state`` is not modified.

    :param counters: ``state.counters`` as a list the caller already has (it is updated in place).
    """
    counters = state.counters.tolist() if counters is None else counters
    ts = int(event.ts)
    x = policy._item_vector(event.item_vector)
    values = state.stats.tolist()  # the stats as Python floats (float64): the one-user forms' arithmetic is the same
    pending = counters[_PENDING_POINTS]  # read before the fold zeroes it: decision_extras folds with it too
    if pending > 0:
        folded = fold_outcomes([values[j] for j in _FOLDED_AT], values[PENDING_SLICE], pending)  # the one-user form
        for j, v in zip(_FOLDED_AT, folded):
            values[j] = v
        values[PENDING_SLICE] = _NO_PENDING
        counters[_PENDING_POINTS] = 0
    profiles = state.profiles
    # cos(x, L), cos(x, S), cos(x, H_k) in one call (row-wise: each equals the engine's own call).
    # (x repeated: a real array is ~5x cheaper to make than np.broadcast_to's view; same numbers)
    cos = cosine_rows(profiles, x[None].repeat(profiles.shape[0], axis=0))
    cos_long_short = cosine_rows(profiles[0:1], profiles[1:2])
    cat, category_count, same = _category_of(state, event.category, counters[_LAST_CATEGORY])
    n_events, n_decisions = counters[_N_EVENTS], counters[_N_DECISIONS]
    hour, weekday = event.hour_weekday(policy.tz_offset_hours)
    cos_values = cos.tolist()
    obs = policy._row_encoder.encode(
        cos_values[0], cos_values[1], float(cos_long_short[0]), not profiles[0].any(), values[MEANS_SLICE],
        values[SHADOW_COS_SLICE], policy.action_weights[event.action], float(event.value),
        ts - counters[_LAST_EVENT_TS] if n_events > 0 else 0, ts - counters[_LAST_DECISION_TS] if n_decisions > 0 else 0,
        hour, weekday, n_events, n_decisions, category_count, len(state.categories), counters[_CATEGORY_RUN] if same else 0,
    )
    extra, tracker, drift = decision_extras(policy, state.tracker, state.drift_window, event.item_id, event.action, ts, x, pending)
    if extra is not None:
        obs = np.concatenate([obs, extra[None]], axis=1)
    return obs, (x, values, counters, cos_values, cat, hour, tracker, drift)


def decision_extras(policy: ExportedPolicy, term: TrackerTerm | None, drift: np.ndarray | None, item_id: Any, action: str,
                    ts: int, x: np.ndarray, pending_points: int
                    ) -> tuple[np.ndarray | None, TrackerTerm | None, np.ndarray | None]:
    """A decision's extra observations (``policy.extra_obs``, float32, or None when it has none) and the
    user's tracker term and drift window after it: the event's item joins the tracker's window (the
    weight is set after the policy acts) and the drift window; the tracker-only metric of the scoring
    points since the last decision is folded into its running mean, as the replay folds it
    (``agents.sequence.term.tracker_observations``).

    :param term: the user's tracker term and ``drift`` its drift window (None where the state has none);
        ``item_id``, ``action`` and ``ts`` are the decision event's.
    :param pending_points: the state's scoring points since the last decision (before they are folded).
    """
    values: dict[str, float] = {}
    if policy.tracker is not None:
        if term is None:
            raise InterestGymError("a user state without the tracker's window: the policy scores with a sequence tracker; "
                                   "start users with policy.new_state()")
        if item_id is None:
            raise InterestGymError("an event without item_id: the policy scores with a sequence tracker, whose window "
                                   "holds the items of the user's last decisions; expected Event(..., item_id=...)")
        # an item outside the tracker's catalogue (e.g. added to a service after the export) is not one
        # the tracker can read: its window stays as it is, as TrackerRuntime.update leaves it
        item = str(item_id)
        policy.tracker.check_window(term.window, "user state field 'tracker_window'")
        window = policy.tracker.append(term.window, item, action, ts) if item in policy.tracker.row else term.window
        metric = term.metric_ema
        if policy.observes_tracker:
            metric = float(fold_outcomes(np.array([[term.metric_ema]]), np.array([[term.pending]]), np.array([pending_points]))[0, 0])
            top1, entropy = policy.tracker.confidence(window)
            values.update(tracker_metric_ema=metric, tracker_top1_prob=top1, tracker_entropy=entropy)
        term = TrackerTerm(window, term.weight, metric, 0.0)
    if policy.observes_drift:
        if drift is None:
            raise InterestGymError("a user state without the drift window: the policy observes the DTW drift; "
                                   "start users with policy.new_state()")
        k = policy.drift_k
        if len(drift) > 2 * k or not np.isfinite(drift).all():
            raise InterestGymError(f"user state field 'drift_window': {len(drift)} rows, finite: {bool(np.isfinite(drift).all())}; "
                                   f"expected at most {2 * k} finite item vectors (a state stored under another export?)")
        drift = np.concatenate([drift, x[None].astype(np.float32)])[-2 * k:]
        values["dtw_drift"] = float(window_drift(drift[None])[0]) if len(drift) == 2 * k else 0.0
    if not policy.extra_obs:
        return None, term, drift
    extra = clip(np.array([values[name] for name in policy.extra_obs], dtype=np.float64), 0.0, 1.0).astype(np.float32)
    return extra, term, drift


def update_one(policy: ExportedPolicy, state: UserState, event: Event) -> UserState:
    """``state`` after ``event`` (a new state; ``state`` is not modified): the single-event path."""
    ts = int(event.ts)
    counters = state.counters.tolist()
    _check_order(policy, state, ts, counters[_N_EVENTS], counters[_LAST_EVENT_TS])
    if not policy._decision(event):
        # every event counts (n_events, last_event_ts); nothing else moves
        counters[_N_EVENTS] += 1
        counters[_LAST_EVENT_TS] = ts
        new = state.copy()
        new.counters = np.array(counters, dtype=np.int64)
        return new
    obs, (x, values, counters, cos, cat, hour, tracker, drift) = observe_one(policy, state, event, counters)
    action = policy._act_row(obs)  # the env action as Python floats (float32 values)
    # the strengths, changes and the counts' keep factor in Python floats (one_action: the core's arithmetic)
    strengths, changes, forgetting = one_action(action, policy._fixed_forgetting)
    if policy._fixed_p is not None:
        strengths[3] = policy._fixed_p

    # decision_transition, element for element: the running statistics from the cosines measured
    # before the update (in Python floats: the float32 cosines widened exactly, float64 arithmetic as the core's),
    # then L, S and the shadows moved in one update_profile call (x (d,) broadcasts against the (rows, d) block).
    moved = [cos[0], cos[1] - cos[0], *cos[2:]]  # cos(x, S) - cos(x, L), as the core subtracts the widened cosines
    for j, v in zip(_MOVED_AT, moved):
        values[j] = ema(values[j], v)
    values[STRENGTHS_SLICE] = strengths
    stats = np.array(values, dtype=np.float64)
    profiles = update_profile(state.profiles, x, [strengths[0], strengths[1], *SHADOW_STRENGTHS])

    counts, slot_counts, slot_factor = state.category_counts, state.slot_category_counts, state.slot_factor
    exposure = state.exposure
    if counts is not None:
        # the count functions' one-user form (an int column, float factors): a category unknown to the
        # export has no column (-1), its count stays implicit 0
        column = policy._category_index.get(event.category, -1)
        counts = update_category_counts(counts, column, forgetting, changes.gain)
        if slot_counts is not None:
            slot_counts = update_slot_category_counts(slot_counts, policy._slot_of_hour(hour), column, forgetting, changes.gain)
            slot_factor = 1.0 if changes.slot is None else changes.slot
        if exposure is not None:  # what was shown since the last decision joins; all forget
            exposure = _folded_exposure(exposure, np.float64(forgetting))  # float64, as the batched path's factors
    slots = state.slot_profiles
    # the action as an array only for what reads it so (the context rate's and the tracker weight's change)
    moves_slots = slots is not None and policy._beta_ctx != 0
    actions = np.array([action], dtype=np.float32) if moves_slots or tracker is not None else None
    if moves_slots:
        slot = policy._slot_of_hour(hour)
        slots = slots.copy()
        slots[slot] = update_profile(slots[slot][None], x[None], policy._context_rates(actions))[0]
    elif slots is not None:
        slots = slots.copy()

    categories, decisions, cat = _count_category(state, event, cat)
    counters[_CATEGORY_RUN] = next_category_run(counters[_LAST_CATEGORY], counters[_CATEGORY_RUN], cat)
    counters[_LAST_CATEGORY] = cat
    counters[_N_DECISIONS] += 1
    counters[_LAST_DECISION_TS] = ts
    counters[_N_EVENTS] += 1
    counters[_LAST_EVENT_TS] = ts
    return UserState._of_blocks(profiles, stats, np.array(counters, dtype=np.int64), categories, decisions, counts, slots,
                                None if actions is None else policy._tracker_weighted(tracker, actions), drift, slot_counts,
                                slot_factor, exposure)


def _folded_exposure(blocks: np.ndarray, forgetting: np.ndarray | float) -> np.ndarray:
    """New (n, 2, n_categories) exposure blocks at the users' decisions: row 0 the counts after
    :func:`~interestgym.core.transition.fold_exposure`, row 1 (shown since the last decision) zero again.
    One user's block (2, n_categories) with a float ``forgetting`` gives that user's new block."""
    out = np.zeros(blocks.shape, dtype=blocks.dtype)
    out[..., 0, :] = fold_exposure(blocks[..., 0, :], blocks[..., 1, :], forgetting)
    return out


# -------------------------------------------------------------------------------- many users
def update_many(policy: ExportedPolicy, states: Sequence[UserState], events: Sequence[Event]) -> list[UserState]:
    """The users' states after one event each (new states; the inputs are not modified): the states
    stacked into a :class:`~interestgym.runtime.table.StateTable`, moved by :func:`update_rows`, taken back out."""
    if len(states) != len(events):
        raise InterestGymError(f"update_batch got {len(states)} states and {len(events)} events; expected one event per state")
    if not states:
        return []
    for s in states:  # each state fits the policy, named as the one-event path names it
        policy._check_state(s)
    table = StateTable.from_states(states)
    update_rows(policy, table, np.arange(len(states)), EventBatch.of(events, policy))
    return table.states()


def update_rows(policy: ExportedPolicy, table: StateTable, rows: np.ndarray, batch: EventBatch) -> None:
    """The table's ``rows`` (distinct) after one event each, ``batch`` row k being row ``rows[k]``'s event,
    in place: one vectorised pass over all their decisions and one policy call. Everything is checked before
    anything is written: an error leaves the table as it was."""
    policy._check_table(table, rows)
    counters = table.counters[rows]
    ts = batch.ts
    late = (counters[:, _N_EVENTS] > 0) & (ts < counters[:, _LAST_EVENT_TS])
    if late.any():
        k = int(np.argmax(late))
        raise _out_of_order(int(ts[k]), int(counters[k, _LAST_EVENT_TS]), f" (event {k} of the batch)")
    weights = policy._action_weights_of(batch.action)
    decision = is_decision(weights, batch.action == RATING_ACTION, batch.value, policy.positive_rating, batch.has_item)
    dec = np.flatnonzero(decision)
    if len(dec):
        _decide_rows(policy, table, rows[dec], batch, dec, weights[dec], counters[dec])  # writes only once all is computed
    other = np.flatnonzero(~decision)
    if len(other):  # every event counts (n_events, last_event_ts); nothing else moves
        moved = counters[other]
        moved[:, _N_EVENTS] += 1
        moved[:, _LAST_EVENT_TS] = ts[other]
        table.counters[rows[other]] = moved


def _decide_rows(policy: ExportedPolicy, table: StateTable, rows: np.ndarray, batch: EventBatch, at: np.ndarray,
                 weights: np.ndarray, counters: np.ndarray) -> None:
    """The table's ``rows`` after their decision events ``at`` (positions in ``batch``): the engine's
    observe + step for these rows, written into the table at the end."""
    n = len(rows)
    x = policy._vectors(batch.item_vectors[at], "event item_vector", 2)
    ts = batch.ts[at]
    profiles = table.profiles[rows]
    stats = table.stats[rows]
    # scoring points recorded since each user's last decision -> running means (rows without keep theirs)
    pending = counters[:, _PENDING_POINTS].copy()  # a copy: the fold below zeroes the counters, the extras fold too
    if pending.any():
        stats[:, _FOLDED] = fold_outcomes(stats[:, _FOLDED], stats[:, PENDING_SLICE], pending)
        stats[pending > 0, PENDING_SLICE] = 0.0
        counters[:, _PENDING_POINTS] = 0

    # the log counters' per-user part: the user's categories in order of first decision and the decisions in each
    categories = batch.category[at].tolist()
    row_list = rows.tolist()
    indexes = [table.category_index(r) for r in row_list]
    cats = np.array([index.get(category, -1) for index, category in zip(indexes, categories)], dtype=np.int64)
    n_categories = np.array([len(index) for index in indexes], dtype=np.int64)
    category_count = np.zeros(n, dtype=np.int64)
    for i, (r, cat) in enumerate(zip(row_list, cats.tolist())):
        if cat >= 0:
            category_count[i] = table.category_decisions[r][cat]
    same_category = (cats >= 0) & (cats == counters[:, _LAST_CATEGORY])
    long_term, short_term = profiles[:, 0], profiles[:, 1]
    raw = state_quantities(x, long_term, short_term, {name: stats[:, _M[name]] for name in RUNNING_MEAN_NAMES},
                           stats[:, SHADOW_COS_SLICE])
    log = online_log_quantities(
        ts, counters[:, _N_EVENTS], counters[:, _LAST_EVENT_TS], counters[:, _N_DECISIONS], counters[:, _LAST_DECISION_TS],
        category_count, n_categories, same_category, counters[:, _CATEGORY_RUN],
    )
    clock = batch.hour_weekday(at, policy.tz_offset_hours)
    log.update(action_weight=weights, value=batch.value[at], hour=clock[:, 0], weekday=clock[:, 1])
    # One call for all columns: each column is computed on its own, so this equals the engine's two
    # calls (state features, precomputed log features) to the bit.
    obs = encode_features({**raw, **log}, FEATURE_NAMES, max_action_weight=policy.max_action_weight)
    extras = None
    if policy.extra_obs or policy.tracker is not None or policy.observes_drift:
        extras = [decision_extras(policy, None if table.tracker is None else table.tracker[r],
                                  None if table.drift is None else table.drift[r],
                                  None if batch.item_id is None else batch.item_id[k], str(batch.action[k]), int(batch.ts[k]),
                                  x[i], int(pending[i]))
                  for i, (r, k) in enumerate(zip(row_list, at.tolist()))]
        if policy.extra_obs:
            obs = np.concatenate([obs, np.stack([extra for extra, _, _ in extras])], axis=1)
    actions = policy.act(obs)
    strengths = policy._strengths(actions)
    changes = action_changes(actions)
    keep_change, gain = changes.keep, changes.gain

    drift, short_long = _M["drift_ema"], _M["short_long_ema"]
    after = decision_transition(DecisionState(long_term, short_term, profiles[:, 2:], stats[:, drift], stats[:, short_long],
                                              stats[:, SHADOW_COS_SLICE]), x, strengths)
    stats[:, drift], stats[:, short_long], stats[:, SHADOW_COS_SLICE] = after.drift_ema, after.short_long_ema, after.shadow_cos_ema
    stats[:, STRENGTHS_SLICE] = strengths

    # The extra score terms' state, for the users whose state has it (all of them, for states made by
    # this policy's new_state; a foreign state without them keeps none, as in the one-event path).
    writes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (column, its rows, new values): written at the end
    if table.category_counts is not None:
        sub = np.flatnonzero(table.present["category_counts"][rows])
        if len(sub):
            # a category unknown to the export has no column (-1): its count stays implicit 0
            index = policy._category_index
            column = np.array([index.get(categories[k], -1) for k in sub.tolist()], dtype=np.int64)
            forgetting = policy._forgetting(strengths[sub], None if keep_change is None else keep_change[sub])
            row_gain = None if gain is None else gain[sub]
            writes.append((table.category_counts, rows[sub],
                           update_category_counts(table.category_counts[rows[sub]], column, forgetting, row_gain)))
            if table.slot_category_counts is not None:
                inner = np.flatnonzero(table.present["slot_category_counts"][rows[sub]])
                if len(inner):
                    moved_rows = rows[sub[inner]]
                    writes.append((table.slot_category_counts, moved_rows, update_slot_category_counts(
                        table.slot_category_counts[moved_rows], time_slot(clock[sub[inner], 0]), column[inner],
                        forgetting[inner], None if row_gain is None else row_gain[inner])))
                    writes.append((table.slot_factor, moved_rows,  # type: ignore[arg-type]
                                   np.ones(len(inner)) if changes.slot is None else changes.slot[sub[inner]].astype(np.float64)))
            if table.exposure is not None:
                inner = np.flatnonzero(table.present["exposure"][rows[sub]])
                if len(inner):
                    writes.append((table.exposure, rows[sub[inner]],
                                   _folded_exposure(table.exposure[rows[sub[inner]]], forgetting[inner])))
    if table.slot_profiles is not None and policy._beta_ctx != 0:
        sub = np.flatnonzero(table.present["slot_profiles"][rows])
        if len(sub):
            slot = time_slot(clock[sub, 0])
            rates = policy._context_rates(actions)
            writes.append((table.slot_profiles, (rows[sub], slot),  # type: ignore[arg-type]
                           update_profile(table.slot_profiles[rows[sub], slot], x[sub], rates if np.ndim(rates) == 0 else rates[sub])))

    # the log counters after the decision
    for i, (r, index, category) in enumerate(zip(row_list, indexes, categories)):
        cat = index.get(category)
        if cat is None:  # new to the user: appended
            cats[i] = index[category] = len(index)
            table.categories[r].append(category)
            table.category_decisions[r].append(1)
        else:
            table.category_decisions[r][cat] += 1
    counters[:, _CATEGORY_RUN] = next_category_run(counters[:, _LAST_CATEGORY], counters[:, _CATEGORY_RUN], cats)
    counters[:, _LAST_CATEGORY] = cats
    counters[:, _N_DECISIONS] += 1
    counters[:, _LAST_DECISION_TS] = ts
    counters[:, _N_EVENTS] += 1
    counters[:, _LAST_EVENT_TS] = ts
    # L, S and the shadows written row by row into the table (views of one new block: no concatenated copy)
    table.profiles[rows, 0], table.profiles[rows, 1], table.profiles[rows, 2:] = after.long_term, after.short_term, after.shadow
    table.stats[rows], table.counters[rows] = stats, counters
    for column, where, values in writes:
        column[where] = values
    if extras is not None:
        for i, r in enumerate(row_list):
            if table.tracker is not None:
                table.tracker[r] = policy._tracker_weighted(extras[i][1], actions[i: i + 1])
            if table.drift is not None:
                table.drift[r] = extras[i][2]


def _count_category(state: UserState, event: Event, cat: int) -> tuple[list[str], np.ndarray, int]:
    """The state's categories and per-category decision counts after a decision in column ``cat``
    (-1: the event's category is new to the user, appended); new lists / arrays, and the column."""
    categories = list(state.categories)
    if cat < 0:
        categories.append(event.category)
        return categories, np.append(state.category_decisions, np.int64(1)), len(categories) - 1
    decisions = state.category_decisions.copy()
    decisions[cat] += 1
    return categories, decisions, cat
