"""MIND reader: behaviors/news parsing, history handling, parts and zips, exact rejects, real slice."""

from __future__ import annotations

import calendar
import json
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from interestgym.data.dataset import Dataset
from interestgym.data.mind import find_parts, parse_mind_time, prepare_mind, read_mind
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENT = '[{"Label": "X", "Type": "G"}]'


def _news_line(nid: str, cat: str, sub: str, title: str, abstract: str = "") -> str:
    return "\t".join([nid, cat, sub, title, abstract, f"https://x/{nid}.html", ENT, "[]"])


def _ts(text: str) -> int:
    return calendar.timegm(datetime.strptime(text, "%m/%d/%Y %I:%M:%S %p").timetuple())


def _rejects(out: Path) -> list[tuple[str, int, str]]:
    rows = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(Path(r["file"]).name, r["line"], r["reason"]) for r in rows]


def _write_part(d: Path, behaviors: list[str] | bytes, news: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "news.tsv").write_text("\n".join(news) + "\n", encoding="utf-8")
    data = behaviors if isinstance(behaviors, bytes) else ("\n".join(behaviors) + "\n").encode()
    (d / "behaviors.tsv").write_bytes(data)
    return d


NEWS = [
    _news_line("N1", "sports", "football", "Team wins cup", "A long match."),
    _news_line("N2", "news", "politics", "Vote today"),
    _news_line("N3", "finance", "markets", "Stocks rise", "Markets up."),
    "N4\tnews\tpolitics\tSeven fields only\t\thttps://x\t[]",  # line 4: 7 fields
    _news_line("N2", "news", "other", "Vote again"),               # line 5: duplicate id
    _news_line("N5", "news", "politics", ""),                       # line 6: empty title
]

BEHAVIORS = [
    "1\tU1\t11/12/2019 2:14:46 PM\tN1 N9 N1 N2\tN3-1 N2-0 N8-1",  # 1: history has N1 twice; N9, N8 have no news row
    "2\tU1\t11/11/2019 9:00:00 AM\tN1 N9 N1 N2\tN2-1 N3-0",       # 2: earlier impression of U1; same history
    "3\tU2\t11/13/2019 12:05:00 AM\t\tN1-0 N3-1",                 # 3: empty history; 12 AM is hour 0
    "4\tU3\t11/13/2019 1:00:00 PM\tN1\tN1-2 N3-1",                # 4: label 2
    "5\tU3\t2019-11-13 13:00\tN1\tN1-1",                          # 5: bad time
    "6\tU3\t11/13/2019 1:00:00 PM\tN1",                           # 6: 4 fields
    "7\tU3\t11/13/2019 1:00:00 PM\tN1\tN1 N3",                    # 7: unlabelled (MIND-large test)
    "8\tU3\t11/13/2019 1:00:00 PM\tN1\t",                         # 8: no candidates
    "3\tU2\t11/13/2019 12:05:00 AM\t\tN1-0 N3-1",                 # 9: identical to line 3 -> duplicate
    "3\tU4\t11/13/2019 12:05:00 AM\t\tN1-1",                      # 10: impression id 3 again, other content
    "",                                                           # 11: blank
    "11\tU4\t2/30/2019 1:00:00 PM\t\tN1-1",                       # 12: impossible date
]


def test_parse_mind_time_matches_strptime() -> None:
    for text in ("11/12/2019 2:14:46 PM", "11/13/2019 12:05:00 AM", "11/13/2019 12:05:00 PM", "1/9/2019 11:59:59 PM"):
        assert parse_mind_time(text) == _ts(text)
    for bad in ("11/12/2019 13:14:46 PM", "11/12/2019 2:14:46", "2019-11-12 14:14:46", "2/30/2019 1:00:00 PM"):
        with pytest.raises(ValueError):
            parse_mind_time(bad)


