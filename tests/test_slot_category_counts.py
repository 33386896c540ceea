"""Category counts per time of day: P(cat | user, slot) from ``counts + lambda x slot_counts(slot)``.

* The maths (``core.transition`` / ``core.interest``): every slot's counts forget by the event's factor
  and the event's slot gains its weight, as a hand loop says; lambda = 0 leaves the counts exactly.
* The engine: after a user's replay its per-slot counts are the hand computation from the user's own
  decisions; lambda = 0 ranks exactly as the rule without the parameter, lambda > 0 ranks otherwise.
* Tuning: lambda is a score weight, so the non-zero values share one replay and each scores as alone.
* The lever: a residual agent scales lambda for the scoring after each decision (``slot_change``); no
  change is the rule to the bit (``test_category_gain``), a factor of 0 everywhere ranks as the rule with
  lambda = 0, and the run charts the lambda it applied.
* The runtime: a rule with lambda > 0 and a residual agent on it (the lever included) export, and the
  runtime replays them exactly as the evaluator does, through serialised states; batched updates equal
  one-event ones.
* The state (version 3) and the serving contract: old states and stores still read; a state or store
  without the counts is refused, by name, under a policy that weighs them.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from agents_fixtures import CATEGORY_RULE_PARAMS as PARAMS
from agents_fixtures import per_user_metrics, shipping_config, tiny_synthetic
from interestgym.agents import rules as agents_rules
from interestgym.agents.rules import GRIDS, make_baseline
from interestgym.agents.train import train_run
from interestgym.envs.engine import ReplayEngine

from interestgym.core.clock import N_TIME_SLOTS
from interestgym.core.interest import ScoringConfig, score_candidates, slot_mixed_counts
from interestgym.core.protocol import residual_action_names
from interestgym.core.transition import (
    action_changes,
    apply_slot_change,
    update_slot_category_counts,
)
from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("slots") / "tiny", users=40)


@pytest.fixture(scope="module")
def valid(dataset, tmp_path_factory):
    return shipping_config(dataset, tmp_path_factory.mktemp("unused")).replay_data("valid")


# ------------------------------------------------------------------------------------------ maths
def test_every_slot_forgets_and_the_events_slot_and_category_gain_its_weight():
    rng = np.random.default_rng(0)
    counts = rng.uniform(0, 3, size=(3, N_TIME_SLOTS, 5))
    slot, category = np.array([0, 3, 1]), np.array([4, -1, 2])
    forgetting, gain = np.array([0.9, 0.5, 1.0]), np.array([1.0, 2.0, 0.25])
    got = update_slot_category_counts(counts, slot, category, forgetting, gain)
    expected = counts.copy()
    for b in range(3):
        for s in range(N_TIME_SLOTS):
            for c in range(5):
                expected[b, s, c] = counts[b, s, c] * forgetting[b] + (gain[b] if (s, c) == (slot[b], category[b]) else 0.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert got[1].tolist() == (counts[1] * 0.5).tolist()  # no category: only the forgetting


def test_the_slot_counts_are_added_with_lambda_and_lambda_zero_is_the_counts_to_the_bit():
    counts, slots = np.array([[1.0, 2.0, 0.5], [0.1, 0.2, 0.3]]), np.array([[3.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    assert slot_mixed_counts(counts, slots, 0.0) is counts
    assert slot_mixed_counts(counts, None, np.zeros(2)) is counts
    mixed = slot_mixed_counts(counts, slots, np.array([2.0, 0.0]))
    assert mixed[0].tolist() == [7.0, 2.0, 2.5] and mixed[1].tobytes() == counts[1].tobytes()
    # the score's category term is log P(cat) from the mixed counts plus the prior (hand computation)
    cand = np.array([[0, 1], [2, 0]])
    zeros = np.zeros((2, 2), dtype=np.float32)
    strengths = np.zeros((2, 4))
    got = score_candidates(zeros, zeros, strengths, zeros, beta_cat=1.0, category_counts=counts, candidate_category=cand,
                           category_prior=1.0, slot_category_counts=slots, category_slot_weight=np.array([2.0, 0.0]))
    expected = [[np.log(8 / 14.5), np.log(3 / 14.5)], [np.log(1.3 / 3.6), np.log(1.1 / 3.6)]]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_slot_change_scales_lambda_and_no_change_is_lambda_exactly():
    names = residual_action_names(tracker=False, gain=True, slot=True)
    assert names[-1] == "slot_change"
    actions = np.zeros((4, 9), dtype=np.float32)
    actions[:, 8] = [0.0, -1.0, 0.5, 3.0]
    factor = action_changes(actions).slot
    assert factor.tolist() == [1.0, 0.0, 1.5, 2.0]
    lam = apply_slot_change(np.full(4, 0.3), factor)
    assert lam.tolist() == [0.3, 0.0, 0.3 * 1.5, 0.6] and apply_slot_change(0.3, None) == 0.3


def test_a_negative_infinite_or_idle_lambda_is_refused():
    with pytest.raises(InterestGymError, match="category_slot_weight=-1"):
        ScoringConfig(beta_cat=1.0, category_slot_weight=-1.0)
    with pytest.raises(InterestGymError, match="category_slot_weight=inf: expected a finite number"):
        ScoringConfig(beta_cat=1.0, category_slot_weight=float("inf"))
    with pytest.raises(InterestGymError, match="with beta_cat=0"):
        ScoringConfig(category_slot_weight=2.0)
    for bad in (-1, float("nan"), "2"):
        with pytest.raises(InterestGymError, match=r"rule 'bayesian_category' parameter slot_weight=.*: expected a finite number >= 0"):
            make_baseline("bayesian_category", **PARAMS, slot_weight=bad)
    with pytest.raises(ValueError, match="without per-slot counts"):
        slot_mixed_counts(np.ones((1, 2)), None, 1.0)
    assert "category_slot_weight" not in ScoringConfig(beta_cat=1.0).as_dict()  # old configurations read the same
    assert ScoringConfig(beta_cat=1.0, category_slot_weight=2.0).as_dict()["category_slot_weight"] == 2.0


# ----------------------------------------------------------------------------------------- engine
def test_after_a_replay_the_engines_slot_counts_are_the_users_own_decisions_forgotten(valid):
    rule = make_baseline("bayesian_category", **PARAMS, slot_weight=2.0)
    engine = ReplayEngine(valid, 1)
    engine.set_scoring([0], rule.scoring)
    user = 3
    engine.start(np.array([0]), np.array([user]))
    while engine.cursor[0] < engine.end[0]:
        engine.step(np.array([0]), rule.act(engine.observe(np.array([0]))))
    lo, hi = valid.user_decision_start[user], valid.user_decision_end[user]
    expected = np.zeros((N_TIME_SLOTS, engine.slot_category_counts.shape[2]))
    for d in range(lo, hi):  # fixed forgetting 0.9, weight 1: counts <- 0.9 counts + onehot(slot, cat)
        expected *= 0.9
        if valid.decision_category[d] >= 0:
            expected[valid.decision_slot[d], valid.decision_category[d]] += 1.0
    assert hi - lo > 3
    np.testing.assert_allclose(engine.slot_category_counts[0], expected, rtol=1e-12)
    # and the per-slot counts sum to the user's counts (the same factor everywhere)
    np.testing.assert_allclose(engine.slot_category_counts[0].sum(axis=0), engine.category_counts[0], rtol=1e-12)


def test_lambda_zero_ranks_exactly_as_the_rule_without_it_and_lambda_above_zero_otherwise(valid):
    plain = per_user_metrics(valid, make_baseline("bayesian_category", **PARAMS))
    zero = per_user_metrics(valid, make_baseline("bayesian_category", **PARAMS, slot_weight=0.0))
    for metric in plain:
        assert np.array_equal(plain[metric], zero[metric], equal_nan=True), metric
    slotted = per_user_metrics(valid, make_baseline("bayesian_category", **PARAMS, slot_weight=4.0))
    assert not np.array_equal(plain["ndcg@10"], slotted["ndcg@10"])
    assert make_baseline("bayesian_category", **PARAMS).params == PARAMS | {"prior": 1.0}  # no slot_weight key


class SlotOff:
    """A learned change that sets lambda's factor to 0 at every decision, nothing else."""

    def act(self, obs):
        out = np.zeros((len(obs), 6), dtype=np.float32)
        out[:, 5] = -1.0
        return out


