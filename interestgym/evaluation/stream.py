"""Evaluation in bounded memory: a split's users streamed in chunks, only per-user results kept.

``interestgym evaluate`` replays every policy on every user of a split. Holding the split's replay
arrays and every policy's per-point table at once grows with the log (~0.5 GB per 10k users on the
synthetic data); here the users come in chunks (:func:`~interestgym.envs.replay_build.iter_replay_chunks`),
each chunk is scored by every policy, and only per-user means survive the chunk
(:class:`UserScores`).

The numbers are the whole split's, exactly: a user's scoring points are all in one chunk, in the same
order, and :func:`~interestgym.core.stats.per_user_means` adds a user's values in that order, so a
chunk's per-user means are the whole split's; chunks come in sorted user order, which is the order of
the whole split's per-user arrays, so concatenating them gives the same arrays (and the same bootstrap
intervals).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interestgym.core.stats import per_user_means


@dataclass
class UserScores:
    """Per-user means of one policy, added up chunk by chunk (chunks of disjoint users in sorted order).

    ``users``: the users with a scoring point; ``per_user[m]``: their mean of metric ``m``;
    ``by_target[t]``: (users, means of the selection metric, points) over the points whose target is a
    repeat (``t = "repeat"``) or new (``"new"``); ``extra``: more per-user series aligned with ``users``
    (tracking error).
    """

    metric: str
    users_parts: list[np.ndarray] = field(default_factory=list)
    per_user_parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    extra_parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    target_parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = field(
        default_factory=lambda: {"repeat": ([], []), "new": ([], [])})
    target_points: dict[str, int] = field(default_factory=lambda: {"repeat": 0, "new": 0})
    n_points: int = 0

    def add_points(self, points: pd.DataFrame, metrics: Iterable[str]) -> np.ndarray:
        """Count in one chunk's per-point table (:attr:`EvaluationResult.points` columns); return the
        chunk's scored users (sorted)."""
        uid = points["user_id"].to_numpy()
        if "repeat" in points.columns:
            repeat = points["repeat"].to_numpy().astype(bool)
            for target, mask in (("repeat", repeat), ("new", ~repeat)):
                sub_users, sub_means = per_user_means(uid[mask], points[self.metric].to_numpy()[mask])
                self.target_parts[target][0].append(sub_users)
                self.target_parts[target][1].append(sub_means)
                self.target_points[target] += int(mask.sum())
        users, _ = per_user_means(uid, points[self.metric].to_numpy())
        for m in metrics:
            self.per_user_parts.setdefault(m, []).append(per_user_means(uid, points[m].to_numpy())[1])
        self.users_parts.append(users)
        self.n_points += len(points)
        return users

    def add_user_values(self, users: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Count in one chunk's per-user means computed elsewhere (the oracle): ``users`` sorted."""
        self.users_parts.append(np.asarray(users))
        for m, v in values.items():
            self.per_user_parts.setdefault(m, []).append(np.asarray(v, dtype=np.float64))

    def add_extra(self, name: str, values: np.ndarray) -> None:
        """A per-user series of the last chunk added, aligned with its users."""
        self.extra_parts.setdefault(name, []).append(np.asarray(values, dtype=np.float64))

    @property
    def users(self) -> np.ndarray:
        return _cat(self.users_parts, str)

    @property
    def per_user(self) -> dict[str, np.ndarray]:
        return {m: _cat(parts, np.float64) for m, parts in self.per_user_parts.items()}

    @property
    def extra(self) -> dict[str, np.ndarray]:
        return {m: _cat(parts, np.float64) for m, parts in self.extra_parts.items()}

    def by_target(self, target: str) -> tuple[np.ndarray, np.ndarray, int]:
        users, means = self.target_parts[target]
        return _cat(users, str), _cat(means, np.float64), self.target_points[target]


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def evaluate_in_chunks(dataset: str | Path | Any, policy: Any, *, split: str = "test", embeddings: str | None = None,
                       protocol: Any = None, metric: str = "ndcg@10", chunk_users: int | None = None,
                       users: Iterable[str] | None = None, progress: bool | None = None) -> UserScores:
    """:func:`~interestgym.envs.vector.evaluate_policy` of ``policy`` over every user of ``split``, the
    users streamed ``chunk_users`` at a time (default
    :data:`~interestgym.envs.replay_build.DEFAULT_CHUNK_USERS`): the per-user means of every metric,
    equal to those of one whole-split evaluation, in one chunk's memory.

    :param protocol: a :class:`~interestgym.envs.replay_data.ProtocolSpec`, a dict of its fields or a
        protocol name (None: the defaults).
    """
    from interestgym.envs.replay_build import DEFAULT_CHUNK_USERS, iter_replay_chunks
    from interestgym.envs.replay_data import ProtocolSpec
    from interestgym.envs.vector import evaluate_policy

    spec = ProtocolSpec.resolve(protocol, split)
    scores = UserScores(metric=metric.strip().lower())
    for chunk in iter_replay_chunks(dataset, embeddings, spec, chunk_users=chunk_users or DEFAULT_CHUNK_USERS, users=users,
                                    progress=progress):
        if chunk.n_users == 0:
            continue
        res = evaluate_policy(chunk, policy, metric=metric, record_features=False, progress=False)
        scores.add_points(res.points, res.metrics)
    return scores
