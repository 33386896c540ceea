"""A training run's folder: its file names, and the one reader (and writer) of each file.

``train`` writes a run; ``evaluate``, ``report``, ``export`` and ``quickstart`` read it through this
module only, so no stage imports another to find its way around a run folder::

    RUN/config.json                 resolved TrainConfig + reference rule, agent scoring, protocol, embedding
    RUN/baselines.json              the baselines tuned on validation users (reused while the protocol holds)
    RUN/evaluation.json, .md        written by ``interestgym evaluate``
    RUN/.lock                       flock of the training process (its pid, host, start time)
    RUN/tb/                         TensorBoard event files (a resumed run first drops the points logged
                                    after its checkpoint, then adds a file)
    RUN/checkpoints/checkpoint_<step>.json   record of a checkpoint: step, files + sha256, callback state
    RUN/checkpoints/model_<step>.zip, normaliser_<step>.npz
    RUN/checkpoints/state.json      copy of the newest record (written last: names the last complete checkpoint)
    RUN/best/model.zip, normaliser.npz, info.json    best validation metric so far (info: step, value, sha256s)
    RUN/final/model.zip, normaliser.npz, info.json   end of training
    RUN/report/                     written by ``interestgym report``

Nothing in a run folder is unpickled (run folders get shared, and a pickle runs code when loaded):
``normaliser.npz`` holds VecNormalize's statistics as plain arrays
(:class:`~interestgym.agents.sb3_policy.Normaliser`), ``model.zip`` is SB3's zip read without
unpickling (:func:`~interestgym.agents.sb3_policy.load_ppo`), and ``info.json`` / the checkpoint
records hold the sha256 of both, checked before loading. A model folder (``best/``, ``final/``) is
replaced whole (built beside it, then renamed into place); one holding any other file (e.g. an older
interestgym's ``vecnormalize.pkl``) is refused.

Heavy libraries (torch, stable-baselines3) are imported only by the functions that load models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import read_json_artifact, write_json_atomic

CONFIG_FILE = "config.json"
BASELINES_FILE = "baselines.json"
EVALUATION_FILE = "evaluation.json"
EVALUATION_MARKDOWN = "evaluation.md"
#: Marks a dataset folder (``interestgym.data.dataset.MANIFEST``): a run never goes into one.
DATASET_MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
TENSORBOARD_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_STATE = "state.json"
MODEL_FILE = "model.zip"
NORMALISER_FILE = "normaliser.npz"
INFO_FILE = "info.json"
#: What a model folder holds; anything else in it is refused.
MODEL_FOLDER_FILES = (MODEL_FILE, NORMALISER_FILE, INFO_FILE)
#: The pickled VecNormalize of runs written before normaliser.npz (never loaded).
LEGACY_NORMALISER_FILE = "vecnormalize.pkl"
REPORT_DIR = "report"
#: Which policy the run ships (learned or its reference rule) and why.
SHIPPED_FILE = "shipped.json"
#: The saved models a run has (``--model``).
MODEL_CHOICES = ("best", "final")
#: Numbered checkpoints kept on disk (older ones are deleted).
KEEP_CHECKPOINTS = 3


def is_run_dir(path: str | Path) -> bool:
    """True for a folder written by ``interestgym train`` (config.json, and not a dataset)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and not (path / DATASET_MANIFEST).is_file()


def read_json_or_none(path: str | Path) -> Any:
    """A small JSON file of a run (info.json, state.json), or None when it is absent or damaged
    (callers treat such a file as "not there yet")."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# -------------------------------------------------------------------------------------- config
def is_quickstart_folder(folder: str | Path) -> bool:
    """``folder`` is a quick start's OUT folder (its run is ``folder/run``), not a run folder itself."""
    return (Path(folder) / "run" / CONFIG_FILE).is_file()


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/config.json`` as :func:`interestgym.agents.train.train_run` writes it.

    :raises ArtifactError: when it is missing, not JSON, or has no ``config`` object.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file() and is_quickstart_folder(run_dir):
        raise ArtifactError(f"{path}: missing; {run_dir} looks like a quick start's folder: its run is {Path(run_dir) / 'run'}")
    saved = read_json_artifact(path, "a run directory written by `interestgym train`")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ArtifactError(f"{path}: no 'config' object; expected the config.json written by `interestgym train`")
    return saved


#: What an error in a run's recorded settings adds: the file was not left as train wrote it.
_EDITED = " (not what `interestgym train` writes: the file was edited or damaged)"


def recorded_config(values: dict[str, Any], saved: dict[str, Any], run_dir: str | Path):
    """The :class:`~interestgym.agents.config.TrainConfig` of ``values`` (a run's ``config.json`` settings, with the
    legacy ones and any a resume replaces), checked as `train` checks its options: a wrong type, a value out of range
    or (in a file that says it holds every setting) a missing setting names the file and the field as the file spells
    it (``config.gamma 5: expected a number in (0, 1]``), not a command-line option nobody gave."""
    import re

    from interestgym.agents.config import TrainConfig

    path = Path(run_dir) / CONFIG_FILE
    try:
        config = TrainConfig.from_dict(values, complete=bool(saved.get("config_complete")))
    except InterestGymError as exc:
        raise ArtifactError(f"{path}: {exc}{_EDITED}") from None
    try:
        config.validate()
    except InterestGymError as exc:
        message = re.sub(r"--([a-z][a-z-]*)", lambda m: "config." + m.group(1).replace("-", "_"), str(exc))
        raise ArtifactError(f"{path}: {message}{_EDITED}") from None
    return config


