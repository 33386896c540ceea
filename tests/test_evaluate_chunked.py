"""`interestgym evaluate` streams the test users in chunks: the same evaluation.json whatever the chunk
size (per-user metrics, bootstrap CIs, oracle, tracking error, by-target and by-user-type tables), and
the whole log is never loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic, tiny_tracker
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

from interestgym.core.stats import per_user_means
from interestgym.data.dataset import Dataset
from interestgym.evaluation.run import evaluate_run
from interestgym.evaluation.stream import evaluate_in_chunks

BASELINES = "ema,ema_two_profile,popularity,context_rule"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("chunked") / "tiny", users=48)


def _doc(out: Path) -> dict:
    doc = json.loads((out / "evaluation.json").read_text())
    doc.pop("seconds")
    return doc


@pytest.mark.parametrize("kw", [{}, {"n_negatives": 20}])
def test_chunked_evaluation_is_identical_to_one_chunk(data, tmp_path, kw):
    whole = tmp_path / "whole"
    evaluate_run(data, out=whole, baselines=BASELINES, n_boot=200, progress=False, chunk_users=10_000, **kw)
    ref = _doc(whole)
    n_test = ref["header"]["users"]
    assert ref["header"]["users"] > 5 and "oracle" in ref["per_user"] and "tracking_error" in ref["per_user"]["ema"]
    assert "by_user_type" in ref["summary"]
    for chunk_users in (1, 5):  # splits the users: 1 user per chunk, and chunks that straddle nothing in particular
        out = tmp_path / f"chunks{chunk_users}"
        evaluate_run(data, out=out, baselines=BASELINES, n_boot=200, progress=False, chunk_users=chunk_users, **kw)
        doc = _doc(out)
        assert doc == ref, [k for k in ref if ref[k] != doc.get(k)]
        assert n_test > chunk_users
        assert (whole / "evaluation.md").read_text() == (out / "evaluation.md").read_text()


def test_evaluation_never_loads_the_whole_log(data, tmp_path, monkeypatch):
    """Every read is of the users (and columns) a step needs: Dataset.events / .impressions / .truth,
    which load a whole table, are not touched."""

    def refuse(self):
        raise AssertionError("a whole table was loaded")

    for name in ("events", "impressions", "truth"):
        monkeypatch.setattr(Dataset, name, property(refuse))
    evaluate_run(data, out=tmp_path / "lean", baselines="ema", n_boot=50, progress=False, chunk_users=7)
    assert (tmp_path / "lean" / "evaluation.json").is_file()


def test_evaluate_in_chunks_gives_the_whole_splits_per_user_means(data):
    from interestgym.agents.rules import make_baseline
    from interestgym.envs.vector import evaluate_policy

    rule = make_baseline("ema_two_profile", long_rate=0.1, short_rate=0.5, short_weight=0.4)
    res = evaluate_policy(load_replay_data(data, None, ProtocolSpec(split="test")), rule, record_features=False, progress=False)
    uid = res.points["user_id"].to_numpy()
    chunked = evaluate_in_chunks(data, rule, split="test", chunk_users=3, progress=False)
    assert chunked.n_points == len(res.points)
    assert chunked.users.tolist() == per_user_means(uid, res.points["ndcg@10"].to_numpy())[0].tolist()
    for m in res.metrics:
        assert np.array_equal(chunked.per_user[m], per_user_means(uid, res.points[m].to_numpy())[1], equal_nan=True), m


def test_a_run_trained_with_a_tracker_evaluates_chunk_by_chunk(tmp_path):
    """`train --sequence RUN`: the tracker is attached to every chunk (as ``TrainConfig.replay_data``
    attaches it to the split), the run's baselines.json is reused (same validation protocol), and the
    rules' numbers do not depend on the chunk size. The learned policy's actions come from a torch MLP
    whose rows depend on the batch at float32 rounding, so its numbers are compared to 1e-6."""
    from agents_fixtures import small_train_config
    from env_fixtures import make_dataset
    from interestgym.agents.train import train_run

    data = make_dataset(tmp_path / "ds", n_users=24, n_items=40, dim=8)
    tracker = tmp_path / "tracker"
    tiny_tracker(data, tracker)
    run = tmp_path / "ppo"
    train_run(small_train_config(data, run, reward_baseline="best", sequence=str(tracker), tune_users=None))
    baselines = (run / "baselines.json").read_text()
    docs = {}
    for chunk_users in (10_000, 2):
        out = tmp_path / f"eval{chunk_users}"
        evaluate_run(run, which_model="best", out=out, n_boot=100, progress=False, chunk_users=chunk_users)
        assert not (out / "baselines.json").exists()  # the run's tuned baselines fit the chunked protocol
        assert (run / "baselines.json").read_text() == baselines
        docs[chunk_users] = _doc(out)
    whole, chunked = docs[10_000], docs[2]
    assert whole["protocol"] == chunked["protocol"] and "tracker" in whole["protocol"]
    assert whole["users"] == chunked["users"] and whole["header"] == chunked["header"]
    for name, series in whole["per_user"].items():
        for m, values in series.items():
            a, b = np.array(values, dtype=float), np.array(chunked["per_user"][name][m], dtype=float)
            if name == "ppo":
                assert np.allclose(a, b, rtol=0, atol=1e-6, equal_nan=True), (name, m)
            else:
                assert np.array_equal(a, b, equal_nan=True), (name, m)


def test_the_progress_label_names_the_chunks_only_where_there_are_several(tmp_path, capsys):
    """"test users in 2 chunks of 5" where the split is cut; plain "test users" where it is one chunk (a new user's
    trial read "test users in chunks of 5000: 0/188" as odd)."""
    from interestgym.envs.replay_build import iter_replay_chunks

    data = tiny_synthetic(tmp_path / "tiny", users=40)
    n_test = len(load_replay_data(data, None, ProtocolSpec(split="test")).user_ids)
    assert n_test > 5
    for chunk_users, label in ((5, f"test users in {-(-n_test // 5)} chunks of 5"), (10_000, "test users")):
        capsys.readouterr()
        assert sum(1 for _ in iter_replay_chunks(data, None, ProtocolSpec(split="test"), chunk_users=chunk_users, progress=True)) \
            == -(-n_test // chunk_users)
        err = capsys.readouterr().err
        assert f"{label}:" in err and ("chunks of" in err) == (chunk_users == 5), err
