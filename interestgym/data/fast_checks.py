"""The row checks of ``prepare events`` on whole columns, for the columnar reader
(:mod:`interestgym.data.fast_events`).

Each check is the line reader's (:meth:`interestgym.data.events._RowChecker.check`), in its order
(user_id, item_id, ts, action, value, item), done on arrays: a row keeps the reason of the first
check it fails. Values that need Python's own rules (a cell with surrounding whitespace or a control
character, a time that is not a plain integer, an action, a value) are decided by the line reader's
functions, once per distinct value; what the line reader carries from row to row (the unit of the
times, the formats used so far, the first row of each item) is computed for all rows at once.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from interestgym.data.columns import id_reason
from interestgym.data.fast_lines import first_equal, identity
from interestgym.data.tables import CELL_STRIP, cell
from interestgym.data.times import TS_MAX, TS_MIN, TimeParser

if TYPE_CHECKING:
    from interestgym.data.events import _RowChecker

#: :data:`~interestgym.data.tables.CELL_STRIP` (Python's whitespace but its control characters), which a cell and a
#: rendered item text are stripped of, as an RE2 class.
_WS = r"[\t\n\r\x{20}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
#: The time formats :class:`TimeParser` counts under their own name (a strptime pattern is counted as itself).
TIME_MODES = ("unix", "unix_ms", "iso")


def take(values: pa.Array, rows: np.ndarray) -> pa.Array:
    """``values[rows]``. Rows in ascending order (kept rows, first rows of items) are picked by Arrow's
    ``filter`` with a mask, which copies runs of values instead of gathering them one by one."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) > 64 and bool(np.all(rows[1:] > rows[:-1])):
        mask = np.zeros(len(values), dtype=bool)
        mask[rows] = True
        return values.filter(pa.array(mask))
    return values.take(pa.array(rows, pa.int64()))


def blank_strings(n: int) -> pa.Array:
    """``n`` empty strings, built from buffers (no Python objects)."""
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(np.zeros(n + 1, np.int64)), pa.py_buffer(b"")])


#: Up to this many rows, :func:`splice` copies slices (one memcpy each) rather than rebuilding by index.
_FEW = 2048


def splice(base: pa.Array, at: np.ndarray, values: pa.Array, *, replace: bool) -> pa.Array:
    """``base`` with ``values`` put at the sorted positions ``at``: replacing the values there
    (``replace``), or inserted before them. A few rows are spliced between slices of ``base`` (a
    copy at memcpy speed); many by Arrow's ``replace_with_mask`` / ``take``.

    :param base: the array to change.
    :param at: positions in ``base`` (ascending; for inserts, ``len(base)`` appends).
    :param values: one value per position, same type as ``base``.
    """
    if not len(at):
        return base
    if len(at) > _FEW:
        if replace:
            mask = np.zeros(len(base), dtype=bool)
            mask[at] = True
            return pc.replace_with_mask(base, pa.array(mask), values)
        merged = pa.concat_arrays([base, values])
        # each base row moves down by the inserts before it; each insert goes before its position
        index = np.empty(len(merged), dtype=np.int64)
        shift = np.searchsorted(at, np.arange(len(base)), side="right")
        index[np.arange(len(base)) + shift] = np.arange(len(base))
        index[at + np.arange(len(at))] = len(base) + np.arange(len(at))
        return take(merged, index)
    pieces, prev = [], 0
    for j, pos in enumerate(at.tolist()):
        pieces.append(base.slice(prev, pos - prev))
        pieces.append(values.slice(j, 1))
        prev = pos + 1 if replace else pos
    pieces.append(base.slice(prev))
    return pa.concat_arrays(pieces)


