"""Tuning as one batched replay: every grid scored at once, each interest state replayed once, gives
exactly the per-policy numbers."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from env_fixtures import make_dataset
from interestgym.agents.config import TrainConfig
from interestgym.agents.rules import CLASSES, GRIDS, POPULARITY_GRID
from interestgym.agents.tuning import tune_baselines, validation_scorer
from interestgym.envs.engine import LEAN_SKIPPED_FEATURES, ReplayEngine
from interestgym.envs.policies import ConstantPolicy
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
from interestgym.envs.rollout import replay_shared, replay_users_many
from interestgym.envs.vector import evaluate_policy

from interestgym.core.features import FEATURE_INDEX, N_FEATURES
from interestgym.core.interest import ScoringConfig
from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tiny_synthetic(tmp_path_factory.mktemp("scale") / "tiny", users=24, events_per_user=14)
    return TrainConfig(dataset=str(path), run_dir="").replay_data("valid")


@pytest.fixture(scope="module")
def impressions(tmp_path_factory):
    # logged impressions of varying length: the rows of one step have different candidate counts
    path = make_dataset(tmp_path_factory.mktemp("scale") / "imp", seed=5, n_users=30, impressions=True)
    return load_replay_data(path, "rand", ProtocolSpec(split="train"))


def every_grid_point(name: str) -> list:
    grid = GRIDS[name]
    names = list(grid)
    points = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))] or [{}]
    return [CLASSES[name](**p) for p in points]


def test_every_grid_in_one_replay_scores_every_point_exactly_as_alone(synthetic):
    # every baseline's grid (and ema_two_profile's popularity grid) in one call: rules of different
    # classes and scoring terms together, as well as one grid at a time
    grids = {name: every_grid_point(name) for name in GRIDS}
    grids["ema_two_profile"] += [CLASSES["ema_two_profile"](popularity_weight=p) for p in POPULARITY_GRID]
    policies = [p for grid in grids.values() for p in grid]
    one_by_one = validation_scorer(synthetic, "ndcg@10", batched=False)(policies)
    assert validation_scorer(synthetic, "ndcg@10")(policies) == one_by_one
    # a small row budget: many engines, and users queued behind busy rows
    assert validation_scorer(synthetic, "ndcg@10", max_rows=7)(policies[-30:]) == one_by_one[-30:]
    start = 0
    for name, grid in grids.items():
        assert validation_scorer(synthetic, "ndcg@10")(grid) == one_by_one[start: start + len(grid)], name
        start += len(grid)


def test_mixed_scoring_terms_and_impressions_of_varying_length(impressions):
    policies = [
        ConstantPolicy(0.3, 0.8, 0.4, 0.0, name="plain"),
        ConstantPolicy(0.3, 0.8, 0.4, 0.0, name="bayes_ctx", scoring=ScoringConfig(popularity_weight=0.2, beta_cat=0.5,
                                                                                  category_forgetting=0.9, beta_ctx=0.3)),
        ConstantPolicy(0.6, 0.2, 0.7, 0.1, name="ctx", scoring=ScoringConfig(beta_ctx=0.6, context_rate=0.1)),
        ConstantPolicy(0.1, 1.0, 0.2, 0.3, name="cat", scoring=ScoringConfig(beta_cat=2.0, category_forgetting=None)),
    ]
    users = [str(u) for u in impressions.user_ids[::2]]
    for metric in ("mrr", "auc"):
        alone = validation_scorer(impressions, metric, users, batched=False)(policies)
        assert validation_scorer(impressions, metric, users, max_rows=11)(policies) == alone


def test_each_row_replays_what_the_evaluator_replays(synthetic):
    """Per point, the batched replay's metrics are the single-policy evaluator's, for every policy."""
    policies = every_grid_point("behaviour_rule")[:4]
    got: dict[int, dict[int, float]] = {k: {} for k in range(len(policies))}
    for step in replay_users_many(synthetic, policies, max_rows=50):
        for k, point, value in zip(step.policy[step.output.point_row], step.output.point_index,
                                   step.output.point_metrics["ndcg@10"]):
            got[int(k)][int(point)] = float(value)
    for k, policy in enumerate(policies):
        res = evaluate_policy(synthetic, policy, record_features=False, progress=False)
        values = [got[k][p] for p in sorted(got[k])]
        np.testing.assert_array_equal(values, res.points["ndcg@10"].to_numpy())


def test_tune_baselines_returns_the_same_tuning_as_one_replay_per_point(synthetic):
    names = ["static", "context_rule"]  # context_rule: two rounds of coordinate ascent over ema_two_profile
    batched = tune_baselines(validation_scorer(synthetic, "ndcg@10"), names)
    alone = tune_baselines(validation_scorer(synthetic, "ndcg@10", batched=False), names)
    assert list(batched) == list(alone) == ["ema_two_profile", "static", "context_rule"]
    for name in alone:
        assert batched[name]["params"] == alone[name]["params"], name
        assert batched[name]["valid_score"] == alone[name]["valid_score"], name
        assert batched[name]["grid"] == alone[name]["grid"], name


def test_revisited_grid_points_are_scored_once(synthetic):
    scored: list[str] = []
    inner = validation_scorer(synthetic, "ndcg@10")

    def recording(policies):
        scored.extend(json.dumps(p.describe(), sort_keys=True) for p in policies)
        return inner(policies)

    tune_baselines(recording, ["recsim_saturating"], rounds=2)
    # the coordinate ascent comes back to its best points (p grid, inner grid, own grid again)
    assert len(scored) == len(set(scored)) > 100


# ---------------------------------------------------------------- one replay per interest state
def test_a_grid_over_score_weights_replays_one_state_per_strength_pair(synthetic):
    grid = every_grid_point("ema_two_profile")
    keys = {p.state_key() for p in grid}
    # only (long_rate, short_rate) move the profiles: w is a score weight
    assert len(keys) == len(GRIDS["ema_two_profile"]["long_rate"]) * len(GRIDS["ema_two_profile"]["short_rate"])
    bayes = every_grid_point("bayesian_category")
    # beta_cat, lambda and b score only; the forgetting and whether the per-slot counts and the exposure counts are
    # kept move the state
    assert len({p.state_key() for p in bayes}) == len(GRIDS["bayesian_category"]["forgetting"]) * 2 * 2
    # a rule that is not its state's first one is ranked by rescoring: still its own replay's numbers
    def pick(beta_cat, forgetting, slot_weight):
        return next(p for p in bayes if (p.params["beta_cat"], p.params["forgetting"], p.params.get("slot_weight", 0.0))
                    == (beta_cat, forgetting, slot_weight))
    policies = [pick(0.3, 0.8, 0.0), pick(1.0, 0.8, 0.0), pick(0.3, 0.8, 1.0), pick(1.0, 0.8, 4.0), pick(3.0, 0.8, 2.0),
                pick(0.3, 0.9, 0.0)]
    got: dict[int, dict[int, float]] = {k: {} for k in range(len(policies))}
    for step in replay_shared(synthetic, policies, max_rows=40):
        for k, point, value in zip(step.policy, step.point_index, step.value):
            got[int(k)][int(point)] = float(value)
    # beta_cat 1.0 (rescored), lambda 4 (rescored over the lambda = 1 rule's state) and forgetting 0.9 (its own state)
    for k in (1, 3, 5):
        res = evaluate_policy(synthetic, policies[k], record_features=False, progress=False)
        np.testing.assert_array_equal([got[k][p] for p in sorted(got[k])], res.points["ndcg@10"].to_numpy())


class _MisdeclaredRule(CLASSES["ema_two_profile"]):
    """Claims that every instance moves the state alike, whatever its long_rate."""

    def state_key(self) -> str:
        return "one state"


class _ReadsRunningReward(CLASSES["ema_two_profile"]):
    """Weighs S by its own running reward: a feature a lean replay does not compute."""

    def strengths(self, view):
        return 0.2, 0.5, view["reward_ema"], 0.0


def test_rules_that_share_a_state_key_but_move_the_state_differently_are_refused(synthetic):
    with pytest.raises(InterestGymError, match="share a state_key"):
        list(replay_shared(synthetic, [_MisdeclaredRule(long_rate=0.1), _MisdeclaredRule(long_rate=0.5)]))


def test_a_rule_reading_a_feature_the_lean_replay_skips_is_refused(synthetic):
    with pytest.raises(InterestGymError, match="lean replay"):
        list(replay_shared(synthetic, [CLASSES["ema_two_profile"](), _ReadsRunningReward()]))


def test_a_lean_engine_replays_the_same_state_and_metric(synthetic):
    """Lean skips diagnostics, not maths: profiles, every other feature and the metric are the full engine's."""
    rng = np.random.default_rng(3)
    rows = np.arange(6)
    users = np.arange(6)
    full, lean = ReplayEngine(synthetic, 6), ReplayEngine(synthetic, 6, lean=True)
    for engine in (full, lean):
        engine.start(rows, users)
    skipped = [FEATURE_INDEX[n] for n in LEAN_SKIPPED_FEATURES]
    kept = [i for i in range(N_FEATURES) if i not in skipped]
    active = rows
    while len(active):
        obs_full, obs_lean = full.observe(active), lean.observe(active)
        np.testing.assert_array_equal(obs_full[:, kept], obs_lean[:, kept])
        assert np.isnan(obs_lean[:, skipped]).all()
        actions = rng.uniform(-1, 1, size=(len(active), 4)).astype(np.float32)
        out_full, out_lean = full.step(active, actions), lean.step(active, actions)
        np.testing.assert_array_equal(out_full.point_metrics["ndcg@10"], out_lean.point_metrics["ndcg@10"])
        np.testing.assert_array_equal(full.long_term, lean.long_term)
        np.testing.assert_array_equal(full.short_term, lean.short_term)
        active = active[~out_full.done]
    assert set(lean.metric_names) == {"ndcg@10"} and lean.shadow.shape[1] == 0


