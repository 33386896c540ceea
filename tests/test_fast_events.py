"""The columnar reader's vectorised parts against plain-Python expectations, and the whole reader against
the line reader (same rejects, same dataset bytes) on logs built to hit each of its paths."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_prepare_events import TAOBAO_ACTIONS
from test_scale_prepare import TAOBAO, _fuzz_log, assert_same_dataset, assert_same_read

from interestgym.data import fast_checks, fast_lines
from interestgym.data.events import EventsOptions, read_events
from interestgym.data.fast_checks import splice
from interestgym.data.fast_lines import Lines, code_point_order, first_equal
from interestgym.data.readers import Source, raw_lines
from interestgym.data.validate import RejectLog


# ------------------------------------------------------------------------------------------ parts
def _expected_first(values: list[bytes]) -> list[int]:
    first_of: dict[bytes, int] = {}
    for i, v in enumerate(values):
        first_of.setdefault(v, i)
    return [first_of[v] for v in values]


@pytest.mark.parametrize("longest", [0, 1, 8, 9, 16, 17, 32, 33, 80])  # bytes: empty; 1-4 words; Arrow past them
def test_code_point_order_is_pythons_sorted(longest: int) -> None:
    """The catalogue's order: Python's ``sorted`` on str (code points), stable, on ids of every length, a prefix of
    another id, non-ASCII ids whose UTF-8 bytes reach 0xF0, and a NUL inside an id (Arrow's path)."""
    rng = random.Random(longest)
    alphabet = "0123456789az" * 3 + "\u00e9\u00ff\u4e2d\U0001f600" + ("\0" if longest == 33 else "")

    def text() -> str:
        out = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))
        while len(out.encode()) > longest:  # at most ``longest`` bytes
            out = out[:-1]
        return out

    pool = [text() for _ in range(400)]
    pool += [p[: len(p) // 2] for p in pool[:50]]  # prefixes: the shorter first
    values = [rng.choice(pool) for _ in range(2000)]
    expected = sorted(range(len(values)), key=values.__getitem__)  # stable: equal ids keep their order
    for array in (pa.array(values, pa.string()), pa.array(values, pa.large_string()), pa.chunked_array([values[:700], values[700:]])):
        assert code_point_order(array).tolist() == expected
    sliced = pa.array(values, pa.string()).slice(300, 900)  # an offset into the buffers
    assert code_point_order(sliced).tolist() == sorted(range(900), key=values[300:1200].__getitem__)
    assert code_point_order(pa.array([], pa.string())).tolist() == []


@pytest.mark.parametrize("longest", [7, 40, 300])  # one word; words kept for the check; Arrow's check
def test_first_equal_is_exact_with_values_of_every_length(longest: int) -> None:
    rng = random.Random(longest)
    pool = [bytes(rng.randrange(256) for _ in range(rng.randint(0, longest))) for _ in range(300)]
    pool += [p + b"\0" for p in pool[:20]] + [b"", b"\0", b"\0\0"]  # trailing zero bytes are data, not padding
    values = [rng.choice(pool) for _ in range(3000)]
    assert first_equal(pa.array(values, pa.binary())).tolist() == _expected_first(values)
    rows = np.array(sorted(rng.sample(range(len(values)), 1000)))
    got = first_equal(pa.array(values, pa.large_binary()), rows)  # 64-bit offsets too
    assert got.tolist() == _expected_first([values[r] for r in rows])


@pytest.mark.parametrize("weak", ["key", "key and hash"])
def test_first_equal_stays_exact_when_keys_and_hashes_collide(monkeypatch: pytest.MonkeyPatch, weak: str) -> None:
    real_hash = fast_lines.hash_binary
    monkeypatch.setattr(fast_lines, "_mix", lambda head, tail, lengths: np.zeros(len(lengths), np.uint64))  # one key for all
    if weak == "key and hash":  # the full-byte hashes collide too: only the byte check can tell values apart
        monkeypatch.setattr(fast_lines, "hash_binary", lambda values: (np.zeros(len(values), np.uint64), *real_hash(values)[1:]))
    rng = random.Random(3)
    values = [rng.choice([b"a", b"b", b"", b"ccc", b"x" * 20, b"x" * 19 + b"y", b"\0" * 9]) for _ in range(200)]
    assert first_equal(pa.array(values, pa.binary())).tolist() == _expected_first(values)
    rows = np.arange(0, 200, 3)
    assert first_equal(pa.array(values, pa.binary()), rows).tolist() == _expected_first([values[r] for r in rows])


# scan blocks of 7 bytes (lines and rare bytes across block edges); a UTF-8 check by line or of the whole file
@pytest.mark.parametrize(("block", "decode_lines"), [(1 << 22, 20000), (7, 0)])
def test_lines_match_raw_lines_blank_and_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, decode_lines: int) -> None:
    monkeypatch.setattr(fast_lines, "_SCAN_BLOCK", block)
    monkeypatch.setattr(fast_lines, "_DECODE_LINES", decode_lines)
    data = (b"\xef\xbb\xbfa,b\r\n\r\n  \t\nx\r\r\ny\rz\n\xc3\x28bad\n\xe2\x82\xacok\n \x0b\n" + b"last,no,newline")
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    want = list(raw_lines(Source(path)))
    L = Lines(data)
    assert [(i + 1, L.raw(i)) for i in range(L.n)] == want
    assert L.non_blank.tolist() == [bool(raw.strip()) for _, raw in want]

    def bad(raw: bytes) -> bool:
        try:
            raw.decode("utf-8")
            return False
        except UnicodeDecodeError:
            return True

    assert L.bad_utf8.tolist() == [bad(raw) for _, raw in want]
    for byte in (9, 13, ord('"'), ord("x")):
        assert L.has_byte(byte).tolist() == [bytes([byte]) in raw for _, raw in want]


@pytest.mark.parametrize("longest", [7, 8, 40])  # packed words; first_equal's index
def test_identity_is_exact(longest: int) -> None:
    rng = random.Random(longest)
    pool = [bytes(rng.randrange(256) for _ in range(rng.randint(0, longest))) for _ in range(50)]
    pool += [p + b"\0" for p in pool[:10] if len(p) < longest] + [b""]
    values = [rng.choice(pool) for _ in range(500)]
    ids = fast_lines.identity(pa.array(values, pa.binary())).tolist()
    assert [ids[i] == ids[j] for i in range(0, 500, 7) for j in range(0, 500, 11)] == \
        [values[i] == values[j] for i in range(0, 500, 7) for j in range(0, 500, 11)]


@pytest.mark.parametrize(("loop", "block"), [(4096, 1 << 22), (0, 1 << 22), (4096, 5)])  # bytes.find loop; numpy pass; small scan blocks
def test_attention_flags_exactly_the_lines_python_rules_may_change(monkeypatch: pytest.MonkeyPatch, loop: int, block: int) -> None:
    monkeypatch.setattr(fast_lines, "_FIND_LOOP", loop)
    monkeypatch.setattr(fast_lines, "_SCAN_BLOCK", block)
    lines = [b"a,b,c", b" a,b", b"a ,b", b"a, b", b"a,b ", b"a b,c", b"a\x00,b", b"a,\x7f", b"a\xc2\xa0,b", b"\xe3\x80\x80x",
             b"plain,text", b"", b" ", b"a,\tb", b"a\x1fb", b"x,y"]
    L = Lines(b"\n".join(lines) + b"\n")
    special = set(range(32)) | {0x7F, 0xC2, 0xE1, 0xE2, 0xE3}
    special -= {ord(",")}

    def needs(line: bytes) -> bool:
        return any(b in special for b in line) or any(f != f.strip(b" ") for f in line.split(b","))

    assert L.attention(ord(",")).tolist() == [needs(line) for line in lines]
    tab_special = special - {9}  # a TSV: the tab is the delimiter

    def needs_tab(line: bytes) -> bool:
        return any(b in tab_special for b in line) or any(f != f.strip(b" ") for f in line.split(b"\t"))

    assert L.attention(9).tolist() == [needs_tab(line) for line in lines]


@pytest.mark.parametrize("few", [2048, 0])  # slices; Arrow's replace / take
def test_splice_inserts_and_replaces_like_python_lists(monkeypatch: pytest.MonkeyPatch, few: int) -> None:
    monkeypatch.setattr(fast_checks, "_FEW", few)
    base = [f"v{i}" for i in range(10)]
    at, new = np.array([0, 3, 3, 10]), ["A", "B", "C", "D"]
    got = splice(pa.array(base, pa.large_string()), at, pa.array(new, pa.large_string()), replace=False).to_pylist()
    # each insert goes before its position; inserts at one position keep their order
    assert got == ["A", "v0", "v1", "v2", "B", "C", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "D"]
    at = np.array([1, 4, 9])
    got = splice(pa.array(base, pa.large_string()), at, pa.array(["x", "y", "z"], pa.large_string()), replace=True).to_pylist()
    assert got == ["v0", "x", "v2", "v3", "y", "v5", "v6", "v7", "v8", "z"]


# ------------------------------------------------------------------------------ whole reader
def test_auto_time_unit_numbers_before_the_deciding_one_and_iso_first(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,ts,action,text\n"
        "1,a,2017-11-25T12:00:00,click,A\n"   # ISO before any number
        "1,b,5,click,B\n"                      # a number in no unit's range: decides nothing
        "1,c,1e30,click,C\n"                   # same, written as a float
        "1,d,nan,click,D\n"                    # not a number: ISO, fails
        "1,e,1511544070000,click,E\n"          # milliseconds decide the unit
        "1,f,1511544071,click,F\n"             # seconds now out of range
        "1,g,1511544072000.5,click,G\n"        # a float in milliseconds
        "1,h,bad,click,H\n"                    # the reason names the formats used so far
        "1,i, 1511544073000 ,click,I\n", encoding="utf-8")
    log = assert_same_read(path, EventsOptions())
    assert [r["line"] for r in log.rejects] == [3, 4, 5, 7, 9]
    assert_same_dataset(path, EventsOptions(), tmp_path)


def test_items_whose_first_rows_have_no_text_and_category_changes(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,ts,action,text,category,device\n"
        "1,a,1511544070,click,,c1,ios\n"        # a: first row without text (rejected)
        "1,a,1511544071,click,,c2,ios\n"        # again
        "1,b,1511544072,click,B,c1,web\n"
        "1,a,1511544073,click,Alpha,c3,ios\n"   # a registered here, category c3
        "2,a,1511544074,click,,c1,web\n"        # later rows need no text; c1 differs from c3
        "2,z,1511544075,click,,,web\n"          # z never gets text
        "2,b,1511544076,click,,,web\n"          # no category: no change
        "2,b,1511544077,click,,c9,web\n", encoding="utf-8")
    log = assert_same_read(path, EventsOptions())
    assert [r["line"] for r in log.rejects] == [2, 3, 7]
    assert_same_dataset(path, EventsOptions(), tmp_path)


@pytest.mark.parametrize("template", ["{ts}", " item {item_id} ", "{category}-{subcategory}", "{category!r}", "{category} {subcategory}"])
def test_templates_render_like_the_line_reader(tmp_path: Path, template: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,ts,action,category,subcategory\n"
        "1,a,1511544070,click,c1,s1\n"
        "1,b,1511544071,click,,s2\n"
        "1,c,1511544072,click,c3,\n"
        "1,d,1511544073,click,,\n"
        "1,e,1511544074,click, c5 , s5 \n", encoding="utf-8")
    opts = EventsOptions(item_text=template)
    assert_same_read(path, opts)
    assert_same_dataset(path, opts, tmp_path)


def test_items_file_unknown_items_and_context_selection(tmp_path: Path) -> None:
    items = tmp_path / "items.tsv"
    items.write_text("item_id\ttext\tcategory\nA\tApple\tfruit\nB\tBanana\tfruit\n", encoding="utf-8")
    path = tmp_path / "log.tsv"
    path.write_text("user_id\titem_id\tts\taction\tdevice\tchannel\n"
                    "1\tA\t1511544070\tclick\tios\tad\n"
                    "1\tC\t1511544071\tclick\tweb\tad\n"          # unknown item
                    '1\t"B"\t1511544072\tclick\tweb\tmail\n'      # quotes are data in TSV: unknown
                    "2\tB\t1511544073\tclick\tweb\tmail\n", encoding="utf-8")
    opts = EventsOptions(items=items, context=["device"])
    log = assert_same_read(path, opts)
    assert [r["line"] for r in log.rejects] == [3, 4]
    assert_same_dataset(path, opts, tmp_path)


def test_many_quoted_and_carriage_return_lines_take_the_bulk_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # more line-reader rows and \r lines than splice's slice path and the find loop handle
    monkeypatch.setattr(fast_checks, "_FEW", 8)
    monkeypatch.setattr(fast_lines, "_FIND_LOOP", 8)
    rng = random.Random(7)
    rows = []
    for i in range(600):
        kind = rng.randrange(6)
        if kind == 0:
            rows.append(f'{i % 40},"{i % 70},x",c{i % 3},pv,{1511544070 + i}')
        elif kind == 1:
            rows.append(f'{i % 40},"{i % 70}\n{i % 5}",c1,buy,{1511544070 + i}')  # spans two lines
        elif kind == 2:
            rows.append(f"{i % 40},{i % 70}\r,c2,cart,{1511544070 + i}")  # a lone \r: split by str.split
        elif kind == 3:
            rows.append(f"{i % 40},{i % 70}, c{i % 4} ,pv,{1511544070 + i}")
        else:
            rows.append(f"{i % 40},{i % 70},c{i % 3},pv,{1511544070 + i}")
    rows += rng.sample(rows, 60)  # duplicates, some of them of quoted records
    rng.shuffle(rows)
    path = tmp_path / "log.csv"
    path.write_bytes(("\n".join(rows) + "\n").encode("utf-8"))
    assert_same_read(path, TAOBAO)
    assert_same_dataset(path, TAOBAO, tmp_path)


@pytest.mark.parametrize("seed", range(4))
def test_random_logs_read_identically_even_when_every_hash_collides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    real_mix, real_hash = fast_lines._mix, fast_lines.hash_binary
    # two distinct keys and hashes: collisions everywhere, caught by the comparisons of parts and bytes
    monkeypatch.setattr(fast_lines, "_mix", lambda *parts: real_mix(*parts) & np.uint64(1 << 63))
    monkeypatch.setattr(fast_lines, "hash_binary", lambda values: (real_hash(values)[0] & np.uint64(1 << 63), *real_hash(values)[1:]))
    path = tmp_path / "fuzz.csv"
    path.write_bytes(_fuzz_log(random.Random(100 + seed), 300))
    opts = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS,
                         item_text="category {category}")
    assert_same_read(path, opts)


