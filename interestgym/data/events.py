"""Generic event-log reader: your own behaviour logs in CSV, TSV, JSONL or Parquet.

Files
    The events file (and the optional items file) may be CSV (RFC-4180, quoted fields allowed),
    TSV (tab-separated, no quoting), JSONL (one JSON object per line) or Parquet, optionally
    ``.gz``-compressed (text formats). The format comes from the extension (``.csv``, ``.tsv``/``.tab``,
    ``.jsonl``/``.ndjson``/``.json``, ``.parquet``/``.pq``), else from the content, or from
    ``input_format``. Text files are UTF-8; a byte-order mark is ignored; a line that is not UTF-8 is
    rejected. In Parquet files the "line" of a row is its 1-based row number.

Columns
    A CSV/TSV file has a header line unless ``columns`` names its columns by position
    (``user_id,item_id,category,action,ts``; ``-`` skips a column); ``header=True`` together with
    ``columns`` replaces an existing header. ``rename`` (``--map NEW=OLD,...``) renames columns of
    both files, e.g. ``ts=timestamp,user_id=uid``. A required column missing under its own name is
    taken under a common name (``timestamp``, ``time``, ``date`` ... for ``ts``; ``user``, ``userId``
    for ``user_id``; ``item``, ``itemId``, ``movieId`` for ``item_id``; ``behavior_type``, ``event``
    for ``action``; see :mod:`interestgym.data.columns`), and the validation notes say so; two
    candidates for one field are an error. After renaming, these names mean:

    ============  =====================================================================
    user_id       required; text without control characters (a NUL in an id is a
                  damaged row, rejected)
    item_id       required; same rule
    ts            required; unix seconds, unix milliseconds, ISO-8601 or a strptime
                  pattern (``time_format``; ``auto`` looks at each value: numbers are
                  unix time, in the unit of the first one, other text is ISO-8601)
    action        the behaviour; canonical names (click, view, like, share, comment,
                  search, add_to_cart, purchase, rate, impression) or names mapped with
                  ``actions`` (``--actions pv=view,cart=add_to_cart``); without the
                  column every row gets ``default_action``
    value         optional number (rating, quantity); 1.0 when the column is absent
    text          optional item text (items built from events)
    category      optional item category (items built from events)
    subcategory   optional item sub-category (items built from events)
    other         context columns (device, channel ...), kept in ``events`` as strings;
                  ``context`` chooses which (default: all of them)
    ============  =====================================================================

Items
    With ``items`` (a file with ``item_id`` (or a common name for it, such as ``itemId``), ``text``,
    optional ``category``, ``subcategory`` and any extra columns, same formats and header rule, ``items_columns`` for a headerless one) every event
    item must be in it (else the event is rejected as "unknown item"), and the items file is the
    catalogue. Without it, items are built from the events: one per distinct ``item_id``, in item-id
    order (code points; not the order of their first rows, which would make the catalogue's rows depend
    on every user's log, test users' included), with the ``text``, ``category`` and ``subcategory`` of
    the item's first row. An item whose category
    changes between rows keeps its first category; the rows that disagree are counted, not rejected
    (a log is not wrong because a shop moved an item), and reported in the validation notes.

Item text
    ``item_text`` is a template over the item's columns (items file row, or the item's first event
    row: e.g. ``"category {category}"``) for logs that carry ids only; it overrides a ``text``
    column. One of ``text`` (events or items file) or ``item_text`` is required.

Rows
    Events keep their file order as ``seq`` (the line number). Identical rows are duplicates;
    rows with a missing or empty required field, a bad time, an unknown action, a bad value or an
    unknown item are rejected with the reason.
"""

from __future__ import annotations

import csv
import json
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interestgym.core.log_features import RATING_ACTION, VALUE_MAX
from interestgym.data.columns import (
    ALIASES,
    ITEM_FILE_FIELDS,
    OPTIONAL_ALIAS_FIELDS,
    expected_names,
    id_reason,
    json_shown,
    name_key,
)
from interestgym.data.dataset import SplitSpec
from interestgym.data.readers import (
    EventTable,
    ReaderOutput,
    accepted_actions,
    first_line,
    items_frame,
    note_unterminated,
    write_reader_output,
)
from interestgym.data.schema import ACTIONS
from interestgym.data.tables import (
    CELL_STRIP,
    INPUT_FORMATS,
    Table,
    cell_text,
    check_rename,
    looks_like_data,
    open_table,
    table_rows,
)
from interestgym.data.times import TimeParser
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

# INPUT_FORMATS moved to interestgym.data.tables with the file handling; still importable from here.
__all__ = ["INPUT_FORMATS", "EventsOptions", "prepare_events", "read_events"]

EVENT_FIELDS = ("user_id", "item_id", "ts", "action", "value")
ITEM_FIELDS = ("text", "category", "subcategory")
#: Columns interestgym computes; a context column may not take these names.
RESERVED = ("hour", "weekday", "seq", "late")


