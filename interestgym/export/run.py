"""The export stage: a trained run's policy -> ONNX graph + manifest for :mod:`interestgym.runtime`.

:func:`export_run` (what ``interestgym export RUN --out DIR`` runs) loads ``RUN/{best,final}/model.zip``
and ``vecnormalize.pkl``, builds the graph below, checks it against SB3 on recorded observations,
and writes the directory atomically (:func:`write_export_directory`)::

    DIR/policy.onnx      raw observation -> (action, strengths)
    DIR/item_ids.json    the dataset's item ids, in embedding-row order
    DIR/popularity.npy   pop(c) of those items (float32; training users' positives only)
    DIR/categories.json  the dataset's categories (index of the category model)
    DIR/manifest.json    format version, features, action / update / scoring semantics and
                         parameters, encoder, provenance, evaluation, sha256 of every file

:func:`replay_through_runtime` replays logged users through the loaded export, event by event, as a
service would: the tests and ``benchmarks/runtime.py`` use it to show the runtime reproduces the
evaluator.

**The graph.** Stable-Baselines3 keeps two things outside ``model.policy`` that a deployed policy needs: the
VecNormalize observation statistics (applied by the wrapper before ``predict``) and the clipping of
the Gaussian mean to the action box (applied by ``predict`` after the network). SB3's export guide
wraps ``model.policy`` in a small ``nn.Module`` and warns that clipping must then be redone; this
module's :class:`DeterministicActor` redoes both, so the graph maps a RAW observation to exactly the
action ``model.predict(vecnormalize.normalize_obs(obs), deterministic=True)`` returns:

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
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from interestgym.errors import ArtifactError

#: ONNX opset of the exported graph; onnxruntime >= 1.17 runs opset 18 (1.3x runs up to 21+).
ONNX_OPSET = 18
INPUT_NAME = "observation"
OUTPUT_NAME = "action"
STRENGTHS_NAME = "strengths"


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
    import logging

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


# ------------------------------------------------------------------------------ export directory
def write_export_directory(out: str | Path, write_files: Any, manifest: dict[str, Any]) -> Path:
    """Write an export directory atomically and return its path.

    ``write_files(tmp_dir)`` writes every payload file into a fresh temporary directory next to
    ``out``; then the sha256 and size of each file go into ``manifest["files"]``, ``manifest.json`` is
    written last, and the directory is renamed onto ``out``. An existing export at ``out`` is first
    renamed aside and removed only after the new one is in place, so a reader finds the old complete
    export or the new complete one, never a mixture (between the two renames the path is absent for
    an instant: a loader then fails cleanly with "no such export directory" and can retry). If the
    second rename fails, the old export is put back. A non-empty ``out`` that is not an export is
    refused rather than deleted.
    """
    import json
    import os
    import shutil
    import tempfile

    from interestgym.io import sha256_file
    from interestgym.runtime.manifest import (
        CONTENT_DIGEST_FIELD,
        MANIFEST_KIND,
        MANIFEST_NAME,
        manifest_digest,
    )

    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ArtifactError(f"{out}: exists and is not a directory; expected a new or previous export directory")
        previous = out / MANIFEST_NAME
        is_export = False
        if previous.is_file():
            try:
                is_export = json.loads(previous.read_text(encoding="utf-8")).get("kind") == MANIFEST_KIND
            except (ValueError, UnicodeDecodeError, AttributeError):
                is_export = False
        if any(out.iterdir()) and not is_export:
            raise ArtifactError(f"{out}: a non-empty directory that is not an interestgym export; refusing to replace it (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make a shared export unreadable to its service
    try:
        write_files(tmp)
        files = {}
        for path in sorted(tmp.iterdir()):
            if path.name == MANIFEST_NAME:
                raise AssertionError("write_files must not write the manifest itself")
            files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        manifest = {**manifest, "files": files}
        manifest[CONTENT_DIGEST_FIELD] = manifest_digest(manifest)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for path in tmp.iterdir():  # durable before the rename makes it visible
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            old.rmdir()
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:  # put the previous export back rather than leave nothing at `out`
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _small(value: Any, max_list: int = 64) -> Any:
    """A copy of a JSON value without long lists (per-user arrays): the manifest keeps summaries."""
    if isinstance(value, dict):
        return {k: _small(v, max_list) for k, v in value.items() if not (isinstance(v, list) and len(v) > max_list)}
    if isinstance(value, list):
        return [_small(v, max_list) for v in value]
    return value


def _evaluation_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's evaluation.json (written by ``interestgym evaluate``), without per-user arrays."""
    import json

    from interestgym.io import sha256_file

    path = run_dir / "evaluation.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); re-run `interestgym evaluate {run_dir}` or move it away") from None
    return {"source": str(path), "sha256": sha256_file(path), "results": _small(doc)}


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and measured."""

    out: Path
    manifest: dict[str, Any]
    max_abs_action_diff: float
    n_verified: int


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    which: str = "best",
    verify_observations: int = 1000,
    verify_split: str = "test",
) -> ExportResult:
    """Export a trained run's policy to ``out`` (atomically; see :func:`write_export_directory`).

    The graph is checked before anything is written: on up to ``verify_observations`` observations
    recorded by replaying ``verify_split`` users with the trained policy, its actions must equal SB3's
    deterministic ``predict`` (with VecNormalize) within 1e-5; the largest difference goes into the
    manifest.

    :raises ArtifactError: for a missing / unreadable run, a mismatching graph, or an unsafe ``out``.
    """
    import json
    import tempfile
    import time

    import onnxruntime
    from interestgym.agents.sb3_policy import policy_from_model
    from interestgym.agents.run_folder import check_run_embedding, load_model, run_scoring, run_train_config
    from interestgym.envs.replay_data import load_replay_data

    from interestgym import __version__
    from interestgym.core.features import (
        EMA_RATE,
        FEATURES,
        N_FEATURES,
        SHADOW_STRENGTHS,
    )
    from interestgym.core.protocol import ACTION_NAMES
    from interestgym.data.dataset import Dataset
    from interestgym.io import sha256_file
    from interestgym.runtime.manifest import FORMAT_VERSION, MANIFEST_KIND
    from interestgym.runtime.policy import (
        CATEGORIES_FILE,
        ITEMS_FILE,
        POLICY_FILE,
        POPULARITY_FILE,
    )

    run = load_model(run_dir, which)
    config = run_train_config(run.run_dir, run.config)
    if not config.dataset:
        raise ArtifactError(f"{run.run_dir / 'config.json'}: field config.dataset is empty; expected the training dataset's path")
    check_run_embedding(run.run_dir, run.config, config)
    dataset = Dataset.open(config.dataset)
    emb_name = dataset.resolve_embeddings(config.embeddings)
    _, emb_meta = dataset.load_embeddings(emb_name)
    scoring = run_scoring(run.run_dir, run.config)
    data = load_replay_data(dataset, emb_name, config.protocol_spec(verify_split))
    policy_box = run.model.policy.action_space
    if policy_box.shape != (len(ACTION_NAMES),) or not (np.all(policy_box.low == -1.0) and np.all(policy_box.high == 1.0)):
        raise ArtifactError(f"{run.run_dir}: the model's action space is {policy_box}; expected Box(-1, 1, (4,)) (the replay env's)")
    if run.model.policy.observation_space.shape != (N_FEATURES,):
        raise ArtifactError(
            f"{run.run_dir}: the model observes {run.model.policy.observation_space.shape} features; this interestgym "
            f"computes {N_FEATURES} ({', '.join(f.name for f in FEATURES[:3])}, ...): export with the version that trained it"
        )
    actor = build_actor(run.model, run.vecnormalize, strength_box=(0.0, 1.0))

    # Observations to verify on: the verify split's decisions, replayed with the trained policy.
    sb3_policy = policy_from_model(run.model, run.vecnormalize, scoring=scoring)
    obs = _recorded_observations(data, sb3_policy, config.reward, verify_observations)
    expected = sb3_policy.act(obs) if len(obs) else np.zeros((0, 4), np.float32)

    with tempfile.TemporaryDirectory(prefix="interestgym-export-") as scratch:
        graph = Path(scratch) / POLICY_FILE
        export_onnx(actor, N_FEATURES, graph)
        session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        got_action, got_strength = session.run(None, {INPUT_NAME: obs}) if len(obs) else (expected, (expected + 1) / 2)
        diff = float(np.max(np.abs(got_action - expected))) if len(obs) else 0.0
        strength_diff = float(np.max(np.abs(got_strength - (expected + 1.0) / 2.0))) if len(obs) else 0.0
        if not (diff <= 1e-5 and strength_diff <= 1e-5):
            raise ArtifactError(f"{graph.name}: the ONNX actions differ from SB3's by up to {max(diff, strength_diff):.2e} on {len(obs)} observations; expected <= 1e-5")
        graph_bytes = graph.read_bytes()

    def write_files(tmp: Path) -> None:
        (tmp / POLICY_FILE).write_bytes(graph_bytes)
        (tmp / ITEMS_FILE).write_text(json.dumps([str(i) for i in dataset.items["item_id"].astype(str)], ensure_ascii=False), encoding="utf-8")
        (tmp / CATEGORIES_FILE).write_text(json.dumps(list(data.category_names), ensure_ascii=False), encoding="utf-8")
        np.save(tmp / POPULARITY_FILE, np.ascontiguousarray(data.item_popularity, dtype=np.float32), allow_pickle=False)

    rms = getattr(run.vecnormalize, "obs_rms", None) if run.vecnormalize is not None and run.vecnormalize.norm_obs else None
    net_arch = run.config.get("config", {}).get("net_arch")
    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "format_version": FORMAT_VERSION,
        "interestgym_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "policy": {
            "file": POLICY_FILE,
            "onnx_opset": ONNX_OPSET,
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", N_FEATURES],
                      "meaning": "raw observation (features below, in order); normalisation is inside the graph"},
            "outputs": {
                OUTPUT_NAME: {"dtype": "float32", "shape": ["batch", 4], "box": [-1.0, 1.0],
                              "meaning": "the env action: the Gaussian mean (deterministic), clipped to the box"},
                STRENGTHS_NAME: {"dtype": "float32", "shape": ["batch", 4], "box": [0.0, 1.0],
                                 "meaning": "(action + 1) / 2: (a_L, a_S, w, p), see 'action'"},
            },
            "observation_normalisation": None if rms is None else {
                "kind": "VecNormalize (baked into the graph)",
                "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs), in float64, then float32",
                "mean": [float(v) for v in rms.mean], "var": [float(v) for v in rms.var],
                "epsilon": float(run.vecnormalize.epsilon), "clip_obs": float(run.vecnormalize.clip_obs),
            },
            "network": {"algorithm": type(run.model).__name__, "net_arch": net_arch,
                        "activation": type(run.model.policy.activation_fn()).__name__ if hasattr(run.model.policy, "activation_fn") else None},
            "verification": {"observations": len(obs), "split": verify_split, "max_abs_action_diff": diff,
                             "reference": "model.predict(VecNormalize.normalize_obs(obs), deterministic=True)"},
        },
        "observation": {
            "source": "interestgym.core.features.FEATURES",
            "n_features": N_FEATURES,
            "features": [{"index": i, "name": f.name, "definition": f.definition, "low": f.low, "high": f.high} for i, f in enumerate(FEATURES)],
        },
        "action": {
            "names": list(ACTION_NAMES),
            "box": [-1.0, 1.0],
            "to_strength": "(clip(u, -1, 1) + 1) / 2 (interestgym.core.protocol.action_to_strengths)",
            "meaning": {
                "long_strength": "a_L: L <- normalise((1 - a_L) L + a_L x); 0 = do not update",
                "short_strength": "a_S: S <- normalise((1 - a_S) S + a_S x)",
                "short_weight": "w: weight of S against L in the score",
                "popularity_weight": "p: weight of the popularity prior in the score (overridden by scoring.config.popularity_weight if set)",
            },
        },
        "update": {
            "formula": "P <- normalise((1 - a) P + a x) for P in (L, S); a zero profile means no interest known",
            "decision": "a positive event: action weight > 0 and, for 'rate', value >= positive_rating; with an item vector",
            "shadow_strengths": list(SHADOW_STRENGTHS),
            "ema_rate": float(EMA_RATE),
            "running_means": "m <- m + ema_rate (v - m) at every decision (metrics: at the decision after their scoring points)",
            "category_counts": ("counts <- f counts, then +1 in the event's category column, at every decision (when beta_cat != 0); "
                                "f = scoring.config.category_forgetting, or 1 - a_L of the decision when it is null"),
            "category_forgetting": "1 - a_L (tied to the action)" if scoring.category_forgetting is None else float(scoring.category_forgetting),
        },
        "scoring": {
            "formula": "(1 - p) (w cos(S, c) + (1 - w) cos(L, c)) + p pop(c) + beta_cat log P(cat(c) | user) + beta_ctx cos(T_slot(now), c)",
            "config": scoring.as_dict(),
            "popularity": {"file": POPULARITY_FILE, "item_ids": ITEMS_FILE,
                           "definition": "log1p(positive events among training users) / max, float32 aligned with item_ids"},
            "categories": {"file": CATEGORIES_FILE, "definition": "the dataset's item categories (index of the category model)"},
        },
        "replay": {
            "action_weights": dataset.action_weights,
            "max_action_weight": float(data.max_action_weight),
            "positive_rating": dataset.positive_rating,
            # The dataset's hour / weekday columns are UTC shifted by this (prepare --tz-offset); the
            # runtime applies it to events that come without an explicit hour / weekday.
            "tz_offset_hours": float(dataset.manifest.get("reader", {}).get("tz_offset_hours", 0.0)),
            "reward_metric": config.reward,
            "verified_on": {k: v for k, v in data.describe().items() if k not in ("counts",)},
        },
        "encoder": {
            "name": emb_meta.get("encoder", emb_name), "kind": emb_meta.get("kind"), "embeddings": emb_name,
            "dim": int(data.dim), "fingerprint": emb_meta.get("fingerprint"),
        },
        "provenance": {
            "dataset": {"path": str(dataset.path), "name": dataset.name,
                        "manifest_sha256": sha256_file(dataset.path / "manifest.json"),
                        "source_format": dataset.manifest.get("source", {}).get("format")},
            "run": {"path": str(run.run_dir), "model": which, "step": run.step, "config": run.config.get("config"),
                    "reference": run.config.get("reference")},
        },
        "evaluation": _evaluation_summary(run.run_dir),
    }
    write_export_directory(out, write_files, manifest)
    from interestgym.runtime.manifest import read_verified_manifest

    return ExportResult(out=Path(out), manifest=read_verified_manifest(out), max_abs_action_diff=diff, n_verified=len(obs))


def _recorded_observations(data: Any, policy: Any, metric: str, limit: int) -> np.ndarray:
    """Up to ``limit`` decision observations of ``data``'s users, replayed with ``policy`` (users in
    order until enough decisions are covered)."""
    from interestgym.envs.vector import evaluate_policy

    if limit <= 0 or data.n_users == 0:
        return np.zeros((0, 0), np.float32)
    counts = data.user_decision_end - data.user_decision_start
    n_users = int(np.searchsorted(np.cumsum(counts), limit) + 1)
    users = [str(u) for u in data.user_ids[:n_users]]
    res = evaluate_policy(data, policy, metric=metric, users=users, record_features=True, progress=False)
    return np.ascontiguousarray(res.features[:limit], dtype=np.float32)


# ------------------------------------------------------------------------ replay through runtime
def replay_through_runtime(policy: Any, dataset: Any, data: Any, users: list[str] | None = None, *,
                           serialise: str | None = None) -> Any:
    """Replay users' logs through an :class:`~interestgym.runtime.ExportedPolicy`, event by event, as a
    service would, and rank every scoring point of ``data`` with the runtime's state.

    :param policy: the loaded export.
    :param dataset: the open :class:`~interestgym.data.dataset.Dataset` the replay data came from.
    :param data: the :class:`~interestgym.envs.replay_data.ReplayData` fixing users and candidates.
    :param users: user ids (default: every user of ``data``).
    :param serialise: ``"bytes"`` or ``"json"``: store and reload the state after every event, as a
        service keeping state in a store would (proves the serialised state is complete).
    :return: a DataFrame like ``evaluate_policy(...).points``: user_id, point_key, decision, metrics.
    """
    import pandas as pd

    from interestgym.runtime.state import Event, UserState

    def store(state: Any) -> Any:
        if serialise == "bytes":
            return UserState.from_bytes(state.to_bytes(), dim=policy.dim)
        if serialise == "json":
            return UserState.from_json(state.to_json(), dim=policy.dim)
        return state

    events = dataset.events
    items = dataset.items
    item_ids = items["item_id"].astype(str).to_numpy()
    item_cat = items["category"].fillna("").astype(str).to_numpy()
    index = {iid: i for i, iid in enumerate(item_ids)}
    emb = data.embeddings
    decision_of_row = {int(r): d for d, r in enumerate(data.decision_event_row)}
    users = [str(u) for u in (data.user_ids if users is None else users)]
    ev_user = events["user_id"].astype(str).to_numpy()
    starts = {}
    for i, u in enumerate(ev_user):  # events are sorted by user: first / last row of each user
        if u not in starts:
            starts[u] = [i, i + 1]
        else:
            starts[u][1] = i + 1
    ts_col = events["ts"].to_numpy(np.int64)
    action_col = events["action"].astype(str).to_numpy()
    value_col = events["value"].to_numpy(np.float64)
    hour_col = events["hour"].to_numpy(np.int64)
    weekday_col = events["weekday"].to_numpy(np.int64)
    item_col = events["item_id"].astype(str).to_numpy()
    user_pos = {u: i for i, u in enumerate(data.user_ids)}
    rows_out: list[dict[str, Any]] = []
    for user in users:
        state = policy.new_state()
        lo, hi = starts[user]
        first_decision = int(data.user_decision_start[user_pos[user]])
        for row in range(lo, hi):
            item = index.get(item_col[row], -1)
            event = Event(ts=int(ts_col[row]), action=str(action_col[row]), item_vector=emb[item] if item >= 0 else None,
                          value=float(value_col[row]), category=str(item_cat[item]) if item >= 0 else "",
                          hour=int(hour_col[row]), weekday=int(weekday_col[row]))
            n_before = state.counter("n_decisions")
            state = store(policy.update(state, event))
            is_decision = state.counter("n_decisions") > n_before
            d = decision_of_row.get(row)
            if is_decision != (d is not None):
                raise AssertionError(f"event row {row} of user {user}: runtime decision={is_decision}, replay decision={d is not None}")
            if d is None:
                continue
            for point in range(int(data.decision_point_start[d]), int(data.decision_point_end[d])):
                a, b = int(data.point_offsets[point]), int(data.point_offsets[point + 1])
                cand = data.point_candidates[a:b]
                state, metrics = policy.record_outcome(
                    state, emb[cand], data.point_labels[a:b], candidate_ids=item_ids[cand],
                    candidate_categories=item_cat[cand], hour=int(data.point_slot[point]) * 6,
                )
                state = store(state)
                if metrics is None:
                    raise AssertionError(f"scoring point {data.point_key[point]}: not scorable by the runtime")
                rows_out.append({"user_id": user, "point_key": str(data.point_key[point]), "decision": d - first_decision, **metrics})
    return pd.DataFrame(rows_out)
