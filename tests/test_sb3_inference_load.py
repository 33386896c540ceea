"""A PPO model loaded for inference (``load_ppo`` without an env) skips the torch optimizer, and acts as the full load."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from export_fixtures import trained_export
from interestgym.agents.run_folder import load_model
from interestgym.agents.sb3_policy import _replacements

from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return trained_export(tmp_path_factory, "next_positive").run


def _full_load(run):
    """SB3's own load with a real Adam (what load_ppo did before), for comparison."""
    import json
    import zipfile

    from stable_baselines3 import PPO

    raw = (run / "final" / "model.zip").read_bytes()
    data = json.loads(zipfile.ZipFile(io.BytesIO(raw)).read("data"))
    return PPO.load(io.BytesIO(raw), device="cpu", custom_objects=_replacements(data, None, 0.2))


def test_an_inference_load_acts_as_the_full_load_and_keeps_the_optimizer_state(run):
    import torch

    lean, full = load_model(run, "final").model, _full_load(run)
    assert isinstance(full.policy.optimizer, torch.optim.Adam)
    obs = np.random.default_rng(0).uniform(-3, 3, (200, lean.observation_space.shape[0])).astype(np.float32)
    np.testing.assert_array_equal(lean.predict(obs, deterministic=True)[0], full.predict(obs, deterministic=True)[0])
    for name, tensor in full.policy.state_dict().items():
        assert torch.equal(tensor, lean.policy.state_dict()[name]), name
    kept, saved = lean.policy.optimizer.state_dict(), full.policy.optimizer.state_dict()
    assert kept["param_groups"] == saved["param_groups"] and kept["state"].keys() == saved["state"].keys()
    for k, state in saved["state"].items():
        assert all(torch.equal(state[key], kept["state"][k][key]) for key in state)


def test_an_inference_load_refuses_to_train(run):
    model = load_model(run, "final").model
    with pytest.raises(InterestGymError, match=r"loaded for inference \(no env given to load_ppo\), without an optimizer "
                                               r"\(optimizer.zero_grad\); load it with env= to train it on"):
        model.policy.optimizer.zero_grad()


def test_an_inference_load_pickles_and_copies_as_the_full_load(run):
    """Ray sends a loaded model to its workers (cloudpickle); copies of it act the same and keep the optimizer state."""
    import copy
    import pickle

    model = load_model(run, "final").model
    obs = np.random.default_rng(1).uniform(-3, 3, (20, model.observation_space.shape[0])).astype(np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    for other in (pickle.loads(pickle.dumps(model.policy)), copy.deepcopy(model.policy)):
        np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], expected)
        assert other.optimizer.state_dict().keys() == model.policy.optimizer.state_dict().keys()
        with pytest.raises(InterestGymError, match=r"loaded for inference"):
            other.optimizer.step()


def test_an_inference_load_does_not_import_torch_dynamo(run):
    """Constructing a torch optimizer imports torch._dynamo (~1.5 s); loading for inference builds none."""
    code = ("import sys; from interestgym.agents.run_folder import load_model; "
            f"load_model({str(run)!r}, 'final'); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
