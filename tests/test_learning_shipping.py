"""A learned policy starts exactly at the reference rule, and a run ships only what validation proves.

* The untrained residual agent (its change is exactly zero) ranks every user of every split exactly
  as the tuned reference rule does: per-user metrics compared with ``==``, not a tolerance.
* At the end of training, ``RUN/shipped.json`` says whether the learned policy or the rule ships, with
  the validation numbers behind it; ``load_shipped_policy`` returns that policy.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from agents_fixtures import (
    per_user_metrics,
    shipping_config,
    small_train_config,
    tiny_synthetic,
)
from env_fixtures import reseal_tables, write_users
from interestgym.agents.config import TrainConfig
from interestgym.agents.rules import make_baseline
from interestgym.agents.run_folder import (
    load_run_policy,
    load_shipped_policy,
    read_shipped,
)
from interestgym.agents.sb3_policy import policy_from_model
from interestgym.agents.train import new_agent, train_run
from interestgym.envs.policies import ResidualPolicy
from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy

from interestgym.errors import ArtifactError, InterestGymError

# A rule with every kind of state: both profiles, the category counts with a fixed forgetting, and
# time-of-day slot profiles would be context_rule's; bayesian_category exercises the keep factor.
REFERENCE = make_baseline("bayesian_category", beta_cat=1.0, forgetting=0.9, long_rate=0.2, short_rate=0.7,
                          short_weight=0.4, popularity_weight=0.1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("ship") / "tiny", users=40)


def _config(dataset, run_dir, **kw) -> TrainConfig:
    return shipping_config(dataset, run_dir, **kw)


def _per_user(data, policy) -> dict[str, np.ndarray]:
    return per_user_metrics(data, policy)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_the_untrained_residual_agent_is_the_reference_rule_to_the_bit(dataset, tmp_path, split):
    config = _config(dataset, tmp_path / "unused")
    data = config.replay_data(split)
    venv = InterestReplayVecEnv(config.replay_data("train"), n_envs=4, reward_baseline=REFERENCE, residual_to=REFERENCE, seed=0)
    model, init = new_agent(config, venv, REFERENCE, None, config.replay_data("train"), REFERENCE.scoring)
    assert init.tolist() == [0.0] * 5 and model.action_space.shape == (5,)
    agent = ResidualPolicy(REFERENCE, policy_from_model(model, model.get_vec_normalize_env(), scoring=REFERENCE.scoring))
    ours, theirs = _per_user(data, agent), _per_user(data, REFERENCE)
    for metric in theirs:
        assert np.array_equal(ours[metric], theirs[metric], equal_nan=True), metric


def test_a_nonzero_keep_change_moves_the_category_counts(dataset, tmp_path):
    """The fifth component is wired: forgetting everything at every decision changes the rankings."""
    data = _config(dataset, tmp_path / "unused").replay_data("valid")

    class ForgetAll:
        def act(self, obs):
            change = np.zeros((len(obs), 5), np.float32)
            change[:, 4] = -1.0  # keep factor 0.9 - 1 -> 0: only the last category counts
            return change

    moved = _per_user(data, ResidualPolicy(REFERENCE, ForgetAll()))["ndcg@10"]
    assert not np.array_equal(moved, _per_user(data, REFERENCE)["ndcg@10"])


@pytest.mark.parametrize("threshold, shipped", [(1.0, "rule"), (-1.0, "learned")])
def test_the_run_ships_the_learned_policy_only_when_validation_proves_it(dataset, tmp_path, threshold, shipped):
    run = tmp_path / "run"
    result = train_run(_config(dataset, run, ship_threshold=threshold))
    decision = read_shipped(run)
    assert result["shipped"] == decision and decision["policy"] == shipped
    # the recorded validation numbers are the two policies' means over every validation user
    valid = _config(dataset, run).replay_data("valid")
    reference = make_baseline(decision["rule"]["name"], **decision["rule"]["params"])
    learned = load_run_policy(run, decision.get("model") or "best")
    metric = decision["metric"]
    ours = evaluate_policy(valid, learned, metric=metric, progress=False).per_user()[metric].to_numpy()
    theirs = evaluate_policy(valid, reference, metric=metric, progress=False).per_user()[metric].to_numpy()
    assert decision["validation"]["learned"] == pytest.approx(float(np.mean(ours)))
    assert decision["validation"]["rule"] == pytest.approx(float(np.mean(theirs)))
    assert decision["validation"]["diff"]["mean"] == pytest.approx(float(np.mean(ours - theirs)))
    lo_above = decision["validation"]["diff"]["lo"] > threshold
    worse = [m for m, d in decision["validation"]["guards"].items() if d["hi"] < 0]
    assert sorted(decision["validation"]["guards"]) == ["auc", "hit@10", "mrr"]
    assert (decision["policy"] == "learned") == (lo_above and not worse)
    assert ("not above" in decision["reason"]) == (not lo_above)
    policy = load_shipped_policy(run)
    if shipped == "rule":
        assert policy.name == decision["rule"]["name"] and json.dumps(policy.params) == json.dumps(decision["rule"]["params"])
    else:
        assert isinstance(policy, ResidualPolicy)
    best_step = json.loads((run / "best" / "info.json").read_text())["step"]
    # a best model from step 0 is the untrained agent, the rule itself: the reason says so
    assert decision["reason"].startswith("no model after step 0 scored higher on validation") == (best_step == 0)


def test_a_run_whose_best_model_is_the_untrained_agent_says_so(dataset, tmp_path):
    run = tmp_path / "run"
    # validated at step 0 and at the end; a learning rate too small to move float32 weights keeps the final model the
    # rule too, so no later model can score higher (whatever the tuned reference)
    train_run(_config(dataset, run, timesteps=64, eval_every=10**6, checkpoint_every=64, learning_rate=1e-30))
    decision = read_shipped(run)
    assert json.loads((run / "best" / "info.json").read_text())["step"] == 0
    assert decision["policy"] == "rule" and decision["validation"]["diff"]["mean"] == 0.0
    assert decision["reason"].startswith("no model after step 0 scored higher on validation, and the step-0 agent is the "
                                         "rule itself: the best model gains +0.0000")


def test_a_model_proven_worse_on_a_guard_metric_ships_the_rule_even_past_the_threshold(dataset, tmp_path, monkeypatch):
    """A gain in the reward metric does not ship a policy that validation proves worse on AUC, MRR or
    hit@10: here the threshold lets any reward change pass, and the 'learned' policy ranks by popularity
    alone (p = 1, no event ever counted), far below the rule."""
    from interestgym.agents import run_folder
    from interestgym.agents.train import decide_shipping

    from interestgym.core.protocol import residual_action_names

    run = tmp_path / "run"
    config = _config(dataset, run, ship_threshold=-1.0)
    train_run(config)
    reference = make_baseline(read_shipped(run)["rule"]["name"], **read_shipped(run)["rule"]["params"])
    names = residual_action_names(tracker=False, gain=True)

    class PopularityOnly:
        def act(self, obs):
            change = np.zeros((len(obs), len(names)), np.float32)
            change[:, 3], change[:, 5] = 2.0, -1.0  # p -> 1 (clipped), gain 0
            return change

    worse_policy = ResidualPolicy(reference, PopularityOnly(), names=names)
    monkeypatch.setattr(run_folder, "load_run_policy", lambda *a, **k: worse_policy)
    valid = config.replay_data("valid")
    decision = decide_shipping(run, config, valid, reference)
    assert decision["policy"] == "rule" and "but it is worse on" in decision["reason"]
    named = [m for m in ("auc", "mrr", "hit@10") if f" {m} (" in decision["reason"]]
    assert named
    for m in named:  # each named metric is lower for the policy on these users, computed here on its own
        ours = evaluate_policy(valid, worse_policy, progress=False).per_user()[m].mean()
        theirs = evaluate_policy(valid, reference, progress=False).per_user()[m].mean()
        assert ours < theirs and decision["validation"]["guards"][m]["hi"] < 0


@pytest.mark.parametrize("threshold, gain", [(1.0, True), (-1.0, True), (-1.0, False)],
                         ids=["ships the rule", "ships the residual model", "ships the residual model without the gain lever"])
def test_the_shipped_policy_exports_and_the_runtime_reproduces_evaluate(dataset, tmp_path, threshold, gain):
    """A shipped rule exports without a graph, a residual model with its change graph (with the category
    gain component, and without); either way the runtime, replaying test users event by event, gives
    exactly the evaluator's metrics."""
    from interestgym.agents.run_folder import load_shipped_policy

    from interestgym.data.dataset import Dataset
    from interestgym.export.parity import replay_through_runtime
    from interestgym.export.run import export_run
    from interestgym.runtime import load_policy

    run = tmp_path / "run"
    train_run(_config(dataset, run, ship_threshold=threshold, category_gain=gain))
    decision = read_shipped(run)
    export_run(run, tmp_path / "export", verify_observations=100)
    policy = load_policy(tmp_path / "export")
    assert policy.form == ("rule" if decision["policy"] == "rule" else "residual")
    assert (tmp_path / "export" / "policy.onnx").is_file() == (decision["policy"] == "learned")
    data = _config(dataset, run).replay_data("test")
    expected = evaluate_policy(data, load_shipped_policy(run), progress=False)
    got = replay_through_runtime(policy, Dataset.open(dataset), data, serialise="bytes")
    assert list(got["point_key"]) == list(expected.points["point_key"])
    for metric in expected.metrics:
        np.testing.assert_array_equal(got[metric].to_numpy(), expected.points[metric].to_numpy(), err_msg=metric)


