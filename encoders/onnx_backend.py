"""``--backend onnx``: run a BERT encoder with onnxruntime on CPU.

The model, with pooling and L2 normalisation folded in, is exported once with ``torch.onnx.export``
(the dynamo exporter: the legacy tracer bakes shape-dependent branches of transformers' attention
masks into the graph and gives wrong vectors for other batch shapes) into
``DATASET/cache/onnx/<name>-<fingerprint>.onnx``, checked against torch on a probe batch, and
reused by later runs. onnxruntime fuses attention and layer norms, which on a small CPU is faster
than eager torch (see ``benchmarks/encode.py``); the vectors match torch to ~1e-6, so the backend
is not part of the fingerprint and both share one cache.

``--quantize int8``: the exported float32 model is quantised once with onnxruntime's
``quantize_dynamic`` (weights of every MatMul / Gemm stored as int8 with one scale per output
channel, activations quantised to uint8 per batch at run time) into ``...-int8.onnx`` beside it, and checked on a probe batch: each probe
vector must keep a cosine >= :data:`MIN_PROBE_COSINE` with its float32 vector, else the command
stops. Int8 vectors are not float32 vectors (cosine ~0.99): the quantisation is part of the
encoder's fingerprint (its own cache), of its default name and of the embedding's metadata
(``benchmarks/encode.py --quantize int8`` measures the agreement and the speed). Activations are
quantised with one scale per batch, so a text's int8 vector moves by ~1e-4 with the other texts of
its batch: reproducible for the same texts and batch size, not bit-identical across batchings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interestgym.errors import ArtifactError, InterestGymError

if TYPE_CHECKING:  # pragma: no cover
    from interestgym.encoders.bert import BertEncoder

_EXPORT_VERSION = 1
_OUTPUT = "pooled_unit"  # not "embedding": that name clashes with a node inside BERT's graph
_MAX_PROTO_BYTES = 2_000_000_000  # one-file ONNX (protobuf) limit
_PROBE = ["interest tracking replays behaviour logs", "a", "短期兴趣与长期兴趣"]
#: A quantised model whose probe vectors fall below this cosine with the float32 ones is refused.
MIN_PROBE_COSINE = 0.9


def onnx_model_path(encoder: BertEncoder, onnx_dir: Path) -> Path:
    """The float32 export (shared by the float32 and the quantised encoder of one model)."""
    return Path(onnx_dir) / f"{encoder.base_name}-{encoder.float_fingerprint[:32]}-v{_EXPORT_VERSION}.onnx"


def quantized_model_path(encoder: BertEncoder, onnx_dir: Path) -> Path:
    return onnx_model_path(encoder, onnx_dir).with_suffix(f".{encoder.quantize}.onnx")


def _wrapper(encoder: BertEncoder, model: Any) -> Any:
    import torch
    from interestgym.encoders.bert import pool_hidden_states

    class PooledEncoder(torch.nn.Module):
        """token ids -> unit-norm pooled vectors (what BertEncoder computes in torch)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.model(**kwargs).last_hidden_state
            pooled = pool_hidden_states(hidden, attention_mask, encoder.pooling)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return PooledEncoder().eval()


def _input_names(encoder: BertEncoder, model: Any) -> list[str]:
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    produced = set(encoder._tokenizer(["probe"]).keys())
    # Positional order of PooledEncoder.forward.
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted and n in produced]
    if "input_ids" not in names or "attention_mask" not in names:
        raise ArtifactError(f"{encoder.folder.path}: --backend onnx needs a model taking input_ids and attention_mask; use --backend torch")
    return names


