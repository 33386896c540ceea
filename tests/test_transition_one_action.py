"""``one_action`` (one env action in Python floats, the runtime's one-event update) against the core's
array functions it stands for: ``action_to_strengths``, ``action_changes``, ``category_forgetting_factor`` and
``apply_keep_change``, compared to the bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from interestgym.core.interest import update_profile
from interestgym.core.protocol import action_to_strengths
from interestgym.core.transition import (
    action_changes,
    apply_keep_change,
    category_forgetting_factor,
    fold_outcomes,
    one_action,
    update_category_counts,
    update_slot_category_counts,
)

EDGES = [-1.5, -1.0, -0.5, -0.0, 0.0, 1e-8, 0.3, 0.999, 1.0, 1.5, float("nan")]


def _bits(value: float | None) -> bytes | None:
    return None if value is None else np.float64(value).tobytes()


def _actions(width: int, n_random: int = 300) -> np.ndarray:
    rng = np.random.default_rng(width)
    edge_rows = np.array([[EDGES[(i + 3 * j) % len(EDGES)] for j in range(width)] for i in range(4 * len(EDGES))])
    return np.concatenate([edge_rows, rng.uniform(-1.3, 1.3, (n_random, width))]).astype(np.float32)


@pytest.mark.parametrize("width", [4, 5, 6, 7, 8, 9])
@pytest.mark.parametrize("fixed", [None, float("nan"), 0.0, 0.8, 1.0])
def test_one_action_equals_the_array_functions_to_the_bit(width: int, fixed: float | None) -> None:
    actions = _actions(width)
    strengths = action_to_strengths(actions[:, :4])
    changes = action_changes(actions)
    forgetting = apply_keep_change(category_forgetting_factor(fixed, strengths), changes.keep)
    for i, row in enumerate(actions):
        got_strengths, got_changes, got_forgetting = one_action(row.tolist(), fixed)
        assert [_bits(v) for v in got_strengths] == [_bits(v) for v in strengths[i]]
        assert _bits(got_forgetting) == _bits(forgetting[i])
        for name in ("keep", "tracker", "gain", "context", "slot"):
            expected = getattr(changes, name)
            got = getattr(got_changes, name)
            assert (got is None) == (expected is None), name
            if expected is not None:
                assert _bits(got) == _bits(expected[i]), (name, row)


def test_one_action_reads_nan_and_signed_zero_as_numpy_does() -> None:
    strengths, changes, forgetting = one_action([float("nan"), -0.0, 2.0, -2.0, -0.0, 0.0, float("nan")])
    assert math.isnan(strengths[0]) and strengths[1:] == [0.5, 1.0, 0.0]
    assert math.isnan(forgetting)  # 1 - NaN; a -0.0 keep change is no change
    assert _bits(changes.keep) == _bits(-0.0) and math.isnan(changes.gain)


def test_the_count_functions_one_user_form_equals_their_batched_form() -> None:
    rng = np.random.default_rng(3)
    counts, slot_counts = rng.uniform(0, 5, (6, 12)), rng.uniform(0, 5, (6, 4, 12))
    column, slot = np.array([3, -1, 0, 11, 3, -1]), np.array([0, 1, 2, 3, 3, 0])
    forgetting, gain = rng.uniform(0, 1, 6), rng.uniform(0, 2, 6)
    for g in (None, gain):
        batched = update_category_counts(counts, column, forgetting, g)
        slotted = update_slot_category_counts(slot_counts, slot, column, forgetting, g)
        for i in range(6):
            one_gain = None if g is None else float(g[i])
            got = update_category_counts(counts[i], int(column[i]), float(forgetting[i]), one_gain)
            assert got.tobytes() == batched[i].tobytes()
            got = update_slot_category_counts(slot_counts[i], int(slot[i]), int(column[i]), float(forgetting[i]), one_gain)
            assert got.tobytes() == slotted[i].tobytes()
    assert counts.tobytes() == np.random.default_rng(3).uniform(0, 5, (6, 12)).tobytes()  # the input is not modified
    # float32 counts (a state written by hand) widen to float64 in both forms
    small, small_slots = counts.astype(np.float32), slot_counts.astype(np.float32)
    batched = update_category_counts(small, column, forgetting, gain)
    slotted = update_slot_category_counts(small_slots, slot, column, forgetting, gain)
    for i in range(6):
        got = update_category_counts(small[i], int(column[i]), float(forgetting[i]), float(gain[i]))
        assert got.dtype == batched.dtype == np.float64 and got.tobytes() == batched[i].tobytes()
        got = update_slot_category_counts(small_slots[i], int(slot[i]), int(column[i]), float(forgetting[i]), float(gain[i]))
        assert got.dtype == np.float64 and got.tobytes() == slotted[i].tobytes()


def test_fold_outcomes_one_user_form_equals_the_batched_form() -> None:
    rng = np.random.default_rng(4)
    # mixed magnitudes, and point counts past 2**24 (a float32 would round them; float64 and Python's int division do not)
    means = rng.uniform(-1, 1, (9, 3)) * 10.0 ** rng.integers(-8, 8, (9, 3))
    sums = rng.uniform(0, 7, (9, 3)) * 10.0 ** rng.integers(-8, 12, (9, 3))
    n_points = np.array([0, 1, 3, 7, 0, 11, 2**24 + 1, 2**40 + 3, 1_000_003])
    for dtype in (np.float64, np.float32):
        batched = fold_outcomes(means, sums.astype(dtype), n_points)
        for i in range(len(means)):
            row = means[i].tolist()
            got = fold_outcomes(row, sums[i].astype(dtype).tolist(), int(n_points[i]))
            assert isinstance(got, list) and got is not row
            assert np.array(got, dtype=np.float64).tobytes() == batched[i].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dim", [1, 7, 384])
def test_one_users_update_profile_equals_the_engines_batched_call(dtype, dim: int) -> None:
    """The runtime's call (one user's (5, d) block, an item (d,), the rates as a list) against the engine's (B users'
    (B, 5, d) profiles, items (B, 1, d), rates (B, 5)), row for row to the bit: unit, zero and NaN rows; rates 0, -0.0, 1, NaN, one that rounds to 0 in float32."""
    rng = np.random.default_rng(dim)
    n, k = 40, 5
    profiles = rng.normal(size=(n, k, dim))
    profiles /= np.linalg.norm(profiles, axis=-1, keepdims=True)
    profiles[3, 0] = 0.0  # an empty profile (no interest known yet)
    profiles[5, 1] = np.nan
    items = rng.normal(size=(n, dim))
    items /= np.linalg.norm(items, axis=-1, keepdims=True)
    items[7] = -profiles[7, 0]  # (1 - a) L + a x = 0 for a = 0.5: a zero row after the move
    rates = rng.uniform(0, 1, (n, k))
    rates[7, 0] = 0.5
    rates[9, :] = [0.0, -0.0, 1.0, 1e-50, np.nan]
    rates[11, 1] = 0.0
    profiles, items = profiles.astype(dtype), items.astype(dtype)
    batched = update_profile(profiles, items[:, None, :], rates)
    for i in range(n):
        got = update_profile(profiles[i], items[i], rates[i].tolist())
        assert got.dtype == batched.dtype and got.shape == (k, dim)
        assert got.tobytes() == batched[i].tobytes(), i
    assert not update_profile(profiles[7], items[7], rates[7].tolist())[0].any()  # the zero row stays zero
    # a = 0 (and one rounding to 0 in float32) keeps the row's bytes
    kept = update_profile(profiles[9], items[9], rates[9].tolist())
    assert kept[:2].tobytes() == profiles[9, :2].tobytes()
    if dtype is np.float32:
        assert kept[3].tobytes() == profiles[9, 3].tobytes()


LAYOUTS = [None, ("long_strength", "short_strength", "short_weight", "popularity_weight"),
           ("long_strength", "short_strength", "short_weight", "popularity_weight", "keep_change"),
           ("long_strength", "short_strength", "short_weight", "popularity_weight", "gain_change"),
           ("long_strength", "short_strength", "short_weight", "popularity_weight", "keep_change", "gain_change", "slot_change"),
           ("long_strength", "short_strength", "short_weight", "popularity_weight", "tracker_change", "context_change")]


@pytest.mark.parametrize("names", LAYOUTS)
@pytest.mark.parametrize("base_width", [4, 7])
def test_compose_residual_row_equals_the_array_form_to_the_bit(names, base_width) -> None:
    from interestgym.core.rules import compose_residual, compose_residual_row

    n_change = 6 if names is None else len(names)
    rng = np.random.default_rng(base_width * 10 + n_change)
    n = 400
    # float32 values of very different sizes, so that sums round (1e-8 + 0.3), edges and out-of-range values
    base = (rng.uniform(-1, 1, (n, base_width)) * rng.choice([1.0, 1e-3, 1e-8], (n, base_width))).astype(np.float32)
    change = (rng.uniform(-2, 2, (n, n_change)) * rng.choice([1.0, 1e-4, 1e-9], (n, n_change))).astype(np.float32)
    edges = np.array(EDGES, dtype=np.float32)
    base[:40] = edges[rng.integers(0, len(edges), (40, base_width))]
    change[:40] = edges[rng.integers(0, len(edges), (40, n_change))]
    with np.errstate(invalid="ignore"):
        expected = compose_residual(base, change, names)
    for i in range(n):
        got = compose_residual_row(base[i].tolist(), change[i].tolist(), names)
        assert np.array(got, dtype=np.float64).tobytes() == expected[i].astype(np.float64).tobytes(), (base[i], change[i])
    with pytest.raises(ValueError, match="components for the"):
        compose_residual_row(base[0].tolist(), change[0].tolist() + [0.0], names or LAYOUTS[1])


def _rules_to_check():
    from interestgym.core.rules import RULES, BayesianCategoryPolicy

    rules = [cls() for cls in RULES.values()]
    rules += [BayesianCategoryPolicy(value_gain=0.5, value_median=0.146), BayesianCategoryPolicy(value_gain=1.0, value_median=3.0),
              BayesianCategoryPolicy(value_gain=np.float64(0.7), value_median=np.float64(0.2))]
    return rules


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_rules_act_row_equals_its_act_to_the_bit(dtype) -> None:
    """``act_row`` (the runtime's one-event form) against ``act`` on the same rows, for every rule of the product and the
    value-gain forms (a numpy float64 parameter included: its promotion is the array form's)."""
    from interestgym.core.features import N_FEATURES

    rng = np.random.default_rng(5)
    obs = rng.uniform(-1.5, 1.5, (60, N_FEATURES)).astype(dtype)
    obs[:10] = np.array(EDGES, dtype=dtype)[rng.integers(0, len(EDGES), (10, N_FEATURES))]
    for rule in _rules_to_check():
        with np.errstate(all="ignore"):  # edge rows decode to impossible counts: both forms warn alike
            expected = np.asarray(rule.act(obs), dtype=np.float32)
        for i in range(len(obs)):
            with np.errstate(all="ignore"):
                got = rule.act_row(obs[i: i + 1])
            assert np.array(got, dtype=np.float32).tobytes() == expected[i].tobytes(), (rule.name, rule.params, obs[i])
        with np.errstate(all="ignore"):
            assert rule.act_row(obs[:1]) is not rule.act_row(obs[:1])  # a new list each call: the caller may change it
