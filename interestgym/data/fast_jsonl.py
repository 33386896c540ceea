"""The columnar reader of ``prepare events`` for JSON Lines logs.

The line reader (:func:`~interestgym.data.tables.table_rows`) decodes each line, parses it, maps its keys to fields
and checks the row in Python. This reader keeps the parse (``json.loads``, line by line: its values and its error
messages are the line reader's by construction) and does the rest on columns, with the same results to the byte:

1. Lines, blank lines and invalid UTF-8 as the CSV / TSV reader finds them
   (:class:`~interestgym.data.fast_lines.Lines`); a line whose text equals an earlier line's is a duplicate.
2. Each line parsed, a block of lines at a time (only one block's objects live at once); a line that is no JSON
   object is rejected with the line reader's reason. The first object's keys decide the common names (as the line
   reader decides them), and every key maps to its field.
3. Each field's values become one column: a column of one JSON type is read as a Parquet column of that type is
   (:func:`~interestgym.data.fast_parquet._as_text`); a column of mixed types (``1`` here, ``"1"`` there) is spelled
   value by value with :func:`~interestgym.data.tables.cell_text` and Python's rules. A row without a key has no cell
   (a missing value is no empty one: the reject of a rating says which).
4. The CSV reader's column checks (:func:`~interestgym.data.fast_events.check_columns`); context columns in the
   order of their first kept row, as the line reader adds them.

A file the line reader would read otherwise is left to it whole: a zip member, UTF-16, a damaged ``.gz``; a row with
two keys for one field; a context key that clashes with a computed column (the line reader's error names the row);
two keys of the first object that could both be one field (the line reader's error); and a cell that reads differently as text than as its JSON type (a
boolean, list or object id, time, value or category; a float id with a fraction; an infinite value or time; an
integer time or value past 2^53; a number read by an ISO or strptime ``--time-format``). The line reader's progress
line then says why (:class:`~interestgym.data.fast_parquet.RowByRow`).
"""

from __future__ import annotations

