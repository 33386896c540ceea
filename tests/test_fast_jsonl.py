"""The columnar JSON Lines reader gives exactly what the line reader gives (events with their context columns in the
same order, items, rejects, counts, notes, dataset bytes), and leaves to the line reader the files it would read
otherwise."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_prepare_events import TAOBAO_ACTIONS
from test_scale_prepare import assert_same_dataset, assert_same_read

from interestgym.data import fast_jsonl
from interestgym.data.events import EventsOptions, read_events
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

OPTS = EventsOptions(actions=TAOBAO_ACTIONS, item_text="category {category}")


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What the columnar reader answered for each file it was asked to read (True: it read the file itself)."""
    answers: list[bool] = []
    real = fast_jsonl.jsonl_rows

    def jsonl_rows(*args: Any) -> bool:
        answers.append(real(*args))
        return answers[-1]
    monkeypatch.setattr(fast_jsonl, "jsonl_rows", jsonl_rows)
    return answers


def _value(rng: random.Random, kind: str, n_ids: int) -> Any:
    r = rng.random()
    if kind == "id":
        if r < 0.85:
            return rng.randint(1, n_ids) if rng.random() < 0.5 else str(rng.randint(1, n_ids))
        return rng.choice([None, "", " 7 ", "7\u0000", "8\u0085", "\u30009", 3.0, "é1", 10**30])
    if kind == "ts":
        if r < 0.8:
            t = 1511544070 + rng.randint(0, 10**6)
            return t if rng.random() < 0.6 else str(t)
        return rng.choice([None, "", "2017-11-25T12:00:00", "2017-11-25T20:00:00+08:00", 1511544070.75, "1e9", 5,
                           1511544070000, "junk", " 1511544071 ", float("nan")])
    if kind == "action":
        return rng.choice(["pv"] * 6 + ["buy", "cart", None, "", " pv ", "clik", "rate", 7])
    if kind == "value":
        return rng.choice([1, 2.5, "3", " 4 ", None, "", -1, 0.1, "x", float("nan"), 1e30])
    if kind == "category":
        return rng.choice(["c1", "c2", 3, 4.0, "", None, " c1", "c\u0001"])
    if kind == "device":
        return rng.choice(["mobile", "web", None, 1, 2.5, ["a", 1], {"os": "ios", "v": 2}, " x "])
    raise AssertionError(kind)


def _object(rng: random.Random, n_ids: int) -> dict[str, Any]:
    obj = {"user_id": _value(rng, "id", n_ids), "item_id": _value(rng, "id", n_ids), "ts": _value(rng, "ts", n_ids),
           "action": _value(rng, "action", n_ids), "category": _value(rng, "category", n_ids)}
    for key in ("value", "device", "page"):
        if rng.random() < 0.5:
            obj[key] = _value(rng, "device" if key == "page" else key, n_ids)
    for key in ("user_id", "item_id", "ts", "action"):  # a row may lack a field
        if rng.random() < 0.03:
            del obj[key]
    keys = list(obj)
    if rng.random() < 0.2:  # keys in another order
        rng.shuffle(keys)
    return {k: obj[k] for k in keys}


