"""Per-user interest state kept by a service between events, and the events it is updated with.

:class:`UserState` holds exactly what the replay engine (``interestgym.envs.engine.ReplayEngine``)
keeps per user, so that the runtime's observations, updates and scores are the env's:

* the long- and short-term profiles L and S and the policy-independent shadow profiles (float32);
* the running means the observation reads (reward, drift, short-vs-long, L-only / S-only metric,
  shadow cosines; float64 like the engine's);
* the counters behind the log features (events and decisions so far, their last timestamps, the
  decisions per category, the same-category streak);
* the strengths chosen at the last decision (w and p score candidates until the next decision);
* the scoring points recorded since the last decision (their metric sums feed the running means
  at the next decision, as the engine folds a step's scoring points in at the end of the step);
* optional state of the extra score terms: forgetful category counts (``beta_cat``), the same per
  time-of-day slot (``category_slot_weight``), the counts of shown candidates per category
  (``category_exposure_prior``), time-of-day slot profiles (``beta_ctx``) and, for a policy that scores with a sequence tracker, the
  tracker's window of the last decisions and the tracker weight set at the last decision
  (:class:`~interestgym.runtime.tracker.TrackerTerm`).

It serialises to bytes (:meth:`UserState.to_bytes`, a small header + little-endian arrays + CRC, see
:mod:`interestgym.runtime.codec`) and to JSON (:meth:`UserState.to_json`); neither uses pickle.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from interestgym.core.clock import N_TIME_SLOTS, TS_MAX, hour_weekday
from interestgym.core.features import RUNNING_MEAN_NAMES, SHADOW_STRENGTHS
from interestgym.core.log_features import RATING_ACTION, VALUE_MAX
from interestgym.core.transition import GAIN_MAX
from interestgym.errors import InterestGymError
from interestgym.runtime.codec import (
    StateFormatError,
    decode_bytes,
    decode_json,
    encode_bytes,
    encode_json,
)
from interestgym.runtime.tracker import TrackerTerm, TrackerWindow, window_problem

#: Version of the state layout below (stored in every blob's meta; bumped on any change). Version 2
#: added the optional tracker fields, version 3 the per-slot category counts, version 4 the exposure
#: counts; blobs of earlier versions (which never have the later fields) still read. A state is written
#: with the lowest version that holds its fields, so that a reader from before an upgrade still reads what
#: it can represent.
STATE_VERSION = 4
READABLE_STATE_VERSIONS = (1, 2, 3, 4)
_N_SHADOW = len(SHADOW_STRENGTHS)

#: float64 running means, in this order, in the ``running_means`` field.
RUNNING_MEANS: tuple[str, ...] = RUNNING_MEAN_NAMES
#: int64 counters, in this order, in the ``counters`` field. ``last_*_ts`` are meaningless while the
#: matching count is 0.
#: ``last_category`` indexes ``UserState.categories`` (-1 before the first decision) and
#: ``category_run`` counts the decisions in a row, up to the last one, in that category.
COUNTERS: tuple[str, ...] = (
    "n_events", "n_decisions", "last_event_ts", "last_decision_ts", "last_category", "category_run", "pending_points",
)
#: float64 sums of the scoring points recorded since the last decision, in the ``pending_sums`` field.
PENDING: tuple[str, ...] = ("metric", "long_only", "short_only")
_EMPTY_COUNTERS = np.where(np.array(COUNTERS) == "last_category", -1, 0).astype(np.int64)


#: The value of an event given without one (a click, a view: one of it).
DEFAULT_VALUE: float = 1.0


@dataclass(eq=False)  # holds an array: compare fields explicitly
class Event:
    """One behaviour event of a user, as a service sees it.

    :param ts: UTC unix seconds. Events of a user must arrive in time order.
    :param action: the action type (one of :data:`interestgym.data.schema.ACTIONS`, e.g. ``"click"``).
    :param item_vector: the item's embedding (unit float32 vector of the encoder's dimension), or
        ``None`` when the item has no embedding (the event is then counted but is not a decision).
    :param value: rating / quantity / read fraction; ``None`` (the default) reads as :data:`DEFAULT_VALUE`,
        except for a ``"rate"`` event, whose value is its rating and must be given.
    :param category: the item's category ("" if unknown).
    :param hour: hour of the day (0-23) in the dataset's convention; ``None`` = from ``ts`` in the
        dataset's clock (UTC shifted by the export's ``replay.tz_offset_hours``, as at training).
    :param weekday: 0 = Monday; ``None`` = from ``ts``, likewise.
    :param item_id: the item's id; needed only by a policy that scores with a sequence tracker (its
        window holds the user's last decisions' items, as rows of the tracker's catalogue).
    """

    ts: int
    action: str
    item_vector: np.ndarray | None = None
    value: float | None = None
    category: str = ""
    hour: int | None = None
    weekday: int | None = None
    item_id: str | None = None

    def __post_init__(self) -> None:
        ts, value = self.ts, self.value
        if value is None:
            if self.action == RATING_ACTION:  # read as 1.0 it would never reach a positive rating: never a decision
                raise InterestGymError(f"Event(action={RATING_ACTION!r}) without value: a rating needs its value")
            self.value = value = DEFAULT_VALUE
        # the common case first, cheaply (a plain int / float in range); then the slow look at what else it is
        if not (type(ts) is int and 0 <= ts < TS_MAX) and (
                isinstance(ts, (bool, np.bool_)) or not isinstance(ts, numbers.Real) or not 0 <= ts < TS_MAX):
            raise InterestGymError(f"Event.ts={ts!r}: expected UTC unix seconds, a number from 0 to {TS_MAX - 1} "
                                   "(before 2100-01-01)")
        if not (type(value) is float and -VALUE_MAX <= value <= VALUE_MAX) and (
                isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not -VALUE_MAX <= value <= VALUE_MAX):
            raise InterestGymError(f"Event.value={value!r}: expected a finite number (rating, quantity, read fraction) "
                                   f"within float32's range (|value| <= {VALUE_MAX:.4g})")
        if not isinstance(self.category, str):  # e.g. pandas' NaN for an item without one
            raise InterestGymError(f"Event.category={self.category!r}: expected a str (\"\" when the item has none): a state "
                                   "keeps its categories by name, and a stored state would read another kind back as another name")
        for name, high in (("hour", 23), ("weekday", 6)):
            value = getattr(self, name)
            if value is None or type(value) is int and 0 <= value <= high:  # the common case, cheaply
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not 0 <= value <= high:
                raise InterestGymError(f"Event.{name}={value!r}: expected an integer in [0, {high}] on the dataset's clock, "
                                       f"or None to take it from ts")

    def hour_weekday(self, tz_offset_hours: float = 0.0) -> tuple[int, int]:
        """(hour, weekday) of the event on the dataset's clock: UTC shifted by ``tz_offset_hours``."""
        if self.hour is not None and self.weekday is not None:
            return int(self.hour), int(self.weekday)
        hour, weekday = hour_weekday(int(self.ts), tz_offset_hours)
        return (int(hour) if self.hour is None else int(self.hour),
                int(weekday) if self.weekday is None else int(self.weekday))


