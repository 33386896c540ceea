"""The scoring protocol's numpy parts: item popularity, seeded negative sampling, and action mapping.

Negatives are drawn **without replacement** with probability proportional to a weight per item
(all 1 for ``uniform``; training popularity + 1 for ``popularity``), by the exponential-race trick: each
item gets the key E / weight with E ~ Exp(1) and the N smallest keys win; this is exactly sequential
weighted sampling without replacement, and it is vectorised over all of a user's scoring points.
Keys are drawn row after row from one generator per user, so the negatives of a user's k-th scoring
point depend only on (seed, user, k, the exclusion set) — never on later events of the log. Negatives
drawn from the user's own history (:func:`sample_history`) come from a second generator per user
(:func:`history_rng`), with the same property.
"""

from __future__ import annotations

import zlib

import numpy as np

from interestgym.core.numeric import clip

#: Names of the four action components, in order (the env's action vector).
ACTION_NAMES: tuple[str, ...] = ("long_strength", "short_strength", "short_weight", "popularity_weight")
#: A residual policy's action (:class:`interestgym.envs.policies.ResidualPolicy`) has a fifth component:
#: a change of the category counts' keep factor, added to the reference's factor (0 = the reference's).
KEEP_CHANGE = "keep_change"
RESIDUAL_ACTION_NAMES: tuple[str, ...] = (*ACTION_NAMES, KEEP_CHANGE)
#: With a sequence tracker attached (``train --sequence``), a residual action has a sixth component: a
#: change of the tracker's weight in the score at this decision (:func:`interestgym.core.transition.apply_tracker_change`).
TRACKER_ACTION_NAMES: tuple[str, ...] = (*RESIDUAL_ACTION_NAMES, "tracker_change")
#: When the reference scores with the category counts, a residual action also has a ``gain_change``: a change
#: of the weight the decision's event adds to its category's count (1 for the rule; 0 = the event is not
#: counted: :func:`interestgym.core.transition.apply_gain_change`).
GAIN_CHANGE = "gain_change"
#: When the reference scores with the time-slot profiles (beta_ctx > 0), a ``context_change`` moves the rate
#: at which the event's slot profile is updated (the rule's ``context_rate``; :func:`interestgym.core.transition.apply_rate_change`).
CONTEXT_CHANGE = "context_change"
#: When the reference weighs the category counts per time of day (``category_slot_weight`` lambda > 0), a
#: ``slot_change`` scales lambda for the scoring after this decision: ``lambda x clip(1 + change, 0, 2)``
#: (:func:`interestgym.core.transition.apply_gain_change`'s map; 0 = the user's counts alone).
SLOT_CHANGE = "slot_change"
#: The engine's action layout: every component any policy can set, in this order. A policy's action is
#: either a prefix of it or placed into it by name (:func:`env_action_layout`), absent changes as zeros.
ENV_ACTION_NAMES: tuple[str, ...] = (*TRACKER_ACTION_NAMES, GAIN_CHANGE, CONTEXT_CHANGE, SLOT_CHANGE)


def residual_action_names(*, tracker: bool, gain: bool, context: bool = False, slot: bool = False) -> tuple[str, ...]:
    """A residual policy's change components: (a_L, a_S, w, p, keep_change), then ``tracker_change``
    with a tracker, ``gain_change`` with the category gain lever, ``context_change`` with the context
    rate lever and ``slot_change`` with the time-of-day category lever."""
    return (*RESIDUAL_ACTION_NAMES, *(("tracker_change",) if tracker else ()), *((GAIN_CHANGE,) if gain else ()),
            *((CONTEXT_CHANGE,) if context else ()), *((SLOT_CHANGE,) if slot else ()))


#: Every residual layout a run or an export may hold.
RESIDUAL_LAYOUTS: frozenset[tuple[str, ...]] = frozenset(
    residual_action_names(tracker=t, gain=g, context=c, slot=z)
    for t in (False, True) for g in (False, True) for c in (False, True) for z in (False, True))


def residual_names_for_width(width: int, *, tracker: bool) -> tuple[str, ...] | None:
    """The change components of a residual model saved before runs and exports recorded them by name:
    5 (keep), or 6 with a tracker (keep, tracker). None for any other width."""
    names = residual_action_names(tracker=tracker, gain=False)
    return names if len(names) == width else None


