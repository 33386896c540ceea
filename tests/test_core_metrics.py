"""Ranking metrics against independent implementations (sklearn, brute force over tie orders)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from interestgym.core.metrics import (
    DEFAULT_METRICS,
    metric_names,
    parse_metric,
    ranking_metrics,
)
from interestgym.errors import InterestGymError

ALL = ("auc", "mrr", "first_click_rr", "ndcg@3", "ndcg@10", "hit@1", "hit@3", "click@2", "precision@3", "recall@2", "f1@3")


def brute_force(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric averaged over all rankings consistent with the scores (ties in any order)."""
    n = len(scores)
    perms = [p for p in itertools.permutations(range(n)) if all(scores[p[i]] >= scores[p[i + 1]] for i in range(n - 1))]
    n_pos = int(labels.sum())
    sums = dict.fromkeys(ALL, 0.0)
    for perm in perms:
        ranked = labels[list(perm)]
        first = int(np.argmax(ranked)) + 1

        def dcg(k: int, ranked: np.ndarray = ranked) -> float:
            return sum(ranked[i] / np.log2(i + 2) for i in range(min(k, n)))

        def ideal(k: int) -> float:
            return sum(1 / np.log2(i + 2) for i in range(min(k, n_pos)))

        hits = {k: ranked[:k].sum() for k in (1, 2, 3)}
        pairs = [(i, j) for i in range(n) for j in range(n) if ranked[i] == 1 and ranked[j] == 0]
        sums["auc"] += np.mean([1.0 if i < j else 0.0 for i, j in pairs])  # order-based; ties averaged by perms
        sums["mrr"] += np.mean([1.0 / (i + 1) for i in range(n) if ranked[i] == 1])  # MIND's mrr_score
        sums["first_click_rr"] += 1.0 / first
        sums["ndcg@3"] += dcg(3) / ideal(3)
        sums["ndcg@10"] += dcg(10) / ideal(10)
        sums["hit@1"] += float(hits[1] > 0)
        sums["hit@3"] += float(hits[3] > 0)
        sums["click@2"] += float(hits[2] > 0)
        sums["precision@3"] += hits[3] / 3
        sums["recall@2"] += hits[2] / n_pos
        p3, r3 = hits[3] / 3, hits[3] / n_pos
        sums["f1@3"] += 0.0 if hits[3] == 0 else 2 * p3 * r3 / (p3 + r3)
    return {k: v / len(perms) for k, v in sums.items()}


def random_cases(rng: np.random.Generator, n_cases: int, max_len: int = 7) -> list[tuple[np.ndarray, np.ndarray]]:
    cases = []
    while len(cases) < n_cases:
        n = int(rng.integers(2, max_len + 1))
        labels = (rng.random(n) < 0.4).astype(np.int8)
        if labels.sum() in (0, n):
            continue
        scores = rng.integers(0, 3, n).astype(np.float32)  # few distinct values: many ties
        cases.append((scores, labels))
    return cases


