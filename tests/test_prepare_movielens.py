"""MovieLens reader: every variant's files, exact rejects, item texts, and the real ml-100k numbers."""

from __future__ import annotations

import calendar
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from interestgym.data.dataset import Dataset, SplitSpec
from interestgym.data.movielens import (
    ML100K_GENRES,
    detect_variant,
    item_text,
    prepare_movielens,
    read_movielens,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in ML100K_GENRES)


def _rejects(out: Path) -> list[tuple[str, int, str]]:
    rows = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(Path(r["file"]).name, r["line"], r["reason"]) for r in rows]


@pytest.fixture()
def ml100k(tmp_path: Path) -> Path:
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n", encoding="latin-1")
    items = [
        "1|Toy Story (1995)|01-Jan-1995||http://x|" + _flags("Animation", "Children's", "Comedy"),
        f"2|GoldenEye (1995)|01-Jan-1995||http://x|{_flags('Action', 'Adventure', 'Thriller')}",
        f"267|unknown||||{_flags('unknown')}",
        "4|Too Few Fields|01-Jan-1995||http://x|0|1",                       # line 4: 7 fields
        f"2|GoldenEye again|01-Jan-1995||http://x|{_flags('Action')}",        # line 5: duplicate id
        f"5|Bad Flag|01-Jan-1995||http://x|{_flags('Drama').replace('1', '2')}",  # line 6: flag 2
    ]
    # A latin-1 title (as in the real u.item): must be read as latin-1, not rejected.
    data = ("\n".join(items) + "\n").encode("latin-1") + "6|Café Society (1995)|01-Jan-1995||http://x|".encode("latin-1") + _flags("Drama").encode() + b"\n"
    (d / "u.item").write_bytes(data)
    ts = 881250949
    ratings = [
        f"196\t1\t3\t{ts}",          # 1 ok
        f"196\t2\t5\t{ts + 60}",     # 2 ok
        f"22\t267\t1\t{ts - 3600}",  # 3 ok
        f"196\t1\t3\t{ts}",          # 4 duplicate of line 1
        "",                          # 5 blank
        f"22\t6\t4\t{ts}\textra",    # 6 five fields
        f"22\t2\t6\t{ts}",           # 7 rating out of range
        f"22\t2\tfive\t{ts}",        # 8 rating not a number
        f"22\t99\t4\t{ts}",          # 9 unknown item
        "22\t2\t4\t12",              # 10 time out of range (1970)
        f"x\t2\t4\t{ts}",            # 11 bad user id
        f"22\t6\t4\t{ts + 5}",       # 12 ok (latin-1 movie)
        f"22\t2\t4\t{ts}x",          # 13 bad time
    ]
    raw = ("\n".join(ratings) + "\n").encode() + b"23\t1\t4\t88125\xff949\n"  # 14 invalid UTF-8
    (d / "u.data").write_bytes(raw)
    return d


