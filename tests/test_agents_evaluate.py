"""`interestgym evaluate`: protocol header, per-policy CIs, paired differences, oracle and JSON contents."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import tiny_synthetic
from interestgym.agents.train import TrainConfig, train_run

from interestgym.cli import cli
from interestgym.data.dataset import Dataset
from interestgym.evaluation.run import oracle_point_metrics

BASELINES = "ema,static,mean_history,popularity"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = tiny_synthetic(root / "tiny")
    config = TrainConfig(dataset=str(data), run_dir=str(root / "run"), timesteps=128, n_envs=4, n_steps=16,
                         batch_size=32, n_epochs=2, eval_every=64, checkpoint_every=0, eval_users=None,
                         progress_bar=False, reward_baseline="ema", net_arch=[16, 16])
    train_run(config)
    return root / "run", data


def test_evaluate_run_writes_tables_and_paired_differences(run):
    run_dir, data = run
    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--model", "best", "--baselines", BASELINES, "--n-boot", "500"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output
    for word in ("split: test", "encoder: topic16", "candidates: logged impressions", "reference:", "ppo", "oracle",
                 "Paired difference", "tracking_error"):
        assert word in out, word

    doc = json.loads((run_dir / "evaluation.json").read_text())
    md = (run_dir / "evaluation.md").read_text()
    assert md.startswith("# Evaluation")
    # every tuned rule's setting is listed, as evaluation.json's tuned baselines record it
    from interestgym.core.rules import params_text

    assert f"- ema: {params_text(doc['tuned_baselines']['ema']['params'])}\n" in md.split("Tuned on validation users:")[1]
    # the header's tuned_on is the grid search's users (a run's shipping decision uses every validation user)
    assert f"- tuned_on: {doc['header']['tuned_on']} (the rules' grid search)\n" in md
    header, summary = doc["header"], doc["summary"]
    assert header["split"] == "test" and header["users"] == len(doc["users"]) > 0
    # the bootstrap says its seed (every table's is 0: an evaluation run again gives the same CIs)
    assert header["bootstrap"] == {"resamples": 500, "unit": "user", "confidence": 0.95, "seed": 0}
    assert "- bootstrap: 500 resamples of users (seed 0), 95% percentile intervals\n" in md
    names = set(summary["policies"])
    assert names == {"ppo", "oracle", *BASELINES.split(",")}
    # the reference is the non-oracle baseline with the best validation score
    valid = {n: doc["tuned_baselines"][n]["valid_score"] for n in BASELINES.split(",")}
    assert summary["reference"] == header["reference"] == max(valid, key=valid.get)

    # means, paired differences and oracle fractions agree with the stored per-user values
    ref = summary["reference"]
    per_user = doc["per_user"]
    for name in ("ppo", "ema", "oracle"):
        values = np.array(per_user[name]["ndcg@10"], dtype=float)
        entry = summary["policies"][name]
        assert entry["metrics"]["ndcg@10"]["mean"] == pytest.approx(np.nanmean(values))
        assert entry["metrics"]["ndcg@10"]["lo"] <= entry["metrics"]["ndcg@10"]["mean"] <= entry["metrics"]["ndcg@10"]["hi"]
        if name != ref:
            diff = values - np.array(per_user[ref]["ndcg@10"], dtype=float)
            assert entry["diff_vs_reference"]["ndcg@10"]["mean"] == pytest.approx(np.nanmean(diff))
        oracle_mean = np.nanmean(np.array(per_user["oracle"]["ndcg@10"], dtype=float))
        assert entry["fraction_of_oracle"]["ndcg@10"] == pytest.approx(np.nanmean(values) / oracle_mean)
    assert "tracking_error" in per_user["ppo"] and "tracking_error" not in per_user["oracle"]
    by_type = summary["by_user_type"]
    assert sum(by_type["users"].values()) == len(doc["users"])
    import pandas as pd

    types = pd.read_parquet(data / "events.parquet").drop_duplicates("user_id").set_index("user_id")["user_type"]
    t0 = next(iter(by_type["users"]))
    mask = types.reindex(doc["users"]).to_numpy() == t0
    assert by_type["policies"]["ema"][t0] == pytest.approx(np.nanmean(np.array(per_user["ema"]["ndcg@10"], dtype=float)[mask]))
    errs = np.array(per_user["static"]["tracking_error"], dtype=float)
    assert np.all((errs >= 0) & (errs <= 1))
    # beside it, the weight each policy's score puts on the profiles it reads, 1 - p: popularity ranks with
    # p = 1 (its profiles never enter its score), static with p = 0, the learned policy in between
    weight = {n: np.array(per_user[n]["profile_weight"], dtype=float) for n in ("popularity", "static", "ppo")}
    assert np.all(weight["popularity"] == 0.0) and np.all(weight["static"] == 1.0)
    assert summary["policies"]["popularity"]["extra"]["profile_weight"]["mean"] == 0.0
    assert np.all((weight["ppo"] >= 0) & (weight["ppo"] <= 1))


def test_oracle_ranks_by_the_true_topic_interest(run):
    _, data = run
    ds = Dataset.open(data)
    rd = TrainConfig(dataset=str(data), run_dir="").replay_data("test")
    topics = ds.manifest["synthetic"]["topics"]
    item_topic = np.array([topics.index(t) for t in ds.items["category"]])
    users, m = oracle_point_metrics(rd, ds.truth, item_topic, ["auc"])
    # independent loop over scoring points
    point_decision = np.repeat(np.arange(rd.n_decisions), rd.decision_point_end - rd.decision_point_start)
    for p in range(0, rd.n_points, 7):
        cand = rd.point_candidates[rd.point_offsets[p]:rd.point_offsets[p + 1]]
        lab = rd.point_labels[rd.point_offsets[p]:rd.point_offsets[p + 1]]
        theta = ds.truth[rd.decision_event_row[point_decision[p]]]
        s = theta[item_topic[cand]]
        pos, neg = s[lab == 1], s[lab == 0]
        auc = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
        assert m["auc"][p] == pytest.approx(auc)
    assert len(users) == rd.n_points


def test_evaluate_a_dataset_needs_out_and_compares_baselines(run, tmp_path):
    _, data = run
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(data), "--baselines", "ema,static", "--n-boot", "200"])
    assert result.exit_code != 0 and "--out" in str(result.exception or result.output)
    result = runner.invoke(cli, ["evaluate", str(data), "--baselines", "ema,static", "--n-boot", "200", "--out", str(tmp_path / "o")],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert set(doc["summary"]["policies"]) == {"ema", "static", "oracle"}
    result = runner.invoke(cli, ["evaluate", str(data), "--baselines", "ema,static", "--n-boot", "200", "--out", str(tmp_path / "o"),
                                 "--reference", "static"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert doc["summary"]["reference"] == "static" and "chosen with --reference" in result.output
    assert doc["summary"]["policies"]["ema"]["diff_vs_reference"]["ndcg@10"]["mean"] == pytest.approx(
        np.nanmean(np.array(doc["per_user"]["ema"]["ndcg@10"], float) - np.array(doc["per_user"]["static"]["ndcg@10"], float)))


def test_a_learned_row_as_reference_is_refused_saying_why(run, tmp_path):
    run_dir, _ = run
    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--baselines", "ema", "--n-boot", "50", "--out", str(tmp_path / "o"),
                                      "--model", "best", "--reference", "ppo"])
    assert result.exit_code != 0
    message = str(result.exception or "") + result.output
    assert "--reference 'ppo': expected best or one of the evaluated rules (" in message
    assert "'ppo' is a learned row" in message and "paired_bootstrap_diff" in message


def test_the_two_user_groups_partition_the_evaluated_users(run):
    """The halves' paired differences are those of a split of the same users: their user counts add
    up and their means, weighted by users, give the overall paired mean."""
    run_dir, _ = run
    doc = json.loads((run_dir / "evaluation.json").read_text())
    overall = doc["summary"]["policies"]["ppo"]["diff_vs_reference"]["ndcg@10"]
    halves = doc["summary"]["user_groups"]["policies"]["ppo"].values()
    assert sum(h["n"] for h in halves) == overall["n"] == len(doc["users"])
    assert sum(h["mean"] * h["n"] for h in halves) / overall["n"] == pytest.approx(overall["mean"], abs=1e-12)
    # the halves are the documented ones, crc32(user_id) % 2, each the paired mean over its own users
    import zlib

    users = [str(u) for u in doc["users"]]
    parity = np.array([zlib.crc32(u.encode("utf-8")) % 2 for u in users])
    gain = np.array(doc["per_user"]["ppo"]["ndcg@10"]) - np.array(doc["per_user"][doc["summary"]["reference"]]["ndcg@10"])
    groups = doc["summary"]["user_groups"]["policies"]["ppo"]
    for g in (0, 1):
        assert groups[f"group {g}"]["n"] == int((parity == g).sum())
        assert groups[f"group {g}"]["mean"] == pytest.approx(float(gain[parity == g].mean()), abs=1e-12)


def test_no_progress_reaches_the_evaluation(run, tmp_path, monkeypatch):
    """--no-progress turns the bars and log lines off (progress=False); by default they follow the
    terminal (None: a bar on a terminal, log lines otherwise)."""
    import interestgym.evaluation.run as evaluation_run

    seen = []
    monkeypatch.setattr(evaluation_run, "evaluate_run", lambda *a, **k: seen.append(k["progress"]) or "ok")
    _, data = run
    args = ["evaluate", str(data), "--out", str(tmp_path / "o")]
    for extra in ([], ["--no-progress"], ["--progress"]):
        result = CliRunner().invoke(cli, [*args, *extra], catch_exceptions=False)
        assert result.exit_code == 0 and result.output.strip() == "ok"
    assert seen == [None, False, None]


def test_the_header_names_the_reference_and_a_changed_protocol(run, tmp_path):
    """The reference's tuned parameters are in the header; evaluating a run under another protocol than it was
    trained with says that its policy keeps what it was tuned with while the baselines are tuned again."""
    from interestgym.evaluation.run import evaluate_run

    run_dir, _data = run
    evaluate_run(run_dir, out=tmp_path / "same", baselines=BASELINES, n_boot=20, progress=False)
    doc = json.loads((tmp_path / "same" / "evaluation.json").read_text())
    ref = doc["header"]["reference"]
    params = doc["tuned_baselines"][ref]["params"]
    assert doc["header"]["reference_params"] == (", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                                             for k, v in params.items()) or None)
    assert doc["header"]["protocol_changed"] is None
    text = evaluate_run(run_dir, out=tmp_path / "other", baselines=BASELINES, n_boot=20, progress=False, seed=7)
    assert "- note: this evaluation's protocol differs from the run's (protocol_seed 0 -> 7)" in text
    assert "note: this evaluation's protocol differs" in (tmp_path / "other" / "evaluation.md").read_text()


def test_the_selection_metric_does_not_change_what_the_learned_policy_observes(run, tmp_path):
    """--select-metric mrr picks the reference by MRR; the learned policy still replays with the running means of the
    metric it was trained on (its reward), so its per-user nDCG@10 is the default evaluation's, value for value; the
    selection metric is measured too (first_click_rr is not among the default metrics)."""
    run_dir, _ = run
    docs = {}
    for name, extra in (("default", []), ("mrr", ["--select-metric", "mrr"]), ("fcrr", ["--select-metric", "first_click_rr"])):
        result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--model", "best", "--baselines", BASELINES, "--n-boot", "50",
                                          "--out", str(tmp_path / name), *extra], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        docs[name] = json.loads((tmp_path / name / "evaluation.json").read_text())
    for name in ("mrr", "fcrr"):
        assert docs[name]["users"] == docs["default"]["users"]
        for metric in ("ndcg@10", "auc", "mrr"):
            np.testing.assert_array_equal(np.array(docs[name]["per_user"]["ppo"][metric], dtype=float),
                                          np.array(docs["default"]["per_user"]["ppo"][metric], dtype=float))
    assert docs["fcrr"]["header"]["selection_metric"] == "first_click_rr"
    assert "first_click_rr" in docs["fcrr"]["per_user"]["ppo"]


def test_a_replay_observes_its_metric_and_measures_the_others_asked(run, monkeypatch, tmp_path):
    """evaluate_policy(metric=m, also=(s,)): the running means the policy observes are of m (a policy acting on them
    acts as under metric=m alone), and s is measured at every point as under metric=s. evaluate --select-metric
    replays every policy with the run's reward as m (what the policy was trained to observe)."""
    from interestgym.envs import vector
    from interestgym.envs.vector import evaluate_policy

    from interestgym.core.features import FEATURE_NAMES

    run_dir, data = run
    column = FEATURE_NAMES.index("reward_ema")

    class Reactive:  # a_L follows the observed running reward: other running means, other actions
        name, scoring = "reactive", None

        def act(self, obs):
            out = np.zeros((len(obs), 4), dtype=np.float32)
            out[:, 0] = np.tanh(20 * (obs[:, column] - 0.5))
            return out

    own = evaluate_policy(data, Reactive(), metric="ndcg@10", progress=False)
    other = evaluate_policy(data, Reactive(), metric="mrr", progress=False)
    both = evaluate_policy(data, Reactive(), metric="ndcg@10", also=("first_click_rr",), progress=False)
    assert not np.array_equal(own.points["ndcg@10"], other.points["ndcg@10"])  # the running means do steer it
    np.testing.assert_array_equal(both.points["ndcg@10"], own.points["ndcg@10"])


    class Steady(Reactive):  # the same actions whatever it observes: the metric asked cannot change them
        def act(self, obs):
            return np.full((len(obs), 4), 0.3, dtype=np.float32)

    measured = evaluate_policy(data, Steady(), metric="ndcg@10", also=("first_click_rr",), progress=False)
    direct = evaluate_policy(data, Steady(), metric="first_click_rr", progress=False)
    assert measured.points["first_click_rr"].notna().any()
    np.testing.assert_array_equal(measured.points["first_click_rr"].to_numpy(), direct.points["first_click_rr"].to_numpy())

    seen = []
    original = vector.evaluate_policy

    def spy(*args, **kwargs):
        seen.append((kwargs.get("metric"), tuple(kwargs.get("also", ()))))
        return original(*args, **kwargs)

    monkeypatch.setattr(vector, "evaluate_policy", spy)
    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--baselines", BASELINES, "--n-boot", "20", "--out",
                                      str(tmp_path / "m"), "--select-metric", "mrr"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {("ndcg@10", ("mrr",))}


