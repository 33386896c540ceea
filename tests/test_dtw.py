"""Multivariate DTW (interestgym.core.dtw) against a brute-force enumeration of warping paths, the drift
signal per decision, and the DTW refresh rule replayed through the unchanged engine."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from env_fixtures import make_dataset
from interestgym.agents.dtw_rule import (
    DTWRefreshRule,
    decision_drift,
    replay_with_signal,
    tune_dtw_rule,
)
from interestgym.agents.rules import TwoProfileEMAPolicy
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
from interestgym.envs.vector import evaluate_policy

from interestgym.core.dtw import (
    dtw_distance,
    dtw_distances,
    sequence_drift,
    window_drift,
)
from interestgym.errors import InterestGymError


@cache
def _paths(n: int, m: int) -> list[tuple[tuple[int, int], ...]]:
    """Every warping path from (0, 0) to (n-1, m-1) with steps (1,0), (0,1), (1,1)."""
    if n == 1 and m == 1:
        return [((0, 0),)]
    out = []
    for di, dj in ((1, 0), (0, 1), (1, 1)):
        pi, pj = n - di, m - dj
        if pi >= 1 and pj >= 1:
            out += [path + ((n - 1, m - 1),) for path in _paths(pi, pj)]
    return out


def brute_force_dtw(a: np.ndarray, b: np.ndarray) -> float:
    """sqrt of the smallest sum of squared Euclidean distances over every warping path."""
    return float(np.sqrt(min(sum(float(np.sum((a[i] - b[j]) ** 2)) for i, j in path) for path in _paths(len(a), len(b)))))


def test_dtw_equals_brute_force_over_every_warping_path():
    rng = np.random.default_rng(0)
    for n, m, d in [(1, 1, 3), (1, 4, 2), (3, 3, 1), (4, 2, 5), (4, 5, 3), (5, 5, 4), (2, 6, 2)]:
        for _ in range(4):
            a, b = rng.normal(size=(n, d)), rng.normal(size=(m, d))
            assert dtw_distance(a, b) == pytest.approx(brute_force_dtw(a, b), rel=1e-12)


def test_batched_dtw_equals_pairwise_and_is_symmetric_and_zero_on_equal_sequences():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(7, 4, 3)), rng.normal(size=(7, 5, 3))
    batch = dtw_distances(a, b)
    assert batch == pytest.approx([dtw_distance(x, y) for x, y in zip(a, b)], rel=1e-12)
    assert dtw_distances(b, a) == pytest.approx(batch, rel=1e-12)
    # zero up to the cancellation of |a|^2 + |b|^2 - 2 a.b (~1e-16 on a cost, so ~1e-8 after the sqrt)
    assert dtw_distances(a, a) == pytest.approx(np.zeros(7), abs=1e-7)
    # a sequence and the same sequence with an item repeated (a pause) are at distance 0: DTW warps time
    assert dtw_distance(a[0], np.repeat(a[0], [1, 2, 1, 3], axis=0)) == pytest.approx(0.0, abs=1e-7)


def test_dtw_matches_dtaidistance_when_installed():
    dtw_ndim = pytest.importorskip("dtaidistance.dtw_ndim")
    rng = np.random.default_rng(2)
    for n, m in [(5, 5), (3, 7), (10, 10)]:
        a, b = rng.normal(size=(n, 8)), rng.normal(size=(m, 8))
        assert dtw_distance(a, b) == pytest.approx(dtw_ndim.distance(a, b), rel=1e-9)


def test_window_drift_is_in_unit_interval_zero_for_repeats_and_one_at_the_opposite():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6, 16))
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    drift = window_drift(x)
    assert np.all((drift >= 0) & (drift <= 1))
    same = np.concatenate([x[:, :3], x[:, :3]], axis=1)
    assert window_drift(same) == pytest.approx(np.zeros(50), abs=1e-7)
    v = x[0, 0]
    opposite = np.stack([v, v, v, -v, -v, -v])[None]
    assert window_drift(opposite)[0] == pytest.approx(1.0)


def test_sequence_drift_uses_the_last_2k_rows_of_the_group_and_is_nan_before():
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(13, 4))
    group = np.array([0] * 7 + [1] * 3 + [2] * 3)
    k = 2
    drift = sequence_drift(vectors, group, k)
    expected = np.full(13, np.nan)
    for r in range(13):
        start = r - 2 * k + 1
        if start >= 0 and np.all(group[start: r + 1] == group[r]):
            expected[r] = brute_force_dtw(vectors[start: start + k], vectors[start + k: r + 1]) / (2 * np.sqrt(k))
    np.testing.assert_allclose(drift, expected, rtol=1e-12)
    assert np.isnan(drift[:3]).all() and np.isfinite(drift[3:7]).all()
    assert np.isnan(drift[7:]).all()  # groups of 3 rows never reach 2k = 4


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    path = make_dataset(tmp_path_factory.mktemp("dtw") / "ds", n_users=24, n_items=60)
    spec = ProtocolSpec(split="test", n_negatives=20)
    return load_replay_data(path, None, spec), load_replay_data(path, None, ProtocolSpec(split="valid", n_negatives=20))


def test_decision_drift_follows_the_decisions_of_each_user(replay):
    data, _ = replay
    drift = decision_drift(data, k=2)
    assert drift.shape == (data.n_decisions,)
    first = data.user_decision_start
    for u in range(data.n_users):
        lo, hi = int(first[u]), int(data.user_decision_end[u])
        assert np.isnan(drift[lo: min(lo + 3, hi)]).all()
        if hi - lo >= 4:
            items = data.embeddings[data.decision_item[lo: lo + 4]].astype(np.float64)
            assert drift[lo + 3] == pytest.approx(brute_force_dtw(items[:2], items[2:]) / (2 * np.sqrt(2)), rel=1e-9)


def test_never_refreshing_replays_exactly_the_two_profile_rule(replay):
    data, _ = replay
    params = {"long_rate": 0.2, "short_rate": 0.5, "short_weight": 0.4, "popularity_weight": 0.1}
    drift = decision_drift(data, k=2)
    mine = replay_with_signal(data, DTWRefreshRule(tau=np.inf, **params), drift, batch_size=5)
    theirs = evaluate_policy(data, TwoProfileEMAPolicy(**params), record_features=False, progress=False)
    assert list(mine.points.columns) == list(theirs.points.columns)
    assert mine.points.drop(columns=list(mine.metrics)).equals(theirs.points.drop(columns=list(theirs.metrics)))
    for m in mine.metrics:
        np.testing.assert_array_equal(mine.points[m].to_numpy(), theirs.points[m].to_numpy())
    refreshing = replay_with_signal(data, DTWRefreshRule(tau=-1.0, refresh_weight=0.9, **params), drift)
    assert not np.array_equal(refreshing.points["ndcg@10"].to_numpy(), theirs.points["ndcg@10"].to_numpy())


def test_refresh_sets_short_strength_one_only_where_drift_exceeds_tau():
    from interestgym.core.features import N_FEATURES
    from interestgym.core.protocol import action_to_strengths

    rule = DTWRefreshRule(tau=0.4, refresh_weight=0.9, short_rate=0.3, short_weight=0.2)
    obs = np.zeros((4, N_FEATURES), dtype=np.float32)
    s = action_to_strengths(rule.act_with_drift(obs, np.array([np.nan, 0.1, 0.4, 0.6])))
    np.testing.assert_allclose(s[:, 1], [0.3, 0.3, 0.3, 1.0], atol=1e-6)
    np.testing.assert_allclose(s[:, 2], [0.2, 0.2, 0.2, 0.9], atol=1e-6)
    with pytest.raises(InterestGymError, match="replay_with_signal"):
        rule.act(obs)


def test_tuning_picks_a_grid_point_on_validation_users(replay):
    _, valid = replay
    tuned = tune_dtw_rule(valid, {"long_rate": 0.1, "short_rate": 0.6, "short_weight": 0.5, "popularity_weight": 0.0}, k=2)
    assert {"tau", "refresh_weight", "window"} <= set(tuned["params"])
    assert tuned["valid_score"] == max(row["score"] for row in tuned["grid"])