EDGE_FILES = {
    "empty.csv": b"",
    "header_only.csv": b"user_id,item_id,ts,action,text\n",
    "blank_only.csv": b"\n\n  \n",
    "bom_only.csv": b"\xef\xbb\xbf",
    "one_line_no_newline.csv": b"user_id,item_id,ts,action,text\n1,a,1511544070,click,x",
    "cr_line_ends.csv": b"user_id,item_id,ts,action,text\r1,a,1511544070,click,x\r",
    "all_duplicates.csv": b"user_id,item_id,ts,action,text\n" + b"1,a,1511544070,click,x\n" * 5,
    "all_quoted.csv": b"user_id,item_id,ts,action,text\n" + b'1,a,1511544070,click,"x, y"\n' * 3 + b'2,"b\n",1511544071,click,"z"\n',
    "unterminated_quote.csv": b'user_id,item_id,ts,action,text\n1,a,1511544070,click,"open\n2,b,1511544071,click,y\n3,c,1511544072,click,z\n',
    "header_repeated.csv": b"user_id,item_id,ts,action,text\nuser_id,item_id,ts,action,text\n1,a,1511544070,click,x\n",
    "nul_line.csv": b"user_id,item_id,ts,action,text\n\x00\n1,a,1511544070,click,x\n",
    "tabs_at_ends.tsv": b"user_id\titem_id\tts\taction\ttext\n1\ta\t1511544070\tclick\tx\t\n1\ta\t1511544070\tclick\t x \n",
    "unicode_spaces.csv": "user_id,item_id,ts,action,text\n\u00a01,a\u2003,1511544070,click,x\u3000\n1,\u0085b,1511544071,click,y\n".encode(),
}