def test_mind_folder_rejects_history_clicks_and_impressions(tmp_path: Path) -> None:
    raw = ("\n".join(BEHAVIORS) + "\n").encode() + b"13\tU5\t11/13/2019 1:00:00 PM\tN\xe91\tN1-1\n"  # 13: invalid UTF-8
    src = _write_part(tmp_path / "MINDsmall_train", raw, NEWS)
    out = tmp_path / "out"
    manifest = prepare_mind(src, out, max_reject_rate=1.0, deterministic=True)

    assert _rejects(out) == [
        ("news.tsv", 4, "wrong field count: expected 8 tab-separated fields (id, category, subcategory, title, abstract, url, title_entities, abstract_entities), found 7"),
        ("news.tsv", 5, "duplicate news id: N2 (first at line 2)"),
        ("news.tsv", 6, "empty title: news N5 has no title; expected text"),
        ("behaviors.tsv", 4, "bad click label: 'N1-2' at position 1 of the impressions field has label '2'; expected 0 or 1"),
        ("behaviors.tsv", 5, "bad time: '2019-11-13 13:00'; expected M/D/YYYY h:mm:ss AM|PM, e.g. 11/12/2019 2:14:46 PM"),
        ("behaviors.tsv", 6, "wrong field count: expected 5 tab-separated fields (impression_id, user_id, time, history, impressions), found 4"),
        ("behaviors.tsv", 7, "unlabelled candidate: 'N1' at position 1 of the impressions field has no click label; expected ID-0 or ID-1 (MIND-large's test impressions are unlabelled: leave that part out)"),
        ("behaviors.tsv", 8, "no impression candidates: expected ID-LABEL pairs such as N123-1 N456-0"),
        ("behaviors.tsv", 9, "duplicate row"),
        ("behaviors.tsv", 10, "duplicate impression id: 3 (first at line 3)"),
        ("behaviors.tsv", 12, "bad time: '2/30/2019 1:00:00 PM'; expected M/D/YYYY h:mm:ss AM|PM, e.g. 11/12/2019 2:14:46 PM"),
        ("behaviors.tsv", 13, "invalid UTF-8: byte 0xe9 at column 30; expected UTF-8 text"),
    ]
    st = manifest["validation"]["files"][str(src / "behaviors.tsv")]
    assert (st["rows_read"], st["kept"], st["rejected"], st["blank"], st["duplicate"]) == (13, 3, 8, 1, 1)

    ds = Dataset.open(out)
    assert list(ds.items["item_id"]) == ["N1", "N2", "N3"]
    assert ds.items.set_index("item_id").loc["N1", ["text", "category", "subcategory"]].tolist() == ["Team wins cup", "sports", "football"]

    imp = ds.impressions.set_index("impression_id")
    assert list(imp.loc["1", "candidates"]) == ["N3", "N2", "N8"] and list(imp.loc["1", "labels"]) == [1, 0, 1]
    assert imp.loc["1", "ts"] == _ts("11/12/2019 2:14:46 PM") and imp.loc["3", "ts"] == _ts("11/13/2019 12:05:00 AM")
    assert np.asarray(imp.loc["2", "labels"]).dtype == np.int8

    ev = ds.events
    u1 = ev[ev["user_id"] == "U1"]
    first = _ts("11/11/2019 9:00:00 AM")
    # History once, de-duplicated in order, N9 (no news row) dropped, just before the first impression.
    assert list(zip(u1["item_id"], u1["ts"], u1["origin"], u1["impression_id"])) == [
        ("N1", first - 1, "history", ""), ("N2", first - 1, "history", ""),
        ("N2", first, "impression", "2"),
        ("N3", _ts("11/12/2019 2:14:46 PM"), "impression", "1"),  # N8 clicked too but has no news row
    ]
    u2 = ev[ev["user_id"] == "U2"]
    assert list(zip(u2["item_id"], u2["origin"])) == [("N3", "impression")]
    assert int(u2["hour"].iloc[0]) == 0
    assert set(ev["action"]) == {"click"} and set(ev["value"]) == {1.0}

    c = manifest["counts"]
    assert c["impressions"] == 3 and c["candidates"] == 7 and c["candidates_without_news_row"] == 1
    assert c["history_ids_in_rows"] == 8 and c["history_repeats_within_a_row"] == 2 and c["history_clicks"] == 3
    assert c["history_clicks_without_news_row"] == 1 and c["impression_clicks"] == 4 and c["impression_clicks_without_news_row"] == 1
    notes = manifest["validation"]["notes"]
    assert "history clicks without a news row: 1 of 3 (33.3%), dropped from events" in notes
    assert any(n.startswith("impression candidates without a news row: 1 of 7 (14.3%; 1 distinct ids)") for n in notes)


def test_title_and_abstract_text(tmp_path: Path) -> None:
    src = _write_part(tmp_path / "m", BEHAVIORS[:3], NEWS[:3])
    data = read_mind(src, RejectLog(), text="title+abstract")
    texts = dict(zip(data.items["item_id"], data.items["text"]))
    assert texts == {"N1": "Team wins cup | A long match.", "N2": "Vote today", "N3": "Stocks rise | Markets up."}
    with pytest.raises(DataError, match="--mind-text 'abstract': expected one of title, title\\+abstract"):
        read_mind(src, RejectLog(), text="abstract")


