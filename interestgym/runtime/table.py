"""Many users' states as columns, and a batch of events as columns: the runtime's batched path without a
Python object per user.

:class:`StateTable` holds N users' :class:`~interestgym.runtime.state.UserState` blocks stacked (row i = one
user): profiles (N, 5, d), running statistics (N, N_STATS), counters (N, len(COUNTERS)) and the extra score
terms' blocks. A service that keeps its users in memory updates, scores and records outcomes for a batch of
rows at once (``ExportedPolicy.update_table`` / ``score_table`` / ``record_outcomes_table``): the rows are
gathered, moved by the same core functions as every other path, and written back, so the per-event cost is
numpy's arithmetic over the batch plus a dict lookup per event for the user's categories.

:class:`EventBatch` is one event per row, as columns (timestamps, actions, item vectors, values,
categories, hours, weekdays, item ids), checked as a whole with the same messages as
:class:`~interestgym.runtime.state.Event`.

``ExportedPolicy.update_batch`` (a list of ``UserState``) goes through the same code: it stacks the states
into a table, updates every row and takes the states back out (one state and one event take the one-event path,
``update_one``, whose results are the same to the bit). ``tests/test_runtime_table.py`` checks the table against
the one-user path to the bit on random streams.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from interestgym.core.clock import TS_MAX, hour_weekday
from interestgym.core.log_features import RATING_ACTION, VALUE_MAX
from interestgym.errors import InterestGymError
from interestgym.runtime.state import (
    COUNTERS,
    DEFAULT_VALUE,
    STRENGTHS_SLICE,
    Event,
    UserState,
)
from interestgym.runtime.tracker import TrackerTerm

if TYPE_CHECKING:
    from interestgym.runtime.policy import ExportedPolicy

_N_DECISIONS = COUNTERS.index("n_decisions")
#: The optional blocks of a state, in UserState's attribute names (each a column of the table, or None).
OPTIONAL_BLOCKS = ("category_counts", "slot_profiles", "slot_category_counts", "exposure")


class StateTable:
    """N users' states as stacked blocks (see the module docstring). Create with ``policy.new_table(n)`` or
    :meth:`from_states`; read a user back with :meth:`state`.

    Columns (row i = user i): ``profiles`` (N, 2 + len(SHADOW_STRENGTHS), d) float32, ``stats`` (N, N_STATS)
    float64, ``counters`` (N, len(COUNTERS)) int64; the optional blocks ``category_counts`` (N, K),
    ``slot_profiles`` (N, slots, d), ``slot_category_counts`` (N, slots, K), ``slot_factor`` (N,) and
    ``exposure`` (N, 2, K), each None when no user has it, with a mask ``present[name]`` (N,) bool of the
    users that have it (a table of states written by one policy has all or none). Per user, in Python:
    the categories in order of first decision (``categories[i]``) and the decisions in each
    (``category_decisions[i]``), and the tracker term and drift window of a policy that has them. Read the
    columns and lists; change users only through the policy's table methods (the updates keep an index of each
    user's categories that an edit by hand would leave stale).
    """

    def __init__(self, profiles: np.ndarray, stats: np.ndarray, counters: np.ndarray, categories: list[list[str]],
                 category_decisions: list[list[int]], blocks: dict[str, np.ndarray | None], present: dict[str, np.ndarray],
                 slot_factor: np.ndarray | None, tracker: list[TrackerTerm | None] | None,
                 drift: list[np.ndarray | None] | None) -> None:
        self.profiles, self.stats, self.counters = profiles, stats, counters
        self.categories, self.category_decisions = categories, category_decisions
        #: per row, category -> position in ``categories[i]``, built at the row's first decision in the table
        self._category_index: list[dict[str, int] | None] = [None] * len(categories)
        self.category_counts = blocks.get("category_counts")
        self.slot_profiles = blocks.get("slot_profiles")
        self.slot_category_counts = blocks.get("slot_category_counts")
        self.exposure = blocks.get("exposure")
        self.present = present
        self.slot_factor = slot_factor
        self.tracker = tracker
        self.drift = drift

    def __len__(self) -> int:
        return int(self.counters.shape[0])

    def __repr__(self) -> str:
        return f"StateTable({len(self)} users, dim={self.dim})"

    @property
    def dim(self) -> int:
        return int(self.profiles.shape[2])

    # ------------------------------------------------------------------------ from / to UserState
    @classmethod
    def from_states(cls, states: Sequence[UserState]) -> StateTable:
        """A table of copies of ``states`` (at least one; every state of the same dimension). The tracker terms are
        immutable and shared; the drift windows are shared too and never written in place (an update replaces them)."""
        if not states:
            raise InterestGymError("StateTable.from_states needs at least one state (policy.new_table(0) makes an empty table)")
        n = len(states)
        blocks: dict[str, np.ndarray | None] = {}
        present: dict[str, np.ndarray] = {}
        for name in OPTIONAL_BLOCKS:
            values = [getattr(s, name) for s in states]
            have = np.array([v is not None for v in values], dtype=bool)
            if not have.any():
                blocks[name] = None
                continue
            try:  # the usual case: every state has the block, of one shape
                blocks[name] = np.stack(values) if have.all() else None
            except ValueError:
                blocks[name] = None
            if blocks[name] is None:
                shapes = {v.shape for v in values if v is not None}
                if len(shapes) > 1:
                    raise InterestGymError(f"StateTable.from_states: the states' {name} have shapes {sorted(shapes)}; "
                                           "expected one shape (states of one policy)")
                block = np.zeros((n, *shapes.pop()), dtype=np.float32 if name == "slot_profiles" else np.float64)
                for i in np.flatnonzero(have).tolist():
                    block[i] = values[i]
                blocks[name] = block
            present[name] = have
        slot_factor = None
        if blocks["slot_category_counts"] is not None:
            slot_factor = np.array([1.0 if s.slot_factor is None else s.slot_factor for s in states], dtype=np.float64)
        tracker = [s.tracker for s in states]
        drift = [s.drift_window for s in states]
        try:
            profiles = np.stack([s.profiles for s in states])
        except ValueError:
            dims = sorted({s.profiles.shape[1] for s in states})
            raise InterestGymError(f"StateTable.from_states: states of dimensions {dims}; expected one dimension") from None
        return cls(profiles, np.stack([s.stats for s in states]), np.stack([s.counters for s in states]),
                   [list(s.categories) for s in states], [s.category_decisions.tolist() for s in states], blocks, present,
                   slot_factor, None if all(t is None for t in tracker) else tracker,
                   None if all(d is None for d in drift) else drift)

    def state(self, i: int) -> UserState:
        """User ``i``'s state (a copy: changing it leaves the table as it is)."""
        return self._states(self.rows([i]).tolist())[0]

    def states(self, rows: Sequence[int] | np.ndarray | None = None) -> list[UserState]:
        """The users' states (copies), all rows or ``rows``."""
        return self._states(range(len(self)) if rows is None else self.rows(rows, distinct=False).tolist())

    def _states(self, rows: Sequence[int]) -> list[UserState]:
        profiles, stats, counters = self.profiles, self.stats, self.counters
        categories, decisions, tracker, drift, factor = self.categories, self.category_decisions, self.tracker, self.drift, self.slot_factor
        # the optional blocks as (column, mask), None where no user has it; a column every row has needs no mask
        counts, slots, slot_counts, exposure = (
            None if getattr(self, name) is None else (getattr(self, name), None if self.present[name].all() else self.present[name])
            for name in OPTIONAL_BLOCKS)

        def held(block: tuple[np.ndarray, np.ndarray | None] | None, i: int) -> np.ndarray | None:
            if block is None or (block[1] is not None and not block[1][i]):
                return None
            return block[0][i].copy()

        out = []
        for i in rows:
            own_slot_counts = held(slot_counts, i)
            out.append(UserState._of_blocks(
                profiles[i].copy(), stats[i].copy(), counters[i].copy(), list(categories[i]),
                np.array(decisions[i], dtype=np.int64), held(counts, i), held(slots, i),
                None if tracker is None else tracker[i],
                None if drift is None or drift[i] is None else drift[i].copy(),  # type: ignore[union-attr]
                own_slot_counts, None if own_slot_counts is None else float(factor[i]),  # type: ignore[index]
                held(exposure, i)))
        return out

    def category_index(self, i: int) -> dict[str, int]:
        """Row ``i``'s category -> position in ``categories[i]`` (kept up to date by the updates)."""
        index = self._category_index[i]
        if index is None:
            index = self._category_index[i] = dict(zip(self.categories[i], range(len(self.categories[i]))))
        return index

    def append(self, states: Sequence[UserState]) -> np.ndarray:
        """Add users (copies of ``states``, e.g. ``[policy.new_state()] * k`` or states read from a store) as new rows;
        returns their row numbers. Every new state must hold the blocks the table holds, of the table's shapes (states
        of the table's policy); everything is checked before anything is added. Each call copies the table's columns
        into new ones: add users in batches, not one at a time into a large table."""
        states = list(states)
        for k, s in enumerate(states):
            if not isinstance(s, UserState):
                raise InterestGymError(f"StateTable.append: item {k} is a {type(s).__name__}; expected UserState objects "
                                       "(policy.new_state(), UserState.from_bytes(...))")
        if not states:
            return np.zeros(0, dtype=np.int64)
        more = StateTable.from_states(states)

        def refuse(what: str) -> InterestGymError:
            return InterestGymError(f"StateTable.append: {what} (states of the table's policy: start them with policy.new_state())")

        for name in ("profiles", "stats", "counters"):
            if getattr(more, name).shape[1:] != getattr(self, name).shape[1:]:
                raise refuse(f"{name} of shape {getattr(more, name).shape[1:]} per user; the table's are "
                             f"{getattr(self, name).shape[1:]}")
        for name in OPTIONAL_BLOCKS:
            mine, theirs = getattr(self, name), getattr(more, name)
            if theirs is not None and not more.present[name].all():
                k = int(np.argmin(more.present[name]))
                raise refuse(f"new state {k} has no {name}, the table's users {'have' if mine is not None else 'have none'}")
            if (mine is None) != (theirs is None) or (mine is not None and mine.shape[1:] != theirs.shape[1:]):
                raise refuse(f"the new states' {name} {'is missing' if theirs is None else f'has shape {theirs.shape[1:]}'}; "
                             f"the table's {'is missing' if mine is None else f'has shape {mine.shape[1:]}'}")
        for name, what in (("tracker", "tracker window"), ("drift", "drift window")):
            mine, theirs = getattr(self, name), getattr(more, name)
            lacking = [k for k, w in enumerate(theirs or []) if w is None]
            if (mine is None) != (theirs is None) or (mine is not None and lacking):
                k = lacking[0] if lacking else 0
                raise refuse(f"new state {k} {'has no' if mine is not None else 'has a'} {what}, the table's users "
                             f"{'have one' if mine is not None else 'have none'}")
        # all checked: add
        start = len(self)
        for name in ("profiles", "stats", "counters"):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(more, name)]))
        for name in OPTIONAL_BLOCKS:
            if getattr(self, name) is not None:
                setattr(self, name, np.concatenate([getattr(self, name), getattr(more, name)]))
                self.present[name] = np.concatenate([self.present[name], more.present[name]])
        if self.slot_factor is not None:
            self.slot_factor = np.concatenate([self.slot_factor, more.slot_factor])  # type: ignore[list-item]
        for name in ("tracker", "drift"):
            if getattr(self, name) is not None:
                getattr(self, name).extend(getattr(more, name))
        self.categories.extend(more.categories)
        self.category_decisions.extend(more.category_decisions)
        self._category_index.extend(more._category_index)
        return np.arange(start, len(self))

    def rows(self, rows: Any, n_events: int | None = None, distinct: bool = True) -> np.ndarray:
        """``rows`` checked: integers in [0, N), distinct unless ``distinct`` is False, one per event of the batch when
        ``n_events`` is given."""
        arr = np.asarray(rows)
        if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
            raise InterestGymError(f"rows of shape {arr.shape} and type {arr.dtype}; expected a 1-d array of row numbers")
        arr = arr.astype(np.int64, copy=False)
        if n_events is not None and len(arr) != n_events:
            raise InterestGymError(f"{len(arr)} rows for {n_events} events; expected one row per event")
        outside = (arr < 0) | (arr >= len(self))
        if outside.any():
            raise InterestGymError(f"row {int(arr[outside][0])}: expected row numbers in [0, {len(self)}) "
                                   f"(the table has {len(self)} users)")
        if distinct and len(np.unique(arr)) != len(arr):
            values, counts = np.unique(arr, return_counts=True)
            raise InterestGymError(f"row {int(values[counts > 1][0])} appears {int(counts.max())} times in one batch; expected "
                                   "each user at most once per call (a user's next event goes in the next call, in time order)")
        return arr


