"""A plain file whose last byte is not a newline is read whole, and said: a file cut short ends that way too, and
a line cut at a field boundary still parses (a MIND impression list cut after a space is a row with fewer
candidates), so nothing else would tell the user to check it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_prepare_mind import BEHAVIORS, NEWS, _write_part
from test_scale_prepare import assert_same_read

from interestgym.data.events import EventsOptions
from interestgym.data.mind import read_mind
from interestgym.data.movielens import read_movielens
from interestgym.data.validate import RejectLog

NOTE = "the file does not end with a newline; its last line was read as it is"


def _notes(log: RejectLog, name: str) -> list[str]:
    return [n for n in log.notes if NOTE in n and Path(n.split(":")[0]).name == name]


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["ends with a newline", "cut short"])
def test_an_event_log_without_a_final_newline_is_said_by_both_readers(tmp_path, ending):
    log_file = tmp_path / "log.csv"
    rows = [b"user_id,item_id,ts,action,text"] + [f"u{k % 3},i{k},{1511544070 + k},click,item {k}".encode() for k in range(9)]
    log_file.write_bytes(b"\n".join(rows) + ending)
    items = tmp_path / "items.tsv"  # an items file cut short is said too, by its own name
    items.write_bytes(b"item_id\ttext\n" + b"\n".join(f"i{k}\titem {k}".encode() for k in range(9)))
    log = assert_same_read(log_file, EventsOptions(items=str(items)))  # the same notes, rows and rejects from both readers
    assert len(_notes(log, "log.csv")) == (ending == b"")
    assert len(_notes(log, "items.tsv")) == 1


def test_a_mind_behaviors_file_cut_after_a_space_is_said(tmp_path):
    """The new user's case: the last impression list cut after a space is a row with fewer candidates, kept as
    any other (nothing rejected); the note is what tells."""
    whole = ("\n".join(BEHAVIORS[:3]) + "\n").encode()  # row 3's impressions: "N1-0 N3-1"
    part = _write_part(tmp_path / "whole", whole, NEWS)
    log = RejectLog()
    read_mind(part, log)
    assert not _notes(log, "behaviors.tsv") and not _notes(log, "news.tsv")
    cut = whole[: whole.rindex(b"N3-1")]  # "...\tN1-0 ": N3-1 lost
    part = _write_part(tmp_path / "cut", cut, NEWS)
    log = RejectLog()
    read_mind(part, log)
    assert log.files[str(part / "behaviors.tsv")].as_dict()["kept"] == 3  # the cut row parses
    assert len(_notes(log, "behaviors.tsv")) == 1 and not _notes(log, "news.tsv")


def test_a_movielens_ratings_file_without_a_final_newline_is_said(tmp_path):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_bytes(b"1\t10\t4\t881250949\n2\t10\t5\t881250950")
    (folder / "u.item").write_bytes(b"10|Movie (1995)|01-Jan-1995||http://x|" + b"|".join([b"0"] * 19) + b"\n")
    log = RejectLog()
    read_movielens(folder, log)
    assert len(_notes(log, "u.data")) == 1 and not _notes(log, "u.item")


def test_movielens_csv_files_and_a_header_only_file_without_a_final_newline_are_said(tmp_path):
    """ml-latest's movies.csv and ratings.csv (CSV, quoted titles) get the note too; the note speaks of the last line,
    which in a header-only file is the header."""
    from test_prepare_movielens import _ml_latest

    from interestgym.data.events import read_events
    from interestgym.errors import DataError

    folder = tmp_path / "ml-latest-small"
    _ml_latest(folder, None)
    movies = folder / "movies.csv"
    movies.write_bytes(movies.read_bytes().rstrip(b"\n"))
    log = RejectLog()
    read_movielens(folder, log)
    assert len(_notes(log, "movies.csv")) == 1 and not _notes(log, "ratings.csv")
    header_only = tmp_path / "h.csv"
    header_only.write_bytes(b"user_id,item_id,ts,action,text")
    log = RejectLog()
    with pytest.raises(DataError):
        read_events(header_only, log)
    expected = (f"{header_only}: {NOTE} (a file cut short, e.g. by an interrupted download or copy, ends this way too: if so, "
                "that line is incomplete; check it)")
    assert [n for n in log.notes if NOTE in n] == [expected]
