"""Real data: the replay on MovieLens 100K (skipped when ../shared/data is absent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from env_fixtures import random_unit, write_embeddings
from interestgym.agents.rules import make_baseline
from interestgym.envs.replay import InterestReplayEnv
from interestgym.envs.vector import evaluate_policy

from interestgym.data.dataset import Dataset


def two_profile_ema():
    """Fixed strengths a_L 0.1, a_S 0.5, w 0.5 (the tuned-rule family, untuned)."""
    return make_baseline("ema_two_profile", long_rate=0.1, short_rate=0.5, short_weight=0.5)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory) -> Path:
    if not (DATA / "u.data").is_file():
        pytest.skip(f"{DATA} is absent")
    out = tmp_path_factory.mktemp("ml100k") / "ds"
    proc = subprocess.run([sys.executable, "-c", "from interestgym.cli import main; main()", "prepare", "movielens", str(DATA),
                           "--out", str(out)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"prepare movielens failed: {proc.stderr[-2000:]}")
    n_items = len(pd.read_parquet(out / "items.parquet"))
    write_embeddings(out, random_unit(n_items, 32, np.random.default_rng(0)))
    return out


def test_ml100k_decisions_and_scoring_points_follow_the_ratings(ml100k):
    ds = Dataset.open(ml100k)
    env = InterestReplayEnv(ml100k, split="test")
    ev = ds.events.merge(ds.users, on="user_id")
    pos = ev[(ev["split"] == "test") & (ev["value"] >= 4)]
    assert env.data.n_decisions == len(pos)
    # one scoring point per positive except each user's first: the next positive + 99 negatives
    assert env.data.n_points == len(pos) - pos["user_id"].nunique()
    assert np.all(np.diff(env.data.point_offsets) == 100)


def test_ml100k_evaluator_matches_single_env(ml100k):
    env = InterestReplayEnv(ml100k, split="test")
    users = list(env.data.user_ids[:12])
    policy = two_profile_ema()
    res = evaluate_policy(ml100k, policy, split="test", users=users, progress=False)
    got = res.decisions["reward"].to_numpy()
    want = []
    for user in users:
        obs, _ = env.reset(options={"user_id": user})
        while True:
            obs, reward, terminated, truncated, info = env.step(policy.act(obs[None])[0])
            want.append(reward if info["scored"] else np.nan)
            if terminated or truncated:
                break
    assert np.array_equal(got, np.array(want), equal_nan=True)
    # random 32-d item vectors carry no signal, but the protocol is sound: mean AUC near 0.5
    assert 0.4 < res.points["auc"].mean() < 0.6