def test_the_header_states_the_users_split_and_a_reference_picked_among_a_subset(run, tmp_path):
    """The protocol names how the users were split (the dataset's manifest), and a reference picked among --baselines
    says so, naming the run's own reference when the subset leaves it out."""
    run_dir, data = run
    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--baselines", "static,popularity", "--n-boot", "20", "--out",
                                      str(tmp_path / "sub")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "sub" / "evaluation.json").read_text())
    split = json.loads((data / "manifest.json").read_text())["split"]
    assert split["fractions"] == {"train": 0.5, "valid": 0.25, "test": 0.25} and split["seed"] == 0
    assert doc["header"]["users_split"] == "50/25/25 % train/valid/test by user, seed 0"
    assert "- users_split: 50/25/25 % train/valid/test by user, seed 0" in (tmp_path / "sub" / "evaluation.md").read_text()
    assert doc["summary"]["reference_reason"] == ("the best tuned baseline among --baselines static,popularity on validation "
                                                  "users (the run's own reference rule, `ema`, is not among them)")


def test_a_row_ahead_of_the_reference_is_said_with_the_learned_policys_distance_to_it():
    """A sequence tracker far ahead of every rule: the verdicts name it as the best row and say that the learned policy,
    which beats the rules, trails it (paired over the same users); no line when the reference leads or a shipped rule
    only ties it."""
    from interestgym.evaluation.run import leading_row
    from interestgym.evaluation.tables import PolicyScores, leader_lines, summarise

    users = np.array(["u1", "u2", "u3", "u4"])

    def row(name, kind, values):
        return PolicyScores(name=name, kind=kind, users=users, per_user={"ndcg@10": np.array(values, dtype=float)}, params={})

    rule, ppo, gru = (row("ema", "baseline", [0.4, 0.5, 0.6, 0.5]), row("ppo", "learned", [0.45, 0.55, 0.65, 0.55]),
                      row("gru", "sequence", [0.8, 0.9, 1.0, 0.9]))
    results = [ppo, rule, gru]
    summary = summarise(results, ["ndcg@10"], reference="ema", n_boot=200, seed=0)
    summary["leader"] = lead = leading_row(results, "ema", "ndcg@10", n_boot=200)
    assert (lead["name"], lead["kind"]) == ("gru", "sequence") and lead["mean"] == pytest.approx(0.9)
    assert lead["behind"]["ppo"]["mean"] == pytest.approx(-0.35) and lead["behind"]["ppo"]["hi"] < 0
    lines = leader_lines(summary, "ndcg@10")
    assert lines[0] == "- the best row on ndcg@10 is `gru` (sequence), 0.9000: +0.4000 [+0.4000, +0.4000] over `ema`"
    assert lines[1] == "- `ppo` trails `gru` on ndcg@10: -0.3500 [-0.3500, -0.3500] (paired, over users)"
    assert leading_row([ppo, rule], "ppo", "ndcg@10", n_boot=50) is None  # the reference leads
    shipped = row("shipped:ema", "learned", [0.4, 0.5, 0.6, 0.5])
    assert leading_row([shipped, rule], "ema", "ndcg@10", n_boot=50) is None  # a tie is not a lead