def test_a_slot_factor_of_zero_everywhere_ranks_as_the_rule_with_lambda_zero(valid):
    from interestgym.envs.policies import ResidualPolicy

    reference = make_baseline("bayesian_category", **PARAMS, slot_weight=4.0)
    names = residual_action_names(tracker=False, gain=False, slot=True)
    off = per_user_metrics(valid, ResidualPolicy(reference, SlotOff(), names=names))
    without = per_user_metrics(valid, make_baseline("bayesian_category", **PARAMS))
    for metric in without:
        assert np.array_equal(off[metric], without[metric], equal_nan=True), metric
    assert not np.array_equal(off["ndcg@10"], per_user_metrics(valid, reference)["ndcg@10"])  # the lever is wired


def test_the_slot_lever_needs_a_reference_with_slot_counts(dataset):
    from interestgym.envs.vector import InterestReplayVecEnv

    plain = make_baseline("bayesian_category", **PARAMS)
    with pytest.raises(InterestGymError, match="slot_lever: expected a residual reference rule that weighs the category counts per time"):
        InterestReplayVecEnv(str(dataset), n_envs=2, split="train", residual_to=plain, slot_lever=True)


def test_the_grid_tunes_lambda_zero_included():
    assert 0.0 in GRIDS["bayesian_category"]["slot_weight"] and max(GRIDS["bayesian_category"]["slot_weight"]) > 0


