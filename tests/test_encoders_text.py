"""Model-free text encoders: tokenisation (jieba + stop words), ``hashing`` and ``tfidf``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from interestgym.encoders.hashing import HashingEncoder
from interestgym.encoders.tfidf import TfidfEncoder
from interestgym.encoders.tokenize import (
    features,
    normalise_text,
    weighted_features,
    words,
)

from interestgym.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A small self-made Chinese fixture: two topics, titles sharing topic words (as real news titles do).
CHINESE_SPORTS = [
    "国足世界杯预选赛主场战胜对手",
    "足球联赛：国足队长伤愈复出",
    "篮球联赛总决赛今晚开战",
    "世界杯足球赛国足名单公布",
]
CHINESE_STOCKS = [
    "股市收盘：沪指上涨银行股领涨",
    "A股市场成交量放大沪指反弹",
    "券商股领涨股市迎来开门红",
    "沪指震荡银行股回调股市观望",
]


def mean_within_between(vectors: np.ndarray, labels: list[str]) -> tuple[float, float]:
    """Mean cosine over pairs of the same label and over pairs of different labels (unit rows)."""
    sims = vectors @ vectors.T
    labels_arr = np.asarray(labels)
    same = labels_arr[:, None] == labels_arr[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    return float(sims[same & off_diagonal].mean()), float(sims[~same].mean())


# ------------------------------------------------------------------------------------ tokenisation
def test_chinese_text_is_segmented_and_stop_words_removed():
    tokens = words(normalise_text("我们的国足在世界杯上是最棒的"))
    assert "国足" in tokens and "世界杯" in tokens
    for stop in ("我们", "的", "在", "是", "上", "最"):
        assert stop not in tokens


def test_english_text_drops_stop_words_and_punctuation_and_lowercases():
    assert words(normalise_text("The Man, and THE Guitar!")) == ["man", "guitar"]


def test_full_width_characters_are_normalised():
    assert words(normalise_text("ＡＢＣ　１２３")) == ["abc", "123"]


def test_features_have_word_bigram_and_subword_grams():
    feats = weighted_features("guitar lessons")
    assert feats["w|guitar"] == 1.0 and feats["w|lessons"] == 1.0
    assert feats["b|guitar lessons"] == 0.5
    # "<guitar>" has 6 char 3-grams sharing 0.5
    assert feats["c|<gu"] == pytest.approx(0.5 / 6)
    assert sum(v for k, v in feats.items() if k.startswith("c|")) == pytest.approx(1.0)


def test_text_without_meaningful_tokens_gets_the_empty_feature():
    assert weighted_features("") == {"e|": 1.0}
    assert weighted_features("the of , !") == {"e|": 1.0}
    assert features("的了") == ["e|"]


# ----------------------------------------------------------------------------------------- hashing
def test_hashing_rows_are_unit_float32_and_deterministic():
    texts = ["Toy Story (1995)", "GoldenEye (1995)", "", "the", "玩具总动员"] + CHINESE_SPORTS
    a = HashingEncoder(dim=64).encode(texts)
    b = HashingEncoder(dim=64).encode(list(reversed(texts)))[::-1]
    assert a.dtype == np.float32 and a.shape == (len(texts), 64)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(a, b)  # a text's vector does not depend on its neighbours


def test_hashing_equals_signed_hash_of_the_features():
    """Independent recomputation: one feature -> +-1 in one bucket, via sklearn's murmurhash."""
    from sklearn.utils import murmurhash3_32

    dim = 128
    vec = HashingEncoder(dim=dim).encode(["guitar"])[0]
    expected = np.zeros(dim)
    for feat, weight in weighted_features("guitar").items():
        h = murmurhash3_32(feat, seed=0)
        expected[abs(h) % dim] += weight * (1 if h >= 0 else -1)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(vec, expected, atol=1e-6)


def test_hashing_shared_words_raise_similarity():
    v = HashingEncoder(dim=512).encode(["jazz guitar lessons", "guitar lessons for kids", "stock market news"])
    assert v[0] @ v[1] > 0.3
    assert abs(v[0] @ v[2]) < 0.2


def test_hashing_fingerprint_depends_on_dim_only():
    assert HashingEncoder(64).fingerprint == HashingEncoder(64).fingerprint
    assert HashingEncoder(64).fingerprint != HashingEncoder(128).fingerprint


