"""Where the service keeps user states, applied event ids, the active policy and added items.

One small interface (:class:`Store`), three implementations chosen by URL (:func:`open_store`):

=====================================  ==========================================================
``memory://``                          a dict in the process (tests; lost on exit)
``sqlite:///relative.db``,             one SQLite file in WAL mode (SQLAlchemy's URL convention:
``sqlite:////absolute/path.db``        three slashes + a relative path, four for an absolute one);
                                       ``?synchronous=normal`` trades power-loss durability for speed
``redis://host:port/db``               a Redis server; ``?prefix=ig:`` namespaces the keys
=====================================  ==========================================================

**The one write path** is :meth:`Store.transact`: it reads the users' states, which of the batch's
event ids were already applied, and the active-policy record; calls ``compute`` with that snapshot;
and writes the new states *together with* the newly applied event ids in one atomic step. So a
retried event is applied once, and an event is acknowledged only after the step that applied it is
durable: a killed server loses no acknowledged event and applies none twice. With each id goes a digest
of the event's content, so that an id reused for another event is told from a retry (the service
refuses it) rather than dropped as a duplicate ("" for ids stored before digests: a retry).

* SQLite: ``BEGIN IMMEDIATE`` (the database's write lock, taken before reading: every writer in
  every process is serialised, hence every user too), one transaction per batch, ``COMMIT`` before
  the reply. Writers queue for it on a thread lock and, across processes, on an advisory lock of
  ``PATH.lock`` beside the database (POSIX), rather than in SQLite's polling busy handler. Tables ``user_states``, ``applied_events`` (user_id, event_id), ``event_digests`` (user_id, event_id,
  digest), ``event_times`` (user_id, event_id, t), ``meta``, ``items``. The digests have a table of their own so that a worker of the previous release, which
  writes ``applied_events`` alone, keeps working on a file a newer one opened (its ids have no digest: retries).
* Redis: optimistic ``WATCH`` of the batch's user hashes and the meta hash, reads, ``compute``, then
  ``MULTI`` / ``EXEC`` of every write; a concurrent write to any watched key aborts the ``EXEC`` and
  the whole step is retried with fresh reads (``compute`` may therefore run more than once and must
  not have side effects). Keys: ``{prefix}user:{id}`` (hash: ``state`` -> bytes, ``ev:{event id}``
  -> the digest; 1 in keys written before digests), ``{prefix}times:{id}`` (sorted set: event id -> its event's time),
  ``{prefix}meta`` (hash), ``{prefix}items`` (hash: item id -> bytes). Durability is the
  server's (``appendonly yes`` + ``appendfsync always`` for the SQLite guarantee).
* memory: one lock.

Everything stored is bytes in :mod:`interestgym.runtime.codec`'s format or JSON text; nothing is
pickled. Applied event ids are kept as long as their user (``DELETE /v1/users/{id}`` forgets both), or, when a write
says so (:attr:`UserWrite.forget_before`: the service's ``--event-id-retention``), until the user's own clock has moved
past them: each id is stored with its event's time, and the ids of a user's events older than ``forget_before`` are
deleted in the same atomic step that writes the user (ids stored without a time, by an earlier release, are kept).
A user without a state has no ids: the times and ``forgotten_before`` an earlier release's ``DELETE`` left behind (it
knows neither) are dropped when the user is next written, so they neither refuse the user's new outcomes nor outlive it.
The largest ``forget_before`` a user's writes used is kept with the user (:attr:`UserRecord.forgotten_before`): which
ids may be gone does not depend on the retention of the worker reading it (workers, or restarts, with another one).

* SQLite: the times are in a table of their own, ``event_times`` (user_id, event_id, t), for the same reason as the
  digests (an earlier release's worker keeps working on the file); ``event_forgotten_before`` (user_id, t) too.
* Redis: a sorted set per user, ``{prefix}times:{id}`` (event id -> time), written and pruned in the user's
  ``MULTI`` / ``EXEC`` and watched with the user's hash; ``forgotten_before`` is a field of the user's hash.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from interestgym.errors import InterestGymError

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's busy handler alone queues the processes
    fcntl = None  # type: ignore[assignment]

#: meta keys: the state contract the stored states were written under, and the active policy.
META_KEYS = ("contract", "policy")
SQLITE_SCHEMA_VERSION = "1"


class StoreError(InterestGymError):
    """A store URL is malformed or a store is not what the service expects."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached or did not answer (the request may be retried)."""