def test_ml100k_fixture_rejects_exact_rows_and_builds_items(ml100k: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = prepare_movielens(ml100k, out, max_reject_rate=1.0, command=["t"])
    assert _rejects(out) == [
        ("u.item", 4, "wrong field count: expected 24 '|'-separated fields (id, title, release, video release, url, 19 genre flags), found 7"),
        ("u.item", 5, "duplicate movie id: 2 (first at line 2)"),
        ("u.item", 6, "bad genre flag: '2'; expected 0 or 1"),
        ("u.data", 4, "duplicate row"),
        ("u.data", 6, "wrong field count: expected 4 tab-separated fields (user, item, rating, timestamp), found 5"),
        ("u.data", 7, "bad rating: '6'; expected a number from 0.5 to 5 in steps of 0.5"),
        ("u.data", 8, "bad rating: 'five'; expected a number from 0.5 to 5 in steps of 0.5"),
        ("u.data", 9, "unknown item: movie '99' is not in u.item"),
        ("u.data", 10, "time out of range: 12 is 1970-01-01; expected 1990-01-01 .. 2100-01-01 UTC"),
        ("u.data", 11, "bad user id: 'x'; expected a positive integer"),
        ("u.data", 13, "bad time: '881250949x'; expected unix seconds"),
        ("u.data", 14, "invalid UTF-8: byte 0xff at column 13; expected UTF-8 text"),
    ]
    files = manifest["validation"]["files"]
    udata = files[str(ml100k / "u.data")]
    assert (udata["rows_read"], udata["kept"], udata["rejected"], udata["blank"], udata["duplicate"]) == (14, 4, 8, 1, 1)
    assert udata["reject_reasons"] == {"bad rating": 2, "bad time": 1, "bad user id": 1, "invalid UTF-8": 1,
                                       "time out of range": 1, "unknown item": 1, "wrong field count": 1}
    assert files[str(ml100k / "u.genre")]["blank"] == 1
    assert manifest["counts"]["events"] == 4 and manifest["counts"]["items"] == 4 and manifest["counts"]["users"] == 2

    ds = Dataset.open(out)
    items = ds.items.set_index("item_id")
    assert items.loc["1", "text"] == "Toy Story (1995) | Animation, Children's, Comedy"
    assert items.loc["1", "category"] == "Animation"
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["267", "text"] == "unknown" and items.loc["267", "category"] == ""  # placeholder genre left out
    assert items.loc["6", "title"] == "Café Society (1995)"
    assert list(ds.items["item_id"]) == ["1", "2", "267", "6"]  # file order

    ev = ds.events
    assert list(ev.columns[:8]) == ["user_id", "ts", "item_id", "action", "value", "hour", "weekday", "seq"]
    assert list(zip(ev["user_id"], ev["item_id"], ev["value"], ev["seq"])) == [
        ("196", "1", 3.0, 1), ("196", "2", 5.0, 2), ("22", "267", 1.0, 3), ("22", "6", 4.0, 12)]
    assert set(ev["action"]) == {"rate"}
    assert ev["ts"].iloc[0] == calendar.timegm((1997, 12, 4, 15, 55, 49))
    # 881250949 is 1997-12-04 15:55:49 UTC, a Thursday.
    assert (int(ev["hour"].iloc[0]), int(ev["weekday"].iloc[0])) == (15, 3)
    assert str(ev["value"].dtype) == "float32" and str(ev["hour"].dtype) == "int8"


def test_a_u_item_saved_as_utf8_reads_the_same_titles(ml100k: Path, tmp_path: Path) -> None:
    """The release's u.item is latin-1; one re-saved as UTF-8 (iconv, an editor) gives the same dataset, not mojibake
    ('CafÃ© Society')."""
    latin1 = tmp_path / "latin1"
    prepare_movielens(ml100k, latin1, max_reject_rate=1.0, command=["t"], deterministic=True)
    text = (ml100k / "u.item").read_bytes().decode("latin-1")
    assert "Café" in text
    (ml100k / "u.item").write_bytes(text.encode("utf-8"))
    utf8 = tmp_path / "utf8"
    prepare_movielens(ml100k, utf8, max_reject_rate=1.0, command=["t"], deterministic=True)
    assert Dataset.open(utf8).items.set_index("item_id").loc["6", "title"] == "Café Society (1995)"
    for name in ("items.parquet", "events.parquet", "users.parquet"):
        assert (utf8 / name).read_bytes() == (latin1 / name).read_bytes()


def test_reject_rate_above_the_limit_fails_with_the_first_bad_lines(ml100k: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        prepare_movielens(ml100k, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(f"{ml100k / 'u.item'}: 3 of 7 rows rejected (42.9%, above --max-reject-rate 1.0%")
    assert "First bad lines: line 4: wrong field count" in msg and "line 5: duplicate movie id: 2" in msg
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_u_genre_missing_uses_the_standard_names(ml100k: Path) -> None:
    (ml100k / "u.genre").unlink()
    log = RejectLog()
    data = read_movielens(ml100k, log)
    assert data.items.set_index("item_id").loc["2", "text"] == "GoldenEye (1995) | Action, Adventure, Thriller"
    assert any("u.genre not found" in n for n in log.notes)


def _ml1m_files(d: Path) -> None:
    d.mkdir(parents=True)
    (d / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n".encode("latin-1")
        + "2::Misérables, Les (1995)::Drama|Musical\n".encode("latin-1")
        + b"3::Broken::Drama::Extra\n"
    )
    (d / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n2::2::4.5::978301968\n6::3::4::978300275\n", encoding="ascii")


def test_ml1m_dat_files_latin1_and_half_stars(tmp_path: Path) -> None:
    _ml1m_files(tmp_path / "ml-1m")
    out = tmp_path / "out"
    manifest = prepare_movielens(tmp_path / "ml-1m", out, max_reject_rate=1.0, deterministic=True)
    assert manifest["reader"]["variant"] == "ml-1m"
    assert _rejects(out) == [
        ("movies.dat", 3, "wrong field count: expected 3 '::'-separated fields (movie, title, genres), found 4"),
        ("ratings.dat", 4, "unknown item: movie '3' is not in movies.dat"),
    ]
    ds = Dataset.open(out)
    assert ds.items.set_index("item_id").loc["2", "text"] == "Misérables, Les (1995) | Drama, Musical"
    assert sorted(ds.events["value"].tolist()) == [3.0, 4.5, 5.0]


def test_zip_as_grouplens_ships_it_gives_the_same_dataset(tmp_path: Path) -> None:
    _ml1m_files(tmp_path / "src" / "ml-1m")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in (tmp_path / "src" / "ml-1m").iterdir():
            zf.write(p, f"ml-1m/{p.name}")
    a = prepare_movielens(tmp_path / "src" / "ml-1m", tmp_path / "a", max_reject_rate=1.0, deterministic=True)
    b = prepare_movielens(archive, tmp_path / "b", max_reject_rate=1.0, deterministic=True)
    assert detect_variant(archive).ratings.name == f"{archive}:ml-1m/ratings.dat"
    for name in ("items.parquet", "events.parquet", "users.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / name), pd.read_parquet(tmp_path / "b" / name))
    assert a["counts"] == b["counts"]
    assert [f["path"] for f in b["source"]["files"]] == ["ml-1m.zip"]


def _ml_latest(d: Path, tags: str | None) -> None:
    d.mkdir(parents=True)
    (d / "movies.csv").write_text(
        "movieId,title,genres\n"
        '1,Toy Story (1995),Adventure|Animation\n'
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Nothing (2019),(no genres listed)\n", encoding="utf-8")
    (d / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,0.5,964981247\n2,3,3.5,964982224\n2,1,0.3,964982224\n",
        encoding="utf-8")
    if tags is not None:
        (d / "tags.csv").write_text(tags, encoding="utf-8")


def test_ml_latest_csv_quoted_titles_tags_ranked_by_use(tmp_path: Path) -> None:
    tags = ("userId,movieId,tag,timestamp\n"
            "1,1,pixar,1139045764\n2,1,fun,1139045765\n3,1,Pixar,1139045766\n4,1,\"funny, witty\",1139045767\n"
            "5,1,fun,1139045768\n6,9,orphan,1139045769\n7,2,,1139045770\n")
    _ml_latest(tmp_path / "ml-latest-small", tags)
    out = tmp_path / "out"
    manifest = prepare_movielens(tmp_path / "ml-latest-small", out, max_reject_rate=1.0, max_tags=2, deterministic=True)
    assert manifest["reader"]["variant"] == "ml-latest"
    assert _rejects(out) == [
        ("tags.csv", 7, "unknown item: movie '9' is not in movies.csv"),
        ("tags.csv", 8, "empty tag: expected text"),
        ("ratings.csv", 5, "bad rating: '0.3'; expected a number from 0.5 to 5 in steps of 0.5"),
    ]
    items = Dataset.open(out).items.set_index("item_id")
    # "pixar" (2 uses, first at line 2) and "fun" (2 uses, line 3) before "funny, witty" (1 use); first spelling kept.
    assert items.loc["1", "text"] == "Toy Story (1995) | Adventure, Animation | pixar, fun"
    assert items.loc["2", "text"] == "American President, The (1995) | Comedy, Drama, Romance"
    assert items.loc["3", "text"] == "Nothing (2019)" and items.loc["3", "category"] == ""
    assert manifest["counts"]["movies_with_tags"] == 1

    no_tags = read_movielens(tmp_path / "ml-latest-small", RejectLog(), tags=False)
    assert no_tags.items.set_index("item_id").loc["1", "text"] == "Toy Story (1995) | Adventure, Animation"


def test_ml_latest_wrong_header_is_one_clear_error(tmp_path: Path) -> None:
    _ml_latest(tmp_path / "ml", None)
    (tmp_path / "ml" / "ratings.csv").write_text("user,movie,rating,ts\n1,1,4.0,964982703\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"ratings.csv line 1: header 'user,movie,rating,ts'; expected userId,movieId,rating,timestamp"):
        read_movielens(tmp_path / "ml", RejectLog())


def test_folder_without_movielens_files_names_what_it_found(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"not a MovieLens folder: expected u.data \+ u.item .* found: notes.txt$"):
        detect_variant(tmp_path)


def test_item_text_format() -> None:
    assert item_text("Heat (1995)", ["Action", "Crime"], []) == "Heat (1995) | Action, Crime"
    assert item_text("Heat (1995)", [], ["heist"]) == "Heat (1995) | heist"
    assert item_text("Heat (1995)", ["Action"], ["heist", "Pacino"]) == "Heat (1995) | Action | heist, Pacino"


@pytest.mark.skipif(not (SHARED / "ml-100k" / "u.data").is_file(), reason="shared data ../shared/data/ml-100k absent")
def test_real_ml100k_prepares_completely(tmp_path: Path) -> None:
    out = tmp_path / "ml-100k"
    manifest = prepare_movielens(SHARED / "ml-100k", out, split=SplitSpec(seed=0))
    assert (manifest["counts"]["events"], manifest["counts"]["users"], manifest["counts"]["items"]) == (100_000, 943, 1_682)
    assert manifest["validation"]["rejected_total"] == 0
    assert (out / "rejects.jsonl").read_text() == ""
    # Independent count straight from the files.
    lines = (SHARED / "ml-100k" / "u.data").read_text().splitlines()
    assert len({ln.split("\t")[0] for ln in lines}) == 943
    ds = Dataset.open(out)
    assert ds.items.set_index("item_id").loc["1", "text"] == "Toy Story (1995) | Animation, Children's, Comedy"
    assert sum(manifest["split"]["users"].values()) == 943
    ev = ds.events
    assert ev.groupby("user_id")["ts"].apply(lambda s: s.is_monotonic_increasing).all()


@pytest.mark.parametrize(("text", "kept"), [("0.5", 0.5), ("5", 5.0), ("3.5", 3.5), ("0", None), ("0.0", None), ("-1", None),
                                             ("5.5", None), ("2.25", None), ("nan", None), ("inf", None)])
def test_a_rating_is_a_half_step_from_half_a_star_to_five(text, kept):
    from interestgym.data.movielens import _rating_reason

    rating, reason = _rating_reason(text)
    assert rating == kept
    assert (reason is None) == (kept is not None)
    if kept is None:
        assert reason == f"bad rating: {text!r}; expected a number from 0.5 to 5 in steps of 0.5"