def pad(cases: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((len(cases), width), 7.0, dtype=np.float32)  # padding scores must not matter
    labels = np.full((len(cases), width), -1, dtype=np.int8)
    for i, (s, lab) in enumerate(cases):
        scores[i, : len(s)] = s
        labels[i, : len(s)] = lab
    return scores, labels


def test_every_metric_is_its_expectation_over_random_tie_orders():
    rng = np.random.default_rng(0)
    cases = random_cases(rng, 60)
    scores, labels = pad(cases, 9)
    got = ranking_metrics(scores, labels, ALL)
    for i, (s, lab) in enumerate(cases):
        want = brute_force(s, lab)
        for name in ALL:
            assert got[name][i] == pytest.approx(want[name], abs=1e-12), (name, s, lab)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    cases = random_cases(rng, 50, max_len=30)
    scores, labels = pad(cases, 30)
    got = ranking_metrics(scores, labels, ["auc"])["auc"]
    for i, (s, lab) in enumerate(cases):
        assert got[i] == pytest.approx(roc_auc_score(lab, s), abs=1e-12)


def test_ndcg_matches_sklearn_which_averages_gains_over_ties():
    rng = np.random.default_rng(2)
    cases = random_cases(rng, 50, max_len=25)
    scores, labels = pad(cases, 25)
    for k in (1, 5, 10):
        got = ranking_metrics(scores, labels, [f"ndcg@{k}"])[f"ndcg@{k}"]
        for i, (s, lab) in enumerate(cases):
            assert got[i] == pytest.approx(ndcg_score([lab], [s], k=k), abs=1e-12)


def test_hand_computed_single_positive():
    # clicked candidate ranked 3rd of 4, no ties: ndcg@10 = 1/log2(4) = 0.5; mrr 1/3; auc 1/3.
    scores = np.array([[0.2, 0.9, 0.5, 0.1]], dtype=np.float32)
    labels = np.array([[1, 0, 0, 0]], dtype=np.int8)
    m = ranking_metrics(scores, labels, ["ndcg@10", "mrr", "auc", "hit@2", "hit@3", "precision@3", "f1@3"])
    assert m["ndcg@10"][0] == pytest.approx(0.5)
    assert m["mrr"][0] == pytest.approx(1 / 3)
    assert m["auc"][0] == pytest.approx(1 / 3)
    assert m["hit@2"][0] == 0.0 and m["hit@3"][0] == 1.0
    assert m["precision@3"][0] == pytest.approx(1 / 3)
    assert m["f1@3"][0] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))


def test_all_tied_scores_are_worth_a_random_ranking():
    n = 100
    scores = np.zeros((1, n), dtype=np.float32)
    labels = np.zeros((1, n), dtype=np.int8)
    labels[0, 17] = 1
    m = ranking_metrics(scores, labels, ["auc", "hit@10", "mrr", "ndcg@10"])
    assert m["auc"][0] == 0.5
    assert m["hit@10"][0] == pytest.approx(10 / n)
    assert m["mrr"][0] == pytest.approx(np.mean(1.0 / np.arange(1, n + 1)))
    assert m["ndcg@10"][0] == pytest.approx(np.sum(1 / np.log2(np.arange(10) + 2)) / n)


def test_a_row_does_not_depend_on_padding_or_neighbours():
    rng = np.random.default_rng(3)
    cases = random_cases(rng, 20, max_len=12)
    alone = [ranking_metrics(*pad([c], len(c[0])), DEFAULT_METRICS) for c in cases]
    batch = ranking_metrics(*pad(cases, 40), DEFAULT_METRICS)
    for i in range(len(cases)):
        for name in DEFAULT_METRICS:
            assert batch[name][i] == alone[i][name][0]  # bit-identical, not approximately


def test_rows_without_both_labels_are_refused():
    with pytest.raises(ValueError, match="clicked and one unclicked"):
        ranking_metrics(np.zeros((1, 3)), np.array([[1, 1, -1]]), ["auc"])


def test_metric_names_parse_and_reject():
    assert parse_metric("NDCG@10") == ("ndcg", 10)
    assert parse_metric("auc") == ("auc", None)
    assert metric_names(["hit@5", "auc"])[-1] == "hit@5"
    for bad in ("ndcg", "ndcg@0", "map@10", "f1@x"):
        with pytest.raises(InterestGymError, match="expected auc, mrr, first_click_rr"):
            parse_metric(bad)


def test_mrr_is_minds_definition_and_the_first_click_one_has_its_own_name():
    # MIND's mrr_score on two clicks ranked 1st and 3rd of 4: (1/1 + 1/3) / 2; the first click alone: 1.
    scores = np.array([[4.0, 3.0, 2.0, 1.0]])
    labels = np.array([[1, 0, 1, 0]], dtype=np.int8)
    m = ranking_metrics(scores, labels, ["mrr", "first_click_rr"])
    assert m["mrr"][0] == pytest.approx((1.0 + 1.0 / 3.0) / 2.0)
    assert m["first_click_rr"][0] == pytest.approx(1.0)
    # one click: the two agree
    one = ranking_metrics(scores, np.array([[0, 0, 1, 0]], dtype=np.int8), ["mrr", "first_click_rr"])
    assert one["mrr"][0] == pytest.approx(one["first_click_rr"][0]) == pytest.approx(1.0 / 3.0)
