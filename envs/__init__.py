"""Replay environments (imported as ``interestgym.envs``).

``import interestgym`` registers ``interestgym/InterestReplay-v0`` with Gymnasium (see
:func:`interestgym.register_envs`), with a ``vector_entry_point`` for ``gymnasium.make_vec``::

    import gymnasium as gym
    import interestgym
    env = gym.make("interestgym/InterestReplay-v0", dataset="runs/data/ml-100k", split="train")
    envs = gym.make_vec("interestgym/InterestReplay-v0", num_envs=64, dataset="runs/data/ml-100k")

Public names (imported lazily so that ``import interestgym.envs`` stays light; the vector env and
evaluator load stable-baselines3 and torch only when used):

* :class:`InterestReplayEnv` (``interestgym.envs.replay``): the single-user Gymnasium env.
* :class:`InterestReplayVecEnv`, :func:`evaluate_policy`, :class:`EvaluationResult`
  (``interestgym.envs.vector``): many users in lock-step, for SB3 training and batched evaluation.
* :class:`Policy`, :class:`ConstantPolicy`, :class:`ModelPolicy` (``interestgym.envs.policies``); the named
  rules live in :mod:`interestgym.agents.rules`.
* :func:`load_replay_data`, :class:`ProtocolSpec` (``interestgym.envs.replay_data``): the precomputed
  replay arrays and candidate sets.
"""

from __future__ import annotations

import importlib
from typing import Any

from interestgym import ENV_ID, register_envs

register_envs()

_LAZY = {
    "InterestReplayEnv": "interestgym.envs.replay",
    "InterestReplayVecEnv": "interestgym.envs.vector",
    "InterestReplayVectorEnv": "interestgym.envs.gym_vector",
    "replay_users": "interestgym.envs.rollout",
    "evaluate_policy": "interestgym.envs.vector",
    "EvaluationResult": "interestgym.envs.vector",
    "Policy": "interestgym.envs.policies",
    "ConstantPolicy": "interestgym.envs.policies",
    "ModelPolicy": "interestgym.envs.policies",
    "load_replay_data": "interestgym.envs.replay_data",
    "ProtocolSpec": "interestgym.envs.replay_data",
    "ReplayData": "interestgym.envs.replay_data",
}

__all__ = ["ENV_ID", *_LAZY]  # noqa: PLE0604  (a dict unpacks to its keys: strings)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'interestgym.envs' has no attribute {name!r}")
