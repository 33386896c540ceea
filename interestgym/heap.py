"""glibc's heap for the ``interestgym`` command: keep freed memory instead of faulting it in again at every step.

The command owns its process and sets this at start (:func:`keep_freed_heap`); the library, imported by a script or a
service, never does (the allocator is the importing process's choice): such a process may call
:func:`keep_freed_heap` itself, e.g. before stepping large vector envs. ``--ray`` passes the same settings to its
workers (:func:`worker_environment`).
"""

from __future__ import annotations

import os
import sys

#: MB of freed heap the ``interestgym`` command keeps (glibc ``M_TOP_PAD``); this variable overrides it, 0 leaves
#: glibc's own behaviour. See :func:`keep_freed_heap`.
TOP_PAD_VARIABLE = "INTERESTGYM_MALLOC_TOP_PAD_MB"
DEFAULT_TOP_PAD_MB = 64
#: Arrays below this many bytes come from the heap, not from their own mmap (glibc's ``M_MMAP_THRESHOLD``): 32 MB, the
#: largest its own sliding threshold reaches on a 64-bit machine, fixed from the start.
MMAP_THRESHOLD = 32 << 20
#: glibc's own settings: where the user set one, the command leaves the heap to them.
GLIBC_MALLOC_VARIABLES = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
#: MB this process's heap keeps (0: glibc's own behaviour), as :func:`keep_freed_heap` set it.
_KEPT_MB = 0


def keep_freed_heap(environ: dict[str, str] | None = None) -> int:
    """Have glibc keep up to 64 MB of freed heap instead of giving it back to the kernel; return the MB set (0: none).

    The replay, the evaluator and the runtime's batches allocate and free numpy temporaries of a few MB at every
    step. At glibc's defaults the heap's freed top goes back to the kernel and faults in again at the next step: the
    quick start's ``evaluate`` took 1.7M minor page faults and 15.5 s against 11.2 s with the heap kept
    (``benchmarks/malloc_top_pad.py``). So: ``M_TOP_PAD`` (the heap keeps that much when it shrinks) and
    ``M_MMAP_THRESHOLD`` 32 MB (arrays below it come from the heap: setting the pad alone stops glibc's sliding
    threshold at 128 KB, and ``prepare``'s MB-sized columns then each got a fresh mmap, 6x the faults). Neither changes a number, only where memory comes from. Left alone where
    the user chose (glibc's ``MALLOC_*_`` variables or ``GLIBC_TUNABLES`` set, or ``INTERESTGYM_MALLOC_TOP_PAD_MB``:
    0 = leave glibc as it is) and on a C library without ``mallopt`` (macOS, musl: nothing happens).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in GLIBC_MALLOC_VARIABLES):
        return 0
    raw = env.get(TOP_PAD_VARIABLE, str(DEFAULT_TOP_PAD_MB))
    try:
        mb = int(raw)
    except ValueError:
        mb = -1
    if not 0 <= mb < 2048:  # mallopt takes a C int of bytes
        print(f"warning: {TOP_PAD_VARIABLE}={raw!r}: expected a whole number of MB from 0 to 2047; glibc's heap left "
              "at its defaults", file=sys.stderr)
        return 0
    if mb == 0:
        return 0
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # mallopt returns 1 on success; M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3 (malloc.h)
        if libc.mallopt(-3, MMAP_THRESHOLD) != 1 or libc.mallopt(-2, mb << 20) != 1:
            return 0
    except (OSError, AttributeError):
        return 0
    global _KEPT_MB
    _KEPT_MB = mb
    return mb


def worker_environment() -> dict[str, str]:
    """The variables that give a worker process the heap this process keeps (glibc reads them at start), or {} when
    this process did not set it: what ``--ray`` passes to the Ray workers it starts or joins."""
    if not _KEPT_MB:
        return {}
    return {"MALLOC_TOP_PAD_": str(_KEPT_MB << 20), "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