@pytest.mark.parametrize("name", sorted(EDGE_FILES))
def test_edge_files_read_identically(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(EDGE_FILES[name])
    assert_same_read(path, EventsOptions())


def test_headerless_log_with_skipped_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("1,junk,a,c1,pv,1511544070\n2,junk,b,,buy,1511544071\n2,,b,c2,buy,1511544072\n", encoding="utf-8")
    opts = EventsOptions(columns=["user_id", "-", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS,
                         item_text="category {category}")
    assert_same_read(path, opts)
    assert_same_dataset(path, opts, tmp_path)


def test_an_item_registered_by_a_later_row_keeps_that_rows_category_in_a_template(tmp_path: Path) -> None:
    """The first row of `a` renders no text: a later row registers the item, with its own category."""
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts,action,category\n"
                    "1,a,1511544070,click,\n"
                    "1,a,1511544071,click,c2\n"
                    "1,b,1511544072,click,c3\n", encoding="utf-8")
    opts = EventsOptions(item_text="{category}")
    assert_same_read(path, opts)
    assert_same_dataset(path, opts, tmp_path)


def test_a_bom_at_the_start_of_a_later_line_stays_in_its_cell(tmp_path: Path) -> None:
    """Only the file's first BOM is removed; one starting a later line is part of the cell (Arrow's CSV
    parser would drop it when the line starts the buffer it is given)."""
    path = tmp_path / "log.csv"
    path.write_bytes("user_id,item_id,ts,action,text\n\ufeff1,a,1511544070,click,x\n2,b,1511544071,click,y\n".encode())
    assert_same_read(path, EventsOptions())
    assert_same_dataset(path, EventsOptions(), tmp_path)
    quirky = tmp_path / "quirky.csv"
    quirky.write_bytes(b"user_id,item_id,ts,action,text\r\n\xef\xbb\xbf1.5e9,view\r\n")
    assert_same_read(quirky, EventsOptions())


def test_a_file_that_is_only_a_bom_is_one_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(b"\xef\xbb\xbf")
    assert_same_read(path, EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"],
                                         actions={"pv": "view"}))


