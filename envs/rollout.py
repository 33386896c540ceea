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

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from interestgym.envs.engine import (
    LEAN_SKIPPED_FEATURES,
    PointScores,
    ReplayEngine,
    StepOutput,
    check_scoring_kept,
    member_strengths,
    rank_points,
    score_weights,
)
from interestgym.envs.replay_data import ReplayData

from interestgym.core.interest import ScoringConfig
from interestgym.core.protocol import (
    ENV_ACTION_NAMES,
    action_to_strengths,
    stack_actions,
)
from interestgym.errors import InterestGymError
from interestgym.progress import progress_bar


class ReplayStep(NamedTuple):
    """One lock-step of :func:`replay_users`.

    ``rows``: the engine rows that stepped; ``observations``: what the policy saw (len(rows), N_FEATURES + the
    data's extra observations);
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
                 metric: str = "ndcg@10", progress: bool | None = None, desc: str | None = None,
                 also: Sequence[str] = ()) -> Iterator[ReplayStep]:
    """Replay ``users`` (default: all of ``data``) once with ``policy``, ``batch_size`` users at a time.

    :param policy: ``act(observations) -> actions`` in [-1, 1]^4 (or wider: changes in the engine's layout),
        with an optional fixed ``scoring``; a
        policy with ``act_at(observations, decisions)`` is called that way instead (``decisions``: the
        global decision index of every row, for policies that read a per-decision signal).
    :param metric: the engine's reward metric (its step mean is ``output.metrics[metric]``), which the policy observes.
    :param also: more metrics to measure (:class:`~interestgym.envs.engine.ReplayEngine`'s ``also``).
    :param progress: a bar over decisions (None: on a terminal a bar, otherwise log lines).
    :yield: one :class:`ReplayStep` per lock-step.
    """
    queue = user_queue(data, users)
    n_slots = int(max(1, min(batch_size, len(queue))))
    engine = ReplayEngine(data, n_slots, metric=metric, also=also)
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
            actions = checked_actions(raw, len(active), policy)
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


class LeanFeatureError(InterestGymError):
    """A policy acted on a feature a lean replay (tuning) does not compute (NaN there): e.g. ``reward_ema``,
    ``long_metric_ema`` (:data:`~interestgym.envs.engine.LEAN_SKIPPED_FEATURES`); replay it with the full engine."""


def checked_actions(raw: Any, n: int, policy: Any, *, finite: bool = True) -> np.ndarray:
    """``policy``'s actions for ``n`` observations as an (n, k >= 4) float32 array, or an :class:`InterestGymError`
    naming the policy, the shape or value found and what was expected (a user's own rule that returns strengths of
    one row, three columns or NaN would otherwise fail deep in the engine, or score NaN without a word). ``finite=False``:
    the shape only (a lean replay's NaN features give NaN actions, which :func:`replay_shared` names itself)."""
    try:
        actions = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:  # e.g. None, strings, ragged rows
        raise InterestGymError(f"policy {_name(policy)!r}: act() returned {type(raw).__name__} that is not an array of numbers "
                               f"({exc}); expected ({n}, 4) actions in [-1, 1]") from None
    if actions.ndim == 1 and n == 1:  # one observation's actions as a vector
        actions = actions[None, :]
    if actions.ndim != 2 or actions.shape[0] != n or actions.shape[1] < 4:
        raise InterestGymError(f"policy {_name(policy)!r}: act() returned shape {actions.shape} for {n} observations; expected "
                               f"({n}, 4): one row per observation, (a_L, a_S, w, p) as actions in [-1, 1] "
                               "(interestgym.core.protocol.strengths_to_action maps strengths in [0, 1] to them)")
    if actions.shape[1] > len(ENV_ACTION_NAMES):
        raise InterestGymError(f"policy {_name(policy)!r}: act() returned {actions.shape[1]} columns; expected 4 (a_L, a_S, w, "
                               f"p) or, with a residual policy's changes after them, at most {len(ENV_ACTION_NAMES)} "
                               f"({', '.join(ENV_ACTION_NAMES)})")
    if finite and not np.isfinite(actions).all():
        row = int(np.flatnonzero(~np.isfinite(actions).all(axis=1))[0])
        raise InterestGymError(f"policy {_name(policy)!r}: act() returned {actions[row].tolist()} (not finite) for observation "
                               f"{row}; expected actions in [-1, 1]")
    return actions


class ManyStep(NamedTuple):
    """One lock-step of :func:`replay_users_many`: like :class:`ReplayStep`, plus ``policy`` (the index
    into the policies of every stepped row, aligned with ``rows``)."""

    rows: np.ndarray
    policy: np.ndarray
    observations: np.ndarray
    output: StepOutput
    engine: ReplayEngine


def engine_signature(scoring: ScoringConfig | None) -> tuple[bool, bool, bool, bool]:
    """Which optional engine state a policy's scoring needs (category counts, time-slot profiles, category
    counts per time slot, counts of shown candidates).

    Policies are batched in one engine only when they need the same state: an engine scores with the
    optional terms as soon as one of its rows uses them (a third profile in the similarity product),
    so mixing would change how the other rows' cosines are computed, if not their value.
    """
    scoring = scoring or ScoringConfig()
    return (scoring.beta_cat != 0, scoring.beta_ctx != 0, scoring.slot_category_counts, scoring.exposure_counts)


def replay_users_many(data: ReplayData, policies: Sequence[Any], *, users: Sequence[str] | None = None,
                      metric: str = "ndcg@10", max_rows: int = 1024, progress: bool | None = None,
                      desc: str | None = None, lean: bool = False, rank: bool = True) -> Iterator[ManyStep]:
    """Replay ``users`` once with each of ``policies``, all in lock-step: one engine row per (policy, user).

    Each policy acts on its own rows only (one ``act`` call per policy and step, on all its active
    rows, as :func:`replay_users` calls it), and every row carries its policy's scoring configuration.
    Rows are independent in the engine, so every policy's numbers are exactly those of
    :func:`replay_users` with that policy alone, for policies whose ``act`` is row-wise (every
    baseline rule is). Policies needing different optional engine state (:func:`engine_signature`)
    run in separate engines, and at most ``max_rows`` rows are replayed at once (a policy's users
    are queued when one policy alone has more). ``lean``: lean engines (see
    :class:`~interestgym.envs.engine.ReplayEngine`), for policies that read no skipped feature;
    ``rank=False`` (lean only): the scoring points are kept unranked (``output.points``, see
    :meth:`~interestgym.envs.engine.ReplayEngine.step`).

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
                for step in _replay_block(data, [policies[k] for k in chunk], queue, slots, metric, lean, rank):
                    bar.update(len(step.rows))
                    yield step._replace(policy=np.asarray(chunk, dtype=np.int64)[step.policy])


def _lean_act(policy: Any, obs: np.ndarray, lean: bool) -> Any:
    """``policy.act(obs)``; on a lean replay's observations (NaN where a feature is skipped), a policy that raises
    instead of acting NaN (e.g. a stable-baselines3 model: its Gaussian refuses NaN means) is one to replay with the full
    engine, as one that acts NaN is (:class:`LeanFeatureError`); any other error is the policy's own."""
    try:
        return policy.act(obs)
    except InterestGymError:
        raise
    except Exception as exc:
        if lean and np.isnan(obs).any():
            raise LeanFeatureError(f"{_who(policy)} raised {type(exc).__name__} on a lean replay's observations, whose "
                                   f"features {', '.join(LEAN_SKIPPED_FEATURES)} are NaN; tune it with the full engine "
                                   "(validation_scorer(..., batched=False))") from exc
        raise


def _replay_block(data: ReplayData, policies: list[Any], queue: np.ndarray, slots: int, metric: str,
                  lean: bool = False, rank: bool = True) -> Iterator[ManyStep]:
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
        # active stays sorted, so each policy's rows are one contiguous run
        cuts = np.searchsorted(owner, np.arange(n_pol + 1))
        actions = stack_actions([checked_actions(_lean_act(policies[k], obs[cuts[k]:cuts[k + 1]], lean),
                                                 int(cuts[k + 1] - cuts[k]), policies[k], finite=False)
                                 for k in range(n_pol) if cuts[k + 1] > cuts[k]])
        out = engine.step(active, actions, rank=rank)
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
    """Scoring points :func:`replay_shared` ranked: ``policy`` (index into the policies),
    ``point_index`` (global scoring-point index) and ``value`` (the metric there), aligned."""

    policy: np.ndarray
    point_index: np.ndarray
    value: np.ndarray


@dataclass
class StateRecord:
    """Decisions of one interest state's replay, kept to rank any rule that shares the state: the
    observations its rows saw, the strengths the state's stepping rule stepped with, and the scoring
    points of those decisions (``points.point_row``: position among these decisions)."""

    observations: np.ndarray  #: (n, N_FEATURES + the data's extra observations) float32
    strengths: np.ndarray  #: (n, 4) the stepped (a_L, a_S, w, p)
    points: PointScores | None  #: None: no scoring point among the decisions
    point_index: np.ndarray  #: (P,) global scoring-point index of each point

    @property
    def nbytes(self) -> int:
        own = sum(a.nbytes for a in (self.observations, self.strengths, self.point_index))
        return int(own + (0 if self.points is None else self.points.nbytes))


class StateCache:
    """Interest states already replayed (``state_key -> [StateRecord]``) on one replay data and user set,
    for :func:`replay_shared` to rank a rule that shares one without replaying it again (the coordinate
    ascent of :func:`interestgym.agents.tuning.tune_baselines` comes back to states it replayed).
    Least recently used states are dropped beyond ``max_bytes``; a cache used with other data or users
    starts empty."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._entries: OrderedDict[str, tuple[list[StateRecord], int]] = OrderedDict()
        self._scope: tuple[Any, tuple[str, ...] | None] | None = None

    def bind(self, data: ReplayData, users: Sequence[str] | None) -> None:
        scope = (data, None if users is None else tuple(map(str, users)))
        if self._scope is None or self._scope[0] is not scope[0] or self._scope[1] != scope[1]:
            self._entries.clear()
            self.nbytes = 0
            self._scope = scope

    def get(self, key: str) -> list[StateRecord] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, records: list[StateRecord]) -> None:
        size = sum(r.nbytes for r in records)
        if size > self.max_bytes or key in self._entries:
            return
        while self._entries and self.nbytes + size > self.max_bytes:
            self.nbytes -= self._entries.popitem(last=False)[1][1]
        self._entries[key] = (records, size)
        self.nbytes += size

    def __len__(self) -> int:
        return len(self._entries)


def replay_shared(data: ReplayData, policies: Sequence[Any], *, users: Sequence[str] | None = None,
                  metric: str = "ndcg@10", max_rows: int = 1024, progress: bool | None = None,
                  desc: str | None = None, cache: StateCache | None = None,
                  flush_rows: int = 1 << 15, flush_bytes: int = 128 << 20) -> Iterator[SharedStep]:
    """:func:`replay_users_many` for a grid of rules, replaying each distinct interest state once.

    Rules with equal ``state_key()`` (e.g. a grid over w and p at fixed a_L, a_S) move the state alike:
    one lean engine row per (state, user) is stepped with the first of them, its scoring points'
    similarities are kept unranked, and every rule of the state ranks them with its own weights
    (:func:`~interestgym.envs.engine.rank_points`), its actions taken on the state's observations: one
    ``act`` call per rule and up to ``flush_rows`` stepped rows (fewer where their kept points pass ``flush_bytes``: a
    point keeps its row's category counts, n_categories float64 each, times three with the per-slot and exposure
    counts; on a catalogue of 2,083 categories 32k rows held 5 GB), one ranking for all of them. Each rule's
    values equal its own :func:`replay_users` replay's to the bit (rules act row by row; scoring and
    ranking are row-wise). That the members of a state do move it alike is checked at every decision: a
    rule whose a_L or a_S differs from its state's, or whose action reads a feature the lean engine
    skips (NaN), raises :class:`InterestGymError`. Policies without ``state_key`` get a state of their own.

    :param cache: states replayed by earlier calls on the same data and users (a state found there is
        not replayed; the states replayed here are added).
    :yield: :class:`SharedStep` parts (every policy's value at every scoring point of ``users``, once).
    """
    policies = list(policies)
    states: dict[Any, list[int]] = {}
    for k, policy in enumerate(policies):
        key = policy.state_key() if callable(getattr(policy, "state_key", None)) else ("policy", k)
        states.setdefault(key, []).append(k)
    keys, members = list(states), list(states.values())
    key = metric.strip().lower()
    if cache is not None:
        cache.bind(data, users)
    known = {g: cache.get(keys[g]) for g in range(len(keys)) if cache is not None and isinstance(keys[g], str)}
    known = {g: records for g, records in known.items() if records is not None}
    if known:
        yield from _rank_states(data, key, policies, [(records, members[g], None) for g, records in known.items()])
    todo = np.array([g for g in range(len(members)) if g not in known], dtype=np.int64)
    if not len(todo):
        return
    first = np.array([members[g][0] for g in todo], dtype=np.int64)  # the policy that steps each state
    kept: dict[int, list[StateRecord]] = {int(g): [] for g in todo if cache is not None and isinstance(keys[g], str)}
    label = desc or f"replaying {len(policies)} policies ({len(todo)} states)"
    buffer: list[ManyStep] = []
    buffered = buffered_bytes = kept_bytes = 0

    def flush() -> Iterator[SharedStep]:
        nonlocal kept_bytes
        records = _state_records(buffer, todo)
        for g, record in records.items():
            if g in kept:
                # kept for the cache only while all kept fit in it (beyond, the cache would drop them at the end
                # anyway: kept whole, a catalogue of 2,083 categories held 5 GB of them here)
                if cache is not None and kept_bytes + record.nbytes <= cache.max_bytes:
                    kept[g].append(record)
                    kept_bytes += record.nbytes
                else:
                    kept_bytes -= sum(r.nbytes for r in kept.pop(g))
        yield from _rank_states(data, key, policies, [(record, members[g], members[g][0]) for g, record in records.items()])

    for step in replay_users_many(data, [policies[k] for k in first], users=users, metric=metric, max_rows=max_rows,
                                  progress=progress, desc=label, lean=True, rank=False):
        bad = np.isnan(step.output.strengths).any(axis=1)
        if bad.any():
            raise LeanFeatureError(f"{_who(policies[first[step.policy[bad][0]]])} acts on a feature a lean replay does not "
                                   f"compute ({', '.join(LEAN_SKIPPED_FEATURES)}); tune it with the full engine "
                                   "(validation_scorer(..., batched=False))")
        buffer.append(step)
        buffered += len(step.rows)
        buffered_bytes += 0 if step.output.points is None else step.output.points.nbytes
        if buffered >= flush_rows or buffered_bytes >= flush_bytes:
            yield from flush()
            buffer, buffered, buffered_bytes = [], 0, 0
    if buffer:
        yield from flush()
    if cache is not None:
        for g, records in kept.items():
            cache.put(keys[g], records)


def _state_records(steps: list[ManyStep], todo: np.ndarray) -> dict[int, StateRecord]:
    """The buffered lock-steps of :func:`replay_shared`, one :class:`StateRecord` per state (``todo[policy]``)."""
    sizes = np.array([len(s.rows) for s in steps], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    state = todo[np.concatenate([s.policy for s in steps])]
    observations = np.concatenate([s.observations for s in steps])
    strengths = np.concatenate([s.output.strengths for s in steps])
    # steps' points by the state they keep (time-slot similarities, category counts: engines differ, and
    # a state's points all come from its engine), concatenated per kind
    by_k: dict[tuple[int, bool], list[int]] = {}
    for k, s in enumerate(steps):
        if s.output.points is not None:
            by_k.setdefault(_kind(s.output.points), []).append(k)
    merged = [(PointScores.concatenate([steps[k].output.points for k in ks], offsets[ks]),  # type: ignore[misc]
               np.concatenate([steps[k].output.point_index for k in ks])) for ks in by_k.values()]
    out: dict[int, StateRecord] = {}
    for g in np.unique(state):
        selected = state == g
        out[int(g)] = StateRecord(observations[selected], strengths[selected], None, np.zeros(0, np.int64))
        for points, point_index in merged:
            picked = selected[points.point_row]
            if not picked.any():
                continue
            mine = points.take(picked)
            mine.point_row = (np.cumsum(selected) - 1)[mine.point_row]
            mine.prow = mine.point_row
            out[int(g)] = StateRecord(observations[selected], strengths[selected], mine, point_index[picked])
            break
    return out


def _kind(points: PointScores) -> tuple[int, bool, bool, bool]:
    """What engine state ``points`` keep: similarity columns (K), category counts or not, slot category
    counts or not, exposure counts or not. Only points of one kind are concatenated."""
    return (points.similarities.shape[2], points.category_counts is not None, points.slot_category_counts is not None,
            points.exposure_counts is not None)


#: Scoring points ranked per :func:`~interestgym.envs.engine.rank_points` call in :func:`replay_shared`.
_RANK_CHUNK = 1 << 12


def _rank_states(data: ReplayData, metric: str, policies: list[Any],
                 states: list[tuple[StateRecord | list[StateRecord], list[int], int | None]]) -> Iterator[SharedStep]:
    """Every member's values at its state's scoring points: ``states`` = (record(s), member policy
    indices, the member that stepped the record, whose strengths are the stepped ones, or None)."""
    jobs: list[tuple[StateRecord, int, np.ndarray, tuple[float, float, float, float, float, float]]] = []
    for records, group, stepper in states:
        for record in records if isinstance(records, list) else [records]:
            for k in group:
                config = getattr(policies[k], "scoring", None) or ScoringConfig()
                if k == stepper:
                    strengths = record.strengths
                else:
                    strengths = _member_strengths(policies[k], record, policies[group[0]], config)
                if record.points is None or not len(record.point_index):
                    continue
                check_scoring_kept(record.points, config)
                jobs.append((record, k, strengths[record.points.point_row], score_weights(config)))
    # a chunk holds points of one kind (see _kind)
    jobs.sort(key=lambda job: _kind(job[0].points))  # type: ignore[arg-type]
    start = 0
    while start < len(jobs):
        stop, n_points = start, 0
        kind = _kind(jobs[start][0].points)  # type: ignore[arg-type]
        while stop < len(jobs) and _kind(jobs[stop][0].points) == kind and (  # type: ignore[arg-type]
                stop == start or n_points + len(jobs[stop][0].point_index) <= _RANK_CHUNK):
            n_points += len(jobs[stop][0].point_index)
            stop += 1
        chunk = jobs[start:stop]
        counts = [len(record.point_index) for record, *_ in chunk]
        points = PointScores.concatenate([record.points for record, *_ in chunk], [0] * len(chunk))  # type: ignore[misc]
        beta_cat, prior, beta_ctx, beta_trk, slot_weight, exposure = np.repeat(
            np.asarray([w for *_, w in chunk], dtype=np.float64), counts, axis=0).T
        values = rank_points(data, metric, points, np.concatenate([s for _, _, s, _ in chunk]), beta_cat, prior, beta_ctx,
                             beta_trk, slot_weight, exposure)
        for (record, k, _, _), part in zip(chunk, np.split(values, np.cumsum(counts)[:-1])):
            yield SharedStep(np.full(len(part), k, dtype=np.int64), record.point_index, part)
        start = stop


def _member_strengths(policy: Any, record: StateRecord, stepper: Any, config: ScoringConfig) -> np.ndarray:
    """A rule's strengths at a state's decisions, checked to move the state as the state's stepping rule did."""
    actions = np.asarray(policy.act(record.observations), dtype=np.float32).reshape(len(record.observations), -1)
    if np.isnan(actions).any():
        raise LeanFeatureError(f"{_who(policy)} acts on a feature a lean replay does not compute "
                               f"({', '.join(LEAN_SKIPPED_FEATURES)}); tune it with the full engine (validation_scorer(..., batched=False))")
    if not np.array_equal(action_to_strengths(actions[:, :2]), record.strengths[:, :2]):
        raise InterestGymError(f"{_who(policy)} and {_who(stepper)} share a state_key "
                               "but update the profiles with different strengths")
    return member_strengths(actions, config)


def _name(policy: Any) -> str:
    return str(getattr(policy, "name", type(policy).__name__))


def _who(policy: Any) -> str:
    # a rule's repr names its parameters; a user's class without a __repr__ of its own: its name
    if hasattr(policy, "params") and type(policy).__repr__ is not object.__repr__:
        return repr(policy)
    return _name(policy)
