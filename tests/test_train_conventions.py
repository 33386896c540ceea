"""The ecosystem's conventions for training (issue 10, 11.12): TensorBoard tags written once per step
(also across a resume after a kill), ``charts/mean_metric`` and ``rollout/ep_rew_mean`` written, the
hyper-parameters in the HParams plugin; every TrainConfig setting reachable by a flag and by
``--config FILE`` (TOML / YAML), unknown keys refused; the progress bar's total is what runs."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import small_train_config, tiny_synthetic
from interestgym.agents.config import TrainConfig
from interestgym.agents.train import train_run

from interestgym.cli import cli, main
from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_synthetic(tmp_path_factory.mktemp("data") / "tiny", users=30, events_per_user=16)


def _config(dataset: Path, run_dir: Path, **kw) -> TrainConfig:
    return small_train_config(dataset, run_dir, **{"timesteps": 256, "eval_every": 128, "checkpoint_every": 128, **kw})


def _events(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _steps(tb_dir: Path) -> dict[str, list[int]]:
    acc = _events(tb_dir)
    # sorted: event files of runs in one test process may sort out of write order by name (their counter)
    return {tag: sorted(e.step for e in acc.Scalars(tag)) for tag in acc.Tags()["scalars"]}


def _repeated(steps: dict[str, list[int]]) -> dict[str, list[int]]:
    return {tag: s for tag, s in steps.items() if len(s) != len(set(s))}


@pytest.fixture(scope="module")
def straight(dataset, tmp_path_factory) -> Path:
    """An uninterrupted 256-step run (validation and checkpoints every 128 steps)."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train_run(_config(dataset, run))
    return run


# ----------------------------------------------------------------------------------- TensorBoard
def test_every_tag_once_per_step_with_the_documented_scalars_and_hparams(straight):
    from tensorboard.plugins.hparams import plugin_data_pb2

    steps = _steps(straight / "tb")
    assert not _repeated(steps)  # train/* used to appear twice at every validation step
    for tag in ("charts/mean_metric", "rollout/ep_rew_mean", "rollout/ep_len_mean", "eval/ndcg@10", "train/approx_kl"):
        assert steps.get(tag), tag
    assert steps["eval/ndcg@10"] == [0, 128, 256] and steps["charts/mean_metric"][-1] == 256
    content = _events(straight / "tb").PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "eval/ndcg@10" in {m.name.tag for m in experiment.metric_infos}
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info.hparams
    assert hparams["clip_range"].number_value == 0.2 and hparams["net_arch"].string_value == "[8]"


def test_with_a_reward_baseline_the_reward_over_the_reference_is_charted(dataset, tmp_path):
    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=64, eval_every=0, checkpoint_every=0, reward_baseline="ema", tune_users=10))
    steps = _steps(run / "tb")
    assert steps.get("charts/mean_metric_minus_reference") and steps.get("rollout/ep_rew_mean")
    assert not _repeated(steps)


def test_a_resume_after_a_kill_between_log_and_checkpoint_repeats_no_step(dataset, straight, tmp_path):
    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=128))
    saved_checkpoints = shutil.copytree(run / "checkpoints", tmp_path / "checkpoints-at-128")
    train_run(_config(dataset, run, timesteps=256), resume=True)
    # a kill after the points up to 256 were logged, before the checkpoint at 256 was recorded
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(saved_checkpoints, run / "checkpoints")
    train_run(_config(dataset, run, timesteps=256), resume=True)

    steps = _steps(run / "tb")
    assert not _repeated(steps)
    assert steps == _steps(straight / "tb")  # the same points as a run never interrupted
    # and the same values: the episodes' float32 returns come back as float32 (as JSON floats their mean moved in the last
    # digit after a resume)
    for tag in ("rollout/ep_rew_mean", "rollout/ep_len_mean", "eval/ndcg@10"):
        resumed = sorted((e.step, e.value) for e in _events(run / "tb").Scalars(tag))
        assert resumed == sorted((e.step, e.value) for e in _events(straight / "tb").Scalars(tag)), tag


