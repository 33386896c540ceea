"""`interestgym train`: run-directory layout, TensorBoard scalars, checkpoints, best / final models, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from env_fixtures import reseal_tables
from interestgym.agents.train import TrainConfig, train_run

from interestgym.cli import cli
from interestgym.errors import InterestGymError

CUSTOM_SCALARS = (
    "charts/mean_reward", "charts/update_rate", "charts/mean_a_long", "charts/mean_a_short",
    "charts/mean_mix_weight", "charts/mean_pop_weight", "charts/steps_per_second", "charts/scored_fraction",
    "eval/ndcg@10", "eval/auc", "eval/best_ndcg@10",
)


def _scalars(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_synthetic(tmp_path_factory.mktemp("data") / "tiny")


def _config(dataset: Path, run_dir: Path, **kw) -> TrainConfig:
    base = {"dataset": str(dataset), "run_dir": str(run_dir), "timesteps": 256, "n_envs": 4, "n_steps": 16, "batch_size": 32,
            "n_epochs": 2, "eval_every": 128, "checkpoint_every": 128, "eval_users": None, "progress_bar": False,
            "reward_baseline": None, "net_arch": [16, 16]}
    base.update(kw)
    return TrainConfig(**base)


def test_cli_train_writes_config_tensorboard_checkpoints_best_and_final(dataset, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", str(dataset), "--run-dir", str(run), "--timesteps", "256", "--n-envs", "4", "--n-steps", "16",
        "--batch-size", "32", "--n-epochs", "2", "--eval-every", "128", "--checkpoint-every", "128",
        "--reward-baseline", "ema", "--net-arch", "16,16", "--no-progress", "--seed", "3",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained 256 steps" in result.output

    conf = json.loads((run / "config.json").read_text())
    assert conf["config"]["seed"] == 3 and conf["config"]["timesteps"] == 256 and conf["config"]["net_arch"] == [16, 16]
    assert conf["reference"]["name"] == "ema"
    tuned = json.loads((run / "baselines.json").read_text())
    assert tuned["baselines"]["ema"]["params"] == conf["reference"]["params"]

    for folder in ("best", "final"):
        assert (run / folder / "model.zip").stat().st_size > 0
        assert (run / folder / "normaliser.npz").stat().st_size > 0
        assert sorted(p.name for p in (run / folder).iterdir()) == ["info.json", "model.zip", "normaliser.npz"]
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] == 256
    assert (run / "checkpoints" / state["model"]).is_file() and (run / "checkpoints" / state["normaliser"]).is_file()
    assert not list(run.rglob("*.pkl"))  # nothing pickled in a run folder
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporaries

    acc = _scalars(run / "tb")
    tags = set(acc.Tags()["scalars"])
    missing = [t for t in CUSTOM_SCALARS if t not in tags]
    assert not missing, missing
    assert "train/approx_kl" in tags  # SB3's own scalars go to the same run
    assert "hyperparameters/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("hyperparameters/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "|learning_rate|0.0003|" in text and "|seed|3|" in text
    rate = [e.value for e in acc.Scalars("charts/update_rate")]
    assert all(0.0 <= v <= 1.0 for v in rate)
    info = json.loads((run / "best" / "info.json").read_text())
    evals = {e.step: e.value for e in acc.Scalars("eval/ndcg@10")}
    assert info["step"] in evals and info["value"] == pytest.approx(max(evals.values()), abs=1e-6)


def test_best_model_reproduces_its_validation_score(dataset, tmp_path):
    from interestgym.agents.run_folder import load_run_policy
    from interestgym.agents.tuning import mean_over_users
    from interestgym.envs.vector import evaluate_policy

    config = _config(dataset, tmp_path / "run", reward_baseline=None, eval_users=None)
    summary = train_run(config)
    policy = load_run_policy(tmp_path / "run", "best")
    res = evaluate_policy(config.replay_data("valid"), policy, metric="ndcg@10", record_features=False, progress=False)
    assert mean_over_users(res, "ndcg@10") == pytest.approx(summary["best_value"], abs=1e-9)


def test_resume_reaches_the_same_total_on_one_continuous_curve(dataset, tmp_path):
    full = _config(dataset, tmp_path / "full", timesteps=256)
    assert train_run(full)["num_timesteps"] == 256

    part = _config(dataset, tmp_path / "part", timesteps=128)
    assert train_run(part)["num_timesteps"] == 128  # the "interrupted" run
    before = json.loads((tmp_path / "part" / "config.json").read_text())
    resumed = train_run(_config(dataset, tmp_path / "part", timesteps=256), resume=True)
    assert resumed["num_timesteps"] == 256
    # the run's total is now the resumed target (the report's "asked"); nothing else in config.json moved
    after = json.loads((tmp_path / "part" / "config.json").read_text())
    assert after["config"]["timesteps"] == 256 and before["config"]["timesteps"] == 128
    assert {**after, "config": {**after["config"], "timesteps": 128}} == before
    # a resume to a total the run has already reached trains nothing and keeps the total
    again = train_run(_config(dataset, tmp_path / "part", timesteps=64), resume=True)
    assert again["num_timesteps"] == 256
    assert json.loads((tmp_path / "part" / "config.json").read_text())["config"]["timesteps"] == 256
    # `train --resume` without --timesteps continues to the run's own total, not to the default (600k)
    result = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / "part"), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained 256 steps" in result.output

    steps_full = [e.step for e in _scalars(tmp_path / "full" / "tb").Scalars("charts/mean_reward")]
    steps_part = [e.step for e in _scalars(tmp_path / "part" / "tb").Scalars("charts/mean_reward")]
    assert steps_part == steps_full  # same rollouts, one step axis, no restart at 0
    assert steps_part == sorted(set(steps_part)) and steps_part[-1] == 256
    state = json.loads((tmp_path / "part" / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] == 256
    # the resumed run kept the normalisation statistics: more observations than the second half alone
    from interestgym.agents.run_folder import load_normaliser

    norm = load_normaliser(tmp_path / "part" / "final" / "normaliser.npz")
    assert norm.obs_rms.count > 256


def _weights(run: Path, folder: str = "final") -> dict[str, bytes]:
    """The tensors of a saved model (SB3's zip: its other entries hold times and addresses)."""
    import zipfile

    with zipfile.ZipFile(run / folder / "model.zip") as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith(".pth")}


