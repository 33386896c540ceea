"""Scoring points of a chunk of users: the ranking the replay scores after each decision.

* :func:`impression_points`: logged impressions (MIND, the synthetic logs): each impression's candidates
  and clicks, attached to the user's last decision before it;
* :func:`next_positive_points`: logs without impressions (ratings, e-commerce): the user's next positive
  event as the target among sampled negatives (:func:`~interestgym.core.protocol.sample_negatives`),
  the negatives leaving out what :func:`resolve_exclusion` says (the target and that moment's items, or
  the user's whole log).

Used by :func:`interestgym.envs.replay_build.build_for_users`; every array depends only on the chunk's
own users, so a chunk's points are the whole split's points of those users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interestgym.core.clock import time_slot, time_slot_of
from interestgym.core.log_features import (  # noqa: F401  (engaged_items re-exported: the replay builders read it here)
    engaged_items,
    group_starts,
    position_in_run,
    repeated_engagements,
)
from interestgym.core.protocol import (
    history_rng,
    sample_history,
    sample_negatives,
    user_rng,
)
from interestgym.data.schema import IMPRESSION_COLUMNS
from interestgym.errors import DataError, InterestGymError
from interestgym.progress import progress_bar

if TYPE_CHECKING:
    from interestgym.envs.replay_build import ReplayContext

_NEVER = np.iinfo(np.int64).max


def _np(col: pa.ChunkedArray | pa.Array, dtype: Any = None) -> np.ndarray:
    """A column as numpy (nulls as NaN / None), cast to ``dtype`` when given."""
    arr = col.to_numpy() if isinstance(col, pa.ChunkedArray) else col.to_numpy(zero_copy_only=False)
    return arr if dtype is None else arr.astype(dtype, copy=False)


def _as_string(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """An id column as strings (ids written as integers compare as their decimal text, as ``astype(str)``)."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col
    return pc.cast(col, pa.string())


def _index_in(col: pa.ChunkedArray | pa.Array, values: pa.Array) -> np.ndarray:
    """Position of every entry of ``col`` in ``values`` (int64; -1 where absent or null)."""
    col = _as_string(col)
    if col.type != values.type:
        values = values.cast(col.type)
    return _np(pc.fill_null(pc.index_in(col, value_set=values), -1), np.int64)


