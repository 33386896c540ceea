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

    python experiments/type_ceiling.py runs/quickstart/data --baselines runs/quickstart/run/baselines.json  # [--embeddings NAME]

About 3.5 minutes on 2 cores for the quick start's 800 train + validation users and the default grid.
"""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np
import pandas as pd
from _common import arguments, gain_line, load, tuned_rule

GRID = {"forgetting": [0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99], "long_rate": [0.02, 0.05, 0.1, 0.2],
        "short_rate": [0.5, 0.7, 0.9], "value_gain": [0.5, 1.0, 2.0], "beta_cat": [0.5, 1.0, 2.0],
        "short_weight": [0.1, 0.2, 0.4]}


def per_user(data, policies: list, metric: str) -> pd.DataFrame:
    """users x policies: each user's mean of ``metric`` over its scoring points, per policy."""
    from interestgym.agents.tuning import replay_points

    t0 = time.perf_counter()
    points = replay_points(data, policies, metric)
    counts = data.decision_point_end - data.decision_point_start
    point_user = np.repeat(data.decision_user.astype(np.int64), counts)
    table = pd.DataFrame({"policy": points["policy"], "user": point_user[points["point"]], "value": points["value"]})
    out = table.groupby(["policy", "user"])["value"].mean().unstack("policy")
    out.index = [str(data.user_ids[u]) for u in out.index]
    print(f"{data.describe()['split']}: {out.shape[0]} users x {out.shape[1]} settings in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return out


def main() -> None:
    args = arguments(__doc__, "a prepared synthetic dataset (events carry user_type)")
    from interestgym.core.rules import BayesianCategoryPolicy

    events = pd.read_parquet(args.data / "events.parquet")
    if "user_type" not in events.columns:
        sys.exit(f"{args.data / 'events.parquet'}: no user_type column (found {list(events.columns)}); "
                 "this diagnostic needs a synthetic log, whose generator labels each user's type")
    user_type = dict(zip(events.user_id.astype(str), events.user_type.astype(str)))
    train_data, valid_data = load(args.data, args.embeddings, "train"), load(args.data, args.embeddings, "valid")
    tuned = tuned_rule(args.baselines, valid_data)
    grid = GRID if tuned["value_median"] is not None else {**GRID, "value_gain": [0.0]}  # constant values: no gain
    keys = list(grid)
    combos = list(itertools.product(*grid.values()))
    policies = [BayesianCategoryPolicy(**{**tuned, **dict(zip(keys, c))}) for c in combos]

    train = per_user(train_data, policies, args.metric)
    valid = per_user(valid_data, policies, args.metric)
    train_type = train.index.map(user_type)
    valid_type = pd.Series(valid.index.map(user_type), index=valid.index)
    one = train.mean().idxmax()
    # the types with users on both sides (a type without validation users has nothing to score)
    pick = {t: train[train_type == t].mean().idxmax() for t in sorted(set(train_type) & set(valid_type))}
    print(f"one rule (best on {len(train)} training users): {dict(zip(keys, combos[one]))}")
    for t, k in pick.items():
        sel = (valid_type == t).to_numpy()
        print(f"  {t:10s} {sel.sum():4d} validation users: its rule {dict(zip(keys, combos[k]))} "
              f"{valid[k][sel].mean():.4f} vs one rule {valid[one][sel].mean():.4f}")
    scored = [u for u in valid.index if valid_type[u] in pick]  # a type no training user has: no rule of its own
    typed = np.array([valid.at[u, pick[valid_type[u]]] for u in scored])
    base = valid.loc[scored, one].to_numpy()
    print(gain_line("a rule per type", typed, base, "one rule", "validation users"))
    best_here = {t: valid[(valid_type == t).to_numpy()].mean().idxmax() for t in pick}
    optimistic = np.array([valid.at[u, best_here[valid_type[u]]] for u in scored])
    print(f"picked per type on the validation users themselves (optimistic): {optimistic.mean():.4f} "
          f"({(optimistic.mean() - base.mean()) / base.mean() * 100:+.2f}%)")


if __name__ == "__main__":
    main()
