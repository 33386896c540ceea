"""Parity checks of an export: the graph against SB3, the runtime against the evaluator.

:func:`recorded_observations` and :func:`graph_action_diff` are what ``export_run`` checks the graph
with before it writes anything; :func:`replay_through_runtime` replays logged users through a loaded
export, event by event, as a service would: the tests and ``benchmarks/runtime.py`` use it to show
the runtime reproduces the evaluator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import ArtifactError
from interestgym.runtime.manifest import INPUT_NAME


def recorded_observations(data: Any, policy: Any, metric: str, limit: int) -> np.ndarray:
    """Up to ``limit`` decision observations of ``data``'s users, replayed with ``policy`` (users in
    order until enough decisions are covered)."""
    from interestgym.envs.vector import evaluate_policy

    if limit <= 0 or data.n_users == 0:
        return np.zeros((0, 0), np.float32)
    counts = data.user_decision_end - data.user_decision_start
    n_users = int(np.searchsorted(np.cumsum(counts), limit) + 1)
    users = [str(u) for u in data.user_ids[:n_users]]
    res = evaluate_policy(data, policy, metric=metric, users=users, record_features=True, progress=False)
    return np.ascontiguousarray(res.features[:limit], dtype=np.float32)


def graph_action_diff(graph: str | Path, obs: np.ndarray, expected: np.ndarray) -> float:
    """The largest |ONNX - SB3| difference of the graph's actions on ``obs`` (``expected``: SB3's).

    The graph must load in onnxruntime, and its actions and strengths (``(action + 1) / 2``) must
    match within 1e-5.

    :raises ArtifactError: when they do not.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    if not len(obs):
        return 0.0
    got_action, got_strength = session.run(None, {INPUT_NAME: obs})
    diff = float(np.max(np.abs(got_action - expected)))
    strength_diff = float(np.max(np.abs(got_strength - (expected + 1.0) / 2.0)))
    if not (diff <= 1e-5 and strength_diff <= 1e-5):
        raise ArtifactError(f"{Path(graph).name}: the ONNX actions differ from SB3's by up to {max(diff, strength_diff):.2e} "
                            f"on {len(obs)} observations; expected <= 1e-5")
    return diff


def replay_through_runtime(policy: Any, dataset: Any, data: Any, users: list[str] | None = None, *,
                           serialise: str | None = None, observations: dict[int, np.ndarray] | None = None) -> Any:
    """Replay users' logs through an :class:`~interestgym.runtime.ExportedPolicy`, event by event, as a
    service would, and rank every scoring point of ``data`` with the runtime's state.

    :param policy: the loaded export.
    :param dataset: the open :class:`~interestgym.data.dataset.Dataset` the replay data came from.
    :param data: the :class:`~interestgym.envs.replay_data.ReplayData` fixing users and candidates.
    :param users: user ids (default: every user of ``data``).
    :param serialise: ``"bytes"`` or ``"json"``: store and reload the state after every event, as a
        service keeping state in a store would (proves the serialised state is complete).
    :param observations: a dict to fill with the runtime's observation at every decision (``policy.observe``
        before the update), keyed by the decision's index in ``data``: what the policy was fed, to compare
        with the engine's recorded features.
    :return: a DataFrame like ``evaluate_policy(...).points``: user_id, point_key, decision, metrics.
    """
    import pandas as pd

    from interestgym.runtime.state import Event, UserState

    def store(state: Any) -> Any:
        if serialise == "bytes":
            return UserState.from_bytes(state.to_bytes(), dim=policy.dim)
        if serialise == "json":
            return UserState.from_json(state.to_json(), dim=policy.dim)
        return state

    events = dataset.events
    items = dataset.items
    item_ids = items["item_id"].astype(str).to_numpy()
    item_cat = items["category"].fillna("").astype(str).to_numpy()
    index = {iid: i for i, iid in enumerate(item_ids)}
    emb = data.embeddings
    decision_of_row = {int(r): d for d, r in enumerate(data.decision_event_row)}
    users = [str(u) for u in (data.user_ids if users is None else users)]
    ev_user = events["user_id"].astype(str).to_numpy()
    starts = {}
    for i, u in enumerate(ev_user):  # events are sorted by user: first / last row of each user
        if u not in starts:
            starts[u] = [i, i + 1]
        else:
            starts[u][1] = i + 1
    ts_col = events["ts"].to_numpy(np.int64)
    action_col = events["action"].astype(str).to_numpy()
    value_col = events["value"].to_numpy(np.float64)
    hour_col = events["hour"].to_numpy(np.int64)
    weekday_col = events["weekday"].to_numpy(np.int64)
    item_col = events["item_id"].astype(str).to_numpy()
    user_pos = {u: i for i, u in enumerate(data.user_ids)}
    rows_out: list[dict[str, Any]] = []
    for user in users:
        state = policy.new_state()
        lo, hi = starts[user]
        first_decision = int(data.user_decision_start[user_pos[user]])
        for row in range(lo, hi):
            item = index.get(item_col[row], -1)
            event = Event(ts=int(ts_col[row]), action=str(action_col[row]), item_vector=emb[item] if item >= 0 else None,
                          value=float(value_col[row]), category=str(item_cat[item]) if item >= 0 else "",
                          hour=int(hour_col[row]), weekday=int(weekday_col[row]), item_id=str(item_col[row]))
            n_before = state.counter("n_decisions")
            if observations is not None and row in decision_of_row:
                observations[decision_of_row[row]] = policy.observe(state, event)
            state = store(policy.update(state, event))
            is_decision = state.counter("n_decisions") > n_before
            d = decision_of_row.get(row)
            if is_decision != (d is not None):
                raise AssertionError(f"event row {row} of user {user}: runtime decision={is_decision}, replay decision={d is not None}")
            if d is None:
                continue
            for point in range(int(data.decision_point_start[d]), int(data.decision_point_end[d])):
                a, b = int(data.point_offsets[point]), int(data.point_offsets[point + 1])
                cand = data.point_candidates[a:b]
                state, metrics = policy.record_outcome(
                    state, emb[cand], data.point_labels[a:b], candidate_ids=item_ids[cand],
                    candidate_categories=item_cat[cand], hour=int(data.point_slot[point]) * 6,
                )
                state = store(state)
                if metrics is None:
                    raise AssertionError(f"scoring point {data.point_key[point]}: not scorable by the runtime")
                rows_out.append({"user_id": user, "point_key": str(data.point_key[point]), "decision": d - first_decision, **metrics})
    return pd.DataFrame(rows_out)
