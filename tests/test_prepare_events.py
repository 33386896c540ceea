"""Generic event-log reader: CSV / TSV / JSONL / Parquet, mappings, times, items, exact rejects."""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interestgym.data.dataset import Dataset
from interestgym.data.events import EventsOptions, prepare_events, read_events
from interestgym.data.readers import TimeParser, parse_actions, parse_renames
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TAOBAO_ACTIONS = {"pv": "view", "cart": "add_to_cart", "fav": "like", "buy": "purchase"}
ACCEPTED = "impression, click, view, like, share, comment, search, add_to_cart, purchase, rate"


def _rejects(out_or_log: Path | RejectLog) -> list[tuple[str, int, str]]:
    if isinstance(out_or_log, RejectLog):
        rows = out_or_log.rejects
    else:
        rows = [json.loads(line) for line in (out_or_log / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(Path(r["file"]).name, r["line"], r["reason"]) for r in rows]


def _taobao_like(path: Path) -> Path:
    rows = [
        "1,100,10,pv,1511544070",      # 1 ok (after a byte-order mark)
        "1,101,11,cart,1511544080",    # 2 ok
        "1,100,12,buy,1511544090",     # 3 ok; item 100 changes category 10 -> 12 (counted, first kept)
        "2,100,10,clik,1511544100",    # 4 unknown action
        "2,102,13,pv,1511544070000",   # 5 milliseconds in a file of seconds: out of range
        "2,103,13,pv,",                # 6 empty time
        "1,100,10,pv,1511544070",      # 7 duplicate of line 1
        ",104,13,pv,1511544070",       # 8 missing user
        "3,105,13,pv",                 # 9 four fields
        "",                            # 10 blank
        "3,106,13,fav,1511544200",     # 11 ok
    ]
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(rows) + "\n").encode() + b"3,10\xc3\x287,13,pv,1511544300\n")  # 12 invalid UTF-8
    return path


def test_headerless_csv_with_columns_actions_and_template(tmp_path: Path) -> None:
    src = _taobao_like(tmp_path / "log.csv")
    opts = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS,
                         item_text="category {category}")
    out = tmp_path / "out"
    manifest = prepare_events(src, out, options=opts, max_reject_rate=1.0, deterministic=True)
    assert _rejects(out) == [
        ("log.csv", 4, f"unknown action: 'clik'; expected one of {ACCEPTED}, pv, cart, fav, buy (map names with --actions NAME=ACTION)"),
        ("log.csv", 5, ("time out of range: 1511544070000 is in the year 49868; expected 1990-01-01 .. 2100-01-01 UTC (milliseconds? "
                       "this file's numeric times are unix seconds, set by its first number; one file keeps one unit: convert "
                       "this time, or read a file of milliseconds with --time-format unix_ms)")),
        ("log.csv", 6, "bad time: ''; expected unix seconds"),
        ("log.csv", 7, "duplicate row"),
        ("log.csv", 8, "missing user_id: expected a user id"),
        ("log.csv", 9, "wrong field count: expected 5 comma-separated fields (user_id, item_id, category, action, ts), found 4"),
        ("log.csv", 12, "invalid UTF-8: byte 0xc3 at column 5; expected UTF-8 text"),
    ]
    st = manifest["validation"]["files"][str(src)]
    assert (st["rows_read"], st["kept"], st["rejected"], st["blank"], st["duplicate"]) == (12, 4, 6, 1, 1)
    ds = Dataset.open(out)
    ev = ds.events
    assert list(zip(ev["user_id"], ev["item_id"], ev["action"], ev["ts"], ev["seq"])) == [
        ("1", "100", "view", 1511544070, 1), ("1", "101", "add_to_cart", 1511544080, 2),
        ("1", "100", "purchase", 1511544090, 3), ("3", "106", "like", 1511544200, 11)]
    assert set(ev["value"]) == {1.0}
    items = ds.items.set_index("item_id")
    assert items.loc["100", ["text", "category"]].tolist() == ["category 10", "10"]
    assert list(ds.items["item_id"]) == ["100", "101", "106"]
    assert manifest["counts"]["items_changing_category"] == 1
    assert any("item 100: category '10' at line 1, '12' at line 3" in n for n in manifest["validation"]["notes"])
    assert manifest["reader"]["time_format"] == "unix"
    assert "category" not in ev.columns  # an item field, not a context column