def test_the_learned_row_is_measured_against_the_rule_its_run_shipped_over_when_that_is_not_the_reference():
    """A run trained on `mine` (its shipping decision compared with it on validation users) and evaluated where `ema`
    is the best tuned rule: each learned row's paired difference to `mine` on these users is a verdict of its own; no
    such line for a run that ships its rule, or whose rule is the reference."""
    from interestgym.evaluation.run import _markdown, against_run_rule
    from interestgym.evaluation.tables import PolicyScores, summarise

    users = np.array(["u1", "u2", "u3", "u4"])

    def row(name, kind, values):
        return PolicyScores(name=name, kind=kind, users=users, per_user={"ndcg@10": np.array(values, dtype=float)}, params={})

    ema, mine, ppo = (row("ema", "baseline", [0.5, 0.6, 0.5, 0.6]), row("mine", "baseline", [0.4, 0.6, 0.5, 0.5]),
                      row("ppo", "learned", [0.5, 0.7, 0.6, 0.6]))
    shipped = {"policy": "learned", "rule": {"name": "mine", "params": {}}, "reason": "it gained on validation"}
    got = against_run_rule([ppo, ema, mine], shipped, "ema", "ndcg@10", n_boot=200)
    assert got["rule"] == "mine" and list(got["policies"]) == ["ppo"]
    assert got["policies"]["ppo"]["mean"] == pytest.approx(np.mean([0.1, 0.1, 0.1, 0.1]))  # ppo - mine, user by user
    summary = summarise([ppo, ema, mine], ["ndcg@10"], reference="ema", n_boot=200, seed=0)
    summary["vs_run_rule"] = got
    text = _markdown({"bootstrap": {"resamples": 200}, "shipped": shipped}, summary, ["ppo", "ema", "mine"], "ndcg@10", {})
    assert ("- `ppo` beats `mine`, the rule its run was trained on and shipped over (not the table's reference), here on "
            "ndcg@10: +0.1000 [+0.1000, +0.1000] (paired, over users)") in text
    header = {"bootstrap": {"resamples": 200}, "shipped": shipped, "transfer_overlap": "3 of the 4 test users ..."}
    assert ("(paired, over users); optimistic: some of these users trained or selected the run (the caution above)"
            in next(line for line in _markdown(header, summary, ["ppo", "ema", "mine"], "ndcg@10", {}).splitlines()
                    if "shipped over" in line))
    assert against_run_rule([ppo, ema, mine], {**shipped, "policy": "rule"}, "ema", "ndcg@10", n_boot=50) is None
    assert against_run_rule([ppo, ema, mine], shipped, "mine", "ndcg@10", n_boot=50) is None  # the reference's lines say it
    assert against_run_rule([ppo, ema], shipped, "ema", "ndcg@10", n_boot=50) is None  # no row of it here