def test_a_run_transfers_to_another_dataset_and_refuses_what_cannot(dataset, tmp_path):
    from interestgym.evaluation.run import evaluate_run

    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=128))
    other = tiny_synthetic(tmp_path / "other", users=40, seed=1)
    evaluate_run(run, dataset=other, out=tmp_path / "transfer", baselines="ema,static", n_boot=50, progress=False)
    doc = json.loads((tmp_path / "transfer" / "evaluation.json").read_text())
    assert doc["header"]["data"] == str(other.resolve()) and doc["header"]["trained_on"] == str(dataset.resolve())
    assert doc["summary"]["reference"] in ("ema", "static")  # the other dataset's own tuned rules
    assert not (run / "evaluation.json").exists()  # the run's own evaluation is not touched
    assert doc["header"]["transfer_actions"] is None  # the same kinds of events
    # events of other kinds (the same weights table): transferred, with a caution naming both sets of actions
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    views = tmp_path / "views"
    shutil.copytree(other, views)
    events = pq.read_table(views / "events.parquet")
    pq.write_table(events.set_column(events.schema.get_field_index("action"), "action",
                                     pc.if_else(pc.equal(events["action"], "share"), pa.scalar("view"), events["action"])),
                   views / "events.parquet")
    reseal_tables(views)  # a log of other actions, as prepare would record it
    text = evaluate_run(run, dataset=views, out=tmp_path / "tv", baselines="ema", n_boot=20, progress=False)
    caution = json.loads((tmp_path / "tv" / "evaluation.json").read_text())["header"]["transfer_actions"]
    assert caution.startswith(f"the actions of {views}'s events (click, like, view) are not those the run trained on (click, like, "
                              "share in") and f"- caution: {caution}" in text

    meta = json.loads((other / "embeddings" / "topic16.json").read_text())
    (other / "embeddings" / "topic16.json").write_text(json.dumps({**meta, "fingerprint": "fitted-on-other-data"}))
    with pytest.raises(Exception, match="fingerprint fitted-on-other"):
        evaluate_run(run, dataset=other, out=tmp_path / "t2", baselines="ema", n_boot=20, progress=False)
    # a run on an encoder fitted to its own data (tfidf, cooc) is told it cannot transfer, not to encode the other one
    config_file = run / "config.json"
    original = config_file.read_text()
    saved = json.loads(original)
    config_file.write_text(json.dumps({**saved, "embedding": {**saved["embedding"], "encoder": "cooc"}}))
    with pytest.raises(InterestGymError, match=r"the run's encoder, cooc, is fitted on the run's own data, .*this run cannot transfer; "
                                               r"to evaluate across datasets, train on an encoder that is not fitted"):
        evaluate_run(run, dataset=other, out=tmp_path / "t2", baselines="ema", n_boot=20, progress=False)
    # ... also where the other dataset has no embeddings yet (not "encode it with the run's encoder first")
    bare = tmp_path / "bare"
    import shutil

    shutil.copytree(other, bare, ignore=shutil.ignore_patterns("embeddings"))
    with pytest.raises(InterestGymError, match=r"the run's encoder, cooc, is fitted on the run's own data"):
        evaluate_run(run, dataset=bare, out=tmp_path / "t2b", baselines="ema", n_boot=20, progress=False)
    config_file.write_text(original)
    with pytest.raises(Exception, match="give --out"):
        evaluate_run(run, dataset=other, baselines="ema", n_boot=20, progress=False)
    (other / "embeddings" / "topic16.json").write_text(json.dumps(meta))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["action_weights"] = {**manifest["action_weights"], "click": 2.5}
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="action weights"):
        evaluate_run(run, dataset=other, out=tmp_path / "t3", baselines="ema", n_boot=20, progress=False)

    # several embeddings there, none named: the one of the run's encoder is used, whatever its name
    (other / "manifest.json").write_text(json.dumps({**manifest, "action_weights": json.loads(
        (dataset / "manifest.json").read_text())["action_weights"]}))
    emb = other / "embeddings"
    for suffix in (".npy", ".json"):
        (emb / f"topic16{suffix}").rename(emb / f"same_encoder{suffix}")
    (emb / "another.npy").write_bytes((emb / "same_encoder.npy").read_bytes())
    (emb / "another.json").write_text(json.dumps({**meta, "name": "another", "fingerprint": "another-encoder"}))
    evaluate_run(run, dataset=other, out=tmp_path / "t4", baselines="ema", n_boot=20, progress=False)
    assert json.loads((tmp_path / "t4" / "evaluation.json").read_text())["header"]["encoder"] == "same_encoder"

    # none there: the message names the run's own encoder (as config.json records it), not a generic one
    import shutil

    shutil.rmtree(emb)
    encoder = json.loads((run / "config.json").read_text())["embedding"]["encoder"]
    with pytest.raises(InterestGymError, match=rf"no embeddings yet; encode it with the run's encoder first: `interestgym encode "
                                               rf"{other} --encoder {encoder}"):
        evaluate_run(run, dataset=other, out=tmp_path / "t5", baselines="ema", n_boot=20, progress=False)


