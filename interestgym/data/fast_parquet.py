"""The columnar reader of ``prepare events`` for Parquet logs: whole columns checked at once.

The line reader (:func:`~interestgym.data.tables.table_rows`) turns each Parquet row into Python values, a JSON
text (what a reject shows, and what finds duplicate rows) and a row dict: about 23 s per million rows. This reader
reads the file as Arrow columns and gives the same results to the byte (events, items, counts, notes, and every
bad row with its row number, reason and JSON text, in order):

1. **Duplicates**: a row is a duplicate when its JSON text equals an earlier row's. JSON writes distinct values of
   one column as distinct text (NaN aside: every NaN is ``NaN``), so each column gets an exact code per value
   (a string's dictionary index, a number's bits, NaN one code, null its own); the codes of a row are hashed, and
   the rows that share a hash are grouped by their codes, so a row whose codes all equal an earlier row's is a
   duplicate, whatever the hash does.
2. **Cells as text**: each column becomes the text the line reader's checks read, ``cell_text(cell(value))``:
   strings as they are (stripped later, as CSV cells are), integers in decimal, a float column through Python's
   own rules once per distinct value (a whole float is an integer, NaN is empty).
3. **Checks**: the CSV reader's column checks (:func:`~interestgym.data.fast_events.check_columns`) on those; a
   timestamp ``ts`` column is read from its integers (:class:`Stamps`), as ``TimeParser`` reads a ``datetime``.

Some cells read differently as text than as typed values: a boolean id, value, time or category; a float id with
a fraction; an id, value or time that is infinite, a value out of float32's range; a number as time in an ISO or ``strptime``
format; a timestamp outside 1990..2100; a date, list, struct or binary column. A file holding any of them is left to the line reader
(whose reasons name the typed value), as is a zip member; the line reader's progress line then says why
(:class:`RowByRow`).
"""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interestgym.core.log_features import VALUE_MAX
from interestgym.data.fast_checks import Reasons, Template, TimeCheck, take
from interestgym.data.tables import Table, cell, cell_text, parquet_row_text
from interestgym.data.times import TS_MAX, TS_MIN, TimeParser
from interestgym.data.validate import RejectLog

if TYPE_CHECKING:
    from interestgym.data.events import _RowChecker

#: Fields whose typed cells the checks judge by type (a boolean id or value is refused as such): a column of them
#: holding a value that reads differently as text leaves the file to the line reader.
_IDS = ("user_id", "item_id")
_NO_BOOL = _IDS + ("ts", "value", "category", "subcategory")


class RowByRow(Exception):
    """A file the columnar reader leaves to the line reader, and why (the line reader's progress line says it)."""


def parquet_rows(table: Table, log: RejectLog, rows: _RowChecker) -> bool:
    """Check every row of the Parquet ``table`` into ``rows`` (and ``log``) column-wise; False (nothing done) when
    the file is one the line reader must read (see the module's docstring; ``table.row_by_row`` says why)."""
    try:
        return _parquet_rows(table, log, rows)
    except RowByRow as why:
        table.row_by_row = str(why)
        return False


