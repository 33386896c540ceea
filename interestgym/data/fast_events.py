"""The columnar reader of ``prepare events``: CSV / TSV logs checked whole columns at a time.

The line reader (:mod:`interestgym.data.events`, :func:`~interestgym.data.tables.table_rows`) reads a
file line by line and checks each row in Python: about 9 s per million rows. This module does the
same checks on arrays (numpy and pyarrow compute), with the same results to the byte: the same
events, items, counts and notes, and every bad row reported with its file, line, reason and raw text
in the same order. Values that need Python's own rules (a cell with surrounding whitespace or a
control character, a time that is not a plain integer, an action, a value) are decided by the line
reader's functions, once per distinct value.

How a file is read:

1. The whole file (a ``.gz`` decompressed) is split into lines as :func:`~interestgym.data.readers.raw_lines`
   splits them (``\\n``, a ``\\r`` before it dropped, the UTF-8 byte-order mark of line 1 dropped).
   Blank lines, invalid UTF-8 and field counts come from byte counts per line; duplicates from one
   dictionary encoding of all lines (exact, not a hash).
2. Lines are taken in chunks, in file order. A chunk's rows are split into fields and checked in
   the line reader's order (user_id, item_id, ts, action, value, item); what a row changes for the
   rows after it (the unit of the times, the first row of an item, category changes) is carried
   from chunk to chunk exactly as the line reader carries it.
3. The first row of a chunk that only the line reader can read -- a CSV line holding a quote (a
   quoted field may span lines), a time that would decide the unit of a log in an unusual way, the
   first row of an item without text -- ends the chunk there: that record goes through the line
   reader (:func:`~interestgym.data.tables.table_rows` over the same lines, sharing the duplicate
   bookkeeping and the row checks), and columnar reading resumes after it.

JSONL and Parquet logs, and zip members, are read by the line reader.
"""

from __future__ import annotations

import gzip
import string
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from interestgym.data.columns import id_reason
from interestgym.data.readers import EventTable, SeenRecords, utf8_reason
from interestgym.data.tables import (
    Table,
    cell,
    table_rows,
    wrong_field_count,
)
from interestgym.data.times import TS_MAX, TS_MIN, TimeParser, hour_weekday
from interestgym.data.validate import RejectLog

if TYPE_CHECKING:
    from interestgym.data.events import _RowChecker

#: Lines checked per columnar chunk: a few hundred MB of arrays at most (a chunk's distinct items are
#: looked up in the catalogue at once, so fewer chunks are faster).
CHUNK_LINES = 1 << 22
#: Smallest chunk tried after a record went through the line reader.
MIN_CHUNK_LINES = 256
#: Python's whitespace (``str.isspace``), which ``str.strip`` removes from a cell, as an RE2 class.
_WS = r"[\t-\r\x{1c}-\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_BOM = b"\xef\xbb\xbf"
_WHITESPACE_BYTES = b" \t\n\r\x0b\x0c"  # bytes.strip()'s whitespace: a line of only these is blank


def columnar_rows(table: Table, log: RejectLog, rows: _RowChecker, *, force: bool = False) -> bool:
    """Check every row of ``table`` into ``rows`` (and ``log``) column-wise; False (nothing done) when
    the file is not one this reader takes (JSONL, Parquet, a zip member, UTF-16, a damaged ``.gz``)."""
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
    if data[:2] in _UTF16_BOMS:
        return None  # the line reader's error
    return data


