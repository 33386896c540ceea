"""The Policy protocol and two adapters (constant strengths, an SB3 model).

The named update rules (the baselines, with their grids) live in one place: :mod:`interestgym.agents.rules`.

A policy maps a batch of observations (n, N_FEATURES) to actions (n, 4) in the env's action box
[-1, 1]^4 (see :func:`~interestgym.core.protocol.action_to_strengths`: the action u encodes the
strength ``(u + 1) / 2`` in [0, 1]), or (n, 4 + j) with changes of the rule's own state in the engine's
layout (:data:`~interestgym.core.protocol.ENV_ACTION_NAMES`: e.g. ``bayesian_category``'s count gain). It may carry a fixed :class:`~interestgym.core.interest.ScoringConfig`
(Bayesian category term, time-of-day context term, a fixed popularity weight), which the env / evaluator
applies to the policy's own replayed state. Policies are **stateless**: everything a rule needs is in
the observation (:class:`~interestgym.core.features.FeatureView` decodes gaps, counts, hours, streaks),
so one policy object serves any number of users at once.

Writing a baseline::

    class TimeDecayPolicy:
        name = "time_decay"
        scoring = ScoringConfig()

        def __init__(self, half_life_s: float = 86400.0) -> None:
            self.half_life_s = half_life_s

        def act(self, observations):
            view = FeatureView(observations)
            a = 1.0 - 0.5 ** (view.decision_gap_seconds / self.half_life_s)   # long gap -> big step
            a = np.where(view["long_empty"] > 0, 1.0, np.clip(a, 0.05, 1.0))
            return strengths_to_action(np.stack([a, np.ones_like(a), np.full_like(a, 0.3), np.zeros_like(a)], 1))
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from interestgym.core.interest import ScoringConfig
from interestgym.core.numeric import clip
from interestgym.core.protocol import (
    RESIDUAL_ACTION_NAMES,
    action_to_strengths,
    strengths_to_action,
)
from interestgym.core.rules import compose_residual

__all__ = ["ConstantPolicy", "ModelPolicy", "Policy", "ResidualPolicy", "action_to_strengths", "strengths_to_action"]


@runtime_checkable
class Policy(Protocol):
    """What the env's reference rule, the vector env's evaluator and the baselines share."""

    #: Short name used in result tables.
    name: str
    #: Fixed scoring configuration applied to this policy's replayed state.
    scoring: ScoringConfig

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Actions (n, 4) float32 in [-1, 1] for observations (n, N_FEATURES); (n, 4 + j) with changes in the
        engine's layout."""
        ...


class ConstantPolicy:
    """The same strengths (a_L, a_S, w, p) in [0, 1] at every decision."""

    def __init__(self, long_strength: float, short_strength: float, short_weight: float = 0.5,
                 popularity_weight: float = 0.0, *, name: str = "constant", scoring: ScoringConfig | None = None) -> None:
        self.strengths = np.array([long_strength, short_strength, short_weight, popularity_weight], dtype=np.float64)
        if np.any((self.strengths < 0) | (self.strengths > 1)):
            raise ValueError(f"strengths {self.strengths.tolist()}: expected numbers in [0, 1]")
        self.name = name
        self.scoring = scoring or ScoringConfig()

    def act(self, observations: np.ndarray) -> np.ndarray:
        n = np.asarray(observations).reshape(-1, np.shape(observations)[-1]).shape[0]
        return np.tile(strengths_to_action(self.strengths), (n, 1))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.strengths.tolist()})"


class ModelPolicy:
    """Adapter: anything with SB3's ``predict(obs, deterministic=...)`` (a PPO model) as a Policy.

    :param model: e.g. ``stable_baselines3.PPO``.
    :param deterministic: use the mean action (evaluation).
    :param obs_transform: optional callable applied to observations first (e.g. frozen VecNormalize).
    """

    def __init__(self, model: Any, *, deterministic: bool = True, obs_transform: Any = None, name: str = "ppo",
                 scoring: ScoringConfig | None = None) -> None:
        self.model = model
        self.deterministic = deterministic
        self.obs_transform = obs_transform
        self.name = name
        self.scoring = scoring or ScoringConfig()

    def act(self, observations: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations, dtype=np.float32)
        if self.obs_transform is not None:
            obs = self.obs_transform(obs)
        actions, _ = self.model.predict(obs, deterministic=self.deterministic)
        return clip(np.asarray(actions, dtype=np.float32).reshape(len(obs), -1), -1.0, 1.0)


class ResidualPolicy:
    """A reference rule plus a learned change: the form PPO trains in by default.

    ``act(obs)`` = ``[clip(reference.act(obs) + change[:, :4], -1, 1), clip(rule's own + change[:, 4:], -1, 1)]``
    (:func:`~interestgym.core.rules.compose_residual`): the first four components move the rule's (a_L, a_S,
    w, p), the fifth changes the category counts' keep factor
    (:func:`interestgym.core.transition.apply_keep_change`), the later ones the levers, each added to the
    rule's own change in that column where it has one (``bayesian_category``'s count gain). A zero change is the rule itself, to the
    bit (``x + 0 == x``; the rule's own scoring configuration is kept): the untrained agent starts
    exactly at the tuned reference and learns when to deviate from it.

    :param reference: the rule (``act``, ``scoring``, ``name``).
    :param change: the learned part: anything with ``act(obs) -> (n, len(names))`` in [-1, 1] (a
        ModelPolicy), or None for a zero change.
    :param names: the change's components (:func:`interestgym.core.protocol.residual_action_names`):
        (a_L, a_S, w, p, keep_change), then ``tracker_change`` with a sequence tracker (the tracker's
        weight), ``gain_change`` with the category gain lever (what an event adds to its category's count)
        and ``context_change`` with the context lever (the time-slot profile's update rate).
    """

    def __init__(self, reference: Any, change: Any = None, *, name: str = "ppo",
                 names: tuple[str, ...] = RESIDUAL_ACTION_NAMES) -> None:
        self.reference = reference
        self.change = change
        self.name = name
        self.scoring = reference.scoring
        self.names = tuple(names)
        self.n_changes = len(self.names)

    def compose(self, observations: np.ndarray, change: np.ndarray) -> np.ndarray:
        """The env action (engine layout: :data:`~interestgym.core.protocol.ENV_ACTION_NAMES`) for the
        learned ``change`` (n, len(names)) at ``observations``."""
        return compose_residual(self.reference.act(observations), change, self.names)

    def act(self, observations: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations, dtype=np.float32)
        obs = obs[None, :] if obs.ndim == 1 else obs
        change = np.zeros((len(obs), self.n_changes), dtype=np.float32) if self.change is None else self.change.act(obs)
        return self.compose(obs, change)
