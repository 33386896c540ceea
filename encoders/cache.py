"""The embedding cache: vectors keyed by (encoder fingerprint, sha256 of the encoded input).

One file per fingerprint, under the dataset: ``DATASET/cache/embeddings/<kind>-<fingerprint[:32]>.npz``
(uncompressed npz, written atomically) holding

* ``keys``     uint8 (n, 32): sha256 digests of the inputs (texts, or item ids for ``cooc``),
* ``vectors``  float32 (n, dim): their unit-norm vectors,
* ``meta``     a JSON string: format version, full fingerprint, kind, dim, count, and the sha256 of
  the two arrays' bytes.

A file that cannot be read, whose meta disagrees with its arrays, whose checksum does not match, or
whose fingerprint / dim is not the encoder's, is reported (one line on stderr, saying why) and
rebuilt from scratch. Entries are never evicted: a text that is edited back reuses its old vector.
Delete ``DATASET/cache/`` to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from interestgym.io import atomic_path

CACHE_FORMAT = 1
KEY_BYTES = 32


def input_key(text: str) -> bytes:
    """The cache key of one input: its sha256 digest (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def cache_dir(dataset_path: str | Path) -> Path:
    return Path(dataset_path) / "cache" / "embeddings"


def _checksum(keys: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(keys).tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """The cached vectors of one encoder fingerprint.

    :param directory: the cache folder (``DATASET/cache/embeddings``).
    :param kind: the encoder's kind (part of the file name, for people browsing the folder).
    :param fingerprint: the encoder's full fingerprint.
    :param dim: the encoder's dimension.
    :param warn: called with a one-line message when a cache file is corrupt or mismatched.
    """

    def __init__(self, directory: str | Path, kind: str, fingerprint: str, dim: int, *, warn: Callable[[str], None] | None = None) -> None:
        self.directory = Path(directory)
        self.kind = kind
        self.fingerprint = fingerprint
        self.dim = int(dim)
        self.path = self.directory / f"{kind}-{fingerprint[:32]}.npz"
        self._warn = warn or (lambda message: None)
        self._row: dict[bytes, int] = {}
        self._keys = np.empty((0, KEY_BYTES), dtype=np.uint8)
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._new_keys: list[bytes] = []
        self._new_vectors: list[np.ndarray] = []
        #: Why the file on disk was discarded (None if it was fine or absent).
        self.rebuilt_because: str | None = None
        self._load()

    # ------------------------------------------------------------------------------------ reading
    def _load(self) -> None:
        if not self.path.exists():
            return
        problem = self._read()
        if problem is not None:
            self.rebuilt_because = problem
            self._warn(f"embedding cache {self.path} {problem}; rebuilding it (all texts of this encoder are encoded again)")
            self._keys = np.empty((0, KEY_BYTES), dtype=np.uint8)
            self._vectors = np.empty((0, self.dim), dtype=np.float32)
            self._row = {}

    def _read(self) -> str | None:
        """Load the file; return why it is unusable, or None."""
        try:
            with np.load(self.path, allow_pickle=False) as npz:
                names = set(npz.files)
                if not {"keys", "vectors", "meta"} <= names:
                    return f"is incomplete (arrays {sorted(names)}; expected keys, vectors, meta)"
                keys, vectors = npz["keys"], npz["vectors"]
                meta = json.loads(str(npz["meta"]))
        except Exception as exc:  # noqa: BLE001 - zip/CRC errors, truncated arrays, bad JSON: all mean "corrupt"
            return f"is corrupt ({type(exc).__name__}: {exc})"
        if meta.get("format") != CACHE_FORMAT:
            return f"has format {meta.get('format')!r}; expected {CACHE_FORMAT}"
        if meta.get("fingerprint") != self.fingerprint:
            return f"belongs to fingerprint {str(meta.get('fingerprint'))[:16]}...; expected {self.fingerprint[:16]}..."
        if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES:
            return f"has keys of shape {keys.shape} dtype {keys.dtype}; expected (n, {KEY_BYTES}) uint8"
        if vectors.dtype != np.float32 or vectors.shape != (len(keys), self.dim):
            return f"has vectors of shape {vectors.shape} dtype {vectors.dtype}; expected ({len(keys)}, {self.dim}) float32"
        if meta.get("count") != len(keys) or meta.get("dim") != self.dim:
            return f"meta says count={meta.get('count')} dim={meta.get('dim')}; the arrays hold {len(keys)} x {vectors.shape[1]}"
        if meta.get("sha256") != _checksum(keys, vectors):
            return "fails its checksum (the arrays were altered)"
        self._keys, self._vectors = keys, vectors
        self._row = {k.tobytes(): i for i, k in enumerate(keys)}
        return None

    # ------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        self._merge()
        return len(self._row)

    def __contains__(self, key: bytes) -> bool:
        self._merge()
        return key in self._row

    def get_many(self, keys: Sequence[bytes]) -> np.ndarray:
        """Vectors of ``keys`` (all must be present, in the file or added this run)."""
        self._merge()
        return self._vectors[[self._row[k] for k in keys]] if keys else np.empty((0, self.dim), dtype=np.float32)

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        if len(keys) != len(vectors) or (len(vectors) and vectors.shape[1] != self.dim):
            raise ValueError(f"cache add: {len(keys)} keys, vectors of shape {vectors.shape}; expected ({len(keys)}, {self.dim})")
        self._new_keys.extend(keys)
        self._new_vectors.append(np.asarray(vectors, dtype=np.float32))

    def _merge(self) -> None:
        if not self._new_keys:
            return
        fresh, pending = [], set()
        for i, k in enumerate(self._new_keys):  # skip keys already stored, and repeats among the new
            if k not in self._row and k not in pending:
                pending.add(k)
                fresh.append(i)
        new_vectors = np.concatenate(self._new_vectors)[fresh]
        new_keys = np.frombuffer(b"".join(self._new_keys[i] for i in fresh), dtype=np.uint8).reshape(-1, KEY_BYTES)
        base = len(self._keys)
        self._keys = np.concatenate([self._keys, new_keys])
        self._vectors = np.concatenate([self._vectors, new_vectors])
        for j, i in enumerate(fresh):
            self._row[self._new_keys[i]] = base + j
        self._new_keys, self._new_vectors = [], []

    @property
    def dirty(self) -> bool:
        return bool(self._new_keys) or self.rebuilt_because is not None

    def save(self) -> None:
        """Write the file atomically (only if something changed)."""
        if not self.dirty:
            return
        self._merge()
        meta = {
            "format": CACHE_FORMAT,
            "fingerprint": self.fingerprint,
            "kind": self.kind,
            "dim": self.dim,
            "count": len(self._keys),
            "sha256": _checksum(self._keys, self._vectors),
        }
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=self._keys, vectors=self._vectors, meta=np.array(json.dumps(meta)))
        self.rebuilt_because = None
