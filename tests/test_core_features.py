"""Observation features: bounded, complete, and decodable by rules."""

from __future__ import annotations

import numpy as np

from interestgym.core.features import (
    FEATURE_HIGH,
    FEATURE_LOW,
    FEATURE_NAMES,
    FEATURES,
    LOG_FEATURES,
    SHADOW_STRENGTHS,
    STATE_FEATURES,
    FeatureView,
    encode_features,
)


def raw_batch(rng, n):
    return {
        "cos_item_long": rng.uniform(-1.2, 1.2, n), "cos_item_short": rng.uniform(-1, 1, n),
        "cos_long_short": rng.uniform(-1, 1, n), "long_empty": rng.integers(0, 2, n),
        "action_weight": rng.uniform(0, 3, n), "value": rng.uniform(0, 7, n),
        "gap_event": rng.integers(0, 10**9, n), "gap_decision": rng.integers(0, 10**6, n),
        "hour": rng.integers(0, 24, n), "weekday": rng.integers(0, 7, n),
        "n_events": rng.integers(0, 20000, n), "n_decisions": rng.integers(0, 5000, n),
        "category_count": rng.integers(0, 5, n), "categories_seen": rng.integers(0, 5, n),
        "category_streak": rng.integers(0, 40, n), "reward_ema": rng.random(n), "drift_ema": rng.uniform(-1, 1, n),
        "short_long_ema": rng.uniform(-2, 2, n), "long_metric_ema": rng.random(n), "short_metric_ema": rng.random(n),
        "shadow_cos_ema": rng.uniform(-1, 1, (n, len(SHADOW_STRENGTHS))),
    }


def test_table_is_consistent():
    assert len(set(FEATURE_NAMES)) == len(FEATURES)
    assert set(LOG_FEATURES) | set(STATE_FEATURES) == set(FEATURE_NAMES)
    assert not set(LOG_FEATURES) & set(STATE_FEATURES)
    assert np.all(FEATURE_LOW < FEATURE_HIGH)


def test_features_stay_inside_their_declared_bounds():
    obs = encode_features(raw_batch(np.random.default_rng(0), 2000), max_action_weight=3.0)
    assert obs.dtype == np.float32 and obs.shape == (2000, len(FEATURES))
    assert np.all(obs >= FEATURE_LOW) and np.all(obs <= FEATURE_HIGH)


def test_rules_can_decode_gaps_counts_hours_and_streaks():
    rng = np.random.default_rng(1)
    raw = raw_batch(rng, 500)
    raw["gap_event"] = rng.integers(0, 300 * 86400, 500)
    raw["n_decisions"] = rng.integers(0, 9999, 500)
    raw["category_streak"] = rng.integers(0, 20, 500)
    view = FeatureView(encode_features(raw, max_action_weight=3.0))
    assert np.allclose(view.gap_seconds, raw["gap_event"], rtol=1e-4, atol=1.0)
    assert np.array_equal(view.n_decisions, raw["n_decisions"])
    assert np.array_equal(view.n_events, np.minimum(raw["n_events"], 10000))
    assert np.array_equal(view.hour, raw["hour"])
    assert np.array_equal(view.weekday, raw["weekday"])
    assert np.array_equal(view.category_streak, raw["category_streak"])
    assert np.allclose(view["action_weight"], raw["action_weight"] / 3.0, atol=1e-6)


def test_category_features_follow_their_definitions():
    raw = raw_batch(np.random.default_rng(2), 3)
    raw.update(category_count=np.array([0, 2, 3]), n_decisions=np.array([0, 4, 3]), categories_seen=np.array([0, 2, 1]))
    view = FeatureView(encode_features(raw))
    assert view["category_new"].tolist() == [1, 0, 0]
    assert np.allclose(view["category_fraction"], [0, 0.5, 1.0])
    assert np.allclose(view["category_diversity"], [0, 0.5, 1 / 3])