# --------------------------------------------------------------------------------------- lines
class _Lines:
    """Every line of a file as :func:`~interestgym.data.readers.raw_lines` yields it, in arrays."""

    def __init__(self, data: bytes) -> None:
        data = data.removeprefix(_BOM)
        self.data = data
        buf = np.frombuffer(data, dtype=np.uint8)
        newline = np.flatnonzero(buf == 10)
        starts = np.concatenate([[0], newline + 1]).astype(np.int64)
        ends = np.concatenate([newline, [len(buf)]]).astype(np.int64)
        if len(buf) == 0 or buf[-1] == 10:
            starts, ends = starts[:-1], ends[:-1]  # no line after the last newline
        has_nl = np.zeros(len(starts), dtype=bool)
        has_nl[: len(newline)] = True
        cr = has_nl & (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
        ends = ends - cr
        self.n = len(starts)
        self.starts, self.ends = starts, ends
        keep = np.ones(len(buf), dtype=bool)
        keep[newline] = False
        keep[ends[cr]] = False
        compact = buf[keep]
        lengths = ends - starts
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        small = len(compact) < 2**31 - 1
        self.binary = pa.Array.from_buffers(
            pa.binary() if small else pa.large_binary(), self.n,
            [None, pa.py_buffer(self.offsets.astype(np.int32) if small else self.offsets), pa.py_buffer(compact)])
        # blank: only whitespace bytes; a line that starts with a non-space byte is not blank
        space = np.zeros(256, dtype=bool)
        space[np.frombuffer(_WHITESPACE_BYTES, np.uint8)] = True
        self.non_blank = lengths > 0
        maybe = np.flatnonzero(self.non_blank & space[buf[np.minimum(starts, max(len(buf) - 1, 0))]])
        for i in maybe:
            self.non_blank[i] = bool(self.raw(i).strip())
        self.bad_utf8 = self._bad_utf8()
        ids = pc.dictionary_encode(self.binary)
        self.ids = ids.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self.n_distinct = len(ids.dictionary)

    def attention(self, delimiter: int) -> np.ndarray:
        """Lines holding a byte that may need Python's rules for a cell: a control character (the
        delimiter aside), a lead byte of a Unicode space or C1 control (0xC2, 0xE1-0xE3), or a space
        at the start or end of a field."""
        compact = np.frombuffer(self.binary.buffers()[2], dtype=np.uint8)[: int(self.offsets[-1])]
        table = np.zeros(256, dtype=bool)
        table[:32] = True
        table[[0x7F, 0xC2, 0xE1, 0xE2, 0xE3]] = True
        table[delimiter] = False
        flagged = np.flatnonzero(table[compact])
        space = np.flatnonzero(compact == 32)
        if len(space):
            line = np.searchsorted(self.offsets, space, side="right") - 1
            first, last = space == self.offsets[line], space == self.offsets[line + 1] - 1
            after = compact[np.minimum(space + 1, len(compact) - 1)]
            before = compact[np.maximum(space - 1, 0)]
            edge = first | last | (after == delimiter) | (before == delimiter)
            flagged = np.concatenate([flagged, space[edge]])
        out = np.zeros(self.n, dtype=bool)
        if len(flagged):
            out[np.searchsorted(self.offsets, flagged, side="right") - 1] = True
        return out

    def count_bytes(self, byte: int) -> np.ndarray:
        """How many times ``byte`` occurs in each line."""
        return np.asarray(pc.count_substring(self.binary, chr(byte))).astype(np.int64)

    def _bad_utf8(self) -> np.ndarray:
        bad = np.zeros(self.n, dtype=bool)
        try:
            self.data.decode("utf-8")
            return bad
        except UnicodeDecodeError:
            pass
        step = 4096
        for lo in range(0, self.n, step):
            hi = min(lo + step, self.n)
            block = self.data[self.starts[lo]: self.ends[hi - 1]]
            try:
                block.decode("utf-8")
                continue
            except UnicodeDecodeError:
                pass
            for i in range(lo, hi):
                try:
                    self.raw(i).decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
        return bad

    def raw(self, i: int) -> bytes:
        return self.data[self.starts[i]: self.ends[i]]

    def text(self, i: int) -> str:
        return self.raw(i).decode("utf-8")


class _Feed:
    """Lines handed back to the line reader: ``(line number, raw)`` from line index ``pos`` on."""

    def __init__(self, lines: _Lines, pos: int, stop: int | None = None) -> None:
        self.lines, self.pos, self.stop = lines, pos, lines.n if stop is None else stop

    @property
    def next_lineno(self) -> int:
        return self.pos + 1

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> tuple[int, bytes]:
        if self.pos >= self.stop:
            raise StopIteration
        i = self.pos
        self.pos += 1
        return i + 1, self.lines.raw(i)


class _Seen(SeenRecords):
    """Duplicate bookkeeping shared by both readers: a flag per distinct line (exact), and the bytes of
    the rare records that span lines."""

    def __init__(self, lines: _Lines) -> None:
        super().__init__()
        self.lines = lines
        self.flags = np.zeros(lines.n_distinct, dtype=bool)
        self.multi: set[bytes] = set()

    def first_time(self, lineno: int, raw: bytes, n_lines: int = 1) -> bool:
        if n_lines > 1:
            if raw in self.multi:
                return False
            self.multi.add(raw)
            return True
        i = self.lines.ids[lineno - 1]
        if self.flags[i]:
            return False
        self.flags[i] = True
        return True


# -------------------------------------------------------------------------------------- events
class _ColumnarEvents:
    """Kept events in parts (column arrays, or an :class:`EventTable` of line-read rows), giving the frame
    :meth:`EventTable.frame` would give for the same rows added one by one."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []
        self.context: dict[str, None] = {}

    def add_columns(self, columns: dict[str, Any], context: dict[str, Any]) -> None:
        if len(columns["seq"]):
            self.parts.append({**columns, "context": context})
            self.context.update(dict.fromkeys(context))

    def add_table(self, events: EventTable) -> None:
        if len(events):
            self.add_columns({
                "user_id": pa.array(events.user_id, pa.large_string()), "item_id": pa.array(events.item_id, pa.large_string()),
                "action": pa.array(events.action, pa.large_string()), "ts": np.frombuffer(events.ts, dtype=np.int64),
                "value": np.frombuffer(events.value, dtype=np.float64), "seq": np.frombuffer(events.seq, dtype=np.int64),
            }, {k: pa.array(v, pa.large_string()) for k, v in events.context.items()})

    def __len__(self) -> int:
        return sum(len(p["seq"]) for p in self.parts)

    def frame(self, offset_seconds: int = 0) -> pd.DataFrame:
        def strings(key: str) -> pd.Series:
            chunks = [p[key] for p in self.parts]
            return _str_series(pa.chunked_array(chunks, pa.large_string()))

        def numbers(key: str, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(p[key]) for p in self.parts]).astype(dtype) if self.parts else np.zeros(0, dtype)

        ts = numbers("ts", np.int64)
        hour, weekday = hour_weekday(ts, offset_seconds)
        df = pd.DataFrame({
            "user_id": strings("user_id"), "ts": ts, "item_id": strings("item_id"), "action": strings("action"),
            "value": numbers("value", np.float64).astype(np.float32), "hour": hour, "weekday": weekday,
            "seq": numbers("seq", np.int64),
        })
        for name in self.context:
            chunks = [p["context"].get(name) if name in p["context"] else pa.array([""] * len(p["seq"]), pa.large_string())
                      for p in self.parts]
            df[name] = _str_series(pa.chunked_array(chunks, pa.large_string()))
        return df


def _str_series(values: pa.ChunkedArray) -> pd.Series:
    """A text column with the dtype ``pd.Series(list_of_str, dtype=str)`` has."""
    dtype = pd.Series([], dtype=str).dtype
    return pd.Series(pd.array(values.combine_chunks(), dtype=dtype))


class _Catalogue:
    """The items built from the events (:class:`~interestgym.data.events._ItemsFromEvents`), kept in step
    with the columnar reader: its index and lines (dicts) at once, its row lists (which only the line
    reader and the end need) when asked (:meth:`to_python`), and categories / lines as arrays for
    lookups by position."""

    def __init__(self, built: Any) -> None:
        self.built = built
        self.pending: list[dict[str, Any]] = []  # column-wise registrations not yet in built.rows
        self.category_parts: list[pa.Array] = []
        self.line_parts: list[np.ndarray] = []
        self.n = 0
        self.from_python()

    def positions(self, items: list[str]) -> np.ndarray:
        """Position of each item in the catalogue, -1 when unknown."""
        index = self.built.index
        return np.fromiter((index.get(v, -1) for v in items), dtype=np.int64, count=len(items))

    def categories(self, positions: np.ndarray) -> pa.Array:
        if not self.category_parts:
            return pa.array([""] * len(positions), pa.large_string())
        return pa.chunked_array(self.category_parts, pa.large_string()).take(pa.array(positions, pa.int64())).combine_chunks()

    def lines(self, positions: np.ndarray) -> np.ndarray:
        lines = np.concatenate(self.line_parts) if self.line_parts else np.zeros(1, np.int64)
        return lines[positions]

    def add(self, columns: dict[str, pa.Array], lines: np.ndarray) -> None:
        items = columns["item"].to_pylist()
        built = self.built
        built.index.update(zip(items, range(self.n, self.n + len(items))))
        built.line.update(zip(items, lines.tolist()))
        self.pending.append({**columns, "item_list": items})
        self.category_parts.append(columns["category"])
        self.line_parts.append(np.asarray(lines, dtype=np.int64))
        self.n += len(items)

    def to_python(self) -> None:
        """Append the pending registrations to the Python catalogue's row lists."""
        rows = self.built.rows
        for part in self.pending:
            rows["item_id"].extend(part["item_list"])
            for key in ("text", "category", "subcategory"):
                rows[key].extend(part[key].to_pylist())
        self.pending.clear()

    def from_python(self) -> None:
        """Mirror the items the line reader added to the Python catalogue."""
        built = self.built
        total = len(built.rows["item_id"])
        if total > self.n:
            self.category_parts.append(pa.array(built.rows["category"][self.n:], pa.large_string()))
            self.line_parts.append(np.array([built.line[i] for i in built.rows["item_id"][self.n:]], dtype=np.int64))
            self.n = total


# -------------------------------------------------------------------------------------- reader
class _ColumnarReader:
    def __init__(self, table: Table, log: RejectLog, rows: _RowChecker, data: bytes) -> None:
        self.table, self.log, self.rows = table, log, rows
        self.name = table.source.name
        self.lines = _Lines(data)
        self.seen = _Seen(self.lines)
        names = table.names
        assert names is not None
        self.names = names
        self.n_fields = len(names)
        self.delimiter = table.delimiter
        self.delims = self.lines.count_bytes(ord(self.delimiter))
        self.quotes = self.lines.count_bytes(ord('"')) if table.fmt == "csv" else np.zeros(self.lines.n, np.int64)
        self.events = _ColumnarEvents()
        self.keys = {k for k in names if k}
        self.attention = self.lines.attention(ord(self.delimiter))
        opts = rows.opts
        self.template = _Template(opts.item_text) if opts.item_text else None
        self.catalogue = _Catalogue(rows.built)

    def run(self) -> None:
        rows = self.rows
        n = self.lines.n
        pos = min(self.table.skip, n)
        # CSV lines with a quote (a quoted field may span lines) go to the line reader: chunks end there
        quoted = np.flatnonzero((self.quotes > 0) & self.lines.non_blank & ~self.lines.bad_utf8)
        size = CHUNK_LINES
        while pos < n:
            q = int(np.searchsorted(quoted, pos))
            next_quoted = int(quoted[q]) if q < len(quoted) else n
            if next_quoted == pos:
                # a run of quoted lines: one call of the line reader
                run_end = pos
                while q < len(quoted) and quoted[q] == run_end:
                    q, run_end = q + 1, run_end + 1
                pos = self.line_reader(pos, run_end)
                continue
            start, end = pos, min(pos + size, next_quoted)
            stop = self.chunk(start, end)
            if stop == end:
                pos, size = end, min(size * 2, CHUNK_LINES)
                continue
            pos = self.line_reader(stop, stop + 1)
            size = max(MIN_CHUNK_LINES, 2 * (stop - start))  # records for the line reader close together: smaller chunks
        self.catalogue.to_python()  # the items frame is built from the Python catalogue
        rows.events = self.events

    def line_reader(self, start: int, stop: int) -> int:
        """The records starting on lines [start, stop) through the line reader; return the next line to read."""
        rows = self.rows
        self.catalogue.to_python()
        table_events, rows.events = rows.events, EventTable()
        feed = _Feed(self.lines, start, None if self.table.fmt == "csv" else stop)
        for lineno, raw, row in table_rows(self.table, self.log, lines=feed, seen=self.seen, stop_before=stop + 1):
            rows.check(lineno, raw, row)
        self.events.add_table(rows.events)
        rows.events = table_events
        self.catalogue.from_python()
        return feed.pos

    # ------------------------------------------------------------------------------------ chunk
    def chunk(self, a: int, b: int) -> int:
        """Check lines [a, b) column-wise; commit the rows before the first one the line reader must
        read and return its index (``b`` when there is none)."""
        L, rows, log, name = self.lines, self.rows, self.log, self.name
        idx = np.arange(a, b)
        non_blank = L.non_blank[idx]
        bad = non_blank & L.bad_utf8[idx]
        text_ok = non_blank & ~bad
        stop = _first(text_ok & (self.quotes[idx] > 0), len(idx))  # run() ends chunks before quoted lines
        # duplicates: a line seen before (earlier chunks, or earlier in this one)
        ids = L.ids[idx]
        dup = np.zeros(len(idx), dtype=bool)
        live = np.flatnonzero(text_ok[:stop])
        if len(live):
            _, first = np.unique(ids[live], return_index=True)
            repeat = np.ones(len(live), dtype=bool)
            repeat[first] = False
            dup[live] = repeat | self.seen.flags[ids[live]]
        fields_found = self.delims[idx] + 1
        wrong = text_ok & ~dup & (fields_found != self.n_fields)
        cand = np.flatnonzero(text_ok & ~dup & ~wrong)
        cand = cand[cand < stop]
        reasons: dict[int, str] = {}  # position in the chunk -> reject reason
        commit: dict[str, Any] = {}
        if len(cand):
            stop, commit = self.check_rows(idx, cand, stop, reasons)

        # ---- commit what lies before ``stop``, in line order
        n = stop
        st = rows.stats
        st.read += n
        st.blank += int((~non_blank[:n]).sum())
        entries: list[tuple[int, int, str, str]] = []  # (position, kind, reason, raw)
        for p in np.flatnonzero(bad[:n]):
            raw = L.raw(a + p)
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                entries.append((p, 1, utf8_reason(exc), raw.decode("utf-8", "replace")))
        for p in np.flatnonzero(dup[:n]):
            entries.append((p, 0, "", L.text(a + p)))
        for p in np.flatnonzero(wrong[:n]):
            entries.append((p, 1, wrong_field_count(self.table, int(fields_found[p])), L.text(a + p)))
        for p, reason in reasons.items():
            if p < n:
                entries.append((p, 1, reason, L.text(a + p)))
        for p, kind, reason, raw in sorted(entries, key=lambda e: e[0]):
            if kind == 0:
                log.duplicate(name, int(a + p + 1), raw)
            else:
                log.reject(name, int(a + p + 1), reason, raw)
        live = np.flatnonzero(text_ok[:n])
        self.seen.flags[ids[live]] = True
        if len(cand) and (cand < n).any():
            rows.seen_keys.update(self.keys)
        if commit:
            commit["apply"](n)
        return a + n

    def check_rows(self, idx: np.ndarray, cand: np.ndarray, stop: int, reasons: dict[int, str]) -> tuple[int, dict[str, Any]]:
        """The row checks of the candidate rows (positions ``cand`` in the chunk); fills ``reasons``,
        returns (the possibly earlier stop, the commit)."""
        rows = self.rows
        L = self.lines
        texts = L.binary.take(pa.array(idx[cand])).cast(pa.large_string())
        flat = pc.list_flatten(pc.split_pattern(texts, pattern=self.delimiter))
        n_rows, k = len(cand), self.n_fields
        raw_columns = {nm: flat.take(pa.array(np.arange(j, n_rows * k, k))) for j, nm in enumerate(self.names) if nm}
        attention = np.flatnonzero(self.attention[idx[cand]])
        columns = {nm: _Column(col, attention) for nm, col in raw_columns.items() if nm != "ts"}
        reason = np.full(n_rows, -1, dtype=np.int64)  # -1: no reason yet; else an index into ``texts_of``
        texts_of: list[str] = []

        def reject(mask: np.ndarray, why: Any) -> None:
            """Give the rows in ``mask`` (still without a reason) the reason ``why`` (a str, or per-row strs)."""
            mask = mask & (reason < 0)
            where = np.flatnonzero(mask)
            if not len(where):
                return
            if isinstance(why, str):
                texts_of.append(why)
                reason[where] = len(texts_of) - 1
            else:
                for w in where:
                    texts_of.append(why[w])
                    reason[w] = len(texts_of) - 1

        empty = np.zeros(n_rows, dtype=bool)
        user = columns.get("user_id")
        item = columns.get("item_id")
        user_empty = user.empty() if user else ~empty
        item_empty = item.empty() if item else ~empty
        reject(user_empty, "missing user_id: expected a user id")
        reject(item_empty, "missing item_id: expected an item id")
        for col, field in ((user, "user_id"), (item, "item_id")):
            if col is not None:
                bad, why = col.id_reasons(field)
                reject(bad, why)

        # ---- times (rows with both ids)
        reach = reason < 0
        times = rows.times
        ts = np.zeros(n_rows, dtype=np.int64)
        mode = np.full(n_rows, -1, dtype=np.int64)  # index into ``modes`` after a successful parse
        modes = ["unix", "unix_ms", "iso"] + ([times.fmt] if times.fmt not in TIME_MODES else [])
        unit = times.unit
        decided_at = -1  # row whose time decides the unit (auto)
        ts_raw = raw_columns.get("ts")

        def ts_cells(where: np.ndarray) -> list[Any]:
            if ts_raw is None:
                return [None] * len(where)
            return [cell(v) for v in ts_raw.take(pa.array(where, pa.int64())).to_pylist()]

        plain = (np.asarray(pc.fill_null(pc.and_(pc.ascii_is_decimal(ts_raw), pc.less_equal(pc.binary_length(ts_raw), 15)), False))
                 if ts_raw is not None and times.fmt in ("auto", "unix", "unix_ms") else empty.copy())
        number = np.zeros(n_rows, dtype=np.float64)
        if plain.any():
            number[plain] = np.asarray(pc.cast(ts_raw.filter(pa.array(plain)), pa.int64())).astype(np.float64)
        others = np.flatnonzero(reach & ~plain)
        other_cells = ts_cells(others)
        if times.fmt == "auto" and unit is None:
            numeric = np.zeros(n_rows, dtype=bool)
            numeric[plain] = True
            for i, v in zip(others, other_cells):
                numeric[i] = _finite_number(v)
            first = _first(reach & numeric, n_rows)
            if first < n_rows:
                v = number[first] if plain[first] else float(other_cells[int(np.searchsorted(others, first))])
                if TS_MIN <= v < TS_MAX:
                    unit = "unix"
                elif TS_MIN * 1000 <= v < TS_MAX * 1000:
                    unit = "unix_ms"
                else:
                    stop = min(stop, int(cand[first]))  # a number that decides nothing: the line reader's job
                decided_at = first
        mode_of_fmt = times.fmt if times.fmt != "auto" else unit
        if plain.any() and mode_of_fmt in ("unix", "unix_ms"):
            got = np.floor(number) if mode_of_fmt == "unix" else np.floor(number / 1000.0)
            in_range = (got >= TS_MIN) & (got < TS_MAX)
            fast = reach & plain & in_range
            ts[fast] = got[fast].astype(np.int64)
            mode[fast] = modes.index(mode_of_fmt)
            others = np.flatnonzero(reach & ~fast)
            other_cells = ts_cells(others)
        scratch = TimeParser(times.fmt)
        scratch.unit = unit
        parsed: dict[Any, tuple[int | None, str | None, str | None]] = {}
        why_ts: dict[int, str] = {}
        for i, v in zip(others, other_cells):
            key = (type(v), v)
            if key not in parsed:
                scratch.counts.clear()
                got_ts, why = scratch.parse(v)
                parsed[key] = (got_ts, why, next(iter(scratch.counts), None))
            got_ts, why, m = parsed[key]
            if why is not None:
                why_ts[int(i)] = why
            else:
                ts[i], mode[i] = got_ts, modes.index(m)  # type: ignore[arg-type]
        if why_ts:
            # A reason names the formats the file used so far ("expected unix seconds or ..."): parse each
            # rejected time again with the parser's state as the line reader would have it at that row.
            succeeded = reach & (mode >= 0)
            first_of_mode = {int(m): _first(succeeded & (mode == m), n_rows) for m in np.unique(mode[succeeded])}
            cells_of = dict(zip(others.tolist(), other_cells))
            for i in sorted(why_ts):
                used = set(times.counts) | {modes[m] for m, f in first_of_mode.items() if f < i}
                scratch.counts = Counter(dict.fromkeys(used, 1))
                scratch.unit = times.unit if times.unit is not None or decided_at < 0 or i < decided_at else unit
                why_ts[i] = scratch.parse(cells_of[i])[1]  # type: ignore[assignment]
            mask = np.zeros(n_rows, dtype=bool)
            mask[list(why_ts)] = True
            reject(mask, why_ts)
        ts_success = reach & (mode >= 0)

        # ---- action, value
        action_col = columns.get("action")
        if action_col is None:
            why, act = rows.action_of(None)
            if why is not None:
                reject(~empty, why)
            actions_codes, action_names = np.zeros(n_rows, np.int64), [act]
        else:
            uniq_why, action_names = [], []
            for v in action_col.cells():
                why, act = rows.action_of(v)
                uniq_why.append(why)
                action_names.append(act)
            actions_codes = action_col.codes
            bad_u = np.array([w is not None for w in uniq_why], dtype=bool)
            if bad_u.any():
                bad_rows = bad_u[actions_codes]
                reject(bad_rows, {i: uniq_why[actions_codes[i]] for i in np.flatnonzero(bad_rows)})
        values = np.ones(n_rows, dtype=np.float64)
        value_col = columns.get("value")
        if value_col is not None:
            uniq = [_value_of(v) for v in value_col.cells()]
            vals = np.array([u[0] for u in uniq], dtype=np.float64)
            values = vals[value_col.codes] if len(vals) else values
            bad_u = np.array([u[1] is not None for u in uniq], dtype=bool)
            if bad_u.any():
                bad_rows = bad_u[value_col.codes]
                reject(bad_rows, {i: uniq[value_col.codes[i]][1] for i in np.flatnonzero(bad_rows)})

        # ---- items
        valid = reason < 0
        empty_str = pa.array([], pa.large_string())
        registrations: dict[str, Any] = {"row": np.zeros(0, np.int64), "item": empty_str, "text": empty_str,
                                         "category": empty_str, "subcategory": empty_str}
        conflict_rows = np.zeros(0, dtype=np.int64)
        ref_category = empty_str
        ref_line = np.zeros(0, np.int64)
        if rows.catalogue is not None:
            known = np.array([v in rows.known_items for v in item.unique_text()], dtype=bool)
            unknown = valid & ~known[item.codes]
            name_items = rows.items_table.source.name  # type: ignore[union-attr]
            reject(unknown, {int(i): f"unknown item: {item.text(i)!r} is not in the items file {name_items}" for i in np.flatnonzero(unknown)})
        else:
            cat_col, sub_col = columns.get("category"), columns.get("subcategory")
            catalogue = self.catalogue
            pos = catalogue.positions(item.unique_text())  # of each distinct item in the catalogue
            registered = pos >= 0
            valid_rows = np.flatnonzero(valid)
            new_rows = valid_rows[~registered[item.codes[valid_rows]]]
            _, first_pos = np.unique(item.codes[new_rows], return_index=True)
            first_rows = np.sort(new_rows[first_pos])
            if len(first_rows):
                texts_new = self.item_texts(first_rows, columns)
                empty_text = np.asarray(pc.equal(pc.binary_length(texts_new), 0))
                if empty_text.any():
                    stop = min(stop, int(cand[first_rows[np.argmax(empty_text)]]))
                take_first = pa.array(first_rows, pa.int64())
                blank = pa.array([""] * len(first_rows), pa.large_string())
                registrations = {
                    "row": first_rows, "item": item.stripped.take(take_first), "text": texts_new,
                    "category": cat_col.stripped.take(take_first) if cat_col else blank,
                    "subcategory": sub_col.stripped.take(take_first) if sub_col else blank,
                }
            # an item's category (and line) is its first row's: registered before this chunk, or its first row here
            pos = np.where(registered, pos, 0)
            ref_line = np.where(registered, catalogue.lines(pos), 0)
            ref_line[item.codes[first_rows]] = idx[cand[first_rows]] + 1
            if cat_col is not None and len(valid_rows):
                ref = catalogue.categories(pos)
                by_code = np.argsort(item.codes[first_rows], kind="stable")
                mask = np.zeros(len(pos), dtype=bool)
                mask[item.codes[first_rows]] = True
                ref_category = pc.replace_with_mask(ref, pa.array(mask), registrations["category"].take(pa.array(by_code)))
                ref_arr = ref_category.take(pa.array(item.codes[valid_rows]))
                row_cat = cat_col.stripped.take(pa.array(valid_rows))
                differs = np.asarray(pc.and_(pc.greater(pc.binary_length(row_cat), 0), pc.not_equal(row_cat, ref_arr)))
                conflict_rows = valid_rows[differs]

        rejected = np.flatnonzero(reason >= 0)
        for r in rejected:
            reasons[int(cand[r])] = texts_of[reason[r]]
        keep_rows = np.flatnonzero(reason < 0)

        def cat_col_text(r: int) -> str:
            return columns["category"].text(r)

        def apply(n: int) -> None:
            """Commit the rows at chunk positions < n."""
            upto = int(np.searchsorted(cand, n))  # candidate rows before the stop
            if times.fmt == "auto" and times.unit is None and unit is not None and 0 <= decided_at < upto:
                times.unit = unit
            done = ts_success[:upto]
            if done.any():
                head = mode[:upto]
                firsts = sorted((int(np.argmax(done & (head == m))), int(m)) for m in np.unique(head[done]))
                for _, m in firsts:
                    times.counts[modes[m]] += int((done & (head == m)).sum())
            if rows.catalogue is None:
                built = rows.built
                m = int(np.searchsorted(registrations["row"], upto))
                if m:
                    self.catalogue.add({k: v[:m] for k, v in registrations.items() if k != "row"},
                                       idx[cand[registrations["row"][:m]]] + 1)
                for r in conflict_rows[conflict_rows < upto]:
                    it = item.text(r)
                    built.conflicts[it] = built.conflicts.get(it, 0) + 1
                    if built.first_conflict is None:
                        built.first_conflict = (f"item {it}: category {ref_category[int(item.codes[r])].as_py()!r} at line "
                                                f"{int(ref_line[item.codes[r]])}, {cat_col_text(r)!r} at line {int(idx[cand[r]] + 1)}")
            keep = keep_rows[keep_rows < upto]
            rows.stats.kept += len(keep)
            take = pa.array(keep)
            columns_out = {
                "user_id": user.stripped.take(take), "item_id": item.stripped.take(take),
                "action": pa.array(action_names, pa.large_string()).take(pa.array(actions_codes[keep], pa.int64())),
                "ts": ts[keep], "value": values[keep], "seq": (idx[cand[keep]] + 1).astype(np.int64),
            }
            context = {nm: col.stripped.take(take) for nm, col in columns.items()
                       if nm not in rows.not_context and (rows.context_filter is None or nm in rows.context_filter)}
            self.events.add_columns(columns_out, context)

        return stop, {"apply": apply}

    def item_texts(self, first_rows: np.ndarray, columns: dict[str, _Column]) -> pa.Array:
        """The text of a new item from its first row: the template, or the text column."""
        if self.template is None:
            col = columns.get("text")
            if col is None:
                return pa.array([""] * len(first_rows), pa.large_string())
            return col.stripped.take(pa.array(first_rows, pa.int64()))
        return self.template.render(first_rows, columns)


#: The time formats :class:`TimeParser` counts under their own name (a strptime pattern is counted as itself).
TIME_MODES = ("unix", "unix_ms", "iso")


def _first(mask: np.ndarray, default: int) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else default


def _finite_number(value: Any) -> bool:
    try:
        number = float(value)
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(number)) and not isinstance(value, bool)


