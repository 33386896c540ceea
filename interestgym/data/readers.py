"""Reading helpers shared by the ``prepare`` readers (MIND, MovieLens, generic event logs).

Every reader walks its files line by line (or record by record) so that each bad row can be reported
with its file and 1-based line number, and every row is accounted for in the
:class:`~interestgym.data.validate.RejectLog`: kept, rejected (with a reason), blank or duplicate.

* :class:`Source` is one file to read: a plain file, a ``.gz`` file, or a member of a ``.zip``.
* :class:`Container` is a folder or a zip archive in which a reader looks for a data set's files.
* :func:`text_lines` yields decoded, non-blank, non-duplicate lines; :func:`delimited_records` adds
  quoted-CSV parsing (multi-line quoted fields included) on top of the same bookkeeping.
* :class:`~interestgym.data.times.TimeParser` (re-exported here with the other time helpers) turns
  unix seconds / milliseconds / ISO-8601 / ``strptime`` strings into UTC unix seconds and checks the
  sane range (1990-01-01 .. 2100-01-01).
* :class:`EventTable` collects events and builds the canonical ``events`` frame (dtypes, hour, weekday).

Reject reasons are written ``"kind: details"``: the report groups reasons by ``kind``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import zipfile
import zlib
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from interestgym.data.schema import ACTIONS
from interestgym.data.times import (  # noqa: F401  (re-exported: the readers and tests import them from here)
    TIME_FORMATS,
    TS_MAX,
    TS_MIN,
    TimeParser,
    civil_to_ts,
    hour_weekday,
    ts_range_reason,
)
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError
from interestgym.progress import progress_bar

_BOM = b"\xef\xbb\xbf"
_PROGRESS_EVERY = 16384  # lines between progress-bar updates (a per-line update costs more than the parsing)
_MAX_RECORD_LINES = 1000  # a quoted field spanning more lines than this is taken as an unbalanced quote

#: Encodings a reader may ask for. ``utf-8/latin-1`` decodes each line as UTF-8 and falls back to
#: latin-1 for that line only (MovieLens ``.dat`` files: ml-1m is latin-1, later releases UTF-8).
ENCODINGS = ("utf-8", "latin-1", "utf-8/latin-1")


# ------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class Source:
    """One file to read: ``path`` on disk, or ``member`` of the zip archive at ``path``."""

    path: Path
    member: str | None = None

    @property
    def name(self) -> str:
        """How the file is named in rejects and messages."""
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def basename(self) -> str:
        return Path(self.member).name if self.member else self.path.name

    def size(self) -> int | None:
        """Uncompressed size in bytes when known cheaply (for the progress bar)."""
        if self.member:
            with zipfile.ZipFile(self.path) as zf:
                return zf.getinfo(self.member).file_size
        if self.path.suffix == ".gz":
            return None
        return self.path.stat().st_size

    def open(self) -> IO[bytes]:
        if self.member:
            zf = zipfile.ZipFile(self.path)
            try:
                return _ZipMemberStream(zf, zf.open(self.member))
            except Exception:
                zf.close()
                raise
        if self.path.suffix == ".gz":
            return gzip.open(self.path, "rb")
        return open(self.path, "rb")


class _ZipMemberStream(io.BufferedReader):
    """A zip member opened for reading that also closes its archive."""

    def __init__(self, archive: zipfile.ZipFile, raw: IO[bytes]) -> None:
        super().__init__(raw)  # type: ignore[arg-type]
        self._archive = archive

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._archive.close()


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a readable, non-empty file, else raise a :class:`DataError`."""
    if not path.exists():
        raise DataError(f"{path}: no such file; expected {what}")
    if not path.is_file():
        raise DataError(f"{path}: is a folder; expected {what}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes); expected {what}")
    return path


