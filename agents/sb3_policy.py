"""Loading a trained PPO run as a :class:`~interestgym.envs.policies.Policy`.

The env's action box is [-1, 1]^4 (component u means the strength (u + 1) / 2), so SB3's Gaussian
starts at strength 0.5 and "clip to the box" is the whole action transform. A policy from a run
applies, like SB3's ``predict``: VecNormalize's observation normalisation (frozen statistics), the
deterministic actor (Gaussian mean), clipping to the box.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from interestgym.envs.policies import ModelPolicy
from stable_baselines3.common.vec_env import VecNormalize

from interestgym.core.interest import ScoringConfig
from interestgym.errors import ArtifactError


def load_vecnormalize(path: str | Path) -> VecNormalize:
    """A VecNormalize pickle (written by training) without an env attached, frozen for inference."""
    try:
        with open(path, "rb") as fh:
            norm = pickle.load(fh)
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot read the VecNormalize statistics: {exc}") from None
    norm.training = False
    norm.norm_reward = False
    return norm


def policy_from_model(model: Any, vecnorm: VecNormalize | None, *, name: str = "ppo", deterministic: bool = True,
                      scoring: ScoringConfig | None = None) -> ModelPolicy:
    """Wrap a PPO model (+ its observation normaliser and fixed scoring terms) as a Policy."""
    transform = vecnorm.normalize_obs if vecnorm is not None and vecnorm.norm_obs else None
    return ModelPolicy(model, deterministic=deterministic, obs_transform=transform, name=name, scoring=scoring)


def load_run_policy(run_dir: str | Path, which: str = "best", *, device: str = "cpu", name: str = "ppo") -> ModelPolicy:
    """The ``best`` or ``final`` model of a training run as a Policy (with the run's fixed scoring terms).

    :raises ArtifactError: when the run has no such model.
    """
    from stable_baselines3 import PPO

    folder = Path(run_dir) / which
    model_path = folder / "model.zip"
    if not model_path.is_file():
        raise ArtifactError(f"{model_path}: no {which} model in this run (train it with `interestgym train`)")
    try:
        model = PPO.load(str(model_path), device=device)
    except Exception as exc:
        raise ArtifactError(f"{model_path}: cannot load the PPO model: {exc}") from None
    norm_path = folder / "vecnormalize.pkl"
    vecnorm = load_vecnormalize(norm_path) if norm_path.is_file() else None
    return policy_from_model(model, vecnorm, name=name, scoring=run_scoring(run_dir))


def run_scoring(run_dir: str | Path) -> ScoringConfig:
    """The agent's fixed ScoringConfig recorded in a run's config.json (plain scoring if absent)."""
    import json

    path = Path(run_dir) / "config.json"
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read the run configuration: {exc}") from None
    return ScoringConfig(**conf.get("agent_scoring", {}))
