"""`interestgym search`: a budgeted hyper-parameter search picked on validation users only."""

from __future__ import annotations

import csv
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from cli_fixtures import run as run_cli
from interestgym.agents import search as S
from interestgym.agents.config import TrainConfig, read_config_file

from interestgym.errors import InterestGymError

BASE_TOML = ('n_envs = 4\nn_steps = 16\nbatch_size = 32\nn_epochs = 1\neval_users = 0\nreward_baseline = "ema"\n'
             "net_arch = [8]\ntune_users = 0\n")
SEARCHED = "learning_rate,net_arch,gamma,window,log_std_init"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 3-trial search of 128 steps per trial on tiny synthetic data, recording the split and the users of
    every replay it loaded (training and validation read their splits through load_replay_data)."""
    from click.testing import CliRunner
    from interestgym.envs import replay_data

    from interestgym.cli import cli

    root = tmp_path_factory.mktemp("search")
    data = tiny_synthetic(root / "tiny")
    (root / "base.toml").write_text(BASE_TOML)
    seen: list[tuple[str, list[str]]] = []
    original = replay_data.load_replay_data

    def recording(dataset, embeddings=None, spec=None):
        loaded = original(dataset, embeddings, spec)
        seen.append((spec.split, [str(u) for u in loaded.user_ids]))
        return loaded

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay_data, "load_replay_data", recording)
        result = CliRunner().invoke(cli, ["search", str(data), "--run-dir", str(root / "s"), "--trials", "3", "--budget-steps", "128",
                                          "--config", str(root / "base.toml"), "--params", SEARCHED], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root, data, root / "s", seen, result.output


def test_search_never_replays_a_test_user(searched):
    _root, data, _out, seen, _ = searched
    users = pd.read_parquet(data / "users.parquet")
    test_users = set(users.loc[users["split"] == "test", "user_id"].astype(str))
    assert test_users and seen
    assert {split for split, _ in seen} <= {"train", "valid"}
    replayed = {u for _, us in seen for u in us}
    assert not replayed & test_users
    valid_users = set(users.loc[users["split"] == "valid", "user_id"].astype(str))
    assert valid_users & replayed  # validation users were what scored the trials


def test_each_trial_is_scored_by_its_models_validation_metric_and_the_best_is_picked(searched, capsys):
    root, _data, out, _, output = searched
    doc = json.loads((out / S.SEARCH_FILE).read_text())
    trials = doc["trials"]
    assert [t["trial"] for t in trials] == [0, 1, 2]
    for t in trials:
        # recomputed independently by `evaluate` on the validation split (the evaluator's own replay)
        code, _, err = run_cli(["evaluate", t["run_dir"], "--split", "valid", "--model", "best", "--baselines", "ema",
                                "--out", str(root / f"eval-{t['trial']}"), "--n-boot", "200"], capsys)
        assert code == 0, err
        ev = json.loads((root / f"eval-{t['trial']}" / "evaluation.json").read_text())
        ppo = np.nanmean(np.array(ev["per_user"]["ppo"]["ndcg@10"], dtype=float))
        ema = np.nanmean(np.array(ev["per_user"]["ema"]["ndcg@10"], dtype=float))
        assert t["score"] == pytest.approx(ppo, abs=1e-9)
        assert t["rule"] == pytest.approx(ema, abs=1e-9)
        assert t["diff"] == pytest.approx(ppo - ema, abs=1e-9)
        assert t["diff_lo"] <= t["diff"] <= t["diff_hi"]
        assert t["reference"] == "ema" and t["valid_users"] == ev["header"]["users"]
        # the paired gain over the base (trial 0) is the per-user difference of the two evaluations
        ev0 = json.loads((root / "eval-0" / "evaluation.json").read_text()) if t["trial"] else ev
        base = np.array(ev0["per_user"]["ppo"]["ndcg@10"], dtype=float)
        assert ev0["users"] == ev["users"]
        mine = np.array(ev["per_user"]["ppo"]["ndcg@10"], dtype=float)
        if t["trial"] == 0:
            assert t["vs_base"] is None
        else:
            assert t["vs_base"]["mean"] == pytest.approx(np.nanmean(mine - base), abs=1e-9)
            assert t["vs_base"]["lo"] <= t["vs_base"]["mean"] <= t["vs_base"]["hi"]
        with np.load(Path(t["run_dir"]) / S.VALID_FILE) as z:
            assert np.nanmean(z["values"]) == pytest.approx(t["score"], abs=1e-12)
    # the default pick: the best score among trials whose gain over the base has a family-wise CI above 0, else the base
    proven = [t for t in trials[1:] if t["vs_base_family"]["lo"] > 0]
    expected = max(proven, key=lambda t: t["score"])["trial"] if proven else 0
    assert doc["pick"] == "beats-base" and doc["best_trial"] == expected
    assert f"picked trial {doc['best_trial']}" in output


def test_trials_run_the_drawn_settings_on_the_budget_and_share_one_tuning(searched):
    _, _, out, _, _ = searched
    doc = json.loads((out / S.SEARCH_FILE).read_text())
    trials = doc["trials"]
    # trial 0 is the base configuration: TrainConfig's defaults plus the base file's net_arch
    d = TrainConfig(dataset="", run_dir="")
    assert trials[0]["params"] == {"learning_rate": d.learning_rate, "net_arch": "8", "gamma": d.gamma, "window": 0,
                                   "log_std_init": d.log_std_init}
    space = S.select_space(SEARCHED.split(","))
    for t in trials[1:]:
        assert t["params"] == S.random_params(space, 0, t["trial"])
    first_baselines = str((out / "trial-000" / "baselines.json").resolve())
    for t in trials:
        saved = json.loads((Path(t["run_dir"]) / "config.json").read_text())["config"]
        p = t["params"]
        assert saved["timesteps"] == 128 and saved["n_envs"] == 4 and saved["reward_baseline"] == "ema"
        assert saved["learning_rate"] == p["learning_rate"] and saved["gamma"] == p["gamma"]
        assert saved["net_arch"] == [int(x) for x in p["net_arch"].split(",")]
        assert saved["window"] == (p["window"] or None) and saved["log_std_init"] == p["log_std_init"]
        assert saved["tuned_baselines"] == (None if t["trial"] == 0 else first_baselines)
    with open(out / S.TABLE_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [0, 1, 2]
    assert [float(r["valid_score"]) for r in rows] == pytest.approx([t["score"] for t in trials])
    assert "(picked)" in (out / S.TABLE_MD).read_text()
    # the budget said as a budget: PPO trains whole rollouts, so a trial may take a few steps more than it
    budget = doc["settings"]["budget_steps"]
    assert (out / S.TABLE_MD).read_text().startswith(f"# Search: 3 trials x a budget of {budget:,} steps (PPO trains whole rollouts")


def test_best_toml_trains_the_picked_settings(searched, capsys):
    root, data, out, _, _ = searched
    doc = json.loads((out / S.SEARCH_FILE).read_text())
    best = doc["trials"][doc["best_trial"]]
    values = read_config_file(out / S.BEST_TOML)
    assert Path(values["dataset"]) == data.resolve()
    for name, value in best["params"].items():
        expected = [int(x) for x in value.split(",")] if name == "net_arch" else (value or None) if name == "window" else value
        assert values[name] == expected, name
    code, _, err = run_cli(["train", "--config", str(out / S.BEST_TOML), "--run-dir", str(root / "final"), "--timesteps", "64",
                            "--no-progress"], capsys)
    assert code == 0, err
    saved = json.loads((root / "final" / "config.json").read_text())["config"]
    assert saved["learning_rate"] == best["params"]["learning_rate"] and saved["n_steps"] == 16


def test_random_sampler_is_seeded_and_draws_from_the_declared_distributions():
    space = S.SPACE
    assert S.random_params(space, 3, 5) == S.random_params(space, 3, 5)
    assert S.random_params(space, 3, 5) != S.random_params(space, 4, 5)
    draws = [S.random_params(space, 0, i) for i in range(1, 3001)]
    for p in space:
        values = [d[p.name] for d in draws]
        assert all(p.contains(v) for v in values), p.name
        if p.kind == "choice":
            freq = np.array([values.count(c) for c in p.choices]) / len(values)
            assert np.all(np.abs(freq - 1 / len(p.choices)) < 0.04), (p.name, freq)
        elif p.kind == "log":
            # log-uniform: the median is the geometric mean of the bounds, a quarter of the draws below lo^(3/4) hi^(1/4)
            assert np.median(values) == pytest.approx(math.sqrt(p.low * p.high), rel=0.1)
            q = p.low ** 0.75 * p.high ** 0.25
            assert np.mean(np.array(values) < q) == pytest.approx(0.25, abs=0.03)
        else:
            assert np.mean(values) == pytest.approx((p.low + p.high) / 2, abs=0.03)
    with pytest.raises(InterestGymError, match="nosuch"):
        S.select_space(["gamma", "nosuch"])


def _fake_train(calls):
    """A stand-in for train_run that scores a configuration by a known function of its settings."""

    def train(config):
        calls.append(config)
        run = Path(config.run_dir)
        run.mkdir(parents=True)
        score = 0.5 - (math.log10(config.learning_rate) + 3.2) ** 2 - 0.1 * abs(config.gamma - 0.95)
        (run / "shipped.json").write_text(json.dumps({
            "policy": "learned", "rule": {"name": "ema"},
            "validation": {"users": 10, "learned": score, "rule": 0.4,
                           "diff": {"mean": score - 0.4, "lo": score - 0.41, "hi": score - 0.39, "n": 10}}}))
        return {"best_value": score, "best_step": config.timesteps}

    return train


def _fake_replay(config, run_dir):
    """Per-user validation values: the trial's score plus the same user effects for every trial, so that
    every paired gain over the base is exactly the difference of the scores (a CI of zero width)."""
    score = json.loads((Path(run_dir) / "shipped.json").read_text())["validation"]["learned"]
    users = np.array([f"u{i}" for i in range(10)])
    return users, score + 0.01 * (np.arange(10) - 4.5)


def expected_pick(scores, pick):
    if pick == "best":
        return int(np.argmax(scores))
    proven = [i for i in range(1, len(scores)) if scores[i] - scores[0] > 1e-12]
    return max(proven, key=lambda i: scores[i]) if proven else 0


def expected_score(params):
    return 0.5 - (math.log10(params["learning_rate"]) + 3.2) ** 2 - 0.1 * abs(params["gamma"] - 0.95)


def test_an_interrupted_search_continues_where_it_stopped_and_refuses_other_settings(tmp_path):
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    calls: list = []
    doc = S.run_search(str(data), tmp_path / "s", trials=5, budget_steps=256, params=["learning_rate", "gamma"],
                       echo=lambda _: None, train=_fake_train(calls), replay=_fake_replay, pick="best")
    assert len(calls) == 5 and all(c.timesteps == 256 for c in calls)
    params = [t["params"] for t in doc["trials"]]
    assert params[1:] == [S.random_params(S.select_space(["learning_rate", "gamma"]), 0, i) for i in range(1, 5)]
    scores = [expected_score(p) for p in params]
    assert doc["best_trial"] == expected_pick(scores, "best")
    for t, score in zip(doc["trials"][1:], scores[1:]):
        assert t["vs_base"]["mean"] == pytest.approx(score - scores[0], abs=1e-12)
        assert t["vs_base"]["lo"] == pytest.approx(score - scores[0], abs=1e-12)
    # a killed run left trial-005 half written: it is trained again; trials 0-4 are reused
    (tmp_path / "s" / "trial-005").mkdir()
    calls.clear()
    doc = S.run_search(str(data), tmp_path / "s", trials=7, budget_steps=256, params=["learning_rate", "gamma"],
                       echo=lambda _: None, train=_fake_train(calls), replay=_fake_replay)
    assert [Path(c.run_dir).name for c in calls] == ["trial-005", "trial-006"]
    assert [t["params"] for t in doc["trials"][:5]] == params
    scores = [expected_score(t["params"]) for t in doc["trials"]]
    assert doc["best_trial"] == expected_pick(scores, "beats-base")
    with pytest.raises(InterestGymError, match=r"a search with other settings is in this folder \(budget_steps 512 \(the folder.s: 256\)\)"):
        S.run_search(str(data), tmp_path / "s", trials=7, budget_steps=512, params=["learning_rate", "gamma"],
                     echo=lambda _: None, train=_fake_train(calls), replay=_fake_replay)


def test_a_search_shrunk_then_grown_again_reuses_its_finished_trials(tmp_path):
    # --trials 2 on a folder of 4 finished trials dropped trials 2 and 3 from search.json; --trials 4 again then
    # took their folders for an interrupted trial's and trained them again
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    calls: list = []
    said: list[str] = []
    kw = {"budget_steps": 256, "params": ["learning_rate", "gamma"], "train": _fake_train(calls), "replay": _fake_replay, "pick": "best"}
    full = S.run_search(str(data), tmp_path / "s", trials=4, echo=lambda _: None, **kw)
    assert len(calls) == 4
    calls.clear()
    small = S.run_search(str(data), tmp_path / "s", trials=2, echo=said.append, **kw)
    assert not calls and [t["trial"] for t in small["trials"]] == [0, 1]
    assert small["best_trial"] == expected_pick([expected_score(t["params"]) for t in small["trials"]], "best")
    assert [t["trial"] for t in small["set_aside"]] == [2, 3]
    assert any("past --trials 2 (trial 2, 3)" in line for line in said)
    again = S.run_search(str(data), tmp_path / "s", trials=4, echo=lambda _: None, **kw)
    assert not calls  # nothing trained again
    assert [t["params"] for t in again["trials"]] == [t["params"] for t in full["trials"]]
    assert [t["score"] for t in again["trials"]] == [t["score"] for t in full["trials"]]
    assert again["best_trial"] == full["best_trial"] and "set_aside" not in again


def test_tpe_sampler_is_seeded_and_stays_in_the_space(tmp_path):
    importlib.import_module("optuna")
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    runs = []
    for name in ("a", "b"):
        doc = S.run_search(str(data), tmp_path / name, trials=14, budget_steps=64, sampler="tpe", sampler_seed=1,
                           params=["learning_rate", "gamma", "net_arch"], echo=lambda _: None, train=_fake_train([]),
                           replay=_fake_replay)
        runs.append([t["params"] for t in doc["trials"]])
    assert runs[0] == runs[1]
    space = S.select_space(["learning_rate", "gamma", "net_arch"])
    assert runs[0][0] == {"learning_rate": 3e-4, "gamma": 0.9, "net_arch": "64,64"}
    for params in runs[0]:
        assert all(p.contains(params[p.name]) for p in space)


def test_the_default_pick_keeps_the_base_unless_a_trial_beats_it_on_validation():
    def record(i, score, lo):
        ci = None if i == 0 else {"mean": score - 0.5, "lo": lo, "hi": lo + 0.02}
        return {"trial": i, "score": score, "vs_base": ci, "vs_base_family": ci}

    # trial 2 scores highest but its gain over the base is not proven; trial 1's is
    records = [record(0, 0.5, None), record(1, 0.52, 0.001), record(2, 0.53, -0.004)]
    assert S.pick_trial(records, "best") == 2
    assert S.pick_trial(records, "beats-base") == 1
    assert S.pick_trial(records[:1] + records[2:], "beats-base") == 0


def test_search_takes_the_embeddings_of_a_dataset_that_has_several(tmp_path):
    """After a fine-tune a dataset holds two embeddings: `search --embeddings NAME` picks one, as train does."""
    import shutil

    from click.testing import CliRunner

    from interestgym.cli import cli

    data = tiny_synthetic(tmp_path / "tiny")
    emb = data / "embeddings"
    shutil.copy(emb / "topic16.npy", emb / "other.npy")
    (emb / "other.json").write_text((emb / "topic16.json").read_text())
    args = ["search", str(data), "--run-dir", str(tmp_path / "s"), "--trials", "1", "--budget-steps", "64"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code != 0 and "several embeddings" in str(refused.exception)
    result = CliRunner().invoke(cli, [*args, "--embeddings", "other"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trial = json.loads((tmp_path / "s" / "trial-000" / "config.json").read_text())
    assert trial["config"]["embeddings"] == "other"


def test_negative_seeds_are_refused_in_one_line(tmp_path, capsys):
    """A seed numpy and torch cannot take is a clear error naming the option, before anything runs (train and search)."""
    from interestgym.cli import main

    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    for argv, flag in ((["train", str(data), "--run-dir", str(tmp_path / "r"), "--seed", "-1"], "--seed -1"),
                       (["search", str(data), "--run-dir", str(tmp_path / "s"), "--seed", "-1"], "--seed -1"),
                       (["search", str(data), "--run-dir", str(tmp_path / "s2"), "--sampler-seed", "-1"], "--sampler-seed -1")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and "Traceback" not in err, err
        assert err.startswith(f"error: {flag}: expected an integer in [0, 2**32 - 1]"), err
    assert not (tmp_path / "r").exists()


def test_an_out_of_range_base_setting_names_its_config_file_and_key(tmp_path, capsys):
    """The base configuration's bad value is named by the file and key it came from, before any trial trains; --seed
    given on the command line is named by its option alone."""
    from interestgym.cli import main

    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    (tmp_path / "base.toml").write_text("gamma = 1.5\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(data), "--run-dir", str(tmp_path / "s"), "--config", str(tmp_path / "base.toml")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.strip() == f"error: --gamma 1.5: expected a number in (0, 1] (gamma in {tmp_path / 'base.toml'})", err
    assert not (tmp_path / "s" / S.SEARCH_FILE).exists()


def test_each_trials_training_shows_its_progress_unless_asked_not_to(tmp_path, monkeypatch):
    # the trials trained with their progress off: minutes of a search without a line between two trials
    from click.testing import CliRunner

    from interestgym import progress
    from interestgym.cli import cli

    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)  # a line at every update (the output is not a terminal)
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    (tmp_path / "base.toml").write_text(BASE_TOML)
    outputs = {}
    for flag in ("--progress", "--no-progress"):
        result = CliRunner().invoke(cli, ["search", str(data), "--run-dir", str(tmp_path / flag), "--trials", "2",
                                          "--budget-steps", "64", "--config", str(tmp_path / "base.toml"), flag],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        outputs[flag] = result.output
    for output in outputs.values():  # before each trial trains, a line says which and what
        starts = [line for line in output.splitlines() if line.startswith(("trial 0 (1 of 2): ", "trial 1 (2 of 2): "))]
        assert len(starts) == 2 and all("training 64 steps in " in line for line in starts), output
    assert "training: 64/64 steps (100%)" in outputs["--progress"]
    assert "training: " not in outputs["--no-progress"]


def test_training_on_cuda_where_there_is_none_is_refused(tmp_path, capsys):
    import torch

    from interestgym.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: training there is what --device cuda asks for")
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(data), "--run-dir", str(tmp_path / "r"), "--device", "cuda", "--timesteps", "64"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: --device 'cuda': CUDA is not available here"), err


def test_settings_the_trials_replace_are_said_and_timesteps_goes_on_into_best_toml(tmp_path):
    """A base configuration's timesteps, eval_every or run_dir are the trials' own: a note says so; best.toml keeps the
    base's timesteps for the real run and names trial 0's tuning only as a hint (it ties the file to this dataset); a
    budget below one rollout says each trial trains one rollout."""
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    said: list[str] = []
    S.run_search(str(data), tmp_path / "s", trials=2, budget_steps=100, params=["learning_rate"], echo=said.append,
                 base={"timesteps": 100_000, "eval_every": 0, "run_dir": "zzz", "n_envs": 4, "n_steps": 32, "batch_size": 64},
                 train=_fake_train([]), replay=_fake_replay)
    assert any(line.startswith("note: run_dir = 'zzz', timesteps = 100000, eval_every = 0 of the base configuration: each "
                               "trial sets these itself") and line.endswith("best.toml keeps your timesteps") for line in said), said
    assert "note: --budget-steps 100 is less than one PPO rollout (n_envs x n_steps = 128): each trial trains one rollout, 128 steps" in said
    values = read_config_file(tmp_path / "s" / S.BEST_TOML)
    assert values["timesteps"] == 100_000 and "tuned_baselines" not in values and "eval_every" not in values
    with pytest.raises(InterestGymError, match=r"\(base: n_envs 8 \(the folder's: 4\)\)"):
        S.run_search(str(data), tmp_path / "s", trials=2, budget_steps=100, params=["learning_rate"], echo=said.append,
                     base={"n_envs": 8, "n_steps": 32, "batch_size": 64}, train=_fake_train([]), replay=_fake_replay)


def test_a_search_whose_every_trial_kept_its_step_0_agent_says_so(tmp_path):
    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    train = _fake_train([])
    doc = S.run_search(str(data), tmp_path / "s", trials=2, budget_steps=64, params=["learning_rate"], echo=lambda _: None,
                       train=lambda config: {**train(config), "best_step": 0}, replay=_fake_replay)
    assert S.step_zero_note(doc).startswith("note: every trial's selected model is its step-0 agent")
    doc["trials"][1]["best_step"] = 64
    assert S.step_zero_note(doc) is None


def test_best_toml_says_how_to_rerun_the_picked_trial_itself_and_that_rerun_selects_the_same_model(searched, capsys):
    """A trial picks its model from validations every budget / 4 steps: best.toml's comment gives the flags that
    rerun it (length and cadence), and a train with them ends with the trial's selected step, value and weights."""
    import zipfile

    root, _, out, _, _ = searched
    doc = json.loads((out / S.SEARCH_FILE).read_text())
    best = doc["trials"][doc["best_trial"]]
    text = (out / S.BEST_TOML).read_text()
    budget = doc["settings"]["budget_steps"]
    flags = f"--timesteps {budget} --eval-every {budget // 4} --checkpoint-every 0"
    assert f"# to rerun the picked trial itself (its length, and its model picked from validations every {budget // 4:,} " \
           f"steps): add {flags}" in text
    rerun = root / "rerun"
    code, _, err = run_cli(["train", "--config", str(out / S.BEST_TOML), "--run-dir", str(rerun), "--no-progress",
                            *flags.split()], capsys)
    assert code == 0, err
    trial = out / f"trial-{best['trial']:03d}"
    mine, theirs = (json.loads((d / "best" / "info.json").read_text()) for d in (rerun, trial))
    assert (mine["step"], mine["value"]) == (theirs["step"], theirs["value"])
    with zipfile.ZipFile(rerun / "best" / "model.zip") as a, zipfile.ZipFile(trial / "best" / "model.zip") as b:
        assert a.read("policy.pth") == b.read("policy.pth")  # the weights


