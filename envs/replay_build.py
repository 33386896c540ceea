"""Building :class:`~interestgym.envs.replay_data.ReplayData` from a dataset, for any set of users, in
bounded memory.

Two parts:

* :class:`ReplayContext` (:func:`replay_context`): what every user's arrays share: the embeddings, item
  categories, the training users' item popularity and, for next-positive points, whether the log has
  repeats (the ``auto`` exclusion). One streamed pass over four columns of ``events.parquet``, a row
  group batch at a time; cached per process.
* :func:`build_for_users`: the arrays of a sorted list of users, read with
  :meth:`~interestgym.data.dataset.Dataset.read_user_rows` (the columns the replay uses, the row groups
  that can hold those users, filtered batch by batch) and computed on Arrow / numpy arrays, never on
  a table of Python strings.

Every per-user array depends only on the user's own events and impressions and on the context, so the
arrays of a chunk of users are exactly the whole split's arrays of those users:
:func:`iter_replay_chunks` streams a split in chunks of users (sorted, as the whole split's replay
order is), and :class:`SplitSummary` adds the chunks' counts up to the whole split's
:meth:`~interestgym.envs.replay_data.ReplayData.describe`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from interestgym.envs.replay_data import ProtocolSpec, ReplayData, check_embeddings

from interestgym.core.clock import time_slot, time_slot_of
from interestgym.core.features import LOG_FEATURES, encode_features
from interestgym.core.log_features import (
    RATING_ACTION,
    group_starts,
    is_decision,
    log_quantities,
    position_in_run,
)
from interestgym.core.protocol import item_popularity, sample_negatives, user_rng
from interestgym.data.dataset import Dataset
from interestgym.errors import DataError, InterestGymError
from interestgym.progress import progress_bar

_NEVER = np.iinfo(np.int64).max
#: Users per chunk of :func:`iter_replay_chunks` (``interestgym evaluate --chunk-users``): ~60 events per
#: user on the synthetic log, so a chunk's arrays and results are tens of MB.
DEFAULT_CHUNK_USERS = 5000
#: The events columns the replay arrays are made of.
EVENT_COLUMNS = ["user_id", "item_id", "ts", "seq", "action", "value", "hour", "weekday"]
IMPRESSION_COLUMNS = ["impression_id", "user_id", "ts", "candidates", "labels"]


# ------------------------------------------------------------------------------------------ arrow helpers
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


def _action_weights(action: pa.ChunkedArray, weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(weight of every event's action, 0 for an action without one; is the action a rating)."""
    names = list(weights)
    table = np.array([float(weights[n]) for n in names] + [0.0], dtype=np.float64)
    idx = _index_in(action, pa.array(names, type=pa.string()))
    weight = table[np.where(idx < 0, len(names), idx)]
    is_rating = idx == names.index(RATING_ACTION) if RATING_ACTION in names else _np(
        pc.fill_null(pc.equal(_as_string(action), RATING_ACTION), False), bool)
    return weight, np.asarray(is_rating, dtype=bool)