@pytest.mark.parametrize("sep", [";", "|", "\t"])
def test_a_delimiter_given_reads_identically_in_both_readers(tmp_path: Path, sep: str) -> None:
    """--delimiter: the fuzz log with its commas made `sep` (quoted ones too: a quoted field keeps its separator as
    data) reads alike in both readers, and keeps as many rows as the comma log it came from."""
    comma = tmp_path / "fuzz.csv"
    comma.write_bytes(_fuzz_log(random.Random(7), 300))
    other = tmp_path / "fuzz.txt"
    other.write_bytes(comma.read_bytes().replace(b",", sep.encode()))
    opts = EventsOptions(columns=["user_id", "item_id", "category", "action", "ts"], actions=TAOBAO_ACTIONS,
                         item_text="category {category}")
    base = assert_same_read(comma, opts)
    log = assert_same_read(other, EventsOptions(**{**opts.__dict__, "delimiter": sep}))
    kept = lambda rejects: sum(st.kept for st in rejects.files.values())
    if sep != "\t":  # a tab-separated file is TSV: quotes are data there, so quoted rows read otherwise
        assert kept(log) == kept(base) and [r["line"] for r in log.rejects] == [r["line"] for r in base.rejects]
    assert_same_dataset(other, EventsOptions(**{**opts.__dict__, "delimiter": sep}), tmp_path)