def run_train_config(run_dir: str | Path, saved: dict[str, Any] | None = None):
    """The run's :class:`~interestgym.agents.config.TrainConfig` (embedding name resolved), checked
    (:func:`recorded_config`)."""
    from interestgym.agents.config import LEGACY_SETTINGS

    saved = saved if saved is not None else read_run_config(run_dir)
    run_reference(saved, run_dir)  # another package's rule: installed here at the run's version (said before the ranges)
    # runs saved before a setting existed did without it
    config = recorded_config({**LEGACY_SETTINGS, **saved["config"]}, saved, run_dir)
    if config.embeddings is None:
        # runs whose config.json predates storing the resolved name: the protocol records it
        config.embeddings = (saved.get("protocol") or {}).get("train", {}).get("embeddings")
    if not Path(config.dataset).is_dir():
        raise missing_dataset(run_dir, config.dataset)
    return config


def missing_dataset(run_dir: str | Path, dataset: str | Path) -> ArtifactError:
    """The error of a run whose recorded dataset path points nowhere (the run, or its dataset, moved since training)."""
    return ArtifactError(f"{Path(run_dir) / CONFIG_FILE}: the run was trained on the dataset {dataset}, which is not "
                         "there (moved or removed?); expected that folder: put it back, or set 'config.dataset' in that "
                         "file to where it is now")


def embedding_identity(config: Any) -> dict[str, Any]:
    """Name, fingerprint, dimension and encoder of the embedding a run uses (recorded in ``config.json``; the
    encoder, as ``encode --encoder`` took it, says how to encode another dataset for a transfer)."""
    from interestgym.data.dataset import Dataset

    dataset = Dataset.open(config.dataset)
    name = dataset.resolve_embeddings(config.embeddings)
    matrix, meta = dataset.load_embeddings(name)
    return {"name": name, "fingerprint": meta.get("fingerprint"), "dim": int(matrix.shape[1]), "encoder": meta.get("encoder")}


def dataset_contents(config: Any) -> dict[str, Any]:
    """What of a run's dataset its policy learnt from (recorded in ``config.json``): the users' split, the events
    file, and the manifest's settings the replay reads (action weights, positive rating)."""
    from interestgym.data.dataset import Dataset

    dataset = Dataset.open(config.dataset)
    return {"split_sha256": dataset.users_sha256, "events_sha256": dataset.events_file_sha256,
            "action_weights": dataset.manifest.get("action_weights"), "positive_rating": dataset.manifest.get("positive_rating")}


#: What each part of :func:`dataset_contents` is, in words.
CONTENTS_TEXT = {"split_sha256": "its users' split", "events_sha256": "its events.parquet",
                 "action_weights": "its manifest's action weights", "positive_rating": "its manifest's positive rating"}


