"""Out-of-fold tracker scores (`train-sequence --folds K`): the agent of `train --sequence` learns on training users
scored by trackers that never saw them, as validation and test users are scored by the main tracker."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from env_fixtures import make_dataset
from interestgym.agents.sequence.config import SequenceConfig
from interestgym.agents.sequence.folder import (
    CONFIG_FILE,
    check_finished,
    fold_run_dir,
    read_folds,
)
from interestgym.agents.sequence.scoring import load_tracker
from interestgym.agents.sequence.train import fold_users, train_sequence
from interestgym.envs.replay_data import (
    ProtocolSpec,
    build_replay_data,
    load_replay_data,
)

from interestgym.core.interest import standardise_scores
from interestgym.errors import ArtifactError, InterestGymError, Interrupted


def _config(data: Path, run: Path, **kw) -> SequenceConfig:
    base = {"dataset": str(data), "run_dir": str(run), "model": "gru", "window": 6, "hidden": 16, "max_epochs": 2,
            "batch_size": 16, "n_negatives": 15, "progress_bar": False, "folds": 3}
    return SequenceConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """A fixture dataset and a GRU tracker trained with three out-of-fold trackers, recording which training users each
    of the four trainings read."""
    import interestgym.agents.sequence.train as train_module

    root = tmp_path_factory.mktemp("folds")
    data = make_dataset(root / "ds", n_users=30, n_items=40, dim=8)
    run = root / "run"
    seen: list[list[str]] = []
    original = train_module.decision_sequences

    def recording(replay, events=None):
        if replay.spec.split == "train":
            seen.append([str(u) for u in replay.user_ids])
        return original(replay, events)

    mp = pytest.MonkeyPatch()
    mp.setattr(train_module, "decision_sequences", recording)
    try:
        summary = train_sequence(_config(data, run), log=lambda _: None)
    finally:
        mp.undo()
    return data, run, summary, seen


def test_folds_partition_the_training_users_evenly_and_reproducibly():
    ids = np.array([f"u{i:02d}" for i in range(10)])
    folds = fold_users(ids, 3, seed=0)
    assert sorted(u for f in folds for u in f) == sorted(ids.tolist())  # each user in exactly one fold
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert all(f == sorted(f) for f in folds)  # in the ids' order
    assert fold_users(ids, 3, seed=0) == folds and fold_users(ids, 3, seed=1) != folds
    with pytest.raises(InterestGymError, match=r"--folds 11: the dataset has 10 training user\(s\) with a decision; expected at least one per fold"):
        fold_users(ids, 11, seed=0)


def test_more_folds_than_training_users_are_refused_before_anything_trains(folded, tmp_path):
    data, _, _, _ = folded
    n_train = len(load_replay_data(data, None, ProtocolSpec(split="train")).user_ids)
    with pytest.raises(InterestGymError, match=rf"--folds {n_train + 1}: the dataset has {n_train} training user"):
        train_sequence(_config(data, tmp_path / "run", folds=n_train + 1), log=lambda _: None)
    assert not (tmp_path / "run").exists()  # refused before the main tracker trained (and before its folder was made)


@pytest.mark.parametrize("folds", [1, -2, True])
def test_a_fold_count_that_cannot_hold_users_out_is_refused(tmp_path, folds):
    with pytest.raises(InterestGymError, match=r"--folds .*expected 0 \(no out-of-fold trackers\) or an integer >= 2"):
        SequenceConfig(dataset=str(tmp_path), run_dir=str(tmp_path / "r"), folds=folds)


def test_each_fold_tracker_trains_on_the_training_users_outside_its_fold(folded):
    data, run, summary, seen = folded
    train_ids = sorted(str(u) for u in load_replay_data(data, None, ProtocolSpec(split="train")).user_ids)
    folds = read_folds(run)
    assert folds == fold_users(np.array(train_ids), 3, seed=0)
    assert seen[0] == train_ids  # the main tracker: every training user
    assert [sorted(s) for s in seen[1:]] == [sorted(set(train_ids) - set(f)) for f in folds]
    for f, users in enumerate(folds, start=1):
        doc = json.loads((fold_run_dir(run, f) / CONFIG_FILE).read_text())
        assert doc["left_out"] == {"fold": f, "of": 3, "users": len(users)}
        assert doc["config"]["folds"] == 0 and doc["config"]["name"] == f"gru-fold{f}"
        assert isinstance(doc["summary"], dict)
    assert [s["epochs"] for s in summary["folds"]] == [2, 2, 2]
    check_finished(run, "this test")


def _z(data, tracker, users):
    """Standardised scores of ``users``' points by ``tracker``, computed on replay data of those users alone."""
    sub = build_replay_data(_open(data), None, data.spec, users=users)
    res = tracker.score(sub, keep_scores=True)
    valid = np.isfinite(res.scores)
    return standardise_scores(np.where(valid, res.scores, 0.0), valid)[valid]


