"""What a sequence tracker reads: each decision's item, action and time gap, and the windows over them.

A tracker sees a user's **decisions** (the positive events the replay decides on,
:func:`~interestgym.core.log_features.is_decision`), in replay order, and nothing else: the scoring
point after decision d may only depend on decisions up to and including d (the causal rule every
policy of the product follows). Per decision it reads

* the item (row of items.parquet): its encoder vector, and a learned item-id embedding when ids recur;
* the action (``click``, ``rate``, ``purchase`` ... as a code of :data:`interestgym.data.schema.ACTIONS`);
* the gap since the user's previous decision, in log2 buckets (:func:`~interestgym.core.tokens.gap_buckets`).

**Windows.** The tracker's only state is the window of the user's last ``k`` decisions. The input of
one window is laid out from its oldest decision at position 0 to the newest at position ``length - 1``
and right-padded to ``k``; a causal model's output at ``length - 1`` is the user's state. Training
cuts each training user's decision sequence into chunks of at most k (each chunk position predicts
the next decision's item; a random offset per epoch moves the chunk boundaries), and scoring builds
the window that ends at each decision: the same layout, so training and scoring see the same inputs.

Data only ever comes from a :class:`~interestgym.envs.replay_data.ReplayData`: training users' for
training (``split="train"``), validation users' for early stopping, test users' for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from interestgym.core.tokens import N_ACTIONS, N_GAP_BUCKETS, action_codes, gap_buckets

__all__ = ["N_ACTIONS", "N_GAP_BUCKETS", "DecisionSequences", "Windows", "action_codes", "decision_sequences", "gap_buckets",
           "training_chunks", "windows_ending_at"]


@dataclass
class DecisionSequences:
    """Every decision of a split's users, in replay order, as the tracker reads them.

    ``start`` / ``end``: (n_users,) each user's decisions ``[start, end)`` (the ReplayData's users);
    ``item``, ``action``, ``gap``: (n_decisions,) int64; ``position``: (n_decisions,) 0-based index of
    the decision within its user's sequence.
    """

    item: np.ndarray
    action: np.ndarray
    gap: np.ndarray
    start: np.ndarray
    end: np.ndarray
    position: np.ndarray

    @property
    def n_decisions(self) -> int:
        return len(self.item)


def decision_sequences(data, events: pd.DataFrame | None = None) -> DecisionSequences:
    """The tracker's view of a :class:`~interestgym.envs.replay_data.ReplayData`.

    :param data: replay arrays of one split.
    :param events: the dataset's events table (read from ``data.dataset_path`` when None).
    """
    if events is None:
        from interestgym.data.dataset import Dataset

        events = Dataset.open(data.dataset_path).events
    n = data.n_decisions
    actions = events["action"].to_numpy()[data.decision_event_row] if n else np.zeros(0, dtype=object)
    user = data.decision_user.astype(np.int64)
    first = np.ones(n, dtype=bool)
    first[1:] = user[1:] != user[:-1]
    ts = data.decision_ts.astype(np.int64)
    gaps = np.zeros(n, dtype=np.float64)
    gaps[1:] = ts[1:] - ts[:-1]
    position = np.arange(n) - np.repeat(data.user_decision_start, data.user_decision_end - data.user_decision_start)
    return DecisionSequences(
        item=data.decision_item.astype(np.int64), action=action_codes(actions), gap=gap_buckets(gaps, first),
        start=data.user_decision_start.astype(np.int64), end=data.user_decision_end.astype(np.int64),
        position=position.astype(np.int64),
    )


@dataclass
class Windows:
    """A batch of right-padded windows: ``item`` / ``action`` / ``gap`` (B, k) int64 and ``length`` (B,)
    (positions ``>= length`` are padding, item 0; a causal model never reads them for earlier outputs)."""

    item: np.ndarray
    action: np.ndarray
    gap: np.ndarray
    length: np.ndarray


def windows_ending_at(seqs: DecisionSequences, decisions: np.ndarray, k: int) -> Windows:
    """The window of the last ``k`` decisions of the user up to and including each of ``decisions``."""
    decisions = np.asarray(decisions, dtype=np.int64)
    length = np.minimum(seqs.position[decisions] + 1, k)
    first = decisions - length + 1
    col = np.arange(k)[None, :]
    valid = col < length[:, None]
    index = np.where(valid, first[:, None] + col, 0)
    return Windows(item=np.where(valid, seqs.item[index], 0), action=np.where(valid, seqs.action[index], 0),
                   gap=np.where(valid, seqs.gap[index], 0), length=length)


@dataclass
class TrainingChunks:
    """Training examples: windows of inputs and, at every position, the next decision's item
    (``target`` (B, k) int64, -1 = no target: padding)."""

    windows: Windows
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


def training_chunks(seqs: DecisionSequences, k: int, rng: np.random.Generator | None = None) -> TrainingChunks:
    """Cut every user's sequence into chunks of at most ``k`` inputs, each position's target the next item.

    Inputs ``[s, e)`` predict items ``[s + 1, e + 1)``; every decision but a user's first is a target
    exactly once. Chunk boundaries fall at ``offset + j k`` with ``offset`` drawn per user from
    ``rng`` (0 when None), so that over epochs a target is seen with different context lengths.
    """
    starts, lengths = [], []
    for lo, hi in zip(seqs.start.tolist(), seqs.end.tolist()):
        n_inputs = hi - lo - 1  # the last decision is only a target
        if n_inputs < 1:
            continue
        first = (int(rng.integers(k)) if rng is not None else 0) or k  # length of the first chunk
        cuts = np.arange(first, n_inputs, k)
        bounds = np.concatenate([[0], cuts, [n_inputs]])
        starts.append(lo + bounds[:-1])
        lengths.append(np.diff(bounds))
    if not starts:
        z = np.zeros((0, k), dtype=np.int64)
        return TrainingChunks(Windows(z, z, z, np.zeros(0, np.int64)), z)
    start = np.concatenate(starts).astype(np.int64)
    length = np.concatenate(lengths).astype(np.int64)
    col = np.arange(k)[None, :]
    valid = col < length[:, None]
    index = np.where(valid, start[:, None] + col, 0)
    windows = Windows(item=np.where(valid, seqs.item[index], 0), action=np.where(valid, seqs.action[index], 0),
                      gap=np.where(valid, seqs.gap[index], 0), length=length)
    target = np.where(valid, seqs.item[np.minimum(index + 1, seqs.n_decisions - 1)], -1)
    return TrainingChunks(windows, target)


def item_id_rows(train: DecisionSequences, n_items: int, min_count: int = 1) -> np.ndarray:
    """Row of each item in the id-embedding table: items seen at least ``min_count`` times among
    training users' decisions get their own row (1, 2, ...); every other item shares row 0."""
    counts = np.bincount(train.item, minlength=n_items)
    known = counts >= max(min_count, 1)
    rows = np.zeros(n_items, dtype=np.int64)
    rows[known] = np.arange(1, int(known.sum()) + 1)
    return rows


def ids_recur(train: DecisionSequences, valid: DecisionSequences, threshold: float = 0.5) -> bool:
    """Whether learned item-id embeddings can help: at least ``threshold`` of the validation users'
    decisions are on items that training users also decided on (true for MovieLens, false for news
    whose items are fresh)."""
    if valid.n_decisions == 0:
        return True
    seen = np.zeros(int(max(train.item.max(initial=0), valid.item.max(initial=0))) + 1, dtype=bool)
    seen[train.item] = True
    return bool(seen[valid.item].mean() >= threshold)