@pytest.mark.parametrize("base, params, message", [
    ('policy_form = "absolute"\n', None, (r"--params change_penalty,window with policy_form absolute: they apply to the residual "
                                          r"form only; expected --params without them \(e.g. --params learning_rate,net_arch,gamma,"
                                          r"log_std_init,clip_range,n_epochs\)")),
    ('policy_form = "absolute"\n', "window", r"--params window with policy_form absolute: .*expected --params without them$"),
    ("max_events = 30\n", "window,gamma", (r"--params window \(choices 0, 10, 20, 50\) with max_events 30: a longer window "
                                           r"would be cut short in every trial that draws it")),
])
def test_a_space_every_trial_would_refuse_is_refused_before_any_trial(tmp_path, capsys, base, params, message):
    import re

    from interestgym.cli import main

    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    (tmp_path / "base.toml").write_text(base)
    argv = ["search", str(data), "--run-dir", str(tmp_path / "s"), "--config", str(tmp_path / "base.toml"),
            *(["--params", params] if params else [])]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and re.search(message, err.strip().splitlines()[-1]), err
    assert not (tmp_path / "s").exists()


def test_the_default_pick_is_proven_for_the_whole_search_not_for_one_trial(tmp_path):
    """With m trials compared with the base, a trial is picked only if its paired gain's CI at level 1 - 0.05/m is above
    0 (Bonferroni): a gain whose 95% CI alone is above 0 does not win a 5-trial search. Every family-wise CI is the
    bootstrap of that trial's per-user gains at the level of the final number of trials, recomputed as trials are added."""
    from interestgym.core.stats import paired_bootstrap_diff

    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    users = np.array([f"u{i}" for i in range(40)])
    noise = np.random.default_rng(7).normal(0.0, 0.02, (8, 40))
    z = np.random.default_rng(8).normal(size=40)
    # trial 1's per-user gain over the base: mean 0.0075, standard error 0.02 / sqrt(40): 2.4 standard errors, between
    # the 95% level's 1.96 and the 99.5% level's 2.81
    step = 0.0075 + 0.02 * (z - z.mean()) / z.std()

    def replay(config, run_dir):  # trial k's per-user values: the base's noise for trial 0 and 1, other noise for the rest
        k = int(Path(run_dir).name.split("-")[1])
        return users, 0.5 + (noise[0] + step if k == 1 else noise[k])

    def level_of(m):
        return 1.0 - 0.05 / m

    first = S.run_search(str(data), tmp_path / "s", trials=2, budget_steps=64, params=["learning_rate"], echo=lambda _: None,
                         train=_fake_train([]), replay=replay)
    # the per-user gains in the users' sorted order (the order the comparison pairs them in: the bootstrap draws by position)
    gain = (replay(None, tmp_path / "s" / "trial-001")[1] - replay(None, tmp_path / "s" / "trial-000")[1])[np.argsort(users)]
    alone = paired_bootstrap_diff(gain, np.zeros_like(gain), seed=0, confidence=0.95)
    assert alone.lo > 0  # trial 1 beats the base at 95% on its own ...
    assert first["trials"][1]["vs_base_family"]["confidence"] == 0.95 and first["best_trial"] == 1
    doc = S.run_search(str(data), tmp_path / "s", trials=6, budget_steps=64, params=["learning_rate"], echo=lambda _: None,
                       train=_fake_train([]), replay=replay)
    family = paired_bootstrap_diff(gain, np.zeros_like(gain), seed=0, confidence=level_of(5))
    assert family.lo < 0  # ... not once five trials were compared with it
    for t in doc["trials"][1:]:
        assert t["vs_base_family"]["confidence"] == level_of(5)
        assert t["vs_base"]["lo"] >= t["vs_base_family"]["lo"] and t["vs_base"]["hi"] <= t["vs_base_family"]["hi"]
    assert doc["trials"][1]["vs_base_family"]["lo"] == pytest.approx(family.lo, abs=1e-12)
    assert doc["trials"][1]["vs_base"]["lo"] == pytest.approx(alone.lo, abs=1e-12)
    assert doc["best_trial"] == 0
    assert "level 1 - 0.05/5: Bonferroni over the 5 trials" in (tmp_path / "s" / "trials.md").read_text()