def export_onnx(encoder: BertEncoder, path: Path) -> None:
    """Export ``encoder``'s model + pooling + normalisation to ``path`` and check it against torch."""
    import importlib.util

    import torch

    for package in ("onnxscript", "onnxruntime"):  # the dynamo exporter needs onnxscript
        if importlib.util.find_spec(package) is None:
            raise InterestGymError(f"--backend onnx needs the package {package}: pip install {package}; or use --backend torch")
    model = encoder.load_torch_model()
    if sum(p.numel() * p.element_size() for p in model.parameters()) > _MAX_PROTO_BYTES:
        raise InterestGymError(
            f"{encoder.folder.path}: the model is over 2 GB; --backend onnx supports smaller models, use --backend torch"
        )
    names = _input_names(encoder, model)
    wrapper = _wrapper(encoder, model)
    # Example shapes must differ from each other and from 1, or the exporter specialises on them.
    example = encoder._tokenizer(["an example text for export", "short one"], padding="max_length", max_length=7,
                                 truncation=True, return_tensors="pt")
    args = tuple(example[n] for n in names)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=max(encoder.max_length, 8))
    print(f"exporting {encoder.name} to ONNX once: {path}", file=sys.stderr)
    # The exporter prints its steps to stdout and warns about unused axis names: keep stdout for
    # results and the warnings out of the user's way.
    # torch.onnx also logs a warning per missing optional package (torchvision ops): not our business.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        _export_and_check(encoder, wrapper, args, names, path, dynamic_shapes=tuple({0: batch, 1: seq} for _ in names))
    finally:
        onnx_logger.setLevel(level)


