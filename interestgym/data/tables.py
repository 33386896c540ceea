"""Opening an event log or items file: its format, its column names, and its rows as dicts.

:func:`open_table` detects a file's format (CSV, TSV, JSONL, Parquet; from ``--input-format``, the
extension or the content), reads its header or schema, applies ``--map`` renames and then the
common column names of :mod:`interestgym.data.columns` (``timestamp`` -> ``ts`` ...). :func:`table_rows`
yields every row worth validating as ``(line, raw text, {column: cell})`` and accounts for the
others (blank, duplicate, wrong field count, invalid JSON) in the :class:`RejectLog`. What the
columns *mean* is the business of :mod:`interestgym.data.events`.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interestgym.data.columns import alias_note, resolve_aliases
from interestgym.data.readers import (
    Source,
    delimited_records,
    excerpt,
    first_line,
    line_digest,
    raw_lines,
    require_file,
    split_csv_line,
    text_lines,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

INPUT_FORMATS = ("csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
               ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_BATCH = 65536


def detect_format(source: Source, given: str | None) -> str:
    """The file's format: ``given``, else its extension, else a look at its first bytes."""
    if given:
        if given not in INPUT_FORMATS:
            raise DataError(f"--input-format {given!r}: expected one of {', '.join(INPUT_FORMATS)}")
        return given
    path = source.path
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    with open(path, "rb") as fh:
        if fh.read(4) == b"PAR1":
            return "parquet"
    found = first_line(source)
    if found is None:
        raise DataError(f"{source.name}: empty file; expected events, one per line")
    text = found[0].lstrip()
    if text.startswith("{"):
        return "jsonl"
    if "\t" in text:
        return "tsv"
    if "," in text:
        return "csv"
    raise DataError(f"{source.name}: cannot tell the format from the extension or the first line; give --input-format (one of {', '.join(INPUT_FORMATS)})")


@dataclass
class Table:
    """One input file, its format and the (renamed) names of its columns."""

    source: Source
    fmt: str
    what: str                          # "events" or "items", for messages
    names: list[str | None] | None     # CSV/TSV/Parquet: renamed column names in order (None = skipped)
    skip: int = 0                      # header lines
    rename_old_to_new: dict[str, str] = field(default_factory=dict)
    header_found: list[str] | None = None  # the header line's names (CSV/TSV) or the schema's (Parquet)
    base_names: set[str] = field(default_factory=set)  # names before renaming; JSONL: keys seen so far
    #: Canonical fields that may be found under a common name (``timestamp`` for ``ts``).
    alias_fields: tuple[str, ...] = ()
    #: Columns taken by their common name: name (after --map) -> canonical field. JSONL: decided
    #: on the first object row.
    aliases: dict[str, str] = field(default_factory=dict)
    #: The field separator a user gave (``--delimiter``); None: the format's (comma for CSV, tab for TSV).
    sep: str | None = None
    #: Why the columnar reader left this file to the line reader (its progress line says it), else None.
    row_by_row: str | None = None

    @property
    def progress_desc(self) -> str:
        """The line reader's progress line's name for this file: its name, and why it is read row by row."""
        return self.source.basename + (f" (row by row: {self.row_by_row})" if self.row_by_row else "")

    def alias_note(self) -> str | None:
        """The validation note naming the columns taken by a common name, if any."""
        return alias_note(self.source.name, self.aliases) if self.aliases else None

    @property
    def delimiter(self) -> str:
        if self.sep is not None:
            return self.sep
        return "\t" if self.fmt == "tsv" else ","

    def split_line(self, text: str) -> list[str]:
        """One line of this delimited file split into its fields (CSV: quotes allowed; :class:`csv.Error` if malformed)."""
        return split_csv_line(text, self.delimiter) if self.fmt == "csv" else text.split(self.delimiter)

    def known_names(self) -> list[str] | None:
        return [n for n in self.names if n] if self.names is not None else None


