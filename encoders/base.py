"""The one small interface every item encoder implements, and helpers they share.

An encoder turns the *inputs* of items (their texts; for ``cooc``, their ids) into a float32 matrix
with L2-normalised rows. It has a short ``name`` (the default file name under
``DATASET/embeddings/``), a ``kind``, a ``dim`` and a ``fingerprint``: a sha256 that changes whenever
anything that changes the vectors changes (weights, tokenizer, pooling, max length, the fitted corpus,
...). The embedding cache is keyed by (fingerprint, sha256 of the input), so a fingerprint that
missed a change would serve stale vectors, and one that changed needlessly would re-encode everything.

Encoders fitted on the dataset itself (``tfidf`` on the item texts, ``cooc`` on the training users'
events) learn in :meth:`Encoder.fit_dataset`, which must run before ``dim`` / ``fingerprint`` are read.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from interestgym.data.dataset import Dataset

#: Rows whose norm is below this are treated as zero vectors (no features): they cannot be normalised.
ZERO_NORM = 1e-12


#: The largest ``--dim`` of the encoders that take one (hashing, tfidf, cooc): the vectors are a dense float32 matrix
#: of items x dim (16,384 dimensions are 64 KB an item; a larger --dim ran out of memory with a traceback).
MAX_DIM = 16_384


def check_dim(kind: str, dim: int) -> None:
    """Refuse a ``dim`` outside 2 .. :data:`MAX_DIM` (the encoders that keep an items x dim matrix of their own)."""
    if not 2 <= dim <= MAX_DIM:
        raise ValueError(f"{kind} dim {dim}: expected 2 to {MAX_DIM:,} (a matrix of items x dim floats is kept)")


class Encoder(ABC):
    """Item inputs -> float32 matrix (n, dim) with unit rows.

    Subclasses set ``kind`` and ``name`` and implement :attr:`dim`, :attr:`fingerprint` and
    :meth:`encode`.
    """

    #: What family of encoder this is: "bert", "hashing", "tfidf" or "cooc".
    kind: str = ""
    #: Short name: the default embedding name (``DATASET/embeddings/<name>.npy``).
    name: str = ""
    #: True if :meth:`fit_dataset` must run before encoding (the encoder learns from the dataset).
    needs_fit: bool = False

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of columns of the encoded matrix."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """sha256 hex of everything that determines the vectors (see the module docstring)."""

    @abstractmethod
    def encode(self, inputs: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Encode ``inputs`` to a float32 (len(inputs), dim) matrix with unit rows.

        :param inputs: what :meth:`inputs` returned for the items to encode (texts, or item ids).
        :param progress: show progress on stderr (``None``: a bar on a terminal, log lines otherwise).
        """

    def inputs(self, items: pd.DataFrame) -> list[str]:
        """The string each item is encoded from (and cached by): its text, by default.

        Missing texts (None/NaN) become "" here; the caller counts and reports empty texts.
        """
        return items["text"].fillna("").astype(str).tolist()

    def fit_dataset(self, dataset: Dataset) -> None:
        """Learn from the dataset before encoding (only encoders with ``needs_fit``)."""

    def metadata(self) -> dict[str, Any]:
        """Encoder-specific facts for the embedding's JSON metadata (options, pooling, device, ...)."""
        return {}

    def fit_report(self) -> list[str]:
        """Human-readable lines about fitting (e.g. fallback counts) for the command's output."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


# ------------------------------------------------------------------------------------------ helpers
def l2_normalise_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (float32 matrix with unit rows, boolean mask of rows that were zero and stay zero)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1)
    zero = norms < ZERO_NORM
    out = matrix / np.where(zero, 1.0, norms)[:, None]
    return out.astype(np.float32, copy=False), zero


def hashed_unit_vectors(keys: Sequence[str], dim: int, salt: str) -> np.ndarray:
    """A deterministic random unit vector per key: the fallback for an input with no features.

    Seeded by sha256(salt + key), so the same key always gets the same vector, on every machine, and
    different keys get (nearly) orthogonal ones.
    """
    out = np.empty((len(keys), dim), dtype=np.float32)
    for i, key in enumerate(keys):
        seed = int.from_bytes(hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(dim)
        out[i] = v / np.linalg.norm(v)
    return out


def fingerprint_of(parts: dict[str, Any]) -> str:
    """sha256 of a JSON-serialisable description (keys sorted, so dict order does not matter)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of a list of texts, unambiguous (each text is length-prefixed)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
