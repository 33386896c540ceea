"""Tuning the baseline rules on validation users, and picking the reference a policy must beat.

Tuning (:func:`tune_baselines`): every tunable rule is scored on **validation** users for each point
of a small grid (:data:`GRIDS`), the whole grid in one batched replay (:func:`validation_scorer`:
rows = users x grid points, numbers identical to one replay per point), and the best point by the
selection metric (mean over users) is kept. ``ema_two_profile`` is tuned first ((a_L, a_S, w), then p over
:data:`POPULARITY_GRID`). Rules built on top of it start from its tuned values and are tuned by
coordinate ascent (a coordinate-wise search keeps the grid small): their own parameters, then the
inherited strengths and p with their own fixed, then their own again (``rounds=2``).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from interestgym.agents.rules import (
    _INHERITS_TWO_PROFILE,
    BASELINE_NAMES,
    GRIDS,
    LINE_SEARCHED,
    POPULARITY_GRID,
    RulePolicy,
    baseline_names,
    feedback_median,
    tuning_grids,
)

from interestgym.core.rules import rule_class, rule_provider
from interestgym.errors import InterestGymError


def mean_over_users(result: Any, metric: str) -> float:
    """Mean over users of the per-user mean of ``metric`` (the headline aggregate)."""
    return float(result.per_user()[metric].mean())


def validation_scorer(data: Any, metric: str, users: list[str] | None = None, *, batched: bool = True,
                      max_rows: int = 1024) -> Any:
    """``policies -> [mean over validation users of metric]``: the objective of baseline tuning.

    ``batched`` (the default) scores all the policies of one call in one replay
    (:func:`~interestgym.envs.rollout.replay_shared`: rows = users x interest states); the numbers are
    identical, bit for bit, to :func:`~interestgym.envs.vector.evaluate_policy` one policy at a time
    (``batched=False``), whose per-user means they reproduce step by step. The scorer keeps the interest
    states it replayed (:class:`~interestgym.envs.rollout.StateCache`): a later call (the coordinate
    ascent comes back to states) ranks a known state's rules without replaying it.
    """
    from interestgym.envs.rollout import StateCache
    from interestgym.envs.vector import evaluate_policy

    if not batched:
        def score_each(policies: list[Any]) -> list[float]:
            return [mean_over_users(evaluate_policy(data, p, metric=metric, users=users, record_features=False, progress=False), metric)
                    for p in policies]

        score_each.protocol = data.protocol  # type: ignore[attr-defined]  (what tune_baselines' default grids read)
        score_each.value_median = feedback_median(data, users)  # type: ignore[attr-defined]
        return score_each

    cache = StateCache()

    def score(policies: list[Any]) -> list[float]:
        return score_policies(data, policies, metric, users, max_rows=max_rows, cache=cache)

    score.protocol = data.protocol  # type: ignore[attr-defined]
    score.value_median = feedback_median(data, users)  # type: ignore[attr-defined]
    return score


def score_policies(data: Any, policies: list[Any], metric: str, users: list[str] | None = None, *,
                   max_rows: int = 1024, cache: Any = None) -> list[float]:
    """Mean over users of ``metric`` for each policy, from one batched replay of ``users`` (all when None).

    Same arithmetic as ``mean_over_users(evaluate_policy(...))``: each policy's scoring points in
    point order, pandas' per-user mean (grouped in order of appearance), then the mean over users.
    ``cache``: a :class:`~interestgym.envs.rollout.StateCache` of states replayed on ``data`` and ``users``.
    """
    if not policies:
        return []
    parts = [replay_points(data, policies, metric, users, max_rows=max_rows, cache=cache)]
    return mean_over_users_many(data, len(policies), parts, metric)


def replay_points(data: Any, policies: list[Any], metric: str, users: list[str] | None = None, *,
                  max_rows: int = 1024, cache: Any = None) -> dict[str, np.ndarray]:
    """Every scoring point of ``users`` replayed with every policy: ``policy`` (index), ``point`` (global
    scoring-point index) and ``value`` (``metric`` there). Rules that move the state alike share one
    replay (:func:`~interestgym.envs.rollout.replay_shared`). A shard of users gives its own points;
    :func:`mean_over_users_many` combines shards as if they were replayed together."""
    from interestgym.envs.rollout import replay_shared

    parts_policy, parts_point, parts_value = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for step in replay_shared(data, policies, users=users, metric=metric, max_rows=max_rows, progress=False, cache=cache):
        parts_policy.append(step.policy)
        parts_point.append(step.point_index.astype(np.int64))
        parts_value.append(step.value)
    return {"policy": np.concatenate(parts_policy).astype(np.int64), "point": np.concatenate(parts_point),
            "value": np.concatenate(parts_value)}


def mean_over_users_many(data: Any, n_policies: int, parts: list[dict[str, np.ndarray]], metric: str) -> list[float]:
    """:func:`mean_over_users` of each policy from :func:`replay_points` outputs (one, or one per shard)."""
    import pandas as pd

    key = metric.strip().lower()
    policy = np.concatenate([p["policy"] for p in parts])
    point = np.concatenate([p["point"] for p in parts])
    value = np.concatenate([p["value"] for p in parts])
    if not len(point):
        return [float("nan")] * n_policies
    # policy-major, then point order (evaluate_policy sorts each policy's points by index)
    order = np.lexsort((point, policy))
    policy, point, value = policy[order], point[order], value[order]
    counts = data.decision_point_end - data.decision_point_start
    point_user = np.repeat(data.decision_user.astype(np.int64), counts)
    n_users = max(int(data.n_users), 1)
    # one group per (policy, user): a group's mean is computed from its own values in order
    group = policy * n_users + point_user[point]
    per_user = pd.DataFrame({"g": group, key: value}).groupby("g", sort=False)[[key]].mean()[key]
    group_policy = per_user.index.to_numpy() // n_users
    values = per_user.to_numpy()
    cuts = np.searchsorted(group_policy, np.arange(n_policies + 1))
    return [float(pd.Series(values[cuts[k]: cuts[k + 1]].copy()).mean()) for k in range(n_policies)]


def _policy_key(policy: Any) -> str | None:
    """A rule's identity for reusing its score: class, parameters and scoring (None: not a rule)."""
    describe = getattr(policy, "describe", None)
    if not callable(describe):
        return None
    return f"{type(policy).__module__}.{type(policy).__qualname__}:" + json.dumps(describe(), sort_keys=True, default=repr)