@dataclass(frozen=True)
class UserRecord:
    """One user as a transaction reads it: the state bytes (None: a new user) and which of the
    batch's event ids the store has already applied for this user, each with its event's digest ("" when
    stored before digests)."""

    state: bytes | None
    applied: Mapping[str, str]
    #: the largest ``forget_before`` a write of this user has used: ids of events before it may be forgotten (None: none
    #: was), whatever retention the worker that forgot them ran with
    forgotten_before: int | None = None


@dataclass(frozen=True)
class Snapshot:
    users: dict[str, UserRecord]
    #: the store's active-policy record (JSON text), None before any policy was installed
    policy: str | None
    #: bumped by every :meth:`Store.put_items`: a worker whose items are older re-reads them
    items_version: int = 0


@dataclass(frozen=True)
class UserWrite:
    state: bytes
    #: the event ids newly applied, each with its event's digest (in the order they were applied)
    applied: Mapping[str, str]
    #: the time of each newly applied id's event (unix seconds; an id without one is kept until its user is deleted)
    times: Mapping[str, int] = field(default_factory=dict)
    #: forget the user's applied ids whose time is before this (None: keep them all)
    forget_before: int | None = None


Compute = Callable[[Snapshot], Mapping[str, UserWrite]]


class Store(ABC):
    """The interface every store implements (see the module docstring)."""

    kind: str = ""
    #: How long a request may wait for the store before it gets a 503 (SQLite's busy timeout, Redis's socket timeout;
    #: None: no bound). The service also bounds its wait behind the same user's requests by it.
    wait_timeout_s: float | None = None

    def __init__(self) -> None:
        #: called on every optimistic-concurrency conflict (Redis), for the metrics
        self.on_conflict: Callable[[], None] = lambda: None

    @abstractmethod
    def transact(self, event_ids: Mapping[str, Sequence[str]], compute: Compute) -> int:
        """Atomically: read the users of ``event_ids`` (user -> the batch's event ids), call ``compute``
        on the snapshot and write what it returns, forgetting the ids each write's ``forget_before`` lets go.
        An exception from ``compute`` writes nothing. Returns how many applied ids were forgotten."""

    @abstractmethod
    def read(self, user_ids: Sequence[str]) -> Snapshot:
        """The users' states and the policy record (no event ids), as one consistent read."""

    @abstractmethod
    def user_info(self, user_id: str) -> tuple[bytes | None, int]:
        """(state bytes or None, number of applied event ids kept for the user)."""

    @abstractmethod
    def delete_user(self, user_id: str) -> bool:
        """Forget the user's state and applied event ids; False if there was nothing to forget."""

    @abstractmethod
    def update_meta(self, fn: Callable[[dict[str, str | None]], Mapping[str, str]]) -> dict[str, str | None]:
        """Atomically read the meta record (``contract``, ``policy``), call ``fn`` and write the keys it
        returns; returns the record as written. ``fn`` may raise to write nothing (and may be re-run)."""

    @abstractmethod
    def items(self) -> tuple[int, dict[str, bytes]]:
        """(items version, items added through the API: item id -> record bytes), one consistent read."""

    @abstractmethod
    def put_items(self, records: Mapping[str, bytes]) -> None:
        """Add or replace item records and bump the items version, atomically."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` if the store does not answer."""

    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def describe(self) -> str:
        """The store's URL, without a password."""