def test_an_empty_value_is_no_value_and_a_rating_needs_one(tmp_path: Path) -> None:
    """An empty value cell means no value: 1.0 (said in a note, with the count), as a missing column does; a
    rating without a value is rejected (its value is the rating). Both readers, the same dataset."""
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,ts,action,value,text\n"
        "1,a,1511544070,impression,,A\n"   # no value: 1.0
        "1,a,1511544071,click,,A\n"        # likewise
        "1,a,1511544072,view,0.4,A\n"      # a read fraction
        "1,b,1511544073,rate,,B\n"         # a rating without its value: rejected
        "1,b,1511544074,rate, ,B\n"        # a blank cell is empty too
        "1,b,1511544075,rate,4,B\n"
        "1,c,1511544076,click,  ,C\n"      # blank: 1.0
        "1,c,1511544077,click,x,C\n", encoding="utf-8")  # not a number: rejected as before
    log = assert_same_read(path, EventsOptions())
    assert [(r["line"], r["reason"]) for r in log.rejects] == [
        (5, "missing value: a rate event needs its rating; expected a number"),
        (6, "missing value: a rate event needs its rating; expected a number"),
        (9, "bad value: 'x'; expected a finite number")]
    assert any("log.csv: 3 rows with an empty value (an empty cell or null) read as 1.0" in n for n in log.notes), log.notes
    out = read_events(path, RejectLog(), EventsOptions(reader="lines"))
    assert out.events["value"].tolist() == [1.0, 1.0, np.float32(0.4), 4.0, 1.0]
    assert_same_dataset(path, EventsOptions(), tmp_path)


