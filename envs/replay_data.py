"""Everything the replay needs from a dataset, precomputed once per (dataset, embeddings, split, protocol).

:func:`load_replay_data` turns a :class:`~interestgym.data.dataset.Dataset` into flat numpy arrays:

* **decisions** (the positive events of the split's users, in replay order): item, time, the
  log-only observation features, and the range of scoring points that follow each decision;
* **scoring points** (candidate index lists + click labels, CSR-packed): the logged impressions, or the
  next positive item plus N sampled negatives;
* item popularity and categories, skip counts, and the protocol's description.

Every policy, the single env and the batched evaluator read the same arrays, so they are scored on
exactly the same candidates (paired comparisons). Results are cached in memory per process.

How the arrays are built (reading only the users and columns they need, in bounded memory; a split
streamed in chunks of users) is :mod:`interestgym.envs.replay_build`.

Replay order within a user: events by (ts, seq); an impression at the same ts as events comes
**before** them (the clicks it produced must not update the profile before it is scored).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.data.dataset import Dataset
from interestgym.data.schema import SPLITS
from interestgym.errors import DataError, InterestGymError

PROTOCOLS = ("auto", "impressions", "next_positive")
NEGATIVE_SAMPLERS = ("uniform", "popularity")
EXCLUSIONS = ("auto", "target", "log", "past")


#: ProtocolSpec's settings of sampled negatives: a log of impressions is scored on the candidates that were
#: shown, so none of them applies there (``train`` and ``evaluate`` say so, with :data:`IGNORED_ON_IMPRESSIONS`).
SAMPLED_NEGATIVES_SETTINGS: tuple[str, ...] = ("negatives", "n_negatives", "exclude", "history_negatives")
IGNORED_ON_IMPRESSIONS = ("has logged impressions, which are its scoring points (the candidates that were shown); "
                          "settings of sampled negatives do not apply and are ignored")


def users_left_out_text(counts: dict[str, Any], n_measured: int) -> str | None:
    """The split's users a comparison over ``n_measured`` users left out, and why, in words (``1 of the split's 189 left out: 1
    without a positive event``); None when none were. ``counts``: the replay's counts (``users``: those with a decision;
    ``users_without_decisions``: those without, nothing to update a profile on). Users with a decision but no scoring
    point (nothing ranked after it) are replayed but measure nothing."""
    no_decision = int(counts.get("users_without_decisions", 0) or 0)
    no_point = int(counts.get("users", 0) or 0) - n_measured
    if not no_decision and not no_point:
        return None
    why = [f"{n:,} without {what}" for n, what in ((no_decision, "a positive event"), (no_point, "a scoring point")) if n]
    return f"{no_decision + no_point:,} of the split's {n_measured + no_decision + no_point:,} left out: {', '.join(why)}"


def targets_without_negatives_text(counts: dict[str, Any]) -> str | None:
    """The replay's next-positive targets left unscored for want of any negative (``points_without_negatives``), in
    words: ``3 targets not scored: no item left to draw a negative from (...)``; None when there are none. Said by the
    env's warnings, train's refusal and evaluate's protocol line alike."""
    n = int(counts.get("points_without_negatives") or 0)
    if not n:
        return None
    return (f"{n:,} target{'s' if n != 1 else ''} not scored: no item left to draw a negative from (the user engaged with "
            "every other item)")