def test_the_report_says_what_the_policy_does_differently_from_the_rule(dataset, tmp_path):
    from interestgym.data.dataset import Dataset
    from interestgym.report.build import differences_from_rule

    class Change:  # a_L always 0.1 higher (in strength: +0.2 in action units), keep factor 0.3 lower
        def act(self, obs):
            change = np.zeros((len(obs), 5), np.float32)
            change[:, 0], change[:, 4] = 0.2, -0.3
            return change

    data = _config(dataset, tmp_path / "unused").replay_data("valid")
    policy = ResidualPolicy(REFERENCE, Change())
    res = evaluate_policy(data, policy, record_features=True, progress=False)
    lines = differences_from_rule(policy, REFERENCE, res, Dataset.open(dataset))
    # REFERENCE moves L with 0.2 (action -0.6): the policy with 0.3 (action -0.4); keep 0.9 -> 0.6
    assert "a_L 0.300 vs 0.200 (+0.100)" in lines[0] and "keep 0.600 vs 0.900 (-0.300)" in lines[0]
    assert "a_S 0.700 vs 0.700 (+0.000)" in lines[0]
    assert any(line.strip().startswith(("drifting", "stable", "switcher", "bursty", "context", "noisy")) for line in lines[1:])
    assert lines[1].startswith("The reference rule: `bayesian_category` with") and "popularity_weight 0.1" in lines[1]
    assert not any("no weight" in line for line in lines)
    # a rule at p = 1 ranks without its profiles: the report says so, with the policy's own mix
    from interestgym.agents.rules import make_baseline

    popular = make_baseline("bayesian_category", **{**REFERENCE.params, "popularity_weight": 1.0})
    policy = ResidualPolicy(popular, Change())
    res = evaluate_policy(data, policy, record_features=True, progress=False)
    note = next(line for line in differences_from_rule(policy, popular, res, Dataset.open(dataset)) if "no weight" in line)
    assert "the policy gives them 0.000 of the profile-vs-popularity mix on average (p 1.000)" in note


