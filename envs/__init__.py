"""Replay environments (imported as ``interestgym.envs``).

Importing this package registers ``interestgym/InterestReplay-v0`` with Gymnasium::

    import gymnasium as gym
    import interestgym.envs  # noqa: F401
    env = gym.make("interestgym/InterestReplay-v0", dataset="runs/data/ml-100k", split="train")

Public names (imported lazily so that ``import interestgym.envs`` stays light; the vector env and
evaluator load stable-baselines3 and torch only when used):

* :class:`InterestReplayEnv` (``interestgym.envs.replay``): the single-user Gymnasium env.
* :class:`InterestReplayVecEnv`, :func:`evaluate_policy`, :class:`EvaluationResult`
  (``interestgym.envs.vector``): many users in lock-step, for SB3 training and batched evaluation.
* :class:`Policy` and simple rules (``interestgym.envs.policies``).
* :func:`load_replay_data`, :class:`ProtocolSpec` (``interestgym.envs.replay_data``): the precomputed
  replay arrays and candidate sets.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym

ENV_ID = "interestgym/InterestReplay-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="interestgym.envs.replay:InterestReplayEnv")

_LAZY = {
    "InterestReplayEnv": "interestgym.envs.replay",
    "InterestReplayVecEnv": "interestgym.envs.vector",
    "evaluate_policy": "interestgym.envs.vector",
    "EvaluationResult": "interestgym.envs.vector",
    "Policy": "interestgym.envs.policies",
    "ConstantPolicy": "interestgym.envs.policies",
    "FixedEMAPolicy": "interestgym.envs.policies",
    "StaticPolicy": "interestgym.envs.policies",
    "AlwaysReplacePolicy": "interestgym.envs.policies",
    "ModelPolicy": "interestgym.envs.policies",
    "load_replay_data": "interestgym.envs.replay_data",
    "ProtocolSpec": "interestgym.envs.replay_data",
    "ReplayData": "interestgym.envs.replay_data",
}

__all__ = ["ENV_ID", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interestgym.envs' has no attribute {name!r}")
