"""Training a sequence tracker, top to bottom (CleanRL style): data, model, loop, early stopping.

1. **Data**: the decision sequences of the dataset's *training* users (:mod:`.data`); *validation*
   users' scoring points (the product's protocol: the same candidates ``evaluate`` uses on them) for
   early stopping. Test users are never read.
2. **Model**: :mod:`.models` (``gru`` or ``sasrec``); item-id embeddings where ids recur.
3. **Loop**: each epoch cuts every training user's sequence into chunks of ``window`` decisions (a
   random offset per user and epoch), shuffles them, and minimises the cross-entropy of the next
   decision's item at every chunk position: a softmax over the whole catalogue (``loss = full``) or
   over the target plus shared uniform negatives (``sampled``, for catalogues over 10,000 items).
   After every epoch the model scores the validation users' scoring points
   (:func:`~interestgym.agents.sequence.scoring.score_replay`); a better mean over users of
   ``metric`` saves ``best/``; ``patience`` epochs without one stop the run.

TensorBoard (``RUN_DIR/tb``), one point per epoch on the epoch axis:

=====================================  ==========================================================
``losses/train``                       mean training cross-entropy of the epoch
``eval/<metric>``                      validation users' mean of the metric (e.g. ``eval/ndcg@10``)
``eval/best_<metric>``                 best validation value so far (the model in ``best/``)
``charts/epoch_seconds``               wall-clock seconds of the epoch's training (validation excluded)
``charts/targets_per_second``          training targets (next items) per second
``charts/learning_rate``               the optimiser's learning rate
=====================================  ==========================================================

plus the settings as a text table (``hyperparameters``). Every epoch ends with a checkpoint
(``checkpoints/last``: weights, optimiser, epoch, history): ``--resume`` continues from it with
the same curves (points logged after it by a killed run are dropped).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from interestgym.agents.sequence.config import RESUME_MAY_CHANGE, SequenceConfig
from interestgym.agents.sequence.data import (
    DecisionSequences,
    TrainingChunks,
    decision_sequences,
    ids_recur,
    item_id_rows,
    training_chunks,
)
from interestgym.agents.sequence.folder import (
    CONFIG_FILE,
    TENSORBOARD_DIR,
    load_checkpoint,
    load_model_state,
    read_run_config,
    run_settings,
    save_checkpoint,
    save_model,
    write_run_config,
)
from interestgym.agents.sequence.models import (
    ModelSpec,
    SequenceTracker,
    build_model,
    pick_device,
)
from interestgym.agents.sequence.scoring import dataset_fingerprint, score_replay

from interestgym.errors import ArtifactError, InterestGymError, Interrupted
from interestgym.io import make_out_dir
from interestgym.progress import progress_bar

#: Largest catalogue trained with a full softmax under ``loss = auto``. Above it a full softmax costs more per epoch
#: than a CPU run can afford: on the Taobao sample (30,063 items) a GRU took ~22 s an epoch and ranked at chance
#: (AUC 0.51) after the minutes the sampled loss (~1.5 s an epoch) needs to reach 0.37 nDCG@10 (docs/sequence.md).
FULL_SOFTMAX_MAX_ITEMS = 10_000


def chunk_loss(model: SequenceTracker, chunks: TrainingChunks, index: np.ndarray, device: torch.device, *, sampled: int | None,
               rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy of the next item at every position of the chunks ``index``; (loss, targets)."""
    w = chunks.windows
    width = int(w.length[index].max())
    as_long = lambda x: torch.as_tensor(np.ascontiguousarray(x[index, :width]), dtype=torch.long, device=device)
    states = model.encode(as_long(w.item), as_long(w.action), as_long(w.gap))
    target = as_long(chunks.target)
    valid = target >= 0
    h = states[valid]
    y = target[valid]
    if sampled is None:
        logits = h @ model.items.all_items().T
        return F.cross_entropy(logits, y), len(y)
    negatives = torch.as_tensor(rng.integers(0, model.spec.n_items, sampled), dtype=torch.long, device=device)
    pos = (h * model.items(y)).sum(-1, keepdim=True)
    neg = h @ model.items(negatives).T
    neg = neg.masked_fill(negatives[None, :] == y[:, None], float("-inf"))  # a target drawn as a negative
    logits = torch.cat([pos, neg], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=device)), len(y)