def _fuzz_jsonl(rng: random.Random, n: int) -> bytes:
    n_ids = max(3, n // 10)
    lines: list[bytes] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.8:
            lines.append(json.dumps(_object(rng, n_ids), ensure_ascii=rng.random() < 0.5).encode())
        elif r < 0.88 and lines:
            lines.append(rng.choice(lines))  # a duplicate
        else:
            lines.append(rng.choice([b"", b"   ", b"{", b'{"user_id": 1,}', b"[1, 2]", b"7", b'"text"', b"null",
                                     b'{"user_id": 1} x', b"\xef\xbb\xbf{\"user_id\": 1}", b'{"user_id": 1, "item_id": 2\xff}',
                                     b'{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\r',
                                     b'{"user_id": NaN, "item_id": "a", "ts": NaN, "action": "pv", "value": NaN}']))
    return b"\n".join(lines) + (b"\n" if rng.random() < 0.7 else b"")


@pytest.mark.parametrize("seed", range(16))
def test_random_jsonl_logs_read_identically(tmp_path: Path, seed: int, taken: list[bool]) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(_fuzz_jsonl(random.Random(seed), 300))
    opts = OPTS if seed % 2 else EventsOptions(**{**OPTS.__dict__, "item_text": "{category} {device}"})
    assert_same_read(path, opts)
    assert taken == [True]  # the columnar side read the file itself


def test_duplicates_are_exact_when_every_line_shares_one_hash_and_blocks_are_small(
        tmp_path: Path, taken: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fast_jsonl, "_hash", lambda text: 0)
    monkeypatch.setattr(fast_jsonl, "_BLOCK", 7)  # keys first seen in a later block, shapes across blocks
    path = tmp_path / "log.jsonl"
    path.write_bytes(_fuzz_jsonl(random.Random(5), 120))
    log = assert_same_read(path, EventsOptions(**{**OPTS.__dict__, "item_text": "{category} {device}"}))
    assert taken == [True]
    assert log.files[str(path)].duplicate > 0


# files the columnar reader leaves to the line reader whole (the same result: the line reader reads both sides)
LEFT_TO_LINES = {
    "two keys for one field": b'{"user": 1, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n'
                              b'{"user": 2, "user_id": 3, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n',
    "a boolean id": b'{"user_id": true, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n'
                    b'{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n',
    "a list as category": b'{"user_id": 1, "item_id": "a", "ts": 1511544070, "action": "pv", "category": ["c"]}\n'
                          b'{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n',
    "a float id with a fraction": b'{"user_id": 1.5, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n'
                                  b'{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n',
    "an integer value past float's range": b'{"user_id": 1, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c", "value": '
                                           + b"1" + b"0" * 400 + b'}\n{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n',
    "an integer time past 2^53": b'{"user_id": 1, "item_id": "a", "ts": 90071992547409930, "action": "pv", "category": "c"}\n'
                                 b'{"user_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n',
    "a context key clashing with a computed column": b'{"user_id": 1, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c", "hour": 3}\n',
}


@pytest.mark.parametrize("case", sorted(LEFT_TO_LINES))
def test_files_the_columnar_reader_would_misread_are_left_to_the_line_reader(tmp_path: Path, case: str, taken: list[bool]) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(LEFT_TO_LINES[case])
    assert_same_read(path, OPTS)
    assert taken == [False]


def test_a_number_as_time_in_an_iso_format_is_left_to_the_line_reader(tmp_path: Path, taken: list[bool]) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"user_id": 1, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n')
    assert_same_read(path, EventsOptions(**{**OPTS.__dict__, "time_format": "iso"}))
    assert taken == [False]


def test_context_columns_come_in_the_order_of_their_first_kept_row(tmp_path: Path, taken: list[bool]) -> None:
    rows = [
        {"user_id": 1, "item_id": "a", "ts": 1511544070, "action": "clik", "category": "c", "zeta": 1},  # rejected
        {"user_id": 1, "item_id": "a", "ts": 1511544071, "action": "pv", "category": "c", "page": 2, "device": "web"},
        {"user_id": 2, "item_id": "b", "ts": 1511544072, "action": "pv", "device": "ios", "category": "c", "alpha": 0},
        {"user_id": 3, "item_id": "b", "ts": 1511544073, "action": "clik", "category": "c", "omega": 0},  # rejected
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    log = RejectLog()
    out = read_events(path, log, OPTS)
    assert taken == [True]
    assert list(out.events.columns[8:]) == ["page", "device", "alpha"]  # zeta and omega: only on rejected rows
    assert out.events["alpha"].tolist() == ["", "0"]
    assert_same_read(path, OPTS)


def test_a_rating_without_a_value_says_whether_the_key_was_there(tmp_path: Path, taken: list[bool]) -> None:
    rows = [{"user_id": 1, "item_id": "a", "ts": 1511544070, "action": "rate", "category": "c", "value": None},
            {"user_id": 2, "item_id": "a", "ts": 1511544071, "action": "rate", "category": "c"},
            {"user_id": 3, "item_id": "a", "ts": 1511544072, "action": "pv", "category": "c", "value": ""},
            {"user_id": 4, "item_id": "a", "ts": 1511544073, "action": "rate", "category": "c", "value": 4}]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    opts = EventsOptions(actions={"pv": "view"}, item_text="category {category}")
    log = assert_same_read(path, opts)
    assert taken == [True]
    reasons = [r["reason"] for r in log.rejects]
    assert len(reasons) == 2 and reasons[0] != reasons[1]  # an empty value cell, and no value key


def test_a_huge_integer_value_is_a_reject_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(LEFT_TO_LINES["an integer value past float's range"])
    log = RejectLog()
    out = read_events(path, log, OPTS)
    assert len(out.events) == 1
    assert [r["line"] for r in log.rejects] == [1] and log.rejects[0]["reason"].startswith("bad value: 1000")


def test_an_alias_error_is_the_line_readers(tmp_path: Path, taken: list[bool]) -> None:
    # no user_id key, and two keys that could both be it: an error naming the first object's line
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"{\n" + b'{"user": 1, "customer_id": 2, "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}\n')
    errors = []
    for reader in ("lines", "columnar"):
        with pytest.raises(DataError) as caught:
            read_events(path, RejectLog(), EventsOptions(**{**OPTS.__dict__, "reader": reader}))
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and "line 2" in errors[0] and "could both be the user_id column" in errors[0]
    assert taken == [False]  # handed to the line reader, which raises it


def test_random_jsonl_log_gives_the_same_dataset_bytes(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(_fuzz_jsonl(random.Random(99), 500))
    assert_same_dataset(path, OPTS, tmp_path)


def test_lines_python_cannot_hold_are_rejects_in_both_readers(tmp_path: Path, taken: list[bool]) -> None:
    from interestgym.data.tables import JSON_DEPTH_MAX, JSON_TOO_DEEP

    def row(user: int, dev: str | None = None) -> str:
        text = '{"user_id": ' + str(user) + ', "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"'
        return text + ("" if dev is None else ', "dev": ' + dev) + "}"

    def nested(depth: int) -> str:
        return "[" * depth + "1" + "]" * depth

    lines = [
        row(1),
        '{"user_id": ' + nested(100_000) + "}",  # past the parser: was a RecursionError traceback
        row(1, nested(987)),  # parsed, then crashed writing the cell back as text
        row(2, nested(JSON_DEPTH_MAX - 1)),  # kept
        row(3, "1" + "0" * 5000),  # more digits than Python reads: was a traceback
        '{"user_id": "\\ud800x", "item_id": "a", "ts": 1511544070, "action": "pv", "category": "c"}',  # a lone surrogate
        '{"user_id": "\\ud83d\\ude00", "item_id": "b", "ts": 1511544070, "action": "pv", "category": "c"}',  # a pair: kept
    ]
    path = tmp_path / "log.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log = assert_same_read(path, EventsOptions(**{**OPTS.__dict__, "item_text": "{category} {dev}"}))
    assert taken == [True]
    reasons = {r["line"]: r["reason"] for r in log.rejects}
    assert sorted(reasons) == [2, 3, 5, 6]
    assert reasons[2] == reasons[3] == JSON_TOO_DEEP
    assert "digits" in reasons[5] and "lone surrogate \\ud800" in reasons[6]
    out = read_events(path, RejectLog(), OPTS)
    assert sorted(out.events["user_id"]) == ["1", "2", "\U0001f600"]
