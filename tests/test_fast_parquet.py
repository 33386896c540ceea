"""The columnar Parquet reader gives exactly what the line reader gives (events, items, rejects with their JSON text,
counts, notes, dataset bytes), and leaves to the line reader the files whose typed cells it would read otherwise."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_prepare_events import SHARED, TAOBAO_ACTIONS
from test_scale_prepare import assert_same_dataset, assert_same_read

from interestgym.data import fast_parquet, tables
from interestgym.data.events import EventsOptions, read_events
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

OPTS = EventsOptions(actions=TAOBAO_ACTIONS, item_text="category {category}")


@pytest.fixture
def columnar_only(monkeypatch: pytest.MonkeyPatch):
    """Fail the test if the line reader reads a Parquet file (the columnar reader must take it whole)."""
    def refuse(*args: Any, **kwargs: Any):
        raise AssertionError("the Parquet line reader was used")
        yield  # pragma: no cover

    def use(columnar: bool) -> None:
        if columnar:
            monkeypatch.setattr(tables, "_parquet_rows", refuse)
        else:
            monkeypatch.undo()
    return use


def same_read(path: Path, opts: EventsOptions, columnar_only) -> RejectLog:
    """Both readers on ``path`` (the columnar one without the line reader's help): equal output, rejects, notes."""
    real = read_events

    def reading(p: Any, log: RejectLog, o: EventsOptions) -> Any:
        columnar_only(o.reader == "columnar")
        try:
            return real(p, log, o)
        finally:
            columnar_only(False)
    import test_scale_prepare
    saved = test_scale_prepare.read_events
    offsets = []

    def reading_offsets(p: Any, log: RejectLog, o: EventsOptions) -> Any:
        out = reading(p, log, o)
        offsets.append(out.time_offsets)
        return out
    test_scale_prepare.read_events = reading_offsets
    try:
        log = assert_same_read(path, opts)
    finally:
        test_scale_prepare.read_events = saved
    if len(offsets) == 2:  # the UTC offsets the times carried (the manifest's, and a note's)
        assert offsets[0] == offsets[1]
    return log


def _cell(rng: random.Random, kind: str, n_ids: int) -> Any:
    """One cell of a column of the given kind: mostly good values, and every kind of bad one the checks know."""
    r = rng.random()
    if kind == "int_id":
        return None if r < 0.03 else rng.randint(1, n_ids)
    if kind == "str_id":
        if r < 0.9:
            return str(rng.randint(1, n_ids))
        return rng.choice([None, "", " 7 ", "7\x00", "8\x85", "\u3000 9", "a b", "é1", "\t3", "x\u2028y", "7"])
    if kind == "float_id":
        return None if r < 0.03 else (float("nan") if r < 0.06 else float(rng.randint(1, n_ids)))
    if kind == "int_ts":
        if r < 0.9:
            return 1511544070 + rng.randint(0, 10**6)
        return rng.choice([None, 1511544070000, 5, 0, -3, 4102444800, 4102444799, 2**62])
    if kind == "str_ts":
        if r < 0.8:
            return str(1511544070 + rng.randint(0, 10**6))
        return rng.choice([None, "", "2017-11-25T12:00:00", "2017-11-25T20:00:00+08:00", "1511544070.75", "1e9", "junk",
                           " 1511544071 ", "1511544070000", "25/11/2017 08:00", "nan", "inf"])
    if kind == "float_ts":
        return rng.choice([None, float("nan"), 1511544070.5, 1511544071.0, 1e9, 1511544070123.0, 1511544072.25])
    if kind in ("stamp_ms", "stamp_zoned"):
        per = 1000 if kind == "stamp_ms" else 10**6
        return None if r < 0.05 else (1511544070 + rng.randint(0, 10**6)) * per + rng.choice([0, 0, 0, 1, per // 2])
    if kind == "action":
        return rng.choice(["pv"] * 6 + ["buy", "cart", "fav", None, "", " pv ", "clik", "view", "rate", "PV"])
    if kind == "int_value":
        return rng.choice([None, 1, 2, 0, -1, 5])
    if kind == "float_value":
        return rng.choice([None, float("nan"), 1.0, 0.5, -0.0, 0.1, 3.25, -2.0, 1e30])
    if kind == "str_value":
        return rng.choice([None, "", "1", " 2.5 ", "x", "nan", "inf", "1e39", "-1", "3"])
    if kind == "int_cat":
        return None if r < 0.05 else rng.randint(1, 4)
    if kind == "str_cat":
        return rng.choice(["c1", "c2", "c3", "", None, " c1", "c\x01", "家"])
    if kind == "bool":
        return rng.choice([True, False, None])
    if kind == "float":
        return rng.choice([None, float("nan"), 0.5, 2.0, -0.0, 0.0, 1e20, 2.0**53, 0.1])
    raise AssertionError(kind)


_TYPES = {"int_id": pa.int64(), "str_id": pa.string(), "float_id": pa.float64(), "int_ts": pa.int64(), "str_ts": pa.large_string(),
          "float_ts": pa.float64(), "stamp_ms": pa.timestamp("ms"),
          "stamp_zoned": pa.timestamp("us", tz="Asia/Shanghai"), "action": pa.string(), "int_value": pa.int32(), "float_value": pa.float32(),
          "str_value": pa.string(), "int_cat": pa.uint16(), "str_cat": pa.dictionary(pa.int8(), pa.string()), "bool": pa.bool_(),
          "float": pa.float64()}


def _fuzz_table(rng: random.Random, n: int, kinds: dict[str, str]) -> pa.Table:
    n_ids = max(3, n // 10)
    columns = {name: [_cell(rng, kind, n_ids) for _ in range(n)] for name, kind in kinds.items()}
    rows = list(zip(*columns.values()))
    for _ in range(n // 10):  # duplicates: a copy of an earlier row somewhere later
        i = rng.randrange(n)
        j = rng.randrange(i, n)
        rows[j] = rows[i]
    cols = list(zip(*rows)) if rows else [[] for _ in kinds]
    arrays = []
    for (name, kind), values in zip(kinds.items(), cols):
        t = _TYPES[kind]
        if pa.types.is_dictionary(t):
            arrays.append(pa.array(list(values), pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(list(values), t))
    return pa.table(dict(zip(kinds, arrays)))


LAYOUTS = [
    {"user_id": "int_id", "item_id": "int_id", "category": "int_cat", "action": "action", "ts": "int_ts"},
    {"user_id": "str_id", "item_id": "str_id", "category": "str_cat", "action": "action", "ts": "str_ts", "value": "str_value"},
    {"user_id": "float_id", "item_id": "int_id", "category": "str_cat", "action": "action", "ts": "float_ts",
     "value": "float_value", "device": "bool", "score": "float"},
    {"uid": "int_id", "sku": "str_id", "category": "int_cat", "behavior": "action", "time": "int_ts", "value": "int_value"},
    {"user_id": "str_id", "item_id": "int_id", "category": "str_cat", "action": "action", "ts": "stamp_ms"},
    {"user_id": "int_id", "item_id": "str_id", "category": "int_cat", "action": "action", "ts": "stamp_zoned", "value": "float_value"},
]


@pytest.mark.parametrize("seed", range(18))
def test_random_parquet_logs_read_identically(tmp_path: Path, seed: int, columnar_only) -> None:
    rng = random.Random(seed)
    layout = LAYOUTS[seed % len(LAYOUTS)]
    path = tmp_path / "log.parquet"
    pq.write_table(_fuzz_table(rng, 400, layout), path, row_group_size=150)
    opts = OPTS if "uid" not in layout else EventsOptions(**{**OPTS.__dict__, "rename": {"uid": "user_id", "sku": "item_id"}})
    if seed >= 12 and "ts" in layout:  # a template that reads the time too (a timestamp as str(datetime))
        opts = EventsOptions(**{**opts.__dict__, "item_text": "{category} / {action} @ {ts}"})
    same_read(path, opts, columnar_only)


@pytest.mark.parametrize("seed", range(4))
def test_every_row_sharing_a_hash_still_finds_exactly_the_duplicates(tmp_path: Path, seed: int, columnar_only,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # every row's hash is one of two values: the rows are told apart by their codes alone
    real = fast_parquet._mix
    monkeypatch.setattr(fast_parquet, "_mix", lambda h: real(h) & np.uint64(1 << 63))
    path = tmp_path / "log.parquet"
    pq.write_table(_fuzz_table(random.Random(50 + seed), 300, LAYOUTS[seed % len(LAYOUTS)]), path)
    opts = OPTS if seed % len(LAYOUTS) != 3 else EventsOptions(**{**OPTS.__dict__, "rename": {"uid": "user_id", "sku": "item_id"}})
    log = same_read(path, opts, columnar_only)
    assert log.files[str(path)].duplicate > 0


def _write(path: Path, columns: dict[str, pa.Array]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


GOOD = {"user_id": pa.array([1, 2, 2]), "item_id": pa.array(["a", "b", "a"]), "category": pa.array(["c1", "c2", "c1"]),
        "action": pa.array(["pv", "buy", "pv"]), "ts": pa.array([1511544070, 1511544071, 1511544072])}

# files whose typed cells read differently as text: the line reader reads them (its reasons name the typed value)
LEFT_TO_LINES = {
    "bool user_id": {**GOOD, "user_id": pa.array([True, False, True])},
    "float item_id with a fraction": {**GOOD, "item_id": pa.array([1.0, 2.5, 3.0])},
    "float item_id past 2^53": {**GOOD, "item_id": pa.array([1.0, 2.0**60, 3.0])},
    "infinite value": {**GOOD, "value": pa.array([1.0, float("inf"), 2.0])},
    "value past float32": {**GOOD, "value": pa.array([1.0, 1e39, 2.0])},
    "infinite time": {**GOOD, "ts": pa.array([1511544070.0, float("-inf"), 1511544072.0])},
    "timestamp before 1990": {**GOOD, "ts": pa.array([1511544070, 5, 1511544072], pa.timestamp("s"))},
    "zoned nanoseconds just below a second": {**GOOD, "ts": pa.array([1511544070_999_999_999, 1511544071 * 10**9, None],
                                                                   pa.timestamp("ns", tz="UTC"))},
    "date column": {**GOOD, "ts": pa.array([17495, 17496, 17497], pa.date32())},
    # pandas' Timestamp.timestamp() is a float rounded to the microsecond: its floor is the next second here
    "zoned nanoseconds a microsecond below a second": {**GOOD, "ts": pa.array([1500000000_999999_404, 1511544071 * 10**9, None],
                                                                          pa.timestamp("ns", tz="UTC"))},
    "bool category": {**GOOD, "category": pa.array([True, False, None])},
    "list column": {**GOOD, "tags": pa.array([["x"], [], None])},
    "binary column": {**GOOD, "blob": pa.array([b"x", b"y", None], pa.binary())},
}


@pytest.mark.parametrize("case", sorted(LEFT_TO_LINES))
def test_typed_cells_text_would_misread_are_left_to_the_line_reader(tmp_path: Path, case: str) -> None:
    path = _write(tmp_path / "log.parquet", LEFT_TO_LINES[case])
    assert_same_read(path, OPTS)  # the same result either way: the columnar reader hands the file over
    from interestgym.data.events import _ItemsFromEvents, _RowChecker
    from interestgym.data.tables import open_table
    from interestgym.data.times import TimeParser

    table = open_table(path, "events", None, None, None, {}, alias_fields=("user_id", "item_id", "ts", "action"))
    log = RejectLog()
    rows = _RowChecker(OPTS, TimeParser(), table.source.name, log, None, set(), _ItemsFromEvents(OPTS.item_text), None)
    assert fast_parquet.parquet_rows(table, log, rows) is False
    assert log.rejects == [] and rows.stats.read == 0  # handed over untouched


def test_a_number_as_time_in_an_iso_format_is_left_to_the_line_reader(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.parquet", GOOD)
    assert_same_read(path, EventsOptions(**{**OPTS.__dict__, "time_format": "iso"}))


SAME = {"user_id": pa.array([1, 1, 1]), "item_id": pa.array(["a", "a", "a"]), "category": pa.array(["c1"] * 3),
        "action": pa.array(["pv"] * 3), "ts": pa.array([1511544070] * 3)}

EDGE = {
    "no rows": {k: v.slice(0, 0) for k, v in GOOD.items()},
    "all duplicates": {k: pa.array([v[0].as_py()] * 4, v.type) for k, v in GOOD.items()},
    "null column": {**GOOD, "note": pa.nulls(3)},
    "nulls everywhere": {k: pa.array([None, v[1].as_py(), None], v.type) for k, v in GOOD.items()},
    "string views": {**GOOD, "item_id": pa.array(["a", "b", "a"]).cast(pa.string_view()),
                     "category": pa.array([" c1", None, "c2"]).cast(pa.string_view())},
    "dictionary ids": {**GOOD, "item_id": pa.array(["a", "b", "a"]).dictionary_encode(),
                       "action": pa.array(["pv", "buy", "pv"]).dictionary_encode()},
    "small ints and unsigned": {**GOOD, "user_id": pa.array([1, 2, 2], pa.int8()), "ts": pa.array([1511544070, 1511544071, 1511544072], pa.uint64())},
    "timestamps": {**GOOD, "ts": pa.array([1511544070, None, 1511544072], pa.timestamp("s"))},
    "timestamps in ms with fractions": {**GOOD, "ts": pa.array([1511544070123, 1511544071000, None], pa.timestamp("ms"))},
    "timestamps in us, zoned": {**GOOD, "ts": pa.array([1511544070_000_001, 1511544071_000_000, 1511544072_500_000],
                                                        pa.timestamp("us", tz="+08:00"))},
    "timestamps in ns, a named zone across a DST change": {
        **GOOD, "ts": pa.array([1509238800 * 10**9 - 2000, 1509238800 * 10**9, 1509238800 * 10**9 + 7],
                               pa.timestamp("ns", tz="Europe/Berlin"))},
    "milliseconds": {**GOOD, "ts": pa.array([1511544070123, 1511544071000, 1511544072999])},
    "float32 values": {**GOOD, "value": pa.array([0.1, -0.0, float("nan")], pa.float32())},
    # rows equal but in one cell: a duplicate only where JSON writes that cell the same
    "NaN versus null": {**SAME, "value": pa.array([float("nan"), None, float("nan")])},
    "zero and minus zero": {**SAME, "score": pa.array([0.0, -0.0, 0.0])},
    "infinities in a context column": {**GOOD, "score": pa.array([float("inf"), float("-inf"), 1.5])},
    "NaNs of other bits": {**SAME, "score": pa.array(np.array([0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001],
                                                              dtype=np.uint64).view(np.float64))},
    "null versus empty text": {**SAME, "device": pa.array(["", None, ""])},
    "null versus zero": {**SAME, "page": pa.array([0, None, 0])},
    "text cells with spaces and controls": {**GOOD, "user_id": pa.array([" 1", "2\u3000", "3\x00"]),
                                            "category": pa.array(["c 1", "\tc2", "c\u0085"])},
}


@pytest.mark.parametrize("case", sorted(EDGE))
def test_edge_parquet_files_read_identically(tmp_path: Path, case: str, columnar_only) -> None:
    path = _write(tmp_path / "log.parquet", EDGE[case])
    same_read(path, OPTS, columnar_only)


def test_items_file_context_selection_and_several_row_groups(tmp_path: Path, columnar_only) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,text,category\na,Red shoes,shoes\nb,Blue shirt,shirts\n7,Hat,hats\n", encoding="utf-8")
    rng = random.Random(3)
    n = 500
    log = pa.table({"user": pa.array([rng.randint(1, 20) for _ in range(n)]),
                    "item": pa.array([rng.choice(["a", "b", "7", "zz", " a"]) for _ in range(n)]),
                    "action": pa.array([rng.choice(["pv", "buy"]) for _ in range(n)]),
                    "ts": pa.array([rng.choice(["2019-11-12T14:14:46Z", "2019-11-12T14:14:46+02:00", "1573568086"]) for _ in range(n)]),
                    "device": pa.array([rng.choice(["mobile", "web", None]) for _ in range(n)]),
                    "page": pa.array([rng.randint(0, 3) for _ in range(n)])})
    path = tmp_path / "log.parquet"
    pq.write_table(log, path, row_group_size=64)
    for context in (None, ["device"]):
        opts = EventsOptions(actions=TAOBAO_ACTIONS, items=str(items), rename={"user": "user_id", "item": "item_id"},
                             context=context)
        same_read(path, opts, columnar_only)


def test_random_parquet_log_gives_the_same_dataset_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(_fuzz_table(random.Random(7), 600, LAYOUTS[0]), path)
    assert_same_dataset(path, OPTS, tmp_path)


@pytest.mark.skipif(not (SHARED / "taobao-userbehavior-sample" / "UserBehavior_sample.csv").is_file(),
                    reason="shared data ../shared/data/taobao-userbehavior-sample absent")
def test_real_taobao_sample_as_parquet_gives_the_same_dataset_bytes_as_its_csv(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv

    from interestgym.data.events import prepare_events

    src = SHARED / "taobao-userbehavior-sample" / "UserBehavior_sample.csv"
    names = ["user_id", "item_id", "category", "action", "ts"]
    path = tmp_path / "taobao.parquet"
    pq.write_table(pacsv.read_csv(src, read_options=pacsv.ReadOptions(column_names=names)), path)  # typed: ints
    assert_same_dataset(path, OPTS, tmp_path, tz_offset_hours=8)
    csv_out = tmp_path / "from-csv"
    prepare_events(src, csv_out, options=EventsOptions(**{**OPTS.__dict__, "columns": names}), command=["test"],
                   deterministic=True, max_reject_rate=1.0, tz_offset_hours=8)
    for name in ("events.parquet", "items.parquet", "users.parquet"):  # the same events, whichever file held them
        assert (csv_out / name).read_bytes() == (tmp_path / "ds-columnar" / name).read_bytes(), name


def test_a_text_column_that_is_not_utf8_is_an_error_naming_row_and_column(tmp_path: Path) -> None:
    # a writer that did not check its strings (Arrow validates on read only when asked): was a UnicodeDecodeError
    # traceback from the line reader, and bad bytes kept by the columnar one
    bad = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(np.array([0, 2, 4], np.int32)), pa.py_buffer(b"u\xffu2")])
    dictionary = pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int32()), bad)  # pandas' categorical, say
    for column, row in ((bad, 1), (dictionary, 2)):
        path = _write(tmp_path / "log.parquet", {**{k: v.slice(0, 2) for k, v in GOOD.items()}, "user_id": column})
        errors = []
        for reader in ("lines", "columnar"):
            with pytest.raises(DataError) as caught:
                read_events(path, RejectLog(), EventsOptions(**{**OPTS.__dict__, "reader": reader}))
            errors.append(str(caught.value))
        assert errors[0] == errors[1]
        assert f"row {row}, column 'user_id'" in errors[0] and "byte 0xff at position 2" in errors[0]


def test_the_line_readers_progress_says_why_a_file_is_read_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import interestgym.progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(interestgym.progress, "LOG_EVERY_SECONDS", 0.0)
    path = _write(tmp_path / "log.parquet", {**GOOD, "category": pa.array([True, None, None], pa.bool_())})
    read_events(path, RejectLog(), EventsOptions(**{**OPTS.__dict__, "item_text": "{item_id}"}))
    assert "log.parquet (row by row: column 'category' holds booleans): 3/3 rows (100%)" in capsys.readouterr().err
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text('{"user_id": 1.5, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n'
                     '{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n', encoding="utf-8")
    read_events(jsonl, RejectLog(), OPTS)
    assert "log.jsonl (row by row: key 'user_id' holds 1.5, read differently as a JSON value than as text): " in capsys.readouterr().err
    _write(path, GOOD)
    read_events(path, RejectLog(), OPTS)  # read column-wise: no row-by-row progress
    assert "row by row" not in capsys.readouterr().err
