"""Plain-bytes and JSON encodings of named numpy arrays (no pickle), used for the per-user state.

A service keeps each user's interest state in whatever store it has (Redis, a SQL blob column, a
JSON document store), so the state must round-trip through bytes and JSON exactly and must never be
unpickled (a pickle from a store is code execution). Layout of the bytes form::

    offset  size  content
    0       4     magic b"IGUS"
    4       2     codec version (uint16, little-endian)
    6       4     header length H (uint32, little-endian)
    10      H     header, UTF-8 JSON: {"fields": [[name, dtype, shape], ...], "meta": {...}}
    10+H    ...   each field's raw little-endian bytes, in header order
    end-4   4     CRC-32 of everything before it (uint32, little-endian): detects a truncated or
                  damaged blob instead of silently reading garbage profiles

Version 2 adds **sparse fields**: a header entry ``[name, dtype, shape, nnz]`` (four items) is stored as the
``nnz`` positions (uint32, ascending, into the flat array) of its elements whose bytes are not all zero, then
those ``nnz`` elements; every other element is zero. The encoder writes a field so when that takes less than half
its dense bytes (a user's category counts: one column per category of the catalogue, a few of them touched), and
writes version 1, byte for byte the layout above, when no field is sparse: a reader of version 1 reads every blob
without a sparse field. Values come back bit for bit (-0.0 and NaN payloads included: a zero is all-zero bytes).

The JSON form is ``{"codec": 1, "meta": {...}, "fields": {name: {"dtype", "shape", "data"}}}`` with
``data`` the flat list of values; float32 values survive the trip exactly (a float32 widened to a
Python float prints with enough digits to come back to the same float32).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from interestgym.errors import InterestGymError

MAGIC = b"IGUS"
#: The newest version written (2: with sparse fields); a blob without a sparse field is written as version 1.
CODEC_VERSION = 2
#: The JSON form's version (dense values only).
JSON_CODEC_VERSION = 1
#: Versions :func:`decode_bytes` reads.
READABLE_CODEC_VERSIONS = (1, 2)
#: Fields smaller than this many elements are always dense.
_SPARSE_MIN_SIZE = 64
_PREFIX = struct.Struct("<4sHI")
_CRC = struct.Struct("<I")
#: dtypes a state field may have; anything else is refused rather than guessed.
ALLOWED_DTYPES = ("<f4", "<f8", "<i8", "<i4", "|b1")


class StateFormatError(InterestGymError):
    """A serialised state blob cannot be decoded; the message says which part is wrong."""


def _dtype_str(arr: np.ndarray) -> str:
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    s = dt.str
    if s not in ALLOWED_DTYPES:
        raise StateFormatError(f"state field dtype {arr.dtype}; expected one of {', '.join(ALLOWED_DTYPES)}")
    return s


def _nonzero_positions(flat: np.ndarray) -> np.ndarray:
    """Positions of the elements of a 1-d array whose bytes are not all zero (-0.0 is not zero here)."""
    return np.flatnonzero(flat.view(f"<u{flat.dtype.itemsize}"))


def encode_bytes(fields: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None, *, sparse: bool = True) -> bytes:
    """Named arrays (+ JSON-able ``meta``) -> bytes in the layout above (mostly-zero fields sparse; ``sparse=False``:
    every field dense, i.e. version 1, which earlier releases read)."""
    spec: list[list[Any]] = []
    chunks = []
    for name, value in fields.items():
        arr = np.asarray(value)
        dtype = _dtype_str(arr)
        flat = np.ascontiguousarray(arr, dtype=np.dtype(dtype)).reshape(-1)
        if sparse and flat.size >= _SPARSE_MIN_SIZE:
            at = _nonzero_positions(flat)
            if len(at) * (4 + flat.dtype.itemsize) * 2 < flat.nbytes:
                spec.append([name, dtype, list(arr.shape), len(at)])
                chunks += [at.astype("<u4").tobytes(), flat[at].tobytes()]
                continue
        spec.append([name, dtype, list(arr.shape)])
        chunks.append(flat.tobytes())
    version = CODEC_VERSION if any(len(entry) == 4 for entry in spec) else 1
    header = json.dumps({"fields": spec, "meta": dict(meta or {})}, separators=(",", ":")).encode("utf-8")
    body = _PREFIX.pack(MAGIC, version, len(header)) + header + b"".join(chunks)
    return body + _CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def decode_bytes(data: bytes | bytearray | memoryview) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of :func:`encode_bytes`; raises :class:`StateFormatError` naming what is wrong."""
    data = bytes(data)
    if len(data) < _PREFIX.size + _CRC.size:
        raise StateFormatError(f"state blob of {len(data)} bytes; expected at least {_PREFIX.size + _CRC.size} (magic, version, header, CRC)")
    magic, version, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise StateFormatError(f"state blob magic is {magic!r}; expected {MAGIC!r} (not an interestgym user state)")
    if version not in READABLE_CODEC_VERSIONS:
        raise StateFormatError(f"state blob codec version {version}; this interestgym reads versions "
                               f"{', '.join(map(str, READABLE_CODEC_VERSIONS))}")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) & 0xFFFFFFFF != crc:
        raise StateFormatError(f"state blob of {len(data)} bytes fails its CRC-32 check; it was truncated or damaged in storage")
    start = _PREFIX.size
    try:
        header = json.loads(data[start : start + header_len].decode("utf-8"))
        spec = header["fields"]
        meta = header.get("meta", {})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StateFormatError(f"state blob header is not the expected JSON ({exc})") from None
    offset = start + header_len
    end = len(data) - _CRC.size
    fields: dict[str, np.ndarray] = {}
    for entry in spec:
        try:
            if not isinstance(entry, list) or len(entry) not in ((3, 4) if version == 2 else (3,)):
                raise ValueError("not a list of 3 items" + (" (4: sparse)" if version == 2 else ""))
            name, dtype, shape = entry[:3]
            nnz = int(entry[3]) if len(entry) == 4 else None
            dt = np.dtype(dtype)
            shape = tuple(int(s) for s in shape)
        except (ValueError, TypeError) as exc:
            raise StateFormatError(f"state blob header field entry {entry!r}: {exc}; expected [name, dtype, shape]"
                                   + (" or [name, dtype, shape, nnz]" if version == 2 else "")) from None
        if dtype not in ALLOWED_DTYPES:
            raise StateFormatError(f"state blob field {name!r} has dtype {dtype!r}; expected one of {', '.join(ALLOWED_DTYPES)}")
        if any(s < 0 for s in shape):
            raise StateFormatError(f"state blob field {name!r} has shape {list(shape)}; expected sizes >= 0")
        size = math.prod(shape)  # (math.prod: numpy's prod costs microseconds per field of a hot path)
        if nnz is not None and not 0 <= nnz <= size:
            raise StateFormatError(f"state blob field {name!r} is sparse with {nnz} values; its shape {list(shape)} holds {size}")
        n_bytes = (size if nnz is None else nnz) * dt.itemsize + (0 if nnz is None else 4 * nnz)
        if offset + n_bytes > end:
            raise StateFormatError(f"state blob field {name!r} needs {n_bytes} bytes at offset {offset}; only {end - offset} remain")
        if nnz is None:
            # copy(): the result must own writable memory, not alias the caller's bytes.
            fields[name] = np.frombuffer(data, dtype=dt, count=size, offset=offset).reshape(shape).copy()
        else:
            at = np.frombuffer(data, dtype="<u4", count=nnz, offset=offset).astype(np.int64)
            if nnz and (at[-1] >= size or (nnz > 1 and not (np.diff(at) > 0).all())):
                raise StateFormatError(f"state blob field {name!r}: its sparse positions are not ascending positions below {size}")
            flat = np.zeros(size, dtype=dt)
            flat[at] = np.frombuffer(data, dtype=dt, count=nnz, offset=offset + 4 * nnz)
            fields[name] = flat.reshape(shape)
        offset += n_bytes
    if offset != end:
        raise StateFormatError(f"state blob has {end - offset} bytes after its last field; expected none")
    return fields, meta


