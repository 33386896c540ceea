"""Training a tracker on a fixture dataset: the run folder, TensorBoard scalars, save / load round trip,
resume, refusal of damaged or mismatched artifacts, and the comparison table beside `evaluate`'s."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from env_fixtures import make_dataset
from interestgym.agents.sequence.config import SequenceConfig
from interestgym.agents.sequence.folder import CHECKPOINT_DIR, CONFIG_FILE
from interestgym.agents.sequence.scoring import load_tracker, score_replay
from interestgym.agents.sequence.train import train_sequence
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

from interestgym.errors import ArtifactError, InterestGymError


def _config(data: Path, run: Path, **kw) -> SequenceConfig:
    base = {"dataset": str(data), "run_dir": str(run), "window": 8, "hidden": 16, "max_epochs": 2, "batch_size": 16,
            "n_negatives": 15, "progress_bar": False}
    return SequenceConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqtrain")
    data = make_dataset(root / "ds", n_users=24, n_items=40, dim=8)
    run = root / "sasrec"
    summary = train_sequence(_config(data, run, model="sasrec"), log=lambda _: None)
    return data, run, summary


def test_training_writes_the_run_folder_without_pickles(trained):
    _, run, summary = trained
    assert summary["epochs"] == 2 and summary["best_epoch"] in (1, 2)
    for rel in (CONFIG_FILE, "best/model.pt", "best/info.json", "final/model.pt", "final/info.json",
                f"{CHECKPOINT_DIR}/model-2.pt", f"{CHECKPOINT_DIR}/optimizer-2.pt", f"{CHECKPOINT_DIR}/state.json"):
        assert (run / rel).is_file(), rel
    assert sorted(p.name for p in (run / CHECKPOINT_DIR).iterdir()) == ["model-2.pt", "optimizer-2.pt", "state.json"]
    doc = json.loads((run / CONFIG_FILE).read_text())
    assert doc["spec"]["model"] == "sasrec" and doc["dataset"]["embeddings"] == "rand" and doc["summary"]["epochs"] == 2
    import torch

    state = torch.load(run / "best" / "model.pt", weights_only=True)  # plain tensors: loads with weights_only
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.pickle"))


def test_a_second_identical_run_writes_the_same_weight_bytes(trained, tmp_path):
    # torch names a zip saved to a path after that path; the weights went through a random temporary name, so two
    # identical runs' model.pt differed in bytes (and in their recorded sha256) though not in any tensor
    data, run, _ = trained
    again = tmp_path / "again"
    train_sequence(_config(data, again, model="sasrec"), log=lambda _: None)
    for rel in ("best/model.pt", "final/model.pt", f"{CHECKPOINT_DIR}/model-2.pt", f"{CHECKPOINT_DIR}/optimizer-2.pt"):
        assert (again / rel).read_bytes() == (run / rel).read_bytes(), rel


def test_tensorboard_has_one_point_per_epoch_under_the_documented_tags(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run, _ = trained
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"losses/train", "eval/ndcg@10", "eval/best_ndcg@10", "charts/epoch_seconds", "charts/targets_per_second",
                "charts/learning_rate"}
    assert expected <= tags
    assert [e.step for e in acc.Scalars("eval/ndcg@10")] == [1, 2]


def test_save_load_round_trip_scores_exactly_as_the_trained_model(trained):
    data, run, _ = trained
    tracker = load_tracker(run, "best")
    test = load_replay_data(data, None, ProtocolSpec(split="test", n_negatives=15))
    res = tracker.score(test, keep_scores=True)
    again = load_tracker(run, "best").score(test, keep_scores=True)
    np.testing.assert_array_equal(res.scores, again.scores)
    info = json.loads((run / "best" / "info.json").read_text())
    valid = load_replay_data(data, None, ProtocolSpec(split="valid", n_negatives=15))
    # the saved best validation score is the loaded model's score on validation users
    assert tracker.score(valid).per_user()["ndcg@10"].mean() == pytest.approx(info["valid_score"], abs=1e-12)
    assert tracker.kind == "sequence" and tracker.name == "sasrec"


def test_a_damaged_or_mismatched_artifact_is_refused(trained, tmp_path):
    _, run, _ = trained
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with open(copy / "best" / "model.pt", "ab") as fh:
        fh.write(b"junk")
    with pytest.raises(ArtifactError, match="sha256"):
        load_tracker(copy, "best")
    other = make_dataset(tmp_path / "other", n_users=24, n_items=40, dim=8, seed=5)
    test = load_replay_data(other, None, ProtocolSpec(split="test", n_negatives=15))
    with pytest.raises(ArtifactError, match="embeddings"):
        load_tracker(run, "final").score(test)
    fewer = make_dataset(tmp_path / "fewer", n_users=24, n_items=30, dim=8, seed=5)
    with pytest.raises(ArtifactError, match=r"the tracker was trained on .*but .*fewer has other items .*train one there"):
        load_tracker(run, "final").score(load_replay_data(fewer, None, ProtocolSpec(split="test", n_negatives=15)))
    data = trained[0]
    resplit = tmp_path / "resplit"
    shutil.copytree(data, resplit)
    manifest = json.loads((resplit / "manifest.json").read_text())
    manifest["split"] = {**manifest["split"], "seed": 99}
    (resplit / "manifest.json").write_text(json.dumps(manifest))
    # another folder (a copy split again): named, as the dataset the tracker was not trained on
    with pytest.raises(ArtifactError, match=rf"the training users of {re.escape(str(data))}, split by user, fractions train 0.5 / "
                                            r"valid 0.25 / test 0.25, seed 0, users .*, but .*resplit is split .*seed 99, .*: its validation"):
        load_tracker(run, "final").score(load_replay_data(resplit, None, ProtocolSpec(split="test", n_negatives=15)))
    (copy / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_tracker(copy)


class _NotATensor:  # a pickled object in a weights file: never to be executed by the loader
    pass


def test_damaged_tracker_folders_say_which_field_or_tensor(trained, tmp_path):
    """An info.json whose sha256 is no mapping, a weights file holding a pickled object (its checksum updated to
    match), and a spec edited after training: each refused with the file, what was found and what was expected."""
    import shutil

    import torch

    from interestgym.io import sha256_file

    _, run, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    info_path = copy / "best" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "sha256": "abc"}))
    with pytest.raises(ArtifactError, match=r'best/info.json: field sha256 is "abc"; expected \{"model.pt": '):
        load_tracker(copy, "best")
    torch.save({"weights": _NotATensor()}, copy / "best" / "model.pt")
    info_path.write_text(json.dumps({**info, "sha256": {"model.pt": sha256_file(copy / "best" / "model.pt")}}))
    with pytest.raises(ArtifactError, match=r"model.pt: holds Python objects besides tensors \(.*_NotATensor.*\), which this "
                                            r"loader never executes") as caught:
        load_tracker(copy, "best")
    assert "weights_only" not in str(caught.value)  # not torch's advice to load it with code execution on
    (copy / "best" / "model.pt").write_bytes(b"xq\x00 not a tensor file" * 8)  # damaged bytes: said as such
    info_path.write_text(json.dumps({**info, "sha256": {"model.pt": sha256_file(copy / "best" / "model.pt")}}))
    with pytest.raises(ArtifactError, match=r"model.pt: cannot be read as tensors \(damaged bytes") as caught:
        load_tracker(copy, "best")
    assert "weights_only" not in str(caught.value) and "Python objects" not in str(caught.value)
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    doc = json.loads((edited / CONFIG_FILE).read_text())
    doc["spec"]["hidden"] = doc["spec"]["hidden"] * 2
    (edited / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"weights do not fit the model spec in .*sequence.json \(size mismatch for .*torch.Size"):
        load_tracker(edited, "best")


def test_resume_continues_from_the_checkpoint_and_a_second_start_is_refused(trained, tmp_path):
    data, run, _ = trained
    import shutil

    copy = tmp_path / "resume"
    shutil.copytree(run, copy)
    with pytest.raises(InterestGymError, match="already holds a tracker run"):
        train_sequence(_config(data, copy), log=lambda _: None)
    summary = train_sequence(_config(data, copy, max_epochs=3), resume=True, log=lambda _: None)
    assert summary["epochs"] == 3
    state = json.loads((copy / CHECKPOINT_DIR / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]


def test_gru_on_logged_impressions_trains_and_scores_every_point(tmp_path):
    data = tiny_synthetic(tmp_path / "tiny")
    run = tmp_path / "gru"
    train_sequence(_config(data, run, model="gru", max_epochs=1, item_ids="auto"), log=lambda _: None)
    tracker = load_tracker(run)
    test = load_replay_data(data, None, ProtocolSpec(split="test"))
    assert test.protocol == "impressions"
    res = tracker.score(test)
    assert len(res.points) == test.n_points and np.isfinite(res.points["ndcg@10"]).all()


def test_compare_adds_tracker_rows_to_an_evaluation_with_paired_differences(trained, tmp_path):
    from interestgym.agents.rules import make_baseline
    from interestgym.agents.sequence.compare import compare
    from interestgym.envs.vector import evaluate_policy

    from interestgym.core.stats import per_user_means
    from interestgym.evaluation.tables import PolicyScores, summarise

    data, run, _ = trained
    test = load_replay_data(data, None, ProtocolSpec(split="test", n_negatives=15))
    res = evaluate_policy(test, make_baseline("popularity"), record_features=False, progress=False)
    uid = res.points["user_id"].to_numpy()
    users, _ = per_user_means(uid, res.points["ndcg@10"].to_numpy())
    per_user = {m: per_user_means(uid, res.points[m].to_numpy())[1] for m in res.metrics}
    row = PolicyScores(name="popularity", kind="baseline", users=users, per_user=per_user, n_points=len(res.points))
    summary = summarise([row], list(res.metrics), reference="popularity", n_boot=100)
    doc = {"header": {"selection_metric": "ndcg@10", "data": str(data), "split": "test"}, "protocol": test.describe(),
           "summary": summary, "users": [str(u) for u in users],
           "per_user": {"popularity": {m: v.tolist() for m, v in per_user.items()}}}
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(doc))
    text, out = compare(path, [run], n_boot=100)
    assert "| sasrec | sequence |" in text
    mine = score_replay(test, _bound(run, test), name="sasrec")
    assert out["policies"]["sasrec"]["metrics"]["ndcg@10"]["mean"] == pytest.approx(mine.per_user()["ndcg@10"].mean())
    assert "ndcg@10" in out["policies"]["sasrec"]["diff_vs_reference"]


def _bound(run, data):
    tracker = load_tracker(run)
    tracker.bind(data)
    return tracker.model


def test_evaluate_lists_a_tracker_as_a_row_of_kind_sequence(trained, tmp_path):
    """`interestgym evaluate DATASET --sequence RUN`: the tracker on the same users and scoring points
    as the rules, its per-user numbers those of scoring the replay data directly."""
    from interestgym.evaluation.run import evaluate_run

    data, run, _ = trained
    text = evaluate_run(data, out=tmp_path / "ev", baselines="popularity,ema", n_boot=50, progress=False, sequence_runs=(run,))
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    # each rule + tracker mixture says the weight its tracker got (0 would be the rule itself)
    mixtures = {n: e["params"]["tracker_weight"] for n, e in doc["summary"]["policies"].items() if "+" in n}
    assert mixtures and all(f"- `{n}` weighs its tracker's score {w:g} (tuned on validation users)" in text for n, w in mixtures.items())
    entry = doc["summary"]["policies"]["sasrec"]
    assert entry["kind"] == "sequence" and "ndcg@10" in entry["diff_vs_reference"]
    test = load_replay_data(data, None, ProtocolSpec(split="test"))
    mine = score_replay(test, _bound(run, test), name="sasrec")
    assert entry["metrics"]["ndcg@10"]["mean"] == pytest.approx(mine.per_user()["ndcg@10"].mean(), abs=1e-12)


def test_compare_does_not_add_a_tracker_the_evaluation_already_lists(trained, tmp_path, capsys, monkeypatch):
    """`evaluate --sequence RUN` then `compare EVAL RUN`: the tracker's model is a row already; it is said, not listed
    twice under a second name, whatever path reaches its folder. Another model is added, even one in a folder the
    same relative path names from elsewhere (the identity is the weights' sha256, not the path as typed)."""
    import shutil

    from interestgym.agents.sequence.compare import compare

    from interestgym.evaluation.run import evaluate_run
    from interestgym.io import sha256_file

    data, run, _ = trained
    here = tmp_path / "here"
    shutil.copytree(run, here / "sasrec")
    monkeypatch.chdir(here)
    evaluate_run(data, out=tmp_path / "ev", baselines="popularity", n_boot=20, progress=False, sequence_runs=(Path("sasrec"),))
    capsys.readouterr()
    _, summary = compare(tmp_path / "ev" / "evaluation.json", [here / "sasrec"], n_boot=20)  # by its absolute path
    assert [n for n, e in summary["policies"].items() if e["kind"] == "sequence"] == ["sasrec"]
    assert f"{here / 'sasrec'}: already a row of evaluation.json (`sasrec`, the same model); not added again" in capsys.readouterr().err
    # a folder "sasrec" elsewhere whose best model was retrained in place (another seed's weights, the same epoch)
    train_sequence(_config(data, tmp_path / "seed1", model="sasrec", seed=1), log=lambda _: None)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(run, elsewhere / "sasrec")
    shutil.copy(tmp_path / "seed1" / "best" / "model.pt", elsewhere / "sasrec" / "best" / "model.pt")
    info = json.loads((elsewhere / "sasrec" / "best" / "info.json").read_text())
    info["sha256"]["model.pt"] = sha256_file(elsewhere / "sasrec" / "best" / "model.pt")
    (elsewhere / "sasrec" / "best" / "info.json").write_text(json.dumps(info))
    monkeypatch.chdir(elsewhere)  # "sasrec" here is another model under the same relative path and epoch
    _, summary = compare(tmp_path / "ev" / "evaluation.json", [Path("sasrec")], n_boot=20)
    assert len([n for n, e in summary["policies"].items() if e["kind"] == "sequence"]) == 2


def test_evaluate_refuses_a_tracker_of_other_item_vectors_before_any_tuning(trained, tmp_path, monkeypatch):
    """`evaluate DATASET --sequence RUN` on the same items with other vectors: refused with the tracker's and the
    dataset's embeddings named, before the baselines are tuned (the tuning of a real dataset takes minutes)."""
    import shutil

    from interestgym.agents import tuning

    from interestgym.evaluation.run import evaluate_run

    data, run, _ = trained
    copy = tmp_path / "revectored"
    shutil.copytree(data, copy)
    vectors = np.load(copy / "embeddings" / "rand.npy")
    np.save(copy / "embeddings" / "rand.npy", np.ascontiguousarray(vectors[::-1]))  # same rows, other items' vectors

    def no_tuning(*args, **kwargs):
        raise AssertionError("the baselines were tuned before the tracker's data was checked")

    monkeypatch.setattr(tuning, "tune_baselines", no_tuning)  # evaluate imports it from there when it runs
    with pytest.raises(ArtifactError, match=r"sequence.json: the tracker was trained with embeddings 'rand' .*revectored's 'rand' "
                                            r"hash to .*use the embeddings it was trained with"):
        evaluate_run(copy, out=tmp_path / "ev", baselines="ema", n_boot=20, progress=False, sequence_runs=(run,))


def test_resume_refuses_settings_that_differ_from_the_runs(trained, tmp_path):
    """`train-sequence --resume` with another model or window is refused naming them (it used to go on with the
    run's own in silence); what may change (--max-epochs) is taken."""
    import shutil

    from click.testing import CliRunner

    from interestgym.cli import cli

    data, run, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = CliRunner().invoke(cli, ["train-sequence", str(data), "--run-dir", str(copy), "--resume", "--model", "gru",
                                      "--window", "10", "--no-text", "--max-epochs", "3", "--no-progress"])
    message = str(result.exception)
    assert result.exit_code != 0
    assert ("--resume continues" in message and "--model 'gru' (the run's: 'sasrec')" in message
            and "--window 10 (the run's: 8)" in message and "--no-text (the run's: True)" in message
            and "--max-epochs" not in message.split("differ from them:")[1].split("; drop them")[0]), message
    assert "(only --max-epochs, --patience, --max-minutes, --device, --torch-threads, --progress may change)" in message
    again = CliRunner().invoke(cli, ["train-sequence", str(data), "--run-dir", str(copy), "--resume", "--max-epochs", "3",
                                     "--window", "8", "--no-progress"])
    assert again.exit_code == 0, str(again.exception)


def test_two_trackers_of_one_name_are_two_rows_each_with_its_own_numbers(trained, tmp_path):
    """Two sasrec runs evaluated together: each row holds its own run's scores (they were one run's, twice)."""
    from interestgym.evaluation.run import evaluate_run

    data, run, _ = trained
    other = tmp_path / "sasrec-seed7"
    train_sequence(_config(data, other, model="sasrec", seed=7), log=lambda _: None)
    evaluate_run(data, out=tmp_path / "ev", baselines="ema", n_boot=20, progress=False, sequence_runs=(run, other))
    rows = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["summary"]["policies"]
    test = load_replay_data(data, None, ProtocolSpec(split="test"))
    for name, folder in (("sasrec", run), ("sasrec (sasrec-seed7)", other)):
        mine = score_replay(test, _bound(folder, test), name=name).per_user()["ndcg@10"].mean()
        assert rows[name]["kind"] == "sequence" and rows[name]["metrics"]["ndcg@10"]["mean"] == pytest.approx(mine, abs=1e-12)
    assert rows["sasrec"]["metrics"]["ndcg@10"]["mean"] != rows["sasrec (sasrec-seed7)"]["metrics"]["ndcg@10"]["mean"]
    assert "ema+sasrec (sasrec-seed7)" in rows and "ema+sasrec" in rows


def test_evaluate_with_a_tracker_uses_its_embeddings_when_the_dataset_has_several(trained, tmp_path):
    """A dataset encoded twice (e.g. MiniLM and a fine-tuned MiniLM): `evaluate DATASET --sequence RUN` without
    --embeddings evaluates on the embeddings the tracker was trained with, rather than asking which."""
    import shutil

    from interestgym.evaluation.run import evaluate_run

    data, run, _ = trained
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    emb = copy / "embeddings"
    (emb / "another.npy").write_bytes((emb / "rand.npy").read_bytes())
    (emb / "another.json").write_text(json.dumps({**json.loads((emb / "rand.json").read_text()), "name": "another"}))
    evaluate_run(copy, out=tmp_path / "ev", baselines="ema", n_boot=20, progress=False, sequence_runs=(run,))
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["header"]["encoder"] == "rand"


def _weights(run: Path, which: str = "final") -> dict:
    import torch

    return torch.load(run / which / "model.pt", weights_only=True)


def test_an_interrupt_while_the_checkpoint_is_written_leaves_one_resume_continues(trained, tmp_path, monkeypatch):
    """The epoch's files are written under new names and state.json, renamed into place last, switches to them:
    interrupted before that switch, the previous epoch's checkpoint is whole and --resume goes on from it to
    the very weights of an uninterrupted run (it used to refuse: model.pt no longer matched state.json)."""
    import torch
    from interestgym.agents.sequence import folder

    data, whole, _ = trained
    real = folder.write_json_atomic

    def interrupted(path, obj):
        if Path(path).name == "state.json" and obj.get("epoch") == 2:
            raise KeyboardInterrupt
        return real(path, obj)

    run = tmp_path / "run"
    monkeypatch.setattr(folder, "write_json_atomic", interrupted)
    said = []
    with pytest.raises(KeyboardInterrupt):
        train_sequence(_config(data, run, model="sasrec"), log=said.append)
    assert "interrupted during epoch 2; epochs 1-1 are checkpointed: continue with" in said[-1] and "--resume" in said[-1]
    monkeypatch.setattr(folder, "write_json_atomic", real)
    said.clear()
    summary = train_sequence(_config(data, run, model="sasrec"), resume=True, log=said.append)
    assert any(line.startswith(f"resuming {run} after epoch 1") for line in said), said
    assert summary["epochs"] == 2
    ours, theirs = _weights(run), _weights(whole)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sorted(p.name for p in (run / CHECKPOINT_DIR).glob("*.pt")) == ["model-2.pt", "optimizer-2.pt"]


def test_a_damaged_checkpoint_is_skipped_with_a_note_and_training_starts_again(trained, tmp_path):
    import shutil

    import torch

    data, whole, _ = trained
    run = tmp_path / "run"
    shutil.copytree(whole, run)
    summary_before = json.loads((run / CONFIG_FILE).read_text()).pop("summary")
    doc = json.loads((run / CONFIG_FILE).read_text())
    doc.pop("summary")
    (run / CONFIG_FILE).write_text(json.dumps(doc))
    model = run / CHECKPOINT_DIR / "model-2.pt"
    model.write_bytes(model.read_bytes()[:-10])
    said = []
    summary = train_sequence(_config(data, run, model="sasrec"), resume=True, log=said.append)
    assert any("cannot be read" in line and "sha256 does not match" in line and "starts again from epoch 0" in line
               for line in said), said
    assert summary["epochs"] == summary_before["epochs"] == 2
    ours, theirs = _weights(run), _weights(whole)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # from scratch: the same run


@pytest.mark.parametrize(("setting", "message"), [
    ({"weight_decay": -1.0}, r"--weight-decay -1.0: expected a number >= 0"),
    ({"torch_threads": -1}, r"--torch-threads -1: expected an integer >= 0"),
    ({"eval_users": -5}, r"--eval-users -5: expected an integer >= 0 \(0: all validation users\)"),
    ({"metric": "bogus"}, r"metric 'bogus': expected"),
    ({"metric": "ndcg@0"}, r"metric 'ndcg@0'"),
])
def test_bad_settings_are_refused_before_a_run_folder_exists(tmp_path, setting, message):
    with pytest.raises(InterestGymError, match=message):
        _config(tmp_path / "ds", tmp_path / "run", **setting)
    assert not (tmp_path / "run").exists()


def test_an_unusable_device_or_run_dir_is_refused_and_a_failed_start_leaves_no_folder(trained, tmp_path):
    import torch

    data, _, _ = trained
    if not torch.cuda.is_available():
        with pytest.raises(InterestGymError, match=r"--device 'cuda': CUDA is not available here"):
            train_sequence(_config(data, tmp_path / "cuda", device="cuda"), log=lambda _: None)
        assert not (tmp_path / "cuda").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InterestGymError, match=rf"--run-dir {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a file"):
        train_sequence(_config(data, tmp_path / "afile" / "sub"), log=lambda _: None)
    with pytest.raises(InterestGymError):  # an embedding the dataset lacks: refused after the folder was made
        train_sequence(_config(data, tmp_path / "noemb", embeddings="nope"), log=lambda _: None)
    assert not (tmp_path / "noemb").exists()


