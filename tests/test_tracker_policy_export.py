"""A policy whose score weighs a sequence tracker, in production: export (tracker sub-folder), load,
per-user window in the state, and parity with the evaluator on test users."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from agents_fixtures import small_train_config, tiny_tracker
from env_fixtures import make_dataset
from interestgym.agents.train import train_run
from interestgym.envs.replay_data import load_replay_data
from interestgym.envs.vector import evaluate_policy

from interestgym.data.dataset import Dataset
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.export.parity import replay_through_runtime
from interestgym.export.run import export_run
from interestgym.runtime import Event, UserState, load_policy


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fixture dataset, a GRU tracker trained on it, and a short PPO run trained with that tracker
    (its reference forced to the tracker/profile mixture, so that both forms weigh the tracker)."""
    root = tmp_path_factory.mktemp("trkpol")
    data = make_dataset(root / "ds", n_users=24, n_items=40, dim=8)
    seq = root / "seq"
    tiny_tracker(data, seq)
    run = root / "ppo"
    train_run(small_train_config(data, run, reward_baseline="ema_two_profile", sequence=str(seq), tracker_observations=False))
    path = run / "config.json"
    saved = json.loads(path.read_text())
    if not saved["reference"]["name"].endswith("+tracker"):  # the fixture's tuning may prefer weight 0
        saved["reference"] = {"name": "ema_two_profile+tracker",
                              "params": {**saved["reference"]["params"], "tracker_weight": 0.5}}
        path.write_text(json.dumps(saved))
    return data, seq, run


def _evaluated(run: Path, which: str):
    """(dataset, test replay data with the tracker attached, the evaluator's per-point table) for the
    run's rule (``which="rule"``) or its model."""
    from interestgym.agents.run_folder import (
        load_run_choice,
        read_run_config,
        run_reference,
        run_train_config,
    )

    saved = read_run_config(run)
    config = run_train_config(run, saved)
    dataset = Dataset.open(config.dataset)
    data = config.attach_extras(load_replay_data(dataset, None, config.protocol_spec("test")))  # as `evaluate` does
    assert data.point_tracker_z is not None
    policy = run_reference(saved) if which == "rule" else load_run_choice(run, which)
    return dataset, data, evaluate_policy(data, policy, metric=config.reward, progress=False)


@pytest.mark.parametrize("which,serialise", [("rule", "bytes"), ("final", "json")])
def test_a_policy_with_a_tracker_term_replays_through_the_runtime_as_evaluated(trained, tmp_path, which, serialise):
    """Both forms (the mixture rule; the agent whose sixth component moves the weight) export with the
    tracker and reproduce the evaluator's per-point metrics on test users, state stored after every event."""
    _, _, run = trained
    out = tmp_path / "export"
    result = export_run(run, out, which=which)
    assert (out / "tracker" / "tracker.json").is_file() and result.manifest["tracker"]["folder"] == "tracker"
    if which == "final":
        assert result.manifest["policy"]["outputs"]["action"]["shape"] == ["batch", 6]
    dataset, data, reference = _evaluated(run, which)
    policy = load_policy(out)
    assert policy.tracker is not None and policy.new_state().tracker is not None
    got = replay_through_runtime(policy, dataset, data, serialise=serialise)
    assert len(reference.points) > 20
    assert list(got["point_key"]) == list(reference.points["point_key"])
    for metric in ("ndcg@10", "mrr", "hit@10", "auc"):
        # the tracker's ONNX scores differ from torch's in the last float32 bits; no ranking changes here
        np.testing.assert_array_equal(got[metric].to_numpy(), reference.points[metric].to_numpy(), err_msg=metric)


