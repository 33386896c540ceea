"""Bad input found in a user's-eye review: each gives a one-line InterestGymError (exit status 2 from
the CLI) naming the file or option, what was found and what was expected; never a traceback, nothing
silently dropped."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
import interestgym.envs  # noqa: F401  (registers the env id)
from agents_fixtures import tiny_synthetic
from env_fixtures import make_dataset, without_table_digests
from interestgym.agents.run_folder import read_tuned_baselines
from interestgym.agents.train import TrainConfig, train_run
from interestgym.envs.replay import InterestReplayEnv
from interestgym.envs.replay_data import ProtocolSpec
from interestgym.envs.vector import InterestReplayVecEnv

from interestgym.cli import cli
from interestgym.data.dataset import Dataset
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.evaluation.run import evaluate_run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_synthetic(tmp_path_factory.mktemp("data") / "tiny")


def _config(dataset: Path, run_dir: Path, **kw) -> TrainConfig:
    base = {"dataset": str(dataset), "run_dir": str(run_dir), "timesteps": 128, "n_envs": 4, "n_steps": 16, "batch_size": 32,
                "n_epochs": 1, "eval_every": 0, "checkpoint_every": 64, "eval_users": None, "progress_bar": False,
                "reward_baseline": None, "net_arch": [8]}
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("option, value, message", [
    ("learning_rate", -1.0, r"--learning-rate -1.0: expected a positive number"),
    ("n_epochs", 0, r"--n-epochs 0: expected an integer >= 1"),
    ("eval_users", -3, r"--eval-users -3: expected an integer >= 1, or 0 for all"),
    ("tune_users", -1, r"--tune-users -1: expected an integer >= 1, or 0 for all"),
    ("max_events", 0, r"--max-events 0: expected an integer >= 1"),
    ("eval_every", -1, r"--eval-every -1: expected an integer >= 0"),
    ("checkpoint_every", -5, r"--checkpoint-every -5: expected an integer >= 0"),
    ("net_arch", [0, -3], r"--net-arch '0,-3': expected positive layer sizes"),
    ("device", "gpu", r"--device 'gpu': expected a torch device"),
    # infinite or NaN values reached torch as NaN losses after the tuning (a traceback, a folder --resume could not continue)
    ("learning_rate", float("inf"), r"--learning-rate inf: expected a finite number"),
    ("learning_rate", 2.0, r"--learning-rate 2.0: expected at most 1"),
    ("ent_coef", float("inf"), r"--ent-coef inf: expected a finite number"),
    ("vf_coef", float("inf"), r"--vf-coef inf: expected a finite number"),
    ("change_penalty", float("nan"), r"--change-penalty nan: expected a finite number"),
    ("log_std_init", float("-inf"), r"--log-std-init -inf: expected a finite number"),
    ("log_std_init", 50.0, r"--log-std-init 50.0: expected a number in \[-20, 2\]"),
    ("clip_obs", float("inf"), r"--clip-obs inf: expected a finite number"),
    ("ship_threshold", float("nan"), r"--ship-threshold nan: expected a finite number \(-1: the reward metric's gain never stops"),
    ("torch_threads", 0, r"--torch-threads 0: expected an integer >= 1"),
    # options of the residual form, or a window every episode would cut short, are refused rather than recorded unused
    ("policy_form", "absolute", None),
])
def test_bad_training_options_are_refused_before_anything_is_written(tmp_path, option, value, message):
    run = tmp_path / "run"
    cases = [({option: value}, message)] if message else [
        ({option: value, "change_penalty": 0.5}, r"--change-penalty 0.5 with --policy-form absolute: it applies to the residual form only"),
        ({option: value, "window": 5}, r"--window 5 with --policy-form absolute: it applies to the residual form only"),
        ({"window": 50, "max_events": 5}, r"--max-events 5 with --window 50: every window episode would be cut after 5 of its 50")]
    for settings, expected in cases:
        with pytest.raises(InterestGymError, match=expected):
            train_run(_config(tmp_path / "no-data-needed", run, **settings))
        assert not run.exists()


def test_training_into_a_dataset_directory_is_refused(dataset):
    before = sorted(p.name for p in dataset.iterdir())
    with pytest.raises(InterestGymError, match=r"--run-dir .*: is the dataset folder .* \(manifest.json and events.parquet found\)"):
        train_run(_config(dataset, dataset))
    assert sorted(p.name for p in dataset.iterdir()) == before


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    train_run(_config(dataset, run, checkpoint_every=0))
    conf = json.loads((run / "config.json").read_text())
    # the dataset's only embedding is stored by name, so adding another one later cannot make it ambiguous
    assert conf["config"]["embeddings"] == "topic16"
    # what Ctrl-C before the first checkpoint leaves: config.json (and tb/, best/) but no checkpoint
    shutil.rmtree(run / "checkpoints")
    shutil.rmtree(run / "final")
    with pytest.raises(InterestGymError, match="already holds a training run; continue it with --resume"):
        train_run(_config(dataset, run))
    result = train_run(_config(dataset, run), resume=True)
    assert "has no checkpoint yet" in capsys.readouterr().err
    assert result["num_timesteps"] == 128
    assert (run / "checkpoints" / "state.json").is_file() and (run / "final" / "model.zip").is_file()


def test_a_config_json_without_its_config_object_is_refused(dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(InterestGymError, match=r"config.json: no 'config' object"):
        train_run(_config(dataset, run), resume=True)
    (run / "config.json").write_bytes(b"\x00garbage\xff")
    with pytest.raises(InterestGymError, match=r"config.json: not valid JSON"):
        train_run(_config(dataset, run), resume=True)


@pytest.mark.parametrize("baselines", ['"a string"', "[1]"])
def test_train_refuses_a_json_file_whose_baselines_is_no_object_in_one_line(dataset, tmp_path, baselines):
    # a run's config.json ({"baselines": "context_rule", ...}) as --tuned-baselines: the check for an older grid
    # read it first and ended in a traceback
    wrong = tmp_path / "config.json"
    wrong.write_text(f'{{"baselines": {baselines}}}')
    result = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / "run"), "--timesteps", "64",
                                      "--tuned-baselines", str(wrong), "--no-progress"])
    assert isinstance(result.exception, InterestGymError), result.exception  # the command line's one-line error
    assert f"{wrong}: no 'baselines' object; expected a baselines.json" in str(result.exception)


def test_tuned_baselines_must_be_a_baselines_file(dataset, tmp_path):
    with pytest.raises(InterestGymError, match=r"manifest.json: no 'baselines' object; expected a baselines.json"):
        train_run(_config(dataset, tmp_path / "run", reward_baseline="ema", tuned_baselines=str(dataset / "manifest.json")))
    garbage = tmp_path / "baselines.json"
    garbage.write_bytes(b"\x00garbage\xff")
    with pytest.raises(InterestGymError, match=r"baselines.json: cannot read tuned baselines"):
        train_run(_config(dataset, tmp_path / "run2", reward_baseline="ema", tuned_baselines=str(garbage)))


def test_a_damaged_tuning_cache_is_tuned_again_not_a_crash(tmp_path):
    path = tmp_path / "baselines.json"
    path.write_bytes(b"\x00garbage\xff" * 4)
    assert read_tuned_baselines(path, metric="ndcg@10", protocol={}, names=["ema"], tune_users=None) is None
    path.write_text("[]")
    assert read_tuned_baselines(path, metric="ndcg@10", protocol={}, names=["ema"], tune_users=None) is None


def test_a_tuning_for_other_settings_names_what_differs(tmp_path):
    import json

    path = tmp_path / "baselines.json"
    path.write_text(json.dumps({"metric": "ndcg@10", "tune_users": 50, "protocol": {"split": "valid", "n_negatives": 49},
                                "baselines": {"ema": {"params": {}}}}))
    kwargs = {"metric": "ndcg@10", "protocol": {"split": "valid", "n_negatives": 99}, "tune_users": 100, "strict": True}
    with pytest.raises(InterestGymError, match=r"tune_users 50, expected 100; validation protocol n_negatives 49 \(expected 99\); "
                                               r"no tuning of bayesian_category; tune again"):
        read_tuned_baselines(path, names=["ema", "bayesian_category"], **kwargs)


def test_a_copy_of_the_dataset_reuses_its_tuning_and_another_preparation_does_not(dataset, tmp_path, monkeypatch):
    from interestgym.agents import tuning

    first = tmp_path / "first"
    train_run(_config(dataset, first, reward_baseline="ema", timesteps=32))
    saved = json.loads((first / "baselines.json").read_text())
    assert saved["protocol"]["dataset"] == str(dataset) and len(saved["dataset_identity"]) == 64
    copy = tmp_path / "moved" / "tiny"
    shutil.copytree(dataset, copy)

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned again: the copy's tuning was not reused")

    monkeypatch.setattr(tuning, "tune_baselines", no_tuning)
    train_run(_config(copy, tmp_path / "on-copy", reward_baseline="ema", timesteps=32, tuned_baselines=str(first / "baselines.json")))
    reused = json.loads((tmp_path / "on-copy" / "baselines.json").read_text())
    assert reused["baselines"] == saved["baselines"] and reused["protocol"]["dataset"] == str(copy)
    # the same folder prepared otherwise (here: another source file's sha256 in its manifest) is not the same data
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["source"] = {**manifest.get("source", {}), "files": [{"path": "other.csv", "sha256": "0" * 64, "bytes": 1}]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    # (tuned at another path: the error names both datasets)
    with pytest.raises(InterestGymError, match=r"tuned for another setting than this run: tuned on dataset .*/tiny \(manifest sha256 "
                                               r"[0-9a-f]{16}\.\.\.\), not .*moved/tiny \([0-9a-f]{16}\.\.\.\)"):
        train_run(_config(copy, tmp_path / "re-prepared", reward_baseline="ema", timesteps=32,
                          tuned_baselines=str(first / "baselines.json")))
    # the same path prepared otherwise is refused too (the tuning names what it was tuned on)
    same_path = json.loads((tmp_path / "on-copy" / "baselines.json").read_text())
    assert same_path["protocol"]["dataset"] == str(copy)
    with pytest.raises(InterestGymError, match=r"dataset contents: manifest sha256"):
        train_run(_config(copy, tmp_path / "re-prepared-2", reward_baseline="ema", timesteps=32,
                          tuned_baselines=str(tmp_path / "on-copy" / "baselines.json")))
    # a baselines.json from before the identity was recorded still needs the same path
    del saved["dataset_identity"]
    (tmp_path / "old.json").write_text(json.dumps(saved))
    shutil.rmtree(copy)
    shutil.copytree(dataset, copy)
    with pytest.raises(InterestGymError, match=r"validation protocol dataset"):
        train_run(_config(copy, tmp_path / "old-file", reward_baseline="ema", timesteps=32, tuned_baselines=str(tmp_path / "old.json")))


def test_a_tuning_is_not_reused_on_vectors_of_another_encoder_under_the_same_name(dataset, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(dataset, copy)
    meta_path = copy / "embeddings" / "topic16.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "fingerprint": "a" * 64}))
    first = tmp_path / "first"
    train_run(_config(copy, first, reward_baseline="ema", timesteps=32))
    assert json.loads((first / "baselines.json").read_text())["embedding_fingerprint"] == "a" * 64
    # encoded again under the same name with another encoder: its tuned parameters belong to the old vectors
    meta_path.write_text(json.dumps({**meta, "fingerprint": "b" * 64}))
    with pytest.raises(InterestGymError, match=r"tuned for another setting than this run: embeddings 'topic16': encoder fingerprint "
                                               r"a{16}\.\.\. when tuned, b{16}\.\.\. now \(encoded again with another encoder\)"):
        train_run(_config(copy, tmp_path / "second", reward_baseline="ema", timesteps=32,
                          tuned_baselines=str(first / "baselines.json")))
    # the same encoder again: reused
    meta_path.write_text(json.dumps({**meta, "fingerprint": "a" * 64}))
    train_run(_config(copy, tmp_path / "third", reward_baseline="ema", timesteps=32, tuned_baselines=str(first / "baselines.json")))


@pytest.mark.parametrize("options, message", [
    ({"n_boot": 0}, r"--n-boot 0: expected an integer >= 1"),
    ({"n_boot": -1}, r"--n-boot -1: expected an integer >= 1"),
    ({"baselines": ""}, r"--baselines '': expected comma-separated baseline names or 'all'"),
])
def test_bad_evaluation_options(dataset, tmp_path, options, message):
    with pytest.raises(InterestGymError, match=message):
        evaluate_run(dataset, out=tmp_path / "ev", **options)


def test_a_damaged_truth_file_names_the_file(tmp_path):
    path = tiny_synthetic(tmp_path / "tiny", users=10, events_per_user=6)
    raw = (path / "truth.npy").read_bytes()
    (path / "truth.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match=r"truth.npy: its bytes are not those `interestgym prepare` wrote .*damaged"):
        _ = Dataset.open(path).truth
    without_table_digests(path)  # a dataset prepared before the digests: the file's own reading says it
    with pytest.raises(ArtifactError, match=r"truth.npy: cannot be read as a .npy array: .*prepare the dataset again"):
        _ = Dataset.open(path).truth


def test_a_damaged_parquet_file_gives_a_one_line_error(tmp_path):
    path = tiny_synthetic(tmp_path / "tiny", users=10, events_per_user=6)
    raw = (path / "events.parquet").read_bytes()
    (path / "events.parquet").write_bytes(b"\x00garbage\xff" * 8 + raw[80:])
    with pytest.raises(ArtifactError, match=r"events.parquet: its bytes are not those `interestgym prepare` wrote .*damaged"):
        _ = Dataset.open(path).events
    without_table_digests(path)  # a dataset prepared before the digests: the file's own reading says it
    with pytest.raises(ArtifactError, match=r"events.parquet: cannot be read as Parquet") as info:
        _ = Dataset.open(path).events
    assert "\n" not in str(info.value)


def test_an_unknown_split_is_named(tmp_path):
    with pytest.raises(InterestGymError, match=r"split='train,valid': expected one of train, valid, test"):
        ProtocolSpec(split="train,valid")
    ds = make_dataset(tmp_path / "ds", seed=0)
    with pytest.raises(InterestGymError, match=r"split='foo': expected one of train, valid, test"):
        InterestReplayEnv(ds, split="foo")


def test_non_finite_actions_are_refused_not_replayed(tmp_path):
    ds = make_dataset(tmp_path / "ds", seed=0)
    env = InterestReplayEnv(ds)
    env.reset(seed=0)
    with pytest.raises(InterestGymError, match=r"action \[nan, 0.0, 0.0, 0.0\]: expected 4 finite numbers"):
        env.step(np.array([np.nan, 0.0, 0.0, 0.0], dtype=np.float32))
    venv = InterestReplayVecEnv(ds, n_envs=2, seed=0)
    venv.reset()
    with pytest.raises(InterestGymError, match=r"1 of 2 envs got a non-finite action"):
        venv.step_async(np.array([[0.0, 0.0, 0.0, 0.0], [np.inf, 0.0, 0.0, 0.0]], dtype=np.float32))


def test_export_refuses_a_negative_verification_count(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(tmp_path), "--out", str(tmp_path / "x"), "--verify-observations", "-5"])
    assert result.exit_code == 2 and "-5 is not in the range x>=0" in result.output


@pytest.mark.parametrize("option, message", [
    (["--baselines", "foo"], r"baseline rule 'foo': expected one of"),
    (["--reward", "ndcg@0"], r"--reward 'ndcg@0': expected"),
    (["--n-epochs", "1", "--learning-rate", "-1"], r"--learning-rate -1.0: expected a positive number"),
])
def test_quickstart_checks_its_options_before_preparing_anything(tmp_path, capsys, option, message):
    from interestgym.cli import main

    out = tmp_path / "qs"
    with pytest.raises(SystemExit) as info:
        main(["quickstart", "--out", str(out), "--users", "20", "--encoder", "hashing", "--no-progress", *option])
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_an_empty_embedding_name_is_refused_not_replaced_by_the_default(dataset):
    from interestgym.encoders.hashing import HashingEncoder
    from interestgym.encoders.pipeline import encode_dataset

    before = sorted(p.name for p in (dataset / "embeddings").iterdir())
    with pytest.raises(InterestGymError, match=r"--name '': expected letters, digits"):
        encode_dataset(dataset, HashingEncoder(dim=8), name="", log=None)
    assert sorted(p.name for p in (dataset / "embeddings").iterdir()) == before


def test_resume_refuses_options_that_differ_from_the_run_instead_of_ignoring_them(dataset, tmp_path, capsys):
    from interestgym.cli import main

    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--n-envs", "4", "--n-steps", "16", "--batch-size", "32", "--n-epochs", "1",
              "--eval-every", "0", "--reward-baseline", "none", "--net-arch", "8", "--no-progress"]
    main(["train", str(dataset), "--timesteps", "64", *common])
    with pytest.raises(SystemExit) as info:
        main(["train", str(dataset), "--timesteps", "128", "--resume", *common, "--n-envs", "8", "--reward", "mrr"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--n-envs 8 (the run's: 4)" in err and "--reward 'mrr' (the run's: 'ndcg@10')" in err
    with pytest.raises(SystemExit):  # a switch reads as the flag given
        main(["train", str(dataset), "--timesteps", "128", "--resume", *common, "--no-category-gain"])
    assert "--no-category-gain (the run's: True)" in capsys.readouterr().err
    # a run saved before --history-negatives existed drew none: asking for some on resume is refused too
    saved = json.loads((run / "config.json").read_text())
    del saved["config"]["history_negatives"]
    (run / "config.json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit):
        main(["train", str(dataset), "--timesteps", "128", "--resume", *common, "--history-negatives", "5"])
    assert "--history-negatives 5 (the run's: 0)" in capsys.readouterr().err
    # the same options again (a longer target) continue the run
    main(["train", str(dataset), "--timesteps", "128", "--resume", *common])
    assert json.loads((run / "final" / "info.json").read_text())["step"] == 128
    assert "the run ships its learned model: no reference rule" in capsys.readouterr().out  # train says what ships


def test_a_run_whose_embedding_was_re_encoded_differently_is_refused(tmp_path):
    """evaluate and export check the embedding fingerprint and dimension recorded at training."""
    from interestgym.export.run import export_run

    data = tiny_synthetic(tmp_path / "data")
    run = tmp_path / "run"
    train_run(_config(data, run))
    recorded = json.loads((run / "config.json").read_text())["embedding"]
    assert recorded["name"] == "topic16" and recorded["dim"] == 16
    # the same name re-written with other vectors (another encoder / options): a different fingerprint
    meta_path = data / "embeddings" / "topic16.json"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"] = "something-else"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InterestGymError, match=r"re-encoded after training"):
        evaluate_run(run, n_boot=10, progress=False)
    with pytest.raises(InterestGymError, match=r"re-encoded after training"):
        export_run(run, tmp_path / "export")


def test_no_older_grid_note_for_a_tuning_of_other_data(dataset, tmp_path, capsys):
    from interestgym.agents.cli import _note_older_grids
    from interestgym.agents.run_folder import dataset_identity

    old = {"bayesian_category": {"params": {}, "grid": [{"beta_cat": 1.0, "score": 0.5}]}}
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps({"dataset_identity": "0" * 64, "baselines": old}))
    _note_older_grids(path, dataset)
    assert capsys.readouterr().err == ""  # the reader refuses it for its data, not for its grid
    path.write_text(json.dumps({"dataset_identity": dataset_identity(dataset), "baselines": old}))
    _note_older_grids(path, dataset)
    assert "was tuned over an older grid: bayesian_category without " in capsys.readouterr().err


def test_settings_of_sampled_negatives_on_a_log_of_impressions_are_said_to_be_ignored(dataset, tmp_path, capsys):
    from cli_fixtures import run as run_cli

    from interestgym.evaluation.run import evaluate_run

    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(dataset), "--run-dir", str(run), "--timesteps", "64", "--n-envs", "4", "--n-steps", "16",
                            "--batch-size", "32", "--n-epochs", "1", "--reward-baseline", "ema", "--tune-users", "5",
                            "--history-negatives", "5", "--no-progress"], capsys)
    assert code == 0, err
    assert ("note: --history-negatives: " + str(dataset) + " has logged impressions, which are its scoring points (the candidates "
            "that were shown); settings of sampled negatives do not apply and are ignored") in err
    # evaluate: not "a protocol that differs from the run's" (nothing changes on impressions), but a note
    text = evaluate_run(run, history_negatives=3, n_negatives=7, baselines="ema", n_boot=10, progress=False)
    header = json.loads((run / "evaluation.json").read_text())["header"]
    assert header["protocol_changed"] is None
    assert header["ignored_settings"].startswith("--n-negatives 7, --history-negatives 3: the dataset has logged impressions")
    assert "- note: --n-negatives 7, --history-negatives 3: the dataset has logged impressions" in text


def test_a_run_whose_policy_diverges_to_nan_is_stopped_with_what_to_change(dataset, tmp_path, monkeypatch):
    """A learning rate that is in range and still too large for the data can make the network NaN; torch then refuses
    the action distribution with a long traceback. train says what happened and what to change instead."""
    import torch
    from stable_baselines3 import PPO

    original = PPO.train

    def train_then_break(self):  # one PPO update that blows up, as a too-large step would
        original(self)
        with torch.no_grad():
            for p in self.policy.parameters():
                p.fill_(float("nan"))

    monkeypatch.setattr(PPO, "train", train_then_break)
    run = tmp_path / "run"
    with pytest.raises(InterestGymError, match=r"training diverged near step 64: the policy's action distribution became NaN "
                                               r"\(--learning-rate 0.0003, --log-std-init -1, --max-grad-norm 0.5\); expected "
                                               r"smaller steps: lower --learning-rate"):
        train_run(_config(dataset, run, timesteps=256))


def test_resume_takes_the_dataset_from_the_run_and_a_run_stopped_while_tuning_says_to_start_again(dataset, tmp_path, capsys):
    from interestgym.cli import main

    run = tmp_path / "run"
    common = ["--run-dir", str(run), "--n-envs", "4", "--n-steps", "16", "--batch-size", "32", "--n-epochs", "1",
              "--eval-every", "0", "--reward-baseline", "none", "--net-arch", "8", "--no-progress"]
    main(["train", str(dataset), "--timesteps", "64", *common])
    capsys.readouterr()
    main(["train", "--timesteps", "128", "--resume", *common])  # no DATASET: the run's own (config.json)
    assert json.loads((run / "final" / "info.json").read_text())["step"] == 128
    assert json.loads((run / "config.json").read_text())["config"]["dataset"] == str(dataset.resolve())
    # a `train` killed while tuning leaves a folder without config.json: nothing to resume, and said so
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "tb").mkdir()
    with pytest.raises(SystemExit) as info:
        main(["train", str(dataset), "--run-dir", str(stopped), "--resume", "--no-progress"])
    assert info.value.code == 2
    assert (f"{stopped}: no config.json: the run was stopped before training started (while tuning the baselines); nothing "
            "to resume: run the same command without --resume") in capsys.readouterr().err


def test_a_resume_refuses_a_run_whose_selected_best_model_is_gone(dataset, tmp_path):
    # with best/ removed, a resume decided shipping on the final model instead, under the same run, without a word
    run = tmp_path / "run"
    train_run(_config(dataset, run, eval_every=64))
    best = json.loads((run / "best" / "info.json").read_text())
    assert (run / "best" / "model.zip").is_file()
    shipped = (run / "shipped.json").read_bytes()
    shutil.rmtree(run / "best")
    with pytest.raises(InterestGymError, match=rf"best/model.zip: missing, but the run's validation selected its model of "
                                               rf"step {best['step']:,} \(ndcg@10 {best['value']:.4f}\)"):
        train_run(_config(dataset, run, eval_every=64), resume=True)
    assert (run / "shipped.json").read_bytes() == shipped  # the decision on the selected model stands


def test_outputs_inside_a_dataset_folder_or_a_run_are_refused_before_any_work(dataset, tmp_path):
    # train refused --run-dir DATASET, but not DATASET/embeddings; search took a dataset or a finished run as its
    # folder; evaluate --out DATASET wrote its tables among the dataset's files
    from interestgym.agents.search import run_search

    inside = dataset / "embeddings" / "run"
    with pytest.raises(InterestGymError, match=rf"--run-dir {re.escape(str(inside))}: lies inside the dataset folder "
                                               rf"{re.escape(str(dataset))} \(manifest.json and events.parquet found\)"):
        train_run(_config(dataset, inside))
    assert not inside.exists()
    with pytest.raises(InterestGymError, match=r"--run-dir .*: is the dataset folder .*expected a folder for the search"):
        run_search(str(dataset), dataset, trials=1, budget_steps=64, echo=lambda _: None)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(InterestGymError, match=r"--run-dir .*run: holds a training run \(config.json found\)"):
        run_search(str(dataset), run, trials=1, budget_steps=64, echo=lambda _: None)
    with pytest.raises(InterestGymError, match=r"--out .*: is the dataset folder .*expected a folder for evaluation.json"):
        evaluate_run(dataset, out=dataset, baselines="popularity", n_boot=10, progress=False)
    assert not (dataset / "evaluation.json").exists()
