"""Baselines act as documented on real replay observations; tuning picks the validation-best grid point."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from interestgym.agents.config import TrainConfig
from interestgym.agents.rules import BASELINE_NAMES, GRIDS, EMAPolicy, make_baseline
from interestgym.agents.tuning import (
    best_baseline,
    grid_search,
    mean_over_users,
    tune_baselines,
    validation_scorer,
)
from interestgym.envs.policies import Policy
from interestgym.envs.vector import evaluate_policy

from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tiny_synthetic(tmp_path_factory.mktemp("data") / "tiny")
    config = TrainConfig(dataset=str(path), run_dir="")
    return config.replay_data("valid")


def _run(data, policy):
    return evaluate_policy(data, policy, metric="ndcg@10", record_features=True, progress=False)


def test_every_baseline_is_a_policy_with_actions_in_the_box(data):
    for name in BASELINE_NAMES:
        policy = make_baseline(name)
        assert isinstance(policy, Policy)
        res = _run(data, policy)
        strengths = res.decisions[["long_strength", "short_strength", "short_weight", "popularity_weight"]].to_numpy()
        assert np.all((strengths >= 0) & (strengths <= 1)), name
    with pytest.raises(InterestGymError, match="expected one of"):
        make_baseline("nope")


def test_rules_choose_the_documented_strengths(data):
    d = _run(data, make_baseline("static")).decisions
    np.testing.assert_array_equal(d["long_strength"], np.where(d["decision"] == 0, 1.0, 0.0))

    d = _run(data, make_baseline("mean_history")).decisions
    np.testing.assert_allclose(d["long_strength"], 1.0 / (d["decision"] + 1.0), rtol=1e-6)

    d = _run(data, make_baseline("always_replace")).decisions
    assert (d["long_strength"] == 1).all() and (d["short_strength"] == 1).all()

    rule = make_baseline("time_decay", half_life_hours=2.0, min_rate=0.1)
    d = _run(data, rule).decisions
    gap_h = d.groupby("user_id")["ts"].diff().to_numpy() / 3600.0
    expected = np.where(d["decision"] == 0, 1.0, np.maximum(1 - 0.5 ** (gap_h / 2.0), 0.1))
    np.testing.assert_allclose(d["long_strength"], expected, rtol=1e-4, atol=1e-5)

    rule = make_baseline("behaviour_rule", streak=2, burst_weight=0.9, long_rate=0.1, short_rate=0.3, short_weight=0.2)
    res = _run(data, rule)
    cat = data.decision_category[np.concatenate([np.arange(s, e) for s, e in zip(data.user_decision_start, data.user_decision_end)])]
    same_as_previous = np.r_[False, cat[1:] == cat[:-1]] & (res.decisions["decision"].to_numpy() > 0)
    np.testing.assert_allclose(res.decisions["short_strength"], np.where(same_as_previous, 1.0, 0.3), atol=1e-6)
    np.testing.assert_allclose(res.decisions["short_weight"], np.where(same_as_previous, 0.9, 0.2), atol=1e-6)


def test_recsim_saturating_moves_the_long_profile_by_how_new_the_item_is(data):
    """a_L = a0 (1 - clip(cos(x, L), 0, 1)), 1 at a user's first decision, with L replayed here in float64
    from the items alone (independently of the engine): an item opposite to the profile moves it by a0, no more."""
    a0 = 0.4
    d = _run(data, make_baseline("recsim_saturating", base_rate=a0, short_rate=0.6, short_weight=0.5)).decisions
    expected, cosines = [], []
    for start, end in zip(data.user_decision_start, data.user_decision_end):
        long_term = np.zeros(data.dim)
        for dec in range(start, end):
            x = data.embeddings[data.decision_item[dec]].astype(np.float64)
            cos = float(long_term @ x)
            a = 1.0 if not long_term.any() else a0 * (1.0 - min(max(cos, 0.0), 1.0))
            moved = (1 - a) * long_term + a * x
            long_term = moved / np.linalg.norm(moved) if a > 0 else long_term
            expected.append(a)
            cosines.append(cos if dec > start else np.nan)
    cosines = np.asarray(cosines)
    assert (cosines < -0.05).sum() >= 5 and (cosines > 0.2).sum() >= 5  # the clip's both sides are exercised
    np.testing.assert_allclose(d["long_strength"].to_numpy(), expected, atol=1e-5)


def test_every_rule_has_a_definition_naming_each_of_its_parameters():
    """The definitions an export's manifest carries (core.rules' docstring table): one per rule, naming every
    parameter the rule takes (a two-profile rule's own four may be named by "the two-profile rule")."""
    from interestgym.core.rules import (
        RULES,
        TwoProfileEMAPolicy,
        make_rule,
        rule_definition,
        rule_definitions,
    )

    definitions = rule_definitions()
    assert sorted(definitions) == sorted(RULES)
    two_profile = set(make_rule("ema_two_profile").params)
    for name in RULES:
        rule = make_rule(name)
        for param in rule.params:
            inherited = isinstance(rule, TwoProfileEMAPolicy) and param in two_profile and "two-profile rule" in definitions[name]
            assert param in definitions[name] or inherited, (name, param)
    assert rule_definition("ema+tracker").startswith(definitions["ema"]) and "tracker_weight" in rule_definition("ema+tracker")
    assert rule_definition("nope") is None


def test_grid_search_matches_brute_force(data):
    rates = GRIDS["ema"]["rate"]
    brute = [mean_over_users(evaluate_policy(data, EMAPolicy(rate=r), metric="mrr", record_features=False, progress=False), "mrr")
             for r in rates]
    found = grid_search(lambda p: EMAPolicy(**p), {"rate": rates}, validation_scorer(data, "mrr"))
    assert found.best_params == {"rate": rates[int(np.argmax(brute))]}
    assert found.best_score == pytest.approx(max(brute))
    assert [row["score"] for row in found.table] == pytest.approx(brute)


def test_tune_baselines_keeps_each_rules_best_point_and_picks_the_best_rule(data):
    tuned = tune_baselines(validation_scorer(data, "ndcg@10"), ["ema", "static", "popularity"])
    assert set(tuned) == {"ema", "static", "popularity"}
    scores = [row["score"] for row in tuned["ema"]["grid"]]
    assert tuned["ema"]["valid_score"] == pytest.approx(max(scores))
    best = max(tuned, key=lambda n: tuned[n]["valid_score"])
    assert best_baseline(tuned) == best
    # the stored score is what the tuned policy really gets on validation users
    again = mean_over_users(evaluate_policy(data, make_baseline("ema", **tuned["ema"]["params"]), metric="ndcg@10",
                                            record_features=False, progress=False), "ndcg@10")
    assert again == pytest.approx(tuned["ema"]["valid_score"])


def test_rules_with_extra_score_terms_inherit_and_retune_the_two_profile_rule(data):
    tuned = tune_baselines(validation_scorer(data, "ndcg@10"), ["bayesian_category"], rounds=1)
    two = tuned["ema_two_profile"]["params"]
    bayes = tuned["bayesian_category"]["params"]
    assert {k: bayes[k] for k in two} == two  # one round: inherited as tuned
    assert bayes["beta_cat"] in GRIDS["bayesian_category"]["beta_cat"]
    assert make_baseline("bayesian_category", **bayes).scoring.beta_cat == bayes["beta_cat"]


def test_the_best_rule_on_a_tie_does_not_depend_on_the_order_the_tunings_are_read_in():
    # as on a log where several rules rank by popularity alone: train's order and evaluate's must agree
    scores = {"always_replace": 0.8155, "ema": 0.8155, "ema_two_profile": 0.8155, "static": 0.7, "oracle": 0.99,
              "context_rule+tracker": 0.8155}
    as_train = {n: {"valid_score": scores[n]} for n in ["ema_two_profile", "static", "always_replace", "ema", "oracle",
                                                          "context_rule+tracker"]}
    as_evaluate = {n: as_train[n] for n in ["static", "always_replace", "oracle", "ema", "context_rule+tracker", "ema_two_profile"]}
    assert best_baseline(as_train) == best_baseline(as_evaluate) == "ema_two_profile"
    del as_train["ema_two_profile"], as_evaluate["ema_two_profile"]
    assert best_baseline(as_train) == best_baseline(as_evaluate) == "always_replace"  # first in BASELINE_NAMES
    assert best_baseline({"a+tracker": {"valid_score": 1.0}, "b+tracker": {"valid_score": 1.0}}) == "a+tracker"
    assert best_baseline({"ema": {"valid_score": float("nan")}, "static": {"valid_score": 0.1}}) == "static"


def test_grid_search_skips_nan_points_and_keeps_the_first_of_tied_bests():
    """A point whose score is NaN (no scoring point for it) never wins, wherever it sits; among equal best scores the
    first in grid order does, as documented (the tuning's result cannot depend on how a tie happened to be ordered)."""
    def scores_of(values):
        return lambda policies: [values[p.params["rate"]] for p in policies]

    grid = {"rate": [0.1, 0.2, 0.3, 0.4]}
    found = grid_search(lambda p: EMAPolicy(**p), grid, scores_of({0.1: float("nan"), 0.2: 0.3, 0.3: 0.5, 0.4: 0.1}))
    assert found.best_params == {"rate": 0.3} and found.best_score == 0.5
    found = grid_search(lambda p: EMAPolicy(**p), grid, scores_of({0.1: 0.2, 0.2: 0.6, 0.3: float("nan"), 0.4: 0.6}))
    assert found.best_params == {"rate": 0.2} and found.best_score == 0.6


def test_params_text_says_a_tied_forgetting_in_words():
    """bayesian_category's forgetting None means the counts forget at 1 - a_L: the evaluation header, the report and the
    export's header say that, not "forgetting None"."""
    from interestgym.core.rules import params_text

    assert params_text({"beta_cat": 0.5, "forgetting": None, "prior": 1.0}) == "beta_cat 0.5, forgetting tied to a_L (1 - a_L), prior 1"
    assert params_text({"forgetting": 0.9}) == "forgetting 0.9" and params_text({}) is None
