"""A sequence tracker's score as a term of the profiles' score, and the fixed tracker/profile mixture."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_tracker
from env_fixtures import make_dataset
from interestgym.agents.rules import make_baseline
from interestgym.agents.sequence.scoring import load_tracker
from interestgym.agents.sequence.term import (
    TrackerMixRule,
    attach_tracker,
    tune_tracker_weight,
)
from interestgym.agents.tuning import validation_scorer
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
from interestgym.envs.vector import evaluate_policy

from interestgym.core.interest import ScoringConfig, standardise_scores
from interestgym.errors import InterestGymError


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A fixture dataset and a GRU tracker trained on it."""
    root = tmp_path_factory.mktemp("term")
    data = make_dataset(root / "ds", n_users=24, n_items=40, dim=8)
    run = root / "run"
    tiny_tracker(data, run)
    return data, run


@pytest.fixture(scope="module")
def setup(paths):
    data, run = paths
    tracker = load_tracker(run)
    valid = load_replay_data(data, None, ProtocolSpec(split="valid"))
    return tracker, valid, attach_tracker(valid, tracker)


def test_standardised_scores_have_mean_zero_and_unit_sd_over_each_points_candidates():
    scores = np.array([[1.0, 2.0, 3.0, 99.0], [5.0, 5.0, 0.0, 0.0]])
    valid = np.array([[True, True, True, False], [True, True, False, False]])
    z = standardise_scores(scores, valid)
    sd = np.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(z[0], [-1 / sd, 0.0, 1 / sd, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(z[1], [0.0, 0.0, 0.0, 0.0])  # no spread: no information, no term


def test_the_attached_scores_are_the_trackers_own_ranking(setup):
    tracker, valid, attached = setup
    assert valid.point_tracker_z is None and attached.tracker["model"] == "gru"
    res = tracker.score(valid, keep_scores=True)
    _, _, length = valid.padded_points(np.arange(valid.n_points))
    for p in range(0, valid.n_points, 7):
        z = attached.point_tracker_z[valid.point_offsets[p]: valid.point_offsets[p + 1]]
        raw = res.scores[p, : length[p]]
        # standardising is increasing: the same order of candidates
        np.testing.assert_array_equal(np.argsort(z, kind="stable"), np.argsort(raw, kind="stable"))


def test_weight_zero_is_the_rule_and_a_huge_weight_is_the_tracker(setup):
    tracker, valid, attached = setup
    rule = make_baseline("ema_two_profile", long_rate=0.2, short_rate=0.5, short_weight=0.4)
    alone = evaluate_policy(valid, rule, record_features=False, progress=False)
    mixed0 = evaluate_policy(attached, TrackerMixRule(rule, 0.0), record_features=False, progress=False)
    np.testing.assert_array_equal(mixed0.points["ndcg@10"].to_numpy(), alone.points["ndcg@10"].to_numpy())
    dominated = evaluate_policy(attached, TrackerMixRule(rule, 1e6), record_features=False, progress=False)
    own = tracker.score(valid)
    np.testing.assert_array_equal(dominated.points["ndcg@10"].to_numpy(), own.points["ndcg@10"].to_numpy())


def test_the_weight_grid_is_one_shared_replay_with_every_points_own_numbers(setup):
    _, _, attached = setup
    rule = make_baseline("bayesian_category", beta_cat=1.0, forgetting=0.9)
    best, table = tune_tracker_weight(attached, rule)
    rules = [TrackerMixRule(rule, row["tracker_weight"]) for row in table]
    one_by_one = validation_scorer(attached, "ndcg@10", batched=False)(rules)
    assert [row["score"] for row in table] == one_by_one
    assert best.params["tracker_weight"] == table[int(np.argmax(one_by_one))]["tracker_weight"]
    assert len({r.state_key() for r in rules}) == 1


def test_a_tracker_weight_without_an_attached_tracker_is_refused(setup):
    _, valid, _ = setup
    rule = make_baseline("ema_two_profile")
    with pytest.raises(InterestGymError, match="tracker attached"):
        evaluate_policy(valid, TrackerMixRule(rule, 0.5), record_features=False, progress=False)
    assert "tracker_weight" not in ScoringConfig().as_dict()  # files written before the term read the same


def test_a_mixture_is_rebuilt_from_its_name_and_parameters():
    from interestgym.core.rules import make_rule

    mix = TrackerMixRule(make_baseline("context_rule", beta_ctx=0.3, context_rate=0.1), 0.35)
    again = make_rule(mix.name, **mix.params)
    assert mix.name == "context_rule+tracker" and again.describe() == mix.describe()
    assert again.scoring.tracker_weight == 0.35 and again.scoring.beta_ctx == 0.3
    with pytest.raises(InterestGymError, match="tracker_weight"):
        make_rule("context_rule+tracker", beta_ctx=0.3)


def test_train_with_a_tracker_tunes_the_mixture_beside_the_rules(paths, tmp_path, capsys):
    """`interestgym train --sequence RUN`: the best rule mixed with the tracker competes as a baseline,
    tuned on the same validation users; the reference is the best of all on validation, and a mixture that is not
    the reference is said (the run then goes on without the tracker)."""
    import json

    from agents_fixtures import small_train_config
    from interestgym.agents.sequence.term import TRACKER_WEIGHTS
    from interestgym.agents.train import train_run

    data, run = paths
    config = small_train_config(data, tmp_path / "ppo", reward_baseline="best", sequence=str(run), tune_users=None)
    assert config.replay_data("valid").point_tracker_z is not None
    train_run(config)
    tuned = json.loads((tmp_path / "ppo" / "baselines.json").read_text())["baselines"]
    mixes = [n for n in tuned if n.endswith("+tracker")]
    assert len(mixes) == 1
    base = mixes[0].removesuffix("+tracker")
    grid = tuned[mixes[0]]["grid"]
    assert [row["tracker_weight"] for row in grid] == list(TRACKER_WEIGHTS)
    assert grid[0]["score"] == tuned[base]["valid_score"]  # weight 0 is the rule, to the bit
    assert tuned[mixes[0]]["valid_score"] == max(row["score"] for row in grid)
    saved = json.loads((tmp_path / "ppo" / "config.json").read_text())
    competing = {n: v["valid_score"] for n, v in tuned.items() if n != "oracle"}
    assert saved["reference"]["name"] == max(competing, key=lambda n: (competing[n], -list(competing).index(n)))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: --sequence: the mixture")]
    ref, mix = saved["reference"], tuned[mixes[0]]
    if ref["name"] == mixes[0]:
        assert notes == []
    else:
        weight = mix["params"]["tracker_weight"]
        why = ("its tracker's weight tuned to 0 on validation users (the rule alone scored best)" if weight == 0 else
               f"at tracker weight {weight:g} it scored {mix['valid_score']:.4f} on validation against "
               f"{ref['valid_score']:.4f} for `{ref['name']}`")
        assert notes == [(f"note: --sequence: the mixture `{mixes[0]}` is not the reference ({why}); the run's reference is "
                          f"`{ref['name']}` and the agent does not score with the tracker")]


def test_evaluate_with_a_tracker_lists_it_and_its_mixture_with_the_best_rule(paths, tmp_path):
    """`interestgym evaluate DATASET --sequence RUN`: the tracker's row and `<best rule>+<tracker>`, its
    weight tuned on the validation users the rules were tuned on; `--reference` may name either."""
    import json

    from interestgym.core.rules import make_rule
    from interestgym.evaluation.run import evaluate_run

    data, run = paths
    evaluate_run(data, out=tmp_path / "ev", baselines="popularity,ema_two_profile", n_boot=50, progress=False,
                 sequence_runs=(run,), reference="gru")
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    rows = doc["summary"]["policies"]
    best = max(("popularity", "ema_two_profile"), key=lambda n: doc["tuned_baselines"][n]["valid_score"])
    mix = rows[f"{best}+gru"]
    assert mix["kind"] == "baseline" and doc["header"]["reference"] == "gru"
    assert doc["summary"]["reference_reason"] == "chosen with --reference"
    # by default the reference is the best tuned rule, and the rows --sequence adds are said not to be candidates for it
    evaluate_run(data, out=tmp_path / "ev-auto", baselines="popularity,ema_two_profile", n_boot=20, progress=False,
                 sequence_runs=(run,))
    auto = json.loads((tmp_path / "ev-auto" / "evaluation.json").read_text())
    assert auto["header"]["reference"] == best
    assert auto["summary"]["reference_reason"] == ("the best tuned baseline among --baselines popularity,ema_two_profile on "
                                                   "validation users; the trackers and the rule + tracker mixtures --sequence "
                                                   "adds are compared with it, not candidates for it (`train --sequence` makes "
                                                   "a mixture a candidate)")
    weight = mix["params"]["tracker_weight"]
    assert weight == max(mix["params"]["weight_grid"], key=lambda r: r["score"])["tracker_weight"]
    # independently: the same mixture replayed on the whole test split with the tracker attached
    test = attach_tracker(load_replay_data(data, None, ProtocolSpec(split="test")), load_tracker(run))
    rule = make_rule(f"{best}+tracker", **{k: v for k, v in mix["params"].items() if k not in ("tracker", "weight_grid")})
    res = evaluate_policy(test, rule, record_features=False, progress=False)
    assert mix["metrics"]["ndcg@10"]["mean"] == pytest.approx(res.per_user()["ndcg@10"].mean(), abs=1e-12)
    assert "ndcg@10" in mix["diff_vs_reference"]


class _ConstantChange:
    """A learned change that is the same at every decision (columns: a_L, a_S, w, p, keep, tracker)."""

    def __init__(self, change: list[float]) -> None:
        self.change = np.asarray(change, dtype=np.float32)

    def act(self, observations):
        return np.tile(self.change, (len(np.atleast_2d(observations)), 1))


def test_the_agents_sixth_component_sets_the_trackers_weight_per_decision(setup):
    """With a tracker, a residual action's sixth component moves the tracker's weight at that decision:
    zero is the reference's weight to the bit, u is weight + u (within [0, 3])."""
    from interestgym.envs.policies import ResidualPolicy

    from interestgym.core.protocol import TRACKER_ACTION_NAMES

    _, _, attached = setup
    rule = make_baseline("ema_two_profile", long_rate=0.2, short_rate=0.5, short_weight=0.4)
    reference = TrackerMixRule(rule, 0.5)

    def metric(policy):
        return evaluate_policy(attached, policy, record_features=False, progress=False).points["ndcg@10"].to_numpy()

    np.testing.assert_array_equal(metric(ResidualPolicy(reference, None, names=TRACKER_ACTION_NAMES)), metric(reference))
    np.testing.assert_array_equal(metric(ResidualPolicy(reference, _ConstantChange([0, 0, 0, 0, 0, 0.25]), names=TRACKER_ACTION_NAMES)),
                                  metric(TrackerMixRule(rule, 0.75)))
    np.testing.assert_array_equal(metric(ResidualPolicy(reference, _ConstantChange([0, 0, 0, 0, 0, -1.0]), names=TRACKER_ACTION_NAMES)),
                                  metric(rule))  # 0.5 - 1 clips at 0: the rule alone


def test_training_with_a_tracker_gives_the_agent_the_tracker_lever(paths, tmp_path, monkeypatch):
    import json
    import os

    from agents_fixtures import small_train_config
    from interestgym.agents.train import train_run

    data, run = paths
    monkeypatch.chdir(tmp_path)  # the tracker given relatively: recorded absolute, so that the run works from anywhere
    train_run(small_train_config(data, tmp_path / "ppo", reward_baseline="ema_two_profile",
                                 sequence=os.path.relpath(run, tmp_path)))
    saved = json.loads((tmp_path / "ppo" / "config.json").read_text())
    assert saved["config"]["sequence"] == str(Path(run).resolve())
    assert saved["action_space"]["names"][-2:] == ["keep_change", "tracker_change"]
    from interestgym.agents.run_folder import load_run_choice

    policy = load_run_choice(tmp_path / "ppo", "final")
    from interestgym.core.features import N_FEATURES, TRACKER_FEATURE_NAMES

    # by default the agent also observes the tracker, after the FEATURES
    assert saved["config"]["tracker_observations"] is True
    assert policy.act(np.zeros((3, N_FEATURES + len(TRACKER_FEATURE_NAMES)), np.float32)).shape == (3, 6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "ppo" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    weights = [e.value for e in acc.Scalars("charts/mean_tracker_weight")]  # the lever, watched in TensorBoard
    assert weights and all(0.0 <= w <= 3.0 for w in weights)


def test_an_unknown_reference_is_refused_naming_the_rows(paths, tmp_path):
    from interestgym.evaluation.run import evaluate_run

    data, run = paths
    with pytest.raises(InterestGymError, match=r"--reference 'nope'.*popularity.*gru"):
        evaluate_run(data, out=tmp_path / "ev", baselines="popularity", n_boot=10, progress=False,
                     sequence_runs=(run,), reference="nope")


def test_tracker_observations_follow_the_trackers_own_ranking_and_confidence(setup):
    """The agent's tracker observations, recomputed independently: the step metric of the mixture at a
    weight so large that the tracker alone ranks (the engine's scoring path), folded per user with the
    observation's running-mean rate; the confidence from a softmax over the catalogue in numpy."""
    from interestgym.agents.sequence.scoring import (
        decision_sequences,
        decision_states,
        item_table,
    )

    from interestgym.core.features import EMA_RATE, TRACKER_FEATURE_NAMES

    tracker, valid, _ = setup
    attached = attach_tracker(valid, tracker, observe="ndcg@10")
    obs = attached.decision_extra_obs
    assert attached.extra_obs == TRACKER_FEATURE_NAMES
    assert obs.shape == (valid.n_decisions, len(TRACKER_FEATURE_NAMES)) and obs.dtype == np.float32
    rule = make_baseline("ema_two_profile", long_rate=0.2, short_rate=0.5, short_weight=0.4)
    alone = evaluate_policy(attached, TrackerMixRule(rule, 1e9), record_features=False, progress=False)
    steps = alone.points.groupby(["user_id", "decision"], sort=False)["ndcg@10"].mean()
    expected = np.zeros(valid.n_decisions)
    for u, user in enumerate(valid.user_ids):
        mean = 0.0
        for k, d in enumerate(range(int(valid.user_decision_start[u]), int(valid.user_decision_end[u]))):
            expected[d] = mean
            if (str(user), k) in steps.index:
                mean = mean + EMA_RATE * (steps[(str(user), k)] - mean)
    np.testing.assert_allclose(obs[:, 0], expected, atol=1e-6)
    assert (obs[:, 0] > 0).any()

    states = decision_states(tracker.model, decision_sequences(valid), np.arange(valid.n_decisions))
    logits = states.astype(np.float64) @ item_table(tracker.model).astype(np.float64).T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(obs[:, 1], p.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(obs[:, 2], -(p * np.log(p)).sum(axis=1) / np.log(p.shape[1]), atol=1e-5)


def test_the_vector_env_reports_the_applied_strengths_and_tracker_weight(setup):
    """A residual agent acts with a change: the env's infos carry what was applied (the strengths and,
    with a tracker, its weight), which the training charts average. A zero change applies the rule's."""
    from interestgym.envs.vector import InterestReplayVecEnv

    from interestgym.core.protocol import action_to_strengths

    _, _, attached = setup
    rule = make_baseline("ema_two_profile", long_rate=0.2, short_rate=0.5, short_weight=0.4)
    venv = InterestReplayVecEnv(attached, n_envs=3, seed=0, residual_to=TrackerMixRule(rule, 0.5), scoring=TrackerMixRule(rule, 0.5).scoring)
    obs = venv.reset()
    for change in (0.0, 0.4):
        venv.step_async(np.tile(np.array([0, 0, 0, 0, 0, change], np.float32), (3, 1)))
        expected = action_to_strengths(rule.act(obs))
        obs, _, _, infos = venv.step_wait()
        np.testing.assert_array_equal(np.stack([i["strengths"] for i in infos]), expected)
        # clip(weight + TRACKER_CHANGE_SCALE * change, 0, 3), the scale being 1
        assert [i["tracker_weight"] for i in infos] == [0.5 + float(np.float32(change))] * 3


def test_tuned_baselines_with_and_without_a_tracker_are_refused_at_once_for_the_other_kind_of_run(paths, tmp_path, capsys):
    """--tuned-baselines of a --sequence run for a run without --sequence, and one tuned without a tracker for a run
    with it, are refused before any replay data is built, naming the file and what to do; no run folder is left."""
    import json

    from agents_fixtures import small_train_config
    from cli_fixtures import run as cli
    from interestgym.agents.train import train_run

    data, tracker = paths
    train_run(small_train_config(data, tmp_path / "with", reward_baseline="best", sequence=str(tracker), tune_users=None))
    capsys.readouterr()
    with_tracker = tmp_path / "with" / "baselines.json"
    doc = json.loads(with_tracker.read_text())
    assert doc["protocol"].get("tracker")
    doc["protocol"].pop("tracker")
    without = tmp_path / "without.json"
    without.write_text(json.dumps(doc))
    small = ["--timesteps", "64", "--n-envs", "2", "--n-steps", "32", "--batch-size", "32", "--no-progress"]
    code, _, err = cli(["train", str(data), "--run-dir", str(tmp_path / "a"), "--tuned-baselines", str(with_tracker), *small], capsys)
    assert code == 2 and err == (f"error: --tuned-baselines {with_tracker}: tuned with a tracker (--sequence); this run has none: "
                                 "tune again without --tuned-baselines, or give the run the same --sequence\n")
    code, _, err = cli(["train", str(data), "--run-dir", str(tmp_path / "b"), "--tuned-baselines", str(without), "--sequence",
                        str(tracker), *small], capsys)
    assert code == 2 and err == (f"error: --tuned-baselines {without}: tuned without a tracker; this run has --sequence, whose rule "
                                 "+ tracker mixture must be tuned with it: tune again without --tuned-baselines, or drop "
                                 "--sequence\n")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_unused_tracker_note_says_why_for_a_named_reference(capsys):
    """With --reward-baseline NAME the mixture never competes for the reference: the note says so (it scored higher
    here), not that it was outscored; with 'best' and a lower score it is said outscored; a mixture that is the
    reference gets no note."""
    from interestgym.agents.train import _note_unused_tracker

    ref = {"name": "context_rule", "valid_score": 0.30}
    tuned = {"context_rule": {"valid_score": 0.30}, "context_rule+tracker": {"params": {"tracker_weight": 0.5}, "valid_score": 0.36}}
    _note_unused_tracker(ref, tuned, "context_rule")
    assert capsys.readouterr().err == ("note: --sequence: the mixture `context_rule+tracker` is not the reference (--reward-baseline "
                                       "context_rule names the reference; at tracker weight 0.5 the mixture scored 0.3600 on "
                                       "validation against 0.3000: --reward-baseline best lets it compete); the run's reference is "
                                       "`context_rule` and the agent does not score with the tracker\n")
    tuned["context_rule+tracker"]["valid_score"] = 0.28
    _note_unused_tracker({"name": "ema", "valid_score": 0.31}, {**tuned, "ema": {"valid_score": 0.31}}, "best")
    assert "at tracker weight 0.5 it scored 0.2800 on validation against 0.3100 for `ema`" in capsys.readouterr().err
    _note_unused_tracker({"name": "context_rule+tracker", "valid_score": 0.36}, tuned, "best")
    assert capsys.readouterr().err == ""
