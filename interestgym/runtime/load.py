"""Load and verify an export directory: :func:`load_policy` (the manifest and every file's checksum, the
policy's form and rule, the observation table, the ONNX graph, and the sequence tracker a score weighs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from interestgym.core.features import (
    EXTRA_FEATURES,
    N_FEATURES,
    TRACKER_FEATURE_NAMES,
    observation_features,
)
from interestgym.core.metrics import parse_metric
from interestgym.core.numeric import finite_number
from interestgym.core.protocol import RESIDUAL_LAYOUTS, residual_names_for_width
from interestgym.core.rules import (
    RULES,
    RulePluginError,
    TrackerMixRule,
    rule_from_record,
)
from interestgym.errors import InterestGymError
from interestgym.io import read_string_list, sha256_file
from interestgym.runtime.manifest import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    POLICY_FILE,
    POPULARITY_DEFINITION,
    POPULARITY_FILE,
    ExportFileCorruptError,
    format_version_for,
    read_verified_manifest,
)
from interestgym.runtime.policy import DATA_FILES, POLICY_FORMS, ExportedPolicy
from interestgym.runtime.tracker import TRACKER_MANIFEST, TrackerRuntime


def load_policy(directory: str | Path, *, encoder_fingerprint: str | None = None, threads: int = 1) -> ExportedPolicy:
    """Load and verify an export directory (written by ``interestgym export``).

    :param encoder_fingerprint: the fingerprint of the encoder the caller embeds items with; a
        mismatch raises :class:`EncoderMismatchError` (``None``: not checked).
    :param threads: onnxruntime intra-op threads (1 is fastest for this small network per call).
    :raises ExportError: (an ArtifactError) naming the file and what is wrong.
    """

    directory = Path(directory)
    manifest = read_verified_manifest(directory, DATA_FILES)
    form = str((manifest.get("policy") or {}).get("form", "absolute")) if isinstance(manifest.get("policy"), dict) else "absolute"
    if form not in POLICY_FORMS:
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: policy.form {form!r}; expected one of {', '.join(POLICY_FORMS)}")
    if form in ("residual", "rule"):
        rule = manifest["policy"].get("rule")
        provided = isinstance(rule, dict) and isinstance(rule.get("provider"), dict)  # another package's rule
        if not isinstance(rule, dict) or not isinstance(rule.get("params"), dict) or (
                _base_rule(rule.get("name")) not in RULES and not provided):
            raise ExportFileCorruptError(f"{directory / 'manifest.json'}: policy.rule {rule!r}; expected a rule name "
                                         f"({', '.join(RULES)}, or one an installed package adds, with its provider) and its params")
        # another package's rule: that package, installed at the version recorded (else: what to install); then each
        # parameter one the rule has, of its type and range (a NaN rate would act NaN at every event)
        try:
            rule_from_record(rule, f"{directory / 'manifest.json'}")
        except RulePluginError:
            raise
        except InterestGymError as exc:
            raise ExportFileCorruptError(f"{directory / 'manifest.json'}: policy.rule.params: {exc}") from None
    try:
        features = [f["name"] for f in manifest["observation"]["features"]]
        _ = manifest["encoder"]["dim"], manifest["replay"]["action_weights"], manifest["scoring"]["config"]
    except (KeyError, TypeError) as exc:
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: missing field {exc}; expected the fields written by `interestgym export`") from None
    _check_scoring(directory, manifest)
    _check_replay(directory, manifest)
    extra = manifest["observation"].get("extra") or []
    try:
        expected = [f.name for f in observation_features(tuple(extra))]
    except (KeyError, ValueError, TypeError):
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: observation.extra {extra!r}; expected names of "
                                     f"{[f.name for f in EXTRA_FEATURES]}, in that order") from None
    if features != expected:
        raise ExportFileCorruptError(
            f"{directory / 'manifest.json'}: observation features {features} differ from this interestgym's "
            f"{expected}; export the policy again with this version"
        )
    k = manifest["observation"].get("drift_window")
    if k is not None and (type(k) is not int or k < 1):
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: observation.drift_window {k!r}; expected a whole "
                                     "number >= 1 (the DTW drift's window of item vectors)")
    if any(name in TRACKER_FEATURE_NAMES for name in extra) and manifest.get("tracker") is None:
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: the policy observes a tracker but has no 'tracker' section; "
                                     "expected the tracker folder (re-export the run)")
    session = None if form == "rule" else _load_graph(directory, manifest, threads, N_FEATURES + len(extra), form)
    item_ids = read_string_list(directory / ITEMS_FILE, "item id", "the dataset's item ids, in embedding-row order", ExportFileCorruptError)
    categories = read_string_list(directory / CATEGORIES_FILE, "category", "the dataset's category names, in the category model's order",
                                  ExportFileCorruptError)
    popularity = _read_popularity(directory / POPULARITY_FILE, item_ids)
    tracker = _load_tracker(directory, manifest, item_ids)
    change_names = _change_names(directory, manifest, session, tracker) if form == "residual" else None
    policy = ExportedPolicy(directory, manifest, session, item_ids, popularity, categories, tracker,
                            change_names=change_names)
    if encoder_fingerprint is not None:
        policy.check_encoder(encoder_fingerprint)
    return policy


def _change_names(directory: Path, manifest: dict[str, Any], session: Any, tracker: TrackerRuntime | None) -> tuple[str, ...]:
    """A residual graph's output components: ``policy.outputs.action.names`` (exports that predate it:
    from the graph's width and whether a tracker is attached), checked against the graph's width and the
    tracker section."""
    width = next((o.shape[1] for o in session.get_outputs() if o.name == "action" and len(o.shape) == 2), None)
    outputs = (manifest.get("policy") or {}).get("outputs") or {}
    recorded = (outputs.get("action") or {}).get("names") if isinstance(outputs.get("action"), dict) else None
    if recorded is not None:
        names = tuple(str(n) for n in recorded) if isinstance(recorded, list) else None
        if names not in RESIDUAL_LAYOUTS:
            raise ExportFileCorruptError(f"{directory / 'manifest.json'}: policy.outputs.action.names {recorded!r}; expected the "
                                         "residual components (long_strength .. keep_change[, tracker_change][, gain_change]"
                                         "[, context_change][, slot_change])")
    else:  # exports from before the names were recorded had no gain component: 5, or 6 with a tracker's weight
        names = residual_names_for_width(width, tracker=width == 6) if width in (5, 6) else None
        if names is None:
            raise ExportFileCorruptError(f"{directory / POLICY_FILE}: the graph's action has {width} components and the manifest "
                                         "names none; expected a residual graph's 5, or 6 with a tracker")
    if isinstance(width, int) and width != len(names):
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: the graph's action has {width} components; the manifest "
                                     f"names {len(names)} ({', '.join(names)})")
    scoring = (manifest.get("scoring") or {}).get("config") or {}
    levers = (("gain_change", "beta_cat", "category counts"), ("context_change", "beta_ctx", "time-slot profiles"),
              ("slot_change", "category_slot_weight", "category counts per time of day"))
    for component, term, what in levers:
        if component == "slot_change" and component in names and scoring.get(term) and not scoring.get("beta_cat"):
            term = "beta_cat"  # the per-slot counts weigh into the category term: without it they move nothing
        if component in names and not (scoring.get(term) and (component != "slot_change" or scoring.get("beta_cat"))):
            raise ExportFileCorruptError(f"{directory / 'manifest.json'}: policy.outputs.action.names has {component}, but "
                                         f"scoring.config.{term} is {scoring.get(term)!r}: the policy scores without the {what} "
                                         "that component moves; re-export the run")
    if "tracker_change" in names and tracker is None:
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: the graph's action has {width} components, one moving a "
                                     "tracker's weight, but the manifest has no 'tracker' section; re-export the run")
    return names


def _check_replay(directory: Path, manifest: dict[str, Any]) -> None:
    """The manifest's encoder and replay fields have the types the runtime reads them as, and the encoder's
    dimension is the one the policy was verified on (a hand-edited manifest with its digest recomputed gets
    past the checksum, not past this)."""
    where = directory / "manifest.json"

    dim = manifest["encoder"]["dim"]
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ExportFileCorruptError(f"{where}: encoder.dim {dim!r}; expected a positive integer")
    replay = manifest["replay"]
    verified_on = replay.get("verified_on") if isinstance(replay, dict) else None
    if isinstance(verified_on, dict) and "dim" in verified_on and verified_on["dim"] != dim:
        raise ExportFileCorruptError(f"{where}: encoder.dim {dim} but replay.verified_on.dim {verified_on['dim']!r} (the "
                                     "embeddings the policy was verified on); expected the same dimension")
    weights = replay.get("action_weights") if isinstance(replay, dict) else None
    if not isinstance(weights, dict) or not weights or not all(isinstance(k, str) and finite_number(v) for k, v in weights.items()):
        raise ExportFileCorruptError(f"{where}: replay.action_weights {weights!r}; expected a mapping action name -> finite number")
    for field in ("max_action_weight", "positive_rating", "tz_offset_hours"):
        if field not in replay and field == "tz_offset_hours":  # exports from before the time zone: UTC
            continue
        if not finite_number(replay.get(field)):
            raise ExportFileCorruptError(f"{where}: replay.{field} {replay.get(field)!r}; expected a finite number")
    if not isinstance(replay.get("reward_metric"), str):
        raise ExportFileCorruptError(f"{where}: replay.reward_metric {replay.get('reward_metric')!r}; expected a metric name")
    try:  # (an unknown one loaded and failed at the first record_outcome)
        parse_metric(replay["reward_metric"])
    except InterestGymError as exc:
        raise ExportFileCorruptError(f"{where}: replay.reward_metric: {exc}") from None
    if not replay["max_action_weight"] > 0:  # the action-weight feature divides by it (<= 0 saturated it at 1.0)
        raise ExportFileCorruptError(f"{where}: replay.max_action_weight {replay['max_action_weight']!r}; expected a positive number")
    if "tz_offset_hours" in replay and not -14 <= replay["tz_offset_hours"] <= 14:  # (1e300 overflowed at the first event)
        raise ExportFileCorruptError(f"{where}: replay.tz_offset_hours {replay['tz_offset_hours']!r}; expected hours in -14..14, "
                                     "as `prepare --tz-offset` takes them")


def _read_popularity(path: Path, item_ids: list[str]) -> np.ndarray:
    """``popularity.npy``: float32, one value per item id, each in [0, 1] (``log1p(count) / max``): a NaN would
    make every score of its item NaN, a negative or larger value would outweigh the profile terms."""
    try:
        popularity = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ExportFileCorruptError(f"{path}: not a plain .npy array ({exc})") from None
    if popularity.shape != (len(item_ids),) or popularity.dtype != np.float32:
        raise ExportFileCorruptError(f"{path}: shape {popularity.shape} dtype {popularity.dtype}; expected "
                                     f"({len(item_ids)},) float32 aligned with {ITEMS_FILE}")
    check_popularity_range(popularity, item_ids, path, ExportFileCorruptError)
    return popularity


def check_popularity_range(popularity: np.ndarray, item_ids: list[str], path: Path, error: type[Exception]) -> None:
    """``error`` naming the count, the first value, its row and item unless every popularity is in [0, 1] (an
    export's table and serve's catalogue alike)."""
    bad = np.flatnonzero(~((popularity >= 0) & (popularity <= 1)))  # NaN fails both comparisons
    if bad.size:
        row = int(bad[0])
        raise error(f"{path}: {bad.size} value(s) NaN or outside [0, 1], the first {float(popularity[row])} at row {row} "
                    f"(item {item_ids[row]!r}); expected values in [0, 1] ({POPULARITY_DEFINITION})")


def _check_scoring(directory: Path, manifest: dict[str, Any]) -> None:
    """The manifest's scoring config is one the core accepts (every weight in its range: a NaN or negative
    weight would silently drop its term), and the format version holds the state it needs."""
    from interestgym.core.interest import ScoringConfig

    config = manifest["scoring"]["config"]
    try:
        scoring = ScoringConfig(**config)
    except (TypeError, ValueError, InterestGymError) as exc:
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: scoring.config {config!r}: {exc}; expected the scoring "
                                     "`interestgym export` writes") from None
    policy = manifest.get("policy")
    rule = policy.get("rule") if isinstance(policy, dict) else None
    needed = format_version_for(scoring.as_dict(), rule if isinstance(rule, dict) else None)
    if int(manifest.get("format_version", 1)) < needed:
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: format_version {manifest.get('format_version')} with a scoring "
                                     f"or rule that needs version {needed} (per-slot category counts, exposure counts, counts "
                                     "weighed by the feedback value, or a rule of another package); export the policy again")


def _base_rule(name: Any) -> Any:
    """The rule a mixture rule (``"<rule>+tracker"``) is built on; any other name as it is."""
    suffix = TrackerMixRule.SUFFIX
    return name[: -len(suffix)] if isinstance(name, str) and name.endswith(suffix) else name


def _load_tracker(directory: Path, manifest: dict[str, Any], item_ids: list[str]) -> TrackerRuntime | None:
    """The export's sequence tracker (its folder's manifest checked against the policy manifest's
    sha256, then every tracker file against the tracker manifest), or None when the policy has none.

    A policy whose score weighs a tracker (``scoring.config.tracker_weight``, or a graph with the sixth,
    tracker-weight output) must carry one, over the export's own item ids."""
    info = manifest.get("tracker")
    weight = float((manifest.get("scoring") or {}).get("config", {}).get("tracker_weight", 0.0) or 0.0)
    if info is None:
        if weight != 0:
            raise ExportFileCorruptError(f"{directory / 'manifest.json'}: scoring.config.tracker_weight {weight} but no 'tracker' "
                                         "section; expected the tracker folder the score weighs (re-export the run)")
        return None
    folder_name = info.get("folder") if isinstance(info, dict) else None
    if not isinstance(folder_name, str) or Path(folder_name).name != folder_name or folder_name in ("", ".", ".."):
        raise ExportFileCorruptError(f"{directory / 'manifest.json'}: tracker.folder {folder_name!r}; expected a folder name inside the export")
    folder = directory / folder_name
    found = sha256_file(folder / TRACKER_MANIFEST) if (folder / TRACKER_MANIFEST).is_file() else None
    if found is None:
        raise ExportFileCorruptError(f"{folder / TRACKER_MANIFEST}: missing; the policy manifest names this tracker folder")
    if found != info.get("manifest_sha256"):
        raise ExportFileCorruptError(f"{folder / TRACKER_MANIFEST}: sha256 {found[:16]}...; the policy manifest records "
                                     f"{str(info.get('manifest_sha256'))[:16]}... (the tracker was changed after export)")
    tracker = TrackerRuntime(folder)
    if tracker.item_ids != item_ids:
        raise ExportFileCorruptError(f"{folder / 'item_ids.json'}: {len(tracker.item_ids)} item ids that differ from the export's "
                                     f"{ITEMS_FILE} ({len(item_ids)}); expected the same catalogue, row by row")
    return tracker


