"""The trackers are causal: no later event changes an earlier output or score; windows and chunks are
laid out as documented; per-point scoring is aligned with the batched evaluator's points."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from env_fixtures import make_dataset
from interestgym.agents.rules import TwoProfileEMAPolicy
from interestgym.agents.sequence.data import (
    DecisionSequences,
    decision_sequences,
    gap_buckets,
    training_chunks,
    windows_ending_at,
)
from interestgym.agents.sequence.models import ModelSpec, build_model
from interestgym.agents.sequence.scoring import (
    decision_states,
    score_replay,
    window_states,
)
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
from interestgym.envs.vector import evaluate_policy

from interestgym.core.metrics import ranking_metrics

N_ITEMS, DIM = 40, 8


def _model(kind: str, window: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    spec = ModelSpec(model=kind, n_items=N_ITEMS, n_id_rows=N_ITEMS + 1, text_dim=DIM, window=window, hidden=16, layers=2,
                     heads=2, dropout=0.0)
    model = build_model(spec)
    model.items.set_id_rows(np.arange(1, N_ITEMS + 1))
    model.items.set_text_vectors(np.random.default_rng(seed).normal(size=(N_ITEMS, DIM)).astype(np.float32))
    return model.eval()


@pytest.mark.parametrize("kind", ["gru", "sasrec"])
def test_changing_a_future_event_never_changes_a_past_output(kind):
    model = _model(kind)
    rng = np.random.default_rng(1)
    item, action, gap = (torch.as_tensor(rng.integers(0, n, (3, 6))) for n in (N_ITEMS, 5, 10))
    with torch.no_grad():
        base = model.encode(item, action, gap)
        for t in range(5):
            for tensor in (item, action, gap):
                changed = tensor.clone()
                changed[:, t + 1:] = (changed[:, t + 1:] + 3) % 5
                args = [changed if x is tensor else x for x in (item, action, gap)]
                out = model.encode(*args)
                torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], rtol=0, atol=1e-6)
                # ... while the change does reach the outputs at and after it
                assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


@pytest.mark.parametrize("kind", ["gru", "sasrec"])
def test_trailing_padding_never_changes_a_window_state(kind):
    model = _model(kind)
    rng = np.random.default_rng(2)
    item = torch.as_tensor(rng.integers(0, N_ITEMS, (4, 6)))
    action, gap = torch.zeros_like(item), torch.ones_like(item)
    length = torch.tensor([1, 3, 5, 6])
    with torch.no_grad():
        full = model.states(item, action, gap, length)
        for b, n in enumerate(length.tolist()):
            alone = model.states(item[b: b + 1, :n], action[b: b + 1, :n], gap[b: b + 1, :n], length[b: b + 1])
            torch.testing.assert_close(alone[0], full[b], rtol=0, atol=1e-6)


def _sequences(lengths: list[int], rng) -> DecisionSequences:
    n = sum(lengths)
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    end = np.cumsum(lengths).astype(np.int64)
    position = np.concatenate([np.arange(m) for m in lengths]).astype(np.int64)
    return DecisionSequences(item=rng.integers(0, N_ITEMS, n), action=rng.integers(0, 5, n), gap=rng.integers(0, 10, n),
                             start=start, end=end, position=position)


def test_windows_hold_the_last_k_decisions_of_the_user_oldest_first():
    seqs = _sequences([3, 9], np.random.default_rng(3))
    w = windows_ending_at(seqs, np.array([0, 2, 3, 8, 11]), 4)
    np.testing.assert_array_equal(w.length, [1, 3, 1, 4, 4])
    np.testing.assert_array_equal(w.item[1, :3], seqs.item[0:3])
    np.testing.assert_array_equal(w.item[3], seqs.item[5:9])
    np.testing.assert_array_equal(w.item[4], seqs.item[8:12])
    assert (w.item[0, 1:] == 0).all()


def test_training_chunks_target_every_next_decision_once():
    seqs = _sequences([1, 5, 12], np.random.default_rng(4))
    for rng in (None, np.random.default_rng(0), np.random.default_rng(7)):
        chunks = training_chunks(seqs, 4, rng)
        valid = chunks.target >= 0
        assert (chunks.windows.length <= 4).all()
        np.testing.assert_array_equal(valid.sum(axis=1), chunks.windows.length)
        # every decision but each user's first is a target exactly once (multiset equality)
        expected = np.concatenate([seqs.item[lo + 1: hi] for lo, hi in zip(seqs.start, seqs.end)])
        assert sorted(chunks.target[valid].tolist()) == sorted(expected.tolist())
        assert int(valid.sum()) == len(expected)


def test_gap_buckets():
    np.testing.assert_array_equal(gap_buckets(np.array([5.0, 0.0, 1.0, 3.0, 3600.0, 1e12]), np.array([1, 0, 0, 0, 0, 0])),
                                  [0, 1, 2, 3, 13, 32])


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    path = make_dataset(tmp_path_factory.mktemp("seq") / "ds", n_users=24, n_items=N_ITEMS, dim=DIM)
    return load_replay_data(path, None, ProtocolSpec(split="test", n_negatives=15))


@pytest.mark.parametrize("kind", ["gru", "sasrec"])
def test_prefix_sharing_gives_the_states_of_one_window_per_decision(replay, kind):
    model = _model(kind, window=3)
    model.items.set_text_vectors(replay.embeddings)
    seqs = decision_sequences(replay)
    d = np.arange(seqs.n_decisions)
    np.testing.assert_allclose(decision_states(model, seqs, d), window_states(model, windows_ending_at(seqs, d, 3)), atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "sasrec"])
def test_a_later_decision_never_changes_the_score_of_an_earlier_scoring_point(replay, kind):
    model = _model(kind, window=4)
    model.items.set_text_vectors(replay.embeddings)
    seqs = decision_sequences(replay)
    base = score_replay(replay, model, seqs=seqs, keep_scores=True)
    u = int(np.argmax(replay.user_decision_end - replay.user_decision_start))
    lo, hi = int(replay.user_decision_start[u]), int(replay.user_decision_end[u])
    cut = lo + (hi - lo) // 2  # change every decision of the user after this one
    changed = dataclasses.replace(seqs, item=seqs.item.copy(), action=seqs.action.copy(), gap=seqs.gap.copy())
    changed.item[cut + 1: hi] = (changed.item[cut + 1: hi] + 7) % N_ITEMS
    changed.action[cut + 1: hi] = (changed.action[cut + 1: hi] + 1) % 5
    changed.gap[cut + 1: hi] = (changed.gap[cut + 1: hi] + 2) % 30
    after = score_replay(replay, model, seqs=changed, keep_scores=True)
    point_decision = np.repeat(np.arange(replay.n_decisions), replay.decision_point_end - replay.decision_point_start)
    past = point_decision <= cut
    np.testing.assert_array_equal(after.scores[past], base.scores[past])
    future = (point_decision > cut) & (point_decision < hi)
    assert future.any() and not np.allclose(np.nan_to_num(after.scores[future]), np.nan_to_num(base.scores[future]))


def test_points_align_with_the_batched_evaluator_and_metrics_follow_its_tie_rule(replay):
    model = _model("sasrec", window=4)
    model.items.set_text_vectors(replay.embeddings)
    res = score_replay(replay, model, keep_scores=True)
    ref = evaluate_policy(replay, TwoProfileEMAPolicy(), record_features=False, progress=False)
    assert list(res.points.columns) == list(ref.points.columns)
    for col in ("user_id", "point_key", "repeat", "decision"):
        np.testing.assert_array_equal(res.points[col].to_numpy(), ref.points[col].to_numpy())
    # the metrics are ranking_metrics of the scores (ties: expected value over orders)
    lo, n = replay.point_offsets[:-1], np.diff(replay.point_offsets)
    labels = np.full(res.scores.shape, -1, dtype=np.int8)
    for p in range(replay.n_points):
        labels[p, : n[p]] = replay.point_labels[lo[p]: lo[p] + n[p]]
    expected = ranking_metrics(np.nan_to_num(res.scores, nan=0.0), labels, ["ndcg@10", "auc"])
    np.testing.assert_array_equal(res.points["ndcg@10"].to_numpy(), expected["ndcg@10"])
    # all-equal scores (an untrained text-free model would give them) score as a random ranking
    flat = ranking_metrics(np.zeros((1, 4)), np.array([[1, 0, 0, 0]]), ["auc"])
    assert flat["auc"][0] == pytest.approx(0.5)


def test_flat_point_scores_and_confidence_for_the_engine(replay):
    from interestgym.agents.sequence.scoring import decision_confidence, point_scores

    model = _model("gru", window=4)
    model.items.set_text_vectors(replay.embeddings)
    flat = point_scores(replay, model)
    assert flat.shape == replay.point_candidates.shape and flat.dtype == np.float32
    res = score_replay(replay, model, keep_scores=True)
    p = replay.n_points - 1
    lo, hi = replay.point_offsets[p], replay.point_offsets[p + 1]
    np.testing.assert_array_equal(flat[lo:hi], res.scores[p, : hi - lo])
    conf = decision_confidence(replay, model)
    assert conf["top1_prob"].shape == (replay.n_decisions,)
    assert np.all((conf["top1_prob"] > 0) & (conf["top1_prob"] <= 1))
    assert np.all((conf["entropy"] >= 0) & (conf["entropy"] <= 1 + 1e-6))