# ---------------------------------------------------------------------------------------------- context
@dataclass
class ReplayContext:
    """What the replay arrays of every user of a (dataset, embeddings) share; see the module docstring."""

    dataset: Dataset
    embeddings_name: str
    embeddings: np.ndarray  # (n_items, d) float32, unit rows
    item_ids: pa.Array  # (n_items,) string: the items' ids in row order
    item_category: np.ndarray  # (n_items,) int32
    category_names: list[str]
    train_counts: np.ndarray  # (n_items,) int64: positive events of training users per item
    item_popularity: np.ndarray  # (n_items,) float32
    action_weights: dict[str, float]
    max_action_weight: float
    tz_offset_hours: float
    has_impressions: bool  # impressions.parquet exists and has rows
    has_repeats: bool | None  # a user engages with one item in more than one event (None: not computed)

    @property
    def n_items(self) -> int:
        return len(self.item_category)

    def split_users(self, split: str) -> np.ndarray:
        """The split's user ids, sorted (the replay order of users)."""
        users = self.dataset.users
        return np.asarray(sorted(set(users.loc[users["split"] == split, "user_id"].astype(str))), dtype=str)

    def resolve_protocol(self, spec: ProtocolSpec) -> str:
        """``auto`` -> impressions when the dataset has any, else next_positive; refuses impressions without them."""
        if spec.protocol == "auto":
            return "impressions" if self.has_impressions else "next_positive"
        if spec.protocol == "impressions" and not (self.dataset.path / "impressions.parquet").is_file():
            raise DataError(f"{self.dataset.path}: protocol='impressions' but the dataset has no impressions.parquet; use protocol='next_positive'")
        return spec.protocol

    def resolve_exclusion(self, spec: ProtocolSpec) -> str:
        """The spec's ``exclude`` for this log (``auto`` -> ``target`` with repeats, else ``log``)."""
        if spec.exclude != "auto":
            return spec.exclude
        if self.has_repeats is None:
            raise AssertionError("the context was built without the repeat check; ask replay_context for next-positive points")
        return "target" if self.has_repeats else "log"


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


def dataset_stamps(ds: Dataset, embeddings_name: str) -> tuple[tuple[str, int, int], ...]:
    """Modification stamps of the files the replay arrays are made of (cache keys)."""
    files = [ds.path / "manifest.json", ds.path / "events.parquet", ds.path / "items.parquet", ds.path / "users.parquet",
             ds.embeddings_dir / f"{embeddings_name}.npy"]
    if (ds.path / "impressions.parquet").is_file():
        files.append(ds.path / "impressions.parquet")
    return tuple(_stamp(p) for p in files)


_CONTEXTS: OrderedDict[tuple, ReplayContext] = OrderedDict()
_CONTEXT_CACHE_SIZE = 2