class Container:
    """A folder or a zip archive holding a data set's files, searched by file name.

    Files are found by base name at the shallowest depth (a MovieLens zip holds ``ml-100k/u.data``;
    a folder may be the data set's folder or the folder above it).
    """

    def __init__(self, path: Path, members: list[str], is_zip: bool) -> None:
        self.path = path
        self._members = members
        self.is_zip = is_zip

    @classmethod
    def open(cls, path: str | Path, *, max_depth: int = 2) -> Container:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            members = []
            for root, dirs, files in os.walk(path):
                rel = Path(root).relative_to(path)
                depth = len(rel.parts)
                if depth >= max_depth:
                    dirs.clear()  # do not walk a big tree the user pointed at by mistake
                dirs.sort()
                members += [(rel / f).as_posix() for f in sorted(files)]
            return cls(path, members, is_zip=False)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [i.filename for i in zf.infolist() if not i.is_dir()]
            return cls(path, members, is_zip=True)
        raise DataError(f"{path}: is a file but not a zip archive; expected a folder or a .zip")

    def find(self, name: str) -> Source | None:
        """The shallowest file called ``name`` (case-insensitive), or None."""
        hits = self.find_all(name)
        return self.source(hits[0]) if hits else None

    def find_all(self, name: str) -> list[str]:
        """Every member called ``name`` (case-insensitive), shallowest first, then by path."""
        hits = [m for m in self._members if Path(m).name.lower() == name.lower() and "__MACOSX" not in m]
        return sorted(hits, key=lambda m: (m.count("/"), m))

    def source(self, member: str) -> Source:
        """The member ``member`` (a path as :meth:`find_all` gives it)."""
        return Source(self.path, member) if self.is_zip else Source(self.path / member)

    def listing(self, limit: int = 12) -> str:
        """The top-level names, for 'found: ...' in error messages."""
        top = sorted({m.split("/")[0] + ("/" if "/" in m else "") for m in self._members})
        shown = ", ".join(top[:limit]) + (f", ... ({len(top)} in all)" if len(top) > limit else "")
        return shown or "nothing"


# -------------------------------------------------------------------------------------------- lines
def raw_lines(source: Source, desc: str | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, bytes)`` for every line, 1-based, without the line terminator.

    A UTF-8 byte-order mark at the start is dropped. A progress bar (tqdm on a terminal's
    stderr, else a line every 15 s) follows the bytes read. A ``.gz`` file or zip member whose compressed data is cut
    short or damaged raises a :class:`DataError` naming the file, the cause and the last line read:
    the rows after the damage are lost, so the file cannot be taken as complete.
    """
    total = source.size()
    lineno = 0
    try:
        # tqdm on a terminal, a plain line every 15 s in a log (tqdm's disable=None went silent there)
        with source.open() as fh, progress_bar(total=total, unit="B", desc=desc or source.basename, unit_scale=True) as bar:
            first = fh.readline()
            wide = utf16_encoding(first)
            if wide == "UTF-16":
                raise DataError(f"{source.name}: UTF-16 encoded; expected UTF-8 (convert it, e.g. `iconv -f UTF-16 -t UTF-8`)")
            if wide:
                raise DataError(f"{source.name}: looks {wide} encoded without a byte-order mark (a NUL byte beside every "
                                f"character of line 1); expected UTF-8 (convert it, e.g. `iconv -f {wide} -t UTF-8`)")
            check_first_line(source, first)
            fh_iter = _prepend(first, fh)
            pending = 0
            for lineno, raw in enumerate(fh_iter, 1):
                pending += len(raw)
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                if raw.endswith(b"\n"):
                    raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
                if lineno % _PROGRESS_EVERY == 0:
                    bar.update(pending)
                    pending = 0
                yield lineno, raw
            bar.update(pending)
    except _DECOMPRESSION_ERRORS as exc:
        # Left alone, an EOFError reaches click, which turns it into a bare "Aborted!".
        raise DataError(_damaged_reason(source, exc, lineno)) from None


def note_unterminated(source: Source, log: RejectLog) -> None:
    """A note when a plain file's last byte is not a newline: its last line is read as it is, but a file cut short (a
    download or copy interrupted) ends the same way, and a line cut at a field boundary still parses (a MIND impression
    list cut after a space is a row with fewer candidates), so the note says which line to check. A ``.gz`` file or zip
    member cut short is an error of its own (:func:`raw_lines`)."""
    if source.member is not None or source.path.suffix == ".gz":
        return
    try:
        with open(source.path, "rb") as fh:
            if fh.seek(0, io.SEEK_END) == 0:
                return
            fh.seek(-1, io.SEEK_END)
            last = fh.read(1)
    except OSError:
        return  # the reader names the file it cannot read
    if last != b"\n":
        log.note(f"{source.name}: the file does not end with a newline; its last line was read as it is (a file cut short, "
                 "e.g. by an interrupted download or copy, ends this way too: if so, that line is incomplete; check it)")


def utf16_encoding(head: bytes) -> str | None:
    """Whether a file whose first bytes are ``head`` is UTF-16 text, which the readers refuse: ``"UTF-16"`` with a
    byte-order mark; without one, ``"UTF-16LE"`` / ``"UTF-16BE"`` when a NUL byte sits at nearly every odd (LE)
    or even (BE) position and almost none at the other (UTF-8 text has no NUL bytes, so this never fires on a
    file the readers take); else None."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16"
    head = head[:256]
    if len(head) < 8:
        return None
    even, odd = head[0::2], head[1::2]
    for name, nul, other in (("UTF-16LE", odd, even), ("UTF-16BE", even, odd)):
        if nul.count(0) >= 0.9 * len(nul) and other.count(0) <= 0.1 * len(other):
            return name
    return None