def subsample_users(user_ids: np.ndarray, n: int | None, seed: int) -> list[str] | None:
    """At most ``n`` user ids, drawn with ``seed`` (None = all users)."""
    if n is None or n >= len(user_ids):
        return None
    rng = np.random.default_rng(seed)
    return sorted(map(str, rng.choice(np.asarray(user_ids), size=n, replace=False)))


@dataclass
class GridResult:
    """Outcome of a grid search: the best point, its score, and every point tried."""

    best_params: dict[str, Any]
    best_score: float
    table: list[dict[str, Any]] = field(default_factory=list)


def grid_search(
    make_policy: Callable[[dict[str, Any]], Any],
    grid: dict[str, Iterable[Any]],
    score: Callable[[list[Any]], list[float]],
    *,
    fixed: dict[str, Any] | None = None,
) -> GridResult:
    """Exhaustive search over the Cartesian product of ``grid``.

    :param make_policy: parameters -> policy.
    :param grid: parameter name -> values to try.
    :param score: policies -> one score each (higher is better); called once with every policy so
        that the evaluator can replay them together.
    :param fixed: parameters passed to every point besides the grid's.
    :return: the best point (first one in grid order on ties) and the table of all points.
    """
    fixed = dict(fixed or {})
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(list(grid[n]) for n in names))] or [{}]
    policies = [make_policy({**fixed, **pt}) for pt in points]
    scores = [float(s) for s in score(policies)]
    table = [{**pt, "score": s} for pt, s in zip(points, scores)]
    best = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))
    return GridResult(best_params={**fixed, **points[best]}, best_score=scores[best], table=table)