def test_tsv_header_map_iso_times_value_context_and_items_file(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_text(
        "sku,title,cat,brand\n"
        'A,"Red shoes, size 42",shoes,Acme\n'
        'B,"Blue\nshirt",shirts,Bco\n'       # lines 3-4: one record
        "A,dup id,shoes,Acme\n"              # 5 duplicate id
        "C,,hats,X\n"                        # 6 empty text
        'D,"bad"quote,hats,X\n'              # 7 malformed quoting
        "E,Green hat,hats,X\n",              # 8
        encoding="utf-8")
    log = tmp_path / "events.tsv"
    log.write_text(
        "uid\titem\ttime\tevent\tqty\tdevice\n"
        "u1\tA\t2019-11-12T14:14:46Z\tbuy\t2\tmobile\n"
        "u1\tB\t2019-11-12T15:00:00+08:00\tview\t1\tdesktop\n"
        "u2\tZ\t2019-11-12T15:00:00\tview\t1\tmobile\n"       # 4 unknown item
        "u2\tE\tnot a time\tview\t1\tmobile\n"                # 5 bad time
        "u2\tE\t2019-11-12 16:00:00\tview\tx\tmobile\n"       # 6 bad value
        "u2\tE\t2019-11-12 16:00:00\tview\t3\n"               # 7 five fields
        "u2\tE\t2019-11-12 16:00:00\tpurchase\t1.5\ttv\n",    # 8 ok
        encoding="utf-8")
    opts = EventsOptions(
        rename=parse_renames("user_id=uid,item_id=item,item_id=sku,ts=time,action=event,value=qty,text=title,category=cat"),
        actions={"buy": "purchase"}, items=items)
    out = tmp_path / "out"
    manifest = prepare_events(log, out, options=opts, max_reject_rate=1.0, deterministic=True)
    assert _rejects(out) == [
        ("items.csv", 5, "duplicate item id: A (first at line 2)"),
        ("items.csv", 6, "empty text: item C has no text; expected text"),
        ("items.csv", 7, "malformed CSV quoting: ',' expected after '\"'; expected RFC-4180 quoted fields"),
        ("events.tsv", 4, f"unknown item: 'Z' is not in the items file {items}"),
        ("events.tsv", 5, "bad time: 'not a time'; expected an ISO-8601 time such as 2019-11-12T14:14:46Z"),
        ("events.tsv", 6, "bad value: 'x'; expected a finite number"),
        ("events.tsv", 7, "wrong field count: expected 6 tab-separated fields (user_id, item_id, ts, action, value, device), found 5"),
    ]
    ds = Dataset.open(out)
    assert list(ds.items["item_id"]) == ["A", "B", "E"]
    assert ds.items.set_index("item_id").loc["B", "text"] == "Blue\nshirt"
    assert ds.items.set_index("item_id").loc["A", ["text", "category", "brand"]].tolist() == ["Red shoes, size 42", "shoes", "Acme"]
    ev = ds.events
    utc = calendar.timegm((2019, 11, 12, 14, 14, 46))
    # Sorted by (user, ts): B at 15:00+08:00 = 07:00 UTC comes before A at 14:14:46 UTC.
    assert list(zip(ev["user_id"], ev["item_id"], ev["action"], ev["ts"], ev["value"], ev["device"])) == [
        ("u1", "B", "view", calendar.timegm((2019, 11, 12, 7, 0, 0)), 1.0, "desktop"),
        ("u1", "A", "purchase", utc, 2.0, "mobile"),
        ("u2", "E", "purchase", calendar.timegm((2019, 11, 12, 16, 0, 0)), 1.5, "tv")]
    assert manifest["reader"]["time_format"] == "iso"
    items_stats = manifest["validation"]["files"][str(items)]
    assert (items_stats["rows_read"], items_stats["kept"], items_stats["rejected"]) == (6, 3, 3)


def test_jsonl_ms_times_nested_context_missing_fields(tmp_path: Path) -> None:
    lines = [
        {"user": "u1", "item_id": "A", "ts": 1573568086000, "action": "click", "device": {"os": "ios"}, "text": "Alpha"},
        {"user": "u1", "item_id": "B", "ts": 1573568087500, "action": "click", "text": "Beta"},
        "not json",
        [1, 2],
        {"user": "u2", "item_id": "A", "ts": 1573568088000},
        {"user": "u2", "item_id": "C", "ts": 1573568089000, "action": "like", "text": ""},
        {"user": "u2", "item_id": "A", "ts": 1573568090000, "action": "like", "text": "Alpha v2", "hourly": 3},
    ]
    src = tmp_path / "log.jsonl"
    src.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    log = RejectLog()
    data = read_events(src, log, EventsOptions(rename={"user": "user_id"}))
    assert _rejects(log) == [
        ("log.jsonl", 3, "invalid JSON: Expecting value at column 1; expected one JSON object per line"),
        ("log.jsonl", 4, "not a JSON object: found list; expected one JSON object per line"),
        ("log.jsonl", 5, f"missing action: expected one of {ACCEPTED}"),
        ("log.jsonl", 6, "empty item text: first row of item 'C' has no text; expected text"),
    ]
    ev = data.events
    assert list(ev["ts"]) == [1573568086, 1573568087, 1573568090]  # milliseconds floored to seconds
    assert list(ev["device"]) == ['{"os": "ios"}', "", ""] and list(ev["hourly"]) == ["", "", "3"]
    assert dict(zip(data.items["item_id"], data.items["text"])) == {"A": "Alpha", "B": "Beta"}  # first text kept


def test_parquet_typed_columns_duplicates_and_template(tmp_path: Path) -> None:
    df = pd.DataFrame({
        "user_id": [7, 7, 7, 8, None],
        "item_id": [1, 2, 2, 1, 3],
        "ts": pd.to_datetime(["2020-01-01 10:00", "2020-01-01 11:00", "2020-01-01 11:00", "2020-01-02 09:30", "2020-01-03 00:00"], utc=True),
        "category": ["books", "toys", "toys", "books", "toys"],
        "rating": [5.0, 3.5, 3.5, 4.0, 1.0],
    })
    src = tmp_path / "log.parquet"
    df.to_parquet(src, index=False)
    log = RejectLog()
    data = read_events(src, log, EventsOptions(rename={"rating": "value"}, default_action="rate", item_text="{category} #{item_id}"))
    assert _rejects(log) == [("log.parquet", 3, "duplicate row"), ("log.parquet", 5, "missing user_id: expected a user id")]
    ev = data.events
    assert list(ev["user_id"]) == ["7", "7", "8"] and list(ev["item_id"]) == ["1", "2", "1"]
    assert list(ev["ts"]) == [calendar.timegm((2020, 1, 1, 10, 0, 0)), calendar.timegm((2020, 1, 1, 11, 0, 0)), calendar.timegm((2020, 1, 2, 9, 30, 0))]
    assert list(ev["value"]) == [5.0, 3.5, 4.0] and set(ev["action"]) == {"rate"}
    assert dict(zip(data.items["item_id"], data.items["text"])) == {"1": "books #1", "2": "toys #2"}


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_a_duplicate_is_a_byte_identical_line_whatever_its_line_ending(tmp_path: Path, reader: str) -> None:
    """A repeat of a line is a duplicate, also when only its line ending differs (CRLF vs LF); a line that
    differs in any byte of its content (a trailing or a leading space) is another event, kept."""
    src = tmp_path / "near.csv"
    src.write_bytes(b"u1,i1,c1,pv,1511544070\n"       # 1
                    b"u1,i1,c1,pv,1511544070\n"       # 2: a duplicate of 1
                    b"u1,i1,c1,pv,1511544070 \n"      # 3: a trailing space: not byte-identical, kept
                    b"u1,i1,c1,pv,1511544070\r\n"     # 4: the same bytes before its CRLF: a duplicate of 1
                    b"u1,i1, c1,pv,1511544070\n")     # 5: a leading space in a field: kept
    log = RejectLog()
    data = read_events(src, log, EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"],
                                               actions={"pv": "view"}, item_text="category {category}", reader=reader))
    assert len(data.events) == 3
    assert [(r["line"], r["reason"]) for r in log.rejects] == [(2, "duplicate row"), (4, "duplicate row")]
    assert log.report()["files"][str(src)]["duplicate"] == 2


