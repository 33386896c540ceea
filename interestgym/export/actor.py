"""The ONNX actor: a trained SB3 policy -> a graph from RAW observation to deterministic action.

Stable-Baselines3 keeps two things outside ``model.policy`` that a deployed policy needs: the
VecNormalize observation statistics (applied by the wrapper before ``predict``) and the clipping of
the Gaussian mean to the action box (applied by ``predict`` after the network). SB3's export guide
wraps ``model.policy`` in a small ``nn.Module`` and warns that clipping must then be redone;
:class:`DeterministicActor` redoes both, so the graph maps a RAW observation to exactly the action
``model.predict(vecnormalize.normalize_obs(obs), deterministic=True)`` returns::

    z      = clip((obs - mean) / sqrt(var + eps), -clip_obs, clip_obs)   # float64, as VecNormalize
    a      = clip(action_net(actor_mlp(float32(z))), low, high)          # the Gaussian mean = the mode
    strengths = out_low + (a - low) * (out_high - out_low) / (high - low)   # second output, optional

``action`` is what ``model.predict(..., deterministic=True)`` returns (the env's action: for the
replay env a point of [-1, 1]^4); ``strengths`` is the same action mapped affinely onto another box:
for the replay env the update strengths and score weights ``(a_L, a_S, w, p) = (a + 1) / 2`` in
[0, 1]^4 (``interestgym.core.protocol.action_to_strengths``), so a consumer of the graph alone needs
no post-processing.

The normalisation runs in float64 like VecNormalize's numpy code (then cast to float32 like
``normalize_obs``), so the graph's network input is bit-identical to SB3's; only the float32 matrix
products can differ in the last bits between torch and onnxruntime.

The graph's input and output names are the export format's (:mod:`interestgym.runtime.manifest`).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from interestgym.errors import ArtifactError
from interestgym.runtime.manifest import INPUT_NAME, OUTPUT_NAME, STRENGTHS_NAME

#: ONNX opset of the exported graph; onnxruntime >= 1.17 runs opset 18 (1.3x runs up to 21+).
ONNX_OPSET = 18


class DeterministicActor(nn.Module):
    """Raw observation batch (float32, (n, obs_dim)) -> deterministic action batch (float32, (n, act_dim)).

    :param policy: an SB3 ``ActorCriticPolicy`` with a diagonal-Gaussian (or gSDE) action distribution.
    :param obs_mean: VecNormalize ``obs_rms.mean`` or ``None`` when observations were not normalised.
    :param obs_var: VecNormalize ``obs_rms.var``.
    :param epsilon: VecNormalize ``epsilon``.
    :param clip_obs: VecNormalize ``clip_obs``.
    :param action_low: lower bound of the action box.
    :param action_high: upper bound of the action box.
    :param strength_low: lower bound of the box of the optional second output (``None``: one output).
    :param strength_high: upper bound of that box.
    """

    def __init__(
        self,
        policy: Any,
        obs_mean: np.ndarray | None,
        obs_var: np.ndarray | None,
        epsilon: float,
        clip_obs: float,
        action_low: np.ndarray,
        action_high: np.ndarray,
        strength_low: np.ndarray | None = None,
        strength_high: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.normalise = obs_mean is not None
        if self.normalise:
            assert obs_var is not None
            # sqrt computed by numpy (correctly rounded) so the stored std equals VecNormalize's.
            std = np.sqrt(np.asarray(obs_var, dtype=np.float64) + float(epsilon))
            self.register_buffer("obs_mean", torch.as_tensor(np.asarray(obs_mean, dtype=np.float64)))
            self.register_buffer("obs_std", torch.as_tensor(std))
        self.clip_obs = float(clip_obs)
        self.register_buffer("action_low", torch.as_tensor(np.asarray(action_low, dtype=np.float32)))
        self.register_buffer("action_high", torch.as_tensor(np.asarray(action_high, dtype=np.float32)))
        self.squash_output = bool(getattr(policy, "squash_output", False))
        self.rescale = strength_low is not None
        if self.rescale:
            assert strength_high is not None
            low, high = np.asarray(action_low, dtype=np.float32), np.asarray(action_high, dtype=np.float32)
            scale = (np.asarray(strength_high, np.float32) - np.asarray(strength_low, np.float32)) / (high - low)
            self.register_buffer("strength_low", torch.as_tensor(np.asarray(strength_low, dtype=np.float32)))
            self.register_buffer("strength_scale", torch.as_tensor(scale.astype(np.float32)))

    def forward(self, observation: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.normalise:
            z = (observation.to(torch.float64) - self.obs_mean) / self.obs_std
            z = torch.clamp(z, -self.clip_obs, self.clip_obs).to(torch.float32)
        else:
            z = observation
        features = self.policy.extract_features(z, self.policy.pi_features_extractor)
        latent_pi = self.policy.mlp_extractor.forward_actor(features)
        mean_action = self.policy.action_net(latent_pi)
        if self.squash_output:
            # gSDE with squashing: the mode is tanh(mean), rescaled from [-1, 1] to the box (SB3's unscale_action).
            mean_action = self.action_low + 0.5 * (torch.tanh(mean_action) + 1.0) * (self.action_high - self.action_low)
        action = torch.minimum(torch.maximum(mean_action, self.action_low), self.action_high)
        if self.rescale:
            return action, (action - self.action_low) * self.strength_scale + self.strength_low
        return action


def check_exportable(model: Any) -> None:
    """Raise :class:`ArtifactError` unless ``model`` is an on-policy SB3 model with a Box action and a
    Gaussian actor whose mode is the network's mean (PPO / A2C ``MlpPolicy``)."""
    import gymnasium as gym
    from stable_baselines3.common.distributions import (
        DiagGaussianDistribution,
        StateDependentNoiseDistribution,
    )
    from stable_baselines3.common.policies import ActorCriticPolicy

    policy = getattr(model, "policy", None)
    if not isinstance(policy, ActorCriticPolicy):
        raise ArtifactError(f"model policy is {type(policy).__name__}; expected an SB3 ActorCriticPolicy (PPO / A2C)")
    if not isinstance(policy.action_space, gym.spaces.Box):
        raise ArtifactError(f"action space is {policy.action_space}; expected a Box")
    if not isinstance(policy.observation_space, gym.spaces.Box) or len(policy.observation_space.shape) != 1:
        raise ArtifactError(f"observation space is {policy.observation_space}; expected a 1-d Box")
    if not isinstance(policy.action_dist, (DiagGaussianDistribution, StateDependentNoiseDistribution)):
        raise ArtifactError(f"action distribution is {type(policy.action_dist).__name__}; expected a diagonal Gaussian")


