"""Loading an export refuses anything damaged, newer or mismatched, with an error naming what is wrong."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from export_fixtures import trained_export

from interestgym.errors import ArtifactError, InterestGymError
from interestgym.runtime import (
    ChecksumMismatchError,
    EmbeddingDimensionError,
    EncoderMismatchError,
    Event,
    ExportFileCorruptError,
    ExportFileMissingError,
    FormatVersionError,
    UserState,
    load_policy,
)
from interestgym.runtime.manifest import CONTENT_DIGEST_FIELD, manifest_digest


@pytest.fixture()
def export_copy(tmp_path_factory, tmp_path):
    fx = trained_export(tmp_path_factory, "next_positive")
    target = tmp_path / "export"
    shutil.copytree(fx.export, target)
    return target


def _rewrite_manifest(directory, change) -> None:
    """Edit the manifest and re-seal its content digest (a well-formed but different manifest)."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    manifest[CONTENT_DIGEST_FIELD] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest))


def test_intact_export_loads(export_copy):
    policy = load_policy(export_copy)
    assert policy.dim == 16
    assert isinstance(policy.new_state(), UserState)


def test_every_exported_file_is_covered_by_a_checksum(export_copy):
    names = sorted(p.name for p in export_copy.iterdir())
    assert {"manifest.json", "policy.onnx", "popularity.npy", "item_ids.json", "categories.json"} <= set(names)
    for name in names:
        target = export_copy.parent / f"tampered-{name}"
        shutil.copytree(export_copy, target)
        data = bytearray((target / name).read_bytes())
        middle = len(data) // 2
        data[middle] = (data[middle] + 1) % 256  # one changed byte, same size
        (target / name).write_bytes(bytes(data))
        # a changed byte fails the checksum (or, in the manifest, may already break its JSON)
        with pytest.raises((ChecksumMismatchError, ExportFileCorruptError)) as info:
            load_policy(target)
        assert name in str(info.value), str(info.value)


def test_edited_manifest_values_are_detected(export_copy):
    path = export_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["scoring"]["config"]["beta_cat"] = 0.5  # a plausible edit, valid JSON
    path.write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ChecksumMismatchError, match="manifest.json"):
        load_policy(export_copy)


def test_missing_file_is_named(export_copy):
    (export_copy / "popularity.npy").unlink()
    with pytest.raises(ExportFileMissingError, match="popularity.npy"):
        load_policy(export_copy)
    (export_copy / "manifest.json").unlink()
    with pytest.raises(ExportFileMissingError, match="manifest.json"):
        load_policy(export_copy)


def test_file_dropped_from_the_manifest_is_refused(export_copy):
    _rewrite_manifest(export_copy, lambda m: m["files"].pop("item_ids.json"))
    with pytest.raises(ExportFileCorruptError, match="item_ids.json"):
        load_policy(export_copy)


def test_newer_format_version_asks_for_an_upgrade(export_copy):
    _rewrite_manifest(export_copy, lambda m: m.update(format_version=99))
    with pytest.raises(FormatVersionError, match="format_version 99.*upgrade"):
        load_policy(export_copy)


def test_corrupt_but_consistently_checksummed_files_are_refused(export_copy):
    from interestgym.io import sha256_file

    (export_copy / "popularity.npy").write_bytes(b"not an npy file")

    def reseal(m):
        m["files"]["popularity.npy"] = {"sha256": sha256_file(export_copy / "popularity.npy"), "bytes": 15}

    _rewrite_manifest(export_copy, reseal)
    with pytest.raises(ExportFileCorruptError, match="popularity.npy"):
        load_policy(export_copy)
    (export_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ExportFileCorruptError, match="manifest.json"):
        load_policy(export_copy)


def test_not_an_export_directory(tmp_path):
    with pytest.raises(ExportFileMissingError, match="no such export directory"):
        load_policy(tmp_path / "nowhere")
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 1}))  # e.g. a dataset directory
    with pytest.raises(ExportFileCorruptError, match="kind"):
        load_policy(tmp_path)