def test_windows_start_mid_history_and_the_penalty_prices_a_change(dataset, tmp_path):
    data = _config(dataset, tmp_path / "unused").replay_data("train")
    plain = InterestReplayVecEnv(data, n_envs=4, reward_baseline=REFERENCE, residual_to=REFERENCE, seed=3)
    priced = InterestReplayVecEnv(data, n_envs=4, reward_baseline=REFERENCE, residual_to=REFERENCE, change_penalty=0.5, seed=3)
    plain.reset(), priced.reset()
    change = np.full((4, 5), 0.2, np.float32)
    for _ in range(5):
        plain.step_async(change), priced.step_async(change)
        (_, r_plain, _, _), (_, r_priced, _, _) = plain.step_wait(), priced.step_wait()
        np.testing.assert_allclose(r_plain - r_priced, 0.5 * 0.04, rtol=1e-5)  # 0.5 * mean(0.2^2)

    windowed = InterestReplayVecEnv(data, n_envs=8, reward_baseline=REFERENCE, residual_to=REFERENCE, window=3, seed=0)
    windowed.reset()
    starts = windowed.engine.cursor[:8] - data.user_decision_start[windowed.engine.user[:8]]
    assert (starts > 0).any()  # some episodes start mid-history
    ended = np.zeros(8, bool)
    for _ in range(3):
        windowed.step_async(np.zeros((8, 5), np.float32))
        _, _, dones, _ = windowed.step_wait()
        ended |= dones
    assert ended.all()  # every episode is over within its window of 3 decisions
    # a window starts anywhere but at a user's last decision (a step there would have no next decision to score)
    many = InterestReplayVecEnv(data, n_envs=256, reward_baseline=REFERENCE, residual_to=REFERENCE, window=3, seed=1)
    many.reset()
    users = many.engine.user[:256]
    starts = many.engine.cursor[:256] - data.user_decision_start[users]
    n_dec = data.user_decision_end[users] - data.user_decision_start[users]
    assert (starts <= np.maximum(n_dec - 2, 0)).all() and (starts == np.maximum(n_dec - 2, 0)).any()


