"""The columnar reader of ``prepare events``: CSV / TSV logs checked whole columns at a time.

The line reader (:mod:`interestgym.data.events`, :func:`~interestgym.data.tables.table_rows`) reads a
file line by line and checks each row in Python: about 10 s per million rows. This module does the
same checks on arrays (numpy and pyarrow compute), with the same results to the byte: the same
events, items, counts and notes, and every bad row reported with its file, line, reason and raw text
in the same order.

How a file is read (all of it at once):

1. :class:`~interestgym.data.fast_lines.Lines` splits the bytes into lines as
   :func:`~interestgym.data.readers.raw_lines` does and finds blank lines, invalid UTF-8, and an exact
   identity of every line (hashes sorted once, then equal hashes compared byte for byte).
2. CSV lines holding a quote (a quoted field may span lines) are records only the line reader can
   split: each run of them goes through :func:`~interestgym.data.tables.table_rows`, sharing the
   duplicate bookkeeping, and the rows it yields join the others. Lines with a lone ``\\r`` are split
   by ``str.split`` as the line reader splits them; every other line by Arrow's CSV parser, quoting
   off (which splits such a line exactly as ``str.split`` does).
3. The row checks (:mod:`interestgym.data.fast_checks`) run on whole columns in the line reader's
   order; what the line reader carries from row to row (the unit of the times, the first row of
   each item) is computed for all rows at once.
4. Rejects are sorted by line and written to the log; kept rows become the events frame.

Parquet and JSON Lines logs have their own columnar readers (:mod:`interestgym.data.fast_parquet`,
:mod:`interestgym.data.fast_jsonl`), which share step 3. Zip members are read by the line reader.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from interestgym.core.log_features import RATING_ACTION
from interestgym.data.fast_checks import (
    Column,
    ItemsFromRows,
    Reasons,
    Template,
    TimeCheck,
    check_actions,
    check_values,
    splice,
    take,
)
from interestgym.data.fast_lines import Lines, first_equal
from interestgym.data.readers import (
    SeenRecords,
    check_first_line,
    utf8_reason,
    utf16_encoding,
)
from interestgym.data.tables import (
    Table,
    cell,
    check_cr_joined,
    table_rows,
    wrong_field_count,
)
from interestgym.data.times import hour_weekday
from interestgym.data.validate import RejectLog

if TYPE_CHECKING:
    from interestgym.data.events import _RowChecker


def columnar_rows(table: Table, log: RejectLog, rows: _RowChecker, *, force: bool = False) -> bool:
    """Check every row of ``table`` into ``rows`` (and ``log``) column-wise; False (nothing done) when
    the file is not one these readers take (a zip member, UTF-16, a damaged ``.gz``; a Parquet or JSON Lines file
    with a cell :mod:`~interestgym.data.fast_parquet` or :mod:`~interestgym.data.fast_jsonl` leaves to the line reader).

    :param table: the opened events file.
    :param log: where rejects and counts go.
    :param rows: the line reader's row checker, whose state (times, catalogue, counts) this reader fills.
    :param force: unused (``--reader columnar`` and ``auto`` both take every file this reader can read).
    """
    if table.fmt == "parquet":
        from interestgym.data.fast_parquet import parquet_rows

        return parquet_rows(table, log, rows)
    if table.fmt == "jsonl":
        from interestgym.data.fast_jsonl import jsonl_rows

        return jsonl_rows(table, log, rows)
    if table.fmt not in ("csv", "tsv") or table.source.member is not None or table.names is None:
        return False
    data = _file_bytes(table)
    if data is None:
        return False
    _ColumnarReader(table, log, rows, data).run()
    return True


def _file_bytes(table: Table) -> bytes | None:
    path = table.source.path
    try:
        if path.suffix == ".gz":
            data = gzip.decompress(path.read_bytes())
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
        return None  # the line reader names the damage and the last line it read
    if utf16_encoding(data[:256]):
        return None  # the line reader's error
    end = data.find(b"\n")
    check_first_line(table.source, data if end < 0 else data[: end + 1])  # a binary file, lines ended by CR alone
    return data


class _Feed:
    """Lines handed to the line reader: ``(line number, raw)`` from line index ``pos`` on."""

    def __init__(self, lines: Lines, pos: int) -> None:
        self.lines, self.pos = lines, pos

    @property
    def next_lineno(self) -> int:
        return self.pos + 1

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> tuple[int, bytes]:
        if self.pos >= self.lines.n:
            raise StopIteration
        i = self.pos
        self.pos += 1
        return i + 1, self.lines.raw(i)


class _Seen(SeenRecords):
    """Duplicate bookkeeping of the records the line reader reads: a flag per distinct line (flagged at
    the first line with its bytes: :func:`~interestgym.data.fast_lines.first_equal`), and the bytes of
    the rare records that span lines.

    :param first: for each line, the index of the first line with the same bytes.
    """

    def __init__(self, first: np.ndarray) -> None:
        super().__init__()
        self.first = first
        self.flags = np.zeros(len(first), dtype=bool)
        self.multi: set[bytes] = set()
        self.registered: list[int] = []  # single-line records the line reader asked about (line indices)

    def first_time(self, lineno: int, raw: bytes, n_lines: int = 1) -> bool:
        if n_lines > 1:
            if raw in self.multi:
                return False
            self.multi.add(raw)
            return True
        self.registered.append(lineno - 1)
        g = self.first[lineno - 1]
        if self.flags[g]:
            return False
        self.flags[g] = True
        return True


class _Events:
    """The kept rows' columns, giving the frame :meth:`~interestgym.data.readers.EventTable.frame` would
    give for the same rows added one by one."""

    def __init__(self, columns: dict[str, Any], context: dict[str, pa.Array]) -> None:
        self.columns, self.context = columns, context

    def __len__(self) -> int:
        return len(self.columns["seq"])

    def frame(self, offset_seconds: int = 0) -> pd.DataFrame:
        c = self.columns
        hour, weekday = hour_weekday(c["ts"], offset_seconds)
        df = pd.DataFrame({
            "user_id": str_series(c["user_id"]), "ts": c["ts"], "item_id": str_series(c["item_id"]),
            "action": str_series(c["action"]), "value": c["value"].astype(np.float32), "hour": hour, "weekday": weekday,
            "seq": c["seq"],
        })
        for name, values in self.context.items():
            df[name] = str_series(values)
        return df


def str_series(values: pa.Array) -> pd.Series:
    """A text column with the dtype ``pd.Series(list_of_str, dtype=str)`` has, built from Arrow (no Python strings)."""
    dtype = pd.Series([], dtype=str).dtype
    return pd.Series(pd.array(values.cast(pa.large_string()), dtype=dtype))


class _ColumnarReader:
    def __init__(self, table: Table, log: RejectLog, rows: _RowChecker, data: bytes) -> None:
        self.table, self.log, self.rows = table, log, rows
        self.name = table.source.name
        self.lines = Lines(data)
        names = table.names
        assert names is not None
        self.names = names
        self.n_fields = len(names)
        self.delimiter = table.delimiter
        opts = rows.opts
        self.template = Template(opts.item_text) if opts.item_text else None

    # ------------------------------------------------------------------------------------ lines
    def run(self) -> None:
        L, rows, log, name = self.lines, self.rows, self.log, self.name
        n = L.n
        skip = min(self.table.skip, n)
        counted = np.zeros(n, dtype=bool)
        counted[skip:] = True
        live = counted & L.non_blank & ~L.bad_utf8
        same = first_equal(L.with_newline)  # exact identity of every line's bytes: its first copy
        seen = _Seen(same)

        # 1. runs of quoted CSV lines: the line reader, its rejects kept aside (sorted in with the rest below)
        consumed = np.zeros(n, dtype=bool)  # lines the line reader read
        aside = RejectLog()
        side_rows: list[tuple[int, str, dict[str, Any]]] = []
        if self.table.fmt == "csv":
            quoted = np.flatnonzero(live & L.has_byte(ord('"')))
            pos, flagged = skip, skip
            k = 0
            while k < len(quoted):
                start = int(quoted[k])
                if start < pos:  # read already, as a continuation line
                    k += 1
                    continue
                # the plain lines before it were all asked about by the line reader: flag them
                before = np.flatnonzero(live[flagged:start] & ~consumed[flagged:start]) + flagged
                seen.flags[same[before]] = True
                run_end = start
                while k < len(quoted) and quoted[k] == run_end:
                    k, run_end = k + 1, run_end + 1
                feed = _Feed(L, start)
                side_rows.extend(table_rows(self.table, aside, lines=feed, seen=seen, stop_before=run_end + 1))
                consumed[start:feed.pos] = True
                pos = flagged = feed.pos

        # 2. the other lines: duplicates; then fields (and field counts) in step 3
        plain = counted & ~consumed
        asked = np.zeros(n, dtype=bool)  # every line the line reader would ask about (first_time)
        asked[plain & live] = True
        asked[np.array(seen.registered, dtype=np.int64)] = True
        dup = plain & live & _later_copies(same, asked)
        fed = np.flatnonzero(plain & live & ~dup)
        # split in Python, not by Arrow: lines with a \r (Arrow would take it for a line break) and lines
        # that start with a BOM (Arrow would drop it)
        in_python = (L.has_byte(13) | L.starts_with_bom())[fed]

        # 3. the rows: fields, checks
        entries: list[tuple[int, str, str, str]] = []  # (line, kind: "duplicate" or "rejected", reason, raw)
        kept = self.check_rows(fed[~in_python], fed[in_python], side_rows, entries)

        # 4. counts and the log, in line order
        st = rows.stats
        side = aside.stats(name)
        st.read += int(plain.sum()) + side.read
        st.blank += int((plain & ~L.non_blank).sum()) + side.blank
        st.kept += kept
        entries += line_entries(L, plain & L.non_blank & L.bad_utf8, dup)
        entries += [(r["line"], r["kind"], r["reason"], r["raw"]) for r in aside.rejects]
        write_entries(log, name, entries)
        for file, spans in aside.spans.items():  # records the line reader read from several lines
            for lineno, n_lines in spans:
                log.spanned(file, lineno, n_lines)

    # ------------------------------------------------------------------------------------- rows
    def check_rows(self, by_arrow: np.ndarray, by_python: np.ndarray, side_rows: list[tuple[int, str, dict[str, Any]]],
                   entries: list[tuple[int, str, str, str]]) -> int:
        """Check every row; put the rejects into ``entries``, the kept rows into ``rows.events``; return how many were kept.

        :param by_arrow: line indices of the rows Arrow's CSV parser splits.
        :param by_python: line indices of the rows ``str.split`` splits (a lone ``\\r`` in the line).
        :param side_rows: the rows the line reader yielded: ``(line number, raw, {name: cell})``.
        """
        L, rows, k = self.lines, self.rows, self.n_fields
        wrong, found, split = L.split(by_arrow, k, self.delimiter)
        by_python_fields = [L.text(i).split(self.delimiter) for i in by_python]
        for i, f in zip(by_python.tolist(), by_python_fields):  # in line order: the line reader's first refusal
            if len(f) != k:
                check_cr_joined(self.table, i + 1, L.text(i))
        wrong_lines = np.concatenate([by_arrow[wrong], by_python[[len(f) != k for f in by_python_fields]]])
        for i, count in zip(wrong_lines.tolist(), found.tolist() + [len(f) for f in by_python_fields if len(f) != k]):
            entries.append((i + 1, "rejected", wrong_field_count(self.table, count), L.text(i)))
        by_arrow = np.delete(by_arrow, wrong)
        # rows split in Python (few): cells as the line reader makes them
        extra = sorted([(int(i) + 1, L.text(i), {nm: cell(v) for nm, v in zip(self.names, f) if nm})
                        for i, f in zip(by_python, by_python_fields) if len(f) == k] + side_rows, key=lambda e: e[0])
        extra_lines = np.array([e[0] for e in extra], dtype=np.int64)
        at = np.searchsorted(by_arrow + 1, extra_lines)  # where each extra row goes among Arrow's rows (both in line order)
        lineno = np.insert(by_arrow + 1, at, extra_lines)
        n_rows = len(lineno)
        if n_rows:
            rows.seen_keys.update(nm for nm in self.names if nm)
        raw_of = {e[0]: e[1] for e in extra}
        # extra rows' cells are the line reader's (stripped already): through Python's rules again, a no-op
        attention = np.flatnonzero(np.insert(L.attention(ord(self.delimiter))[by_arrow], at, True))
        raw_columns: dict[str, pa.Array] = {}
        for j, nm in enumerate(self.names):
            if nm:
                raw_columns[nm] = splice(split[j], at, pa.array([e[2].get(nm) for e in extra], pa.large_string()), replace=False)
        return check_columns(rows, self.template, lineno, raw_columns, dict.fromkeys(raw_columns, attention),
                             lambda lines: [raw_of[line] if line in raw_of else L.text(line - 1) for line in lines], entries)


def check_columns(rows: _RowChecker, template: Template | None, lineno: np.ndarray, raw_columns: dict[str, pa.Array],
                  attention: dict[str, np.ndarray], raw_texts: Callable[[list[int]], list[str]],
                  entries: list[tuple[int, str, str, str]], time_check: TimeCheck | None = None,
                  value_present: np.ndarray | None = None) -> int:
    """The line reader's row checks on whole columns (both columnar readers: CSV / TSV and Parquet); put the rejects
    into ``entries``, the kept rows into ``rows.events``; return how many were kept.

    :param lineno: each row's line (a Parquet file: its row number from 1), ascending.
    :param raw_columns: each named column's cells as text (``large_string``), before :func:`~interestgym.data.tables.cell`
        strips them: what the line reader's row dict holds, as :func:`~interestgym.data.tables.cell_text` writes it
        (null: a Parquet cell ``cell`` makes None).
    :param attention: per column, the rows whose cell may need Python's rules (see :class:`Column`).
    :param raw_texts: the raw text of the given lines (what a reject shows).
    :param time_check: the ``ts`` check (default: a :class:`~interestgym.data.fast_checks.TimeCheck` of the ``ts``
        column's text; a Parquet timestamp column brings its own).
    :param value_present: the rows with a ``value`` cell (JSON Lines rows need not share their keys; None: all when
        there is a ``value`` column).
    """
    n_rows = len(lineno)
    if n_rows:
        rows.seen_keys.update(raw_columns)
    # ts too: a template may use it (a null cell, Parquet's, is an empty one to every check but the time's)
    columns = {nm: Column(pc.fill_null(col, "") if col.null_count else col, attention[nm]) for nm, col in raw_columns.items()}
    reasons = Reasons(n_rows)

    # ---- ids
    user, item = columns.get("user_id"), columns.get("item_id")
    none = np.ones(n_rows, dtype=bool)
    reasons.reject(user.empty() if user else none, "missing user_id: expected a user id")
    reasons.reject(item.empty() if item else none, "missing item_id: expected an item id")
    for col, field in ((user, "user_id"), (item, "item_id")):
        if col is not None:
            bad, why = col.id_reasons(field)
            reasons.reject(bad, why)

    # ---- times (rows with both ids), action, value
    times = time_check or TimeCheck(rows.times, raw_columns.get("ts"), n_rows)
    times.check(reasons.ok(), reasons)
    action_codes, action_names = check_actions(rows, columns.get("action"), n_rows, reasons)
    is_rating = np.array([name == RATING_ACTION for name in action_names] + [False], dtype=bool)[action_codes] if n_rows \
        else np.zeros(0, dtype=bool)
    values, empty_values = check_values(columns.get("value"), n_rows, reasons, is_rating, value_present)
    rows.empty_values += empty_values
    rows.negative_values += int(np.count_nonzero((values < 0) & reasons.ok()))

    # ---- items
    items = None
    if rows.catalogue is not None:
        known = np.asarray(pc.is_in(item.stripped, value_set=pa.array(sorted(rows.known_items), pa.large_string())))
        unknown = reasons.ok() & ~known
        reasons.reject(unknown, {int(i): rows.unknown_item(item.text(i)) for i in np.flatnonzero(unknown)})
    elif item is not None and n_rows:
        items = ItemsFromRows(template, rows.opts.item_text)
        items.check(columns, item, lineno, reasons)
    times.commit()

    # ---- rejects and events
    bad = np.flatnonzero(~reasons.ok())
    bad_lines = lineno[bad].tolist()
    for r, line, raw in zip(bad.tolist(), bad_lines, raw_texts(bad_lines)):
        entries.append((line, "rejected", reasons.of(r), raw))
    keep = np.flatnonzero(reasons.ok())
    names = pa.array(action_names, pa.large_string())
    columns_out = {
        "user_id": take(user.stripped, keep) if user else pa.array([], pa.large_string()),
        "item_id": take(item.stripped, keep) if item else pa.array([], pa.large_string()),
        "action": take(names, action_codes[keep]),
        "ts": times.ts[keep], "value": values[keep], "seq": lineno[keep].astype(np.int64),
    }
    context = {nm: take(col.stripped, keep) for nm, col in columns.items()
               if nm not in rows.not_context and (rows.context_filter is None or nm in rows.context_filter)}
    rows.events = _Events(columns_out, context)
    if items is not None:
        built = rows.built
        # the items frame is built from these columns (items_frame takes any column pandas can read)
        built.rows = {"item_id": str_series(items.item), "text": str_series(items.text),
                      "category": str_series(items.category), "subcategory": str_series(items.subcategory)}
        built.conflicts = items.conflicts
        built.first_conflict = items.first_conflict
    return len(keep)


def line_entries(lines: Lines, bad_utf8: np.ndarray, dup: np.ndarray) -> list[tuple[int, str, str, str]]:
    """The log entries of the lines in ``bad_utf8`` (rejected, with the line reader's reason) and in ``dup``
    (duplicates), as ``(line, kind, reason, raw)``."""
    entries = []
    for i in np.flatnonzero(bad_utf8):
        raw = lines.raw(i)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            entries.append((int(i) + 1, "rejected", utf8_reason(exc), raw.decode("utf-8", "replace")))
    entries += [(int(i) + 1, "duplicate", "", lines.text(i)) for i in np.flatnonzero(dup)]
    return entries


def write_entries(log: RejectLog, name: str, entries: list[tuple[int, str, str, str]]) -> None:
    """Write ``(line, kind, reason, raw)`` entries to the log sorted by line: one outcome per line, the log reads as the
    line reader writes it."""
    for lineno, kind, reason, raw in sorted(entries, key=lambda e: e[0]):
        if kind == "duplicate":
            log.duplicate(name, lineno, raw)
        else:
            log.reject(name, lineno, reason, raw)


def _later_copies(same: np.ndarray, asked: np.ndarray) -> np.ndarray:
    """Lines in ``asked`` whose bytes equal those of an earlier line in ``asked`` (the duplicates).

    :param same: for each line, the index of the first line with the same bytes (an identity).
    """
    dup = np.zeros(len(same), dtype=bool)
    lines = np.flatnonzero(asked)
    if not len(lines):
        return dup
    g = same[lines]
    # only identities with more than one asked line can hold a duplicate: count, then look closer at those
    repeated = np.bincount(g, minlength=len(same))[g] > 1
    if not repeated.any():
        return dup
    lines, g = lines[repeated], g[repeated]
    _, first = np.unique(g, return_index=True)  # first index of each identity among these (lines are in order)
    later = np.ones(len(lines), dtype=bool)
    later[first] = False
    dup[lines[later]] = True
    return dup