def _hyperparameter_markdown(params: dict[str, Any]) -> str:
    return "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in params.items())


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    from interestgym.agents.run_folder import refuse_inside_dataset

    refuse_inside_dataset(run_dir, "--run-dir", "a new folder for the tracker")
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise InterestGymError(f"{run_dir}: --resume but no tracker run there ({CONFIG_FILE} missing); start one without --resume")
    elif (run_dir / CONFIG_FILE).exists():
        raise InterestGymError(f"{run_dir}: already holds a tracker run; continue it with --resume or choose a new --run-dir")
    elif (run_dir / "config.json").exists():
        raise InterestGymError(f"{run_dir}: holds a PPO training run; choose a new --run-dir for the tracker")
    make_out_dir(run_dir, "--run-dir")


def train_sequence(config: SequenceConfig, *, resume: bool = False, log: Any = print,
                   changes: Sequence[str] = RESUME_MAY_CHANGE) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) a tracker; returns a summary (best epoch and score, seconds).

    :param changes: on resume, the settings of ``config`` that replace the run's own (among
        :data:`RESUME_MAY_CHANGE`); every other setting is the run's. The command line passes those typed on it, so a
        resume keeps the run's limits (``--max-epochs``, ``--patience``, ``--max-minutes``) unless told otherwise.
    """
    unknown = sorted(set(changes) - set(RESUME_MAY_CHANGE))
    if unknown:
        raise ValueError(f"changes {unknown}: a resume may change only {', '.join(RESUME_MAY_CHANGE)}")
    t_start = time.perf_counter()
    run_dir = Path(config.run_dir)
    from interestgym.data.dataset import Dataset

    dataset = Dataset.open(config.dataset)  # a missing or broken dataset fails before the run folder is made
    pick_device(config.device)  # likewise a device this machine lacks
    if config.folds:  # and folds the training users cannot fill, before the main tracker's training, not after it
        fold_users(config.replay_data("train").user_ids, config.folds, config.seed)
    fresh = not run_dir.exists()
    _prepare_run_dir(run_dir, resume)
    try:
        grow = True
        if resume:
            config, grow = _resumed(config, run_dir, tuple(changes))
        folds = (lambda: _train_folds(config, dataset, run_dir, log, tuple(changes))) if config.folds else None
        return _train(config, dataset, run_dir, resume, log, t_start, tuple(changes), after=folds, grow=grow)
    except BaseException:
        if fresh and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # a run that failed before writing anything leaves no empty folder behind
        raise


def _check_best(run_dir: Path, state: dict[str, Any], metric: str) -> None:
    """A resume's check of the model early stopping kept (checkpoint ``state``): whole, or the run cannot be said
    finished, nor resumed (its weights are in no checkpoint, so nothing can rebuild it)."""
    best_epoch = int(state.get("best_epoch") or 0)
    if best_epoch <= 0:
        return
    try:
        load_model_state(run_dir, "best")
    except ArtifactError as exc:
        raise InterestGymError(
            f"{exc}; the run kept its epoch-{best_epoch} model there ({metric} {float(state.get('best', math.nan)):.4f}), "
            "which --resume cannot rebuild (its weights are in no checkpoint): put best/ back from a copy of the run, or "
            "train again in a new --run-dir") from None


#: The settings that bound a tracker's training: a resume that changes none of them does not train a stopped tracker on.
LIMITS = ("max_epochs", "patience", "max_minutes")


def _resumed(config: SequenceConfig, run_dir: Path, changes: tuple[str, ...]) -> tuple[SequenceConfig, bool]:
    """The settings a resume continues with: the run's own, except those ``changes`` names (how long and how verbosely
    to go on, where); and whether they bound the training otherwise than the run's own did (:data:`LIMITS`)."""
    saved = run_settings(run_dir)
    resumed = SequenceConfig.from_dict({**saved, **{k: getattr(config, k) for k in changes}}, str(run_dir / CONFIG_FILE))
    return resumed, any(getattr(resumed, name) != saved.get(name) for name in LIMITS)


