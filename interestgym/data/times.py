"""Event times: parsing unix seconds / milliseconds / ISO-8601 / ``strptime`` text into UTC unix
seconds, the sane range check, and the hour / weekday columns.

Every reader goes through here, so a time is judged the same way in every format: a time outside
1990-01-01 .. 2100-01-01 UTC is a unit or parsing mistake, not a real event, and is rejected.
"""

from __future__ import annotations

import calendar
import math
import re
from collections import Counter
from datetime import date, datetime, timezone
from typing import Any

import numpy as np

from interestgym.core.clock import TS_MAX, TS_MIN
from interestgym.data.columns import json_shown
from interestgym.errors import DataError

TIME_FORMATS = ("auto", "unix", "unix_ms", "iso")

#: How each format is named in reject reasons ("expected ...").
_EXPECTED = {
    "unix": "unix seconds",
    "unix_ms": "unix milliseconds",
    "iso": "an ISO-8601 time such as 2019-11-12T14:14:46Z",
}


def ts_range_reason(ts: int, shown: object) -> str | None:
    """Reject reason for a time outside 1990..2100, else None."""
    if TS_MIN <= ts < TS_MAX:
        return None
    try:
        when = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, ValueError, OSError):
        when = f"in the year {1970 + ts // 31556952}"
    return f"time out of range: {shown!s} is {when}; expected 1990-01-01 .. 2100-01-01 UTC"


