"""What every benchmark here shares: pinned threads, the machine's load, interleaved timings.

On a shared machine, other jobs slow whatever runs at the same time. A benchmark therefore (1) pins
the thread pools (torch, BLAS, Arrow) so that the compared sides use the same cores, (2) prints the
load average before and after, and (3) times the compared sides alternately, ``repeats`` rounds, and
reports medians and the ratio of medians: load that comes and goes hits both sides alike.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

#: The threadpoolctl limiter :func:`pin_threads` applied (kept: it holds the limits of the pools already loaded).
_LIMITS: Any = None


def pin_threads(n: int = 1, *, torch: bool = True) -> int:
    """Pin BLAS / OpenMP, Arrow and (``torch=True``) torch to ``n`` threads; return ``n``.

    The environment variables reach the libraries loaded later; the pools already loaded (numpy's OpenBLAS, once
    ``numpy`` is imported, which every benchmark here does first) are limited by threadpoolctl (a dependency of
    scikit-learn, the product's). ``torch=False`` for a torch-free side (the runtime): torch is then not imported
    here, and pinned only if something else loaded it. :func:`thread_pools` says what the pools hold.
    """
    global _LIMITS
    import sys

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        _LIMITS = threadpool_limits(limits=n)
    except ImportError:
        pass
    if torch or "torch" in sys.modules:
        try:
            import torch as _torch

            _torch.set_num_threads(n)
        except ImportError:
            pass
    try:
        import pyarrow as pa

        pa.set_cpu_count(max(n, 1))
        pa.set_io_thread_count(max(n, 1))
    except ImportError:
        pass
    return n


def thread_pools() -> str:
    """The loaded BLAS / OpenMP pools and their threads (threadpoolctl), e.g. ``openblas 1, openmp 1``: what
    :func:`pin_threads` achieved."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl is not installed)"
    pools = [f"{p.get('internal_api', '?')} {p.get('num_threads', '?')}" for p in threadpool_info()]
    return ", ".join(pools) if pools else "none loaded"


def load_line(label: str = "load average") -> str:
    one, five, fifteen = os.getloadavg()
    return f"{label}: {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int = 3, *, clock: Callable[[], float] = time.perf_counter,
                ) -> dict[str, list[float]]:
    """Run every case once per round, ``repeats`` rounds, in turn; return each case's seconds."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio_line(name: str, seconds: list[float], reference: str, ref_seconds: list[float]) -> str:
    r = median(seconds) / median(ref_seconds)
    return (f"{name:<34} median {median(seconds):8.3f} s  ({', '.join(f'{s:.3f}' for s in seconds)})  "
            f"= {r:6.2f}x {reference}")


def ml100k_arguments(parser: Any, *, encoder: str) -> None:
    """The options every MovieLens-100K benchmark takes: ``--data``, ``--work``, ``--encoder``, ``--threads``."""
    from pathlib import Path

    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/interestgym-bench"))
    parser.add_argument("--encoder", choices=["minilm", "hashing", "random"], default=encoder,
                        help="item vectors (d = 384 for all three; the speed does not depend on what they mean)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP / torch / Arrow threads (pinned, both sides)")


def ml100k_ready(args: Any) -> None:
    """Exit with a message when ``--data`` is not MovieLens 100K; pin the threads; print the load."""
    import sys

    if not (args.data / "u.data").is_file():
        sys.exit(f"{args.data}: MovieLens 100K not found (expected u.data there)")
    pin_threads(args.threads)
    print(f"threads pinned to {args.threads}; {load_line('load before')}")


def heap_argument(parser: Any) -> None:
    """``--malloc-top-pad MB``: glibc's heap as the ``interestgym`` command sets it for itself (0: glibc's defaults)."""
    parser.add_argument("--malloc-top-pad", type=int, default=0, metavar="MB",
                        help="glibc M_TOP_PAD in MB for this run, with M_MMAP_THRESHOLD 32 MB, as the interestgym command sets "
                             "them (interestgym.heap.keep_freed_heap); 0: glibc's defaults")


def apply_heap(mb: int) -> str:
    """Set glibc's heap for this process as :func:`heap_argument`'s value says; the line saying what was set."""
    if not mb:
        return "glibc malloc at its defaults (--malloc-top-pad MB to keep freed heap)"
    from interestgym.heap import keep_freed_heap

    applied = keep_freed_heap({"INTERESTGYM_MALLOC_TOP_PAD_MB": str(mb)})
    return (f"glibc M_TOP_PAD {mb} MB, M_MMAP_THRESHOLD 32 MB, as the interestgym command sets them"
            + ("" if applied else " (mallopt refused them)"))


def minor_faults() -> int:
    """This process's minor page faults so far (``getrusage``): memory the kernel maps in again after glibc gave it back."""
    try:
        import resource
    except ImportError:  # no resource module (Windows): no count
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