def _parquet_rows(table: Table, log: RejectLog, rows: _RowChecker) -> bool:
    import pyarrow.parquet as pq

    if table.source.member is not None or table.names is None:
        raise RowByRow("a zip member")
    try:
        data = pq.read_table(table.source.path)
    except (OSError, ValueError) as exc:
        raise RowByRow(f"Arrow cannot read it whole: {exc}") from None  # the line reader names the damage
    if data.schema.names != list(table.header_found or []):
        raise RowByRow("its columns read back under other names")
    names = table.names
    text: dict[str, pa.Array] = {}
    attention: dict[str, np.ndarray] = {}
    stamps: Stamps | None = None
    template = Template(rows.opts.item_text) if rows.opts.item_text else None
    for i, nm in enumerate(names):
        column = data.column(i)
        if nm == "ts" and pa.types.is_timestamp(column.type):
            stamps = Stamps.of(column)
            got = stamps.text(needed=template is not None and any(f == "ts" for _, f, _, _ in template.parts))
        else:
            got = _as_text(column, nm, rows.times.fmt)
        text[nm], attention[nm] = got
    dup = _duplicates(data)

    from interestgym.data.fast_events import check_columns, write_entries

    n = data.num_rows
    fed = np.flatnonzero(~dup)
    json_names = list(table.header_found or names)

    def raw_texts(lines: list[int]) -> list[str]:
        # the line reader's JSON of each row: its Python values, from the same Arrow columns
        if not lines:
            return []
        picked = data.take(pa.array(np.asarray(lines, dtype=np.int64) - 1))
        values = [picked.column(i).to_pylist() for i in range(picked.num_columns)]
        return [parquet_row_text(json_names, row) for row in zip(*values)]

    entries: list[tuple[int, str, str, str]] = []
    raw_columns = {nm: take(col, fed) for nm, col in text.items()}
    where = {}
    for nm, att in attention.items():  # positions among the fed rows
        mask = np.zeros(n, dtype=bool)
        mask[att] = True
        where[nm] = np.flatnonzero(mask[fed])
    time_check = None if stamps is None else StampCheck(rows.times, stamps, fed)
    kept = check_columns(rows, template, fed + 1, raw_columns, where, raw_texts, entries, time_check)
    dup_lines = (np.flatnonzero(dup) + 1).tolist()
    entries += [(line, "duplicate", "", raw) for line, raw in zip(dup_lines, raw_texts(dup_lines))]

    rows.stats.read += n
    rows.stats.kept += kept
    write_entries(log, table.source.name, entries)
    return True


