"""The core's per-call shortcuts (one user per call in the runtime and the single env) give the values of
the plain numpy formulas they replace, bit for bit: ``core.numeric.clip``, the all-positive-norm division
of ``normalise_rows``, ``update_profile``'s zero-strength rows, the gain mapping without its ``where``,
the fixed forgetting factor and the cached residual layout."""

from __future__ import annotations

import numpy as np
import pytest

from interestgym.core.interest import normalise_rows, update_profile
from interestgym.core.numeric import clip, clip_float
from interestgym.core.protocol import ENV_ACTION_NAMES
from interestgym.core.rules import compose_residual
from interestgym.core.transition import (
    GAIN_MAX,
    action_changes,
    apply_gain_change,
    category_forgetting_factor,
)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


SPECIALS = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1.0, -1.0, 0.5, -3.0, 7.25])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 1.0), (0.0, 2.0), (-0.0, 0.0)])
def test_clip_is_np_clip_bit_for_bit(dtype, bounds):
    rng = np.random.default_rng(0)
    values = np.concatenate([SPECIALS, rng.standard_normal(50) * 3]).astype(dtype).reshape(6, 10)
    assert same_bits(clip(values, *bounds), np.clip(values, *bounds))
    out = np.empty_like(values)
    assert clip(values, *bounds, out=out) is out and same_bits(out, np.clip(values, *bounds))


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (0.0, 1.0), (0.0, 2.0), (-0.0, 0.0), (0.0, -0.0), (0.5, 0.5)])
def test_clip_float_is_np_clip_of_a_float64_bit_for_bit(bounds):
    """The one-user forms' scalar clip: every value, -0.0, NaN and the infinities included, gives numpy's bits."""
    rng = np.random.default_rng(1)
    values = [*SPECIALS.tolist(), *bounds, *(np.nextafter(b, d) for b in bounds for d in (-np.inf, np.inf)),
              *(rng.standard_normal(40) * 3).tolist()]
    for v in values:
        got = clip_float(float(v), *bounds)
        assert type(got) is float
        assert np.float64(got).tobytes() == np.clip(np.float64(v), *bounds).tobytes(), (v, bounds)


def test_clip_with_array_bounds_and_integers_is_np_clip():
    values = np.array([[0.3, 7.0, -2.0]], dtype=np.float32)
    low, high = np.array([0.0, 1.0, -1.0]), np.array([0.5, 2.0, 1.0])
    assert same_bits(clip(values, low, high), np.clip(values, low, high))
    ints = np.array([1, 5, -2])
    assert same_bits(clip(ints, 0, 3), np.clip(ints, 0, 3))