def test_encoder_fingerprint_and_dimension_are_checked(export_copy):
    _rewrite_manifest(export_copy, lambda m: m["encoder"].update(fingerprint="a" * 64))
    with pytest.raises(EncoderMismatchError, match="fingerprint"):
        load_policy(export_copy, encoder_fingerprint="b" * 64)
    policy = load_policy(export_copy, encoder_fingerprint="a" * 64)
    state = policy.new_state()
    with pytest.raises(EmbeddingDimensionError, match=r"event item_vector of shape \(8,\); expected shape \(16,\), one vector"):
        policy.update(state, Event(ts=1, action="click", item_vector=np.ones(8, np.float32) / np.sqrt(8)))
    # the shape as given (a row of one vector is not one vector), and in a batch the event that has it
    with pytest.raises(EmbeddingDimensionError, match=r"event item_vector of shape \(1, 16\); expected shape \(16,\)"):
        policy.update(state, Event(ts=1, action="click", item_vector=np.ones((1, 16), np.float32) / 4.0))
    good, bad = (Event(ts=1, action="click", item_vector=np.ones(n, np.float32) / np.sqrt(n)) for n in (16, 8))
    no_item = Event(ts=1, action="click", item_vector=None)  # not a decision: counted among the batch's events all the same
    with pytest.raises(EmbeddingDimensionError, match=r"event 2 of the batch: item_vector of shape \(8,\); expected shape \(16,\)"):
        policy.update_batch([state, state, state], [no_item, good, bad])
    with pytest.raises(EmbeddingDimensionError, match="16"):
        policy.score(state, np.ones((5, 384), np.float32), candidate_ids=["i1"] * 5)
    with pytest.raises(ArtifactError):  # every runtime error is an ArtifactError the CLI prints in one line
        policy.score(state, np.ones((5, 17), np.float32), candidate_ids=["i1"] * 5)


@pytest.mark.parametrize("hour", [25, -1, 3.5])
def test_an_hour_outside_the_clock_is_refused_whether_the_score_uses_it_or_not(export_copy, hour):
    """As the HTTP API's 422: an hour of the ranking is an integer in [0, 23], also for a policy that ranks without it."""
    policy = load_policy(export_copy)
    assert policy._beta_ctx == 0 and policy._slot_weight == 0  # this export's score reads no hour
    cand = np.eye(16, dtype=np.float32)[:3]
    expected = policy.score(policy.new_state(), cand, candidate_ids=["i1", "i2", "i3"], hour=23)
    with pytest.raises(InterestGymError, match=r"hour \[" + re.escape(str(hour)) + r"\]: expected integers in \[0, 23\]"):
        policy.score(policy.new_state(), cand, candidate_ids=["i1", "i2", "i3"], hour=hour)
    np.testing.assert_array_equal(policy.score(policy.new_state(), cand, candidate_ids=["i1", "i2", "i3"]), expected)


def test_runtime_imports_neither_torch_nor_stable_baselines3(export_copy):
    """Nor anything else outside the standard library, numpy and onnxruntime: README's runtime-only install
    (``pip install --no-deps``) has nothing more."""
    code = f"""
import sys
import sysconfig
import numpy as np
import onnxruntime

def installed():  # top-level names of the imported modules that come from site-packages
    site = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
    return {{name.split(".")[0] for name, m in list(sys.modules.items()) if str(getattr(m, "__file__", None) or "").startswith(site)}}

before = installed()  # numpy, onnxruntime and what they import
import interestgym.runtime as rt
policy = rt.load_policy({str(export_copy)!r})
state = policy.new_state()
x = np.ones(policy.dim, np.float32) / np.sqrt(policy.dim)
state = policy.update(state, rt.Event(ts=100, action="click", item_vector=x, category="c1"))
scores = policy.score(state, np.stack([x, -x]), candidate_ids=["i1", "i2"])
assert scores[0] > scores[1], scores
heavy = sorted(m for m in ("torch", "stable_baselines3", "pandas", "gymnasium", "sklearn", "pyarrow") if m in sys.modules)
print("HEAVY", heavy)
print("OTHER", sorted(installed() - before - {{"interestgym"}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout
    assert "OTHER []" in proc.stdout, proc.stdout


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m["replay"].update(action_weights="x"), r"replay.action_weights 'x'; expected a mapping action name -> finite number"),
    (lambda m: m["replay"].update(action_weights={"click": "1"}), r"replay.action_weights \{'click': '1'\}"),
    (lambda m: m["replay"].update(tz_offset_hours="abc"), r"replay.tz_offset_hours 'abc'; expected a finite number"),
    (lambda m: m["replay"].update(positive_rating=float("nan")), r"replay.positive_rating nan; expected a finite number"),
    (lambda m: m["replay"].update(reward_metric=3), r"replay.reward_metric 3; expected a metric name"),
    # loaded before, then failed at the first record_outcome / saturated a feature / overflowed at the first event
    (lambda m: m["replay"].update(reward_metric="ndgc@10"), r"replay.reward_metric: metric 'ndgc@10': expected auc, mrr"),
    (lambda m: m["replay"].update(max_action_weight=0), r"replay.max_action_weight 0; expected a positive number"),
    (lambda m: m["replay"].update(tz_offset_hours=1e300), r"replay.tz_offset_hours 1e\+300; expected hours in -14..14"),
    (lambda m: m["encoder"].update(dim="16"), r"encoder.dim '16'; expected a positive integer"),
    (lambda m: m["files"].update({"item_ids.json": "deadbeef"}), r"files\['item_ids.json'\] is 'deadbeef'; expected \{'sha256'"),
    (lambda m: m["files"].update({"extra.bin": "deadbeef"}), r"files\['extra.bin'\] is 'deadbeef'; expected \{'sha256'"),
    # the DTW drift's window: -3 loaded and failed every event, 2.5 was read as 2, "abc" raised a bare ValueError
    (lambda m: m["observation"].update(drift_window=-3), r"observation.drift_window -3; expected a whole number >= 1"),
    (lambda m: m["observation"].update(drift_window=2.5), r"observation.drift_window 2.5; expected a whole number >= 1"),
    (lambda m: m["observation"].update(drift_window="abc"), r"observation.drift_window 'abc'; expected a whole number >= 1"),
])
def test_hand_edited_manifest_fields_of_the_wrong_type_are_named(export_copy, change, message):
    """A manifest edited with its digest recomputed gets past the checksum; a field of the wrong type is refused by
    name (it raised a bare AttributeError / ValueError, or loaded and failed at the first event)."""
    _rewrite_manifest(export_copy, change)
    with pytest.raises(ExportFileCorruptError, match=message):
        load_policy(export_copy)


def _rewrite_file(directory, name, write) -> None:
    """Rewrite one file of the export, then record its new sha256 and size in the manifest and re-seal the
    manifest's digest: an edit the checksums alone cannot see."""
    from interestgym.io import sha256_file

    write(directory / name)

    def reseal(m):
        m["files"][name] = {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size}

    _rewrite_manifest(directory, reseal)