# ------------------------------------------------------------------------------------ memory
class MemoryStore(Store):
    """Everything in dicts behind one lock (for tests and trials)."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()
        self._states: dict[str, bytes] = {}
        self._applied: dict[str, dict[str, str]] = {}
        self._times: dict[str, list[tuple[int, str]]] = {}  # per user: a heap of (its event's time, event id)
        self._forgotten_before: dict[str, int] = {}
        self._meta: dict[str, str] = {}
        self._items: dict[str, bytes] = {}
        self._items_version = 0

    def transact(self, event_ids: Mapping[str, Sequence[str]], compute: Compute) -> int:
        with self._lock:
            users = {u: UserRecord(self._states.get(u), {e: self._applied[u][e] for e in ids if e in self._applied.get(u, {})},
                                   self._forgotten_before.get(u)) for u, ids in event_ids.items()}
            writes = compute(Snapshot(users, self._meta.get("policy"), self._items_version))
            forgotten = 0
            for u, w in writes.items():
                self._states[u] = w.state
                applied, times = self._applied.setdefault(u, {}), self._times.setdefault(u, [])
                applied.update(w.applied)
                for e, t in w.times.items():
                    heapq.heappush(times, (t, e))
                if w.forget_before is not None:
                    self._forgotten_before[u] = max(self._forgotten_before.get(u, w.forget_before), w.forget_before)
                while w.forget_before is not None and times and times[0][0] < w.forget_before:
                    del applied[heapq.heappop(times)[1]]
                    forgotten += 1
            return forgotten

    def read(self, user_ids: Sequence[str]) -> Snapshot:
        with self._lock:
            return Snapshot({u: UserRecord(self._states.get(u), {}) for u in user_ids}, self._meta.get("policy"),
                            self._items_version)

    def user_info(self, user_id: str) -> tuple[bytes | None, int]:
        with self._lock:
            return self._states.get(user_id), len(self._applied.get(user_id, ()))

    def delete_user(self, user_id: str) -> bool:
        with self._lock:
            found = user_id in self._states or user_id in self._applied
            self._states.pop(user_id, None)
            self._applied.pop(user_id, None)
            self._times.pop(user_id, None)
            self._forgotten_before.pop(user_id, None)
            return found

    def update_meta(self, fn: Callable[[dict[str, str | None]], Mapping[str, str]]) -> dict[str, str | None]:
        with self._lock:
            current: dict[str, str | None] = {k: self._meta.get(k) for k in META_KEYS}
            self._meta.update(fn(dict(current)))
            return {k: self._meta.get(k) for k in META_KEYS}

    def items(self) -> tuple[int, dict[str, bytes]]:
        with self._lock:
            return self._items_version, dict(self._items)

    def put_items(self, records: Mapping[str, bytes]) -> None:
        with self._lock:
            self._items.update(records)
            self._items_version += 1

    def ping(self) -> None:
        return None

    def describe(self) -> str:
        return "memory://"


# ------------------------------------------------------------------------------------ sqlite
_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS user_states (user_id TEXT PRIMARY KEY, state BLOB NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS applied_events (user_id TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (user_id, event_id)) WITHOUT ROWID",
    ("CREATE TABLE IF NOT EXISTS event_digests (user_id TEXT NOT NULL, event_id TEXT NOT NULL, digest TEXT NOT NULL, "
     "PRIMARY KEY (user_id, event_id)) WITHOUT ROWID"),
    ("CREATE TABLE IF NOT EXISTS event_times (user_id TEXT NOT NULL, event_id TEXT NOT NULL, t INTEGER NOT NULL, "
     "PRIMARY KEY (user_id, event_id)) WITHOUT ROWID"),
    "CREATE INDEX IF NOT EXISTS event_times_by_time ON event_times (user_id, t)",
    "CREATE TABLE IF NOT EXISTS event_forgotten_before (user_id TEXT PRIMARY KEY, t INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS items (item_id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID",
)
_IN_CHUNK = 500  # bound parameters per IN (...) query


class SqliteStore(Store):
    """One SQLite file, WAL mode, one connection per thread, ``BEGIN IMMEDIATE`` per write."""

    kind = "sqlite"

    def __init__(self, path: str | Path, *, synchronous: str = "full", busy_timeout_s: float = 30.0) -> None:
        super().__init__()
        self.path = Path(path).resolve()
        if synchronous.lower() not in ("full", "normal"):
            raise StoreError(f"sqlite store {self.path}: synchronous={synchronous!r}; expected full or normal")
        self._synchronous = synchronous.upper()
        self._timeout = self.wait_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened: set once it is open
        if not self.path.parent.is_dir():
            raise StoreError(f"sqlite store {self.path}: folder {self.path.parent} does not exist")
        try:  # a new store is readable by its owner only: it holds users' profiles (SQLite gives -wal / -shm the same mode)
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass  # an existing store keeps the mode it has
        except OSError as exc:
            raise StoreError(f"sqlite store {self.path}: cannot be created ({exc})") from None
        if fcntl is not None:  # the processes' write queue (see _write); without it (not POSIX, or a read-only folder) none
            try:
                self._lock_fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            except OSError:
                self._lock_fd = None
        conn = self._conn()
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"sqlite store {self.path}: journal_mode is {mode!r}; expected wal (a network file system?)")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SQLITE_SCHEMA:
                conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta VALUES ('schema', ?)", (SQLITE_SCHEMA_VERSION,))
            elif row[0] != SQLITE_SCHEMA_VERSION:
                raise StoreError(f"sqlite store {self.path}: schema version {row[0]!r}; this interestgym reads {SQLITE_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: cannot be opened as a database ({exc})") from None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        self._file = self._identity()

    def _identity(self) -> tuple[int, int] | None:
        """(device, inode) of the file at the store's path; None when there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self, op: str) -> None:
        """The path still names the file this store opened. SQLite's connections keep writing to a file deleted under
        them (and a restart then opens a new, empty one): every write would be acknowledged and lost."""
        if self._file is None:  # still opening
            return
        now = self._identity()
        if now != self._file:
            what = "was removed" if now is None else "was replaced by another file"
            raise StoreUnavailableError(f"sqlite store {self.path}: {op} refused: the database file {what} while the "
                                        "service had it open; writes now would be lost at the next restart. Restart the "
                                        "service: it opens the file at the path (put a backup there first if the file was "
                                        "removed by mistake)")

    def _conn(self, op: str = "open") -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:  # mode=rw: a thread's first connection never creates the file (one removed under the service stays so)
                conn = sqlite3.connect(f"{self.path.as_uri()}?mode=rw", uri=True, timeout=self._timeout, isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.OperationalError as exc:
                self._check_file(op)  # a file removed or replaced says so
                raise StoreUnavailableError(f"sqlite store {self.path}: {op} failed: cannot open the database ({exc})") from None
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _write(self, body: Callable[[sqlite3.Connection], Any], op: str) -> Any:
        conn = self._conn(op)
        # SQLite lets one writer in at a time; this process's threads queue on a lock of their own, and processes on an
        # advisory lock of the file beside the database instead of in SQLite's busy handler, which polls with sleeps of
        # up to 100 ms. SQLite's own lock still decides: a writer without these locks (an earlier release) is serialised
        # by it as before. The whole wait, in the queues and in SQLite's lock, is bounded by ONE deadline per write (the
        # busy timeout): a write queued behind others that wait on a stuck holder fails when its own time is up, not
        # after theirs in turn.
        deadline = time.monotonic() + self._timeout
        if not self._write_lock.acquire(timeout=self._timeout):
            raise self._locked(op, "this process's other writes held it")
        try:
            if self._lock_fd is None:
                return self._write_locked(conn, body, op, deadline)
            self._lock_file(op, deadline)
            try:
                return self._write_locked(conn, body, op, deadline)
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        finally:
            self._write_lock.release()

    def _locked(self, op: str, why: str) -> StoreUnavailableError:
        return StoreUnavailableError(f"sqlite store {self.path}: {op} failed: no write lock within the busy timeout "
                                     f"({self._timeout:g} s; {why})")

    def _lock_file(self, op: str, deadline: float) -> None:
        """Take ``PATH.lock`` by ``deadline``. flock has no timeout of its own: a non-blocking try, then tries 0.5 to
        2 ms apart (one thread a process tries: the others wait on the process's lock)."""
        pause = 0.0005
        while True:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._locked(op, f"another process held {self.path.name}.lock") from None
                time.sleep(min(pause, left))
                pause = min(2 * pause, 0.002)

    def _write_locked(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], Any], op: str,
                      deadline: float) -> Any:
        self._check_file(op)
        left = deadline - time.monotonic()
        if left <= 0:
            raise self._locked(op, "the queue before it took it all")
        try:
            conn.execute(f"PRAGMA busy_timeout={max(1, int(left * 1000))}")  # SQLite's own wait: what is left of it
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn)
                    conn.execute("COMMIT")
                    return result
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            finally:
                conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")  # reads wait the whole timeout
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"sqlite store {self.path}: {op} failed ({exc})") from None

    def _read(self, body: Callable[[sqlite3.Connection], Any], op: str) -> Any:
        conn = self._conn(op)
        try:
            conn.execute("BEGIN")  # one snapshot for every SELECT of the read
            try:
                return body(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(f"sqlite store {self.path}: {op} failed ({exc})") from None

    @staticmethod
    def _versions(conn: sqlite3.Connection) -> tuple[str | None, int]:
        """(policy record, items version)."""
        rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('policy', 'items_version')").fetchall())
        return rows.get("policy"), int(rows.get("items_version", 0))

    @staticmethod
    def _state(conn: sqlite3.Connection, user_id: str) -> bytes | None:
        row = conn.execute("SELECT state FROM user_states WHERE user_id = ?", (user_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def transact(self, event_ids: Mapping[str, Sequence[str]], compute: Compute) -> int:
        def body(conn: sqlite3.Connection) -> int:
            users = {}
            for u, ids in event_ids.items():
                ids = list(ids)
                applied: dict[str, str] = {}
                for i in range(0, len(ids), _IN_CHUNK):
                    chunk = ids[i:i + _IN_CHUNK]
                    rows = conn.execute(
                        "SELECT a.event_id, COALESCE(d.digest, '') FROM applied_events a LEFT JOIN event_digests d "
                        "ON d.user_id = a.user_id AND d.event_id = a.event_id "
                        f"WHERE a.user_id = ? AND a.event_id IN ({','.join('?' * len(chunk))})", (u, *chunk)).fetchall()
                    applied.update((r[0], r[1]) for r in rows)
                state, row = self._state(conn, u), None
                if state is None:  # an earlier release's DELETE leaves the tables it does not know: their rows go now
                    conn.execute("DELETE FROM event_times WHERE user_id = ?", (u,))
                    conn.execute("DELETE FROM event_forgotten_before WHERE user_id = ?", (u,))
                else:
                    row = conn.execute("SELECT t FROM event_forgotten_before WHERE user_id = ?", (u,)).fetchone()
                users[u] = UserRecord(state, applied, None if row is None else row[0])
            writes = compute(Snapshot(users, *self._versions(conn)))
            now = time.time()
            conn.executemany(
                "INSERT INTO user_states VALUES (?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at", [(u, w.state, now) for u, w in writes.items()])
            conn.executemany("INSERT INTO applied_events (user_id, event_id) VALUES (?, ?)",
                             [(u, e) for u, w in writes.items() for e in w.applied])
            conn.executemany("INSERT OR REPLACE INTO event_digests (user_id, event_id, digest) VALUES (?, ?, ?)",
                             [(u, e, d) for u, w in writes.items() for e, d in w.applied.items()])
            conn.executemany("INSERT OR REPLACE INTO event_times (user_id, event_id, t) VALUES (?, ?, ?)",
                             [(u, e, t) for u, w in writes.items() for e, t in w.times.items()])
            conn.executemany("INSERT INTO event_forgotten_before VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET t = MAX(t, excluded.t)",
                             [(u, w.forget_before) for u, w in writes.items() if w.forget_before is not None])
            old = [(u, r[0]) for u, w in writes.items() if w.forget_before is not None
                   for r in conn.execute("SELECT event_id FROM event_times WHERE user_id = ? AND t < ?", (u, w.forget_before))]
            for table in ("applied_events", "event_digests", "event_times"):
                conn.executemany(f"DELETE FROM {table} WHERE user_id = ? AND event_id = ?", old)
            return len(old)

        return self._write(body, "transaction")

    def read(self, user_ids: Sequence[str]) -> Snapshot:
        return self._read(lambda c: Snapshot({u: UserRecord(self._state(c, u), {}) for u in user_ids}, *self._versions(c)), "read")

    def user_info(self, user_id: str) -> tuple[bytes | None, int]:
        def body(conn: sqlite3.Connection) -> tuple[bytes | None, int]:
            n = conn.execute("SELECT COUNT(*) FROM applied_events WHERE user_id = ?", (user_id,)).fetchone()[0]
            return self._state(conn, user_id), int(n)

        return self._read(body, "read")

    def delete_user(self, user_id: str) -> bool:
        def body(conn: sqlite3.Connection) -> bool:
            a = conn.execute("DELETE FROM user_states WHERE user_id = ?", (user_id,)).rowcount
            b = conn.execute("DELETE FROM applied_events WHERE user_id = ?", (user_id,)).rowcount
            conn.execute("DELETE FROM event_digests WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM event_times WHERE user_id = ?", (user_id,))
            conn.execute("DELETE FROM event_forgotten_before WHERE user_id = ?", (user_id,))
            return bool(a or b)

        return self._write(body, "delete")

    def update_meta(self, fn: Callable[[dict[str, str | None]], Mapping[str, str]]) -> dict[str, str | None]:
        def body(conn: sqlite3.Connection) -> dict[str, str | None]:
            rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            current: dict[str, str | None] = {k: rows.get(k) for k in META_KEYS}
            new = dict(fn(dict(current)))
            conn.executemany("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", list(new.items()))
            return {**current, **new}

        return self._write(body, "meta update")

    def items(self) -> tuple[int, dict[str, bytes]]:
        return self._read(lambda c: (self._versions(c)[1], {r[0]: bytes(r[1]) for r in c.execute("SELECT item_id, record FROM items")}),
                          "read items")

    def put_items(self, records: Mapping[str, bytes]) -> None:
        def body(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO items VALUES (?, ?) ON CONFLICT (item_id) DO UPDATE SET record = excluded.record",
                             list(records.items()))
            conn.execute("INSERT INTO meta VALUES ('items_version', '1') ON CONFLICT (key) DO UPDATE SET "
                         "value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")

        self._write(body, "put items")

    def ping(self) -> None:
        # a write, not only a read: a read-only, full or write-locked database answers SELECT 1 and refuses every event
        self._write(lambda c: c.execute("INSERT INTO meta VALUES ('healthz', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                                        (f"{time.time():.3f}",)), "ping")

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        with self._all_lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    def describe(self) -> str:
        return f"sqlite:///{self.path}"  # an absolute path: four slashes


# ------------------------------------------------------------------------------------ redis
#: Forgets a user's applied ids older than ARGV[1] (KEYS[1]: the user's hash, KEYS[2]: its sorted set of times); returns
#: how many. Queued inside the transaction's MULTI, so the prune costs no round trip of its own.
_FORGET_SCRIPT = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for _, id in ipairs(ids) do redis.call('HDEL', KEYS[1], 'ev:' .. id) end
if #ids > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1]) end
return #ids
"""


class RedisStore(Store):
    """A Redis server: per-user hashes updated with WATCH / MULTI / EXEC (see the module docstring)."""

    kind = "redis"

    def __init__(self, url: str, *, prefix: str = "ig:", max_retries: int = 100, timeout_s: float = 10.0) -> None:
        super().__init__()
        try:
            import redis
        except ImportError:
            raise StoreError("a redis:// store needs the redis package: pip install 'interestgym[serve]'") from None
        self._redis_mod = redis
        self.url = url
        self.prefix = prefix
        self.max_retries = max_retries
        self.wait_timeout_s = timeout_s
        self._r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                       health_check_interval=30)
        self._meta_key = f"{prefix}meta"
        self._items_key = f"{prefix}items"

    def _user_key(self, user_id: str) -> str:
        return f"{self.prefix}user:{user_id}"

    def _times_key(self, user_id: str) -> str:
        return f"{self.prefix}times:{user_id}"

    def _guard(self, op: str, body: Callable[[], Any]) -> Any:
        try:
            return body()
        except (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError) as exc:
            raise StoreUnavailableError(f"redis store {self.describe()}: {op} failed ({exc})") from None

    def _optimistic(self, keys: list[str], step: Callable[[Any], Callable[[Any], None]], op: str) -> list[Any]:
        """WATCH keys; ``step(pipe)`` reads (immediate mode) and returns the writer, queued after MULTI. Returns the
        replies of the queued commands."""
        watch_error = self._redis_mod.WatchError

        def run() -> list[Any]:
            with self._r.pipeline(transaction=True) as pipe:
                for _ in range(self.max_retries):
                    try:
                        pipe.watch(*keys)
                        writer = step(pipe)
                        pipe.multi()
                        writer(pipe)
                        return list(pipe.execute())
                    except watch_error:
                        self.on_conflict()
                raise StoreUnavailableError(f"redis store {self.describe()}: {op} lost {self.max_retries} races in a row "
                                            "(the same users are updated concurrently); retry")

        return self._guard(op, run)

    def transact(self, event_ids: Mapping[str, Sequence[str]], compute: Compute) -> int:
        users = list(event_ids)
        keys = [self._user_key(u) for u in users]

        def step(pipe: Any) -> Callable[[Any], None]:
            policy, items_version = pipe.hmget(self._meta_key, ["policy", "items_version"])
            records = {}
            for u, key in zip(users, keys):
                ids = list(event_ids[u])
                values = pipe.hmget(key, ["state", "forgotten_before", *(f"ev:{e}" for e in ids)])
                records[u] = UserRecord(values[0], {e: ("" if v == b"1" else v.decode("ascii"))  # 1: stored before digests
                                                    for e, v in zip(ids, values[2:]) if v is not None},
                                        None if values[1] is None else int(values[1]))
            writes = compute(Snapshot(records, None if policy is None else policy.decode("utf-8"), int(items_version or 0)))

            def writer(p: Any) -> None:
                for u, w in writes.items():
                    before = records[u].forgotten_before
                    if w.forget_before is not None:
                        before = w.forget_before if before is None else max(before, w.forget_before)
                    p.hset(self._user_key(u), mapping={"state": w.state, **({} if before is None else {"forgotten_before": before}),
                                                       **{f"ev:{e}": d.encode("ascii") for e, d in w.applied.items()}})
                    if records[u].state is None:  # an earlier release's DELETE left the user's times: they go now
                        p.delete(self._times_key(u))
                    if w.times:
                        p.zadd(self._times_key(u), dict(w.times))
                # the prunes last, inside the MULTI (no round trip of their own), after the ids just added (the other
                # stores' order): their replies, the counts forgotten, end the EXEC's replies
                pruning = [(u, w.forget_before) for u, w in writes.items() if w.forget_before is not None]
                for u, before in pruning:
                    p.eval(_FORGET_SCRIPT, 2, self._user_key(u), self._times_key(u), before)
                n_pruned[0] = len(pruning)

            return writer

        n_pruned = [0]
        replies = self._optimistic([self._meta_key, *keys, *(self._times_key(u) for u in users)], step, "transaction")
        return sum(int(r) for r in replies[len(replies) - n_pruned[0]:]) if n_pruned[0] else 0

    def read(self, user_ids: Sequence[str]) -> Snapshot:
        def body() -> Snapshot:
            pipe = self._r.pipeline(transaction=True)  # MULTI / EXEC: one consistent read
            pipe.hmget(self._meta_key, ["policy", "items_version"])
            for u in user_ids:
                pipe.hget(self._user_key(u), "state")
            (policy, items_version), *states = pipe.execute()
            return Snapshot({u: UserRecord(s, {}) for u, s in zip(user_ids, states)},
                            None if policy is None else policy.decode("utf-8"), int(items_version or 0))

        return self._guard("read", body)

    def user_info(self, user_id: str) -> tuple[bytes | None, int]:
        def body() -> tuple[bytes | None, int]:
            pipe = self._r.pipeline(transaction=True)
            pipe.hget(self._user_key(user_id), "state")
            pipe.hlen(self._user_key(user_id))
            pipe.hexists(self._user_key(user_id), "forgotten_before")
            state, n, before = pipe.execute()
            return state, max(int(n) - (state is not None) - bool(before), 0)

        return self._guard("read", body)

    def delete_user(self, user_id: str) -> bool:
        return bool(self._guard("delete", lambda: self._r.delete(self._user_key(user_id), self._times_key(user_id))))

    def update_meta(self, fn: Callable[[dict[str, str | None]], Mapping[str, str]]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}

        def step(pipe: Any) -> Callable[[Any], None]:
            values = pipe.hmget(self._meta_key, list(META_KEYS))
            current: dict[str, str | None] = {k: None if v is None else v.decode("utf-8") for k, v in zip(META_KEYS, values)}
            new = dict(fn(dict(current)))
            out.clear()
            out.update({**current, **new})
            return lambda p: p.hset(self._meta_key, mapping=new) if new else None

        self._optimistic([self._meta_key], step, "meta update")
        return out

    def items(self) -> tuple[int, dict[str, bytes]]:
        def body() -> tuple[int, dict[str, bytes]]:
            pipe = self._r.pipeline(transaction=True)
            pipe.hget(self._meta_key, "items_version")
            pipe.hgetall(self._items_key)
            version, records = pipe.execute()
            return int(version or 0), {k.decode("utf-8"): v for k, v in records.items()}

        return self._guard("read items", body)

    def put_items(self, records: Mapping[str, bytes]) -> None:
        def body() -> None:
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._items_key, mapping=dict(records))
            pipe.hincrby(self._meta_key, "items_version", 1)
            pipe.execute()

        if records:
            self._guard("put items", body)

    def ping(self) -> None:
        # a write, not only PING: a Redis that refuses writes (MISCONF: its disk full, a replica) answers PING. Its own
        # key, not the meta hash, which every transaction WATCHes (a probe there would make them retry).
        def probe() -> None:
            try:
                self._r.set(f"{self.prefix}healthz", f"{time.time():.3f}")
            except self._redis_mod.ResponseError as exc:
                raise StoreUnavailableError(f"redis store {self.describe()}: ping failed, writes are refused ({exc})") from None

        self._guard("ping", probe)

    def close(self) -> None:
        self._r.close()

    def describe(self) -> str:
        parts = urlparse(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urlunparse(parts._replace(netloc=netloc, query=""))


# ------------------------------------------------------------------------------------ URLs
def open_store(url: str) -> Store:
    """``memory://``, ``sqlite:///relative.db`` / ``sqlite:////absolute.db`` (``?synchronous=normal``, ``?busy_timeout=SECONDS``:
    how long a write waits for the store, 30 by default),
    ``redis://[:password@]host:port/db`` (``?prefix=ig:``)."""
    parts = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "memory":
        return MemoryStore()
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path or parts.path == "/":
            raise StoreError(f"store {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
        unknown = set(query) - {"synchronous", "busy_timeout"}
        if unknown:
            raise StoreError(f"store {url!r}: unknown option(s) {', '.join(sorted(unknown))}; sqlite takes "
                             "synchronous=full|normal and busy_timeout=SECONDS")
        timeout = query.get("busy_timeout", "30")
        try:
            busy = float(timeout)
        except ValueError:
            busy = float("nan")
        if not 0 < busy <= 3600:  # NaN fails too
            raise StoreError(f"store {url!r}: busy_timeout={timeout!r}; expected seconds in (0, 3600] (how long a write "
                             "waits for the store's lock before a 503)")
        return SqliteStore(parts.path[1:], synchronous=query.get("synchronous", "full"), busy_timeout_s=busy)
    if parts.scheme in ("redis", "rediss"):
        prefix = query.pop("prefix", "ig:")
        return RedisStore(urlunparse(parts._replace(query=urlencode(query))), prefix=prefix)
    raise StoreError(f"store {url!r}: unknown scheme {parts.scheme!r}; expected memory://, sqlite:///PATH or redis://HOST:PORT/DB")