def test_evaluate_refuses_an_unfinished_tracker_before_tuning_anything(trained, tmp_path, capsys):
    import shutil

    from interestgym.evaluation.run import evaluate_run

    data, run, _ = trained
    copy = tmp_path / "unfinished"
    shutil.copytree(run, copy)
    doc = json.loads((copy / CONFIG_FILE).read_text())
    doc.pop("summary")  # as an interrupted or still running train-sequence leaves it
    (copy / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"no summary: the tracker has not finished training .* evaluate --sequence needs"):
        evaluate_run(data, out=tmp_path / "ev", baselines="popularity", n_boot=20, progress=True, sequence_runs=(copy,))
    assert "tuning" not in capsys.readouterr().err and not (tmp_path / "ev" / "baselines.json").exists()


def test_resume_takes_the_embedding_the_run_resolved_to(trained, tmp_path):
    import shutil

    from click.testing import CliRunner

    from interestgym.cli import cli

    data, run, _ = trained
    copy = tmp_path / "resume"
    shutil.copytree(run, copy)
    assert json.loads((copy / CONFIG_FILE).read_text())["config"]["embeddings"] is None  # started without --embeddings
    base = ["train-sequence", str(data), "--run-dir", str(copy), "--resume", "--window", "8", "--hidden", "16",
            "--batch-size", "16", "--n-negatives", "15", "--max-epochs", "3", "--no-progress"]
    result = CliRunner().invoke(cli, [*base, "--embeddings", "rand"])
    assert result.exit_code == 0, (result.output, result.exception)
    result = CliRunner().invoke(cli, [*base, "--embeddings", "other"])
    assert result.exit_code != 0 and "--embeddings 'other' (the run's: 'rand')" in str(result.exception)


