"""The columnar reader of ``prepare events`` gives exactly what the line reader gives: same dataset bytes,
same rejects (file, line, reason, raw) in the same order, same counts and notes."""

from __future__ import annotations

import gzip
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_prepare_events import SHARED, TAOBAO_ACTIONS, _taobao_like

from interestgym.data.events import EventsOptions, prepare_events, read_events
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

TAOBAO = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS,
                       item_text="category {category}")
FILES = ["events.parquet", "items.parquet", "users.parquet", "rejects.jsonl", "manifest.json"]


def _with(opts: EventsOptions, reader: str) -> EventsOptions:
    return EventsOptions(**{**opts.__dict__, "reader": reader})


def assert_same_read(path: Path, opts: EventsOptions) -> RejectLog:
    """Both readers on ``path``: equal reader output and reject logs (or the same error)."""
    results = {}
    for reader in ("lines", "columnar"):
        log = RejectLog()
        try:
            results[reader] = (read_events(path, log, _with(opts, reader)), log, None)
        except DataError as exc:
            results[reader] = (None, log, str(exc))
    (a, log_a, err_a), (b, log_b, err_b) = results["lines"], results["columnar"]
    assert err_a == err_b
    assert log_a.rejects == log_b.rejects
    assert log_a.notes == log_b.notes
    assert {k: v.as_dict() for k, v in log_a.files.items()} == {k: v.as_dict() for k, v in log_b.files.items()}
    if a is not None:
        assert a.events.equals(b.events) and list(a.events.dtypes) == list(b.events.dtypes)
        assert a.items.equals(b.items)
        assert a.reader == b.reader and a.counts == b.counts
    return log_b


def assert_same_dataset(path: Path, opts: EventsOptions, tmp_path: Path, **kwargs) -> None:
    outs = {}
    for reader in ("lines", "columnar"):
        outs[reader] = tmp_path / f"ds-{reader}"
        prepare_events(path, outs[reader], options=_with(opts, reader), command=["test"], deterministic=True,
                       max_reject_rate=1.0, **kwargs)
    for name in FILES:
        assert (outs["lines"] / name).read_bytes() == (outs["columnar"] / name).read_bytes(), name


def test_malformed_taobao_like_log_same_rejects_and_bytes(tmp_path: Path) -> None:
    src = _taobao_like(tmp_path / "log.csv")
    log = assert_same_read(src, TAOBAO)
    assert [r["line"] for r in log.rejects] == [4, 5, 6, 7, 8, 9, 12]
    assert_same_dataset(src, TAOBAO, tmp_path)


@pytest.mark.skipif(not (SHARED / "taobao-userbehavior-sample" / "UserBehavior_sample.csv").is_file(),
                    reason="shared data ../shared/data/taobao-userbehavior-sample absent")
def test_real_taobao_sample_gives_the_same_dataset_bytes(tmp_path: Path) -> None:
    src = SHARED / "taobao-userbehavior-sample" / "UserBehavior_sample.csv"
    assert_same_dataset(src, TAOBAO, tmp_path, tz_offset_hours=8)