def _value_of(cell_value: Any) -> tuple[float, str | None]:
    from interestgym.data.events import _parse_value

    return _parse_value({"value": cell_value})


class _Column:
    """One named column of a chunk's candidate rows: each row's cell (the text stripped as
    :func:`~interestgym.data.tables.cell` strips it) and, when asked, its distinct cells.

    ``attention``: rows whose line holds a byte that may need Python's rules (a control character,
    a lead byte of a Unicode space, a space beside a delimiter or at the line's ends); the others'
    cells are their raw text, which holds no control character.
    """

    def __init__(self, raw: pa.Array, attention: np.ndarray) -> None:
        self.attention = attention
        if len(attention):
            fixed = [cell(v) for v in raw.take(pa.array(attention, pa.int64())).to_pylist()]
            mask = np.zeros(len(raw), dtype=bool)
            mask[attention] = True
            # replace_with_mask takes the replacements in row order
            raw = pc.replace_with_mask(raw, pa.array(mask), pa.array(fixed, pa.large_string()))
        self.stripped = raw
        self._codes: np.ndarray | None = None
        self._clean: pa.Array | None = None
        self._texts: list[str] | None = None

    def _encode(self) -> None:
        enc = pc.dictionary_encode(self.stripped)
        self._codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self._clean = enc.dictionary

    @property
    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._encode()
        return self._codes  # type: ignore[return-value]

    @property
    def clean(self) -> pa.Array:
        """The distinct cells (in order of first appearance; ``codes`` index them)."""
        if self._clean is None:
            self._encode()
        return self._clean  # type: ignore[return-value]

    def unique_text(self) -> list[str]:
        if self._texts is None:
            self._texts = self.clean.to_pylist()
        return self._texts

    def cells(self) -> list[str]:
        return self.unique_text()

    def text(self, row: int) -> str:
        return self.stripped[int(row)].as_py()

    def empty(self) -> np.ndarray:
        return np.asarray(pc.equal(pc.binary_length(self.stripped), 0))

    def id_reasons(self, field: str) -> tuple[np.ndarray, dict[int, str]]:
        """Rows whose id holds a control character, and their reasons (only rows needing attention can)."""
        rows = np.zeros(len(self.stripped), dtype=bool)
        why: dict[int, str] = {}
        for r in self.attention:
            reason = id_reason(self.text(r), field)
            if reason is not None:
                rows[r] = True
                why[int(r)] = reason
        return rows, why


