"""The per-decision state transition, batched over rows (pure numpy).

One implementation for the replay engine (``interestgym.envs.engine``) and the production runtime
(``interestgym.runtime.policy``). At a decision (a positive event with item vector x, strengths
(a_L, a_S, w, p) chosen by the policy) a row's state moves as follows:

1. running statistics measured BEFORE the update, i.e. what the profiles predicted about x:
   ``drift_ema <- ema(cos(x, L))``, ``short_long_ema <- ema(cos(x, S) - cos(x, L))``,
   ``shadow_cos_ema <- ema(cos(x, H_a))`` (:func:`decision_transition`);
2. the profile updates: L with a_L, S with a_S (:func:`~interestgym.core.interest.update_profile`;
   0 = no update), the shadow profiles H_a with the fixed :data:`SHADOW_STRENGTHS`;
3. the optional score-term state: forgetful category counts (:func:`update_category_counts`, with a fixed
   factor or ``1 - a_L``: :func:`category_forgetting_factor`), the same per time-of-day slot
   (:func:`update_slot_category_counts`, when the scoring weighs them) and the
   profile of the event's time slot (``update_profile`` with the context rate; the caller gathers and
   scatters the slot row, as its storage differs).

The scoring points between a decision and the next are scored with the updated state; their metric
sums then move reward_ema / long_metric_ema / short_metric_ema (:func:`fold_outcomes`), before the
next observation.

Everything is row-wise (element-wise maths, row-wise einsum), so a row's numbers do not depend on the
other rows of the batch: the engine's batches and the runtime's single users agree to the bit.
Profiles are float32; running statistics float64 (cosines are computed in float32, then widened).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from interestgym.core.features import EMA_RATE, SHADOW_STRENGTHS
from interestgym.core.interest import cosine_rows, update_profile
from interestgym.core.numeric import clip, clip_float
from interestgym.core.protocol import ENV_ACTION_NAMES

_SHADOW_RATES = np.array(SHADOW_STRENGTHS)


class DecisionState(NamedTuple):
    """The part of B rows' state that every decision moves (stacked arrays, one row per user).

    The field names are the replay engine's attribute names.
    """

    long_term: np.ndarray  #: (B, d) float32
    short_term: np.ndarray  #: (B, d) float32
    shadow: np.ndarray  #: (B, len(SHADOW_STRENGTHS), d) float32
    drift_ema: np.ndarray  #: (B,) float64
    short_long_ema: np.ndarray  #: (B,) float64
    shadow_cos_ema: np.ndarray  #: (B, len(SHADOW_STRENGTHS)) float64


def ema(mean: np.ndarray, value: np.ndarray) -> np.ndarray:
    """One step of every running mean of the observation: ``m + EMA_RATE (v - m)``."""
    return mean + EMA_RATE * (value - mean)


def decision_transition(state: DecisionState, x: np.ndarray, strengths: np.ndarray) -> DecisionState:
    """The rows' state after a decision on items ``x`` (B, d) float32 with ``strengths`` (B, 4).

    Only a_L = ``strengths[:, 0]`` and a_S = ``strengths[:, 1]`` act here (w and p score candidates).
    Returns new arrays (the three profiles are views into one new block); ``state`` is not modified.
    """
    cos_long = cosine_rows(x, state.long_term).astype(np.float64)
    cos_short = cosine_rows(x, state.short_term).astype(np.float64)
    cos_shadow = np.einsum("bkd,bd->bk", state.shadow, x).astype(np.float64)
    # L, S and the shadow profiles go through update_profile in ONE call: it is row-wise, so this equals
    # separate calls to the bit, with less per-call overhead (measured ~36 vs ~50 us for one user, d=384);
    # the item broadcasts over a user's profiles instead of being copied for each.
    b, k, _ = state.shadow.shape
    profiles = np.concatenate([state.long_term[:, None], state.short_term[:, None], state.shadow], axis=1)
    rates = np.empty((b, 2 + k), dtype=np.result_type(strengths, _SHADOW_RATES))  # k = 0: a lean engine
    rates[:, :2] = strengths[:, :2]
    rates[:, 2:] = _SHADOW_RATES[:k]
    moved = update_profile(profiles, x[:, None, :], rates)
    return DecisionState(
        long_term=moved[:, 0],
        short_term=moved[:, 1],
        shadow=moved[:, 2:],
        drift_ema=ema(state.drift_ema, cos_long),
        short_long_ema=ema(state.short_long_ema, cos_short - cos_long),
        shadow_cos_ema=ema(state.shadow_cos_ema, cos_shadow),
    )


def category_forgetting_factor(fixed: np.ndarray | float | None, strengths: np.ndarray) -> np.ndarray:
    """Per-row forgetting factor of the category counts at a decision.

    :param fixed: the rows' ``ScoringConfig.category_forgetting``: a scalar, ``None`` or a (B,) array in
        which NaN stands for ``None``; ``None`` / NaN = tied to the action: ``1 - a_L``.
    :param strengths: (B, 4) the decision's strengths (a_L, a_S, w, p) in [0, 1].
    :return: (B,) float64 factors in [0, 1].
    """
    tied = 1.0 - np.asarray(strengths, dtype=np.float64)[:, 0]
    if fixed is None:
        return tied
    if isinstance(fixed, float) and not math.isnan(fixed):  # a number, not NaN: every row (the runtime's one row)
        return np.full(tied.shape, fixed)
    fixed = np.broadcast_to(np.asarray(fixed, dtype=np.float64), tied.shape)
    return np.where(np.isnan(fixed), tied, fixed)


def apply_keep_change(factor: np.ndarray, keep_change: np.ndarray | None) -> np.ndarray:
    """The keep factor after a residual policy's change: ``clip(factor + change, 0, 1)``; ``None`` or a
    zero change leaves ``factor`` exactly as it is (so an untrained residual policy forgets like its
    reference rule, to the bit)."""
    if keep_change is None:
        return factor
    return np.where(keep_change == 0, factor, clip(factor + keep_change, 0.0, 1.0))


#: A tracker change of u in [-1, 1] moves the tracker's weight by u * TRACKER_CHANGE_SCALE ...
TRACKER_CHANGE_SCALE = 1.0
#: ... within [0, TRACKER_WEIGHT_MAX].
TRACKER_WEIGHT_MAX = 3.0


def apply_tracker_change(weight: np.ndarray, tracker_change: np.ndarray | None) -> np.ndarray:
    """The tracker's weight at a decision after a residual policy's change:
    ``clip(weight + TRACKER_CHANGE_SCALE * change, 0, TRACKER_WEIGHT_MAX)``; ``None`` or a zero change leaves
    ``weight`` exactly as it is (an untrained agent weighs the tracker as its reference rule does)."""
    if tracker_change is None:
        return weight
    moved = clip(weight + TRACKER_CHANGE_SCALE * tracker_change, 0.0, TRACKER_WEIGHT_MAX)
    return np.where(tracker_change == 0, weight, moved)


class ActionChanges(NamedTuple):
    """What an env action carries after its four strengths (:func:`action_changes`); None where the
    policy has no such component."""

    keep: np.ndarray | None  #: (n,) change of the category keep factor (:func:`apply_keep_change`)
    tracker: np.ndarray | None  #: (n,) change of the tracker's weight (:func:`apply_tracker_change`)
    gain: np.ndarray | None  #: (n,) what the event adds to its category's count (:func:`apply_gain_change`)
    context: np.ndarray | None  #: (n,) change of the time-slot profile's rate (:func:`apply_rate_change`)
    #: (n,) factor on the per-slot category counts' weight lambda for this decision's scoring (the change
    #: mapped as the gain's: ``clip(1 + change, 0, 2)``, exactly 1 for no change)
    slot: np.ndarray | None = None


#: Where each ActionChanges field's change is among an env action's columns after the four strengths.
_CHANGE_COLUMNS = tuple(ENV_ACTION_NAMES.index(name) - 4 for name in
                        ("keep_change", "tracker_change", "gain_change", "context_change", "slot_change"))
_NO_CHANGES = ActionChanges(None, None, None, None, None)


def action_changes(actions: np.ndarray) -> ActionChanges:
    """The changes in env ``actions`` (n, k) in the engine's layout
    (:data:`~interestgym.core.protocol.ENV_ACTION_NAMES`; k = 4 .. 9): each change clipped to [-1, 1] in
    float64, the gain already mapped to the count's weight and the slot change to lambda's factor. The one
    reading of those columns, for the engine, the runtime and the report."""
    width = actions.shape[1]
    if width <= 4:
        return _NO_CHANGES
    # every change column converted and clipped at once (the runtime reads one row per event)
    changes = clip(actions[:, 4:].astype(np.float64), -1.0, 1.0)
    keep, tracker, gain, context, slot = (changes[:, j] if j < width - 4 else None for j in _CHANGE_COLUMNS)
    return ActionChanges(keep=keep, tracker=tracker, gain=apply_gain_change(gain), context=context,
                         slot=apply_gain_change(slot))


def one_action(action: list[float], fixed_forgetting: float | None = None
               ) -> tuple[list[float], ActionChanges, float]:
    """One env action read as :func:`~interestgym.core.protocol.action_to_strengths`, :func:`action_changes`
    and :func:`category_forgetting_factor` + :func:`apply_keep_change` read a row of them, in Python floats:
    the same float64 operations (a float32 component widened exactly, +, /, the clips' comparisons), so the
    same numbers to the bit (``tests/test_transition_one_action.py``), without ~15 numpy calls on 1-element
    arrays: the runtime's one-event update.

    :param action: the env action's components as Python floats (``actions[0].tolist()``), engine layout.
    :param fixed_forgetting: the category counts' fixed factor (None or NaN: tied to the action, ``1 - a_L``).
    :return: (a_L, a_S, w, p), the changes (floats, None where the action has no such component) and the
        category counts' keep factor.
    """
    strengths = [(clip_float(u, -1.0, 1.0) + 1.0) / 2.0 for u in action[:4]]
    forgetting = 1.0 - strengths[0] if fixed_forgetting is None or math.isnan(fixed_forgetting) else fixed_forgetting
    if len(action) <= 4:
        return strengths, _NO_CHANGES, forgetting
    changes = [clip_float(u, -1.0, 1.0) for u in action[4:]]
    keep, tracker, gain, context, slot = (changes[j] if j < len(changes) else None for j in _CHANGE_COLUMNS)
    if keep is not None and keep != 0:
        forgetting = clip_float(forgetting + keep, 0.0, 1.0)
    return strengths, ActionChanges(
        keep=keep, tracker=tracker, context=context,
        gain=None if gain is None else clip_float(1.0 + gain, 0.0, GAIN_MAX),
        slot=None if slot is None else clip_float(1.0 + slot, 0.0, GAIN_MAX),
    ), forgetting


def apply_slot_change(slot_weight: np.ndarray | float, factor: np.ndarray | None) -> np.ndarray | float:
    """lambda for a decision's scoring after a residual policy's slot change: ``lambda x factor``
    (:attr:`ActionChanges.slot`); ``None`` leaves lambda as it is, and no change (factor 1) gives it exactly."""
    if factor is None:
        return slot_weight
    return np.asarray(slot_weight, dtype=np.float64) * factor


#: The gain a residual policy's gain change can reach: ``clip(1 + change, 0, GAIN_MAX)``.
GAIN_MAX = 2.0


def apply_gain_change(gain_change: np.ndarray | None) -> np.ndarray | None:
    """The weight a decision's event adds to its category's count after a residual policy's change:
    ``clip(1 + change, 0, GAIN_MAX)`` (0 = the event is not counted, e.g. a click the user barely read;
    2 = it counts twice). ``None`` stays None, and a zero change gives exactly 1 (the rule's +1)."""
    if gain_change is None:
        return None
    change = np.asarray(gain_change, dtype=np.float64)
    # no where(change == 0, 1.0, ...): 1.0 + 0.0 (or -0.0) is exactly 1.0, inside the clip's bounds
    return clip(1.0 + change, 0.0, GAIN_MAX)


def apply_rate_change(rate: np.ndarray | float, change: np.ndarray | None) -> np.ndarray | float:
    """An update rate after a residual policy's change: ``clip(rate + change, 0, 1)`` (the time-slot
    profile's ``context_rate``); ``None`` or a zero change leaves ``rate`` exactly as it is."""
    if change is None:
        return rate
    rate = np.broadcast_to(np.asarray(rate, dtype=np.float64), np.shape(change))
    return np.where(change == 0, rate, clip(rate + change, 0.0, 1.0))


def update_category_counts(counts: np.ndarray, category: np.ndarray, forgetting: np.ndarray | float,
                           gain: np.ndarray | None = None) -> np.ndarray:
    """Forgetful category counts after a decision: ``counts * forgetting``, then + gain (1 by default) in
    the event's column.

    :param counts: (B, n_categories) float64 counts.
    :param category: (B,) column of each row's event; -1 = no column (only the forgetting applies).
    :param forgetting: scalar or (B,) factor in [0, 1] (per row: e.g. :func:`category_forgetting_factor`).
    :param gain: (B,) weight of each row's event (:func:`apply_gain_change`), or None for 1.
    :return: new (B, n_categories) counts.

    One user's form (the runtime's one-event update): ``counts`` (n_categories,), ``category`` an int,
    ``forgetting`` and ``gain`` floats; the same arithmetic without the masks, whose numpy calls cost
    ~5x the arithmetic on one row.
    """
    if counts.ndim == 1:
        out = counts * np.float64(forgetting)  # a numpy float64, as the batched form's array: float32 counts widen as there
        if category >= 0:
            out[category] += 1.0 if gain is None else gain
        return out
    out = counts * (forgetting[:, None] if np.ndim(forgetting) else forgetting)
    known = category >= 0
    out[known, category[known]] += 1.0 if gain is None else gain[known]
    return out


def update_slot_category_counts(slot_counts: np.ndarray, slot: np.ndarray, category: np.ndarray,
                                forgetting: np.ndarray | float, gain: np.ndarray | None = None) -> np.ndarray:
    """The per-slot category counts after a decision: every slot's counts times ``forgetting`` (the same
    factor as the user's counts), then + gain in the event's slot and category: the arithmetic of
    :func:`update_category_counts`, one more index deep.

    :param slot_counts: (B, n_slots, n_categories) float64; ``slot``: (B,) the event's time slot;
        ``category``, ``forgetting``, ``gain``: as :func:`update_category_counts`.
    :return: new (B, n_slots, n_categories) counts. One user's form: ``slot_counts`` (n_slots, n_categories),
        ``slot`` and ``category`` ints, ``forgetting`` and ``gain`` floats (as :func:`update_category_counts`'s).
    """
    if slot_counts.ndim == 2:
        out = slot_counts * np.float64(forgetting)
        if category >= 0:
            out[slot, category] += 1.0 if gain is None else gain
        return out
    out = slot_counts * (forgetting[:, None, None] if np.ndim(forgetting) else forgetting)
    category = np.asarray(category)
    known = category >= 0
    out[known, np.asarray(slot)[known], category[known]] += 1.0 if gain is None else gain[known]
    return out


def fold_exposure(exposure: np.ndarray, pending: np.ndarray, forgetting: np.ndarray | float) -> np.ndarray:
    """The exposure counts at a decision: the candidates shown since the last decision (``pending``) join
    the counts, and all forget by the decision's category forgetting: ``(exposure + pending) x forgetting``.
    The engine and the runtime both add what was shown only here, so the impressions scored between two
    decisions are all ranked with the exposure of the decision before them.

    :param exposure: (B, n_categories) float64; ``pending``: (B, n_categories) counts shown since (integers,
        so their sum is exact in any order); ``forgetting``: scalar or (B,), the counts' factor.
    :return: new (B, n_categories) exposure.
    """
    return (exposure + pending) * (forgetting[:, None] if np.ndim(forgetting) else forgetting)


def shown_counts(rows: np.ndarray, categories: np.ndarray, n_rows: int, n_categories: int) -> np.ndarray:
    """(n_rows, n_categories) how many shown candidates of each category each row had: ``categories``
    (P, C) the category index of every candidate of P impressions (-1 for padding or a category outside
    the counts), ``rows`` (P,) each impression's row."""
    cats = np.asarray(categories)
    ok = (cats >= 0) & (cats < n_categories)
    flat = (np.repeat(np.asarray(rows, dtype=np.int64), cats.shape[1]) * n_categories + cats.reshape(-1))[ok.reshape(-1)]
    return np.bincount(flat, minlength=n_rows * n_categories).astype(np.float64).reshape(n_rows, n_categories)


def fold_outcomes(means: np.ndarray | list[float], sums: np.ndarray | list[float], n_points: np.ndarray | int
                  ) -> np.ndarray | list[float]:
    """Running means after a step's scoring points: ``m <- ema(m, sum / n)`` per column.

    :param means: (B, M) float64 running means (the engine and runtime fold M = 3: reward metric,
        L-only metric, S-only metric).
    :param sums: (B, M) sums of the step's scoring points' values, added in point order.
    :param n_points: (B,) scoring points per row; rows with none keep their means.
    :return: new (B, M) means. One user's form: ``means`` and ``sums`` lists of M Python floats, ``n_points`` an
        int, giving a new list (the runtime's one-event update: the same float64 arithmetic, a float divided by an
        int as numpy divides by an int64, without a numpy call).
    """
    if isinstance(means, list):
        return [ema(m, s / n_points) for m, s in zip(means, sums)] if n_points > 0 else list(means)
    scored = n_points > 0
    step_mean = sums / np.where(scored, n_points, 1)[:, None]
    return np.where(scored[:, None], ema(means, step_mean), means)