#: File signatures of binary formats a log may come in by mistake: what to say of them.
_SIGNATURES = ((b"\x1f\x8b", "gzip-compressed data (a .gz file is read as such when its name ends in .gz)"),
               (b"PK\x03\x04", "a zip archive (unzip it and give the file inside)"),
               (b"PAR1", "a Parquet file (name it .parquet, or give --input-format parquet)"),
               (b"\xd0\xcf\x11\xe0", "an OLE2 file (an .xls spreadsheet? save it as CSV)"))


def binary_kind(head: bytes) -> str | None:
    """What a file whose first line is ``head`` is, when it is no text: a known signature, or control bytes (NUL and
    the others below TAB, and between CR and space) in more than a tenth of its first 4,096 bytes; None for text (a
    text row with a stray control byte is a row to reject, not a file to refuse)."""
    for magic, kind in _SIGNATURES:
        if head.startswith(magic):
            return kind
    sample = head[:4096]
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    if sample and control > 0.1 * len(sample):
        return f"{control:,} control bytes (NUL, ...) in its first {len(sample):,} bytes, as in a binary file"
    return None


#: What gzip / zlib / zipfile raise for compressed data that is cut short or damaged.
_DECOMPRESSION_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zipfile.BadZipFile)


def _damaged_reason(source: Source, exc: BaseException, lineno: int) -> str:
    """One line for a damaged compressed file: which file, what is wrong, how far reading got."""
    kind = "zip member" if source.member else "gzip file"
    where = f"reading stopped after line {lineno:,}" if lineno else "no line could be read"
    if isinstance(exc, EOFError):
        cause = f"truncated {kind}: the compressed data ends before its end marker"
    elif isinstance(exc, gzip.BadGzipFile) and "Not a gzipped file" in str(exc):
        cause = "not gzip data although the name ends in .gz"
    else:
        cause = f"corrupt {kind}: {' '.join(str(exc).split()) or type(exc).__name__}"
    return f"{source.name}: {cause} ({where}); expected a complete, undamaged {kind} (copy or download it again)"