class _Template:
    """``--item-text`` rendered for many rows: literal parts and plain ``{column}`` fields joined column-wise;
    a template with conversions or format specs is rendered by Python row by row."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.parts = list(string.Formatter().parse(template))
        self.simple = all(conv is None and not spec for _, f, spec, conv in self.parts if f is not None)

    def render(self, rows: np.ndarray, columns: dict[str, _Column]) -> pa.Array:
        from interestgym.data.events import _render

        if not self.simple:
            out = []
            for r in rows:
                row = {nm: col.text(r) for nm, col in columns.items()}
                out.append(_render(self.template, row))
            return pa.array(out, pa.large_string())
        take = pa.array(rows, pa.int64())
        pieces: list[Any] = []
        for literal, field, _, _ in self.parts:
            if literal:
                pieces.append(pa.scalar(literal, pa.large_string()))
            if field is not None:
                col = columns.get(field)
                pieces.append(col.stripped.take(take) if col is not None else pa.scalar("", pa.large_string()))
        if not any(isinstance(p, pa.Array) for p in pieces):
            text = "".join(p.as_py() for p in pieces).strip()
            return pa.array([text] * len(rows), pa.large_string())
        joined = pc.binary_join_element_wise(*pieces, pa.scalar("", pa.large_string()))
        ends = np.asarray(pc.fill_null(pc.match_substring_regex(joined, f"^{_WS}|{_WS}$"), False))
        if ends.any():
            out = joined.to_pylist()
            for j in np.flatnonzero(ends):
                out[j] = out[j].strip()
            joined = pa.array(out, pa.large_string())
        return joined
