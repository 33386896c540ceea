"""A trained tracker on the product's scoring points: the same users, candidates, metrics and tie rule.

:func:`score_replay` ranks the candidates of every scoring point of a
:class:`~interestgym.envs.replay_data.ReplayData` with a tracker and returns one row per point,
aligned with :func:`interestgym.envs.vector.evaluate_policy`'s ``points`` (same columns: ``user_id``,
``point_key``, ``repeat``, ``decision``, then one column per metric; same order: by scoring point), so
``evaluate`` can put a tracker in its table beside the rules and PPO with the same bootstrap and
paired differences. The point after decision d is scored with the window of the user's decisions up
to and including d (causal); metrics come from :func:`interestgym.core.metrics.ranking_metrics`
(ties count as their expected value over random orders).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from interestgym.agents.sequence.data import (
    DecisionSequences,
    Windows,
    decision_sequences,
    windows_ending_at,
)
from interestgym.agents.sequence.folder import (
    MODEL_FILE,
    load_model_state,
    read_run_config,
)
from interestgym.agents.sequence.models import ModelSpec, SequenceTracker, build_model

from interestgym.core.metrics import metric_names, ranking_metrics
from interestgym.errors import ArtifactError


def _split_words(split: Any) -> str:
    """A dataset's split settings as words (``train 0.6, valid 0.2, test 0.2, seed 0``), not a Python dict."""
    if not isinstance(split, dict):
        return repr(split)
    def words(value: Any) -> str:
        return " / ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)

    return ", ".join(f"{k} {words(v)}" for k, v in split.items() if v is not None)


def row_name(name: str, run_dir: str | Path, taken: set[str]) -> str:
    """A tracker's row name in a table that already has ``taken``: its own, else named by its run folder too
    (``gru (gru-seed7)``; the folder's path where the folder has the tracker's name), numbered if still taken."""
    if name not in taken:
        return name
    folder = Path(run_dir).name if Path(run_dir).name != name else str(run_dir)
    base = candidate = f"{name} ({folder})"
    k = 2
    while candidate in taken:
        candidate, k = f"{base} #{k}", k + 1
    return candidate


def embeddings_sha256(embeddings: np.ndarray) -> str:
    """Fingerprint of an embedding matrix as the tracker reads it (float32, C order)."""
    return hashlib.sha256(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes()).hexdigest()


def dataset_fingerprint(data: Any) -> dict[str, Any]:
    """What a tracker must be used with: the dataset's item ids, the embedding matrix, and the user split
    (a tracker trained on one split's training users has seen another split's test users)."""
    from interestgym.data.dataset import Dataset

    ds = Dataset.open(data.dataset_path)
    return {"path": str(data.dataset_path), "item_ids_sha256": ds.item_ids_sha256,
            "embeddings": data.embeddings_name, "embeddings_sha256": embeddings_sha256(data.embeddings),
            "n_items": int(data.embeddings.shape[0]), "dim": int(data.dim), "split": ds.manifest.get("split")}


def _tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.long, device=device)


