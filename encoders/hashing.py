"""``hashing``: a model-free, very fast text encoder (signed feature hashing of words and n-grams).

Each text's features (:mod:`interestgym.encoders.tokenize`: words after jieba / stop-word removal,
word bigrams, sub-word character grams) are hashed into ``dim`` buckets with MurmurHash3, each with a
hashed sign (so collisions cancel in expectation instead of adding up), then the row is
L2-normalised. The cosine of two rows approximates the cosine of their bag-of-features vectors.

Nothing is fitted: a text's vector depends on that text only, so the cache re-encodes exactly the
texts that changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from interestgym.encoders.base import (
    Encoder,
    check_dim,
    fingerprint_of,
    l2_normalise_rows,
)
from interestgym.encoders.tokenize import (
    TOKENIZER_VERSION,
    jieba_version,
    stop_words_sha256,
    weighted_features,
)

DEFAULT_HASHING_DIM = 512

_CHUNK = 4096  # texts hashed per step of the progress bar


class HashingEncoder(Encoder):
    """Signed feature hashing of word / bigram / char-gram features into ``dim`` dimensions.

    :param dim: output dimension (number of hash buckets).
    """

    kind = "hashing"
    name = "hashing"

    def __init__(self, dim: int = DEFAULT_HASHING_DIM) -> None:
        check_dim("hashing", dim)
        self._dim = int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(
            {
                "kind": self.kind,
                "dim": self._dim,
                "hash": "murmurhash3_32 signed (sklearn FeatureHasher)",
                "tokenizer_version": TOKENIZER_VERSION,
                "jieba": jieba_version(),
                "stop_words": stop_words_sha256(),
                "normalisation": "l2",
            }
        )

    def metadata(self) -> dict[str, Any]:
        return {"options": {"dim": self._dim}, "tokenizer_version": TOKENIZER_VERSION}

    def encode(self, inputs: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        from sklearn.feature_extraction import FeatureHasher

        from interestgym.progress import progress_bar

        hasher = FeatureHasher(n_features=self._dim, input_type="dict", alternate_sign=True, dtype=np.float32)
        out = np.empty((len(inputs), self._dim), dtype=np.float32)
        with progress_bar(total=len(inputs), desc="hashing", unit="text", enabled=progress) as bar:
            for start in range(0, len(inputs), _CHUNK):
                chunk = inputs[start : start + _CHUNK]
                sparse = hasher.transform(weighted_features(t) for t in chunk)
                out[start : start + len(chunk)] = sparse.toarray()
                bar.update(len(chunk))
        out, zero = l2_normalise_rows(out)
        if zero.any():
            # Every text has at least one feature, but all its features can cancel by sign in one
            # bucket (e.g. 2 features, same bucket, opposite signs): put 1 in its first feature's bucket.
            for i in np.flatnonzero(zero):
                sparse = hasher.transform([{k: 1.0 for k in list(weighted_features(inputs[i]))[:1]}])
                out[i] = np.abs(sparse.toarray()[0])
        return out