def _prepend(first: bytes, fh: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``fh`` with its already-read first line in front."""
    if first:
        yield first
    yield from fh


def decode(raw: bytes, encoding: str) -> str:
    """Decode one line; raises UnicodeDecodeError for invalid UTF-8 (latin-1 never fails)."""
    if encoding == "utf-8/latin-1":
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")
    return raw.decode(encoding)


def utf8_reason(exc: UnicodeDecodeError) -> str:
    return f"invalid UTF-8: byte 0x{exc.object[exc.start]:02x} at column {exc.start + 1}; expected UTF-8 text"


def line_digest(data: bytes) -> bytes:
    # 16-byte digests instead of whole lines keep the duplicate set small on long MIND lines.
    return hashlib.blake2b(data, digest_size=16).digest()


class SeenRecords:
    """The records of a file read so far, for duplicate detection: 16-byte digests of their raw bytes.

    :meth:`first_time` is asked once per non-blank, decodable record; the columnar reader
    (:mod:`interestgym.data.fast_events`) passes its own, which knows the lines it has read itself.
    """

    def __init__(self) -> None:
        self._digests: set[bytes] = set()

    def first_time(self, lineno: int, raw: bytes, n_lines: int = 1) -> bool:
        """True the first time a record with these bytes is seen (``lineno``: its first line; ``n_lines``:
        how many lines it spans)."""
        key = line_digest(raw)
        if key in self._digests:
            return False
        self._digests.add(key)
        return True


CR = b"\r"


def check_first_line(source: Source, first: bytes) -> None:
    """Refuse a file whose first line shows it is no log to read line by line: a binary file (:func:`binary_kind`), or
    lines ended by CR alone (two or more CRs inside line 1; a header is checked more strictly, by :func:`first_line`).
    Both readers call it, so both say the same."""
    if (kind := binary_kind(first)) is not None:
        raise DataError(f"{source.name}: not a text file: {kind}; expected UTF-8 text, one record per line")
    if first.rstrip(b"\r\n").count(CR) >= 2:
        raise cr_only_error(source, 1, first)


def cr_only_error(source: Source, lineno: int, raw: bytes) -> DataError:
    """The error of a line with carriage returns inside: a file whose lines end in CR alone, read as one line."""
    n = raw.rstrip(b"\r\n").count(CR)
    return DataError(f"{source.name} line {lineno}: {'a carriage return' if n == 1 else f'{n:,} carriage returns'} (CR) inside "
                     f"the line (it begins {excerpt(raw.decode('utf-8', 'replace'))}): the file's lines end in CR alone "
                     "(classic Mac OS); expected LF or CRLF line ends (convert it, e.g. `tr '\\r' '\\n' < FILE > NEW`)")


def excerpt(text: str, limit: int = 80) -> str:
    """``repr`` of ``text``, cut to its first ``limit`` characters (with how many more there are): a line quoted in a
    message stays one readable line."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit:,} more characters)"


def text_lines(
    source: Source,
    log: RejectLog,
    *,
    encoding: str = "utf-8",
    skip_lines: int = 0,
    dedupe: bool = True,
    lines: Iterator[tuple[int, bytes]] | None = None,
    seen: SeenRecords | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line that is worth parsing, and account for the rest.

    Blank lines are counted as blank; a line byte-identical to an earlier one is counted as a
    duplicate (``dedupe``); a line that is not valid in ``encoding`` is rejected with the column of
    the first bad byte. The first ``skip_lines`` lines (a header) are not rows and are not counted.
    Every yielded line has been counted as read; the caller must then keep or reject it.
    """
    name = source.name
    seen = seen if seen is not None else SeenRecords()
    stats = log.stats(name)
    for lineno, raw in (lines if lines is not None else raw_lines(source)):
        if lineno <= skip_lines:
            continue
        stats.read += 1
        if not raw.strip():
            stats.blank += 1
            continue
        try:
            text = decode(raw, encoding)
        except UnicodeDecodeError as exc:
            log.reject(name, lineno, utf8_reason(exc), raw.decode("utf-8", "replace"))
            continue
        if dedupe and not seen.first_time(lineno, raw):
            log.duplicate(name, lineno, text)
            continue
        yield lineno, text


def first_line(source: Source, encoding: str = "utf-8") -> tuple[str, int] | None:
    """The first non-blank line (a header) and its line number, or None for a file with no text.

    :raises DataError: for a line with a carriage return inside it: a file whose lines end in CR alone (classic Mac OS),
        read as one line, would otherwise be a header of the whole file.
    """
    for lineno, raw in raw_lines(source, desc=f"{source.basename} header"):
        if CR in raw.rstrip(b"\r\n"):
            raise cr_only_error(source, lineno, raw)
        if raw.strip():
            try:
                return decode(raw, encoding), lineno
            except UnicodeDecodeError as exc:
                raise DataError(f"{source.name} line {lineno}: header {utf8_reason(exc)}") from None
    return None


def split_csv_line(text: str, delimiter: str = ",") -> list[str]:
    """Split one complete CSV record (quotes allowed) with the csv module's strict dialect."""
    return next(csv.reader([text], delimiter=delimiter, strict=True))


def delimited_records(
    source: Source,
    log: RejectLog,
    *,
    delimiter: str,
    quoted: bool,
    skip_lines: int = 0,
    encoding: str = "utf-8",
    lines: Iterator[tuple[int, bytes]] | None = None,
    seen: SeenRecords | None = None,
    stop_before: int | None = None,
) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(first_line_number, raw_text, fields)`` for each record of a delimited file.

    With ``quoted`` the file is RFC-4180 CSV: a field in double quotes may hold the delimiter, doubled
    quotes and line breaks (such a record spans several lines and counts as one row, numbered by its
    first line). Lines without a quote, the vast majority, are split directly, which keeps big files
    fast. Without ``quoted`` (TSV) every line is one record split on the delimiter. Bookkeeping is
    that of :func:`text_lines`; a malformed quoted record is rejected with the csv module's reason.

    ``lines`` replaces the file's lines (``(line number, raw bytes)``, as :func:`raw_lines` gives them)
    and ``seen`` the duplicate bookkeeping (the columnar reader hands chunks back this way); with
    ``stop_before`` no record starts at or after that line (``lines`` then needs a ``next_lineno``
    attribute: the number of the line it gives next), though a quoted one may run past it.
    """
    if not quoted:
        for lineno, text in text_lines(source, log, encoding=encoding, skip_lines=skip_lines, lines=lines, seen=seen):
            if stop_before is not None and lineno >= stop_before:
                raise AssertionError(f"{source.name}: line {lineno} read past the chunk end {stop_before}")
            yield lineno, text, text.split(delimiter)
        return

    name = source.name
    stats = log.stats(name)
    seen = seen if seen is not None else SeenRecords()
    pending: deque[tuple[int, bytes]] = deque()
    source_lines = lines if lines is not None else raw_lines(source)

    def next_line(record_start: bool = False) -> tuple[int, bytes] | None:
        if pending:
            return pending.popleft()
        if record_start and stop_before is not None and source_lines.next_lineno >= stop_before:  # type: ignore[union-attr]
            return None
        for lineno, raw in source_lines:
            if lineno > skip_lines:
                return lineno, raw
        return None

    while (item := next_line(record_start=True)) is not None:
        lineno, raw = item
        stats.read += 1
        if not raw.strip():
            stats.blank += 1
            continue
        try:
            text = decode(raw, encoding)
        except UnicodeDecodeError as exc:
            log.reject(name, lineno, utf8_reason(exc), raw.decode("utf-8", "replace"))
            continue
        record_raw = raw
        n_lines = 1
        if '"' not in text:
            fields = text.split(delimiter)
        else:
            # A quoted field may continue on the next lines: gather lines while the quotes are
            # unbalanced (doubled quotes keep the parity right), then let the csv module parse.
            taken: list[tuple[int, bytes]] = []
            joined = text
            error = None
            while True:
                try:
                    fields = split_csv_line(joined, delimiter)
                    break
                except csv.Error as exc:
                    error = str(exc)
                if joined.count('"') % 2 == 0 or len(taken) >= _MAX_RECORD_LINES:
                    fields = None
                    break
                more = next_line()
                if more is None:
                    fields = None
                    break
                taken.append(more)
                try:
                    joined += "\n" + decode(more[1], encoding)
                except UnicodeDecodeError:
                    fields = None
                    error = "invalid UTF-8 in a continuation line"
                    break
            if fields is None:
                # Give the gathered lines back: they are rows of their own once this one is rejected.
                pending.extendleft(reversed(taken))
                log.reject(name, lineno, f"malformed CSV quoting: {error}; expected RFC-4180 quoted fields", text)
                continue
            record_raw = joined.encode("utf-8")
            text = joined
            n_lines = 1 + len(taken)
        if not seen.first_time(lineno, record_raw, n_lines):
            log.duplicate(name, lineno, text)
            continue
        if n_lines > 1:
            log.spanned(name, lineno, n_lines)
        yield lineno, text, fields


# ------------------------------------------------------------------------------------------- values
def parse_actions(text: str | None) -> dict[str, str]:
    """Parse ``--actions NAME=ACTION,...`` into ``{name: action}``; errors name the bad entry."""
    out: dict[str, str] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, action = (part.strip() for part in entry.partition("="))
        if not sep or not name or not action:
            raise DataError(f"--actions entry {entry!r}: expected NAME=ACTION, e.g. --actions pv=view,buy=purchase")
        if name in out:
            raise DataError(f"--actions: {name!r} is mapped twice ({name}={out[name]}, {name}={action})")
        out[name] = action
    return out


def parse_renames(text: str | None) -> dict[str, str]:
    """Parse ``--map NEW=OLD,...`` into ``{old: new}``; one NEW may take several OLD names (one per file)."""
    out: dict[str, str] = {}
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        new, sep, old = (part.strip() for part in entry.partition("="))
        if not sep or not new or not old:
            raise DataError(f"--map entry {entry!r}: expected NEW=OLD, e.g. --map ts=timestamp,user_id=uid")
        if old in out:
            raise DataError(f"--map: column {old!r} is renamed twice ({out[old]}={old}, {new}={old})")
        out[old] = new
    return out


def parse_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",")]


def accepted_actions(mapping: dict[str, str] | None = None) -> str:
    names = list(ACTIONS) + [k for k in (mapping or {}) if k not in ACTIONS]
    return ", ".join(names)


# -------------------------------------------------------------------------------------------- output
class EventTable:
    """Events collected row by row, turned into the canonical ``events`` frame by :meth:`frame`.

    Numbers go to typed arrays and repeated ids are stored once (interned): a 25-million-row log
    then costs about 50 bytes per event instead of a few hundred.
    """

    def __init__(self) -> None:
        self.user_id: list[str] = []
        self.item_id: list[str] = []
        self.action: list[str] = []
        self.ts = array("q")
        self.value = array("d")
        self.seq = array("q")
        self.context: dict[str, list[str]] = {}
        self._strings: dict[str, str] = {}

    def add(self, user_id: str, ts: int, item_id: str, action: str, value: float, seq: int, **context: str) -> None:
        """Append one event. A context column first seen here is filled with "" for earlier rows,
        and a known context column missing here gets "" (JSONL rows need not share their keys)."""
        n = len(self.seq)
        strings = self._strings
        self.user_id.append(strings.setdefault(user_id, user_id))
        self.item_id.append(strings.setdefault(item_id, item_id))
        self.action.append(action)
        self.ts.append(ts)
        self.value.append(value)
        self.seq.append(seq)
        for name, cell in context.items():
            column = self.context.get(name)
            if column is None:
                column = self.context[name] = [""] * n
            column.append(strings.setdefault(cell, cell))
        if len(context) != len(self.context):
            for column in self.context.values():
                if len(column) == n:
                    column.append("")

    def __len__(self) -> int:
        return len(self.seq)

    def frame(self, offset_seconds: int = 0) -> pd.DataFrame:
        ts = np.frombuffer(self.ts, dtype=np.int64) if len(self.ts) else np.zeros(0, dtype=np.int64)
        hour, weekday = hour_weekday(ts, offset_seconds)
        df = pd.DataFrame(
            {
                "user_id": pd.Series(self.user_id, dtype=str),
                "ts": ts.copy(),
                "item_id": pd.Series(self.item_id, dtype=str),
                "action": pd.Series(self.action, dtype=str),
                "value": np.asarray(self.value, dtype=np.float32),
                "hour": hour,
                "weekday": weekday,
                "seq": np.array(self.seq, dtype=np.int64),
            }
        )
        for name, column in self.context.items():
            df[name] = pd.Series(column, dtype=str)
        return df


def items_frame(rows: dict[str, list[str]]) -> pd.DataFrame:
    """The canonical ``items`` frame from column lists (item_id, text, category, subcategory first)."""
    return pd.DataFrame({name: pd.Series(values, dtype=str) for name, values in rows.items()})


@dataclass
class ReaderOutput:
    """What a reader hands to :func:`~interestgym.data.dataset.write_dataset`."""

    items: pd.DataFrame
    events: pd.DataFrame
    source_files: list[Path]
    impressions: pd.DataFrame | None = None
    #: Reader-specific counts merged into ``manifest["counts"]``.
    counts: dict[str, Any] = field(default_factory=dict)
    #: How the reader was configured (variant detected, options): ``manifest["reader"]``.
    reader: dict[str, Any] = field(default_factory=dict)
    #: UTC offset (seconds) -> times that carried it (ISO-8601 with an offset...): a log in local time says its zone.
    time_offsets: dict[int, int] = field(default_factory=dict)


def unique_paths(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def write_reader_output(
    out: str | Path,
    source_format: str,
    data: ReaderOutput,
    log: RejectLog,
    *,
    split: Any = None,
    max_reject_rate: float | None = None,
    command: list[str] | None = None,
    tz_offset_hours: float = 0.0,
    deterministic: bool = False,
) -> dict[str, Any]:
    """Write a reader's output with :func:`~interestgym.data.dataset.write_dataset`; return the manifest.

    ``tz_offset_hours`` shifts the clock used for the ``hour`` and ``weekday`` columns (``ts`` stays
    UTC): a log recorded in China reads best with 8.
    """
    from interestgym.data.dataset import SplitSpec, write_dataset
    from interestgym.data.validate import DEFAULT_MAX_REJECT_RATE

    if not -14 <= tz_offset_hours <= 14:
        raise DataError(f"--tz-offset {tz_offset_hours:g}: expected hours in -14..14")
    events = data.events
    offset = round(tz_offset_hours * 3600)
    if offset:
        events = events.copy()
        events["hour"], events["weekday"] = hour_weekday(events["ts"].to_numpy(), offset)
    reader = {**data.reader, "tz_offset_hours": tz_offset_hours}
    return write_dataset(
        out,
        source_format=source_format,
        source_files=data.source_files,
        items=data.items,
        events=events,
        impressions=data.impressions,
        rejects=log,
        split=split if split is not None else SplitSpec(),
        extra_counts=data.counts,
        extra_manifest={"reader": reader},
        max_reject_rate=DEFAULT_MAX_REJECT_RATE if max_reject_rate is None else max_reject_rate,
        command=command,
        deterministic=deterministic,
    )
