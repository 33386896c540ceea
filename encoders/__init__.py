"""Item encoders and the embedding cache (imported as ``interestgym.encoders``).

The encode stage of the pipeline: a dataset's items -> ``DATASET/embeddings/NAME.npy`` (float32,
unit rows aligned with ``items.parquet``) + ``NAME.json``, through a cache keyed by
(encoder fingerprint, text sha256).

* :mod:`~interestgym.encoders.base`      the :class:`Encoder` interface
* :mod:`~interestgym.encoders.bert`      BERT / any local Hugging Face model (``minilm`` by default)
* :mod:`~interestgym.encoders.hashing`   signed feature hashing (no model)
* :mod:`~interestgym.encoders.tfidf`     TF-IDF + truncated SVD, fitted on the item texts
* :mod:`~interestgym.encoders.cooc`      behaviour co-occurrence (PPMI + SVD) for items without text
* :mod:`~interestgym.encoders.cache`     the embedding cache
* :mod:`~interestgym.encoders.registry`  ``--encoder NAME_OR_PATH`` -> encoder
* :mod:`~interestgym.encoders.pipeline`  :func:`encode_dataset`, used by ``interestgym encode``
* :mod:`~interestgym.encoders.onnx_backend`  ``--backend onnx`` (and ``--quantize int8``)
* :mod:`~interestgym.encoders.pairs`     co-engagement pairs of one split's users (training users for fine-tuning)
* :mod:`~interestgym.encoders.finetune`  contrastive fine-tuning of a BERT encoder, used by ``interestgym finetune``

>>> from interestgym.encoders import build_encoder, encode_dataset   # doctest: +SKIP
>>> encode_dataset("runs/data/ml-100k", build_encoder("minilm")).matrix.shape   # doctest: +SKIP
(1682, 384)

Nothing heavy is imported here: torch and transformers load only when a BERT encoder runs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EncodeResult", "Encoder", "build_encoder", "encode_dataset"]


def __getattr__(name: str) -> Any:  # lazy re-exports (PEP 562)
    if name == "build_encoder":
        from interestgym.encoders.registry import build_encoder

        return build_encoder
    if name in ("encode_dataset", "EncodeResult"):
        from interestgym.encoders import pipeline

        return getattr(pipeline, name)
    if name == "Encoder":
        from interestgym.encoders.base import Encoder

        return Encoder
    raise AttributeError(f"module 'interestgym.encoders' has no attribute {name!r}")
