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
from interestgym.envs.replay_points import (
    _as_string,
    _index_in,
    _np,
    engaged_items,
    impression_points,
    next_positive_points,
)

from interestgym.core.clock import time_slot
from interestgym.core.features import LOG_FEATURES, encode_features
from interestgym.core.log_features import (
    RATING_ACTION,
    is_decision,
    log_quantities,
    repeated_engagements,
)
from interestgym.core.protocol import item_popularity
from interestgym.data.dataset import Dataset
from interestgym.errors import DataError, InterestGymError
from interestgym.progress import progress_bar

#: Users per chunk of :func:`iter_replay_chunks` (``interestgym evaluate --chunk-users``): ~60 events per
#: user on the synthetic log, so a chunk's arrays and results are tens of MB.
DEFAULT_CHUNK_USERS = 5000
#: The events columns the replay arrays are made of.
EVENT_COLUMNS = ["user_id", "item_id", "ts", "seq", "action", "value", "hour", "weekday"]


# ------------------------------------------------------------------------------------------ arrow helpers
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
    has_repeats: bool | None  # a training user engages with one item in more than one event (None: not computed)

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
        """The spec's ``exclude`` for this log (``auto`` -> ``target`` when a training user has repeats, else ``log``)."""
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
    with_impressions = has_impressions(ds.path)
    protocol = spec.protocol if spec.protocol != "auto" else ("impressions" if with_impressions else "next_positive")
    need_repeats = protocol == "next_positive" and spec.exclude == "auto"
    key = (str(ds.path.resolve()), name, dataset_stamps(ds, name))
    ctx = _CONTEXTS.get(key)
    if ctx is not None and (ctx.has_repeats is not None or not need_repeats):
        _CONTEXTS.move_to_end(key)
        return ctx
    ctx = _build_context(ds, name, with_impressions, need_repeats, progress)
    _CONTEXTS[key] = ctx
    while len(_CONTEXTS) > _CONTEXT_CACHE_SIZE:
        _CONTEXTS.popitem(last=False)
    return ctx


def has_impressions(dataset: Path) -> bool:
    """The dataset folder has logged impressions (a non-empty impressions table): what protocol ``auto``
    replays, and where the exposure counts apply."""
    return _has_rows(Path(dataset) / "impressions.parquet")


def has_varying_values(dataset: Path) -> bool:
    """The dataset's events carry more than one feedback value (ratings, dwell times): where
    ``bayesian_category``'s value gain may have been tried. A cheap look at the events table's statistics (the
    tuning itself reads its users' decisions: :func:`interestgym.agents.rules.feedback_median`), for the
    older-grid notes on tunings that do not record their data constants (written before the value gain)."""
    path = Path(dataset) / "events.parquet"
    if not _has_rows(path):
        return False
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
        index = meta.schema.names.index("value")
        stats = [meta.row_group(g).column(index).statistics for g in range(meta.num_row_groups)]
        if stats and all(st is not None and st.has_min_max for st in stats):  # the file's own statistics: no column read
            return min(st.min for st in stats) != max(st.max for st in stats)
        bounds = pc.min_max(pq.read_table(path, columns=["value"])["value"])
    except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file or a missing column)
        raise DataError(f"{path}: cannot read its value column: {' '.join(str(exc).split())}") from None
    return bounds["min"].is_valid and bounds["min"].as_py() != bounds["max"].as_py()


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
    repeats = _RepeatCheck() if need_repeats else None
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
            if repeats is not None and in_train.any():  # engagement: an event of an action with a weight (an impression is none)
                # training users only, as the popularity: which negatives every split gets is not for test users to decide
                repeats.add(table.column("user_id").filter(pa.array(in_train)), engaged_items(item, weight)[in_train])
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

    def __init__(self) -> None:
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
        if repeated_engagements(codes, item):
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
        pts = impression_points(ctx, chunk, chunk_arr, user_ids, dec_user_start, dec_user_end, d_ts, counts)
    else:
        # decided on the whole log (every split), so train, valid and test share one protocol
        exclude = ctx.resolve_exclusion(spec)
        pts = next_positive_points(
            spec, exclude, d_item, d_idx, decision_user, dec_user_start, dec_user_end, user_ids, user_codes,
            dec_users_codes, engaged_items(ev_item, weight), ts, hour, ctx.train_counts, ctx.n_items, counts, progress,
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
    # (the chunk size said only where there is more than one chunk: "in chunks of 5000: 0/188" read oddly)
    desc = f"{spec.split} users" + (f" in {len(chunks)} chunks of {chunk_users:,}" if len(chunks) > 1 else "")
    with progress_bar(total=len(split_users), desc=desc, unit="user", enabled=progress) as bar:
        for chunk in chunks:
            yield build_for_users(ctx, spec, chunk, progress=False)
            bar.update(len(chunk))


class SplitSummary:
    """The whole split's :meth:`ReplayData.describe` and user ids, added up from its chunks."""

    def __init__(self) -> None:
        self._first: dict[str, Any] | None = None
        self._counts: dict[str, int] = {}
        self._user_ids: list[np.ndarray] = []
        self._scored_ids: list[np.ndarray] = []
        self.n_users = 0
        self.n_decisions = 0
        self.n_points = 0
        self.n_candidates = 0  #: candidates over every scoring point
        self.widths = (0, 0)  #: the fewest and the most candidates of a scoring point

    def add(self, data: ReplayData) -> None:
        """Count one chunk in (chunks of disjoint users, in replay order)."""
        if self._first is None:
            self._first = data.describe()
        for key, value in data.counts.items():
            self._counts[key] = self._counts.get(key, 0) + int(value)
        self._user_ids.append(np.asarray(data.user_ids))
        self._scored_ids.append(data.scored_user_ids)
        self.n_users += data.n_users
        self.n_decisions += data.n_decisions
        if data.n_points:
            width = np.diff(data.point_offsets)
            low, high = int(width.min()), int(width.max())
            self.widths = (low, high) if not self.n_points else (min(self.widths[0], low), max(self.widths[1], high))
            self.n_candidates += int(width.sum())
        self.n_points += data.n_points

    def candidates_text(self) -> str | None:
        """How many candidates a scoring point ranks: ``15``, or ``14.3 on average (3-40)`` when they differ (a metric
        at k over fewer than k candidates says little of the ranking); None without a point."""
        if not self.n_points:
            return None
        low, high = self.widths
        return str(low) if low == high else f"{self.n_candidates / self.n_points:.1f} on average ({low}-{high})"

    @property
    def user_ids(self) -> np.ndarray:
        """Every chunk's users with a decision, in replay order (as the whole split's ``user_ids``)."""
        return np.concatenate(self._user_ids).astype(str) if self._user_ids else np.zeros(0, dtype=str)

    @property
    def scored_user_ids(self) -> np.ndarray:
        """What the whole split's :attr:`ReplayData.scored_user_ids` gives."""
        return np.concatenate(self._scored_ids).astype(str) if self._scored_ids else np.zeros(0, dtype=str)

    def describe(self) -> dict[str, Any]:
        """What the whole split's :meth:`ReplayData.describe` gives."""
        if self._first is None:
            raise InterestGymError("SplitSummary.describe(): no chunk was added")
        out = dict(self._first)
        out.update(users=self.n_users, decisions=self.n_decisions, scoring_points=self.n_points, counts=dict(self._counts))
        return out


