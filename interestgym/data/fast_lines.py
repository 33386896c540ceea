"""The lines of a CSV / TSV file as arrays, for the columnar reader (:mod:`interestgym.data.fast_events`).

Everything here is whole-file and vectorised (numpy, pyarrow compute): where each line starts and
ends, which lines are blank or not UTF-8, which bytes may need Python's rules for a cell, an exact
identity of each line's bytes (for duplicates) and of any text column (for items), and the split of
plain lines into fields. Per-line Python runs only for the few lines a check flags.
"""

from __future__ import annotations

import codecs

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

_BOM = b"\xef\xbb\xbf"
_WHITESPACE_BYTES = b" \t\n\r\x0b\x0c"  # bytes.strip()'s whitespace: a line of only these is blank
#: Odd 64-bit multipliers (from splitmix64 / wyhash) for :func:`hash_binary`'s mixing.
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


#: Byte classes of :meth:`Lines._scan` (one bit each in :attr:`Lines.classes`): the rare bytes the checks look at.
TAB, CR, CONTROL, DEL, LEAD, NON_ASCII = 1, 2, 4, 8, 16, 32
_CLASS_OF = np.zeros(256, dtype=np.uint8)
_CLASS_OF[:32] = CONTROL  # \n is never looked up: it ends a line
_CLASS_OF[9], _CLASS_OF[13], _CLASS_OF[0x7F] = TAB, CR, DEL
_CLASS_OF[0x80:] = NON_ASCII
_CLASS_OF[[0xC2, 0xE1, 0xE2, 0xE3]] = NON_ASCII | LEAD  # lead bytes of a Unicode space or C1 control
#: :meth:`Lines._scan` looks at the bytes this many at a time (its arrays stay small whatever the file).
_SCAN_BLOCK = 1 << 22
#: Up to this many lines holding a non-ASCII byte are decoded one by one; past it the whole file at once.
_DECODE_LINES = 20000


def _collect_bad_utf8(exc: UnicodeError) -> tuple[str, int]:
    """A codecs error handler: record where each invalid sequence starts, skip it."""
    _BAD_POSITIONS.append(exc.start)  # type: ignore[attr-defined]
    return "", exc.end  # type: ignore[attr-defined]


_BAD_POSITIONS: list[int] = []
codecs.register_error("interestgym-bad-utf8", _collect_bad_utf8)