def _open(data):
    from interestgym.data.dataset import Dataset

    return Dataset.open(data.dataset_path)


def test_training_users_get_their_fold_trackers_scores_and_observations_other_splits_the_main_trackers(folded, tmp_path):
    from agents_fixtures import small_train_config
    from interestgym.agents.sequence.scoring import (
        decision_sequences,
        decision_states,
        item_table,
    )
    from interestgym.agents.sequence.term import attach_tracker

    data, run, _, _ = folded
    config = small_train_config(data, tmp_path / "ppo", sequence=str(run))
    train = config.replay_data("train")
    assert train.extra_obs[:1] == ("tracker_metric_ema",)
    # the run records which trackers scored its training users
    assert train.tracker["out_of_fold"] == [load_tracker(fold_run_dir(run, f)).weights_sha256 for f in (1, 2, 3)]
    main = load_tracker(run)
    in_sample = attach_tracker(load_replay_data(data, None, config.protocol_spec("train")), main)
    differs = 0
    for f, users in enumerate(read_folds(run), start=1):
        fold = load_tracker(fold_run_dir(run, f))
        sub = build_replay_data(_open(train), None, train.spec, users=users)
        # this fold's users' points, in the whole split's order (users sorted; each user's points together)
        mine = np.isin(train.user_ids[train.decision_user], users)
        flat = np.concatenate([np.arange(train.point_offsets[p], train.point_offsets[p + 1])
                               for d in np.flatnonzero(mine) for p in range(train.decision_point_start[d], train.decision_point_end[d])]
                              or [np.zeros(0, np.int64)])
        np.testing.assert_array_equal(train.point_tracker_z[flat], _z(train, fold, users))
        differs += int((in_sample.point_tracker_z[flat] != train.point_tracker_z[flat]).sum())
        # the confidence observations: a softmax over the catalogue from the fold tracker's states (numpy, float64)
        fold.bind(sub)
        states = decision_states(fold.model, decision_sequences(sub), np.arange(sub.n_decisions))
        logits = states.astype(np.float64) @ item_table(fold.model).astype(np.float64).T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(train.decision_extra_obs[mine, 1], p.max(axis=1), atol=1e-5)
    assert differs > 0  # the main tracker scores its training users otherwise
    valid = config.replay_data("valid")
    assert "out_of_fold" not in valid.tracker
    np.testing.assert_array_equal(valid.point_tracker_z,
                                  attach_tracker(load_replay_data(data, None, config.protocol_spec("valid")), main).point_tracker_z)


def test_a_training_user_in_no_fold_is_refused_naming_it(folded, tmp_path):
    from interestgym.agents.sequence.term import attach_tracker

    data, run, _, _ = folded
    folds = read_folds(run)
    pairs = [(load_tracker(fold_run_dir(run, f)), users) for f, users in enumerate(folds, start=1)]
    missing = folds[1][0]
    pairs[1] = (pairs[1][0], [u for u in folds[1] if u != missing])
    train = load_replay_data(data, None, ProtocolSpec(split="train"))
    with pytest.raises(InterestGymError, match=rf"user '{missing}' of .* \(train split\) is in 0 of the tracker's 3 folds \(1 such"):
        attach_tracker(train, load_tracker(run), out_of_fold=pairs)