# ---------------------------------------------------------------------------------------- runtime
@pytest.mark.parametrize("threshold", [1.0, -1.0], ids=["ships the rule", "ships the residual model"])
def test_a_policy_with_slot_counts_exports_and_the_runtime_reproduces_evaluate(dataset, tmp_path, monkeypatch, threshold):
    from interestgym.agents.run_folder import load_shipped_policy, read_shipped
    from interestgym.envs.vector import evaluate_policy

    from interestgym.data.dataset import Dataset
    from interestgym.export.parity import replay_through_runtime
    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    monkeypatch.setitem(GRIDS["bayesian_category"], "slot_weight", [2.0])  # the tuned reference keeps slot counts
    monkeypatch.setitem(GRIDS["bayesian_category"], "exposure", [0.0])  # and not the exposure counts (format version 3)
    monkeypatch.setattr(agents_rules, "VALUE_GAIN_GRID", [0.0])  # nor counts weighed by value (version 4)
    run = tmp_path / "run"
    train_run(shipping_config(dataset, run, ship_threshold=threshold))
    decision = read_shipped(run)
    assert decision["policy"] == ("rule" if threshold > 0 else "learned")
    export_run(run, tmp_path / "export", verify_observations=100)
    policy = load_policy(tmp_path / "export")
    assert policy.scoring["category_slot_weight"] == 2.0
    # an export with the counts is format version 2: a runtime from before them refuses it ("upgrade")
    assert policy.manifest["format_version"] == 2
    if threshold < 0:  # the learned change has the lever by default, and the run charted the lambda it applied
        assert policy.change_names[-1] == "slot_change"
        from tensorboard.backend.event_processing.event_accumulator import (
            EventAccumulator,
        )

        acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        assert all(0.0 <= e.value <= 4.0 for e in acc.Scalars("charts/mean_slot_weight"))
        # a manifest naming the lever for a scoring without slot counts is refused, naming both
        import json
        import shutil

        from interestgym.runtime.manifest import (
            read_manifest,
            seal_manifest,
            write_manifest,
        )

        damaged = tmp_path / "damaged"
        shutil.copytree(tmp_path / "export", damaged)
        m = read_manifest(damaged)
        m["scoring"]["config"].pop("category_slot_weight")
        (damaged / "manifest.json").unlink()
        write_manifest(damaged, seal_manifest(damaged, {k: v for k, v in m.items() if k not in ("files", "manifest_sha256")}))
        with pytest.raises(Exception, match="slot_change, but scoring.config.category_slot_weight is None"):
            load_policy(damaged)
        # a state keeps the factor its last decision set, not lambda: a policy swapped in with another
        # lambda scores the same state with its own (lambda 4 x the factor, not the old 2 x the factor)
        swapped = tmp_path / "swapped"
        shutil.copytree(tmp_path / "export", swapped)
        m = read_manifest(swapped)
        m["scoring"]["config"]["category_slot_weight"] = 4.0
        (swapped / "manifest.json").unlink()
        write_manifest(swapped, seal_manifest(swapped, {k: v for k, v in m.items() if k not in ("files", "manifest_sha256")}))
        policy4 = load_policy(swapped)
        from interestgym.runtime import Event as _Event

        rng = np.random.default_rng(2)
        state = policy.new_state()
        for t in range(6):
            x = rng.normal(size=policy.dim).astype(np.float32)
            state = policy.update(state, _Event(ts=3600 * 7 * t, action="click", item_vector=x / np.linalg.norm(x),
                                                category=str(policy.categories[t % 2])))
        cand = np.eye(policy.dim, dtype=np.float32)[:4]
        kw = {"candidate_categories": [str(c) for c in policy.categories[:4]], "popularity": np.zeros(4), "hour": 7}
        assert not np.array_equal(policy.score(state, cand, **kw), policy4.score(state, cand, **kw))
        doubled = state.copy()
        doubled.slot_factor = min(2.0, 2 * state.slot_factor)
        if doubled.slot_factor == 2 * state.slot_factor:  # 2 x (factor) under lambda 2 is lambda 4 x factor
            np.testing.assert_allclose(policy.score(doubled, cand, **kw), policy4.score(state, cand, **kw), rtol=1e-12)
        assert json.loads((tmp_path / "export" / "manifest.json").read_text())["policy"]["outputs"]["action"]["names"][-1] == "slot_change"
    data = shipping_config(dataset, run).replay_data("test")
    expected = evaluate_policy(data, load_shipped_policy(run), progress=False)
    for serialise in ("bytes", "json"):
        got = replay_through_runtime(policy, Dataset.open(dataset), data, serialise=serialise)
        for metric in expected.metrics:
            np.testing.assert_array_equal(got[metric].to_numpy(), expected.points[metric].to_numpy(), err_msg=metric)
    if threshold > 0:
        return
    # batched updates equal one-event updates, slot counts included
    from interestgym.runtime import Event

    rng = np.random.default_rng(1)
    states = [policy.new_state() for _ in range(5)]
    for t in range(8):
        events = []
        for u in range(5):
            x = rng.normal(size=policy.dim).astype(np.float32)
            events.append(Event(ts=3600 * (5 * t + u), action="click", item_vector=x / np.linalg.norm(x),
                                category=str(policy.categories[(t + u) % len(policy.categories)])))
        batched = policy.update_batch(states, events)
        assert all(a == b for a, b in zip(batched, [policy.update(s, e) for s, e in zip(states, events)]))
        states = batched
    assert states[0].slot_category_counts is not None and states[0].slot_category_counts.sum() > 0
    # the score reads the ranking's hour; a state without the counts is refused by name
    cand = np.eye(policy.dim, dtype=np.float32)[:3]
    kw = {"candidate_categories": [str(c) for c in policy.categories[:3]], "popularity": np.zeros(3)}
    with pytest.raises(InterestGymError, match="hour="):
        policy.score(states[0], cand, **kw)
    assert not np.array_equal(policy.score(states[0], cand, **kw, hour=1), policy.score(states[0], cand, **kw, hour=13))
    bare = states[0].copy()
    bare.slot_category_counts = None
    with pytest.raises(InterestGymError, match="per-slot category counts"):
        policy.score(bare, cand, **kw, hour=1)
    with pytest.raises(InterestGymError, match="a user state without per-slot category counts"):  # before any update
        policy.update(bare, events[0].__class__(ts=10**9, action="click", item_vector=events[0].item_vector, category="x"))
    # hours are checked, not wrapped: integers in [0, 23], one for all users or one per user
    for bad in (24, -1, 13.5, "13", True):
        with pytest.raises(InterestGymError, match=r"hour .*expected integers in \[0, 23\]"):
            policy.score(states[0], cand, **kw, hour=bad)
    with pytest.raises(InterestGymError, match=r"hours of shape \(3,\): expected one hour for all users or one per user \(2\)"):
        policy.score_batch(states[:2], np.stack([cand, cand]), candidate_categories=[kw["candidate_categories"]] * 2,
                           popularity=np.zeros((2, 3)), hours=[8, 9, 10])
    assert policy.score_batch(states[:2], np.stack([cand, cand]), candidate_categories=[kw["candidate_categories"]] * 2,
                              popularity=np.zeros((2, 3)), hours=[8, 20]).shape == (2, 3)
    for name, bad in (("hour", 30), ("hour", -3), ("weekday", 7), ("hour", 2.0)):
        with pytest.raises(InterestGymError, match=f"Event.{name}={bad!r}: expected an integer in"):
            Event(ts=1, action="click", **{name: bad})
    assert Event(ts=1, action="click", hour=np.int8(23), weekday=0).hour == 23
    # the service's state in words shows the counts per time of day and the weight the last decision set
    importlib.import_module("pydantic")
    from interestgym.serve.schemas import BehaviourEvent
    from interestgym.serve.service import InterestService, ServeConfig

    service = InterestService.open(ServeConfig(export=str(tmp_path / "export"), store="memory://", items=str(dataset)))
    try:
        item = service.catalogue.item_ids[0]
        service.apply([BehaviourEvent(event_id="e1", user_id="u", ts=1_700_000_000, action="click", item_id=item, hour=8)])
        summary = service.user_summary("u")
        slots = summary["time_of_day"]["slots"]
        assert [s["hours"] for s in slots] == ["0-5", "6-11", "12-17", "18-23"]
        # one event at 08h: one category in the 6-11 slot, with the weight the policy's gain gave it (~1)
        assert len(slots[1]["top_categories"]) == 1 and 0 < slots[1]["top_categories"][0]["count"] <= 2
        assert not slots[0]["top_categories"] and not slots[2]["top_categories"] and not slots[3]["top_categories"]
        assert slots[1]["top_categories"][0]["category"] == service.catalogue.categories[0]
        tod = summary["time_of_day"]
        assert 0 <= tod["slot_factor"] <= 2 and tod["slot_weight"] == 2.0 * tod["slot_factor"]
    finally:
        service.close()
    # an evaluation against baselines tuned over an older grid says so in its protocol header
    import json as _json

    from interestgym.evaluation.run import evaluate_run

    baselines = _json.loads((run / "baselines.json").read_text())
    for entry in baselines["baselines"].values():
        for point in entry.get("grid") or []:
            point.pop("slot_weight", None)
        entry["params"].pop("slot_weight", None)
    (run / "baselines.json").write_text(_json.dumps(baselines))
    evaluate_run(run, out=tmp_path / "eval-old", baselines="bayesian_category", n_boot=20, progress=False)
    header = _json.loads((tmp_path / "eval-old" / "evaluation.json").read_text())["header"]
    assert "tuned over an older grid (bayesian_category without slot_weight)" in header["tuned_on"]