def test_hashing_and_tfidf_group_chinese_titles_by_topic():
    texts = CHINESE_SPORTS + CHINESE_STOCKS
    labels = ["sports"] * 4 + ["stocks"] * 4
    for encoder in (HashingEncoder(dim=256), TfidfEncoder(dim=4).fit(texts)):
        within, between = mean_within_between(encoder.encode(texts), labels)
        assert within > between + 0.05, (encoder.kind, within, between)


# ------------------------------------------------------------------------------------------- tfidf
ENGLISH = [
    "jazz guitar lessons for beginners",
    "learn guitar chords fast",
    "classical guitar concert tonight",
    "stock market falls on rate fears",
    "market rally lifts bank stocks",
    "bank stocks slide as market cools",
]


def test_tfidf_fits_and_groups_english_titles():
    enc = TfidfEncoder(dim=3).fit(ENGLISH)
    assert enc.dim == 3
    v = enc.encode(ENGLISH)
    assert v.dtype == np.float32 and v.shape == (6, 3)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    within, between = mean_within_between(v, ["music"] * 3 + ["finance"] * 3)
    assert within > between + 0.3


def test_tfidf_matches_sklearn_pipeline_computed_independently():
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = TfidfVectorizer(analyzer=features, sublinear_tf=True, norm="l2").fit_transform(ENGLISH)
    reduced = TruncatedSVD(n_components=3, algorithm="randomized", n_iter=7, random_state=0).fit_transform(tfidf)
    expected = reduced / np.linalg.norm(reduced, axis=1, keepdims=True)
    np.testing.assert_allclose(TfidfEncoder(dim=3).fit(ENGLISH).encode(ENGLISH), expected, atol=1e-5)


def test_tfidf_dim_is_capped_by_the_corpus_and_reported():
    enc = TfidfEncoder(dim=256).fit(ENGLISH)
    assert enc.dim == 5  # n_texts - 1
    assert any("supports only 5" in line for line in enc.fit_report())


def test_tfidf_fingerprint_changes_when_any_corpus_text_changes():
    a = TfidfEncoder(dim=3).fit(ENGLISH).fingerprint
    assert TfidfEncoder(dim=3).fit(ENGLISH).fingerprint == a
    edited = ENGLISH[:-1] + ["bank stocks slide as markets cool"]
    assert TfidfEncoder(dim=3).fit(edited).fingerprint != a
    assert TfidfEncoder(dim=4).fit(ENGLISH).fingerprint != a


def test_tfidf_text_with_no_known_feature_gets_a_stable_unit_vector():
    enc = TfidfEncoder(dim=3).fit(ENGLISH)
    v = enc.encode(["zzzz qqqq", "zzzz qqqq", "wwww"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(v[0], v[1])
    assert not np.allclose(v[0], v[2])


def test_tfidf_refuses_a_tiny_corpus():
    with pytest.raises(DataError, match="at least 3"):
        TfidfEncoder().fit(["a b", "c d"])


def test_tfidf_before_fit_is_a_programming_error():
    with pytest.raises(RuntimeError, match="before fit"):
        _ = TfidfEncoder().dim


# --------------------------------------------------------------------------------------- real data
def _thucnews_sample(per_class: int = 60) -> tuple[list[str], list[str]]:
    folder = DATA / "thucnews-titles"
    if not (folder / "dev.txt").is_file():
        pytest.skip("shared data ../shared/data/thucnews-titles is absent")
    names = (folder / "class.txt").read_text(encoding="utf-8").split("\n")
    df = pd.read_csv(folder / "dev.txt", sep="\t", header=None, names=["title", "label"], quoting=3, dtype={"title": str})
    df = df.groupby("label", group_keys=False).head(per_class)
    return df["title"].tolist(), [names[i] for i in df["label"]]


def test_thucnews_titles_are_closer_within_category_than_across():
    texts, labels = _thucnews_sample(per_class=100)  # 10 categories x 100 titles
    results = {}
    for encoder in (HashingEncoder(), TfidfEncoder(dim=32).fit(texts)):
        vectors = encoder.encode(texts)
        assert vectors.shape[0] == len(texts)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        results[encoder.kind] = mean_within_between(vectors, labels)
    # Short titles share few words, so absolute cosines are small; both encoders still put
    # same-category titles closer (measured: hashing 0.010 vs 0.002, tfidf 0.10 vs 0.03).
    assert all(within > between for within, between in results.values()), results
    within, between = results["tfidf"]
    assert within > 2 * between and within - between > 0.02, results
