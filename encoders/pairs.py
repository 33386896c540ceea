"""Co-engagement pairs: which items the same user liked one after the other, mined from one split's users.

The fine-tuning signal of :mod:`interestgym.encoders.finetune`. Two items are a pair when one user
gave both positive feedback in a row, close in time:

1. An event is **positive** by the product's one decision rule,
   :func:`interestgym.core.log_features.is_decision`: its action weight (the dataset manifest's) is
   > 0, a rating counts only when ``value >= positive_rating`` (the manifest's), and its item is in
   ``items.parquet``.
2. Only the events of users whose ``users.parquet`` ``split`` is the requested one are read:
   ``train`` for the pairs the encoder learns from, ``valid`` for its validation loss. Validation and
   test users' events never reach the training pairs (``tests/test_encoders_finetune.py`` proves it).
3. Per user, in replay order (time, then source order), each positive is paired with the next
   ``neighbours`` positives of the same user that come at most ``window_seconds`` later; a pair of
   an item with itself (a repeated rating) is dropped.
4. Above ``max_pairs``, a seeded random subset is kept (same seed, same pairs).

Pairs are returned as item rows (rows of ``items.parquet``, the rows of every embedding matrix) plus
the event rows they came from, so a test can trace every pair back to its user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from interestgym.core.log_features import RATING_ACTION, is_decision
from interestgym.errors import DataError, InterestGymError

if TYPE_CHECKING:  # pragma: no cover
    from interestgym.data.dataset import Dataset

#: Default: a positive pairs with the next positive of the same user at most this many seconds later.
DEFAULT_WINDOW_SECONDS = 3600.0
#: Default: how many following positives each positive pairs with.
DEFAULT_NEIGHBOURS = 1


@dataclass(frozen=True)
class PairSpec:
    """How pairs are mined.

    :param window_seconds: the longest gap between the two positives of a pair.
    :param neighbours: each positive pairs with up to this many following positives (1 = consecutive only).
    :param max_pairs: keep at most this many pairs (seeded random subset); None = all.
    :param seed: seed of that subset.
    """

    window_seconds: float = DEFAULT_WINDOW_SECONDS
    neighbours: int = DEFAULT_NEIGHBOURS
    max_pairs: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.window_seconds >= 0):  # also refuses NaN
            raise InterestGymError(f"--window {self.window_seconds}: expected a number of seconds >= 0")
        if self.neighbours < 1:
            raise InterestGymError(f"--neighbours {self.neighbours}: expected at least 1")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise InterestGymError(f"--max-pairs {self.max_pairs}: expected at least 1")


@dataclass
class CoEngagementPairs:
    """Item pairs of one split's users (arrays aligned with each other, one entry per pair)."""

    split: str
    #: Rows of items.parquet of the earlier and the later positive.
    anchor: np.ndarray
    positive: np.ndarray
    #: Rows of events.parquet the two items come from.
    anchor_event: np.ndarray
    positive_event: np.ndarray
    #: The user of each pair.
    user_id: np.ndarray
    #: users, positives, pairs mined, same-item pairs dropped, pairs kept.
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.anchor)

    def summary(self) -> str:
        c = self.counts
        option = "--max-pairs" if self.split == "train" else "--max-valid-pairs"
        capped = f", {c['kept']:,} kept ({option})" if c["kept"] < c["mined"] else ""
        return (f"{self.split} users: {c['users']:,} with positives, {c['positives']:,} positive events -> "
                f"{c['mined']:,} pairs{capped}")

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, **self.counts}


def positive_events(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(positive mask over events.parquet's rows, item row of each event; -1 for an unknown item)."""
    events = dataset.events
    missing = [c for c in ("user_id", "ts", "item_id", "action", "value") if c not in events.columns]
    if missing:
        raise DataError(f"{dataset.path / 'events.parquet'}: column(s) {', '.join(missing)} missing; "
                        "expected the canonical event table (prepare the dataset again)")
    item_row = events["item_id"].astype(str).map(dataset.item_index).fillna(-1).to_numpy(dtype=np.int64)
    weight = events["action"].map(dataset.action_weights).fillna(0.0).to_numpy(dtype=np.float64)
    positive = is_decision(weight, (events["action"] == RATING_ACTION).to_numpy(), events["value"].to_numpy(dtype=np.float64),
                           dataset.positive_rating, has_item=item_row >= 0)
    return positive, item_row


def mine_pairs(dataset: Dataset, split: str, spec: PairSpec = PairSpec()) -> CoEngagementPairs:
    """Pairs of consecutive positives of ``split``'s users (see the module docstring).

    :param dataset: a prepared dataset.
    :param split: ``train``, ``valid`` or ``test`` (users.parquet's ``split`` column).
    :param spec: window, neighbours, cap and seed.
    """
    users = dataset.users
    if "split" not in users.columns or "user_id" not in users.columns:
        raise DataError(f"{dataset.path / 'users.parquet'}: columns user_id and split expected; found {', '.join(map(str, users.columns))}")
    members = set(dataset.users_in(split))  # validates the split name
    events = dataset.events
    positive, item_row = positive_events(dataset)
    user = events["user_id"].astype(str).to_numpy()
    ts = events["ts"].to_numpy(dtype=np.int64)
    seq = events["seq"].to_numpy(dtype=np.int64) if "seq" in events.columns else np.arange(len(events), dtype=np.int64)
    in_split = np.fromiter((u in members for u in user), dtype=bool, count=len(user))

    idx = np.flatnonzero(positive & in_split)
    codes = np.unique(user[idx], return_inverse=True)[1] if len(idx) else np.empty(0, np.int64)
    order = np.lexsort((seq[idx], ts[idx], codes))  # replay order, whatever order the file is in
    idx, codes = idx[order], codes[order]

    first, second = [], []
    for j in range(1, spec.neighbours + 1):
        a, b = idx[:-j], idx[j:]
        ok = (codes[:-j] == codes[j:]) & (ts[b] - ts[a] <= spec.window_seconds)
        first.append(a[ok])
        second.append(b[ok])
    a_ev = np.concatenate(first) if first else np.empty(0, np.int64)
    b_ev = np.concatenate(second) if second else np.empty(0, np.int64)
    # Sort by the first event, then the second: one order whatever `neighbours` is.
    by = np.lexsort((b_ev, a_ev))
    a_ev, b_ev = a_ev[by], b_ev[by]
    distinct = item_row[a_ev] != item_row[b_ev]
    same_item = int((~distinct).sum())
    a_ev, b_ev = a_ev[distinct], b_ev[distinct]
    mined = len(a_ev)
    if spec.max_pairs is not None and mined > spec.max_pairs:
        keep = np.sort(np.random.default_rng(spec.seed).choice(mined, size=spec.max_pairs, replace=False))
        a_ev, b_ev = a_ev[keep], b_ev[keep]
    counts = {"users": len(np.unique(codes)), "positives": len(idx), "mined": int(mined),
              "same_item_dropped": same_item, "kept": len(a_ev)}
    return CoEngagementPairs(split=split, anchor=item_row[a_ev], positive=item_row[b_ev], anchor_event=a_ev,
                             positive_event=b_ev, user_id=user[a_ev], counts=counts)