def _zip_part(path: Path, behaviors: list[str], news: list[str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("behaviors.tsv", "\n".join(behaviors) + "\n")
        zf.writestr("news.tsv", "\n".join(news) + "\n")
        zf.writestr("entity_embedding.vec", "")


DEV = ["1\tU1\t11/15/2019 8:00:00 AM\tN1 N2 N3\tN1-1 N2-0", "2\tU9\t11/15/2019 9:00:00 AM\tN3\tN3-1"]
TEST = ["1\tU1\t11/16/2019 8:00:00 AM\tN1\tN1 N2"]


def test_parts_from_subfolders_and_from_zips_agree(tmp_path: Path) -> None:
    folders = tmp_path / "folders"
    _write_part(folders / "train", BEHAVIORS[:3], NEWS[:3])
    _write_part(folders / "dev", DEV, NEWS[1:3] + [_news_line("N7", "tv", "shows", "New show")])
    _write_part(folders / "test", TEST, NEWS[:1])
    zips = tmp_path / "zips"
    zips.mkdir()
    _zip_part(zips / "MINDsmall_train.zip", BEHAVIORS[:3], NEWS[:3])
    _zip_part(zips / "MINDsmall_dev.zip", DEV, NEWS[1:3] + [_news_line("N7", "tv", "shows", "New show")])
    _zip_part(zips / "MINDlarge_test.zip", TEST, NEWS[:1])

    assert [p.name for p in find_parts(folders)] == ["train", "dev", "test"]
    assert [p.name for p in find_parts(zips)] == ["train", "dev", "test"]
    a = prepare_mind(folders, tmp_path / "a", deterministic=True)
    b = prepare_mind(zips, tmp_path / "b", deterministic=True)
    assert a["counts"] == b["counts"]
    assert a["reader"]["parts"] == ["train", "dev"] and a["reader"]["parts_left_out"] == ["test"]
    da, db = Dataset.open(tmp_path / "a"), Dataset.open(tmp_path / "b")
    assert da.events.equals(db.events) and da.items.equals(db.items)
    # Impression ids are numbered per part by MIND: prefixed with the part when there are several.
    assert sorted(da.impressions["impression_id"]) == ["dev-1", "dev-2", "train-1", "train-2", "train-3"]
    assert list(da.items["item_id"]) == ["N1", "N2", "N3", "N7"]
    assert a["counts"]["news_rows_repeated_across_parts"] == 2
    # U1's history grows in dev (N3), which U1 clicked in a train impression (line 1): that click is its event, the
    # history id is not a second one, and nothing goes before U1's first impression that was not in its history then.
    u1 = da.events[(da.events["user_id"] == "U1") & (da.events["origin"] == "history")]
    assert list(u1["item_id"]) == ["N1", "N2"] and set(u1["ts"]) == {_ts("11/11/2019 9:00:00 AM") - 1}
    assert a["counts"]["users_whose_history_differs_between_rows"] == 1
    assert a["counts"]["history_ids_first_in_a_later_row"] == 1
    assert a["counts"]["history_ids_clicked_in_an_earlier_impression"] == 1
    assert [f["path"] for f in b["source"]["files"]] == ["MINDsmall_train.zip", "MINDsmall_dev.zip"]

    one = read_mind(zips / "MINDsmall_dev.zip", RejectLog())
    assert sorted(one.impressions["impression_id"]) == ["1", "2"]
    only_train = read_mind(folders, RejectLog(), parts=["train"])
    assert set(only_train.impressions["part"]) == {"train"}
    with pytest.raises(DataError, match="--mind-parts train,valid: no part named valid; found: train, dev, test"):
        read_mind(folders, RejectLog(), parts=["train", "valid"])


def test_unlabelled_test_part_fails_when_chosen(tmp_path: Path) -> None:
    _write_part(tmp_path / "test", TEST, NEWS[:3])
    with pytest.raises(DataError, match=r"behaviors.tsv: no valid rows: 1 of 1 rejected; .* First bad lines: line 1: unlabelled candidate: 'N1'"):
        prepare_mind(tmp_path, tmp_path / "out", parts=["test"])


def test_folder_shapes_that_are_not_mind(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: not a MIND folder: .* found: nothing"):
        find_parts(tmp_path / "empty")
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "behaviors.tsv").write_text("1\tU1\t11/12/2019 2:14:46 PM\t\tN1-1\n")
    with pytest.raises(DataError, match="lone: behaviors.tsv without news.tsv"):
        find_parts(lone)
    with pytest.raises(DataError, match="nope: no such file or folder"):
        find_parts(tmp_path / "nope")


@pytest.mark.skipif(not (SHARED / "mind-small-slice" / "behaviors.tsv").is_file(), reason="shared data ../shared/data/mind-small-slice absent")
def test_real_mind_slice(tmp_path: Path) -> None:
    src = SHARED / "mind-small-slice"
    manifest = prepare_mind(src, tmp_path / "mind")
    # Independent counts straight from the files.
    news_ids = {line.split("\t")[0] for line in (src / "news.tsv").read_text(encoding="utf-8").splitlines()}
    rows = [line.split("\t") for line in (src / "behaviors.tsv").read_text(encoding="utf-8").splitlines()]
    cands = [tok.rsplit("-", 1)[0] for r in rows for tok in r[4].split()]
    missing = sum(c not in news_ids for c in cands)
    c = manifest["counts"]
    assert c["impressions"] == 5_000 and c["items"] == 2_000 and c["impression_users"] == 4_637
    assert (c["candidates"], c["candidates_without_news_row"]) == (len(cands), missing) == (189_359, 184_049)
    assert manifest["validation"]["rejected_total"] == 0
    history: dict[str, dict[str, None]] = {}
    for r in rows:
        history.setdefault(r[1], {}).update(dict.fromkeys(r[3].split()))
    assert c["history_clicks"] == sum(len(h) for h in history.values())
    assert c["history_clicks_without_news_row"] == sum(n not in news_ids for h in history.values() for n in h)


def test_impressions_are_slotted_on_the_datasets_clock(tmp_path: Path) -> None:
    """With `prepare --tz-offset 5.5`, a logged impression's time slot (the per-slot category counts, the time-slot
    profiles score with it) is hour // 6 of its UTC time shifted by 5.5 h, as its decisions' hours are."""
    import pandas as pd
    from interestgym.envs.replay_data import ProtocolSpec, build_replay_data

    from interestgym.data.dataset import SplitSpec

    rng = np.random.default_rng(3)
    lines, n = [], 0
    for u in range(12):
        for k in range(4):  # every 5 h 17 min from a user-specific start: slots fall on every side of the shift
            t = datetime(2019, 11, 12) + timedelta(hours=int(rng.integers(0, 24)) + k * 5, minutes=17 * k)
            n += 1
            clicked, other = ("N1", "N3") if (u + k) % 2 else ("N3", "N1")
            lines.append(f"{n}\tU{u}\t{t.strftime('%m/%d/%Y %I:%M:%S %p').lstrip('0').replace('/0', '/')}\t\t{clicked}-1 {other}-0 N2-0")
    src = _write_part(tmp_path / "mind", lines, NEWS[:3])
    out = tmp_path / "ds"
    prepare_mind(src, out, split=SplitSpec(0.0, 0.0, 1.0), tz_offset_hours=5.5)
    from env_fixtures import random_unit, write_embeddings

    write_embeddings(out, random_unit(len(pd.read_parquet(out / "items.parquet")), 8, rng))
    data = build_replay_data(Dataset.open(out), None, ProtocolSpec(split="test"))
    imp = pd.read_parquet(out / "impressions.parquet").set_index("impression_id")
    assert data.n_points >= 12
    for key, slot in zip(data.point_key, data.point_slot):
        shifted = int(imp.loc[str(key), "ts"]) + int(5.5 * 3600)
        assert slot == (shifted // 3600 % 24) // 6, key
    assert len(set(data.point_slot.tolist())) > 1


def test_a_history_that_grows_between_rows_puts_no_click_before_an_impression_it_followed(tmp_path: Path) -> None:
    """A log whose history is "the clicks so far": an id first in a later row's history goes just before the earliest
    row holding it (rows out of file order included), not before the user's first impression, where it would be a
    click from the future; an id the user clicked in an earlier impression is that click, not a second event."""
    news = [_news_line(f"N{i}", "news", "x", f"Title {i}") for i in range(1, 7)]
    rows = [
        "1\tUX\t11/12/2019 9:00:00 AM\tN1 N2\tN3-1 N4-0",
        "3\tUX\t11/12/2019 11:00:00 AM\tN1 N2 N3 N5 N6\tN4-1",  # N3: line 1's click; N5, N6: clicked elsewhere
        "2\tUX\t11/12/2019 10:00:00 AM\tN1 N2 N3 N5\tN6-0 N4-0",  # earlier in time than line 2: N5 is first here
    ]
    manifest = prepare_mind(_write_part(tmp_path / "in", rows, news), tmp_path / "out", deterministic=True)
    ev = Dataset.open(tmp_path / "out").events
    got = [(r.item_id, r.ts, r.origin) for r in ev.sort_values(["ts", "seq"]).itertuples()]
    assert got == [("N1", _ts("11/12/2019 9:00:00 AM") - 1, "history"), ("N2", _ts("11/12/2019 9:00:00 AM") - 1, "history"),
                   ("N3", _ts("11/12/2019 9:00:00 AM"), "impression"),
                   ("N5", _ts("11/12/2019 10:00:00 AM") - 1, "history"),
                   ("N6", _ts("11/12/2019 11:00:00 AM") - 1, "history"),
                   ("N4", _ts("11/12/2019 11:00:00 AM"), "impression")]
    assert manifest["counts"]["history_ids_first_in_a_later_row"] == 3
    assert manifest["counts"]["history_ids_clicked_in_an_earlier_impression"] == 1
    assert manifest["counts"]["history_clicks"] == 4
    assert any("history ids first in a later row of their user: 3" in n for n in manifest["validation"]["notes"])


def test_one_zip_holding_train_and_dev_reads_both_parts(tmp_path: Path) -> None:
    """One zip of the parts' folders is read as the folder it was made from, every part; a folder without its news.tsv
    is refused naming it."""
    folders = tmp_path / "folders"
    _write_part(folders / "train", BEHAVIORS[:3], NEWS[:3])
    _write_part(folders / "dev", DEV, NEWS[1:3] + [_news_line("N7", "tv", "shows", "New show")])
    with zipfile.ZipFile(tmp_path / "MINDsmall.zip", "w") as zf:
        for part in ("train", "dev"):
            for name in ("behaviors.tsv", "news.tsv"):
                zf.write(folders / part / name, f"MINDsmall/{part}/{name}")
    assert [p.name for p in find_parts(tmp_path / "MINDsmall.zip")] == ["train", "dev"]
    a = prepare_mind(folders, tmp_path / "a", deterministic=True)
    b = prepare_mind(tmp_path / "MINDsmall.zip", tmp_path / "b", deterministic=True)
    assert a["counts"] == b["counts"] and b["reader"]["parts"] == ["train", "dev"]
    da, db = Dataset.open(tmp_path / "a"), Dataset.open(tmp_path / "b")
    assert da.events.equals(db.events) and da.items.equals(db.items) and len(db.impressions) == 5

    with zipfile.ZipFile(tmp_path / "broken.zip", "w") as zf:
        zf.write(folders / "train" / "behaviors.tsv", "train/behaviors.tsv")
        zf.write(folders / "train" / "news.tsv", "train/news.tsv")
        zf.write(folders / "dev" / "behaviors.tsv", "dev/behaviors.tsv")
    with pytest.raises(DataError, match=r"broken.zip:dev: behaviors.tsv without news.tsv beside it"):
        find_parts(tmp_path / "broken.zip")


def test_a_header_line_is_skipped_and_said_not_read_as_a_news_row_or_a_bad_time(tmp_path: Path) -> None:
    """MIND's files have no header; one an export added is skipped with a note (not a row, as a header is in other
    formats), not read as an item called 'id' with the text 'title' (news.tsv) nor rejected as a 'bad time'
    (behaviors.tsv). A news row whose title is 'title' is still a row, and a header after line 1 is a bad row."""
    news = ["id\tcategory\tsubcategory\ttitle\tabstract\turl\ttitle_entities\tabstract_entities"] + NEWS[:3] + [
        _news_line("N8", "news", "x", "title")]
    rows = ["Impression_ID\tUser_ID\tTime\tHistory\tImpressions"] + BEHAVIORS[:3] + ["impression_id\tuser_id\ttime\thistory\timpressions"]
    manifest = prepare_mind(_write_part(tmp_path / "in", rows, news), tmp_path / "out", deterministic=True,
                            max_reject_rate=0.5)
    notes = manifest["validation"]["notes"]
    assert any(n.endswith("news.tsv: line 1 is a header ('id category subcategory title abstract url title_entities "
                          "abstract_entities'), not a row: skipped; MIND's news.tsv has none (its rows: id, category, "
                          "subcategory, title, abstract, url, title_entities, abstract_entities)") for n in notes), notes
    assert any("behaviors.tsv: line 1 is a header ('Impression_ID User_ID Time History Impressions'), not a row" in n
               for n in notes), notes
    files = {Path(name).name: st for name, st in manifest["validation"]["files"].items()}
    assert files["news.tsv"]["rows_read"] == 4 and files["news.tsv"]["kept"] == 4
    assert files["behaviors.tsv"]["rows_read"] == 4 and files["behaviors.tsv"]["rejected"] == 1
    assert [(f, line) for f, line, _ in _rejects(tmp_path / "out")] == [("behaviors.tsv", 5)]
    items = Dataset.open(tmp_path / "out").items
    assert list(items["item_id"]) == ["N1", "N2", "N3", "N8"] and "category" not in set(items["category"])


def test_a_tab_inside_a_field_is_named_as_the_likely_cause_of_too_many_fields(tmp_path: Path) -> None:
    news = NEWS[:3] + ["N9\tnews\tx\tA title\twith a tab\tan abstract\thttps://x\t[]\t[]"]
    prepare_mind(_write_part(tmp_path / "in", BEHAVIORS[:3], news), tmp_path / "out", deterministic=True, max_reject_rate=0.5)
    assert ("news.tsv", 4, ("wrong field count: expected 8 tab-separated fields (id, category, subcategory, title, abstract, "
                            "url, title_entities, abstract_entities), found 9 (more than expected: does a field hold a tab? "
                            "MIND's fields cannot)")) in _rejects(tmp_path / "out")


def test_a_folder_holding_one_zip_of_parts_and_a_zip_with_a_deeper_copy(tmp_path: Path) -> None:
    """A folder holding the one zip of train/ and dev/ reads both parts (it read dev only, as a part called after the
    zip); a part's zip that also holds a copy deeper down (backup/behaviors.tsv) stays one part, read from the top."""
    folders = tmp_path / "folders"
    _write_part(folders / "train", BEHAVIORS[:3], NEWS[:3])
    _write_part(folders / "dev", DEV, NEWS[1:3] + [_news_line("N7", "tv", "shows", "New show")])
    (tmp_path / "in").mkdir()
    with zipfile.ZipFile(tmp_path / "in" / "MINDsmall.zip", "w") as zf:
        for part in ("train", "dev"):
            for name in ("behaviors.tsv", "news.tsv"):
                zf.write(folders / part / name, f"MINDsmall/{part}/{name}")
    assert [p.name for p in find_parts(tmp_path / "in")] == ["train", "dev"]
    with zipfile.ZipFile(tmp_path / "MINDsmall_train.zip", "w") as zf:
        for name in ("behaviors.tsv", "news.tsv"):
            zf.write(folders / "train" / name, name)
            zf.write(folders / "dev" / name, f"backup/{name}")
    parts = find_parts(tmp_path / "MINDsmall_train.zip")
    assert [(p.name, p.behaviors.member) for p in parts] == [("train", "behaviors.tsv")]


def test_a_history_id_an_impression_of_the_same_second_clicked_is_that_click(tmp_path: Path) -> None:
    """Rows of one second: the later-in-time row's history holds what the earlier row's impression clicked (or a row
    at a later time holds an id clicked in an impression of that second): that click is the event, not a history click
    before the impression whose positive it is."""
    news = [_news_line(f"N{i}", "news", "x", f"Title {i}") for i in range(1, 6)]
    rows = ["1\tUX\t11/12/2019 9:00:00 AM\tN1\tN3-0 N4-0",
            "2\tUX\t11/12/2019 10:00:00 AM\tN1\tN3-1 N4-0",
            "3\tUX\t11/12/2019 10:00:00 AM\tN1 N3\tN5-1 N4-0"]
    manifest = prepare_mind(_write_part(tmp_path / "in", rows, news), tmp_path / "out", deterministic=True)
    ev = Dataset.open(tmp_path / "out").events
    n3 = [(r.ts, r.origin) for r in ev.itertuples() if r.item_id == "N3"]
    assert n3 == [(_ts("11/12/2019 10:00:00 AM"), "impression")]
    assert manifest["counts"]["history_ids_clicked_in_an_earlier_impression"] == 1
