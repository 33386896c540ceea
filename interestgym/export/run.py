"""``interestgym export RUN --out DIR``: a trained run's policy -> ONNX graph + manifest.

:func:`export_run` reads the run through :mod:`interestgym.agents.run_folder`, builds the graph
(:mod:`~interestgym.export.actor`), checks it against SB3 on recorded observations
(:mod:`~interestgym.export.parity`), and writes the directory atomically
(:mod:`~interestgym.export.writer`) with the manifest :mod:`interestgym.runtime.manifest` builds::

    DIR/policy.onnx      raw observation -> (action, strengths)
    DIR/item_ids.json    the dataset's item ids, in embedding-row order
    DIR/popularity.npy   pop(c) of those items (float32; training users' positives only)
    DIR/categories.json  the dataset's categories (index of the category model)
    DIR/tracker/         only when the score weighs a sequence tracker (a tracker/profile mixture
                         reference, or an agent trained with ``--sequence``): the tracker's own export
                         (:mod:`~interestgym.export.tracker`), whose tracker.json sha256 the manifest records
    DIR/manifest.json    format version, features, action / update / scoring semantics and
                         parameters, encoder, provenance, evaluation, sha256 of every file
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interestgym import __version__
from interestgym.agents.run_folder import (
    CONFIG_FILE,
    EVALUATION_FILE,
    SHIPPED_FILE,
    check_run_dataset,
    check_run_embedding,
    check_run_tracker,
    check_shipped_model,
    contents_changed,
    dataset_contents,
    evaluated_policy,
    load_model,
    model_identity,
    read_evaluation,
    read_run_config,
    read_shipped,
    run_change_names,
    run_reference,
    run_scoring,
    run_train_config,
    shipped_choice,
)
from interestgym.agents.sb3_policy import policy_from_model
from interestgym.core.features import FEATURES, N_FEATURES
from interestgym.core.protocol import (
    ACTION_NAMES,
    ENV_ACTION_NAMES,
    RESIDUAL_ACTION_NAMES,
)
from interestgym.data.dataset import MANIFEST as DATASET_MANIFEST
from interestgym.data.dataset import Dataset
from interestgym.envs.policies import ResidualPolicy
from interestgym.envs.replay_data import load_replay_data
from interestgym.errors import ArtifactError
from interestgym.export.actor import ONNX_OPSET, build_actor, export_onnx
from interestgym.export.parity import graph_action_diff, recorded_observations
from interestgym.export.tracker import write_tracker_files
from interestgym.export.writer import write_export_directory
from interestgym.io import sha256_file
from interestgym.runtime.manifest import (
    CATEGORIES_FILE,
    ITEMS_FILE,
    POLICY_FILE,
    POPULARITY_FILE,
    build_manifest,
    read_verified_manifest,
)
from interestgym.runtime.tracker import TRACKER_MANIFEST

#: The export's sub-folder holding the sequence tracker a policy's score weighs.
TRACKER_FOLDER = "tracker"


@dataclass
class ExportResult:
    """What :func:`export_run` wrote and measured."""

    out: Path
    manifest: dict[str, Any]
    max_abs_action_diff: float
    n_verified: int
    #: why the run's evaluation.json is not in the manifest (None when it is, or when there is none)
    evaluation_note: str | None = None
    #: what of the run's dataset changed since training (:func:`check_run_dataset`; None when nothing did)
    dataset_note: str | None = None


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    which: str = "shipped",
    verify_observations: int = 1000,
    verify_split: str = "test",
) -> ExportResult:
    """Export a run's policy to ``out`` (atomically; see
    :func:`~interestgym.export.writer.write_export_directory`).

    :param which: ``shipped`` (default: what ``RUN/shipped.json`` says the run ships: its learned
        model, or its reference rule, which exports without a graph), ``best`` or ``final`` (that model).

    A learned model's graph is checked before anything is written: on up to ``verify_observations``
    observations recorded by replaying ``verify_split`` users with the trained policy, its outputs must
    equal SB3's deterministic ``predict`` (with the normaliser) within 1e-5; the largest difference
    goes into the manifest. A residual run's graph holds the learned change; the manifest names the
    reference rule the runtime adds it to.

    :raises ArtifactError: for a missing / unreadable run, a mismatching graph, or an unsafe ``out``.
    """
    run_dir = Path(run_dir)
    saved = read_run_config(run_dir)
    shipped = None
    if which == "shipped":
        shipped = read_shipped(run_dir)
        if shipped is None:
            raise ArtifactError(f"{run_dir / SHIPPED_FILE}: missing; the run has not finished training (or predates shipping "
                                "decisions): export a model with --model best or --model final")
        which = shipped_choice(shipped, run_dir)
    run = load_model(run_dir, which) if which != "rule" else None  # names a missing or damaged model file first
    if shipped is not None:
        check_shipped_model(run_dir)  # the proof in shipped.json is of the model in the folder
    config = run_train_config(run_dir, saved)
    if not config.dataset:
        raise ArtifactError(f"{run_dir / CONFIG_FILE}: field config.dataset is empty; expected the training dataset's path")
    check_run_embedding(run_dir, saved, config)
    check_run_tracker(run_dir, saved, config)
    contents = dataset_contents(config)
    dataset_note = check_run_dataset(run_dir, saved, config, contents)  # a split changed since training is refused
    dataset = Dataset.open(config.dataset)
    emb_name = dataset.resolve_embeddings(config.embeddings)
    _, emb_meta = dataset.load_embeddings(emb_name)
    data = load_replay_data(dataset, emb_name, config.protocol_spec(verify_split))
    reference = run_reference(saved, run_dir)
    # A score that weighs a sequence tracker (a mixture reference, or an agent trained with `--sequence`,
    # whose sixth action component moves the weight) exports the tracker beside the policy: the replay
    # below scores with it as training did, and the runtime keeps each user's window.
    tracker_run = config.sequence or None
    if tracker_run is None and reference is not None and reference.scoring.tracker_weight:
        raise ArtifactError(f"{run_dir / CONFIG_FILE}: the reference `{reference.name}` weighs a sequence tracker but "
                            "config.sequence names none; expected the tracker run the run was trained with")
    # the replay below scores and observes as training did (tracker term, extra observations)
    data = config.attach_extras(data)
    extra_obs = data.extra_obs if which != "rule" else ()
    rule = None if reference is None else reference.describe()

    if which == "rule":
        form, scoring, graph_bytes, graph_facts, change_names = "rule", reference.scoring, None, {}, None
        diff, n_verified, step = 0.0, 0, None
    else:
        assert run is not None
        _check_replay_spaces(run, N_FEATURES + len(extra_obs))
        width = run.model.policy.action_space.shape[0]
        form = "residual" if width >= len(RESIDUAL_ACTION_NAMES) else "absolute"
        if form == "residual" and reference is None:
            raise ArtifactError(f"{run_dir / CONFIG_FILE}: a residual model without a reference rule; expected the run's 'reference'")
        change_names = run_change_names(run_dir, saved, width) if form == "residual" else None
        scoring = reference.scoring if form == "residual" else run_scoring(run_dir, saved)
        actor = build_actor(run.model, run.vecnormalize, strength_box=(0.0, 1.0))
        # Observations to verify on: the verify split's decisions, replayed with the trained policy;
        # the graph must give the model's own output (the change, for a residual model).
        model_policy = policy_from_model(run.model, run.vecnormalize, scoring=scoring)
        replayed = ResidualPolicy(reference, model_policy, names=change_names) if form == "residual" else model_policy
        obs = recorded_observations(data, replayed, config.reward, verify_observations)
        expected = model_policy.act(obs) if len(obs) else np.zeros((0, run.model.policy.action_space.shape[0]), np.float32)
        with tempfile.TemporaryDirectory(prefix="interestgym-export-") as scratch:
            graph = Path(scratch) / POLICY_FILE
            export_onnx(actor, N_FEATURES + len(extra_obs), graph)
            diff = graph_action_diff(graph, obs, expected)
            graph_bytes = graph.read_bytes()
        norm = run.vecnormalize
        rms = getattr(norm, "obs_rms", None) if norm is not None and norm.norm_obs else None
        graph_facts = {
            "normalisation": None if rms is None else {"mean": rms.mean, "var": rms.var, "epsilon": norm.epsilon, "clip_obs": norm.clip_obs},
            "algorithm": type(run.model).__name__,
            "activation": type(run.model.policy.activation_fn()).__name__ if hasattr(run.model.policy, "activation_fn") else None,
        }
        n_verified, step = len(obs), run.step

    with tempfile.TemporaryDirectory(prefix="interestgym-export-tracker-") as scratch_name:
        scratch = Path(scratch_name)
        tracker = None
        if tracker_run is not None:  # written first: the policy manifest records its manifest's sha256
            (scratch / TRACKER_FOLDER).mkdir()
            write_tracker_files(scratch / TRACKER_FOLDER, tracker_run, which="best", dataset=dataset.path)
            tracker = {"folder": TRACKER_FOLDER, "manifest_sha256": sha256_file(scratch / TRACKER_FOLDER / TRACKER_MANIFEST)}

        def write_files(tmp: Path) -> None:
            if graph_bytes is not None:
                (tmp / POLICY_FILE).write_bytes(graph_bytes)
            if tracker is not None:
                shutil.copytree(scratch / TRACKER_FOLDER, tmp / TRACKER_FOLDER)
            (tmp / ITEMS_FILE).write_text(json.dumps([str(i) for i in dataset.items["item_id"].astype(str)], ensure_ascii=False), encoding="utf-8")
            (tmp / CATEGORIES_FILE).write_text(json.dumps(list(data.category_names), ensure_ascii=False), encoding="utf-8")
            np.save(tmp / POPULARITY_FILE, np.ascontiguousarray(data.item_popularity, dtype=np.float32), allow_pickle=False)

        evaluation, evaluation_note = _evaluation_of(run_dir, which, contents)
        manifest = build_manifest(
            interestgym_version=__version__,
            onnx_opset=ONNX_OPSET,
            normalisation=graph_facts.get("normalisation"),
            algorithm=graph_facts.get("algorithm", "rule"),
            net_arch=None if form == "rule" else saved.get("config", {}).get("net_arch"),
            activation=graph_facts.get("activation"),
            verified=n_verified,
            verify_split=verify_split,
            max_abs_action_diff=diff,
            scoring_config=scoring.as_dict(),
            action_weights=dataset.action_weights,
            max_action_weight=data.max_action_weight,
            positive_rating=dataset.positive_rating,
            tz_offset_hours=dataset.manifest.get("reader", {}).get("tz_offset_hours", 0.0),
            reward_metric=config.reward,
            verified_on=data.describe(),
            encoder={"name": emb_meta.get("encoder", emb_name), "kind": emb_meta.get("kind"), "embeddings": emb_name,
                     "dim": data.dim, "fingerprint": emb_meta.get("fingerprint")},
            dataset={"path": dataset.path, "name": dataset.name, "manifest": dataset.path / DATASET_MANIFEST,
                     "source_format": dataset.manifest.get("source", {}).get("format")},
            run={"path": run_dir, "model": which, "step": step, "config": saved.get("config"),
                 "reference": saved.get("reference"), "shipped": shipped},
            evaluation=None if evaluation is None else (run_dir / EVALUATION_FILE, evaluation),
            form=form,
            rule=rule if form in ("residual", "rule") else None,
            n_outputs=None if form == "rule" else width,
            tracker=tracker,
            extra_obs=extra_obs,
            change_names=change_names,
        )
        write_export_directory(out, write_files, manifest)
    return ExportResult(out=Path(out), manifest=read_verified_manifest(out), max_abs_action_diff=diff, n_verified=n_verified,
                        evaluation_note=evaluation_note, dataset_note=dataset_note)


def _evaluation_of(run_dir: Path, exported: str, contents: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The run's ``evaluation.json`` when it is the test evaluation of the exported policy (``rule``, ``best`` or
    ``final``; an evaluation of ``shipped`` is of what ``shipped.json`` names), under the run's own protocol, of the
    dataset as it is now (``contents``: :func:`dataset_contents`); else None and why: an export of the best model must
    not carry the numbers of the shipped rule, nor a production manifest those of a side evaluation (another split,
    another protocol) or of events the export's popularity and catalogue no longer come from."""
    evaluation = read_evaluation(run_dir)
    if evaluation is None:
        return None, None
    header = evaluation.get("header") or {}
    evaluated = evaluated_policy(header, run_dir)  # an evaluation of `shipped`: of what the run shipped then
    path = run_dir / EVALUATION_FILE
    what = {"rule": "the shipped rule", "best": "the best model", "final": "the final model"}
    if evaluated != exported:
        again = f"interestgym evaluate {run_dir}" + ("" if exported == "rule" else f" --model {exported}")
        shipped_since = header.get("model") == "shipped" and evaluated != shipped_choice(read_shipped(run_dir) or {}, run_dir)
        then = " (what the run shipped then)" if shipped_since else ""
        return None, (f"{path} evaluates {what.get(evaluated, evaluated)}{then}, not {what.get(exported, exported)} exported here: "
                      f"not in the manifest (`{again}` records its metrics, replacing the run's evaluation.json)")
    recorded = header.get("model_identity")
    if isinstance(recorded, dict) and exported in ("best", "final"):
        now = model_identity(run_dir, exported) or {}
        if recorded.get("model") not in (None, exported):  # shipped.json named another model when it was evaluated
            return None, (f"{path} evaluates {what.get(str(recorded.get('model')), recorded.get('model'))} (what the run shipped "
                          f"then), not {what[exported]} exported here: not in the manifest "
                          f"(`interestgym evaluate {run_dir} --model {exported}` records its metrics, replacing the run's evaluation.json)")
        if recorded.get("sha256") != now.get("sha256"):
            return None, (f"{path} evaluates {what[exported]} of step {recorded.get('step')}, and the run has trained further "
                          f"since (the folder now holds step {now.get('step')}): not in the manifest "
                          f"(`interestgym evaluate {run_dir} --model {exported}` records its metrics, replacing the run's evaluation.json)")
    evaluated = header.get("dataset_contents")
    if isinstance(evaluated, dict) and evaluated != contents:  # evaluations before session 22 did not record it
        changed = contents_changed(evaluated, contents)
        return None, (f"{path} evaluates the dataset as it was: {' and '.join(changed)} changed since, and the export is "
                      f"built from it as it is now: not in the manifest (`interestgym evaluate {run_dir}` records its metrics)")
    if header.get("split", "test") != "test" or header.get("protocol_changed"):
        why = (f"split {header.get('split')!r}" if header.get("split", "test") != "test"
               else "a protocol other than the run's")
        return None, (f"{path} is an evaluation on {why}, not the run's test evaluation: not in the manifest "
                      f"(`interestgym evaluate {run_dir}` to record the test metrics)")
    return evaluation, None


def _check_replay_spaces(run: Any, n_obs: int) -> None:
    """The model must act in the replay env's action box and observe this interestgym's features."""
    policy_box = run.model.policy.action_space
    width = policy_box.shape[0] if len(policy_box.shape) == 1 else None
    if width is None or not (width == len(ACTION_NAMES) or len(RESIDUAL_ACTION_NAMES) <= width <= len(ENV_ACTION_NAMES)) or not (
            np.all(policy_box.low == -1.0) and np.all(policy_box.high == 1.0)):
        raise ArtifactError(f"{run.run_dir}: the model's action space is {policy_box}; expected Box(-1, 1, (4,)) (the replay env's) "
                            f"or Box(-1, 1, (5,)) .. ({len(ENV_ACTION_NAMES)},) (a residual policy's: keep, then tracker, gain, "
                            "context and slot changes)")
    if run.model.policy.observation_space.shape != (n_obs,):
        raise ArtifactError(
            f"{run.run_dir}: the model observes {run.model.policy.observation_space.shape} features; this interestgym "
            f"computes {n_obs} for its settings ({', '.join(f.name for f in FEATURES[:3])}, ...): export with the version that trained it"
        )