class Lines:
    """Every line of a file as :func:`~interestgym.data.readers.raw_lines` yields it (``\\n`` ends a
    line, a ``\\r`` before it is dropped, the UTF-8 byte-order mark of line 1 is dropped), in arrays.

    :param data: the file's bytes (decompressed).
    """

    def __init__(self, data: bytes) -> None:
        if data == _BOM:
            data = b"\n"  # a file that is only a BOM is one blank line to the line reader
        data = data.removeprefix(_BOM)
        if b"\r" in data and b"\r\n" in data:  # memchr for \r first: a search for "\r\n" stops at every \n
            # raw_lines drops one \r before each \n; bytes.replace scans left to right, so "\r\r\n" keeps one \r
            data = data.replace(b"\r\n", b"\n")
        if data and not data.endswith(b"\n"):
            data += b"\n"  # the last line without a newline is a line all the same
        self.data = data
        self.size = size = len(data)
        # the bytes again with 8 zero bytes after them: a uint64 read at any line's end stays inside (_spans)
        self.padded = data + bytes(8)
        buf = np.frombuffer(self.padded, dtype=np.uint8)[:size]
        self.buf = buf
        newline, rare = self._scan()
        self.n = len(newline)
        self.starts = np.concatenate([[0], newline[:-1] + 1]).astype(np.int64) if self.n else np.zeros(0, np.int64)
        self.ends = newline.astype(np.int64)
        # a zero-copy view: each line with its newline. Every line ends with one, so two lines are equal
        # exactly when these values are, and the values of any rows form one run for the CSV parser.
        small = size < 2**31 - 1
        kind, otype = (pa.binary(), np.int32) if small else (pa.large_binary(), np.int64)
        offsets = np.concatenate([self.starts, [size]]).astype(otype)
        self.with_newline = pa.Array.from_buffers(kind, self.n, [None, pa.py_buffer(offsets), pa.py_buffer(self.padded)])
        self.lengths = self.ends - self.starts
        #: per line, the classes (TAB, CR, ...) of the rare bytes it holds, OR-ed
        self.classes = np.zeros(self.n, dtype=np.uint8)
        for bit, lines in rare.items():
            self.classes[lines] |= bit
        # blank: only whitespace bytes; a line that starts with a non-space byte is not blank
        space = np.zeros(256, dtype=bool)
        space[np.frombuffer(_WHITESPACE_BYTES, np.uint8)] = True
        self.non_blank = self.lengths > 0
        maybe = np.flatnonzero(self.non_blank & space[buf[np.minimum(self.starts, max(len(buf) - 1, 0))]])
        for i in maybe:
            self.non_blank[i] = bool(self.raw(i).strip())
        self.bad_utf8 = self._bad_utf8()

    def _scan(self) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The newlines, and the lines holding each class of rare bytes (controls, DEL, non-ASCII): one
        numpy compare finds them all (a byte minus 0x20, wrapped, is at least 0x5F exactly for those
        and \\n), a block of bytes at a time so that the arrays stay small whatever the file.

        Returns ``(newline positions, {class bit: ascending line indices}``)."""
        buf = self.buf
        newlines: list[np.ndarray] = []
        found: dict[int, list[np.ndarray]] = {bit: [] for bit in (TAB, CR, CONTROL, DEL, LEAD, NON_ASCII)}
        count = 0  # newlines before the block: the index of the line it starts in
        for lo in range(0, len(buf), _SCAN_BLOCK):
            block = buf[lo: lo + _SCAN_BLOCK]
            hit = np.flatnonzero(np.subtract(block, 0x20, dtype=np.uint8) >= 0x5F)
            byte = block[hit]
            is_newline = byte == 10
            newline = hit[is_newline]
            if len(newline) < len(hit):
                other = ~is_newline
                line = count + np.searchsorted(newline, hit[other])  # the newlines before a byte: its line
                cls = _CLASS_OF[byte[other]]
                for bit, into in found.items():
                    at = line[(cls & bit) != 0]
                    if len(at):
                        into.append(at[np.concatenate([[True], at[1:] != at[:-1]])])  # ascending: once per line
            newlines.append(newline + lo)
            count += len(newline)
        newline = np.concatenate(newlines) if newlines else np.zeros(0, np.int64)
        return newline.astype(np.int64, copy=False), {bit: np.concatenate(v) for bit, v in found.items() if v}

    def _bad_utf8(self) -> np.ndarray:
        """Lines that do not decode as UTF-8: only lines with a non-ASCII byte can fail. A few are decoded
        one by one; many, by one decode of the whole file (a newline is never inside a multi-byte
        sequence, so the invalid sequences of the whole file are exactly those of its lines)."""
        bad = np.zeros(self.n, dtype=bool)
        suspects = np.flatnonzero(self.classes & NON_ASCII)
        if len(suspects) <= _DECODE_LINES:
            for i in suspects.tolist():
                try:
                    self.raw(i).decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
            return bad
        _BAD_POSITIONS.clear()
        self.data.decode("utf-8", "interestgym-bad-utf8")
        if _BAD_POSITIONS:
            bad[np.searchsorted(self.starts, np.array(_BAD_POSITIONS), side="right") - 1] = True
        _BAD_POSITIONS.clear()
        return bad

    def line_of(self, positions: np.ndarray) -> np.ndarray:
        """The line index of each byte position."""
        return np.searchsorted(self.starts, positions, side="right") - 1

    def attention(self, delimiter: int) -> np.ndarray:
        """Lines holding a byte that may need Python's rules for a cell: a control character (the
        delimiter aside), a lead byte of a Unicode space or C1 control (0xC2, 0xE1-0xE3), or a space
        at the start or end of a field."""
        if delimiter < 32 and delimiter != 9:
            raise ValueError(f"delimiter {delimiter!r}: a control character other than a tab is not supported")
        x = CR | CONTROL | DEL | LEAD | (TAB if delimiter != 9 else 0)
        out = (self.classes & x) != 0
        # spaces (memchr-speed searches: rare in most files): a line needs attention when one is next to a
        # delimiter or a newline (or the start or end of the file: the edges of a line)
        space = _find_all(self.data, b" ")
        if len(space):
            padded = np.frombuffer(b"\n" + self.data + b"\n", dtype=np.uint8) if len(space) > _FIND_LOOP else None
            if padded is None:  # few spaces: look at their neighbours one by one
                edge_bytes = (b"", b"\n", bytes([delimiter]))
                data = self.data
                edge = np.array([data[p - 1: p] in edge_bytes or data[p + 1: p + 2] in edge_bytes for p in space.tolist()], dtype=bool)
            else:
                before, after = padded[space], padded[space + 2]
                edge = (before == 10) | (before == delimiter) | (after == 10) | (after == delimiter)
            out[self.line_of(space[edge])] = True
        return out

    def starts_with_bom(self) -> np.ndarray:
        """Lines that start with a BOM (any line but the file's first, whose BOM is removed): Arrow's CSV
        parser drops a BOM at the start of the buffer it is given, the line reader keeps it in the cell."""
        head = np.frombuffer(self.padded, dtype=np.uint8)  # 8 zero bytes after the data: start + 2 stays inside
        s0 = self.starts
        return (head[s0] == _BOM[0]) & (head[s0 + 1] == _BOM[1]) & (head[s0 + 2] == _BOM[2])

    def has_byte(self, byte: int) -> np.ndarray:
        """Lines holding ``byte`` at least once."""
        if byte == 9:
            return (self.classes & TAB) != 0
        if byte == 13:
            return (self.classes & CR) != 0
        out = np.zeros(self.n, dtype=bool)
        out[self.line_of(_find_all(self.data, bytes([byte])))] = True
        return out

    def raw(self, i: int) -> bytes:
        return self.data[self.starts[i]: self.ends[i]]

    def text(self, i: int) -> str:
        return self.raw(i).decode("utf-8")

    def split(self, rows: np.ndarray, n_fields: int, delimiter: str) -> tuple[np.ndarray, np.ndarray, list[pa.Array]]:
        """Split lines ``rows`` (no quote to honour, no ``\\r``, valid UTF-8) into fields with Arrow's CSV
        parser, quoting off: it splits such a line exactly as ``str.split(delimiter)`` does.

        Returns ``(wrong, found, columns)``: positions in ``rows`` of the lines without ``n_fields``
        fields and how many each has (Arrow reports them one by one, with their row number), and the
        fields of the other lines as ``large_string`` columns.
        """
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), [pa.array([], pa.large_string()) for _ in range(n_fields)]
        mask = np.zeros(self.n, dtype=bool)
        mask[rows] = True  # rows ascend: a filter copies runs of lines
        picked = self.with_newline.filter(pa.array(mask))
        offsets = np.frombuffer(picked.buffers()[1], dtype=np.int32 if picked.type == pa.binary() else np.int64)
        lo, hi = int(offsets[picked.offset]), int(offsets[picked.offset + len(picked)])
        bad: list[tuple[int, int, str]] = []

        def invalid(row: pcsv.InvalidRow) -> str:
            bad.append((row.number, row.actual_columns, row.text))
            return "skip"

        names = [f"f{j}" for j in range(n_fields)]
        table = pcsv.read_csv(
            pa.BufferReader(picked.buffers()[2].slice(lo, hi - lo)),
            # one thread: Arrow numbers invalid rows only when it reads the blocks in order
            read_options=pcsv.ReadOptions(column_names=names, use_threads=False, block_size=1 << 26),
            parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char=False, double_quote=False, escape_char=False,
                                            newlines_in_values=False, ignore_empty_lines=False, invalid_row_handler=invalid),
            convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary()), strings_can_be_null=False,
                                                quoted_strings_can_be_null=False))
        wrong = np.array([b[0] - 1 for b in bad], dtype=np.int64)
        found = np.array([b[1] for b in bad], dtype=np.int64)
        # Arrow numbers rows from 1 in the bytes it was given; a check on its word costs little
        if (table.num_rows + len(bad) != len(rows) or (len(wrong) and (wrong.min() < 0 or wrong.max() >= len(rows)))
                or any(text != self.text(int(rows[w])) for w, (_, _, text) in zip(wrong, bad))):
            raise AssertionError("Arrow's CSV parser numbered its invalid rows unlike the lines it was given")
        # each block's column to 64-bit offsets first: one column of a big file may pass 2 GB
        return wrong, found, [_large_string(table.column(j)) for j in range(n_fields)]


def _large_string(column: pa.ChunkedArray) -> pa.Array:
    """A binary column as one ``large_string`` array without a UTF-8 check (the lines it came from are
    valid UTF-8, and a field split from one at an ASCII delimiter is too): each chunk's bytes are reused,
    its offsets widened."""
    chunks = []
    for chunk in column.chunks:
        wide = chunk.type == pa.large_binary()
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64 if wide else np.int32)[chunk.offset: chunk.offset + len(chunk) + 1]
        chunks.append(pa.Array.from_buffers(pa.large_string(), len(chunk), [chunk.buffers()[0], pa.py_buffer(offsets.astype(np.int64)),
                                                                          chunk.buffers()[2]], chunk.null_count))
    if len(chunks) == 1:
        return chunks[0]
    return pa.concat_arrays(chunks) if chunks else pa.array([], pa.large_string())


#: :func:`_find_all` gives up on a Python loop of ``bytes.find`` after this many hits and asks numpy.
_FIND_LOOP = 4096


def _find_all(text: bytes, byte: bytes) -> np.ndarray:
    """Every position of ``byte`` in ``text``. The bytes searched here are rare in most files, so a loop
    of ``bytes.find`` (memchr speed) beats a numpy pass over every byte; past :data:`_FIND_LOOP` hits
    numpy takes over."""
    found: list[int] = []
    find = text.find
    i = find(byte)
    while i >= 0 and len(found) < _FIND_LOOP:
        found.append(i)
        i = find(byte, i + 1)
    if i < 0:
        return np.array(found, dtype=np.int64)
    return np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == byte[0]).astype(np.int64)


def _spans(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bytes, start, length) of each value of a binary / string array; the bytes go on at least 8 bytes
    past the last value's end (zeros, or whatever the buffer holds there: :func:`_words` masks them),
    so that a uint64 read at any value's end stays inside them."""
    values = values.cast(pa.large_binary()) if values.type not in (pa.binary(), pa.large_binary()) else values
    wide = values.type == pa.large_binary()
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64 if wide else np.int32)[values.offset: values.offset + len(values) + 1]
    body = values.buffers()[2]
    raw = np.frombuffer(body, dtype=np.uint8) if body is not None else np.zeros(0, np.uint8)
    lo, hi = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    if len(raw) >= hi + 8:  # room after the last value already (Lines.padded): the bytes as they are
        padded = raw[lo:]
    else:
        padded = np.zeros(hi - lo + 8, dtype=np.uint8)
        padded[: hi - lo] = raw[lo:hi]
    starts = offsets[:-1] - np.int64(lo) if wide else offsets[:-1].astype(np.int64) - lo
    return padded, starts, np.diff(offsets).astype(np.int64, copy=False)


