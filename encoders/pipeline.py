"""The encode stage: a dataset's items -> ``DATASET/embeddings/NAME.npy`` + ``NAME.json``, via the cache.

Contract with the env (see :mod:`interestgym.data.schema`): ``NAME.npy`` is float32, shape
(n_items, dim), row i = row i of ``items.parquet``, every row of unit L2 norm; ``NAME.json`` is its
metadata (encoder, kind, fingerprint, dim, n_items, the item-id list's hash, options, counts).
:meth:`interestgym.data.dataset.Dataset.load_embeddings` checks the hash, so embeddings computed
before the items changed are refused with a message to re-run ``encode``.

Only inputs that are not in the cache (new or changed texts) go through the encoder; identical
texts are encoded once.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from interestgym.encoders.base import Encoder
from interestgym.encoders.cache import EmbeddingCache, cache_dir, input_key

from interestgym import __version__
from interestgym.data.dataset import (
    Dataset,
    item_ids_sha256,
    item_texts_sha256,
    matrix_sha256,
)
from interestgym.errors import InterestGymError
from interestgym.io import save_npy_atomic, write_json_atomic

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Rows must have unit norm to within this (float32 rounding of a normalised vector is ~1e-7).
_NORM_TOLERANCE = 1e-3


@dataclass
class EncodeResult:
    """What :func:`encode_dataset` wrote and how much work it did."""

    name: str
    matrix_path: Path
    meta_path: Path
    matrix: np.ndarray
    meta: dict[str, Any]
    #: Distinct inputs that went through the encoder this run.
    encoded: int
    #: Distinct inputs whose vectors came from the cache.
    from_cache: int

    def summary(self) -> str:
        n, d = self.matrix.shape
        fit = self.meta.get("encoder_details", {}).get("fit") if self.meta.get("kind") == "cooc" else None
        if fit:  # cooc encodes no text: its vectors are fitted from the training users' events
            fallback = fit["items_category_fallback"] + fit["items_random_fallback"]
            return (f"fitted {fit['items']} item vectors with {self.meta['encoder']} ({fit['items_trained']} from co-occurrence "
                    f"in {fit['train_events']} training events, {fallback} by fallback; {self.from_cache} from cache) "
                    f"-> {self.matrix_path} ({n} x {d} float32)")
        distinct = self.encoded + self.from_cache
        shared = f"; {n} items, {n - distinct} with the text of an earlier one" if distinct < n else ""
        return (f"encoded {self.encoded} distinct texts ({self.from_cache} from cache{shared}) with {self.meta['encoder']} "
                f"-> {self.matrix_path} ({n} x {d} float32)")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def check_embedding_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise InterestGymError(f"--name {name!r}: expected letters, digits, '.', '_' or '-' (a file name), not starting with '.' or '-'")
    return name


def _note_chinese_for_minilm(ds: Dataset, inputs: list[str], say: Callable[[str], None]) -> None:
    """all-MiniLM-L6-v2 is an English model: say so when most item texts are Chinese, and what fits them."""
    from interestgym.encoders.tokenize import chinese_example

    if chinese_example(inputs) is not None:
        say(f"{ds.path / 'items.parquet'}: most item texts are Chinese; minilm (all-MiniLM-L6-v2) is an English model "
            "and separates their topics poorly: --encoder tfidf (jieba words) or a Chinese BERT folder "
            "(--encoder PATH, e.g. bert-base-chinese) fit them better")


def encode_dataset(
    dataset: Dataset | str | Path,
    encoder: Encoder,
    *,
    name: str | None = None,
    encoder_spec: str | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
    log: Callable[[str], None] | None = _stderr,
    replace: bool = False,
) -> EncodeResult:
    """Encode every item of ``dataset`` and write its embedding matrix and metadata.

    :param dataset: a :class:`Dataset` or its directory.
    :param encoder: from :func:`interestgym.encoders.registry.build_encoder` (fitted here if it needs it).
    :param name: embedding name (default: the encoder's short name).
    :param encoder_spec: what the user asked for (``--encoder``), recorded in the metadata.
    :param use_cache: read and update ``DATASET/cache/embeddings``; False encodes everything.
    :param progress: progress bar on stderr (None: only on a terminal).
    :param log: where one-line notes go (fit reports, empty texts, cache rebuilds); None = silent.
    :param replace: write over an embedding of this name made by another encoder (else refused: runs trained on
        it would read other vectors under the same name).
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    say = log or (lambda message: None)
    name = check_embedding_name(encoder.name if name is None else name)
    items = ds.items

    if encoder.needs_fit:
        encoder.fit_dataset(ds)
        for line in encoder.fit_report():
            say(line)
    inputs = encoder.inputs(items)
    empty = 0
    if encoder.kind != "cooc":
        empty = sum(1 for t in inputs if not t.strip())
        if empty:
            hint = "; for items without text use --encoder cooc" if empty * 2 > len(inputs) else ""
            say(f"{ds.path / 'items.parquet'}: {empty} of {len(inputs)} items have an empty text; "
                f"they all get the vector of the empty text{hint}")

    if encoder.name == "minilm":
        _note_chinese_for_minilm(ds, inputs, say)

    keys = [input_key(t) for t in inputs]
    first_row: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        first_row.setdefault(k, i)

    bert = encoder.metadata()
    quantization = bert.get("quantization", "none")
    out_dir = ds.embeddings_dir
    dim, fingerprint = encoder.dim, encoder.fingerprint
    if not replace:
        check_same_quantization(out_dir / f"{name}.json", name, quantization)
        check_same_encoder(out_dir / f"{name}.json", name, encoder_spec or encoder.name, dim,
                           None if encoder.needs_fit else fingerprint)
    cache = EmbeddingCache(cache_dir(ds.path), encoder.name, fingerprint, dim, warn=say) if use_cache else None
    todo = [k for k in first_row if cache is None or k not in cache]
    if encoder.kind in ("hashing", "tfidf"):  # bags of words: a text without one is the empty text's vector
        _note_wordless_texts(ds, inputs, [inputs[first_row[k]] for k in todo], say)
    started = time.perf_counter()
    fresh = encoder.encode([inputs[first_row[k]] for k in todo], progress=progress) if todo else np.empty((0, dim), np.float32)
    seconds = time.perf_counter() - started
    _check_vectors(fresh, [inputs[first_row[k]] for k in todo], dim, encoder)

    if cache is not None:
        cache.add(todo, fresh)
        cache.save()
        matrix = cache.get_many(keys)
    else:
        row_of = {k: j for j, k in enumerate(todo)}
        matrix = fresh[[row_of[k] for k in keys]] if keys else np.empty((0, dim), np.float32)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)

    bert = encoder.metadata()  # again: the batch size may have been set when the model loaded
    meta: dict[str, Any] = {
        "name": name,
        "encoder": encoder_spec or encoder.name,
        "kind": encoder.kind,
        "fingerprint": fingerprint,
        "dim": int(dim),
        "n_items": len(items),
        "item_ids_sha256": item_ids_sha256(items["item_id"]),
        "matrix_sha256": matrix_sha256(matrix),  # load_embeddings checks the .npy against it: an edited file is refused
        "input": "item_id" if encoder.kind == "cooc" else "text",
        **({} if encoder.kind == "cooc" else {"item_texts_sha256": item_texts_sha256(items)}),
        "pooling": bert.get("pooling"),
        "max_length": bert.get("max_length"),
        "device": bert.get("device", "cpu"),
        "quantization": quantization,
        "normalisation": "l2",
        "unique_texts": len(first_row),
        "empty_texts": empty,
        "texts_encoded": len(todo),
        "texts_from_cache": len(first_row) - len(todo),
        "encode_seconds": round(seconds, 3),  # time in the encoder this run, model loading included
        "cache_file": str(cache.path.relative_to(ds.path)) if cache is not None else None,
        "encoder_details": bert,
        "interestgym_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    matrix_path, meta_path = out_dir / f"{name}.npy", out_dir / f"{name}.json"
    # Metadata last, and the old metadata removed first: an interrupted run leaves a matrix without
    # metadata (ignored by Dataset.embedding_names), never new metadata beside an old matrix.
    meta_path.unlink(missing_ok=True)
    save_npy_atomic(matrix_path, matrix)
    write_json_atomic(meta_path, meta)
    return EncodeResult(name=name, matrix_path=matrix_path, meta_path=meta_path, matrix=matrix, meta=meta,
                        encoded=len(todo), from_cache=len(first_row) - len(todo))


def _note_wordless_texts(ds: Dataset, inputs: list[str], new: list[str], say: Callable[[str], None]) -> None:
    """Say how many items' texts hold no word a bag-of-words encoder reads (only punctuation, symbols, emoji or stop
    words: they get the one empty feature, so they all share one vector). Only the texts encoded now (``new``: the
    distinct texts the cache lacks) are looked at: a rerun from the cache tokenises nothing twice."""
    from interestgym.encoders.tokenize import normalise_text, words

    wordless = {t for t in new if t.strip() and not words(normalise_text(t))}
    if wordless:
        n = sum(1 for t in inputs if t in wordless)
        examples = ", ".join(repr(t[:12]) for t in sorted(wordless)[:3])
        say(f"{ds.path / 'items.parquet'}: {n:,} of {len(inputs):,} items have a text without a word this encoder reads "
            f"(only punctuation, symbols or stop words, e.g. {examples}): they all get the empty text's vector")


def embedding_meta(meta_path: Path) -> dict[str, Any] | None:
    """The metadata of the embedding about to be written over, or None (none, or damaged: simply replaced)."""
    if not meta_path.is_file():
        return None
    try:
        old = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) else None