def test_two_identical_runs_write_the_same_model_files_byte_for_byte(dataset, tmp_path):
    """SB3's zip stores the wall clock (the start time, finished episodes' times, member dates); the run writes it
    without them, so a reproduction can be confirmed by the files' sha256 (info.json, shipped.json), not only by the
    tensors inside; the model still loads, with its episode window's size."""
    from interestgym.agents.run_folder import load_model

    for run in ("a", "b"):
        train_run(_config(dataset, tmp_path / run, reward_baseline="ema"))
    for name in ("best/model.zip", "final/model.zip", "best/info.json", "final/info.json", "shipped.json",
                 "checkpoints/model_256.zip"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    import zipfile

    with zipfile.ZipFile(tmp_path / "a" / "final" / "model.zip") as z:
        assert {info.date_time for info in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert json.loads(z.read("data"))["start_time"] == 0
        assert b" at 0x" not in z.read("data")  # no memory address (another process has others): the same in any process
    model = load_model(tmp_path / "a", "final").model
    assert len(model.ep_info_buffer) == 0 and model.ep_info_buffer.maxlen == model._stats_window_size


@pytest.mark.parametrize("settings", [{}, {"reward_baseline": "bayesian_category"}, {"reward_baseline": "ema", "window": 5}],
                         ids=["plain", "residual", "residual-windows"])
def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights_to_the_bit(dataset, tmp_path, settings):
    """Stopped at its checkpoint at step 128 of 256 and resumed, a run ends where the uninterrupted run ends: the same
    weights and optimiser state, normaliser, best model and validation curve. The checkpoint keeps the env's replay, the
    wrappers' running parts and the random generators (agents.resume_state); without them the resumed run's users and
    minibatches differ."""
    full = train_run(_config(dataset, tmp_path / "full", **settings))
    train_run(_config(dataset, tmp_path / "part", **{**settings, "timesteps": 128}))
    assert (tmp_path / "part" / "checkpoints" / "rollout_128.npz").is_file()
    resumed = train_run(_config(dataset, tmp_path / "part", **settings), resume=True)
    for folder in ("final", "best"):
        assert _weights(tmp_path / "part", folder) == _weights(tmp_path / "full", folder), folder
        assert (tmp_path / "part" / folder / "normaliser.npz").read_bytes() == (tmp_path / "full" / folder / "normaliser.npz").read_bytes()
    # the final model's whole file too (written without the wall clock and the step this learn() started at); a best
    # model saved at step 128 records the total its learn() call aimed at (128 in the stopped run, 256 in the other)
    assert (tmp_path / "part" / "final" / "model.zip").read_bytes() == (tmp_path / "full" / "final" / "model.zip").read_bytes()
    assert (resumed["best_value"], resumed["best_step"]) == (full["best_value"], full["best_step"])
    history = [json.loads((tmp_path / run / "checkpoints" / "state.json").read_text())["callback"]["eval_history"] for run in ("full", "part")]
    assert history[0] == history[1]


def test_a_training_state_of_another_run_is_refused_naming_the_file(dataset, tmp_path):
    """The rollout state is checked like the checkpoint's other files, and one of another env count is refused by name."""
    from interestgym.agents.run_checkpoints import load_checkpoint
    from interestgym.envs.vector import InterestReplayVecEnv
    from stable_baselines3.common.vec_env import VecMonitor

    from interestgym.errors import ArtifactError

    train_run(_config(dataset, tmp_path / "run", timesteps=128))
    config = _config(dataset, tmp_path / "run", n_envs=2)
    with pytest.raises(ArtifactError, match=r"rollout_128\.npz: \w+ is \w+ \(4, .*this replay's is \w+ \(2, .*another dataset, env count or scoring"):
        load_checkpoint(tmp_path / "run", VecMonitor(InterestReplayVecEnv(config.replay_data("train"), n_envs=2)))
    # a damaged file fails its checksum (the record's sha256), as the model's would
    path = tmp_path / "run" / "checkpoints" / "rollout_128.npz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="rollout_128.npz"):
        load_checkpoint(tmp_path / "run", VecMonitor(InterestReplayVecEnv(config.replay_data("train"), n_envs=4)))


def test_a_checkpoint_of_an_earlier_release_without_the_training_state_still_resumes(dataset, tmp_path, capsys):
    """Checkpoints written before rollout_<step>.npz existed name no such file: the run resumes from their weights (the
    env drawn afresh, as before), to its total, and says that it is not an exact resume."""
    train_run(_config(dataset, tmp_path / "run", timesteps=128))
    folder = tmp_path / "run" / "checkpoints"
    for name in ("state.json", "checkpoint_128.json"):
        record = json.loads((folder / name).read_text())
        record.pop("rollout")
        record["files"].pop("rollout_128.npz")
        (folder / name).write_text(json.dumps(record))
    (folder / "rollout_128.npz").unlink()
    capsys.readouterr()
    assert train_run(_config(dataset, tmp_path / "run"), resume=True)["num_timesteps"] == 256
    assert ("note: the checkpoint of step 128 (state.json) has no rollout_128.npz (an earlier release wrote it): the run "
            "resumes from its weights with the env's users drawn afresh") in capsys.readouterr().err


def test_a_training_state_of_other_events_resumes_from_the_weights_with_a_note(tmp_path, capsys):
    """The dataset's events changed under the same split since the checkpoint (train --resume allows it with a note): the
    slots' cursors index the old replay's decisions, so the state is not put back (it stepped past the new arrays: a bare
    IndexError); the run continues from the checkpoint's weights with the env started afresh, and says so."""
    import pandas as pd

    data = tiny_synthetic(tmp_path / "data")
    train_run(_config(data, tmp_path / "run", timesteps=128))
    events = pd.read_parquet(data / "events.parquet")
    fewer = events.groupby("user_id", sort=False).head(6).reset_index(drop=True)
    fewer.to_parquet(data / "events.parquet", index=False)
    manifest = json.loads((data / "manifest.json").read_text())  # as `prepare` of the edited log writes it
    manifest["counts"]["events"] = len(fewer)
    (data / "manifest.json").write_text(json.dumps(manifest))
    reseal_tables(data)
    capsys.readouterr()
    assert train_run(_config(data, tmp_path / "run"), resume=True)["num_timesteps"] == 256
    err = capsys.readouterr().err
    assert "rollout_128.npz: taken on other replay data (the dataset's events changed since the checkpoint)" in err


def test_a_resume_to_fewer_steps_than_first_asked_records_them(dataset, tmp_path):
    """Interrupted at 128 of 320 asked, resumed with --timesteps 192: 192 is the run's total from then on."""
    train_run(_config(dataset, tmp_path / "run", timesteps=128))
    path = tmp_path / "run" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "config": {**json.loads(path.read_text())["config"], "timesteps": 320}}))
    assert train_run(_config(dataset, tmp_path / "run", timesteps=192), resume=True)["num_timesteps"] == 192
    assert json.loads(path.read_text())["config"]["timesteps"] == 192