# ---------------------------------------------------------------------------------- settings
def _option_names() -> dict[str, str]:
    """TrainConfig setting -> its command-line flag (or argument)."""
    from interestgym.agents.cli import train

    return {p.name: (p.opts[0] if p.opts else p.name) for p in train.params}


def test_every_train_config_setting_has_a_flag():
    options = _option_names()
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in options]
    assert not missing, f"TrainConfig settings without a flag: {missing}"


def _non_default_settings(tmp_path: Path) -> dict:
    """A value other than the default, and in range, for every TrainConfig setting."""
    default = TrainConfig(dataset="", run_dir="")
    values = {}
    for f in dataclasses.fields(TrainConfig):
        value = getattr(default, f.name)
        if f.name in ("dataset", "run_dir", "tuned_baselines", "sequence"):
            values[f.name] = str(tmp_path / f.name)
        elif f.name == "embeddings":
            values[f.name] = "topic16"
        elif f.name in ("reward", "reward_baseline", "agent_scoring", "negatives", "device", "exclude", "policy_form"):
            values[f.name] = {"reward": "mrr", "reward_baseline": "ema", "agent_scoring": "plain", "negatives": "popularity",
                              # the residual form: the one whose own settings (window, change_penalty) apply
                              "device": "cuda:1", "exclude": "target", "policy_form": "residual"}[f.name]
        elif isinstance(value, bool):
            values[f.name] = not value
        elif f.name == "net_arch":
            values[f.name] = [7, 5]
        elif f.name == "window":  # within max_events (3): a longer window would be cut short, which is refused
            values[f.name] = 2
        elif f.name in ("max_events",) or isinstance(value, int):
            values[f.name] = (value or 0) + 3
        elif f.name in ("gamma", "gae_lambda", "update_threshold"):  # in [0, 1]: the command checks before training
            values[f.name] = value / 2
        else:
            values[f.name] = value + 0.125
    return values


def _trained_config(monkeypatch, argv: list[str]) -> tuple[TrainConfig | None, object]:
    """The TrainConfig `interestgym train ARGV` would train (train_run replaced)."""
    import interestgym.agents.train as train_module

    seen: list[TrainConfig] = []

    def fake(config, *, resume=False, ray=None):
        seen.append(config)
        return {"num_timesteps": 0, "seconds": 0.0, "select_metric": config.reward, "best_value": 0.0, "best_step": 0}

    monkeypatch.setattr(train_module, "train_run", fake)
    result = CliRunner().invoke(cli, ["train", *argv])
    return (seen[0] if seen else None), result