def _interrupt_fold_2(monkeypatch, logs: list[str]):
    """Training raises KeyboardInterrupt at the first batch of fold 2's tracker (once ``logs`` says it started); returns
    the real batch loss, to put back."""
    import interestgym.agents.sequence.train as train_module

    original = train_module.chunk_loss

    def interrupted(*args, **kwargs):
        if any("out-of-fold tracker 2 of 3" in line for line in logs):
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "chunk_loss", interrupted)
    return original


def test_an_interrupted_fold_resumes_and_the_run_is_unfinished_until_every_fold_is(folded, tmp_path, monkeypatch):
    data, run, _, _ = folded
    copy = tmp_path / "run"
    logs: list[str] = []
    original = _interrupt_fold_2(monkeypatch, logs)
    with pytest.raises(Interrupted):
        train_sequence(_config(data, copy), log=logs.append)
    assert f"--run-dir {copy} --resume" in logs[-1] and "gru-fold2: interrupted during epoch 1" in logs[-1]
    with pytest.raises(ArtifactError, match="no summary: the tracker has not finished training"):
        check_finished(copy, "`train --sequence`")
    fold1 = (fold_run_dir(copy, 1) / "best" / "model.pt").read_bytes()
    monkeypatch.setattr("interestgym.agents.sequence.train.chunk_loss", original)
    logs.clear()
    train_sequence(_config(data, copy), resume=True, log=logs.append)
    assert not any("fold 1 of 3" in line for line in logs)  # the finished fold is kept, not trained again
    assert (fold_run_dir(copy, 1) / "best" / "model.pt").read_bytes() == fold1
    check_finished(copy, "`train --sequence`")
    for f in (1, 2, 3):  # the same trackers as the uninterrupted run's
        assert (fold_run_dir(copy, f) / "best" / "model.pt").read_bytes() == (fold_run_dir(run, f) / "best" / "model.pt").read_bytes()


def test_resume_refuses_folds_of_other_users(folded, tmp_path):
    data, run, _, _ = folded
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    doc = json.loads((copy / "folds.json").read_text())
    doc["users"][0], doc["users"][1] = doc["users"][1], doc["users"][0]
    (copy / "folds.json").write_text(json.dumps(doc))
    with pytest.raises(InterestGymError, match=r"folds.json: its folds are not the partition of this dataset's training users"):
        train_sequence(_config(data, copy), resume=True, log=lambda _: None)


def test_train_with_a_tracker_without_folds_says_the_agent_learns_in_sample(folded, tmp_path, capsys):
    from agents_fixtures import small_train_config
    from interestgym.agents.train import train_run

    data, run, _, _ = folded
    plain = tmp_path / "plain"
    shutil.copytree(run, plain)
    (plain / "folds.json").unlink()
    shutil.rmtree(plain / "folds")
    for tracker, said in ((plain, True), (run, False)):
        train_run(small_train_config(data, tmp_path / f"ppo-{tracker.name}", sequence=str(tracker), timesteps=64))
        err = capsys.readouterr().err
        assert ("has no out-of-fold trackers, so the agent learns on the scores it gives its own training users" in err) is said


def _epochs(run: Path) -> tuple[int, list[int]]:
    doc = json.loads((run / CONFIG_FILE).read_text())
    return doc["summary"]["epochs"], [f["epochs"] for f in doc["summary"]["folds"]]


def test_a_resume_with_a_larger_limit_trains_the_folds_on_too(folded, tmp_path):
    # a finished fold was kept as it was: the training users were then scored by trackers trained shorter than the
    # main tracker that scores validation and test users
    data, run, _, _ = folded
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert _epochs(copy) == (2, [2, 2, 2])
    train_sequence(_config(data, copy, max_epochs=3), resume=True, log=lambda _: None)
    assert _epochs(copy) == (3, [3, 3, 3])
    for f in (1, 2, 3):
        state = json.loads((fold_run_dir(copy, f) / "checkpoints" / "last" / "state.json").read_text())
        assert [h["epoch"] for h in state["history"]] == [1, 2, 3]


