"""Row validation bookkeeping shared by every reader.

Each reader counts, per source file, the rows it read and what became of each: kept, rejected (with
a reason, written to ``rejects.jsonl``), blank, or duplicate. The counts must add up
(``kept + rejected + blank + duplicate == read``); :meth:`RejectLog.report` checks that, and
:meth:`RejectLog.check_rate` fails the command when too many rows were bad.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from interestgym.errors import DataError

#: Default for ``--max-reject-rate``: real logs have a few bad rows; more than 1% means a wrong
#: format, mapping or encoding, and should stop the run rather than quietly lose data.
DEFAULT_MAX_REJECT_RATE = 0.01

_RAW_LIMIT = 2000  # characters of a rejected row kept in rejects.jsonl


@dataclass
class FileStats:
    read: int = 0
    kept: int = 0
    rejected: int = 0
    blank: int = 0
    duplicate: int = 0
    reasons: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.read,
            "kept": self.kept,
            "rejected": self.rejected,
            "blank": self.blank,
            "duplicate": self.duplicate,
            "reject_reasons": dict(sorted(self.reasons.items())),
        }


def _encoding_hint(st: FileStats) -> str:
    """For a file refused mostly for invalid UTF-8: it is text in another encoding, and how to convert it."""
    if not st.rejected or st.reasons.get("invalid UTF-8", 0) * 2 < st.rejected:
        return ""
    return (". Most bad rows are not UTF-8: the file is probably in another encoding (GBK / GB18030 for Chinese, "
            "Latin-1 or CP1252 for Western text); convert it, e.g. `iconv -f GB18030 -t UTF-8 FILE > FILE.utf8`")


class RejectLog:
    """Collects rejected rows and per-file counts for one ``prepare`` run."""

    def __init__(self) -> None:
        self.rejects: list[dict[str, Any]] = []
        self.files: dict[str, FileStats] = {}
        self.notes: list[str] = []  # counted, reported facts that are not row rejects
        #: per file, (first line, lines) of each kept record that spanned several lines (a quoted field with line breaks)
        self.spans: dict[str, list[tuple[int, int]]] = {}

    def stats(self, file: str) -> FileStats:
        return self.files.setdefault(file, FileStats())

    def read(self, file: str, n: int = 1) -> None:
        self.stats(file).read += n

    def keep(self, file: str, n: int = 1) -> None:
        self.stats(file).kept += n

    def blank(self, file: str, n: int = 1) -> None:
        self.stats(file).blank += n

    def duplicate(self, file: str, line: int, raw: str, n: int = 1) -> None:
        """A row identical to an earlier one: counted, and listed in the rejects file as such."""
        self.stats(file).duplicate += n
        self.rejects.append({"file": file, "line": line, "reason": "duplicate row", "raw": raw[:_RAW_LIMIT], "kind": "duplicate"})

    def reject(self, file: str, line: int, reason: str, raw: str) -> None:
        st = self.stats(file)
        st.rejected += 1
        # Group reasons by their first clause so the report stays short.
        st.reasons[reason.split(":")[0]] += 1
        self.rejects.append({"file": file, "line": line, "reason": reason, "raw": raw[:_RAW_LIMIT], "kind": "rejected"})

    def header(self, file: str, line: int, raw: str, expected: str) -> None:
        """A line read as a row that is a header (a file format without one, given one): not a row, as a header
        skipped before reading is not; said in a note."""
        self.stats(file).read -= 1
        self.note(f"{file}: line {line} is a header ({' '.join(raw.split())[:_RAW_LIMIT]!r}), not a row: skipped; {expected}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def spanned(self, file: str, line: int, n_lines: int) -> None:
        """A record read from ``n_lines`` > 1 lines from ``line`` on (a quoted field with line breaks): said in a note,
        since a quote left open joins the lines after it into one field, whose records then vanish into a text."""
        self.spans.setdefault(file, []).append((line, n_lines))

    def span_notes(self) -> list[str]:
        out = []
        for file, spans in self.spans.items():
            spans = sorted(spans)
            shown = ", ".join(f"{a}-{a + n - 1}" for a, n in spans[:5]) + (", ..." if len(spans) > 5 else "")
            longest = max(n for _, n in spans)
            out.append(f"{file}: {len(spans):,} record{'s' if len(spans) > 1 else ''} spanned several lines (a quoted field "
                       f"with line breaks; lines {shown}; the longest {longest:,} lines): read as one row each; if a quote was "
                       "left open there, the rows after it are inside that field")
        return out

    def report(self) -> dict[str, Any]:
        for name, st in self.files.items():
            total = st.kept + st.rejected + st.blank + st.duplicate
            if total != st.read:  # a reader bug, not a user error: never lose rows silently
                raise AssertionError(f"{name}: kept+rejected+blank+duplicate = {total} but {st.read} rows were read")
        return {
            "files": {name: st.as_dict() for name, st in self.files.items()},
            "rejected_total": sum(st.rejected for st in self.files.values()),
            "notes": [*self.notes, *self.span_notes()],
        }

    def check_rate(self, max_reject_rate: float) -> None:
        """Raise :class:`DataError` if any file's reject rate is above ``max_reject_rate``."""
        for name, st in self.files.items():
            if st.read == 0:
                continue
            rate = st.rejected / st.read
            if rate > max_reject_rate:
                kinds = ", ".join(f"{k} {v}" for k, v in st.reasons.most_common())
                raise self._carrying(DataError(
                    f"{name}: {st.rejected} of {st.read} rows rejected ({rate:.1%}, above --max-reject-rate "
                    f"{max_reject_rate:.1%}; {kinds}). First bad lines: {self.first_bad_lines(name)}{_encoding_hint(st)}"
                ))

    def _carrying(self, error: DataError) -> DataError:
        """``error`` with every reject so far attached (``error.rejects``): the caller that knows where the
        dataset was to go writes them beside it, so that a refused file's bad rows are all there to read."""
        error.rejects = list(self.rejects)  # type: ignore[attr-defined]
        return error

    def first_bad_lines(self, file: str, limit: int = 5) -> str:
        """The first rejected lines of ``file`` with their reasons; lines sharing a reason are listed together."""
        first = [r for r in self.rejects if r["file"] == file and r["kind"] == "rejected"][:limit]
        by_reason: dict[str, list[int]] = {}
        for r in first:
            by_reason.setdefault(r["reason"], []).append(r["line"])
        return "; ".join(
            f"line{'s' if len(nums) > 1 else ''} {', '.join(map(str, nums))}: {reason}" for reason, nums in by_reason.items()
        )

    def nothing_valid(self, file: str, expected: str) -> DataError:
        """The error for a file that gave no usable row: empty, blank, or every row bad (with the first reasons)."""
        st = self.stats(file)
        if st.read == 0:
            return DataError(f"{file}: no rows (empty file, or a header only); expected {expected}")
        if st.rejected == 0:
            return self._carrying(DataError(f"{file}: no valid rows ({st.blank} blank, {st.duplicate} duplicate of {st.read}); "
                                            f"expected {expected}"))
        return self._carrying(DataError(f"{file}: no valid rows: {st.rejected} of {st.read} rejected; expected {expected}. "
                                        f"First bad lines: {self.first_bad_lines(file)}{_encoding_hint(st)}"))