def _words(padded: np.ndarray, starts: np.ndarray, lengths: np.ndarray, w: int) -> np.ndarray:
    """The ``w``-th 8 bytes of each value as a uint64, the bytes past the value's end zeroed."""
    # a uint64 view at every byte offset (stride 1): one fancy index reads 8 bytes at each value's start;
    # little-endian on any machine, so that the first bytes of a value are the word's low bytes (_MASKS)
    at_every_byte = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded.data, strides=(1,))
    if w == 0:  # every value starts at least 8 bytes before the end of ``padded``
        word = at_every_byte[starts].astype(np.uint64, copy=False)
        word &= _MASKS[np.minimum(lengths, 8)]
        return word
    word = at_every_byte[np.minimum(starts + 8 * w, len(padded) - 8)].astype(np.uint64, copy=False)
    word &= _MASKS[np.clip(lengths - 8 * w, 0, 8)]
    return word


#: ``_MASKS[k]``: the low ``k`` bytes of a little-endian uint64 (the bytes of a value that lie before its end).
_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)
#: Values up to this many uint64 words keep their words, so that equal hashes are checked without Arrow.
_KEEP_WORDS = 8
#: An odd 64-bit multiplier per word position (64 of them, reused past 512 bytes): the hash is a sum of products.
_MULTIPLIERS = [(((0x9E3779B97F4A7C15 * (2 * k + 1)) ^ 0xBF58476D1CE4E5B9) % (1 << 64)) | 1 for k in range(64)]


