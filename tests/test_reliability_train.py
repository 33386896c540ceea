"""Training under tampering and faults (issue 11): run folders are never unpickled (11.13), resume
falls back past a damaged checkpoint (11.7), one process per run folder (11.11), a folder that cannot
be written gives one line (11.6). Every run here is tiny (a few hundred steps)."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from env_fixtures import reseal_tables, write_users

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import small_train_config, tiny_synthetic
from interestgym.agents.run_folder import load_model, load_run_policy
from interestgym.agents.train import TrainConfig, train_run

from interestgym.errors import ArtifactError, InterestGymError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return tiny_synthetic(tmp_path_factory.mktemp("data") / "tiny", users=30, events_per_user=16)


def _config(dataset: Path, run_dir: Path, **kw) -> TrainConfig:
    return small_train_config(dataset, run_dir, **kw)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """A finished run with checkpoints at steps 64 and 128 (copy it before changing it)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_run(_config(dataset, run))
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


class _CreatesFile:
    """Unpickling this creates ``path``: what a crafted pickle in a shared run folder could do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite_model_data(path: Path, edit) -> None:
    """Rewrite the JSON ``data`` member of an SB3 model zip with ``edit(data)``."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    data = json.loads(members["data"])
    edit(data)
    members["data"] = json.dumps(data).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)
    path.write_bytes(buf.getvalue())


def _record_hash(info_path: Path, name: str, file: Path) -> None:
    """Update the checksum an info.json records, as someone crafting the folder would."""
    import hashlib

    info = json.loads(info_path.read_text())
    info.setdefault("files", {})[name] = hashlib.sha256(file.read_bytes()).hexdigest()
    info_path.write_text(json.dumps(info))


# ------------------------------------------------------------------------------- 11.13: no unpickling
def test_a_crafted_model_zip_cannot_run_code_when_the_run_is_loaded(trained, tmp_path):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    payload = {":type:": "<class 'type'>", ":serialized:": base64.b64encode(pickle.dumps(_CreatesFile(marker))).decode()}
    model_zip = run / "best" / "model.zip"

    # an entry SB3 always pickles (the policy class): replaced on loading, never unpickled
    _rewrite_model_data(model_zip, lambda data: data.update(policy_class=payload, _last_obs=payload))
    _record_hash(run / "best" / "info.json", "model.zip", model_zip)
    policy = load_run_policy(run, "best")
    assert not marker.exists()
    obs = np.zeros((3, policy.model.policy.observation_space.shape[0]), dtype=np.float32)
    assert policy.act(obs).shape == (3, 4)

    # an entry interestgym does not rebuild: refused with its name, not unpickled
    _rewrite_model_data(model_zip, lambda data: data.update(anything_else=payload))
    _record_hash(run / "best" / "info.json", "model.zip", model_zip)
    with pytest.raises(ArtifactError, match=r"model.zip: pickled entries 'anything_else' .* refusing to unpickle"):
        load_model(run, "best")
    assert not marker.exists()


def test_a_pickle_in_a_run_folder_is_refused_not_unpickled(trained, tmp_path):
    run = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    crafted = pickle.dumps(_CreatesFile(marker))

    # a pickle where older runs kept their VecNormalize, next to today's files
    (run / "best" / "vecnormalize.pkl").write_bytes(crafted)
    with pytest.raises(ArtifactError, match=r"best/vecnormalize.pkl: a pickled VecNormalize written by an older interestgym.*Re-train"):
        load_run_policy(run, "best")
    # an old-format run (the pickle, no normaliser.npz): the same clear error
    (run / "best" / "normaliser.npz").unlink()
    with pytest.raises(ArtifactError, match=r"never unpickles run files"):
        load_model(run, "best")
    assert not marker.exists()

    # any other file in a model folder is refused, whatever its name
    (run / "final" / "notes.bin").write_bytes(crafted)
    with pytest.raises(ArtifactError, match=r"final/notes.bin: unexpected file in a model folder"):
        load_model(run, "final")
    (run / "final" / "notes.bin").unlink()

    # a normaliser.npz holding a pickled object array (checksum updated to match): refused by allow_pickle=False
    npz = run / "final" / "normaliser.npz"
    buf = io.BytesIO()
    np.savez(buf, obs_mean=np.array([_CreatesFile(marker)], dtype=object))
    npz.write_bytes(buf.getvalue())
    _record_hash(run / "final" / "info.json", "normaliser.npz", npz)
    with pytest.raises(ArtifactError, match=r"final/normaliser.npz: "):
        load_model(run, "final")
    assert not marker.exists()
    assert load_model(trained, "final").vecnormalize.obs_rms.count > 0  # the untouched run loads