def _pack(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def impression_points(ctx: ReplayContext, chunk: np.ndarray, chunk_arr: pa.Array, user_ids: np.ndarray,
                       dec_user_start: np.ndarray, dec_user_end: np.ndarray, d_ts: np.ndarray,
                       counts: dict[str, int]) -> tuple[np.ndarray, ...]:
    ds = ctx.dataset
    imp = ds.read_user_rows("impressions.parquet", chunk.tolist(), list(IMPRESSION_COLUMNS))  # file order
    imp_ts = _np(imp.column("ts"), np.int64)
    counts["impressions"] = int(imp.num_rows)
    lens = _np(pc.fill_null(pc.list_value_length(imp.column("candidates")), 0), np.int64)
    label_lens = _np(pc.fill_null(pc.list_value_length(imp.column("labels")), 0), np.int64)
    bad = np.nonzero(lens != label_lens)[0]
    if len(bad):
        i = int(bad[0])
        raise DataError(
            f"{ds.path / 'impressions.parquet'}: impression {str(imp.column('impression_id')[i].as_py())!r} has "
            f"{lens[i]} candidates but {label_lens[i]} labels; expected one label per candidate"
        )
    flat_items = _index_in(pc.list_flatten(imp.column("candidates")), ctx.item_ids)
    flat_labels = _np(pc.list_flatten(imp.column("labels"))).astype(np.int8)
    known = flat_items >= 0
    counts["candidates_without_item"] = int((~known).sum())
    imp_of_flat = np.repeat(np.arange(imp.num_rows), lens)
    n_known = np.bincount(imp_of_flat[known], minlength=imp.num_rows)
    n_click = np.bincount(imp_of_flat[known & (flat_labels == 1)], minlength=imp.num_rows)
    no_click = n_click == 0
    no_other = (n_known - n_click) == 0
    counts["impressions_without_click"] = int(no_click.sum())
    counts["impressions_without_unclicked"] = int((~no_click & no_other).sum())
    scorable = ~no_click & ~no_other

    # Which decision each impression follows: the user's decisions strictly before its ts (an
    # impression precedes the events of its own second).
    chunk_code = _index_in(imp.column("user_id"), chunk_arr)
    code_to_user = np.full(len(chunk) + 1, -1, dtype=np.int64)
    code_to_user[np.searchsorted(chunk, user_ids)] = np.arange(len(user_ids))
    imp_uidx = code_to_user[chunk_code]  # a code of -1 reads the last slot: -1
    has_user = imp_uidx >= 0
    point_decision = np.full(imp.num_rows, -1, dtype=np.int64)
    if has_user.any() and len(d_ts):
        u = imp_uidx[has_user]
        lo, hi = dec_user_start[u], dec_user_end[u]
        # One vectorised searchsorted over (user block, ts): each user's decisions are moved into
        # their own numeric range (all values stay far below 2^53, so float64 is exact).
        base = int(d_ts.min())
        span = float(int(d_ts.max()) - base + 2)
        dec_block = np.repeat(np.arange(len(dec_user_start)), dec_user_end - dec_user_start).astype(np.float64)
        combined = dec_block * span + (d_ts - base).astype(np.float64)
        query = u.astype(np.float64) * span + np.clip(imp_ts[has_user] - base, -1, span - 1).astype(np.float64)
        before = np.searchsorted(combined, query, side="left") - lo  # decisions of u with ts < impression ts
        assert np.all((before >= 0) & (lo + before <= hi))
        point_decision[has_user] = np.where(before > 0, lo + before - 1, -1)
    counts["impressions_without_user_decisions"] = int((scorable & ~has_user).sum())
    counts["impressions_before_first_decision"] = int((scorable & has_user & (point_decision < 0)).sum())
    use = scorable & (point_decision >= 0)
    counts["impressions_scored"] = int(use.sum())
    order = np.argsort(point_decision[use], kind="stable")
    use_idx = np.nonzero(use)[0][order]
    # Flat candidates regrouped in the order of use_idx (vectorised: rank every flat entry by its
    # impression's position in use_idx).
    rank = np.full(imp.num_rows, -1, dtype=np.int64)
    rank[use_idx] = np.arange(len(use_idx))
    flat_rank = rank[imp_of_flat]
    sel_flat = np.nonzero(known & (flat_rank >= 0))[0]
    sel_flat = sel_flat[np.argsort(flat_rank[sel_flat], kind="stable")]
    cand = flat_items[sel_flat].astype(np.int32)
    labels = flat_labels[sel_flat].astype(np.int8)
    offsets = _pack(n_known[use_idx])
    # the impression's slot on the dataset's clock, like its decisions' (prepare's --tz-offset)
    slot = time_slot_of(imp_ts[use_idx], ctx.tz_offset_hours).astype(np.int8)
    ids = _as_string(imp.column("impression_id"))
    keys = np.asarray(ids.take(pa.array(use_idx, type=pa.int64())).to_pylist(), dtype=object)
    keys = keys.astype(str).astype(object) if len(keys) else np.zeros(0, dtype=object)
    # Logged impressions: repeat targets are not told apart (their negatives are the log's own).
    return point_decision[use_idx], offsets, cand, labels, slot, keys, np.zeros(len(use_idx), dtype=bool)


def resolve_exclusion(exclude: str, user_codes: np.ndarray, ev_item: np.ndarray) -> str:
    """``auto`` -> ``target`` when the log has repeats (a user engages with one item in more than one
    event: ``ev_item`` as :func:`engaged_items` gives it), else ``log``; other values as they are."""
    if exclude != "auto":
        return exclude
    return "target" if repeated_engagements(user_codes, ev_item) else "log"


def _same_moment_items(ts_u: np.ndarray, items_u: np.ndarray, target_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, item) pairs: for every target (its event position in the user's events), the items of the
    user's events at the target's own timestamp (the target included)."""
    target_ts = ts_u[target_pos]
    start = np.searchsorted(ts_u, target_ts, side="left")
    stop = np.searchsorted(ts_u, target_ts, side="right")
    width = stop - start
    point = np.repeat(np.arange(len(target_pos)), width)
    offset = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    items = items_u[np.repeat(start, width) + offset]
    keep = items >= 0
    return point[keep], items[keep]


def next_positive_points(spec, exclude, d_item, d_idx, decision_user, dec_user_start, dec_user_end, user_ids, user_codes,
                          dec_users_codes, ev_item, ts, ev_hour, train_counts, n_items, counts, progress=None):
    if spec.history_negatives and exclude != "target":
        raise InterestGymError(f"--history-negatives {spec.history_negatives} needs negatives that may be the user's past items "
                               f"(--exclude target); this log's exclusion is {exclude!r} (--exclude auto means 'log' on a log "
                               "without repeats); pass --exclude target to draw from the user's history anyway, or "
                               "--history-negatives 0")
    weights = np.ones(n_items) if spec.negatives == "uniform" else train_counts.astype(np.float64) + 1.0
    # event position of each decision within its user's events
    ev_pos = position_in_run(user_codes)
    ev_user_start = np.nonzero(group_starts(user_codes))[0] if len(user_codes) else np.zeros(0, np.int64)
    n_users = len(user_ids)
    cand_rows, point_dec, slots, keys, repeats = [], [], [], [], []
    n_short = n_none = 0
    bar = progress_bar(total=n_users, desc="sampling negatives", unit="user", enabled=progress)
    for u in range(n_users):
        bar.update(1)
        lo, hi = int(dec_user_start[u]), int(dec_user_end[u])
        if hi - lo < 2:
            continue
        code = dec_users_codes[u]
        e_lo = ev_user_start[code]
        e_hi = ev_user_start[code + 1] if code + 1 < len(ev_user_start) else len(user_codes)
        items_u = ev_item[e_lo:e_hi]
        pos_u = np.arange(e_hi - e_lo, dtype=np.int64)
        first_seen = np.full(n_items, _NEVER, dtype=np.int64)
        known = items_u >= 0
        np.minimum.at(first_seen, items_u[known], pos_u[known])
        targets = np.arange(lo + 1, hi)  # decision d is the scoring target of step d - 1
        target_pos = ev_pos[d_idx[targets]]
        also = None
        if exclude == "log":
            cutoff = np.full(len(targets), _NEVER - 1, dtype=np.int64)
        elif exclude == "past":
            cutoff = target_pos
        else:  # target: only the target and what the user engages with at that moment
            cutoff = np.full(len(targets), -1, dtype=np.int64)
            also = _same_moment_items(ts[e_lo:e_hi], items_u, target_pos)
        rng = user_rng(spec.seed, user_ids[u])
        if spec.history_negatives:
            # K from the user's own earlier items (drawn first), the rest from the catalogue, never twice
            history = sample_history(history_rng(spec.seed, user_ids[u]), spec.history_negatives, first_seen, target_pos, also)
            got = history >= 0
            hp, hi_item = np.nonzero(got)[0], history[got].astype(np.int64)
            also = (np.concatenate([also[0], hp]), np.concatenate([also[1], hi_item]))  # type: ignore[index]
            rest = sample_negatives(rng, spec.n_negatives, weights, first_seen, cutoff, also_exclude=also,
                                    per_point=spec.n_negatives - got.sum(axis=1))
            both = np.concatenate([history, rest], axis=1)
            both = np.where(both >= 0, both, np.iinfo(np.int32).max)
            both.sort(axis=1)
            neg = np.where(both < np.iinfo(np.int32).max, both, -1)[:, : spec.n_negatives].astype(np.int32)
        else:
            neg = sample_negatives(rng, spec.n_negatives, weights, first_seen, cutoff, also_exclude=also)
        # a point with no negative left to draw (the user engaged with the whole catalogue) ranks nothing: it is
        # not a scoring point, and counted (points_without_negatives) rather than kept to fail every metric
        has = (neg >= 0).any(axis=1)
        n_none += int((~has).sum())
        targets, target_pos, neg = targets[has], target_pos[has], neg[has]
        repeats.append(first_seen[d_item[targets]] < target_pos)
        n_short += int((neg < 0).any(axis=1).sum())
        cand_rows.append(np.concatenate([d_item[targets][:, None], neg], axis=1))
        point_dec.append(targets - 1)
        slots.append(time_slot(ev_hour[d_idx[targets]]))
        keys.append(np.char.add(f"{user_ids[u]}:", (targets - lo).astype(str)))
    bar.close()
    counts["points_with_fewer_negatives"] = n_short
    if n_none:  # only when some were: the counts of earlier protocols read as before
        counts["points_without_negatives"] = n_none
    if not cand_rows:
        z = np.zeros(0, np.int64)
        return z, np.zeros(1, np.int64), z.astype(np.int32), z.astype(np.int8), z.astype(np.int8), z.astype(str), z.astype(bool)
    mat = np.concatenate(cand_rows)
    valid = mat >= 0
    labels = np.zeros(mat.shape, dtype=np.int8)
    labels[:, 0] = 1
    offsets = _pack(valid.sum(axis=1))
    return (np.concatenate(point_dec).astype(np.int64), offsets, mat[valid].astype(np.int32), labels[valid],
            np.concatenate(slots).astype(np.int8), np.concatenate(keys), np.concatenate(repeats))


# ------------------------------------------------------------------------------------------ streaming