def _check_names(names: list[str], source: Source, where: str, fix: str = "rename with --map NEW=OLD") -> None:
    """Each column name once (``-``, a skipped column, may repeat); ``fix``: how to mend it where the names came from."""
    seen: set[str] = set()
    for n in names:
        if n in seen and n != "-":
            raise DataError(f"{source.name}: column {n!r} appears twice in the {where}; expected distinct names ({fix})")
        seen.add(n)


def check_delimiter(delimiter: str | None) -> None:
    """``--delimiter``: None, a tab, or one printable ASCII character that is not a letter, digit, quote or
    space (Arrow's parser, which the columnar reader uses, takes ASCII separators only)."""
    if delimiter is None or delimiter == "\t":
        return
    if not isinstance(delimiter, str) or len(delimiter) != 1 or not (33 <= ord(delimiter) <= 126) or delimiter.isalnum() \
            or delimiter in "\"'":
        raise DataError(f"--delimiter {delimiter!r}: expected one ASCII character that separates fields, such as ';', '|' or "
                        "'\\t' (not a letter, digit, quote, space or newline)")


def open_table(path: Path, what: str, fmt: str | None, columns: list[str] | None, header: bool | None,
               rename: dict[str, str], alias_fields: Iterable[str] = (), delimiter: str | None = None) -> Table:
    """Open an events or items file: detect its format and resolve its column names.

    ``alias_fields`` are the canonical fields that, when no column has their name, may be found
    under a common name (:func:`~interestgym.data.columns.resolve_aliases`). ``delimiter`` (``--delimiter``)
    separates the fields of a delimited file: with a tab it is read as TSV, with any other character as
    CSV (quotes allowed) on that separator.
    """
    require_file(path, f"an {what} file (CSV, TSV, JSONL or Parquet)" if what == "items" else "an events file (CSV, TSV, JSONL or Parquet)")
    check_delimiter(delimiter)
    source = Source(path)
    if delimiter is None:
        fmt = detect_format(source, fmt)
    else:
        try:
            found = detect_format(source, fmt)
        except DataError:
            if fmt:
                raise  # an --input-format that is none
            found = "csv"  # no comma or tab on its first line: the separator given says it is delimited
        if found not in ("csv", "tsv"):
            raise DataError(f"{source.name}: --delimiter {delimiter!r} given, but the file is {found}; expected a delimited "
                            "(CSV / TSV) file")
        fmt = "tsv" if delimiter == "\t" else "csv"
    old_to_new = dict(rename)
    table = Table(source, fmt, what, names=None, rename_old_to_new=old_to_new, alias_fields=tuple(alias_fields), sep=delimiter)
    if fmt in ("csv", "tsv"):
        has_header = header if header is not None else columns is None
        found_names: list[str] | None = None
        if has_header:
            found = first_line(source)
            if found is None:
                raise DataError(f"{source.name}: empty file; expected a header line and {what}")
            text, lineno = found
            table.skip = lineno
            try:
                found_names = [n.strip() for n in table.split_line(text)]
            except csv.Error as exc:
                raise DataError(f"{source.name} line {lineno}: header {excerpt(text)} cannot be parsed ({exc})") from None
            table.header_found = found_names
        if columns is not None:
            if found_names is not None and len(columns) != len(found_names):
                raise DataError(f"{source.name}: --{'items-' if what == 'items' else ''}columns names {len(columns)} columns but the header has {len(found_names)}: {','.join(found_names)}")
            base = list(columns)
        elif found_names is not None:
            base = found_names
        else:
            raise DataError(f"{source.name}: no header (--no-header) and no column names; name the columns with --{'items-' if what == 'items' else ''}columns, e.g. user_id,item_id,action,ts")
        option = f"--{'items-' if what == 'items' else ''}columns"
        if columns is not None:
            fix = f"'-' skips a column: {option} a,b,-"
        elif any(looks_like_data(n) for n in base):  # a headerless file's first row, whose values repeat
            fix = f"its first line looks like data: if the file has no header, name its columns with {option}"
        elif what == "items":  # --map cannot tell two columns of one name apart, and the items file has no --header
            fix = "--map cannot tell two columns of one name apart: rename one in the file's header"
        else:
            fix = ("--map cannot tell two columns of one name apart: name the columns yourself with --header --columns NAMES "
                   "(the header line is skipped; '-' skips a column)")
        _check_names(base, source, "header" if columns is None else "--columns names", fix)
        table.base_names = set(base) - {"-"}
        names = [None if n == "-" else old_to_new.get(n, n) for n in base]
        _check_names([n for n in names if n], source, "renamed columns")
        table.names = _apply_aliases(table, names)
    elif fmt == "parquet":
        if columns is not None:
            raise DataError(f"{source.name}: --{'items-' if what == 'items' else ''}columns is for headerless CSV/TSV files; a Parquet file names its columns (rename with --map NEW=OLD)")
        try:
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid / ArrowIOError derive from these
            raise DataError(f"{source.name}: cannot be read as Parquet ({exc})") from None
        names = [old_to_new.get(n, n) for n in schema.names]
        _check_names(names, source, "renamed columns")
        table.header_found = list(schema.names)
        table.base_names = set(schema.names)
        table.names = _apply_aliases(table, names)
    else:  # jsonl: keys are known row by row
        found = first_line(source)
        if found is not None and found[0].lstrip().startswith("["):
            raise DataError(f"{source.name} line {found[1]}: a JSON array; expected JSON Lines, one object per line "
                            "(convert it with `jq -c '.[]'`)")
        if columns is not None:
            raise DataError(f"{source.name}: --{'items-' if what == 'items' else ''}columns is for headerless CSV/TSV files; JSONL rows name their fields (rename with --map NEW=OLD)")
    return table