def check_same_quantization(meta_path: Path, name: str, quantization: str) -> None:
    """Refuse to write ``quantization`` vectors under a name whose existing vectors have another one.

    A policy trained on float32 vectors must not silently be served int8 ones (or the reverse) under
    the name it was trained with. Metadata written before quantisation existed counts as ``none``.
    """
    old = embedding_meta(meta_path)
    found = "none" if old is None else old.get("quantization", "none")
    if old is not None and found != quantization:
        suggestion = f"{name}-{quantization}" if quantization != "none" else f"{name}-fp32"
        raise InterestGymError(
            f"{meta_path}: field quantization is {found!r}, but this encoder makes {quantization!r} vectors; expected the same "
            f"quantisation under one embedding name: pass --name {suggestion} (or --replace to write over them)"
        )


def check_same_encoder(meta_path: Path, name: str, spec: str, dim: int, fingerprint: str | None = None) -> None:
    """Refuse to write over an embedding ``name`` that another encoder made (another ``--encoder``, e.g. a fine-tuned
    model under the base's name, or another dimension): a run trained on those vectors would be evaluated or served
    on other ones under the same name. The same encoder again is fine: new or edited items, a re-fitted tfidf.

    :param fingerprint: an encoder that is not fitted on the dataset (a BERT model, hashing) is the same encoder
        exactly when its fingerprint is (its weights, pooling, maximum length...): another ``--pooling`` or changed
        weights in the same folder are refused, and the same folder spelled another way is not. A fitted encoder
        (tfidf, cooc) changes its fingerprint with the items, so it is judged by ``--encoder`` and ``dim``."""
    old = embedding_meta(meta_path)
    if old is None or "encoder" not in old:
        return
    if fingerprint is not None and old.get("fingerprint") is not None:
        if old["fingerprint"] != fingerprint:
            raise InterestGymError(
                f"{meta_path}: embedding {name!r} holds vectors of --encoder {old['encoder']!r} (dim {old.get('dim')}, "
                f"fingerprint {str(old['fingerprint'])[:12]}), not of {spec!r} (dim {dim}, fingerprint {fingerprint[:12]}: "
                "another model, pooling, maximum length or dimension); expected a new --name for these vectors, or "
                "--replace to write over them (runs trained on the old ones will then refuse them)")
        return
    if (str(old["encoder"]), old.get("dim")) != (spec, int(dim)):
        raise InterestGymError(
            f"{meta_path}: embedding {name!r} holds vectors of --encoder {old['encoder']!r} (dim {old.get('dim')}), not of "
            f"{spec!r} (dim {dim}); expected a new --name for these vectors, or --replace to write over them (runs trained "
            "on the old ones will then refuse them)")


def _check_vectors(vectors: np.ndarray, texts: list[str], dim: int, encoder: Encoder) -> None:
    """Refuse to cache or write vectors that break the contract (finite, unit rows, right shape)."""
    if vectors.shape != (len(texts), dim) or vectors.dtype != np.float32:
        raise AssertionError(f"{type(encoder).__name__} returned {vectors.shape} {vectors.dtype}; expected ({len(texts)}, {dim}) float32")
    if not len(texts):
        return
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        first = texts[int(np.flatnonzero(bad)[0])][:80]
        hint = " (half precision overflowed: try --precision bf16 or fp32)" if getattr(encoder, "precision", "fp32") == "fp16" else ""
        raise InterestGymError(f"encoder {encoder.name}: {int(bad.sum())} texts gave non-finite vectors, first: {first!r}{hint}")
    norms = np.linalg.norm(vectors, axis=1)
    off = np.abs(norms - 1.0) > _NORM_TOLERANCE
    if off.any():
        raise AssertionError(
            f"{type(encoder).__name__} returned {int(off.sum())} rows that are not unit vectors (e.g. norm {norms[off][0]:.4f})"
        )
