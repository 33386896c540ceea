"""``tfidf``: bag-of-words TF-IDF features reduced to a dense dimension with truncated SVD (LSA).

Fitted on the dataset's item texts: the vocabulary, the IDF weights and the SVD basis all depend on
the whole corpus. So the fingerprint includes a hash of the corpus, and **changing any item text (or
adding an item) changes every vector**: the cache then re-encodes all texts. That is inherent to
TF-IDF/LSA; use ``hashing`` or a BERT model for per-text incremental updates.

Pipeline: features (:mod:`interestgym.encoders.tokenize`) -> TfidfVectorizer (sublinear tf,
smooth idf, l2) -> TruncatedSVD (randomised, fixed seed) to ``min(dim, n_texts - 1, n_features - 1)``
components -> L2-normalised rows. A text with no known feature (only possible for a text outside
the fitted corpus) gets a deterministic hashed random unit vector instead of a zero row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from interestgym.encoders.base import (
    Encoder,
    fingerprint_of,
    hashed_unit_vectors,
    l2_normalise_rows,
    texts_sha256,
)
from interestgym.encoders.tokenize import (
    TOKENIZER_VERSION,
    features,
    jieba_version,
    stop_words_sha256,
)

from interestgym.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from interestgym.data.dataset import Dataset

DEFAULT_TFIDF_DIM = 256
_SVD_SEED = 0
_SVD_ITERATIONS = 7


class TfidfEncoder(Encoder):
    """TF-IDF + truncated SVD, fitted on a corpus (the dataset's item texts).

    :param dim: requested output dimension; the fitted dimension can be smaller for a small corpus
        (SVD gives at most ``min(n_texts, n_features) - 1`` components).
    """

    kind = "tfidf"
    name = "tfidf"
    needs_fit = True

    def __init__(self, dim: int = DEFAULT_TFIDF_DIM) -> None:
        if dim < 2:
            raise ValueError(f"tfidf dim {dim}: expected at least 2")
        self.requested_dim = int(dim)
        self._vectorizer = None
        self._svd = None
        self._corpus_sha256: str | None = None
        self._n_corpus = 0
        self._n_features = 0

    # ------------------------------------------------------------------------------------- fitting
    def fit_dataset(self, dataset: Dataset) -> None:
        self.fit(self.inputs(dataset.items))

    def fit(self, corpus: Sequence[str]) -> TfidfEncoder:
        """Fit the vocabulary, IDF and SVD basis on ``corpus`` (in order: the order is hashed)."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        corpus = list(corpus)
        if len(corpus) < 3:
            raise DataError(f"tfidf: the corpus has {len(corpus)} texts; expected at least 3 to fit TF-IDF + SVD")
        vectorizer = TfidfVectorizer(analyzer=features, sublinear_tf=True, smooth_idf=True, norm="l2", dtype=np.float32)
        tfidf = vectorizer.fit_transform(corpus)
        n_components = min(self.requested_dim, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
        if n_components < 2:
            raise DataError(
                f"tfidf: the corpus ({tfidf.shape[0]} texts, {tfidf.shape[1]} distinct features) supports "
                f"{n_components} SVD components; expected at least 2 (more, and more varied, texts)"
            )
        svd = TruncatedSVD(n_components=n_components, algorithm="randomized", n_iter=_SVD_ITERATIONS, random_state=_SVD_SEED)
        svd.fit(tfidf)
        self._vectorizer, self._svd = vectorizer, svd
        self._corpus_sha256 = texts_sha256(corpus)
        self._n_corpus, self._n_features = tfidf.shape
        return self

    def _require_fit(self) -> None:
        if self._svd is None:
            raise RuntimeError("TfidfEncoder used before fit(): call fit(corpus) or fit_dataset(dataset) first")

    # ---------------------------------------------------------------------------------- interface
    @property
    def dim(self) -> int:
        self._require_fit()
        return int(self._svd.n_components)

    @property
    def fingerprint(self) -> str:
        self._require_fit()
        import sklearn

        return fingerprint_of(
            {
                "kind": self.kind,
                "requested_dim": self.requested_dim,
                "dim": self.dim,
                "corpus_sha256": self._corpus_sha256,
                "tfidf": "sublinear_tf smooth_idf l2",
                "svd": f"randomized n_iter={_SVD_ITERATIONS} seed={_SVD_SEED}",
                "sklearn": sklearn.__version__,
                "tokenizer_version": TOKENIZER_VERSION,
                "jieba": jieba_version(),
                "stop_words": stop_words_sha256(),
                "normalisation": "l2",
            }
        )

    def metadata(self) -> dict[str, Any]:
        self._require_fit()
        return {
            "options": {"dim": self.requested_dim},
            "corpus_sha256": self._corpus_sha256,
            "corpus_texts": self._n_corpus,
            "vocabulary_size": self._n_features,
            "explained_variance": round(float(self._svd.explained_variance_ratio_.sum()), 4),
            "tokenizer_version": TOKENIZER_VERSION,
        }

    def fit_report(self) -> list[str]:
        self._require_fit()
        lines = [
            (f"tfidf: fitted on {self._n_corpus} texts, {self._n_features} features, {self.dim} SVD components "
             f"({self._svd.explained_variance_ratio_.sum():.0%} of the variance)")
        ]
        if self.dim < self.requested_dim:
            lines.append(f"tfidf: --dim {self.requested_dim} asked, but the corpus supports only {self.dim} components")
        return lines

    def encode(self, inputs: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        from interestgym.progress import progress_bar

        self._require_fit()
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        step = 8192
        with progress_bar(total=len(inputs), desc="tfidf", unit="text", enabled=progress) as bar:
            for start in range(0, len(inputs), step):
                chunk = list(inputs[start : start + step])
                out[start : start + len(chunk)] = self._svd.transform(self._vectorizer.transform(chunk))
                bar.update(len(chunk))
        out, zero = l2_normalise_rows(out)
        if zero.any():
            idx = np.flatnonzero(zero)
            out[idx] = hashed_unit_vectors([inputs[i] for i in idx], self.dim, salt=f"tfidf:{self._corpus_sha256}")
        return out