def masked_normalise(v: np.ndarray) -> np.ndarray:
    """The reference: v / |v| where |v| > 0, else 0 (written without normalise_rows)."""
    norm = np.sqrt(np.einsum("...d,...d->...", v, v))[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, v / norm, np.zeros((), dtype=v.dtype)).astype(v.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalise_rows_equals_the_masked_division_with_and_without_zero_rows(dtype):
    rng = np.random.default_rng(1)
    v = rng.standard_normal((3, 4, 16)).astype(dtype)
    assert same_bits(normalise_rows(v), masked_normalise(v))  # every norm positive: the plain division
    v[1, 2] = 0.0  # a zero row
    v[2, 0] = 1e-30  # squares underflow to 0 in float32: "zero" there, tiny but positive in float64
    assert same_bits(normalise_rows(v), masked_normalise(v))


def test_update_profile_keeps_zero_strength_rows_exactly():
    rng = np.random.default_rng(2)
    profile = normalise_rows(rng.standard_normal((2, 5, 16)).astype(np.float32))
    item = normalise_rows(rng.standard_normal((2, 1, 16)).astype(np.float32))
    rates = rng.uniform(0.01, 1.0, (2, 5))
    rates[0, 1] = rates[1, 4] = 0.0
    moved = update_profile(profile, item, rates)
    a = rates.astype(np.float32)[..., None]
    reference = np.where(a == 0, profile, masked_normalise((1 - a) * profile + a * item))
    assert same_bits(moved, reference)
    assert same_bits(moved[0, 1], profile[0, 1]) and same_bits(moved[1, 4], profile[1, 4])
    assert same_bits(update_profile(profile, item, 0.0), profile)  # a scalar 0: every row as it was
    no_zero = np.where(rates == 0, 0.5, rates)
    a = no_zero.astype(np.float32)[..., None]
    assert same_bits(update_profile(profile, item, no_zero), masked_normalise((1 - a) * profile + a * item))


def test_gain_mapping_is_the_clipped_shift_and_exactly_one_for_no_change():
    change = np.concatenate([SPECIALS, np.random.default_rng(3).uniform(-1, 1, 40)])
    with np.errstate(invalid="ignore"):
        reference = np.where(change == 0, 1.0, np.clip(1.0 + change, 0.0, GAIN_MAX))
    assert same_bits(apply_gain_change(change), reference)
    assert apply_gain_change(np.array([0.0, -0.0])).tolist() == [1.0, 1.0]
    # through action_changes: a 9-column action with zero changes gives gain 1 and slot factor 1
    actions = np.zeros((2, len(ENV_ACTION_NAMES)), dtype=np.float32)
    changes = action_changes(actions)
    assert changes.gain.tolist() == [1.0, 1.0] and changes.slot.tolist() == [1.0, 1.0]
    assert action_changes(actions[:, :4]) == (None, None, None, None, None)


@pytest.mark.parametrize("fixed", [0.9, np.float64(0.95), 1.0, 0.0, float("nan"), np.nan, 1, np.array(0.8)])
def test_fixed_forgetting_factor_equals_the_per_row_formula(fixed):
    strengths = np.random.default_rng(4).uniform(0, 1, (5, 4))
    tied = 1.0 - strengths[:, 0]
    f = np.broadcast_to(np.asarray(fixed, dtype=np.float64), tied.shape)
    assert same_bits(category_forgetting_factor(fixed, strengths), np.where(np.isnan(f), tied, f))


def test_residual_layout_is_computed_once_and_cannot_be_changed_by_a_caller():
    names = ("long_strength", "short_strength", "short_weight", "popularity_weight", "gain_change", "slot_change")
    base = np.full((2, 4), 0.5, dtype=np.float32)
    change = np.array([[0.1, -0.2, 0.0, 0.3, 0.4, -0.5], [2.0, 0.0, 0.0, 0.0, -3.0, 0.25]], dtype=np.float32)
    from interestgym.core.rules import _residual_layout

    _residual_layout.cache_clear()
    first = compose_residual(base, change, names)
    second = compose_residual(base, change, names)
    assert same_bits(first, second)
    info = _residual_layout.cache_info()
    assert (info.misses, info.hits) == (1, 1)  # computed once, then reused
    columns, width = _residual_layout(names)
    with pytest.raises(ValueError, match="read-only"):
        columns[0] = 0  # a caller cannot change the cached layout under the next call
    assert width == ENV_ACTION_NAMES.index("slot_change") + 1
    g, s = ENV_ACTION_NAMES.index("gain_change"), ENV_ACTION_NAMES.index("slot_change")
    assert first.shape == (2, s + 1)
    assert first[:, g].tolist() == [pytest.approx(0.4), -1.0] and first[:, s].tolist() == [-0.5, 0.25]
    expected_strengths = np.clip(base + change[:, :4], -1.0, 1.0)
    assert same_bits(first[:, :4], expected_strengths)
    untouched = [j for j in range(s + 1) if j >= 4 and j not in (g, s)]
    assert not first[:, untouched].any()  # components the policy does not have stay 0


def test_a_rule_of_constant_strengths_repeats_its_action_row_exactly():
    from interestgym.core.features import FEATURE_NAMES
    from interestgym.core.rules import RULES, RulePolicy, make_rule

    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, (257, len(FEATURE_NAMES))).astype(np.float32)
    for name, params in [("ema_two_profile", {"long_rate": 0.05, "short_rate": 0.7, "short_weight": 0.2, "popularity_weight": 1.0}),
                         ("ema_two_profile", {"long_rate": 1.5, "short_rate": -0.2, "short_weight": 1 / 3, "popularity_weight": 0.1}),
                         ("context_rule", {}), ("bayesian_category", {}), ("behaviour_rule", {}), ("recsim_saturating", {})]:
        rule = RULES[name](**params)  # the class itself: make_rule refuses the out-of-range rates whose clipping this tests
        fast, slow = rule.act(obs), RulePolicy.act(rule, obs)  # the generic path, column by column
        assert fast.dtype == slow.dtype == np.float32 and np.array_equal(fast, slow), name
        assert np.array_equal(rule.act(obs[3]), RulePolicy.act(rule, obs[3])) and rule.act(obs[:0]).shape == (0, 4)
    # parameters changed after a call: the row follows them
    rule = make_rule("ema_two_profile", long_rate=0.1)
    rule.act(obs)
    rule.params["long_rate"] = 0.35
    assert np.array_equal(rule.act(obs), RulePolicy.act(rule, obs))


def test_the_value_rules_action_is_the_generic_strengths_and_its_gain_column():
    from interestgym.core.features import FEATURE_INDEX, FEATURE_NAMES
    from interestgym.core.protocol import ENV_ACTION_NAMES
    from interestgym.core.rules import RulePolicy, make_rule

    rng = np.random.default_rng(1)
    obs = rng.uniform(0, 1, (33, len(FEATURE_NAMES))).astype(np.float32)
    rule = make_rule("bayesian_category", long_rate=0.05, short_rate=0.7, short_weight=0.2, popularity_weight=1.0,
                     value_gain=1.5, value_median=0.146)
    got = rule.act(obs)
    gain = ENV_ACTION_NAMES.index("gain_change")
    assert got.shape == (33, gain + 1) and np.array_equal(got[:, :4], RulePolicy.act(rule, obs)) and not got[:, 4:gain].any()
    expected = np.clip(np.float32(1.5) * (obs[:, FEATURE_INDEX["feedback_value"]] / np.float32(0.146) - np.float32(1)), -1, 1)
    np.testing.assert_allclose(got[:, gain], expected, rtol=1e-6)
    assert np.array_equal(rule.act(obs[5]), got[5:6]) and rule.act(obs[:0]).shape == (0, gain + 1)
