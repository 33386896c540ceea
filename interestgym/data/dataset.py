"""Reading and writing the canonical dataset directory (see :mod:`interestgym.data.schema`).

``write_dataset`` is the single place where readers' output becomes files: it sorts events with the
stable tie rule, assigns the seeded user split, writes every table into a folder beside the target
and swaps that folder in (:mod:`interestgym.data.swap`), so a killed run leaves the old dataset or
the new one, never a mix, and records the manifest. ``Dataset`` is how every later stage reads it
back; opening one checks its manifest (:mod:`interestgym.data.manifest`).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from interestgym import __version__
from interestgym.data.manifest import read_manifest
from interestgym.data.schema import (
    ACTIONS,
    DEFAULT_ACTION_WEIGHTS,
    DEFAULT_POSITIVE_RATING,
    EVENT_COLUMNS,
    IMPRESSION_COLUMNS,
    ITEM_COLUMNS,
    SCHEMA_VERSION,
    SPLITS,
)
from interestgym.data.swap import leftovers, replacing_dir
from interestgym.data.validate import RejectLog
from interestgym.errors import ArtifactError, DataError
from interestgym.io import (
    atomic_path,
    save_npy_atomic,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST = "manifest.json"


# --------------------------------------------------------------------------------------------- split
@dataclass(frozen=True)
class SplitSpec:
    """How users are split. Fractions are of users; the assignment depends only on the seed and the
    sorted user ids, so it is stable across runs."""

    train: float = 0.6
    valid: float = 0.2
    test: float = 0.2
    seed: int = 0
    #: If set, each user's events before this fraction of their time span are marked ``late=False``:
    #: later stages may warm profiles on the early part and score only the late part.
    time_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise DataError(f"split fraction {name}={v}: expected a number in [0, 1]")
        if abs(self.train + self.valid + self.test - 1.0) > 1e-6:
            raise DataError(
                f"split fractions train={self.train} valid={self.valid} test={self.test} sum to "
                f"{self.train + self.valid + self.test:g}; expected 1"
            )
        if self.time_fraction is not None and not 0.0 < self.time_fraction < 1.0:
            raise DataError(f"time split fraction {self.time_fraction}: expected a number in (0, 1)")

    def assign(self, user_ids: np.ndarray) -> pd.DataFrame:
        users = np.array(sorted(set(map(str, user_ids))), dtype=object)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(users))
        n = len(users)
        n_train = round(self.train * n)
        n_valid = round(self.valid * n)
        split = np.empty(n, dtype=object)
        split[order[:n_train]] = "train"
        split[order[n_train : n_train + n_valid]] = "valid"
        split[order[n_train + n_valid :]] = "test"
        return pd.DataFrame({"user_id": users, "split": split})

    def as_dict(self) -> dict[str, Any]:
        return {"by": "user", "fractions": {"train": self.train, "valid": self.valid, "test": self.test},
                "seed": self.seed, "time_fraction": self.time_fraction}


# --------------------------------------------------------------------------------------------- write
def _check_columns(df: pd.DataFrame, required: tuple[str, ...], table: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise AssertionError(f"reader produced a {table} table without columns {missing}")


def _parquet(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_dataset(
    out: str | Path,
    *,
    source_format: str,
    source_files: list[Path],
    items: pd.DataFrame,
    events: pd.DataFrame,
    rejects: RejectLog,
    split: SplitSpec,
    impressions: pd.DataFrame | None = None,
    truth: np.ndarray | None = None,
    extra_manifest: dict[str, Any] | None = None,
    extra_counts: dict[str, Any] | None = None,
    extra_tables: dict[str, pd.DataFrame] | None = None,
    action_weights: dict[str, float] | None = None,
    max_reject_rate: float | None = None,
    command: list[str] | None = None,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Write a canonical dataset directory and return its manifest.

    ``events`` need not be sorted: they are sorted here by (user_id, ts, seq). ``truth`` rows must be
    aligned with ``events`` as given (they are reordered with them). ``deterministic`` leaves the
    creation time out of the manifest so that two identical runs give identical bytes.
    ``extra_counts`` (a reader's own counts, e.g. MIND candidates without a news row) are merged into
    ``manifest["counts"]``; ``extra_manifest`` adds top-level keys; ``extra_tables`` are more Parquet
    files of the dataset, by file name (``synthetic_users.parquet``).

    The files are written into a new folder beside ``out`` that then replaces ``out`` in one swap;
    what ``out`` held besides an old dataset's files (``embeddings/``, ``cache/`` ...) is carried
    over (see :mod:`interestgym.data.swap`). Deciding whether ``out`` may be replaced at all is the
    caller's business (``prepare`` asks for ``--overwrite``).
    """
    out = Path(out)
    _check_columns(items, ITEM_COLUMNS, "items")
    _check_columns(events, EVENT_COLUMNS, "events")
    if impressions is not None:
        _check_columns(impressions, IMPRESSION_COLUMNS, "impressions")
    report = rejects.report()
    if max_reject_rate is not None:
        rejects.check_rate(max_reject_rate)
    if len(events) == 0:
        raise DataError(f"{', '.join(map(str, source_files))}: no valid events were read; expected at least one")
    unknown = sorted(set(events["action"].unique()) - set(ACTIONS))
    if unknown:
        raise AssertionError(f"reader produced unknown actions {unknown}")

    # Sorting integer codes (factorize sorts the user ids as strings) is much faster than comparing strings.
    user_codes, user_ids = pd.factorize(events["user_id"].astype(str), sort=True)
    order = _event_order(user_codes, events["ts"].to_numpy(), events["seq"].to_numpy())
    events = events.iloc[order].reset_index(drop=True)
    if truth is not None:
        truth = np.ascontiguousarray(truth[order], dtype=np.float32)
    users = split.assign(np.asarray(user_ids, dtype=object))  # the distinct ids: the same split, without 1M str() calls
    if split.time_fraction is not None:
        g = events.groupby("user_id")["ts"]
        lo, hi = g.transform("min"), g.transform("max")
        events["late"] = events["ts"] >= lo + split.time_fraction * (hi - lo)

    split_counts = users["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    weights = {**DEFAULT_ACTION_WEIGHTS, **(action_weights or {})}  # as Dataset.action_weights reads them back
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "interestgym_version": __version__,
        "source": {
            "format": source_format,
            "files": [
                {"path": str(p) if not deterministic else p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in source_files
            ],
        },
        "counts": {
            "items": len(items),
            "events": len(events),
            "users": len(users),
            "impressions": len(impressions) if impressions is not None else 0,
            "actions": {k: int(v) for k, v in events["action"].value_counts().sort_index().items()},
            "repeat_engagements": repeat_engagements(user_codes[order], events["item_id"], events["action"], weights),
            **(extra_counts or {}),
        },
        # users_sha256: Dataset.users checks users.parquet against it (a user renamed or moved to another split by hand)
        "split": {**split.as_dict(), "users": {k: int(v) for k, v in split_counts.items()}, "users_sha256": split_sha256(users)},
        "validation": report,
        "action_weights": dict(action_weights or DEFAULT_ACTION_WEIGHTS),
        "positive_rating": DEFAULT_POSITIVE_RATING,
        "has_truth": truth is not None,
        "command": " ".join(shlex.quote(a) for a in (command if command is not None else sys.argv)),
    }
    if not deterministic:
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if extra_manifest:
        manifest.update(extra_manifest)

    with replacing_dir(out) as new:
        _parquet(items.reset_index(drop=True), new / "items.parquet")
        _parquet(events, new / "events.parquet")
        _parquet(users, new / "users.parquet")
        if impressions is not None:
            imp = impressions.sort_values(["user_id", "ts", "impression_id"], kind="stable").reset_index(drop=True)
            _parquet(imp, new / "impressions.parquet")
        for name, table in (extra_tables or {}).items():
            _parquet(table, new / name)
        if truth is not None:
            save_npy_atomic(new / "truth.npy", truth)
        # each table's bytes: a table edited after prepare with its row count kept (an action renamed, a user renamed,
        # times swapped) is refused when a stage reads it (Dataset._verified)
        manifest["tables_sha256"] = {p.name: sha256_file(p) for p in sorted(new.iterdir())
                                     if p.is_file() and p.suffix in (".parquet", ".npy")}
        write_text_atomic(new / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects.rejects))
        write_json_atomic(new / MANIFEST, manifest)  # last: a folder with a manifest is a whole dataset
    return manifest