def test_a_state_cache_ranks_known_states_without_replaying_them(synthetic, monkeypatch):
    """States replayed by an earlier call (the coordinate ascent comes back to them) are ranked from the
    cache: the same numbers, no engine step."""
    from interestgym.envs import rollout
    from interestgym.envs.rollout import StateCache

    grid = every_grid_point("bayesian_category")
    cache = StateCache()
    first = validation_scorer(synthetic, "ndcg@10", batched=False)(grid)
    from interestgym.agents.tuning import score_policies

    assert score_policies(synthetic, grid[:7], "ndcg@10", cache=cache) == first[:7]
    assert len(cache) == len({p.state_key() for p in grid[:7]})
    steps = []
    real = rollout.replay_users_many
    monkeypatch.setattr(rollout, "replay_users_many", lambda *a, **k: (steps.append(1) or s for s in real(*a, **k)))
    known = [p for p in grid if p.state_key() in {q.state_key() for q in grid[:7]}]
    assert score_policies(synthetic, known, "ndcg@10", cache=cache) == [first[grid.index(p)] for p in known]
    assert not steps
    # other users: the cache starts empty
    users = [str(u) for u in synthetic.user_ids[::2]]
    assert score_policies(synthetic, grid[:3], "ndcg@10", users, cache=cache) == \
        validation_scorer(synthetic, "ndcg@10", users, batched=False)(grid[:3])


