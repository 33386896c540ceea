"""The scalar path of ``ranking_metrics`` (a few rows with one click each: the single env, the runtime)
equals the general path to the bit, counting in Python or in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from interestgym.core import metrics
from interestgym.core.metrics import DEFAULT_METRICS, ranking_metrics

ALL = ("auc", "mrr", "first_click_rr", "ndcg@1", "ndcg@3", "ndcg@10", "hit@1", "hit@3", "hit@10", "click@2", "precision@3",
       "precision@10", "recall@2", "recall@10", "f1@3", "f1@10")


def general(scores: np.ndarray, labels: np.ndarray, names=ALL) -> dict[str, np.ndarray]:
    """The general (batched numpy) path, with the scalar path switched off."""
    saved = metrics._SCALAR_ROWS, metrics._PYTHON_CELLS
    metrics._SCALAR_ROWS, metrics._PYTHON_CELLS = 0, 0
    try:
        return ranking_metrics(scores, labels, names)
    finally:
        metrics._SCALAR_ROWS, metrics._PYTHON_CELLS = saved


def one_click_case(rng: np.random.Generator, n_rows: int, n_cand: int, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of one click each, with padding (-1) and, by ``kind``, many ties, none, all, or NaN scores."""
    if kind == 0:
        scores = rng.integers(0, 3, (n_rows, n_cand)).astype(np.float32)  # many ties
    elif kind == 1:
        scores = rng.standard_normal((n_rows, n_cand)).astype(np.float32)
    elif kind == 2:
        scores = np.zeros((n_rows, n_cand))  # empty profiles: everything tied
    else:
        scores = rng.integers(0, 4, (n_rows, n_cand)).astype(np.float64)
        scores[rng.random((n_rows, n_cand)) < 0.15] = np.nan  # NaN on some candidates (the click too, now and then)
    labels = np.zeros((n_rows, n_cand), dtype=np.int8)
    for r in range(n_rows):
        n = int(rng.integers(2, n_cand + 1))
        labels[r, n:] = -1
        labels[r, rng.integers(0, n)] = 1
    return scores, labels


def assert_bit_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype == np.float64, name
        assert np.array_equal(got[name], value, equal_nan=True), (name, got[name], value)


@pytest.mark.parametrize("cells", [64, 0], ids=["python-counts", "numpy-counts"])
def test_scalar_path_is_bit_identical_to_the_general_path(cells, monkeypatch):
    monkeypatch.setattr(metrics, "_PYTHON_CELLS", cells)
    rng = np.random.default_rng(0)
    for trial in range(1500):
        n_rows = int(rng.integers(1, metrics._SCALAR_ROWS + 1))
        n_cand = int(rng.integers(2, 64 // n_rows + 1)) if cells else int(rng.integers(2, 40))
        scores, labels = one_click_case(rng, n_rows, n_cand, trial % 4)
        with np.errstate(invalid="ignore", divide="ignore"):  # a NaN click's general-path NaNs
            assert_bit_identical(ranking_metrics(scores, labels, ALL), general(scores, labels))


def test_the_single_envs_call_takes_the_python_path_and_agrees(monkeypatch):
    # 3 rankings (agent, L alone, S alone) of 1 positive + 9 negatives: the single env at 10 candidates
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((3, 10)).astype(np.float32)
    labels = np.zeros((3, 10), dtype=np.int8)
    labels[:, 4] = 1
    calls = []
    monkeypatch.setattr(metrics, "_python_counts", lambda s, lab, f=metrics._python_counts: calls.append(1) or f(s, lab))
    names = [*DEFAULT_METRICS, "first_click_rr"]
    assert_bit_identical(ranking_metrics(scores, labels, names), general(scores, labels, names))
    assert calls == [1]


def test_rows_with_several_clicks_or_many_rows_take_the_general_path():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 3, (4, 8)).astype(np.float32)
    labels = np.zeros((4, 8), dtype=np.int8)
    labels[:, 0] = 1
    labels[2, 5] = 1  # two clicks in one row
    assert_bit_identical(ranking_metrics(scores, labels, ALL), general(scores, labels))
    many_s, many_l = one_click_case(rng, 40, 10, 0)
    assert_bit_identical(ranking_metrics(many_s, many_l, ALL), general(many_s, many_l))


def test_integer_bool_and_float64_inputs_agree():
    rng = np.random.default_rng(3)
    scores, labels = one_click_case(rng, 3, 9, 0)
    want = general(scores, labels)
    assert_bit_identical(ranking_metrics(scores.astype(np.int64), labels.astype(np.int64), ALL), want)
    assert_bit_identical(ranking_metrics(scores.astype(np.float64), labels, ALL), want)
    no_padding = np.where(labels < 0, 0, labels)
    assert_bit_identical(ranking_metrics(scores, no_padding.astype(bool), ALL), general(scores, no_padding))


@pytest.mark.parametrize("labels", [[[1, 1, -1]], [[0, 0, 0]], [[1, 0, 0], [0, 0, -1]]])
def test_rows_without_both_labels_are_refused_on_the_scalar_path_too(labels):
    with pytest.raises(ValueError, match="clicked and one unclicked"):
        ranking_metrics(np.zeros((len(labels), 3)), np.array(labels), ["auc"])