@torch.inference_mode()
def window_states(model: SequenceTracker, windows: Windows, batch_size: int = 1024) -> np.ndarray:
    """(B, hidden) float32 state of every window (the model in eval mode)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros((len(windows.length), model.spec.hidden), dtype=np.float32)
    for s in range(0, len(windows.length), batch_size):
        sl = slice(s, s + batch_size)
        width = int(windows.length[sl].max())  # trailing padding never changes a causal output: drop it
        h = model.states(_tensor(windows.item[sl, :width], device), _tensor(windows.action[sl, :width], device),
                         _tensor(windows.gap[sl, :width], device), _tensor(windows.length[sl], device))
        out[sl] = h.float().cpu().numpy()
    model.train(was_training)
    return out


@torch.inference_mode()
def decision_states(model: SequenceTracker, seqs: DecisionSequences, decisions: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(len(decisions), hidden) state after each decision: the model's output for the window of the user's
    last ``k`` decisions up to and including it.

    Equal to ``window_states(model, windows_ending_at(seqs, decisions, k))`` (the runtime's way: one
    window per decision), computed with less work: a decision among its user's first k has as window
    the user's first decisions up to it, so one causal pass over the user's first k decisions gives
    all of them (the output at position t reads positions 0..t only); later decisions each get their
    own window.
    """
    decisions = np.asarray(decisions, dtype=np.int64)
    k = model.spec.window
    out = np.zeros((len(decisions), model.spec.hidden), dtype=np.float32)
    early = seqs.position[decisions] < k
    if (~early).any():
        out[~early] = window_states(model, windows_ending_at(seqs, decisions[~early], k), batch_size)
    if early.any():
        first = decisions[early] - seqs.position[decisions[early]]  # the user's first decision
        starts, slot = np.unique(first, return_inverse=True)
        # the window ending at each user's k-th decision (or last one) holds every early window's inputs
        user_of_start = np.searchsorted(seqs.start, starts)
        last = np.minimum(starts + k, seqs.end[user_of_start]) - 1
        prefix = windows_ending_at(seqs, last, k)
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        position = seqs.position[decisions[early]]
        rows = np.nonzero(early)[0]
        for s in range(0, len(starts), batch_size):
            sl = slice(s, s + batch_size)
            width = int(prefix.length[sl].max())
            enc = model.encode(_tensor(prefix.item[sl, :width], device), _tensor(prefix.action[sl, :width], device),
                               _tensor(prefix.gap[sl, :width], device)).float().cpu().numpy()
            members = np.nonzero((slot >= s) & (slot < s + batch_size))[0]
            out[rows[members]] = enc[slot[members] - s, position[members]]
        model.train(was_training)
    return out


@torch.inference_mode()
def item_table(model: SequenceTracker) -> np.ndarray:
    """(n_items, hidden) float32: every item's representation (the candidate vectors)."""
    was_training = model.training
    model.eval()
    out = model.items.all_items().float().cpu().numpy()
    model.train(was_training)
    return out


@dataclass
class SequenceResult:
    """What :func:`score_replay` returns: ``points`` as ``EvaluationResult.points`` (plus ``scores``
    when asked: (n_points, C) candidate scores, padding NaN)."""

    policy: str
    metric: str
    metrics: tuple[str, ...]
    protocol: dict[str, Any]
    points: pd.DataFrame
    scores: np.ndarray | None = None

    def per_user(self) -> pd.DataFrame:
        return self.points.groupby("user_id", sort=False)[list(self.metrics)].mean()


def score_replay(data: Any, model: SequenceTracker, *, name: str = "tracker", metric: str = "ndcg@10",
                 seqs: DecisionSequences | None = None, users: list[str] | None = None, batch_size: int = 1024,
                 keep_scores: bool = False) -> SequenceResult:
    """Score every scoring point of ``data`` (or of ``users``) with ``model``; see the module docstring.

    :param data: ReplayData of the evaluated split (its embeddings must be the model's item vectors:
        :meth:`Tracker.bind` / :func:`load_tracker` check that).
    :param seqs: the split's decision sequences (built from ``data`` when None).
    :param keep_scores: also return every candidate's score (tests, parity checks).
    """
    names = metric_names([metric.strip().lower()])
    seqs = seqs if seqs is not None else decision_sequences(data)
    counts = data.decision_point_end - data.decision_point_start
    point_decision = np.repeat(np.arange(data.n_decisions), counts)
    point = np.arange(data.n_points)
    if users is not None:
        keep = np.isin(data.user_ids[data.decision_user[point_decision]], np.asarray(users, dtype=str))
        point, point_decision = point[keep], point_decision[keep]
    decisions, inverse = np.unique(point_decision, return_inverse=True)
    states = decision_states(model, seqs, decisions)
    table = item_table(model)
    cand, labels, _ = data.padded_points(point)
    mask = labels >= 0
    scores = np.empty(cand.shape, dtype=np.float32)
    for s in range(0, len(point), batch_size):
        sl = slice(s, s + batch_size)
        # one (C, hidden) @ (hidden,) product per point: a point's scores do not depend on the batch
        scores[sl] = np.einsum("pch,ph->pc", table[cand[sl]], states[inverse[sl]])
    values = ranking_metrics(scores, labels, names)
    from interestgym.envs.vector import point_table

    points = point_table(data, point, point_decision, {m: values[m] for m in names})
    return SequenceResult(policy=name, metric=metric.strip().lower(), metrics=tuple(names), protocol=data.describe(),
                          points=points, scores=np.where(mask, scores, np.nan) if keep_scores else None)


