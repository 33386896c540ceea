"""A bounded loopback load against a running service, and a server process to kill and restart.

Used by ``benchmarks/serve.py`` and the tests; useful on its own to check a deployment:

* :func:`send_streams` sends each user's events in order, one event per request, from a few client
  threads (a user belongs to one thread, so its events stay in time order). A request that fails
  (connection refused or reset, 5xx) is re-sent with the *same event id* until it is answered:
  ``applied`` or ``duplicate`` both acknowledge it. That is exactly the client a crash-safe
  service needs, and what lets a test show 0 acknowledged events lost and 0 applied twice.
* :class:`ServerProcess` runs ``interestgym serve`` in a subprocess, waits for ``/healthz``, and can
  ``kill -9`` it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LoadResult:
    """What a load saw: per-request latencies (seconds, first attempts that were answered), the
    acknowledged event ids with their status, and how many attempts failed and were retried."""

    latencies: list[float] = field(default_factory=list)
    status: dict[tuple[str, str], str] = field(default_factory=dict)
    failed_attempts: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def acked(self) -> int:
        return len(self.status)

    def count(self, status: str) -> int:
        return sum(1 for s in self.status.values() if s == status)


def send_streams(base_url: str, streams: dict[str, Sequence[dict[str, Any]]], clients: int, *, deadline_s: float = 120.0,
                 on_ack: Callable[[int], None] | None = None, retry_sleep_s: float = 0.05) -> LoadResult:
    """Send every user's events (JSON bodies of ``POST /v1/events`` items, in order), one per request.

    :param streams: user id -> its events in time order.
    :param clients: client threads; users are dealt to them round-robin.
    :param deadline_s: give up (recorded in ``errors``) on events not acknowledged by then.
    :param on_ack: called with the running number of acknowledged events (e.g. to kill the server).
    """
    import httpx

    result = LoadResult()
    lock = threading.Lock()
    users = list(streams)
    start = time.perf_counter()
    deadline = start + deadline_s

    def client(mine: list[str]) -> None:
        with httpx.Client(base_url=base_url, timeout=10.0) as http:
            for user in mine:
                for event in streams[user]:
                    first = True
                    while True:
                        if time.perf_counter() > deadline:
                            with lock:
                                result.errors.append(f"event {event['event_id']!r} of {user!r} not acknowledged before the deadline")
                            return
                        t0 = time.perf_counter()
                        try:
                            response = http.post("/v1/events", json={"events": [event]})
                        except httpx.TransportError:
                            response = None
                        elapsed = time.perf_counter() - t0
                        if response is not None and response.status_code == 200:
                            status = response.json()["results"][0]["status"]
                            with lock:
                                result.status[(user, event["event_id"])] = status
                                if first:
                                    result.latencies.append(elapsed)
                                n = len(result.status)
                            if on_ack is not None:
                                on_ack(n)
                            break
                        if response is not None and response.status_code < 500:
                            with lock:
                                result.errors.append(f"event {event['event_id']!r}: HTTP {response.status_code} {response.text[:200]}")
                            return
                        with lock:
                            result.failed_attempts += 1
                        first = False
                        time.sleep(retry_sleep_s)

    return _run_clients(client, users, clients, result, start)


def _run_clients(client: Any, work: Sequence[Any], clients: int, result: LoadResult, start: float) -> LoadResult:
    """Run ``client`` on ``clients`` threads, each with every ``clients``-th item of ``work``; wait for
    all and record the wall time since ``start``."""
    threads = [threading.Thread(target=client, args=(work[k::clients],), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    return result


def post_many(base_url: str, path: str, bodies: Sequence[dict[str, Any]], clients: int) -> LoadResult:
    """POST each body once from ``clients`` threads (bodies dealt round-robin); latencies of the
    answered ones (2xx), an error line for each other answer."""
    import httpx

    result = LoadResult()
    lock = threading.Lock()
    start = time.perf_counter()

    def client(mine: Sequence[dict[str, Any]]) -> None:
        with httpx.Client(base_url=base_url, timeout=10.0) as http:
            for body in mine:
                t0 = time.perf_counter()
                try:
                    response = http.post(path, json=body)
                    ok, why = response.is_success, f"HTTP {response.status_code} {response.text[:200]}"
                except httpx.TransportError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    if ok:
                        result.latencies.append(elapsed)
                    else:
                        result.errors.append(why)

    return _run_clients(client, bodies, clients, result, start)


class ServerProcess:
    """``interestgym serve EXPORT --store URL --port PORT ...`` in a subprocess (loopback only).

    :param args: extra command-line options (``--items``, ``--workers`` ...).
    :param log: file receiving the server's output (kept for a failed start's message).
    """

    def __init__(self, export: str | Path, store: str, *, port: int | None = None, args: Sequence[str] = (),
                 log: str | Path | None = None, env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "interestgym.cli", "serve", str(export), "--store", store, "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", *args]
        self.log = Path(log) if log else None
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> ServerProcess:
        import httpx

        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - kept open while it runs
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:] if self.log else ""
                raise RuntimeError(f"`{' '.join(self.cmd)}` exited with {self.proc.returncode}: {tail}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill9()
        raise RuntimeError(f"`{' '.join(self.cmd)}` did not answer /healthz within {timeout_s:.0f} s")

    def kill9(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()