def test_an_interrupted_train_says_what_to_resume_from(dataset, tmp_path, monkeypatch):
    """Ctrl-C in `train`: the last checkpoint and the command that continues from it, or that there is none."""
    import interestgym.agents.train as train_module

    train_run(_config(dataset, tmp_path / "run", timesteps=128))

    def interrupted(config, resume=False, ray=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_run", interrupted)
    unchecked = tmp_path / "unchecked"  # config.json written (baselines tuned), no checkpoint yet
    unchecked.mkdir()
    (unchecked / "config.json").write_text((tmp_path / "run" / "config.json").read_text())
    for run, expected in ((tmp_path / "run", (f"interrupted; the last checkpoint is at step 128: continue with "
                                               f"`interestgym train {dataset} --run-dir {tmp_path / 'run'} --resume`")),
                          (unchecked, (f"interrupted before the first checkpoint (every 50,000 steps): `interestgym train {dataset} "
                                       f"--run-dir {unchecked} --resume` trains the run from step 0")),
                          (tmp_path / "new", "interrupted before training started: nothing to resume; run the same command again (with all its options)")):
        result = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(run), "--no-progress",
                                          *(["--resume"] if run.exists() else [])])
        assert result.exit_code != 0 and expected in result.output, result.output


def test_sigterm_ends_train_as_ctrl_c_does_with_the_resume_line(dataset, tmp_path, monkeypatch):
    """A review's find: SIGTERM (timeout, a batch scheduler, docker stop) ended `train` without the line that says where
    the run can resume from; it ends it as Ctrl-C does now, and the handler is put back after."""
    import os
    import signal

    import interestgym.agents.train as train_module

    train_run(_config(dataset, tmp_path / "run", timesteps=128))
    before = signal.getsignal(signal.SIGTERM)

    def terminated(config, resume=False, ray=None):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread: its handler runs at the next bytecode
        raise AssertionError("SIGTERM did not stop training")

    monkeypatch.setattr(train_module, "train_run", terminated)
    result = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / "run"), "--no-progress", "--resume"])
    assert result.exit_code != 0 and (f"interrupted; the last checkpoint is at step 128: continue with `interestgym train "
                                      f"{dataset} --run-dir {tmp_path / 'run'} --resume`") in result.output, result.output
    assert signal.getsignal(signal.SIGTERM) is before


