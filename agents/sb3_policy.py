"""A PPO model (+ its observation normaliser) as a :class:`~interestgym.envs.policies.Policy`.

Loading one from a run folder: :func:`interestgym.agents.run_folder.load_run_policy`.

The env's action box is [-1, 1]^4 (component u means the strength (u + 1) / 2), so SB3's Gaussian
starts at strength 0.5 and "clip to the box" is the whole action transform. A policy from a run
applies, like SB3's ``predict``: VecNormalize's observation normalisation (frozen statistics), the
deterministic actor (Gaussian mean), clipping to the box.
"""

from __future__ import annotations

from typing import Any

from interestgym.envs.policies import ModelPolicy
from stable_baselines3.common.vec_env import VecNormalize

from interestgym.core.interest import ScoringConfig


def policy_from_model(model: Any, vecnorm: VecNormalize | None, *, name: str = "ppo", deterministic: bool = True,
                      scoring: ScoringConfig | None = None) -> ModelPolicy:
    """Wrap a PPO model (+ its observation normaliser and fixed scoring terms) as a Policy."""
    transform = vecnorm.normalize_obs if vecnorm is not None and vecnorm.norm_obs else None
    return ModelPolicy(model, deterministic=deterministic, obs_transform=transform, name=name, scoring=scoring)
