"""Can a rule find each user's forgetting from that user's own feedback? (issue 12; behind docs/experiments.md)

Per-user online selection (follow the leader) among a few settings of a run's tuned ``bayesian_category``
rule that differ only in their forgetting. Every setting's state evolves from the same logged events whatever
is ranked, so at each decision every setting's metric at every earlier scoring point of the user is known
(full information). Before each decision's scoring points the selector takes the setting with the best
smoothed mean of the user's earlier points: ``m0`` pseudo-points at the setting's mean over training users,
and each past decision discounted by ``g``. ``m0`` and ``g`` are picked on the training users; the selector
is scored on the validation users against the tuned rule (paired bootstrap CI over users).

    python experiments/online_selection.py runs/quickstart/data --baselines runs/quickstart/run/baselines.json

A few minutes on 2 cores for the quick start.
"""

from __future__ import annotations

import itertools

import numpy as np
from _common import arguments, gain_line, load, tuned_rule

FORGETTING = [0.7, 0.8, 0.9, 0.95, 0.99]


def replay(data, policies: list, metric: str) -> np.ndarray:
    """(n_policies, n_points) metric values of every policy at every scoring point of ``data``."""
    from interestgym.agents.tuning import replay_points

    points = replay_points(data, policies, metric)
    values = np.full((len(policies), len(data.point_slot)), np.nan)
    values[points["policy"], points["point"]] = points["value"]
    return values


def user_points(data, u: int) -> tuple[int, int]:
    first, last = data.user_decision_start[u], data.user_decision_end[u] - 1
    return int(data.decision_point_start[first]), int(data.decision_point_end[last])


def select(data, values: np.ndarray, reference: int, prior: np.ndarray, m0: float, g: float) -> np.ndarray:
    """(users with points, 2): each user's mean of the selected settings' values, and of the reference's."""
    out = []
    for u in range(data.n_users):
        total, count = prior * m0, np.full(len(prior), float(m0))
        chosen, ref = [], []
        for d in range(data.user_decision_start[u], data.user_decision_end[u]):
            a, b = int(data.decision_point_start[d]), int(data.decision_point_end[d])
            if b > a:
                k = int(np.argmax(total / count)) if count.max() > 0 else reference
                chosen.extend(values[k, a:b])
                ref.extend(values[reference, a:b])
            total *= g
            count *= g
            if b > a:
                total += values[:, a:b].sum(axis=1)
                count += b - a
        if chosen:
            out.append((np.mean(chosen), np.mean(ref)))
    return np.array(out)


def main() -> None:
    args = arguments(__doc__, "a prepared dataset")
    from interestgym.core.rules import BayesianCategoryPolicy

    train, valid = load(args.data, args.embeddings, "train"), load(args.data, args.embeddings, "valid")
    tuned = tuned_rule(args.baselines, valid)
    forgetting = sorted(set(FORGETTING) | {tuned["forgetting"]})
    policies = [BayesianCategoryPolicy(**{**tuned, "forgetting": f}) for f in forgetting]
    reference = forgetting.index(tuned["forgetting"])
    train_values, valid_values = replay(train, policies, args.metric), replay(valid, policies, args.metric)
    per_user = []
    for u in range(train.n_users):
        a, b = user_points(train, u)
        if b > a:
            per_user.append(np.nanmean(train_values[:, a:b], axis=1))
    prior = np.mean(per_user, axis=0)
    print("forgetting", forgetting, "means over training users", prior.round(4))
    best = None
    for m0, g in itertools.product([1, 5, 20, 50], [1.0, 0.99, 0.97, 0.9]):
        res = select(train, train_values, reference, prior, m0, g)
        gain = float((res[:, 0] - res[:, 1]).mean())
        print(f"  training users, m0={m0} g={g}: {gain:+.4f}")
        if best is None or gain > best[0]:
            best = (gain, m0, g)
    _, m0, g = best
    res = select(valid, valid_values, reference, prior, m0, g)
    print(f"validation users (m0={m0}, g={g}):", gain_line("selector", res[:, 0], res[:, 1], "the tuned rule", "users"))


if __name__ == "__main__":
    main()