def _as_text(column: pa.ChunkedArray, field: str, time_format: str) -> tuple[pa.Array, np.ndarray]:
    """The column's cells as the line reader's checks read them (``cell_text(cell(value))``, strings before
    stripping; null where ``cell`` gives None: a missing time is no empty one) and the rows whose string may need
    Python's stripping rules. :raises RowByRow: a cell reads differently as text than as its typed value (the module's
    docstring lists them)."""
    values = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    kind = values.type
    if pa.types.is_dictionary(kind):
        values = values.dictionary_decode()
        kind = values.type
    n = len(values)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        try:
            values.validate(full=True)
        except pa.ArrowInvalid:
            raise RowByRow(f"column {field!r} holds text that is not UTF-8") from None  # the line reader's error names the row
        strings = values.cast(pa.large_string())
        # anything but printable ASCII without a space: a control character, a Unicode space, a space at an end
        odd = np.asarray(pc.fill_null(pc.match_substring_regex(strings, "[^!-~]"), False))
        return strings, np.flatnonzero(odd)
    none = np.zeros(0, dtype=np.int64)
    if pa.types.is_null(kind):
        return pa.nulls(n, pa.large_string()), none
    if pa.types.is_integer(kind):
        if field == "ts" and time_format not in ("auto", "unix", "unix_ms"):
            # a number read by an ISO or strptime format: its reject shows it as a number, not as text
            raise RowByRow(f"column 'ts' holds numbers, read by --time-format {time_format!r}")
        return values.cast(pa.large_string()), none
    if pa.types.is_boolean(kind):
        if field in _NO_BOOL:
            raise RowByRow(f"column {field!r} holds booleans")
        return pc.if_else(values, "True", "False").cast(pa.large_string()), none
    if pa.types.is_floating(kind) and not pa.types.is_float16(kind):
        floats = np.asarray(pc.fill_null(values.cast(pa.float64()), np.nan))
        finite = np.isfinite(floats)
        # +-inf: an id's or a value's reason shows it as a number, a time's too; elsewhere it is the text "inf"
        odd = ~finite & ~np.isnan(floats) if field in _IDS or field in ("ts", "value") else np.zeros(len(floats), dtype=bool)
        if field in _IDS:
            with np.errstate(invalid="ignore"):
                odd |= finite & ((floats != np.floor(floats)) | (np.abs(floats) >= 2.0**53))  # cell() keeps it a float
        elif field == "value":
            odd |= finite & (np.abs(floats) > VALUE_MAX)
        elif field == "ts" and time_format not in ("auto", "unix", "unix_ms"):
            odd |= finite
        if odd.any():
            shown = floats[np.argmax(odd)]
            raise RowByRow(f"column {field!r} holds the float {shown!r}, read differently as a number than as text")
        # a whole float below 2^53 is an integer (cell), in decimal; NaN and null are no cell
        with np.errstate(invalid="ignore"):  # a signalling NaN
            whole = finite & (floats == np.floor(floats)) & (np.abs(floats) < 2.0**53)
        if (whole | np.isnan(floats)).all():
            return pa.array(np.where(whole, floats, 0.0).astype(np.int64), pa.int64(), mask=~whole).cast(pa.large_string()), none
        encoded = pc.dictionary_encode(values)
        # the others once per distinct value: Python's own spelling (repr)
        spelled = pa.array([None if (c := cell(v)) is None else cell_text(c) for v in encoded.dictionary.to_pylist()],
                           pa.large_string())
        return spelled.take(encoded.indices), none
    raise RowByRow(f"column {field!r} is of type {kind}")


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class Stamps:
    """A Parquet timestamp ``ts`` column, read as :meth:`~interestgym.data.times.TimeParser.parse` reads each of its
    values (a ``datetime``): UTC seconds, floored; a fraction of a second counted; a zone's UTC offset counted per
    value; a time outside 1990..2100 rejected (such a file is left to the line reader: the reason shows the value's
    ISO text)."""

    def __init__(self, values: pa.Array, seconds: np.ndarray, fraction: np.ndarray, null: np.ndarray,
                 offset: np.ndarray | None) -> None:
        self.values, self.seconds, self.fraction, self.null, self.offset = values, seconds, fraction, null, offset

    @classmethod
    def of(cls, column: pa.ChunkedArray) -> Stamps:
        values = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        unit, tz = values.type.unit, values.type.tz
        per = _PER_SECOND[unit]
        raw = np.asarray(pc.fill_null(values.cast(pa.int64()), 0))
        null = np.asarray(values.is_null())
        seconds = raw // per  # floor: a naive value's calendar.timegm, a zoned one's floor(timestamp())
        fraction = (raw % per != 0) & ~null
        bad = ~null & ((seconds < TS_MIN) | (seconds >= TS_MAX))
        if tz is not None and unit == "ns":
            # pandas' Timestamp.timestamp() divides by 1e9 in floats (a few hundred ns off at these magnitudes) and
            # rounds to the microsecond: within about half of one below a whole second its floor is the next second.
            # Left to the line reader, with a margin of a whole microsecond (never seen in a real log).
            bad |= ~null & (raw % per >= per - 1000)
        if bad.any():
            raise RowByRow("column 'ts' holds a time outside 1990..2100, or a zoned time within a microsecond of a second")
        offset = None
        if tz is not None:
            # each value's UTC offset, as its datetime gives it: a fixed zone's once, a named zone's (which moves)
            # once per distinct value
            offset = np.zeros(len(values), dtype=np.int64)
            distinct = pc.unique(values.drop_null())
            first = distinct[0].as_py() if len(distinct) else None
            if first is not None and isinstance(first.tzinfo, timezone):
                offset[:] = int(first.utcoffset().total_seconds())
            elif first is not None:
                shifts = [int(v.utcoffset().total_seconds()) for v in distinct.to_pylist()]
                at = np.asarray(pc.fill_null(pc.index_in(values, value_set=distinct), 0))
                offset = np.asarray(shifts, dtype=np.int64)[at]
        return cls(values, seconds, fraction, null, offset)

    def text(self, *, needed: bool) -> tuple[pa.Array, np.ndarray]:
        """The column as the line reader's row dict holds it as text (``str(datetime)``), for a template that reads
        ``{ts}``; unneeded (no template reads it, and no other check reads a time as text), nulls."""
        n = len(self.values)
        if not needed:
            return pa.nulls(n, pa.large_string()), np.zeros(0, dtype=np.int64)
        encoded = pc.dictionary_encode(self.values)
        spelled = pa.array([cell_text(v) for v in encoded.dictionary.to_pylist()], pa.large_string())
        return spelled.take(encoded.indices), np.zeros(0, dtype=np.int64)