def test_the_agents_weight_changes_per_decision_in_the_runtime(trained, tmp_path):
    """The runtime's tracker weight after a decision is the export's weight moved by the graph's sixth
    output (apply_tracker_change), recomputed here from the graph's own action."""
    from interestgym.core.transition import apply_tracker_change

    data_path, _, run = trained
    export_run(run, tmp_path / "export", which="final")
    policy = load_policy(tmp_path / "export")
    dataset = Dataset.open(data_path)
    emb, _ = dataset.load_embeddings(None)
    item = str(dataset.items["item_id"].iloc[3])
    state = policy.new_state()
    event = Event(ts=1_700_000_000, action="click", item_vector=emb[3], category=str(dataset.items["category"].iloc[3]), item_id=item)
    obs = policy.observe(state, event)
    after = policy.update(state, event)
    change = np.clip(policy.act(obs[None]).astype(np.float64)[:, 5], -1.0, 1.0)
    expected = float(apply_tracker_change(np.array([policy._beta_trk]), change)[0])
    assert after.tracker.weight == expected
    assert after.tracker.window.items.tolist() == [policy.tracker.row[item]]
    assert state.tracker.window.items.tolist() == []  # the input state is not modified


def test_tracker_policy_errors_name_what_is_missing(trained, tmp_path):
    data_path, _, run = trained
    out = tmp_path / "export"
    export_run(run, out, which="rule")
    policy = load_policy(out)
    dataset = Dataset.open(data_path)
    emb, _ = dataset.load_embeddings(None)
    with pytest.raises(InterestGymError, match="item_id"):
        policy.update(policy.new_state(), Event(ts=1, action="click", item_vector=emb[0]))
    no_window = UserState.empty(policy.dim, len(policy.categories), with_slots=True)
    with pytest.raises(InterestGymError, match="new_state"):
        policy.score(no_window, emb[:3], [str(i) for i in dataset.items["item_id"].iloc[:3]])
    with pytest.raises(InterestGymError, match="candidate_ids"):
        policy.score(policy.new_state(), emb[:3], popularity=np.zeros(3))

    # an edited tracker manifest is refused, naming the file
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    doc = json.loads((broken / "tracker" / "tracker.json").read_text())
    doc["window"] = 99
    (broken / "tracker" / "tracker.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"tracker\.json.*changed after export"):
        load_policy(broken)
    # a manifest whose score weighs a tracker it does not carry is refused
    shutil.rmtree(broken)
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "tracker")
    with pytest.raises(ArtifactError, match="tracker"):
        load_policy(broken)


def test_a_reference_that_weighs_a_tracker_without_a_tracker_run_is_refused(trained, tmp_path):
    _, _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["config"]["sequence"] = None
    (copy / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match="config.sequence names none"):
        export_run(copy, tmp_path / "export", which="rule")


def test_a_state_with_a_tracker_window_round_trips_through_bytes_and_json(trained, tmp_path):
    data_path, _, run = trained
    export_run(run, tmp_path / "export", which="rule")
    policy = load_policy(tmp_path / "export")
    dataset = Dataset.open(data_path)
    emb, _ = dataset.load_embeddings(None)
    state = policy.new_state()
    for i in range(9):  # more decisions than the window (6): the oldest fall out
        state = policy.update(state, Event(ts=1_700_000_000 + 60 * i * i, action="click", item_vector=emb[i],
                                           category=str(dataset.items["category"].iloc[i]), item_id=str(dataset.items["item_id"].iloc[i])))
    assert len(state.tracker.window) == 6
    for back in (UserState.from_bytes(state.to_bytes(), dim=policy.dim), UserState.from_json(state.to_json(), dim=policy.dim)):
        assert back == state  # every field, the tracker's window, last time and weight included
        assert back.tracker.window.items.tolist() == state.tracker.window.items.tolist()
        assert (back.tracker.window.last_ts, back.tracker.weight) == (state.tracker.window.last_ts, state.tracker.weight)


