"""``interestgym evaluate``: every policy on the same held-out users, with uncertainty.

Protocol (printed above every table and stored in ``evaluation.json``):

1. The tunable baselines are tuned on **validation** users (grid search, :mod:`interestgym.agents.rules`)
   with the selection metric (the run's reward metric, nDCG@10 by default). A run's ``baselines.json``
   is reused when it was tuned with the same metric and protocol.
2. The trained policy (a run's ``best`` or ``final`` model, deterministic) and every baseline replay the
   users of ``--split`` (test by default) through the batched evaluator: identical users, identical
   candidate sets, so every comparison is paired.
3. Every metric is averaged per user, then over users; 95% CIs by the percentile bootstrap over users;
   paired differences against the **reference** = the non-oracle baseline with the best validation
   score (the best tuned rule; ``--reference NAME`` picks another), with the paired bootstrap over
   users.
4. Synthetic data (``truth.npy``): the **oracle** ranks candidates by the user's true interest in the
   candidate's topic at the last event before the scoring point (it knows what the generator knows;
   candidates of one topic tie), and every policy's metrics are also given as a fraction of the
   oracle's (ratio of means). **Tracking error** of a policy at a decision (after its update) is
   ``1 - cos(v, theta)``, where theta is the true topic distribution at that event and v the topic
   profile implied by the policy's scoring direction u = normalise(w S + (1 - w) L):
   ``v_k = max(0, cos(u, c_k))`` with c_k the normalised mean embedding of topic k's items. 0 = the
   profile points at the true mixture's topics in the right proportions; 1 = orthogonal (an empty
   profile scores 1). It is averaged per user, then over users. It reads the embedding profiles only; a
   policy's score weighs them by ``1 - p`` (the popularity weight takes the rest; category counts and the
   other terms are added), reported beside it as ``profile_weight`` (per decision, averaged per user, then
   over users). A policy with profile_weight 0 (popularity, a category rule tuned to p = 1) ranks without
   its profiles, so its tracking error says nothing about how it ranks.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interestgym.core.rules import grid_edges, params_text
from interestgym.core.stats import per_user_means
from interestgym.errors import InterestGymError
from interestgym.evaluation.stream import UserScores
from interestgym.evaluation.tables import (
    PolicyScores,
    chance_lines,
    few_points_caution,
    leader_lines,
    markdown_tables,
    not_scored_text,
    short_points_text,
    split_caution,
    summarise,
)
from interestgym.io import make_out_dir, write_json_atomic, write_text_atomic

#: How each negative-exclusion rule reads in the protocol header.
EXCLUDE_TEXT = {
    "target": "the target and the user's items of that moment only; past items can be negatives",
    "log": "every item of the user's log",
    "past": "the user's items up to the scoring point",
}
TABLE_METRICS = ["auc", "mrr", "ndcg@5", "ndcg@10", "precision@10", "recall@10", "f1@10", "hit@10"]


# ------------------------------------------------------------------------------------------- oracle
def oracle_point_metrics(data: Any, truth: np.ndarray | None, item_topic: np.ndarray, metrics: list[str], *,
                         decision_truth: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Metrics of the oracle at every scoring point of ``data``.

    :param data: ReplayData of the evaluated split (or of a chunk of its users).
    :param truth: (n_events, n_topics) true interest per events.parquet row (None with ``decision_truth``).
    :param item_topic: (n_items,) topic index of every item.
    :param decision_truth: (n_decisions, n_topics) the true interest at each of ``data``'s decisions
        (``truth[data.decision_event_row]``, read for these rows only: :meth:`Dataset.truth_rows`).
    :return: (user index of every point, {metric: (n_points,) values}).
    """
    from interestgym.core.metrics import ranking_metrics

    if decision_truth is None:
        if truth is None:
            raise InterestGymError("oracle_point_metrics: give truth (every event's row) or decision_truth (the decisions' rows)")
        decision_truth = truth[data.decision_event_row]
    n_points = data.n_points
    counts = data.decision_point_end - data.decision_point_start
    point_decision = np.repeat(np.arange(data.n_decisions), counts)
    assert len(point_decision) == n_points
    cand, labels, _ = data.padded_points(np.arange(n_points))
    theta = decision_truth[point_decision]  # (P, T)
    scores = np.take_along_axis(theta, item_topic[cand], axis=1).astype(np.float64)
    return data.decision_user[point_decision], ranking_metrics(scores, labels, metrics)


def topic_centroids(embeddings: np.ndarray, item_topic: np.ndarray, n_topics: int) -> np.ndarray:
    """(n_topics, d) normalised mean embedding of each topic's items (zero row for an empty topic)."""
    sums = np.zeros((n_topics, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, item_topic, embeddings.astype(np.float64))
    norm = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norm > 0, sums / np.where(norm > 0, norm, 1.0), 0.0)


