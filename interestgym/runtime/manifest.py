"""The export directory's manifest: what each file is, its checksum, and the format version.

An export directory (written by ``interestgym export``) holds::

    manifest.json    format version, observation features, action semantics, scoring parameters,
                     encoder, provenance, evaluation metrics, and the sha256 of every other file
    policy.onnx      the actor: raw observation -> deterministic action in the action box
    *.npy / *.json   arrays and tables the runtime needs besides the graph (no pickle)

:func:`read_verified_manifest` is the one gate every loader goes through: it refuses a directory
whose manifest is missing or unreadable, whose format version is newer than this code, or whose files
are missing, unlisted-but-required, or do not match their recorded sha256. Each failure is a distinct
:class:`~interestgym.errors.ArtifactError` subclass whose message names the file, what was found and
what was expected.

The writer side lives here too, so that both sides spell every field the same way:
:func:`build_manifest` makes the manifest's content (format version, features, action / update /
scoring formulas and parameters, encoder, provenance, evaluation) from plain values, and
:func:`seal_manifest` adds the sha256 of every file and the content digest
(``interestgym.export.writer`` calls it while it writes the directory).

Only the standard library, numpy and ``interestgym.core`` are imported here: the runtime must load
without torch, stable-baselines3, gymnasium or pandas.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interestgym.core.dtw import DRIFT_WINDOW
from interestgym.core.features import EMA_RATE, SHADOW_STRENGTHS, observation_features
from interestgym.core.protocol import ACTION_NAMES
from interestgym.core.rules import rule_definition
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import sha256_file

#: Version of the export layout written by this code. A reader accepts this version and older ones
#: it knows how to read; a newer one means "upgrade interestgym", never a guess. Version 2: the scoring
#: weighs category counts per time of day (``scoring.config.category_slot_weight``), which a reader of
#: version 1 would ignore. Version 3: the category term divides by the counts of shown candidates
#: (``scoring.config.category_exposure_prior``), which the user state must keep and ``record_outcome`` feeds.
#: Version 4: the rule (shipped, or under a residual) weighs its category counts by the events' feedback value
#: (``bayesian_category``'s ``value_gain`` / ``value_median``), parameters a reader of version 3 does not know.
#: Version 5: the rule is another installed package's (``policy.rule.provider``), which a reader of version 4 does not
#: look for (it would call the name unknown and the export corrupt).
#: An export is written with the lowest version that holds it (:func:`format_version_for`).
FORMAT_VERSION = 5
#: Versions this code can read.
READABLE_FORMAT_VERSIONS = frozenset({1, 2, 3, 4, 5})


def format_version_for(scoring_config: dict[str, Any], rule: dict[str, Any] | None = None) -> int:
    """The lowest format version that holds an export with this scoring and ``rule`` (name, params): 5 with a rule
    another installed package adds (``rule.provider``: an earlier runtime knows built-in rules only, and says
    "upgrade interestgym" for a newer version rather than "corrupt"), 4 with a value gain, 3 with exposure counts,
    2 with per-slot category counts, else 1."""
    if rule and rule.get("provider"):
        return 5
    if rule and (rule.get("params") or {}).get("value_gain"):
        return 4
    if scoring_config.get("category_exposure_prior"):
        return 3
    return 2 if scoring_config.get("category_slot_weight") else 1
MANIFEST_NAME = "manifest.json"
#: The ``kind`` field of the manifest: guards against pointing the runtime at a dataset or run dir.
MANIFEST_KIND = "interestgym-policy-export"

#: The files of an export besides the manifest.
POLICY_FILE = "policy.onnx"
ITEMS_FILE = "item_ids.json"
POPULARITY_FILE = "popularity.npy"
CATEGORIES_FILE = "categories.json"
#: The graph's input and outputs (``interestgym.export.actor`` writes them, the runtime feeds / reads them).
INPUT_NAME = "observation"
OUTPUT_NAME = "action"
STRENGTHS_NAME = "strengths"
#: How ``popularity.npy`` is computed (the manifest's ``scoring.popularity.definition``): a service
#: that takes popularity from its own item table compares its table's definition with this text.
POPULARITY_DEFINITION = "log1p(positive events among training users) / max, float32 aligned with item_ids"


class ExportError(ArtifactError):
    """An exported policy directory cannot be used; the message says which file and why."""


class ExportFileMissingError(ExportError):
    """A file the manifest lists (or the manifest itself) is not in the export directory."""


class ExportFileCorruptError(ExportError):
    """A file is present but cannot be parsed (bad JSON, bad .npy, bad ONNX graph)."""


class ChecksumMismatchError(ExportError):
    """A file's sha256 differs from the one recorded in the manifest: it was changed after export."""