@pytest.fixture(scope="module")
def observing(trained, tmp_path_factory):
    """A short PPO run whose agent observes the tracker and the DTW drift (EXTRA_FEATURES) besides FEATURES."""
    data, seq, _ = trained
    run = tmp_path_factory.mktemp("observing") / "ppo"
    train_run(small_train_config(data, run, reward_baseline="ema_two_profile", sequence=str(seq), tracker_observations=True,
                                 dtw_observation=True))
    return data, seq, run


def test_an_agent_that_observes_the_tracker_and_the_drift_sees_them_after_the_features(observing):
    from interestgym.agents.run_folder import load_run_choice

    from interestgym.core.features import EXTRA_FEATURES, N_FEATURES

    _, _, run = observing
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["tracker_observations"] and saved["config"]["dtw_observation"]
    policy = load_run_choice(run, "final")
    assert policy.act(np.zeros((2, N_FEATURES + len(EXTRA_FEATURES)), np.float32)).shape == (2, 6)
    _, data, _ = _evaluated(run, "final")
    assert data.extra_obs == tuple(f.name for f in EXTRA_FEATURES)
    recorded = evaluate_policy(data, load_run_choice(run, "final"), record_features=True, progress=False)
    np.testing.assert_array_equal(recorded.features[:, N_FEATURES:], data.decision_extra_obs)  # decisions in replay order
    assert recorded.feature_names[N_FEATURES:] == data.extra_obs


def test_an_agent_that_observes_the_tracker_and_the_drift_replays_through_the_runtime(observing, tmp_path):
    """The runtime computes the extra observations online (the tracker's running mean from its own
    rankings, its softmax confidence, the DTW drift of the last 2k items) and reproduces the evaluator."""
    _, _, run = observing
    result = export_run(run, tmp_path / "export", which="final")
    assert result.manifest["observation"]["extra"] == ["tracker_metric_ema", "tracker_top1_prob", "tracker_entropy", "dtw_drift"]
    dataset, data, reference = _evaluated(run, "final")
    policy = load_policy(tmp_path / "export")
    assert policy.n_obs == len(result.manifest["observation"]["features"])
    got = replay_through_runtime(policy, dataset, data, serialise="bytes")
    assert list(got["point_key"]) == list(reference.points["point_key"])
    for metric in ("ndcg@10", "mrr", "hit@10", "auc"):
        np.testing.assert_array_equal(got[metric].to_numpy(), reference.points[metric].to_numpy(), err_msg=metric)


def _observing_export(observing, tmp_path):
    """(the loaded export of the observing run's final model, its dataset, the item vectors, the item ids)."""
    data_path, _, run = observing
    export_run(run, tmp_path / "export", which="final")
    dataset = Dataset.open(data_path)
    emb, _ = dataset.load_embeddings(None)
    return load_policy(tmp_path / "export"), dataset, emb, dataset.items["item_id"].astype(str).tolist()


def test_the_runtimes_drift_observation_is_the_dtw_of_the_last_2k_items(observing, tmp_path):
    """Before the 2k-th decision the drift observation is 0; from then on it is the DTW distance of the
    older k item vectors from the newest k (the current one included), scaled by 2 sqrt(k)."""
    from interestgym.core.dtw import DRIFT_WINDOW, dtw_distance

    policy, dataset, emb, ids = _observing_export(observing, tmp_path)
    k = DRIFT_WINDOW
    order = np.random.default_rng(3).permutation(len(ids))[: 2 * k + 3]
    state = policy.new_state()
    for n, i in enumerate(order):
        event = Event(ts=1_700_000_000 + 3600 * n, action="click", item_vector=emb[i], item_id=ids[i],
                      category=str(dataset.items["category"].iloc[i]))
        drift = float(policy.observe(state, event)[-1])
        if n + 1 < 2 * k:
            assert drift == 0.0
        else:
            last = emb[order[n + 1 - 2 * k: n + 1]].astype(np.float64)
            assert drift == pytest.approx(dtw_distance(last[:k], last[k:]) / (2 * np.sqrt(k)), abs=1e-6)
            assert drift > 0.1  # random items: far from each other
        state = policy.update(state, event)
    assert state.drift_window.shape == (2 * k, policy.dim)