def test_only_a_lean_engine_steps_without_ranking(synthetic):
    engine = ReplayEngine(synthetic, 2)
    engine.start(np.arange(2), np.arange(2))
    with pytest.raises(ValueError, match="lean"):
        engine.step(np.arange(2), np.zeros((2, 4), dtype=np.float32), rank=False)


def test_what_is_kept_for_the_cache_and_buffered_for_ranking_stays_within_their_budgets(synthetic, monkeypatch):
    """On a large catalogue every kept point holds its row's category counts (n_categories float64, three times with
    the per-slot and exposure counts): the records kept for the cache stop at the cache's size (a 2,083-category
    sample held 5 GB of them, all dropped by the cache at the end), and the buffer is ranked once it holds
    ``flush_bytes``; neither changes a number."""
    from interestgym.agents.tuning import score_policies
    from interestgym.envs import rollout
    from interestgym.envs.rollout import StateCache

    grid = every_grid_point("bayesian_category")
    first = validation_scorer(synthetic, "ndcg@10", batched=False)(grid)
    real_replay, real_records = rollout.replay_shared, rollout._state_records
    flushes = []
    monkeypatch.setattr(rollout, "_state_records", lambda *a: flushes.append(1) or real_records(*a))
    assert score_policies(synthetic, grid, "ndcg@10", cache=StateCache()) == first
    by_rows = len(flushes)
    # a ranking after every lock-step of the replay (a byte budget of 1), and a cache of 200 kB
    monkeypatch.setattr(rollout, "replay_shared", lambda *a, **k: real_replay(*a, **{**k, "flush_bytes": 1}))
    flushes.clear()
    cache = StateCache(max_bytes=200_000)
    assert score_policies(synthetic, grid, "ndcg@10", cache=cache) == first
    assert len(flushes) > by_rows  # ranked in many parts
    assert 0 < cache.nbytes <= 200_000 and len(cache) < len({p.state_key() for p in grid})
    none_kept = StateCache(max_bytes=0)
    assert score_policies(synthetic, grid, "ndcg@10", cache=none_kept) == first and len(none_kept) == 0
