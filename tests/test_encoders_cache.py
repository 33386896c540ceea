"""The encode stage end to end (with the fast ``hashing`` encoder): outputs, metadata, the cache,
its incremental updates and corruption handling, the CLI, and the env-side checks in
``Dataset.load_embeddings``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from env_fixtures import reseal_tables
from interestgym.encoders.cache import EmbeddingCache, cache_dir, input_key
from interestgym.encoders.cli import encode
from interestgym.encoders.hashing import HashingEncoder
from interestgym.encoders.pipeline import encode_dataset
from interestgym.encoders.registry import build_encoder

from interestgym.data.dataset import Dataset, SplitSpec, item_ids_sha256, write_dataset
from interestgym.data.validate import RejectLog
from interestgym.errors import ArtifactError, InterestGymError

TITLES = ["Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)", "Copycat (1995)",
          "Toy Story (1995)"]  # the last is a duplicate text: encoded once


def make_dataset(path: Path, texts: list[str], item_ids: list[str] | None = None) -> Path:
    ids = item_ids or [f"i{k}" for k in range(len(texts))]
    items = pd.DataFrame({"item_id": ids, "text": texts, "category": "c", "subcategory": ""})
    events = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "ts": np.array([1, 2, 3], dtype="int64"),
                           "item_id": [ids[0], ids[1], ids[0]], "action": "click", "value": np.float32(1.0),
                           "hour": np.int8(0), "weekday": np.int8(0), "seq": np.arange(3, dtype="int64")})
    write_dataset(path, source_format="test", source_files=[], items=items, events=events,
                  rejects=RejectLog(), split=SplitSpec(), command=["test"], deterministic=True)
    return path


def edit_items(path: Path, texts: list[str], item_ids: list[str] | None = None) -> None:
    """Rewrite items.parquet in place (as a re-run of `prepare` on changed source data would)."""
    ids = item_ids or [f"i{k}" for k in range(len(texts))]
    pd.DataFrame({"item_id": ids, "text": texts, "category": "c", "subcategory": ""}).to_parquet(path / "items.parquet", index=False)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["counts"]["items"] = len(ids)
    (path / "manifest.json").write_text(json.dumps(manifest))
    reseal_tables(path)


class CountingEncoder(HashingEncoder):
    """A hashing encoder that records which texts it was asked to encode."""

    def __init__(self) -> None:
        super().__init__(dim=32)
        self.seen: list[str] = []

    def encode(self, inputs, *, progress=None):
        self.seen.extend(inputs)
        return super().encode(inputs, progress=progress)


# ------------------------------------------------------------------------------------------ output
def test_encode_writes_aligned_unit_matrix_and_metadata(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    result = encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    mat = np.load(ds_path / "embeddings" / "hashing.npy")
    meta = json.loads((ds_path / "embeddings" / "hashing.json").read_text())
    assert mat.dtype == np.float32 and mat.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-6)
    # Row i is item i's text, encoded on its own (computed independently of the pipeline).
    np.testing.assert_array_equal(mat, HashingEncoder(dim=32).encode(TITLES))
    assert meta["name"] == "hashing" and meta["kind"] == "hashing" and meta["dim"] == 32 and meta["n_items"] == 6
    assert meta["fingerprint"] == HashingEncoder(dim=32).fingerprint
    assert meta["item_ids_sha256"] == item_ids_sha256([f"i{k}" for k in range(6)])
    assert meta["texts_encoded"] == 5 and meta["texts_from_cache"] == 0 and meta["unique_texts"] == 5
    assert {"pooling", "max_length", "device", "created"} <= set(meta)
    assert result.encoded == 5 and result.from_cache == 0
    assert "encoded 5 distinct texts (0 from cache; 6 items, 1 with the text of an earlier one)" in result.summary()


def test_env_side_loader_reads_it_back(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), name="h32", log=None)
    ds = Dataset.open(ds_path)
    assert ds.embedding_names() == ["h32"]
    mat, meta = ds.load_embeddings()
    assert mat.shape == (6, 32) and meta["name"] == "h32"


def test_loader_refuses_embeddings_made_for_other_items(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    # Same number of items, different ids (e.g. re-prepared from another source file).
    edit_items(ds_path, TITLES, item_ids=[f"x{k}" for k in range(6)])
    with pytest.raises(ArtifactError, match="item_ids_sha256.*re-run `interestgym encode"):
        Dataset.open(ds_path).load_embeddings("hashing")


def test_loader_refuses_vectors_changed_after_encode(tmp_path):
    """encode records the sha256 of the vectors it wrote; a row edited since (zeroed: a unit vector's norm check cannot
    tell it from an item without text) is refused naming the file (Trial M)."""
    import hashlib

    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    npy = ds_path / "embeddings" / "hashing.npy"
    mat = np.load(npy)
    meta = json.loads((ds_path / "embeddings" / "hashing.json").read_text())
    assert meta["matrix_sha256"] == hashlib.sha256(mat.astype(np.float32).tobytes()).hexdigest()
    Dataset.open(ds_path).load_embeddings("hashing")
    mat[2] = 0.0
    np.save(npy, mat)
    with pytest.raises(ArtifactError, match=r"hashing.npy: its vectors hash to [0-9a-f]{12}\.\.\., not to "
                                            rf"{meta['matrix_sha256'][:12]}\.\.\. as .*hashing.json records: the file, or "
                                            r"that field, was changed after `interestgym encode` wrote it; re-run `interestgym encode"):
        Dataset.open(ds_path).load_embeddings("hashing")


def test_a_digest_edited_in_the_embeddings_record_is_shown_where_it_differs(tmp_path):
    # one hex digit edited past the 12th showed both digests as the same 12 characters, and blamed items.parquet
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    path = ds_path / "embeddings" / "hashing.json"
    meta = json.loads(path.read_text())
    true = meta["item_ids_sha256"]
    edited = true[:20] + ("0" if true[20] != "0" else "1") + true[21:]
    path.write_text(json.dumps({**meta, "item_ids_sha256": edited}))
    with pytest.raises(ArtifactError) as refused:
        Dataset.open(ds_path).load_embeddings("hashing")
    message = str(refused.value)
    assert f"field item_ids_sha256 is {edited[:24]}..., but items.parquet's item ids hash to {true[:24]}... " in message
    assert "or this field was edited" in message


def test_loader_refuses_vectors_of_other_texts_and_takes_the_same_texts_again(tmp_path):
    """The same item ids with other texts (prepared again with another --item-text, which keeps embeddings/): the
    vectors are of the old texts, refused naming the cause; behaviour vectors (cooc, encoded from ids) are not
    text vectors, and a rewrite with the same texts is accepted."""
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    edit_items(ds_path, TITLES)  # the same texts, written again
    Dataset.open(ds_path).load_embeddings("hashing")
    edit_items(ds_path, [f"completely different words {k}" for k in range(6)])
    with pytest.raises(ArtifactError, match=r"hashing.json: field item_texts_sha256 is .*the item texts changed since these "
                                            r"vectors were encoded.* re-run `interestgym encode"):
        Dataset.open(ds_path).load_embeddings("hashing")
    meta = json.loads((ds_path / "embeddings" / "hashing.json").read_text())
    meta["input"] = "item_id"
    (ds_path / "embeddings" / "hashing.json").write_text(json.dumps(meta))
    Dataset.open(ds_path).load_embeddings("hashing")


def test_loader_refuses_metadata_without_item_hash_or_wrong_dim(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    meta_path = ds_path / "embeddings" / "hashing.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "dim": 16}))
    with pytest.raises(ArtifactError, match="dim is 16"):
        Dataset.open(ds_path).load_embeddings()
    del meta["item_ids_sha256"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="item_ids_sha256 is missing"):
        Dataset.open(ds_path).load_embeddings()


def test_empty_texts_are_counted_and_reported(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", ["", "  ", "Toy Story"])
    messages: list[str] = []
    result = encode_dataset(ds_path, HashingEncoder(dim=32), log=messages.append)
    assert result.meta["empty_texts"] == 2
    assert any("2 of 3 items have an empty text" in m for m in messages)
    np.testing.assert_allclose(np.linalg.norm(result.matrix, axis=1), 1.0, atol=1e-6)


def test_texts_without_a_word_the_bag_of_words_encoders_read_are_counted(tmp_path):
    """Texts of only punctuation, symbols or stop words are not empty, but hashing and tfidf read no word in them: they
    all get the empty text's vector (identical rows), and encode says how many; texts with words are not counted."""
    texts = ["的", "。。。", "🙂🙂", "...", "Toy Story", "体育新闻 比赛", "Heat"]
    ds_path = make_dataset(tmp_path / "ds", texts)
    messages: list[str] = []
    result = encode_dataset(ds_path, HashingEncoder(dim=32), log=messages.append)
    wordless = [i for i, t in enumerate(texts) if i < 4]
    assert np.allclose(result.matrix[wordless], result.matrix[wordless[0]])  # one vector for all of them
    assert not np.allclose(result.matrix[4], result.matrix[0])
    notes = [m for m in messages if "without a word" in m]
    assert notes == [(f"{ds_path / 'items.parquet'}: 4 of 7 items have a text without a word this encoder reads (only "
                      "punctuation, symbols or stop words, e.g. '...', '。。。', '的'): they all get the empty text's vector")]
    messages.clear()
    encode_dataset(ds_path, HashingEncoder(dim=32), log=messages.append)  # from the cache: nothing tokenised, said once
    assert not [m for m in messages if "without a word" in m]
    encode_dataset(make_dataset(tmp_path / "words", ["Toy Story", "Heat", "体育新闻"]), HashingEncoder(dim=32), log=messages.append)
    assert not [m for m in messages if "without a word" in m]