def test_the_report_replays_a_run_with_a_tracker_and_extra_observations(observing, tmp_path):
    """`interestgym report` attaches the run's tracker and extras as train and evaluate do (it failed with
    'a scoring with tracker_weight ... needs replay data with a sequence tracker attached')."""
    from interestgym.report.build import build_report

    _, _, run = observing
    build_report(run, out=tmp_path / "report", timeline_users=1, which_model="final", progress=False)
    assert (tmp_path / "report" / "actions.png").is_file()
    text = (tmp_path / "report" / "report.md").read_text()
    # what the agent does with the tracker's weight, and when (by the tracker's recent ranking quality)
    assert "tracker weight" in text and "top third of tracker_metric_ema" in text


def test_the_service_serves_an_agent_that_weighs_and_observes_a_tracker_as_evaluated(observing, tmp_path):
    """`interestgym serve` passes item ids to the runtime (events, rankings, outcomes): replaying the test
    users over HTTP gives the evaluator's metrics at every scoring point."""
    importlib.import_module("fastapi")
    from test_serve import _client, _replay_requests

    from interestgym.serve.service import InterestService, ServeConfig

    data_path, _, run = observing
    export_run(run, tmp_path / "export", which="final")
    dataset, data, reference = _evaluated(run, "final")
    requests = _replay_requests(dataset, data)
    service = InterestService.open(ServeConfig(export=str(tmp_path / "export"), store="memory://", items=str(data_path)))
    got: dict[str, dict] = {}
    with _client(service) as client:
        users = list(requests)
        for k in range(0, len(users), 4):
            response = client.post("/v1/events", json={"events": [e for u in users[k:k + 4] for e in requests[u]]})
            assert response.status_code == 200, response.text
            got.update({r["event_id"]: r for r in response.json()["results"] if r["kind"] == "outcome"})
        ranked = client.post("/v1/rank", json={"user_id": users[0], "candidates": dataset.items["item_id"].astype(str).tolist()[:5]})
        assert ranked.status_code == 200 and len(ranked.json()["ranking"]) == 5
    for metric in ("auc", "mrr", "ndcg@10", "hit@10"):
        served = np.array([got[str(key)]["metrics"][metric] for key in reference.points["point_key"]])
        np.testing.assert_array_equal(served, reference.points[metric].to_numpy(), err_msg=metric)


def test_evaluating_a_run_with_its_own_tracker_lists_its_mixture_once(trained, observing, tmp_path):
    """`interestgym evaluate RUN --sequence TRACKER`: one mixture row of the best rule with that tracker.
    When the run's own tuned `<rule>+tracker` is a row (its reference), evaluate adds no second,
    identical `<rule>+<tracker name>`; otherwise it tunes and adds that mixture."""
    from interestgym.evaluation.run import evaluate_run

    for k, (_, seq, run) in enumerate((trained, observing)):
        evaluate_run(run, out=tmp_path / f"ev{k}", n_boot=20, progress=False, sequence_runs=(seq,))
        doc = json.loads((tmp_path / f"ev{k}" / "evaluation.json").read_text())
        rows = doc["summary"]["policies"]
        mixes = [n for n in rows if n.endswith(("+tracker", "+gru")) and rows[n]["kind"] == "baseline"]
        assert len(mixes) == 1, mixes
        assert "gru" in rows
        tuned = json.loads((run / "baselines.json").read_text())["baselines"]
        if any(n.endswith("+tracker") for n in tuned):  # the run tuned its own mixture: that is the row
            assert mixes[0].endswith("+tracker")