def test_log_and_clock_features_follow_their_published_definitions():
    """The definitions the manifest publishes, computed here from their text with hand-picked raw values: feedback
    value / 5 clipped, gaps on log1p(365 days), counts on log1p(10000), hour on 24 and weekday on 7 (0 = Monday),
    the short-vs-long mean halved, the action weight over the dataset's largest."""
    raw = raw_batch(np.random.default_rng(3), 4)
    year, day = 365 * 86400.0, 86400.0
    raw.update(value=np.array([1.0, 2.5, 5.0, 9.0]), gap_event=np.array([0.0, 60.0, day, 2 * year]),
               gap_decision=np.array([0.0, 3600.0, 7 * day, year]), hour=np.array([0, 6, 13, 23]),
               weekday=np.array([0, 2, 5, 6]), n_events=np.array([0, 9, 99, 20000]), n_decisions=np.array([0, 3, 50, 10000]),
               action_weight=np.array([0.5, 1.0, 2.0, 4.0]), short_long_ema=np.array([-1.0, -0.2, 0.4, 1.0]))
    view = FeatureView(encode_features(raw, max_action_weight=4.0))
    np.testing.assert_allclose(view["feedback_value"], [0.2, 0.5, 1.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(view["log_gap_event"], [0.0, np.log1p(60) / np.log1p(year), np.log1p(day) / np.log1p(year), 1.0], atol=1e-6)
    np.testing.assert_allclose(view["log_gap_decision"], [0.0, np.log1p(3600) / np.log1p(year), np.log1p(7 * day) / np.log1p(year), 1.0],
                               atol=1e-6)
    for name, values, period in (("hour", [0, 6, 13, 23], 24), ("weekday", [0, 2, 5, 6], 7)):
        angle = 2 * np.pi * np.array(values) / period
        np.testing.assert_allclose(view[f"{name}_sin"], np.sin(angle), atol=1e-6)
        np.testing.assert_allclose(view[f"{name}_cos"], np.cos(angle), atol=1e-6)
    np.testing.assert_allclose(view["log_events"], [0.0, np.log(10) / np.log(10001), np.log(100) / np.log(10001), 1.0], atol=1e-6)
    np.testing.assert_allclose(view["log_decisions"], [0.0, np.log(4) / np.log(10001), np.log(51) / np.log(10001), 1.0], atol=1e-6)
    np.testing.assert_allclose(view["action_weight"], [0.125, 0.25, 0.5, 1.0], atol=1e-7)
    np.testing.assert_allclose(view["short_long_ema"], [-0.5, -0.1, 0.2, 0.5], atol=1e-7)


def test_state_features_alone_equal_their_columns_of_the_whole_observation():
    # encode_features(raw, STATE_FEATURES) (the engine's and the runtime's per-decision call) writes the state
    # quantities into one block; the whole observation computes every column by its definition, one by one
    rng = np.random.default_rng(3)
    raw = raw_batch(rng, 64)
    raw["long_empty"] = raw["long_empty"].astype(bool)  # the engine's: a bool array
    raw["cos_item_long"] = raw["cos_item_long"].astype(np.float32)  # cosines arrive as float32
    raw["short_long_ema"][:3] = [np.nan, np.inf, -3.0]  # NaN passes the clip as NaN, +-inf and -3 / 2 saturate
    whole = encode_features(raw, max_action_weight=3.0)
    for names in (STATE_FEATURES, tuple(reversed(STATE_FEATURES)), STATE_FEATURES[:4]):
        alone = encode_features(raw, names, max_action_weight=3.0)
        expected = whole[:, [FEATURE_NAMES.index(n) for n in names]]
        assert alone.dtype == np.float32 and alone.shape == (64, len(names))
        assert np.array_equal(alone, expected, equal_nan=True)
    short_long = encode_features(raw, ("short_long_ema",))[:, 0]
    assert np.isnan(short_long[0]) and short_long[1] == 1.0 and short_long[2] == -1.0
    assert np.array_equal(short_long[3:], np.clip((raw["short_long_ema"][3:] / 2).astype(np.float32), -1, 1))
    assert np.array_equal(encode_features(raw, STATE_FEATURES)[:, STATE_FEATURES.index("long_empty")],
                          raw["long_empty"].astype(np.float32))
    assert encode_features(raw, STATE_FEATURES).flags.c_contiguous  # row-major, as the per-column path's stack
    as_lists = {k: v.tolist() for k, v in raw.items()}  # Python lists (the shadow cosines a list of rows) read the same
    assert np.array_equal(encode_features(as_lists, STATE_FEATURES), encode_features(raw, STATE_FEATURES), equal_nan=True)