def fold_users(user_ids: np.ndarray, k: int, seed: int) -> list[list[str]]:
    """A seeded partition of ``user_ids`` into ``k`` folds of sizes differing by at most one (each fold's ids in
    ``user_ids`` order)."""
    ids = np.asarray(user_ids, dtype=str)
    if len(ids) < k:
        raise InterestGymError(f"--folds {k}: the dataset has {len(ids)} training user(s) with a decision; expected at least "
                               "one per fold")
    fold = np.empty(len(ids), dtype=np.int64)
    fold[np.random.default_rng([seed, k]).permutation(len(ids))] = np.arange(len(ids)) % k
    return [ids[fold == f].tolist() for f in range(k)]


def _train_folds(config: SequenceConfig, dataset: Any, run_dir: Path, log: Any, changes: tuple[str, ...]) -> list[dict[str, Any]]:
    """Train (or resume, or keep when finished) the ``config.folds`` trackers, each without one fold of the training
    users, in ``RUN_DIR/folds/<f>``; returns each one's summary. The partition is written to ``folds.json`` first, and a
    resume checks that it is the one the users would be cut into again."""
    from interestgym.agents.sequence.folder import fold_run_dir, read_folds, write_folds

    train_ids = np.asarray(config.replay_data("train").user_ids, dtype=str)
    users = fold_users(train_ids, config.folds, config.seed)
    saved = read_folds(run_dir)
    if saved is None:
        write_folds(run_dir, users, config.seed)
    elif saved != users:
        raise InterestGymError(f"{run_dir / 'folds.json'}: its folds are not the partition of this dataset's training users "
                               "the run's settings give (the dataset's users changed since?); train again in a new --run-dir")
    # every fold's tracker is built as the main one is (item-id embeddings or not: `auto` decided on all training users)
    use_ids = read_run_config(run_dir)[1].use_ids
    summaries = []
    for f, held_out in enumerate(users, start=1):
        folder = fold_run_dir(run_dir, f)
        started = (folder / CONFIG_FILE).is_file()
        fold_config = dataclasses.replace(config, run_dir=str(folder), folds=0, name=f"{config.name}-fold{f}",
                                          item_ids="on" if use_ids else "off")
        grow = True
        if started:
            fold_config, grow = _resumed(fold_config, folder, changes)
            summary = read_run_config(folder)[2].get("summary")
            if isinstance(summary, dict) and not grow:
                summaries.append(summary)  # finished before an interruption of a later fold, and no limit changed since
                continue
        make_out_dir(folder, "--run-dir")
        kept = train_ids[~np.isin(train_ids, np.asarray(held_out, dtype=str))]
        log(f"{config.name}: out-of-fold tracker {f} of {config.folds}, trained without fold {f}'s {len(held_out):,} training "
            "users" + (" (resumed)" if started else ""))
        summaries.append(_train(fold_config, dataset, folder, started, log, time.perf_counter(), changes,
                                train_users=kept, left_out={"fold": f, "of": config.folds, "users": len(held_out)},
                                resume_dir=run_dir, grow=grow))
    return summaries