# ------------------------------------------------------------------------------- state and contract
def test_a_state_with_slot_counts_is_version_3_and_round_trips_and_a_damaged_one_is_refused():
    import json

    from interestgym.runtime import UserState
    from interestgym.runtime.codec import StateFormatError

    plain = UserState.empty(4, 3)
    assert json.loads(plain.to_json())["meta"]["state_version"] == 1  # a reader from before still reads it
    state = UserState.empty(4, 3, with_slot_counts=True)
    state.slot_category_counts[2, 1] = 1.5
    assert json.loads(state.to_json())["meta"]["state_version"] == 3
    assert UserState.from_bytes(state.to_bytes()) == state == UserState.from_json(state.to_json())
    doc = json.loads(state.to_json())
    doc["fields"]["slot_category_counts"]["shape"] = [N_TIME_SLOTS, 2]
    doc["fields"]["slot_category_counts"]["data"] = doc["fields"]["slot_category_counts"]["data"][: 2 * N_TIME_SLOTS]
    with pytest.raises(StateFormatError, match=r"'slot_category_counts' has dtype <f8 and shape \(4, 2\); expected <f8 with shape \(4, 3\)"):
        UserState.from_json(json.dumps(doc))
    assert state.slot_factor == 1.0
    # the category counts and the slot profiles are checked like every other block (a reviewer's find: float32
    # counts were read as they were)
    doc = json.loads(state.to_json())
    doc["fields"]["category_counts"]["dtype"] = "<f4"
    with pytest.raises(StateFormatError, match=r"'category_counts' has dtype <f4 and 1 dims; expected <f8 with 1"):
        UserState.from_json(json.dumps(doc))
    doc = json.loads(UserState.empty(4, 3, with_slots=True).to_json())
    doc["fields"]["slot_profiles"]["dtype"] = "<f8"
    with pytest.raises(StateFormatError, match=r"'slot_profiles' has dtype <f8 and shape \(4, 4\); expected <f4 with shape"):
        UserState.from_json(json.dumps(doc))
    doc = json.loads(state.to_json())
    del doc["fields"]["slot_factor"]
    with pytest.raises(StateFormatError, match="'slot_category_counts' and 'slot_factor' without the other"):
        UserState.from_json(json.dumps(doc))
    for bad in (-1.0, 2.5):
        doc = json.loads(state.to_json())
        doc["fields"]["slot_factor"]["data"] = [bad]
        with pytest.raises(StateFormatError, match=rf"'slot_factor' is \[{bad}\] .*expected one float64 in \[0, 2\]"):
            UserState.from_json(json.dumps(doc))
    doc = json.loads(state.to_json())
    doc["meta"]["state_version"] = 2
    with pytest.raises(StateFormatError, match="version 2 has the field 'slot_category_counts'"):
        UserState.from_json(json.dumps(doc))
    doc = json.loads(state.to_json())
    del doc["fields"]["category_counts"]
    with pytest.raises(StateFormatError, match="'slot_category_counts' without the field 'category_counts'"):
        UserState.from_json(json.dumps(doc))