def contents_changed(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The parts of a dataset's :func:`dataset_contents` that differ between ``recorded`` and ``now``, in words."""
    return [what for key, what in CONTENTS_TEXT.items() if now.get(key) != recorded.get(key)]


def refuse_inside_dataset(path: str | Path, option: str, expected: str) -> None:
    """Refuse an output folder that is, or lies inside, a dataset folder (its manifest and events found there): a run,
    a search or an evaluation written there mixes its files with the dataset's (``prepare --overwrite`` carries them
    over as the user's own files). An export's folder also holds a manifest.json, but no events: not taken for one."""
    here = Path(os.path.abspath(path))
    for folder in (here, *here.parents):
        if (folder / DATASET_MANIFEST).is_file() and (folder / "events.parquet").is_file():
            where = "is" if folder == here else "lies inside"
            raise InterestGymError(f"{option} {path}: {where} the dataset folder {folder} ({DATASET_MANIFEST} and events.parquet "
                                   f"found); expected {expected} outside it")


def check_run_dataset(run_dir: str | Path, saved: dict[str, Any], config: Any, now: dict[str, Any] | None = None) -> str | None:
    """Refuse a run whose dataset was split again since training (its test users may be the policy's training
    users); a note (else None) when the events or the replay's settings changed under the same split.

    :param now: :func:`dataset_contents` of the dataset as it is (computed when not given).
    :raises InterestGymError: naming the dataset, the run and what to do.
    """
    recorded = saved.get("dataset_contents")
    if not recorded:
        return None  # runs from before the record
    now = now if now is not None else dataset_contents(config)
    if now["split_sha256"] != recorded.get("split_sha256"):
        raise InterestGymError(
            f"{config.dataset}: its users are split differently from when the run {run_dir} was trained on it (prepared again "
            f"since?): its validation and test users may be users the policy was trained on ({Path(run_dir) / CONFIG_FILE} "
            "records the split it learnt from). Train a new run on it, or use the dataset the run was trained on")
    changed = contents_changed(recorded, now)  # the split is the same here
    if not changed:
        return None
    return (f"{config.dataset}: {' and '.join(changed)} changed since the run {run_dir} was trained on it (the same users' split): "
            "the policy replays what the dataset holds now")


def check_run_embedding(run_dir: str | Path, saved: dict[str, Any], config: Any) -> None:
    """Refuse a run whose embedding was re-encoded differently after training: its policy would see
    vectors from another space without any other sign of it."""
    recorded = saved.get("embedding")
    if not recorded:
        return  # runs from before the identity was recorded
    now = embedding_identity(config)
    if (now["fingerprint"], now["dim"]) != (recorded.get("fingerprint"), recorded.get("dim")):
        raise InterestGymError(
            f"{Path(run_dir) / CONFIG_FILE}: the run was trained on embeddings {recorded.get('name')!r} with fingerprint "
            f"{str(recorded.get('fingerprint'))[:16]}... (dim {recorded.get('dim')}); the dataset's {now['name']!r} now has "
            f"fingerprint {str(now['fingerprint'])[:16]}... (dim {now['dim']}): it was re-encoded after training. "
            "Re-encode with the original options, or train again"
        )


def check_run_tracker(run_dir: str | Path, saved: dict[str, Any], config: Any) -> None:
    """Refuse a run whose sequence tracker (``config.sequence``) holds other weights than the ones it was
    trained with (retrained in place): its scores and observations would come from another model."""
    if not getattr(config, "sequence", None):
        return
    trained = ((saved.get("protocol") or {}).get("train") or {}).get("tracker") or {}
    recorded = trained.get("sha256")
    if not recorded:
        return  # runs from before the tracker's identity was recorded
    from interestgym.agents.sequence.term import (
        cached_folds,
        cached_tracker,
        fold_weights,
    )

    now = cached_tracker(str(config.sequence)).info.get("sha256")
    if now != recorded:
        raise ArtifactError(
            f"{Path(run_dir) / CONFIG_FILE}: the run was trained with the tracker {config.sequence} whose weights had "
            f"sha256 {recorded}; that folder now holds {now}: it was retrained after this run. Train the run again, "
            "or point config.sequence at the tracker it was trained with"
        )
    # its training users were scored by the out-of-fold trackers it recorded (none: by the main tracker)
    folds = cached_folds(str(config.sequence))
    now_folds = None if folds is None else fold_weights(folds)
    if now_folds != trained.get("out_of_fold"):
        raise ArtifactError(
            f"{Path(run_dir) / CONFIG_FILE}: the run's training users were scored by "
            + (f"the out-of-fold trackers of {config.sequence} with weights {trained.get('out_of_fold')}"
               if trained.get("out_of_fold") else f"the tracker {config.sequence} itself (no out-of-fold trackers)")
            + "; that folder now has " + (f"out-of-fold trackers with weights {now_folds}" if now_folds else "none")
            + ": they were trained, retrained or removed after this run. Train the run again, or restore the tracker folder")


# ------------------------------------------------------------------------------ tuned baselines
def baselines_file(path: str | Path, flag: str = "--tuned-baselines") -> Path:
    """The ``baselines.json`` that ``path`` names: the file itself, or a run folder's (``RUN/baselines.json``).

    :raises InterestGymError: ``path`` is a folder without one (naming ``flag`` and what was expected).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / BASELINES_FILE).is_file():
            raise InterestGymError(f"{flag} {path}: a folder without {BASELINES_FILE}; expected a {BASELINES_FILE} or a "
                                   "run folder that holds one (`interestgym train` writes it)")
        return path / BASELINES_FILE
    return path


def write_tuned_baselines(path: str | Path, *, metric: str, tune_users: int | None, protocol: dict[str, Any],
                          baselines: dict[str, Any]) -> None:
    """Write a ``baselines.json``: every baseline tuned on validation users, with what it depends on (and the
    identity of the dataset's contents, :func:`dataset_identity`, so that a copy of the dataset folder can reuse it)."""
    doc = {"metric": metric, "split": "valid", "tune_users": tune_users, "protocol": protocol}
    identity = dataset_identity(protocol.get("dataset"))
    if identity is not None:
        doc["dataset_identity"] = identity
    fingerprint = embedding_fingerprint(protocol)
    if fingerprint is not None:
        doc["embedding_fingerprint"] = fingerprint
    write_json_atomic(Path(path), {**doc, "baselines": baselines})


def embedding_fingerprint(protocol: Any) -> str | None:
    """The fingerprint of the encoder behind the embeddings a validation ``protocol`` replays (its dataset's
    ``embeddings/<name>.json``): tuned parameters belong to the vectors they were tuned on, and a dataset
    encoded again under the same name with another encoder (a fine-tuned model, other settings) has other
    vectors. None when it cannot be read."""
    if not isinstance(protocol, dict) or not protocol.get("dataset") or not protocol.get("embeddings"):
        return None
    try:
        meta = json.loads((Path(str(protocol["dataset"])) / "embeddings" / f"{protocol['embeddings']}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = meta.get("fingerprint") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def _same_embeddings(saved: dict[str, Any], protocol: Any) -> bool:
    """The saved tuning's embeddings came from the encoder the run's do (a file from before the check passes)."""
    return saved.get("embedding_fingerprint") is None or saved.get("embedding_fingerprint") == embedding_fingerprint(protocol)


def dataset_identity(dataset: Any) -> str | None:
    """The sha256 of a prepared dataset's manifest (canonical JSON: its source files' sha256, the prepare
    command, counts and split): equal for a copy of the folder, different for any other preparation. None
    when there is no readable manifest at ``dataset``."""
    if not dataset:
        return None
    try:
        manifest = json.loads((Path(str(dataset)) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest()


def _same_protocol(saved: dict[str, Any], protocol: dict[str, Any]) -> bool:
    """The saved tuning's validation protocol is this run's: equal, or equal but for the dataset's path when
    the saved file names the same dataset contents (a copied or moved dataset folder). A file that records
    the contents' identity must match it, at the same path too (a dataset prepared again in its place)."""
    theirs = saved.get("protocol")
    if saved.get("dataset_identity") is not None and not _same_contents(saved, protocol):
        return False
    if not _same_embeddings(saved, protocol):
        return False
    if theirs == protocol:
        return True
    if not isinstance(theirs, dict) or not isinstance(protocol, dict) or saved.get("dataset_identity") is None:
        return False
    def without_path(p: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in p.items() if k != "dataset"}

    return without_path(theirs) == without_path(protocol)


def _same_contents(saved: dict[str, Any], protocol: Any) -> bool:
    """The dataset the saved tuning recorded (its manifest's sha256) is the one ``protocol`` names."""
    return isinstance(protocol, dict) and saved.get("dataset_identity") == dataset_identity(protocol.get("dataset"))


def read_tuned_baselines(path: str | Path, *, metric: str, protocol: dict[str, Any], names: list[str],
                         tune_users: int | None, strict: bool = False) -> dict[str, Any] | None:
    """The tuned baselines of a ``baselines.json`` when they fit (same metric, validation protocol,
    ``tune_users`` and every name in ``names``), else None: the caller tunes again.

    :param strict: raise (naming what differs) instead of returning None; for a file the user gave.
    """
    path = Path(path)
    if not path.is_file():
        if strict:
            raise InterestGymError(f"{path}: missing; expected a baselines.json written by `interestgym train` or `evaluate`")
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        if strict:
            raise InterestGymError(f"{path}: cannot read tuned baselines: {exc}") from None
        return None  # a damaged cache of the tuning: tune again (and rewrite it)
    if not isinstance(saved, dict) or not isinstance(saved.get("baselines"), dict):
        if strict:
            raise InterestGymError(f"{path}: no 'baselines' object; expected a baselines.json written by `interestgym train` or `evaluate`")
        return None
    tuned = saved["baselines"]
    fits = (saved.get("metric") == metric and _same_protocol(saved, protocol) and saved.get("tune_users") == tune_users
            and all(n in tuned for n in names))
    if fits:
        stale = _other_package_versions(tuned, names)
        if not stale:
            return tuned
        if strict:
            raise InterestGymError(f"{path}: {stale}: its parameters were tuned with that code, not this; tune again without "
                                   "--tuned-baselines")
        return None
    if strict:
        raise InterestGymError(f"{path}: tuned for another setting than this run: {_what_differs(saved, tuned, metric, protocol, tune_users, names)}; "
                               "tune again without --tuned-baselines")
    return None


def _other_package_versions(tuned: dict[str, Any], names: list[str]) -> str | None:
    """The first of ``names`` that is another package's rule whose saved tuning came from another package or version
    than the one installed here (or from before tunings recorded it), said as 'X was tuned with A, B is installed'; None
    when every one fits (built-in rules always do)."""
    from interestgym.core.rules import rule_provider

    for name in names:
        here = rule_provider(name)
        saved = tuned.get(name, {}).get("provider") if isinstance(tuned.get(name), dict) else None
        if here is None and saved is None:
            continue
        mine = (here or {}).get("distribution"), (here or {}).get("version")
        theirs = (saved or {}).get("distribution"), (saved or {}).get("version")
        if mine != theirs:
            was = f"{theirs[0]} {theirs[1]}" if saved else "a package version it did not record"
            now = f"{mine[0]} {mine[1]} is installed" if here else "it is not another package's rule here"
            return f"rule {name!r} was tuned with {was}; {now}"
        recorded, installed = (saved or {}).get("source_sha256"), (here or {}).get("source_sha256")
        if recorded is not None and recorded != installed:  # the same version, other code (an editable install edited)
            return (f"rule {name!r} was tuned with {theirs[0]} {theirs[1]} of source sha256 {recorded[:12]}; the code installed "
                    f"at that version differs ({(installed or 'unreadable')[:12]})")
    return None


def _what_differs(saved: dict[str, Any], tuned: dict[str, Any], metric: str, protocol: Any, tune_users: Any,
                  names: Any) -> str:
    """The first fields of a saved tuning that do not match the run's, as 'field X, expected Y'."""
    out = []
    if saved.get("metric") != metric:
        out.append(f"metric {saved.get('metric')!r}, expected {metric!r}")
    if saved.get("tune_users") != tune_users:
        out.append(f"tune_users {saved.get('tune_users')!r}, expected {tune_users!r}")
    if saved.get("dataset_identity") is not None and not _same_contents(saved, protocol):
        now = dataset_identity(protocol.get("dataset")) if isinstance(protocol, dict) else None
        here = protocol.get("dataset") if isinstance(protocol, dict) else protocol
        there = (saved.get("protocol") or {}).get("dataset") if isinstance(saved.get("protocol"), dict) else None
        if there is not None and str(there) != str(here):
            out.append(f"tuned on dataset {there} (manifest sha256 {str(saved['dataset_identity'])[:16]}...), not {here} "
                       f"({str(now)[:16]}...)")
        else:
            out.append(f"dataset contents: manifest sha256 {str(saved['dataset_identity'])[:16]}... when tuned, "
                       f"{str(now)[:16]}... in {here!r} (the data were prepared otherwise since)")
    elif not _same_embeddings(saved, protocol):
        out.append(f"embeddings {protocol.get('embeddings')!r}: encoder fingerprint {str(saved['embedding_fingerprint'])[:16]}... "
                   f"when tuned, {str(embedding_fingerprint(protocol))[:16]}... now (encoded again with another encoder)")
    elif not _same_protocol(saved, protocol):
        theirs, ours = saved.get("protocol") or {}, protocol or {}
        keys = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)] if isinstance(theirs, dict) and isinstance(ours, dict) else []
        out.append("validation protocol " + (", ".join(f"{k} {theirs.get(k)!r} (expected {ours.get(k)!r})" for k in keys[:3])
                                             if keys else f"{theirs!r}, expected {ours!r}"))
    missing = [n for n in names if n not in tuned]
    if missing:
        out.append(f"no tuning of {', '.join(missing[:5])}")
    return "; ".join(out) or "unknown difference"


# ---------------------------------------------------------------------------------- evaluation
def read_evaluation(run_dir: str | Path, path: str | Path | None = None) -> dict[str, Any] | None:
    """``RUN/evaluation.json``, or the evaluation file ``path`` (None if absent).

    :raises ArtifactError: when it exists but is not the JSON ``interestgym evaluate`` writes.
    """
    path = Path(path) if path is not None else Path(run_dir) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); re-run `interestgym evaluate {run_dir}`") from None
    for key in ("header", "summary"):
        if not isinstance(doc, dict) or key not in doc:
            raise ArtifactError(f"{path}: field {key!r} is missing; expected the output of `interestgym evaluate`")
    problem = _evaluation_problem(doc)
    if problem:
        raise ArtifactError(f"{path}: {problem}; expected the output of `interestgym evaluate` (re-run it)")
    return doc


def _evaluation_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with the parts of an evaluation document that the report and quickstart read (None: nothing):
    the header and summary objects, the summary's metric list and its policies, each with a kind and, per metric,
    a mean and a CI that are numbers (or null)."""
    def number(value: Any) -> bool:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))

    def found(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    header, summary = doc["header"], doc["summary"]
    if not isinstance(header, dict):
        return f"field 'header' is {found(header)}, not an object"
    if not isinstance(summary, dict):
        return f"field 'summary' is {found(summary)}, not an object"
    metrics = summary.get("metrics")
    if not (isinstance(metrics, list) and metrics and all(isinstance(m, str) for m in metrics)):
        return f"field 'summary.metrics' is {found(metrics)}; expected a non-empty list of metric names"
    policies = summary.get("policies")
    if not (isinstance(policies, dict) and policies):
        return f"field 'summary.policies' is {found(policies)}; expected an object with one entry per policy evaluated"
    for name, entry in policies.items():
        where = f"summary.policies.{name}"
        if not isinstance(entry, dict):
            return f"field {where!r} is {found(entry)}; expected an object"
        if not isinstance(entry.get("kind"), str):
            return f"field '{where}.kind' is {'missing' if 'kind' not in entry else found(entry['kind'])}; expected a policy kind"
        for block in ("metrics", "diff_vs_reference"):
            values = entry.get(block, {} if block == "diff_vs_reference" else None)
            if not isinstance(values, dict):
                return (f"field '{where}.{block}' is {'missing' if block not in entry else found(values)}; expected an object of "
                        "metric -> {mean, lo, hi}")
            for metric, ci in values.items():
                if not isinstance(ci, dict):
                    return f"field '{where}.{block}.{metric}' is {found(ci)}; expected an object with mean, lo and hi"
                for key in ("mean", "lo", "hi"):
                    if not number(ci.get(key)) or (block == "diff_vs_reference" and ci.get(key) is None):
                        return f"field '{where}.{block}.{metric}.{key}' is {'missing' if key not in ci else found(ci[key])}; expected a number"
    return None


# -------------------------------------------------------------------------------------- models
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(path: Path, expected_sha: Any, named_by: Path) -> bytes:
    """The bytes of ``path`` if its sha256 is the one recorded in ``named_by``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing (named by {named_by})") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not isinstance(expected_sha, str):
        raise ArtifactError(f"{named_by}: records no checksum of {path.name}; expected one per file (written by `interestgym train`)")
    if sha256_bytes(data) != expected_sha:
        raise ArtifactError(f"{path}: its sha256 differs from the one {named_by.name} recorded when it was written (the "
                            f"file, or {named_by.name}, was damaged or changed since)")
    return data


def legacy_file_error(path: Path) -> ArtifactError:
    return ArtifactError(f"{path}: a pickled VecNormalize written by an older interestgym; this version never unpickles "
                         "run files (a pickle can run code when loaded). Re-train the run with this version "
                         "(`interestgym train`); there is no converter, since converting would mean unpickling it")


def model_step(run_dir: str | Path, which: str) -> int | None:
    """The training step of the run's ``best`` / ``final`` model (None when absent or unrecorded)."""
    folder = Path(run_dir) / which
    if not (folder / MODEL_FILE).is_file():
        return None
    step = (read_json_or_none(folder / INFO_FILE) or {}).get("step")
    return int(step) if isinstance(step, int) else None


def write_model_folder(folder: str | Path, model: Any, vecnorm: Any | None, info: dict[str, Any]) -> None:
    """Write ``best/`` or ``final/``: model.zip, normaliser.npz and info.json (``info`` + the files'
    sha256), replacing the folder whole: it is built beside (``.best.new``) and renamed into place,
    so a kill leaves either the old folder or the new one, never a mix."""
    from interestgym.agents.sb3_policy import Normaliser, model_bytes

    folder = Path(folder)
    files = {MODEL_FILE: model_bytes(model)}
    if vecnorm is not None:
        files[NORMALISER_FILE] = Normaliser.from_vecnormalize(vecnorm).to_bytes()
    new, old = folder.with_name(f".{folder.name}.new"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir(parents=True)
    for name, data in files.items():
        (new / name).write_bytes(data)
    write_json_atomic(new / INFO_FILE, {**info, "files": {name: sha256_bytes(data) for name, data in files.items()}})
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.rename(folder, old)
    os.rename(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def settle_model_folders(run_dir: str | Path) -> None:
    """Finish a model-folder swap a kill interrupted (between its two renames), and drop leftovers.
    Called by ``train`` (under the run's lock) before it writes."""
    run_dir = Path(run_dir)
    for which in MODEL_CHOICES:
        folder, new, old = run_dir / which, run_dir / f".{which}.new", run_dir / f".{which}.old"
        if not folder.exists() and (new / INFO_FILE).is_file():
            os.rename(new, folder)
        elif not folder.exists() and old.is_dir():
            os.rename(old, folder)
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def load_normaliser(path: str | Path, expected_sha: str | None = None, named_by: Path | None = None):
    """A normaliser ``.npz`` as a frozen :class:`~interestgym.agents.sb3_policy.Normaliser` (checked
    against ``expected_sha`` when given)."""
    from interestgym.agents.sb3_policy import Normaliser

    path = Path(path)
    if path.name.endswith(".pkl"):
        raise legacy_file_error(path)
    if expected_sha is not None:
        data = read_verified(path, expected_sha, named_by or path)
    else:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return Normaliser.from_bytes(data, path)


@dataclass
class TrainedModel:
    """A run's saved model with everything needed to act like it did in validation."""

    run_dir: Path
    which: str
    model: Any
    vecnormalize: Any | None
    config: dict[str, Any]
    step: int | None


def _check_model_folder(folder: Path) -> dict[str, Any]:
    """The folder's info.json, after refusing a folder that holds anything but the model's files."""
    names = sorted(p.name for p in folder.iterdir())
    if LEGACY_NORMALISER_FILE in names:
        raise legacy_file_error(folder / LEGACY_NORMALISER_FILE)
    unexpected = [n for n in names if n not in MODEL_FOLDER_FILES]
    if unexpected:
        raise ArtifactError(f"{folder / unexpected[0]}: unexpected file in a model folder; it holds only {', '.join(MODEL_FOLDER_FILES)} "
                            "and nothing else is loaded or trusted (remove it, or re-train the run)")
    info = read_json_or_none(folder / INFO_FILE)
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict) or MODEL_FILE not in info["files"]:
        raise ArtifactError(f"{folder / INFO_FILE}: missing, damaged or without the files' checksums; expected the info.json "
                            "`interestgym train` writes with the model (an older run: re-train it)")
    return info


def load_model(run_dir: str | Path, which: str = "best", *, device: str = "cpu") -> TrainedModel:
    """Load ``RUN/<which>/model.zip`` (+ its normaliser) and ``RUN/config.json``, checking both files
    against the checksums in ``info.json``; nothing is unpickled.

    While the run is training, a read that meets ``<which>/`` being replaced (two renames: absent for an instant, or
    ``info.json`` of one model and ``model.zip`` of the next) is tried again, for up to ~2 s, before it is an error.

    :raises ArtifactError: naming the missing, damaged, unexpected or unreadable file.
    """
    from interestgym.agents.run_lock import training_holder

    pause = 0.02
    for attempt in range(8):
        try:
            return _load_model_once(run_dir, which, device=device)
        except (ArtifactError, OSError):
            if attempt == 7 or which not in MODEL_CHOICES or training_holder(Path(run_dir)) is None:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.5)
    raise AssertionError("unreachable")


def _load_model_once(run_dir: str | Path, which: str, *, device: str) -> TrainedModel:
    from interestgym.agents.sb3_policy import Normaliser, load_ppo

    run_dir = Path(run_dir)
    if which not in MODEL_CHOICES:
        raise ArtifactError(f"--model {which!r}: expected {' or '.join(MODEL_CHOICES)}")
    config = read_run_config(run_dir)
    folder = run_dir / which
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        other = "final" if which == "best" else "best"
        hint = f" (the run has a {other} model: --model {other})" if (run_dir / other / MODEL_FILE).is_file() else ""
        if (run_dir / f".{which}.new").is_dir() or (run_dir / f".{which}.old").is_dir():
            hint = f" (a kill interrupted its replacement: `interestgym train {config['config'].get('dataset', 'DATASET')} --run-dir {run_dir} --resume` repairs it)"
        raise ArtifactError(f"{model_path}: missing; no {which} model in this run{hint}")
    info = _check_model_folder(folder)
    files = info["files"]
    vecnormalize = None
    if NORMALISER_FILE in files or (folder / NORMALISER_FILE).exists():
        raw = read_verified(folder / NORMALISER_FILE, files.get(NORMALISER_FILE), folder / INFO_FILE)
        vecnormalize = Normaliser.from_bytes(raw, folder / NORMALISER_FILE)
    clip_range = (config.get("config") or {}).get("clip_range", 0.2)
    model = load_ppo(read_verified(model_path, files.get(MODEL_FILE), folder / INFO_FILE), model_path, device=device,
                     clip_range=clip_range if isinstance(clip_range, (int, float)) else 0.2)
    step = info.get("step")
    return TrainedModel(run_dir=run_dir, which=which, model=model, vecnormalize=vecnormalize, config=config,
                        step=int(step) if isinstance(step, int) else None)


# -------------------------------------------------------------------------------------- policies
def run_scoring(run_dir: str | Path, saved: dict[str, Any] | None = None):
    """The agent's fixed ScoringConfig recorded in a run's config.json (plain scoring if absent)."""
    from interestgym.core.interest import ScoringConfig

    saved = saved if saved is not None else read_run_config(run_dir)
    try:
        return ScoringConfig(**(saved.get("agent_scoring") or {}))
    except TypeError as exc:
        raise ArtifactError(f"{Path(run_dir) / CONFIG_FILE}: agent_scoring: {exc}") from None


def run_reference(saved: dict[str, Any], run_dir: str | Path | None = None):
    """The run's tuned reference rule (None for a run without one); another package's rule must be installed at the
    version the run recorded (:func:`~interestgym.core.rules.rule_from_record`; ``run_dir`` names the file it says)."""
    from interestgym.core.rules import rule_from_record

    reference = saved.get("reference")
    where = f"{Path(run_dir) / CONFIG_FILE}" if run_dir is not None else f"the run's {CONFIG_FILE}"
    return rule_from_record(reference, f"{where} (reference)") if reference else None


def load_run_policy(run_dir: str | Path, which: str = "best", *, device: str = "cpu", name: str = "ppo"):
    """The ``best`` or ``final`` model of a run as a Policy (with the run's fixed scoring terms; a
    residual run's model is composed with its reference rule, as in training)."""
    from interestgym.agents.sb3_policy import policy_from_model
    from interestgym.envs.policies import ResidualPolicy

    trained = load_model(run_dir, which, device=device)
    learned = policy_from_model(trained.model, trained.vecnormalize, name=name, scoring=run_scoring(run_dir, trained.config))
    if (trained.config.get("config") or {}).get("policy_form") == "residual" and trained.config.get("reference"):
        names = run_change_names(run_dir, trained.config, trained.model.policy.action_space.shape[0])
        return ResidualPolicy(run_reference(trained.config, run_dir), learned, name=name, names=names)
    return learned


def run_change_names(run_dir: str | Path, saved: dict[str, Any], width: int) -> tuple[str, ...]:
    """The components of a residual run's learned change: ``config.json``'s ``action_space.names`` (runs
    that recorded other names, from before the residual form's extra components, are read from the
    model's width and whether a tracker is attached).

    :raises ArtifactError: when they are not exactly what the run's settings give (a tracker component
        with ``sequence``, a gain with ``category_gain`` and a reference that counts categories, a context
        change with ``context_lever`` and a reference with time-slot profiles, a slot change with ``slot_lever``
        and a reference that weighs the category counts per time of day) or not ``width`` long.
    """
    from interestgym.agents.config import LEGACY_SETTINGS, active_levers

    from interestgym.core.protocol import (
        RESIDUAL_LAYOUTS,
        residual_action_names,
        residual_names_for_width,
    )

    recorded = (saved.get("action_space") or {}).get("names")
    config = {**LEGACY_SETTINGS, **(saved.get("config") or {})}
    tracker = bool(config.get("sequence"))
    # a lever belongs to the run exactly when its setting was on and the reference scores with its term
    reference = run_reference(saved, run_dir)
    scoring = getattr(reference, "scoring", None)
    gain, context, slot = active_levers(config["category_gain"], config["context_lever"], scoring, config["slot_lever"])
    expected = residual_action_names(tracker=tracker, gain=gain, context=context, slot=slot)
    names = tuple(recorded) if isinstance(recorded, list) else None
    if names not in RESIDUAL_LAYOUTS:  # runs from before the residual components were recorded by name
        names = residual_names_for_width(width, tracker=tracker)
    if names == expected and len(expected) != width:
        # the run's settings and names agree: the model is what does not fit (e.g. copied in from another run)
        raise ArtifactError(
            f"{Path(run_dir)}: the residual model has {width} outputs; this run's policy changes {len(expected)} components "
            f"({', '.join(expected)}, from its config.json): the model was not trained by this run (copied in from "
            "another?); evaluate or export the run that trained it, or train this one again")
    if names != expected or len(expected) != width:
        raise ArtifactError(
            f"{Path(run_dir) / CONFIG_FILE}: action_space.names {recorded} for a residual model with {width} outputs; expected "
            f"{list(expected)} (sequence {config.get('sequence')!r}, category_gain {config['category_gain']}, context_lever "
            f"{config['context_lever']}, slot_lever {config['slot_lever']}, reference `{getattr(reference, 'name', None)}` with "
            f"beta_cat {getattr(scoring, 'beta_cat', None)}, beta_ctx {getattr(scoring, 'beta_ctx', None)} and category_slot_weight "
            f"{getattr(scoring, 'category_slot_weight', None)})")
    return names


# ------------------------------------------------------------------------------------ shipping
def model_identity(run_dir: str | Path, which: str) -> dict[str, Any] | None:
    """Which files a ``best`` / ``final`` model is (``shipped``: the model ``shipped.json`` names): its folder, step
    and the model file's sha256 from ``info.json``; None for a rule or a model that is not there. An evaluation
    records it, so that what reads the evaluation later can tell whether it is of the model now in the folder."""
    if which == "shipped":
        which = shipped_choice(read_shipped(run_dir) or {}, run_dir)
        if which == "rule":
            return None
    folder = Path(run_dir) / which
    info = read_json_or_none(folder / INFO_FILE)
    if which not in MODEL_CHOICES or not (folder / MODEL_FILE).is_file() or not isinstance(info, dict):
        return None
    return {"model": which, "step": info.get("step"), "sha256": (info.get("files") or {}).get(MODEL_FILE)}


def shipped_choice(decision: dict[str, Any], run_dir: str | Path) -> str:
    """What a shipping decision (``shipped.json``, or an evaluation's copy of it) ships: ``rule``, or the model folder
    it names (``best`` / ``final``; a decision that names none: the run's best, else final)."""
    return "rule" if decision.get("policy") == "rule" else str(decision.get("model") or best_or_final(run_dir))


def evaluated_policy(header: dict[str, Any], run_dir: str | Path) -> str:
    """What an evaluation of a run evaluated: ``rule``, ``best`` or ``final``. An evaluation of ``shipped`` is of what
    the run shipped when it was evaluated (its header's copy of ``shipped.json``; the file now, for an evaluation that
    has none): a run trained further since may ship another policy."""
    evaluated = str(header.get("model") or "best")
    if evaluated != "shipped":
        return evaluated
    decision = header.get("shipped") if isinstance(header.get("shipped"), dict) else (read_shipped(run_dir) or {})
    return shipped_choice(decision, run_dir)


def check_shipped_model(run_dir: str | Path) -> None:
    """Refuse a run that ships its learned model when the model folder is no longer the model the ship decision
    validated (copied in from another run, or written without a decision): its proof is of another model.

    :raises ArtifactError: naming both models and how to decide again.
    """
    decision = read_shipped(run_dir) or {}
    validated = decision.get("validated")
    if decision.get("policy") != "learned" or not isinstance(validated, dict) or not validated.get("sha256"):
        return  # the rule, or a decision from before the record
    which = str(validated.get("model"))
    now = model_identity(run_dir, which) or {}
    if now.get("sha256") != validated["sha256"]:
        raise ArtifactError(
            f"{Path(run_dir) / SHIPPED_FILE}: the run ships the {which} model the decision validated, step "
            f"{validated.get('step')} (sha256 {str(validated['sha256'])[:12]}...); {Path(run_dir) / which} now holds "
            + (f"step {now.get('step')} (sha256 {str(now.get('sha256'))[:12]}...)" if now else "no model")
            + ": it changed since the decision (copied in, or trained without one). Decide again with "
            f"`interestgym train DATASET --run-dir {run_dir} --resume`, or restore the model")


def best_or_final(run_dir: str | Path) -> str:
    """``best`` when the run has a best model (validation ran), else ``final``."""
    return "best" if (Path(run_dir) / "best" / MODEL_FILE).is_file() else "final"


def write_shipped(run_dir: str | Path, decision: dict[str, Any]) -> None:
    """Record which policy the run ships (learned or the reference rule) and why."""
    write_json_atomic(Path(run_dir) / SHIPPED_FILE, decision)


def read_shipped(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN/shipped.json`` (None for a run that has not finished training)."""
    path = Path(run_dir) / SHIPPED_FILE
    if not path.is_file():
        return None
    doc = read_json_artifact(path, "the shipping decision written by `interestgym train`")
    if not isinstance(doc, dict) or doc.get("policy") not in ("learned", "rule"):
        raise ArtifactError(f"{path}: field 'policy' is {doc.get('policy') if isinstance(doc, dict) else doc!r}; expected learned or rule")
    return doc


def load_shipped_policy(run_dir: str | Path, *, device: str = "cpu"):
    """The policy the run ships: its learned model, or its reference rule (named after the rule)."""
    decision = read_shipped(run_dir)
    if decision is None:
        raise ArtifactError(f"{Path(run_dir) / SHIPPED_FILE}: missing; the run has not finished training (or predates shipping decisions)")
    if decision["policy"] == "rule":
        return run_reference(read_run_config(run_dir), run_dir)
    return load_run_policy(run_dir, decision.get("model") or "best", device=device)


def load_run_choice(run_dir: str | Path, which: str, *, device: str = "cpu"):
    """``shipped`` (what the run ships: its learned model or its reference rule), ``best`` or ``final``."""
    if which == "shipped":
        policy = load_shipped_policy(run_dir, device=device)
        decision = read_shipped(run_dir) or {}
        policy.name = "ppo" if decision.get("policy") == "learned" else f"shipped:{policy.name}"
        return policy
    return load_run_policy(run_dir, which, device=device)


def has_policy(run_dir: str | Path, which: str) -> bool:
    """Whether the run has that policy (``shipped``: a shipping decision; else the model file)."""
    if which == "shipped":
        return (Path(run_dir) / SHIPPED_FILE).is_file()
    return (Path(run_dir) / which / MODEL_FILE).is_file()