def env_action_layout(names: tuple[str, ...] | list[str]) -> np.ndarray | None:
    """Where each of ``names`` goes in :data:`ENV_ACTION_NAMES`: None when the names are a prefix of it
    (the action is already in the engine's layout), else the column of each name.

    :raises ValueError: for a name that is not an action component, or one named twice.
    """
    names = tuple(names)
    if names == ENV_ACTION_NAMES[: len(names)]:
        return None
    unknown = [n for n in names if n not in ENV_ACTION_NAMES]
    if unknown:
        raise ValueError(f"action components {unknown}: expected names from {ENV_ACTION_NAMES}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"action components {twice} named twice in {list(names)}: expected each at most once")
    return np.array([ENV_ACTION_NAMES.index(n) for n in names], dtype=np.int64)


def pad_actions(*actions: np.ndarray) -> tuple[np.ndarray, ...]:
    """Env actions of several policies (n_i, k_i), each zero-padded to the widest k: a change a policy does
    not make is a zero change in the engine's layout, which leaves the rule's own value."""
    width = max(a.shape[1] for a in actions)
    return tuple(a if a.shape[1] == width else np.concatenate([a, np.zeros((len(a), width - a.shape[1]), a.dtype)], axis=1)
                 for a in actions)


def stack_actions(parts: list[np.ndarray]) -> np.ndarray:
    """The rows of several policies' env actions in one (sum n_i, max k_i) float32 array (:func:`pad_actions`)."""
    if not parts:
        return np.zeros((0, 4), dtype=np.float32)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(pad_actions(*parts))


def action_to_strengths(action: np.ndarray) -> np.ndarray:
    """Map env actions in [-1, 1]^4 to (a_L, a_S, w, p) in [0, 1]^4: ``(clip(u, -1, 1) + 1) / 2``."""
    return (clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0


def strengths_to_action(strengths: np.ndarray) -> np.ndarray:
    """Inverse of :func:`action_to_strengths`: (a_L, a_S, w, p) in [0, 1] -> env actions (float32)."""
    return (2.0 * clip(np.asarray(strengths, dtype=np.float64), 0.0, 1.0) - 1.0).astype(np.float32)


def item_popularity(positive_counts: np.ndarray) -> np.ndarray:
    """pop(c) = log1p(count) / max log1p(count), in [0, 1] (all 0 when no item has a count)."""
    logc = np.log1p(np.asarray(positive_counts, dtype=np.float64))
    top = logc.max() if logc.size else 0.0
    return (logc / top if top > 0 else np.zeros_like(logc)).astype(np.float32)


def sample_history(
    rng: np.random.Generator,
    k: int,
    first_seen: np.ndarray,
    target_pos: np.ndarray,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    max_block: int = 1 << 21,
) -> np.ndarray:
    """Up to ``k`` negatives per scoring point drawn uniformly, without replacement, from the items the user
    engaged with before the point's target (``first_seen`` < the target's position), minus ``exclude``
    (point indices, item indices: the target and the items of its moment).

    ``rng`` should be the user's own generator for this draw (:func:`history_rng`), so the catalogue's draws
    keep theirs. Point k's keys are the next ``w_k`` exponentials of ``rng``, ``w_k`` = the items first seen
    before its target, in first-seen order: a point's draw depends on the user's past only, never on later
    events, and blocking the points (``max_block`` keys at a time) does not change it.

    :return: (n_points, k) item indices, sorted ascending per row; -1 pads rows with fewer eligible items.
    """
    n_points = len(target_pos)
    out = np.full((n_points, k), -1, dtype=np.int32)
    touched = np.nonzero(first_seen < np.iinfo(np.int64).max)[0]
    if n_points == 0 or k == 0 or len(touched) == 0:
        return out
    order = touched[np.argsort(first_seen[touched], kind="stable")]  # the user's items in first-seen order
    seen = np.sort(first_seen[touched])
    width = np.searchsorted(seen, np.asarray(target_pos), side="left")  # items first seen before each target
    column = np.full(len(first_seen), -1, dtype=np.int64)
    column[order] = np.arange(len(order))
    excluded = None
    if exclude is not None:
        col = column[exclude[1]]
        excluded = (exclude[0][col >= 0], col[col >= 0])
    lo = 0
    while lo < n_points:
        hi = lo + 1
        widest = int(width[lo])
        while hi < n_points and (hi - lo + 1) * max(widest, int(width[hi])) <= max_block:
            widest = max(widest, int(width[hi]))
            hi += 1
        rows = width[lo:hi]
        flat = rng.standard_exponential(int(rows.sum()))
        keys = np.full((hi - lo, max(widest, 1)), np.inf)
        mask = np.arange(keys.shape[1])[None, :] < rows[:, None]
        keys[mask] = flat
        if excluded is not None:
            inside = (excluded[0] >= lo) & (excluded[0] < hi) & (excluded[1] < keys.shape[1])
            keys[excluded[0][inside] - lo, excluded[1][inside]] = np.inf
        take = min(k, keys.shape[1])
        part = np.argpartition(keys, take - 1, axis=1)[:, :take] if take < keys.shape[1] else np.tile(np.arange(keys.shape[1]), (hi - lo, 1))
        chosen = np.where(np.isfinite(np.take_along_axis(keys, part, axis=1)), order[np.minimum(part, len(order) - 1)], len(first_seen))
        chosen.sort(axis=1)
        out[lo:hi, :take] = np.where(chosen < len(first_seen), chosen, -1)
        lo = hi
    return out


def history_rng(seed: int, user_id: str) -> np.random.Generator:
    """The generator of one user's history negatives (:func:`sample_history`): its own stream, so that the
    catalogue's draws (:func:`user_rng`) are the same with or without them."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(user_id).encode("utf-8")), 1])


def user_rng(seed: int, user_id: str) -> np.random.Generator:
    """The generator of one user's negatives: depends on the seed and the user id only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(user_id).encode("utf-8"))])


def sample_negatives(
    rng: np.random.Generator,
    n_negatives: int,
    weights: np.ndarray,
    first_seen: np.ndarray,
    cutoff: np.ndarray,
    *,
    also_exclude: tuple[np.ndarray, np.ndarray] | None = None,
    max_block: int = 1 << 21,
    per_point: np.ndarray | None = None,
) -> np.ndarray:
    """Negatives for a user's scoring points.

    :param rng: the user's generator (:func:`user_rng`).
    :param n_negatives: N per scoring point.
    :param weights: (n_items,) sampling weight per item; 0 = never sampled.
    :param first_seen: (n_items,) position of the user's first event with the item (int64; a value larger
        than every cutoff, e.g. ``np.iinfo(np.int64).max``, for items the user never touched).
    :param cutoff: (n_points,) items with ``first_seen <= cutoff`` are excluded from that point's
        negatives (``cutoff = max int`` excludes the user's whole log; the target's own position
        excludes only items seen up to it; ``cutoff = -1`` excludes nothing this way).
    :param also_exclude: (point indices, item indices) pairs: items excluded from those points'
        negatives besides the cutoff rule (e.g. the target and the items engaged with at its moment).
    :param per_point: (n_points,) how many of the N to keep at each point (the ones with the smallest keys,
        i.e. the first drawn in the sequential sampling); None keeps N everywhere, exactly as without it.
    :return: (n_points, min(N, n_items)) item indices, sorted ascending per row; -1 pads rows with fewer
        eligible items (or fewer kept). An N above the catalogue's size draws every item it may: the array
        is no wider than the catalogue (a huge N would otherwise fill the memory with padding).
    """
    n_items = len(weights)
    n_points = len(cutoff)
    out = np.full((n_points, min(n_negatives, n_items)), -1, dtype=np.int32)
    if n_points == 0 or n_negatives == 0:
        return out
    inv_w = np.where(weights > 0, 1.0 / np.where(weights > 0, weights, 1.0), np.inf)
    touched = np.nonzero(first_seen < np.iinfo(np.int64).max)[0]
    block = max(1, max_block // max(n_items, 1))
    take = min(n_negatives, n_items)
    for lo in range(0, n_points, block):
        hi = min(n_points, lo + block)
        keys = rng.standard_exponential((hi - lo, n_items)) * inv_w
        # Exclude the user's items (only the few it touched need masking).
        excl = first_seen[touched][None, :] <= cutoff[lo:hi, None]
        sub = keys[:, touched]
        sub[excl] = np.inf
        keys[:, touched] = sub
        if also_exclude is not None:
            in_block = (also_exclude[0] >= lo) & (also_exclude[0] < hi)
            keys[also_exclude[0][in_block] - lo, also_exclude[1][in_block]] = np.inf
        part = np.argpartition(keys, take - 1, axis=1)[:, :take] if take < n_items else np.tile(np.arange(n_items), (hi - lo, 1))
        chosen_keys = np.take_along_axis(keys, part, axis=1)
        if per_point is not None:  # keep each row's first n draws: its n smallest keys
            rank = np.argsort(np.argsort(chosen_keys, axis=1, kind="stable"), axis=1, kind="stable")
            chosen_keys = np.where(rank < np.asarray(per_point)[lo:hi, None], chosen_keys, np.inf)
        part = np.where(np.isfinite(chosen_keys), part, n_items)  # excluded / zero-weight -> pad
        part.sort(axis=1)
        out[lo:hi, :take] = np.where(part < n_items, part, -1)
    return out
