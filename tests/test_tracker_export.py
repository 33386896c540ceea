"""A sequence tracker exported for production: ONNX + item table + manifest, run by numpy + onnxruntime.

Replaying the test users' events through the runtime reproduces the replay's scores (to 1e-5) and
metrics (exactly); the window state survives its codec; a damaged export is refused; no torch is
imported at serving time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from env_fixtures import make_dataset
from interestgym.agents.sequence.config import SequenceConfig
from interestgym.agents.sequence.scoring import load_tracker, score_replay
from interestgym.agents.sequence.train import train_sequence
from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

from interestgym.core.metrics import ranking_metrics
from interestgym.data.dataset import Dataset
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.export.tracker import export_tracker
from interestgym.runtime.tracker import TrackerWindow, load_tracker_runtime


@pytest.fixture(scope="module", params=["sasrec", "gru"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"trk-{request.param}")
    data = make_dataset(root / "ds", n_users=24, n_items=40, dim=8)
    run = root / "run"
    config = SequenceConfig(dataset=str(data), run_dir=str(run), model=request.param, window=6, hidden=16, max_epochs=2,
                            batch_size=16, n_negatives=15, progress_bar=False)
    train_sequence(config, log=lambda _: None)
    result = export_tracker(run, root / "export")
    return data, run, result


def test_the_runtime_replays_test_users_as_the_evaluator_scores_them(exported):
    data, run, result = exported
    assert result.max_abs_state_diff <= 1e-4
    test = load_replay_data(data, None, ProtocolSpec(split="test"))
    tracker = load_tracker(run)
    tracker.bind(test)
    expected = score_replay(test, tracker.model, keep_scores=True)
    runtime = load_tracker_runtime(result.out)
    events = Dataset.open(data).events
    decision_of_row = {int(r): d for d, r in enumerate(test.decision_event_row)}
    item_ids = runtime.item_ids
    got_scores = np.full_like(expected.scores, np.nan)
    n_decisions = 0
    for u, user in enumerate(test.user_ids):
        window = runtime.new_window()
        rows = np.nonzero(events["user_id"].to_numpy() == user)[0]
        for row in rows:  # the user's whole log, decisions or not, in the dataset's order
            ev = events.iloc[row]
            after = runtime.update(window, ev["item_id"], ev["action"], int(ev["ts"]), float(ev["value"]))
            d = decision_of_row.get(int(row))
            assert (after is not window) == (d is not None), f"event row {row}: the runtime's decision rule differs"
            window = after
            if d is None:
                continue
            n_decisions += 1
            for p in range(test.decision_point_start[d], test.decision_point_end[d]):
                cand = test.point_candidates[test.point_offsets[p]: test.point_offsets[p + 1]]
                got_scores[p, : len(cand)] = runtime.score(window, [item_ids[c] for c in cand])
    assert n_decisions == test.n_decisions
    np.testing.assert_allclose(got_scores, expected.scores, atol=1e-5, equal_nan=True)
    _, labels, _ = test.padded_points(np.arange(test.n_points))
    metrics = ranking_metrics(np.nan_to_num(got_scores, nan=-np.inf), labels, expected.metrics)
    for name in expected.metrics:
        np.testing.assert_array_equal(metrics[name], expected.points[name].to_numpy(), err_msg=name)


def test_the_window_keeps_the_last_k_decisions_and_survives_its_codec(exported):
    _, _, result = exported
    runtime = load_tracker_runtime(result.out)
    window = runtime.new_window()
    ids = runtime.item_ids
    for t in range(runtime.window + 3):
        window = runtime.update(window, ids[t], "click", 1_000 + 2 ** t)
    assert len(window) == runtime.window
    assert window.items.tolist() == [runtime.row[i] for i in ids[3: runtime.window + 3]]
    # gaps: 2 + floor(log2(2^t - 2^(t-1))) = t + 1 for the t-th decision (t >= 1)
    assert window.gaps.tolist() == [t + 1 for t in range(3, runtime.window + 3)]
    back = TrackerWindow.from_bytes(window.to_bytes(), window=runtime.window, n_items=len(ids))
    for name in ("items", "actions", "gaps"):
        np.testing.assert_array_equal(getattr(back, name), getattr(window, name))
    assert back.last_ts == window.last_ts
    np.testing.assert_array_equal(runtime.score(back, ids[:5]), runtime.score(window, ids[:5]))
    # not a decision (an impression has no weight): the window is unchanged
    assert runtime.update(window, ids[0], "impression", 10 ** 9) is window
    with pytest.raises(ArtifactError, match="field 'gaps'"):
        TrackerWindow.from_bytes(window.to_bytes().replace(b'"gaps":[', b'"gaps":[-3,'))
    with pytest.raises(InterestGymError, match="not in the tracker's catalogue"):
        runtime.score(window, ["no-such-item"])


def test_a_window_made_by_hand_and_an_unknown_action_are_refused_by_name(exported):
    """The bare tracker runtime checks a window it did not make (item rows past the catalogue, more than k decisions)
    before the graph reads it, and refuses an action the dataset does not have (it was read as no decision)."""
    _, _, result = exported
    runtime = load_tracker_runtime(result.out)
    ids = runtime.item_ids
    window = runtime.update(runtime.new_window(), ids[0], "click", 1_000)
    past = TrackerWindow(np.array([len(ids) + 5]), window.actions, window.gaps, window.last_ts)
    with pytest.raises(InterestGymError, match=rf"tracker window: field 'items' has values outside \[0, {len(ids)}\)"):
        runtime.score(past, ids[:3])
    k = runtime.window
    long = TrackerWindow(np.zeros(k + 2, np.int64), np.zeros(k + 2, np.int64), np.ones(k + 2, np.int64), 5_000)
    with pytest.raises(InterestGymError, match=rf"tracker window 1: {k + 2} decisions; the tracker reads at most {k}"):
        runtime.standardised_scores([window, long], np.array([ids[:3], ids[:3]], dtype=object))
    with pytest.raises(InterestGymError, match=r"event action 'watch': expected one of .*click"):
        runtime.update(window, ids[1], "watch", 2_000)
    assert runtime.update(window, ids[1], "click", 2_000) is not window  # a known action still is a decision


def test_a_damaged_export_is_refused(exported, tmp_path):
    import shutil

    _, _, result = exported
    copy = tmp_path / "copy"
    shutil.copytree(result.out, copy)
    items = np.load(copy / "items.npy")
    items[0, 0] += 1.0
    np.save(copy / "items.npy", items)
    with pytest.raises(ArtifactError, match="sha256"):
        load_tracker_runtime(copy)
    manifest = json.loads((copy / "tracker.json").read_text())
    manifest["format"] = "something-else/9"
    (copy / "tracker.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format"):
        load_tracker_runtime(copy)


def _resealed_copy(result, tmp_path, name, write):
    """A copy of the tracker export with ``name`` rewritten and its sha256 recorded anew in tracker.json: an
    edit the checksums alone cannot see."""
    import shutil

    from interestgym.io import sha256_file

    copy = tmp_path / "copy"
    shutil.copytree(result.out, copy)
    write(copy / name)
    manifest = json.loads((copy / "tracker.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(copy / name), "bytes": (copy / name).stat().st_size}
    (copy / "tracker.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_item_representations_are_refused_naming_the_row(exported, tmp_path, value):
    """A NaN row made that item's score, and the confidence over the whole catalogue, NaN; it loaded."""
    _, _, result = exported
    items = np.load(result.out / "items.npy")
    item = json.loads((result.out / "item_ids.json").read_text())[5]
    items[5, 2] = value
    copy = _resealed_copy(result, tmp_path, "items.npy", lambda path: np.save(path, items))
    with pytest.raises(ArtifactError, match=rf"items.npy: 1 row\(s\) with a NaN or infinite value, the first row 5 \(item '{item}'\); "
                                            "expected finite item representations"):
        load_tracker_runtime(copy)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda ids: [ids[1], *ids[1:]], r"item id '{1}' at rows 0 and 1; expected each item id once"),
    (lambda ids: [3, *ids[1:]], r"item id 3 at row 0 is a JSON number; expected a string"),
    (lambda ids: dict.fromkeys(ids, 0), r"a JSON object; expected a list of the tracker's item ids"),
])
def test_item_ids_that_are_not_distinct_strings_are_refused(exported, tmp_path, edit, message):
    """Windows hold item rows and scores look rows up by id: a duplicate id silently lost a row (the last one won)."""
    _, _, result = exported
    ids = json.loads((result.out / "item_ids.json").read_text())
    copy = _resealed_copy(result, tmp_path, "item_ids.json", lambda path: path.write_text(json.dumps(edit(ids))))
    with pytest.raises(ArtifactError, match=r"item_ids.json: " + message.replace("{1}", ids[1])):
        load_tracker_runtime(copy)



