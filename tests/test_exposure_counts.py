"""Clicks per exposure: the category term divided by what each user was shown.

* The maths (``core.interest``, ``core.transition``): the term is ``log P(cat | user) - log(shown(cat) + b)``
  against a hand computation; b = 0 is the term without it to the bit; shown counts fold in at the next
  decision and forget with the category counts.
* The engine counts every scored impression's candidates per category, checked against a recount of the
  replay arrays with plain Python; sampled negatives (never shown to anyone) are refused.
* The rule: ``bayesian_category``'s ``exposure`` (b) is tuned only on logs of impressions.
* Production: the runtime keeps the counts (user state version 4, export format version 3), ``record_outcome``
  feeds them, and the runtime replays a rule and an agent with them exactly as ``evaluate`` does.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from agents_fixtures import CATEGORY_RULE_PARAMS as PARAMS
from agents_fixtures import shipping_config, tiny_synthetic
from interestgym.agents import rules as agents_rules
from interestgym.agents.rules import GRIDS, make_baseline, tuning_grids
from interestgym.agents.train import train_run
from interestgym.envs.engine import ReplayEngine

from interestgym.core.interest import (
    ScoringConfig,
    category_log_prob,
    exposure_log,
    score_candidates,
)
from interestgym.core.transition import fold_exposure, shown_counts
from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("exposure") / "tiny", users=40)


# ------------------------------------------------------------------------------------------ maths
def test_the_term_is_clicks_per_exposure_and_b_zero_leaves_the_score_as_it_was():
    rng = np.random.default_rng(0)
    b_rows, c, k = 3, 5, 4
    cos_l, cos_s = rng.uniform(-1, 1, (b_rows, c)), rng.uniform(-1, 1, (b_rows, c))
    strengths = rng.uniform(0, 1, (b_rows, 4))
    pop = rng.uniform(0, 1, (b_rows, c)).astype(np.float32)
    counts = rng.integers(0, 5, (b_rows, k)).astype(np.float64)
    shown = rng.integers(0, 9, (b_rows, k)).astype(np.float64)
    cats = rng.integers(0, k, (b_rows, c))
    cats[0, 0] = k  # a category the counts do not know: never shown either
    b = np.array([3.0, 0.0, 0.5])
    common = {"beta_cat": 2.0, "category_counts": counts, "candidate_category": cats, "category_prior": 1.0}
    with_term = score_candidates(cos_l, cos_s, strengths, pop, **common, exposure_counts=shown, exposure_prior=b)
    without = score_candidates(cos_l, cos_s, strengths, pop, **common)
    # by hand: beta_cat x (log((n_c + prior) / (N + prior K)) - log(shown_c + b)) where b > 0
    for i in range(b_rows):
        for j in range(c):
            cat = cats[i, j]
            n_c = counts[i, cat] if cat < k else 0.0
            e_c = shown[i, cat] if cat < k else 0.0
            log_p = np.log((n_c + 1.0) / (counts[i].sum() + k))
            expected = without[i, j] + (-2.0 * np.log(e_c + b[i]) if b[i] > 0 else 0.0)
            assert with_term[i, j] == pytest.approx(expected, rel=1e-12, abs=1e-12)
            assert category_log_prob(counts[i:i + 1], cats[i:i + 1], 1.0)[0, j] == pytest.approx(log_p, rel=1e-12)
    assert np.array_equal(with_term[1], without[1])  # b = 0: the old term, to the bit
    assert exposure_log(shown, cats, 3.0)[0, 0] == pytest.approx(np.log(3.0))  # unknown category: exposure 0


def test_shown_counts_fold_in_at_the_next_decision_and_forget_with_the_counts():
    cats = np.array([[0, 2, 2, -1], [1, 1, 5, 3]])  # -1 padding, 5 outside 4 columns: not counted
    got = shown_counts(np.array([1, 0]), cats, 2, 4)
    assert got.tolist() == [[0.0, 2.0, 0.0, 1.0], [1.0, 0.0, 2.0, 0.0]]
    exposure, pending = np.array([[1.0, 0.5, 0.0, 2.0]]), np.array([[0.0, 3.0, 1.0, 0.0]])
    assert fold_exposure(exposure, pending, np.array([0.5])).tolist() == [[0.5, 1.75, 0.5, 1.0]]
    assert fold_exposure(exposure, pending, 1.0).tolist() == [[1.0, 3.5, 1.0, 2.0]]


@pytest.mark.parametrize("kwargs, message", [
    ({"beta_cat": 1.0, "category_exposure_prior": -1.0}, "category_exposure_prior=-1.0: expected a finite number >= 0"),
    ({"beta_cat": 1.0, "category_exposure_prior": float("nan")}, "expected a finite number >= 0"),
    ({"category_exposure_prior": 3.0}, "with beta_cat=0: exposure divides the category term"),
])
def test_the_scoring_refuses_a_bad_prior(kwargs, message):
    with pytest.raises(InterestGymError, match=message):
        ScoringConfig(**kwargs)


def test_the_rule_takes_b_and_describes_it_only_when_used():
    assert "exposure" not in make_baseline("bayesian_category", **PARAMS).params
    assert "category_exposure_prior" not in ScoringConfig(beta_cat=1.0).as_dict()  # older files read the same
    rule = make_baseline("bayesian_category", **PARAMS, exposure=3)
    assert rule.params["exposure"] == 3.0 and rule.scoring.category_exposure_prior == 3.0 and rule.scoring.exposure_counts
    for bad in (-1.0, True, "3", float("inf")):
        with pytest.raises(InterestGymError, match=r"rule 'bayesian_category' parameter exposure=.*: expected a finite number >= 0"):
            make_baseline("bayesian_category", **PARAMS, exposure=bad)
    # b only weighs the score; whether the counts are kept is part of the state (tuning shares one replay per state)
    assert (make_baseline("bayesian_category", **PARAMS, exposure=1.0).state_key()
            == make_baseline("bayesian_category", **PARAMS, exposure=10.0).state_key()
            != make_baseline("bayesian_category", **PARAMS).state_key())


# ----------------------------------------------------------------------------------------- engine
def test_the_engine_counts_each_scored_impressions_candidates(dataset):
    data = shipping_config(dataset, dataset / "unused").replay_data("valid")
    assert data.protocol == "impressions"
    rule = make_baseline("bayesian_category", **PARAMS, exposure=3.0)
    engine = ReplayEngine(data, 1)
    engine.set_scoring(slice(None), rule.scoring)
    f = PARAMS["forgetting"]
    checked = 0
    for user in range(min(data.n_users, 6)):
        engine.start(np.array([0]), np.array([user]))
        exposure = np.zeros(engine.exposure_counts.shape[1])
        pending = np.zeros_like(exposure)
        for d in range(int(data.user_decision_start[user]), int(data.user_decision_end[user])):
            obs = engine.observe(np.array([0]))
            engine.step(np.array([0]), rule.act(obs))
            # a plain recount from the replay arrays: fold at the decision, then this decision's impressions
            exposure = [(e + p) * f for e, p in zip(exposure, pending)]
            pending = [0.0] * len(exposure)
            for point in range(int(data.decision_point_start[d]), int(data.decision_point_end[d])):
                a, b = int(data.point_offsets[point]), int(data.point_offsets[point + 1])
                for item in data.point_candidates[a:b]:
                    cat = int(data.item_category[item])
                    if 0 <= cat < len(pending):
                        pending[cat] += 1.0
            assert engine.exposure_counts[0].tolist() == exposure
            assert engine.exposure_pending[0].tolist() == pending
            checked += 1
    assert checked > 10 and sum(exposure) > 0


def test_sampled_negatives_are_refused(dataset):
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

    from interestgym.data.dataset import Dataset

    data = load_replay_data(Dataset.open(dataset), None, ProtocolSpec(split="valid", protocol="next_positive", n_negatives=5))
    engine = ReplayEngine(data, 1)
    with pytest.raises(InterestGymError, match="this replay's scoring points are 'next_positive'.*expected the impressions protocol"):
        engine.set_scoring(slice(None), make_baseline("bayesian_category", **PARAMS, exposure=3.0).scoring)
    # and tuning on such points never tries b > 0
    assert tuning_grids(True, impressions=False)["bayesian_category"]["exposure"] == [0.0]
    assert tuning_grids(False, impressions=False)["bayesian_category"]["slot_weight"] == [0.0]
    assert max(tuning_grids()["bayesian_category"]["exposure"]) > 0 and 0.0 in GRIDS["bayesian_category"]["exposure"]


# ---------------------------------------------------------------------------------------- runtime
@pytest.mark.parametrize("threshold", [1.0, -1.0], ids=["ships the rule", "ships the residual model"])
def test_a_policy_with_exposure_exports_and_the_runtime_reproduces_evaluate(dataset, tmp_path, monkeypatch, threshold):
    import json

    from interestgym.agents.run_folder import load_shipped_policy, read_shipped
    from interestgym.envs.vector import evaluate_policy

    from interestgym.data.dataset import Dataset
    from interestgym.export.parity import replay_through_runtime
    from interestgym.export.run import export_run
    from interestgym.runtime import Event, UserState, load_policy
    from interestgym.runtime.codec import StateFormatError

    monkeypatch.setitem(GRIDS["bayesian_category"], "exposure", [3.0])  # the tuned reference divides by exposure
    monkeypatch.setitem(GRIDS["bayesian_category"], "slot_weight", [0.0])
    monkeypatch.setattr(agents_rules, "VALUE_GAIN_GRID", [0.0])  # nor counts weighed by value (version 4)
    run = tmp_path / "run"
    train_run(shipping_config(dataset, run, ship_threshold=threshold))
    assert read_shipped(run)["policy"] == ("rule" if threshold > 0 else "learned")
    export_run(run, tmp_path / "export", verify_observations=100)
    policy = load_policy(tmp_path / "export")
    assert policy.scoring["category_exposure_prior"] == 3.0
    # an export with exposure counts is format version 3: a runtime from before them refuses it ("upgrade")
    assert policy.manifest["format_version"] == 3
    data = shipping_config(dataset, run).replay_data("test")
    expected = evaluate_policy(data, load_shipped_policy(run), progress=False)
    for serialise in ("bytes", "json"):
        got = replay_through_runtime(policy, Dataset.open(dataset), data, serialise=serialise)
        for metric in expected.metrics:
            np.testing.assert_array_equal(got[metric].to_numpy(), expected.points[metric].to_numpy(), err_msg=metric)
    if threshold > 0:
        return

    # record_outcome counts what was shown; the next decision folds it in and forgets with the category counts
    cats = [str(c) for c in policy.categories]
    rng = np.random.default_rng(3)

    def click(ts: int, category: str) -> Event:
        x = rng.normal(size=policy.dim).astype(np.float32)
        return Event(ts=ts, action="click", item_vector=x / np.linalg.norm(x), category=category, hour=9, weekday=1)

    fresh = policy.new_state()
    cand0 = np.eye(policy.dim, dtype=np.float32)[:2]
    early, none = policy.record_outcome(fresh, cand0, [1, 0], candidate_categories=cats[:2], popularity=np.zeros(2), hour=9)
    assert none is None and not early.exposure.any()  # before the first decision nothing is scored, nor counted
    state = policy.update(fresh, click(1000, cats[0]))
    assert state.exposure is not None and not state.exposure.any()
    cand = rng.normal(size=(4, policy.dim)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    shown = [cats[0], cats[1], cats[1], "a category the export does not know"]
    state, metrics = policy.record_outcome(state, cand, [1, 0, 0, 0], candidate_categories=shown, popularity=np.zeros(4), hour=9)
    assert metrics is not None
    assert state.exposure[1].tolist() == [1.0, 2.0] + [0.0] * (len(cats) - 2) and not state.exposure[0].any()
    unchanged, none = policy.record_outcome(state, cand, [0, 0, 0, 0], candidate_categories=shown, popularity=np.zeros(4), hour=9)
    assert none is None and unchanged.exposure.tolist() == state.exposure.tolist()  # no click: not a scored impression
    before = state.copy()
    state = policy.update(state, click(2000, cats[1]))
    assert not state.exposure[1].any()
    # the category counts' own factor at this decision (column 0 only forgets: the event is in column 1)
    factor = state.category_counts[0] / before.category_counts[0]
    np.testing.assert_allclose(state.exposure[0], (before.exposure[0] + before.exposure[1]) * factor, rtol=1e-12)
    assert state.exposure[0][:2].sum() > 0
    # the score divides by it: the same state with its exposure counts cleared ranks otherwise
    cleared = state.copy()
    cleared.exposure = np.zeros_like(state.exposure)
    kw = {"candidate_categories": shown, "popularity": np.zeros(4), "hour": 9}
    assert not np.array_equal(policy.score(state, cand, **kw), policy.score(cleared, cand, **kw))
    # batched updates equal one-event updates
    states = [state.copy() for _ in range(3)]
    events = [click(3000 + u, cats[u % len(cats)]) for u in range(3)]
    assert all(a == b for a, b in zip(policy.update_batch(states, events), [policy.update(s, e) for s, e in zip(states, events)]))
    # the state is version 4, round-trips, and is refused where it does not fit
    assert json.loads(state.to_json())["meta"]["state_version"] == 4
    assert UserState.from_bytes(state.to_bytes()) == state and UserState.from_json(state.to_json()) == state
    old = json.loads(state.to_json())
    old["meta"]["state_version"] = 3
    with pytest.raises(StateFormatError, match="version 3 has the field 'exposure'; expected it only from version 4"):
        UserState.from_json(json.dumps(old))
    bare = state.copy()
    bare.exposure = None
    with pytest.raises(InterestGymError, match="a user state without exposure counts"):
        policy.update(bare, click(4000, cats[0]))
    with pytest.raises(InterestGymError, match="a user state without exposure counts"):
        policy.score(bare, cand, **kw)
    # a serving store records that its states keep the counts, and the service shows them
    importlib.import_module("pydantic")
    from interestgym.serve.service import (
        InterestService,
        ServeConfig,
        contract_differences,
        state_contract,
    )

    contract = state_contract(policy)
    assert contract["state_version"] == 4 and contract["exposure_counts"] is True
    assert any("counts of shown candidates (exposure) used; the stored states do not have them" in d
               for d in contract_differences({**contract, "exposure_counts": False}, contract))
    from interestgym.serve.schemas import BehaviourEvent, Outcome

    service = InterestService.open(ServeConfig(export=str(tmp_path / "export"), store="memory://", items=str(dataset)))
    try:
        catalogue = service.catalogue
        service.apply([BehaviourEvent(event_id="e1", user_id="u", ts=1_700_000_000, action="click", item_id=catalogue.item_ids[0],
                                      hour=8)])
        assert service.user_summary("u")["exposure"] == {"prior": 3.0, "shown_since_last_decision": 0.0, "top_shown": []}
        shown_items = list(catalogue.item_ids[:5])
        service.apply([Outcome(kind="outcome", event_id="o1", user_id="u", candidates=shown_items, clicked=shown_items[:1], hour=8)])
        assert service.user_summary("u")["exposure"]["shown_since_last_decision"] == 5.0
        service.apply([BehaviourEvent(event_id="e2", user_id="u", ts=1_700_000_100, action="click", item_id=catalogue.item_ids[1],
                                      hour=8)])
        exposure = service.user_summary("u")["exposure"]
        assert exposure["shown_since_last_decision"] == 0.0
        by_category = {}
        for j in range(5):
            by_category[catalogue.categories[j]] = by_category.get(catalogue.categories[j], 0) + 1
        # every shown category, forgotten once by the decision's factor: the category counts' own factor
        shown_now = {row["category"]: row["count"] for row in exposure["top_shown"]}
        assert set(shown_now) <= set(by_category) and shown_now
        ratios = {c: shown_now[c] / by_category[c] for c in shown_now}
        assert max(ratios.values()) - min(ratios.values()) < 1e-12 and 0 < min(ratios.values()) <= 1
    finally:
        service.close()


def test_a_manifest_with_a_bad_prior_or_an_old_format_version_is_refused(dataset, tmp_path, monkeypatch):
    from agents_fixtures import resealed_copy

    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    monkeypatch.setitem(GRIDS["bayesian_category"], "exposure", [3.0])
    monkeypatch.setitem(GRIDS["bayesian_category"], "slot_weight", [0.0])
    monkeypatch.setattr(agents_rules, "VALUE_GAIN_GRID", [0.0])  # nor counts weighed by value (version 4)
    run = tmp_path / "run"
    train_run(shipping_config(dataset, run, ship_threshold=1.0, timesteps=64, eval_every=64, checkpoint_every=64))
    export_run(run, tmp_path / "export", verify_observations=10)

    def resealed(name, change):
        return resealed_copy(tmp_path / "export", tmp_path / name, change)

    def nan_prior(m):
        m["scoring"]["config"]["category_exposure_prior"] = float("nan")

    def old_version(m):
        m["format_version"] = 2

    with pytest.raises(InterestGymError, match=r"scoring.config .*category_exposure_prior=nan: expected a finite number >= 0"):
        load_policy(resealed("nan", nan_prior))
    with pytest.raises(InterestGymError, match=r"format_version 2 with a scoring or rule that needs version 3"):
        load_policy(resealed("old", old_version))


def test_tuning_with_the_default_grids_never_tries_exposure_on_sampled_negatives(dataset):
    from interestgym.agents.tuning import tune_baselines, validation_scorer
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

    from interestgym.data.dataset import Dataset

    data = load_replay_data(Dataset.open(dataset), None, ProtocolSpec(split="valid", protocol="next_positive", n_negatives=5))
    users = list(map(str, data.user_ids[:5]))
    tuned = tune_baselines(validation_scorer(data, "ndcg@10", users), ["bayesian_category"], rounds=1)
    tried = {point.get("exposure", 0.0) for point in tuned["bayesian_category"]["grid"]}
    assert tried == {0.0} and tuned["bayesian_category"]["params"].get("exposure", 0.0) == 0.0
    # on the impressions the same call tries it
    impressions = shipping_config(dataset, dataset / "unused").replay_data("valid")
    tuned = tune_baselines(validation_scorer(impressions, "ndcg@10", users), ["bayesian_category"], rounds=1)
    assert {point.get("exposure", 0.0) for point in tuned["bayesian_category"]["grid"]} == set(GRIDS["bayesian_category"]["exposure"])