def test_a_store_without_slot_counts_refuses_a_policy_with_them_and_an_older_state_version_is_read():
    from interestgym.runtime.state import STATE_VERSION
    from interestgym.serve.service import contract_differences

    old = {"state_version": 2, "encoder": {"name": "e"}, "features_sha256": "f", "category_columns": ["a"], "slot_profiles": False}
    same = {**old, "slot_category_counts": False}
    assert contract_differences(old, same) == []  # an upgrade reads the store's older states
    diffs = contract_differences(old, {**same, "state_version": STATE_VERSION, "slot_category_counts": True})
    assert diffs == ["category counts per time of day used; the stored states do not have them"]
    # states newer than this code reads (a rollback past their version) are refused
    assert "upgrade interestgym" in contract_differences({**same, "state_version": STATE_VERSION + 1}, same)[0]


def test_the_report_draws_and_states_the_slot_weight(valid):
    from interestgym.envs.policies import ResidualPolicy
    from interestgym.envs.vector import evaluate_policy

    from interestgym.core.features import FEATURE_INDEX
    from interestgym.report.build import action_components

    class ByHour:
        """A slot change of +0.5 at decisions after noon on the clock's cosine (hour_cos < 0), else 0."""

        def act(self, obs):
            out = np.zeros((len(obs), 6), dtype=np.float32)
            out[:, 5] = np.where(obs[:, FEATURE_INDEX["hour_cos"]] < 0, 0.5, 0.0)
            return out

    reference = make_baseline("bayesian_category", **PARAMS, slot_weight=2.0)
    policy = ResidualPolicy(reference, ByHour(), names=residual_action_names(tracker=False, gain=False, slot=True))
    res = evaluate_policy(valid, policy, record_features=True, progress=False)
    columns, notes = action_components(policy, reference, res)
    ours, rule = columns["slot weight"]
    hour_cos = res.features[:, FEATURE_INDEX["hour_cos"]]
    np.testing.assert_array_equal(ours, np.where(hour_cos < 0, 3.0, 2.0))  # lambda x (1 + 0.5) where the change is on
    assert (rule == 2.0).all()
    note = next(n for n in notes if "time-of-day category counts" in n)
    assert "the reference keeps 2" in note and "averages 3.000 for decisions nearest midday" in note