def replay_context(dataset: str | Path | Dataset, embeddings: str | None = None, spec: ProtocolSpec | None = None, *,
                   progress: bool | None = False) -> ReplayContext:
    """The :class:`ReplayContext` of ``dataset`` for ``spec`` (cached per process by the files' stamps).

    The repeat check (``exclude='auto'`` with next-positive points) rides on the same pass over the
    events; a context cached without it is extended by building it again.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    spec = spec or ProtocolSpec()
    name = ds.resolve_embeddings(embeddings)
    has_impressions = _has_rows(ds.path / "impressions.parquet")
    protocol = spec.protocol if spec.protocol != "auto" else ("impressions" if has_impressions else "next_positive")
    need_repeats = protocol == "next_positive" and spec.exclude == "auto"
    key = (str(ds.path.resolve()), name, dataset_stamps(ds, name))
    ctx = _CONTEXTS.get(key)
    if ctx is not None and (ctx.has_repeats is not None or not need_repeats):
        _CONTEXTS.move_to_end(key)
        return ctx
    ctx = _build_context(ds, name, has_impressions, need_repeats, progress)
    _CONTEXTS[key] = ctx
    while len(_CONTEXTS) > _CONTEXT_CACHE_SIZE:
        _CONTEXTS.popitem(last=False)
    return ctx


def _has_rows(path: Path) -> bool:
    if not path.is_file():
        return False
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows > 0
    except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        raise DataError(f"{path}: cannot be read as Parquet: {' '.join(str(exc).split())}") from None


def _build_context(ds: Dataset, name: str, has_impressions: bool, need_repeats: bool, progress: bool | None) -> ReplayContext:
    emb, _meta = ds.load_embeddings(name)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    items = ds.items
    item_id_strings = items["item_id"].astype(str)
    check_embeddings(emb, ds.embeddings_dir / f"{name}.npy", item_id_strings.to_numpy())
    if not item_id_strings.is_unique:
        raise DataError(f"{ds.path / 'items.parquet'}: item ids are not unique "
                        f"({item_id_strings[item_id_strings.duplicated()].iloc[0]!r} repeats); prepare the dataset again")
    item_ids = pa.array(item_id_strings.tolist(), type=pa.string())
    cat_codes, cat_names = pd.factorize(items["category"].fillna("").astype(str), sort=True)
    weights = ds.action_weights
    users = ds.users
    train_users = pa.array(sorted(set(users.loc[users["split"] == "train", "user_id"].astype(str))), type=pa.string())
    n_items = len(items)
    train_counts = np.zeros(n_items, dtype=np.int64)
    repeats = _RepeatCheck(n_items) if need_repeats else None
    columns = ["user_id", "item_id", "action", "value"]
    total = int(ds.manifest.get("counts", {}).get("events", 0)) or None
    with progress_bar(total=total, desc="item popularity (training users)", unit="event", enabled=progress) as bar:
        for table in ds.iter_user_rows("events.parquet", None, columns, batch_size=1 << 17):
            item = _index_in(table.column("item_id"), item_ids)
            weight, is_rating = _action_weights(table.column("action"), weights)
            positive = is_decision(weight, is_rating, _np(table.column("value"), np.float64), ds.positive_rating)
            in_train = _np(pc.is_in(_as_string(table.column("user_id")), value_set=train_users), bool)
            use = positive & (item >= 0) & in_train
            train_counts += np.bincount(item[use], minlength=n_items)
            if repeats is not None:
                repeats.add(table.column("user_id"), item)
            bar.update(table.num_rows)
    return ReplayContext(
        dataset=ds, embeddings_name=name, embeddings=emb, item_ids=item_ids, item_category=cat_codes.astype(np.int32),
        category_names=[str(c) for c in cat_names], train_counts=train_counts, item_popularity=item_popularity(train_counts),
        action_weights=weights, max_action_weight=float(max(max(weights.values()), 1e-12)),
        tz_offset_hours=float((ds.manifest.get("reader") or {}).get("tz_offset_hours", 0.0) or 0.0),
        has_impressions=has_impressions, has_repeats=None if repeats is None else repeats.found,
    )


class _RepeatCheck:
    """Does any user engage with one item in more than one event? Fed the log batch by batch in file
    order (rows sorted by user, the dataset contract): a user cut by a batch boundary carries its items
    into the next batch."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.found = False
        self._tail_user: str | None = None
        self._tail_items = np.zeros(0, np.int64)

    def add(self, user: pa.ChunkedArray, item: np.ndarray) -> None:
        if self.found or not len(item):
            return
        codes = _np(pc.dictionary_encode(_as_string(user).combine_chunks()).indices, np.int64)
        last = str(_as_string(user)[-1].as_py())
        if self._tail_user is not None:
            # the carried rows join the batch's rows of the same user (or get a code of their own)
            first = str(_as_string(user)[0].as_py())
            code = codes[0] if first == self._tail_user else int(codes.max()) + 1
            codes = np.concatenate([np.full(len(self._tail_items), code, np.int64), codes])
            item = np.concatenate([self._tail_items, item])
        known = item >= 0
        pairs = codes[known] * (self.n_items + 1) + item[known]
        if len(np.unique(pairs)) < len(pairs):
            self.found = True
            return
        self._tail_user = last
        self._tail_items = item[codes == codes[-1]]