def test_the_report_shows_what_the_run_ships_and_says_when_it_is_the_rule(dataset, tmp_path):
    """Without an evaluation the report replays the shipped policy, as evaluate would; a shipped rule is
    said so (with the command that shows the learned model), and no components are drawn for it."""
    from interestgym.report.build import build_report

    run = tmp_path / "run"
    train_run(_config(dataset, run, ship_threshold=1.0))  # nothing passes: the rule ships
    assert read_shipped(run)["policy"] == "rule"
    said: list[str] = []
    report = build_report(run, timeline_users=1, progress=False, log=said.append)
    assert any(line.endswith("with the shipped rule `bayesian_category`") for line in said), said  # a rule, not "the shipped model"
    assert any("ships its reference rule" in n and "--model best" in n for n in report.notes)
    assert "components" not in report.figures and "actions" in report.figures
    learned = build_report(run, which_model="best", timeline_users=1, progress=False, out=tmp_path / "best")
    assert "components" in learned.figures and not any("the figures show the rule" in n for n in learned.notes)
    # without an evaluation, both say what the run ships and why (shipped.json)
    for result in (report, learned):
        assert any(n.startswith("The run ships its reference rule") and "shipped.json" in n for n in result.notes), result.notes


def test_an_export_carries_the_evaluation_of_the_policy_it_holds_only(dataset, tmp_path):
    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run
    from interestgym.runtime.manifest import read_manifest

    run = tmp_path / "run"
    train_run(_config(dataset, run, ship_threshold=1.0))  # the rule ships
    evaluate_run(run, baselines="ema", n_boot=50, progress=False)  # evaluates what ships: the rule
    export_run(run, tmp_path / "rule", verify_observations=20)
    export_run(run, tmp_path / "best", which="best", verify_observations=20)
    assert read_manifest(tmp_path / "rule")["evaluation"] is not None
    # the rule's definition travels with it (for a service in another language), from the one table of core.rules
    from interestgym.core.rules import rule_definition

    rule = read_manifest(tmp_path / "rule")["policy"]["rule"]
    assert rule["definition"] == rule_definition(rule["name"]) and rule["definition"]
    assert read_manifest(tmp_path / "best")["evaluation"] is None  # not the shipped rule's numbers
    # against its own rule (tuned again on the same users: the same parameters) the shipped rule is said to be that
    # rule, not "not distinguishable from" it with a CI of [+0, +0], and no groups of users split a difference of 0
    text = evaluate_run(run, baselines="bayesian_category", n_boot=50, progress=False, out=tmp_path / "own")
    assert "- `shipped:bayesian_category` ranks every user as `bayesian_category` does (a difference of 0 at every user" in text
    assert "not distinguishable" not in text and "groups of the users" not in text