def test_a_damaged_record_a_damaged_trial_file_and_re_prepared_data_are_said_not_tracebacks(tmp_path):
    import shutil

    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    calls: list = []
    kw = {"trials": 3, "budget_steps": 256, "params": ["learning_rate", "gamma"], "train": _fake_train(calls),
          "replay": _fake_replay}
    first = S.run_search(str(data), tmp_path / "s", echo=lambda _: None, **kw)
    record = tmp_path / "s" / S.SEARCH_FILE
    saved = record.read_text()
    record.write_text("{")  # was a JSONDecodeError traceback
    with pytest.raises(InterestGymError, match=rf"{record}: cannot be read .*; expected the search's record as JSON"):
        S.run_search(str(data), tmp_path / "s", echo=lambda _: None, **kw)
    record.write_text(saved)
    (tmp_path / "s" / "trial-001" / S.VALID_FILE).write_bytes(b"xx")  # was a ValueError traceback
    said: list[str] = []
    calls.clear()
    again = S.run_search(str(data), tmp_path / "s", echo=said.append, **kw)
    assert calls == [] and any("trial-001" in s and "damaged" in s for s in said)  # replayed, not trained again
    assert again["best_trial"] == first["best_trial"] and [t["score"] for t in again["trials"]] == [t["score"] for t in first["trials"]]
    shutil.rmtree(data)
    tiny_synthetic(data, users=14, events_per_user=8, seed=1)  # prepared again at the same path: other data
    with pytest.raises(InterestGymError, match=r"a search with other settings is in this folder \(data: tables_sha256"):
        S.run_search(str(data), tmp_path / "s", echo=lambda _: None, **kw)


