"""MovieLens reader: ratings become ``rate`` events, movies become items.

The variant is detected from the files present (in the folder given, one level below it, or in a
``.zip`` as GroupLens distributes it):

==============  ===========================================  ================================  ========
variant         ratings                                      movies                            tags
==============  ===========================================  ================================  ========
ml-100k         ``u.data``: ``user \\t item \\t rating \\t ts``  ``u.item`` (``|``, latin-1) +     –
                                                             ``u.genre`` (genre names)
ml-1m / ml-10m  ``ratings.dat``: ``user::movie::rating::ts``  ``movies.dat``: ``id::title::g|g``  ``tags.dat`` (10m)
ml-latest/25m   ``ratings.csv`` (header                      ``movies.csv`` (quoted CSV, UTF-8)  ``tags.csv``
                ``userId,movieId,rating,timestamp``)
==============  ===========================================  ================================  ========

``.dat`` files, ``u.item`` and ``u.genre`` are decoded line by line as UTF-8, falling back to latin-1 for a line
that is not UTF-8 (ml-1m and the ml-100k release are latin-1, ml-10m UTF-8; a ``u.item`` re-saved as UTF-8 reads the
same titles, not ``MisÃ©rables``); the CSV releases are UTF-8.

Items
    ``text`` = ``"{title} | {genre1}, {genre2}"`` — plus ``" | {tag1}, {tag2}, ..."`` when the release
    has tags (up to ``max_tags`` distinct tags, case-insensitively merged, most frequent first, ties
    in order of first use; ``--no-tags`` leaves them out). The placeholder genres ``unknown`` (ml-100k)
    and ``(no genres listed)`` are not written; a movie without genres has ``text = title``.
    ``category`` = the first genre (as listed by the source; "" when none), ``subcategory`` = "";
    extra columns: ``title``, ``genres`` (all genres joined with ``|``) and, for ml-100k,
    ``release_date``.

Events
    One ``rate`` event per rating: ``value`` = the rating (0.5 .. 5 in steps of 0.5), ``ts`` the
    rating's unix time, ``seq`` its line number. A rating of a movie missing from the movies file is
    rejected ("unknown item"). Tags are item text only, not events.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interestgym.data.dataset import SplitSpec
from interestgym.data.readers import (
    Container,
    EventTable,
    ReaderOutput,
    Source,
    delimited_records,
    first_line,
    items_frame,
    note_unterminated,
    text_lines,
    ts_range_reason,
    unique_paths,
    write_reader_output,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

#: ml-100k's genre names in flag order, used when ``u.genre`` is absent.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_NO_GENRE = {"unknown", "(no genres listed)"}
DEFAULT_MAX_TAGS = 10

RATINGS_HEADER = ["userId", "movieId", "rating", "timestamp"]
MOVIES_HEADER = ["movieId", "title", "genres"]
TAGS_HEADER = ["userId", "movieId", "tag", "timestamp"]


@dataclass(frozen=True)
class _Variant:
    name: str
    ratings: Source
    movies: Source
    genres: Source | None = None
    tags: Source | None = None


def detect_variant(path: str | Path) -> _Variant:
    """Find the MovieLens files under ``path`` (folder or zip) and say which release they are."""
    box = Container.open(path)
    udata, uitem = box.find("u.data"), box.find("u.item")
    if udata and uitem:
        return _Variant("ml-100k", udata, uitem, genres=box.find("u.genre"))
    rdat, mdat = box.find("ratings.dat"), box.find("movies.dat")
    if rdat and mdat:
        tags = box.find("tags.dat")
        return _Variant("ml-10m" if tags else "ml-1m", rdat, mdat, tags=tags)
    rcsv, mcsv = box.find("ratings.csv"), box.find("movies.csv")
    if rcsv and mcsv:
        return _Variant("ml-latest", rcsv, mcsv, tags=box.find("tags.csv"))
    raise DataError(
        f"{path}: not a MovieLens folder: expected u.data + u.item (ml-100k), ratings.dat + movies.dat "
        f"(ml-1m, ml-10m) or ratings.csv + movies.csv (ml-latest, ml-20m, ml-25m); found: {box.listing()}"
    )


# ------------------------------------------------------------------------------------------- parsing
def _positive_int(text: str) -> bool:
    return text.isdigit() and int(text) > 0


def _rating_reason(text: str) -> tuple[float | None, str | None]:
    try:
        rating = float(text)
    except ValueError:
        return None, f"bad rating: {text!r}; expected a number from 0.5 to 5 in steps of 0.5"
    if not (0.5 <= rating <= 5.0) or not math.isclose(rating * 2, round(rating * 2)):
        return None, f"bad rating: {text!r}; expected a number from 0.5 to 5 in steps of 0.5"
    return rating, None


def _header_fields(source: Source, expected: list[str]) -> int:
    """Check a CSV release's header; return the number of lines it takes (1)."""
    found = first_line(source)
    if found is None:
        raise DataError(f"{source.name}: empty file; expected a header {','.join(expected)} and rows")
    text, lineno = found
    if lineno != 1 or [f.strip() for f in text.split(",")] != expected:
        raise DataError(f"{source.name} line {lineno}: header {text!r}; expected {','.join(expected)}")
    return 1