class FormatVersionError(ExportError):
    """The export was written by a newer (or unknown) format version than this runtime reads."""


class EmbeddingDimensionError(ExportError):
    """Vectors passed to the runtime do not have the encoder dimension the policy was trained with."""


class EncoderMismatchError(ExportError):
    """The caller's encoder fingerprint differs from the one the policy was trained with."""


#: Field holding the sha256 of the manifest's own content (every other field, canonical JSON), so an
#: edit to the manifest itself (a scoring parameter, a recorded checksum) is detected like any file's.
CONTENT_DIGEST_FIELD = "manifest_sha256"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its digest field, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in manifest.items() if k != CONTENT_DIGEST_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Parse ``DIR/manifest.json`` and check its kind, format version and content digest (not the
    other files' checksums: see :func:`verify_files`)."""
    directory = Path(directory)
    if not directory.is_dir():
        aside = sorted(directory.parent.glob(f"{glob.escape(directory.name)}.old-*")) if directory.parent.is_dir() else []
        if aside:  # an export killed between its two renames (interestgym.export.writer): the previous one, whole
            raise ExportFileMissingError(
                f"{directory}: no such export directory, but {aside[0].name} beside it is the previous export, set aside by "
                "an export that was killed while swapping in a new one; `interestgym export RUN --out "
                f"{directory}` again puts it back first and replaces it, or rename it to {directory.name}")
        raise ExportFileMissingError(f"{directory}: no such export directory (create one with `interestgym export RUN --out DIR`)")
    path = directory / MANIFEST_NAME
    if not path.is_file():
        hint = ("; it holds a sequence tracker's export (tracker.json): load it with "
                "interestgym.runtime.tracker.load_tracker_runtime" if (directory / "tracker.json").is_file() else "")
        raise ExportFileMissingError(f"{path}: missing; expected the manifest of an `interestgym export` directory{hint}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportFileCorruptError(f"{path}: not valid JSON ({exc}); expected the manifest written by `interestgym export`") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        found = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise ExportFileCorruptError(f"{path}: field 'kind' is {found!r}; expected {MANIFEST_KIND!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatVersionError(f"{path}: field 'format_version' is {version!r}; expected an integer")
    if version not in READABLE_FORMAT_VERSIONS:
        newer = version > FORMAT_VERSION
        raise FormatVersionError(
            f"{path}: format_version {version}; this interestgym reads version(s) "
            f"{', '.join(map(str, sorted(READABLE_FORMAT_VERSIONS)))}"
            + ("; upgrade interestgym to load it" if newer else "")
        )
    recorded = manifest.get(CONTENT_DIGEST_FIELD)
    found = manifest_digest(manifest)
    if recorded != found:
        raise ChecksumMismatchError(
            f"{path}: content sha256 {found[:16]}... does not match its field {CONTENT_DIGEST_FIELD!r} "
            f"({str(recorded)[:16]}...); the manifest was changed after export"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ExportFileCorruptError(f"{path}: field 'files' is {files!r}; expected a mapping file name -> {{sha256, bytes}}")
    return manifest


def verify_files(directory: str | Path, manifest: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    """Check that every listed file exists with its recorded size and sha256, and that ``required``
    files are listed at all (an export whose manifest forgot a needed file is as broken as one that
    lost it)."""
    directory = Path(directory)
    files: dict[str, Any] = manifest["files"]
    for name in required:
        if name not in files:
            raise ExportFileCorruptError(f"{directory / MANIFEST_NAME}: field 'files' does not list {name!r}; expected it with its sha256")
    for name, entry in files.items():
        if Path(name).name != name or name in (MANIFEST_NAME, "", ".", ".."):
            raise ExportFileCorruptError(f"{directory / MANIFEST_NAME}: files entry {name!r}; expected a plain file name inside the export")
        path = directory / name
        expected = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(expected, str) or len(expected) != 64:
            raise ExportFileCorruptError(f"{directory / MANIFEST_NAME}: files[{name!r}] is {entry!r}; expected {{'sha256': 64 hex "
                                         "digits, 'bytes': size}")
        if not path.is_file():
            raise ExportFileMissingError(f"{path}: missing; the manifest lists it (sha256 {expected[:12]}...)")
        size = path.stat().st_size
        if isinstance(entry.get("bytes"), int) and size != entry["bytes"]:
            raise ChecksumMismatchError(f"{path}: {size} bytes; the manifest records {entry['bytes']} bytes (the file was changed after export)")
        found = sha256_file(path)
        if found != expected:
            raise ChecksumMismatchError(f"{path}: sha256 {found[:16]}...; the manifest records {expected[:16]}... (the file was changed after export)")


def read_verified_manifest(directory: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """:func:`read_manifest` then :func:`verify_files`: the manifest of an intact export."""
    manifest = read_manifest(directory)
    verify_files(directory, manifest, required)
    return manifest


# ------------------------------------------------------------------------------------ writing
def created_time() -> str:
    """The manifest's ``created`` (UTC, ISO 8601): now, or ``SOURCE_DATE_EPOCH`` when the environment sets it (the
    reproducible-builds convention: two exports of the same run then have the same bytes and ``manifest_sha256``)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if not (epoch.isascii() and epoch.isdigit()):
        raise InterestGymError(f"SOURCE_DATE_EPOCH is {epoch!r}; expected whole seconds since 1970 (e.g. $(git log -1 --format=%ct))")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def build_manifest(
    *,
    interestgym_version: str,
    onnx_opset: int,
    normalisation: Mapping[str, Any] | None,
    algorithm: str,
    net_arch: Any,
    activation: str | None,
    verified: int,
    verify_split: str,
    max_abs_action_diff: float,
    scoring_config: Mapping[str, Any],
    action_weights: Mapping[str, float],
    max_action_weight: float,
    positive_rating: float | None,
    tz_offset_hours: float,
    reward_metric: str,
    verified_on: Mapping[str, Any],
    encoder: Mapping[str, Any],
    dataset: Mapping[str, Any],
    run: Mapping[str, Any],
    evaluation: tuple[Path, Mapping[str, Any]] | None,
    form: str = "absolute",
    rule: Mapping[str, Any] | None = None,
    n_outputs: int | None = None,
    tracker: Mapping[str, Any] | None = None,
    extra_obs: tuple[str, ...] = (),
    change_names: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """The manifest's content, every field but ``files`` and the digest (:func:`seal_manifest` adds them).

    :param onnx_opset: the opset the graph was exported with.
    :param normalisation: VecNormalize's ``mean``, ``var``, ``epsilon`` and ``clip_obs`` (baked into
        the graph; recorded for reference), ``None`` when observations were not normalised.
    :param algorithm: class name of the trained model; ``net_arch`` and ``activation`` its network.
    :param verified: how many ``verify_split`` observations the graph was checked on, with the largest
        difference ``max_abs_action_diff`` from SB3's deterministic ``predict``.
    :param scoring_config: ``ScoringConfig.as_dict()`` of the agent's fixed scoring terms.
    :param action_weights: the replay's weights per event action; ``max_action_weight``,
        ``positive_rating``, ``tz_offset_hours`` (the dataset's ``prepare --tz-offset``), the reward
        metric and ``verified_on`` (the replay data's description) complete the replay semantics.
    :param encoder: ``name``, ``kind``, ``embeddings`` (the dataset's embedding name), ``dim``, ``fingerprint``.
    :param dataset: ``path``, ``name``, ``manifest`` (its manifest.json, checksummed here), ``source_format``.
    :param run: ``path``, ``model`` (best / final / rule), ``step``, ``config``, ``reference`` of the trained run and the
        ``shipped`` decision (RUN/shipped.json) when the export is what the run ships.
    :param evaluation: the run's evaluation file and its content (``None``: not evaluated); the
        manifest keeps its checksum and the results without per-user arrays.
    :param form: ``absolute`` (the graph's action), ``residual`` (the reference ``rule``'s action plus
        the graph's change; five outputs, the fifth changing the category keep factor) or ``rule`` (the
        run shipped its reference ``rule``: no graph).
    :param rule: ``name``, ``params`` (and ``scoring``) of the rule, for the residual and rule forms.
    :param n_outputs: the graph's action width (default 5 for a residual graph, else 4; a residual graph
        trained with a tracker has a sixth output that changes the tracker's weight).
    :param tracker: ``folder`` (a sub-folder of the export written by :mod:`interestgym.export.tracker`)
        and ``manifest_sha256`` (of its ``tracker.json``), when the score weighs a sequence tracker.
    :param extra_obs: observations the graph reads after the FEATURES ones (names of
        ``core.features.EXTRA_FEATURES``: the tracker's, the DTW drift).
    :param change_names: a residual graph's output components
        (:func:`interestgym.core.protocol.residual_action_names`), recorded as ``outputs.action.names``.
    """
    width = n_outputs if n_outputs is not None else (5 if form == "residual" else 4)
    features = observation_features(tuple(extra_obs))
    forgetting = scoring_config.get("category_forgetting")
    manifest = {
        "kind": MANIFEST_KIND,
        "format_version": format_version_for(scoring_config, rule),
        "interestgym_version": interestgym_version,
        "created": created_time(),
        "policy": {
            "form": form,
            # with the rule's definition (its formula, its parameters by name), for a service in another language
            "rule": None if rule is None else {**dict(rule), "definition": rule_definition(str(rule["name"]))},
            "file": None if form == "rule" else POLICY_FILE,
            "onnx_opset": onnx_opset,
            "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", len(features)],
                      "meaning": "raw observation (features below, in order); normalisation is inside the graph"},
            "outputs": {
                OUTPUT_NAME: {"dtype": "float32", "shape": ["batch", width], "box": [-1.0, 1.0],
                              **({"names": list(change_names)} if form == "residual" and change_names else {}),
                              "meaning": ("the change added to the rule's action (first four, then clipped to the box; "
                                          "keep_change is added to the category keep factor; tracker_change changes the "
                                          "tracker's weight: interestgym.core.transition.apply_tracker_change; gain_change "
                                          "what the event adds to its category's count: apply_gain_change; "
                                          "context_change the time-slot profile's update rate: apply_rate_change; "
                                          "slot_change scales the per-slot category counts' weight for the scoring "
                                          "after the decision: apply_slot_change): "
                                          "interestgym.core.rules.compose_residual"
                                          if form == "residual" else
                                          "the env action: the Gaussian mean (deterministic), clipped to the box")},
                STRENGTHS_NAME: {"dtype": "float32", "shape": ["batch", width], "box": [0.0, 1.0],
                                 "meaning": ("(output + 1) / 2 of every 'action' output: NOT the strengths applied (those are "
                                             "the rule's action plus the change; ExportedPolicy.strengths gives them)"
                                             if form == "residual" else "(action + 1) / 2: (a_L, a_S, w, p), see 'action'")},
            },
            "observation_normalisation": None if normalisation is None else {
                "kind": "VecNormalize (baked into the graph)",
                "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs), in float64, then float32",
                "mean": [float(v) for v in normalisation["mean"]], "var": [float(v) for v in normalisation["var"]],
                "epsilon": float(normalisation["epsilon"]), "clip_obs": float(normalisation["clip_obs"]),
            },
            "network": {"algorithm": algorithm, "net_arch": net_arch, "activation": activation},
            "verification": {"observations": verified, "split": verify_split, "max_abs_action_diff": max_abs_action_diff,
                             "reference": "model.predict(VecNormalize.normalize_obs(obs), deterministic=True)"},
        },
        "observation": {
            "source": "interestgym.core.features.FEATURES",
            "n_features": len(features),
            "features": [{"index": i, "name": f.name, "definition": f.definition, "low": f.low, "high": f.high} for i, f in enumerate(features)],
            "extra": list(extra_obs),
            **({"drift_window": DRIFT_WINDOW} if "dtw_drift" in extra_obs else {}),
        },
        "action": {
            # the strengths every policy applies; a residual graph's own outputs are policy.outputs.action.names
            "names": list(ACTION_NAMES),
            "box": [-1.0, 1.0],
            "to_strength": "(clip(u, -1, 1) + 1) / 2 (interestgym.core.protocol.action_to_strengths)",
            "meaning": {
                "long_strength": "a_L: L <- normalise((1 - a_L) L + a_L x); 0 = do not update",
                "short_strength": "a_S: S <- normalise((1 - a_S) S + a_S x)",
                "short_weight": "w: weight of S against L in the score",
                "popularity_weight": "p: weight of the popularity prior in the score (overridden by scoring.config.popularity_weight if set)",
            },
        },
        "update": {
            "formula": "P <- normalise((1 - a) P + a x) for P in (L, S); a zero profile means no interest known",
            "decision": "a positive event: action weight > 0 and, for 'rate', value >= positive_rating; with an item vector",
            "shadow_strengths": list(SHADOW_STRENGTHS),
            "ema_rate": float(EMA_RATE),
            "running_means": ("m <- m + ema_rate (v - m). At a decision, in this order: (1) reward_ema, long_metric_ema and "
                              "short_metric_ema take ONE step with the MEAN metric of the scoring points recorded since the "
                              "last decision (none: no step); (2) the observation is built; (3) drift_ema, short_long_ema and "
                              "the shadow means step with this decision's cosines (before its profile update), so they reach "
                              "the next decision's observation"),
            "numerics": ("vectors are float32 and L2-normalised (norm 1, or 0 for an item the encoder has no vector for: no text, or for cooc no training user's event; others are refused); "
                         "every cos is their float32 dot product, computed for each candidate on its own (a row-by-row dot, "
                         "not a blocked matrix product, which can round identical candidates differently): identical "
                         "candidate vectors score exactly alike and tie; profiles are float32, running means and counts "
                         "float64"),
            "time_slot": "hour // 6 (slots 0-5, 6-11, 12-17, 18-23 h) on the dataset's clock (UTC + replay.tz_offset_hours)",
            "category_counts": ("counts <- f counts, then + g in the event's category column, at every decision (when beta_cat != 0; "
                                "an event whose category is not in categories.json adds nothing but is still a decision); "
                                "f = scoring.config.category_forgetting, or 1 - a_L of the decision when it is null; a residual "
                                "graph's keep_change moves it: f <- clip(f + keep_change, 0, 1). g = the rule's count gain: 1, "
                                "or for bayesian_category with value_gain s > 0 clip(1 + s (v / value_median - 1), 0, 2), v = "
                                "the event's feedback_value observation feature (the value scaled as that feature says), "
                                "value_median in policy.rule.params; a graph's gain_change adds to it: clip(g + gain_change, 0, 2)"),
            "category_forgetting": "1 - a_L (tied to the action)" if forgetting is None else float(forgetting),
            "slot_category_counts": ("the same update, with the same f and g, of the event's time-slot row of the per-slot "
                                     "counts (every slot's row forgets by f), when scoring.config.category_slot_weight > 0; "
                                     "their weight lambda in the scoring until the next decision is category_slot_weight, "
                                     "times clip(1 + slot_change, 0, 2) for a graph with a slot_change"),
            "exposure": ("shown <- f (shown + shown since the last decision) at every decision, with the f of the category "
                         "counts, when scoring.config.category_exposure_prior > 0; record_outcome adds each scored impression's "
                         "candidates per category to 'shown since the last decision'"),
            "outcomes": ("record_outcome (an impression and its clicks) is scored, counted as shown and enters the running "
                         "metric means only when the user has made a decision before it AND it has a clicked and an "
                         "unclicked candidate (every candidate given counts, whatever its id or category: an id absent "
                         "from item_ids.json has popularity 0, a category absent from categories.json counts 0); "
                         "otherwise it changes nothing"),
            "slot_profiles": ("T_slot(event) <- normalise((1 - r) T + r x) at every decision (when beta_ctx != 0); r = "
                              "scoring.config.context_rate, or clip(r + context_change, 0, 1) for a graph with a context_change"),
        },
        "scoring": {
            "formula": ("(1 - p) (w cos(S, c) + (1 - w) cos(L, c)) + p pop(c) + beta_cat log P(cat(c) | user) + beta_ctx cos(T_slot(now), c)"
                        " + beta_trk z_trk(c) (z_trk: the tracker's scores standardised over the candidates); P(cat | user) from "
                        "counts + category_slot_weight x the per-slot counts of the ranking's time slot, + the prior; with "
                        "category_exposure_prior b > 0 the category term is beta_cat (log P(cat(c) | user) - log(shown(cat(c)) + b)). "
                        "P(cat | user) = (mixed count of cat + prior) / (sum of mixed counts + K prior), K = the categories of "
                        "categories.json; a candidate category not among them counts 0 (and 0 shown). Before the user's first "
                        "decision p = 1 (the profiles are empty); the category term is then a constant of the empty state. "
                        "An unknown candidate id has popularity 0"),
            "config": dict(scoring_config),
            "popularity": {"file": POPULARITY_FILE, "item_ids": ITEMS_FILE,
                           "definition": POPULARITY_DEFINITION},
            "categories": {"file": CATEGORIES_FILE, "definition": "the dataset's item categories (index of the category model)"},
        },
        "replay": {
            "action_weights": action_weights,
            "max_action_weight": float(max_action_weight),
            "positive_rating": positive_rating,
            # The dataset's hour / weekday columns are UTC shifted by this (prepare --tz-offset); the
            # runtime applies it to events that come without an explicit hour / weekday.
            "tz_offset_hours": float(tz_offset_hours),
            "reward_metric": reward_metric,
            "metrics": ("the step metric (reward_metric) and the running metric means rank an outcome's candidates by "
                        "score: nDCG@K with binary gains (clicked = 1), discount 1 / log2(rank + 1) over the top K, "
                        "divided by the ideal DCG of the clicks; hit@K = any click in the top K; AUC, MRR (mean over "
                        "clicks of 1 / rank); candidates with equal scores count as the exact expectation over random "
                        "orders of the tied block (interestgym.core.metrics)"),
            "verified_on": {k: v for k, v in verified_on.items() if k not in ("counts",)},
        },
        "encoder": {
            "name": encoder["name"], "kind": encoder["kind"], "embeddings": encoder["embeddings"],
            "dim": int(encoder["dim"]), "fingerprint": encoder["fingerprint"],
        },
        "provenance": {
            "dataset": {"path": str(dataset["path"]), "name": dataset["name"],
                        "manifest_sha256": sha256_file(dataset["manifest"]),
                        "source_format": dataset["source_format"]},
            "run": {"path": str(run["path"]), "model": run["model"], "step": run["step"], "config": run["config"],
                    "reference": run["reference"], "shipped": run.get("shipped")},
        },
        "evaluation": None if evaluation is None else {
            "source": str(evaluation[0]), "sha256": sha256_file(evaluation[0]), "results": _small(evaluation[1]),
        },
    }
    if tracker is not None:
        manifest["tracker"] = {
            "folder": str(tracker["folder"]), "manifest_sha256": str(tracker["manifest_sha256"]),
            "weight": float(scoring_config.get("tracker_weight", 0.0) or 0.0),
            "state": "each user's window of the last k decisions (item ids, action codes, gap buckets) and the weight set at "
                     "the last decision: UserState.tracker; events need item_id",
        }
    if form == "rule":
        # the run shipped its reference rule: no graph, no network; the runtime runs the rule itself
        manifest["policy"].update(onnx_opset=None, input=None, outputs=None, observation_normalisation=None, network=None,
                                  verification=None)
    return manifest


def _small(value: Any, max_list: int = 64) -> Any:
    """A copy of a JSON value without long lists (per-user arrays): the manifest keeps summaries."""
    if isinstance(value, dict):
        return {k: _small(v, max_list) for k, v in value.items() if not (isinstance(v, list) and len(v) > max_list)}
    if isinstance(value, list):
        return [_small(v, max_list) for v in value]
    return value


def seal_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` with ``files`` (the sha256 and size of every file in ``directory``) and the content
    digest added: what :func:`read_verified_manifest` checks."""
    files = {}
    folders = {manifest["tracker"]["folder"]} if manifest.get("tracker") else set()
    for path in sorted(Path(directory).iterdir()):
        if path.is_dir():
            if path.name not in folders:
                raise AssertionError(f"{path}: a folder in the export that the manifest does not declare")
            continue  # a declared sub-folder (the tracker) is sealed by its own manifest, whose sha256 is recorded
        if path.name == MANIFEST_NAME:
            raise AssertionError("the export's files must not include the manifest itself")
        files[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    sealed = {**manifest, "files": files}
    sealed[CONTENT_DIGEST_FIELD] = manifest_digest(sealed)
    return sealed


def write_manifest(directory: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``DIR/manifest.json`` (indented, UTF-8) and return its path."""
    path = Path(directory) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def is_export_manifest(path: str | Path) -> bool:
    """Whether ``path`` is a readable manifest of an export (its ``kind``), without checking anything else."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("kind") == MANIFEST_KIND
    except (ValueError, UnicodeDecodeError, AttributeError):
        return False
