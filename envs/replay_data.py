"""Everything the replay needs from a dataset, precomputed once per (dataset, embeddings, split, protocol).

:func:`load_replay_data` turns a :class:`~interestgym.data.dataset.Dataset` into flat numpy arrays:

* **decisions** (the positive events of the split's users, in replay order): item, time, the
  log-only observation features, and the range of scoring points that follow each decision;
* **scoring points** (candidate index lists + click labels, CSR-packed): the logged impressions, or the
  next positive item plus N sampled negatives;
* item popularity and categories, skip counts, and the protocol's description.

Every policy, the single env and the batched evaluator read the same arrays, so they are scored on
exactly the same candidates (paired comparisons). Results are cached in memory per process.

Replay order within a user: events by (ts, seq); an impression at the same ts as events comes
**before** them (the clicks it produced must not update the profile before it is scored).
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interestgym.core.clock import time_slot, time_slot_of
from interestgym.core.features import LOG_FEATURES, encode_features
from interestgym.core.log_features import (
    RATING_ACTION,
    group_starts,
    is_decision,
    log_quantities,
    position_in_run,
)
from interestgym.core.protocol import item_popularity, sample_negatives, user_rng
from interestgym.data.dataset import Dataset
from interestgym.data.schema import SPLITS
from interestgym.errors import DataError, InterestGymError
from interestgym.progress import progress_bar

PROTOCOLS = ("auto", "impressions", "next_positive")
NEGATIVE_SAMPLERS = ("uniform", "popularity")
EXCLUSIONS = ("auto", "target", "log", "past")
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ProtocolSpec:
    """Which users, which scoring points, which negatives.

    :param split: ``train`` / ``valid`` / ``test``.
    :param protocol: ``auto`` (impressions if the dataset has them, else next positive),
        ``impressions`` or ``next_positive``.
    :param n_negatives: sampled negatives per next-positive scoring point.
    :param negatives: ``uniform`` or ``popularity`` (weight = training popularity + 1).
    :param exclude: which items a scoring point's negatives leave out: ``target`` (only the target and
        the items the user engages with at that same moment: a user's own past and future items can be
        negatives, the honest protocol for logs with repeat consumption), ``log`` (every item of the
        user's whole log: the classic protocol, where any item seen before can only be the target),
        ``past`` (items seen up to the scoring point) or ``auto`` (``target`` when the log has repeats,
        i.e. a user engages with one item more than once; else ``log``).
    :param seed: seed of the negatives.
    """

    split: str = "train"
    protocol: str = "auto"
    n_negatives: int = 99
    negatives: str = "uniform"
    exclude: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InterestGymError(f"split={self.split!r}: expected one of {', '.join(SPLITS)}")
        if self.protocol not in PROTOCOLS:
            raise InterestGymError(f"protocol={self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if self.negatives not in NEGATIVE_SAMPLERS:
            raise InterestGymError(f"negatives={self.negatives!r}: expected one of {', '.join(NEGATIVE_SAMPLERS)}")
        if self.exclude not in EXCLUSIONS:
            raise InterestGymError(f"exclude={self.exclude!r}: expected one of {', '.join(EXCLUSIONS)}")
        if not (isinstance(self.n_negatives, (int, np.integer)) and self.n_negatives >= 1):
            raise InterestGymError(f"n_negatives={self.n_negatives!r}: expected an integer >= 1")

    @classmethod
    def resolve(cls, protocol: ProtocolSpec | dict[str, Any] | str | None, split: str | None = None) -> ProtocolSpec:
        """The one protocol object from what a caller gave: a ProtocolSpec, a dict of its fields (a
        config file), a protocol name (``auto`` / ``impressions`` / ``next_positive``) or None (the
        defaults); ``split``, when given, picks the users."""
        if protocol is None:
            spec = cls()
        elif isinstance(protocol, cls):
            spec = protocol
        elif isinstance(protocol, str):
            spec = cls(protocol=protocol)
        elif isinstance(protocol, dict):
            unknown = sorted(set(protocol) - {f.name for f in dataclasses.fields(cls)})
            if unknown:
                raise InterestGymError(f"protocol {protocol!r}: unknown field(s) {', '.join(unknown)}; expected "
                                       f"{', '.join(f.name for f in dataclasses.fields(cls))}")
            spec = cls(**protocol)
        else:
            raise InterestGymError(f"protocol={protocol!r}: expected a ProtocolSpec, a dict of its fields or a protocol name")
        return dataclasses.replace(spec, split=split) if split is not None and split != spec.split else spec  # None: the spec's


@dataclass
class ReplayData:
    """Flat arrays of one (dataset, embeddings, split, protocol); see the module docstring."""

    dataset_path: Path
    embeddings_name: str
    spec: ProtocolSpec
    protocol: str  # resolved: "impressions" or "next_positive"
    embeddings: np.ndarray  # (n_items, d) float32, unit rows
    item_popularity: np.ndarray  # (n_items,) float32 in [0, 1]
    item_category: np.ndarray  # (n_items,) int32
    category_names: list[str]
    max_action_weight: float
    user_ids: np.ndarray  # (n_users,) str: the split's users with at least one decision
    user_decision_start: np.ndarray  # (n_users,) int64
    user_decision_end: np.ndarray  # (n_users,) int64
    decision_user: np.ndarray  # (n_dec,) int32
    decision_item: np.ndarray  # (n_dec,) int32
    decision_ts: np.ndarray  # (n_dec,) int64
    decision_slot: np.ndarray  # (n_dec,) int8 time-of-day slot
    decision_category: np.ndarray  # (n_dec,) int32
    decision_event_row: np.ndarray  # (n_dec,) int64: row in events.parquet
    decision_log_features: np.ndarray  # (n_dec, len(LOG_FEATURES)) float32
    decision_point_start: np.ndarray  # (n_dec,) int64: scoring points after the decision
    decision_point_end: np.ndarray  # (n_dec,) int64
    point_offsets: np.ndarray  # (n_points + 1,) int64 into point_candidates / point_labels
    point_candidates: np.ndarray  # flat int32 item indices
    point_labels: np.ndarray  # flat int8 (1 clicked, 0 not)
    point_slot: np.ndarray  # (n_points,) int8 time-of-day slot of the scoring point
    point_key: np.ndarray  # (n_points,) str: impression id, or "user:k" for the k-th next positive
    point_repeat: np.ndarray  # (n_points,) bool: the target is an item the user engaged with before
    counts: dict[str, int] = field(default_factory=dict)
    tz_offset_hours: float = 0.0  # the dataset's clock (prepare --tz-offset): hours, slots
    exclude: str = "log"  # the spec's ``exclude`` as resolved for this log (``auto`` -> target / log)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_decisions(self) -> int:
        return len(self.decision_item)

    @property
    def n_points(self) -> int:
        return len(self.point_offsets) - 1

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def padded_points(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates and labels of scoring points as (P, C) matrices padded to the longest point.

        :param points: (P,) scoring-point indices.
        :return: (candidates (P, C) item indices, 0 in padding; labels (P, C) int8, -1 in padding;
            lengths (P,)).
        """
        points = np.asarray(points, dtype=np.int64)
        lo = self.point_offsets[points]
        length = self.point_offsets[points + 1] - lo
        width = int(length.max()) if len(points) else 0
        col = np.arange(width)
        mask = col[None, :] < length[:, None]
        flat = np.where(mask, lo[:, None] + col[None, :], 0)
        cand = np.where(mask, self.point_candidates[flat], 0)
        labels = np.where(mask, self.point_labels[flat], -1).astype(np.int8)
        return cand, labels, length

    def describe(self) -> dict[str, Any]:
        """The protocol, to print above every results table."""
        out: dict[str, Any] = {
            "dataset": str(self.dataset_path),
            "embeddings": self.embeddings_name,
            "dim": self.dim,
            "split": self.spec.split,
            "protocol": self.protocol,
            "users": self.n_users,
            "decisions": self.n_decisions,
            "scoring_points": self.n_points,
        }
        if self.protocol == "next_positive":
            out.update(n_negatives=self.spec.n_negatives, negatives=self.spec.negatives,
                       exclude=self.exclude, seed=self.spec.seed)
        out["counts"] = dict(self.counts)
        return out


def _decision_mask(events: pd.DataFrame, dataset: Dataset, known_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decisions, positive events whose item is unknown) under the core decision rule."""
    weight = events["action"].map(dataset.action_weights).fillna(0.0).to_numpy(dtype=np.float64)
    is_rating = (events["action"] == RATING_ACTION).to_numpy()
    positive = is_decision(weight, is_rating, events["value"].to_numpy(dtype=np.float64), dataset.positive_rating)
    return positive & known_item, positive & ~known_item


def build_replay_data(dataset: Dataset, embeddings: str | None, spec: ProtocolSpec) -> ReplayData:
    """Precompute the replay arrays (uncached; see :func:`load_replay_data`)."""
    emb_name = dataset.resolve_embeddings(embeddings)
    emb, _meta = dataset.load_embeddings(emb_name)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    items = dataset.items
    check_embeddings(emb, dataset.embeddings_dir / f"{emb_name}.npy", items["item_id"].astype(str).to_numpy())
    tz_offset_hours = float((dataset.manifest.get("reader") or {}).get("tz_offset_hours", 0.0) or 0.0)
    n_items = len(items)
    item_ids = pd.Index(items["item_id"].astype(str))
    categories = items["category"].fillna("").astype(str)
    cat_codes, cat_names = pd.factorize(categories, sort=True)
    item_category = cat_codes.astype(np.int32)
    counts: dict[str, int] = {}

    events_all = dataset.events
    users_tab = dataset.users
    split_users = set(users_tab.loc[users_tab["split"] == spec.split, "user_id"].astype(str))
    train_users = set(users_tab.loc[users_tab["split"] == "train", "user_id"].astype(str))
    ev_user_all = events_all["user_id"].astype(str).to_numpy()
    ev_item_all = item_ids.get_indexer(events_all["item_id"].astype(str))
    pos_all, _ = _decision_mask(events_all, dataset, ev_item_all >= 0)

    # pop(c): log-popularity among TRAINING users' positive events only, so that valid / test users'
    # own events never leak into their scores (train episodes do see their own future in it: a mild,
    # documented leak that only affects training).
    in_train = pd.Series(ev_user_all).isin(train_users).to_numpy()
    train_counts = np.bincount(ev_item_all[pos_all & in_train], minlength=n_items)
    popularity = item_popularity(train_counts)

    # ---------------------------------------------------------------- events of the split's users
    in_split = pd.Series(ev_user_all).isin(split_users).to_numpy()
    rows = np.nonzero(in_split)[0]
    ev = events_all.iloc[rows]
    ev_user = ev_user_all[rows]
    ts = ev["ts"].to_numpy(dtype=np.int64)
    seq = ev["seq"].to_numpy(dtype=np.int64)
    order = np.lexsort((seq, ts, ev_user))  # the dataset contract, enforced (cheap)
    rows, ev, ev_user, ts = rows[order], ev.iloc[order], ev_user[order], ts[order]
    user_codes, user_names = pd.factorize(ev_user, sort=False)
    ev_item = ev_item_all[rows]
    positive, positive_unknown = _decision_mask(ev, dataset, ev_item >= 0)
    counts["events"] = int(len(ev))
    counts["decisions"] = int(positive.sum())
    counts["positive_events_without_item"] = int(positive_unknown.sum())
    counts["events_without_item"] = int((ev_item < 0).sum())

    weights_map = dataset.action_weights
    max_action_weight = max(max(weights_map.values()), 1e-12)

    # ---------------------------------------------------------------- decisions (positive events)
    d_idx = np.nonzero(positive)[0]
    d_ts = ts[d_idx]
    d_item = ev_item[d_idx].astype(np.int32)
    d_cat = item_category[d_item] if len(d_item) else np.zeros(0, np.int32)
    d_user_code = user_codes[d_idx]
    raw = log_quantities(user_codes, ts, positive, d_cat, len(cat_names))
    raw.update(
        action_weight=ev["action"].map(weights_map).fillna(0.0).to_numpy(dtype=np.float64)[d_idx],
        value=ev["value"].to_numpy(dtype=np.float64)[d_idx],
        hour=ev["hour"].to_numpy(dtype=np.int64)[d_idx],
        weekday=ev["weekday"].to_numpy(dtype=np.int64)[d_idx],
    )
    log_features = encode_features(raw, LOG_FEATURES, max_action_weight=max_action_weight) if len(d_idx) else np.zeros((0, len(LOG_FEATURES)), np.float32)

    # users with at least one decision, in replay order
    dec_users_codes, dec_user_start = np.unique(d_user_code, return_index=True)
    user_order = np.argsort(dec_user_start)
    dec_users_codes, dec_user_start = dec_users_codes[user_order], dec_user_start[user_order]
    dec_user_end = np.append(dec_user_start[1:], len(d_idx)).astype(np.int64)
    code_to_user = np.full(len(user_names) + 1, -1, dtype=np.int64)
    code_to_user[dec_users_codes] = np.arange(len(dec_users_codes))
    decision_user = code_to_user[d_user_code].astype(np.int32)
    user_ids = np.asarray(user_names, dtype=object)[dec_users_codes].astype(str)
    counts["users"] = int(len(user_ids))
    counts["users_without_decisions"] = int(len(split_users) - len(user_ids))

    # ---------------------------------------------------------------- scoring points
    protocol = spec.protocol
    exclude = "log"  # recorded only for next-positive points (impressions carry their own negatives)
    if protocol == "auto":
        protocol = "impressions" if dataset.impressions is not None and len(dataset.impressions) else "next_positive"
    if protocol == "impressions":
        if dataset.impressions is None:
            raise DataError(f"{dataset.path}: protocol='impressions' but the dataset has no impressions.parquet; use protocol='next_positive'")
        pts = _impression_points(dataset, item_ids, split_users, user_ids, dec_user_start, dec_user_end, d_ts, counts,
                                 tz_offset_hours)
    else:
        # decided on the whole log (every split), so train, valid and test share one protocol
        exclude = resolve_exclusion(spec.exclude, pd.factorize(ev_user_all)[0], ev_item_all)
        pts = _next_positive_points(
            spec, exclude, d_item, d_idx, decision_user, dec_user_start, dec_user_end, user_ids, user_codes,
            dec_users_codes, ev_item, ts, ev["hour"].to_numpy(dtype=np.int64), train_counts, n_items, counts,
        )
    point_decision, offsets, cand, labels, slot, keys, repeat = pts
    # points sorted by the decision they follow (stable keeps their time order)
    n_dec = len(d_idx)
    dec_point_start = np.searchsorted(point_decision, np.arange(n_dec), side="left").astype(np.int64)
    dec_point_end = np.searchsorted(point_decision, np.arange(n_dec), side="right").astype(np.int64)
    counts["scoring_points"] = int(len(point_decision))

    return ReplayData(
        dataset_path=dataset.path, embeddings_name=emb_name, spec=spec, protocol=protocol,
        embeddings=emb, item_popularity=popularity, item_category=item_category,
        category_names=[str(c) for c in cat_names], max_action_weight=float(max_action_weight),
        user_ids=user_ids, user_decision_start=dec_user_start.astype(np.int64), user_decision_end=dec_user_end,
        decision_user=decision_user, decision_item=d_item, decision_ts=d_ts,
        decision_slot=time_slot(raw["hour"]).astype(np.int8), decision_category=d_cat.astype(np.int32),
        decision_event_row=rows[d_idx].astype(np.int64), decision_log_features=log_features,
        decision_point_start=dec_point_start, decision_point_end=dec_point_end,
        point_offsets=offsets, point_candidates=cand, point_labels=labels, point_slot=slot,
        point_key=keys, point_repeat=repeat, counts=counts, tz_offset_hours=tz_offset_hours, exclude=exclude,
    )


def check_embeddings(emb: np.ndarray, path: Path, item_ids: np.ndarray) -> None:
    """Refuse embeddings a policy cannot use: NaN / inf values, or rows that are neither unit length nor
    zero (the encoders write L2-normalised rows, zero for an item without text; every cosine assumes it)."""
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
        row = int(np.nonzero(~finite)[0][0])
        raise DataError(f"{path}: row {row} (item {item_ids[row]!r}) holds NaN or inf; expected finite L2-normalised "
                        f"vectors ({int((~finite).sum())} such rows): re-run `interestgym encode`")
    norms = np.sqrt(np.einsum("ij,ij->i", emb, emb, dtype=np.float64))
    bad = ~((np.abs(norms - 1.0) <= 1e-3) | (norms == 0.0))
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        raise DataError(f"{path}: row {row} (item {item_ids[row]!r}) has L2 norm {norms[row]:.4g}; expected 1 (or 0 for an "
                        f"item without text) as `interestgym encode` writes them ({int(bad.sum())} such rows)")


def _pack(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _impression_points(dataset, item_ids, split_users, user_ids, dec_user_start, dec_user_end, d_ts, counts, tz_offset_hours):
    imp = dataset.impressions
    imp_user = imp["user_id"].astype(str).to_numpy()
    keep = pd.Series(imp_user).isin(split_users).to_numpy()
    imp = imp.loc[keep]
    imp_user = imp_user[keep]
    imp_ts = imp["ts"].to_numpy(dtype=np.int64)
    counts["impressions"] = int(len(imp))
    lens = imp["candidates"].map(len).to_numpy(dtype=np.int64)
    label_lens = imp["labels"].map(len).to_numpy(dtype=np.int64)
    bad = np.nonzero(lens != label_lens)[0]
    if len(bad):
        i = bad[0]
        raise DataError(
            f"{dataset.path / 'impressions.parquet'}: impression {imp['impression_id'].iloc[i]!r} has "
            f"{lens[i]} candidates but {label_lens[i]} labels; expected one label per candidate"
        )
    flat_ids = np.concatenate([np.asarray(c, dtype=object) for c in imp["candidates"]]) if len(imp) else np.zeros(0, object)
    flat_labels = np.concatenate([np.asarray(c, dtype=np.int8) for c in imp["labels"]]) if len(imp) else np.zeros(0, np.int8)
    flat_items = item_ids.get_indexer(flat_ids.astype(str)) if len(flat_ids) else np.zeros(0, np.int64)
    known = flat_items >= 0
    counts["candidates_without_item"] = int((~known).sum())
    imp_of_flat = np.repeat(np.arange(len(imp)), lens)
    n_known = np.bincount(imp_of_flat[known], minlength=len(imp))
    n_click = np.bincount(imp_of_flat[known & (flat_labels == 1)], minlength=len(imp))
    no_click = n_click == 0
    no_other = (n_known - n_click) == 0
    counts["impressions_without_click"] = int(no_click.sum())
    counts["impressions_without_unclicked"] = int((~no_click & no_other).sum())
    scorable = ~no_click & ~no_other

    # Which decision each impression follows: the user's decisions strictly before its ts (an
    # impression precedes the events of its own second).
    imp_uidx = pd.Index(user_ids).get_indexer(imp_user).astype(np.int64)
    has_user = imp_uidx >= 0
    point_decision = np.full(len(imp), -1, dtype=np.int64)
    if has_user.any() and len(d_ts):
        u = imp_uidx[has_user]
        lo, hi = dec_user_start[u], dec_user_end[u]
        # One vectorised searchsorted over (user block, ts): each user's decisions are moved into
        # their own numeric range (all values stay far below 2^53, so float64 is exact).
        base = int(d_ts.min())
        span = float(int(d_ts.max()) - base + 2)
        dec_block = np.repeat(np.arange(len(dec_user_start)), dec_user_end - dec_user_start).astype(np.float64)
        combined = dec_block * span + (d_ts - base).astype(np.float64)
        query = u.astype(np.float64) * span + np.clip(imp_ts[has_user] - base, -1, span - 1).astype(np.float64)
        before = np.searchsorted(combined, query, side="left") - lo  # decisions of u with ts < impression ts
        assert np.all((before >= 0) & (lo + before <= hi))
        point_decision[has_user] = np.where(before > 0, lo + before - 1, -1)
    counts["impressions_without_user_decisions"] = int((scorable & ~has_user).sum())
    counts["impressions_before_first_decision"] = int((scorable & has_user & (point_decision < 0)).sum())
    use = scorable & (point_decision >= 0)
    counts["impressions_scored"] = int(use.sum())
    order = np.argsort(point_decision[use], kind="stable")
    use_idx = np.nonzero(use)[0][order]
    # Flat candidates regrouped in the order of use_idx (vectorised: rank every flat entry by its
    # impression's position in use_idx).
    rank = np.full(len(imp), -1, dtype=np.int64)
    rank[use_idx] = np.arange(len(use_idx))
    flat_rank = rank[imp_of_flat]
    sel_flat = np.nonzero(known & (flat_rank >= 0))[0]
    sel_flat = sel_flat[np.argsort(flat_rank[sel_flat], kind="stable")]
    cand = flat_items[sel_flat].astype(np.int32)
    labels = flat_labels[sel_flat].astype(np.int8)
    offsets = _pack(n_known[use_idx])
    # the impression's slot on the dataset's clock, like its decisions' (prepare's --tz-offset)
    slot = time_slot_of(imp_ts[use_idx], tz_offset_hours).astype(np.int8)
    keys = imp["impression_id"].astype(str).to_numpy()[use_idx]
    # Logged impressions: repeat targets are not told apart (their negatives are the log's own).
    return point_decision[use_idx], offsets, cand, labels, slot, keys, np.zeros(len(use_idx), dtype=bool)


def resolve_exclusion(exclude: str, user_codes: np.ndarray, ev_item: np.ndarray) -> str:
    """``auto`` -> ``target`` when the log has repeats (a user engages with one item in more than one
    event), else ``log``; other values as they are."""
    if exclude != "auto":
        return exclude
    known = ev_item >= 0
    pairs = user_codes[known].astype(np.int64) * (int(ev_item.max(initial=0)) + 1) + ev_item[known]
    return "target" if len(np.unique(pairs)) < len(pairs) else "log"


def _same_moment_items(ts_u: np.ndarray, items_u: np.ndarray, target_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, item) pairs: for every target (its event position in the user's events), the items of the
    user's events at the target's own timestamp (the target included)."""
    target_ts = ts_u[target_pos]
    start = np.searchsorted(ts_u, target_ts, side="left")
    stop = np.searchsorted(ts_u, target_ts, side="right")
    width = stop - start
    point = np.repeat(np.arange(len(target_pos)), width)
    offset = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    items = items_u[np.repeat(start, width) + offset]
    keep = items >= 0
    return point[keep], items[keep]


def _next_positive_points(spec, exclude, d_item, d_idx, decision_user, dec_user_start, dec_user_end, user_ids, user_codes,
                          dec_users_codes, ev_item, ts, ev_hour, train_counts, n_items, counts):
    weights = np.ones(n_items) if spec.negatives == "uniform" else train_counts.astype(np.float64) + 1.0
    # event position of each decision within its user's events
    ev_pos = position_in_run(user_codes)
    ev_user_start = np.nonzero(group_starts(user_codes))[0] if len(user_codes) else np.zeros(0, np.int64)
    n_users = len(user_ids)
    cand_rows, point_dec, slots, keys, repeats = [], [], [], [], []
    n_short = 0
    bar = progress_bar(total=n_users, desc="sampling negatives", unit="user")
    for u in range(n_users):
        bar.update(1)
        lo, hi = int(dec_user_start[u]), int(dec_user_end[u])
        if hi - lo < 2:
            continue
        code = dec_users_codes[u]
        e_lo = ev_user_start[code]
        e_hi = ev_user_start[code + 1] if code + 1 < len(ev_user_start) else len(user_codes)
        items_u = ev_item[e_lo:e_hi]
        pos_u = np.arange(e_hi - e_lo, dtype=np.int64)
        first_seen = np.full(n_items, _NEVER, dtype=np.int64)
        known = items_u >= 0
        np.minimum.at(first_seen, items_u[known], pos_u[known])
        targets = np.arange(lo + 1, hi)  # decision d is the scoring target of step d - 1
        target_pos = ev_pos[d_idx[targets]]
        also = None
        if exclude == "log":
            cutoff = np.full(len(targets), _NEVER - 1, dtype=np.int64)
        elif exclude == "past":
            cutoff = target_pos
        else:  # target: only the target and what the user engages with at that moment
            cutoff = np.full(len(targets), -1, dtype=np.int64)
            also = _same_moment_items(ts[e_lo:e_hi], items_u, target_pos)
        neg = sample_negatives(user_rng(spec.seed, user_ids[u]), spec.n_negatives, weights, first_seen, cutoff,
                               also_exclude=also)
        repeats.append(first_seen[d_item[targets]] < target_pos)
        n_short += int((neg < 0).any(axis=1).sum())
        cand_rows.append(np.concatenate([d_item[targets][:, None], neg], axis=1))
        point_dec.append(targets - 1)
        slots.append(time_slot(ev_hour[d_idx[targets]]))
        keys.append(np.char.add(f"{user_ids[u]}:", np.arange(1, hi - lo).astype(str)))
    bar.close()
    counts["points_with_fewer_negatives"] = n_short
    if not cand_rows:
        z = np.zeros(0, np.int64)
        return z, np.zeros(1, np.int64), z.astype(np.int32), z.astype(np.int8), z.astype(np.int8), z.astype(str), z.astype(bool)
    mat = np.concatenate(cand_rows)
    valid = mat >= 0
    labels = np.zeros(mat.shape, dtype=np.int8)
    labels[:, 0] = 1
    offsets = _pack(valid.sum(axis=1))
    return (np.concatenate(point_dec).astype(np.int64), offsets, mat[valid].astype(np.int32), labels[valid],
            np.concatenate(slots).astype(np.int8), np.concatenate(keys), np.concatenate(repeats))


# ------------------------------------------------------------------------------------------- cache
_CACHE: "OrderedDict[tuple, ReplayData]" = OrderedDict()
_CACHE_SIZE = 4


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size)


def load_replay_data(dataset: str | Path | Dataset, embeddings: str | None = None, spec: ProtocolSpec | None = None) -> ReplayData:
    """The replay arrays for ``dataset`` (a path or an open Dataset), cached per process.

    The cache key holds the files' modification stamps, so a re-prepared or re-encoded dataset is read
    again.
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    spec = spec or ProtocolSpec()
    name = ds.resolve_embeddings(embeddings)
    files = [ds.path / "manifest.json", ds.path / "events.parquet", ds.path / "items.parquet", ds.path / "users.parquet",
             ds.embeddings_dir / f"{name}.npy"]
    if (ds.path / "impressions.parquet").is_file():
        files.append(ds.path / "impressions.parquet")
    key = (str(ds.path.resolve()), name, spec, tuple(_stamp(p) for p in files))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    data = build_replay_data(ds, name, spec)
    _CACHE[key] = data
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


def manifest_summary(data: ReplayData) -> str:
    """One JSON line with the protocol (for logs)."""
    return json.dumps(data.describe(), sort_keys=True)
