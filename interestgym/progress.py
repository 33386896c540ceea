"""Progress of long work: a tqdm bar on a terminal, plain log lines everywhere else.

tqdm's ``disable=None`` goes silent when stderr is not a terminal, so a job under ``nohup`` or a batch
scheduler showed nothing for minutes of tuning. :func:`progress_bar` keeps the bar on a terminal and,
when output goes to a file or pipe, writes a line such as
``tuning baselines: 1,200/4,780 policy (25%), 41 s, ~2 min left`` every :data:`LOG_EVERY_SECONDS`
(and a closing line for work that lasted that long), so logs show progress without drowning in it. A line
comes every :data:`LOG_EVERY_SECONDS` even while no unit finishes (one batched replay of a tuning grid can take
minutes): a heartbeat thread writes the count so far, and stops when the bar is closed or dropped.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import Any, TextIO

#: Seconds between two log lines when the output is not a terminal.
LOG_EVERY_SECONDS = 15.0
#: Heartbeat checks (three per interval) without a unit done after which the heartbeat stops: 30 minutes at 15 s.
IDLE_BEATS = 360


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _counted(unit: str, n: int) -> str:
    """The unit for a count of ``n``: "1 user", "1,664 texts", "10 policies" (words only; "B", "it" stay)."""
    if n == 1 or len(unit) <= 2 or not unit.replace(" ", "").isalpha() or unit.endswith("s"):
        return unit
    if unit.endswith("y") and unit[-2:-1] not in tuple("aeiou"):
        return unit[:-1] + "ies"
    return unit + ("es" if unit.endswith(("ch", "sh", "x")) else "s")


class LogProgress:
    """tqdm's small API (update, set_postfix_str, set_description, close, total) as periodic log lines."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it", *, stream: TextIO | None = None,
                 every: float | None = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = 0
        self.postfix = ""
        self._stream = stream
        self._every = LOG_EVERY_SECONDS if every is None else every
        self._start = time.monotonic()
        self._last = self._start
        self._logged = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if 0 < self._every < float("inf"):
            _heartbeat(weakref.ref(self), self._stop, self._every)

    def _line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self._start
        count = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "")
        parts = [f"{self.desc}: {count} {_counted(self.unit, self.total or self.n)}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        parts.append(_duration(elapsed))
        if not final and self.total and 0 < self.n < self.total:
            parts.append(f"~{_duration(elapsed * (self.total - self.n) / self.n)} left")
        if final:  # closed short of its total: early stopping, an error or an interrupt, not "done"
            parts.append("done" if not self.total or self.n >= self.total else "stopped")
        text = ", ".join(parts)
        return text + (f" [{self.postfix}]" if self.postfix and not final else "")

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()
        self._logged = True

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        self._beat(self._every)

    def _beat(self, every: float) -> None:
        """Write the current line if ``every`` seconds passed since the last one (from ``update`` or the heartbeat)."""
        with self._lock:
            now = time.monotonic()
            if now - self._last >= every and not self._stop.is_set():
                self._last = now
                self._write(self._line())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self._stop.set()  # the heartbeat ends
        with self._lock:
            # a closing line only for work that was long enough to be logged at all
            if self._logged or time.monotonic() - self._start >= self._every:
                self._write(self._line(final=True))
                self._logged = False
            self._every = float("inf")

    def __del__(self) -> None:
        self._stop.set()

    def __enter__(self) -> LogProgress:  # noqa: PYI034  (typing.Self is 3.11+; the package supports 3.10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent(LogProgress):
    def _write(self, text: str) -> None:
        pass


def _heartbeat(bar: weakref.ref[LogProgress], stop: threading.Event, every: float) -> None:
    """A daemon thread: every ``every`` seconds, the bar's line if nothing wrote one meanwhile; it ends when the bar is
    closed or garbage-collected (it holds only a weak reference)."""

    def run() -> None:
        idle, seen = 0, -1
        while not stop.wait(every / 3):
            live = bar()
            if live is None:
                return
            idle = idle + 1 if live.n == seen else 0
            seen = live.n
            if idle > IDLE_BEATS:  # no unit done for that long: a bar left open (an error kept its frame), not work
                return
            live._beat(every)
            del live

    threading.Thread(target=run, name="interestgym-progress", daemon=True).start()


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it", *, enabled: bool | None = None,
                 leave: bool = False, stream: TextIO | None = None, unit_scale: bool = False) -> Any:
    """A progress reporter with tqdm's API.

    :param enabled: True: a tqdm bar; False: nothing; None (the default): a tqdm bar when stderr is a
        terminal, otherwise :class:`LogProgress` lines.
    :param unit_scale: the tqdm bar's k / M / G prefixes (bytes read); log lines print the count.
    """
    if enabled is False:
        return _Silent(total, desc, unit)
    out = stream or sys.stderr
    if enabled or (hasattr(out, "isatty") and out.isatty()):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=out, unit_scale=unit_scale)
    return LogProgress(total, desc, unit, stream=stream)