def tune_baselines(
    score: Callable[[list[Any]], list[float]],
    names: Iterable[str] = BASELINE_NAMES,
    *,
    rounds: int = 2,
    progress: Callable[[str], None] | None = None,
    grids: dict[str, dict[str, list[Any]]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Tune every named baseline with ``score`` (validation users) and return
    ``{name: {"params": ..., "valid_score": ..., "grid": [...], "seconds": ...}}``.

    ``ema_two_profile`` is tuned first (its a_L, a_S, w grid, then p). A rule built on it starts from
    its tuned values, tunes its own parameters, then (coordinate ascent, ``rounds`` rounds in all)
    re-tunes the inherited (a_L, a_S, w) grid and p with its own parameters fixed, and its own again:
    an extra score term (category, context) changes the best strengths, and the reference an agent
    must beat has to be tuned as well as the grid allows.

    A rule's own grid is searched as a product, except its :data:`~interestgym.agents.rules.LINE_SEARCHED`
    parameters (``bayesian_category``'s value gain): each is searched on its own after the product, from its
    first value, with the others at the product's best (and the product is searched again at the value found,
    in the next round): one more state per value instead of the product's states times its values.

    ``grids`` None: :func:`~interestgym.agents.rules.tuning_grids` for the scorer's scoring points (the
    ``protocol`` a :func:`validation_scorer` carries): the exposure prior is tried only on logged
    impressions, and not for a scorer that does not say what it replays.
    """
    from interestgym.progress import progress_bar

    names = list(names)
    order = sorted(names, key=lambda n: 0 if n == "ema_two_profile" else 1)
    if any(n in _INHERITS_TWO_PROFILE for n in names) and "ema_two_profile" not in order:
        order.insert(0, "ema_two_profile")
    # One bar over every grid point replayed (the total depends on the coordinate-ascent rounds).
    bar = progress_bar(desc="tuning baselines on validation users", unit="grid point")
    raw_score = score

    known: dict[str, float] = {}  # coordinate ascent revisits points: a policy's score is a pure function of it

    def score(policies: list[Any]) -> list[float]:
        # the whole grid in one call: a batched scorer replays it at once
        if policies:
            bar.set_postfix_str(getattr(policies[0], "name", ""), refresh=False)
        keys = [_policy_key(p) for p in policies]
        fresh: list[int] = []
        for i, k in enumerate(keys):
            if k is None or (k not in known and all(keys[j] != k for j in fresh)):
                fresh.append(i)
        values: list[float | None] = [None] * len(policies)
        for i, value in zip(fresh, raw_score([policies[i] for i in fresh]) if fresh else []):
            values[i] = float(value)
            if keys[i] is not None:
                known[keys[i]] = float(value)  # type: ignore[index]
        values = [known[k] if v is None else v for v, k in zip(values, keys)]  # type: ignore[index]
        bar.update(len(policies))
        return values

    if grids is None:  # e.g. agents.rules.tuning_grids(slot_counts=False) when given
        grids = tuning_grids(True, getattr(raw_score, "protocol", None) == "impressions",
                             getattr(raw_score, "value_median", None), names=names)
    out: dict[str, dict[str, Any]] = {}
    two: dict[str, Any] = {}
    two_grid = grids["ema_two_profile"]
    for name in order:
        t0 = time.perf_counter()
        if progress:
            progress(name)
        cls = rule_class(name)
        def make(params: dict[str, Any], cls: type[RulePolicy] = cls) -> RulePolicy:
            return cls(**params)

        table: list[dict[str, Any]] = []
        if name == "ema_two_profile":
            first = grid_search(make, two_grid, score)
            res = grid_search(make, {"popularity_weight": POPULARITY_GRID}, score,
                              fixed={k: v for k, v in first.best_params.items() if k != "popularity_weight"})
            table = first.table + res.table
            two = res.best_params
        else:
            inherited = _INHERITS_TWO_PROFILE.get(name, ())
            # the rule's own grid: a product, then a line search over each LINE_SEARCHED parameter from its first value
            later = {k: v for k, v in grids[name].items() if k in LINE_SEARCHED.get(name, ())}
            product = {k: v for k, v in grids[name].items() if k not in later}

            def own(fixed: dict[str, Any], product: dict[str, Any] = product,
                    later: dict[str, Any] = later, make: Any = make) -> tuple[GridResult, list[dict[str, Any]]]:
                found = grid_search(make, product, score, fixed=fixed)
                rows = list(found.table)
                for param, values in later.items():
                    if len(values) > 1:
                        line = grid_search(make, {param: values}, score,
                                           fixed={k: v for k, v in found.best_params.items() if k != param})
                        rows += line.table
                        if line.best_score > found.best_score:
                            found = line
                return found, rows

            res, table = own({**{k: two[k] for k in inherited}, **{k: v[0] for k, v in later.items()}})
            for _ in range(max(rounds, 1) - 1):
                if not inherited or not grids[name]:
                    break
                mine = {k: v for k, v in res.best_params.items() if k not in inherited}
                inner = {k: v for k, v in two_grid.items() if k in inherited}
                step = grid_search(make, inner, score, fixed={**mine, "popularity_weight": res.best_params["popularity_weight"]})
                step = grid_search(make, {"popularity_weight": POPULARITY_GRID}, score,
                                   fixed={k: v for k, v in step.best_params.items() if k != "popularity_weight"})
                again, rows = own({k: v for k, v in step.best_params.items() if k in inherited or k in later})
                table += step.table + rows
                if again.best_score <= res.best_score:
                    break
                res = again
        out[name] = {"params": _tuned_params(cls, res.best_params), "valid_score": res.best_score, "grid": table,
                     "seconds": round(time.perf_counter() - t0, 3)}
        provider = rule_provider(name)
        if provider is not None:  # another package's rule: the package and version its parameters were tuned with
            out[name]["provider"] = provider
        constants = _data_constants(cls, grids.get(name, {}))
        if constants:  # what the tuning's grid depended on in its data (an older-grid note reads it)
            out[name]["data_constants"] = constants
    bar.close()
    return {n: out[n] for n in order if n in names or n == "ema_two_profile"}


def _tuned_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """A tuned rule's parameters as they are written down and printed: in the order of ``cls``'s constructor
    (whichever search stage found them), without a value gain of 0 and its median (the rule without it)."""
    import inspect

    order = {name: i for i, name in enumerate(inspect.signature(cls).parameters)}
    if params.get("value_gain") == 0:
        params = {k: v for k, v in params.items() if k not in ("value_gain", "value_median")}
    return dict(sorted(params.items(), key=lambda item: order.get(item[0], len(order))))


def _data_constants(cls: type, grid: dict[str, Any]) -> dict[str, Any]:
    """The :data:`DATA_CONSTANTS` a rule's grid was built with (None where its data gave none, e.g. no median
    feedback value: the value gain was not tried), for the rules that take them."""
    import inspect

    taken = inspect.signature(cls).parameters
    return {k: next(iter(grid.get(k) or [None])) for k in sorted(DATA_CONSTANTS) if k in taken}


#: Baselines that are references rather than candidates for "the best tuned rule".
NOT_COMPETING: frozenset[str] = frozenset({"oracle"})


def best_baseline(tuned: dict[str, dict[str, Any]]) -> str:
    """Name of the tuned baseline with the highest validation score (never the oracle). Ties (e.g. rules that
    all rank by popularity on some data) go to ``ema_two_profile``, then the first in :data:`BASELINE_NAMES`,
    then other names (tracker mixtures) in the order given: the same rule whichever order the tuned baselines
    were read in, so that ``train`` and ``evaluate`` name the same reference."""
    names = [n for n in tuned if n not in NOT_COMPETING]
    scores = np.array([tuned[n]["valid_score"] for n in names], dtype=np.float64)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    best = [n for n, value in zip(names, scores) if value == scores.max()]

    def tie_order(name: str) -> tuple[int, int]:
        if name == "ema_two_profile":
            return (0, 0)
        if name in BASELINE_NAMES:
            return (1, BASELINE_NAMES.index(name))
        return (2, names.index(name))

    return min(best, key=tie_order)


def grid_params_missing(tuned: dict[str, Any], grids: dict[str, dict[str, list[Any]]] | None = None) -> dict[str, list[str]]:
    """Per rule of a saved tuning (``baselines.json``'s ``baselines``), the parameters of today's grid
    (:data:`GRIDS`, or ``grids``) with values its grid did not try: it was tuned before they existed (e.g.
    ``bayesian_category`` without ``slot_weight``, or with ``--no-slot-counts``). Rules without a saved grid
    are left out, and so are parameters it never searched whose every value today is the rule's default
    (what a tuning without them used)."""
    import inspect

    grids = GRIDS if grids is None else grids
    out: dict[str, list[str]] = {}
    for name, entry in tuned.items():
        grid = entry.get("grid") if isinstance(entry, dict) else None
        if name not in grids or not isinstance(grid, list) or not grid or not all(isinstance(p, dict) for p in grid):
            continue
        cls = rule_class(name)
        defaults = {k: v.default for k, v in inspect.signature(cls).parameters.items()} if cls is not None else {}
        missing = []
        # a tuning that records its data constants tried the value gain exactly where its data allowed
        decided = set(LINE_SEARCHED.get(name, ())) if isinstance(entry.get("data_constants"), dict) else set()
        for param, values in grids[name].items():
            if param in DATA_CONSTANTS or param in decided:
                continue
            tried = [p[param] for p in grid if param in p]
            # never searched: only a value other than the default is new; searched: any value not tried is
            if any(v not in tried for v in values) and (tried or any(v != defaults.get(param, inspect.Parameter.empty) for v in values)):
                missing.append(param)
        if missing:
            out[name] = missing
    return out


#: Grid entries that are constants of the tuning data (one value each), not searched values: a saved tuning is
#: not "older" for having had another one (e.g. other tuning users' median feedback value).
DATA_CONSTANTS: frozenset[str] = frozenset({"value_median"})


def check_slot_counts_setting(tuned: dict[str, Any], slot_counts: bool, path: Any) -> None:
    """Refuse a tuning that keeps the category counts per time of day for a run that leaves them out
    (``--no-slot-counts``): its rules would keep them all the same."""
    if slot_counts:
        return
    kept = [name for name, entry in tuned.items() if isinstance(entry, dict) and (entry.get("params") or {}).get("slot_weight")]
    if kept:
        raise InterestGymError(f"{path}: {', '.join(kept)} tuned with slot_weight "
                               f"{tuned[kept[0]]['params']['slot_weight']} (category counts per time of day); this run has "
                               "--no-slot-counts: tune again without --tuned-baselines, or drop --no-slot-counts")


def tune_reference(config: Any, valid_data: Any, scorer: Callable[..., Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune the reward-baseline rule(s) on validation users.

    :param scorer: what makes the tuning's objective from (data, metric, users): :func:`validation_scorer` (the
        default), or its Ray version (``interestgym.scale.ray_backend.scaled(...).validation_scorer``, identical).
    :return: (the reference's description: name, params, valid score, metric; every tuned baseline).
    """
    from interestgym.agents.run_folder import read_tuned_baselines

    names = list(baseline_names()) if config.reward_baseline == "best" else [config.reward_baseline]
    tuned = None
    if config.tuned_baselines:
        tuned = read_tuned_baselines(config.tuned_baselines, metric=config.reward, protocol=valid_data.describe(),
                                     names=names, tune_users=config.tune_users, strict=True)
        check_slot_counts_setting(tuned, config.slot_counts, config.tuned_baselines)
    if tuned is None:
        users = subsample_users(valid_data.scored_user_ids, config.tune_users, config.seed)
        tuned = tune_baselines((scorer or validation_scorer)(valid_data, config.reward, users), names,
                               grids=tuning_grids(config.slot_counts, valid_data.protocol == "impressions",
                                                  feedback_median(valid_data, users), names=names))
        if getattr(config, "sequence", None):
            base = best_baseline(tuned) if config.reward_baseline == "best" else config.reward_baseline
            tuned.update(tune_tracker_mixture(valid_data, tuned, base, config.reward, users))
    name = best_baseline(tuned) if config.reward_baseline == "best" else config.reward_baseline
    entry = tuned[name]
    reference = {"name": name, "params": entry["params"], "valid_score": entry["valid_score"], "metric": config.reward}
    provider = rule_provider(name)
    if provider is not None:  # another package's rule: which one, and its version (checked when the run is read)
        reference["provider"] = provider
    return reference, tuned


def tune_tracker_mixture(valid_data: Any, tuned: dict[str, dict[str, Any]], base_name: str, metric: str,
                         users: list[str] | None) -> dict[str, dict[str, Any]]:
    """``{"<base>+tracker": entry}``: the tuned rule ``base_name`` mixed with the tracker attached to
    ``valid_data`` at the weight tuned on ``users``, as a :func:`tune_baselines` entry (its grid: one row
    per weight)."""
    from interestgym.agents.rules import make_baseline
    from interestgym.agents.sequence.term import tune_tracker_weight

    t0 = time.perf_counter()
    base = make_baseline(base_name, **tuned[base_name]["params"])
    mix, table = tune_tracker_weight(valid_data, base, metric, users)
    best = max(table, key=lambda row: row["score"])
    return {mix.name: {"params": mix.params, "valid_score": best["score"], "grid": table,
                       "seconds": round(time.perf_counter() - t0, 3)}}