def _export_and_check(encoder: BertEncoder, wrapper: Any, args: tuple, names: list[str], path: Path, dynamic_shapes: tuple) -> None:
    import torch

    from interestgym.io import atomic_path

    # The exporter prints its steps to stdout and warns about unused axis names: keep stdout for
    # results and the warnings out of the user's way.
    with atomic_path(path) as tmp, contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, args, str(tmp), input_names=names, output_names=[_OUTPUT],
            dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False,
        )
        session = _session(tmp)
        probe = encoder._tokenizer(_PROBE, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
        with torch.inference_mode():
            expected = wrapper(*(probe[n] for n in names)).numpy()
        got = session.run(None, {n: probe[n].numpy().astype(np.int64) for n in names})[0]
        if not np.allclose(got, expected, atol=1e-4):
            raise ArtifactError(
                f"{encoder.folder.path}: the ONNX export differs from torch by {np.abs(got - expected).max():.2e} "
                "on a probe batch; expected < 1e-4. Use --backend torch"
            )


def _session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort
    from interestgym.encoders.bert import available_cpus

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _record_digest(path: Path) -> None:
    """Write the sha256 of a checked export beside it (``NAME.sha256``), so that a reuse can tell it is the same file."""
    from interestgym.io import atomic_path, sha256_file

    with atomic_path(_digest_path(path)) as tmp:
        tmp.write_text(sha256_file(path) + "\n", encoding="utf-8")


def _reusable(path: Path, redo: str) -> bool:
    """Whether an export kept from an earlier run may be reused: it exists and its bytes are those checked against torch
    when it was made (a damaged file can still load and give wrong vectors, which the cache then keeps under the
    encoder's fingerprint for every backend). A file without a recorded digest (from before digests) is made again."""
    if not path.is_file():
        return False
    from interestgym.io import sha256_file

    recorded = _digest_path(path)
    try:
        ok = recorded.read_text(encoding="utf-8").strip() == sha256_file(path)
    except (OSError, UnicodeDecodeError):
        ok = False
    if not ok:
        why = "does not match the digest recorded when it was checked" if recorded.is_file() else "has no recorded digest"
        print(f"{path}: {why} (damaged, or made by an earlier version); {redo}", file=sys.stderr)
        for stale in (path, recorded):
            stale.unlink(missing_ok=True)
    return ok


#: A temporary export older than this is a killed run's (an export takes seconds to minutes): removed.
_STALE_TEMPORARY_SECONDS = 3600


def _remove_stale_temporaries(onnx_dir: Path) -> None:
    """Remove what a killed export or quantisation left in ``onnx_dir`` (``.NAME.XXXX.tmp``, up to the model's size
    each), once it is older than an hour: a younger one may be another process's export in progress."""
    import time

    if not onnx_dir.is_dir():
        return
    now = time.time()
    for tmp in onnx_dir.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TEMPORARY_SECONDS:
                tmp.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to remove


def load_onnx_session(encoder: BertEncoder, onnx_dir: Path | None) -> Any:
    """The onnxruntime session for ``encoder``, exporting the model first if needed. An export is reused only when its
    bytes are the ones checked against torch when it was made (:func:`_reusable`)."""
    if onnx_dir is None:
        raise InterestGymError("--backend onnx needs a folder to keep the exported model (onnx_dir)")
    path = onnx_model_path(encoder, onnx_dir)
    threads = getattr(encoder, "threads", None)
    _remove_stale_temporaries(Path(onnx_dir))
    if encoder.quantize != "none":
        qpath = quantized_model_path(encoder, onnx_dir)
        if _reusable(qpath, "quantising again"):
            try:
                return _session(qpath, threads)
            except Exception as exc:  # noqa: BLE001 - a damaged file, whatever onnxruntime raises for it
                print(f"{qpath}: cannot be loaded by onnxruntime ({type(exc).__name__}); quantising again", file=sys.stderr)
                os.unlink(qpath)
    session = None
    if _reusable(path, "exporting it again"):
        try:
            session = _session(path, threads)
        except Exception as exc:  # noqa: BLE001 - a damaged file, whatever onnxruntime raises for it
            print(f"{path}: cannot be loaded by onnxruntime ({type(exc).__name__}); exporting it again", file=sys.stderr)
            os.unlink(path)
    if session is None:
        export_onnx(encoder, path)
        _record_digest(path)
        session = _session(path, threads)
    if encoder.quantize == "none":
        return session
    quantize_model(encoder, path, qpath, session)
    _record_digest(qpath)
    return _session(qpath, threads)


def quantize_model(encoder: BertEncoder, source: Path, target: Path, float_session: Any) -> None:
    """Dynamic int8 quantisation of ``source`` into ``target``, checked against ``float_session`` on a probe batch."""
    import importlib.util

    from interestgym.io import atomic_path

    if encoder.quantize != "int8":  # pragma: no cover - BertEncoder checks the choice
        raise InterestGymError(f"--quantize {encoder.quantize!r}: expected int8")
    if importlib.util.find_spec("onnxruntime.quantization") is None:  # pragma: no cover - part of onnxruntime
        raise InterestGymError("--quantize int8 needs onnxruntime.quantization: pip install onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    print(f"quantising {encoder.base_name} to {encoder.quantize} once: {target}", file=sys.stderr)
    onnx_logger = logging.getLogger()  # the quantiser logs a warning per model without pre-processing
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with atomic_path(target) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Per-channel weight scales: cosine with float32 0.99 on ml-100k titles instead of 0.96 per
            # tensor, at the same speed (benchmarks/encode.py --quantize int8).
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
            probe = encoder._tokenizer(_PROBE, padding=True, truncation=True, max_length=encoder.max_length, return_tensors="np")
            feeds = {i.name: np.asarray(probe[i.name], dtype=np.int64) for i in float_session.get_inputs()}
            expected = float_session.run(None, feeds)[0]
            got = _session(tmp, getattr(encoder, "threads", None)).run(None, feeds)[0]
            cosine = (np.asarray(got, np.float64) * expected).sum(axis=1) / np.maximum(np.linalg.norm(got, axis=1), 1e-12)
            if not np.all(cosine >= MIN_PROBE_COSINE):
                raise ArtifactError(
                    f"{encoder.folder.path}: the int8-quantised model's probe vectors have cosine {cosine.min():.3f} with "
                    f"the float32 ones; expected >= {MIN_PROBE_COSINE}. Encode this model without --quantize"
                )
    finally:
        onnx_logger.setLevel(level)


def run_onnx_batch(session: Any, tokenizer: Any, features: dict[str, list[list[int]]]) -> np.ndarray:
    """One padded batch through the session -> float32 unit rows."""
    padded = tokenizer.pad(features, padding="longest", return_tensors="np")
    feeds = {i.name: np.asarray(padded[i.name], dtype=np.int64) for i in session.get_inputs()}
    return np.asarray(session.run(None, feeds)[0], dtype=np.float32)