#: Rows of ``UserState.profiles``: L, S, then the shadow profiles H_a in SHADOW_STRENGTHS order.
PROFILE_ROWS: tuple[str, ...] = ("long_term", "short_term", *(f"shadow_{a:g}" for a in SHADOW_STRENGTHS))
#: Slices of ``UserState.stats`` (one float64 vector): the running means, the shadow cosines' running
#: means, the last decision's strengths (a_L, a_S, w, p) and the pending scoring points' sums.
MEANS_SLICE = slice(0, len(RUNNING_MEANS))
SHADOW_COS_SLICE = slice(MEANS_SLICE.stop, MEANS_SLICE.stop + _N_SHADOW)
STRENGTHS_SLICE = slice(SHADOW_COS_SLICE.stop, SHADOW_COS_SLICE.stop + 4)
PENDING_SLICE = slice(STRENGTHS_SLICE.stop, STRENGTHS_SLICE.stop + len(PENDING))
N_STATS = PENDING_SLICE.stop


class UserState:
    """One user's interest state (see the module docstring). Create with ``ExportedPolicy.new_state()``.

    Storage is three blocks, so that an update copies, stacks and moves a user's state in a few
    array operations instead of one per field (the per-call overhead of small numpy arrays is what a
    one-event update spends its time on):

    * ``profiles`` (2 + len(SHADOW_STRENGTHS), d) float32: L, S and the shadow profiles
      (:data:`PROFILE_ROWS`); the profile update moves them in one call;
    * ``stats`` (:data:`N_STATS`,) float64: running means, shadow cosines' means, strengths, pending sums;
    * ``counters`` int64 (:data:`COUNTERS`).

    The named fields of the serialised form (``long_term``, ``short_term``, ``shadow``,
    ``running_means``, ``shadow_cos_ema``, ``strengths``, ``pending_sums``) are views into these blocks:
    reading them costs nothing, writing into them writes the state, and assigning one copies the
    values into the block. The byte / JSON layout is unchanged (same field names, dtypes and shapes).

    :param long_term: (d,) float32 L; ``short_term`` (d,) S; ``shadow`` (len(SHADOW_STRENGTHS), d).
    :param running_means: (len(RUNNING_MEANS),) float64; ``shadow_cos_ema`` (len(SHADOW_STRENGTHS),).
    :param counters: (len(COUNTERS),) int64; ``strengths`` (4,) float64; ``pending_sums`` (len(PENDING),).
    :param categories: categories in order of first decision; ``category_decisions`` the user's
        decisions per category (aligned).
    :param category_counts: forgetful counts over the export's category list (only when the policy
        scores with beta_cat).
    :param slot_profiles: time-of-day slot profiles (only when the policy scores with beta_ctx).
    :param slot_category_counts: (N_TIME_SLOTS, n_categories) the category counts per time-of-day slot
        (only when the policy's category term weighs them: ``category_slot_weight`` > 0).
    :param slot_factor: the factor on the policy's weight lambda of those counts in the scoring until the
        next decision, as a slot change set it at the last decision (1 without one; in [0, 2]); with
        ``slot_category_counts`` only. The state keeps the factor, not lambda, so that a policy swapped in
        with another lambda scores with its own.
    :param exposure: (2, n_categories) float64: the forgetful counts of the candidates the user was shown,
        per category, and those shown since the last decision (added at the next one:
        :func:`~interestgym.core.transition.fold_exposure`); only when the policy's category term divides by
        them (``category_exposure_prior`` > 0).
    :param tracker: the tracker's window and weight (only when the policy scores with a tracker term).
    :param drift_window: (m, d) float32, the item vectors of the user's last m <= 2k decisions, oldest
        first (only when the policy observes the DTW drift).
    """

    __slots__ = ("categories", "category_counts", "category_decisions", "counters", "drift_window", "exposure", "profiles",
                 "slot_category_counts", "slot_factor", "slot_profiles", "stats", "tracker")

    def __init__(self, long_term: np.ndarray, short_term: np.ndarray, shadow: np.ndarray, running_means: np.ndarray,
                 shadow_cos_ema: np.ndarray, counters: np.ndarray, strengths: np.ndarray, pending_sums: np.ndarray,
                 categories: list[str] | None = None, category_decisions: np.ndarray | None = None,
                 category_counts: np.ndarray | None = None, slot_profiles: np.ndarray | None = None,
                 tracker: TrackerTerm | None = None, drift_window: np.ndarray | None = None,
                 slot_category_counts: np.ndarray | None = None, slot_factor: float | None = None,
                 exposure: np.ndarray | None = None) -> None:
        d = int(np.shape(long_term)[0])
        profiles = np.empty((2 + _N_SHADOW, d), dtype=np.float32)
        profiles[0], profiles[1], profiles[2:] = long_term, short_term, shadow
        stats = np.empty(N_STATS)
        stats[MEANS_SLICE], stats[SHADOW_COS_SLICE] = running_means, shadow_cos_ema
        stats[STRENGTHS_SLICE], stats[PENDING_SLICE] = strengths, pending_sums
        self.profiles = profiles
        self.stats = stats
        self.counters = np.asarray(counters, dtype=np.int64)
        self.categories = list(categories) if categories is not None else []
        self.category_decisions = (np.zeros(0, dtype=np.int64) if category_decisions is None
                                   else np.asarray(category_decisions, dtype=np.int64))
        self.category_counts = category_counts
        self.slot_profiles = slot_profiles
        self.tracker = tracker
        self.drift_window = drift_window
        self.slot_category_counts = slot_category_counts
        self.slot_factor = None if slot_category_counts is None else float(1.0 if slot_factor is None else slot_factor)
        self.exposure = exposure

    @classmethod
    def _of_blocks(cls, profiles: np.ndarray, stats: np.ndarray, counters: np.ndarray, categories: list[str],
                   category_decisions: np.ndarray, category_counts: np.ndarray | None,
                   slot_profiles: np.ndarray | None, tracker: TrackerTerm | None = None,
                   drift_window: np.ndarray | None = None, slot_category_counts: np.ndarray | None = None,
                   slot_factor: float | None = None, exposure: np.ndarray | None = None) -> UserState:
        """A state owning the given blocks as they are (no copy, no check): the update paths' constructor.

        :param profiles: ((2 + len(SHADOW_STRENGTHS)), d) float32; ``stats`` (N_STATS,) float64;
            ``counters`` int64; the rest as in the constructor.
        """
        state = object.__new__(cls)
        state.profiles, state.stats, state.counters = profiles, stats, counters
        state.categories, state.category_decisions = categories, category_decisions
        state.category_counts, state.slot_profiles = category_counts, slot_profiles
        state.tracker, state.drift_window = tracker, drift_window
        state.slot_category_counts, state.slot_factor = slot_category_counts, slot_factor
        state.exposure = exposure
        return state

    # -------------------------------------------------------------------------------- creation
    @classmethod
    def empty(cls, dim: int, n_categories: int | None = None, with_slots: bool = False,
              tracker_weight: float | None = None, with_drift: bool = False, with_slot_counts: bool = False,
              with_exposure: bool = False) -> UserState:
        """The state before any event: zero profiles ("no interest known") and zero statistics (and an
        empty tracker window at ``tracker_weight``, when given; an empty drift window with ``with_drift``;
        zero per-slot category counts, at factor 1, with ``with_slot_counts``, and zero exposure counts with
        ``with_exposure``, which both need ``n_categories``)."""
        if (with_slot_counts or with_exposure) and n_categories is None:
            raise ValueError("UserState.empty: per-slot category counts and exposure counts need n_categories")
        empty = np.zeros(0, dtype=np.int64)
        return cls._of_blocks(
            np.zeros((2 + _N_SHADOW, dim), dtype=np.float32), np.zeros(N_STATS), _EMPTY_COUNTERS.copy(), [],
            np.zeros(0, dtype=np.int64), None if n_categories is None else np.zeros(max(n_categories, 1)),
            np.zeros((N_TIME_SLOTS, dim), dtype=np.float32) if with_slots else None,
            None if tracker_weight is None else TrackerTerm(TrackerWindow(empty, empty, empty, None), float(tracker_weight)),
            np.zeros((0, dim), dtype=np.float32) if with_drift else None,
            np.zeros((N_TIME_SLOTS, max(n_categories or 0, 1))) if with_slot_counts else None,
            1.0 if with_slot_counts else None,
            np.zeros((2, max(n_categories or 0, 1))) if with_exposure else None,
        )

    # ------------------------------------------------------------------ the named fields (views)
    @property
    def long_term(self) -> np.ndarray:
        return self.profiles[0]

    @long_term.setter
    def long_term(self, value: np.ndarray) -> None:
        self.profiles[0] = value

    @property
    def short_term(self) -> np.ndarray:
        return self.profiles[1]

    @short_term.setter
    def short_term(self, value: np.ndarray) -> None:
        self.profiles[1] = value

    @property
    def shadow(self) -> np.ndarray:
        return self.profiles[2:]

    @shadow.setter
    def shadow(self, value: np.ndarray) -> None:
        self.profiles[2:] = value

    @property
    def running_means(self) -> np.ndarray:
        return self.stats[MEANS_SLICE]

    @running_means.setter
    def running_means(self, value: np.ndarray) -> None:
        self.stats[MEANS_SLICE] = value

    @property
    def shadow_cos_ema(self) -> np.ndarray:
        return self.stats[SHADOW_COS_SLICE]

    @shadow_cos_ema.setter
    def shadow_cos_ema(self, value: np.ndarray) -> None:
        self.stats[SHADOW_COS_SLICE] = value

    @property
    def strengths(self) -> np.ndarray:
        return self.stats[STRENGTHS_SLICE]

    @strengths.setter
    def strengths(self, value: np.ndarray) -> None:
        self.stats[STRENGTHS_SLICE] = value

    @property
    def pending_sums(self) -> np.ndarray:
        return self.stats[PENDING_SLICE]

    @pending_sums.setter
    def pending_sums(self, value: np.ndarray) -> None:
        self.stats[PENDING_SLICE] = value

    @property
    def dim(self) -> int:
        return int(self.profiles.shape[1])

    def counter(self, name: str) -> int:
        return int(self.counters[COUNTERS.index(name)])

    def running_mean(self, name: str) -> float:
        return float(self.stats[RUNNING_MEANS.index(name)])

    def copy(self) -> UserState:
        return UserState._of_blocks(
            self.profiles.copy(), self.stats.copy(), self.counters.copy(), list(self.categories),
            self.category_decisions.copy(), None if self.category_counts is None else self.category_counts.copy(),
            None if self.slot_profiles is None else self.slot_profiles.copy(), self.tracker,  # immutable: shared
            None if self.drift_window is None else self.drift_window.copy(),
            None if self.slot_category_counts is None else self.slot_category_counts.copy(), self.slot_factor,
            None if self.exposure is None else self.exposure.copy(),
        )

    def __repr__(self) -> str:
        return (f"UserState(dim={self.dim}, n_events={self.counter('n_events')}, n_decisions={self.counter('n_decisions')}, "
                f"categories={len(self.categories)})")

    # ----------------------------------------------------------------------------- serialisation
    def _fields(self) -> dict[str, np.ndarray]:
        fields = {
            "long_term": self.long_term, "short_term": self.short_term, "shadow": self.shadow,
            "running_means": self.running_means, "shadow_cos_ema": self.shadow_cos_ema,
            "counters": self.counters, "strengths": self.strengths, "pending_sums": self.pending_sums,
            "category_decisions": self.category_decisions,
        }
        if self.category_counts is not None:
            fields["category_counts"] = self.category_counts
        if self.slot_profiles is not None:
            fields["slot_profiles"] = self.slot_profiles
        if self.tracker is not None:
            w = self.tracker.window
            fields["tracker_window"] = np.stack([w.items, w.actions, w.gaps]).astype(np.int64).reshape(3, -1)
            fields["tracker_last_ts"] = np.array([w.last_ts is not None, w.last_ts or 0], dtype=np.int64)
            fields["tracker_stats"] = np.array([self.tracker.weight, self.tracker.metric_ema, self.tracker.pending], dtype=np.float64)
        if self.drift_window is not None:
            fields["drift_window"] = self.drift_window
        if self.slot_category_counts is not None:
            fields["slot_category_counts"] = self.slot_category_counts
            fields["slot_factor"] = np.array([self.slot_factor], dtype=np.float64)
        if self.exposure is not None:
            fields["exposure"] = self.exposure
        return fields

    def _meta(self) -> dict[str, Any]:
        # the lowest version that holds the fields present: a reader from before an upgrade (e.g. after a
        # rollback) still reads what it can represent
        version = (4 if self.exposure is not None else 3 if self.slot_category_counts is not None
                   else 2 if self.tracker is not None or self.drift_window is not None else 1)
        return {"state_version": version, "categories": list(self.categories)}

    def to_bytes(self, *, sparse: bool = True) -> bytes:
        """Compact binary form (header + float32 / float64 / int64 arrays + CRC-32); no pickle. Mostly-zero fields are
        stored sparse (codec version 2); ``sparse=False`` writes every field dense (version 1, which earlier releases read)."""
        return encode_bytes(self._fields(), self._meta(), sparse=sparse)

    def to_json(self) -> str:
        """JSON form: ``{"codec", "meta", "fields": {name: {dtype, shape, data}}}``; exact round trip."""
        return encode_json(self._fields(), self._meta())

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, dim: int | None = None) -> UserState:
        """Inverse of :meth:`to_bytes`; ``dim`` (the policy's encoder dimension) is checked if given."""
        return cls._from_fields(*decode_bytes(data), dim=dim)

    @classmethod
    def from_json(cls, text: str | bytes, dim: int | None = None) -> UserState:
        """Inverse of :meth:`to_json`."""
        return cls._from_fields(*decode_json(text), dim=dim)

    @classmethod
    def _from_fields(cls, fields: dict[str, np.ndarray], meta: dict[str, Any], dim: int | None) -> UserState:
        version = meta.get("state_version")
        if version not in READABLE_STATE_VERSIONS:
            raise StateFormatError(f"user state version {version!r}; this interestgym reads versions "
                                   f"{', '.join(map(str, READABLE_STATE_VERSIONS))}")
        required = {
            "long_term": ("<f4", 1), "short_term": ("<f4", 1), "shadow": ("<f4", 2), "running_means": ("<f8", 1),
            "shadow_cos_ema": ("<f8", 1), "counters": ("<i8", 1), "strengths": ("<f8", 1), "pending_sums": ("<f8", 1),
            "category_decisions": ("<i8", 1),
        }
        for name, (dtype, ndim) in required.items():
            if name not in fields:
                raise StateFormatError(f"user state field {name!r} is missing; expected fields {', '.join(required)}")
            arr = fields[name]
            if arr.dtype.str != dtype or arr.ndim != ndim:
                raise StateFormatError(f"user state field {name!r} has dtype {arr.dtype.str} and {arr.ndim} dims; expected {dtype} with {ndim}")
        d = fields["long_term"].shape[0]
        expected_shapes = {
            "short_term": (d,), "shadow": (_N_SHADOW, d), "running_means": (len(RUNNING_MEANS),),
            "shadow_cos_ema": (_N_SHADOW,), "counters": (len(COUNTERS),), "strengths": (4,), "pending_sums": (len(PENDING),),
        }
        for name, shape in expected_shapes.items():
            if fields[name].shape != shape:
                raise StateFormatError(f"user state field {name!r} has shape {fields[name].shape}; expected {shape}")
        if dim is not None and d != dim:
            raise StateFormatError(f"user state has profiles of dimension {d}; the policy's encoder has dimension {dim}")
        categories = meta.get("categories", [])
        if not isinstance(categories, list) or len(categories) != len(fields["category_decisions"]):
            raise StateFormatError(
                f"user state lists {len(categories) if isinstance(categories, list) else categories!r} categories "
                f"but {len(fields['category_decisions'])} category counts; expected one count per category"
            )
        slots = fields.get("slot_profiles")
        if slots is not None and (slots.dtype.str != "<f4" or slots.shape != (N_TIME_SLOTS, d)):
            raise StateFormatError(f"user state field 'slot_profiles' has dtype {slots.dtype.str} and shape {slots.shape}; "
                                   f"expected <f4 with shape {(N_TIME_SLOTS, d)}")
        counts, slot_counts = fields.get("category_counts"), fields.get("slot_category_counts")
        if counts is not None and (counts.dtype.str != "<f8" or counts.ndim != 1):
            # (the exposure and per-slot counts are checked against it below, as every update widens to float64)
            raise StateFormatError(f"user state field 'category_counts' has dtype {counts.dtype.str} and {counts.ndim} dims; "
                                   "expected <f8 with 1 (one count per category of the export)")
        if slot_counts is not None:
            if version < 3:
                raise StateFormatError(f"user state of version {version} has the field 'slot_category_counts'; expected it "
                                       "only from version 3")
            if counts is None:
                raise StateFormatError("user state has the field 'slot_category_counts' without the field 'category_counts'; "
                                       "expected both (the per-slot counts are rows of the user's category counts)")
            if slot_counts.dtype.str != "<f8" or slot_counts.shape != (N_TIME_SLOTS,) + counts.shape:
                raise StateFormatError(
                    f"user state field 'slot_category_counts' has dtype {slot_counts.dtype.str} and shape {slot_counts.shape}; "
                    f"expected <f8 with shape {(N_TIME_SLOTS,) + counts.shape} "
                    "(one row of the field 'category_counts' per time slot)")
        factor = fields.get("slot_factor")
        if (factor is None) != (slot_counts is None):
            raise StateFormatError("user state has one of the fields 'slot_category_counts' and 'slot_factor' without the other; "
                                   "expected both (a policy with category counts per time of day) or neither")
        if factor is not None and (factor.dtype.str != "<f8" or factor.shape != (1,) or not np.isfinite(factor).all()
                                   or not 0.0 <= factor[0] <= GAIN_MAX):
            raise StateFormatError(f"user state field 'slot_factor' is {factor.tolist()} ({factor.dtype.str}, shape {factor.shape}); "
                                   f"expected one float64 in [0, {GAIN_MAX:g}]")
        exposure = fields.get("exposure")
        if exposure is not None:
            if version < 4:
                raise StateFormatError(f"user state of version {version} has the field 'exposure'; expected it only from version 4")
            if counts is None:
                raise StateFormatError("user state has the field 'exposure' without the field 'category_counts'; expected both "
                                       "(exposure divides the category term)")
            if exposure.dtype.str != "<f8" or exposure.shape != (2,) + counts.shape:
                raise StateFormatError(f"user state field 'exposure' has dtype {exposure.dtype.str} and shape {exposure.shape}; "
                                       f"expected <f8 with shape {(2,) + counts.shape} (shown counts and those since the last "
                                       "decision, one column per category of the field 'category_counts')")
            if not (np.isfinite(exposure).all() and (exposure >= 0).all()):
                raise StateFormatError("user state field 'exposure' holds a negative or non-finite count; expected counts >= 0")
        return cls(
            long_term=fields["long_term"], short_term=fields["short_term"], shadow=fields["shadow"],
            running_means=fields["running_means"], shadow_cos_ema=fields["shadow_cos_ema"], counters=fields["counters"],
            strengths=fields["strengths"], pending_sums=fields["pending_sums"], categories=[str(c) for c in categories],
            category_decisions=fields["category_decisions"], category_counts=fields.get("category_counts"),
            slot_profiles=slots, tracker=_tracker_of_fields(fields), drift_window=_drift_of_fields(fields, d),
            slot_category_counts=slot_counts, slot_factor=None if factor is None else float(factor[0]),
            exposure=exposure,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserState):
            return NotImplemented
        a, b = self._fields(), other._fields()  # the tracker's window and weight are fields too
        return (self.categories == other.categories and a.keys() == b.keys()
                and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes() for k in a))