def test_an_interrupted_trial_continues_from_its_checkpoint_to_the_uninterrupted_trials_model(tmp_path, monkeypatch):
    # an interrupted trial was trained again from step 0: a search killed more often than a trial lasts made no progress
    from interestgym.agents import callbacks
    from interestgym.agents.train import train_run

    data = tiny_synthetic(tmp_path / "tiny", users=12, events_per_user=8)
    (tmp_path / "base.toml").write_text(BASE_TOML)
    base = read_config_file(tmp_path / "base.toml")
    kw = {"trials": 2, "budget_steps": 128, "params": ["learning_rate", "gamma"], "base": base, "echo": lambda _: None}
    whole = S.run_search(str(data), tmp_path / "whole", **kw)
    # the same search stopped in trial 1, right after the checkpoint of its first rollout
    real = callbacks.write_checkpoint

    def stop_after_the_first_checkpoint(run_dir, step, *args, **kwargs):
        real(run_dir, step, *args, **kwargs)
        if Path(run_dir).name == "trial-001":
            raise KeyboardInterrupt

    monkeypatch.setattr(callbacks, "write_checkpoint", stop_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        S.run_search(str(data), tmp_path / "cut", **kw)
    monkeypatch.undo()
    assert [t["trial"] for t in json.loads((tmp_path / "cut" / S.SEARCH_FILE).read_text())["trials"]] == [0]
    said: list[str] = []
    trained: list[int] = []

    def train(config, **options):
        result = train_run(config, **options)
        trained.append(result["timesteps_this_call"])
        return result

    cut = S.run_search(str(data), tmp_path / "cut", **{**kw, "echo": said.append, "train": train})
    assert any(line.startswith("trial 1 (2 of 2): ") and "resuming its interrupted training" in line for line in said), said
    assert trained == [64]  # trial 1's second half only (trial 0 reused)
    for name in ("final/model.zip", "best/model.zip"):
        assert (tmp_path / "cut" / "trial-001" / name).read_bytes() == (tmp_path / "whole" / "trial-001" / name).read_bytes()
    assert [t["score"] for t in cut["trials"]] == [t["score"] for t in whole["trials"]]
    # the checkpoints trials now write change nothing of what they train
    plain = S.trial_config(base | {"dataset": str(data)}, whole["trials"][0]["params"], run_dir=tmp_path / "plain",
                           budget_steps=128, tuned_baselines=str(tmp_path / "whole" / "trial-000" / "baselines.json"))
    plain.checkpoint_every = 0
    train_run(plain)
    assert (tmp_path / "plain" / "final" / "model.zip").read_bytes() == \
        (tmp_path / "whole" / "trial-000" / "final" / "model.zip").read_bytes()