def test_a_decision_on_an_item_the_tracker_does_not_know_leaves_its_window(trained, tmp_path):
    """An item added to a service after the export has a vector but no tracker row: the profiles move,
    the tracker's window stays (as TrackerRuntime.update treats an item outside its catalogue)."""
    data_path, _, run = trained
    export_run(run, tmp_path / "export", which="rule")
    policy = load_policy(tmp_path / "export")
    emb, _ = Dataset.open(data_path).load_embeddings(None)
    state = policy.update(policy.new_state(), Event(ts=10, action="click", item_vector=emb[0], item_id=policy.item_ids[0]))
    after = policy.update(state, Event(ts=20, action="click", item_vector=emb[1], item_id="added-later"))
    assert after.counter("n_decisions") == 2 and after.tracker.window.items.tolist() == state.tracker.window.items.tolist()


def test_a_new_users_first_decision_on_an_unknown_item_under_an_observing_policy(observing, tmp_path):
    """The tracker has no state for an empty window: its confidence is taken as a uniform softmax."""
    data_path, _, run = observing
    export_run(run, tmp_path / "export", which="final")
    policy = load_policy(tmp_path / "export")
    emb, _ = Dataset.open(data_path).load_embeddings(None)
    event = Event(ts=10, action="click", item_vector=emb[0], item_id="added-later")
    extra = dict(zip(policy.extra_obs, policy.observe(policy.new_state(), event)[-len(policy.extra_obs):]))
    assert extra["tracker_top1_prob"] == np.float32(1.0 / len(policy.tracker.items))
    assert extra["tracker_entropy"] == np.float32(1.0)
    after = policy.update(policy.new_state(), event)
    assert after.counter("n_decisions") == 1 and len(after.tracker.window) == 0


def test_a_windows_cached_state_belongs_to_the_tracker_that_computed_it(trained, tmp_path):
    """Two trackers reading one window (an A/B test, a re-export): each scores with its own state."""
    from agents_fixtures import tiny_tracker

    from interestgym.export.tracker import export_tracker
    from interestgym.runtime.tracker import load_tracker_runtime

    data_path, seq, _ = trained
    other = tiny_tracker(data_path, tmp_path / "sasrec", model="sasrec")
    a = load_tracker_runtime(export_tracker(seq, tmp_path / "a").out)
    b = load_tracker_runtime(export_tracker(other, tmp_path / "b").out)
    window = a.new_window()
    for t, item in enumerate(a.item_ids[:4]):
        window = a.update(window, item, "click", 100 * t)
    ids = a.item_ids[5:10]
    scored_by_a = a.score(window, ids)
    fresh = type(window)(window.items.copy(), window.actions.copy(), window.gaps.copy(), window.last_ts)
    np.testing.assert_array_equal(b.score(window, ids), b.score(fresh, ids))
    assert not np.array_equal(b.score(window, ids), scored_by_a)


def test_export_refuses_a_run_whose_tracker_was_retrained_after_it(trained, tmp_path):
    _, _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["protocol"]["train"]["tracker"]["sha256"] = {"model.pt": "0" * 64}  # the weights it was trained with
    (copy / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ArtifactError, match=r"config.json: the run was trained with the tracker .* retrained after this run"):
        export_run(copy, tmp_path / "export", which="rule")