@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(window=6.5), r"field 'window' is 6.5; expected a whole number >= 1"),
    (lambda m: m.update(hidden="16"), r"field 'hidden' is '16'; expected a whole number >= 1"),
    (lambda m: m.update(window=True), r"field 'window' is True; expected a whole number >= 1"),
    (lambda m: m["decisions"]["action_weights"].update(click="heavy"), r"field decisions.action_weights is .*'heavy'.*; expected a mapping"),
    (lambda m: m["decisions"].update(positive_rating=None), r"field decisions.positive_rating is None; expected a finite number"),
])
def test_tracker_manifest_fields_of_the_wrong_type_are_named(exported, tmp_path, edit, message):
    """tracker.json's fields were read with bare int() / float(): a window of 6.5 was cut to 6 (against a graph made for
    another), a string raised a bare ValueError. Each is refused naming the field."""
    import shutil

    _, _, result = exported
    copy = tmp_path / "copy"
    shutil.copytree(result.out, copy)
    manifest = json.loads((copy / "tracker.json").read_text())
    edit(manifest)
    (copy / "tracker.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"tracker.json: " + message):
        load_tracker_runtime(copy)

@pytest.mark.parametrize("window", [5, 7])
def test_a_window_other_than_the_graphs_is_refused_at_load(exported, tmp_path, window):
    """The graph's window axis is fixed at export (the fixture's k = 6): a tracker.json edited to another whole-number
    window loaded, then every score failed inside onnxruntime. It is refused at load, naming the field and both widths."""
    import shutil

    _, _, result = exported
    copy = tmp_path / "copy"
    shutil.copytree(result.out, copy)
    manifest = json.loads((copy / "tracker.json").read_text())
    assert manifest["window"] == 6 and load_tracker_runtime(copy).window == 6  # the fixture's k; the intact copy loads
    manifest["window"] = window
    (copy / "tracker.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=rf"tracker.json: field 'window' is {window} but .*tracker.onnx has 'item_reps' of "
                                            r"shape \['batch', 6, 16\]; expected the graph's window, 6"):
        load_tracker_runtime(copy)


def test_serving_a_tracker_does_not_import_torch(exported):
    _, _, result = exported
    code = ("import sys; from interestgym.runtime.tracker import load_tracker_runtime as load; t = load(sys.argv[1]); "
            "w = t.update(t.new_window(), t.item_ids[0], 'click', 0); t.score(w, t.item_ids[:3]); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code, str(result.out)], check=True)


def test_interestgym_export_of_a_sequence_run_writes_a_tracker(exported, tmp_path, capsys):
    from cli_fixtures import run

    _, run_dir, _ = exported
    code, out, err = run(["export", str(run_dir), "--out", str(tmp_path / "cli"), "--verify-observations", "64"], capsys)
    assert code == 0, err
    assert "tracker" in out and "max |ONNX - torch| state" in out
    manifest = json.loads((tmp_path / "cli" / "tracker.json").read_text())
    assert manifest["verification"]["windows"] == 64 and set(manifest["files"]) == {"tracker.onnx", "items.npy", "item_ids.json"}
    # a second export replaces the first atomically, and says so; a folder that is not an export is never overwritten
    from interestgym.io import sha256_file

    old = sha256_file(tmp_path / "cli" / "tracker.json")
    code, _, err = run(["export", str(run_dir), "--out", str(tmp_path / "cli")], capsys)
    assert code == 0, err
    new = sha256_file(tmp_path / "cli" / "tracker.json")
    assert f"  replaced the export that was in {tmp_path / 'cli'} (tracker.json sha256 {old[:16]}..." in err
    assert (f", now {new[:16]}...)" if new != old else "(the same content)") in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = run(["export", str(run_dir), "--out", str(tmp_path / "other")], capsys)
    assert code != 0 and "not a tracker export" in err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_out_of_order_decisions_an_unverified_export_and_load_policy_on_a_tracker_are_said(exported, tmp_path, capsys):
    from cli_fixtures import run

    from interestgym.runtime import load_policy

    _, run_dir, result = exported
    runtime = load_tracker_runtime(result.out)
    window = runtime.update(runtime.new_window(), runtime.item_ids[0], "click", 5_000)
    with pytest.raises(InterestGymError, match=r"decision at ts 4000 is before the window's last one at ts 5000"):
        runtime.update(window, runtime.item_ids[1], "click", 4_000)
    assert runtime.update(window, runtime.item_ids[1], "click", 5_000).last_ts == 5_000  # equal times are fine
    code, out, err = run(["export", str(run_dir), "--out", str(tmp_path / "none"), "--verify-observations", "0"], capsys)
    assert code == 0, err
    assert "not verified (--verify-observations 0)" in out and "verified on 0" not in out
    with pytest.raises(InterestGymError, match=r"holds a sequence tracker's export \(tracker.json\): load it with .*load_tracker_runtime"):
        load_policy(result.out)