def test_fresh_train_refuses_an_existing_run_and_resume_needs_one(dataset, tmp_path):
    config = _config(dataset, tmp_path / "run", timesteps=64, eval_every=0, checkpoint_every=0, reward_baseline=None)
    train_run(config)
    with pytest.raises(InterestGymError, match="--resume"):
        train_run(config)
    with pytest.raises(InterestGymError, match="config.json"):
        train_run(_config(dataset, tmp_path / "nothing"), resume=True)


def test_resume_of_a_folder_without_a_run_names_the_run_not_the_dataset(tmp_path, capsys):
    """DATASET may be left out with --resume (the run's own), so the missing run is the error, with or without one."""
    from interestgym.cli import main

    for dataset in ([], [str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            main(["train", *dataset, "--run-dir", str(tmp_path / "nothing"), "--resume", "--no-progress"])
        err = capsys.readouterr().err
        assert exc.value.code == 2
        assert f"{tmp_path / 'nothing' / 'config.json'}: missing; expected a run directory written by `interestgym train`" in err
        assert "DATASET" not in err


def test_bad_options_are_reported(dataset, tmp_path):
    with pytest.raises(InterestGymError, match="batch-size"):
        train_run(_config(dataset, tmp_path / "r", batch_size=10_000))
    with pytest.raises(InterestGymError, match="reward-baseline"):
        train_run(_config(dataset, tmp_path / "r3", reward_baseline="nosuchrule"))
    with pytest.raises(InterestGymError, match=r"--reward 'ndcg@x': expected auc, mrr"):
        train_run(_config(dataset, tmp_path / "r2", reward="ndcg@x"))
    with pytest.raises(InterestGymError, match=r"--history-negatives 200: expected an integer in \[0, --n-negatives 99\]"):
        train_run(_config(dataset, tmp_path / "r4", history_negatives=200))
    with pytest.raises(InterestGymError, match=r"--history-negatives 5 with --exclude log: .*expected --exclude target"):
        train_run(_config(dataset, tmp_path / "r5", history_negatives=5, exclude="log"))


def test_agent_scoring_ties_the_category_forgetting_to_the_agents_long_strength():
    from interestgym.agents.rules import make_baseline
    from interestgym.agents.train import agent_scoring_config

    from interestgym.core.interest import ScoringConfig

    bayes = make_baseline("bayesian_category", beta_cat=3.0, forgetting=0.9, popularity_weight=0.8)
    tied = agent_scoring_config("reference", bayes)
    assert tied.category_forgetting is None and tied.ties_category_forgetting
    assert (tied.beta_cat, tied.category_prior) == (3.0, bayes.scoring.category_prior)
    assert agent_scoring_config("reference-fixed", bayes) == bayes.scoring
    assert agent_scoring_config("plain", bayes) == ScoringConfig()
    assert agent_scoring_config("reference", None) == ScoringConfig()
    # without the category term there is nothing to tie
    context = make_baseline("context_rule", beta_ctx=0.3)
    assert agent_scoring_config("reference", context) == context.scoring
    with pytest.raises(InterestGymError, match="agent-scoring"):
        TrainConfig(dataset="d", run_dir="r", agent_scoring="bogus").validate()


def test_train_says_how_much_of_its_time_was_tuning(dataset, tmp_path, monkeypatch):
    import time as _time

    from click.testing import CliRunner
    from interestgym.agents import tuning

    from interestgym.cli import cli

    real = tuning.tune_reference

    def slow(config, valid_data, scorer=None):  # a tuning that takes 1.5 s more, so the share is visible
        _time.sleep(1.5)
        return real(config, valid_data, scorer)

    monkeypatch.setattr("interestgym.agents.train.tune_reference", slow)
    result = train_run(_config(dataset, tmp_path / "direct", timesteps=64, eval_every=0, reward_baseline="ema", tune_users=5))
    assert 1.5 <= result["tuning_seconds"] <= result["seconds"]
    out = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / "run"), "--timesteps", "64", "--n-envs", "4",
                                   "--n-steps", "16", "--batch-size", "32", "--eval-every", "0", "--reward-baseline", "ema",
                                   "--tune-users", "5", "--no-progress"])
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("trained "))
    assert line.startswith("trained 64 steps in ") and " s of it tuning the baselines); best validation ndcg@10" in line
    # reusing the tuning (the real tune_reference again): it only reads the file
    monkeypatch.undo()
    result = train_run(_config(dataset, tmp_path / "reuse", timesteps=64, eval_every=0, reward_baseline="ema", tune_users=5,
                               tuned_baselines=str(tmp_path / "direct" / "baselines.json")))
    assert result["tuning_seconds"] < 1.5