def unknown_items_text(counts: dict[str, Any]) -> str | None:
    """The replayed users' events whose item has no row in ``items.parquet`` (``events_without_item``), in words; None
    when there are none. Said by train's notes and evaluate's protocol line alike."""
    n = int(counts.get("events_without_item", 0))
    if not n:
        return None
    positive = int(counts.get("positive_events_without_item", 0))
    return (f"{n:,} of {int(counts.get('events', 0)):,} events name an item with no row in items.parquet (no vector); "
            f"{positive:,} of them positive, not replayed as decisions")


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
    :param history_negatives: up to K of the ``n_negatives`` drawn uniformly from the user's own items engaged
        with *before* the target (never the target, nor an item of the target's moment; fewer where the user
        has fewer such items), the rest from the catalogue as ``negatives`` says (which may add more of the
        user's items). 0 (the
        default) draws every negative from the catalogue, exactly as before. With uniform draws from a
        large catalogue a user's past items are almost never negatives, so "seen before" all but identifies
        a repeat target; K > 0 makes the user's own history compete with it. Needs ``exclude`` to resolve
        to ``target`` (the other exclusions leave the user's past out of the negatives by definition).
    """

    split: str = "train"
    protocol: str = "auto"
    n_negatives: int = 99
    negatives: str = "uniform"
    exclude: str = "auto"
    seed: int = 0
    history_negatives: int = 0

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
        k = self.history_negatives
        if isinstance(k, (bool, np.bool_)) or not (isinstance(k, (int, np.integer)) and 0 <= k <= self.n_negatives):
            raise InterestGymError(f"history_negatives={k!r} (--history-negatives): expected an integer in [0, n_negatives="
                                   f"{self.n_negatives}]")
        if k and self.exclude in ("log", "past"):
            raise InterestGymError(f"history_negatives={k} with exclude={self.exclude!r} (--history-negatives, --exclude): that "
                                   "exclusion leaves the user's past items out of the negatives; expected exclude 'target' (or "
                                   "'auto' on a log with repeats), or history_negatives 0")

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
    # A sequence tracker's standardised score of every candidate, flat like point_candidates (float32), and
    # which tracker it is: set by agents.sequence.term.attach_tracker for the ScoringConfig.tracker_weight term.
    point_tracker_z: np.ndarray | None = None
    tracker: dict[str, Any] | None = None
    # Optional observations of every decision after the FEATURES ones (core.features.EXTRA_FEATURES):
    # their names, and (n_dec, len(extra_obs)) float32 values; set by with_extra_observations (e.g.
    # attach_tracker(..., observe=metric), attach_drift). The engine appends them to every observation.
    extra_obs: tuple[str, ...] = ()
    decision_extra_obs: np.ndarray | None = None

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

    def with_extra_observations(self, columns: dict[str, np.ndarray]) -> ReplayData:
        """A copy with ``columns`` (name -> (n_dec,) values in the feature's bounds) added to the extra
        observations, kept in :data:`~interestgym.core.features.EXTRA_FEATURES` order; ``self`` is not modified."""
        from interestgym.core.features import EXTRA_FEATURES

        have = dict(zip(self.extra_obs, self.decision_extra_obs.T)) if self.decision_extra_obs is not None else {}
        for name, values in columns.items():
            values = np.asarray(values, dtype=np.float32)
            if values.shape != (self.n_decisions,):
                raise ValueError(f"extra observation {name!r} of shape {values.shape}; expected ({self.n_decisions},)")
            have[name] = values
        names = tuple(f.name for f in EXTRA_FEATURES if f.name in have)
        unknown = set(have) - set(names)
        if unknown:
            raise KeyError(f"extra observations {sorted(unknown)}: not in core.features.EXTRA_FEATURES")
        return dataclasses.replace(self, extra_obs=names, decision_extra_obs=np.stack([have[n] for n in names], axis=1))

    @property
    def scored_user_ids(self) -> np.ndarray:
        """The users (of ``user_ids``, in its order) with at least one scoring point: the only ones a metric is
        measured on, so the ones a tuning or a validation samples from."""
        has = np.zeros(self.n_users, dtype=bool)
        has[self.decision_user[self.decision_point_end > self.decision_point_start]] = True
        return np.asarray(self.user_ids)[has]

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
        if len(points) and (length == width).all():  # no padding (one candidate count): the same values, fewer passes
            flat = lo[:, None] + col[None, :]
            return self.point_candidates[flat], self.point_labels[flat].astype(np.int8), length
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
            if self.spec.history_negatives:  # only when used: the protocols of earlier runs read as before
                out["history_negatives"] = int(self.spec.history_negatives)
        out["counts"] = dict(self.counts)
        if self.tracker:
            out["tracker"] = dict(self.tracker)
        return out


def build_replay_data(dataset: Dataset, embeddings: str | None, spec: ProtocolSpec,
                      users: Iterable[str] | None = None) -> ReplayData:
    """Precompute the replay arrays of the split's users, or of ``users`` (ids of the split) only
    (uncached; see :func:`load_replay_data`). The arrays of a subset are exactly the whole split's
    arrays of those users (:mod:`interestgym.envs.replay_build`)."""
    from interestgym.envs.replay_build import build_for_users, replay_context

    ctx = replay_context(dataset, embeddings, spec)
    return build_for_users(ctx, spec, ctx.split_users(spec.split) if users is None else users)


def check_embeddings(emb: np.ndarray, path: Path, item_ids: np.ndarray) -> None:
    """Refuse embeddings a policy cannot use: NaN / inf values, or rows that are neither unit length nor
    zero (the encoders write L2-normalised rows, zero for an item they have no vector for: no text, or for cooc no
    training user's event; every cosine assumes it)."""
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
                        f"item the encoder has no vector for) as `interestgym encode` writes them ({int(bad.sum())} such rows)")


# ------------------------------------------------------------------------------------------- cache
_CACHE: OrderedDict[tuple, ReplayData] = OrderedDict()
_CACHE_SIZE = 4


def load_replay_data(dataset: str | Path | Dataset, embeddings: str | None = None, spec: ProtocolSpec | None = None) -> ReplayData:
    """The replay arrays for ``dataset`` (a path or an open Dataset), cached per process.

    The cache key holds the files' modification stamps, so a re-prepared or re-encoded dataset is read
    again. A whole split's arrays stay in memory; :func:`~interestgym.envs.replay_build.iter_replay_chunks`
    streams a large split in chunks of users instead.
    """
    from interestgym.envs.replay_build import dataset_stamps

    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    spec = spec or ProtocolSpec()
    name = ds.resolve_embeddings(embeddings)
    key = (str(ds.path.resolve()), name, spec, dataset_stamps(ds, name))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    data = build_replay_data(ds, name, spec)
    _CACHE[key] = data
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return data