def _apply_aliases(table: Table, names: list[str | None]) -> list[str | None]:
    """``names`` with the columns found under a common name renamed to their canonical field."""
    known = [n for n in names if n]
    table.aliases = resolve_aliases(known, table.source.name, table.alias_fields, fixed=table.rename_old_to_new.values())
    return [table.aliases.get(n, n) if n else n for n in names]


def looks_like_data(name: str) -> bool:
    """A header name that is a number is most likely the first data row of a headerless file."""
    try:
        float(name)
    except ValueError:
        return False
    return True


#: What :func:`cell` strips from a string's ends: Python's whitespace but the control characters among it (vertical
#: tab, form feed, the information separators U+001C-U+001F, U+0085), which stay to be refused where a control character
#: is (an id: ``bad user_id``), not stripped away (``'a\x1f'`` was read as the item ``'a'``). Tab, CR and LF are stripped.
#: (Written out: deriving it from str.isspace over every code point cost 40 ms at each import; a test derives it.)
CELL_STRIP = "\t\n\r \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"


def cell(value: Any) -> Any:
    """Normalise a cell: strings stripped (of :data:`CELL_STRIP`), missing (None / NaN) -> None, integral floats -> int."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip(CELL_STRIP)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    return value


def cell_text(value: Any) -> str:
    """A cell as text for ids and context columns (nested JSON stays JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def check_cr_joined(table: Table, lineno: int, text: str) -> None:
    """Refuse a record of the wrong field count that carriage returns alone split into two or more records of the right
    count: lines ended by CR alone (classic Mac OS) among LF ones, read as one line. Counted as one reject it would hide
    every record it joins (50 events once passed as "1 rejected"). Both readers call it on such a record, so both say
    the same. :raises DataError: naming the line and how many records it joins."""
    if "\r" not in text:
        return
    names = table.names
    assert names is not None
    joined = sum(1 for piece in text.split("\r") if piece and len(piece.split(table.delimiter)) == len(names))
    if joined >= 2:
        raise DataError(f"{table.source.name} line {lineno}: {joined:,} records joined by carriage returns (CR) alone (it begins "
                        f"{excerpt(text)}): the file has lines ended by CR alone (classic Mac OS) among its LF line ends; "
                        "expected LF or CRLF line ends (convert it, e.g. `tr '\\r' '\\n' < FILE > NEW`)")


def wrong_field_count(table: Table, found: int) -> str:
    """The reject reason of a CSV / TSV record with ``found`` fields."""
    names = table.names
    assert names is not None
    sep = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}.get(table.delimiter, repr(table.delimiter))
    listed = ", ".join(n_ or "-" for n_ in names)
    return f"wrong field count: expected {len(names)} {sep}-separated fields ({listed}), found {found}"