def encode_json(fields: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> str:
    """Named arrays (+ ``meta``) -> a JSON document (see the module docstring)."""
    out: dict[str, Any] = {"codec": JSON_CODEC_VERSION, "meta": dict(meta or {}), "fields": {}}
    for name, value in fields.items():
        arr = np.asarray(value)
        dtype = _dtype_str(arr)
        out["fields"][name] = {"dtype": dtype, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}
    return json.dumps(out, separators=(",", ":"))


def decode_json(text: str | bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of :func:`encode_json`."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateFormatError(f"state JSON does not parse ({exc})") from None
    if not isinstance(doc, dict) or doc.get("codec") != JSON_CODEC_VERSION or not isinstance(doc.get("fields"), dict):
        found = doc.get("codec") if isinstance(doc, dict) else type(doc).__name__
        raise StateFormatError(f"state JSON codec {found!r}; expected an object with codec {JSON_CODEC_VERSION} and 'fields'")
    fields: dict[str, np.ndarray] = {}
    for name, entry in doc["fields"].items():
        try:
            dtype, shape, values = entry["dtype"], tuple(int(s) for s in entry["shape"]), entry["data"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"state JSON field {name!r}: {exc}; expected dtype, shape and data") from None
        if dtype not in ALLOWED_DTYPES:
            raise StateFormatError(f"state JSON field {name!r} has dtype {dtype!r}; expected one of {', '.join(ALLOWED_DTYPES)}")
        arr = np.asarray(values, dtype=np.dtype(dtype))
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise StateFormatError(f"state JSON field {name!r} has {arr.size} values; shape {list(shape)} needs {int(np.prod(shape))}")
        fields[name] = arr.reshape(shape)
    meta = doc.get("meta", {})
    return fields, meta if isinstance(meta, dict) else {}
