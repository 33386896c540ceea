"""The dataset's clock: hour of day, weekday and time-of-day slot of unix times, with the time zone.

``prepare --tz-offset H`` fixes the clock a dataset is read on (``ts`` stays UTC; the ``hour`` and
``weekday`` columns are local). Every stage that turns a time into an hour, a weekday or a context slot
goes through :func:`hour_weekday` / :func:`time_slot_of`: decisions, impressions and the runtime's
events therefore agree on the slot (a profile is updated and scored in the same one).
"""

from __future__ import annotations

import calendar

import numpy as np

#: Sane range of event times (UTC unix seconds): anything outside is a unit or parsing mistake, not a real
#: event. ``prepare`` rejects rows outside it; the runtime and the service refuse times from ``TS_MAX`` on (and
#: negative ones), and take earlier ones, which tests and replays of old logs use.
TS_MIN = calendar.timegm((1990, 1, 1, 0, 0, 0))
TS_MAX = calendar.timegm((2100, 1, 1, 0, 0, 0))

#: Time-of-day slots of the context profiles: 4 slots of 6 hours (night, morning, afternoon, evening).
N_TIME_SLOTS = 4


def offset_seconds(tz_offset_hours: float) -> int:
    """The clock's offset from UTC in whole seconds (half-hour zones such as +5.5 included)."""
    return round(float(tz_offset_hours) * 3600)


def hour_weekday(ts: np.ndarray | int, tz_offset_hours: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day (0-23) and weekday (0 = Monday) of UTC unix seconds on the dataset's clock."""
    local = np.asarray(ts, dtype=np.int64) + offset_seconds(tz_offset_hours)
    hour = (local // 3600) % 24
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
    return hour, weekday


def time_slot(hour: np.ndarray | int) -> np.ndarray:
    """Slot index (0..N_TIME_SLOTS-1) of an hour of the day (0-23)."""
    return (np.asarray(hour, dtype=np.int64) % 24) * N_TIME_SLOTS // 24


def time_slot_of(ts: np.ndarray | int, tz_offset_hours: float = 0.0) -> np.ndarray:
    """The time-of-day slot of UTC unix seconds on the dataset's clock."""
    return time_slot(hour_weekday(ts, tz_offset_hours)[0])