def test_states_that_do_not_fit_the_policys_tracker_are_refused_naming_the_field(observing, tmp_path):
    from interestgym.runtime import StateFormatError

    data_path, _, run = observing
    export_run(run, tmp_path / "export", which="final")
    policy = load_policy(tmp_path / "export")
    emb, _ = Dataset.open(data_path).load_embeddings(None)
    state = policy.new_state()
    for i in range(3):
        state = policy.update(state, Event(ts=10 * i, action="click", item_vector=emb[i], item_id=policy.item_ids[i]))
    event = Event(ts=100, action="click", item_vector=emb[5], item_id=policy.item_ids[5])

    def edited(edit):
        doc = json.loads(state.to_json())
        edit(doc["fields"])
        return json.dumps(doc)

    def window_item(f):  # an item row past the catalogue (a state stored under another export)
        f["tracker_window"]["data"][0] = 10**6

    def window_action(f):  # an action code past the tokens
        f["tracker_window"]["data"][len(f["tracker_window"]["data"]) // 3] = 99

    def drift_nan(f):
        f["drift_window"]["data"][0] = float("nan")

    with pytest.raises(InterestGymError, match=r"'tracker_window': field 'items' has values outside \[0, "):
        policy.update(UserState.from_json(edited(window_item)), event)
    with pytest.raises(StateFormatError, match=r"'tracker_window': field 'actions' has values outside \[0, \d+\) \(found \d+\.\.99\)"):
        UserState.from_json(edited(window_action))
    with pytest.raises(StateFormatError, match=r"'drift_window' holds a non-finite value"):
        UserState.from_json(edited(drift_nan))
    # a plain state (no tracker, no drift) is written as version 1: a reader from before still reads it
    assert json.loads(UserState.empty(4).to_json())["meta"]["state_version"] == 1
    assert json.loads(state.to_json())["meta"]["state_version"] == 2


def test_a_graph_with_a_tracker_output_but_no_tracker_is_refused(trained, tmp_path):
    from interestgym.runtime.manifest import (
        read_manifest,
        seal_manifest,
        write_manifest,
    )

    _, _, run = trained
    out = tmp_path / "export"
    export_run(run, out, which="final")
    manifest = read_manifest(out)
    manifest.pop("tracker")
    manifest["scoring"]["config"]["tracker_weight"] = 0.0
    shutil.rmtree(out / "tracker")
    (out / "manifest.json").unlink()  # re-sealed below over the remaining files, as an edited export would be
    write_manifest(out, seal_manifest(out, {k: v for k, v in manifest.items() if k not in ("files", "manifest_sha256")}))
    with pytest.raises(ArtifactError, match=r"policy.onnx: the graph's action has 6 components.*no 'tracker' section"):
        load_policy(out)


def test_a_tracker_is_refused_on_another_user_split_or_before_it_finished(trained, tmp_path):
    """A tracker trained on one split's training users has seen another split's test users: using it
    there is refused. A tracker still training (no summary yet) cannot be trained with or exported."""
    from interestgym.envs.replay_data import ProtocolSpec

    data_path, seq, _ = trained
    other = tmp_path / "resplit"
    shutil.copytree(data_path, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["split"] = {**manifest["split"], "seed": manifest["split"]["seed"] + 1}  # as `prepare --split-seed 1` records it
    (other / "manifest.json").write_text(json.dumps(manifest))
    from interestgym.agents.sequence.scoring import load_tracker

    with pytest.raises(ArtifactError, match=rf"sequence.json: the tracker was trained on the training users of "
                                            rf"{re.escape(str(data_path))}, split by user.* but .*resplit is split by user"):
        load_tracker(seq).score(load_replay_data(other, None, ProtocolSpec(split="test")))

    unfinished = tmp_path / "seq"
    shutil.copytree(seq, unfinished)
    doc = json.loads((unfinished / "sequence.json").read_text())
    doc.pop("summary")
    (unfinished / "sequence.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"no summary: the tracker has not finished training"):
        train_run(small_train_config(data_path, tmp_path / "ppo", sequence=str(unfinished)))
    from interestgym.export.tracker import export_tracker

    with pytest.raises(ArtifactError, match=r"an export needs a finished tracker"):
        export_tracker(unfinished, tmp_path / "export")


def test_a_state_table_moves_the_tracker_and_drift_windows_as_the_one_user_path(observing, tmp_path):
    """A policy that scores with the tracker and observes it and the drift, its users held in a StateTable
    (update_table / record_outcomes_table / score_table): every user's state equals the one-user path's, windows
    and weights included, after batches of random users (an event without item_id in a batch is refused, naming it)."""
    from interestgym.runtime import StateTable

    policy, dataset, emb, ids = _observing_export(observing, tmp_path)
    cats = dataset.items["category"].astype(str).tolist()
    rng = np.random.default_rng(7)
    n = 5
    states = [policy.new_state() for _ in range(n)]
    table = StateTable.from_states(states)
    for step in range(25):
        rows = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
        items = rng.integers(0, len(ids), len(rows))
        events = [Event(ts=1_700_000_000 + 600 * step, action="click", item_vector=emb[i], item_id=ids[i], category=cats[i])
                  for i in items.tolist()]
        policy.update_table(table, rows, events)
        for u, e in zip(rows.tolist(), events):
            states[u] = policy.update(states[u], e)
        shown = rng.integers(0, len(ids), (n, 4))
        labels = np.zeros((n, 4), dtype=int)
        labels[:, 0] = 1
        kw = {"candidate_ids": [[ids[i] for i in row] for row in shown.tolist()],
                  "candidate_categories": [[cats[i] for i in row] for row in shown.tolist()]}
        np.testing.assert_array_equal(policy.score_table(table, np.arange(n), emb[shown], **kw),
                                      policy.score_batch(states, emb[shown], **kw))
        policy.record_outcomes_table(table, np.arange(n), emb[shown], labels, **kw)
        for u in range(n):
            states[u], _ = policy.record_outcome(states[u], emb[shown[u]], labels[u], candidate_ids=kw["candidate_ids"][u],
                                                 candidate_categories=kw["candidate_categories"][u])
        assert table.states() == states
    assert all(len(s.tracker.window) > 3 and len(s.drift_window) > 3 for s in states)
    before = table.states()
    with pytest.raises(InterestGymError, match=r"an event without item_id: the policy scores with a sequence tracker"):
        policy.update_table(table, [0, 1], [Event(ts=1_800_000_000, action="click", item_vector=emb[0], item_id=ids[0]),
                                            Event(ts=1_800_000_000, action="click", item_vector=emb[1])])
    assert table.states() == before


def test_the_stores_contract_names_the_trackers_catalogue_and_window(trained, tmp_path):
    """A review's find: a tracker window keeps rows of its tracker's catalogue, and the store's contract did not record
    which: an export whose catalogue is in another order (a retrain on a refreshed dataset) passed the swap check and read
    every stored window as other items. The contract now records the catalogue's digest and the window's length; a store
    written before it says nothing of them and is not refused for it."""
    import hashlib

    from interestgym.runtime import load_policy
    from interestgym.serve.service import contract_differences, state_contract

    _, _, run = trained
    export_run(run, tmp_path / "export", which="final")
    policy = load_policy(tmp_path / "export")
    contract = state_contract(policy)
    ids = json.loads((tmp_path / "export" / "tracker" / "item_ids.json").read_text())
    assert contract["tracker"] == {"items_sha256": hashlib.sha256(json.dumps(ids, ensure_ascii=False).encode()).hexdigest(),
                                   "window": policy.tracker.window}
    assert contract_differences(contract, contract) == []
    reordered = {**contract, "tracker": {**contract["tracker"], "items_sha256": "0" * 64}}
    (diff,) = contract_differences(contract, reordered)
    assert diff.startswith("sequence tracker catalogue sha256 0000000000000000... window") and "rows of its tracker's catalogue" in diff
    assert "window 7 differs" in contract_differences(contract, {**contract, "tracker": {**contract["tracker"], "window": 7}})[0]
    assert contract_differences(contract, {**contract, "tracker": None}) == ["no sequence tracker; the stored states hold its windows"]
    assert contract_differences({**contract, "tracker": None}, contract) == ["a sequence tracker; the stored states have no window for it"]
    assert contract_differences({k: v for k, v in contract.items() if k != "tracker"}, reordered) == []  # an older store
