"""What would a rule gain if it knew each user's type? (issue 12; a diagnostic behind docs/experiments.md)

On a synthetic log (``interestgym prepare synthetic`` / ``quickstart``: its events carry the generator's
``user_type``), score a grid of ``bayesian_category`` settings around a run's tuned rule on every user of the
train and validation splits, in one batched replay per split (``agents.tuning.replay_points``, the tuning's
own), then compare on the validation users:

* **one rule**: the setting best on the training users;
* **a rule per type**: for each user type, the setting best on that type's training users; each validation user
  is ranked by its own type's rule.

Selection and scoring use disjoint users. The gain of the second over the first (paired bootstrap CI over
validation users) is what knowing the type is worth to a rule: an upper reference for an update policy that
must infer it. The last line picks per type on the validation users themselves (optimistic).

    python experiments/type_ceiling.py runs/quickstart/data --baselines runs/quickstart/run/baselines.json

About 3.5 minutes on 2 cores for the quick start's 800 train + validation users and the default grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

GRID = {"forgetting": [0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99], "long_rate": [0.02, 0.05, 0.1, 0.2],
        "short_rate": [0.5, 0.7, 0.9], "value_gain": [0.5, 1.0, 2.0], "beta_cat": [0.5, 1.0, 2.0],
        "short_weight": [0.1, 0.2, 0.4]}


def per_user(data_dir: Path, embeddings: str, split: str, policies: list, metric: str) -> pd.DataFrame:
    """users x policies: each user's mean of ``metric`` over its scoring points, per policy."""
    from interestgym.agents.tuning import replay_points
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

    data = load_replay_data(data_dir, embeddings, ProtocolSpec.resolve(None, split))
    t0 = time.perf_counter()
    points = replay_points(data, policies, metric)
    counts = data.decision_point_end - data.decision_point_start
    point_user = np.repeat(data.decision_user.astype(np.int64), counts)
    table = pd.DataFrame({"policy": points["policy"], "user": point_user[points["point"]], "value": points["value"]})
    out = table.groupby(["policy", "user"])["value"].mean().unstack("policy")
    out.index = [str(data.user_ids[u]) for u in out.index]
    print(f"{split}: {out.shape[0]} users x {out.shape[1]} settings in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="a prepared synthetic dataset (events carry user_type)")
    parser.add_argument("--baselines", type=Path, required=True, help="a run's baselines.json (the tuned rule to vary)")
    parser.add_argument("--embeddings", default="minilm")
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    from interestgym.core.rules import BayesianCategoryPolicy

    events = pd.read_parquet(args.data / "events.parquet")
    if "user_type" not in events.columns:
        sys.exit(f"{args.data / 'events.parquet'}: no user_type column (found {list(events.columns)}); "
                 "this diagnostic needs a synthetic log, whose generator labels each user's type")
    user_type = dict(zip(events.user_id.astype(str), events.user_type.astype(str)))
    tuned = json.loads(args.baselines.read_text())["baselines"]["bayesian_category"]["params"]
    keys = list(GRID)
    combos = list(itertools.product(*GRID.values()))
    policies = [BayesianCategoryPolicy(**{**tuned, **dict(zip(keys, c))}) for c in combos]

    train = per_user(args.data, args.embeddings, "train", policies, args.metric)
    valid = per_user(args.data, args.embeddings, "valid", policies, args.metric)
    train_type = train.index.map(user_type)
    valid_type = pd.Series(valid.index.map(user_type), index=valid.index)
    one = train.mean().idxmax()
    pick = {t: train[train_type == t].mean().idxmax() for t in sorted(set(train_type))}
    print(f"one rule (best on {len(train)} training users): {dict(zip(keys, combos[one]))}")
    for t, k in pick.items():
        sel = (valid_type == t).to_numpy()
        print(f"  {t:10s} {sel.sum():4d} validation users: its rule {dict(zip(keys, combos[k]))} "
              f"{valid[k][sel].mean():.4f} vs one rule {valid[one][sel].mean():.4f}")
    typed = np.array([valid.at[u, pick[valid_type[u]]] for u in valid.index])
    base = valid[one].to_numpy()
    diff = typed - base
    rng = np.random.default_rng(0)
    boot = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    print(f"a rule per type {typed.mean():.4f} vs one rule {base.mean():.4f} on {len(diff)} validation users: "
          f"{diff.mean():+.4f} [{np.percentile(boot, 2.5):+.4f}, {np.percentile(boot, 97.5):+.4f}] "
          f"({diff.mean() / base.mean() * 100:+.2f}%)")
    best_here = {t: valid[(valid_type == t).to_numpy()].mean().idxmax() for t in pick}
    optimistic = np.array([valid.at[u, best_here[valid_type[u]]] for u in valid.index])
    print(f"picked per type on the validation users themselves (optimistic): {optimistic.mean():.4f} "
          f"({(optimistic.mean() - base.mean()) / base.mean() * 100:+.2f}%)")


if __name__ == "__main__":
    main()