def test_a_resume_to_finish_the_folds_does_not_train_a_tracker_stopped_on_its_time_limit_further(folded, tmp_path, monkeypatch):
    data, _, _, _ = folded
    run = tmp_path / "run"
    logs: list[str] = []
    original = _interrupt_fold_2(monkeypatch, logs)
    config = _config(data, run, max_epochs=50, max_minutes=1e-6)  # every tracker stops after its first epoch
    with pytest.raises(Interrupted):
        train_sequence(config, log=logs.append)
    main_state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert main_state["epoch"] == 1 and main_state["stopped"] == "max_minutes"
    monkeypatch.setattr("interestgym.agents.sequence.train.chunk_loss", original)
    logs.clear()
    train_sequence(config, resume=True, log=logs.append)
    assert any("it had stopped (max_minutes) and no limit changed: kept as it is" in line for line in logs)
    assert _epochs(run) == (1, [1, 1, 1])  # neither the main tracker nor fold 1 trained another epoch


def test_every_fold_tracker_is_built_as_the_main_one_with_or_without_item_ids(folded, tmp_path, monkeypatch):
    # --item-ids auto was decided again on each fold's fewer users: a fold could come out without the id embeddings
    # the main tracker has. Here `auto` says yes only for the whole training split.
    import interestgym.agents.sequence.train as train_module

    data, _, _, _ = folded
    n_train = len(load_replay_data(data, None, ProtocolSpec(split="train")).user_ids)
    monkeypatch.setattr(train_module, "ids_recur", lambda train, valid: len(train.start) == n_train)
    run = tmp_path / "run"
    train_sequence(_config(data, run, max_epochs=1), log=lambda _: None)
    docs = [json.loads((fold_run_dir(run, f) / CONFIG_FILE).read_text()) for f in (1, 2, 3)]
    assert json.loads((run / CONFIG_FILE).read_text())["spec"]["use_ids"] is True
    assert [d["spec"]["use_ids"] for d in docs] == [True, True, True]
    assert [d["config"]["item_ids"] for d in docs] == ["on", "on", "on"]


def test_a_missing_fold_is_refused_up_front_saying_how_to_rebuild_it(folded, tmp_path):
    data, run, _, _ = folded
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(fold_run_dir(copy, 2))
    with pytest.raises(ArtifactError, match=rf"folds/2: the out-of-fold tracker 2 of 3 of {copy} is missing or unfinished; "
                                            rf"`train --sequence` needs each one\. `interestgym train-sequence {data} --run-dir {copy} --resume`"):
        check_finished(copy, "`train --sequence`")
    train_sequence(_config(data, copy), resume=True, log=lambda _: None)
    check_finished(copy, "`train --sequence`")
    assert (fold_run_dir(copy, 2) / "best" / "model.pt").read_bytes() == (fold_run_dir(run, 2) / "best" / "model.pt").read_bytes()


def test_an_agent_run_refuses_a_tracker_whose_folds_changed_after_it_was_trained(folded, tmp_path):
    from agents_fixtures import small_train_config
    from interestgym.agents.run_folder import check_run_tracker
    from interestgym.agents.sequence.term import cached_folds, cached_tracker
    from interestgym.agents.train import train_run

    data, run, _, _ = folded
    tracker = tmp_path / "tracker"
    shutil.copytree(run, tracker)
    config = small_train_config(data, tmp_path / "ppo", sequence=str(tracker), timesteps=64)
    train_run(config)
    saved = json.loads((tmp_path / "ppo" / "config.json").read_text())
    check_run_tracker(tmp_path / "ppo", saved, config)  # as trained
    (tracker / "folds.json").unlink()
    shutil.rmtree(tracker / "folds")
    cached_folds.cache_clear()
    cached_tracker.cache_clear()
    with pytest.raises(ArtifactError, match=r"the run's training users were scored by the out-of-fold trackers of .* with weights "
                                            r"\['[0-9a-f]{64}', .*; that folder now has none: they were trained, retrained or removed"):
        check_run_tracker(tmp_path / "ppo", saved, config)
