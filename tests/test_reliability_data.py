"""Issue 11, data side: bad input and kills during `prepare` give one clear line or a whole dataset.

1. event times are detected per value (a log mixing ISO-8601 and unix times reads whole);
2. common column names (``timestamp``, ``userId``, ``movieId``, ``behavior_type`` ...) are taken, and a
   log with no time column is one error naming the file, the columns found and the names expected;
3. / 4. a hand-edited manifest (wrong types, a negative weight) is refused when the dataset is opened;
8. a truncated or corrupt ``.csv.gz`` is one line naming the file, the cause and the line reached;
9. a control character (NUL ...) in a user or item id rejects the row;
10. ``prepare`` swaps a complete new dataset in: a failed or killed run leaves the old one, and its
    leftovers never block a rerun (with a SIGKILL loop over ``prepare synthetic --overwrite``).
"""

from __future__ import annotations

import calendar
import gzip
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cli_fixtures import run

from interestgym.data.dataset import Dataset
from interestgym.data.events import EventsOptions, prepare_events, read_events
from interestgym.data.swap import leftovers
from interestgym.data.validate import RejectLog
from interestgym.errors import ArtifactError, DataError, InterestGymError

T0 = 1709280800  # 2024-03-01T08:13:20Z




def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _rejects(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ------------------------------------------------------------------------------- 1. times per value
def test_times_are_detected_per_value_not_from_the_first_row(tmp_path: Path) -> None:
    log = _write(tmp_path / "mixed.csv", "\n".join([
        "user_id,item_id,action,ts,text",
        "u1,i1,click,2024-03-01T08:13:20Z,one",   # 2 ISO-8601 first: today this fixed the format for the file
        f"u1,i2,click,{T0 + 60},two",              # 3 unix seconds: was "bad time: ...; expected an ISO-8601 time"
        f"u2,i1,view,{T0 + 120}.5,one",            # 4 unix seconds with decimals
        "u2,i2,click,2024-03-01 08:16:20+00:00,two",  # 5 ISO-8601 again
        "u3,i1,click,yesterday,one",               # 6 truly bad: still rejected
    ]) + "\n")
    out = tmp_path / "out"
    manifest = prepare_events(log, out, options=EventsOptions(), max_reject_rate=1.0, deterministic=True)
    events = pd.read_parquet(out / "events.parquet")
    assert sorted(events["ts"]) == [T0, T0 + 60, T0 + 120, T0 + 180]
    assert [(Path(r["file"]).name, r["line"], r["reason"]) for r in _rejects(out)] == [
        ("mixed.csv", 6, "bad time: 'yesterday'; expected unix seconds or an ISO-8601 time such as 2019-11-12T14:14:46Z")]
    assert manifest["reader"]["times_read_as"] == {"iso": 2, "unix": 2}
    assert f"{log}: times auto-detected per value: iso 2 rows, unix 2 rows (rows whose time was read, rows rejected later for " \
        "another reason included)" in manifest["validation"]["notes"]

    # JSONL: numbers and strings mixed; an explicit --time-format still means that format only.
    jsonl = _write(tmp_path / "mixed.jsonl", "\n".join(json.dumps(r) for r in [
        {"user_id": "u1", "item_id": "i1", "action": "click", "ts": T0, "text": "a"},
        {"user_id": "u1", "item_id": "i2", "action": "click", "ts": "2024-03-01T08:14:20Z", "text": "b"},
    ]) + "\n")
    data = read_events(jsonl, RejectLog())
    assert sorted(data.events["ts"]) == [T0, T0 + 60]
    strict = RejectLog()
    assert list(read_events(jsonl, strict, EventsOptions(time_format="iso")).events["ts"]) == [T0 + 60]
    assert [r["reason"] for r in strict.rejects] == [f"bad time: {T0}; expected an ISO-8601 time such as 2019-11-12T14:14:46Z"]


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_times_with_a_fraction_of_a_second_are_floored_and_counted(tmp_path: Path, reader: str) -> None:
    """The dataset's unit is the second: a time with a fraction is read to the second below, and counted in a note."""
    seconds = _write(tmp_path / "s.csv", "user_id,item_id,action,ts,text\n" + "".join(
        f"u1,i{k},click,{t},x\n" for k, t in enumerate([T0, f"{T0 + 1}.5", f"{T0 + 2}.0", "2024-03-01T08:13:20.25Z", T0 + 9])))
    millis = _write(tmp_path / "ms.csv", "user_id,item_id,action,ts,text\n" + "".join(
        f"u1,i{k},click,{t},x\n" for k, t in enumerate([T0 * 1000, T0 * 1000 + 250, T0 * 1000 + 2000, f"{T0 * 1000 + 3000}.5"])))
    for path, expected_ts, floored in ((seconds, [T0, T0 + 1, T0 + 2, T0 + 9, calendar.timegm((2024, 3, 1, 8, 13, 20))], 2),
                                       (millis, [T0, T0, T0 + 2, T0 + 3], 2)):
        log = RejectLog()
        read = read_events(path, log, EventsOptions(reader=reader))
        assert sorted(read.events["ts"]) == sorted(expected_ts) and not log.rejects
        assert [n for n in log.notes if "fraction of a second" in n] == [(
            f"{path}: {floored} times read had a fraction of a second (on kept rows and on rows rejected later for another "
            "reason): the dataset keeps the whole second below (the dataset's unit; events within one second keep their "
            "order in the file)")]


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_a_value_past_float32_is_rejected_as_the_runtime_refuses_it(tmp_path: Path, reader: str) -> None:
    """The feedback value enters the float32 observation: prepare rejects what the runtime's Event refuses."""
    from interestgym.runtime import Event

    log = _write(tmp_path / "v.csv", f"user_id,item_id,action,ts,value,text\nu1,i1,click,{T0},3e38,x\nu1,i2,click,{T0 + 1},1e39,y\n")
    rejects = RejectLog()
    read = read_events(log, rejects, EventsOptions(reader=reader))
    assert list(read.events["value"]) == [np.float32(3e38)]  # the dataset stores float32
    assert [r["reason"] for r in rejects.rejects] == ["bad value: '1e39'; expected a number within float32's range (|value| <= 3.403e+38)"]
    Event(ts=T0, action="click", value=3e38)
    with pytest.raises(InterestGymError, match=r"Event.value=1e\+39: expected a finite number"):
        Event(ts=T0, action="click", value=1e39)


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_a_date_in_another_layout_says_how_to_read_it(tmp_path: Path, reader: str) -> None:
    """Auto mode reads numbers and ISO-8601; a day-first date is rejected with the --time-format that reads it,
    and that option does read it (both readers word it alike)."""
    log = _write(tmp_path / "dayfirst.csv", f"user_id,item_id,action,ts\nu1,i1,click,{T0}\nu1,i2,click,25/11/2017 08:00\n")
    log_ = RejectLog()
    read_events(log, log_, EventsOptions(item_text="item {item_id}", reader=reader))
    assert [r["reason"] for r in log_.rejects] == [(
        "bad time: '25/11/2017 08:00'; expected unix seconds (auto reads numbers as unix time and text as ISO-8601; "
        "a time in another layout needs --time-format PATTERN, e.g. '%d/%m/%Y %H:%M')")]
    dayfirst = _write(tmp_path / "only.csv", "user_id,item_id,action,ts\nu1,i2,click,25/11/2017 08:00\n")
    read = read_events(dayfirst, RejectLog(), EventsOptions(item_text="item {item_id}", time_format="%d/%m/%Y %H:%M", reader=reader))
    assert list(read.events["ts"]) == [calendar.timegm((2017, 11, 25, 8, 0, 0))]


# ------------------------------------------------------------------------- 2. common column names
def test_common_column_names_are_taken_and_noted(tmp_path: Path) -> None:
    csv_log = _write(tmp_path / "plain.csv", f"user_id,item_id,action,timestamp\nu1,i1,click,{T0}\nu2,i1,view,{T0 + 5}\n")
    out = tmp_path / "out"
    manifest = prepare_events(csv_log, out, options=EventsOptions(item_text="item {item_id}"), deterministic=True)
    assert list(pd.read_parquet(out / "events.parquet")["ts"]) == [T0, T0 + 5]
    assert manifest["reader"]["common_names"] == {"events": {"timestamp": "ts"}}
    assert any("column 'timestamp' as ts" in n for n in manifest["validation"]["notes"])

    # JSONL with MovieLens / Taobao-style names; the action column is looked for only without --default-action.
    jsonl = _write(tmp_path / "log.jsonl", "\n".join(json.dumps(r) for r in [
        {"userId": 1, "movieId": 10, "behavior_type": "pv", "time": "2024-03-01T08:13:20Z", "text": "m10"},
        {"userId": 2, "movieId": 11, "behavior_type": "buy", "time": T0 + 1, "text": "m11"},
    ]) + "\n")
    data = read_events(jsonl, RejectLog(), EventsOptions(actions={"pv": "view", "buy": "purchase"}))
    ev = data.events
    assert list(ev["user_id"]) == ["1", "2"] and list(ev["item_id"]) == ["10", "11"]
    assert list(ev["action"]) == ["view", "purchase"] and list(ev["ts"]) == [T0, T0 + 1]
    kept = read_events(jsonl, RejectLog(), EventsOptions(default_action="click"))
    assert set(kept.events["action"]) == {"click"} and "behavior_type" in kept.events.columns  # a context column

    # An items file may call its id column itemId.
    items = _write(tmp_path / "items.csv", "itemId,text\n10,ten\n11,eleven\n")
    with_items = read_events(jsonl, RejectLog(), EventsOptions(default_action="click", items=items))
    assert list(with_items.items["item_id"]) == ["10", "11"]


def test_a_category_column_under_a_common_name_is_the_category(tmp_path: Path) -> None:
    """``categoryId`` / ``cat_id`` ... is the category (an export's usual name for it), in the events and in an items
    file, said in the notes; two such columns (an id and a name) are neither: both stay context columns."""
    log = _write(tmp_path / "log.csv", f"userId,itemId,categoryId,event,timestamp\n1,10,c7,click,{T0}\n2,11,c8,click,{T0 + 1}\n")
    rejects = RejectLog()
    data = read_events(log, rejects, EventsOptions(item_text="item {item_id}"))
    assert list(data.items["category"]) == ["c7", "c8"] and "categoryId" not in data.events.columns
    assert any("'categoryId' as category" in n for n in rejects.notes), rejects.notes
    items = _write(tmp_path / "items.csv", "item_id,text,cat_id\n10,ten,A\n11,eleven,B\n")
    plain = _write(tmp_path / "plain.csv", f"user_id,item_id,action,ts\n1,10,click,{T0}\n2,11,click,{T0 + 1}\n")
    assert list(read_events(plain, RejectLog(), EventsOptions(items=items)).items["category"]) == ["A", "B"]
    both = _write(tmp_path / "both.csv", f"user_id,item_id,category_id,category_name,action,ts\n1,10,7,shoes,click,{T0}\n")
    data = read_events(both, RejectLog(), EventsOptions(item_text="item {item_id}"))
    assert list(data.items["category"]) == [""] and {"category_id", "category_name"} <= set(data.events.columns)


@pytest.mark.parametrize(("name", "text", "message"), [
    ("two.csv", "user_id,item_id,action,date,time\nu1,i1,click,2024-03-01,08:00\n",
     r"two.csv: columns 'date' and 'time' could both be the ts column; expected one \(choose with --map ts=date\)"),
    ("two.jsonl", json.dumps({"user": "u", "userId": "v", "item_id": "i", "action": "click", "ts": T0}) + "\n",
     r"two.jsonl line 1: columns 'user' and 'userId' could both be the user_id column"),
])
def test_two_candidate_columns_are_an_error_naming_both(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_events(_write(tmp_path / name, text), RejectLog(), EventsOptions(item_text="x {item_id}"))


def test_no_time_column_is_one_error_naming_file_columns_and_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_log = _write(tmp_path / "nots.csv", "user_id,item_id,action,when\nu1,i1,click,1709280800\n")
    code, _, err = run(["prepare", "events", str(csv_log), "--out", str(tmp_path / "a"), "--item-text", "x {item_id}"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {csv_log}: no ts column (columns: user_id, item_id, action, when);")
    assert "expected a column named ts or one of timestamp, time, datetime, date, event_time" in err

    # JSONL: today every row was rejected as "bad time: missing"; now one error after reading.
    rows = [{"user_id": f"u{i}", "item_id": "i1", "action": "click", "when": T0 + i} for i in range(50)]
    jsonl = _write(tmp_path / "nots.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = run(["prepare", "events", str(jsonl), "--out", str(tmp_path / "b"), "--item-text", "x {item_id}"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {jsonl}: no ts field in any row (fields found: action, item_id, user_id, when); "
                          "expected ts or one of timestamp, time,")
    assert "bad time" not in err


# ------------------------------------------------------------------------ 3, 4. hand-edited manifest
@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("small")
    log = _write(d / "log.csv", "user_id,item_id,action,ts,text,value\n" + "".join(
        f"u{u},i{i},{'rate' if i % 2 else 'click'},{T0 + 10 * u + i},item {i},{4 if i % 2 else ''}\n" for u in range(6) for i in range(4)))
    prepare_events(log, d / "ds", deterministic=True)
    return d / "ds"


def _edited(src: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], Any] | str) -> Path:
    ds = tmp_path / "ds"
    shutil.copytree(src, ds)
    if isinstance(edit, str):
        text = edit
    else:
        manifest = json.loads((ds / "manifest.json").read_text())
        text = json.dumps(edit(manifest))
    (ds / "manifest.json").write_text(text)
    return ds


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(manifest: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value
        return manifest
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (_set("action_weights.click", "heavy"), r'field action_weights.click is "heavy"; expected a finite number >= 0'),
    (_set("action_weights.click", -1.0), r"field action_weights.click is -1.0; expected a finite number >= 0"),
    (_set("action_weights.purchase", True), r"field action_weights.purchase is true \(a boolean\); expected a finite number >= 0"),
    (_set("action_weights.click", float("inf")), r"field action_weights.click is Infinity; expected a finite number >= 0"),
    (_set("action_weights.clik", 1.0), r"field action_weights has the action 'clik'; expected one of impression, click"),
    (_set("action_weights", ["click"]), r'field action_weights is \["click"\] \(a list\); expected an object of action -> weight'),
    (_set("action_weights", {a: 0.0 for a in ("impression", "click", "view", "like", "share", "comment", "search",
                                               "add_to_cart", "purchase", "rate")}),
     r"field action_weights gives every action weight 0; expected at least one weight > 0"),
    (_set("positive_rating", "x"), r'field positive_rating is "x"; expected a finite number'),
    (_set("counts", []), r"field counts is \[\] \(a list\); expected a JSON object"),
    (lambda m: [m], r"the manifest is \[\{.*\(a list\); expected a JSON object"),
    ("[1, 2]", r"the manifest is \[1, 2\] \(a list\); expected a JSON object"),
])
def test_hand_edited_manifest_is_one_clear_error_when_opened(small_dataset: Path, tmp_path: Path, edit: Any, message: str) -> None:
    ds = _edited(small_dataset, tmp_path, edit)
    with pytest.raises(ArtifactError, match=message) as info:
        Dataset.open(ds)
    assert str(info.value).startswith(f"{ds / 'manifest.json'}: ") and "\n" not in str(info.value)


def test_valid_manifest_edits_are_read_as_numbers(small_dataset: Path, tmp_path: Path) -> None:
    ds = Dataset.open(_edited(small_dataset, tmp_path, lambda m: _set("positive_rating", 3)(_set("action_weights.click", 2)(m))))
    assert ds.action_weights["click"] == 2.0 and isinstance(ds.action_weights["click"], float)
    assert ds.action_weights["purchase"] == 3.0 and ds.positive_rating == 3.0


# ------------------------------------------------------------------------------- 8. damaged .csv.gz
def _gz_log(path: Path, rows: int = 20000) -> bytes:
    text = "user_id,item_id,action,ts,text\n" + "".join(f"u{i % 40},i{i % 70},click,{T0 + i},item {i % 70}\n" for i in range(rows))
    return gzip.compress(text.encode(), mtime=0)


@pytest.mark.parametrize(("damage", "cause"), [
    (lambda z: z[: len(z) // 2], "truncated gzip file: the compressed data ends before its end marker"),
    (lambda z: z[:-8] + bytes(b ^ 0xFF for b in z[-8:-4]) + z[-4:], "corrupt gzip file: CRC check failed"),
])
def test_damaged_gzip_is_one_line_naming_file_cause_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             damage: Callable[[bytes], bytes], cause: str) -> None:
    gz = tmp_path / "log.csv.gz"
    gz.write_bytes(damage(_gz_log(gz)))
    code, _, err = run(["prepare", "events", str(gz), "--out", str(tmp_path / "out")], capsys)
    assert code == 2, err  # was: "aborted", exit 130
    assert err.count("\n") == 1 and err.startswith(f"error: {gz}: {cause}")
    assert "(reading stopped after line " in err and "expected a complete, undamaged gzip file" in err
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path / "out")


# ---------------------------------------------------------------------- 9. control characters in ids
def test_control_characters_in_ids_reject_the_row(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_bytes(
        b"user_id,item_id,action,ts,text\n"
        + f"u1,i1,click,{T0},one\n".encode()
        + f"u\x001,i1,click,{T0 + 1},one\n".encode()          # 3: NUL in the user id
        + f"u2,i\x1b[0m,click,{T0 + 2},one\n".encode()        # 4: an escape code in the item id
        + f"u2,i2,click,{T0 + 3},two\tand\x7f\n".encode()     # 5: control characters in text are not ids: kept
    )
    out = tmp_path / "out"
    manifest = prepare_events(log, out, max_reject_rate=1.0, deterministic=True)
    events = pd.read_parquet(out / "events.parquet")
    assert sorted(events["user_id"]) == ["u1", "u2"] and manifest["counts"]["users"] == 2
    assert [(r["line"], r["reason"]) for r in _rejects(out)] == [
        (3, "bad user_id: 'u\\x001' holds the control character U+0000 at position 2; expected printable text"),
        (4, "bad item_id: 'i\\x1b[0m' holds the control character U+001B at position 2; expected printable text"),
    ]
    assert manifest["validation"]["files"][str(log)]["reject_reasons"] == {"bad item_id": 1, "bad user_id": 1}

    jsonl = _write(tmp_path / "log.jsonl", json.dumps({"user_id": "a\u0000", "item_id": "i", "action": "click", "ts": T0, "text": "t"})
                   + "\n" + json.dumps({"user_id": "b", "item_id": "i", "action": "click", "ts": T0, "text": "t"}) + "\n")
    rejects = RejectLog()
    data = read_events(jsonl, rejects)
    assert list(data.events["user_id"]) == ["b"] and rejects.rejects[0]["reason"].startswith("bad user_id: 'a\\x00'")


# ------------------------------------------------------------------- 10. atomic dataset replacement
def _events_csv(path: Path, users: int = 5, bad: int = 0) -> Path:
    rows = [f"u{u},i{u % 3},click,{T0 + u},item {u % 3}" for u in range(users)] + [f"u{b},i1,click,never,x" for b in range(bad)]
    return _write(path, "user_id,item_id,action,ts,text\n" + "\n".join(rows) + "\n")


def _tables(ds: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ds.glob("*.parquet"))}


def test_failed_overwrite_keeps_the_old_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert run(["prepare", "events", str(_events_csv(tmp_path / "good.csv")), "--out", str(out)], capsys)[0] == 0
    before = _tables(out)
    (out / "embeddings").mkdir()
    (out / "embeddings" / "hashing.json").write_text("{}")
    # Too many bad rows: today --overwrite had already deleted the old dataset's files by then.
    code, _, err = run(["prepare", "events", str(_events_csv(tmp_path / "bad.csv", bad=5)), "--out", str(out), "--overwrite"], capsys)
    assert code == 2 and "rows rejected" in err
    assert _tables(out) == before and (out / "manifest.json").is_file() and (out / "embeddings" / "hashing.json").is_file()
    assert Dataset.open(out).manifest["counts"]["events"] == 5 and not leftovers(out)


def _dataset_like(folder: Path, src: Path) -> Path:
    shutil.copytree(src, folder)
    return folder


def test_leftovers_of_a_killed_prepare_do_not_block_a_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = str(_events_csv(tmp_path / "log.csv"))
    ref = tmp_path / "ref"
    assert run(["prepare", "events", log, "--out", str(ref)], capsys)[0] == 0
    out = tmp_path / "ds"
    dead = _dead_pid()

    # Killed while writing the new dataset beside OUT: OUT is whole, the half-written folder goes.
    _dataset_like(out, ref)
    (tmp_path / f"ds.tmp-{dead}").mkdir()
    (tmp_path / f"ds.tmp-{dead}" / "items.parquet").write_bytes(b"half")
    code, _, err = run(["prepare", "events", log, "--out", str(out), "--overwrite"], capsys)
    assert code == 0, err
    assert f"removed ds.tmp-{dead}, left by an interrupted prepare" in err and not leftovers(out)

    # Killed between the two renames of the swap: OUT is missing, the old dataset is beside it.
    out.rename(tmp_path / f"ds.old-{dead}")
    _dataset_like(tmp_path / f"ds.tmp-{dead}", ref)
    with pytest.raises(ArtifactError, match=rf"no such dataset directory .*the previous dataset is in .*ds.old-{dead}"):
        Dataset.open(out)
    code, _, err = run(["prepare", "events", log, "--out", str(out)], capsys)  # no --overwrite: the old one is back, and kept
    assert code == 2 and f"restored {out} from ds.old-{dead}" in err and "holds a dataset; choose another folder" in err
    assert _tables(out) == _tables(ref) and not leftovers(out)

    # Killed while removing the old dataset: the new one is in place, the rest of the old one goes.
    _dataset_like(tmp_path / f"ds.del-{dead}", ref)
    (tmp_path / f"ds.del-{dead}" / "manifest.json").unlink()
    assert run(["prepare", "events", log, "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert not leftovers(out)

    # A folder left by a prepare that wrote in place (tables, no manifest) is taken by --overwrite.
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "events.parquet").write_bytes(b"half")
    (partial / ".items.parquet.abc123.tmp").write_bytes(b"half")
    (partial / "cache").mkdir()
    (partial / "cache" / "keep.txt").write_text("kept")
    code, _, err = run(["prepare", "events", log, "--out", str(partial)], capsys)
    assert code == 2 and "holds an incomplete dataset (no manifest.json); choose another folder or pass --overwrite" in err
    assert run(["prepare", "events", log, "--out", str(partial), "--overwrite"], capsys)[0] == 0
    assert _tables(partial) == _tables(ref) and (partial / "cache" / "keep.txt").read_text() == "kept"
    assert not (partial / ".items.parquet.abc123.tmp").exists()


def test_the_users_own_parquet_files_are_never_taken_for_dataset_tables(tmp_path, capsys):
    """A review's find: a folder holding the user's own Parquet log and no manifest was called "an incomplete dataset"
    with the advice to pass --overwrite, which then removed the log (the input itself). Only the names prepare writes
    are a dataset's; any other .parquet / .npy is refused as the user's, and beside a real dataset it is carried over."""
    mydata = tmp_path / "mydata"
    mydata.mkdir()
    log = mydata / "clicks.parquet"
    pd.DataFrame({"user_id": ["1", "2", "1", "2"], "item_id": ["a", "b", "b", "a"], "ts": [1511544070, 1511544071, 1511544072, 1511544073],
                  "action": ["click"] * 4, "text": ["x", "y", "y", "x"]}).to_parquet(log)
    np.save(mydata / "mine.npy", np.arange(3))
    before = log.read_bytes()
    for extra in ([], ["--overwrite"]):
        code, _, err = run(["prepare", "events", str(log), "--out", str(mydata), *extra], capsys)
        assert code == 2 and "is not empty" in err and "--overwrite" not in err.split(";")[-1], err
        assert log.read_bytes() == before and (mydata / "mine.npy").is_file()
    # a real dataset with the user's files beside its tables: --overwrite keeps them
    out = tmp_path / "ds"
    assert run(["prepare", "events", str(log), "--out", str(out)], capsys)[0] == 0
    shutil.copy(log, out / "raw.parquet")
    np.save(out / "mine.npy", np.arange(3))
    assert run(["prepare", "events", str(out / "raw.parquet"), "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert (out / "raw.parquet").read_bytes() == before and np.load(out / "mine.npy").tolist() == [0, 1, 2]
    assert Dataset.open(out).events["item_id"].tolist()


#: Runs the CLI with a SIGKILL-like death (os._exit: no cleanup, no finally) at one step of the swap:
#: 1, 2, 3 = at the 1st / 2nd / 3rd rename (OUT -> old, new -> OUT, old -> del); 4 = half-way
#: through removing the old dataset.
_DIE_AT_STEP = """
import os, shutil, sys
import interestgym.data.swap as swap
step, renames, real_rename, real_rmtree = int(sys.argv[1]), [0], os.rename, shutil.rmtree
def rename(src, dst):
    renames[0] += 1
    if renames[0] == step:
        os._exit(9)
    real_rename(src, dst)
def rmtree(path, *args, **kwargs):
    if step == 4 and ".del-" in str(path):
        os.remove(os.path.join(path, "events.parquet"))
        os._exit(9)
    real_rmtree(path, *args, **kwargs)
swap.os.rename, swap.shutil.rmtree = rename, rmtree
from interestgym.cli import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize("step", [1, 2, 3, 4])
def test_a_kill_at_each_step_of_the_swap_leaves_a_whole_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str], step: int) -> None:
    log = str(_events_csv(tmp_path / "log.csv"))
    out = tmp_path / "ds"
    argv = ["prepare", "events", log, "--out", str(out), "--overwrite"]
    assert run(argv, capsys)[0] == 0
    (out / "cache").mkdir()
    (out / "cache" / "keep.txt").write_text("kept")
    expected = _tables(out)
    died = subprocess.run([sys.executable, "-c", _DIE_AT_STEP, str(step), *argv], check=False, capture_output=True, text=True)
    assert died.returncode == 9, died.stderr
    whole = out if out.exists() else next(p for kind, _, p in leftovers(out) if kind == "old")
    assert _tables(whole) == expected and (whole / "manifest.json").is_file() and (whole / "cache" / "keep.txt").is_file()
    assert leftovers(out)  # the killed run left something: the rerun must take it
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert _tables(out) == expected and (out / "cache" / "keep.txt").read_text() == "kept" and not leftovers(out)


def _prepare_synthetic(out: Path) -> list[str]:
    # Through a fresh interpreter, as a user runs it; -c keeps it independent of __main__ modules.
    return [sys.executable, "-c", "from interestgym.cli import main; main()", "prepare", "synthetic", "--out", str(out),
            "--users", "12", "--seed", "3", "--overwrite"]


def _fingerprint(ds: Path) -> dict[str, Any]:
    """What must be byte-identical between two runs: the tables, truth, and the manifest minus its time."""
    manifest = json.loads((ds / "manifest.json").read_text(encoding="utf-8"))
    manifest.pop("created", None)
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ds.iterdir()) if p.suffix in (".parquet", ".npy")}
    return {"files": files, "manifest": manifest}


def test_kill_9_during_prepare_overwrite_never_destroys_the_dataset(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out = tmp_path / "ds"
    subprocess.run(_prepare_synthetic(out), check=True, capture_output=True, env=env)
    expected = _fingerprint(out)  # an uninterrupted run (the manifest records --out: same folder throughout)
    # What `encode` leaves in a dataset folder: it must survive every kill and every rerun.
    (out / "embeddings").mkdir()
    (out / "embeddings" / "hashing.json").write_text('{"marker": 1}')
    started = time.monotonic()
    subprocess.run(_prepare_synthetic(out), check=True, capture_output=True, env=env)
    duration = time.monotonic() - started  # a warm run, like the ones killed below
    assert _fingerprint(out) == expected and (out / "embeddings" / "hashing.json").is_file()

    def state() -> tuple[int, list[str]]:
        return (out.stat().st_mtime_ns if out.exists() else -1), sorted(os.listdir(tmp_path))

    rng = random.Random(11)
    for kill in range(6):
        before = state()
        proc = subprocess.Popen(_prepare_synthetic(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if kill % 2 == 0:
            time.sleep(rng.uniform(0.05, 0.95) * duration)  # anywhere in the run
        else:
            # Aim at the writes: wait until the run first changes OUT or the folder around it (a new
            # folder beside OUT, a file of OUT removed), then let it go on for a few milliseconds.
            deadline = time.monotonic() + 2 * duration + 5
            while proc.poll() is None and time.monotonic() < deadline and state() == before:
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.04))
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        # The old dataset is whole, in OUT or (killed between the two renames of the swap) beside it.
        whole = out if out.exists() else next((p for kind, _, p in leftovers(out) if kind == "old"), out)
        assert (whole / "manifest.json").is_file(), f"kill {kill}: no dataset left: {sorted(os.listdir(tmp_path))}"
        assert _fingerprint(whole) == expected, f"kill {kill}: {whole} is not a whole dataset"
        assert json.loads((whole / "embeddings" / "hashing.json").read_text()) == {"marker": 1}

        rerun = subprocess.run(_prepare_synthetic(out), check=False, capture_output=True, text=True, env=env)
        assert rerun.returncode == 0, f"kill {kill}: rerun failed: {rerun.stderr}"
        assert _fingerprint(out) == expected, f"kill {kill}: the rerun differs from an uninterrupted run"
        assert (out / "embeddings" / "hashing.json").is_file() and not leftovers(out)