class Column:
    """One named column of the rows: each row's cell (the text stripped as :func:`~interestgym.data.tables.cell`
    strips it) and, when asked, its distinct cells.

    :param raw: the cells as split from the lines (``large_string``).
    :param attention: rows whose cell may need Python's rules (a control character, a Unicode space,
        a space at a field's ends); the others' cells are their raw text, which holds no control character.
    """

    def __init__(self, raw: pa.Array, attention: np.ndarray) -> None:
        self.attention = attention
        if len(attention):
            before = take(raw, attention).to_pylist()
            fixed = [cell(v) for v in before]
            changed = [j for j, (a, b) in enumerate(zip(before, fixed)) if a != b]  # most such cells are kept as they are
            raw = splice(raw, attention[changed], pa.array([fixed[j] for j in changed], pa.large_string()), replace=True)
        self.stripped: pa.Array = raw
        self._codes: np.ndarray | None = None
        self._clean: pa.Array | None = None

    def _encode(self) -> None:
        # dictionary encoding: for the columns of few distinct values (action, value)
        enc = pc.dictionary_encode(self.stripped)
        self._codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        self._clean = enc.dictionary

    @property
    def codes(self) -> np.ndarray:
        """Each row's index into :meth:`cells`."""
        if self._codes is None:
            self._encode()
        return self._codes  # type: ignore[return-value]

    def cells(self) -> list[str]:
        """The distinct cells, in order of first appearance."""
        if self._clean is None:
            self._encode()
        return self._clean.to_pylist()  # type: ignore[union-attr]

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


class Template:
    """``--item-text`` rendered for many rows: literal parts and plain ``{column}`` fields joined column-wise;
    a template with conversions or format specs is rendered by Python row by row.

    :param template: the ``--item-text`` template, e.g. ``"category {category}"``.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        self.parts = list(string.Formatter().parse(template))
        self.simple = all(conv is None and not spec for _, f, spec, conv in self.parts if f is not None)

    def render(self, rows: np.ndarray, columns: dict[str, Column], taken: dict[str, pa.Array] | None = None) -> pa.Array:
        """The item text of each row in ``rows``, as :func:`~interestgym.data.events._render` gives it.

        :param taken: where the cells of ``rows`` taken from a column are kept by its name (for the caller to reuse).
        """
        from interestgym.data.events import _render

        if not self.simple:
            out = []
            for r in rows:
                row = {nm: col.text(r) for nm, col in columns.items()}
                out.append(_render(self.template, row))
            return pa.array(out, pa.large_string())
        pieces: list[Any] = []
        for literal, field, _, _ in self.parts:
            if literal:
                pieces.append(pa.scalar(literal, pa.large_string()))
            if field is not None:
                col = columns.get(field)
                if col is None:
                    pieces.append(pa.scalar("", pa.large_string()))
                    continue
                if taken is None or field not in taken:
                    cells = take(col.stripped, rows)
                    if taken is not None:
                        taken[field] = cells
                pieces.append(taken[field] if taken is not None else cells)
        if not any(isinstance(p, pa.Array) for p in pieces):
            text = "".join(p.as_py() for p in pieces).strip(CELL_STRIP)
            return pa.array([text] * len(rows), pa.large_string())
        joined = pc.binary_join_element_wise(*pieces, pa.scalar("", pa.large_string()))
        # The rendered text is stripped. Cells are stripped already, so only a literal at an end, or one
        # that an empty cell leaves at an end, can put whitespace there: look (by regex) at those rows only.
        edge_literal = [self.parts[0][0][:1], self.parts[-1][0][-1:] if self.parts[-1][1] is None else ""]
        missing = any(f is not None and f not in columns for _, f, _, _ in self.parts)  # renders as ""
        if missing or any(c in CELL_STRIP for c in edge_literal if c):
            suspect = np.arange(len(rows))
        else:
            empty = np.zeros(len(rows), dtype=bool)
            for p in pieces:
                if isinstance(p, pa.Array):
                    empty |= np.asarray(pc.equal(pc.binary_length(p), 0))
            suspect = np.flatnonzero(empty)
        if len(suspect):
            ends = np.asarray(pc.fill_null(pc.match_substring_regex(take(joined, suspect), f"^{_WS}|{_WS}$"), False))
            at = suspect[ends]
            if len(at):
                fixed = pa.array([v.strip(CELL_STRIP) for v in take(joined, at).to_pylist()], pa.large_string())
                joined = splice(joined, at, fixed, replace=True)
        return joined


class Reasons:
    """The reject reason of each row: the first check a row fails sets it, later checks skip the row.

    :param n: the number of rows.
    """

    def __init__(self, n: int) -> None:
        self.index = np.full(n, -1, dtype=np.int64)  # -1: no reason yet; else an index into ``texts``
        self.texts: list[str] = []

    def ok(self) -> np.ndarray:
        """Rows without a reason so far."""
        return self.index < 0

    def reject(self, mask: np.ndarray, why: str | dict[int, str]) -> None:
        """Give the rows in ``mask`` still without a reason the reason ``why`` (one str, or one per row)."""
        where = np.flatnonzero(mask & (self.index < 0))
        if not len(where):
            return
        if isinstance(why, str):
            self.texts.append(why)
            self.index[where] = len(self.texts) - 1
        else:
            for w in where:
                self.texts.append(why[int(w)])
                self.index[w] = len(self.texts) - 1

    def of(self, row: int) -> str:
        return self.texts[self.index[row]]


def _first(mask: np.ndarray, default: int) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else default


def _first_fit(values: np.ndarray) -> tuple[int, bool]:
    """The first of ``values`` in the range of unix seconds or of milliseconds (``len(values)``: none),
    and whether in seconds. A short prefix is looked at first: in most logs the first number decides."""
    lo, step = 0, 1024
    while lo < len(values):
        part = values[lo: lo + step]
        fits_s = (part >= TS_MIN) & (part < TS_MAX)
        fits = fits_s | ((part >= TS_MIN * 1000) & (part < TS_MAX * 1000))
        k = _first(fits, len(part))
        if k < len(part):
            return lo + k, bool(fits_s[k])
        lo, step = lo + step, step * 16
    return len(values), False


def _number(value: Any) -> float | None:
    """``float(value)`` when it is a finite number (as :meth:`TimeParser._mode_of` judges), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if np.isfinite(number) and not isinstance(value, bool) else None