def test_a_tuning_over_an_older_grid_is_named(dataset, tmp_path):
    import itertools
    import json

    from click.testing import CliRunner
    from interestgym.agents.tuning import grid_params_missing

    from interestgym.cli import cli

    def table(name, **only):  # every point of today's grid for ``name``, some parameters held to ``only``
        grid = {**GRIDS[name], **only}
        return [dict(zip(grid, values), score=0.5) for values in itertools.product(*grid.values())]

    older = [{k: v for k, v in p.items() if k != "slot_weight"} for p in table("bayesian_category", slot_weight=[0.0])]
    old = {"bayesian_category": {"params": {}, "grid": older}, "ema": {"params": {}, "grid": table("ema")},
           "static": {"params": {}}}
    assert grid_params_missing(old) == {"bayesian_category": ["slot_weight"]}
    # a tuning with --no-slot-counts (slot_weight 0 only) did not try today's non-zero values either
    no_slots = {"bayesian_category": {"params": {}, "grid": table("bayesian_category", slot_weight=[0.0])}}
    assert grid_params_missing(no_slots) == {"bayesian_category": ["slot_weight"]}
    from interestgym.agents.rules import tuning_grids

    assert grid_params_missing(no_slots, tuning_grids(False)) == {}
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps({"metric": "ndcg@10", "baselines": old}))
    out = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / "run"), "--tuned-baselines", str(path),
                                    "--timesteps", "64", "--no-progress"])
    assert "was tuned over an older grid: bayesian_category without slot_weight (today: [0.0, 1.0, 2.0, 4.0, 8.0, 16.0])" in out.output
    assert out.exit_code != 0  # and the file itself is refused for this run's protocol, as before