def test_time_parser_modes() -> None:
    assert TimeParser("unix").parse("1511544070.9") == (1511544070, None)
    assert TimeParser("unix_ms").parse(1511544070999) == (1511544070, None)
    assert TimeParser("iso").parse("2017-11-24T17:21:10+08:00") == (calendar.timegm((2017, 11, 24, 9, 21, 10)), None)
    assert TimeParser("%d.%m.%Y %H:%M").parse("24.11.2017 17:21") == (calendar.timegm((2017, 11, 24, 17, 21, 0)), None)
    auto = TimeParser()
    assert auto.parse("12")[1] == "time out of range: 12 is neither unix seconds nor milliseconds in 1990..2100"
    assert auto.detected is None  # undecided after an out-of-range first value
    assert auto.parse("1511544070000") == (1511544070, None) and auto.detected == "unix_ms"
    assert auto.parse("1511544070")[1].startswith("time out of range: 1511544070 is 1970-01-18; expected 1990-01-01 .. "
                                                  "2100-01-01 UTC (seconds? this file's numeric times are unix milliseconds")
    with pytest.raises(DataError, match="--time-format 'epoch': expected one of auto, unix, unix_ms, iso or a strptime pattern"):
        TimeParser("epoch")


def _log(tmp_path: Path, text: str, name: str = "log.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8", errors="surrogateescape")  # "\udce9" writes the byte 0xe9 (not UTF-8)
    return p