def test_a_resume_with_fewer_steps_than_the_run_has_says_nothing_was_trained(dataset, tmp_path):
    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=128))
    result = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(run), "--resume", "--timesteps", "64",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "note: the run was already at step 128, at or past --timesteps 64: nothing was trained" in result.stderr


def test_evaluating_a_run_that_is_still_training_says_so(dataset, tmp_path, capsys):
    """Another process holds the run's lock (training): evaluate says its models may still change and what it ships is
    not decided; with the lock free, nothing is said."""
    import fcntl
    import os
    import subprocess
    import time as clock

    from interestgym.evaluation.run import evaluate_run

    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=128))
    (run / "shipped.json").unlink()  # as during training: nothing decided yet
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.pwrite(fd, b'{\"pid\": 1, \"host\": \"h\", \"started\": \"now\"}', 0); print('locked', flush=True); time.sleep(60)"),
        str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        evaluate_run(run, baselines="ema", n_boot=20, progress=False)
        err = capsys.readouterr().err
        assert f"note: {run} is still training (pid 1 on host h, started now)" in err and "evaluates the best model" in err
    finally:
        holder.kill()
        holder.wait()
    clock.sleep(0.1)
    fd = os.open(run / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
    os.close(fd)
    evaluate_run(run, baselines="ema", n_boot=20, progress=False)
    assert "still training" not in capsys.readouterr().err