def test_an_export_leaves_out_a_side_evaluation_and_says_why(dataset, tmp_path):
    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run
    from interestgym.runtime.manifest import read_manifest

    run = tmp_path / "run"
    train_run(_config(dataset, run, ship_threshold=1.0))  # the rule ships
    evaluate_run(run, split="train", baselines="ema", n_boot=20, progress=False)  # a side look at the training users
    result = export_run(run, tmp_path / "side", verify_observations=0)
    assert read_manifest(tmp_path / "side")["evaluation"] is None
    assert result.evaluation_note == (f"{run / 'evaluation.json'} is an evaluation on split 'train', not the run's test "
                                      f"evaluation: not in the manifest (`interestgym evaluate {run}` to record the test metrics)")
    best = export_run(run, tmp_path / "best", which="best", verify_observations=0)
    assert best.evaluation_note.startswith(f"{run / 'evaluation.json'} evaluates the shipped rule, not the best model exported "
                                           f"here: not in the manifest (`interestgym evaluate {run} --model best`")
    evaluate_run(run, baselines="ema", n_boot=20, progress=False)
    again = export_run(run, tmp_path / "test", verify_observations=0)
    assert again.evaluation_note is None and read_manifest(tmp_path / "test")["evaluation"] is not None


def test_the_shipping_verdict_reads_the_lower_end_of_the_gains_ci_and_the_upper_end_of_each_guards():
    """A mean gain above the threshold with a CI reaching below it is not proof; a guard metric whose mean is below 0
    but whose CI reaches above 0 is a tie, not a loss (hand-made CIs, independent of any replay)."""
    from interestgym.agents.train import shipping_verdict

    def ci(mean, lo, hi):
        return {"mean": mean, "lo": lo, "hi": hi, "n": 100}

    assert shipping_verdict(ci(0.004, 0.001, 0.007), {}, 0.0) == (True, [])
    assert shipping_verdict(ci(0.004, -0.001, 0.009), {}, 0.0) == (False, [])  # mean above, CI not
    assert shipping_verdict(ci(0.004, 0.001, 0.007), {}, 0.002) == (False, [])  # above 0, not above the threshold
    guards = {"auc": ci(-0.002, -0.004, -0.0005), "mrr": ci(-0.002, -0.005, 0.001), "hit@10": None}
    assert shipping_verdict(ci(0.004, 0.001, 0.007), guards, 0.0) == (True, ["auc"])  # mrr ties, hit@10 unchecked


def test_an_evaluation_of_events_changed_since_is_left_out_of_the_export_and_said(dataset, tmp_path):
    """The export builds its popularity and catalogue from the dataset as it is: an evaluation.json of the events as they
    were is left out of its manifest, and the export says the events changed since training, as evaluate does (Trial M)."""
    import shutil

    import pandas as pd

    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run
    from interestgym.runtime.manifest import read_manifest

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    run = tmp_path / "run"
    train_run(_config(data, run, timesteps=128))
    evaluate_run(run, which_model="final", baselines="ema", n_boot=20, progress=False)
    first = export_run(run, tmp_path / "before", which="final", verify_observations=0)
    assert first.evaluation_note is None and first.dataset_note is None
    assert read_manifest(tmp_path / "before")["evaluation"] is not None
    events = pd.read_parquet(data / "events.parquet")
    events.loc[3, "value"] = events.loc[3, "value"] + 1.0  # the same rows, other contents
    events.to_parquet(data / "events.parquet", index=False)
    reseal_tables(data)  # as prepare of the edited log records it
    after = export_run(run, tmp_path / "after", which="final", verify_observations=0)
    assert read_manifest(tmp_path / "after")["evaluation"] is None
    assert after.dataset_note == (f"{data}: its events.parquet changed since the run {run} was trained on it (the same users' "
                                  "split): the policy replays what the dataset holds now")
    assert after.evaluation_note == (f"{run / 'evaluation.json'} evaluates the dataset as it was: its events.parquet changed "
                                     "since, and the export is built from it as it is now: not in the manifest "
                                     f"(`interestgym evaluate {run}` records its metrics)")