def test_no_slot_counts_tunes_without_them_and_refuses_a_tuning_with_them(dataset, tmp_path, monkeypatch):
    import json

    from interestgym.agents.rules import tuning_grids
    from interestgym.agents.run_folder import read_run_config

    assert tuning_grids(False)["bayesian_category"]["slot_weight"] == [0.0] and tuning_grids(True) is GRIDS
    monkeypatch.setitem(GRIDS["bayesian_category"], "slot_weight", [0.0, 4.0])
    with_counts = tmp_path / "with"
    train_run(shipping_config(dataset, with_counts, timesteps=64, eval_every=64, checkpoint_every=64))
    tuned = json.loads((with_counts / "baselines.json").read_text())["baselines"]["bayesian_category"]
    assert {p["slot_weight"] for p in tuned["grid"] if "slot_weight" in p} == {0.0, 4.0}
    without = tmp_path / "without"
    train_run(shipping_config(dataset, without, timesteps=64, eval_every=64, checkpoint_every=64, slot_counts=False))
    tuned = json.loads((without / "baselines.json").read_text())["baselines"]["bayesian_category"]
    assert {p["slot_weight"] for p in tuned["grid"] if "slot_weight" in p} == {0.0} and tuned["params"].get("slot_weight", 0.0) == 0.0
    assert read_run_config(without)["config"]["slot_counts"] is False
    doc = json.loads((with_counts / "baselines.json").read_text())
    doc["baselines"]["bayesian_category"]["params"]["slot_weight"] = 4.0  # as if validation had picked 4
    (tmp_path / "kept.json").write_text(json.dumps(doc))
    with pytest.raises(InterestGymError, match=r"kept.json: bayesian_category tuned with slot_weight 4.0 .*this run has --no-slot-counts"):
        train_run(shipping_config(dataset, tmp_path / "reuse", timesteps=64, slot_counts=False, tuned_baselines=str(tmp_path / "kept.json")))


def test_a_lever_switched_on_that_the_reference_cannot_use_is_named(dataset, tmp_path):
    from click.testing import CliRunner

    from interestgym.cli import cli

    common = ["--timesteps", "64", "--eval-every", "64", "--checkpoint-every", "64", "--tune-users", "5",
              "--reward-baseline", "bayesian_category", "--no-progress"]
    first = tmp_path / "first"
    out = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(first), "--no-slot-counts", "--slot-lever", *common])
    assert out.exit_code == 0, out.output
    assert ("note: --slot-lever did nothing: the reference rule `bayesian_category` has no category counts per time "
            "of day (slot_weight 0)") in out.output
    # the same run without the explicit flag (the default is on): nothing to say
    out = CliRunner().invoke(cli, ["train", str(dataset), "--run-dir", str(tmp_path / "second"), "--no-slot-counts", *common,
                                   "--tuned-baselines", str(first / "baselines.json")])
    assert out.exit_code == 0, out.output
    assert "did nothing" not in out.output