# ----------------------------------------------------------------------------------------------- build
def _decision_mask(weight: np.ndarray, is_rating: np.ndarray, value: np.ndarray, positive_rating: float,
                   known_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decisions, positive events whose item is unknown) under the core decision rule."""
    positive = is_decision(weight, is_rating, value, positive_rating)
    return positive & known_item, positive & ~known_item


def build_for_users(ctx: ReplayContext, spec: ProtocolSpec, users: Iterable[str], *, progress: bool | None = None) -> ReplayData:
    """The replay arrays of ``users`` (ids of ``spec.split``; any order, duplicates ignored) under ``spec``.

    The users are replayed in sorted order, as in the whole split's arrays; ``counts`` are this set's
    (:class:`SplitSummary` adds sets up). ``decision_event_row`` indexes the whole ``events.parquet``.
    """
    ds = ctx.dataset
    chunk = np.asarray(sorted({str(u) for u in users}), dtype=str)
    chunk_arr = pa.array(chunk.tolist(), type=pa.string())
    protocol = ctx.resolve_protocol(spec)
    counts: dict[str, int] = {}

    # ---------------------------------------------------------------- events of the users
    ev = ds.read_user_rows("events.parquet", chunk.tolist(), EVENT_COLUMNS)
    code = _index_in(ev.column("user_id"), chunk_arr)
    rows = _np(ev.column("__row__"), np.int64)
    ts = _np(ev.column("ts"), np.int64)
    seq = _np(ev.column("seq"), np.int64)
    order = np.lexsort((seq, ts, code))  # the dataset contract, enforced (cheap)
    rows, ts, code = rows[order], ts[order], code[order]
    ev_item = _index_in(ev.column("item_id"), ctx.item_ids)[order]
    weight, is_rating = _action_weights(ev.column("action"), ctx.action_weights)
    weight, is_rating = weight[order], is_rating[order]
    value = _np(ev.column("value"), np.float64)[order]
    hour = _np(ev.column("hour"), np.int64)[order]
    weekday = _np(ev.column("weekday"), np.int64)[order]
    del ev
    user_codes, uniques = pd.factorize(code, sort=False)
    user_names = chunk[uniques]
    positive, positive_unknown = _decision_mask(weight, is_rating, value, ds.positive_rating, ev_item >= 0)
    counts["events"] = len(rows)
    counts["decisions"] = int(positive.sum())
    counts["positive_events_without_item"] = int(positive_unknown.sum())
    counts["events_without_item"] = int((ev_item < 0).sum())

    # ---------------------------------------------------------------- decisions (positive events)
    d_idx = np.nonzero(positive)[0]
    d_ts = ts[d_idx]
    d_item = ev_item[d_idx].astype(np.int32)
    d_cat = ctx.item_category[d_item] if len(d_item) else np.zeros(0, np.int32)
    d_user_code = user_codes[d_idx]
    raw = log_quantities(user_codes, ts, positive, d_cat, len(ctx.category_names))
    raw.update(action_weight=weight[d_idx], value=value[d_idx], hour=hour[d_idx], weekday=weekday[d_idx])
    log_features = (encode_features(raw, LOG_FEATURES, max_action_weight=ctx.max_action_weight) if len(d_idx)
                    else np.zeros((0, len(LOG_FEATURES)), np.float32))

    # users with at least one decision, in replay order
    dec_users_codes, dec_user_start = np.unique(d_user_code, return_index=True)
    user_order = np.argsort(dec_user_start)
    dec_users_codes, dec_user_start = dec_users_codes[user_order], dec_user_start[user_order]
    dec_user_end = np.append(dec_user_start[1:], len(d_idx)).astype(np.int64)
    code_to_user = np.full(len(user_names) + 1, -1, dtype=np.int64)
    code_to_user[dec_users_codes] = np.arange(len(dec_users_codes))
    decision_user = code_to_user[d_user_code].astype(np.int32)
    user_ids = np.asarray(user_names, dtype=object)[dec_users_codes].astype(str)
    counts["users"] = len(user_ids)
    counts["users_without_decisions"] = int(len(chunk) - len(user_ids))

    # ---------------------------------------------------------------- scoring points
    exclude = "log"  # recorded only for next-positive points (impressions carry their own negatives)
    if protocol == "impressions":
        pts = _impression_points(ctx, chunk, chunk_arr, user_ids, dec_user_start, dec_user_end, d_ts, counts)
    else:
        # decided on the whole log (every split), so train, valid and test share one protocol
        exclude = ctx.resolve_exclusion(spec)
        pts = _next_positive_points(
            spec, exclude, d_item, d_idx, decision_user, dec_user_start, dec_user_end, user_ids, user_codes,
            dec_users_codes, ev_item, ts, hour, ctx.train_counts, ctx.n_items, counts, progress,
        )
    point_decision, offsets, cand, labels, slot, keys, repeat = pts
    # points sorted by the decision they follow (stable keeps their time order)
    n_dec = len(d_idx)
    dec_point_start = np.searchsorted(point_decision, np.arange(n_dec), side="left").astype(np.int64)
    dec_point_end = np.searchsorted(point_decision, np.arange(n_dec), side="right").astype(np.int64)
    counts["scoring_points"] = len(point_decision)

    return ReplayData(
        dataset_path=ds.path, embeddings_name=ctx.embeddings_name, spec=spec, protocol=protocol,
        embeddings=ctx.embeddings, item_popularity=ctx.item_popularity, item_category=ctx.item_category,
        category_names=list(ctx.category_names), max_action_weight=float(ctx.max_action_weight),
        user_ids=user_ids, user_decision_start=dec_user_start.astype(np.int64), user_decision_end=dec_user_end,
        decision_user=decision_user, decision_item=d_item, decision_ts=d_ts,
        decision_slot=time_slot(raw["hour"]).astype(np.int8), decision_category=d_cat.astype(np.int32),
        decision_event_row=rows[d_idx].astype(np.int64), decision_log_features=log_features,
        decision_point_start=dec_point_start, decision_point_end=dec_point_end,
        point_offsets=offsets, point_candidates=cand, point_labels=labels, point_slot=slot,
        point_key=keys, point_repeat=repeat, counts=counts, tz_offset_hours=ctx.tz_offset_hours, exclude=exclude,
    )


def _pack(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _impression_points(ctx: ReplayContext, chunk: np.ndarray, chunk_arr: pa.Array, user_ids: np.ndarray,
                       dec_user_start: np.ndarray, dec_user_end: np.ndarray, d_ts: np.ndarray,
                       counts: dict[str, int]) -> tuple[np.ndarray, ...]:
    ds = ctx.dataset
    imp = ds.read_user_rows("impressions.parquet", chunk.tolist(), IMPRESSION_COLUMNS)  # file order
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
    event), else ``log``; other values as they are."""
    if exclude != "auto":
        return exclude
    known = ev_item >= 0
    pairs = user_codes[known].astype(np.int64) * (int(ev_item.max(initial=0)) + 1) + ev_item[known]
    return "target" if len(np.unique(pairs)) < len(pairs) else "log"


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