class StampCheck(TimeCheck):
    """The ``ts`` check of a timestamp column (:class:`Stamps`), for the rows ``fed`` (the rows that are no duplicates)."""

    def __init__(self, times: TimeParser, stamps: Stamps, fed: np.ndarray) -> None:
        super().__init__(times, None, len(fed))
        self.seconds, self.null = stamps.seconds[fed], stamps.null[fed]
        self.stamp_fraction = stamps.fraction[fed]
        self.stamp_offset = None if stamps.offset is None else stamps.offset[fed]

    def check(self, reach: np.ndarray, reasons: Reasons) -> None:
        # a datetime is read whatever the time format, and counts under none of them (TimeParser.parse)
        missing = reach & self.null
        if missing.any():
            reasons.reject(missing, f"bad time: missing; expected {self.times.expected()}")
        read = np.flatnonzero(reach & ~self.null)
        self.ts[read] = self.seconds[read]
        self.fraction[read] = self.stamp_fraction[read]
        if self.stamp_offset is not None:
            self.offset = dict(zip(read.tolist(), self.stamp_offset[read].tolist()))


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code (equal codes: equal JSON text) and whether it is null."""
    values = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    kind = values.type
    null = np.asarray(values.is_null())
    if pa.types.is_string_view(kind):
        values, kind = values.cast(pa.large_string()), pa.large_string()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind):
        codes = np.asarray(pc.fill_null(pc.dictionary_encode(values).indices, 0)).astype(np.int64) \
            if not pa.types.is_null(kind) else np.zeros(len(values), dtype=np.int64)
    elif pa.types.is_integer(kind) or pa.types.is_timestamp(kind):  # a timestamp: its instant
        codes = np.asarray(pc.fill_null(values.cast(pa.int64(), safe=False), 0))
    elif pa.types.is_boolean(kind):
        codes = np.asarray(pc.fill_null(values, False)).astype(np.int64)
    else:  # floating: the bits of the float64 value, every NaN as one (JSON writes each ``NaN``)
        floats = np.asarray(pc.fill_null(values.cast(pa.float64()), 0.0))
        codes = np.where(np.isnan(floats), np.float64(np.nan), floats).view(np.int64)
    return codes, null


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def _duplicates(data: pa.Table) -> np.ndarray:
    """Rows whose every cell equals an earlier row's (the line reader's duplicates: equal JSON text). The rows'
    hashes narrow the search to the rows sharing a hash with another; among those, rows are grouped by their codes
    themselves, so a hash collision never merges two different rows."""
    n = data.num_rows
    columns = [_codes(data.column(i)) for i in range(data.num_columns)]
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for codes, null in columns:
            h = _mix(_mix(h ^ codes.view(np.uint64)) ^ null.astype(np.uint64))
    dup = np.zeros(n, dtype=bool)
    if n < 2:
        return dup
    order = np.argsort(h, kind="stable")
    hs = h[order]
    shared = np.zeros(n, dtype=bool)  # sorted positions whose hash another row has too
    shared[1:] = hs[1:] == hs[:-1]
    shared[:-1] |= shared[1:]
    rows = np.sort(order[shared])  # candidates, in row order
    if not len(rows):
        return dup
    keys = [part[rows] for codes, null in columns for part in (codes, null)]
    by = np.lexsort([np.arange(len(rows))] + keys[::-1])  # by every code, then by row
    same = np.ones(len(rows) - 1, dtype=bool)
    for key in keys:
        k = key[by]
        same &= k[1:] == k[:-1]
    dup[rows[by[1:][same]]] = True  # equal to the row before it in that order: an earlier row's copy
    return dup