def tracking_errors(data: Any, policy: Any, truth: np.ndarray | None, centroids: np.ndarray, batch_size: int = 1024, *,
                    decision_truth: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision tracking error of ``policy`` (see the module docstring) and the weight its score puts on
    the profiles there (``1 - p``), both aligned with decisions.

    Drives the env's :class:`~interestgym.envs.engine.ReplayEngine` the way the batched evaluator does
    and reads the profiles after every update. ``truth``: (n_events, n_topics) per events.parquet row,
    or ``decision_truth``: (n_decisions, n_topics), its rows at ``data``'s decisions.
    """
    from interestgym.core.interest import scoring_direction
    from interestgym.envs.rollout import replay_users

    if decision_truth is None:
        if truth is None:
            raise InterestGymError("tracking_errors: give truth (every event's row) or decision_truth (the decisions' rows)")
        decision_truth = truth[data.decision_event_row]
    out = np.full(data.n_decisions, np.nan)
    weight = np.full(data.n_decisions, np.nan)
    # row-wise, so normalising the decisions' rows gives what normalising every event's row gave
    theta_dec = decision_truth / np.maximum(np.linalg.norm(decision_truth, axis=1, keepdims=True), 1e-12)
    for step in replay_users(data, policy, batch_size=batch_size, progress=False):
        rows, engine, strengths = step.rows, step.engine, step.output.strengths
        u = scoring_direction(engine.long_term[rows], engine.short_term[rows], strengths[:, 2])
        # einsum, not BLAS: a BLAS product's rows depend on how many rows it multiplies (the lock-step's
        # active users), einsum's do not, so a user's error is the same in any batch or chunk
        v = np.maximum(np.einsum("bd,td->bt", u, centroids), 0.0)
        v_norm = np.linalg.norm(v, axis=1)
        theta = theta_dec[step.output.decision]
        cos = np.where(v_norm > 0, np.einsum("bt,bt->b", v, theta) / np.where(v_norm > 0, v_norm, 1.0), 0.0)
        out[step.output.decision] = 1.0 - cos
        weight[step.output.decision] = 1.0 - strengths[:, 3]
    return out, weight


# ------------------------------------------------------------------------------------- evaluation
def transfer_to(run_dir: Path, saved: dict[str, Any], config: Any, other: Path, embeddings: str | None,
                out: str | Path | None, split: str = "test") -> tuple[str | None, str | None]:
    """Point ``config`` at ``other`` for evaluating the run's policy there, refusing what cannot transfer.

    The policy observes action weights and ranks in its encoder's space: ``other`` must give the same
    action weights and positive rating, and an embedding from the same encoder (same fingerprint and
    dimension; an encoder fitted on data, such as tfidf or cooc, has a fingerprint of its data and does
    not transfer). The results go to ``out``, never into the run's own evaluation.json.

    :return: (a caution when users of ``split`` there are users the run trained or selected on (their ids among the
        run's training and validation users: the same people when both datasets come from one log), else None; a caution
        when the actions its events hold are not the ones the run trained on (the same weights table, other behaviour:
        views and carts where the run saw ratings), else None).
    """
    from interestgym.agents import run_folder
    from interestgym.data.dataset import Dataset

    if out is None:
        raise InterestGymError(f"--dataset {other}: give --out DIR for the transfer's evaluation.json (the run's own stays as it is)")
    if not (other / "manifest.json").is_file():
        raise InterestGymError(f"--dataset {other}: no manifest.json; expected a dataset prepared by `interestgym prepare`")
    source, target = Dataset.open(config.dataset), Dataset.open(other)
    if source.action_weights != target.action_weights or source.positive_rating != target.positive_rating:
        raise InterestGymError(
            f"--dataset {other}: its action weights {target.action_weights} / positive rating {target.positive_rating} differ "
            f"from the training data's {source.action_weights} / {source.positive_rating}: the policy's observations and "
            "decisions would mean something else; prepare it with the same actions")
    recorded = saved.get("embedding") or {}
    shared = _same_people(source, target, split)
    n_split = int((target.users["split"] == split).sum())
    overlap = (f"{shared:,} of the {n_split:,} {split} users of {other} are training or validation users of the run in "
               f"{source.path} (the same id and an identical event): not held out from its training and selection"
               if shared else None)
    theirs, ours = _actions_of(source), _actions_of(target)
    actions = (f"the actions of {other}'s events ({', '.join(ours)}) are not those the run trained on ({', '.join(theirs)} in "
               f"{source.path}): the policy never decided on the others; its numbers there say how it generalises, not how it "
               "was trained to act" if theirs and ours and set(ours) != set(theirs) else None)
    config.dataset = str(other.resolve())
    config.embeddings = embeddings or _transfer_embeddings(target, recorded)
    now = run_folder.embedding_identity(config)
    if (now["fingerprint"], now["dim"]) != (recorded.get("fingerprint"), recorded.get("dim")):
        encoder = str(recorded.get("encoder") or recorded.get("name") or "")
        if encoder in _FITTED_ENCODERS:
            raise InterestGymError(_cannot_transfer(other, encoder))
        raise InterestGymError(
            f"--dataset {other}: embeddings {now['name']!r} have fingerprint {str(now['fingerprint'])[:16]}... (dim {now['dim']}); "
            f"the run was trained on {recorded.get('name')!r} with {str(recorded.get('fingerprint'))[:16]}... (dim {recorded.get('dim')}): "
            "another encoder, or one fitted on other data (tfidf, cooc), puts items in another space; encode the dataset "
            "with the run's encoder (a pretrained one such as minilm transfers)")
    return overlap, actions


#: Encoders fitted on the data they encode: their vectors of another dataset are in another space.
_FITTED_ENCODERS = ("tfidf", "cooc")


def _cannot_transfer(other: Any, encoder: str) -> str:
    return (f"--dataset {other}: the run's encoder, {encoder}, is fitted on the run's own data, so another dataset's items "
            "land in another space however that dataset is encoded: this run cannot transfer; to evaluate across datasets, "
            "train on an encoder that is not fitted to the data (minilm, a BERT folder, hashing)")


def _actions_of(dataset: Any) -> list[str]:
    """The actions a prepared dataset's events hold, sorted."""
    return sorted(map(str, dataset.read_events(columns=["action"])["action"].dropna().unique()))


def _same_people(source: Any, target: Any, split: str) -> int:
    """How many users of ``target``'s ``split`` are training or validation users of ``source``: the same user id with
    at least one identical event (item and time), as when both datasets are splits of one log. A shared id alone is
    not enough (generated and anonymised logs reuse ids)."""
    seen = set(source.users.loc[source.users["split"].isin(["train", "valid"]), "user_id"].astype(str))
    ids = [u for u in target.users.loc[target.users["split"] == split, "user_id"].astype(str) if u in seen]
    if not ids:
        return 0
    columns = ["user_id", "item_id", "ts"]
    theirs = source.read_user_rows("events.parquet", ids, columns).select(columns).to_pandas()
    ours = target.read_user_rows("events.parquet", ids, columns).select(columns).to_pandas()
    for frame in (theirs, ours):
        for c in ("user_id", "item_id"):
            frame[c] = frame[c].astype(str)
    return int(ours.merge(theirs, on=columns)["user_id"].nunique())


def _transfer_embeddings(target: Any, recorded: dict[str, Any]) -> str:
    """The other dataset's embedding a transfer uses when none is named: the only one, else the one of the run's
    encoder (same fingerprint and dimension), else the one of the run's name (which the fingerprint check then
    judges), else the dataset's own refusal naming them all."""
    names = target.embedding_names()
    if not names:  # the run's own encoder, not the generic suggestion
        spec = str(recorded.get("encoder") or recorded.get("name") or "ENCODER")
        if spec in _FITTED_ENCODERS:  # encoding it would not help: say so now, not after the user has done it
            raise InterestGymError(_cannot_transfer(target.path, spec))
        dim = f" --dim {recorded['dim']}" if spec in ("hashing", "tfidf", "cooc") and recorded.get("dim") else ""
        raise InterestGymError(f"--dataset {target.path}: no embeddings yet; encode it with the run's encoder first: "
                               f"`interestgym encode {target.path} --encoder {spec}{dim}`")
    if len(names) > 1:
        same = target.embedding_of(recorded.get("fingerprint"), recorded.get("dim"))
        if same is not None:
            return same
        if recorded.get("name") in names:
            return str(recorded["name"])
    return target.resolve_embeddings(None)


def _tracker_embeddings(dataset: Any, sequence_runs: tuple[str | Path, ...]) -> str | None:
    """The embedding a dataset's evaluation with trackers uses when none is named: the one the trackers were
    trained with, when they agree and the dataset has it (None otherwise: the dataset's own choice, or refusal)."""
    from interestgym.agents.sequence.folder import is_sequence_run, read_run_config

    names = {str((read_run_config(run)[2].get("dataset") or {}).get("embeddings")) for run in sequence_runs if is_sequence_run(run)}
    if len(names) == 1 and (name := names.pop()) in dataset.embedding_names():
        return name
    return None


def evaluate_run(
    run_or_dataset: str | Path,
    *,
    split: str = "test",
    which_model: str = "shipped",
    out: str | Path | None = None,
    embeddings: str | None = None,
    negatives: str | None = None,
    n_negatives: int | None = None,
    exclude: str | None = None,
    seed: int | None = None,
    history_negatives: int | None = None,
    dataset: str | Path | None = None,
    select_metric: str | None = None,
    n_boot: int = 2000,
    baselines: str = "all",
    reference: str = "best",
    progress: bool | None = None,
    sequence_runs: tuple[str | Path, ...] = (),
    ray: str | None = None,
    chunk_users: int | None = None,
    extra_policies: Sequence[Any] = (),
) -> str:
    """Evaluate a run (its policy and every baseline) or a dataset (baselines only); returns the
    printed text and writes ``evaluation.json`` + ``evaluation.md`` into ``out`` (default: the run).

    The evaluated split's users are replayed ``chunk_users`` at a time (default
    :data:`~interestgym.envs.replay_build.DEFAULT_CHUNK_USERS`): memory holds one chunk's replay arrays
    and every policy's per-user means, not the split's; the results do not depend on the chunk size
    (:mod:`interestgym.evaluation.stream`).

    ``extra_policies``: your own policies, rows of kind ``custom`` on the same users and candidates, compared with
    the reference like every row (not candidates for it): a policy object (``name``, ``act``, optional
    ``scoring``), or a class with a ``grid`` attribute, tuned on the baselines' validation users
    (:mod:`interestgym.evaluation.custom`; ``evaluate --policy FILE.py:NAME``)."""
    from interestgym.agents import run_folder
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.rules import (
        baseline_names,
        feedback_median,
        make_baseline,
        note_grids,
        tuning_grids,
    )
    from interestgym.agents.tuning import (
        best_baseline,
        subsample_users,
        tune_baselines,
        tune_tracker_mixture,
        validation_scorer,
    )
    from interestgym.core.metrics import parse_metric
    from interestgym.data.dataset import Dataset
    from interestgym.envs.replay_build import (
        DEFAULT_CHUNK_USERS,
        SplitSummary,
        chunk_user_lists,
        has_impressions,
        has_varying_values,
        iter_replay_chunks,
        replay_context,
    )
    from interestgym.envs.replay_data import (
        IGNORED_ON_IMPRESSIONS,
        SAMPLED_NEGATIVES_SETTINGS,
        build_replay_data,
        unknown_items_text,
        users_left_out_text,
    )
    from interestgym.envs.vector import evaluate_policy

    t0 = time.perf_counter()
    path = Path(run_or_dataset)
    if ray and extra_policies:  # a user's policy class, loaded from a file, is not importable on Ray's workers
        raise InterestGymError("--policy with --ray: your own policies are evaluated in this process only; leave out --ray")
    if ray:
        # sharded by user on a Ray cluster: the same numbers as one process (interestgym.scale)
        from interestgym.scale.ray_backend import scaled

        sharded = scaled(ray)
        evaluate_policy, validation_scorer = sharded.evaluate_policy, sharded.validation_scorer
    run_dir: Path | None = None
    transfer_overlap: str | None = None
    evaluated_contents: dict[str, Any] | None = None  # the run's own dataset, as evaluated
    transfer_actions: str | None = None
    if run_folder.is_run_dir(path):
        import torch

        torch.set_num_threads(1)  # tiny MLP inference: one thread is fastest (see TrainConfig.torch_threads)
        run_dir = path
        saved = run_folder.read_run_config(path)
        config = run_folder.run_train_config(path, saved)  # which checks the run's reference rule first (another package's too)
        if dataset is not None:
            # transfer: the run's policy on another prepared dataset, against that dataset's own tuned rules
            transfer_overlap, transfer_actions = transfer_to(path, saved, config, Path(dataset), embeddings, out, split)
        else:
            if embeddings is None or embeddings == config.embeddings:
                run_folder.check_run_embedding(path, saved, config)
                run_folder.check_run_tracker(path, saved, config)
            evaluated_contents = run_folder.dataset_contents(config)
            if (note := run_folder.check_run_dataset(path, saved, config, evaluated_contents)) is not None:
                print(f"note: {note}", file=sys.stderr)
    elif (path / "manifest.json").is_file():
        if dataset is not None:
            raise InterestGymError(f"--dataset {dataset}: only a training run transfers to another dataset; {path} is a dataset")
        config = TrainConfig(dataset=str(path), run_dir="")
        if embeddings is None and sequence_runs:
            embeddings = _tracker_embeddings(Dataset.open(path), sequence_runs)
        if out is None:
            raise InterestGymError(f"{path}: a dataset directory; give --out DIR for evaluation.json / evaluation.md")
    else:
        from interestgym.agents.run_lock import training_holder

        holder = training_holder(path)
        if holder is not None:
            raise InterestGymError(f"{path}: a training run that `interestgym train` is still starting ({holder}): no config.json "
                                   "yet; evaluate it once training has begun (its checkpoints) or ended")
        raise InterestGymError(f"{path}: neither a training run (config.json) nor a dataset (manifest.json)")
    changed = dataset is not None  # a transfer never reuses the run's tuned baselines
    overridden = []  # what differs from the run's own protocol (said above the verdicts)
    # settings of sampled negatives do not apply to a log of impressions (its scoring points are what was shown)
    sampled = not has_impressions(Path(dataset if dataset is not None else config.dataset))
    ignored = []
    for key, value in (("embeddings", embeddings), ("negatives", negatives), ("n_negatives", n_negatives), ("exclude", exclude),
                       ("protocol_seed", seed), ("history_negatives", history_negatives)):
        if key in SAMPLED_NEGATIVES_SETTINGS and not sampled:
            if value is not None:
                ignored.append(f"--{key.replace('_', '-')} {value}")
            continue
        if value is not None and getattr(config, key) != value:
            overridden.append(f"{key} {getattr(config, key)!r} -> {value!r}")
            setattr(config, key, value)
            changed = True
    ignored_settings = None
    if ignored:
        ignored_settings = f"{', '.join(ignored)}: the dataset {IGNORED_ON_IMPRESSIONS}"
    protocol_changed = embeddings_changed = None
    moved = [entry for entry in overridden if entry.startswith("embeddings ")]
    if moved and run_dir is not None and dataset is None:  # said up front too: the policy reads other vectors than it learnt on
        embeddings_changed = (f"the run's policy learnt on other item vectors than it is scored with here ({moved[0]}): a "
                              "transfer to another encoder, not the run's own result")
    if overridden and run_dir is not None and dataset is None:  # (a transfer says what it is on its own)
        protocol_changed = (f"this evaluation's protocol differs from the run's ({'; '.join(overridden)}): every baseline is "
                            "tuned again under it, while the run's policy keeps what it was trained and tuned with (a shipped "
                            "rule keeps its parameters), so the two may differ even where the run ships its rule")
    metric = (select_metric or config.reward).strip().lower()
    parse_metric(metric)
    out_dir = Path(out) if out is not None else run_dir
    assert out_dir is not None
    if out is not None:  # made now: a path it cannot be is said before the tuning and the replay, not after
        run_folder.refuse_inside_dataset(out_dir, "--out", "a folder for evaluation.json / evaluation.md")
        make_out_dir(out_dir)
    names = list(baseline_names()) if baselines.strip() == "all" else [b.strip() for b in baselines.split(",") if b.strip()]
    if not names:
        raise InterestGymError(f"--baselines {baselines!r}: expected comma-separated baseline names or 'all'")
    for n in names:
        make_baseline(n)  # validates the name
    if n_boot < 1:
        raise InterestGymError(f"--n-boot {n_boot}: expected an integer >= 1 (bootstrap resamples)")
    trackers = []  # every --sequence folder read and checked (finished, checksums, weights; its data below) before any tuning
    if sequence_runs:
        from interestgym.agents.sequence.folder import check_finished, undertrained_note
        from interestgym.agents.sequence.scoring import load_tracker

        for seq_dir in sequence_runs:
            check_finished(seq_dir, "evaluate --sequence")
            # its best model, the one early stopping kept (--model picks what of a PPO run, not of the trackers)
            trackers.append(load_tracker(seq_dir, "best"))
    tracker_notes = [note for note in (undertrained_note(d) for d in sequence_runs) if note] if sequence_runs else []

    trained_on = saved.get("config", {}).get("dataset") if run_dir is not None else None
    dataset = Dataset.open(config.dataset)
    chunk_users = DEFAULT_CHUNK_USERS if chunk_users is None else chunk_users
    chunk_user_lists(np.zeros(0, dtype=str), chunk_users)  # validates chunk_users before any work
    valid_spec, test_spec = config.protocol_spec("valid"), config.protocol_spec(split)
    if trackers:  # the dataset, split and item vectors each was trained on, before the tuning (scoring binds them again)
        from interestgym.agents.sequence.scoring import embeddings_sha256

        # the replay's own context (cached: the replay below reads the same one, the embeddings are loaded once)
        ctx = replay_context(dataset, config.embeddings, valid_spec, progress=progress)
        embeddings_sha = embeddings_sha256(ctx.embeddings)
        for tracker in trackers:
            tracker.check_data(dataset.path, ctx.embeddings_name, embeddings_sha)
    # The validation split's protocol and users, chunk by chunk (the tuned baselines are keyed on it);
    # only the users tuning replays are built whole.
    valid = SplitSummary()
    for k, chunk in enumerate(iter_replay_chunks(dataset, config.embeddings, valid_spec, chunk_users=chunk_users, progress=progress)):
        valid.add(_with_extras(chunk, config) if k == 0 else chunk)  # the first chunk's describe() names the tracker

    tuning: list[Any] = []  # (users, replay data) of the validation users tuning replays, built once when needed

    def tuning_replay() -> tuple[Any, Any]:
        if not tuning:
            users = subsample_users(valid.scored_user_ids, config.tune_users, config.seed)
            tuning.extend([users, _with_extras(build_replay_data(dataset, config.embeddings, valid_spec, users=users), config)])
        return tuning[0], tuning[1]

    tuned = None
    if run_dir is not None and not changed:
        tuned = run_folder.read_tuned_baselines(run_dir / run_folder.BASELINES_FILE, metric=metric, protocol=valid.describe(),
                                                names=names, tune_users=config.tune_users)
    if tuned is None:
        tune_users, tune_data = tuning_replay()
        tuned = tune_baselines(validation_scorer(tune_data, metric, tune_users), names,
                               grids=tuning_grids(config.slot_counts, valid.describe()["protocol"] == "impressions",
                                                  feedback_median(tune_data, tune_users), names=names))
        if config.sequence:  # a run trained with a tracker: its rule + tracker mixture, as train tunes it
            tuned.update(tune_tracker_mixture(tune_data, tuned, best_baseline({n: tuned[n] for n in names}), metric, tune_users))
        del tune_data
        if not extra_policies:
            tuning.clear()  # not needed again: its memory goes before the test split is replayed
        run_folder.write_tuned_baselines(out_dir / run_folder.BASELINES_FILE, metric=metric, tune_users=config.tune_users,
                                         protocol=valid.describe(), baselines=tuned)
    if config.sequence:
        names += [n for n in tuned if n.endswith("+tracker") and n not in names]
    custom = []
    if extra_policies:  # the user's own: tuned (a class with a grid) or scored on the baselines' validation users
        from interestgym.evaluation.custom import policy_source, resolve_policies

        tune_users, tune_data = tuning_replay()  # the users and replay the baselines were tuned on (built once)
        custom = resolve_policies(list(extra_policies), validation_scorer(tune_data, metric, tune_users), [*names, "oracle"],
                                  full_score=validation_scorer(tune_data, metric, tune_users, batched=False), progress=progress)
        del tune_data
        tuning.clear()
    if reference == "best":
        reference = best_baseline({n: tuned[n] for n in names})

    policies: list[tuple[Any, str, dict[str, Any], float | None]] = []
    if run_dir is not None:
        from interestgym.agents.run_lock import training_holder

        holder = training_holder(run_dir)
        if holder is not None:  # said, not refused: a look at the best model so far can be what is wanted
            sys.stderr.write(f"note: {run_dir} is still training ({holder}): its models may still change and what it ships "
                             f"is not decided yet; this evaluates the {'best' if which_model == 'shipped' else which_model} "
                             "model as it is now (evaluate again when training ends)\n")
        if which_model == "shipped" and run_folder.read_shipped(run_dir) is None:
            which_model = "best"  # a run from before shipping decisions, or still training
            if holder is None:  # stopped before its decision: the best model is unproven, say so
                sys.stderr.write(f"note: {run_dir} has no ship decision ({run_folder.SHIPPED_FILE} missing: the run stopped "
                                 "before making it, or is from before ship decisions); this evaluates its best model, which "
                                 "validation has not proven against the rule (`interestgym train --run-dir "
                                 f"{shlex.quote(str(run_dir))} --resume` makes the decision)\n")
        if which_model == "shipped":
            run_folder.check_shipped_model(run_dir)
        ppo = run_folder.load_run_choice(run_dir, which_model, device=config.device)
        policies.append((ppo, "learned", {"model": which_model, "scoring": ppo.scoring.as_dict()}, None))
    for n in names:
        pol = make_baseline(n, **tuned[n]["params"])
        policies.append((pol, "baseline", tuned[n]["params"], tuned[n]["valid_score"]))
    for entry in custom:
        if entry["policy"].name in {pol.name for pol, *_ in policies}:
            raise InterestGymError(f"policy {entry['policy'].name!r}: already a row of this evaluation; give it another name")
        policies.append((entry["policy"], "custom", entry["params"], entry["valid_score"]))
    # the data each policy replays: the chunk, or the chunk with a --sequence tracker's scores attached
    attach: list[Any] = [None] * len(policies)
    if sequence_runs:
        from interestgym.agents.sequence.scoring import row_name
        from interestgym.agents.sequence.term import attach_tracker, tune_tracker_weight

        tune_users = subsample_users(valid.scored_user_ids, config.tune_users, config.seed)
        tune_data = build_replay_data(dataset, config.embeddings, valid_spec, users=tune_users)
        base_name = best_baseline({n: tuned[n] for n in names if not n.endswith("+tracker")})
    for seq_dir, tracker in zip(sequence_runs, trackers):  # sequence trackers (train-sequence): the same scoring points
        tracker.name = row_name(tracker.name, seq_dir, {pol.name for pol, *_ in policies})  # two gru runs: two rows
        policies.append((tracker, "sequence", tracker.params, tracker.info.get("valid_score")))
        if f"{base_name}+tracker" in names and getattr(config, "sequence", None) and which_model in ("best", "shipped") and \
                Path(config.sequence).resolve() == Path(seq_dir).resolve():  # the run's mixture uses the best weights too
            attach.append(None)  # the run's own mixture of this rule and tracker is a row already (its baselines.json)
            continue
        # and the best tuned rule mixed with it, the weight tuned on the same validation users
        mix, table = tune_tracker_weight(attach_tracker(tune_data, tracker), make_baseline(base_name, **tuned[base_name]["params"]),
                                         metric, tune_users)
        mix.name = f"{base_name}+{tracker.name}"
        policies.append((mix, "baseline", {**mix.params, "tracker": tracker.name, "weight_grid": table},
                         max(row["score"] for row in table)))
        attach += [None, tracker]
    attach += [None] * (len(policies) - len(attach))
    rows = [pol.name for pol, kind, _, _ in policies if kind != "learned"]
    if reference not in rows:  # a baseline, or with --sequence a tracker or its mixture
        learned = [pol.name for pol, kind, _, _ in policies if kind == "learned"]
        why = (f" ({reference!r} is a learned row: the paired differences are taken against a rule; to pair two learned "
               "policies, evaluate both in one call (--policy FILE.py:NAME beside the run's) and take the paired bootstrap of "
               "their per_user values: interestgym.core.stats.paired_bootstrap_diff)") if reference in learned else ""
        raise InterestGymError(f"--reference {reference!r}: expected best or one of the evaluated rules ({', '.join(rows)}){why}")

    item_topic, topic_names = _synthetic_topics(dataset)
    all_metrics = list(dict.fromkeys([*TABLE_METRICS, metric]))
    has_user_type = dataset.has_column("events.parquet", "user_type")
    # The test users, chunk by chunk: every policy (and the oracle) scores a chunk, only per-user
    # means are kept (interestgym.evaluation.stream); the chunks' counts add up to the split's protocol.
    scores = [UserScores(metric=metric) for _ in policies]
    oracle_scores = UserScores(metric=metric)
    test = SplitSummary()
    centroids = None
    user_types: list[np.ndarray] = []
    for chunk in iter_replay_chunks(dataset, config.embeddings, test_spec, chunk_users=chunk_users, progress=progress):
        chunk = _with_extras(chunk, config)
        test.add(chunk)
        if chunk.n_users == 0:
            continue
        decision_truth = dataset.truth_rows(chunk.decision_event_row) if item_topic is not None else None
        if item_topic is not None and centroids is None:
            centroids = topic_centroids(chunk.embeddings, item_topic, len(topic_names))
        chunk_users_ref = None
        with_tracker: dict[int, Any] = {}  # the chunk with a tracker's scores, from that tracker's own row
        for (pol, kind, _params, _vscore), acc, tracker in zip(policies, scores, attach):
            if kind == "sequence":
                res = pol.score(chunk, metric=metric, keep_scores=True)
                with_tracker[id(pol)] = attach_tracker(chunk, pol, res)
                data = chunk
            else:
                data = chunk if tracker is None else with_tracker.get(id(tracker)) or attach_tracker(chunk, tracker)
                # the replay's running means are of the metric the run's policy observes (its reward), whatever
                # --select-metric is: a learned policy replayed with another would see other observations
                res = evaluate_policy(data, pol, metric=config.reward, also=(metric,), record_features=False, progress=False)
            users = acc.add_points(res.points, res.metrics)
            if decision_truth is not None and centroids is not None and kind != "sequence":  # a tracker has no profile
                err, weight = tracking_errors(data, pol, None, centroids, decision_truth=decision_truth)
                # tracking users are every user with a decision: align with the scored users
                tu = np.unique(chunk.user_ids[chunk.decision_user])
                for name, values in (("tracking_error", err), ("profile_weight", weight)):
                    acc.add_extra(name, per_user_means(chunk.user_ids[chunk.decision_user], values)[1][np.searchsorted(tu, users)])
            chunk_users_ref = users if chunk_users_ref is None else chunk_users_ref
        if decision_truth is not None:
            puser, pm = oracle_point_metrics(chunk, None, item_topic, all_metrics, decision_truth=decision_truth)
            uid = chunk.user_ids[puser]
            users, _ = per_user_means(uid, pm[metric])
            oracle_scores.add_user_values(users, {m: per_user_means(uid, v)[1] for m, v in pm.items()})
            oracle_scores.n_points += len(puser)
        if has_user_type and chunk_users_ref is not None:
            user_types.append(_user_types(dataset, chunk_users_ref))
        del chunk, decision_truth
    if test.n_users == 0:
        raise InterestGymError(f"{config.dataset}: split {split!r} has no user with a positive event; nothing to evaluate")

    results: list[PolicyScores] = []
    by_target_results: dict[str, list[PolicyScores]] = {"repeat": [], "new": []}
    users_ref: np.ndarray | None = None
    protocol = test.describe()
    for (pol, kind, params, vscore), acc in zip(policies, scores):
        for target in ("repeat", "new"):
            sub_users, sub_means, n_sub = acc.by_target(target)
            by_target_results[target].append(PolicyScores(name=pol.name, kind=kind, users=sub_users, per_user={metric: sub_means},
                                                          params=params, n_points=n_sub))
        users = acc.users
        results.append(PolicyScores(name=pol.name, kind=kind, users=users, per_user=acc.per_user, params=params,
                                    valid_score=vscore, extra=acc.extra, n_points=acc.n_points))
        users_ref = users if users_ref is None else users_ref
        if not np.array_equal(users, users_ref):
            raise AssertionError("policies were scored on different users")
    oracle_name = None
    if item_topic is not None:
        results.append(PolicyScores(name="oracle", kind="oracle", users=oracle_scores.users, per_user=oracle_scores.per_user,
                                    params={"score": "true interest of the candidate's topic"}, n_points=oracle_scores.n_points))
        oracle_name = "oracle"

    summary = summarise(results, all_metrics, reference=reference, oracle=oracle_name, n_boot=n_boot, seed=0,
                        progress=progress)  # a large evaluation's bootstraps take a minute: said
    summary["user_groups"] = user_group_diffs(results, reference, metric, n_boot)
    summary["leader"] = leading_row(results, reference, metric, n_boot)
    automatic = reference == best_baseline({n: tuned[n] for n in names})
    summary["reference_reason"] = "the best tuned non-oracle baseline on validation users" if automatic else "chosen with --reference"
    if automatic and baselines.strip() != "all":  # a subset: the best of those, not of every rule
        run_reference = (saved.get("reference") or {}).get("name") if run_dir is not None else None
        summary["reference_reason"] = (f"the best tuned baseline among --baselines {','.join(names)} on validation users"
                                       + (f" (the run's own reference rule, `{run_reference}`, is not among them)"
                                          if run_reference and run_reference not in names else ""))
    if sequence_runs and automatic:  # the rows --sequence adds are measured against the reference, not candidates for it
        summary["reference_reason"] += ("; the trackers and the rule + tracker mixtures --sequence adds are compared with it, "
                                        "not candidates for it (`train --sequence` makes a mixture a candidate)")
    # tuned values at an open end of what their grid tried, per rule (said in the header and the tuned list)
    edges = {n: grid_edges(e.get("params") or {}, e.get("grid")) for n, e in tuned.items() if isinstance(e, dict)}
    summary["grid_edges"] = {n: e for n, e in edges.items() if e}
    reference_params = params_text((tuned.get(reference) or {}).get("params") or {})
    header = {
        # absolute, as a run records its dataset: a report or a comparison run from another folder reads the same paths
        "data": str(Path(config.dataset).resolve()),
        "split": split,
        "encoder": protocol["embeddings"],
        "dim": protocol["dim"],
        "protocol": protocol["protocol"],
        "candidates": ("logged impressions" if protocol["protocol"] == "impressions" else
                       f"next positive + {config.n_negatives} {config.negatives} negatives (exclude: {EXCLUDE_TEXT[protocol['exclude']]})"
                       + short_points_text(protocol)
                       + (f"; up to {protocol['history_negatives']} of them from the user's own earlier items"
                          if protocol.get("history_negatives") else "")),
        "protocol_seed": config.protocol_seed,
        "train_seed": config.seed if run_dir is not None else None,
        "users": len(users_ref) if users_ref is not None else 0,
        "scoring_points": int(results[0].n_points),
        "users_left_out": users_left_out_text(protocol.get("counts") or {}, len(users_ref) if users_ref is not None else 0),
        "not_scored": not_scored_text(protocol),
        "events_without_item": "; ".join(f"{who}: {text}" for who, text in (
            (f"{split} users", unknown_items_text(protocol.get("counts") or {})),
            ("validation users (the rules' tuning)", unknown_items_text(valid.describe().get("counts") or {})))
            if text) or None,
        "candidates_per_point": test.candidates_text(),
        "few_points": few_points_caution(int(results[0].n_points), len(users_ref) if users_ref is not None else 0,
                                         test.n_candidates / max(test.n_points, 1), test.widths[1]),
        "selection_metric": metric,
        "users_split": users_split_text(dataset.manifest.get("split") or {}),
        "tuned_on": (tuned_on_text(valid.n_users, len(valid.scored_user_ids), config.tune_users, config.seed,
                                   int(valid.describe()["counts"].get("users_without_decisions", 0)))
                     + _older_grid_text(tuned, note_grids(config.slot_counts, protocol["protocol"] == "impressions",
                                                          has_varying_values(Path(config.dataset))))),
        "reference": reference,
        # the reference's tuned parameters, in words: what "the best tuned rule" is on this data (and any at an open end
        # of what its tuning tried: a better setting may lie past it, and "beats the best tuned rule" is then weaker)
        "reference_params": reference_params and reference_params + _edges_text(summary["grid_edges"].get(reference)),
        # the user's own rows: their parameters (tuned over their grid on the baselines' validation users) and score
        "custom": "; ".join(f"{e['policy'].name} ({params_text(e['params']) or 'no parameters'}; "
                            + (f"tuned over {len(e['grid'])} grid points, " if e["grid"] else "")
                            + f"validation {metric} {e['valid_score']:.4f})" for e in custom) or None,
        "bootstrap": {"resamples": n_boot, "unit": "user", "confidence": 0.95, "seed": 0},  # every table's (summarise etc.)
        "run": str(Path(run_dir).resolve()) if run_dir is not None else None,
        "trained_on": trained_on if trained_on and str(Path(trained_on).resolve()) != str(Path(config.dataset).resolve()) else None,
        "model": which_model if run_dir is not None else None,
        # the evaluated model's files (folder, step, sha256): an export or a report can tell an evaluation of a model
        # trained further since (train --resume) from one of the model now in the folder
        "model_identity": run_folder.model_identity(run_dir, which_model) if run_dir is not None else None,
        "shipped": run_folder.read_shipped(run_dir) if run_dir is not None else None,
        "protocol_changed": protocol_changed,
        "transfer_overlap": transfer_overlap,
        "transfer_actions": transfer_actions,
        "ignored_settings": ignored_settings,
        "undertrained_trackers": tracker_notes or None,
        "embeddings_changed": embeddings_changed,
        # the run's dataset as it was evaluated (events, split, replay settings): an export can tell these numbers from
        # the dataset it builds its popularity and catalogue from
        "dataset_contents": evaluated_contents,
    }
    run_rule = against_run_rule(results, header["shipped"], reference, metric, n_boot)
    if run_rule:
        summary["vs_run_rule"] = run_rule
    order = [r.name for r in results]
    if by_target_results["repeat"] and by_target_results["repeat"][0].n_points:
        # Logs with repeat consumption: a target the user engaged with before is a different problem
        # ("show it again") from a new one; report both, each over the users that have such targets.
        summary["by_target"] = {target: summarise(rows, [metric], reference=reference, n_boot=n_boot, seed=0)
                                for target, rows in by_target_results.items() if rows and rows[0].n_points}
    by_type = _by_user_type(np.concatenate(user_types) if user_types else None, results, metric)
    if by_type:
        summary["by_user_type"] = by_type
    md = _markdown(header, summary, order, metric, protocol)
    per_user_json = {r.name: {m: [None if np.isnan(x) else float(x) for x in v] for m, v in {**r.per_user, **r.extra}.items()}
                     for r in results}
    doc = {
        "header": header,
        "protocol": protocol,
        "summary": summary,
        "users": [str(u) for u in (users_ref if users_ref is not None else [])],
        "per_user": per_user_json,
        # (another package's rule: which package and version its parameters and numbers came from)
        "tuned_baselines": {n: {"params": tuned[n]["params"], "valid_score": tuned[n]["valid_score"],
                                **({"provider": tuned[n]["provider"]} if tuned[n].get("provider") else {})} for n in names},
        "custom_policies": {e["policy"].name: {"params": e["params"], "valid_score": e["valid_score"], "grid": e["grid"],
                                               "source": policy_source(e["policy"])} for e in custom},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    # the table of another evaluation must not stay beside this one's record (a kill between the two writes)
    (out_dir / "evaluation.md").unlink(missing_ok=True)
    write_json_atomic(out_dir / "evaluation.json", doc)
    write_text_atomic(out_dir / "evaluation.md", md)
    return md + f"\nwrote {out_dir / 'evaluation.json'} and {out_dir / 'evaluation.md'}"


def _with_extras(data: Any, config: Any) -> Any:
    """``data`` with the run's sequence tracker and extra observations attached, as
    ``TrainConfig.replay_data`` gives them (``TrainConfig.attach_extras``): each depends on a user's own
    log only, so attaching them chunk by chunk gives the whole split's values."""
    return config.attach_extras(data)


def leading_row(results: list[PolicyScores], reference: str, metric: str, n_boot: int) -> dict[str, Any] | None:
    """The row with the best mean ``metric`` (the oracle aside) when it is not the reference, e.g. a sequence
    tracker far ahead of every rule: its name, kind and mean, and each learned policy's paired difference to it
    (``behind``: learned minus leader). None when the reference leads."""
    from interestgym.core.stats import paired_bootstrap_diff

    rows = [r for r in results if r.kind != "oracle" and metric in r.per_user]
    means = {r.name: float(np.nanmean(r.per_user[metric])) if np.isfinite(r.per_user[metric]).any() else -np.inf for r in rows}
    if not means or max(means.values()) <= means.get(reference, -np.inf):  # the reference leads (or ties)
        return None
    best = next(r for r in rows if r.name == max(means, key=means.get))
    return {"name": best.name, "kind": best.kind, "mean": means[best.name],
            "behind": {r.name: paired_bootstrap_diff(r.per_user[metric], best.per_user[metric], n_boot=n_boot, seed=0).as_dict()
                       for r in rows if r.kind == "learned" and r.name != best.name}}


def _edges_text(edges: list[str] | None) -> str:
    """What a tuned rule's parameters in words are followed by when some sit at an open end of their grid
    (:func:`~interestgym.core.rules.grid_edges`); "" when none do."""
    return f" ({'; '.join(edges)}: a better setting may lie past it)" if edges else ""


def against_run_rule(results: list[PolicyScores], shipped: Any, reference: str | None, metric: str,
                     n_boot: int) -> dict[str, Any] | None:
    """Each learned row's paired difference to the rule its run was trained on and shipped over (``shipped["rule"]``),
    when that rule is not the table's reference but has a row here: the figure the shipping decision made on validation
    users, now on these users. None otherwise (no run, a run that ships its rule, or the rule is the reference)."""
    from interestgym.core.stats import paired_bootstrap_diff

    if not isinstance(shipped, dict) or shipped.get("policy") != "learned" or not isinstance(shipped.get("rule"), dict):
        return None
    name = shipped["rule"].get("name")
    by_name = {r.name: r for r in results}
    rule = by_name.get(name)
    if name == reference or rule is None or metric not in rule.per_user:
        return None
    diffs = {r.name: paired_bootstrap_diff(r.per_user[metric], rule.per_user[metric], n_boot=n_boot, seed=0).as_dict()
             for r in results if r.kind == "learned" and metric in r.per_user}
    return {"rule": name, "metric": metric, "policies": diffs} if diffs else None


def user_group_diffs(results: list[PolicyScores], reference: str, metric: str, n_boot: int) -> dict[str, Any]:
    """The learned policies' paired difference to the reference in two groups of the evaluated users, split by a hash
    of the user id (crc32 % 2: about half each, e.g. 99 and 101 of the quick start's 200; the same groups in every
    evaluation, no seed), which played no part in training or selection: whether the gain holds across the users or
    rests on a few. They are no second holdout: a selection that over-fitted validation would shift both alike, and
    the whole split's CI is what measures that."""
    import zlib

    from interestgym.core.stats import paired_bootstrap_diff

    by_name = {r.name: r for r in results}
    ref = by_name.get(reference)
    out: dict[str, Any] = {"split": "users by crc32(user_id) % 2", "metric": metric, "policies": {}}
    if ref is None:
        return out
    group = np.array([zlib.crc32(str(u).encode("utf-8")) % 2 for u in ref.users])
    for r in results:
        if r.kind != "learned":
            continue
        out["policies"][r.name] = {
            f"group {g}": paired_bootstrap_diff(r.per_user[metric][group == g], ref.per_user[metric][group == g],
                                                n_boot=n_boot, seed=0).as_dict()
            for g in (0, 1)}
    return out


def _by_user_type(user_type: np.ndarray | None, results: list[PolicyScores], metric: str) -> dict[str, Any] | None:
    """Synthetic data: mean of ``metric`` per user type (events column ``user_type``; ``user_type`` aligned
    with the evaluated users) and policy."""
    if user_type is None or not results:
        return None
    out: dict[str, Any] = {"metric": metric, "users": {t: int((user_type == t).sum()) for t in sorted(set(user_type))}, "policies": {}}
    for r in results:
        out["policies"][r.name] = {t: float(np.nanmean(r.per_user[metric][user_type == t])) for t in out["users"]}
    return out


def _user_types(dataset: Any, users: np.ndarray) -> np.ndarray:
    """The ``user_type`` of each of ``users`` (sorted ids): the value on the user's first event (events
    column ``user_type``, synthetic data), read for these users only."""
    table = dataset.read_user_rows("events.parquet", users.tolist(), ["user_id", "user_type"])
    frame = pd.DataFrame({"user_id": table.column("user_id").to_numpy(), "user_type": table.column("user_type").to_numpy(),
                          "row": table.column("__row__").to_numpy()}).sort_values("row", kind="stable")
    first = frame.drop_duplicates("user_id").set_index("user_id")["user_type"].astype(str)
    first.index = first.index.astype(str)
    return first.reindex([str(u) for u in users]).to_numpy()


def _synthetic_topics(dataset: Any) -> tuple[np.ndarray | None, list[str]]:
    """(topic index of every item, topic names) when ``truth.npy`` follows the synthetic generator's
    layout (one column per topic, every item's topic known); (None, []) otherwise: no oracle."""
    shape = dataset.truth_shape
    if shape is None:
        return None, []
    items = dataset.items
    topic_names = list(dataset.manifest.get("synthetic", {}).get("topics", [])) or sorted(items["category"].astype(str).unique())
    topic_col = items["true_topic"] if "true_topic" in items.columns else items["category"]
    index = {t: i for i, t in enumerate(topic_names)}
    item_topic = np.array([index.get(str(t), -1) for t in topic_col], dtype=np.int64)
    if shape[1] != len(topic_names) or (item_topic < 0).any():
        return None, []
    return item_topic, topic_names


def _older_grid_text(tuned: dict[str, Any], grids: dict[str, Any] | None = None) -> str:
    """A note for the protocol header when the tuning (e.g. a run's ``baselines.json`` reused from an older
    file) searched a grid without some of today's parameters; "" otherwise."""
    from interestgym.agents.tuning import grid_params_missing

    missing = grid_params_missing(tuned, grids)
    if not missing:
        return ""
    what = "; ".join(f"{name} without {', '.join(params)}" for name, params in missing.items())
    return (f"; tuned over an older grid ({what}): these rules never tried today's values; train the run again "
            "without --tuned-baselines to tune them")


def tuned_on_text(n_users: int, n_scored: int, tune_users: int | None, seed: int, n_without: int = 0) -> str:
    """Which validation users the baselines were tuned on: a sample of those with a scoring point (drawn with the
    run's train seed); ``n_users`` are the split's users with a decision, ``n_without`` those without one."""
    k = min(n_scored, tune_users or n_scored)
    drawn = f", drawn with seed {seed}" if k < n_scored else ""
    without = f"; {n_without:,} more without a positive event, not replayed" if n_without else ""
    if n_scored == n_users:
        return f"valid ({k} of {n_users} users{drawn}{without})"
    return f"valid ({k} of the {n_scored} users with a scoring point{drawn}; {n_users} replayed{without})"


def users_split_text(split: dict[str, Any]) -> str | None:
    """How the dataset split its users (``60/20/20 % train/valid/test by user, seed 0``), from its manifest."""
    fractions = split.get("fractions")
    if not isinstance(fractions, dict):
        return None
    shares = "/".join(f"{100 * float(fractions.get(k, 0)):g}" for k in ("train", "valid", "test"))
    by = "by user" if split.get("by", "user") == "user" else f"by {split['by']}"
    return f"{shares} % train/valid/test {by}, seed {split.get('seed')}"


def _markdown(header: dict[str, Any], summary: dict[str, Any], order: list[str], metric: str, protocol: dict[str, Any]) -> str:
    lines = ["# Evaluation", "", "Protocol:", ""]
    for key in ("data", "trained_on", "split", "users_split", "encoder", "dim", "protocol", "candidates", "protocol_seed", "train_seed", "users",
                "users_left_out", "scoring_points", "not_scored", "events_without_item", "candidates_per_point", "selection_metric", "tuned_on", "reference",
                "reference_params", "custom", "run", "model"):
        if header.get(key) is not None:
            # the grid search's users; a run's shipping decision is on every validation user (its own line says how many)
            lines.append(f"- {key}: {header[key]}" + (" (the rules' grid search)" if key == "tuned_on" else ""))
    for caution in (header.get("embeddings_changed"), header.get("few_points"), header.get("transfer_overlap"),
                    header.get("transfer_actions"), *(header.get("undertrained_trackers") or ())):
        if caution:
            lines.append(f"- caution: {caution}")
    seed = header["bootstrap"].get("seed")  # absent from evaluations written before it was recorded (it was 0 then too)
    lines.append(f"- bootstrap: {header['bootstrap']['resamples']} resamples of users"
                 + ("" if seed is None else f" (seed {seed})") + ", 95% percentile intervals")
    lines.append("")
    lines.append("Mean over users [95% CI]:")
    lines.append("")
    text = "\n".join(lines) + "\n" + markdown_tables(summary, main_metrics=TABLE_METRICS, order=order,
                                                     shipped_model=header.get("model") == "shipped")
    by_type = summary.get("by_user_type")
    if by_type:
        types = list(by_type["users"])
        rows = [f"\n{by_type['metric']} by user type (synthetic ground truth; users per type: "
                + ", ".join(f"{t} {n}" for t, n in by_type["users"].items()) + "):\n",
                "| policy | " + " | ".join(types) + " |", "|" + "---|" * (len(types) + 1)]
        for n in order:
            rows.append(f"| {n} | " + " | ".join(f"{by_type['policies'][n][t]:.4f}" for t in types) + " |")
        text += "\n".join(rows) + "\n"
    by_target = summary.get("by_target")
    if by_target:
        rows = [(f"\n{metric} by target (repeat = the user engaged with the target item before; mean over the users "
                "with such targets [95% CI], paired difference vs the reference):\n"),
                "| policy | " + " | ".join(f"{t} ({by_target[t]['policies'][order[0]]['n_points']} points) | {t}: diff" for t in by_target) + " |",
                "|" + "---|" * (2 * len(by_target) + 1)]
        for n in order:
            if n not in next(iter(by_target.values()))["policies"]:
                continue
            cells = []
            for t in by_target:
                entry = by_target[t]["policies"][n]
                ci, d = entry["metrics"][metric], entry["diff_vs_reference"].get(metric)
                cells.append(f"{ci['mean']:.4f} [{ci['lo']:.4f}, {ci['hi']:.4f}]")
                cells.append("-" if not d else f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]")
            rows.append(f"| {n} | " + " | ".join(cells) + " |")
        text += "\n".join(rows) + "\n"
    tuned_rows = [(n, summary["policies"][n].get("params")) for n in order if summary["policies"][n]["kind"] == "baseline"]
    edges = summary.get("grid_edges") or {}
    tuned_rows = [(n, params_text(p) + _edges_text(edges.get(n)))
                  for n, p in tuned_rows if p]
    if tuned_rows:  # every rule's tuned setting, not only the reference's (evaluation.json has them too)
        text += "\nTuned on validation users:\n\n" + "\n".join(f"- {n}: {t}" for n, t in tuned_rows) + "\n"
    ref = summary["reference"]
    learned = [n for n in order if summary["policies"][n]["kind"] in ("learned", "custom")]
    verdicts = []
    same = set()  # rows that rank every user exactly as the reference (a run that ships its rule: the rule itself)
    for n in learned:
        d = summary["policies"][n]["diff_vs_reference"].get(metric)
        if d and d["mean"] == d["lo"] == d["hi"] == 0:
            same.add(n)
            verdicts.append(f"- `{n}` ranks every user as `{ref}` does (a difference of 0 at every user: the same rule)"
                            if n == f"shipped:{ref}" else f"- `{n}` scores every user exactly as `{ref}` on {metric} (a difference of 0 at every user)")
        elif d:
            verdict = "beats" if d["lo"] > 0 else ("is worse than" if d["hi"] < 0 else "is not distinguishable from")
            verdicts.append(f"- `{n}` {verdict} `{ref}` on {metric}: {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] (paired, over users)"
                            + ("; optimistic: some of these users trained or selected the run (the caution above)"
                               if header.get("transfer_overlap") and summary["policies"][n]["kind"] == "learned" else ""))
            frac = summary["policies"][n]["fraction_of_oracle"].get(metric)
            if frac is not None:
                verdicts.append(f"- `{n}` reaches {100 * frac:.1f}% of the oracle's {metric}")
    for n in order:  # a rule + tracker mixture: the weight its tracker got (0: the rule itself, which its 0 difference shows)
        weight = (summary["policies"][n].get("params") or {}).get("tracker_weight")
        if "+" in n and isinstance(weight, (int, float)):
            base = n.split("+")[0]
            verdicts.append(f"- `{n}` weighs its tracker's score {weight:g} (tuned on validation users)"
                            + (f": weight 0, so it ranks as `{base}` does" if weight == 0 else ""))
    verdicts += leader_lines(summary, metric)
    groups = summary.get("user_groups", {}).get("policies", {})
    untouched = " (not used by this run's training or selection)" if header.get("split") == "test" and not header.get("transfer_overlap") else ""
    for n, halves in groups.items():
        if n in same:
            continue  # 0 in each group too: nothing to split
        cells = "; ".join(f"{g}: {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] ({d['n']} users)" for g, d in halves.items())
        verdicts.append(f"- `{n}` vs `{ref}` in two groups of the users (by a hash of their ids){untouched}: {cells}")
    shipped = header.get("shipped")
    if shipped:
        what = "its learned model" if shipped["policy"] == "learned" else f"its reference rule `{shipped['rule']['name']}`"
        verdicts.append(f"- the run ships {what}: {shipped['reason']}")
    run_rule = summary.get("vs_run_rule")
    for n, d in ((run_rule or {}).get("policies") or {}).items():  # the shipping decision's comparison, on these users
        verdict = "beats" if d["lo"] > 0 else ("is worse than" if d["hi"] < 0 else "is not distinguishable from")
        verdicts.append(f"- `{n}` {verdict} `{run_rule['rule']}`, the rule its run was trained on and shipped over (not the "
                        f"table's reference), here on {run_rule['metric']}: {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] "
                        "(paired, over users)"
                        + ("; optimistic: some of these users trained or selected the run (the caution above)"
                           if header.get("transfer_overlap") else ""))
    # (a run that ships its rule: its row `shipped:<ref>` ranks as the reference does, so the reference's line says it)
    verdicts += chance_lines(summary, [n for n in learned if n != f"shipped:{ref}"] + ([ref] if ref else []))
    caution = split_caution(header.get("split"))
    if caution:
        verdicts.append(f"- note: {caution}")
    if header.get("protocol_changed"):
        verdicts.append(f"- note: {header['protocol_changed']}")
    if header.get("ignored_settings"):
        verdicts.append(f"- note: {header['ignored_settings']}")
    if verdicts:
        text += "\n" + "\n".join(verdicts) + "\n"
    return text