def _toml(values: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def test_a_config_file_sets_every_setting_and_the_command_line_wins(monkeypatch, tmp_path):
    values = _non_default_settings(tmp_path)
    path = tmp_path / "train.toml"
    path.write_text(_toml(values))
    config, result = _trained_config(monkeypatch, ["--config", str(path)])
    assert result.exit_code == 0, result.output
    assert config.as_dict() == values

    absolute = {**values, "policy_form": "absolute", "window": None, "change_penalty": 0.0}  # the other form, without them
    path.write_text(_toml({k: v for k, v in absolute.items() if v is not None}))
    config, result = _trained_config(monkeypatch, ["--config", str(path)])
    assert result.exit_code == 0, result.output
    assert config.as_dict() == absolute
    path.write_text(_toml(values))

    config, result = _trained_config(monkeypatch, ["--config", str(path), "--clip-range", "0.05", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert config.clip_range == 0.05 and config.progress_bar is False and config.vf_coef == values["vf_coef"]

    # YAML (PyYAML is installed here); relative paths are the file's
    pytest.importorskip("yaml")
    (tmp_path / "sub").mkdir()
    yaml_path = tmp_path / "sub" / "train.yaml"
    yaml_path.write_text("dataset: ../data\nrun-dir: runs/a\nclip_range: 0.3\neval_users: 0\nreward_baseline: none\nnet_arch: 32,32\n"
                         "learning_rate: 1e-3\n")  # YAML 1.1 reads 1e-3 as a string: still the number
    config, result = _trained_config(monkeypatch, ["--config", str(yaml_path)])
    assert result.exit_code == 0, result.output
    assert (config.dataset, config.run_dir) == (str(tmp_path / "sub" / "../data"), str(tmp_path / "sub" / "runs/a"))
    assert (config.clip_range, config.eval_users, config.reward_baseline, config.net_arch) == (0.3, None, None, [32, 32])
    assert config.learning_rate == 1e-3


@pytest.mark.parametrize("text, message", [
    ("clip_rnage = 0.1\n", r"train.toml: unknown setting 'clip_rnage' \(did you mean 'clip_range'\?\); expected one of dataset, run_dir"),
    ("zzz = 1\n", r"train.toml: unknown setting 'zzz'; expected one of dataset, run_dir"),
    ("n_envs = 'many'\n", r"train.toml: n_envs = 'many': expected an integer"),
    ("clip_range = [1\n", r"train.toml: not valid TOML"),
])
def test_a_bad_config_file_is_one_line_naming_the_file_and_key(tmp_path, capsys, text, message):
    import re

    path = tmp_path / "train.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["train", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--config", str(path)])
    assert info.value.code == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_yaml_without_pyyaml_and_other_suffixes_are_refused(tmp_path, monkeypatch):
    from interestgym.agents.config import read_config_file

    path = tmp_path / "train.yaml"
    path.write_text("seed: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # `import yaml` fails as if not installed
    with pytest.raises(InterestGymError, match=r"reading YAML needs PyYAML"):
        read_config_file(path)
    (tmp_path / "train.ini").write_text("seed = 1\n")
    with pytest.raises(InterestGymError, match=r"expected a .toml, .yaml or .yml file"):
        read_config_file(tmp_path / "train.ini")


def test_from_dict_refuses_unknown_keys_instead_of_dropping_them():
    values = TrainConfig(dataset="d", run_dir="r").as_dict()
    assert TrainConfig.from_dict(values).as_dict() == values  # config.json round-trips
    with pytest.raises(InterestGymError, match=r"unknown setting 'clip_rnage'"):
        TrainConfig.from_dict({**values, "clip_rnage": 0.1})


EDITED = r" \(not what `interestgym train` writes: the file was edited or damaged\)"


@pytest.mark.parametrize("edit, message", [
    ({"n_envs": "abc"}, r"config\.json: config: n_envs = 'abc': expected an integer" + EDITED),
    ({"gamma": 5.0}, r"config\.json: config\.gamma 5\.0: expected a number in \(0, 1\]" + EDITED),
    ({"net_arch": [64, 0]}, r"config\.json: config\.net_arch '64,0': expected positive layer sizes"),
    ({"reward": "bogus"}, r"config\.json: config\.reward 'bogus': expected auc, mrr, first_click_rr, or one of ndcg"),
    ({"gamma": None}, r"config\.json: setting 'gamma' missing" + EDITED),  # None: the key deleted below
])
def test_an_edited_run_config_is_refused_naming_the_file_and_the_field(tmp_path, edit, message):
    """Every command that reads a run's config.json (evaluate, export, report: run_train_config; train --resume)
    checks its types and ranges as train checks its options, and says which file and field is wrong; a run's file says it
    holds every setting, so a deleted one is damage, not a default to fill in."""
    from interestgym.agents.run_folder import ArtifactError, run_train_config

    (tmp_path / "data").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    values = {**TrainConfig(dataset=str(tmp_path / "data"), run_dir=str(run)).as_dict(), **edit}
    values = {k: v for k, v in values.items() if not (k in edit and edit[k] is None)}
    (run / "config.json").write_text(json.dumps({"config": values, "config_complete": True}))
    with pytest.raises(ArtifactError, match=re.escape(str(run)) + "/" + message):
        run_train_config(run)
    with pytest.raises(ArtifactError, match=re.escape(str(run)) + "/" + message):
        train_run(TrainConfig(dataset=str(tmp_path / "data"), run_dir=str(run)), resume=True)
    # the file as train writes it passes
    (run / "config.json").write_text(json.dumps({"config": TrainConfig(dataset=str(tmp_path / "data"), run_dir=str(run)).as_dict(),
                                                 "config_complete": True}))
    assert run_train_config(run).as_dict() == TrainConfig(dataset=str(tmp_path / "data"), run_dir=str(run)).as_dict()
    # a run from before the record (no config_complete) still fills a setting it lacks with the default
    old = {k: v for k, v in TrainConfig(dataset=str(tmp_path / "data"), run_dir=str(run)).as_dict().items() if k != "gamma"}
    (run / "config.json").write_text(json.dumps({"config": old}))
    assert run_train_config(run).gamma == TrainConfig.gamma


def test_new_flags_are_checked(tmp_path):
    for option, value, message in (("clip_range", 0.0, r"--clip-range 0.0: expected a positive number"),
                                   ("update_threshold", 1.5, r"--update-threshold 1.5: expected a number in \[0, 1\]"),
                                   ("vf_coef", -1.0, r"--vf-coef -1.0: expected a number >= 0")):
        with pytest.raises(InterestGymError, match=message):
            train_run(_config(tmp_path, tmp_path / "run", **{option: value}))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------- progress bar
def test_the_progress_bar_total_is_the_steps_that_run(dataset, tmp_path, monkeypatch, capsys):
    import stable_baselines3.common.callbacks as sb3_callbacks

    bars = []

    class Bar:
        def __init__(self, total):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, n):
            self.n += n

        def refresh(self):
            pass

        def close(self):
            pass

    import sys

    import interestgym.progress

    monkeypatch.setattr(sb3_callbacks, "tqdm", Bar)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # SB3's bar is for a terminal
    result = train_run(_config(dataset, tmp_path / "run", timesteps=100, eval_every=0, checkpoint_every=0, progress_bar=True))
    assert result["num_timesteps"] == 128  # two whole rollouts of 4 x 16
    assert [(b.total, b.n) for b in bars] == [(128, 128)]  # not "128/100"
    # Off a terminal: no bar, log lines with the same total.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(interestgym.progress, "LOG_EVERY_SECONDS", 0.0)
    train_run(_config(dataset, tmp_path / "run2", timesteps=100, eval_every=0, checkpoint_every=0, progress_bar=True))
    assert len(bars) == 1
    assert "training: 128/128 steps (100%)" in capsys.readouterr().err

    from interestgym.agents.train import steps_to_run

    assert steps_to_run(3000, 64, 64) == 4096 and steps_to_run(4096, 64, 64) == 4096 and steps_to_run(0, 4, 16) == 0


@pytest.mark.parametrize("text, flags, message", [
    ("learning_rate = -0.001\n", [], r"--learning-rate -0.001: expected a positive number \(learning_rate in \S*train.toml\)$"),
    ("n_negatives = 5\nhistory_negatives = 9\n", [],
     (r"--history-negatives 9: expected an integer in \[0, --n-negatives 5\] \(history_negatives in \S*train.toml; "
      r"n_negatives in \S*train.toml\)$")),
    ("n_negatives = 5\n", ["--history-negatives", "9"],
     r"--history-negatives 9: expected an integer in \[0, --n-negatives 5\] \(n_negatives in \S*train.toml\)$"),
    ("seed = 1\n", ["--learning-rate", "-0.001"], r"--learning-rate -0.001: expected a positive number$"),
])
def test_an_out_of_range_value_names_the_config_file_and_key_it_came_from(tmp_path, capsys, text, flags, message):
    """A value out of range is named as its option is spelled, and, when a config file gave it, by that file and key
    too (a user editing the file looks for `learning_rate`, not `--learning-rate`); the command line's own values are
    named by their option alone."""
    import re

    path = tmp_path / "train.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as info:
        main(["train", str(tmp_path), "--run-dir", str(tmp_path / "run"), "--config", str(path), *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(re.search(message, line) for line in err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["64,,64", ",64", "64,"])
def test_a_layer_list_with_an_empty_entry_is_refused_not_shortened(text):
    """A review's find: "64,,64" was read as [64, 64], a layer fewer than a typo may have meant."""
    from interestgym.agents.config import coerce_setting

    with pytest.raises(InterestGymError, match=r"expected comma-separated layer sizes, e.g. 64,64"):
        coerce_setting("net_arch", text, "--net-arch")
    assert coerce_setting("net_arch", "64, 32", "--net-arch") == [64, 32]