@pytest.mark.parametrize(("width", "name", "dtype", "message"), [
    (3, "action", "float", r"output 'action' of shape \[.*3\]; expected \[batch, 4\] \(a_L, a_S, w, p\) for an absolute policy"),
    (9, "action", "float", r"output 'action' of shape \[.*9\]; expected \[batch, 4\]"),
    (4, "out", "float", r"outputs \[\('out', 'tensor\(float\)'.*expected a float input and a float output 'action'"),
    (4, "action", "double", r"input 'obs' tensor\(double\).*expected a float input"),
    (4, "action", "float", None),  # a graph of the right kind loads
])
def test_a_graph_whose_output_is_not_the_policys_action_is_refused_at_load(export_copy, width, name, dtype, message):
    """A review's find: only the graph's input was checked. A 3-wide absolute graph loaded, and update() then shortened the
    state's strengths silently (a 4-slot slice given 3 values); a 9-wide one acted as levers the policy does not have; a
    misnamed output or a float64 graph loaded and failed at the first event with onnxruntime's own error."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from interestgym.runtime.manifest import POLICY_FILE

    n_obs = load_policy(export_copy).n_obs
    elem = TensorProto.FLOAT if dtype == "float" else TensorProto.DOUBLE
    weights = np.zeros((n_obs, width), dtype=np.float32 if dtype == "float" else np.float64)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], [name])], "g",
        [helper.make_tensor_value_info("obs", elem, ["batch", n_obs])],
        [helper.make_tensor_value_info(name, elem, ["batch", width])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _rewrite_file(export_copy, POLICY_FILE, lambda path: onnx.save(model, str(path)))
    if message is None:
        policy = load_policy(export_copy)
        assert policy.act(np.zeros((2, n_obs), np.float32)).shape == (2, 4)
        return
    with pytest.raises(ExportFileCorruptError, match=message):
        load_policy(export_copy)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.25, 1.5])
def test_popularity_outside_zero_one_is_refused_naming_the_item(export_copy, value):
    """pop(c) = log1p(count) / max is in [0, 1]; a NaN made every score of the item NaN, a negative or larger
    value outweighed the profile terms, and both loaded without complaint."""
    popularity = np.load(export_copy / "popularity.npy")
    item = json.loads((export_copy / "item_ids.json").read_text())[3]
    popularity[3] = value
    _rewrite_file(export_copy, "popularity.npy", lambda path: np.save(path, popularity))
    with pytest.raises(ExportFileCorruptError, match=rf"popularity.npy: 1 value\(s\) NaN or outside \[0, 1\], the first "
                                                      rf"{re.escape(str(float(np.float32(value))))} at row 3 \(item '{item}'\); "
                                                      r"expected values in \[0, 1\]"):
        load_policy(export_copy)


def test_popularity_at_the_ends_of_its_range_loads(export_copy):
    popularity = np.load(export_copy / "popularity.npy")
    popularity[:2] = [0.0, 1.0]
    _rewrite_file(export_copy, "popularity.npy", lambda path: np.save(path, popularity))
    np.testing.assert_array_equal(load_policy(export_copy).popularity, popularity)


def test_an_encoder_dimension_other_than_the_verified_embeddings_is_refused(export_copy):
    """The policy was verified on 16-wide embeddings (replay.verified_on.dim); a manifest saying 32 made the runtime
    accept 32-wide vectors and refuse the encoder it was trained with."""
    verified = json.loads((export_copy / "manifest.json").read_text())["replay"]["verified_on"]["dim"]
    _rewrite_manifest(export_copy, lambda m: m["encoder"].update(dim=2 * verified))
    with pytest.raises(ExportFileCorruptError, match=rf"manifest.json: encoder.dim {2 * verified} but replay.verified_on.dim "
                                                      rf"{verified} .*; expected the same dimension"):
        load_policy(export_copy)


@pytest.mark.parametrize(("name", "edit", "message"), [
    ("categories.json", lambda c: {x: i for i, x in enumerate(c)},
     r"categories.json: a JSON object; expected a list of the dataset's category names"),
    ("categories.json", lambda c: [*c, c[0]], r"categories.json: category 'c0' at rows 0 and 5; expected each category once"),
    ("categories.json", lambda c: [None, *c[1:]], r"categories.json: category None at row 0 is a JSON null; expected a string"),
    ("item_ids.json", lambda c: [c[1], *c[1:]], r"item_ids.json: item id 'i1' at rows 0 and 1; expected each item id once"),
    ("item_ids.json", lambda c: [7, *c[1:]], r"item_ids.json: item id 7 at row 0 is a JSON number; expected a string"),
    ("item_ids.json", lambda c: dict.fromkeys(c, 0), r"item_ids.json: a JSON object; expected a list of the dataset's item ids"),
])
def test_item_ids_and_categories_that_are_not_a_list_of_distinct_names_are_refused(export_copy, name, edit, message):
    """The runtime indexes popularity rows and category columns by name: a dict loaded as its keys, a duplicate
    silently lost a row (the last one won), a non-string was matched by its str()."""
    original = json.loads((export_copy / name).read_text())
    assert original[:2] == (["c0", "c1"] if name == "categories.json" else ["i0", "i1"])  # what the messages name
    _rewrite_file(export_copy, name, lambda path: path.write_text(json.dumps(edit(original))))
    with pytest.raises(ExportFileCorruptError, match=message):
        load_policy(export_copy)




def _as_rule_export(directory, **params) -> None:
    """The fixture export turned into a shipped rule's (policy.form "rule", no graph read): the two-profile rule."""
    rule = {"name": "ema_two_profile", "params": {"long_rate": 0.1, "short_rate": 0.6, "short_weight": 0.5, "popularity_weight": 0.0,
                                                  **params}}
    _rewrite_manifest(directory, lambda m: m["policy"].update(form="rule", rule=rule))