import gc
import json
import math
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interestgym.core.log_features import VALUE_MAX
from interestgym.data.columns import resolve_aliases
from interestgym.data.fast_checks import Template, take
from interestgym.data.fast_lines import Lines
from interestgym.data.fast_parquet import _IDS, _NO_BOOL, RowByRow, _as_text
from interestgym.data.tables import (
    Table,
    cell,
    cell_text,
    json_may_be_refused,
    json_value_reason,
    parse_json_line,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError
from interestgym.progress import progress_bar

if TYPE_CHECKING:
    from interestgym.data.events import _RowChecker

#: JSON's whitespace (json.loads skips it around a value).
_JSON_SPACE = " \t\n\r"

#: The numeric time formats: any other reads a number's text, and its reject would show the number as text.
_NUMERIC_TIMES = ("auto", "unix", "unix_ms")


def jsonl_rows(table: Table, log: RejectLog, rows: _RowChecker) -> bool:
    """Check every row of the JSON Lines ``table`` into ``rows`` (and ``log``) column-wise; False (nothing done, the
    table untouched) when the file is one the line reader must read (see the module's docstring; ``table.row_by_row``
    says why)."""
    if table.source.member is not None:
        table.row_by_row = "a zip member"
        return False
    # a million parsed objects are a million containers the cyclic collector would walk again and again as they are
    # made (a sixth of the read on a million rows); they hold no cycles, and the collector runs again at the end
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _read(table, log, rows)
    except RowByRow as why:
        table.row_by_row = str(why)
        return False
    finally:
        if enabled:
            gc.enable()


_hash = hash  # (a test makes every line's hash one)

#: Lines parsed at a time: only one block's objects live at once (a million of them held together took 1.5 GB).
_BLOCK = 65536


def _read(table: Table, log: RejectLog, rows: _RowChecker) -> bool:
    from interestgym.data.fast_events import (
        _file_bytes,
        check_columns,
        line_entries,
        write_entries,
    )

    data = _file_bytes(table)
    if data is None:
        raise RowByRow("UTF-16, or a damaged .gz")  # the line reader's error says which
    lines = Lines(data)
    live = np.flatnonzero(lines.non_blank & ~lines.bad_utf8)
    dup = np.zeros(lines.n, dtype=bool)
    name = table.source.name

    # 2. parse, a block of lines at a time: json.loads's own scanner, called on each line (with its newline, JSON
    # whitespace) without the wrappers around it; a line it does not take whole goes through json.loads itself, for
    # the exact error. A line equal to an earlier one (valid UTF-8: equal text is equal bytes) is a duplicate.
    entries: list[tuple[int, str, str, str]] = []
    at: list[int] = []
    columns = _Columns(table, rows)
    scan = json.decoder.JSONDecoder().scan_once
    seen: dict[int, int] = {}  # a line's hash -> the first line with it
    seen_text: set[str] = set()  # the lines of a hash two different lines share (never seen)
    with progress_bar(total=len(live), unit="line", desc=table.source.basename) as bar:
        for lo in range(0, len(live), _BLOCK):
            block = live[lo: lo + _BLOCK]
            objects: list[dict[str, Any]] = []
            for i, text in zip(block.tolist(), take(lines.with_newline, block).cast(pa.large_string()).to_pylist()):
                first = seen.setdefault(_hash(text), i)
                if first == i:
                    pass
                elif text in seen_text or lines.text(first) + "\n" == text:
                    dup[i] = True
                    continue
                else:  # another line with this hash: compare texts from now on
                    seen_text.update((lines.text(first) + "\n", text))
                try:
                    obj, end = scan(text, 0)
                    whole = end == len(text) - 1 or not text[end:].strip(_JSON_SPACE)
                except (StopIteration, ValueError, RecursionError):  # ValueError: JSONDecodeError, too many digits
                    whole = False
                reason = json_value_reason(obj, text) if whole and json_may_be_refused(text) else None
                if not whole or reason is not None:
                    text = lines.text(i)
                    obj, reason = parse_json_line(text)
                    if reason is not None:
                        entries.append((i + 1, "rejected", reason, text))
                        continue
                if type(obj) is not dict:
                    entries.append((i + 1, "rejected", f"not a JSON object: found {type(obj).__name__}; expected one JSON object per line", lines.text(i)))
                    continue
                objects.append(obj)
                at.append(i + 1)
            columns.add(objects, at[-len(objects):] if objects else [])
            bar.update(len(block))
    columns.done()

    # 4. checks (nothing above touched the table, the log or the rows)
    table.aliases = columns.aliases
    for shape in columns.shapes:
        table.base_names.update(shape)
    lineno = np.asarray(at, dtype=np.int64)
    template = Template(rows.opts.item_text) if rows.opts.item_text else None
    kept = check_columns(rows, template, lineno, columns.text, columns.attention,
                         lambda got: [lines.text(line - 1) for line in got], entries,
                         value_present=columns.present("value") if "value" in columns.keys_of else None)
    columns.order_context(rows, lineno)

    stats = rows.stats
    stats.read += lines.n
    stats.blank += int(np.count_nonzero(~lines.non_blank))
    stats.kept += kept
    write_entries(log, name, entries + line_entries(lines, lines.non_blank & lines.bad_utf8, dup))
    return True


class _Columns:
    """The objects' fields as text columns, built a block of objects at a time: the common names (decided by the first
    object, as the line reader decides them), each field's keys in the file, each object's shape (its keys in order),
    and per block each field's cells. Nothing of the table or the reader is changed here."""

    def __init__(self, table: Table, rows: _RowChecker) -> None:
        self.table, self.rows = table, rows
        self.old_to_new = table.rename_old_to_new
        self.aliases: dict[str, str] | None = None
        self.field_of: dict[str, str] = {}
        #: each field's keys in the file, in order of first appearance
        self.keys_of: dict[str, list[str]] = {}
        #: each shape (an object's keys in order) and its index
        self.shapes: dict[tuple[str, ...], int] = {}
        self.shape_fields: list[list[str]] = []  # per shape, the field of each key
        self.shape_of: list[np.ndarray] = []  # per block, each object's shape
        self.row_shape = np.zeros(0, dtype=np.int32)  # every object's shape, joined by done()
        self.blocks: list[tuple[int, dict[str, tuple[pa.Array, np.ndarray]]]] = []
        self.text: dict[str, pa.Array] = {}
        self.attention: dict[str, np.ndarray] = {}

    def add(self, objects: list[dict[str, Any]], at: list[int]) -> None:
        """Take a block of objects (``at``: their lines). :raises RowByRow: for a file the line reader must read."""
        if not objects:
            return
        if self.aliases is None:
            try:
                self.aliases = resolve_aliases([self.old_to_new.get(k, k) for k in objects[0]], f"{self.table.source.name} line {at[0]}",
                                               self.table.alias_fields, fixed=self.old_to_new.values())
            except DataError as exc:  # the line reader raises it, after the rejects of the lines before
                raise RowByRow(str(exc)) from None
        keys = list(map(tuple, objects))
        index = list(map(self.shapes.get, keys))
        if None in index:  # shapes not seen before
            for j, k in enumerate(index):
                if k is None:
                    k = index[j] = self.shapes.get(keys[j])
                if k is None:
                    k = index[j] = self._shape(keys[j])
        shape_of = np.asarray(index, dtype=np.int32)
        self.shape_of.append(shape_of)
        in_block = np.unique(shape_of).tolist()
        cells: dict[str, tuple[pa.Array, np.ndarray]] = {}
        for field, keys in self.keys_of.items():
            holding = [k for k in in_block if field in self.shape_fields[k]]
            if not holding:
                continue  # no object of this block has it: all null, filled in at the end
            if len(keys) == 1 and len(holding) == len(in_block):  # every object has the key: one C-level pass
                values = list(map(itemgetter(keys[0]), objects))
            elif len(keys) == 1:
                key = keys[0]
                values = [o.get(key) for o in objects]
            else:
                values = [next((o[k] for k in keys if k in o), None) for o in objects]
            cells[field] = _to_text(values, field, self.rows.times.fmt)
        self.blocks.append((len(objects), cells))

    def _shape(self, shape: tuple[str, ...]) -> int:
        fields = []
        for key in shape:
            field = self.field_of.get(key)
            if field is None:
                new = self.old_to_new.get(key, key)
                field = self.field_of[key] = self.aliases.get(new, new)  # type: ignore[union-attr]
                self.keys_of.setdefault(field, []).append(key)
            if field in fields:  # the line reader keeps the later one
                raise RowByRow(f"a row has two keys for the field {field!r}")
            fields.append(field)
        self.shapes[shape] = len(self.shape_fields)
        self.shape_fields.append(fields)
        return self.shapes[shape]

    def done(self) -> None:
        """Join the blocks' cells into columns. :raises RowByRow: for a file the line reader must read."""
        from interestgym.data.events import RESERVED

        rows = self.rows
        context = [f for f in self.keys_of if f not in rows.not_context and (rows.context_filter is None or f in rows.context_filter)]
        clash = [f for f in context if f in RESERVED]
        if clash:  # the line reader's error names the first kept row holding it
            raise RowByRow(f"the key {clash[0]!r} clashes with a computed column")
        if self.aliases is None:
            self.aliases = {}
        for field in self.keys_of:
            pieces, attention, offset = [], [], 0
            for n, cells in self.blocks:
                text, att = cells.get(field, (None, None))
                pieces.append(pa.nulls(n, pa.large_string()) if text is None else text.cast(pa.large_string()))
                if att is not None and len(att):
                    attention.append(att + offset)
                offset += n
            self.text[field] = pa.concat_arrays(pieces) if pieces else pa.array([], pa.large_string())
            self.attention[field] = np.concatenate(attention) if attention else np.zeros(0, dtype=np.int64)
        self.blocks = []
        self.row_shape = np.concatenate(self.shape_of) if self.shape_of else np.zeros(0, dtype=np.int32)

    def present(self, field: str) -> np.ndarray:
        """Which objects hold ``field``."""
        has = np.array([field in fields for fields in self.shape_fields] + [False], dtype=bool)
        return has[self.row_shape]

    def order_context(self, rows: _RowChecker, lineno: np.ndarray) -> None:
        """The kept events' context columns as the line reader adds them: a column from the first kept row that holds
        it (in that row's key order), none for a key only rejected rows hold."""
        events = rows.events
        kept_rows = np.searchsorted(lineno, np.asarray(events.columns["seq"], dtype=np.int64))  # each kept row's object
        shape_of = self.row_shape
        placed: list[tuple[tuple[int, int], str]] = []
        for field in events.context:
            has = self.present(field)[kept_rows]
            if not has.any():
                continue
            first = int(kept_rows[np.argmax(has)])
            placed.append(((first, self.shape_fields[shape_of[first]].index(field)), field))
        events.context = {field: events.context[field] for _, field in sorted(placed)}


def _to_text(values: list[Any], field: str, time_format: str) -> tuple[pa.Array, np.ndarray]:
    """One field's cells as text (null: no cell, or one ``cell`` makes None) and the rows needing Python's stripping
    rules. :raises RowByRow: a cell reads differently as text than as its JSON value."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    typed = {str: pa.large_string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    if len(kinds) <= 1 and (not kinds or next(iter(kinds)) in typed):
        kind = next(iter(kinds)) if kinds else None
        try:
            array = pa.array(values, typed[kind]) if kind is not None else pa.nulls(len(values), pa.large_string())
        except (OverflowError, pa.ArrowException):
            array = None  # an integer past int64: spelled in Python below
        if array is not None:
            if kind is int and field in ("ts", "value"):
                ints = np.asarray(pc.fill_null(array, 0))
                if np.any((ints > 2**53) | (ints < -(2**53))):
                    raise RowByRow(f"key {field!r} holds an integer past 2^53")
            return _as_text(pa.chunked_array([array]), field, time_format)
    # mixed types: each value spelled as the line reader's row dict holds it as text
    spelled: list[str | None] = []
    for v in values:
        if _odd(v, field, time_format):
            raise RowByRow(f"key {field!r} holds {json.dumps(v)[:40]}, read differently as a JSON value than as text")
        c = cell(v)
        spelled.append(None if c is None else cell_text(c))
    strings = pa.array(spelled, pa.large_string())
    odd = np.asarray(pc.fill_null(pc.match_substring_regex(strings, "[^!-~]"), False))
    return strings, np.flatnonzero(odd)


def _odd(v: Any, field: str, time_format: str) -> bool:
    """Whether the JSON value ``v`` of ``field`` reads differently as text than as itself (see the module's docstring)."""
    if isinstance(v, (bool, list, dict)):
        return field in _NO_BOOL
    if isinstance(v, float):
        if math.isnan(v):
            return False
        if math.isinf(v):
            return field in _IDS or field in ("ts", "value")
        if field in _IDS:
            return not v.is_integer() or abs(v) >= 2.0**53
        if field == "value":
            return abs(v) > VALUE_MAX
        return field == "ts" and time_format not in _NUMERIC_TIMES
    if isinstance(v, int):
        if field == "ts":
            return time_format not in _NUMERIC_TIMES or abs(v) > 2**53
        return field == "value" and abs(v) > 2**53
    return False