def test_an_evaluation_of_a_model_trained_further_since_is_left_out_and_said(dataset, tmp_path):
    """`train --resume` replaces the final model after `evaluate --model final`: the export leaves that evaluation out
    of its manifest (its numbers are of the earlier model) and the report says its table is of the earlier step."""
    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run
    from interestgym.report.build import build_report
    from interestgym.runtime.manifest import read_manifest

    run = tmp_path / "run"
    config = _config(dataset, run)
    train_run(config)
    evaluate_run(run, which_model="final", baselines="ema", n_boot=20, progress=False)
    step = json.loads((run / "final" / "info.json").read_text())["step"]
    assert json.loads((run / "evaluation.json").read_text())["header"]["model_identity"]["step"] == step
    assert export_run(run, tmp_path / "now", which="final", verify_observations=0).evaluation_note is None
    train_run(dataclasses.replace(config, timesteps=config.timesteps * 2), resume=True)
    later = json.loads((run / "final" / "info.json").read_text())["step"]
    assert later > step
    result = export_run(run, tmp_path / "later", which="final", verify_observations=0)
    assert read_manifest(tmp_path / "later")["evaluation"] is None
    assert result.evaluation_note == (f"{run / 'evaluation.json'} evaluates the final model of step {step}, and the run has "
                                      f"trained further since (the folder now holds step {later}): not in the manifest "
                                      f"(`interestgym evaluate {run} --model final` records its metrics, replacing the run's evaluation.json)")
    report = build_report(run, which_model="final", timeline_users=0, progress=False, log=None)
    assert any(f"evaluated the final model of step {step}; the run has trained further since (step {later})" in n
               for n in report.notes), report.notes


def test_an_evaluation_of_what_the_run_shipped_then_is_not_an_evaluation_of_another_model(dataset, tmp_path):
    """An evaluation of the shipped policy records which model that was: when shipped.json names another one since,
    exporting it leaves the evaluation out saying whose numbers they are (not "trained further")."""
    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run

    run = tmp_path / "run"
    train_run(_config(dataset, run))
    shipped = json.loads((run / "shipped.json").read_text())
    (run / "shipped.json").write_text(json.dumps({**shipped, "policy": "learned", "model": "final"}))
    evaluate_run(run, baselines="ema", n_boot=20, progress=False)  # the shipped policy: the final model, then
    assert json.loads((run / "evaluation.json").read_text())["header"]["model_identity"]["model"] == "final"
    (run / "shipped.json").write_text(json.dumps({**shipped, "policy": "learned", "model": "best"}))
    result = export_run(run, tmp_path / "best", which="best", verify_observations=0)
    assert result.evaluation_note.startswith(f"{run / 'evaluation.json'} evaluates the final model (what the run shipped then), "
                                             "not the best model exported here: not in the manifest")


def test_an_evaluation_of_the_rule_a_run_shipped_then_is_not_carried_by_the_learned_model_it_ships_now(dataset, tmp_path):
    """evaluate (the run ships its rule), then train --resume makes it ship its learned model: export leaves the rule's
    numbers out of the learned model's manifest, and the report says its table is of what the run shipped then.
    (The flip is written into shipped.json here; a resumed run makes it the same way.)"""
    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run
    from interestgym.report.build import build_report
    from interestgym.runtime.manifest import read_manifest

    run = tmp_path / "run"
    train_run(_config(dataset, run))
    shipped = json.loads((run / "shipped.json").read_text())
    rule = {**shipped, "policy": "rule"}
    (run / "shipped.json").write_text(json.dumps(rule))
    evaluate_run(run, baselines="ema", n_boot=20, progress=False)
    assert json.loads((run / "evaluation.json").read_text())["header"]["shipped"]["policy"] == "rule"
    (run / "shipped.json").write_text(json.dumps({**shipped, "policy": "learned", "model": "best"}))
    result = export_run(run, tmp_path / "best", which="best", verify_observations=0)
    assert read_manifest(tmp_path / "best")["evaluation"] is None
    assert result.evaluation_note.startswith(f"{run / 'evaluation.json'} evaluates the shipped rule (what the run shipped then), "
                                             "not the best model exported here: not in the manifest")
    report = build_report(run, timeline_users=0, progress=False, log=None)
    assert any(n.startswith("The Results table evaluated what the run shipped then, its reference rule; it now ships its best "
                            "model (trained further since)") for n in report.notes), report.notes