def _multiplier(w: int) -> np.uint64:
    return np.uint64(_MULTIPLIERS[w % 64])


def hash_binary(values: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A 64-bit hash of each value of a binary / string array, vectorised: every 8 bytes of a value are
    read as one uint64 (one numpy gather per word position), multiplied by a constant of that position,
    summed with the length, and the sum mixed once (splitmix64's finaliser). Equal values give equal
    hashes; :func:`first_equal` checks the rare equal hashes of different values.

    Returns ``(hash, length, words)``; ``words`` (n x k, the zero-padded bytes as uint64) when every value
    is at most ``8 * _KEEP_WORDS`` bytes, else None.
    """
    padded, starts, lengths = _spans(values)
    n = len(lengths)
    h = lengths.astype(np.uint64)
    h *= _M3
    n_words = (int(lengths.max()) + 7) // 8 if n else 0
    kept = np.zeros((n, n_words), dtype=np.uint64) if n_words <= _KEEP_WORDS else None
    with np.errstate(over="ignore"):
        for w in range(n_words):
            rows = None if w < 4 else np.flatnonzero(lengths > 8 * w)  # past 32 bytes: the long values only
            if rows is None:
                word = _words(padded, starts, lengths, w)
            else:
                word = _words(padded, starts[rows], lengths[rows], w)
            if kept is not None:
                if rows is None:
                    kept[:, w] = word
                else:
                    kept[rows, w] = word
            word *= _multiplier(w)  # in place: the arrays are 8 MB per million values
            if rows is None:
                h += word
            else:
                h[rows] += word
        # splitmix64's finaliser: every bit of the sum reaches the high bits, which _first_equal sorts on
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
    return h, lengths, kept


def _mix(head: np.ndarray, tail: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit hash of (first 8 bytes, last 8 bytes, length) (a sum of products, mixed once)."""
    with np.errstate(over="ignore"):
        h = lengths.astype(np.uint64)
        h *= _M3
        h += head * _multiplier(0)
        h += tail * _multiplier(1)
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
    return h


def _runs(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values whose hash an earlier value has: ``(later, ref)``, their indices (ascending within
    each hash) and for each the index of the first value with its hash. The hashes' high bits and the
    index in the low bits are sorted as one uint64 (one ``np.sort``), so that each run of one hash
    starts with its first; only the runs' later members are looked at after the sort."""
    n = len(h)
    bits = max(int(n - 1).bit_length(), 1)
    index_mask = np.uint64((1 << bits) - 1)
    keys = h & ~index_mask  # in place from here: 8 MB a million values
    keys |= np.arange(n, dtype=np.uint64)
    keys.sort()
    # a sorted key continues a run when its hash bits equal the previous key's
    cont = np.flatnonzero(np.bitwise_xor(keys[1:], keys[:-1]) <= index_mask) + 1
    if not len(cont):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    begins = np.empty(len(cont), dtype=bool)  # the first continuing key of a run: its run starts just before it
    begins[0] = True
    np.not_equal(cont[1:], cont[:-1] + 1, out=begins[1:])
    start = np.maximum.accumulate(np.where(begins, cont - 1, 0))
    return (keys[cont] & index_mask).view(np.int64), (keys[start] & index_mask).view(np.int64)


def _first_equal(h: np.ndarray) -> np.ndarray:
    """For each hash, the index of its first occurrence (:func:`_runs`)."""
    first = np.arange(len(h), dtype=np.int64)
    later, ref = _runs(h)
    first[later] = ref
    return first


def _parts(values: pa.Array, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(first 8 bytes, last 8 bytes, length, longest) of each value (of ``rows``): equal values have equal
    parts, and values of at most 16 bytes with equal parts are equal."""
    padded, starts, lengths = _spans(values)
    if rows is not None:
        starts, lengths = starts[rows], lengths[rows]
    longest = int(lengths.max()) if len(lengths) else 0
    head = _words(padded, starts, lengths, 0)
    if longest > 8:
        at_every_byte = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded.data, strides=(1,))
        tail = at_every_byte[starts + np.maximum(lengths - 8, 0)].astype(np.uint64, copy=False)  # inside: ends are 8 bytes short of the end
        tail &= _MASKS[np.minimum(lengths, 8)]  # a value under 8 bytes: its tail is its head
    else:  # the head holds every byte
        tail = np.zeros(len(lengths), dtype=np.uint64)
    return head, tail, lengths, longest


def first_equal(values: pa.Array, rows: np.ndarray | None = None) -> np.ndarray:
    """An exact identity of each value: ``first[i]``, the index of the first value equal to value ``i``
    (equal values share it; ``first[i] == i`` for the first of each).

    Two stages, both exact. (1) A key from each value's first and last 8 bytes and its length, grouped
    by one ``np.sort`` (:func:`_first_equal`): values of at most 16 bytes whose parts all match the first
    of their key are equal. (2) The other keys shared by several values (in most logs: the true
    duplicates) are grouped again on all their bytes (:func:`_hashed_first_equal`), on those values only.

    :param values: a binary or string array.
    :param rows: optional indices into ``values``: group only these (the result is indexed like ``rows``).
    """
    head, tail, lengths, longest = _parts(values, rows)
    n = len(lengths)
    if n == 0:
        return np.zeros(0, np.int64)
    first = np.arange(n, dtype=np.int64)
    later, ref = _runs(_mix(head, tail, lengths))
    if len(later):
        first[later] = ref
        if longest <= 7:  # the head word and the length in its top byte: the whole value, one compare
            packed = _packed(head, lengths)
            settled = packed[later] == packed[ref]
        else:
            settled = (head[later] == head[ref]) & (lengths[later] == lengths[ref])
        if longest > 8:
            settled &= tail[later] == tail[ref]
        if longest > 16:
            settled &= lengths[later] <= 16
        if not settled.all():
            # every value of a key holding an unsure one: equal values share a key, so the regrouping of
            # these values alone is the regrouping of all that could be equal to them
            unsure_keys = np.unique(ref[~settled])
            in_run = np.isin(ref, unsure_keys)
            again = np.union1d(unsure_keys, later[in_run])
            picked = again if rows is None else rows[again]
            first[again] = again[_hashed_first_equal(values.take(pa.array(picked, pa.int64())))]
    return first


#: :func:`code_point_order` sorts values of at most this many uint64 words on their own bytes; longer ones by Arrow.
_ORDER_WORDS = 4


def code_point_order(values: pa.Array) -> np.ndarray:
    """The indices that sort a string (or binary) array in code-point order, stable: the order of Python's
    ``sorted`` and of Arrow's ``sort_indices`` (UTF-8 keeps code-point order byte for byte).

    Values of at most ``8 * _ORDER_WORDS`` bytes without a NUL byte are ordered by their bytes read as
    big-endian uint64 words, zero-padded (a value sorts before every longer value it begins: its padding is
    lower than any byte), by one integer sort (``np.lexsort`` over the words); others by Arrow's
    ``sort_indices``, which compares strings one pair at a time (3x slower on a catalogue of short ids).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if len(values) == 0:
        return np.zeros(0, np.int64)
    padded, starts, lengths = _spans(values)
    n_words = -(-int(lengths.max()) // 8)
    if values.null_count or n_words > _ORDER_WORDS or not padded[: int(starts[-1] + lengths[-1])].all():
        return pc.sort_indices(values).to_numpy().astype(np.int64, copy=False)
    if n_words == 0:  # every value empty
        return np.arange(len(values), dtype=np.int64)
    # _words reads little-endian with the bytes past a value's end zeroed; byte-swapped, a value's first byte is
    # its word's most significant one
    keys = [_words(padded, starts, lengths, w).byteswap() for w in range(n_words)]
    if n_words == 1:
        return np.argsort(keys[0], kind="stable").astype(np.int64, copy=False)
    return np.lexsort(keys[::-1]).astype(np.int64, copy=False)  # lexsort: the last key is the primary one


def _packed(head: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Values of at most 7 bytes as one uint64 each, exact: their bytes (:func:`_words`) and the length
    in the top byte (empty: 0)."""
    packed = lengths.astype(np.uint64)
    packed <<= np.uint64(56)
    packed |= head
    return packed


def identity(values: pa.Array) -> np.ndarray:
    """An exact identity of each value as one integer: equal values, and only they, get equal numbers
    (the value itself when every value is at most 7 bytes, else :func:`first_equal`'s index)."""
    head, _, lengths, longest = _parts(values)
    if longest <= 7:
        return _packed(head, lengths).view(np.int64)
    return first_equal(values)


def _hashed_first_equal(values: pa.Array) -> np.ndarray:
    """:func:`first_equal` on all the bytes: a hash of every value (:func:`hash_binary`) grouped by
    :func:`_first_equal`; every value whose hash matched an earlier one is compared byte for byte with
    it, and if any differs (a collision, vanishingly rare) Arrow's exact dictionary encoding decides."""
    n = len(values)
    if n == 0:
        return np.zeros(0, np.int64)
    h, lengths, words = hash_binary(values)
    first = _first_equal(h)
    later = np.flatnonzero(first != np.arange(n))
    if len(later):
        ref = first[later]
        if words is not None:
            same = bool(np.array_equal(lengths[later], lengths[ref]) and np.array_equal(words[later], words[ref]))
        else:
            same = bool(pc.all(pc.equal(values.take(pa.array(later)), values.take(pa.array(ref)))).as_py())
        if not same:
            return _exact_first_equal(values)
    return first


def _exact_first_equal(values: pa.Array) -> np.ndarray:
    """:func:`first_equal` by Arrow's dictionary encoding (exact, slower): codes follow first appearance."""
    codes = pc.dictionary_encode(values).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(codes)
    seen_max = np.maximum.accumulate(codes)
    is_first = np.ones(n, dtype=bool)
    is_first[1:] = codes[1:] > seen_max[:-1]
    return np.flatnonzero(is_first)[codes]
