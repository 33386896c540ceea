"""Negative sampling, popularity and action mapping (core/protocol.py)."""

from __future__ import annotations

import numpy as np

from interestgym.core.protocol import (
    action_to_strengths,
    item_popularity,
    sample_negatives,
    strengths_to_action,
    user_rng,
)

NEVER = np.iinfo(np.int64).max


def test_negatives_exclude_the_users_items_without_duplicates():
    n_items = 50
    first_seen = np.full(n_items, NEVER)
    first_seen[[3, 7, 11]] = [0, 1, 5]
    neg = sample_negatives(user_rng(0, "u1"), 10, np.ones(n_items), first_seen, np.full(40, NEVER - 1))
    assert neg.shape == (40, 10)
    for row in neg:
        assert len(set(row)) == 10 and not {3, 7, 11} & set(row) and row.min() >= 0


def test_past_exclusion_only_removes_items_seen_up_to_the_cutoff():
    n_items = 6
    first_seen = np.full(n_items, NEVER)
    first_seen[[0, 1]] = [0, 5]
    neg = sample_negatives(user_rng(0, "u"), 5, np.ones(n_items), first_seen, np.array([2, 9]))
    assert sorted(neg[0]) == [1, 2, 3, 4, 5]  # item 1 first seen after cutoff 2: allowed
    assert sorted(x for x in neg[1] if x >= 0) == [2, 3, 4, 5] and neg[1][-1] == -1  # fewer eligible: padded


def test_more_negatives_than_items_draws_every_eligible_item_in_an_array_no_wider_than_the_catalogue():
    """--n-negatives 100000 on a small catalogue: every eligible item, the same as N = n_items, and not 100,000 columns
    of padding a point (which filled 24 GB on ml-100k)."""
    n_items = 6
    first_seen = np.full(n_items, NEVER)
    first_seen[0] = 0
    huge = sample_negatives(user_rng(0, "u"), 100_000, np.ones(n_items), first_seen, np.array([2, 9]))
    assert huge.shape == (2, n_items)
    np.testing.assert_array_equal(huge, sample_negatives(user_rng(0, "u"), n_items, np.ones(n_items), first_seen, np.array([2, 9])))
    assert [sorted(x for x in row if x >= 0) for row in huge] == [[1, 2, 3, 4, 5]] * 2


def test_seeded_and_prefix_stable():
    w = np.ones(200)
    fs = np.full(200, NEVER)
    a = sample_negatives(user_rng(7, "u"), 20, w, fs, np.full(30, NEVER - 1))
    b = sample_negatives(user_rng(7, "u"), 20, w, fs, np.full(12, NEVER - 1), max_block=200 * 5)
    assert np.array_equal(a[:12], b)  # later scoring points never change earlier ones
    c = sample_negatives(user_rng(8, "u"), 20, w, fs, np.full(12, NEVER - 1))
    assert not np.array_equal(b, c)


def test_popularity_weighting_follows_the_weights():
    w = np.array([0.0] + [1.0] * 9 + [50.0] * 10)
    neg = sample_negatives(user_rng(0, "u"), 5, w, np.full(20, NEVER), np.full(4000, NEVER - 1))
    assert not (neg == 0).any()  # zero weight: never drawn
    heavy = np.isin(neg, np.arange(10, 20)).mean()
    assert heavy > 0.8


def test_a_single_popularity_negative_is_item_i_with_probability_w_i_over_the_sum():
    """The exponential race's law: the first draw is item i with probability w_i / sum(w), exactly (a weight
    of sqrt(w), or w^2, is far outside the tolerance: 5 binomial standard errors)."""
    w = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    n = 40_000
    neg = sample_negatives(user_rng(3, "u"), 1, w, np.full(len(w), NEVER), np.full(n, NEVER - 1))
    freq = np.bincount(neg[:, 0], minlength=len(w)) / n
    p = w / w.sum()
    np.testing.assert_allclose(freq, p, rtol=0, atol=float(5 * np.sqrt(p * (1 - p) / n).max()))
    assert np.abs(freq - np.sqrt(w) / np.sqrt(w).sum()).max() > 0.05


def test_item_popularity_is_normalised_log_counts():
    pop = item_popularity(np.array([0, 1, 9, 99]))
    assert np.allclose(pop, np.log1p([0, 1, 9, 99]) / np.log(100))
    assert not item_popularity(np.zeros(3)).any()


def test_action_mapping_round_trips_and_clips():
    s = np.array([[0.0, 0.25, 0.5, 1.0]])
    assert np.allclose(action_to_strengths(strengths_to_action(s)), s)
    assert action_to_strengths(np.array([[-3.0, 3.0, 0.0, -1.0]])).tolist() == [[0.0, 1.0, 0.5, 0.0]]