def test_auto_loss_is_sampled_above_the_threshold_and_a_resume_keeps_the_runs_loss(trained, tmp_path, monkeypatch):
    """`--loss auto` trains a full softmax up to FULL_SOFTMAX_MAX_ITEMS items and the sampled loss above (the fixture's
    40 items against a threshold moved around them); a resume keeps the loss its run started with even where `auto`
    would now resolve otherwise (the threshold moved from 50,000 to 10,000 between releases)."""
    import interestgym.agents.sequence.train as seq_train

    data, _, _ = trained
    for limit, loss in ((40, "full"), (39, "sampled")):
        monkeypatch.setattr(seq_train, "FULL_SOFTMAX_MAX_ITEMS", limit)
        run = tmp_path / f"limit{limit}"
        train_sequence(_config(data, run, model="gru", max_epochs=1), log=lambda _: None)
        assert json.loads((run / CONFIG_FILE).read_text())["loss"] == loss
    monkeypatch.setattr(seq_train, "FULL_SOFTMAX_MAX_ITEMS", 40)  # auto now says full for the run that started sampled
    said: list[str] = []
    train_sequence(_config(data, tmp_path / "limit39", model="gru", max_epochs=2), resume=True, log=said.append)
    assert json.loads((tmp_path / "limit39" / CONFIG_FILE).read_text())["loss"] == "sampled"
    assert any("sampled softmax over 40 items" in line for line in said), said