@dataclass
class EventsOptions:
    """How to read a generic event log (see the module docstring); every field has a default."""

    #: csv, tsv, jsonl or parquet; None: from the extension, else the content.
    input_format: str | None = None
    #: Names of the file's columns by position ("-" skips one); implies no header unless ``header``.
    columns: list[str] | None = None
    #: Whether a CSV/TSV file starts with a header line; None: yes unless ``columns`` is given.
    header: bool | None = None
    #: Column renames, old name -> new name (``--map ts=timestamp`` is ``{"timestamp": "ts"}``), applied
    #: to the events and the items file; two old names may get one new name (one per file).
    rename: dict[str, str] = field(default_factory=dict)
    #: Source action name -> canonical action (``--actions pv=view``).
    actions: dict[str, str] = field(default_factory=dict)
    #: Action of every row when the log has no action column.
    default_action: str | None = None
    #: auto, unix, unix_ms, iso, or a strptime pattern.
    time_format: str = "auto"
    #: Optional items file (the catalogue).
    items: Path | None = None
    #: Names of the items file's columns by position (headerless items file).
    items_columns: list[str] | None = None
    #: Template for the item text over item / first-event columns, e.g. "category {category}".
    item_text: str | None = None
    #: Context columns to keep in events; None: every column that is not an event or item field.
    context: list[str] | None = None
    #: The field separator of a delimited events / items file (``--delimiter``): a tab reads it as TSV, any
    #: other single character as CSV on it (quotes allowed); None: comma for CSV, tab for TSV.
    delimiter: str | None = None
    #: ``auto``: the columnar reader (:mod:`interestgym.data.fast_events`) where it applies, else the
    #: line reader; ``lines``: the line reader only; ``columnar``: columnar even for a small file.
    #: Both give identical datasets and rejects.
    reader: str = "auto"


