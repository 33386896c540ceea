"""The one replay loop: many users in lock-step through the :class:`~interestgym.envs.engine.ReplayEngine`.

:func:`replay_users` is what the batched evaluator (:func:`interestgym.envs.vector.evaluate_policy`),
the tracking error of ``evaluate`` and the report's user timelines iterate over. Every active row
observes its current decision, the policy acts on all rows at once, the engine steps them, and a row
whose user is finished takes the next user in the queue, until the queue is empty. Rows are
independent (see the engine), so the numbers do not depend on the batch size.

:func:`replay_users_many` replays the same users with many policies at once (rows = policies x
users, each policy acting on its own rows): baseline tuning scores a whole grid in one replay, with
per-policy numbers identical to :func:`replay_users` one policy at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from interestgym.envs.engine import ReplayEngine, StepOutput
from interestgym.envs.replay_data import ReplayData

from interestgym.core.interest import ScoringConfig
from interestgym.core.protocol import action_to_strengths
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

    :param policy: ``act(observations) -> actions`` in [-1, 1]^4, with an optional fixed ``scoring``; a
        policy with ``act_at(observations, decisions)`` is called that way instead (``decisions``: the
        global decision index of every row, for policies that read a per-decision signal).
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
    act_at = getattr(policy, "act_at", None)
    with progress_bar(total=total, desc=label, unit="decision", enabled=progress) as bar:
        while len(active):
            obs = engine.observe(active)
            # a policy that needs more than the observation (e.g. a per-decision signal) gets the decisions
            raw = act_at(obs, engine.cursor[active]) if act_at is not None else policy.act(obs)
            actions = np.asarray(raw, dtype=np.float32).reshape(len(active), -1)
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


class ManyStep(NamedTuple):
    """One lock-step of :func:`replay_users_many`: like :class:`ReplayStep`, plus ``policy`` (the index
    into the policies of every stepped row, aligned with ``rows``)."""

    rows: np.ndarray
    policy: np.ndarray
    observations: np.ndarray
    output: StepOutput
    engine: ReplayEngine


def engine_signature(scoring: ScoringConfig | None) -> tuple[bool, bool]:
    """Which optional engine state a policy's scoring needs (category counts, time-slot profiles).

    Policies are batched in one engine only when they need the same state: an engine scores with the
    optional terms as soon as one of its rows uses them (a third profile in the similarity product),
    so mixing would change how the other rows' cosines are computed, if not their value.
    """
    scoring = scoring or ScoringConfig()
    return (scoring.beta_cat != 0, scoring.beta_ctx != 0)


def replay_users_many(data: ReplayData, policies: Sequence[Any], *, users: Sequence[str] | None = None,
                      metric: str = "ndcg@10", max_rows: int = 1024, progress: bool | None = None,
                      desc: str | None = None, lean: bool = False) -> Iterator[ManyStep]:
    """Replay ``users`` once with each of ``policies``, all in lock-step: one engine row per (policy, user).

    Each policy acts on its own rows only (one ``act`` call per policy and step, on all its active
    rows, as :func:`replay_users` calls it), and every row carries its policy's scoring configuration.
    Rows are independent in the engine, so every policy's numbers are exactly those of
    :func:`replay_users` with that policy alone, for policies whose ``act`` is row-wise (every
    baseline rule is). Policies needing different optional engine state (:func:`engine_signature`)
    run in separate engines, and at most ``max_rows`` rows are replayed at once (a policy's users
    are queued when one policy alone has more). ``lean``: lean engines (see
    :class:`~interestgym.envs.engine.ReplayEngine`), for policies that read no skipped feature.

    :yield: one :class:`ManyStep` per lock-step and engine.
    """
    policies = list(policies)
    queue = user_queue(data, users)
    if not policies or not len(queue):
        return
    groups: dict[tuple[bool, bool], list[int]] = {}
    for k, policy in enumerate(policies):
        groups.setdefault(engine_signature(getattr(policy, "scoring", None)), []).append(k)
    max_rows = max(1, int(max_rows))
    slots = int(min(len(queue), max_rows))  # rows per policy
    per_engine = max(1, max_rows // slots)  # policies per engine
    total = int((data.user_decision_end[queue] - data.user_decision_start[queue]).sum()) * len(policies)
    label = desc or f"replaying {len(policies)} policies"
    with progress_bar(total=total, desc=label, unit="decision", enabled=progress) as bar:
        for members in groups.values():
            for lo in range(0, len(members), per_engine):
                chunk = members[lo: lo + per_engine]
                for step in _replay_block(data, [policies[k] for k in chunk], queue, slots, metric, lean):
                    bar.update(len(step.rows))
                    yield step._replace(policy=np.asarray(chunk, dtype=np.int64)[step.policy])


def _replay_block(data: ReplayData, policies: list[Any], queue: np.ndarray, slots: int, metric: str,
                  lean: bool = False) -> Iterator[ManyStep]:
    """Rows ``k * slots ... (k + 1) * slots - 1`` replay ``queue`` with ``policies[k]`` (policy indices local)."""
    n_pol = len(policies)
    engine = ReplayEngine(data, n_pol * slots, metric=metric, lean=lean)
    for k, policy in enumerate(policies):
        engine.set_scoring(slice(k * slots, (k + 1) * slots), getattr(policy, "scoring", None) or ScoringConfig())
    first = min(slots, len(queue))
    active = (np.arange(n_pol)[:, None] * slots + np.arange(first)[None, :]).ravel()
    engine.start(active, np.tile(queue[:first], n_pol))
    next_user = np.full(n_pol, first, dtype=np.int64)  # every policy's position in the user queue
    while len(active):
        owner = active // slots
        obs = engine.observe(active)
        actions = np.empty((len(active), 4), dtype=np.float32)
        # active stays sorted, so each policy's rows are one contiguous run
        cuts = np.searchsorted(owner, np.arange(n_pol + 1))
        for k in range(n_pol):
            a, b = cuts[k], cuts[k + 1]
            if b > a:
                actions[a:b] = np.asarray(policies[k].act(obs[a:b]), dtype=np.float32).reshape(b - a, 4)
        out = engine.step(active, actions)
        yield ManyStep(active, owner, obs, out, engine)
        finished = active[out.done]
        active = active[~out.done]
        if len(finished) and (next_user < len(queue)).any():
            take_rows, take_users = [], []
            for k in np.unique(finished // slots):
                free = finished[finished // slots == k][: len(queue) - next_user[k]]
                take_rows.append(free)
                take_users.append(queue[next_user[k]: next_user[k] + len(free)])
                next_user[k] += len(free)
            rows = np.concatenate(take_rows)
            if len(rows):
                engine.start(rows, np.concatenate(take_users))
                active = np.sort(np.concatenate([active, rows]))


class SharedStep(NamedTuple):
    """The scoring points one lock-step of :func:`replay_shared` scored: ``policy`` (index into the
    policies), ``point_index`` (global scoring-point index) and ``value`` (the metric there), aligned."""

    policy: np.ndarray
    point_index: np.ndarray
    value: np.ndarray


def replay_shared(data: ReplayData, policies: Sequence[Any], *, users: Sequence[str] | None = None,
                  metric: str = "ndcg@10", max_rows: int = 1024, progress: bool | None = None,
                  desc: str | None = None) -> Iterator[SharedStep]:
    """:func:`replay_users_many` for a grid of rules, replaying each distinct interest state once.

    Rules with equal ``state_key()`` (e.g. a grid over w and p at fixed a_L, a_S) move the state alike:
    one lean engine row per (state, user) is stepped with the first of them, and every other one
    ranks the same scoring points with its own weights (:meth:`ReplayEngine.rescore`). Each rule's
    values equal its own :func:`replay_users` replay's to the bit. That the members of a state do move
    it alike is checked at every decision: a rule whose a_L or a_S differs from its state's, or whose
    action reads a feature the lean engine skips (NaN), raises :class:`InterestGymError`. Policies
    without ``state_key`` get a state of their own.

    :yield: one :class:`SharedStep` per lock-step and engine.
    """
    policies = list(policies)
    states: dict[Any, list[int]] = {}
    for k, policy in enumerate(policies):
        key = policy.state_key() if callable(getattr(policy, "state_key", None)) else ("policy", k)
        states.setdefault(key, []).append(k)
    members = list(states.values())
    first = np.array([m[0] for m in members], dtype=np.int64)  # the policy that steps each state
    key = metric.strip().lower()
    label = desc or f"replaying {len(policies)} policies ({len(members)} states)"
    for step in replay_users_many(data, [policies[m[0]] for m in members], users=users, metric=metric,
                                  max_rows=max_rows, progress=progress, desc=label, lean=True):
        out = step.output
        if np.isnan(out.strengths).any():
            raise InterestGymError(f"{_who(policies[first[step.policy[np.isnan(out.strengths).any(axis=1)][0]]])} "
                                   "acts on a feature a lean replay does not compute; tune it with the full engine")
        parts_policy = [first[step.policy[out.point_row]]]
        parts_point, parts_value = [out.point_index], [out.point_metrics[key]]
        groups: list[tuple[np.ndarray, list[tuple[np.ndarray, ScoringConfig]]]] = []
        for g in np.unique(step.policy):
            if len(members[g]) == 1:
                continue
            selected = step.policy == g
            obs = step.observations[selected]
            moved = out.strengths[selected, :2]
            point_index = out.point_index[selected[out.point_row]]
            jobs = []
            for k in members[g][1:]:
                actions = np.asarray(policies[k].act(obs), dtype=np.float32).reshape(len(obs), -1)
                if np.isnan(actions).any():
                    raise InterestGymError(f"{_who(policies[k])} acts on a feature a lean replay does not compute; "
                                           "tune it with the full engine")
                if not np.array_equal(action_to_strengths(actions[:, :2]), moved):
                    raise InterestGymError(f"{_who(policies[k])} and {_who(policies[members[g][0]])} share a state_key "
                                           "but update the profiles with different strengths")
                jobs.append((actions, getattr(policies[k], "scoring", None) or ScoringConfig()))
                parts_policy.append(np.full(len(point_index), k, dtype=np.int64))
                parts_point.append(point_index)
            groups.append((selected, jobs))
        parts_value += step.engine.rescore(out, groups) if groups else []
        yield SharedStep(np.concatenate(parts_policy), np.concatenate(parts_point), np.concatenate(parts_value))


def _who(policy: Any) -> str:
    return repr(policy) if hasattr(policy, "params") else getattr(policy, "name", type(policy).__name__)