_TRACKER_FIELDS = {"tracker_window": ("<i8", 2), "tracker_last_ts": ("<i8", 1), "tracker_stats": ("<f8", 1)}


def _tracker_of_fields(fields: dict[str, np.ndarray]) -> TrackerTerm | None:
    """The tracker term of a decoded state (None when it has none; all three fields or none)."""
    present = [name for name in _TRACKER_FIELDS if name in fields]
    if not present:
        return None
    if len(present) != len(_TRACKER_FIELDS):
        raise StateFormatError(f"user state has tracker fields {present}; expected all of {', '.join(_TRACKER_FIELDS)} or none")
    for name, (dtype, ndim) in _TRACKER_FIELDS.items():
        arr = fields[name]
        if arr.dtype.str != dtype or arr.ndim != ndim:
            raise StateFormatError(f"user state field {name!r} has dtype {arr.dtype.str} and {arr.ndim} dims; expected {dtype} with {ndim}")
    window, last, stats = fields["tracker_window"], fields["tracker_last_ts"], fields["tracker_stats"]
    if window.shape[0] != 3 or last.shape != (2,) or stats.shape != (3,):
        raise StateFormatError(f"user state tracker fields of shapes {window.shape}, {last.shape}, {stats.shape}; "
                               "expected (3, k), (2,) and (3,)")
    if not np.isfinite(stats).all():
        raise StateFormatError("user state field 'tracker_stats': a non-finite value")
    problem = window_problem(window[0], window[1], window[2])  # rows and k: checked by the tracker that reads it
    if problem:
        raise StateFormatError(f"user state field 'tracker_window': {problem}")
    last_ts = int(last[1]) if last[0] else None
    return TrackerTerm(TrackerWindow(window[0].copy(), window[1].copy(), window[2].copy(), last_ts),
                       float(stats[0]), float(stats[1]), float(stats[2]))


def _drift_of_fields(fields: dict[str, np.ndarray], dim: int) -> np.ndarray | None:
    """The drift window of a decoded state (None when it has none)."""
    window = fields.get("drift_window")
    if window is None:
        return None
    if window.dtype.str != "<f4" or window.ndim != 2 or window.shape[1] != dim:
        raise StateFormatError(f"user state field 'drift_window' has dtype {window.dtype.str} and shape {window.shape}; "
                               f"expected <f4 of shape (m, {dim})")
    if not np.isfinite(window).all():
        raise StateFormatError("user state field 'drift_window' holds a non-finite value; expected item vectors")
    return window