def test_a_damaged_model_file_is_named_by_its_checksum(trained, tmp_path):
    run = _copy(trained, tmp_path)
    raw = (run / "final" / "model.zip").read_bytes()
    (run / "final" / "model.zip").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ArtifactError, match=r"final/model.zip: its sha256 differs from the one info.json recorded when it was written \(the file, or info.json, was damaged"):
        load_model(run, "final")


def test_a_model_folder_swap_cut_by_a_kill_is_named_then_repaired(trained, tmp_path):
    from interestgym.agents.run_folder import settle_model_folders

    run = _copy(trained, tmp_path)
    # killed between write_model_folder's two renames: the old folder moved aside, the new one complete
    (run / "best").rename(run / ".best.old")
    shutil.copytree(run / ".best.old", run / ".best.new")
    with pytest.raises(ArtifactError, match=r"best/model.zip: missing; .*a kill interrupted its replacement.*--resume` repairs it"):
        load_model(run, "best")
    settle_model_folders(run)  # what train (and train --resume) does first, under the lock
    assert load_model(run, "best").step == json.loads((trained / "best" / "info.json").read_text())["step"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".best")) == []


# --------------------------------------------------------------------- 11.7: resume past damage
def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])


@pytest.mark.parametrize("damage", ["truncated model", "garbage normaliser", "state names a missing file"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(dataset, trained, tmp_path, capsys, damage):
    run = _copy(trained, tmp_path)
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["num_timesteps"] == 128
    if damage == "truncated model":
        damaged = state["model"]
        _truncate(run / "checkpoints" / damaged)
    elif damage == "garbage normaliser":
        damaged = state.get("normaliser") or state["vecnormalize"]
        (run / "checkpoints" / damaged).write_bytes(b"\x00garbage\xff" * 50)
    else:
        damaged = state["model"]
        (run / "checkpoints" / damaged).unlink()
    capsys.readouterr()
    result = train_run(_config(dataset, run, timesteps=192), resume=True)
    assert result["num_timesteps"] == 192
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and damaged in notes[0] and "step 64" in notes[0], notes
    assert json.loads((run / "checkpoints" / "state.json").read_text())["num_timesteps"] == 192
    load_model(run, "final")


def test_resume_with_no_intact_checkpoint_is_one_clear_error(dataset, trained, tmp_path):
    run = _copy(trained, tmp_path)
    for path in (run / "checkpoints").glob("model_*.zip"):
        _truncate(path)
    (run / "checkpoints" / "state.json").write_bytes(b"\x00not json")
    with pytest.raises(ArtifactError, match=r"checkpoints: no intact checkpoint to resume from \(.*model_64.zip: its sha256 differs from the one checkpoint_64.json recorded"):
        train_run(_config(dataset, run, timesteps=192), resume=True)


# ------------------------------------------------------------------ 11.11: one process per run
_HOLD = ("import sys, time\nfrom interestgym.agents.run_lock import RunLock\n"
         "with RunLock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n")


def test_a_second_training_process_is_refused_and_a_killed_ones_lock_does_not_block(dataset, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InterestGymError, match=rf"another `interestgym train` is writing this run \(pid {holder.pid} on host "):
            train_run(_config(dataset, run, timesteps=64, eval_every=0, checkpoint_every=0))
        assert not (run / "config.json").exists()
        # --resume, and evaluate, while the first `train` has not written config.json yet (it tunes first): said so, not
        # "config.json: missing" / "neither a training run nor a dataset"
        with pytest.raises(InterestGymError, match=rf"another `interestgym train` is writing this run \(pid {holder.pid} on host "
                                                   r".*has not written config.json yet; wait for it to end \(or stop it\), then --resume"):
            train_run(_config(dataset, run, timesteps=64, eval_every=0, checkpoint_every=0), resume=True)
        from interestgym.evaluation.run import evaluate_run

        with pytest.raises(InterestGymError, match=rf"a training run that `interestgym train` is still starting \(pid {holder.pid} on"):
            evaluate_run(run, progress=False)
    finally:
        holder.kill()  # SIGKILL: no cleanup, the lock file stays behind
        holder.wait()
    assert (run / ".lock").exists()
    result = train_run(_config(dataset, run, timesteps=64, eval_every=0, checkpoint_every=0))
    assert result["num_timesteps"] == 64


# --------------------------------------------------------------- 11.6: a folder that cannot be written
def test_a_run_dir_that_cannot_be_created_is_one_line_naming_it(dataset, tmp_path, monkeypatch):
    parent = tmp_path / "read-only"
    parent.mkdir()
    run = parent / "run"
    if os.geteuid() != 0:  # root writes anywhere: there, stand in for the read-only folder
        parent.chmod(0o555)
    else:
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self == run:
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    try:
        with pytest.raises(InterestGymError, match=rf"--run-dir {run}: cannot create or write into it \(Permission denied") as info:
            train_run(_config(dataset, run, timesteps=64, eval_every=0, checkpoint_every=0))
        assert "\n" not in str(info.value)
    finally:
        parent.chmod(0o755)


def test_a_run_refuses_its_dataset_split_again_and_notes_changed_events(tmp_path, capsys):
    """A dataset prepared again with another split under a trained run: its test users may be users the policy trained
    on, so evaluate and train --resume refuse it, naming the dataset and the run; events changed under the same split
    are a note (the policy replays what the dataset holds now). A run on an untouched dataset says nothing."""
    import pandas as pd

    from interestgym.cli import main
    from interestgym.evaluation.run import evaluate_run

    data = tiny_synthetic(tmp_path / "data")
    run = tmp_path / "run"
    train_run(small_train_config(data, run, timesteps=64, eval_every=0, checkpoint_every=64))
    recorded = json.loads((run / "config.json").read_text())["dataset_contents"]
    assert set(recorded) == {"split_sha256", "events_sha256", "action_weights", "positive_rating"}
    capsys.readouterr()
    evaluate_run(run, out=tmp_path / "ev0", n_boot=10, baselines="ema", progress=False)
    assert "note:" not in capsys.readouterr().err

    events = pd.read_parquet(data / "events.parquet")
    events.iloc[:-1].to_parquet(data / "events.parquet", index=False)  # one event fewer, the same users and split
    manifest = json.loads((data / "manifest.json").read_text())  # as `prepare` of the edited log writes it
    manifest["counts"]["events"] = len(events) - 1
    (data / "manifest.json").write_text(json.dumps(manifest))
    reseal_tables(data)
    evaluate_run(run, out=tmp_path / "ev1", n_boot=10, baselines="ema", progress=False)
    assert f"note: {run.parent / 'data'}: its events.parquet changed since the run {run} was trained on it" in capsys.readouterr().err

    users = pd.read_parquet(data / "users.parquet")
    a = users.index[users["split"] == "train"][0]
    b = users.index[users["split"] == "test"][0]
    users.loc[[a, b], "split"] = users.loc[[b, a], "split"].to_numpy()  # a training user is now a test user
    write_users(data, users)
    with pytest.raises(InterestGymError, match=r"its users are split differently from when the run .* was trained on it"):
        evaluate_run(run, out=tmp_path / "ev2", n_boot=10, baselines="ema", progress=False)
    with pytest.raises(SystemExit):
        main(["train", str(data), "--run-dir", str(run), "--resume", "--timesteps", "128"])
    assert "its users are split differently" in capsys.readouterr().err


def test_resume_says_what_is_wrong_with_the_runs_options_and_its_dataset(trained, tmp_path, capsys):
    """A review's finds: `--resume --n-envs 2` on a run of 4 envs said "--batch-size 512: expected 2..n_envs*n_steps", an
    option never given (today's default checked against the new --n-envs) instead of the refused change; a run whose
    dataset folder moved was told to "create one with `interestgym prepare`"."""
    from interestgym.cli import main

    run = _copy(trained, tmp_path)
    saved = json.loads((run / "config.json").read_text())["config"]
    other = 2 if saved["n_envs"] != 2 else 3
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(run), "--resume", "--n-envs", str(other)])
    err = capsys.readouterr().err
    assert f"--n-envs {other} (the run's: {saved['n_envs']})" in err and "--batch-size" not in err, err
    conf = json.loads((run / "config.json").read_text())
    conf["config"]["dataset"] = str(tmp_path / "moved")
    (run / "config.json").write_text(json.dumps(conf))
    with pytest.raises(SystemExit):
        main(["train", "--run-dir", str(run), "--resume"])
    err = capsys.readouterr().err
    assert (f"{run / 'config.json'}: the run was trained on the dataset {tmp_path / 'moved'}, which is not there (moved or "
            "removed?); expected that folder: put it back, or set 'config.dataset' in that file") in err, err
    with pytest.raises(SystemExit):  # a fresh run: a default that the given --n-envs does not fit is said to be the default
        main(["train", str(saved["dataset"]), "--run-dir", str(tmp_path / "new"), "--n-envs", "2", "--n-steps", "8",
              "--timesteps", "64"])
    assert ("--batch-size 512: expected 2..n_envs*n_steps (16) (--batch-size was not given: its default; give one that "
            "fits)") in capsys.readouterr().err


