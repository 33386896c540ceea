"""Replaying a few users with the trained policy: what the timeline figures draw.

**Implied topic mix.** A profile direction u (the scoring direction ``normalise(w S + (1 - w) L)``)
implies the mix ``v_k = max(0, cos(u, c_k)) / sum_j max(0, cos(u, c_j))`` over topics (categories),
with c_k the normalised mean embedding of the items of topic k: the quantity whose distance to the
true interest is ``interestgym evaluate``'s tracking error (:mod:`interestgym.evaluation.run`).

Computing only: no plotting (:mod:`interestgym.report.figures` draws a :class:`UserTimeline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Synthetic user types shown first in the timelines (the ones where the update decision matters most).
TIMELINE_TYPE_ORDER = ("switcher", "drifting", "bursty", "context", "noisy", "stable")
#: Rate of the running mean of clicked categories drawn for real data (same as the features' EMA_RATE).
CATEGORY_EMA_RATE = 0.2


@dataclass
class UserTimeline:
    """One replayed user: per decision, the observed interest, the profile's implied mix and the actions."""

    user_id: str
    label: str
    topic_names: list[str]
    observed: np.ndarray  # (n, T) true interest (synthetic) or running mean of clicked categories
    observed_kind: str
    implied: np.ndarray  # (n, T) the scoring direction's implied topic mix
    strengths: np.ndarray  # (n, 4) a_L, a_S, w, p as applied
    ts: np.ndarray  # (n,) unix seconds
    clicked: np.ndarray  # (n,) topic index of the decision's item
    step_metric: np.ndarray  # (n,) step reward metric (NaN when unscored)


def implied_mix(direction: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``v_k = max(0, cos(u, c_k))``, normalised to sum 1 (zero rows stay zero): see the module docstring."""
    v = np.maximum(np.asarray(direction, np.float64) @ centroids.T, 0.0)
    total = v.sum(axis=1, keepdims=True)
    return np.where(total > 0, v / np.where(total > 0, total, 1.0), 0.0)


def replay_timelines(data: Any, policy: Any, users: Sequence[str], topic_of_item: np.ndarray, n_topics: int,
                     metric: str = "ndcg@10") -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Replay ``users`` through the env's engine with ``policy``; per user (id, decisions, strengths,
    implied mix, step metric), decisions in order.

    :param topic_of_item: (n_items,) topic / category index of every item (the centroids' grouping).
    :param metric: the step metric recorded per decision.
    """
    from interestgym.core.interest import scoring_direction
    from interestgym.envs.rollout import replay_users
    from interestgym.evaluation.run import topic_centroids

    centroids = topic_centroids(data.embeddings, topic_of_item, n_topics)
    position = {str(u): k for k, u in enumerate(users)}
    per_user: list[list[tuple[int, np.ndarray, np.ndarray, float]]] = [[] for _ in users]
    for step in replay_users(data, policy, users=[str(u) for u in users], batch_size=max(1, len(users)), metric=metric,
                             progress=False):
        rows, engine, out = step.rows, step.engine, step.output
        mix = implied_mix(scoring_direction(engine.long_term[rows], engine.short_term[rows], out.strengths[:, 2]), centroids)
        values = out.metrics[engine.metric]
        owners = data.user_ids[data.decision_user[out.decision]]
        for k, owner in enumerate(owners):
            per_user[position[str(owner)]].append((int(out.decision[k]), out.strengths[k], mix[k], float(values[k])))
    out = []
    for row, user in enumerate(users):
        recs = per_user[row]
        out.append((str(user), np.array([r[0] for r in recs]), np.array([r[1] for r in recs]),
                    np.array([r[2] for r in recs]), np.array([r[3] for r in recs])))
    return out


def _running_one_hot(topics: np.ndarray, n_topics: int, rate: float) -> np.ndarray:
    """Running mean (rate ``rate``, from the first click) of the one-hot clicked topic: the recent mix."""
    out = np.zeros((len(topics), n_topics))
    state = np.zeros(n_topics)
    for i, t in enumerate(topics):
        hot = np.zeros(n_topics)
        hot[t] = 1.0
        state = hot if i == 0 else state + rate * (hot - state)
        out[i] = state
    return out



def choose_timeline_users(data: Any, n: int, user_types: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Up to ``n`` users of ``data`` for the timelines, as (user id, label).

    Synthetic data: one user of each type in :data:`TIMELINE_TYPE_ORDER` (the longest history of the
    type), so the figures show a switch, a drift, a burst ... Otherwise: the users with the longest
    histories. Deterministic (no randomness).
    """
    lengths = data.user_decision_end - data.user_decision_start
    order = np.lexsort((np.asarray(data.user_ids, dtype=str), -lengths))  # longest first, then by id
    chosen: list[tuple[str, str]] = []
    if user_types:
        for t in TIMELINE_TYPE_ORDER:
            for i in order:
                uid = str(data.user_ids[i])
                if user_types.get(uid) == t and lengths[i] > 1:
                    chosen.append((uid, f"{t} user"))
                    break
            if len(chosen) >= n:
                break
    taken = {u for u, _ in chosen}
    for i in order:
        if len(chosen) >= n:
            break
        uid = str(data.user_ids[i])
        if uid not in taken:
            chosen.append((uid, (user_types or {}).get(uid, "") and f"{user_types[uid]} user"))
            taken.add(uid)
    return chosen[:n]
