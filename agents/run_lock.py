"""One training process per run folder: an exclusive lock on ``RUN/.lock`` naming its holder."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from interestgym.agents.run_folder import LOCK_FILE

from interestgym.errors import InterestGymError


class RunLock:
    """One training process per run folder: an exclusive ``flock`` on ``RUN/.lock``.

    The file holds the holder's pid, host and start time, for the message a second process gets.
    The OS releases a flock when its process dies, so a lock file left by a killed run does not block
    (the next holder overwrites its contents). Creates ``run_dir``; if it created it and nothing but
    the lock file is there on release (a run that failed before writing anything), removes it again.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None
        self._created = False

    def __enter__(self):
        try:
            self._created = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InterestGymError(f"--run-dir {self.run_dir}: cannot create or write into it ({exc.strerror or exc}: "
                                   f"{exc.filename or self.run_dir}); choose a folder you can write to") from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (one process per run folder is then up to the user)
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise InterestGymError(f"{self.run_dir}: another `interestgym train` is writing this run ({describe_holder(holder)}; "
                                   f"lock {self.path}); wait for it to end, or choose another --run-dir") from None
        except OSError as exc:  # e.g. a file system without locks
            os.close(fd)
            raise InterestGymError(f"{self.path}: cannot lock it ({exc.strerror or exc}); expected a local folder that "
                                   "supports file locks (one training process per run folder)") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # no holder any more
        except OSError:
            pass
        os.close(self._fd)  # closing releases the flock
        self._fd = None
        if self._created and [p.name for p in self.run_dir.iterdir()] == [LOCK_FILE]:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def training_holder(run_dir: str | Path) -> str | None:
    """Who is training ``run_dir`` now (``pid ... on host ..., started ...``), or None when no process holds its lock
    (or the platform has no file locks). Takes the lock for an instant to find out, and never keeps it."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return describe_holder(holder)
    except OSError:
        return None
    finally:
        os.close(fd)  # closing releases a lock taken here
    return None


def describe_holder(text: str) -> str:
    """``pid 123 on host h since 2025-...`` from a lock file's contents."""
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return "holder unknown"