def _next_positive_points(spec, exclude, d_item, d_idx, decision_user, dec_user_start, dec_user_end, user_ids, user_codes,
                          dec_users_codes, ev_item, ts, ev_hour, train_counts, n_items, counts, progress=None):
    weights = np.ones(n_items) if spec.negatives == "uniform" else train_counts.astype(np.float64) + 1.0
    # event position of each decision within its user's events
    ev_pos = position_in_run(user_codes)
    ev_user_start = np.nonzero(group_starts(user_codes))[0] if len(user_codes) else np.zeros(0, np.int64)
    n_users = len(user_ids)
    cand_rows, point_dec, slots, keys, repeats = [], [], [], [], []
    n_short = 0
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
        neg = sample_negatives(user_rng(spec.seed, user_ids[u]), spec.n_negatives, weights, first_seen, cutoff,
                               also_exclude=also)
        repeats.append(first_seen[d_item[targets]] < target_pos)
        n_short += int((neg < 0).any(axis=1).sum())
        cand_rows.append(np.concatenate([d_item[targets][:, None], neg], axis=1))
        point_dec.append(targets - 1)
        slots.append(time_slot(ev_hour[d_idx[targets]]))
        keys.append(np.char.add(f"{user_ids[u]}:", np.arange(1, hi - lo).astype(str)))
    bar.close()
    counts["points_with_fewer_negatives"] = n_short
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
def chunk_user_lists(users: np.ndarray, chunk_users: int) -> list[np.ndarray]:
    """Sorted ``users`` cut into consecutive runs of ``chunk_users`` (one empty run when there are none)."""
    if not isinstance(chunk_users, (int, np.integer)) or chunk_users < 1:
        raise InterestGymError(f"chunk_users={chunk_users!r}: expected an integer >= 1 (users per chunk)")
    users = np.asarray(sorted({str(u) for u in users}), dtype=str)
    return [users[lo: lo + chunk_users] for lo in range(0, len(users), int(chunk_users))] or [users]


