"""The one replay loop: many users in lock-step through the :class:`~interestgym.envs.engine.ReplayEngine`.

:func:`replay_users` is what the batched evaluator (:func:`interestgym.envs.vector.evaluate_policy`),
the tracking error of ``evaluate`` and the report's user timelines iterate over. Every active row
observes its current decision, the policy acts on all rows at once, the engine steps them, and a row
whose user is finished takes the next user in the queue, until the queue is empty. Rows are
independent (see the engine), so the numbers do not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from interestgym.envs.engine import ReplayEngine, StepOutput
from interestgym.envs.replay_data import ReplayData

from interestgym.core.interest import ScoringConfig
from interestgym.errors import InterestGymError
from interestgym.progress import progress_bar


class ReplayStep(NamedTuple):
    """One lock-step of :func:`replay_users`.

    ``rows``: the engine rows that stepped; ``observations``: what the policy saw (len(rows), N_FEATURES);
    ``output``: the engine's :class:`StepOutput` (aligned with ``rows``); ``engine``: the engine, whose
    state arrays (``long_term[rows]`` ...) hold the rows' state after this step's update.
    """

    rows: np.ndarray
    observations: np.ndarray
    output: StepOutput
    engine: ReplayEngine


def user_queue(data: ReplayData, users: Sequence[str] | None) -> np.ndarray:
    """Indices into ``data.user_ids`` of ``users`` (every user with a decision when None)."""
    if users is None:
        return np.arange(data.n_users)
    index = {u: i for i, u in enumerate(data.user_ids)}
    missing = [u for u in users if str(u) not in index]
    if missing:
        raise InterestGymError(f"users {missing[:5]} have no decision in split {data.spec.split!r}")
    return np.array([index[str(u)] for u in users], dtype=np.int64)


def replay_users(data: ReplayData, policy: Any, *, users: Sequence[str] | None = None, batch_size: int = 1024,
                 metric: str = "ndcg@10", progress: bool | None = None, desc: str | None = None) -> Iterator[ReplayStep]:
    """Replay ``users`` (default: all of ``data``) once with ``policy``, ``batch_size`` users at a time.

    :param policy: ``act(observations) -> actions`` in [-1, 1]^4, with an optional fixed ``scoring``.
    :param metric: the engine's reward metric (its step mean is ``output.metrics[metric]``).
    :param progress: a bar over decisions (None: on a terminal a bar, otherwise log lines).
    :yield: one :class:`ReplayStep` per lock-step.
    """
    queue = user_queue(data, users)
    n_slots = int(max(1, min(batch_size, len(queue))))
    engine = ReplayEngine(data, n_slots, metric=metric)
    engine.set_scoring(slice(0, n_slots), getattr(policy, "scoring", None) or ScoringConfig())
    active = np.arange(min(n_slots, len(queue)))
    engine.start(active, queue[: len(active)])
    next_user = len(active)
    total = int((data.user_decision_end[queue] - data.user_decision_start[queue]).sum())
    label = desc or f"replaying {getattr(policy, 'name', 'policy')}"
    with progress_bar(total=total, desc=label, unit="decision", enabled=progress) as bar:
        while len(active):
            obs = engine.observe(active)
            actions = np.asarray(policy.act(obs), dtype=np.float32).reshape(len(active), 4)
            out = engine.step(active, actions)
            yield ReplayStep(active, obs, out, engine)
            bar.update(len(active))
            finished = active[out.done]
            active = active[~out.done]
            if len(finished) and next_user < len(queue):
                take = finished[: len(queue) - next_user]
                engine.start(take, queue[next_user: next_user + len(take)])
                next_user += len(take)
                active = np.concatenate([active, take])