def _read_genres(source: Source | None, log: RejectLog) -> list[str]:
    if source is None:
        log.note("u.genre not found: the standard ml-100k genre names were used")
        return list(ML100K_GENRES)
    by_index: dict[int, str] = {}
    note_unterminated(source, log)
    for lineno, text in text_lines(source, log, encoding="utf-8/latin-1"):
        name, sep, index = text.rpartition("|")
        if not sep or not name or not index.isdigit():
            log.reject(source.name, lineno, f"wrong fields: expected 'genre|index', found {text!r}", text)
            continue
        if int(index) in by_index:
            log.reject(source.name, lineno, f"duplicate genre index: {index} is also {by_index[int(index)]!r}", text)
            continue
        by_index[int(index)] = name
        log.keep(source.name)
    if sorted(by_index) != list(range(len(by_index))) or not by_index:
        raise DataError(f"{source.name}: genre indexes {sorted(by_index)}; expected 0..N-1 without gaps")
    return [by_index[i] for i in range(len(by_index))]


class _Movies:
    """Movies as they are read: id -> (title, genres, extra fields), in file order."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.title: dict[str, str] = {}
        self.genres: dict[str, list[str]] = {}
        self.release: dict[str, str] = {}
        self.line: dict[str, int] = {}

    def add(self, source: Source, log: RejectLog, lineno: int, raw: str, movie_id: str, title: str, genres: list[str]) -> None:
        if not _positive_int(movie_id):
            log.reject(source.name, lineno, f"bad movie id: {movie_id!r}; expected a positive integer", raw)
            return
        if movie_id in self.title:
            log.reject(source.name, lineno, f"duplicate movie id: {movie_id} (first at line {self.line[movie_id]})", raw)
            return
        if not title.strip():
            log.reject(source.name, lineno, f"empty title: movie {movie_id} has no title; expected text", raw)
            return
        self.ids.append(movie_id)
        self.title[movie_id] = title.strip()
        self.genres[movie_id] = [g for g in genres if g and g not in _NO_GENRE]
        self.line[movie_id] = lineno
        log.keep(source.name)


def _read_u_item(source: Source, genres: list[str], log: RejectLog) -> _Movies:
    movies = _Movies()
    n_fields = 5 + len(genres)
    note_unterminated(source, log)
    for lineno, text in text_lines(source, log, encoding="utf-8/latin-1"):
        fields = text.split("|")
        if len(fields) != n_fields:
            log.reject(source.name, lineno, f"wrong field count: expected {n_fields} '|'-separated fields (id, title, release, video release, url, {len(genres)} genre flags), found {len(fields)}", text)
            continue
        flags = fields[5:]
        bad = next((f for f in flags if f not in ("0", "1")), None)
        if bad is not None:
            log.reject(source.name, lineno, f"bad genre flag: {bad!r}; expected 0 or 1", text)
            continue
        movie_genres = [g for g, f in zip(genres, flags) if f == "1"]
        before = len(movies.ids)
        movies.add(source, log, lineno, text, fields[0], fields[1], movie_genres)
        if len(movies.ids) > before:
            movies.release[fields[0]] = fields[2]
    return movies


def _read_movies_dat(source: Source, log: RejectLog) -> _Movies:
    movies = _Movies()
    note_unterminated(source, log)
    for lineno, text in text_lines(source, log, encoding="utf-8/latin-1"):
        fields = text.split("::")
        if len(fields) != 3:
            log.reject(source.name, lineno, f"wrong field count: expected 3 '::'-separated fields (movie, title, genres), found {len(fields)}", text)
            continue
        movies.add(source, log, lineno, text, fields[0], fields[1], fields[2].split("|"))
    return movies


def _read_movies_csv(source: Source, log: RejectLog) -> _Movies:
    movies = _Movies()
    skip = _header_fields(source, MOVIES_HEADER)
    note_unterminated(source, log)
    for lineno, text, fields in delimited_records(source, log, delimiter=",", quoted=True, skip_lines=skip):
        if len(fields) != 3:
            log.reject(source.name, lineno, f"wrong field count: expected 3 fields (movieId, title, genres), found {len(fields)}", text)
            continue
        movies.add(source, log, lineno, text, fields[0], fields[1], fields[2].split("|"))
    return movies


def _rating_rows(variant: _Variant, log: RejectLog) -> Iterator[tuple[int, str, list[str]]]:
    src = variant.ratings
    note_unterminated(src, log)
    if variant.name == "ml-100k":
        for lineno, text in text_lines(src, log):
            yield lineno, text, text.split("\t")
    elif variant.name in ("ml-1m", "ml-10m"):
        for lineno, text in text_lines(src, log, encoding="utf-8/latin-1"):
            yield lineno, text, text.split("::")
    else:
        skip = _header_fields(src, RATINGS_HEADER)
        yield from delimited_records(src, log, delimiter=",", quoted=True, skip_lines=skip)


def _tag_rows(variant: _Variant, log: RejectLog) -> Iterator[tuple[int, str, list[str]]]:
    src = variant.tags
    assert src is not None
    note_unterminated(src, log)
    if variant.name == "ml-10m":
        for lineno, text in text_lines(src, log, encoding="utf-8/latin-1"):
            parts = text.split("::")
            # A tag may itself contain '::': user and movie are the first two fields, ts the last.
            yield lineno, text, (parts[:2] + ["::".join(parts[2:-1]), parts[-1]] if len(parts) > 4 else parts)
    else:
        skip = _header_fields(src, TAGS_HEADER)
        yield from delimited_records(src, log, delimiter=",", quoted=True, skip_lines=skip)


def _read_tags(variant: _Variant, movies: _Movies, log: RejectLog, max_tags: int) -> dict[str, list[str]]:
    """movie id -> its most used distinct tags (case-insensitive), most frequent first."""
    src = variant.tags
    assert src is not None
    counts: dict[str, Counter] = {}
    first_use: dict[str, dict[str, int]] = {}
    spelling: dict[str, dict[str, str]] = {}
    for lineno, text, fields in _tag_rows(variant, log):
        if len(fields) != 4:
            log.reject(src.name, lineno, f"wrong field count: expected 4 fields (user, movie, tag, timestamp), found {len(fields)}", text)
            continue
        user, movie, tag, ts_text = fields
        reason = None
        if not _positive_int(user):
            reason = f"bad user id: {user!r}; expected a positive integer"
        elif movie not in movies.title:
            reason = f"unknown item: movie {movie!r} is not in {variant.movies.basename}"
        elif not tag.strip():
            reason = "empty tag: expected text"
        elif not ts_text.isdigit():
            reason = f"bad time: {ts_text!r}; expected unix seconds"
        else:
            reason = ts_range_reason(int(ts_text), ts_text)
        if reason:
            log.reject(src.name, lineno, reason, text)
            continue
        log.keep(src.name)
        key = tag.strip().lower()
        c = counts.setdefault(movie, Counter())
        c[key] += 1
        first_use.setdefault(movie, {}).setdefault(key, lineno)
        spelling.setdefault(movie, {}).setdefault(key, tag.strip())
    out: dict[str, list[str]] = {}
    for movie, c in counts.items():
        ranked = sorted(c, key=lambda k: (-c[k], first_use[movie][k]))[:max_tags]
        out[movie] = [spelling[movie][k] for k in ranked]
    return out


def item_text(title: str, genres: list[str], tags: list[str]) -> str:
    """The documented item text: ``title | genre, genre | tag, tag`` (empty parts left out)."""
    parts = [title]
    if genres:
        parts.append(", ".join(genres))
    if tags:
        parts.append(", ".join(tags))
    return " | ".join(parts)


# ----------------------------------------------------------------------------------------------- read
def read_movielens(path: str | Path, log: RejectLog, *, tags: bool = True, max_tags: int = DEFAULT_MAX_TAGS) -> ReaderOutput:
    """Read a MovieLens release into items and ``rate`` events (see the module docstring)."""
    if max_tags < 1:
        raise DataError(f"--max-tags {max_tags}: expected a positive number")
    variant = detect_variant(path)
    files = [variant.movies.path, variant.ratings.path]
    if variant.name == "ml-100k":
        genres = _read_genres(variant.genres, log)
        if variant.genres is not None:
            files.append(variant.genres.path)
        movies = _read_u_item(variant.movies, genres, log)
    elif variant.name in ("ml-1m", "ml-10m"):
        movies = _read_movies_dat(variant.movies, log)
    else:
        movies = _read_movies_csv(variant.movies, log)
    if not movies.ids:
        raise log.nothing_valid(variant.movies.name, "one movie per line")

    movie_tags: dict[str, list[str]] = {}
    if tags and variant.tags is not None:
        files.append(variant.tags.path)
        movie_tags = _read_tags(variant, movies, log, max_tags)

    events = EventTable()
    src = variant.ratings
    name = src.name
    stats = log.stats(name)
    title = movies.title
    n_expected = "4 tab-separated fields (user, item, rating, timestamp)" if variant.name == "ml-100k" else (
        "4 '::'-separated fields (user, movie, rating, timestamp)" if variant.name in ("ml-1m", "ml-10m") else "4 fields (userId, movieId, rating, timestamp)")
    for lineno, text, fields in _rating_rows(variant, log):
        if len(fields) != 4:
            log.reject(name, lineno, f"wrong field count: expected {n_expected}, found {len(fields)}", text)
            continue
        user, movie, rating_text, ts_text = fields
        if not _positive_int(user):
            log.reject(name, lineno, f"bad user id: {user!r}; expected a positive integer", text)
            continue
        if movie not in title:
            log.reject(name, lineno, f"unknown item: movie {movie!r} is not in {variant.movies.basename}", text)
            continue
        rating, reason = _rating_reason(rating_text)
        if reason is None:
            if ts_text.isdigit():
                reason = ts_range_reason(int(ts_text), ts_text)
            else:
                reason = f"bad time: {ts_text!r}; expected unix seconds"
        if reason:
            log.reject(name, lineno, reason, text)
            continue
        stats.kept += 1
        events.add(user, int(ts_text), movie, "rate", rating, lineno)
    if not len(events):
        raise log.nothing_valid(name, f"ratings of {n_expected}")
    if variant.tags is not None and not tags:
        log.note(f"{variant.tags.name}: tags left out of the item texts (--no-tags)")

    items = {"item_id": [], "text": [], "category": [], "subcategory": [], "title": [], "genres": []}
    if variant.name == "ml-100k":
        items["release_date"] = []
    for movie in movies.ids:
        g = movies.genres[movie]
        items["item_id"].append(movie)
        items["text"].append(item_text(title[movie], g, movie_tags.get(movie, [])))
        items["category"].append(g[0] if g else "")
        items["subcategory"].append("")
        items["title"].append(title[movie])
        items["genres"].append("|".join(g))
        if variant.name == "ml-100k":
            items["release_date"].append(movies.release[movie])
    n_tagged = sum(1 for m in movies.ids if movie_tags.get(m))
    counts: dict[str, Any] = {"ratings": len(events), "movies": len(movies.ids)}
    reader: dict[str, Any] = {"variant": variant.name, "item_text": "title | genres" + (" | tags" if movie_tags else "")}
    if variant.tags is not None:
        counts["movies_with_tags"] = n_tagged
        reader["tags"] = {"used": bool(tags), "max_tags": max_tags}
    return ReaderOutput(
        items=items_frame(items),
        events=events.frame(),
        source_files=unique_paths(files),
        counts=counts,
        reader=reader,
    )


def prepare_movielens(
    path: str | Path,
    out: str | Path,
    *,
    split: SplitSpec | None = None,
    max_reject_rate: float | None = None,
    command: list[str] | None = None,
    tags: bool = True,
    max_tags: int = DEFAULT_MAX_TAGS,
    tz_offset_hours: float = 0.0,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Read a MovieLens release and write the canonical dataset to ``out``; return the manifest."""
    log = RejectLog()
    data = read_movielens(path, log, tags=tags, max_tags=max_tags)
    return write_reader_output(
        out, "movielens", data, log, split=split, max_reject_rate=max_reject_rate, command=command,
        tz_offset_hours=tz_offset_hours, deterministic=deterministic,
    )