def _load_graph(directory: Path, manifest: dict[str, Any], threads: int, n_obs: int, form: str) -> Any:
    """The export's ONNX graph in an onnxruntime session (checked against the manifest's checksums)."""
    import onnxruntime

    if POLICY_FILE not in (manifest.get("files") or {}):
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: not in the manifest's files; a learned policy's export "
                                     "carries its graph (re-export the run)")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(directory / POLICY_FILE), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for a damaged graph
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: onnxruntime cannot load it ({str(exc).splitlines()[0][:200]})") from None
    inp = session.get_inputs()[0]
    if len(inp.shape) != 2 or inp.shape[1] != n_obs:
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: input shape {inp.shape}; expected [batch, {n_obs}]")
    action = next((o for o in session.get_outputs() if o.name == "action"), None)
    if inp.type != "tensor(float)" or action is None or action.type != "tensor(float)" or len(action.shape) != 2:
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: input {inp.name!r} {inp.type}, outputs "
                                     f"{[(o.name, o.type, o.shape) for o in session.get_outputs()]}; expected a float input "
                                     "and a float output 'action' of shape [batch, n]")
    if form == "absolute" and action.shape[1] != 4:  # a residual graph's width is checked against its names
        raise ExportFileCorruptError(f"{directory / POLICY_FILE}: output 'action' of shape {action.shape}; expected "
                                     "[batch, 4] (a_L, a_S, w, p) for an absolute policy")
    return session