#: How deep a JSON Lines row may nest. Python's parser stops near 1,000 levels with a RecursionError (a traceback, once),
#: and writing a value back as text (a context cell, a reject's shown value) recurses again from deeper in the stack,
#: so a row a little below that limit parsed but crashed later: every row past this depth is a reject instead.
JSON_DEPTH_MAX = 100
JSON_TOO_DEEP = f"invalid JSON: nested more than {JSON_DEPTH_MAX} levels deep; expected one JSON object per line (of a few levels)"
#: A ``\uD800``-``\uDFFF`` escape: half of a UTF-16 surrogate pair, which a string may hold only as a pair.
_SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json_line(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` for a JSON Lines line that parses, else ``(None, reject reason)``. Both readers parse with it
    (the columnar one calls json's scanner first and comes here for what it does not take), so both say the same."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}; expected one JSON object per line"
    except RecursionError:
        return None, JSON_TOO_DEEP
    except ValueError as exc:  # an integer past the digits Python converts (4,300)
        shown = f"a number of more digits than Python reads ({sys.get_int_max_str_digits():,})" if "digits" in str(exc) else str(exc)
        return None, f"invalid JSON: {shown}; expected one JSON object per line"
    return value, json_value_reason(value, text)


def json_may_be_refused(text: str) -> bool:
    """Whether :func:`json_value_reason` may refuse a line (a backslash, or long enough to nest past the limit): the
    columnar reader asks this first, inline, on every line."""
    return "\\" in text or len(text) > 2 * JSON_DEPTH_MAX


def json_value_reason(value: Any, text: str) -> str | None:
    """Why a parsed line is refused all the same, else None: nested past :data:`JSON_DEPTH_MAX`, or a string holding a
    lone surrogate (``"\\ud800"``: no UTF-8 text can hold it; it crashed the events frame). Only a line with that many
    brackets, or with such an escape, is looked at closely."""
    if not json_may_be_refused(text):
        return None
    if text.count("[") + text.count("{") > JSON_DEPTH_MAX and _json_depth(value) > JSON_DEPTH_MAX:
        return JSON_TOO_DEEP
    if "\\" in text and _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            lone = exc.object[exc.start] if isinstance(exc.object, str) else "?"
            return (f"invalid JSON: a string holds the lone surrogate \\u{ord(lone):04x} (half of a UTF-16 pair); "
                    "expected text that UTF-8 can hold")
    return None


def _json_depth(value: Any) -> int:
    """How many levels of arrays and objects ``value`` nests (a flat object: 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        elif not isinstance(v, list):
            continue
        deepest = max(deepest, d)
        stack.extend((x, d + 1) for x in v if isinstance(x, (list, dict)))
    return deepest


def table_rows(table: Table, log: RejectLog, **chunk: Any) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Yield ``(line, raw, {name: cell})`` for every row worth validating; account for the others.

    ``chunk``: for CSV / TSV, :func:`~interestgym.data.readers.delimited_records`' ``lines``, ``seen`` and
    ``stop_before`` (the columnar reader hands a chunk of lines back to this reader).
    """
    src = table.source
    name = src.name
    if table.fmt in ("csv", "tsv"):
        names = table.names
        assert names is not None
        n = len(names)
        for lineno, text, fields in delimited_records(src, log, delimiter=table.delimiter, quoted=table.fmt == "csv",
                                                      skip_lines=table.skip, **chunk):
            if len(fields) != n:
                check_cr_joined(table, lineno, text)
                log.reject(name, lineno, wrong_field_count(table, len(fields)), text)
                continue
            yield lineno, text, {k: cell(v) for k, v in zip(names, fields) if k}
    elif table.fmt == "jsonl":
        old_to_new = table.rename_old_to_new
        keymap: dict[str, str] = {}  # key in the file -> name after --map and common names
        decided = False
        for lineno, text in text_lines(src, log, lines=raw_lines(src, table.progress_desc)):
            obj, reason = parse_json_line(text)
            if reason is not None:
                log.reject(name, lineno, reason, text)
                continue
            if not isinstance(obj, dict):
                log.reject(name, lineno, f"not a JSON object: found {type(obj).__name__}; expected one JSON object per line", text)
                continue
            if not decided:
                # JSONL has no header: the first object's keys decide which common names stand for
                # which field, for every row (a file keeps its keys).
                decided = True
                table.aliases = resolve_aliases([old_to_new.get(k, k) for k in obj], f"{name} line {lineno}",
                                                table.alias_fields, fixed=old_to_new.values())
            table.base_names.update(obj)
            row = {}
            for k, v in obj.items():
                new = keymap.get(k)
                if new is None:
                    new = old_to_new.get(k, k)
                    new = keymap[k] = table.aliases.get(new, new)
                row[new] = cell(v)
            yield lineno, text, row
    else:
        yield from _parquet_rows(table, log)


def parquet_row_text(names: Sequence[str | None], values: Sequence[Any]) -> str:
    """A Parquet row as text: what a reject shows, and what tells a duplicate row (both Parquet readers use it)."""
    return json.dumps(dict(zip(names, values)), default=str, ensure_ascii=False)


def _parquet_rows(table: Table, log: RejectLog) -> Iterator[tuple[int, str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    from interestgym.progress import progress_bar

    src = table.source
    name = src.name
    stats = log.stats(name)
    names = table.names
    assert names is not None
    seen: set[bytes] = set()
    pf = pq.ParquetFile(src.path)
    lineno = 0
    with progress_bar(total=pf.metadata.num_rows, unit="row", desc=table.progress_desc) as bar:  # a line every 15 s in a log
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
            try:
                columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            except UnicodeDecodeError:
                raise _bad_utf8(table, batch, lineno) from None
            for values in zip(*columns):
                lineno += 1
                stats.read += 1
                raw = parquet_row_text(table.header_found or names, values)
                key = line_digest(raw.encode("utf-8"))
                if key in seen:
                    log.duplicate(name, lineno, raw)
                    continue
                seen.add(key)
                yield lineno, raw, {k: cell(v) for k, v in zip(names, values)}
            bar.update(batch.num_rows)



def _bad_utf8(table: Table, batch: Any, before: int) -> DataError:
    """The error of a Parquet string column holding bytes that are not UTF-8 (a writer that did not check its strings):
    the file is damaged, and no row of it can be read as text."""
    import pyarrow as pa

    def textual(kind: Any) -> bool:
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)

    for i in range(batch.num_columns):
        column = batch.column(i)
        if not textual(column.type):
            continue
        for r in range(len(column)):
            try:
                column[r].as_py()
            except UnicodeDecodeError as exc:
                name = (table.header_found or [])[i] if table.header_found else i
                return DataError(f"{table.source.name} row {before + r + 1}, column {name!r}: a text cell that is not UTF-8 "
                                 f"(byte 0x{exc.object[exc.start]:02x} at position {exc.start + 1}); expected UTF-8 text "
                                 "(the file's writer did not check its strings: rewrite the column as UTF-8)")
    return DataError(f"{table.source.name}: a text column after row {before} is not UTF-8; expected UTF-8 text")


def check_rename(rename: dict[str, str], tables: list[Table]) -> None:
    """Every --map OLD name must be a column of the events or the items file."""
    present: set[str] = set().union(*(t.base_names for t in tables))
    missing = [f"{new}={old}" for old, new in rename.items() if old not in present]
    if missing:
        where = " or ".join(f"{t.source.name} (columns: {', '.join(sorted(t.base_names)) or 'none'})" for t in tables)
        raise DataError(f"--map {','.join(missing)}: no such column in {where}; expected --map NEW=OLD with OLD one of those")


