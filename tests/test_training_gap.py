"""`train` compares its reference rule on training users with the same rule on validation users, and says when the
agent would learn in a world far easier than the one it is judged in (e.g. item vectors fitted on training users)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import small_train_config, tiny_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("gap") / "tiny", users=30, events_per_user=14)


def _note_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "training users against" in line]


def test_the_run_records_the_reference_on_training_users_and_is_silent_when_the_worlds_agree(data, tmp_path, capsys):
    from interestgym.agents.run_folder import run_reference
    from interestgym.agents.train import train_run
    from interestgym.agents.tuning import mean_over_users, subsample_users
    from interestgym.envs.vector import evaluate_policy

    config = small_train_config(data, tmp_path / "run", reward_baseline="ema_two_profile", eval_users=5, timesteps=64)
    train_run(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    recorded = saved["reference_on_training_users"]
    # recomputed: the reference replayed on 5 training users drawn with the run's seed
    train = config.replay_data("train")
    users = subsample_users(train.scored_user_ids, 5, config.seed)
    policy = run_reference(saved, tmp_path / "run")
    expected = mean_over_users(evaluate_policy(train, policy, metric="ndcg@10", users=users, record_features=False,
                                               progress=False), "ndcg@10")
    assert recorded["users"] == 5 and recorded["valid_users"] == 5
    assert recorded["score"] == pytest.approx(expected, abs=1e-12)
    assert abs(recorded["score"] - recorded["valid_score"]) < 0.1  # one generator for every user: no gap to speak of
    assert _note_lines(capsys.readouterr().err) == []


def test_a_reference_far_better_on_training_users_is_said_with_both_scores(data, tmp_path, capsys, monkeypatch):
    import interestgym.agents.train as train_module

    monkeypatch.setattr(train_module, "TRAINING_GAP", -1.0)  # any gap: the note's numbers are the recorded ones
    config = small_train_config(data, tmp_path / "run", reward_baseline="ema_two_profile", eval_users=5, timesteps=64)
    train_module.train_run(config)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["reference_on_training_users"]
    lines = _note_lines(capsys.readouterr().err)
    assert lines == [(f"note: the reference `ema_two_profile` scores {recorded['score']:.4f} ndcg@10 on 5 training users against "
                     f"{recorded['valid_score']:.4f} on 5 validation users: the agent learns where the rule is far better than "
                     "where it is judged, and what it learns there may not carry over. A usual cause: something the rule "
                     "scores with was fitted on the training users' own events: item vectors (--embeddings cooc, a "
                     "behaviour-fine-tuned encoder; vectors of the items' text alone, hashing or minilm, know no user), "
                     "popularity, or a --sequence tracker trained without --folds (docs/experiments.md, \"The world the "
                     "agent learns in\")")]


def test_the_note_needs_a_gap_larger_than_sampling_gives():
    from interestgym.agents.train import TRAINING_GAP, training_gap_note

    assert training_gap_note("r", "ndcg@10", {"score": 0.55, "users": 100}, 0.50, 100) is None
    assert training_gap_note("r", "ndcg@10", {"score": 0.50 + TRAINING_GAP + 1e-9, "users": 100}, 0.50, 100) is not None
    assert np.isclose(TRAINING_GAP, 0.1)


def test_without_a_scored_training_user_nothing_is_recorded_rather_than_nan(data):
    # the mean over no user is NaN, which json writes as a bare NaN (not JSON) into config.json
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.rules import make_baseline
    from interestgym.agents.train import reference_on_training_users

    train = TrainConfig(dataset=str(data), run_dir="").replay_data("train")
    rule = make_baseline("ema_two_profile")
    assert reference_on_training_users(train, rule, "ndcg@10", 5, 0)["users"] == 5
    none_scored = dataclasses.replace(train, decision_point_end=train.decision_point_start.copy())
    assert reference_on_training_users(none_scored, rule, "ndcg@10", 5, 0) is None
