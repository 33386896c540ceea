"""Profile update and scoring (core/interest.py) against direct formulas."""

from __future__ import annotations

import numpy as np
import pytest

from interestgym.core.interest import (
    ScoringConfig,
    category_log_prob,
    combine_scores,
    score_candidates,
    time_slot,
    update_profile,
)
from interestgym.errors import InterestGymError


def unit(rng, *shape):
    v = rng.standard_normal(shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_update_follows_the_formula_and_the_zero_profile_rules():
    rng = np.random.default_rng(0)
    profile = unit(rng, 5, 8)
    profile[0] = 0.0  # "no interest known"
    x = unit(rng, 5, 8)
    a = np.array([0.3, 0.0, 1.0, 0.5, 0.05])
    new = update_profile(profile, x, a)
    assert np.allclose(new[0], x[0], atol=1e-6)  # first update of a zero profile sets it to x
    assert np.array_equal(new[1], profile[1])  # a = 0: no update
    assert np.allclose(new[2], x[2], atol=1e-6)  # a = 1: replace
    for i in (3, 4):
        v = (1 - a[i]) * profile[i].astype(np.float64) + a[i] * x[i]
        assert np.allclose(new[i], v / np.linalg.norm(v), atol=1e-6)
    assert np.allclose(np.linalg.norm(new, axis=1), 1.0, atol=1e-6)
    zero = update_profile(np.zeros((1, 8), np.float32), x[:1], 0.0)
    assert not zero.any()  # a zero profile not updated stays zero (cos 0 with everything)



def test_update_leaves_its_inputs_alone_and_equals_the_float32_formula_to_the_bit():
    # the update mixes and normalises inside its own temporary: the caller's profile and item are untouched, and
    # the result is the float32 expression normalise((1 - a) P + a x) written out, bit for bit
    rng = np.random.default_rng(1)
    profile, x = unit(rng, 4, 3, 16), unit(rng, 4, 1, 16)  # the engine's (B, K, d) profiles, one item per row
    a = rng.uniform(0.01, 1.0, (4, 3)).astype(np.float32)
    before_p, before_x = profile.copy(), x.copy()
    new = update_profile(profile, x, a)
    assert np.array_equal(profile, before_p) and np.array_equal(x, before_x)
    mixed = (1 - a[..., None]) * profile + a[..., None] * x
    norm = np.sqrt(np.einsum("...d,...d->...", mixed, mixed))[..., None]
    assert new.dtype == np.float32 and np.array_equal(new, mixed / norm)
    wide = update_profile(profile[:, 0], unit(rng, 2, 4, 16), 0.5)  # items broadcasting past the profiles' shape
    assert wide.shape == (2, 4, 16)
    assert np.allclose(np.linalg.norm(wide, axis=-1), 1.0, atol=1e-6)



def test_an_update_with_a_wider_item_keeps_the_sums_dtype():
    # float32 profiles moved by a float64 item: the mix is float64 (numpy's promotion), as (1 - a) P + a x is
    rng = np.random.default_rng(2)
    profile, x = unit(rng, 3, 8), unit(rng, 3, 8).astype(np.float64)
    a = np.array([0.2, 0.5, 0.9])
    new = update_profile(profile, x, a)
    mixed = (1 - a.astype(np.float32)[:, None]) * profile + a.astype(np.float32)[:, None] * x
    assert new.dtype == np.float64 and np.array_equal(new, mixed / np.sqrt(np.einsum("...d,...d->...", mixed, mixed))[:, None])


def test_scores_match_the_written_formula():
    rng = np.random.default_rng(1)
    b, c, d, n_cat = 3, 6, 8, 4
    long_term, short_term, ctx = unit(rng, b, d), unit(rng, b, d), unit(rng, b, d)
    cands = unit(rng, b, c, d)
    w, p = rng.random(b), rng.random(b)
    pop = rng.random((b, c)).astype(np.float32)
    counts = rng.random((b, n_cat)) * 5
    cand_cat = rng.integers(0, n_cat, (b, c))
    prior, beta_cat, beta_ctx = 0.5, 0.7, 0.2
    strengths = np.stack([np.zeros(b), np.zeros(b), w, p], axis=1)
    cos_long, cos_short, cos_ctx = (np.einsum("bcd,bd->bc", cands, prof) for prof in (long_term, short_term, ctx))
    got = score_candidates(cos_long, cos_short, strengths, pop, category_counts=counts, candidate_category=cand_cat,
                           category_prior=prior, beta_cat=beta_cat, cos_context=cos_ctx, beta_ctx=beta_ctx)
    for i in range(b):
        for j in range(c):
            x = cands[i, j].astype(np.float64)
            cat_p = (counts[i, cand_cat[i, j]] + prior) / (counts[i].sum() + prior * n_cat)
            want = ((1 - p[i]) * (w[i] * x @ short_term[i] + (1 - w[i]) * x @ long_term[i]) + p[i] * pop[i, j]
                    + beta_cat * np.log(cat_p) + beta_ctx * x @ ctx[i])
            assert got[i, j] == pytest.approx(want, abs=1e-5)


def test_per_user_weights_and_category_probabilities_sum_to_one():
    counts = np.array([[2.0, 0.0, 1.0]])
    lp = category_log_prob(counts, np.array([[0, 1, 2]]), 1.0)
    assert np.exp(lp).sum() == pytest.approx(1.0)
    # a category the counts do not know (index past the columns) counts 0, like an empty known one
    unknown = category_log_prob(counts, np.array([[3, 1]]), 1.0)
    assert unknown[0, 0] == pytest.approx(np.log(1.0 / 6.0)) and unknown[0, 0] == unknown[0, 1]
    s = combine_scores(np.ones((2, 3)), np.zeros((2, 3)), np.array([0.0, 1.0]), np.array([0.0, 0.0]), np.zeros((2, 3)),
                       category_term=np.ones((2, 3)), beta_cat=np.array([0.0, 2.0]))
    assert np.allclose(s, [[1, 1, 1], [2, 2, 2]])


def test_time_slots_are_six_hour_blocks():
    assert time_slot(np.arange(24)).tolist() == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6


@pytest.mark.parametrize("kwargs", [{"popularity_weight": 1.5}, {"category_forgetting": 0.0}, {"category_prior": 0.0},
                                    {"context_rate": -0.1}, {"beta_cat": float("nan")}, {"beta_ctx": float("inf")},
                                    {"beta_cat": "1.0"}, {"popularity_weight": "0.5"}, {"beta_ctx": True}])
def test_scoring_config_rejects_out_of_range_values(kwargs):
    with pytest.raises(InterestGymError, match="ScoringConfig"):
        ScoringConfig(**kwargs)


def test_category_forgetting_none_means_tied_and_round_trips():
    tied = ScoringConfig(beta_cat=1.0, category_forgetting=None)
    assert tied.ties_category_forgetting and not ScoringConfig().ties_category_forgetting
    assert ScoringConfig(**tied.as_dict()) == tied
    assert ScoringConfig().category_forgetting == 1.0  # the default is unchanged: never forget