# -------------------------------------------------------------------------------------------- items
def _template_fields(template: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DataError(f"--item-text {template!r}: {exc}; expected a template such as 'category {{category}}'") from None
    names = [f for _, f, _, _ in parsed if f is not None]
    for f in names:
        if not f.isidentifier():
            raise DataError(f"--item-text {template!r}: field {{{f}}}: expected a column name such as {{category}}")
    if not names:
        raise DataError(f"--item-text {template!r}: no {{column}} field; expected a template such as 'category {{category}}'")
    try:  # every cell is text: a conversion or format spec that text does not take fails on any row, so on this one
        template.format_map(_Fields({f: "text" for f in names}))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise DataError(f"--item-text {template!r}: {exc}; expected {{column}} fields, each read as text (a spec such as "
                        "{title:.60} cuts it; conversions and number formats do not apply)") from None
    return names


class _Fields(dict):
    """Template fields; a missing one renders as "" (a JSONL row may lack a key)."""

    def __missing__(self, key: str) -> str:
        return ""


def _render(template: str, row: dict[str, Any]) -> str:
    return template.format_map(_Fields({k: cell_text(v) for k, v in row.items()})).strip(CELL_STRIP)


def _check_template_fields(template: str | None, available: list[str] | None, where: str) -> None:
    if template is None or available is None:
        return
    missing = [f for f in _template_fields(template) if f not in available]
    if missing:
        raise DataError(f"--item-text {template!r}: no column {', '.join(missing)} in {where}; available: {', '.join(available)}")


#: JSON types a category cannot be (a JSONL or Parquet cell): as text they would be Python's spelling ("True").
_NOT_A_CATEGORY = {bool: "a JSON boolean", list: "a JSON list", tuple: "a list", dict: "a JSON object"}


def attribute_reason(row: dict[str, Any]) -> str | None:
    """Why an item's category or subcategory cell is refused: a boolean, a list or an object (text and numbers are
    categories; a missing cell or null is none)."""
    for name in ("category", "subcategory"):
        value = row.get(name)
        kind = next((what for t, what in _NOT_A_CATEGORY.items() if isinstance(value, t)), None)
        if kind is not None:
            shown = json.dumps(value, ensure_ascii=False, default=str)[:60]
            return f"bad {name}: {shown} is {kind}; expected text or a number"
    return None


def _header_as_data_note(table: Table, log: RejectLog, opts: EventsOptions) -> str | None:
    """With ``--columns`` (a file without a header) whose first line was rejected and names at least two of the
    columns (``user_id,item_id,...``): a note that it looks like a header, read as data."""
    if opts.columns is None or table.fmt not in ("csv", "tsv"):
        return None
    first = next((r for r in log.rejects if r["file"] == table.source.name and r["kind"] == "rejected"), None)
    if first is None or first["line"] != 1 + table.skip:
        return None
    cells = {name_key(c.strip().strip('"')) for c in str(first["raw"]).split(table.delimiter)}
    named = {name_key(n) for n in opts.columns if n} | {name_key(a) for names in ALIASES.values() for a in names}
    if len(cells & named) < 2:
        return None
    return (f"{table.source.name}: line {first['line']} looks like a header ({first['raw'][:80]}), read as data because "
            "--columns says the file has none: drop --columns to read the file's own header")


def read_items_file(table: Table, log: RejectLog, template: str | None,
                    rejected: dict[str, str] | None = None) -> tuple[dict[str, list[str]], set[str]]:
    """Read the catalogue: columns item_id, text (or the template), category, subcategory, extras.

    :param rejected: filled with the ids of the items whose rows were rejected (never kept), each with where and
        why (``line 19: empty text ...``): their events are then rejected saying so, not as unknown to the file.
    """
    rejected = rejected if rejected is not None else {}
    name = table.source.name
    known = table.known_names()
    if known is not None:
        if "item_id" not in known:
            hint = ""
            if table.header_found is not None and any(looks_like_data(n) for n in table.header_found):
                hint = " (its first line looks like data: if the items file has no header, name its columns with --items-columns)"
            raise DataError(f"{name}: no item_id column (columns: {', '.join(known)}){hint}{_separator_hint(known)}; expected "
                            "item_id,text,category,subcategory (rename with --map item_id=OLD)")
        if template is None and "text" not in known:
            raise DataError(f"{name}: no text column (columns: {', '.join(known)}); rename one with --map text=OLD or build it with --item-text")
        _check_template_fields(template, known, name)
    rows: dict[str, list[str]] = {"item_id": [], "text": [], "category": [], "subcategory": []}
    first: dict[str, int] = {}
    stats = log.stats(name)
    for lineno, raw, row in table_rows(table, log):
        item = cell_text(row.get("item_id"))
        if not item:
            log.reject(name, lineno, "missing item_id: expected an item id", raw)
            continue
        if (reason := typed_id_reason(row.get("item_id"), "item_id") or id_reason(item, "item_id")) is not None:
            log.reject(name, lineno, reason, raw)
            continue
        if item in first:
            log.reject(name, lineno, f"duplicate item id: {item} (first at line {first[item]})", raw)
            continue
        if (reason := attribute_reason(row)) is not None:
            log.reject(name, lineno, reason, raw)
            rejected.setdefault(item, f"line {lineno}: {reason}")
            continue
        text = _render(template, row) if template else cell_text(row.get("text")).strip()
        if not text:
            why = f"empty text: item {item} has no text" + (f" from --item-text {template!r}" if template else "") + "; expected text"
            log.reject(name, lineno, why, raw)
            rejected.setdefault(item, f"line {lineno}: {why}")
            continue
        first[item] = lineno
        stats.kept += 1
        n = len(rows["item_id"])
        values = {"item_id": item, "text": text, "category": cell_text(row.get("category")), "subcategory": cell_text(row.get("subcategory"))}
        for key, value in row.items():
            if key not in values:
                values[key] = cell_text(value)
                if key not in rows:
                    rows[key] = [""] * n
        for key, column in rows.items():
            column.append(values.get(key, ""))
    if not rows["item_id"]:
        raise log.nothing_valid(name, "item rows with an item_id and a text")
    for item in first:  # rejected at one row, kept at a later one: known
        rejected.pop(item, None)
    return rows, set(first)


# ------------------------------------------------------------------------------------------- events
class _ItemsFromEvents:
    """The catalogue of a log without an items file: one item per id, from its first row."""

    def __init__(self, template: str | None) -> None:
        self.template = template
        self.rows: dict[str, list[str]] = {"item_id": [], "text": [], "category": [], "subcategory": []}
        self.index: dict[str, int] = {}
        self.line: dict[str, int] = {}
        self.conflicts: dict[str, int] = {}  # item -> rows whose category differs from the first row's
        self.first_conflict: str | None = None

    def add(self, item: str, row: dict[str, Any], lineno: int) -> str | None:
        """Record the item of a valid event row; return a reject reason if its first row has no text (or a category
        that is no text)."""
        if (reason := attribute_reason(row)) is not None:
            return reason
        category = cell_text(row.get("category"))
        index = self.index.get(item)
        if index is not None:
            known = self.rows["category"][index]
            if category and category != known:
                # A shop may move an item: keep the first category, count the disagreement.
                self.conflicts[item] = self.conflicts.get(item, 0) + 1
                if self.first_conflict is None:
                    self.first_conflict = f"item {item}: category {known!r} at line {self.line[item]}, {category!r} at line {lineno}"
            return None
        text = _render(self.template, row) if self.template else cell_text(row.get("text"))
        if not text:
            source = f"text from --item-text {self.template!r}" if self.template else "text"
            return f"empty item text: first row of item {item!r} has no {source}; expected text"
        self.index[item] = len(self.rows["item_id"])
        self.line[item] = lineno
        for key, value in (("item_id", item), ("text", text), ("category", category), ("subcategory", cell_text(row.get("subcategory")))):
            self.rows[key].append(value)
        return None

    def note(self, log: RejectLog, name: str) -> None:
        if self.conflicts:
            n_items, n_rows = len(self.conflicts), sum(self.conflicts.values())
            log.note(f"{name}: {n_items:,} item{'s' if n_items > 1 else ''} changed category between rows ({n_rows:,} "
                     f"row{'s' if n_rows > 1 else ''} disagreeing with the item's first row; first category kept), e.g. {self.first_conflict}")


def _reserved_clash(name: str, column: str, where: str) -> DataError:
    return DataError(f"{where}: {name} {column!r} clashes with a column interestgym computes ({', '.join(RESERVED)}); "
                     f"rename it with --map NEW={column} or leave it out with --context")


def _separator_hint(names: list[str]) -> str:
    """For a header read as one column that holds another separator (``user_id;item_id;ts``, or ``user_id,item_id,ts``
    read with ``--delimiter ';'``): what to do."""
    if len(names) != 1:
        return ""
    for sep, label, shown in ((";", "semicolons", ";"), ("|", "pipes", "|"), (",", "commas", ","), ("\t", "tabs", "\\t")):
        if names[0].count(sep) >= 2:
            return f" (the header is one column holding {label}: give --delimiter '{shown}')"
    return ""


def _columns_hint(table: Table, columns: list[str] | None) -> str:
    """For ``--columns`` that name another number of fields than the file's first line has (e.g. a file with a
    header, given names for fewer columns): what was found, and what to do."""
    if columns is None or table.header_found is not None or table.fmt not in ("csv", "tsv"):
        return ""
    try:
        found = first_line(table.source)
    except DataError:  # line 1 not UTF-8: a data row (its own reject), not a header to hint at
        return ""
    if found is None:
        return ""
    text, lineno = found
    try:
        fields = table.split_line(text)
    except csv.Error:
        return ""
    if len(fields) == len(columns):
        return ""
    header = not any(looks_like_data(f.strip()) for f in fields)
    return (f" (--columns names {len(columns)} column{'s' * (len(columns) != 1)} but line {lineno} has {len(fields)} "
            f"field{'s' * (len(fields) != 1)}: {text[:200]!r}" + ("; it looks like a header: leave out --columns to read the "
                                                                  "names from it" if header else "; name every field, '-' for one to skip") + ")")


def _delimited(path: Path, delimiter: str, has_header: bool) -> bool:
    """Whether ``--delimiter`` applies to the items file too: its header holds that separator (an items file of
    its own format, a ``.tsv`` beside a ``;`` log, keeps it; JSONL, Parquet and a headerless file never take it:
    a headerless file's first line is data, whose text may hold the separator)."""
    from interestgym.data.readers import Source, first_line
    from interestgym.data.tables import detect_format

    if not has_header or not path.is_file():
        return False  # (open_table says it is missing)
    source = Source(path)
    try:
        if detect_format(source, None) in ("jsonl", "parquet"):
            return False
    except DataError:
        pass  # no comma or tab on its first line: it may use the separator given
    found = first_line(source)
    return found is not None and delimiter in found[0]


def _check_before_reading(opts: EventsOptions, events_table: Table, items_table: Table | None) -> None:
    """Fail fast on what the header (or schema) already shows: required columns, options that name columns."""
    for source_name, canonical in opts.actions.items():
        if canonical not in ACTIONS:
            raise DataError(f"--actions {source_name}={canonical}: {canonical!r} is not an action; expected one of {', '.join(ACTIONS)}")
    if opts.default_action is not None and opts.default_action not in ACTIONS:
        raise DataError(f"--default-action {opts.default_action!r}: expected one of {', '.join(ACTIONS)}")
    name = events_table.source.name
    names = events_table.known_names()
    if names is not None:  # CSV / TSV / Parquet; JSONL rows are checked as they come
        for required in ("user_id", "item_id", "ts"):
            if required not in names:
                hint = ""
                if events_table.header_found is not None and opts.columns is None and any(looks_like_data(n) for n in events_table.header_found):
                    hint = " (its first line looks like data: if the file has no header, name its columns with --columns)"
                hint += _separator_hint(names) + _columns_hint(events_table, opts.columns)
                raise DataError(f"{name}: no {required} column (columns: {', '.join(names)}){hint}; name it with --columns or "
                                f"rename one with --map {required}=OLD; expected a column named {expected_names(required)}")
        if "action" not in names and opts.default_action is None:
            raise DataError(f"{name}: no action column (columns: {', '.join(names)}; expected a column named {expected_names('action')})"
                            f"{_columns_hint(events_table, opts.columns)}; rename one with --map action=OLD or give --default-action "
                            "(e.g. click)")
        clash = [n for n in names if n in RESERVED and (opts.context is None or n in opts.context)]
        if clash:
            raise _reserved_clash("column", clash[0], name)
        if opts.context is not None:
            missing = [c for c in opts.context if c and c not in names]
            if missing:
                raise DataError(f"--context {','.join(opts.context)}: no column {', '.join(missing)} in {name}; columns: {', '.join(names)}")
        if items_table is None:
            if opts.item_text is None and "text" not in names:
                raise DataError(
                    f"{name}: no item text: the events have no text column and there is no items file; give --items FILE "
                    "with a text column, rename a column with --map text=OLD, or build text with --item-text (e.g. 'category {category}')"
                )
            _check_template_fields(opts.item_text, names, name)
    tables = [events_table] + ([items_table] if items_table else [])
    if all(t.fmt != "jsonl" for t in tables):
        check_rename(opts.rename, tables)


#: Why a rating without a value is refused (its value is the rating): the cell is empty, or the file has no value column.
MISSING_RATING = "missing value: a rate event needs its rating; expected a number"
MISSING_RATING_COLUMN = ("missing value: a rate event needs its rating, and the row has no value field (--map value=COLUMN "
                         "names a column of another name); expected a number")


def missing_rating(has_value_field: bool) -> str:
    """Why a rating without a value is rejected: its cell is empty, or the row has no value field at all."""
    return MISSING_RATING if has_value_field else MISSING_RATING_COLUMN


def no_value(cell: Any) -> bool:
    """A value cell with nothing in it (no ``value`` column or key, an empty cell, JSON null): no value given."""
    return cell is None or (isinstance(cell, str) and not cell.strip())


def typed_id_reason(value: Any, field: str) -> str | None:
    """Why an id cell of a typed format (JSON Lines, Parquet) is not an id, else None: an id is text or a whole number.
    A boolean, a list or an object would become a user or an item named ``True`` or ``["u1"]``; a float left after
    :func:`~interestgym.data.tables.cell` (which makes a whole float below 2^53 an int) has a fraction, or is so large
    that its digits were lost (1e20)."""
    if isinstance(value, (bool, list, dict)):
        kind = "a boolean" if isinstance(value, bool) else f"a JSON {'array' if isinstance(value, list) else 'object'}"
        found = f"{json_shown(value)} ({kind})"
    elif isinstance(value, float):
        found = f"{value!r} (a number with a fraction, or past 2^53 where a float has lost digits)"
    else:
        return None
    return f"bad {field}: {found}; expected text or a whole number"


def _parse_value(row: dict[str, Any], action: str | None = None) -> tuple[float, str | None]:
    """(the row's value, None) or (nan, the reject reason). No value is 1.0 (a click, a view...), except for a
    rating, whose value is the rating: refused (``action`` = the row's canonical action, when known)."""
    cell = row.get("value")
    if no_value(cell):
        if action != RATING_ACTION:
            return 1.0, None
        return math.nan, missing_rating("value" in row)
    try:
        value = math.nan if isinstance(cell, bool) else float(cell)  # JSON true is no number (float(True) is 1.0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer past float's range
        value = math.nan
    if not math.isfinite(value):
        shown = f"{json_shown(cell)} (a boolean)" if isinstance(cell, bool) else repr(cell)
        return value, f"bad value: {shown}; expected a finite number"
    if abs(value) > VALUE_MAX:
        return value, f"bad value: {cell!r}; expected a number within float32's range (|value| <= {VALUE_MAX:.4g})"
    return value, None


class _RowChecker:
    """The checks of one event row, in order, and what a valid row adds (the ``prepare events`` row loop).

    The line reader calls :meth:`check` for every row; the columnar reader
    (:mod:`interestgym.data.fast_events`) does the same checks on whole columns and calls it only for the
    rows of the chunks it hands back to the line reader, so both share this state.
    """

    def __init__(self, opts: EventsOptions, times: TimeParser, name: str, log: RejectLog,
                 catalogue: dict[str, list[str]] | None, known_items: set[str], built: _ItemsFromEvents,
                 items_table: Table | None) -> None:
        self.opts, self.times, self.name, self.log = opts, times, name, log
        self.catalogue, self.known_items, self.built, self.items_table = catalogue, known_items, built, items_table
        self.context_filter = None if opts.context is None else {c for c in opts.context if c}
        self.not_context = set(EVENT_FIELDS) | set(ITEM_FIELDS)
        self.accepted = accepted_actions(opts.actions)
        self.events: Any = EventTable()
        self.stats = log.stats(name)
        self.seen_keys: set[str] = set()
        #: Rows with a value column or key but nothing in it, read as 1.0 (counted at the value check).
        self.empty_values = 0
        #: Rows with a value below 0, kept as given (counted at the value check, like empty_values).
        self.negative_values = 0
        #: Items whose rows the items file rejected: where and why (see :func:`read_items_file`).
        self.rejected_items: dict[str, str] = {}

    def check(self, lineno: int, raw: str, row: dict[str, Any]) -> None:
        """Keep the row or reject it with the first failing check's reason."""
        log, name = self.log, self.name
        self.seen_keys.update(row)
        user, item = cell_text(row.get("user_id")), cell_text(row.get("item_id"))
        ts, reason = None, None
        if not user:
            reason = "missing user_id: expected a user id"
        elif not item:
            reason = "missing item_id: expected an item id"
        else:
            reason = (typed_id_reason(row.get("user_id"), "user_id") or typed_id_reason(row.get("item_id"), "item_id")
                      or id_reason(user, "user_id") or id_reason(item, "item_id"))
            if reason is None:
                ts, reason = self.times.parse(row.get("ts"))
        if reason is None:
            reason, action = self.action_of(row.get("action"))
        if reason is None:
            value, reason = _parse_value(row, action)
            if reason is None and "value" in row and no_value(row["value"]):
                self.empty_values += 1  # the file has values, but not on this row: 1.0, and said in a note
            elif reason is None and value < 0:
                self.negative_values += 1  # kept as given, and said in a note
        if reason is None:
            if self.catalogue is not None:
                if item not in self.known_items:
                    reason = self.unknown_item(item)
            else:
                reason = self.built.add(item, row, lineno)
        if reason is not None:
            log.reject(name, lineno, reason, raw)
            return
        context = {k: cell_text(v) for k, v in row.items() if k not in self.not_context and (self.context_filter is None or k in self.context_filter)}
        clash = [k for k in context if k in RESERVED]
        if clash:  # only JSONL gets here: the other formats' columns were checked before reading
            raise _reserved_clash("field", clash[0], f"{name} line {lineno}")
        self.stats.kept += 1
        self.events.add(user, ts, item, action, value, lineno, **context)  # type: ignore[arg-type]

    def unknown_item(self, item: str) -> str:
        """Why an event of an item the items file does not hold is rejected (the file rejected its row, or has none)."""
        where = self.items_table.source.name  # type: ignore[union-attr]
        if item in self.rejected_items:
            return f"unknown item: {item!r} was rejected in the items file {where} ({self.rejected_items[item]})"
        return f"unknown item: {item!r} is not in the items file {where}"

    def action_of(self, cell_value: Any) -> tuple[str | None, str | None]:
        """(reject reason, canonical action) of an action cell."""
        opts = self.opts
        action_text = cell_text(cell_value)
        if not action_text:
            if opts.default_action is None:
                return f"missing action: expected one of {self.accepted}", None
            return None, opts.default_action
        action = opts.actions.get(action_text, action_text)
        if action not in ACTIONS:
            return f"unknown action: {action_text!r}; expected one of {self.accepted} (map names with --actions NAME=ACTION)", None
        return None, action


def read_events(path: str | Path, log: RejectLog, options: EventsOptions | None = None) -> ReaderOutput:
    """Read a generic event log (and optional items file) into the canonical tables.

    Checks run in this order, the first failing one is the row's reject reason: field count (CSV /
    TSV), user_id, item_id, ts, action, value, item (known in the items file, or text for a new one).
    """
    opts = options or EventsOptions()
    if opts.reader not in ("auto", "lines", "columnar"):
        raise DataError(f"--reader {opts.reader!r}: expected auto, lines or columnar")
    if opts.item_text is not None:
        _template_fields(opts.item_text)
    times = TimeParser(opts.time_format)
    # --default-action says the log has no action column: then no column is taken for one.
    required = ("user_id", "item_id", "ts") + (("action",) if opts.default_action is None else ())
    events_table = open_table(Path(path), "events", opts.input_format, opts.columns, opts.header, opts.rename, alias_fields=required + OPTIONAL_ALIAS_FIELDS,
                              delimiter=opts.delimiter)
    items_table = (open_table(Path(opts.items), "items", None, opts.items_columns, None, opts.rename, alias_fields=ITEM_FILE_FIELDS,
                              delimiter=opts.delimiter if opts.delimiter and _delimited(Path(opts.items), opts.delimiter,
                                                                                        opts.items_columns is None) else None)
                   if opts.items else None)
    tables = [events_table] + ([items_table] if items_table else [])
    _check_before_reading(opts, events_table, items_table)
    for table in tables:  # before reading, whichever reader reads them (the notes come out the same)
        if table.fmt != "parquet":
            note_unterminated(table.source, log)
    name = events_table.source.name

    catalogue: dict[str, list[str]] | None = None
    known_items: set[str] = set()
    rejected_items: dict[str, str] = {}
    if items_table is not None:
        catalogue, known_items = read_items_file(items_table, log, opts.item_text, rejected_items)
    built = _ItemsFromEvents(opts.item_text)

    rows = _RowChecker(opts, times, name, log, catalogue, known_items, built, items_table)
    rows.rejected_items = rejected_items
    from interestgym.data.fast_events import columnar_rows

    if not (opts.reader != "lines" and columnar_rows(events_table, log, rows, force=opts.reader == "columnar")):
        for lineno, raw, row in table_rows(events_table, log):
            rows.check(lineno, raw, row)
    events, stats, seen_keys = rows.events, rows.stats, rows.seen_keys

    if events_table.fmt == "jsonl" and seen_keys:
        _check_jsonl_fields(events_table, seen_keys, required)
    if stats.kept == 0:
        raise log.nothing_valid(name, "events with user_id, item_id, ts" + (", action" if opts.default_action is None else ""))
    if any(t.fmt == "jsonl" for t in tables):  # JSONL: check against the keys the rows held
        check_rename(opts.rename, tables)
        if catalogue is None and opts.item_text is None and "text" not in seen_keys:
            raise DataError(f"{name}: no item text: the events have no text field and there is no items file; give --items FILE, "
                            "--map text=OLD, or --item-text (e.g. 'category {category}')")

    if catalogue is not None:
        items = catalogue
        ignored = [c for c in ITEM_FIELDS if c in seen_keys]
        if ignored:
            log.note(f"{name}: event column(s) {', '.join(ignored)} not used: items come from {items_table.source.name}")  # type: ignore[union-attr]
    else:
        items = built.rows
        built.note(log, name)
    for table in tables:
        if (note := table.alias_note()) is not None:
            log.note(note)
    if times.fmt == "auto" and times.counts:
        log.note(f"{name}: times auto-detected per value: {times.describe()} (rows whose time was read, rows rejected "
                 "later for another reason included)")
    header_note = _header_as_data_note(events_table, log, opts)
    if header_note:
        log.note(header_note)
    if rows.empty_values:
        log.note(f"{name}: {rows.empty_values:,} row{'s' if rows.empty_values != 1 else ''} with an empty value (an empty cell or "
                 "null) read as 1.0, the value of an event without one (a rating without a value is rejected; rows rejected "
                 "later for another reason included)")
    if rows.negative_values:
        n = rows.negative_values
        log.note(f"{name}: {n:,} row{'s' if n != 1 else ''} with a value below 0, kept as given: the agent's feedback_value "
                 "observation reads values as ratings, quantities or read fractions and takes one below 0 as 0 (rows rejected "
                 "later for another reason included)")
    if times.floored:
        log.note(f"{name}: {times.floored:,} time{'s' if times.floored != 1 else ''} read had a fraction of a second (on kept rows and on rows "
                 "rejected later for another reason): the dataset keeps the whole second below (the "
                 "dataset's unit; events within one second keep their order in the file)")

    reader: dict[str, Any] = {
        "input_format": events_table.fmt,
        "header": events_table.header_found if events_table.fmt in ("csv", "tsv") else None,
        "columns": events_table.names,
        "rename": [f"{new}={old}" for old, new in opts.rename.items()],
        "actions": dict(opts.actions),
        "default_action": opts.default_action,
        **({"delimiter": {"events": events_table.delimiter, "items": items_table.delimiter if items_table is not None and
                          items_table.fmt in ("csv", "tsv") else None}} if opts.delimiter else {}),
        "time_format": times.detected or opts.time_format,  # "auto" when the log mixes formats
        "times_read_as": dict(times.counts),
        "common_names": {t.what: dict(t.aliases) for t in tables if t.aliases},
        "items_file": str(opts.items) if opts.items else None,
        "item_text": opts.item_text or ("text column of the items file" if catalogue is not None else "text column of the events"),
        "context_columns": sorted(events.context),
    }
    counts: dict[str, Any] = {"items_changing_category": len(built.conflicts),
                              "rows_disagreeing_with_item_category": sum(built.conflicts.values())}
    files = [t.source.path for t in tables]
    events_frame = events.frame()
    note = _values_past_scale_note(events_frame, name)
    if note:
        log.note(note)
    shown = int((events_frame["action"] == "impression").sum())
    if shown:  # kept, weight 0: context for the observation, never a scoring point of a generic log
        log.note(f"{name}: {shown:,} impression event{'s' if shown != 1 else ''} kept as events of weight 0 (what was shown, "
                 "not engaged with): a generic log's impressions are not ranked as scoring points (logged impressions are "
                 "MIND's and the synthetic data's); evaluation ranks each next positive among sampled negatives")
    frame = items_frame(items)
    note = _float_looking_ids_note(frame["item_id"], (items_table or events_table).source.name)
    if note:
        log.note(note)
    replaced = frame["text"].str.contains("\ufffd", regex=False)
    if replaced.any():  # text that went through a decoder with errors="replace" before it reached this file
        first = frame.loc[replaced.idxmax()]
        log.note(f"{(items_table or events_table).source.name}: {int(replaced.sum()):,} item text(s) hold U+FFFD, the replacement "
                 f"character (text decoded with errors before it reached this file; e.g. item {first['item_id']}: "
                 f"{str(first['text'])[:40]!r}): the encoder reads them as they are")
    if catalogue is None:
        # items built from the events (the notes above name them in file order): in item-id order, not in the order
        # of their first rows, so that the catalogue's rows (the negatives a seed draws, a fitted encoder's input) do
        # not depend on which user's row came first
        # (code_point_order: the order of sort_values on the ids, at a third of its cost on a log's short ids)
        import pyarrow as pa

        from interestgym.data.fast_lines import code_point_order

        frame = frame.take(code_point_order(pa.array(frame["item_id"], pa.large_string()))).reset_index(drop=True)
    return ReaderOutput(items=frame, events=events_frame, source_files=files, counts=counts, reader=reader,
                        time_offsets=dict(sorted(times.offsets.items())))


def _values_past_scale_note(events: Any, name: str) -> str | None:
    """A note when kept events have values past the scale the agent reads them on: its
    ``feedback_value`` observation, and with it ``bayesian_category``'s value gain, is ``clip(value / 5, 0, 1)`` (a
    rating's scale; a read fraction or a quantity fits), so a dwell time in seconds or a price is 1 for nearly every
    event and its differences are lost."""
    from interestgym.core.features import VALUE_SCALE

    values = events["value"].to_numpy()  # a rating on a 1-10 scale is squashed alike
    n = int((values > VALUE_SCALE).sum())
    if not n:
        return None
    return (f"{name}: {n:,} of {len(values):,} events have a value above {VALUE_SCALE:g} (largest "
            f"{float(values.max()):g}): the agent reads value / {VALUE_SCALE:g} clipped to 1 (a rating's scale; a read fraction "
            "or a quantity fits), so those are all 1 to it and to bayesian_category's value gain; for seconds or money, "
            "write the column on that scale (e.g. minutes, a read fraction, a price band) in the log and in what you serve")


def _float_looking_ids_note(item_ids: Any, name: str) -> str | None:
    """A note when item ids read as text look like whole numbers written as floats (``2268318.0``, as a float column
    exported to CSV writes them): they are kept as written, so ``2268318.0`` and ``2268318`` are two items, and an
    items file or another export that writes ``2268318`` does not match them (a typed format's 2268318.0 is read as
    2268318)."""
    looks = item_ids.astype(str).str.fullmatch(r"-?\d+\.0+")
    n = int(looks.sum())
    if not n:
        return None
    first = str(item_ids[looks].iloc[0])
    return (f"{name}: {n:,} item id{'s' if n != 1 else ''} look like whole numbers written as floats (e.g. {first!r}), kept as "
            f"written: {first!r} and {first.split('.')[0]!r} would be two items; if the ids came from a float column, write "
            "them as integers")


def _check_jsonl_fields(table: Table, seen_keys: set[str], required: tuple[str, ...]) -> None:
    """One clear error for a JSONL log in which no row holds a required field.

    Each row was rejected for it already; a field missing from *every* row is a mapping problem,
    better said once than a thousand times.
    """
    missing = [f for f in required if f not in seen_keys]
    if missing:
        expected = "; and ".join(expected_names(f) for f in missing)
        raise DataError(f"{table.source.name}: no {', '.join(missing)} field in any row (fields found: "
                        f"{', '.join(sorted(table.base_names))}); expected {expected}; rename one with --map {missing[0]}=OLD"
                        + ("" if "action" not in missing else " or give --default-action (e.g. click)"))


def _zoned_times_note(offsets: dict[int, int], name: str, tz_offset_hours: float) -> str | None:
    """A note when the times carried UTC offsets that --tz-offset does not match: the dataset keeps UTC seconds (right
    either way), but its hour and weekday, which the time-of-day rules and the agent read, are at --tz-offset."""
    other = {o: n for o, n in offsets.items() if o != round(tz_offset_hours * 3600)}
    if not other:
        return None

    def hours(seconds: int) -> str:
        return f"{seconds / 3600:+g}"

    seen = ", ".join(f"{hours(o)} h on {n:,}" for o, n in sorted(other.items(), key=lambda e: -e[1]))
    common = max(offsets, key=offsets.get)  # type: ignore[arg-type]
    return (f"{name}: {sum(other.values()):,} of {sum(offsets.values()):,} times with a UTC offset carry one other than "
            f"--tz-offset {tz_offset_hours:g} ({seen}): they are read right (UTC), but the hour and weekday (the time-of-day "
            f"rules and features) are at --tz-offset {tz_offset_hours:g}"
            + (f"; for the users' local clock pass --tz-offset {common / 3600:g}" if common in other else "")
            + " (times read on rows rejected later for another reason included)")


def prepare_events(
    path: str | Path,
    out: str | Path,
    *,
    options: EventsOptions | None = None,
    split: SplitSpec | None = None,
    max_reject_rate: float | None = None,
    command: list[str] | None = None,
    tz_offset_hours: float = 0.0,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Read a generic event log and write the canonical dataset to ``out``; return the manifest."""
    log = RejectLog()
    data = read_events(path, log, options)
    note = _zoned_times_note(data.time_offsets, str(path), tz_offset_hours)
    if note:
        log.note(note)
    return write_reader_output(
        out, "events", data, log, split=split, max_reject_rate=max_reject_rate, command=command,
        tz_offset_hours=tz_offset_hours, deterministic=deterministic,
    )

