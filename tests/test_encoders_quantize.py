"""``encode --backend onnx --quantize int8`` (a tiny random BERT through the real export and onnxruntime's
dynamic quantisation), the refusal to mix int8 and float32 vectors under one embedding name, and the
GPU path's choices (batch size from free memory, halving on out-of-memory) run on CPU as pure logic."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = importlib.import_module("torch")
importlib.import_module("transformers")

from click.testing import CliRunner
from interestgym.encoders.bert import (
    DEFAULT_BATCH_SIZE,
    BertEncoder,
    cuda_batch_size,
    is_out_of_memory,
    split_on_oom,
)
from interestgym.encoders.cli import encode
from interestgym.encoders.registry import build_encoder
from test_encoders_bert import TEXTS, WORDS, save_tiny_bert

from interestgym.data.dataset import Dataset, SplitSpec, write_dataset
from interestgym.data.validate import RejectLog
from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


def write_items_dataset(path: Path) -> Path:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(24)]
    items = pd.DataFrame({"item_id": [str(i) for i in range(len(texts))], "text": texts, "category": "", "subcategory": ""})
    events = pd.DataFrame({"user_id": ["1"], "ts": np.array([0], dtype="int64"), "item_id": ["1"], "action": "click",
                           "value": np.float32(1.0), "hour": np.int8(0), "weekday": np.int8(0), "seq": np.array([0], dtype="int64")})
    write_dataset(path, source_format="test", source_files=[], items=items, events=events, rejects=RejectLog(),
                  split=SplitSpec(), deterministic=True)
    return path


# ---------------------------------------------------------------------------------------- quantise
def test_int8_vectors_agree_with_float32_and_have_their_own_fingerprint_and_name(tiny_bert, tmp_path, capsys):
    importlib.import_module("onnxruntime")
    importlib.import_module("onnxscript")
    onnx_dir = tmp_path / "onnx"
    fp32 = BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir)
    int8 = build_encoder(str(tiny_bert), backend="onnx", quantize="int8", onnx_dir=onnx_dir)
    full, quantised = fp32.encode(TEXTS), int8.encode(TEXTS)
    err = capsys.readouterr().err
    assert err.count("exporting tiny-bert to ONNX once") == 1  # the int8 model is made from the same export
    assert "quantising tiny-bert to int8 once" in err
    assert sorted(p.name.split("-v1")[-1] for p in onnx_dir.glob("*.onnx")) == [".int8.onnx", ".onnx"]
    np.testing.assert_allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    cosine = (full * quantised).sum(axis=1)
    assert cosine.min() > 0.9 and not np.allclose(full, quantised, atol=1e-6)
    assert int8.name == "tiny-bert-int8" and fp32.name == "tiny-bert"
    assert int8.fingerprint != fp32.fingerprint
    assert fp32.fingerprint == BertEncoder(tiny_bert).fingerprint  # float32 fingerprints are unchanged
    assert int8.metadata()["quantization"] == "int8" and fp32.metadata()["quantization"] == "none"
    again = BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir, quantize="int8").encode(TEXTS[:3])
    # Dynamic quantisation scales activations per batch: another batch moves a vector by ~1e-4.
    np.testing.assert_allclose(again, quantised[:3], atol=1e-3)
    assert "quantising" not in capsys.readouterr().err  # reused


def test_quantize_needs_the_onnx_backend(tiny_bert):
    with pytest.raises(InterestGymError, match="--quantize int8: needs --backend onnx .* found --backend torch"):
        BertEncoder(tiny_bert, quantize="int8")
    with pytest.raises(InterestGymError, match="--quantize 'int4': expected one of none, int8"):
        BertEncoder(tiny_bert, backend="onnx", onnx_dir="x", quantize="int4")
    with pytest.raises(InterestGymError, match="--encoder hashing: option\\(s\\) --quantize do not apply"):
        build_encoder("hashing", quantize="int8")


def test_int8_and_float32_vectors_never_share_an_embedding_name(tiny_bert, tmp_path):
    importlib.import_module("onnxruntime")
    importlib.import_module("onnxscript")
    ds = write_items_dataset(tmp_path / "ds")
    runner = CliRunner()
    result = runner.invoke(encode, [str(ds), "--encoder", str(tiny_bert), "--name", "tiny"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = runner.invoke(encode, [str(ds), "--encoder", str(tiny_bert), "--name", "tiny", "--backend", "onnx",
                                    "--quantize", "int8"])
    assert result.exit_code != 0
    assert isinstance(result.exception, InterestGymError)
    message = str(result.exception)
    assert "tiny.json: field quantization is 'none', but this encoder makes 'int8' vectors" in message
    assert "--name tiny-int8" in message
    # The default name keeps them apart; the two caches are separate files.
    result = runner.invoke(encode, [str(ds), "--encoder", str(tiny_bert), "--backend", "onnx", "--quantize", "int8"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    dataset = Dataset.open(ds)
    assert dataset.embedding_names() == ["tiny", "tiny-bert-int8"]
    assert json.loads((ds / "embeddings" / "tiny-bert-int8.json").read_text())["quantization"] == "int8"
    assert json.loads((ds / "embeddings" / "tiny.json").read_text())["quantization"] == "none"
    assert len(list((ds / "cache" / "embeddings").glob("*.npz"))) == 2
    # ... and float32 vectors may not replace int8 ones either.
    result = runner.invoke(encode, [str(ds), "--encoder", str(tiny_bert), "--name", "tiny-bert-int8"])
    assert isinstance(result.exception, InterestGymError)
    assert "field quantization is 'int8', but this encoder makes 'none' vectors" in str(result.exception)


# ----------------------------------------------------------------------------------- GPU path, on CPU
def test_cuda_batch_size_from_free_memory_matches_the_hand_computed_estimate():
    # MiniLM-like: hidden 384, intermediate 1536, 12 heads, 256 tokens, bf16 (2 bytes).
    per_token = 2 * (6 * 384 + 2 * 1536 + 2 * 12 * 256) + 4 * 384
    per_text = per_token * 256
    free = 8 * 2**30
    fit = int(0.5 * free // per_text)
    expected = 1 << (fit.bit_length() - 1)
    got = cuda_batch_size(free, hidden_size=384, intermediate_size=1536, num_heads=12, max_length=256, bytes_per_value=2)
    assert got == expected and got & (got - 1) == 0
    kwargs = {"hidden_size": 384, "intermediate_size": 1536, "num_heads": 12, "bytes_per_value": 2}
    sizes = [cuda_batch_size(f * 2**30, max_length=256, **kwargs) for f in (1, 2, 4, 8, 16)]
    assert sizes == sorted(sizes)  # more memory, no smaller batch
    assert cuda_batch_size(1000, max_length=256, **kwargs) == 8  # floor
    assert cuda_batch_size(140 * 2**30, max_length=32, **kwargs) == 4096  # cap
    assert cuda_batch_size(2**30, max_length=32, **kwargs) > cuda_batch_size(2**30, max_length=256, **kwargs)
    fp32 = cuda_batch_size(4 * 2**30, max_length=256, **{**kwargs, "bytes_per_value": 4})
    assert fp32 <= cuda_batch_size(4 * 2**30, max_length=256, **kwargs)


def test_a_batch_that_runs_out_of_memory_is_split_and_the_smaller_size_kept():
    calls: list[int] = []

    def encode_rows(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        if len(rows) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.stack([np.full(2, r, dtype=np.float32) for r in rows])

    sizes: list[int] = []
    rows = np.arange(10)
    out = split_on_oom(encode_rows, rows, on_split=sizes.append)
    np.testing.assert_array_equal(out[:, 0], rows)  # every row, in order
    assert max(c for c in calls if c <= 3) <= 3 and sizes[0] == 5 and min(sizes) >= 2

    def broken(rows: np.ndarray) -> np.ndarray:
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        split_on_oom(broken, rows)
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory")) and not is_out_of_memory(RuntimeError("shape"))


def test_encoder_halves_its_batch_after_an_out_of_memory_error(tiny_bert, monkeypatch, capsys):
    """The encode loop itself (on CPU, with a fake out-of-memory above 2 texts): same vectors, smaller batch."""
    expected = BertEncoder(tiny_bert, batch_size=64).encode(TEXTS)
    enc = BertEncoder(tiny_bert, batch_size=8)
    enc.load()
    real = enc._encode_batch

    def fake(features):
        if len(features["input_ids"]) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real(features)

    monkeypatch.setattr(enc, "_encode_batch", fake)
    np.testing.assert_allclose(enc.encode(TEXTS), expected, atol=1e-5)
    assert enc.batch_size == 2
    assert "out of GPU memory at batch size 8; using 4" in capsys.readouterr().err


def test_cuda_sizes_its_batch_from_memory_unless_told(tiny_bert, monkeypatch):
    from interestgym.encoders import bert

    monkeypatch.setattr(bert, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    auto = BertEncoder(tiny_bert)
    assert auto.batch_size_from_memory and auto.batch_size == DEFAULT_BATCH_SIZE["cuda"]  # until the model loads
    assert not BertEncoder(tiny_bert, batch_size=100).batch_size_from_memory
    assert not BertEncoder(tiny_bert, device="cpu").batch_size_from_memory