def test_a_tracker_stopped_on_a_limit_while_improving_is_said_undertrained(trained, tmp_path):
    """A run whose last epoch was its best and that stopped at --max-epochs (or --max-minutes) gets a caution in
    evaluate's header and markdown; one whose best came earlier (patience would stop it) does not."""
    from interestgym.agents.sequence.folder import undertrained_note

    from interestgym.evaluation.run import evaluate_run

    data, _, _ = trained
    run = tmp_path / "one"
    summary = train_sequence(_config(data, run, model="gru", max_epochs=1), log=lambda _: None)
    assert (summary["stopped"], summary["epochs"], summary["best_epoch"]) == ("max_epochs", 1, 1)
    expected = (f"the tracker {run} stopped at --max-epochs after epoch 1 while still improving (its best validation score "
                f"was at its last epoch): it may be undertrained; `interestgym train-sequence {data} --run-dir {run} "
                "--resume` with a larger --max-epochs continues it")
    assert undertrained_note(run) == expected
    text = evaluate_run(data, out=tmp_path / "ev", baselines="popularity", n_boot=20, progress=False, sequence_runs=(run,))
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["header"]["undertrained_trackers"] == [expected]
    assert f"- caution: {expected}" in text
    # the same run, its best epoch earlier than its last: no caution
    doc = json.loads((run / CONFIG_FILE).read_text())
    doc["summary"].update(epochs=3, best_epoch=2)
    (run / CONFIG_FILE).write_text(json.dumps(doc))
    assert undertrained_note(run) is None