def iter_replay_chunks(dataset: str | Path | Dataset, embeddings: str | None = None, spec: ProtocolSpec | None = None, *,
                       chunk_users: int = DEFAULT_CHUNK_USERS, users: Iterable[str] | None = None,
                       progress: bool | None = None) -> Iterator[ReplayData]:
    """The replay arrays of ``spec.split``'s users (or of ``users``, ids of that split), ``chunk_users``
    users at a time in sorted order: what a whole-split :class:`ReplayData` holds, chunk by chunk, with
    only one chunk's arrays in memory (the caller keeps what it needs of each).

    A user appears in exactly one chunk and every per-user array is the one of the whole split, so a
    per-user (or per-point) result computed chunk by chunk and concatenated equals the whole split's.
    Feed the chunks to a :class:`SplitSummary` for the whole split's :meth:`ReplayData.describe`.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    spec = spec or ProtocolSpec()
    ctx = replay_context(ds, embeddings, spec, progress=progress)
    split_users = ctx.split_users(spec.split)
    if users is not None:
        wanted = np.asarray(sorted({str(u) for u in users}), dtype=str)
        missing = wanted[~np.isin(wanted, split_users)]
        if len(missing):
            raise InterestGymError(f"users {missing[:5].tolist()} are not {spec.split!r} users of {ds.path}")
        split_users = wanted
    chunks = chunk_user_lists(split_users, chunk_users)
    with progress_bar(total=len(split_users), desc=f"{spec.split} users in chunks of {chunk_users}", unit="user",
                      enabled=progress) as bar:
        for chunk in chunks:
            yield build_for_users(ctx, spec, chunk, progress=False)
            bar.update(len(chunk))


class SplitSummary:
    """The whole split's :meth:`ReplayData.describe` and user ids, added up from its chunks."""

    def __init__(self) -> None:
        self._first: dict[str, Any] | None = None
        self._counts: dict[str, int] = {}
        self._user_ids: list[np.ndarray] = []
        self.n_users = 0
        self.n_decisions = 0
        self.n_points = 0

    def add(self, data: ReplayData) -> None:
        """Count one chunk in (chunks of disjoint users, in replay order)."""
        if self._first is None:
            self._first = data.describe()
        for key, value in data.counts.items():
            self._counts[key] = self._counts.get(key, 0) + int(value)
        self._user_ids.append(np.asarray(data.user_ids))
        self.n_users += data.n_users
        self.n_decisions += data.n_decisions
        self.n_points += data.n_points

    @property
    def user_ids(self) -> np.ndarray:
        """Every chunk's users with a decision, in replay order (as the whole split's ``user_ids``)."""
        return np.concatenate(self._user_ids).astype(str) if self._user_ids else np.zeros(0, dtype=str)

    def describe(self) -> dict[str, Any]:
        """What the whole split's :meth:`ReplayData.describe` gives."""
        if self._first is None:
            raise InterestGymError("SplitSummary.describe(): no chunk was added")
        out = dict(self._first)
        out.update(users=self.n_users, decisions=self.n_decisions, scoring_points=self.n_points, counts=dict(self._counts))
        return out


def summarise_split(dataset: str | Path | Dataset, embeddings: str | None, spec: ProtocolSpec, *,
                    chunk_users: int = DEFAULT_CHUNK_USERS, progress: bool | None = None) -> SplitSummary:
    """:class:`SplitSummary` of a whole split, built chunk by chunk and let go (what ``describe()`` and
    ``user_ids`` of the split's :class:`ReplayData` give, in one chunk's memory)."""
    summary = SplitSummary()
    for data in iter_replay_chunks(dataset, embeddings, spec, chunk_users=chunk_users, progress=progress):
        summary.add(data)
    return summary