@pytest.mark.parametrize(("value", "message"), [
    ("0.1", r"long_rate='0.1': expected a finite number"),
    (float("nan"), r"long_rate=nan: expected a finite number"),
    (5.0, r"long_rate=5.0: expected a number in \[0, 1\]"),
    (None, r"long_rate=None: expected a finite number"),
    (True, r"long_rate=True: expected a finite number"),
])
def test_a_rule_parameter_of_the_wrong_type_or_range_is_refused(export_copy, value, message):
    """A shipped rule is rebuilt from policy.rule.params: a string, NaN, None or out-of-range rate loaded and acted (a
    rate of 5 saturated silently at 1); each is refused naming the field and the parameter."""
    _as_rule_export(export_copy)
    assert load_policy(export_copy).rule.params["long_rate"] == 0.1  # the valid rule loads
    _as_rule_export(export_copy, long_rate=value)
    with pytest.raises(ExportFileCorruptError, match=r"manifest.json: policy.rule.params: rule 'ema_two_profile' parameter " + message):
        load_policy(export_copy)


def test_a_parameter_the_rule_does_not_have_is_refused_naming_those_it_has(export_copy):
    _as_rule_export(export_copy, speed=1.0)
    with pytest.raises(ExportFileCorruptError, match=r"policy.rule.params: rule 'ema_two_profile' parameter\(s\) speed: not parameters "
                                                     r"of this rule; expected some of long_rate, short_rate, short_weight"):
        load_policy(export_copy)