def _event_order(user_codes: np.ndarray, ts: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The order that sorts events by (user, ts, seq): ``np.lexsort``'s, or, when the events come in
    increasing ``seq`` (every reader gives them so) and (user, ts) packs into one int64, a stable sort of
    that one key, which is the same permutation in ~40% of the time."""
    if len(ts) > 1 and bool(np.all(seq[1:] > seq[:-1])):
        lo = int(ts.min())
        span = int(ts.max()) - lo + 1
        if (int(user_codes.max()) + 1) * span < 2**62:
            return np.argsort(user_codes.astype(np.int64) * span + (ts.astype(np.int64) - lo), kind="stable")
    return np.lexsort((seq, ts, user_codes))


def repeat_engagements(user_codes: np.ndarray, item_ids: pd.Series, actions: pd.Series, weights: dict[str, float]) -> int:
    """:func:`~interestgym.core.log_features.repeated_engagements` of a log being written: the engagements (events of
    an action with a weight > 0) of an item the same user engaged with before."""
    from interestgym.core.log_features import engaged_items, repeated_engagements

    codes, names = pd.factorize(actions)  # a handful of actions: map those, not every row (Series.map: ~0.5 s a 1M rows)
    weight = np.array([weights.get(a, 0.0) for a in names] + [0.0], dtype=np.float64)[codes]
    item_codes, _ = pd.factorize(item_ids.astype(str))
    return repeated_engagements(user_codes, engaged_items(item_codes, weight))


def _row_groups_overlapping(pf: Any, column: str, lo: str, hi: str) -> list[int]:
    """Row groups of ParquetFile ``pf`` whose ``column`` min / max statistics overlap [lo, hi] (a row
    group without statistics is kept: it may hold such rows). Parquet orders strings by their UTF-8
    bytes, which is Python's code-point order."""
    meta = pf.metadata
    keep = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        stats = next((rg.column(j).statistics for j in range(rg.num_columns) if rg.column(j).path_in_schema == column), None)
        if stats is None or not stats.has_min_max:
            keep.append(i)
            continue
        mn, mx = stats.min, stats.max
        mn = mn.decode("utf-8", "replace") if isinstance(mn, bytes) else str(mn)
        mx = mx.decode("utf-8", "replace") if isinstance(mx, bytes) else str(mx)
        if not (mx < lo or mn > hi):
            keep.append(i)
    return keep


def item_texts_sha256(items: pd.DataFrame) -> str:
    """Hash of the texts a text encoder encodes (``text``, a missing one as ""), in row order: ``encode`` records it,
    :meth:`Dataset.load_embeddings` refuses vectors of other texts."""
    return frame_sha256(items[["text"]].fillna("").astype(str))


def item_ids_sha256(item_ids: Any) -> str:
    """sha256 of an item-id list in order (the JSON list of the ids as strings).

    ``encode`` stores it in each embedding's metadata; :meth:`Dataset.load_embeddings` compares it
    with the dataset's items, so embeddings made for another item list are refused, not misaligned.
    """
    import hashlib

    ids = [str(i) for i in item_ids]
    return hashlib.sha256(json.dumps(ids, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()


def frame_sha256(df: pd.DataFrame) -> str:
    """Content hash of a table (values and column names, not the index)."""
    import hashlib

    h = hashlib.sha256("\x1f".join(map(str, df.columns)).encode("utf-8"))
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def split_sha256(users: pd.DataFrame) -> str:
    """Hash of the users' split (user_id -> train / valid / test): what an encoder fitted on behaviour learnt from."""
    return frame_sha256(users[["user_id", "split"]].astype(str))


def training_events(events: pd.DataFrame, users: pd.DataFrame, action_weights: dict[str, float] | None = None) -> pd.DataFrame:
    """The events a behaviour encoder learns from: the training users' engagements, in replay order (user, time,
    source order), columns user_id, ts, seq, item_id, action. An engagement is an event whose action has a weight
    (``action_weights``: the manifest's, as the replay protocol counts them); without weights, every action but
    ``impression``."""
    train_users = set(users.loc[users["split"] == "train", "user_id"].astype(str))
    ev = events[["user_id", "ts", "seq", "item_id", "action"]]
    if action_weights is None:
        engaged = ev["action"] != "impression"
    else:
        engaged = ev["action"].astype(str).map({str(k): float(v) for k, v in action_weights.items()}).fillna(0.0) > 0
    ev = ev[ev["user_id"].astype(str).isin(train_users) & engaged]
    order = np.lexsort((ev["seq"].to_numpy(), ev["ts"].to_numpy(), ev["user_id"].astype(str).to_numpy()))
    return ev.iloc[order]


def training_events_sha256(ev: pd.DataFrame) -> str:
    """Hash of :func:`training_events`' table."""
    return frame_sha256(ev.astype({"user_id": str, "item_id": str}))


# ---------------------------------------------------------------------------------------------- read
def _two_digests(a: Any, b: Any, shown: int = 12) -> tuple[str, str]:
    """Two digests that differ, each cut to the same length, long enough to show where they differ (the first
    ``shown`` characters alike were shown as the same value)."""
    a, b = str(a), str(b)
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    width = max(shown, first + 4)
    return (a[:width] + ("..." if len(a) > width else "")), (b[:width] + ("..." if len(b) > width else ""))


@dataclass
class Dataset:
    """A prepared dataset directory, read lazily.

    >>> ds = Dataset.open("runs/data/ml-100k")        # doctest: +SKIP
    >>> ds.items, ds.events, ds.users_in("test")      # doctest: +SKIP
    """

    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        """Open a dataset folder; its manifest is checked (:func:`~interestgym.data.manifest.read_manifest`)."""
        path = Path(path)
        mf = path / MANIFEST
        if not path.is_dir():
            hint = ""
            old = [p for kind, _, p in leftovers(path) if kind == "old"]
            if old:  # a prepare --overwrite was killed between the two renames of its swap
                hint = f"; the previous dataset is in {old[0]} (re-run the same `interestgym prepare`, which puts it back)"
            raise ArtifactError(f"{path}: no such dataset directory (create one with `interestgym prepare`){hint}")
        if not mf.is_file():
            raise ArtifactError(f"{path}: not a dataset directory: {MANIFEST} is missing (create one with `interestgym prepare`)")
        manifest = read_manifest(mf)
        for name in ("items.parquet", "events.parquet", "users.parquet"):
            if not (path / name).is_file():
                raise ArtifactError(f"{path / name}: missing from the dataset directory")
        _check_row_counts(path, manifest)
        return cls(path=path, manifest=manifest)

    def _verified(self, name: str) -> Path:
        """The path of table ``name``, its bytes checked against the manifest's ``tables_sha256`` (recorded by `prepare`
        since session 25; an older dataset's tables are not checked): a table edited after `prepare` with its row count
        kept would otherwise be read as the dataset. Checked once per process for the file as it is (size, mtime)."""
        path = self.path / name
        expected = (self.manifest.get("tables_sha256") or {}).get(name)
        if expected is None or not path.is_file():
            return path
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
        if key not in _VERIFIED:
            from interestgym.io import sha256_file

            if sha256_file(path) != expected:
                raise ArtifactError(f"{path}: its bytes are not those `interestgym prepare` wrote ({MANIFEST} tables_sha256): "
                                    "the table was damaged, edited or replaced after prepare (prepare the dataset again)")
            _VERIFIED.add(key)
        return path

    def _read(self, name: str) -> pd.DataFrame:
        path = self._verified(name)
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
            # pyarrow's messages can span lines; the error stays one line
            raise ArtifactError(f"{self.path / name}: cannot be read as Parquet: {' '.join(str(exc).split())}") from None

    @cached_property
    def items(self) -> pd.DataFrame:
        return self._read("items.parquet")

    @cached_property
    def events(self) -> pd.DataFrame:
        return self._read("events.parquet")

    @cached_property
    def users(self) -> pd.DataFrame:
        users = self._read("users.parquet")
        self.__dict__["users_sha256"] = _check_users(self.path / "users.parquet", users, self.manifest)
        return users

    @cached_property
    def users_sha256(self) -> str:
        """:func:`split_sha256` of ``users.parquet`` (computed once, when the table is read and checked)."""
        self.users  # noqa: B018  (reading the table sets it)
        return self.__dict__["users_sha256"]

    def read_events(self, columns: list[str] | None = None, users: Iterable[str] | None = None) -> pd.DataFrame:
        """Only ``columns`` of the events (all when None) of only ``users`` (all when None), read with
        Parquet column projection and a pyarrow filter: what a stage needs, not the whole log. Rows keep
        the file's order (user, time, source order)."""
        import pyarrow.parquet as pq

        path = self._verified("events.parquet")
        filters = None if users is None else [("user_id", "in", sorted({str(u) for u in users}))]
        try:
            table = pq.read_table(path, columns=columns, filters=filters)
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file or a bad column)
            raise ArtifactError(f"{path}: cannot be read as Parquet: {' '.join(str(exc).split())}") from None
        return table.to_pandas()

    def iter_user_rows(self, name: str, users: Iterable[str] | None, columns: list[str] | None = None, *,
                       batch_size: int = 1 << 16) -> Iterator[pa.Table]:
        """The rows of table ``name`` (``events.parquet``, ``impressions.parquet``) whose ``user_id`` is one
        of ``users`` (every row when None), ``columns`` only, in file order, a batch at a time, each with an
        int64 column ``__row__``: the row's position in the file (what ``decision_event_row`` and
        ``truth.npy`` index).

        Reads only what it needs: Parquet column projection, row groups skipped by their ``user_id``
        min / max statistics (the writer sorts rows by user, so a range of users is a few row groups),
        and each remaining row group decoded ``batch_size`` rows at a time and filtered there, so memory
        holds one batch plus the kept rows, never the table.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path = self._verified(name)
        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
            raise ArtifactError(f"{path}: cannot be read as Parquet: {' '.join(str(exc).split())}") from None
        names = pf.schema_arrow.names
        wanted = list(names) if columns is None else list(columns)
        missing = [c for c in ["user_id", *wanted] if c not in names]
        if missing:
            raise ArtifactError(f"{path}: no column(s) {', '.join(missing)}; it has {', '.join(names)}")
        read_cols = list(dict.fromkeys(["user_id", *wanted]))
        user_type = pf.schema_arrow.field("user_id").type
        stringy = pa.types.is_string(user_type) or pa.types.is_large_string(user_type)
        value_set = None
        row_groups = list(range(pf.metadata.num_row_groups))
        if users is not None:
            wanted_users = sorted({str(u) for u in users})
            if not wanted_users:
                return
            value_set = pa.array(wanted_users, type=user_type if stringy else pa.string())
            if stringy:
                row_groups = _row_groups_overlapping(pf, "user_id", wanted_users[0], wanted_users[-1])
        starts = np.concatenate([[0], np.cumsum([pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)])])
        try:
            for rg in row_groups:
                pos = int(starts[rg])
                for batch in pf.iter_batches(batch_size=batch_size, row_groups=[rg], columns=read_cols):
                    n = batch.num_rows
                    table = pa.Table.from_batches([batch])
                    row = pa.array(np.arange(pos, pos + n, dtype=np.int64))
                    pos += n
                    if value_set is not None:
                        user_col = table.column("user_id") if stringy else pc.cast(table.column("user_id"), pa.string())
                        keep = pc.is_in(user_col, value_set=value_set)
                        if not pc.any(keep).as_py():
                            continue
                        table, row = table.filter(keep), row.filter(keep.combine_chunks())
                    yield table.select(wanted).append_column("__row__", row)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ArtifactError(f"{path}: cannot be read as Parquet: {' '.join(str(exc).split())}") from None

    def read_user_rows(self, name: str, users: Iterable[str] | None, columns: list[str] | None = None) -> pa.Table:
        """:meth:`iter_user_rows` gathered into one Arrow table (only the kept rows are ever held)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = list(self.iter_user_rows(name, users, columns))
        if tables:
            return pa.concat_tables(tables)
        schema = pq.read_schema(self.path / name)
        cols = list(schema.names) if columns is None else list(columns)
        return pa.schema([schema.field(c) for c in cols] + [pa.field("__row__", pa.int64())]).empty_table()

    def has_column(self, name: str, column: str) -> bool:
        """Whether table ``name`` (``events.parquet`` ...) has ``column`` (reads the footer only)."""
        import pyarrow.parquet as pq

        path = self.path / name
        return path.is_file() and column in pq.read_schema(path).names

    @cached_property
    def impressions(self) -> pd.DataFrame | None:
        p = self.path / "impressions.parquet"
        return self._read("impressions.parquet") if p.is_file() else None

    @cached_property
    def truth(self) -> np.ndarray | None:
        p = self._verified("truth.npy")
        if not p.is_file():
            return None
        try:
            truth = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # truncated / overwritten file
            raise ArtifactError(f"{p}: cannot be read as a .npy array: {' '.join(str(exc).split())}; prepare the dataset again") from None
        if truth.ndim != 2:
            raise ArtifactError(f"{p}: shape {truth.shape}; expected a 2-d array (one row per event, one column per topic)")
        return truth

    @property
    def truth_shape(self) -> tuple[int, ...] | None:
        """Shape of ``truth.npy`` (None when there is none), read from its header only."""
        truth = self._truth_map()
        return None if truth is None else tuple(truth.shape)

    def truth_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` of ``truth.npy`` (float32), read through a memory map that is closed again, so
        the process holds the rows asked for, not the file (``truth`` loads all of it)."""
        truth = self._truth_map()
        if truth is None:
            raise ArtifactError(f"{self.path / 'truth.npy'}: no such file; only synthetic datasets have the true interests")
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= truth.shape[0]):
            raise ArtifactError(f"{self.path / 'truth.npy'}: {truth.shape[0]} rows, asked for row {int(rows.max())}; "
                                "prepare the dataset again (truth.npy and events.parquet disagree)")
        out = np.array(truth[rows], dtype=np.float32)
        del truth  # unmaps the file: the pages read leave the process's resident memory
        return out

    def _truth_map(self) -> np.ndarray | None:
        p = self._verified("truth.npy")
        if not p.is_file():
            return None
        try:
            truth = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # truncated / overwritten file
            raise ArtifactError(f"{p}: cannot be read as a .npy array: {' '.join(str(exc).split())}; prepare the dataset again") from None
        if truth.ndim != 2:
            raise ArtifactError(f"{p}: shape {truth.shape}; expected a 2-d array (one row per event, one column per topic)")
        return truth

    @cached_property
    def item_index(self) -> dict[str, int]:
        """item_id -> row of ``items`` (and of every embedding matrix)."""
        return {iid: i for i, iid in enumerate(self.items["item_id"].astype(str))}

    @property
    def action_weights(self) -> dict[str, float]:
        """Weight of each action: the manifest's (checked when opened: numbers >= 0) over the defaults."""
        return {**DEFAULT_ACTION_WEIGHTS, **{k: float(v) for k, v in self.manifest.get("action_weights", {}).items()}}

    @property
    def positive_rating(self) -> float:
        return float(self.manifest.get("positive_rating", DEFAULT_POSITIVE_RATING))

    @property
    def name(self) -> str:
        return self.path.name

    def users_in(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise DataError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        return self.users.loc[self.users["split"] == split, "user_id"].astype(str).tolist()

    # ------------------------------------------------------------------ embeddings (written by encode)
    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    def embedding_names(self) -> list[str]:
        d = self.embeddings_dir
        return sorted(p.stem for p in d.glob("*.npy") if (d / f"{p.stem}.json").is_file()) if d.is_dir() else []

    def embedding_of(self, fingerprint: Any, dim: int | None = None) -> str | None:
        """The name of this dataset's embedding an encoder of ``fingerprint`` (and ``dim``, when given) wrote, or
        None (none, or a damaged metadata file: the one chosen is then refused with its own message)."""
        for name in self.embedding_names():
            try:
                meta = json.loads((self.embeddings_dir / f"{name}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("fingerprint") == fingerprint and (dim is None or meta.get("dim") == dim):
                return name
        return None

    def resolve_embeddings(self, name: str | None) -> str:
        """The embedding name to use: ``name`` if given, else the only one there is."""
        names = self.embedding_names()
        if name is not None:
            if name not in names:
                listed = ", ".join(names) or "none (run `interestgym encode` first)"
                raise ArtifactError(f"{self.embeddings_dir}: no embeddings named {name!r}; available: {listed}")
            return name
        if len(names) == 1:
            return names[0]
        if not names:
            from interestgym.data.suggest import encoder_advice

            encoder, why = encoder_advice(self.path, (self.manifest.get("source") or {}).get("format"))
            raise ArtifactError(f"{self.path}: no embeddings yet; run `interestgym encode {self.path} --encoder {encoder}` first"
                                + (f" ({why})" if why else ""))
        raise ArtifactError(f"{self.path}: several embeddings ({', '.join(names)}); choose one with --embeddings NAME (embeddings=NAME in Python)")

    def load_embeddings(self, name: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Return (matrix aligned with ``items``, metadata) for the named (or only) embedding."""
        name = self.resolve_embeddings(name)
        meta_path = self.embeddings_dir / f"{name}.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            mat = np.load(self.embeddings_dir / f"{name}.npy", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001  (json, numpy and the OS raise many types for a damaged file)
            raise ArtifactError(f"{self.embeddings_dir / name}: corrupt embeddings: {exc}; re-run `interestgym encode`") from None
        encoder = meta.get("encoder", "ENCODER") if isinstance(meta, dict) else "ENCODER"
        rerun = f"re-run `interestgym encode {self.path} --encoder {encoder} --name {name}`"
        if mat.ndim != 2 or mat.shape[0] != len(self.items) or mat.dtype != np.float32:
            raise ArtifactError(
                f"{self.embeddings_dir / name}.npy: shape {mat.shape} dtype {mat.dtype}; expected "
                f"({len(self.items)}, dim) float32 aligned with items.parquet; {rerun}"
            )
        if not isinstance(meta, dict):
            raise ArtifactError(f"{meta_path}: expected a JSON object of embedding metadata; {rerun}")
        if meta.get("dim") is not None and meta["dim"] != mat.shape[1]:
            raise ArtifactError(f"{meta_path}: field dim is {meta['dim']} but {name}.npy has {mat.shape[1]} columns; {rerun}")
        # Same row count is not enough: the items may have been re-prepared in another order or with
        # other ids. The item-id hash written by `encode` says which item list the rows belong to.
        stored = meta.get("item_ids_sha256")
        if stored is None:
            raise ArtifactError(
                f"{meta_path}: field item_ids_sha256 is missing; expected the hash of the item ids the rows belong to; {rerun}"
            )
        if stored != self.item_ids_sha256:
            was, now = _two_digests(stored, self.item_ids_sha256)
            raise ArtifactError(
                f"{meta_path}: field item_ids_sha256 is {was}, but items.parquet's item ids hash to {now} (the items "
                f"changed since these embeddings were made, or this field was edited); {rerun}"
            )
        texts = meta.get("item_texts_sha256")  # text encoders' vectors (embeddings from before the field: not checked)
        if meta.get("input") == "text" and texts is not None and texts != self.item_texts_sha256:
            was, now = _two_digests(texts, self.item_texts_sha256)
            raise ArtifactError(
                f"{meta_path}: field item_texts_sha256 is {was}, but items.parquet's texts hash to {now} (the item texts "
                f"changed since these vectors were encoded, e.g. prepared again with another --item-text, or this field "
                f"was edited); {rerun}"
            )
        recorded = meta.get("matrix_sha256")  # embeddings encoded before session 22 did not record it
        if recorded is not None and recorded != (found := matrix_sha256(mat)):
            now, was = _two_digests(found, recorded)
            raise ArtifactError(f"{self.embeddings_dir / name}.npy: its vectors hash to {now}, not to {was} as {meta_path} "
                                f"records: the file, or that field, was changed after `interestgym encode` wrote it; {rerun}")
        self._check_fitted_on(meta, meta_path, rerun)
        return mat, meta

    def _check_fitted_on(self, meta: dict[str, Any], meta_path: Path, rerun: str) -> None:
        """Embeddings fitted on the dataset's behaviour (``cooc``) record the split and the training events they
        learnt from; after a new split (or new events) they would carry what today's validation and test users
        did: refused. The split is compared on every load (users.parquet is small); the training events are read
        and hashed again only when events.parquet is not the file the fit read (its sha256 differs)."""
        fitted = meta.get("encoder_details")
        if not isinstance(fitted, dict) or not fitted.get("split_sha256"):
            return
        why = None
        if fitted["split_sha256"] != self.users_sha256:
            why = "another split of the users"
        elif fitted.get("train_events_sha256") and fitted.get("events_file_sha256") != self.events_file_sha256:
            # the events file changed (or the fit predates its hash): are the training events it learnt from the same?
            columns = ["user_id", "ts", "seq", "item_id", "action"]
            now = training_events(self.read_events(columns), self.users, self.action_weights)
            if fitted["train_events_sha256"] != training_events_sha256(now):
                why = "other training events"
        if why is not None:
            raise ArtifactError(f"{meta_path}: these {meta.get('encoder', 'behaviour')} vectors were fitted on {why} than "
                                f"{self.path}'s (it was prepared again since: fields encoder_details.split_sha256 / "
                                f"train_events_sha256); they may have learnt from what its validation and test users did; {rerun}")

    @cached_property
    def events_file_sha256(self) -> str:
        """sha256 of ``events.parquet``'s bytes (what a behaviour encoder records of the file it was fitted on)."""
        from interestgym.io import sha256_file

        return sha256_file(self.path / "events.parquet")

    @cached_property
    def item_texts_sha256(self) -> str:
        """Hash of the items' texts in row order (see :func:`item_texts_sha256`)."""
        return item_texts_sha256(self.items)

    @cached_property
    def item_ids_sha256(self) -> str:
        """Hash of the item-id list in row order (see :func:`item_ids_sha256`)."""
        return item_ids_sha256(self.items["item_id"])


#: Tables whose bytes this process found as ``tables_sha256`` records them: (path, size, mtime_ns, sha256).
_VERIFIED: set[tuple[str, int, int, str]] = set()

#: The tables whose row count the manifest records under ``counts`` (impressions: datasets with a log of them).
COUNTED_TABLES = {"events": "events.parquet", "items": "items.parquet", "users": "users.parquet", "impressions": "impressions.parquet"}


def _check_row_counts(path: Path, manifest: dict[str, Any]) -> None:
    """Each table's row count (its Parquet footer: no data read) against ``manifest["counts"]``: a table cut short, or
    edited or replaced since `prepare` wrote it, would otherwise lose or add rows silently."""
    import pyarrow.parquet as pq

    counts = manifest.get("counts") or {}
    for key, name in COUNTED_TABLES.items():
        expected = counts.get(key)
        if expected is None or not (path / name).is_file():
            continue  # manifests before a count was recorded; impressions only where the log had them
        if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
            raise ArtifactError(f"{path / MANIFEST}: counts.{key} is {expected!r}; expected the whole number of rows "
                                f"`interestgym prepare` wrote to {name} (the manifest was edited)")
        try:
            found = pq.ParquetFile(path / name).metadata.num_rows
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
            raise ArtifactError(f"{path / name}: cannot be read as Parquet: {' '.join(str(exc).split())}") from None
        if found != expected:
            raise ArtifactError(f"{path / name}: {found:,} rows; expected {expected:,} ({MANIFEST} counts.{key}): the file was "
                                "changed after `interestgym prepare` wrote it (prepare the dataset again)")


def _check_users(path: Path, users: pd.DataFrame, manifest: dict[str, Any]) -> str:
    """``users.parquet`` holds each user once with a split of :data:`SPLITS`, and is the table `prepare` wrote (the
    manifest's ``split.users_sha256``, when recorded): a user of another split, or none, or renamed (their events then
    belong to nobody) would be left out of every stage without a word, or evaluated as another split's.

    :return: the table's :func:`split_sha256`.
    """
    for column in ("user_id", "split"):
        if column not in users.columns:
            raise ArtifactError(f"{path}: no {column!r} column (columns: {', '.join(map(str, users.columns))}); expected the "
                                "users table `interestgym prepare` writes")
    bad = ~users["split"].isin(SPLITS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ArtifactError(f"{path}: row {row}: user {users['user_id'].iloc[row]!r} has split {users['split'].iloc[row]!r}; "
                            f"expected one of {', '.join(SPLITS)} ({_rows(int(bad.sum()), 'such row')})")
    repeated = users["user_id"].astype(str).duplicated()
    if repeated.any():
        row = int(np.flatnonzero(repeated.to_numpy())[0])
        raise ArtifactError(f"{path}: row {row}: user {users['user_id'].iloc[row]!r} appears again; expected each user once "
                            f"({_rows(int(repeated.sum()), 'repeated row')})")
    digest = split_sha256(users)
    recorded = (manifest.get("split") or {}).get("users_sha256")  # datasets prepared before session 22 did not record it
    if recorded is not None and recorded != digest:
        raise ArtifactError(f"{path}: its users and their splits are not those `interestgym prepare` wrote ({MANIFEST} "
                            "split.users_sha256): a user renamed, added or moved to another split by hand (prepare the "
                            "dataset again to change the split)")
    return digest


def _rows(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


def matrix_sha256(matrix: np.ndarray) -> str:
    """sha256 of an embedding matrix's float32 values in row order (what ``encode`` records as ``matrix_sha256``)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(matrix, dtype=np.float32).data).hexdigest()