def _train(config: SequenceConfig, dataset: Any, run_dir: Path, resume: bool, log: Any, t_start: float,
           changes: tuple[str, ...], *, after: Any = None, train_users: np.ndarray | None = None,
           left_out: dict[str, int] | None = None, resume_dir: Path | None = None, grow: bool = True) -> dict[str, Any]:
    """One tracker's training (``config`` already the resumed run's settings on resume).

    :param grow: on resume, whether the resume changed a limit (:data:`LIMITS`): a tracker that had stopped trains on
        only then (else, e.g. stopped at ``--max-minutes`` and resumed to finish its out-of-fold trackers, it is kept).
    :param after: called when the tracker is trained, before the run is marked finished (its summary written); what it
        returns is the summary's ``folds``.
    :param train_users: train on these training users only (a fold's tracker; ``left_out`` says which fold it leaves out).
    :param resume_dir: the run folder a ``--resume`` names (the parent of a fold's), for the interrupt's message.
    """
    if config.torch_threads:
        torch.set_num_threads(int(config.torch_threads))
    device = pick_device(config.device)
    torch.manual_seed(config.seed)

    # ---------------------------------------------------------------- data: training and validation users
    if train_users is None:
        train_data = config.replay_data("train")
    else:
        from interestgym.envs.replay_data import build_replay_data

        train_data = build_replay_data(dataset, config.embeddings, config.protocol_spec("train"), users=train_users)
    valid_data = config.replay_data("valid")
    events = dataset.events
    train_seqs: DecisionSequences = decision_sequences(train_data, events)
    valid_seqs = decision_sequences(valid_data, events)
    if train_seqs.n_decisions - len(train_seqs.start) < 1:
        raise InterestGymError(f"{config.dataset}: training users have no user with two decisions; nothing to learn from")
    if valid_data.n_points == 0:
        raise InterestGymError(f"{config.dataset}: validation users have no scoring point; early stopping needs some")
    n_items = int(train_data.embeddings.shape[0])
    use_ids = config.item_ids == "on" or (config.item_ids == "auto" and ids_recur(train_seqs, valid_seqs))
    id_rows = item_id_rows(train_seqs, n_items) if use_ids else np.zeros(n_items, dtype=np.int64)
    spec = ModelSpec(model=config.model, n_items=n_items, n_id_rows=int(id_rows.max()) + 1, text_dim=train_data.dim if config.text else 0,
                     window=config.window, hidden=config.hidden, layers=int(config.layers), heads=int(config.heads),
                     dropout=float(config.dropout), use_ids=use_ids, use_text=config.text)
    sampled = None
    if config.loss == "sampled" or (config.loss == "auto" and n_items > FULL_SOFTMAX_MAX_ITEMS):
        sampled = int(config.train_negatives)
    from interestgym.agents.tuning import subsample_users

    eval_users = subsample_users(valid_data.scored_user_ids, config.eval_users, config.seed)  # those a metric is measured on

    # ---------------------------------------------------------------- model, optimiser, run folder
    model = build_model(spec)
    model.items.set_id_rows(id_rows)
    model.to(device)
    if spec.use_text:
        model.items.set_text_vectors(train_data.embeddings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    fingerprint = dataset_fingerprint(train_data)
    metric = config.metric.strip().lower()
    checkpoint = None
    if resume:
        _, saved_spec, doc = read_run_config(run_dir)
        if saved_spec != spec or doc.get("dataset", {}).get("embeddings_sha256") != fingerprint["embeddings_sha256"]:
            raise InterestGymError(f"{run_dir / CONFIG_FILE}: the dataset or model spec changed since this run started; "
                                   "start a new --run-dir")
        if doc.get("loss") in ("full", "sampled"):  # the loss the run started with (`auto` may resolve otherwise since)
            sampled = int(config.train_negatives) if doc["loss"] == "sampled" else None
        checkpoint = load_checkpoint(run_dir, log)
        if checkpoint is not None:
            _check_best(run_dir, checkpoint[2], metric)  # before anything of the run is rewritten
    extra = {} if left_out is None else {"left_out": left_out}
    write_run_config(run_dir, config, spec, fingerprint, validation=valid_data.describe(), loss="sampled" if sampled else "full",
                     **extra)

    epoch, best, best_epoch, bad, history = 0, -math.inf, 0, 0, []
    kept_stop = None
    from torch.utils.tensorboard import SummaryWriter

    if checkpoint is not None:
        model_state, optim_state, state = checkpoint
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        epoch, best, best_epoch, bad = int(state["epoch"]), float(state["best"]), int(state["best_epoch"]), int(state["bad"])
        history = list(state.get("history", []))
        from interestgym.agents.callbacks import truncate_tensorboard

        truncate_tensorboard(run_dir / TENSORBOARD_DIR, epoch)
        kept_stop = None if grow else state.get("stopped")  # why it had stopped, when no limit changed since
        log(f"resuming {run_dir} after epoch {epoch} (best {metric} {best:.4f} at epoch {best_epoch})"
            + (f"; it had stopped ({kept_stop}) and no limit changed: kept as it is" if kept_stop else ""))
    writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR))
    if epoch == 0:
        writer.add_text("hyperparameters", _hyperparameter_markdown({**config.as_dict(), **spec.as_dict(),
                                                                      "loss": "sampled" if sampled else "full"}), 0)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{config.name}: {spec.model}, window {spec.window}, hidden {spec.hidden}, {spec.layers} layer(s), item ids "
        f"{'on' if use_ids else 'off'}, {n_params:,} parameters, {'sampled' if sampled else 'full'} softmax over {n_items:,} items; "
        f"{len(train_seqs.start):,} training users ({train_seqs.n_decisions:,} decisions), "
        + (f"{len(eval_users):,} of {valid_data.n_users:,} validation users scored for early stopping ({valid_data.n_points:,} scoring "
           "points in all)" if eval_users else f"{valid_data.n_users:,} validation users ({valid_data.n_points:,} scoring points)")
        + f" on {device}")

    n_targets_epoch = train_seqs.n_decisions - len(train_seqs.start)
    # an estimate until each epoch's chunks are cut (their count depends on the epoch's random offsets)
    batches_per_epoch = math.ceil(len(training_chunks(train_seqs, spec.window)) / config.batch_size)
    kept = bool(kept_stop)
    stop_reason = str(kept_stop) if kept else "max_epochs"
    bar = progress_bar(total=config.max_epochs * batches_per_epoch, desc=f"training {config.name}", unit="batch",
                       enabled=None if config.progress_bar else False)
    bar.update(epoch * batches_per_epoch)
    deadline = None if config.max_minutes is None else time.perf_counter() + 60.0 * config.max_minutes
    # the bar's time left counts every epoch up to --max-epochs, an upper bound: early stopping and the limit in time
    # are said beside it
    limit = "" if config.max_minutes is None else f"; stops after --max-minutes {config.max_minutes:g}"
    epochs = f"{config.patience} epoch{'' if config.patience == 1 else 's'}"
    bar.set_postfix_str(f"time left up to --max-epochs {config.max_epochs}; {epochs} without a better validation score "
                        f"stop it sooner{limit}")
    checkpointed = epoch  # the last epoch whose checkpoint is whole on disk
    try:
        while epoch < config.max_epochs and not kept:
            if bad >= config.patience:
                stop_reason = "early_stopping"
                break
            if deadline is not None and time.perf_counter() > deadline:
                stop_reason = "max_minutes"
                break
            rng = np.random.default_rng([config.seed, epoch])
            torch.manual_seed(config.seed * 100_003 + epoch)
            chunks = training_chunks(train_seqs, spec.window, rng)
            order = rng.permutation(len(chunks))
            batches = math.ceil(len(chunks) / config.batch_size)
            bar.total = bar.n + batches * (config.max_epochs - epoch)  # this epoch's count, for it and the ones left
            model.train()
            t0 = time.perf_counter()
            total, count = 0.0, 0
            for s in range(0, len(order), config.batch_size):
                loss, n = chunk_loss(model, chunks, order[s: s + config.batch_size], device, sampled=sampled, rng=rng)
                value = float(loss.detach())
                if not math.isfinite(value):
                    done = f"epochs 1-{checkpointed} are checkpointed there" if checkpointed else "no epoch was checkpointed"
                    raise InterestGymError(
                        f"{config.name}: training diverged in epoch {epoch + 1}: the loss became {value} (--learning-rate "
                        f"{config.learning_rate:g}); expected a finite loss: train again in a new --run-dir with a lower "
                        f"--learning-rate (default {SequenceConfig.learning_rate:g}) ({run_dir}: {done}, and --resume "
                        "would diverge again with the same settings)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += value * n
                count += n
                bar.update(1)
            seconds = time.perf_counter() - t0
            epoch += 1
            score = float(score_replay(valid_data, model, metric=metric, seqs=valid_seqs, users=eval_users)
                          .per_user()[metric].mean())
            improved = score > best
            if improved:
                best, best_epoch, bad = score, epoch, 0
                save_model(run_dir / "best", model, {"epoch": epoch, "valid_metric": metric, "valid_score": score})
            else:
                bad += 1
            train_loss = total / max(count, 1)
            history.append({"epoch": epoch, "loss": train_loss, "valid": score, "seconds": round(seconds, 3)})
            for tag, value in (("losses/train", train_loss), (f"eval/{metric}", score), (f"eval/best_{metric}", best),
                               ("charts/epoch_seconds", seconds), ("charts/targets_per_second", n_targets_epoch / max(seconds, 1e-9)),
                               ("charts/learning_rate", optimizer.param_groups[0]["lr"])):
                writer.add_scalar(tag, value, epoch)
            writer.flush()
            save_checkpoint(run_dir, model, optimizer, {"epoch": epoch, "best": best, "best_epoch": best_epoch, "bad": bad,
                                                        "history": history})
            checkpointed = epoch
            bar.set_postfix_str(f"epoch {epoch}, loss {train_loss:.3f}, valid {metric} {score:.4f}, best {best:.4f} @ {best_epoch}{limit}")
        bar.total = bar.n  # stopped early (patience, time): the work is done
        if epoch > 0 and not kept:  # the checkpoint says it stopped, and why: a resume does not train it on unasked
            save_checkpoint(run_dir, model, optimizer, {"epoch": epoch, "best": best, "best_epoch": best_epoch, "bad": bad,
                                                        "history": history, "stopped": stop_reason})
    except KeyboardInterrupt:
        bar.close()
        done = f"epochs 1-{checkpointed} are checkpointed" if checkpointed else "no epoch was checkpointed"
        log(f"{config.name}: interrupted during epoch {checkpointed + 1}; {done}: continue with "
            f"`interestgym train-sequence {config.dataset} --run-dir {resume_dir or run_dir} --resume`")
        raise Interrupted from None  # said what it left: the CLI adds no generic line
    finally:
        bar.close()
        writer.close()
    save_model(run_dir / "final", model, {"epoch": epoch, "valid_metric": metric,
                                          "valid_score": history[-1]["valid"] if history else None})
    summary = {"epochs": epoch, "best_epoch": best_epoch, "best_valid": best, "metric": metric, "stopped": stop_reason,
               "seconds": round(time.perf_counter() - t_start, 1),
               "train_seconds": round(sum(h["seconds"] for h in history), 1),
               "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in history])), 3) if history else None}
    said = (f"{config.name}: stopped after epoch {epoch} ({stop_reason}); best validation {metric} {best:.4f} at epoch "
            f"{best_epoch}")
    if after is not None:  # the run is finished (its summary written) only when its out-of-fold trackers are too
        log(f"{said}; now its {config.folds} out-of-fold trackers")
        summary["folds"] = folds = after()
        summary["seconds"] = round(time.perf_counter() - t_start, 1)
        scores = ", ".join(f"{fold['best_valid']:.4f}" for fold in folds)
        said = f"{config.name}: {len(folds)} out-of-fold trackers trained (best validation {metric} {scores})"
    write_run_config(run_dir, config, spec, fingerprint, validation=valid_data.describe(), loss="sampled" if sampled else "full",
                     summary=summary, **extra)
    log(f"{said}; {summary['seconds']} s in all, {summary['seconds_per_epoch']} s per epoch of training; wrote {run_dir}")
    return summary