def test_tsv_with_header_items_file_iso_times_and_context(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_text('sku,title,cat\nA,"Red shoes, size 42",shoes\nB,"Blue\nshirt",shirts\nE,Green hat,hats\n', encoding="utf-8")
    log = tmp_path / "events.tsv"
    log.write_text(
        "uid\titem\ttime\tevent\tqty\tdevice\n"
        "u1\tA\t2019-11-12T14:14:46Z\tbuy\t2\tmobile\n"
        "u1\tB\t2019-11-12T15:00:00+08:00\tview\t1\tdesktop\n"
        "u2\tZ\t2019-11-12T15:00:00\tview\t1\tmobile\n"
        "u2\tE\tnot a time\tview\t1\tmobile\n"
        "u2\tE\t2019-11-12 16:00:00\tview\tx\tmobile\n"
        "u2\tE\t1573574400\tview\t1\n"
        "u3 \t E\t1573574401\tview\t 3 \t tablet\n"
        "u3\tE\t1573574402\tview\tnan\ttablet\n", encoding="utf-8")
    opts = EventsOptions(items=items, rename={"uid": "user_id", "item": "item_id", "time": "ts", "event": "action", "qty": "value",
                                              "sku": "item_id", "title": "text", "cat": "category"},
                         actions={"buy": "purchase"})
    assert_same_read(log, opts)
    assert_same_dataset(log, opts, tmp_path)


def test_gzip_crlf_bom_and_a_damaged_gzip(tmp_path: Path) -> None:
    src = tmp_path / "log.csv.gz"
    body = "\ufeffuser_id,item_id,ts,action,text\r\n1,2,1511544070,click,Hello\r\n1,3,1511544071,click,World\r\n\r\n1,2,1511544070,click,Hello\r\n"
    src.write_bytes(gzip.compress(body.encode("utf-8")))
    assert_same_read(src, EventsOptions())
    damaged = tmp_path / "cut.csv.gz"
    damaged.write_bytes(gzip.compress(("user_id,item_id,ts,action,text\n" + "1,2,1511544070,click,x\n" * 5000).encode())[:-40])
    assert_same_read(damaged, EventsOptions())


def _fuzz_log(rng: random.Random, n: int) -> bytes:
    """Rows of every kind the line reader has a rule for, in random order."""
    good = lambda: f"{rng.randint(1, 30)},{rng.randint(1, 60)},{rng.choice(['c1', 'c2', 'c3', ''])},{rng.choice(['pv', 'buy', 'cart'])},{1511544070 + rng.randint(0, 10**6)}"
    def u() -> int:
        return rng.randint(1, 30)

    def it() -> int:
        return rng.randint(1, 80)

    kinds = [
        lambda: good(),
        lambda: good(),
        lambda: good(),
        lambda: "",                                           # blank
        lambda: "   \t ",                                     # blank (whitespace only)
        lambda: good().replace("pv", "clik"),                 # unknown action
        lambda: f"{u()},2,c1,pv,{1511544070000 + rng.randint(0, 9)}",  # ms in a seconds log
        lambda: f"{u()},{it()},c1,pv,",                                 # empty time
        lambda: f"{u()},{it()},c1,pv,2017-11-25T12:00:00",              # ISO among unix
        lambda: f"{u()},{it()},c1,pv,1511544070.75",                    # fractional seconds
        lambda: f"{u()},{it()},c1,pv,1e9",                              # out of range
        lambda: f",{it()},c1,pv,1511544070",                        # missing user
        lambda: f"{u()},,c1,pv,1511544070",                        # missing item
        lambda: f"{u()},2,c1,pv",                                  # four fields
        lambda: f"{u()},{it()},c1,pv,1511544070,extra",                 # six fields
        lambda: f' {u()} , {it()} ,c2 , pv ,1511544090',                # whitespace around cells
        lambda: f"{u()}\x00,8,c2,pv,1511544090",                   # control character in an id
        lambda: f"{u()},8\x85,c2,pv,1511544090",                   # C1 control in an id
        lambda: f"{u()},{it()},c2\u3000,pv,1511544090",                 # a Unicode space at a cell's end
        lambda: f"{u()},{it()},c2,pv,1511544090\r",                     # a lone carriage return
        lambda: f'{u()},"8,9",c2,pv,1511544090',                   # quoted field with the delimiter
        lambda: f'{u()},"8\n{it()}",c2,pv,1511544090',                  # quoted field spanning two lines
        lambda: f'{u()},"bad"quote,c2,pv,1511544090',              # malformed quoting
        lambda: f"{u()},{it()},ç,pv,1511544099",                        # non-ASCII category
        lambda: f"{rng.randint(1, 30)},{rng.randint(61, 70)},{rng.choice(['c1', 'c4'])},pv,{1511544070 + rng.randint(0, 99)}",  # category changes
    ]
    rows = [rng.choice(kinds)() for _ in range(n)]
    rows += [rng.choice(rows) for _ in range(n // 10)]  # duplicates of earlier rows
    rng.shuffle(rows)
    data = "\n".join(rows).encode("utf-8") + b"\n"
    if rng.random() < 0.5:
        data = data.replace(b"c3", b"c\xc3\x28", 1)  # invalid UTF-8 somewhere
    return data


@pytest.mark.parametrize("seed", range(8))
def test_random_malformed_logs_read_identically(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "fuzz.csv"
    path.write_bytes(_fuzz_log(rng, 400))
    opts = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS,
                         item_text=rng.choice(["category {category}", "{category}", " item {item_id} "]),
                         time_format=rng.choice(["auto", "auto", "unix"]))
    assert_same_read(path, opts)
    # TSV: the same rows, tab-separated (quotes are data there)
    tsv = tmp_path / "fuzz.tsv"
    tsv.write_bytes(path.read_bytes().replace(b",", b"\t"))
    assert_same_read(tsv, opts)


def test_a_whole_dataset_from_a_random_log_has_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(_fuzz_log(random.Random(42), 3000))
    assert_same_dataset(path, TAOBAO, tmp_path)


def test_header_csv_with_text_column_and_empty_texts(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts,action,text,device\n"
                    "1,a,1511544070,click,,ios\n"       # first row of item a: no text (rejected)
                    "1,a,1511544071,click,Hello,ios\n"  # now a gets its text
                    "2,b,1511544072,click, B ,web\n"
                    "2,a,1511544073,click,other,web\n", encoding="utf-8")
    log = assert_same_read(path, EventsOptions())
    assert [r["line"] for r in log.rejects] == [2]
    assert_same_dataset(path, EventsOptions(), tmp_path)


def test_the_reader_option_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts,action,text\n1,a,1511544070,click,x\n", encoding="utf-8")
    with pytest.raises(DataError, match="--reader 'fast': expected auto, lines or columnar"):
        read_events(path, RejectLog(), EventsOptions(reader="fast"))
