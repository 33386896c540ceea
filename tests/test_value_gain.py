"""Counts weighed by the feedback value: ``bayesian_category``'s ``value_gain``.

* The rule: an event adds ``clip(1 + clip(s (v / median - 1), -1, 1), 0, 2)`` to its category's count
  (v its ``feedback_value``), through the same action column a learned gain lever moves; s = 0 is the rule
  as it was (four action columns, the same parameters).
* A residual policy adds its change to the rule's own in that column; a zero change is the rule, to the bit.
* The engine's counts against a plain-Python recount of the replay arrays; the batched tuning replay against
  one replay per rule.
* Tuning tries it only where the tuning users' values vary, around their median.
* Production: a shipped rule or a residual over it exports (format version 4) and the runtime replays it
  exactly as ``evaluate`` does.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from agents_fixtures import CATEGORY_RULE_PARAMS as PARAMS
from agents_fixtures import shipping_config, tiny_synthetic
from interestgym.agents import rules as rules_module
from interestgym.agents.rules import (
    GRIDS,
    VALUE_GAIN_GRID,
    feedback_median,
    make_baseline,
    note_grids,
    tuning_grids,
)
from interestgym.agents.tuning import grid_params_missing, validation_scorer
from interestgym.envs.engine import ReplayEngine

from interestgym.core.features import FEATURE_INDEX, LOG_FEATURES
from interestgym.core.protocol import ENV_ACTION_NAMES, residual_action_names
from interestgym.core.rules import compose_residual
from interestgym.errors import InterestGymError

GAIN = ENV_ACTION_NAMES.index("gain_change")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("value_gain") / "tiny", users=40)


def _gain_by_hand(value: float, s: float, median: float) -> float:
    change = min(max(s * (value / median - 1.0), -1.0), 1.0)
    return min(max(1.0 + change, 0.0), 2.0)


# ------------------------------------------------------------------------------------------- rule
def test_the_rule_counts_an_event_by_its_value_relative_to_the_median():
    obs = np.zeros((5, len(FEATURE_INDEX)), dtype=np.float32)
    values = np.array([0.0, 0.05, 0.1, 0.2, 0.9], dtype=np.float32)
    obs[:, FEATURE_INDEX["feedback_value"]] = values
    plain = make_baseline("bayesian_category", **PARAMS)
    weighed = make_baseline("bayesian_category", **PARAMS, value_gain=1.5, value_median=0.1)
    a, b = plain.act(obs), weighed.act(obs)
    assert a.shape == (5, 4) and b.shape == (5, GAIN + 1)
    assert np.array_equal(b[:, :4], a) and not b[:, 4:GAIN].any()  # strengths as before; no keep / tracker change
    gains = 1.0 + np.clip(b[:, GAIN].astype(np.float64), -1, 1)
    assert gains.tolist() == pytest.approx([_gain_by_hand(float(v), 1.5, 0.1) for v in values], abs=1e-6)
    assert gains.tolist() == pytest.approx([0.0, 0.25, 1.0, 2.0, 2.0], abs=1e-6)
    # s = 0 is the rule as it was: same parameters, same state key, four columns
    zero = make_baseline("bayesian_category", **PARAMS, value_gain=0.0, value_median=0.1)
    assert zero.params == plain.params and zero.state_key() == plain.state_key() and zero.act(obs).shape == (5, 4)
    assert weighed.params["value_gain"] == 1.5 and weighed.params["value_median"] == 0.1
    assert weighed.state_key() != plain.state_key()  # it moves the counts otherwise: its own state in tuning


@pytest.mark.parametrize("kwargs, message", [
    ({"value_gain": -1.0, "value_median": 0.1}, "value_gain=-1.0: expected a finite number >= 0"),
    ({"value_gain": float("nan"), "value_median": 0.1}, "value_gain=nan: expected a finite number >= 0"),
    ({"value_gain": 1.0}, "value_median=None with value_gain=1.0: expected a finite number > 0"),
    ({"value_gain": 1.0, "value_median": 0.0}, "value_median=0.0 with value_gain=1.0"),
])
def test_bad_value_gain_parameters_are_refused(kwargs, message):
    with pytest.raises(InterestGymError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_baseline("bayesian_category", **PARAMS, **kwargs)


def test_a_residual_change_adds_to_the_rules_own_gain_and_a_zero_change_is_the_rule():
    rng = np.random.default_rng(0)
    base = np.zeros((6, GAIN + 1), dtype=np.float32)
    base[:, :4] = rng.uniform(-1, 1, (6, 4))
    base[:, GAIN] = rng.uniform(-1, 1, 6)
    for names in (residual_action_names(tracker=False, gain=False), residual_action_names(tracker=False, gain=True),
                  residual_action_names(tracker=False, gain=True, context=True, slot=True)):
        zero = compose_residual(base, np.zeros((6, len(names)), np.float32), names)
        assert np.array_equal(zero[:, :GAIN + 1], base) and not zero[:, GAIN + 1:].any()
    names = residual_action_names(tracker=False, gain=True)
    change = rng.uniform(-1, 1, (6, len(names))).astype(np.float32)
    out = compose_residual(base, change, names)
    assert np.array_equal(out[:, GAIN], np.clip(base[:, GAIN] + change[:, names.index("gain_change")], -1, 1))
    assert np.array_equal(out[:, 4], np.clip(change[:, 4], -1, 1))  # the keep change: the rule has none
    # a rule of four columns composes as before
    plain = compose_residual(base[:, :4], change, names)
    assert np.array_equal(plain[:, GAIN], np.clip(change[:, names.index("gain_change")], -1, 1))


# ----------------------------------------------------------------------------------------- engine
def test_the_engines_counts_weigh_each_event_by_its_value(dataset):
    data = shipping_config(dataset, dataset / "unused").replay_data("valid")
    median = feedback_median(data)
    assert median is not None
    rule = make_baseline("bayesian_category", **PARAMS, value_gain=1.0, value_median=median)
    engine = ReplayEngine(data, 1)
    engine.set_scoring(slice(None), rule.scoring)
    f = PARAMS["forgetting"]
    column = LOG_FEATURES.index("feedback_value")
    weights = set()
    for user in range(min(data.n_users, 6)):
        engine.start(np.array([0]), np.array([user]))
        counts = [0.0] * engine.category_counts.shape[1]
        for d in range(int(data.user_decision_start[user]), int(data.user_decision_end[user])):
            out = engine.step(np.array([0]), rule.act(engine.observe(np.array([0]))))
            # by hand: forget, then add the event's weight to its category
            gain = _gain_by_hand(float(data.decision_log_features[d, column]), 1.0, median)
            counts = [c * f for c in counts]
            cat = int(data.decision_category[d])
            if 0 <= cat < len(counts):
                counts[cat] += gain
            assert out.count_gain[0] == pytest.approx(gain, abs=1e-6)
            np.testing.assert_allclose(engine.category_counts[0], counts, rtol=1e-6, atol=1e-9)
            weights.add(round(gain, 3))
    assert len(weights) > 3  # the events did count differently


def test_the_batched_tuning_replay_equals_one_replay_per_rule(dataset):
    data = shipping_config(dataset, dataset / "unused").replay_data("valid")
    median = feedback_median(data)
    grid = [make_baseline("bayesian_category", **{**PARAMS, "beta_cat": beta}, value_gain=s, value_median=median)
            for s in (0.0, 0.5, 2.0) for beta in (0.3, 3.0)]
    batched = validation_scorer(data, "ndcg@10")(grid)
    one_by_one = validation_scorer(data, "ndcg@10", batched=False)(grid)
    assert batched == one_by_one
    assert len(set(batched)) > 2


# ----------------------------------------------------------------------------------------- tuning
def test_tuning_tries_the_value_gain_only_where_the_values_vary(dataset):
    data = shipping_config(dataset, dataset / "unused").replay_data("valid")
    column = data.decision_log_features[:, LOG_FEATURES.index("feedback_value")]
    users = list(data.user_ids[:7])
    mine = np.concatenate([column[a:b] for a, b in zip(data.user_decision_start[:7], data.user_decision_end[:7])])
    assert feedback_median(data, users) == float(f"{np.median(mine):.4g}")
    assert feedback_median(data) == float(f"{np.median(column):.4g}")
    grids = tuning_grids(True, True, 0.14)["bayesian_category"]
    assert grids["value_gain"] == VALUE_GAIN_GRID and grids["value_median"] == [0.14] and 0.0 in VALUE_GAIN_GRID
    assert tuning_grids()["bayesian_category"]["value_gain"] == [0.0] and "value_median" not in tuning_grids()["bayesian_category"]
    # one value for every decision (clicks, views): no median, nothing to weigh
    flat = data.decision_log_features.copy()
    flat[:, LOG_FEATURES.index("feedback_value")] = 0.2
    assert feedback_median(type("D", (), {"decision_log_features": flat})()) is None
    # a tuning from before the value gain is an older grid where the values vary; another median is not
    before = {k: v for k, v in GRIDS["bayesian_category"].items() if k != "value_gain"}
    old = {"bayesian_category": {"params": dict(PARAMS), "grid": [{**PARAMS, **dict(zip(before, row))}
                                                                 for row in itertools.product(*before.values())]}}
    assert grid_params_missing(old, note_grids(True, True, True)) == {"bayesian_category": ["value_gain"]}
    assert grid_params_missing(old, note_grids(True, True, False)) == {}
    new = {"bayesian_category": {"params": dict(PARAMS), "grid": [{**row, "value_gain": s, "value_median": 0.3}
                                                                 for row in old["bayesian_category"]["grid"]
                                                                 for s in VALUE_GAIN_GRID]}}
    assert grid_params_missing(new, tuning_grids(True, True, 0.14)) == {}


# ---------------------------------------------------------------------------------------- runtime
@pytest.mark.parametrize("threshold", [1.0, -1.0], ids=["ships the rule", "ships the residual model"])
def test_a_value_gain_rule_exports_and_the_runtime_reproduces_evaluate(dataset, tmp_path, monkeypatch, threshold):
    from interestgym.agents.run_folder import load_shipped_policy, read_shipped
    from interestgym.agents.train import train_run
    from interestgym.envs.vector import evaluate_policy

    from interestgym.data.dataset import Dataset
    from interestgym.export.parity import replay_through_runtime
    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    monkeypatch.setattr(rules_module, "VALUE_GAIN_GRID", [1.0])  # the tuned reference weighs its counts
    monkeypatch.setitem(GRIDS["bayesian_category"], "slot_weight", [0.0])
    monkeypatch.setitem(GRIDS["bayesian_category"], "exposure", [0.0])
    run = tmp_path / "run"
    train_run(shipping_config(dataset, run, ship_threshold=threshold))
    decision = read_shipped(run)
    assert decision["policy"] == ("rule" if threshold > 0 else "learned")
    assert decision["rule"]["params"]["value_gain"] == 1.0 and decision["rule"]["params"]["value_median"] > 0
    export_run(run, tmp_path / "export", verify_observations=100)
    policy = load_policy(tmp_path / "export")
    assert policy.manifest["format_version"] == 4  # a runtime from before the value gain refuses it ("upgrade")
    data = shipping_config(dataset, run).replay_data("test")
    expected = evaluate_policy(data, load_shipped_policy(run), progress=False)
    got = replay_through_runtime(policy, Dataset.open(dataset), data, serialise="bytes")
    for metric in expected.metrics:
        np.testing.assert_array_equal(got[metric].to_numpy(), expected.points[metric].to_numpy(), err_msg=metric)


def test_a_manifest_whose_rule_weighs_by_value_needs_format_version_4_and_good_parameters(dataset, tmp_path, monkeypatch):
    from agents_fixtures import resealed_copy
    from interestgym.agents.train import train_run

    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    monkeypatch.setattr(rules_module, "VALUE_GAIN_GRID", [1.0])
    monkeypatch.setitem(GRIDS["bayesian_category"], "slot_weight", [0.0])
    monkeypatch.setitem(GRIDS["bayesian_category"], "exposure", [0.0])
    run = tmp_path / "run"
    train_run(shipping_config(dataset, run, ship_threshold=1.0, timesteps=64, eval_every=64, checkpoint_every=64))
    export_run(run, tmp_path / "export", verify_observations=10)
    assert load_policy(tmp_path / "export").manifest["policy"]["rule"]["params"]["value_gain"] == 1.0

    def resealed(name, change):
        return resealed_copy(tmp_path / "export", tmp_path / name, change)

    def old_version(m):
        m["format_version"] = 3

    def no_median(m):
        del m["policy"]["rule"]["params"]["value_median"]

    with pytest.raises(InterestGymError, match="format_version 3 with a scoring or rule that needs version 4"):
        load_policy(resealed("old", old_version))
    with pytest.raises(InterestGymError, match="value_median=None with value_gain=1.0"):
        load_policy(resealed("median", no_median))


def test_tuning_searches_the_value_gain_after_the_product_and_keeps_what_it_scored(dataset):
    from interestgym.agents.tuning import tune_baselines

    data = shipping_config(dataset, dataset / "unused").replay_data("valid")
    score = validation_scorer(data, "ndcg@10")
    tuned = tune_baselines(score, ["bayesian_category"])  # the scorer's own grids: its users' values vary
    entry = tuned["bayesian_category"]
    lines = [row for row in entry["grid"] if set(row) == {"value_gain", "score"}]
    assert sorted({row["value_gain"] for row in lines}) == VALUE_GAIN_GRID  # one line search per round
    products = [row for row in entry["grid"] if "beta_cat" in row]
    assert products and all("value_gain" not in row for row in products)  # not in the product
    # the tuned rule scores what tuning says, and no scored point beats it
    params = entry["params"]
    assert score([make_baseline("bayesian_category", **params)]) == [entry["valid_score"]]
    assert entry["valid_score"] == max(row["score"] for row in entry["grid"] if "beta_cat" in row or "value_gain" in row)
    assert params.get("value_median", feedback_median(data)) == feedback_median(data)


def test_a_tuning_records_its_median_and_writes_no_value_gain_of_zero(dataset):
    from interestgym.agents.tuning import _tuned_params, tune_baselines

    from interestgym.core.rules import BayesianCategoryPolicy

    data = shipping_config(dataset, dataset / "unused").replay_data("valid")
    tuned = tune_baselines(validation_scorer(data, "ndcg@10"), ["bayesian_category"])
    assert tuned["bayesian_category"]["data_constants"] == {"value_median": feedback_median(data)}
    assert "data_constants" not in tuned["ema_two_profile"]
    # a gain of 0 is the rule without it: neither it nor its median is written down
    assert _tuned_params(BayesianCategoryPolicy, {"value_gain": 0.0, "beta_cat": 1.0, "value_median": 0.3}) == {"beta_cat": 1.0}
    assert list(_tuned_params(BayesianCategoryPolicy, {"value_median": 0.3, "value_gain": 1.0, "beta_cat": 1.0})) == [
        "beta_cat", "value_gain", "value_median"]  # the constructor's order
    # a tuning without a median (its users' values did not vary) is not "older" where the dataset's values vary
    entry = {"params": dict(PARAMS), "grid": [{"beta_cat": 1.0, "score": 0.5}], "data_constants": {"value_median": None}}
    grids = {"bayesian_category": {"beta_cat": [1.0], "value_gain": list(VALUE_GAIN_GRID), "value_median": [0.2]}}
    assert grid_params_missing({"bayesian_category": entry}, grids) == {}
    del entry["data_constants"]
    assert grid_params_missing({"bayesian_category": entry}, grids) == {"bayesian_category": ["value_gain"]}
