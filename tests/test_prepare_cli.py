"""`interestgym prepare`: argument plumbing, one-line errors, exit codes, output folder, summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from cli_fixtures import run

GENRES = ["unknown", "Action", "Comedy"]




@pytest.fixture()
def movielens(tmp_path: Path) -> Path:
    """A small ml-100k-style folder: 30 users, 4 movies, one rating each per movie."""
    d = tmp_path / "ml"
    d.mkdir()
    (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)))
    (d / "u.item").write_text("\n".join(f"{m}|Movie {m} (1995)|01-Jan-1995||http://x|0|{m % 2}|{1 - m % 2}" for m in range(1, 5)) + "\n")
    rows = [f"{u}\t{m}\t{1 + (u + m) % 5}\t{880000000 + 1000 * u + m}" for u in range(1, 31) for m in range(1, 5)]
    (d / "u.data").write_text("\n".join(rows) + "\n")
    return d


def test_movielens_end_to_end_summary_manifest_and_command(movielens: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    code, stdout, stderr = run(["prepare", "movielens", str(movielens), "--out", str(out), "--split", "0.5,0.25,0.25", "--split-seed", "3"], capsys)
    assert code == 0, stderr
    assert re.search(r"\n  events +120  \(rate 120\)\n", stdout)
    assert re.search(r"\n  users +30  \(train 15 / valid 8 / test 7; split seed 3\)\n", stdout)
    assert f"{movielens / 'u.data'}: 120 rows read, 120 kept, 0 rejected, 0 blank, 0 duplicate" in stdout
    assert stdout.rstrip().endswith(f"Next: interestgym encode {out} --encoder minilm")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["fractions"] == {"train": 0.5, "valid": 0.25, "test": 0.25} and manifest["split"]["seed"] == 3
    assert manifest["command"] == f"interestgym prepare movielens {movielens} --out {out} --split 0.5,0.25,0.25 --split-seed 3"
    assert manifest["source"]["format"] == "movielens"

    # The split depends only on the seed and the user ids: a second run gives the same users.parquet.
    again = tmp_path / "again"
    assert run(["prepare", "movielens", str(movielens), "--out", str(again), "--split", "0.5,0.25,0.25", "--split-seed", "3"], capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "users.parquet"), pd.read_parquet(again / "users.parquet"))


def test_out_folder_rules(movielens: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert run(["prepare", "movielens", str(movielens), "--out", str(out)], capsys)[0] == 0
    code, _, err = run(["prepare", "movielens", str(movielens), "--out", str(out)], capsys)
    assert code == 2 and err == f"error: --out {out}: holds a dataset; choose another folder or pass --overwrite\n"

    (out / "embeddings").mkdir()
    (out / "embeddings" / "minilm.json").write_text("{}")
    (out / "cache").mkdir()
    (out / "cache" / "keep.txt").write_text("cache keyed by text stays valid")
    (out / "truth.npy").write_bytes(b"from an older synthetic dataset")
    code, _, err = run(["prepare", "movielens", str(movielens), "--out", str(out), "--overwrite", "--time-split", "0.5"], capsys)
    assert code == 0, err
    assert (out / "embeddings" / "minilm.json").is_file() and (out / "cache" / "keep.txt").is_file()
    assert not (out / "truth.npy").exists()  # a table of the old dataset does not survive
    events = pd.read_parquet(out / "events.parquet")
    # --time-split 0.5: events in the second half of each user's time span are late.
    span = events.groupby("user_id")["ts"].agg(["min", "max"])
    lo, hi = events["user_id"].map(span["min"]), events["user_id"].map(span["max"])
    assert (events["late"] == (events["ts"] >= lo + 0.5 * (hi - lo))).all() and events["late"].any() and not events["late"].all()

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = run(["prepare", "movielens", str(movielens), "--out", str(other), "--overwrite"], capsys)
    assert code == 2 and "is not empty and holds no dataset (no manifest.json); refusing to write into it" in err
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["prepare", "nosuchformat", "x"], "error: format 'nosuchformat': expected one of mind, movielens, events, synthetic\n"),
        (["prepare", "movielen", "x"], "error: format 'movielen': expected one of mind, movielens, events, synthetic (did you mean movielens?)\n"),
        (["prepare", "mind"], "error: prepare mind: INPUT is missing; expected a MIND folder or zip\n"),
        (["prepare", "synthetic", "somefile"], "error: prepare synthetic takes no INPUT (found 'somefile'); use --out DIR and generator options\n"),
        (["prepare", "synthetic", "--tz-offset", "8"], "error: --tz-offset does not apply to `prepare synthetic`\n"),
        (["prepare", "movielens", "x", "--columns", "a,b"], "error: --columns applies to `prepare events` only, not to `prepare movielens`\n"),
        (["prepare", "events", "x", "--no-tags"], "error: --tags applies to `prepare movielens` only, not to `prepare events`\n"),
        (["prepare", "mind", "x", "--users", "5"], "error: --users applies to `prepare synthetic` only, not to `prepare mind`\n"),
        (["prepare", "movielens", "x", "--split", "0.6,0.4"], "error: --split '0.6,0.4': expected three fractions TRAIN,VALID,TEST such as 0.6,0.2,0.2\n"),
        (["prepare", "movielens", "x", "--split", "0.5,0.5,0.5"], "error: split fractions train=0.5 valid=0.5 test=0.5 sum to 1.5; expected 1\n"),
        (["prepare", "movielens", "x", "--max-reject-rate", "2"], "error: --max-reject-rate 2: expected a fraction in [0, 1]\n"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*args, "--out", str(tmp_path / "o")], capsys)
    assert (code, out, err) == (2, "", expected)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("template", "found"), [
    ("{category:d}", "Unknown format code 'd' for object of type 'str'"),
    ("{category!z}", "Unknown conversion specifier z"),
    ("{category:%Y}", "Invalid format specifier '%Y' for object of type 'str'"),
])
def test_an_item_text_template_that_text_cannot_fill_is_one_line(template: str, found: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A review's find: a conversion or a number format in --item-text passed the field-name check and raised a traceback
    (exit 1) from the middle of the reading, in both readers; a text spec ({category:.2}, cut to 2 characters) works."""
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,ts,action,category\n1,a,1511544070,click,c1\n2,a,1511544071,click,c1\n")
    for reader in ("lines", "auto"):
        code, out, err = run(["prepare", "events", str(log), "--out", str(tmp_path / "o"), "--item-text", template,
                              "--reader", reader], capsys)
        assert (code, out) == (2, "") and err == (f"error: --item-text {template!r}: {found}; expected {{column}} fields, each "
                                                  "read as text (a spec such as {title:.60} cuts it; conversions and number "
                                                  "formats do not apply)\n"), err
    assert run(["prepare", "events", str(log), "--out", str(tmp_path / "o"), "--item-text", "{category:.1}"], capsys)[0] == 0
    assert pd.read_parquet(tmp_path / "o" / "items.parquet")["text"].tolist() == ["c"]


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_records_joined_by_cr_alone_among_lf_lines_are_refused_not_one_reject(reader: str, tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A review's find: 50 lines ended by CR alone in the middle of an LF file were read as one line and passed as
    "1 rejected" (under the 1% limit): 50 events lost in a count of one. A lone CR inside a single record's text is
    still a text character."""
    rows = [f"u{i % 20},i{i},{1511544070 + i},click,t{i}" for i in range(300)]
    log = tmp_path / "crmix.csv"
    log.write_bytes(("user_id,item_id,ts,action,text\n" + "\n".join(rows[:150]) + "\n" + "\r".join(rows[150:200]) + "\n"
                     + "\n".join(rows[200:]) + "\n").encode())
    code, _, err = run(["prepare", "events", str(log), "--out", str(tmp_path / "o"), "--reader", reader], capsys)
    assert code == 2 and err.startswith(f"error: {log} line 152: 50 records joined by carriage returns (CR) alone (it begins "
                                        "'u10,i150,1511544220,click,t150\\ru11,"), err
    assert "expected LF or CRLF line ends" in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
    one = tmp_path / "onecr.csv"
    one.write_bytes(("user_id,item_id,ts,action,text\nu1,i1,1511544070,click,a\rb\n"
                     + "".join(f"u{i % 5},i{i},{1511544072 + i},click,t\n" for i in range(50))).encode())
    assert run(["prepare", "events", str(one), "--out", str(tmp_path / "o1"), "--reader", reader], capsys)[0] == 0
    assert "a\rb" in pd.read_parquet(tmp_path / "o1" / "items.parquet")["text"].tolist()


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_records_that_span_several_lines_are_said_in_a_note(reader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A review's find: a quote left open joined the next lines into one text field, and the rows in it vanished without a
    word (the counts balanced: rows read counts records). Every record read from several lines is now said, with its
    lines, in both readers."""
    log = tmp_path / "s.csv"
    log.write_text('user_id,item_id,ts,action,text\n1,a,1511544070,click,"open\n2,b,1511544071,click,y\n'
                   '3,c,1511544072,click,z\n4,d,1511544073,click,w"\n5,e,1511544074,click,v\n6,f,1511544075,click,"two\nlines"\n')
    run(["prepare", "events", str(log), "--out", str(tmp_path / "o"), "--reader", reader, "--split", "0.4,0.3,0.3"], capsys)
    notes = json.loads((tmp_path / "o" / "manifest.json").read_text())["validation"]["notes"]
    assert (f"{log}: 2 records spanned several lines (a quoted field with line breaks; lines 2-5, 7-8; the longest 4 lines): "
            "read as one row each; if a quote was left open there, the rows after it are inside that field") in notes, notes


@pytest.mark.parametrize("reader", ["lines", "columnar"])
def test_control_characters_at_the_ends_of_ids_are_refused_not_stripped(reader: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A review's find: Python's strip() counts the vertical tab, the form feed and U+001C-U+001F as whitespace, so
    'a\\x1f' was read as the item 'a' (and 'u1\\x0b' merged into 'u1'), while a control character inside an id is refused.
    Both ends are refused now, in both readers; spaces, tabs and no-break spaces are still stripped."""
    log = tmp_path / "ctl.csv"
    log.write_bytes(b"user_id,item_id,ts,action,text\nu1,a\x1f,1511544070,click,x\nu1\x0b,b,1511544071,click,y\n"
                    b"u2,a\x1fb,1511544073,click,x\n\tu3\xc2\xa0, c ,1511544074,click,z\n")
    code, _, err = run(["prepare", "events", str(log), "--out", str(tmp_path / "o"), "--reader", reader, "--max-reject-rate", "1"],
                       capsys)
    assert code == 0, err
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "bad item_id: 'a\\x1f' holds the control character U+001F at position 2; expected printable text"),
        (3, "bad user_id: 'u1\\x0b' holds the control character U+000B at position 3; expected printable text"),
        (4, "bad item_id: 'a\\x1fb' holds the control character U+001F at position 2; expected printable text"),
    ]
    events = pd.read_parquet(tmp_path / "o" / "events.parquet")
    assert events[["user_id", "item_id"]].values.tolist() == [["u3", "c"]]


def test_input_file_problems_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "readme.txt").write_text("x")
    cases = [
        (["events", str(tmp_path / "missing.csv")], f"error: {tmp_path / 'missing.csv'}: no such file; expected an events file (CSV, TSV, JSONL or Parquet)\n"),
        (["events", str(empty)], f"error: {empty}: empty file (0 bytes); expected an events file (CSV, TSV, JSONL or Parquet)\n"),
        (["movielens", str(tmp_path / "nope")], f"error: {tmp_path / 'nope'}: no such file or folder\n"),
        (["movielens", str(folder)], (f"error: {folder}: not a MovieLens folder: expected u.data + u.item (ml-100k), ratings.dat + movies.dat "
                                     "(ml-1m, ml-10m) or ratings.csv + movies.csv (ml-latest, ml-20m, ml-25m); found: readme.txt\n")),
        (["mind", str(folder)], (f"error: {folder}: not a MIND folder: expected behaviors.tsv + news.tsv, sub-folders (train/, dev/) holding "
                                "them, or MIND zips (MINDsmall_train.zip ...); found: readme.txt\n")),
    ]
    for args, expected in cases:
        code, out, err = run(["prepare", *args, "--out", str(tmp_path / "o")], capsys)
        assert (code, out, err) == (2, "", expected), args


def test_reject_rate_limit(movielens: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open(movielens / "u.data", "a") as fh:
        fh.write("31\t1\t7\t880000000\n31\t9\t4\t880000000\n")  # lines 121, 122: 2 bad of 122 rows = 1.6%
    code, out, err = run(["prepare", "movielens", str(movielens), "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and out == ""
    assert err == (f"error: {movielens / 'u.data'}: 2 of 122 rows rejected (1.6%, above --max-reject-rate 1.0%; bad rating 1, unknown item 1). "
                   "First bad lines: line 121: bad rating: '7'; expected a number from 0.5 to 5 in steps of 0.5; "
                   "line 122: unknown item: movie '9' is not in u.item. "
                   f"Every bad row (2 rejected), with its file, line and reason: {tmp_path / 'a.rejects.jsonl'}\n")
    assert not (tmp_path / "a").exists()  # no dataset, but every bad row where the message says
    refused = (tmp_path / "a.rejects.jsonl").read_text()
    code, out, err = run(["prepare", "movielens", str(movielens), "--out", str(tmp_path / "b"), "--max-reject-rate", "0.02"], capsys)
    assert code == 0, err
    assert re.search(r"\n  rejected +2  \(details: ", out)
    rejects = [json.loads(x) for x in (tmp_path / "b" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["raw"]) for r in rejects] == [(121, "31\t1\t7\t880000000"), (122, "31\t9\t4\t880000000")]
    assert refused == (tmp_path / "b" / "rejects.jsonl").read_text()
    # the same --out, now accepted: the refusal's rows beside it go (the dataset's rejects.jsonl has them)
    code, out, err = run(["prepare", "movielens", str(movielens), "--out", str(tmp_path / "a"), "--max-reject-rate", "0.02"], capsys)
    assert code == 0 and not (tmp_path / "a.rejects.jsonl").exists()


def test_events_options_reach_the_reader(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "log.csv"
    src.write_text("1,100,10,pv,1511544070\n1,101,11,buy,1511544080\n2,100,10,fav,1511544090\n")
    out = tmp_path / "tb"
    code, stdout, err = run(["prepare", "events", str(src), "--out", str(out), "--columns", "user_id,item_id,category,action,ts",
                             "--actions", "pv=view,cart=add_to_cart,fav=like,buy=purchase", "--item-text", "category {category}",
                             "--tz-offset", "8"], capsys)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["actions"] == {"like": 1, "purchase": 1, "view": 1}
    assert manifest["reader"]["columns"] == ["user_id", "item_id", "category", "action", "ts"]
    assert manifest["reader"]["tz_offset_hours"] == 8
    assert "--item-text 'category {category}'" in manifest["command"]
    items = pd.read_parquet(out / "items.parquet")
    assert list(items["text"]) == ["category 10", "category 11"]
    # texts of ids only: a text encoder sees no words in them, so the next step suggested is cooc
    assert stdout.rstrip().endswith(f"Next: interestgym encode {out} --encoder cooc   # item texts are only ids (e.g. 'category 10'), "
                                    "no words for minilm; cooc learns item vectors from training users' co-occurrence")
    # ... as does a stage that finds no embeddings, and encode with a text model says so
    from interestgym.data.dataset import Dataset
    from interestgym.errors import ArtifactError

    with pytest.raises(ArtifactError) as caught:
        Dataset.open(out).resolve_embeddings(None)
    assert str(caught.value) == (f"{out}: no embeddings yet; run `interestgym encode {out} --encoder cooc` first (item texts are only "
                                 "ids (e.g. 'category 10'), no words for minilm; cooc learns item vectors from training users' "
                                 "co-occurrence)")
    code, _, err = run(["encode", str(out), "--encoder", "hashing"], capsys)
    assert code == 0 and "note:" not in err, err
    words = tmp_path / "words.csv"
    words.write_text("1,100,red shoes,pv,1511544070\n1,101,blue hat,buy,1511544080\n")
    code, stdout, err = run(["prepare", "events", str(words), "--out", str(tmp_path / "w"), "--columns",
                             "user_id,item_id,title,action,ts", "--actions", "pv=view,buy=purchase", "--item-text", "{title}"], capsys)
    assert code == 0, err
    assert stdout.rstrip().endswith("--encoder minilm")
    with pytest.raises(ArtifactError, match=r"no embeddings yet; run `interestgym encode \S+ --encoder minilm` first$"):
        Dataset.open(tmp_path / "w").resolve_embeddings(None)
    # Chinese titles: minilm is an English model, so the next step suggested is tfidf (jieba words)
    chinese = tmp_path / "zh.csv"
    chinese.write_text("1,100,体育新闻 比赛,pv,1511544070\n1,101,财经 股市 上涨,buy,1511544080\n", encoding="utf-8")
    code, stdout, err = run(["prepare", "events", str(chinese), "--out", str(tmp_path / "zh"), "--columns",
                             "user_id,item_id,title,action,ts", "--actions", "pv=view,buy=purchase", "--item-text", "{title}"], capsys)
    assert code == 0, err
    assert stdout.rstrip().endswith(f"Next: interestgym encode {tmp_path / 'zh'} --encoder tfidf   # item texts are Chinese "
                                    "(e.g. '体育新闻 比赛'); minilm is an English model, tfidf segments Chinese words (jieba); "
                                    "a Chinese BERT folder also works: --encoder PATH")


def test_delimiter_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "semi.csv"
    src.write_text('user_id;item_id;ts;action;text\nu1;i1;1511544070;click;"red; blue"\nu2;i2;1511544071;click;green\n')
    code, _out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "ok"), "--delimiter", ";"], capsys)
    assert code == 0, err
    assert sorted(pd.read_parquet(tmp_path / "ok" / "items.parquet")["text"]) == ["green", "red; blue"]  # quotes kept it one field
    # an items file takes the separator when its header holds it, and keeps its own (a .tsv) otherwise
    for name, text in (("items.tsv", "item_id\ttext\ni1\tred; blue\ni2\tgreen\n"), ("items.csv", "item_id;text\ni1;red\ni2;green\n")):
        (tmp_path / name).write_text(text)
        code, _out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / f"with-{name}"), "--delimiter", ";",
                              "--items", str(tmp_path / name)], capsys)
        assert code == 0, err
        assert len(pd.read_parquet(tmp_path / f"with-{name}" / "items.parquet")) == 2
    for bad in ("ab", '"', "x", "7", "", "\uff0c", " "):  # the full-width comma: Arrow's parser takes ASCII separators only
        code, _out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "no"), "--delimiter", bad], capsys)
        assert code == 2 and err.startswith(f"error: --delimiter {bad!r}: expected one ASCII character that separates fields"), err
    # a Parquet items file beside a ';' log keeps its own format (it has no header line to hold the separator)
    pd.DataFrame({"item_id": ["i1", "i2"], "text": ["red", "green"]}).to_parquet(tmp_path / "items.parquet")
    code, _out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "pq-items"), "--delimiter", ";",
                          "--items", str(tmp_path / "items.parquet")], capsys)
    assert code == 0, err
    manifest = json.loads((tmp_path / "pq-items" / "manifest.json").read_text())
    assert manifest["reader"]["delimiter"] == {"events": ";", "items": None}  # the dataset records the separator
    # a headerless items file does not take it from a text on its first line
    (tmp_path / "items-nohead.csv").write_text('i1,"Shoes; Red"\ni2,green\n')
    code, _out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "nohead"), "--delimiter", ";",
                          "--items", str(tmp_path / "items-nohead.csv"), "--items-columns", "item_id,text"], capsys)
    assert code == 0, err
    assert sorted(pd.read_parquet(tmp_path / "nohead" / "items.parquet")["text"]) == ["Shoes; Red", "green"]
    parquet = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "ts": [1511544070], "action": ["click"], "text": ["x"]}).to_parquet(parquet)
    code, _out, err = run(["prepare", "events", str(parquet), "--out", str(tmp_path / "pq"), "--delimiter", ";"], capsys)
    assert code == 2 and "--delimiter ';' given, but the file is parquet; expected a delimited (CSV / TSV) file" in err


def test_a_split_without_users_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "one.csv"
    src.write_text("user_id,item_id,ts,action,text\nu1,i1,1511544070,click,red shoes\nu1,i2,1511544080,click,blue hat\n")
    code, stdout, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "one")], capsys)
    assert code == 0, err
    assert "(train 1 / valid 0 / test 0;" in stdout
    assert "  note: no valid / test users: `train` needs training and validation users and `evaluate` test users" in stdout


def test_bad_action_mapping_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "log.csv"
    src.write_text("1,100,pv,1511544070\n")
    code, _out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "o"), "--columns", "user_id,item_id,action,ts",
                          "--actions", "pv", "--item-text", "{item_id}"], capsys)
    assert (code, err) == (2, "error: --actions entry 'pv': expected NAME=ACTION, e.g. --actions pv=view,buy=purchase\n")


def test_help_names_every_format_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["prepare", "--help"], capsys)
    assert code == 0
    for word in ("mind", "movielens", "events", "synthetic", "--split", "--max-reject-rate", "--mind-text", "--tags", "--columns",
                 "--map", "--actions", "--time-format", "--items", "--item-text", "--users", "--tz-offset", "--overwrite"):
        assert word in out, word


def test_encode_with_a_text_model_on_id_only_texts_says_what_prepare_advised(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A BERT folder (a tiny random one, the code path of minilm) on texts that are only ids: encoded as asked, with a
    note; the same model on texts with words: no note."""
    from test_encoders_bert import save_tiny_bert

    model = save_tiny_bert(tmp_path / "tiny-bert")
    ids, words = tmp_path / "ids.csv", tmp_path / "words.csv"
    ids.write_text("1,100,10,pv,1511544070\n1,101,11,buy,1511544080\n2,100,10,pv,1511544090\n")
    words.write_text("1,100,red shoes,pv,1511544070\n1,101,blue hat,buy,1511544080\n2,100,red shoes,pv,1511544090\n")
    for src, column in ((ids, "category"), (words, "title")):
        out = tmp_path / src.stem
        code, _, err = run(["prepare", "events", str(src), "--out", str(out), "--columns", f"user_id,item_id,{column},action,ts",
                            "--actions", "pv=view,buy=purchase", "--item-text", "category {category}" if column == "category" else "{title}"],
                           capsys)
        assert code == 0, err
        code, _, err = run(["encode", str(out), "--encoder", str(model)], capsys)
        assert code == 0, err
        assert (out / "embeddings").is_dir()
        notes = [line for line in err.splitlines() if line.startswith("note:")]
        assert notes == ([(f"note: item texts are only ids (e.g. 'category 10'), no words for minilm; cooc learns item vectors "
                           f"from training users' co-occurrence; encoding with {model} anyway (`--encoder cooc` is what prepare "
                           "advised)")] if src is ids else []), err


def test_prepare_counts_repeat_engagements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The summary and manifest count the engagements of an item the same user engaged with before (an impression
    is no engagement), the count behind `exclude auto` choosing `target`; a log without any says nothing."""
    rows = [  # user, item, action, ts (written shuffled: prepare sorts by user and time)
        ("1", "a", "pv", 10), ("1", "a", "pv", 11), ("1", "b", "buy", 12), ("1", "a", "imp", 13), ("1", "a", "cart", 14),
        ("2", "a", "pv", 10), ("2", "b", "imp", 11), ("2", "b", "pv", 12), ("3", "c", "imp", 10), ("3", "c", "imp", 11),
    ]
    seen: set[tuple[str, str]] = set()
    expected = 0
    for user, item, action, _ in sorted(rows, key=lambda r: (r[0], r[3])):
        if action != "imp":
            expected += (user, item) in seen
            seen.add((user, item))
    assert expected == 2  # user 1's second and third 'a'
    src = tmp_path / "log.csv"
    src.write_text("".join(f"{u},{i},{a},{1511544000 + t}\n" for u, i, a, t in reversed(rows)))
    args = ["--columns", "user_id,item_id,action,ts", "--actions", "pv=view,cart=add_to_cart,buy=purchase,imp=impression",
            "--item-text", "item {item_id}"]
    code, out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "a"), *args], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["counts"]["repeat_engagements"] == expected
    assert re.search(rf"\n  repeats +{expected}  \(engagements of an item the same user engaged with before: ", out)
    src.write_text("".join(f"{u},{i},{a},{1511544000 + t}\n" for u, i, a, t in rows if (u, t) not in {("1", 11), ("1", 14)}))
    code, out, err = run(["prepare", "events", str(src), "--out", str(tmp_path / "b"), *args], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["counts"]["repeat_engagements"] == 0
    assert "repeats" not in out


def test_a_refusal_over_two_files_says_whose_rows_are_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An items file with bad rows, and the events of the items it rejected: the refusal's count of bad rows says how many
    are in each file (a trial read 18,744 bad rows against an items file of 7,737 bad ones)."""
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\na,alpha\nb,\nc,\n")  # b and c: no text
    log = tmp_path / "log.csv"
    log.write_text("".join(f"u{i},{it},click,{1511544070 + i}\n" for i, it in enumerate("abcbcb")))
    code, _, err = run(["prepare", "events", str(log), "--out", str(tmp_path / "d"), "--columns", "user_id,item_id,action,ts",
                          "--items", str(items)], capsys)
    assert code == 2
    rejects = [json.loads(x) for x in (tmp_path / "d.rejects.jsonl").read_text().splitlines()]
    per_file = {name: sum(Path(r["file"]).name == name for r in rejects) for name in ("log.csv", "items.csv")}
    assert per_file == {"log.csv": 5, "items.csv": 2}
    assert f"Every bad row (7 rejected: 5 in {log}, 2 in {items}), with its file, line and reason: " in err


def test_the_cells_strip_set_is_pythons_whitespace_but_its_control_characters() -> None:
    """CELL_STRIP is written out (deriving it at import cost 40 ms); it must stay what it says it is."""
    import unicodedata

    from interestgym.data.tables import CELL_STRIP

    derived = {chr(c) for c in range(0x110000) if chr(c).isspace() and not (unicodedata.category(chr(c)) == "Cc"
                                                                           and chr(c) not in "\t\n\r")}
    assert set(CELL_STRIP) == derived and len(CELL_STRIP) == len(derived) == 22