def empty_table(policy: ExportedPolicy, n: int) -> StateTable:
    """``n`` users with no history under ``policy`` (``policy.new_table``)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise InterestGymError(f"new_table({n!r}): expected a number of users >= 0")
    state = policy.new_state()
    table = StateTable.from_states([state])
    # every row the new state's blocks, without n states: broadcast the one row
    for name in ("profiles", "stats", "counters"):
        setattr(table, name, np.repeat(getattr(table, name), n, axis=0))
    for name in OPTIONAL_BLOCKS:
        if getattr(table, name) is not None:
            setattr(table, name, np.repeat(getattr(table, name), n, axis=0))
            table.present[name] = np.ones(n, dtype=bool)
    if table.slot_factor is not None:
        table.slot_factor = np.repeat(table.slot_factor, n)
    table.tracker = None if table.tracker is None else [state.tracker] * n  # immutable terms: shared
    table.drift = None if table.drift is None else [state.drift_window] * n  # replaced, never written in place
    table.categories = [[] for _ in range(n)]
    table.category_decisions = [[] for _ in range(n)]
    table._category_index = [None] * n
    return table


# ------------------------------------------------------------------------------------------ events
@dataclass(eq=False)
class EventBatch:
    """One event per row of a batch, as columns (see :class:`~interestgym.runtime.state.Event` for each field).

    :param ts: (n,) UTC unix seconds.
    :param action: (n,) action names.
    :param item_vectors: (n, d) float32 item embeddings; a row of an event without an item is ignored
        (``has_item`` False).
    :param has_item: (n,) bool, default all True.
    :param value: (n,) numbers; None = 1.0 for every event (then no event may be a rating).
    :param category: (n,) category names ("" if unknown); None = "" for every event.
    :param hour: (n,) hours 0-23, -1 = from ``ts`` (as ``Event(hour=None)``); None = all from ``ts``.
    :param weekday: (n,) weekdays 0-6, -1 = from ``ts``; None = all from ``ts``.
    :param item_id: (n,) item ids, for a policy that scores with a sequence tracker; None otherwise.
    """

    ts: Any
    action: Any
    item_vectors: Any
    has_item: Any = None
    value: Any = None
    category: Any = None
    hour: Any = None
    weekday: Any = None
    item_id: Any = None

    def __post_init__(self) -> None:
        ts = np.asarray(self.ts)
        n = len(ts) if ts.ndim == 1 else -1
        if ts.ndim != 1 or (n and (ts.dtype.kind not in "iu")):
            raise InterestGymError(f"EventBatch.ts of shape {ts.shape} and type {ts.dtype}; expected a 1-d array of integer "
                                   "UTC unix seconds")
        self.ts = ts.astype(np.int64)
        outside = (self.ts < 0) | (self.ts >= TS_MAX)
        if outside.any():
            raise InterestGymError(f"event {int(np.argmax(outside))} of the batch: ts {int(self.ts[outside][0])}; expected UTC "
                                   f"unix seconds, a number from 0 to {TS_MAX - 1} (before 2100-01-01)")
        self.action = self._column(self.action, "action", n)
        has_item = np.ones(n, dtype=bool) if self.has_item is None else np.asarray(self.has_item)
        if has_item.shape != (n,) or has_item.dtype != bool:
            raise InterestGymError(f"EventBatch.has_item of shape {has_item.shape} and type {has_item.dtype}; expected ({n},) "
                                   "booleans (False: the event's item has no vector)")
        self.has_item = has_item
        try:
            vectors = np.asarray(self.item_vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InterestGymError(f"EventBatch.item_vectors: {exc}; expected ({n}, d) numbers, one item vector per event") from None
        if vectors.ndim != 2 or len(vectors) != n:
            raise InterestGymError(f"EventBatch.item_vectors of shape {vectors.shape}; expected ({n}, d): one item vector per event")
        self.item_vectors = vectors
        if self.value is None:
            rating = self.action == RATING_ACTION
            if rating.any():
                raise InterestGymError(f"event {int(np.argmax(rating))} of the batch: action {RATING_ACTION!r} without value: "
                                       "a rating needs its value (EventBatch(value=...))")
            self.value = np.full(n, DEFAULT_VALUE)
        else:
            value = np.asarray(self.value)
            if value.shape != (n,) or (n and value.dtype.kind not in "iuf"):
                raise InterestGymError(f"EventBatch.value of shape {value.shape} and type {value.dtype}; expected ({n},) numbers")
            self.value = value.astype(np.float64)
            bad = ~(np.abs(self.value) <= VALUE_MAX)
            if bad.any():
                raise InterestGymError(f"event {int(np.argmax(bad))} of the batch: value {float(self.value[bad][0])!r}; expected "
                                       f"a finite number (rating, quantity, read fraction) within float32's range "
                                       f"(|value| <= {VALUE_MAX:.4g})")
        self.category = np.full(n, "", dtype=object) if self.category is None else self._column(self.category, "category", n)
        odd = [i for i, c in enumerate(self.category.tolist()) if not isinstance(c, str)]
        if odd:
            raise InterestGymError(f"event {odd[0]} of the batch: category {self.category[odd[0]]!r}; expected a str (\"\" when "
                                   "the item has none)")
        for name, high in (("hour", 23), ("weekday", 6)):
            given = getattr(self, name)
            column = np.full(n, -1, dtype=np.int64) if given is None else np.asarray(given)
            if column.shape != (n,) or (n and column.dtype.kind not in "iu"):
                raise InterestGymError(f"EventBatch.{name} of shape {column.shape} and type {column.dtype}; expected ({n},) "
                                       f"integers (-1: from ts)")
            column = column.astype(np.int64)
            bad = (column < -1) | (column > high)
            if bad.any():
                raise InterestGymError(f"event {int(np.argmax(bad))} of the batch: {name} {int(column[bad][0])}; expected an "
                                       f"integer in [0, {high}] on the dataset's clock, or -1 to take it from ts")
            setattr(self, name, column)
        if self.item_id is not None:
            self.item_id = self._column(self.item_id, "item_id", n)

    @staticmethod
    def _column(values: Any, name: str, n: int) -> np.ndarray:
        arr = np.asarray(values, dtype=object)
        if arr.shape != (n,):
            raise InterestGymError(f"EventBatch.{name} of shape {arr.shape}; expected ({n},): one per event")
        return arr

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def of(cls, events: Sequence[Event], policy: ExportedPolicy) -> EventBatch:
        """The columns of ``events`` (each already checked by ``Event``); a row without an item is zeros. An item
        vector not of the policy's dimension is named by its position in the batch."""
        n = len(events)
        given = [e.item_vector for e in events]
        has_item = np.array([v is not None for v in given], dtype=bool)
        vectors = None
        if has_item.all():
            try:  # the usual case: every event has a vector of the policy's dimension
                vectors = np.stack(given).astype(np.float32, copy=False)
            except ValueError:
                pass
            if vectors is not None and vectors.shape != (n, policy.dim):
                vectors = None
        if vectors is None:
            vectors = np.zeros((n, policy.dim), dtype=np.float32)
            for i in np.flatnonzero(has_item).tolist():
                row = np.asarray(given[i], dtype=np.float32)
                if row.shape != (policy.dim,):  # one bad vector: named, not numpy's error over the whole batch
                    policy._vectors(row[None], f"event {i} of the batch: item_vector", 2, given=row.shape)
                vectors[i] = row
        batch = object.__new__(cls)  # the fields are Event's, already checked: no second pass
        batch.ts = np.array([int(e.ts) for e in events], dtype=np.int64).reshape(n)
        batch.action = np.array([e.action for e in events] + [None], dtype=object)[:n]
        batch.item_vectors, batch.has_item = vectors, has_item
        batch.value = np.array([float(e.value) for e in events], dtype=np.float64)  # type: ignore[arg-type]
        batch.category = np.array([e.category for e in events] + [None], dtype=object)[:n]
        batch.hour = np.array([-1 if e.hour is None else int(e.hour) for e in events], dtype=np.int64)
        batch.weekday = np.array([-1 if e.weekday is None else int(e.weekday) for e in events], dtype=np.int64)
        ids = [e.item_id for e in events]
        batch.item_id = None if all(i is None for i in ids) else np.array(ids + [None], dtype=object)[:n]
        return batch

    def hour_weekday(self, rows: np.ndarray, tz_offset_hours: float) -> np.ndarray:
        """(len(rows), 2) hour and weekday of the events ``rows`` on the dataset's clock (``Event.hour_weekday``)."""
        hour, weekday = self.hour[rows], self.weekday[rows]
        missing = (hour < 0) | (weekday < 0)
        if missing.any():
            h, w = hour_weekday(self.ts[rows], tz_offset_hours)
            hour, weekday = np.where(hour < 0, h, hour), np.where(weekday < 0, w, weekday)
        return np.stack([hour, weekday], axis=1).astype(np.int64)