def test_chinese_texts_under_minilm_get_a_note_naming_what_fits_them(tmp_path):
    """The default encoder is English: on mostly Chinese texts encode says so (and not on English ones, nor for
    another encoder). The encoder here is a hashing one under minilm's name: the note is the pipeline's."""
    for texts, encoder_name, noted in ((["体育新闻", "财经 股市", "Toy Story"], "minilm", True),
                                       (["Toy Story", "Heat", "体育新闻"], "minilm", False),
                                       (["体育新闻", "财经 股市", "Toy Story"], "hashing", False)):
        ds_path = make_dataset(tmp_path / f"ds-{encoder_name}-{noted}-{texts[0]}", texts)
        encoder = HashingEncoder(dim=32)
        encoder.name = encoder_name
        messages: list[str] = []
        encode_dataset(ds_path, encoder, name="e", log=messages.append)
        note = [m for m in messages if "most item texts are Chinese" in m]
        assert bool(note) == noted, (texts, encoder_name, messages)
        if noted:
            assert "minilm (all-MiniLM-L6-v2) is an English model" in note[0] and "--encoder tfidf" in note[0]


def test_bad_embedding_name_is_refused(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    with pytest.raises(InterestGymError, match="--name '../x'"):
        encode_dataset(ds_path, HashingEncoder(dim=32), name="../x", log=None)


# ------------------------------------------------------------------------------------------- cache
def test_second_run_encodes_nothing_and_an_edit_encodes_only_that_text(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    first = CountingEncoder()
    encode_dataset(ds_path, first, log=None)
    assert sorted(first.seen) == sorted(set(TITLES))

    second = CountingEncoder()
    result = encode_dataset(ds_path, second, log=None)
    assert second.seen == [] and result.encoded == 0 and result.from_cache == 5

    edited = list(TITLES)
    edited[2] = "Four Rooms (1995), director's cut"
    edit_items(ds_path, edited + ["Heat (1995)"])  # one text changed, one item added
    third = CountingEncoder()
    result = encode_dataset(ds_path, third, log=None)
    assert sorted(third.seen) == ["Four Rooms (1995), director's cut", "Heat (1995)"]
    assert result.encoded == 2 and result.from_cache == 4  # 5 distinct texts before, one of them edited
    np.testing.assert_array_equal(result.matrix, HashingEncoder(dim=32).encode(edited + ["Heat (1995)"]))


def test_no_cache_encodes_everything_and_leaves_no_cache(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    enc = CountingEncoder()
    result = encode_dataset(ds_path, enc, use_cache=False, log=None)
    assert result.encoded == 5 and not cache_dir(ds_path).exists()


def test_different_fingerprints_use_different_cache_files(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    r = encode_dataset(ds_path, HashingEncoder(dim=64), name="hashing64", log=None)
    assert r.encoded == 5 and r.matrix.shape == (6, 64)
    assert len(list(cache_dir(ds_path).glob("*.npz"))) == 2


def test_an_embedding_of_another_encoder_is_not_written_over_without_replace(tmp_path):
    """Vectors of another encoder (here another dimension) under a name that holds some are refused, naming both;
    --replace writes over them; the same encoder again is fine (new items, the cache, a re-fitted tfidf)."""
    import numpy as np

    from interestgym.errors import InterestGymError

    ds_path = make_dataset(tmp_path / "ds", TITLES)
    first = encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    meta = ds_path / "embeddings" / "hashing.json"
    with pytest.raises(InterestGymError, match=rf"{meta}: embedding 'hashing' holds vectors of --encoder 'hashing' \(dim 32, "
                                               r"fingerprint \w+\), not of 'hashing' \(dim 64, .*\); expected a new --name .* or --replace"):
        encode_dataset(ds_path, HashingEncoder(dim=64), log=None)
    np.testing.assert_array_equal(np.load(ds_path / "embeddings" / "hashing.npy"), first.matrix)  # untouched
    assert encode_dataset(ds_path, HashingEncoder(dim=32), log=None).from_cache == 5
    replaced = encode_dataset(ds_path, HashingEncoder(dim=64), log=None, replace=True)
    assert np.load(ds_path / "embeddings" / "hashing.npy").shape == (6, 64) and replaced.meta["dim"] == 64


def _cache_file(ds_path: Path) -> Path:
    (path,) = cache_dir(ds_path).glob("*.npz")
    return path


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip_vector", "wrong_fingerprint"])
def test_damaged_cache_is_detected_reported_and_rebuilt(tmp_path, damage):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    encode_dataset(ds_path, HashingEncoder(dim=32), log=None)
    path = _cache_file(ds_path)
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:300])
    else:
        with np.load(path) as npz:
            keys, vectors, meta = npz["keys"], npz["vectors"].copy(), json.loads(str(npz["meta"]))
        if damage == "flip_vector":
            vectors[0, 0] += 0.5  # altered values, meta untouched: only the checksum can tell
        else:
            meta["fingerprint"] = "0" * 64
        with open(path, "wb") as fh:
            np.savez(fh, keys=keys, vectors=vectors, meta=np.array(json.dumps(meta)))

    messages: list[str] = []
    result = encode_dataset(ds_path, HashingEncoder(dim=32), log=messages.append)
    assert result.encoded == 5 and result.from_cache == 0
    assert any("rebuilding" in m and str(path) in m for m in messages), messages
    np.testing.assert_array_equal(result.matrix, HashingEncoder(dim=32).encode(TITLES))
    # The rebuilt file is healthy: the next run takes everything from it, silently.
    messages.clear()
    assert encode_dataset(ds_path, HashingEncoder(dim=32), log=messages.append).encoded == 0
    assert messages == []


def test_cache_class_round_trip(tmp_path):
    keys = [input_key(t) for t in ("a", "b", "c")]
    vectors = np.eye(3, 4, dtype=np.float32)
    cache = EmbeddingCache(tmp_path, "k", "f" * 64, 4)
    cache.add(keys[:2], vectors[:2])
    cache.add(keys[1:], vectors[1:])  # "b" twice: stored once
    cache.save()
    again = EmbeddingCache(tmp_path, "k", "f" * 64, 4)
    assert len(again) == 3 and keys[2] in again and input_key("d") not in again
    np.testing.assert_array_equal(again.get_many([keys[2], keys[0]]), vectors[[2, 0]])
    # Same fingerprint, other dim: mismatched, rebuilt empty.
    warned: list[str] = []
    other = EmbeddingCache(tmp_path, "k", "f" * 64, 8, warn=warned.append)
    assert len(other) == 0 and "expected (3, 8)" in warned[0]


# --------------------------------------------------------------------------------------------- CLI
def test_cli_encode_prints_counts_and_writes_files(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    runner = CliRunner()
    first = runner.invoke(encode, [str(ds_path), "--encoder", "hashing", "--dim", "16"])
    assert first.exit_code == 0, first.output
    assert "encoded 5 distinct texts (0 from cache; 6 items, 1 with the text of an earlier one)" in first.output
    second = runner.invoke(encode, [str(ds_path), "--encoder", "hashing", "--dim", "16", "--name", "h"])
    assert "encoded 0 distinct texts (5 from cache; 6 items, 1 with the text of an earlier one)" in second.output
    assert np.load(ds_path / "embeddings" / "h.npy").shape == (6, 16)


def test_cli_rejects_options_that_do_not_apply(tmp_path):
    ds_path = make_dataset(tmp_path / "ds", TITLES)
    with pytest.raises(InterestGymError, match="--pooling do not apply to a hashing encoder"):
        CliRunner().invoke(encode, [str(ds_path), "--encoder", "hashing", "--pooling", "cls"], catch_exceptions=False)


def test_unknown_encoder_name_lists_the_choices():
    with pytest.raises(InterestGymError, match="not a built-in encoder \\(minilm, hashing, tfidf, cooc\\)"):
        build_encoder("no-such-encoder")


def test_cli_on_missing_dataset_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from interestgym.cli import main; main()", "encode", str(tmp_path / "nope"),
                           "--encoder", "hashing"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no such dataset directory" in proc.stderr


@pytest.mark.parametrize(("spec", "dim"), [("hashing", "256"), ("tfidf", "4")])
def test_chinese_titles_through_the_cli(tmp_path, spec, dim):
    titles = ["国足世界杯预选赛主场战胜对手", "足球联赛：国足队长伤愈复出", "世界杯足球赛国足名单公布",
              "股市收盘：沪指上涨银行股领涨", "A股市场成交量放大沪指反弹", "沪指震荡银行股回调股市观望"]
    ds_path = make_dataset(tmp_path / "ds", titles)
    result = CliRunner().invoke(encode, [str(ds_path), "--encoder", spec, "--dim", dim])
    assert result.exit_code == 0, result.output
    assert "encoded 6 distinct texts (0 from cache)" in result.output
    mat, _meta = Dataset.open(ds_path).load_embeddings(spec)
    np.testing.assert_allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-5)
    sims = mat @ mat.T
    within = (sims[:3, :3].sum() - 3 + sims[3:, 3:].sum() - 3) / 12
    assert within > sims[:3, 3:].mean(), (spec, sims)


def test_tfidf_through_the_pipeline_reencodes_all_after_an_edit(tmp_path):
    texts = ["jazz guitar lessons", "guitar chords fast", "classical guitar concert",
             "stock market falls", "market rally lifts banks", "bank stocks slide"]
    ds_path = make_dataset(tmp_path / "ds", texts)
    assert encode_dataset(ds_path, build_encoder("tfidf", dim=3), log=None).encoded == 6
    assert encode_dataset(ds_path, build_encoder("tfidf", dim=3), log=None).encoded == 0
    edit_items(ds_path, texts[:-1] + ["bank stocks slide again"])
    assert encode_dataset(ds_path, build_encoder("tfidf", dim=3), log=None).encoded == 6


@pytest.mark.parametrize("spec", ["hashing", "cooc", "tfidf"])
def test_a_dimension_past_the_limit_is_a_clear_error_not_an_allocation(tmp_path, spec):
    # --dim 100000000 asked numpy for 286 GiB and died with a traceback (hashing; cooc allocated it before clamping)
    from interestgym.encoders.base import MAX_DIM

    ds_path = make_dataset(tmp_path / "ds", TITLES)
    result = CliRunner().invoke(encode, [str(ds_path), "--encoder", spec, "--dim", str(MAX_DIM + 1)])
    assert result.exit_code == 2 and f"2<=x<={MAX_DIM}" in result.output
    assert not (ds_path / "embeddings").exists() or not any((ds_path / "embeddings").iterdir())