def test_a_run_scored_on_other_embeddings_is_cautioned_up_front(run, tmp_path):
    """`evaluate RUN --embeddings OTHER`: the policy learnt on other vectors, so the protocol's cautions say so at the
    top (it was only a note under the verdicts); the run's own embeddings give no such caution. A copy of the run and
    its dataset, so the fixture's dataset keeps its single embedding."""
    import shutil

    from interestgym.evaluation.run import evaluate_run

    run_dir, data = run
    data_copy, run_copy = tmp_path / "data", tmp_path / "run"
    shutil.copytree(data, data_copy)
    shutil.copytree(run_dir, run_copy)
    saved = json.loads((run_copy / "config.json").read_text())
    saved["config"]["dataset"] = str(data_copy)
    (run_copy / "config.json").write_text(json.dumps(saved))
    assert main_ok(["encode", str(data_copy), "--encoder", "hashing", "--dim", "16", "--name", "words"])
    text = evaluate_run(run_copy, out=tmp_path / "other", baselines=BASELINES, n_boot=20, progress=False, embeddings="words")
    header = json.loads((tmp_path / "other" / "evaluation.json").read_text())["header"]
    assert header["embeddings_changed"] == ("the run's policy learnt on other item vectors than it is scored with here "
                                            "(embeddings 'topic16' -> 'words'): a transfer to another encoder, not the run's "
                                            "own result")
    assert f"- caution: {header['embeddings_changed']}" in text.split("Mean over users")[0]  # among the protocol's lines
    evaluate_run(run_copy, out=tmp_path / "same", baselines=BASELINES, n_boot=20, progress=False, embeddings="topic16")
    assert json.loads((tmp_path / "same" / "evaluation.json").read_text())["header"]["embeddings_changed"] is None


def main_ok(argv: list[str]) -> bool:
    from interestgym.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        return not exc.code
    return True


def test_a_run_stopped_before_its_ship_decision_is_evaluated_with_a_note(run, tmp_path, capsys):
    """A review's find: a run killed before it wrote shipped.json was evaluated by its best model without a word, where
    the rule may have shipped; the header said `model: best` only. A note now says the model is unproven."""
    import shutil

    from interestgym.evaluation.run import evaluate_run

    run_dir, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    evaluate_run(copy, out=tmp_path / "e1", baselines="ema", n_boot=20, progress=False)
    assert "has no ship decision" not in capsys.readouterr().err
    (copy / "shipped.json").unlink()
    evaluate_run(copy, out=tmp_path / "e2", baselines="ema", n_boot=20, progress=False)
    err = capsys.readouterr().err
    assert (f"note: {copy} has no ship decision (shipped.json missing: the run stopped before making it, or is from before "
            "ship decisions); this evaluates its best model, which validation has not proven against the rule") in err, err
    assert json.loads((tmp_path / "e2" / "evaluation.json").read_text())["header"]["model"] == "best"