def test_a_temporary_file_a_kill_left_in_the_checkpoints_goes_with_the_next_checkpoint(trained, dataset, tmp_path):
    """A review's find: a kill between writing a checkpoint file and its rename left `.model_N.zip.XXXX.tmp` behind for
    good (pruning matched numbered names only). The next checkpoint, written under the run's lock, removes it."""
    run = _copy(trained, tmp_path)
    left = run / "checkpoints" / ".model_192.zip.abc123.tmp"
    left.write_bytes(b"half a model")
    train_run(_config(dataset, run, timesteps=192), resume=True)
    assert not left.exists()
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_reading_best_while_training_replaces_it_is_tried_again_not_failed(trained, tmp_path, monkeypatch):
    """A review's find: evaluate / report / export reading best/ while training swapped it (two renames) failed about one
    read in twelve, with "damaged" or "a kill interrupted its replacement" (wrong while the run is alive). A read during
    training is tried again; with no training it still fails at once."""
    import threading

    from interestgym.agents import sb3_policy
    from interestgym.agents.run_folder import write_model_folder
    from interestgym.agents.run_lock import RunLock

    run = _copy(trained, tmp_path)
    # two models' bytes (best's and final's), written by the real write_model_folder (model_bytes passes them through)
    models = [((run / w / "model.zip").read_bytes(), json.loads((run / w / "info.json").read_text())["step"]) for w in ("best", "final")]
    monkeypatch.setattr(sb3_policy, "model_bytes", lambda raw: raw)
    stop = threading.Event()
    written = [0]

    def swap() -> None:  # what training does at each better validation, as fast as it can
        while not stop.is_set():
            raw, step = models[written[0] % 2]
            write_model_folder(run / "best", raw, None, {"step": step})
            written[0] += 1

    with RunLock(run):
        thread = threading.Thread(target=swap)
        thread.start()
        try:
            steps = {load_model(run, "best").step for _ in range(100)}
        finally:
            stop.set()
            thread.join()
    assert written[0] > 20 and steps <= {step for _, step in models}, written
    (run / "best" / "model.zip").write_bytes(b"damaged")  # not training: no retry, the error at once
    with pytest.raises(ArtifactError, match=r"best/model.zip: its sha256 differs from the one info.json recorded"):
        load_model(run, "best")
