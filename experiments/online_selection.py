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

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

FORGETTING = [0.7, 0.8, 0.9, 0.95, 0.99]


def replay(data_dir: Path, embeddings: str, split: str, policies: list, metric: str) -> tuple:
    """The split's replay data and (n_policies, n_points) metric values of every policy at every point."""
    from interestgym.agents.tuning import replay_points
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

    data = load_replay_data(data_dir, embeddings, ProtocolSpec.resolve(None, split))
    points = replay_points(data, policies, metric)
    values = np.full((len(policies), len(data.point_slot)), np.nan)
    values[points["policy"], points["point"]] = points["value"]
    return data, values


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared dataset")
    parser.add_argument("--baselines", type=Path, required=True, help="a run's baselines.json (the tuned rule)")
    parser.add_argument("--embeddings", default="minilm")
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    from interestgym.core.rules import BayesianCategoryPolicy

    tuned = json.loads(args.baselines.read_text())["baselines"]["bayesian_category"]["params"]
    forgetting = sorted(set(FORGETTING) | {tuned["forgetting"]})
    policies = [BayesianCategoryPolicy(**{**tuned, "forgetting": f}) for f in forgetting]
    reference = forgetting.index(tuned["forgetting"])
    train, train_values = replay(args.data, args.embeddings, "train", policies, args.metric)
    valid, valid_values = replay(args.data, args.embeddings, "valid", policies, args.metric)
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
    diff = res[:, 0] - res[:, 1]
    rng = np.random.default_rng(0)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    print(f"validation users (m0={m0}, g={g}): selector {res[:, 0].mean():.4f} vs the tuned rule {res[:, 1].mean():.4f}: "
          f"{diff.mean():+.4f} [{np.percentile(boot, 2.5):+.4f}, {np.percentile(boot, 97.5):+.4f}] "
          f"({diff.mean() / res[:, 1].mean() * 100:+.2f}%)")


if __name__ == "__main__":
    main()