class TimeCheck:
    """The ``ts`` check of the rows that reach it, as :meth:`TimeParser.parse` in row order would do it.

    :param times: the reader's parser (its format; its unit and counts are updated by :meth:`commit`).
    :param ts_raw: each row's ``ts`` text before stripping (None: no ``ts`` column).
    """

    def __init__(self, times: TimeParser, ts_raw: pa.Array | None, n_rows: int) -> None:
        self.times, self.ts_raw, self.n = times, ts_raw, n_rows
        self.ts = np.zeros(n_rows, dtype=np.int64)
        self.modes = ["unix", "unix_ms", "iso"] + ([times.fmt] if times.fmt not in TIME_MODES else [])
        self.mode = np.full(n_rows, -1, dtype=np.int64)  # index into ``modes`` after a successful parse
        self.fraction = np.zeros(n_rows, dtype=bool)  # read with a fraction of a second (floored: TimeParser.floored)
        self.offset: dict[int, int] = {}  # row -> the UTC offset (seconds) its time carried (TimeParser.offsets)
        self.unit = times.unit
        self.decided_at = -1  # row whose time decides the unit (auto)

    def cells(self, where: np.ndarray) -> list[Any]:
        if self.ts_raw is None:
            return [None] * len(where)
        return [cell(v) for v in take(self.ts_raw, where).to_pylist()]

    def check(self, reach: np.ndarray, reasons: Reasons) -> None:
        """Parse the times of the rows in ``reach``; reject the bad ones into ``reasons``."""
        times, ts_raw, n, ts, mode, modes = self.times, self.ts_raw, self.n, self.ts, self.mode, self.modes
        # plain integers (most logs): parsed by one Arrow cast; everything else by TimeParser
        plain = (np.asarray(pc.fill_null(pc.and_(pc.ascii_is_decimal(ts_raw), pc.less_equal(pc.binary_length(ts_raw), 15)), False))
                 if ts_raw is not None and times.fmt in ("auto", "unix", "unix_ms") else np.zeros(n, dtype=bool))
        plain &= reach
        # the plain integers (at most 15 digits: exact as floats, so TimeParser's floor(float(v)) is v itself)
        plain_rows = np.flatnonzero(plain)
        plain_values = (np.asarray(pc.cast(ts_raw if len(plain_rows) == n else ts_raw.filter(pa.array(plain)), pa.int64()))
                        if len(plain_rows) else np.zeros(0, np.int64))
        others = np.flatnonzero(reach & ~plain)
        other_cells = self.cells(others)
        neither = np.zeros(n, dtype=bool)
        if times.fmt == "auto" and self.unit is None:
            # The first number in the range of seconds or milliseconds decides the unit; numbers before it
            # decide nothing and are rejected ("neither"), as TimeParser does while its unit is None.
            numbers = [(int(i), got) for i, v in zip(others, other_cells) if (got := _number(v)) is not None]
            k, in_seconds = _first_fit(plain_values)
            decided = int(plain_rows[k]) if k < len(plain_rows) else n
            for i, got in numbers:  # a number among the other cells (few) may come first
                if i >= decided:
                    break
                fits_s = TS_MIN <= got < TS_MAX
                if fits_s or TS_MIN * 1000 <= got < TS_MAX * 1000:
                    decided, in_seconds = i, fits_s
                    break
            if decided < n:
                self.unit = "unix" if in_seconds else "unix_ms"
                self.decided_at = decided
            before = int(np.searchsorted(plain_rows, decided))  # the plain rows before it: a prefix
            at = np.sort(np.concatenate([plain_rows[:before], np.array([i for i, _ in numbers if i < decided], dtype=np.int64)]))
            neither[at] = True
            plain_rows, plain_values = plain_rows[before:], plain_values[before:]
            cell_of = dict(zip(others.tolist(), other_cells))
            reasons.reject(neither, {int(i): f"time out of range: {cell_of.get(int(i), ts_raw[int(i)].as_py() if ts_raw is not None else None)!s} "
                                     "is neither unix seconds nor milliseconds in 1990..2100" for i in at})
        unit = self.unit
        fmt = times.fmt if times.fmt != "auto" else unit
        keep_other = ~neither[others]
        others, other_cells = others[keep_other], [c for c, k in zip(other_cells, keep_other) if k]
        if len(plain_rows) and fmt in ("unix", "unix_ms"):
            # floor(v / 1000.0) is v // 1000 for integers under 2**53 / 1000 * 1000 (the quotient is exact enough)
            got = plain_values if fmt == "unix" else plain_values // 1000
            fits = (got >= TS_MIN) & (got < TS_MAX)
            rows, read = plain_rows, plain_values
            if not fits.all():
                rows, got, slow = rows[fits], got[fits], rows[~fits]  # out of range: TimeParser words the reason
                read = read[fits]
                others = np.concatenate([others, slow])
                other_cells = other_cells + self.cells(slow)
            ts[rows] = got
            mode[rows] = modes.index(fmt)
            if fmt == "unix_ms":  # whole milliseconds: a fraction of a second unless a multiple of 1000
                self.fraction[rows] = read % 1000 != 0
        elif len(plain_rows):  # iso or a pattern (not reached: plain is only looked for with numeric formats)
            others = np.concatenate([others, plain_rows])
            other_cells = other_cells + self.cells(plain_rows)
        scratch = TimeParser(times.fmt)
        scratch.unit = unit
        parsed: dict[Any, tuple[int | None, str | None, str | None, bool]] = {}
        why: dict[int, str] = {}
        for i, v in zip(others.tolist(), other_cells):
            key = (type(v), v)
            if key not in parsed:
                scratch.counts.clear()
                scratch.offsets.clear()
                scratch.floored = 0
                got_ts, reason = scratch.parse(v)
                parsed[key] = (got_ts, reason, next(iter(scratch.counts), None), scratch.floored > 0, next(iter(scratch.offsets), None))
            got_ts, reason, m, fraction, offset = parsed[key]
            if reason is not None:
                why[i] = reason
            else:
                ts[i], mode[i] = got_ts, modes.index(m)  # type: ignore[arg-type]
                self.fraction[i] = fraction
                if offset is not None:
                    self.offset[i] = offset
        if why:
            # A reason names the formats the file used so far ("expected unix seconds or ..."): parse each
            # rejected time again with the parser's state as the line reader would have it at that row.
            first_of_mode = {m: first for m, (first, _) in self.modes_read().items()}
            cells_of = dict(zip(others.tolist(), other_cells))
            for i in sorted(why):
                used = set(times.counts) | {modes[m] for m, f in first_of_mode.items() if f < i}
                scratch.counts = Counter(dict.fromkeys(used, 1))
                scratch.unit = times.unit if times.unit is not None or self.decided_at < 0 or i < self.decided_at else unit
                why[i] = scratch.parse(cells_of[i])[1]  # type: ignore[assignment]
            mask = np.zeros(n, dtype=bool)
            mask[list(why)] = True
            reasons.reject(mask, why)

    def commit(self) -> None:
        """Update the reader's parser as parsing every row in order would have: the unit, and the counts
        per format (in the order each format was first read)."""
        times = self.times
        if times.fmt == "auto" and times.unit is None and self.unit is not None:
            times.unit = self.unit
        for m, (_, count) in sorted(self.modes_read().items(), key=lambda e: e[1][0]):
            times.counts[self.modes[m]] += count
        times.floored += int(np.count_nonzero(self.fraction))
        times.offsets.update(self.offset.values())

    def modes_read(self) -> dict[int, tuple[int, int]]:
        """For each format (index into ``modes``) a time was read in so far: (its first row, its count)."""
        counts = np.bincount(self.mode + 1, minlength=len(self.modes) + 1)[1:]  # mode -1 (not read) to bin 0
        return {m: (int(np.argmax(self.mode == m)), int(c)) for m, c in enumerate(counts.tolist()) if c}