@pytest.mark.parametrize(
    ("text", "opts", "message"),
    [
        ("user_id,item_id,ts,action\n1,2,1511544070,click\n", EventsOptions(rename={"timestamp": "ts"}, item_text="x {item_id}"),
         r"--map ts=timestamp: no such column in .*log.csv \(columns: action, item_id, ts, user_id\); expected --map NEW=OLD with OLD one of those"),
        ("uid,item_id,ts,action,text\n1,2,1511544070,click,t\n", EventsOptions(),
         r"log.csv: no user_id column \(columns: uid, item_id, ts, action, text\); name it with --columns or rename one with --map user_id=OLD"),
        ("user_id,item_id,ts\n1,2,1511544070\n", EventsOptions(item_text="x {item_id}"),
         r"log.csv: no action column .* give --default-action"),
        ("user_id,item_id,ts,action\n1,2,1511544070,click\n", EventsOptions(),
         r"log.csv: no item text: the events have no text column and there is no items file"),
        ("user_id,item_id,ts,action,hour\n1,2,1511544070,click,3\n", EventsOptions(item_text="{item_id}"),
         r"column 'hour' clashes with a column interestgym computes"),
        ("user_id,item_id,ts,action\n1,2,1511544070,click\n", EventsOptions(item_text="{title}"),
         r"--item-text '\{title\}': no column title in .*log.csv; available: user_id, item_id, ts, action"),
        ("user_id,item_id,ts,action\n1,2,1511544070,click\n", EventsOptions(item_text="x {item_id}", actions={"pv": "viewing"}),
         r"--actions pv=viewing: 'viewing' is not an action"),
        ("user_id,item_id,ts,action\n1,2,1511544070,click\n", EventsOptions(item_text="x {item_id}", context=["device"]),
         r"--context device: no column device in .*log.csv"),
        ("user_id,item_id,ts,action\n", EventsOptions(item_text="x {item_id}"),
         r"log.csv: no rows \(empty file, or a header only\); expected events"),
        ("\n\n", EventsOptions(item_text="x {item_id}"), r"log.csv: empty file; expected a header line and events"),
        ("1,2,1511544070,click\n", EventsOptions(item_text="x {item_id}"),
         r"its first line looks like data: if the file has no header, name its columns with --columns"),
        ("user_id;item_id;ts;action\n1;2;1511544070;click\n", EventsOptions(item_text="x {item_id}"),
         r"no user_id column \(columns: user_id;item_id;ts;action\) \(the header is one column holding semicolons: give --delimiter ';'\)"),
        # a comma file read with another --delimiter: its header is one column of commas
        ("user_id,item_id,ts,action\n1,2,1511544070,click\n", EventsOptions(item_text="x {item_id}", delimiter=";"),
         r"no user_id column \(columns: user_id,item_id,ts,action\) \(the header is one column holding commas: give --delimiter ','\)"),
        # --columns naming fewer fields than a file with a header has: what line 1 holds, and that it is a header
        ("user_id,item_id,action,timestamp\n1,2,click,1511544070\n", EventsOptions(item_text="x {item_id}", columns=["user_id", "item_id", "ts"]),
         (r"no action column .*\(--columns names 3 columns but line 1 has 4 fields: 'user_id,item_id,action,timestamp'; it looks like a "
          r"header: leave out --columns to read the names from it\); rename one with --map action=OLD")),
        # line 1 not UTF-8 under --columns: a data row (rejected on its own), the configuration error as it is
        ("1,2,click,caf\udce9\n2,3,click,x\n", EventsOptions(item_text="x {item_id}", columns=["user_id", "item_id", "ts"]),
         r"no action column \(columns: user_id, item_id, ts; expected a column named action"),
        ("1,2,click,1511544070\n", EventsOptions(item_text="x {item_id}", columns=["user_id", "item_id", "ts"]),
         r"\(--columns names 3 columns but line 1 has 4 fields: '1,2,click,1511544070'; name every field, '-' for one to skip\)"),
    ],
)
def test_configuration_errors_are_one_clear_message(tmp_path: Path, text: str, opts: EventsOptions, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_events(_log(tmp_path, text), RejectLog(), opts)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope.csv: no such file; expected an events file"):
        read_events(tmp_path / "nope.csv", RejectLog())
    with pytest.raises(DataError, match=r"empty.csv: empty file \(0 bytes\)"):
        read_events(_log(tmp_path, "", "empty.csv"), RejectLog())
    utf16 = tmp_path / "u16.csv"
    utf16.write_bytes("user_id,item_id,ts,action\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"u16.csv: UTF-16 encoded; expected UTF-8"):
        read_events(utf16, RejectLog())
    text = "user_id,item_id,ts,action\nu1,i1,1511544070,click\n"
    for codec, name in (("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE")):  # no byte-order mark: sniffed
        wide = tmp_path / f"{codec}.csv"
        wide.write_bytes(text.encode(codec))
        for reader in ("lines", "columnar"):
            with pytest.raises(DataError, match=rf"{codec}.csv: looks {name} encoded without a byte-order mark .* "
                                                rf"`iconv -f {name} -t UTF-8`"):
                read_events(wide, RejectLog(), EventsOptions(reader=reader))
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(("user_id,item_id,ts,action,text\n" + "".join(f"u{k},i{k},1511544070,click,体育新闻\n" for k in range(3)))
                    .encode("gb18030"))
    for reader in ("lines", "columnar"):
        with pytest.raises(DataError, match=r"gbk.csv: no valid rows: 3 of 3 rejected; .*invalid UTF-8.*"
                                            r"Most bad rows are not UTF-8: .* `iconv -f GB18030 -t UTF-8"):
            read_events(gbk, RejectLog(), EventsOptions(reader=reader))
    array = _log(tmp_path, '[{"user_id": 1},\n {"user_id": 2}]\n', "log.json")
    with pytest.raises(DataError, match=r"log.json line 1: a JSON array; expected JSON Lines"):
        read_events(array, RejectLog())
    odd = _log(tmp_path, "a b c\n", "log.dat")
    with pytest.raises(DataError, match=r"log.dat: cannot tell the format .* give --input-format"):
        read_events(odd, RejectLog())
    # lines ended by CR alone (classic Mac OS) would be one line holding the whole file: said, with a short excerpt
    mac = tmp_path / "mac.csv"
    mac.write_bytes(b"user_id,item_id,ts,action\r" + b"u1,i1,1511544070,click\r" * 200)
    for reader in ("lines", "columnar"):
        with pytest.raises(DataError, match=r"mac.csv line 1: 200 carriage returns \(CR\) inside the line \(it begins "
                                            r"'user_id,item_id,ts,action\\ru1,i1,1511544070,click\\r.*'\.\.\. "
                                            r"\(4,546 more characters\)\): the file's lines end in CR alone") as info:
            read_events(mac, RejectLog(), EventsOptions(reader=reader))
        assert len(str(info.value)) < 400
    # the same without a header (the Taobao log's shape, --columns): line 1 is data, so two CRs in it are what tells
    headerless = tmp_path / "mac-headerless.csv"
    headerless.write_bytes(b"u1,i1,1511544070,click\r" * 50)
    for reader in ("lines", "columnar"):
        with pytest.raises(DataError, match=r"mac-headerless.csv line 1: 49 carriage returns \(CR\) inside the line .*: the "
                                            r"file's lines end in CR alone"):
            read_events(headerless, RejectLog(), EventsOptions(columns=["user_id", "item_id", "ts", "action"], item_text="item {item_id}",
                                                               reader=reader))
    # a binary file given as a log: said as such, not as a header without the expected columns
    import gzip

    for name, content, kind in (("bin.csv", bytes(range(256)) * 100, r"9 control bytes \(NUL, \.\.\.\) in its first 11 bytes"),
                                ("packed.csv", gzip.compress(b"user_id,item_id,ts,action\n"), r"gzip-compressed data"),
                                ("table.csv", b"PAR1\x15\x04", r"a Parquet file")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=rf"{name}: not a text file: {kind}"):
            read_events(tmp_path / name, RejectLog())


def test_every_row_bad_names_the_reasons(tmp_path: Path) -> None:
    src = _log(tmp_path, "user_id,item_id,ts,action,text\n1,2,1511544070,clik,t\n1,3,1511544071,clik,t\n")
    with pytest.raises(DataError, match=r"log.csv: no valid rows: 2 of 2 rejected; .* First bad lines: lines 2, 3: unknown action: 'clik'"):
        read_events(src, RejectLog())


def test_headerless_default_action_context_selection_and_header_override(tmp_path: Path) -> None:
    src = _log(tmp_path, "id,item,when,dev,chan\n1,2,1511544070,ios,web\n", "log.csv")
    data = read_events(src, RejectLog(), EventsOptions(columns=["user_id", "item_id", "ts", "device", "-"], header=True,
                                                       default_action="click", item_text="item {item_id}", context=["device"]))
    ev = data.events
    assert list(ev.columns) == ["user_id", "ts", "item_id", "action", "value", "hour", "weekday", "seq", "device"]
    assert ev.iloc[0][["user_id", "item_id", "action", "device", "seq"]].tolist() == ["1", "2", "click", "ios", 2]


def test_option_parsers() -> None:
    assert parse_renames("ts=timestamp, user_id=uid") == {"timestamp": "ts", "uid": "user_id"}
    with pytest.raises(DataError, match="--map entry 'ts': expected NEW=OLD"):
        parse_renames("ts")
    with pytest.raises(DataError, match="column 'a' is renamed twice"):
        parse_renames("x=a,y=a")
    assert parse_actions("pv=view,buy=purchase") == {"pv": "view", "buy": "purchase"}
    with pytest.raises(DataError, match="--actions: 'pv' is mapped twice"):
        parse_actions("pv=view,pv=click")


def test_hour_and_weekday_follow_the_timezone_offset(tmp_path: Path) -> None:
    src = _log(tmp_path, "user_id,item_id,ts,action,text\n1,2,2017-11-25T20:30:00Z,click,t\n")
    out8 = tmp_path / "o8"
    prepare_events(src, out8, tz_offset_hours=8, deterministic=True)
    ev = Dataset.open(out8).events
    # 2017-11-25 20:30 UTC is Saturday; in UTC+8 it is Sunday 04:30. ts stays UTC.
    assert (int(ev["hour"][0]), int(ev["weekday"][0]), int(ev["ts"][0])) == (4, 6, calendar.timegm((2017, 11, 25, 20, 30, 0)))
    assert Dataset.open(out8).manifest["reader"]["tz_offset_hours"] == 8


@pytest.mark.skipif(not (SHARED / "taobao-userbehavior-sample" / "UserBehavior_sample.csv").is_file(),
                    reason="shared data ../shared/data/taobao-userbehavior-sample absent")
def test_real_taobao_sample(tmp_path: Path) -> None:
    src = SHARED / "taobao-userbehavior-sample" / "UserBehavior_sample.csv"
    opts = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS, item_text="category {category}")
    manifest = prepare_events(src, tmp_path / "tb", options=opts, tz_offset_hours=8)
    raw = pd.read_csv(src, header=None, names=["u", "i", "c", "b", "t"])
    assert manifest["counts"]["events"] == len(raw) == 43_411
    assert manifest["counts"]["users"] == raw["u"].nunique() == 407
    assert manifest["counts"]["items"] == raw["i"].nunique()
    assert manifest["validation"]["rejected_total"] == 0
    expected = raw["b"].map(TAOBAO_ACTIONS).value_counts().sort_index().to_dict()
    assert manifest["counts"]["actions"] == expected
    ev = Dataset.open(tmp_path / "tb").events
    assert np.array_equal(np.sort(ev["ts"].to_numpy()), np.sort(raw["t"].to_numpy()))


def test_gzip_bom_header_and_jsonl_map_checked_after_reading(tmp_path: Path) -> None:
    import gzip

    src = tmp_path / "log.tsv.gz"
    with gzip.open(src, "wt", encoding="utf-8-sig") as fh:  # a BOM before the header
        fh.write("user_id\titem_id\tts\taction\ttext\n1\t2\t1511544070\tclick\tHello\n")
    data = read_events(src, RejectLog())
    assert data.events.iloc[0][["user_id", "item_id", "ts"]].tolist() == ["1", "2", 1511544070]
    assert data.reader["input_format"] == "tsv" and data.reader["header"] == ["user_id", "item_id", "ts", "action", "text"]

    jsonl = _log(tmp_path, '{"user_id": "1", "item_id": "2", "ts": 1511544070, "action": "click", "text": "t"}\n', "log.jsonl")
    with pytest.raises(DataError, match=r"--map ts=time: no such column in .*log.jsonl"):
        read_events(jsonl, RejectLog(), EventsOptions(rename={"time": "ts"}))


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_the_last_second_before_2100_is_kept_and_2100_itself_refused(tmp_path: Path, reader: str) -> None:
    from interestgym.core.clock import TS_MAX

    src = tmp_path / "edge.csv"
    src.write_text(f"u1,i1,c1,pv,{TS_MAX - 1}\nu1,i2,c1,pv,{TS_MAX}\nu1,i3,c1,pv,1511544070\n")
    log = RejectLog()
    data = read_events(src, log, EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions={"pv": "view"},
                                               item_text="category {category}", reader=reader))
    assert sorted(data.events["ts"].tolist()) == [1511544070, TS_MAX - 1]
    assert [(r["line"], r["reason"]) for r in log.rejects] == [
        (2, f"time out of range: {TS_MAX} is 2100-01-01; expected 1990-01-01 .. 2100-01-01 UTC")]
    # a file whose first time is 2100-01-01 in seconds: that value fits neither unit, the next one decides (ms here)
    src.write_text(f"u1,i1,c1,pv,{TS_MAX}\nu1,i2,c1,pv,1511544070000\nu1,i3,c1,pv,1511544071000\n")
    log = RejectLog()
    data = read_events(src, log, EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions={"pv": "view"},
                                               item_text="category {category}", reader=reader))
    assert sorted(data.events["ts"].tolist()) == [1511544070, 1511544071]
    assert [(r["line"], r["reason"]) for r in log.rejects] == [
        (1, f"time out of range: {TS_MAX} is neither unix seconds nor milliseconds in 1990..2100")]