def test_evaluate_scores_a_trackers_best_model_whatever_model_of_a_run_it_is_asked_for(trained, tmp_path):
    # --model final also switched every --sequence tracker to its final weights, under the same row name
    import shutil

    import torch
    from interestgym.agents.sequence.folder import save_tensors

    from interestgym.evaluation.run import evaluate_run

    data, run, _ = trained
    run = shutil.copytree(run, tmp_path / "run")
    # a final model other than the best one (the fixture's best epoch may be its last)
    tensors = torch.load(run / "final" / "model.pt", weights_only=True)
    info = json.loads((run / "final" / "info.json").read_text())
    info["sha256"]["model.pt"] = save_tensors(run / "final" / "model.pt", {k: v * 1.5 for k, v in tensors.items()})
    (run / "final" / "info.json").write_text(json.dumps(info))
    sha = {which: load_tracker(run, which).weights_sha256 for which in ("best", "final")}
    assert sha["best"] != sha["final"]
    evaluate_run(data, out=tmp_path / "ev", baselines="popularity", n_boot=10, progress=False, sequence_runs=(run,),
                 which_model="final")
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert doc["summary"]["policies"]["sasrec"]["params"]["weights_sha256"] == sha["best"]


def test_a_diverging_run_stops_with_its_cause_not_a_finished_run_without_a_best_model(tmp_path):
    # a NaN loss went on for every epoch (each NaN validation score "no improvement"), and the run was written as
    # finished with no best/ model; export and evaluate then said only "best/info.json: missing"
    data = make_dataset(tmp_path / "ds", n_users=24, n_items=40, dim=8)
    with pytest.raises(InterestGymError, match=r"training diverged in epoch 1: the loss became nan \(--learning-rate 1e\+06\)"):
        train_sequence(_config(data, tmp_path / "run", model="sasrec", learning_rate=1e6), log=lambda _: None)
    assert not (tmp_path / "run" / "final").exists()
    for bad in (float("inf"), float("nan")):
        with pytest.raises(InterestGymError, match="--learning-rate .*: expected a finite number > 0"):
            _config(data, tmp_path / "other", learning_rate=bad)


def test_a_resume_refuses_a_damaged_best_model_and_leaves_the_run_as_it_was(trained, tmp_path):
    # the resume said it wrote the run (rc 0) while best/ stayed damaged, which the next `train --sequence` refused
    import shutil

    data, run, _ = trained
    copy = shutil.copytree(run, tmp_path / "run")
    damaged = bytearray((copy / "best" / "model.pt").read_bytes())
    damaged[300] ^= 0xFF
    (copy / "best" / "model.pt").write_bytes(bytes(damaged))
    settings = (copy / CONFIG_FILE).read_bytes()
    with pytest.raises(InterestGymError, match=r"best/model.pt: sha256 does not match .*; the run kept its epoch-\d model "
                                               r"there .*put best/ back from a copy of the run"):
        train_sequence(_config(data, copy, max_epochs=3), resume=True, log=lambda _: None)
    assert (copy / CONFIG_FILE).read_bytes() == settings  # still the finished run's record, summary included