class TimeParser:
    """Parse event times into UTC unix seconds.

    ``fmt`` is ``unix`` (seconds, decimals allowed and floored), ``unix_ms`` (milliseconds), ``iso``
    (ISO-8601; a time without an offset is taken as UTC), a ``strptime`` pattern (contains ``%``;
    UTC unless it has ``%z``), or ``auto``, which looks at each value: a number is unix time, any
    other text must be ISO-8601. So a log merged from two systems (one writing ISO-8601, one unix
    seconds) reads whole. The *unit* of the numbers is decided once, by the first number in the
    sane range of seconds or of milliseconds, and kept for the file: one log keeps one unit, and a
    number 1000 times off the others is far more often a bug than a second clock, so it is rejected
    (with a hint) rather than read at another scale.

    :attr:`counts` says how many values were read in each format; :attr:`detected` is the one
    format used so far (None before the first value, or when the log mixes numbers and ISO text).
    """

    def __init__(self, fmt: str = "auto") -> None:
        if fmt not in TIME_FORMATS and "%" not in fmt:
            raise DataError(f"--time-format {fmt!r}: expected one of {', '.join(TIME_FORMATS)} or a strptime pattern such as '%Y-%m-%d %H:%M:%S'")
        self.fmt = fmt
        #: auto: the unit of numeric times ("unix" or "unix_ms"), decided by the first in-range number.
        self.unit: str | None = None
        #: Values parsed per format (unix, unix_ms, iso, or the given pattern).
        self.counts: Counter[str] = Counter()
        #: Times read with a fraction of a second (floored to the second: the dataset's unit).
        self.floored = 0
        #: UTC offsets (seconds) the times carried (ISO-8601 with an offset, a %z pattern, a zoned Parquet timestamp).
        self.offsets: Counter[int] = Counter()

    @property
    def detected(self) -> str | None:
        if self.fmt != "auto":
            return self.fmt
        return next(iter(self.counts)) if len(self.counts) == 1 else None

    def expected(self) -> str:
        """What a good time looks like, for a reject reason: the formats this file has used so far."""
        if self.fmt != "auto":
            return _EXPECTED.get(self.fmt, f"a time matching {self.fmt!r}")
        if not self.counts:
            return "unix seconds, unix milliseconds or ISO-8601"
        return " or ".join(_EXPECTED[k] for k in sorted(self.counts, key=("unix", "unix_ms", "iso").index))

    def describe(self) -> str:
        """How the times were read, e.g. ``unix 1,200 rows, iso 30 rows``, for the validation notes."""
        return ", ".join(f"{k} {n:,} row{'s' if n != 1 else ''}" for k, n in self.counts.items())

    def parse(self, value: Any) -> tuple[int | None, str | None]:
        """Return ``(ts, None)`` or ``(None, reject_reason)``."""
        if isinstance(value, datetime):  # Parquet timestamp columns (pandas.Timestamp is a datetime)
            ts = _datetime_to_ts(value)
            reason = ts_range_reason(ts, value.isoformat())
            if reason:
                return None, reason
            self.floored += value.microsecond != 0 or bool(getattr(value, "nanosecond", 0))
            if value.utcoffset() is not None:
                self.offsets[int(value.utcoffset().total_seconds())] += 1  # type: ignore[union-attr]
            return ts, None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None, f"bad time: missing; expected {self.expected()}"
        mode = self.fmt if self.fmt != "auto" else self._mode_of(value)
        if mode is None:
            # A number in neither range: no unit can be decided from it.
            return None, f"time out of range: {value!s} is neither unix seconds nor milliseconds in 1990..2100"
        try:
            if mode == "unix":
                seconds = float(value)
                ts = math.floor(seconds)
                fraction = seconds != ts
            elif mode == "unix_ms":
                seconds = float(value) / 1000.0
                ts = math.floor(seconds)
                fraction = seconds != ts
            else:
                when = datetime.fromisoformat(str(value).strip()) if mode == "iso" else datetime.strptime(str(value).strip(), mode)
                ts, fraction = _datetime_to_ts(when), when.microsecond != 0
                offset = when.utcoffset()
        except (ValueError, OverflowError, TypeError):
            return None, f"bad time: {json_shown(value) or repr(value)}; expected {self.expected()}{self._layout_hint(value)}"
        reason = ts_range_reason(ts, value)
        if reason:
            if self.fmt == "auto" and mode == "unix" and TS_MIN <= ts / 1000 < TS_MAX:
                # the file's first number set its numeric times to seconds: this one reads as milliseconds
                reason += (" (milliseconds? this file's numeric times are unix seconds, set by its first number; one file "
                           "keeps one unit: convert this time, or read a file of milliseconds with --time-format unix_ms)")
            elif mode == "unix" and TS_MIN <= ts / 1000 < TS_MAX:
                reason += " (milliseconds? use --time-format unix_ms)"
            elif self.fmt == "auto" and mode == "unix_ms" and TS_MIN <= ts * 1000 < TS_MAX:
                reason += (" (seconds? this file's numeric times are unix milliseconds, set by its first number; one file "
                           "keeps one unit: convert this time, or read a file of seconds with --time-format unix)")
            elif mode == "unix_ms" and TS_MIN <= ts * 1000 < TS_MAX:
                reason += " (seconds? use --time-format unix)"
            return None, reason
        self.counts[mode] += 1
        self.floored += fraction
        if mode not in ("unix", "unix_ms") and offset is not None:
            self.offsets[int(offset.total_seconds())] += 1
        return ts, None

    def _layout_hint(self, value: Any) -> str:
        """auto: for a bad value that looks like a date in another layout ('25/11/2017 08:00'), how to read it."""
        text = str(value)
        if self.fmt != "auto" or not re.search(r"\d", text) or not re.search(r"\d[-/.: ]\d", text):
            return ""
        return (" (auto reads numbers as unix time and text as ISO-8601; a time in another layout needs "
                "--time-format PATTERN, e.g. '%d/%m/%Y %H:%M')")

    def _mode_of(self, value: Any) -> str | None:
        """auto: the format of one value (None: a number that fits no unit while none is decided)."""
        if isinstance(value, bool):
            return "iso"  # not a time at all; fails as ISO with the usual reason
        try:
            number = float(value)
        except OverflowError:  # a JSON integer too big for a float: a number, out of every range
            return self.unit
        except (TypeError, ValueError):
            return "iso"  # text that is not a number: ISO-8601 or nothing
        if not math.isfinite(number):
            return "iso"  # "nan", "inf": rejected as not a time
        if self.unit is None:
            if TS_MIN <= number < TS_MAX:
                self.unit = "unix"
            elif TS_MIN * 1000 <= number < TS_MAX * 1000:
                self.unit = "unix_ms"
        return self.unit


def _datetime_to_ts(value: datetime) -> int:
    if value.tzinfo is None:
        return calendar.timegm(value.timetuple())
    return math.floor(value.timestamp())


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def civil_to_ts(year: int, month: int, day: int, hour: int, minute: int, second: int) -> int:
    """UTC unix seconds of a calendar time; raises ValueError for an impossible date or time."""
    if not (0 <= hour < 24 and 0 <= minute < 60 and 0 <= second < 60):
        raise ValueError("time of day out of range")
    days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    return days * 86400 + hour * 3600 + minute * 60 + second


def hour_weekday(ts: np.ndarray, offset_seconds: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day (0-23) and weekday (0 = Monday) of UTC unix seconds shifted by ``offset_seconds``."""
    local = np.asarray(ts, dtype=np.int64) + int(offset_seconds)
    hour = (local // 3600) % 24
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
    return hour.astype(np.int8), weekday.astype(np.int8)