def test_a_time_split_marks_late_the_events_from_the_fraction_of_each_users_span_on(tmp_path: Path) -> None:
    """`late`: ts >= first + f (last - first), per user; an event exactly on that boundary is late."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from env_fixtures import make_items

    from interestgym.data.dataset import SplitSpec, write_dataset

    rows = [{"user_id": u, "ts": np.int64(1_000_000 + start + 10 * k), "item_id": f"i{k % 5}", "action": "click",
             "value": np.float32(1.0), "hour": np.int8(0), "weekday": np.int8(0), "seq": np.int64(100 * i + k)}
            for i, (u, start) in enumerate((("a", 0), ("b", 3600))) for k in range(11)]
    events = pd.DataFrame(rows)
    src = tmp_path / "src.txt"
    src.write_text("x")
    out = tmp_path / "ds"
    write_dataset(out, source_format="fixture", source_files=[src], items=make_items(5, 2, np.random.default_rng(0)),
                  events=events, rejects=RejectLog(), split=SplitSpec(0.5, 0.25, 0.25, time_fraction=0.5), deterministic=True)
    got = Dataset.open(out).events
    for _, g in got.groupby("user_id"):
        rel = g["ts"].to_numpy() - g["ts"].min()
        np.testing.assert_array_equal(g["late"].to_numpy(), rel >= 50)  # span 100 s: from 50 s on, the 50 s event included
        assert int(g["late"].sum()) == 6


def test_a_reject_rate_equal_to_the_maximum_is_accepted_and_above_it_refused(tmp_path: Path) -> None:
    src = tmp_path / "ten.csv"
    src.write_text("".join(f"u1,i{k},c1,pv,{1511544070 + k}\n" for k in range(9)) + "u1,i9,c1,jump,1511544080\n")
    log = RejectLog()
    read_events(src, log, EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions={"pv": "view"},
                                        item_text="category {category}"))
    log.check_rate(0.1)  # 1 of 10 rejected: at the maximum, accepted
    with pytest.raises(DataError, match=r"1 of 10 rows rejected \(10.0%, above --max-reject-rate 9.0%"):
        log.check_rate(0.09)


def test_a_time_in_the_other_unit_says_which_unit_the_file_keeps(tmp_path: Path) -> None:
    """A file's numeric times keep the unit of its first number: a time 1000x off is refused saying so, both ways, in
    both readers; with the unit given, the plain hint."""
    from test_scale_prepare import assert_same_read

    seconds = tmp_path / "s.csv"
    seconds.write_text("user_id,item_id,ts,action,text\n1,a,1511544070,click,A\n1,b,1511544080000,click,B\n", encoding="utf-8")
    millis = tmp_path / "ms.csv"
    millis.write_text("user_id,item_id,ts,action,text\n1,a,1511544070000,click,A\n1,b,1511544080,click,B\n", encoding="utf-8")
    reasons = {p.name: [r["reason"] for r in assert_same_read(p, EventsOptions()).rejects] for p in (seconds, millis)}
    assert reasons["s.csv"] == [("time out of range: 1511544080000 is in the year 49868; expected 1990-01-01 .. 2100-01-01 UTC "
                                "(milliseconds? this file's numeric times are unix seconds, set by its first number; one file "
                                "keeps one unit: convert this time, or read a file of milliseconds with --time-format unix_ms)")]
    assert reasons["ms.csv"] == [("time out of range: 1511544080 is 1970-01-18; expected 1990-01-01 .. 2100-01-01 UTC (seconds? "
                                 "this file's numeric times are unix milliseconds, set by its first number; one file keeps one "
                                 "unit: convert this time, or read a file of seconds with --time-format unix)")]
    given = RejectLog()
    read_events(millis, given, EventsOptions(time_format="unix_ms"))
    assert given.rejects[0]["reason"].endswith("(seconds? use --time-format unix)")


T0 = 1511544070


def test_columns_on_a_file_with_a_header_says_the_header_was_read_as_data(tmp_path: Path) -> None:
    """--columns names a headerless file's columns: on a file that has a header, its first line is rejected as a row
    (a time "ts" is no time), and a note says it looks like a header; a headerless file gets no such note."""
    with_header = tmp_path / "h.csv"
    with_header.write_text(f"user_id,item_id,action,ts\n1,a,click,{T0}\n2,b,click,{T0 + 1}\n", encoding="utf-8")
    log = RejectLog()
    read_events(with_header, log, EventsOptions(columns=["user_id", "item_id", "action", "ts"], item_text="x {item_id}"))
    assert [r["line"] for r in log.rejects] == [1]
    assert (f"{with_header}: line 1 looks like a header (user_id,item_id,action,ts), read as data because --columns says the "
            "file has none: drop --columns to read the file's own header") in log.notes
    plain = tmp_path / "p.csv"
    plain.write_text(f"1,a,click,bad\n2,b,click,{T0 + 1}\n", encoding="utf-8")
    log = RejectLog()
    read_events(plain, log, EventsOptions(columns=["user_id", "item_id", "action", "ts"], item_text="x {item_id}"))
    assert [r["line"] for r in log.rejects] == [1] and not any("looks like a header" in n for n in log.notes)


def test_a_category_that_is_no_text_is_rejected_not_spelled_as_python(tmp_path: Path) -> None:
    """In JSONL a category may be text or a number; a boolean, a list or an object would become Python's spelling
    ("True", "['a', 'b']"): its row is rejected saying what it is, in an items file and in the events (where the
    items are built from them); null is no category."""
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"item_id": "a", "text": "A", "category": "体育"}, {"item_id": "b", "text": "B", "category": True},
        {"item_id": "c", "text": "C", "category": ["体育", "足球"]}, {"item_id": "d", "text": "D", "category": None},
        {"item_id": "e", "text": "E", "category": 3, "subcategory": {"x": 1}}]) + "\n", encoding="utf-8")
    log_file = tmp_path / "log.csv"
    log_file.write_text("user_id,item_id,ts,action\n" + "".join(f"1,{i},{T0 + k},click\n" for k, i in enumerate("abcd")),
                        encoding="utf-8")
    log = RejectLog()
    out = read_events(log_file, log, EventsOptions(items=items))
    assert [(r["line"], r["reason"]) for r in log.rejects if r["file"] == str(items)] == [
        (2, "bad category: true is a JSON boolean; expected text or a number"),
        (3, 'bad category: ["体育", "足球"] is a JSON list; expected text or a number'),
        (5, 'bad subcategory: {"x": 1} is a JSON object; expected text or a number')]
    assert out.items[["item_id", "category"]].values.tolist() == [["a", "体育"], ["d", ""]]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(r) for r in [
        {"user_id": "1", "item_id": "a", "ts": T0, "action": "click", "text": "A", "category": False},
        {"user_id": "1", "item_id": "b", "ts": T0 + 1, "action": "click", "text": "B", "category": 7}]) + "\n", encoding="utf-8")
    log = RejectLog()
    out = read_events(events, log, EventsOptions())
    assert [r["reason"] for r in log.rejects] == ["bad category: false is a JSON boolean; expected text or a number"]
    assert out.items[["item_id", "category"]].values.tolist() == [["b", "7"]]


def test_item_texts_holding_the_replacement_character_are_counted_in_a_note(tmp_path: Path) -> None:
    """U+FFFD in an item text means it was decoded with errors before it reached the file (THUCNews has a few): kept,
    and said, with the count and an example, in both readers."""
    from test_scale_prepare import assert_same_read

    path = tmp_path / "log.csv"
    path.write_text(f"user_id,item_id,ts,action,text\n1,a,{T0},click,马伊\ufffd博客\n1,b,{T0 + 1},click,plain\n", encoding="utf-8")
    log = assert_same_read(path, EventsOptions())
    assert any(n.startswith(f"{path}: 1 item text(s) hold U+FFFD, the replacement character") and "item a: '马伊\ufffd博客'" in n
               for n in log.notes), log.notes


def test_typed_ids_that_are_no_ids_are_rejected_and_float_looking_text_ids_are_noted(tmp_path: Path) -> None:
    """JSON Lines and Parquet carry types: an id that is a boolean, an array, an object or a float with a fraction (or
    past 2^53, digits lost) is rejected, not made a user ``True`` or an item ``{"a": 1}``; a boolean value is no number.
    A whole float is the whole number (7.0 -> '7'). Text ids that look like floats (a float column exported to CSV) are
    kept as written, and a note says so, for both readers alike."""
    rows = [
        {"user_id": "u1", "item_id": "a", "ts": 1511544070},
        {"user_id": True, "item_id": "a", "ts": 1511544071},
        {"user_id": "u1", "item_id": {"a": 1}, "ts": 1511544072},
        {"user_id": ["u1"], "item_id": "a", "ts": 1511544073},
        {"user_id": "u1", "item_id": 1e20, "ts": 1511544074},
        {"user_id": "u1", "item_id": "b", "ts": 1511544075, "value": True},
        {"user_id": 7.0, "item_id": 12.5, "ts": 1511544076},
        {"user_id": 7.0, "item_id": 3, "ts": 1511544077},
    ]
    src = tmp_path / "log.jsonl"
    src.write_text("".join(json.dumps({**r, "action": "click", "text": "t"}) + "\n" for r in rows), encoding="utf-8")
    log = RejectLog()
    data = read_events(src, log, EventsOptions())
    expected = "; expected text or a whole number"
    assert _rejects(log) == [
        ("log.jsonl", 2, "bad user_id: true (a boolean)" + expected),
        ("log.jsonl", 3, 'bad item_id: {"a": 1} (a JSON object)' + expected),
        ("log.jsonl", 4, 'bad user_id: ["u1"] (a JSON array)' + expected),
        ("log.jsonl", 5, "bad item_id: 1e+20 (a number with a fraction, or past 2^53 where a float has lost digits)" + expected),
        ("log.jsonl", 6, "bad value: true (a boolean); expected a finite number"),
        ("log.jsonl", 7, "bad item_id: 12.5 (a number with a fraction, or past 2^53 where a float has lost digits)" + expected),
    ]
    assert list(zip(data.events["user_id"], data.events["item_id"])) == [("u1", "a"), ("7", "3")]

    pq = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [True, False], "item_id": ["a", "b"], "ts": [1511544070, 1511544071], "action": ["click"] * 2,
                  "text": ["t", "t"]}).to_parquet(pq, index=False)
    log = RejectLog()
    with pytest.raises(DataError, match="no valid rows"):
        read_events(pq, log, EventsOptions())
    assert [r[2] for r in _rejects(log)] == ["bad user_id: true (a boolean)" + expected, "bad user_id: false (a boolean)" + expected]

    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id,action,ts,text\nu1,2268318.0,click,1511544070,t\nu1,2268318,click,1511544071,t\n"
                   "u2,17.00,click,1511544072,t\n")
    notes = []
    for reader in ("lines", "columnar"):
        log = RejectLog()
        data = read_events(csv, log, EventsOptions(reader=reader))
        assert sorted(data.items["item_id"]) == ["17.00", "2268318", "2268318.0"]  # as written: three items
        notes.append([n for n in log.notes if "written as floats" in n])
    assert notes[0] == notes[1] == [
        (f"{csv}: 2 item ids look like whole numbers written as floats (e.g. '2268318.0'), kept as written: '2268318.0' and "
         "'2268318' would be two items; if the ids came from a float column, write them as integers")]


def test_values_past_the_agents_scale_are_noted(tmp_path: Path) -> None:
    """Values above 5 (the scale the agent reads value on: value / 5 clipped to 1) are counted in a note, ratings on a
    wider scale too, for both readers alike; a log within the scale has no such note."""
    src = tmp_path / "log.csv"
    src.write_text("user_id,item_id,action,ts,value,text\nu1,a,click,1511544070,3,t\nu1,b,click,1511544071,120,t\n"
                   "u2,a,click,1511544072,5,t\nu2,b,click,1511544073,7.5,t\nu2,c,rate,1511544074,4,t\nu3,c,rate,1511544074,9,t\n")
    expected = (f"{src}: 3 of 6 events have a value above 5 (largest 120): the agent reads value / 5 clipped to 1")
    for reader in ("lines", "columnar"):
        log = RejectLog()
        read_events(src, log, EventsOptions(reader=reader))
        assert [n[: len(expected)] for n in log.notes if "value above" in n] == [expected]
    src.write_text("user_id,item_id,action,ts,value,text\nu1,a,click,1511544070,3,t\nu1,b,rate,1511544071,5,t\n")
    log = RejectLog()
    read_events(src, log, EventsOptions())
    assert not [n for n in log.notes if "value above" in n]


def test_times_in_a_zone_other_than_tz_offset_are_noted(tmp_path: Path) -> None:
    """Times that carry a UTC offset are read right (UTC) whatever --tz-offset says, but the dataset's hour and weekday
    are at --tz-offset: when the two differ a note names the offsets seen and the --tz-offset of the most common one,
    for both readers alike; with that --tz-offset only the others are named."""
    src = tmp_path / "log.csv"
    src.write_text("user_id,item_id,action,ts,text\nu1,a,click,2017-11-25T20:00:00+08:00,t\nu1,b,click,2017-11-25T21:00:00+08:00,t\n"
                   "u2,a,click,2017-11-25T13:00:00+01:00,t\nu2,b,click,1511600000,t\n")
    expected = (f"{src}: 3 of 3 times with a UTC offset carry one other than --tz-offset 0 (+8 h on 2, +1 h on 1): they are read "
                "right (UTC), but the hour and weekday (the time-of-day rules and features) are at --tz-offset 0; for the users' "
                "local clock pass --tz-offset 8 (times read on rows rejected later for another reason included)")
    noon = calendar.timegm((2017, 11, 25, 12, 0, 0))
    for reader in ("lines", "columnar"):
        manifest = prepare_events(src, tmp_path / reader, options=EventsOptions(reader=reader), deterministic=True)
        assert [n for n in manifest["validation"]["notes"] if "UTC offset" in n] == [expected]
        events = pd.read_parquet(tmp_path / reader / "events.parquet")
        assert sorted(events["ts"]) == [1511600000, noon, noon, noon + 3600]
    manifest = prepare_events(src, tmp_path / "at8", options=EventsOptions(), tz_offset_hours=8.0, deterministic=True)
    assert [n for n in manifest["validation"]["notes"] if "UTC offset" in n] == [
        (f"{src}: 1 of 3 times with a UTC offset carry one other than --tz-offset 8 (+1 h on 1): they are read right (UTC), "
         "but the hour and weekday (the time-of-day rules and features) are at --tz-offset 8 (times read on rows rejected "
         "later for another reason included)")]
    src.write_text("user_id,item_id,action,ts,text\nu1,a,click,2017-11-25T20:00:00+08:00,t\n")
    manifest = prepare_events(src, tmp_path / "one", options=EventsOptions(), tz_offset_hours=8.0, deterministic=True)
    assert not [n for n in manifest["validation"]["notes"] if "UTC offset" in n]


def test_impression_events_of_a_generic_log_are_noted(tmp_path: Path) -> None:
    """A generic log's impression rows are kept as weight-0 events, and a note says they are not scoring points (both
    readers alike); a log without any has no such note."""
    src = tmp_path / "log.csv"
    src.write_text("user_id,item_id,action,ts,text\nu1,a,impression,1511544070,t\nu1,b,impression,1511544071,t\n"
                   "u1,a,click,1511544072,t\n")
    for reader in ("lines", "columnar"):
        log = RejectLog()
        data = read_events(src, log, EventsOptions(reader=reader))
        assert list(data.events["action"]) == ["impression", "impression", "click"]
        assert [n.split(": ", 1)[1][:60] for n in log.notes if "impression event" in n] == [
            "2 impression events kept as events of weight 0 (what was sho"]
    src.write_text("user_id,item_id,action,ts,text\nu1,a,click,1511544072,t\n")
    log = RejectLog()
    read_events(src, log, EventsOptions())
    assert not [n for n in log.notes if "impression event" in n]


def test_a_json_time_that_is_no_time_is_shown_as_json(tmp_path: Path) -> None:
    """A JSON object, array or boolean where a time belongs is shown in the reject reason as JSON writes it."""
    src = tmp_path / "log.jsonl"
    rows = [{"ts": {"s": 1}}, {"ts": [1511544070]}, {"ts": True}, {"ts": 1511544070}]
    src.write_text("".join(json.dumps({"user_id": "u", "item_id": "a", "action": "click", "text": "t", **r}) + "\n" for r in rows))
    log = RejectLog()
    read_events(src, log, EventsOptions())
    assert [reason.split(";")[0] for _, _, reason in _rejects(log)] == [
        'bad time: {"s": 1}', "bad time: [1511544070]", "bad time: true"]


def test_items_built_from_events_do_not_depend_on_which_users_row_came_first(tmp_path):
    """Without an items file the catalogue is in item-id order: the same log with its users' blocks in another
    order (each user's rows as they were) gives the same items.parquet, byte for byte."""

    blocks = {u: [f"{u},{i},{c},pv,{1511544000 + 60 * k}" for k, (i, c) in enumerate(rows)] for u, rows in
              {"7": [("30", "1"), ("4", "2"), ("30", "1")], "2": [("500", "3"), ("4", "2")], "9": [("11", "1"), ("500", "3")]}.items()}
    opts = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions={"pv": "view"},
                         item_text="category {category}")
    out = {}
    for name, order in (("a", ["7", "2", "9"]), ("b", ["9", "2", "7"])):
        src = tmp_path / f"{name}.csv"
        src.write_text("".join(line + "\n" for u in order for line in blocks[u]))
        prepare_events(src, tmp_path / name, options=opts, command=["test"], deterministic=True)
        out[name] = (tmp_path / name / "items.parquet").read_bytes()
    items = pd.read_parquet(tmp_path / "a" / "items.parquet")
    assert items["item_id"].tolist() == sorted({"30", "4", "500", "11"})  # code-point order, not first appearance
    assert out["a"] == out["b"]