def test_values_below_zero_are_kept_and_counted_in_a_note(tmp_path: Path) -> None:
    """A value below 0 (a return's quantity, a signed score) is kept as given, and the note says how many rows had one
    and what the agent's observation makes of it; rows rejected at the value check or before are not counted. Both
    readers alike."""
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,ts,action,value,text\n"
        "1,a,1511544070,click,-5,A\n"       # counted
        "1,a,1511544071,click,0,A\n"
        "1,b,1511544072,rate,-1.5,B\n"      # counted
        "1,b,1511544073,clik,-2,B\n"        # rejected at the action: not counted
        "1,c,1511544074,view,-0.0,C\n", encoding="utf-8")  # -0 is not below 0
    log = assert_same_read(path, EventsOptions())
    assert [r["line"] for r in log.rejects] == [5]
    notes = [n for n in log.notes if "below 0" in n]
    assert notes == [(f"{path}: 2 rows with a value below 0, kept as given: the agent's feedback_value observation reads values "
                      "as ratings, quantities or read fractions and takes one below 0 as 0 (rows rejected later for another "
                      "reason included)")]
    out = read_events(path, RejectLog(), EventsOptions(reader="lines"))
    assert out.events["value"].tolist() == [-5.0, 0.0, -1.5, -0.0]
    assert_same_dataset(path, EventsOptions(), tmp_path)


def test_jsonl_null_and_missing_values(tmp_path: Path) -> None:
    """In JSONL a null value and a missing key both mean no value; a rating needs one either way."""
    path = tmp_path / "log.jsonl"
    rows = [
        '{"user_id": "1", "item_id": "a", "ts": 1511544070, "action": "click", "value": null, "text": "A"}',
        '{"user_id": "1", "item_id": "a", "ts": 1511544071, "action": "click", "text": "A"}',
        '{"user_id": "1", "item_id": "b", "ts": 1511544072, "action": "rate", "text": "B"}',
        '{"user_id": "1", "item_id": "b", "ts": 1511544073, "action": "rate", "value": null, "text": "B"}',
        '{"user_id": "1", "item_id": "b", "ts": 1511544074, "action": "rate", "value": 5, "text": "B"}']
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    log = RejectLog()
    out = read_events(path, log, EventsOptions())
    assert [(r["line"], r["reason"]) for r in log.rejects] == [
        (3, ("missing value: a rate event needs its rating, and the row has no value field (--map value=COLUMN names a column "
             "of another name); expected a number")),
        (4, "missing value: a rate event needs its rating; expected a number")]
    # a CSV without a value column: its ratings say so, in both readers
    no_column = tmp_path / "ratings.csv"
    no_column.write_text("user_id,item_id,ts,action,rating,text\n1,a,1511544070,rate,4,A\n", encoding="utf-8")
    got = assert_same_read(no_column, EventsOptions())
    assert got.rejects[0]["reason"].startswith("missing value: a rate event needs its rating, and the row has no value field")
    assert out.events["value"].tolist() == [1.0, 1.0, 5.0]
    assert any("1 row with an empty value" in n for n in log.notes), log.notes  # the null; a missing key is no note


def test_events_of_an_item_the_items_file_rejected_say_so(tmp_path: Path) -> None:
    """An item whose row the items file rejected (empty text) is not "not in the items file": its events' reason
    names the line and why; an item rejected at one row and kept at a later one is known. Both readers alike."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,text,category\nA,Apple,fruit\nB,,fruit\nC,\u3000,fruit\nD,,x\nD,Date,fruit\n", encoding="utf-8")
    path = tmp_path / "log.csv"
    path.write_text("user_id,item_id,ts,action\n1,A,1511544070,click\n1,B,1511544071,click\n1,C,1511544072,click\n"
                    "1,D,1511544073,click\n1,E,1511544074,click\n", encoding="utf-8")
    opts = EventsOptions(items=items)
    log = assert_same_read(path, opts)
    assert [(r["line"], r["reason"]) for r in log.rejects if r["file"] == str(path)] == [
        (3, f"unknown item: 'B' was rejected in the items file {items} (line 3: empty text: item B has no text; expected text)"),
        (4, f"unknown item: 'C' was rejected in the items file {items} (line 4: empty text: item C has no text; expected text)"),
        (6, f"unknown item: 'E' is not in the items file {items}")]
    assert_same_dataset(path, opts, tmp_path)