def test_a_model_folder_changed_since_the_ship_decision_is_refused_where_its_proof_is_used(dataset, tmp_path):
    """shipped.json records the model it validated (step, sha256): another run's best/ copied in, the shipped
    learned policy would carry a proof of another model, so evaluate (shipped) and export refuse it, naming both."""
    import shutil

    from interestgym.evaluation.run import evaluate_run
    from interestgym.export.run import export_run

    a, b = tmp_path / "a", tmp_path / "b"
    train_run(small_train_config(dataset, a, timesteps=128, seed=0))
    train_run(small_train_config(dataset, b, timesteps=256, seed=1))
    decision = json.loads((a / "shipped.json").read_text())
    info = json.loads((a / "best" / "info.json").read_text())
    assert decision["policy"] == "learned"
    assert decision["validated"] == {"model": "best", "step": info["step"], "sha256": info["files"]["model.zip"]}
    export_run(a, tmp_path / "ok", verify_observations=0)  # the folder is what was validated
    shutil.rmtree(a / "best")
    shutil.copytree(b / "best", a / "best")
    other = json.loads((a / "best" / "info.json").read_text())
    expected = (rf"shipped.json: the run ships the best model the decision validated, step {info['step']} .*; {a / 'best'} now "
                rf"holds step {other['step']} .*changed since the decision .*--resume")
    with pytest.raises(ArtifactError, match=expected):
        evaluate_run(a, baselines="ema", n_boot=20, progress=False)
    with pytest.raises(ArtifactError, match=expected):
        export_run(a, tmp_path / "bad", verify_observations=0)
    evaluate_run(a, which_model="best", out=tmp_path / "ev", baselines="ema", n_boot=20, progress=False)  # that model itself


def test_a_transfer_onto_the_same_users_split_again_says_they_are_not_held_out(dataset, tmp_path):
    """The run's own data split again (another split seed): most of its test users trained or selected the policy, so
    the evaluation cautions and drops "untouched" from its two halves; a dataset of other people whose ids happen to
    match (another generator seed) is not flagged."""
    import shutil

    import pandas as pd

    from interestgym.evaluation.run import evaluate_run

    run = tmp_path / "run"
    train_run(_config(dataset, run, timesteps=128))
    again = tmp_path / "again"
    shutil.copytree(dataset, again)
    users = pd.read_parquet(again / "users.parquet")
    users["split"] = users["split"].sample(frac=1.0, random_state=3).to_numpy()  # another split of the same users
    write_users(again, users)
    evaluate_run(run, dataset=again, out=tmp_path / "t", baselines="ema", n_boot=20, progress=False)
    header = json.loads((tmp_path / "t" / "evaluation.json").read_text())["header"]
    original = pd.read_parquet(dataset / "users.parquet")
    seen = set(original.loc[original["split"] != "test", "user_id"].astype(str))
    test_users = users.loc[users["split"] == "test", "user_id"].astype(str)
    expected = int(test_users.isin(seen).sum())
    assert expected > 0
    assert header["transfer_overlap"] == (f"{expected} of the {len(test_users)} test users of {again} are training or validation "
                                          f"users of the run in {dataset.resolve()} (the same id and an identical event): not "
                                          "held out from its training and selection")
    md = (tmp_path / "t" / "evaluation.md").read_text()
    assert f"- caution: {header['transfer_overlap']}" in md and "not used by this run's training or selection" not in md
    verdict = next(line for line in md.splitlines() if line.startswith("- `shipped") and " on ndcg@10: " in line)
    assert verdict.endswith("(paired, over users); optimistic: some of these users trained or selected the run (the caution above)")

    other = tiny_synthetic(tmp_path / "other", users=40, seed=1)  # the same ids, other people
    evaluate_run(run, dataset=other, out=tmp_path / "o", baselines="ema", n_boot=20, progress=False)
    assert json.loads((tmp_path / "o" / "evaluation.json").read_text())["header"]["transfer_overlap"] is None