def test_a_headerless_items_file_is_pointed_to_items_columns(tmp_path: Path) -> None:
    log = _log(tmp_path, "user_id,item_id,ts,action\n1,1,1511544070,click\n")
    items = _log(tmp_path, "1\tA title\tgame\n", "items.tsv")
    with pytest.raises(DataError, match=r"items.tsv: no item_id column .* \(its first line looks like data: if the items file has no "
                                        r"header, name its columns with --items-columns\)"):
        read_events(log, RejectLog(), EventsOptions(items=items))
    read_events(log, RejectLog(), EventsOptions(items=items, items_columns=["item_id", "text", "category"]))  # the fix works


def test_a_column_named_twice_gets_a_fix_that_works_where_the_names_came_from(tmp_path: Path) -> None:
    text = "user,item,event,timestamp,user\n1,2,click,1511544070,1\n"
    renames = {"user_id": "user", "item_id": "item", "action": "event", "ts": "timestamp"}
    with pytest.raises(DataError, match=r"column 'user' appears twice in the header; .*--map cannot tell two columns of one name "
                                        r"apart: name the columns yourself with --header --columns NAMES"):
        read_events(_log(tmp_path, text), RejectLog(), EventsOptions(rename=renames, item_text="x {item_id}"))
    # the fix it names: the header line is skipped, '-' drops the second column of that name
    out = read_events(_log(tmp_path, text), RejectLog(), EventsOptions(
        header=True, columns=["user_id", "item_id", "action", "ts", "-"], item_text="x {item_id}"))
    assert len(out.events) == 1
    with pytest.raises(DataError, match=r"column 'ts' appears twice in the --columns names; expected distinct names \('-' skips a "
                                        r"column: --columns a,b,-\)"):
        read_events(_log(tmp_path, text), RejectLog(), EventsOptions(header=True, columns=["user_id", "item_id", "action", "ts", "ts"]))
    with pytest.raises(DataError, match=r"column '\w+' appears twice in the renamed columns; .*rename with --map NEW=OLD"):
        read_events(_log(tmp_path, "user_id,uid,item_id,ts,action\n1,1,2,1511544070,click\n"), RejectLog(),
                    EventsOptions(rename={"user_id": "uid"}, item_text="x {item_id}"))
    items = _log(tmp_path, "item_id,text,text\ni1,a,b\n", "items.csv")
    with pytest.raises(DataError, match=r"items.csv: column 'text' appears twice in the header; .*rename one in the file's header"):
        read_events(_log(tmp_path, "user_id,item_id,ts,action\n1,i1,1511544070,click\n"), RejectLog(), EventsOptions(items=items))


def test_a_headerless_file_whose_first_row_repeats_a_value_is_told_it_has_no_header(tmp_path: Path) -> None:
    """The duplicate name is a data row's repeated value: the fix is --columns (every row kept), not --header --columns
    (which would skip that row)."""
    log = _log(tmp_path, "1,1,click,1511544070\n2,5,click,1511544071\n")
    with pytest.raises(DataError, match=r"column '1' appears twice in the header; expected distinct names \(its first line looks "
                                        r"like data: if the file has no header, name its columns with --columns\)"):
        read_events(log, RejectLog(), EventsOptions(item_text="x {item_id}"))
    out = read_events(log, RejectLog(), EventsOptions(columns=["user_id", "item_id", "action", "ts"], item_text="x {item_id}"))
    assert len(out.events) == 2
    items = _log(tmp_path, "1\tA title\tsports\tsports\n", "items.tsv")
    with pytest.raises(DataError, match=r"items.tsv: column 'sports' appears twice .*name its columns with --items-columns"):
        read_events(_log(tmp_path, "user_id,item_id,ts,action\n1,1,1511544070,click\n"), RejectLog(), EventsOptions(items=items))
