"""The per-decision state transition against a plain per-row re-implementation (float64 loops)."""

from __future__ import annotations

import numpy as np
import pytest

from interestgym.core.features import EMA_RATE, SHADOW_STRENGTHS
from interestgym.core.transition import (
    DecisionState,
    category_forgetting_factor,
    decision_transition,
    fold_outcomes,
    update_category_counts,
)

K = len(SHADOW_STRENGTHS)


def unit_rows(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.normal(size=shape)
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def random_state(rng: np.random.Generator, b: int, d: int) -> DecisionState:
    long_term = unit_rows(rng, b, d)
    long_term[0] = 0.0  # a user with no interest known yet
    return DecisionState(
        long_term=long_term, short_term=unit_rows(rng, b, d), shadow=unit_rows(rng, b, K, d),
        drift_ema=rng.uniform(-1, 1, b), short_long_ema=rng.uniform(-2, 2, b), shadow_cos_ema=rng.uniform(-1, 1, (b, K)),
    )


def reference_row(state: DecisionState, i: int, x: np.ndarray, a_long: float, a_short: float) -> dict[str, np.ndarray]:
    """One row, written out directly: statistics from the old profiles, then P <- unit((1 - a) P + a x)."""
    def moved(p: np.ndarray, a: float) -> np.ndarray:
        if a == 0:
            return p
        v = (1 - a) * p + a * x
        n = np.sqrt(sum(float(t) * float(t) for t in v))
        return v / n if n > 0 else v

    old_l, old_s = state.long_term[i].astype(np.float64), state.short_term[i].astype(np.float64)
    x = x.astype(np.float64)
    c_long, c_short = float(old_l @ x), float(old_s @ x)
    shadows = state.shadow[i].astype(np.float64)
    return {
        "drift_ema": state.drift_ema[i] + EMA_RATE * (c_long - state.drift_ema[i]),
        "short_long_ema": state.short_long_ema[i] + EMA_RATE * ((c_short - c_long) - state.short_long_ema[i]),
        "shadow_cos_ema": np.array([state.shadow_cos_ema[i, k] + EMA_RATE * (shadows[k] @ x - state.shadow_cos_ema[i, k]) for k in range(K)]),
        "long_term": moved(old_l, a_long),
        "short_term": moved(old_s, a_short),
        "shadow": np.stack([moved(shadows[k], a) for k, a in enumerate(SHADOW_STRENGTHS)]),
    }


def test_transition_matches_a_per_row_reimplementation():
    rng = np.random.default_rng(0)
    b, d = 7, 12
    state = random_state(rng, b, d)
    x = unit_rows(rng, b, d)
    strengths = rng.random((b, 4))
    strengths[2, 0] = 0.0  # "when": no long-term update for row 2
    strengths[3, 1] = 1.0  # replace S by x
    new = decision_transition(state, x, strengths)
    for i in range(b):
        want = reference_row(state, i, x[i], strengths[i, 0], strengths[i, 1])
        for name, value in want.items():
            np.testing.assert_allclose(getattr(new, name)[i], value, rtol=1e-5, atol=1e-6, err_msg=f"row {i} {name}")
    assert new.long_term[2].tobytes() == state.long_term[2].tobytes()  # a = 0 keeps the bits
    np.testing.assert_allclose(new.long_term[0], x[0], atol=1e-6)  # first update of a zero profile sets it to x
    np.testing.assert_allclose(new.short_term[3], x[3], atol=1e-6)
    assert [a.dtype for a in new] == [np.float32] * 3 + [np.float64] * 3
    # pure: the input state is left untouched
    assert not np.shares_memory(new.long_term, state.long_term)


def test_each_row_is_bit_identical_alone_or_in_a_batch():
    rng = np.random.default_rng(1)
    b, d = 9, 16
    state = random_state(rng, b, d)
    x = unit_rows(rng, b, d)
    strengths = rng.random((b, 4))
    batch = decision_transition(state, x, strengths)
    for i in range(b):
        alone = decision_transition(DecisionState(*(a[i:i + 1].copy() for a in state)), x[i:i + 1].copy(), strengths[i:i + 1])
        for name in DecisionState._fields:
            assert getattr(alone, name)[0].tobytes() == getattr(batch, name)[i].tobytes(), (i, name)


@pytest.mark.parametrize("forgetting", [0.9, np.array([1.0, 0.5, 0.8])])
def test_category_counts_forget_then_count_the_event(forgetting):
    counts = np.array([[1.0, 2.0, 0.0], [0.0, 4.0, 3.0], [2.0, 0.0, 1.0]])
    category = np.array([2, 0, -1])  # -1: a category without a column, only forgotten
    got = update_category_counts(counts, category, forgetting)
    f = np.broadcast_to(forgetting, (3,))
    for i in range(3):
        want = [counts[i, j] * f[i] + (1.0 if j == category[i] else 0.0) for j in range(3)]
        assert got[i].tolist() == want
    assert counts[0, 2] == 0.0  # input untouched


def test_category_forgetting_factor_is_fixed_or_one_minus_long_strength():
    strengths = np.array([[0.2, 0.5, 0.5, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])
    assert category_forgetting_factor(None, strengths).tolist() == [0.8, 0.0, 1.0]
    assert category_forgetting_factor(0.9, strengths).tolist() == [0.9, 0.9, 0.9]
    # per row: NaN = tied (the engine's storage of ScoringConfig(category_forgetting=None))
    assert category_forgetting_factor(np.array([0.95, np.nan, np.nan]), strengths).tolist() == [0.95, 0.0, 1.0]
    # a_L = 1 with the tied mode keeps only the event's category
    counts = update_category_counts(np.array([[3.0, 1.0]]), np.array([1]), category_forgetting_factor(None, strengths[1:2]))
    assert counts.tolist() == [[0.0, 1.0]]


def test_fold_outcomes_moves_scored_rows_by_their_point_mean():
    means = np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]])
    sums = np.array([[1.5, 1.0, 0.5], [9.0, 9.0, 9.0], [0.25, 0.0, 0.75]])
    n_points = np.array([3, 0, 1])
    got = fold_outcomes(means, sums, n_points)
    for i in range(3):
        for j in range(3):
            want = means[i, j] if n_points[i] == 0 else means[i, j] + EMA_RATE * (sums[i, j] / n_points[i] - means[i, j])
            assert got[i, j] == want
    assert got[1].tolist() == [0.5, 0.5, 0.5]