def build_actor(model: Any, vecnormalize: Any | None, strength_box: tuple[Any, Any] | None = None) -> DeterministicActor:
    """Wrap ``model.policy`` (and the VecNormalize statistics, if any) as a :class:`DeterministicActor`.

    :param strength_box: ``(low, high)`` of the second output ``strengths`` (the action mapped
        affinely onto this box); ``None`` for a graph with the single output ``action``.
    """
    check_exportable(model)
    policy = model.policy
    policy.set_training_mode(False)
    mean = var = None
    epsilon, clip_obs = 1e-8, float("inf")
    if vecnormalize is not None and getattr(vecnormalize, "norm_obs", False):
        rms = vecnormalize.obs_rms
        if isinstance(rms, dict):
            raise ArtifactError("VecNormalize holds per-key statistics (Dict observations); expected a single Box")
        mean, var = np.asarray(rms.mean), np.asarray(rms.var)
        epsilon, clip_obs = float(vecnormalize.epsilon), float(vecnormalize.clip_obs)
        if mean.shape != policy.observation_space.shape:
            raise ArtifactError(f"VecNormalize statistics have shape {mean.shape}; the policy's observation space has shape {policy.observation_space.shape}")
    space = policy.action_space
    out_low = out_high = None
    if strength_box is not None:
        out_low = np.full(space.shape, strength_box[0], dtype=np.float32)
        out_high = np.full(space.shape, strength_box[1], dtype=np.float32)
    actor = DeterministicActor(policy, mean, var, epsilon, clip_obs, space.low, space.high, out_low, out_high)
    return actor.to("cpu").eval()


def export_onnx(actor: DeterministicActor, obs_dim: int, path: str | Path, opset: int = ONNX_OPSET) -> None:
    """Write ``actor`` as a self-contained ONNX file with a dynamic batch axis.

    Uses the torch.export-based exporter (PyTorch's default since 2.9; needs ``onnxscript``); falls
    back to the TorchScript exporter where ``onnxscript`` is not installed.
    """
    path = Path(path)
    example = (torch.zeros(2, obs_dim, dtype=torch.float32),)
    outputs = [OUTPUT_NAME, STRENGTHS_NAME] if actor.rescale else [OUTPUT_NAME]
    # The exporter logs a warning per optional torchvision op it cannot register; not relevant here.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        _export(actor, example, path, outputs, opset)
    finally:
        registration_log.setLevel(level)
    _check_graph(path, obs_dim, outputs)


def _export(actor: DeterministicActor, example: tuple[torch.Tensor], path: Path, outputs: list[str], opset: int) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # torch's exporter emits FutureWarnings from its own internals; they are not the user's to act on.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if importlib.util.find_spec("onnxscript") is not None:
            torch.onnx.export(
                actor, example, str(path), input_names=[INPUT_NAME], output_names=outputs,
                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset, dynamo=True,
                external_data=False, verbose=False, optimize=True,
            )
        else:  # pragma: no cover - exercised only without onnxscript
            torch.onnx.export(
                actor, example, str(path), input_names=[INPUT_NAME], output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [INPUT_NAME, *outputs]}, opset_version=min(opset, 17),
                dynamo=False,
            )


def _check_graph(path: Path, obs_dim: int, outputs: list[str]) -> None:
    """The written graph must be a valid ONNX model with one float input (batch, obs_dim)."""
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    inputs = [i.name for i in model.graph.input]
    if inputs != [INPUT_NAME]:
        raise ArtifactError(f"{path}: graph inputs {inputs}; expected [{INPUT_NAME!r}]")
    if [o.name for o in model.graph.output] != outputs:
        raise ArtifactError(f"{path}: graph outputs {[o.name for o in model.graph.output]}; expected {outputs}")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != obs_dim or dims[0].dim_value not in (0,):
        raise ArtifactError(f"{path}: input shape {[d.dim_param or d.dim_value for d in dims]}; expected [batch, {obs_dim}]")
