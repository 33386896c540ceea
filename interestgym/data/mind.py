"""MIND (Microsoft News Dataset) reader: impressions, clicks and news texts.

Input, as Microsoft distributes it, in any of these shapes:

* a folder holding ``behaviors.tsv`` and ``news.tsv`` (one *part*);
* a folder whose sub-folders (``train/``, ``dev/``, ``MINDsmall_train/`` ...) each hold both files;
* a folder of the zips (``MINDsmall_train.zip``, ``MINDsmall_dev.zip`` ...) or one such zip;
* one zip holding the parts' folders (``train/``, ``dev/`` ...), each with both files.

A part is named ``train``, ``dev`` or ``test`` when its folder or zip name ends that way, else by its
folder name. By default every part except ``test`` is read (MIND-large's test impressions carry no
click labels and cannot be replayed); ``parts`` chooses explicitly.

``behaviors.tsv``: ``impression_id \\t user_id \\t time \\t history \\t impressions``, time like
``11/12/2019 2:14:46 PM`` (taken as UTC), history = space-separated news ids (may be empty),
impressions = ``N123-1 N456-0`` (label 1 = click). ``news.tsv``: ``id \\t category \\t subcategory \\t
title \\t abstract \\t url \\t title_entities \\t abstract_entities``.

What becomes of them:

* **items**: one per news row (first row kept when a news id appears in several parts); ``text`` =
  the title (``text="title+abstract"``: ``"{title} | {abstract}"``, the abstract left out when
  empty); ``category`` / ``subcategory`` from the news row; extra columns ``title``, ``abstract``,
  ``url``.
* **impressions**: one per behaviors row, whole: ``candidates`` (list of news ids) and ``labels``
  (list of int8), ``ts`` the impression's time, column ``part``. With several parts the impression id
  is ``"{part}-{id}"`` (MIND numbers each part from 1). Candidates without a news row stay in the
  impression (the environment skips them and counts them); the manifest counts them.
* **events** (all ``click``, value 1.0), column ``origin``:

  - ``history``: a user's history clicks have no time of their own. The history repeats in every
    impression row of the user: it is taken once per user, de-duplicated in order of first
    appearance (rows in file order, parts in order), and every history click gets
    ``ts = (the user's first impression time) - 1`` so that it comes before every impression; their
    order is kept through ``seq``. In MIND a user's history is the same in every row. A log whose
    history grows from row to row (the clicks so far) would leak if the later ids went before the
    first impression: an id first in a later row's history goes just before the earliest row holding
    it (``ts = that row's time - 1``), and not at all when the user clicked it in an impression
    before that row or in its second (the same click, already an event).
  - ``impression``: every clicked candidate, at the impression's ``ts``, column ``impression_id``
    naming it. The environment scores an impression *before* the events with the same ``ts``, so
    the clicks an impression produced update the profile only after that impression was scored.

  Clicks on news without a news row are dropped from the events (the environment needs a text
  embedding for every event item) and counted in the manifest and the validation notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interestgym.data.columns import id_reason
from interestgym.data.dataset import SplitSpec
from interestgym.data.readers import (
    Container,
    EventTable,
    ReaderOutput,
    Source,
    civil_to_ts,
    items_frame,
    note_unterminated,
    text_lines,
    ts_range_reason,
    unique_paths,
    write_reader_output,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

TEXT_MODES = ("title", "title+abstract")
DEFAULT_SKIPPED_PARTS = ("test",)
_PART_ORDER = {"train": 0, "dev": 1, "valid": 1, "test": 2}
_BEHAVIOR_FIELDS = "impression_id, user_id, time, history, impressions"
_NEWS_FIELDS = "id, category, subcategory, title, abstract, url, title_entities, abstract_entities"
_TIME_EXPECTED = "M/D/YYYY h:mm:ss AM|PM, e.g. 11/12/2019 2:14:46 PM"
_TAB_HINT = " (more than expected: does a field hold a tab? MIND's fields cannot)"


@dataclass(frozen=True)
class MindPart:
    """One MIND part (e.g. ``train``): its behaviors and news files."""

    name: str
    behaviors: Source
    news: Source


def _part_name(stem: str) -> str:
    m = re.search(r"(?:^|[_\-.])(train|dev|valid|test)$", stem, re.IGNORECASE)
    return m.group(1).lower() if m else stem


def _part_from(box: Container, name: str, where: str) -> MindPart | None:
    behaviors, news = box.find("behaviors.tsv"), box.find("news.tsv")
    if behaviors is None:
        return None
    if news is None:
        raise DataError(f"{where}: behaviors.tsv without news.tsv; expected both files of a MIND part")
    return MindPart(name, behaviors, news)


def _holds_parts(box: Container) -> bool:
    """A zip of the parts' folders: its shallowest ``behaviors.tsv`` files are several, side by side (``train/``,
    ``dev/``); one at the top (a part's own zip, perhaps with a copy deeper down) is one part."""
    hits = box.find_all("behaviors.tsv")
    return len(hits) > 1 and hits[0].count("/") == hits[1].count("/")


def _parts_in_one_zip(box: Container, path: Path) -> list[MindPart]:
    """The parts of one zip holding several (``train/behaviors.tsv``, ``dev/behaviors.tsv`` ...): one per folder
    holding a ``behaviors.tsv``, named by the folder, its ``news.tsv`` the one beside it."""
    parts: dict[str, MindPart] = {}
    hits = box.find_all("behaviors.tsv")
    news_in = {m.rpartition("/")[0]: m for m in box.find_all("news.tsv")}  # folder -> its news.tsv
    for member in [m for m in hits if m.count("/") == hits[0].count("/")]:  # the parts side by side; deeper copies are not
        folder = member.rpartition("/")[0]
        where = f"{path}:{folder or '/'}"
        news = news_in.get(folder)
        if news is None:
            raise DataError(f"{where}: behaviors.tsv without news.tsv beside it; expected both files of a MIND part in each folder")
        name = _part_name(folder.rpartition("/")[2] if folder else path.stem)
        if name in parts:
            raise DataError(f"{path}: two parts named {name!r} ({parts[name].behaviors.member} and {member}); expected one "
                            "folder per part (train/, dev/ ...)")
        parts[name] = MindPart(name, box.source(member), box.source(news))
    return sorted(parts.values(), key=lambda p: (_PART_ORDER.get(p.name, 3), p.name))


def find_parts(path: str | Path) -> list[MindPart]:
    """Every MIND part under ``path`` (folder, folder of parts, folder of zips, or one zip), in order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; expected a MIND folder or zip")
    if path.is_file() and path.name.lower() in ("behaviors.tsv", "news.tsv"):
        path = path.parent
    if path.is_file():
        box = Container.open(path)
        if _holds_parts(box):
            return _parts_in_one_zip(box, path)
        part = _part_from(box, _part_name(path.stem), str(path))
        if part is None:
            raise DataError(f"{path}: zip without behaviors.tsv; expected a MIND zip such as MINDsmall_train.zip")
        return [part]
    if (path / "behaviors.tsv").is_file() or (path / "news.tsv").is_file():
        if not (path / "behaviors.tsv").is_file():
            raise DataError(f"{path}: news.tsv without behaviors.tsv; expected both files of a MIND part")
        if not (path / "news.tsv").is_file():
            raise DataError(f"{path}: behaviors.tsv without news.tsv; expected both files of a MIND part")
        return [MindPart(_part_name(path.name), Source(path / "behaviors.tsv"), Source(path / "news.tsv"))]
    parts: dict[str, MindPart] = {}
    for child in sorted(path.iterdir()):
        if child.is_dir() and (child / "behaviors.tsv").exists():
            part = _part_from(Container.open(child, max_depth=0), _part_name(child.name), str(child))
        elif child.is_file() and child.suffix.lower() == ".zip":
            box = Container.open(child)
            if _holds_parts(box):  # one zip of the parts' folders, in a folder
                for part in _parts_in_one_zip(box, child):
                    parts.setdefault(part.name, part)
                continue
            part = _part_from(box, _part_name(child.stem), str(child))
        else:
            continue
        # An unzipped folder next to its zip: read the folder (sorted() puts it before the zip).
        if part is not None and part.name not in parts:
            parts[part.name] = part
    if not parts:
        listing = Container.open(path, max_depth=0).listing()
        raise DataError(
            f"{path}: not a MIND folder: expected behaviors.tsv + news.tsv, sub-folders (train/, dev/) "
            f"holding them, or MIND zips (MINDsmall_train.zip ...); found: {listing}"
        )
    return sorted(parts.values(), key=lambda p: (_PART_ORDER.get(p.name, 3), p.name))


def select_parts(found: list[MindPart], wanted: list[str] | None) -> tuple[list[MindPart], list[str]]:
    """The parts to read and the names left out."""
    names = [p.name for p in found]
    if wanted:
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise DataError(f"--mind-parts {','.join(wanted)}: no part named {', '.join(unknown)}; found: {', '.join(names)}")
        chosen = [p for p in found if p.name in wanted]
    else:
        chosen = [p for p in found if p.name not in DEFAULT_SKIPPED_PARTS] or found
    return chosen, [n for n in names if n not in {p.name for p in chosen}]


# ------------------------------------------------------------------------------------------- parsing
def parse_mind_time(text: str) -> int:
    """``11/12/2019 2:14:46 PM`` -> UTC unix seconds; ValueError when it is not such a time."""
    day_part, clock, meridiem = text.split(" ")
    month, day, year = day_part.split("/")
    hh, mm, ss = clock.split(":")
    hour = int(hh)
    if meridiem not in ("AM", "PM") or not 1 <= hour <= 12 or len(year) != 4 or len(mm) != 2 or len(ss) != 2:
        raise ValueError(text)
    hour = hour % 12 + (12 if meridiem == "PM" else 0)
    return civil_to_ts(int(year), int(month), int(day), hour, int(mm), int(ss))


def _is_header(fields: list[str], names: str) -> bool:
    """A first line naming the file's columns (``id  category  subcategory  title ...``): at least two of its fields
    are column names of the file (spelled with or without ``_``, any case), which no data row of MIND holds."""
    wanted = {n.strip().replace("_", "") for n in names.split(",")} | {"newsid", "userid", "nid", "uid"}
    return sum(f.strip().lower().replace("_", "").replace(" ", "") in wanted for f in fields) >= 2


@dataclass
class _News:
    ids: list[str] = field(default_factory=list)
    rows: dict[str, tuple[str, str, str, str, str]] = field(default_factory=dict)  # id -> cat, subcat, title, abstract, url
    repeated_across_parts: int = 0
    differing_across_parts: int = 0


def _read_news(part: MindPart, news: _News, log: RejectLog) -> None:
    src = part.news
    first_line: dict[str, int] = {}
    note_unterminated(src, log)
    for lineno, text in text_lines(src, log):
        fields = text.split("\t")
        if len(fields) != 8:
            log.reject(src.name, lineno, f"wrong field count: expected 8 tab-separated fields ({_NEWS_FIELDS}), found {len(fields)}"
                       + _TAB_HINT * (len(fields) > 8), text)
            continue
        news_id, category, subcategory, title, abstract, url = (f.strip() for f in fields[:6])
        if lineno == 1 and _is_header(fields, _NEWS_FIELDS):
            log.header(src.name, lineno, text, f"MIND's news.tsv has none (its rows: {_NEWS_FIELDS})")
            continue
        if not news_id:
            log.reject(src.name, lineno, "empty news id: expected an id such as N12345", text)
            continue
        if (reason := id_reason(news_id, "news id")) is not None:
            log.reject(src.name, lineno, reason, text)
            continue
        if news_id in first_line:
            log.reject(src.name, lineno, f"duplicate news id: {news_id} (first at line {first_line[news_id]})", text)
            continue
        if not title:
            log.reject(src.name, lineno, f"empty title: news {news_id} has no title; expected text", text)
            continue
        first_line[news_id] = lineno
        log.keep(src.name)
        row = (category, subcategory, title, abstract, url)
        if news_id in news.rows:
            news.repeated_across_parts += 1
            news.differing_across_parts += news.rows[news_id] != row
            continue
        news.ids.append(news_id)
        news.rows[news_id] = row


@dataclass
class _Behaviors:
    """Accumulates impressions and clicks across parts."""

    impression_id: list[str] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    candidates: list[list[str]] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    part: list[str] = field(default_factory=list)
    history: dict[str, dict[str, int]] = field(default_factory=dict)  # user -> history id -> time of the earliest row holding it
    first_history: dict[str, tuple[str, ...]] = field(default_factory=dict)
    first_ts: dict[str, int] = field(default_factory=dict)
    history_ids_read: int = 0
    history_repeats_in_row: int = 0
    users_with_differing_history: set[str] = field(default_factory=set)
    clicks: list[tuple[str, int, str, str]] = field(default_factory=list)  # user, ts, news id, impression id
    strings: dict[str, str] = field(default_factory=dict)  # interned news ids


def _read_behaviors(part: MindPart, prefix: str, data: _Behaviors, log: RejectLog) -> None:
    src = part.behaviors
    name = src.name
    stats = log.stats(name)
    first_line: dict[str, int] = {}
    time_cache: dict[str, int] = {}
    ids = data.strings
    note_unterminated(src, log)
    for lineno, text in text_lines(src, log):
        fields = text.split("\t")
        if len(fields) != 5:
            log.reject(name, lineno, f"wrong field count: expected 5 tab-separated fields ({_BEHAVIOR_FIELDS}), found {len(fields)}"
                       + _TAB_HINT * (len(fields) > 5), text)
            continue
        imp_id, user, time_text, history_text, impressions_text = (f.strip() for f in fields)
        if lineno == 1 and _is_header(fields, _BEHAVIOR_FIELDS):
            log.header(name, lineno, text, f"MIND's behaviors.tsv has none (its rows: {_BEHAVIOR_FIELDS})")
            continue
        if not imp_id:
            log.reject(name, lineno, "empty impression id: expected an id", text)
            continue
        if imp_id in first_line:
            log.reject(name, lineno, f"duplicate impression id: {imp_id} (first at line {first_line[imp_id]})", text)
            continue
        if not user:
            log.reject(name, lineno, "empty user id: expected an id such as U12345", text)
            continue
        if (reason := id_reason(user, "user id")) is not None:  # a NUL would make a new, unseen user
            log.reject(name, lineno, reason, text)
            continue
        ts = time_cache.get(time_text)
        if ts is None:
            try:
                ts = parse_mind_time(time_text)
            except ValueError:
                log.reject(name, lineno, f"bad time: {time_text!r}; expected {_TIME_EXPECTED}", text)
                continue
            reason = ts_range_reason(ts, time_text)
            if reason:
                log.reject(name, lineno, reason, text)
                continue
            time_cache[time_text] = ts
        tokens = impressions_text.split()
        if not tokens:
            log.reject(name, lineno, "no impression candidates: expected ID-LABEL pairs such as N123-1 N456-0", text)
            continue
        cands: list[str] = []
        labels = np.empty(len(tokens), dtype=np.int8)
        reason = None
        for pos, token in enumerate(tokens):
            news_id, sep, label = token.rpartition("-")
            if not sep or not news_id:
                reason = (f"unlabelled candidate: {token!r} at position {pos + 1} of the impressions field has no click label; "
                          "expected ID-0 or ID-1 "
                          "(MIND-large's test impressions are unlabelled: leave that part out)")
                break
            if label not in ("0", "1"):
                reason = (f"bad click label: {token!r} at position {pos + 1} of the impressions field has label {label!r}; "
                          "expected 0 or 1")
                break
            cands.append(ids.setdefault(news_id, news_id))  # one string per news id: MIND repeats them millions of times
            labels[pos] = label == "1"
        if reason:
            log.reject(name, lineno, reason, text)
            continue
        first_line[imp_id] = lineno
        stats.kept += 1

        full_id = f"{prefix}{imp_id}"
        data.impression_id.append(full_id)
        data.user_id.append(user)
        data.ts.append(ts)
        data.candidates.append(cands)
        data.labels.append(labels)
        data.part.append(part.name)
        if user not in data.first_ts or ts < data.first_ts[user]:
            data.first_ts[user] = ts
        for news_id, label in zip(cands, labels):
            if label:
                data.clicks.append((user, ts, news_id, full_id))

        history = history_text.split()
        data.history_ids_read += len(history)
        known = data.history.setdefault(user, {})
        row_ids = dict.fromkeys(history)  # ordered, de-duplicated
        data.history_repeats_in_row += len(history) - len(row_ids)
        row_key = tuple(row_ids)
        if user not in data.first_history:
            data.first_history[user] = row_key
        elif row_key != data.first_history[user]:
            data.users_with_differing_history.add(user)
        for news_id in row_ids:  # in order of first appearance; the time of the earliest row holding it
            if ts < known.setdefault(news_id, ts):
                known[news_id] = ts


# ----------------------------------------------------------------------------------------------- read
def read_mind(
    path: str | Path,
    log: RejectLog,
    *,
    text: str = "title",
    parts: list[str] | None = None,
) -> ReaderOutput:
    """Read MIND into items, click events and impressions (see the module docstring)."""
    if text not in TEXT_MODES:
        raise DataError(f"--mind-text {text!r}: expected one of {', '.join(TEXT_MODES)}")
    chosen, skipped = select_parts(find_parts(path), parts)
    if skipped:
        log.note(f"MIND parts left out: {', '.join(skipped)} (choose with --mind-parts)")

    news = _News()
    for part in chosen:
        _read_news(part, news, log)
    if not news.ids:
        raise log.nothing_valid(chosen[0].news.name, f"news rows of 8 tab-separated fields ({_NEWS_FIELDS})")
    behaviors = _Behaviors()
    for part in chosen:
        _read_behaviors(part, f"{part.name}-" if len(chosen) > 1 else "", behaviors, log)
    if not behaviors.impression_id:
        raise log.nothing_valid(chosen[0].behaviors.name, f"impressions of 5 tab-separated fields ({_BEHAVIOR_FIELDS})")

    known = news.rows
    events = EventTable()
    seq = 0
    # History clicks first, user by user in order of first appearance; then impression clicks in file order.
    history_total = history_dropped = history_later = history_clicked_before = 0
    clicked_at: dict[tuple[str, str], int] = {}  # (user, news id) -> its earliest impression click
    for user, ts, news_id, _ in behaviors.clicks:
        if ts < clicked_at.setdefault((user, news_id), ts):
            clicked_at[(user, news_id)] = ts
    for user, history in behaviors.history.items():
        first_ts = behaviors.first_ts[user]
        for news_id, row_ts in history.items():
            if row_ts > first_ts:  # first in a later row's history: a click between the user's rows
                history_later += 1
                if clicked_at.get((user, news_id), row_ts + 1) <= row_ts:
                    history_clicked_before += 1  # an impression click before that row (or in its second): one click, one event
                    continue
            history_total += 1
            if news_id not in known:
                history_dropped += 1
                continue
            events.add(user, row_ts - 1, news_id, "click", 1.0, seq, origin="history", impression_id="")
            seq += 1
    clicks_dropped = 0
    for user, ts, news_id, imp_id in behaviors.clicks:
        if news_id not in known:
            clicks_dropped += 1
            continue
        events.add(user, ts, news_id, "click", 1.0, seq, origin="impression", impression_id=imp_id)
        seq += 1

    if not len(events):
        raise DataError(f"{', '.join(p.news.name for p in chosen)}: none of the {history_total + len(behaviors.clicks):,} clicked news ids "
                        "(history and impressions) has a news row; expected news.tsv to hold the clicked news")
    n_candidates = sum(len(c) for c in behaviors.candidates)
    missing_candidates = sum(1 for c in behaviors.candidates for n in c if n not in known)
    missing_distinct = len({n for c in behaviors.candidates for n in c if n not in known})
    events_frame = events.frame()
    users_with_events = set(events_frame["user_id"].unique()) if len(events_frame) else set()
    users_without_events = sum(1 for u in behaviors.first_ts if u not in users_with_events)
    impressions_without_user_events = sum(1 for u in behaviors.user_id if u not in users_with_events)

    counts: dict[str, Any] = {
        "candidates": n_candidates,
        "candidates_without_news_row": missing_candidates,
        "distinct_candidates_without_news_row": missing_distinct,
        "impression_clicks": len(behaviors.clicks),
        "impression_clicks_without_news_row": clicks_dropped,
        "history_ids_in_rows": behaviors.history_ids_read,
        "history_repeats_within_a_row": behaviors.history_repeats_in_row,
        "history_clicks": history_total,
        "history_clicks_without_news_row": history_dropped,
        "users_whose_history_differs_between_rows": len(behaviors.users_with_differing_history),
        "history_ids_first_in_a_later_row": history_later,
        "history_ids_clicked_in_an_earlier_impression": history_clicked_before,
        "impression_users": len(behaviors.first_ts),
        "impression_users_without_events": users_without_events,
        "news_rows_repeated_across_parts": news.repeated_across_parts,
    }

    def pct(part: int, whole: int) -> str:
        return f"{part / whole:.1%}" if whole else "0%"

    log.note(f"impression candidates without a news row: {missing_candidates:,} of {n_candidates:,} ({pct(missing_candidates, n_candidates)}; "
             f"{missing_distinct:,} distinct ids), kept in impressions: the environment skips them")
    log.note(f"history clicks without a news row: {history_dropped:,} of {history_total:,} ({pct(history_dropped, history_total)}), dropped from events")
    log.note(f"impression clicks without a news row: {clicks_dropped:,} of {len(behaviors.clicks):,} ({pct(clicks_dropped, len(behaviors.clicks))}), dropped from events")
    log.note(f"history: {behaviors.history_ids_read:,} ids over all rows, taken once per user -> {history_total:,} history clicks "
             f"({behaviors.history_repeats_in_row:,} repeats within a row; {len(behaviors.users_with_differing_history):,} users "
             "whose history differs between rows: union kept in order of first appearance)")
    if history_later:
        log.note(f"history ids first in a later row of their user: {history_later:,}, each placed just before the earliest row "
                 "holding it, not before the user's first impression (that would put a later click before impressions it "
                 f"followed); {history_clicked_before:,} of them the user clicked in an impression before that row: that click "
                 "is the event, not counted twice")
    if users_without_events:
        log.note(f"users with impressions but no event left (all their clicks lack a news row): {users_without_events:,}; "
                 f"their {impressions_without_user_events:,} impressions are kept but belong to no split")
    if news.repeated_across_parts:
        log.note(f"news rows repeated in another part: {news.repeated_across_parts:,} (first kept; "
                 f"{news.differing_across_parts:,} of them with different fields)")

    items: dict[str, list[str]] = {k: [] for k in ("item_id", "text", "category", "subcategory", "title", "abstract", "url")}
    for news_id in news.ids:
        category, subcategory, title, abstract, url = known[news_id]
        items["item_id"].append(news_id)
        items["text"].append(f"{title} | {abstract}" if text == "title+abstract" and abstract else title)
        items["category"].append(category)
        items["subcategory"].append(subcategory)
        items["title"].append(title)
        items["abstract"].append(abstract)
        items["url"].append(url)

    impressions = pd.DataFrame(
        {
            "impression_id": pd.Series(behaviors.impression_id, dtype=str),
            "user_id": pd.Series(behaviors.user_id, dtype=str),
            "ts": np.asarray(behaviors.ts, dtype=np.int64),
            "candidates": behaviors.candidates,
            "labels": behaviors.labels,
            "part": pd.Series(behaviors.part, dtype=str),
        }
    )
    files = [p.news.path for p in chosen] + [p.behaviors.path for p in chosen]
    return ReaderOutput(
        items=items_frame(items),
        events=events_frame,
        impressions=impressions,
        source_files=unique_paths(files),
        counts=counts,
        reader={"parts": [p.name for p in chosen], "parts_left_out": skipped, "item_text": text,
                "history_ts": "first impression time of the user - 1 s (an id first in a later row: that row's time - 1 s)"},
    )


def prepare_mind(
    path: str | Path,
    out: str | Path,
    *,
    split: SplitSpec | None = None,
    max_reject_rate: float | None = None,
    command: list[str] | None = None,
    text: str = "title",
    parts: list[str] | None = None,
    tz_offset_hours: float = 0.0,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Read MIND and write the canonical dataset to ``out``; return the manifest."""
    log = RejectLog()
    data = read_mind(path, log, text=text, parts=parts)
    return write_reader_output(
        out, "mind", data, log, split=split, max_reject_rate=max_reject_rate, command=command,
        tz_offset_hours=tz_offset_hours, deterministic=deterministic,
    )
