"""The ONNX actor reproduces SB3's deterministic predict (with VecNormalize) and is written atomically."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import onnxruntime
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from interestgym.errors import ArtifactError
from interestgym.export.actor import build_actor, export_onnx
from interestgym.export.writer import write_export_directory
from interestgym.runtime.manifest import MANIFEST_KIND, read_verified_manifest


class _BoxEnv(gym.Env):
    """Observations far from N(0, 1) so that VecNormalize's statistics matter in the parity check."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-50.0, 50.0, (6,), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        return (self.np_random.normal(3.0, 8.0, 6)).astype(np.float32)

    def step(self, action):
        return self._obs(), float(-np.sum((action - 0.7) ** 2)), False, False, {}


@pytest.fixture(scope="module")
def trained():
    venv = VecNormalize(DummyVecEnv([_BoxEnv, _BoxEnv]), norm_obs=True, norm_reward=False, clip_obs=3.0)
    venv.seed(0)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0, policy_kwargs={"net_arch": [32, 32]}, device="cpu")
    from stable_baselines3.common.logger import Logger

    # no output at all (SB3's configure(None, ...) still makes a folder in /tmp for every call)
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(128)
    venv.training = False
    return model, venv


def test_onnx_actor_matches_sb3_deterministic_predict(trained, tmp_path):
    model, venv = trained
    path = tmp_path / "policy.onnx"
    export_onnx(build_actor(model, venv), 6, path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # wide range: some observations fall outside ±clip_obs after normalisation and some actions
    # outside [0, 1] before clipping, so both baked-in clips are exercised
    obs = np.random.default_rng(0).normal(3.0, 30.0, (1000, 6)).astype(np.float32)
    expected, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    got = session.run(None, {"observation": obs})[0]
    assert got.shape == (1000, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert (got == 0.0).any()  # some Gaussian means fell below the box and were clipped
    z = (obs - venv.obs_rms.mean) / np.sqrt(venv.obs_rms.var + venv.epsilon)
    assert (np.abs(z) > venv.clip_obs).any()
    # a batch of one and the batch give the same row: the batch axis is dynamic
    np.testing.assert_array_equal(session.run(None, {"observation": obs[3:4]})[0][0], got[3])


def test_without_vecnormalize_the_graph_is_the_raw_policy(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "raw.onnx"
    export_onnx(build_actor(model, None), 6, path)
    obs = np.random.default_rng(1).normal(0.0, 1.0, (50, 6)).astype(np.float32)
    expected, _ = model.predict(obs, deterministic=True)
    got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"observation": obs})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def _writer(payload: bytes):
    def write(tmp):
        (tmp / "blob.bin").write_bytes(payload)
    return write


def test_export_directory_is_replaced_whole_and_checksummed(tmp_path):
    out = tmp_path / "export"
    write_export_directory(out, _writer(b"first"), {"kind": MANIFEST_KIND, "format_version": 1})
    manifest = read_verified_manifest(out)
    assert set(manifest["files"]) == {"blob.bin"}
    write_export_directory(out, _writer(b"second"), {"kind": MANIFEST_KIND, "format_version": 1})
    assert (out / "blob.bin").read_bytes() == b"second"
    read_verified_manifest(out)
    # no temporary or set-aside directories are left next to the export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_failed_export_leaves_the_previous_one_intact(tmp_path):
    out = tmp_path / "export"
    write_export_directory(out, _writer(b"good"), {"kind": MANIFEST_KIND, "format_version": 1})

    def broken(tmp):
        (tmp / "blob.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_export_directory(out, broken, {"kind": MANIFEST_KIND, "format_version": 1})
    assert (out / "blob.bin").read_bytes() == b"good"
    read_verified_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_a_foreign_directory_is_never_replaced(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an interestgym export"):
        write_export_directory(out, _writer(b"x"), {"kind": MANIFEST_KIND, "format_version": 1})
    assert (out / "notes.txt").read_text() == "keep me"
    (out / "manifest.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(ArtifactError):
        write_export_directory(out, _writer(b"x"), {"kind": MANIFEST_KIND, "format_version": 1})


def test_an_export_killed_between_its_two_renames_is_put_back_by_the_next_one(tmp_path):
    # a kill after the old export was set aside left nothing at OUT (a service could not load it) and two hidden
    # folders beside it that no later export removed
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "export"
    write_export_directory(out, _writer(b"old"), {"kind": MANIFEST_KIND, "format_version": 1})
    child = textwrap.dedent(f"""
        import os
        from interestgym.export import writer
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            os._exit(9)  # killed right after the old export went aside
        writer.os.replace = replace
        def write(tmp):
            (tmp / "blob.bin").write_bytes(b"new")
        writer.write_export_directory({str(out)!r}, write, {{"kind": {MANIFEST_KIND!r}, "format_version": 1}})
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 9, done.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not out.exists() and [n.split("-")[0] for n in left] == ["export.old", "export.tmp"], left
    with pytest.raises(ArtifactError, match=r"no such export directory, but export\.old-\d+ beside it is the previous export"):
        read_verified_manifest(out)  # what a service loading it is told
    notes: list[str] = []
    from interestgym.export.writer import write_atomic_directory
    from interestgym.runtime.manifest import (
        is_export_manifest,
        seal_manifest,
        write_manifest,
    )

    def write_all(tmp):
        (tmp / "blob.bin").write_bytes(b"third")
        write_manifest(tmp, seal_manifest(tmp, {"kind": MANIFEST_KIND, "format_version": 1}))

    write_atomic_directory(out, write_all, lambda d: is_export_manifest(d / "manifest.json"), "an interestgym export",
                           note=notes.append)
    assert any(n.startswith(f"restored {out} from export.old-") for n in notes), notes
    assert any(n.startswith("removed export.tmp-") and n.endswith("left by an interrupted export") for n in notes), notes
    assert (out / "blob.bin").read_bytes() == b"third"
    read_verified_manifest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
