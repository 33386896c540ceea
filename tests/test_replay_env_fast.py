"""The single env's lean step: at 10 candidates it equals the batched evaluator to the bit, and its
``info`` holds the agent's own scoring points, with or without a reference rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from env_fixtures import make_dataset
from interestgym.agents.rules import make_baseline
from interestgym.envs.replay import InterestReplayEnv
from interestgym.envs.vector import evaluate_policy

from interestgym.core.metrics import DEFAULT_METRICS

TEN = {"protocol": "next_positive", "n_negatives": 9}  # 1 positive + 9 negatives: RecSim's 10 candidates


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fast")
    return {"next_positive": make_dataset(root / "np", seed=7, n_users=20, n_items=80),
            "impressions": make_dataset(root / "imp", seed=8, n_users=20, impressions=True)}


def rule():
    return make_baseline("ema_two_profile", long_rate=0.2, short_rate=0.6, short_weight=0.4)


def test_single_env_at_ten_candidates_equals_the_batched_evaluator_exactly(datasets):
    # The env scores 3 rankings of 10 candidates a step (the scalar metrics path, counted in Python);
    # the evaluator scores many points at once (the general path): the numbers must agree to the bit.
    policy = rule()
    env = InterestReplayEnv(datasets["next_positive"], split="valid", protocol=TEN)
    rewards, point_values = [], {m: [] for m in DEFAULT_METRICS}
    for user in env.data.user_ids:
        obs, _ = env.reset(options={"user_id": user})
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy.act(obs[None])[0])
            rewards.append(reward if info["scored"] else np.nan)
            for m in DEFAULT_METRICS:
                point_values[m].extend(info["points"].metrics[m].tolist())
            done = terminated or truncated
    res = evaluate_policy(datasets["next_positive"], policy, split="valid", protocol=TEN, progress=False)
    assert np.array_equal(res.decisions["reward"].to_numpy(), np.array(rewards), equal_nan=True)
    for m in DEFAULT_METRICS:
        assert np.array_equal(res.points[m].to_numpy(), np.array(point_values[m])), m


@pytest.mark.parametrize("kind", ["next_positive", "impressions"])
def test_info_holds_the_agents_points_with_or_without_a_reference_rule(datasets, kind):
    plain = InterestReplayEnv(datasets[kind], split="train", protocol=TEN if kind == "next_positive" else None)
    with_ref = InterestReplayEnv(datasets[kind], split="train", protocol=TEN if kind == "next_positive" else None,
                                 reward_baseline=make_baseline("mean_history"))
    rng = np.random.default_rng(0)
    kept = []
    for env in (plain, with_ref):
        env.reset(options={"user_id": plain.data.user_ids[3]})
    done = False
    while not done:
        action = rng.uniform(-1, 1, 4).astype(np.float32)
        _, r1, terminated, truncated, a = plain.step(action)
        _, r2, _, _, b = with_ref.step(action)
        assert np.array_equal(a["points"].index, b["points"].index)
        assert a["metrics"] == b["metrics"] and a["n_points"] == len(a["points"]) == len(a["points"].index)
        for m in DEFAULT_METRICS:
            assert np.array_equal(a["points"].metrics[m], b["points"].metrics[m])
        if a["scored"]:
            assert r1 == a["metrics"]["ndcg@10"] and r2 == r1 - b["baseline_metrics"]["ndcg@10"]
        kept.append((a, a["points"].index.copy(), {m: v.copy() for m, v in a["points"].metrics.items()}))
        done = terminated or truncated
    # every step's info arrays are its own: later steps never change them
    for info, index, values in kept:
        assert np.array_equal(info["points"].index, index)
        assert all(np.array_equal(info["points"].metrics[m], values[m]) for m in values)
