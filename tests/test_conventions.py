"""The ecosystem's conventions a practitioner relies on (issue: house in order), one test each.

Training-side conventions (TensorBoard tags, ``--config``) are tested in ``test_train_conventions.py``;
MIND's MRR in ``test_core_metrics.py``; the self-contained HTML report in ``test_report.py``.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from env_fixtures import make_dataset, make_events, random_unit

from interestgym.progress import LogProgress, progress_bar


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    rng = np.random.default_rng(3)
    events = make_events(30, 40, rng, min_events=6, max_events=12)
    return make_dataset(tmp_path_factory.mktemp("conv") / "ds", events=events, n_items=40, embeddings=random_unit(40, 8, rng))


@pytest.mark.parametrize("order", ["interestgym first", "gymnasium first"])
def test_import_interestgym_registers_the_env_in_either_order_without_importing_gymnasium_itself(order):
    first, second = ("interestgym", "gymnasium") if order == "interestgym first" else ("gymnasium", "interestgym")
    code = (
        f"import sys, {first}\n"
        "light = 'gymnasium' not in sys.modules\n"
        f"import {second}\n"
        "import gymnasium\n"
        "print(light, 'interestgym/InterestReplay-v0' in gymnasium.registry)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "True"
    if order == "interestgym first":
        assert out[0] == "True"  # the runtime's import stays free of gymnasium


def test_gymnasium_make_after_import_interestgym(dataset):
    import gymnasium as gym

    import interestgym  # noqa: F401

    env = gym.make("interestgym/InterestReplay-v0", dataset=str(dataset), split="train")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "user_id" in info


def test_sb3_make_vec_env_builds_the_registered_env(dataset):
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env("interestgym/InterestReplay-v0", n_envs=2, seed=0, env_kwargs={"dataset": str(dataset)})
    obs = venv.reset()
    assert obs.shape == (2, venv.observation_space.shape[0])
    obs, rewards, _dones, infos = venv.step(np.zeros((2, 4), dtype=np.float32))
    assert rewards.shape == (2,) and len(infos) == 2
    # the README's form: render_mode None spares Gymnasium's "not in the possible render_modes" warning per env
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_vec_env("interestgym/InterestReplay-v0", n_envs=2, seed=0, env_kwargs={"dataset": str(dataset), "render_mode": None})
    assert not [w for w in caught if "render_mode" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_vec_env("interestgym/InterestReplay-v0", n_envs=2, seed=0, env_kwargs={"dataset": str(dataset)})
    assert len([w for w in caught if "render_mode" in str(w.message)]) == 2  # what the README says happens without it


def test_gymnasium_make_vec_reaches_the_native_vector_env(dataset):
    import gymnasium as gym
    from gymnasium.vector import VectorEnv
    from interestgym.envs.gym_vector import InterestReplayVectorEnv

    import interestgym  # noqa: F401

    envs = gym.make_vec("interestgym/InterestReplay-v0", num_envs=3, vectorization_mode="vector_entry_point",
                        dataset=str(dataset), split="train")
    assert isinstance(envs.unwrapped, InterestReplayVectorEnv) and isinstance(envs.unwrapped, VectorEnv)
    obs, info = envs.reset(seed=1)
    assert obs.shape == (3, envs.single_observation_space.shape[0]) and envs.observation_space.contains(obs)
    users = list(info["user_id"])
    from interestgym.errors import InterestGymError

    with pytest.raises(InterestGymError, match=r"reset options \['user_id'\]: the vector env takes none"):
        envs.reset(options={"user_id": users[0]})
    obs, info = envs.reset(seed=1)
    ended = 0
    for _ in range(40):
        obs, rewards, terminated, _truncated, info = envs.step(envs.action_space.sample())
        assert rewards.shape == (3,) and terminated.dtype == bool and envs.observation_space.contains(obs)
        assert info["strengths"].shape == (3, 4) and ((info["strengths"] >= 0) & (info["strengths"] <= 1)).all()
        # the agent's own metric where it scored, NaN elsewhere; without a reference rule it is the reward
        assert (np.isnan(info["metric"]) == ~info["scored"]).all() and info["_metric"].tolist() == info["scored"].tolist()
        np.testing.assert_allclose(info["metric"][info["scored"]], rewards[info["scored"]], rtol=1e-6)
        if terminated.any():
            ended += int(terminated.sum())
            assert info["_final_obs"][terminated].all()
            assert all(o is not None and o.shape == obs.shape[1:] for o in info["final_obs"][terminated])
            # the finished slots' users are the ones they were replaying; the info names who replaces them
            assert [info["final_info"]["user_id"][k] for k in np.nonzero(terminated)[0]] == [users[k] for k in np.nonzero(terminated)[0]]
        users = list(info["user_id"])
    assert ended > 0  # users of 6-12 events end within 40 steps


def test_progress_is_plain_log_lines_when_not_a_terminal(capsys):
    import io

    stream = io.StringIO()
    bar = progress_bar(total=10, desc="tuning", unit="policy", stream=stream)
    assert isinstance(bar, LogProgress)  # a StringIO is no terminal
    bar._every = 0.0  # log every update
    for _ in range(10):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().strip().splitlines()
    assert lines[0].startswith("tuning: 1/10 policies (10%)") and lines[-1].endswith("done")
    assert "10/10 policies (100%)" in lines[-1]
    from interestgym.progress import _counted

    assert [_counted(u, n) for u, n in (("user", 1), ("grid point", 431), ("batch", 2), ("day", 2), ("B", 9), ("it", 9))] == [
        "user", "grid points", "batches", "days", "B", "it"]
    silent = progress_bar(total=3, desc="x", enabled=False, stream=stream)
    silent.update(3)
    silent.close()
    assert "x:" not in stream.getvalue()


def test_a_log_line_comes_while_no_unit_finishes_and_stops_when_the_bar_closes():
    """One batched replay of a tuning grid can take minutes without an update: the heartbeat writes the count so far
    every interval; once the bar is closed (or dropped) nothing more is written."""
    import gc
    import io
    import time

    stream = io.StringIO()
    bar = LogProgress(desc="tuning", unit="grid point", stream=stream, every=0.2)
    bar.update(3)
    time.sleep(0.9)  # no update: the heartbeat writes
    beats = stream.getvalue().strip().splitlines()
    assert len(beats) >= 2 and all(line.startswith("tuning: 3 grid points") for line in beats), beats
    bar.close()
    written = stream.getvalue()
    time.sleep(0.5)
    assert stream.getvalue() == written and written.strip().splitlines()[-1].endswith("done")
    dropped = LogProgress(desc="dropped", stream=stream, every=0.2)
    del dropped
    gc.collect()
    time.sleep(0.5)
    assert "dropped" not in stream.getvalue()


def test_a_permission_error_is_one_line_naming_the_path_not_a_traceback(tmp_path, capsys, monkeypatch):
    # CI runs as root, which writes into read-only folders, so the OS error is raised where the dataset
    # writer would meet it (the handler in interestgym.cli is what is under test).
    import interestgym.data.synthetic as dataset_module
    from interestgym.cli import main

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked" / "data"))

    monkeypatch.setattr(dataset_module, "write_dataset", refuse)
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "synthetic", "--out", str(tmp_path / "locked" / "data"), "--users", "12"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "locked/data: permission denied" in err[0] and "Traceback" not in err[0]