def point_scores(data: Any, model: SequenceTracker, seqs: DecisionSequences | None = None) -> np.ndarray:
    """The tracker's score of every candidate of every scoring point, flat and aligned with
    ``data.point_candidates`` (float32): what the engine needs to add the tracker as a score term."""
    res = score_replay(data, model, seqs=seqs, keep_scores=True)
    assert res.scores is not None
    length = np.diff(data.point_offsets)
    return res.scores[np.arange(res.scores.shape[1])[None, :] < length[:, None]].astype(np.float32)


@torch.inference_mode()
def decision_confidence(data: Any, model: SequenceTracker, seqs: DecisionSequences | None = None,
                        batch_size: int = 2048, decisions: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """How sure the tracker is after every decision (or after ``decisions``, indices), from its softmax over the
    whole catalogue: ``top1_prob`` (the most likely next item's probability) and ``entropy`` (divided by
    log(n_items), so in [0, 1]); (n_decisions,) float32 each. Observations for an agent that decides how much to
    trust the tracker (issue 13, item 3)."""
    from interestgym.core.features import tracker_confidence

    seqs = seqs if seqs is not None else decision_sequences(data)
    decisions = np.arange(data.n_decisions) if decisions is None else np.asarray(decisions, dtype=np.int64)
    n = len(decisions)
    states = decision_states(model, seqs, decisions)
    table = np.ascontiguousarray(item_table(model), dtype=np.float32)
    top1 = np.empty(n, dtype=np.float32)
    entropy = np.empty(n, dtype=np.float32)
    # a batch holds (rows x catalogue) logits and two temporaries: at most 2^24 floats each (64 MB), so a
    # large catalogue gets fewer rows per batch rather than gigabytes of logits
    batch_size = max(1, min(batch_size, (1 << 24) // max(int(table.shape[0]), 1)))
    for s in range(0, n, batch_size):
        top1[s: s + batch_size], entropy[s: s + batch_size] = tracker_confidence(states[s: s + batch_size] @ table.T)
    return {"top1_prob": top1, "entropy": entropy}


class Tracker:
    """A trained tracker loaded from its run folder, ready to score a dataset's replay data.

    ``name``: its name in result tables; ``kind``: ``sequence``; ``model``: the torch module (eval
    mode); ``config`` / ``spec`` / ``info``: what the run folder says.
    """

    kind = "sequence"

    def __init__(self, model: SequenceTracker, config: Any, spec: ModelSpec, dataset: dict[str, Any], info: dict[str, Any],
                 run_dir: Path) -> None:
        self.model = model.eval()
        self.config = config
        self.spec = spec
        self.dataset = dataset
        self.info = info
        self.run_dir = run_dir
        self.name = str(config.name or spec.model)
        self._bound: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        """What a results table shows about the tracker."""
        return {"model": self.spec.model, "window": self.spec.window, "hidden": self.spec.hidden, "layers": self.spec.layers,
                "item_ids": self.spec.use_ids, "text": self.spec.use_text, "run": str(self.run_dir),
                "epoch": self.info.get("epoch"), "valid_score": self.info.get("valid_score"),
                "weights_sha256": self.weights_sha256}

    @property
    def weights_sha256(self) -> str | None:
        """The sha256 of the loaded weights file (``info.json``'s record, checked at load): which model this is,
        wherever its folder is and whatever was trained there since."""
        shas = self.info.get("sha256")
        return shas.get(MODEL_FILE) if isinstance(shas, dict) else None

    def bind(self, data: Any) -> None:
        """Give the model ``data``'s item vectors, refusing data it was not trained for."""
        sha = embeddings_sha256(data.embeddings)
        if self._bound == sha:
            return
        self.check_data(data.dataset_path, data.embeddings_name, sha)
        if self.spec.use_text:
            self.model.items.set_text_vectors(data.embeddings)
        self._bound = sha

    def check_data(self, dataset_path: str | Path, embeddings_name: str, embeddings_sha: str) -> None:
        """Refuse a dataset the tracker was not trained on: other items, another split of the users (its validation
        and test users would include users it trained on), or other item vectors (``embeddings_sha``: the
        :func:`embeddings_sha256` of the dataset's embeddings ``embeddings_name``). :meth:`bind` runs it at scoring;
        a command that tunes first runs it before the tuning."""
        from interestgym.data.dataset import Dataset

        where = self.run_dir / "sequence.json"
        ds = Dataset.open(dataset_path)
        items = ds.item_ids_sha256
        if items != self.dataset.get("item_ids_sha256"):
            raise ArtifactError(f"{where}: the tracker was trained on {self.dataset.get('path')} (items with id hash "
                                f"{str(self.dataset.get('item_ids_sha256'))[:12]}...), but {dataset_path} has other items "
                                f"({items[:12]}...); a tracker scores only the dataset it was trained on: train one there "
                                "(interestgym train-sequence)")
        recorded_split = self.dataset.get("split")  # trackers trained before it was recorded: not checked
        if recorded_split is not None and recorded_split != ds.manifest.get("split"):
            trained_on = self.dataset.get("path")
            same = trained_on is not None and Path(str(trained_on)).resolve() == Path(dataset_path).resolve()
            raise ArtifactError(f"{where}: the tracker was trained on the training users of "
                                + ("" if same or trained_on is None else f"{trained_on}, ")
                                + f"split {_split_words(recorded_split)}, but {dataset_path} "
                                + ("is now split" if same else "is split")
                                + f" {_split_words(ds.manifest.get('split'))}: its validation and test users include users "
                                "the tracker trained on. Train the tracker again on this dataset")
        if embeddings_sha != self.dataset.get("embeddings_sha256"):
            raise ArtifactError(f"{where}: the tracker was trained with embeddings {self.dataset.get('embeddings')!r} "
                                f"(sha256 {str(self.dataset.get('embeddings_sha256'))[:12]}...), but {dataset_path}'s "
                                f"{embeddings_name!r} hash to {embeddings_sha[:12]}...; use the embeddings it was trained with "
                                f"(--embeddings {self.dataset.get('embeddings')}), or train a tracker on these (interestgym "
                                "train-sequence)")

    def score(self, data: Any, *, metric: str = "ndcg@10", users: list[str] | None = None, keep_scores: bool = False) -> SequenceResult:
        """:func:`score_replay` of this tracker on ``data`` (checked with :meth:`bind`)."""
        self.bind(data)
        return score_replay(data, self.model, name=self.name, metric=metric, users=users, keep_scores=keep_scores)


def load_tracker(run_dir: str | Path, which: str = "best", device: str = "cpu") -> Tracker:
    """A trained tracker from ``run_dir`` (``best`` or ``final`` model)."""
    run_dir = Path(run_dir)
    config, spec, doc = read_run_config(run_dir)
    state, info = load_model_state(run_dir, which)
    model = build_model(spec)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        # torch's first line names only the model class; the lines after it say which tensors differ and how
        details = "; ".join(line.strip().rstrip(".") for line in str(exc).splitlines()[1:4])
        raise ArtifactError(f"{run_dir / which}: weights do not fit the model spec in {run_dir / 'sequence.json'} "
                            f"({details or str(exc).splitlines()[0]}); the spec was edited or belongs to another run") from None
    model.to(torch.device(device))
    return Tracker(model, config, spec, doc.get("dataset") or {}, info, run_dir)