class UserRows:
    """What a score reads of B users, from a list of :class:`UserState` or from rows of a :class:`StateTable`
    (``ExportedPolicy._scores`` reads both through this): one implementation of the score for both."""

    def __init__(self, states: Sequence[UserState] | None = None, table: StateTable | None = None,
                 rows: np.ndarray | None = None) -> None:
        self._states, self._table, self._rows = states, table, rows

    def __len__(self) -> int:
        return len(self._states) if self._states is not None else len(self._rows)  # type: ignore[arg-type]

    def check(self, policy: ExportedPolicy) -> None:
        if self._states is not None:
            for s in self._states:
                policy._check_state(s)
        else:
            policy._check_table(self._table, self._rows)  # type: ignore[arg-type]

    def profile(self, k: int) -> np.ndarray:
        """(B, d) profile row k (0: L, 1: S)."""
        if self._states is not None:
            return np.stack([s.profiles[k] for s in self._states])
        return self._table.profiles[self._rows, k]  # type: ignore[union-attr, index]

    def strengths(self) -> np.ndarray:
        """(B, 4) the strengths of each user's last decision (a new array)."""
        if self._states is not None:
            return np.stack([s.strengths for s in self._states])
        return self._table.stats[self._rows, STRENGTHS_SLICE]  # type: ignore[union-attr, index]

    def n_decisions(self) -> np.ndarray:
        if self._states is not None:
            return np.array([s.counters[_N_DECISIONS] for s in self._states], dtype=np.int64)
        return self._table.counters[self._rows, _N_DECISIONS]  # type: ignore[union-attr, index]

    def at_slot(self, name: str, slots: np.ndarray) -> np.ndarray:
        """(B, ...) each user's row ``slots[i]`` of a per-time-slot block: ``slot_profiles`` (B, d), ``slot_category_counts``
        (B, n_categories)."""
        if self._states is not None:
            return np.stack([getattr(s, name)[slots[i]] for i, s in enumerate(self._states)])
        return getattr(self._table, name)[self._rows, slots]

    def category_counts(self) -> np.ndarray:
        if self._states is not None:
            return np.stack([s.category_counts for s in self._states])  # type: ignore[misc]
        return self._table.category_counts[self._rows]  # type: ignore[union-attr, index]

    def slot_factor(self) -> np.ndarray:
        if self._states is not None:
            return np.array([s.slot_factor for s in self._states], dtype=np.float64)
        return self._table.slot_factor[self._rows]  # type: ignore[union-attr, index]

    def shown(self) -> np.ndarray:
        """(B, n_categories) the counts of shown candidates per category (the exposure's first row)."""
        if self._states is not None:
            return np.stack([s.exposure[0] for s in self._states])  # type: ignore[index]
        return self._table.exposure[self._rows, 0]  # type: ignore[union-attr, index]

    def tracker_terms(self) -> list[TrackerTerm | None]:
        if self._states is not None:
            return [s.tracker for s in self._states]
        tracker = self._table.tracker  # type: ignore[union-attr]
        return [None] * len(self) if tracker is None else [tracker[r] for r in self._rows.tolist()]  # type: ignore[union-attr]


__all__ = ["EventBatch", "StateTable", "UserRows", "empty_table"]