def check_actions(rows: _RowChecker, col: Column | None, n: int, reasons: Reasons) -> tuple[np.ndarray, list[str | None]]:
    """The action check; returns each row's index into the canonical action names, and the names."""
    if col is None:
        why, act = rows.action_of(None)
        if why is not None:
            reasons.reject(np.ones(n, dtype=bool), why)
        return np.zeros(n, np.int64), [act]
    whys, names = [], []
    for v in col.cells():  # once per distinct action
        why, act = rows.action_of(v)
        whys.append(why)
        names.append(act)
    bad_u = np.array([w is not None for w in whys], dtype=bool)
    if bad_u.any():
        bad = bad_u[col.codes]
        reasons.reject(bad, {int(i): whys[col.codes[i]] for i in np.flatnonzero(bad & reasons.ok())})  # type: ignore[misc]
    return col.codes, names


def check_values(col: Column | None, n: int, reasons: Reasons, is_rating: np.ndarray,
                 present: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The value check; returns each row's value (1.0 where there is none) and how many rows reaching it had an
    empty value cell (read as 1.0). A rating (``is_rating``) without a value is rejected.

    :param present: the rows that have a value cell at all (JSON Lines: a row may lack the key; its reject says so,
        and it is no empty value); None: every row when there is a value column, none without one."""
    from interestgym.data.events import _parse_value, missing_rating, no_value

    values = np.ones(n, dtype=np.float64)
    empty = np.ones(n, dtype=bool)
    if col is not None:
        cells = col.cells()
        parsed = [_parse_value({"value": v}) for v in cells]  # once per distinct value
        if parsed:
            values = np.array([p[0] for p in parsed], dtype=np.float64)[col.codes]
            empty = np.array([no_value(v) for v in cells], dtype=bool)[col.codes]
        bad_u = np.array([p[1] is not None for p in parsed], dtype=bool)
        if bad_u.any():
            bad = bad_u[col.codes]
            reasons.reject(bad, {int(i): parsed[col.codes[i]][1] for i in np.flatnonzero(bad & reasons.ok())})  # type: ignore[misc]
    has = np.full(n, col is not None) if present is None else present
    missing = empty & is_rating
    if missing.any():
        values[missing] = np.nan
        reasons.reject(missing & has, missing_rating(True))
        reasons.reject(missing & ~has, missing_rating(False))
    return values, int(np.count_nonzero(empty & has & reasons.ok()))


class ItemsFromRows:
    """The items built from the events (as :class:`~interestgym.data.events._ItemsFromEvents` builds them
    row by row), for all rows at once.

    An item is registered by its first valid row whose text (template or text column) is not empty;
    its valid rows before that have no text and are rejected. A later row whose non-empty category
    differs from the registering row's counts as a category change.

    :param template: the ``--item-text`` template (None: the ``text`` column).
    """

    def __init__(self, template: Template | None, template_text: str | None) -> None:
        self.template, self.template_text = template, template_text
        self.item: pa.Array = pa.array([], pa.large_string())
        self.text = self.category = self.subcategory = self.item
        self.conflicts: dict[str, int] = {}
        self.first_conflict: str | None = None

    def texts(self, rows: np.ndarray, columns: dict[str, Column], taken: dict[str, pa.Array] | None = None) -> pa.Array:
        """The item text of each row in ``rows`` (``taken``: as :meth:`Template.render`'s)."""
        if self.template is not None:
            return self.template.render(rows, columns, taken)
        col = columns.get("text")
        return take(col.stripped, rows) if col is not None else blank_strings(len(rows))

    def check(self, columns: dict[str, Column], item: Column, lineno: np.ndarray, reasons: Reasons) -> None:
        """Register the items of the valid rows, reject the rows that would register an item without
        text, count category changes.

        :param lineno: each row's line number (for the category-change note).
        """
        n = len(reasons.index)
        valid = np.flatnonzero(reasons.ok())
        # exact: for each valid row, the position (in ``valid``) of the first valid row with its item id.
        # An item is known by that position ("head") from here on: arrays indexed by it stand per item.
        first = first_equal(item.stripped, valid)
        heads = np.flatnonzero(first == np.arange(len(valid)))  # ascending: items in order of first row
        reg = valid[heads]  # each item's registering row (its first valid row), per item
        taken: dict[str, pa.Array] = {}  # columns' cells of the rows ``reg``
        texts = self.texts(reg, columns, taken)
        empty = np.asarray(pc.equal(pc.binary_length(texts), 0))
        late = bool(empty.any())  # some item is registered by a later row than its first
        if late:
            # items whose first row has no text: their first valid row with text registers them (n: none does),
            # and their valid rows before it are rejected, as the line reader rejects each in turn
            no_text = np.zeros(len(valid), dtype=bool)
            no_text[heads[empty]] = True
            sub = np.flatnonzero(no_text[first])  # positions in ``valid`` of these items' rows
            sub_empty = np.asarray(pc.equal(pc.binary_length(self.texts(valid[sub], columns)), 0))
            with_text = np.full(len(valid), n, dtype=np.int64)  # per head
            hits = sub[~sub_empty]
            np.minimum.at(with_text, first[hits], valid[hits])
            early = valid[sub][valid[sub] < with_text[first[sub]]]
            source = f"text from --item-text {self.template_text!r}" if self.template_text else "text"
            mask = np.zeros(n, dtype=bool)
            mask[early] = True
            reasons.reject(mask, {int(r): f"empty item text: first row of item {item.text(r)!r} has no {source}; expected text" for r in early})
            later_reg = with_text[heads]
            moved = empty & (later_reg < n)
            if moved.any():
                texts = pc.replace_with_mask(texts, pa.array(moved), self.texts(later_reg[moved], columns))
            reg = np.where(empty, later_reg, reg)
        registered = np.flatnonzero(reg < n)
        order = registered
        if np.any(np.diff(reg[registered]) < 0):  # only an item registered late (empty text first) changes the order
            order = registered[np.argsort(reg[registered], kind="stable")]  # items in the order of their registering rows
        reg_rows = reg[order]
        self.item = take(item.stripped, reg_rows)
        # every item registered by its first valid row (none moved to a later row, none left out)
        in_head_order = not late and order is registered and len(registered) == len(reg)
        self.text = texts if in_head_order else take(texts, order)
        cat, sub_col = columns.get("category"), columns.get("subcategory")

        def cells(name: str, col: Column | None) -> pa.Array:
            if col is None:
                return blank_strings(len(reg_rows))
            return taken[name] if in_head_order and name in taken else take(col.stripped, reg_rows)

        self.category, self.subcategory = cells("category", cat), cells("subcategory", sub_col)
        if cat is None:
            return
        # category changes: a valid row after its item's registering row, with a category, a different one
        if late:  # rows were rejected, items registered by later rows: the rows still valid, but those
            reg_of_head = np.zeros(len(valid), dtype=np.int64)
            reg_of_head[heads] = reg
            still = np.flatnonzero(reasons.ok()[valid])
            rows, ref = valid[still], reg_of_head[first[still]]
            later = rows != ref
            rows, ref = rows[later], ref[later]
        else:  # every valid row still is, and each item's first row registers it: the rows after the first
            still = np.flatnonzero(first != np.arange(len(valid)))
            rows, ref = valid[still], valid[first[still]]
        if not len(rows):
            return
        same = identity(cat.stripped)  # exact: equal numbers for equal categories
        differs = (same[rows] != same[ref]) & (np.asarray(pc.binary_length(cat.stripped))[rows] > 0)
        rows, ref = rows[differs], ref[differs]
        items = take(item.stripped, rows).to_pylist()
        for it in items:  # one entry per item, in the order of its first change (a dict, as the line reader's)
            self.conflicts[it] = self.conflicts.get(it, 0) + 1
        if len(rows):
            r, f = int(rows[0]), int(ref[0])
            self.first_conflict = (f"item {items[0]}: category {cat.text(f)!r} at line {int(lineno[f])}, "
                                   f"{cat.text(r)!r} at line {int(lineno[r])}")
