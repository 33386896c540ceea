"""Multivariate dynamic time warping (DTW) and the drift signal built on it, pure numpy.

**Distance.** For two sequences of vectors ``a`` (n, d) and ``b`` (m, d), the local cost of matching
``a[i]`` with ``b[j]`` is the squared Euclidean distance ``|a[i] - b[j]|^2``; a warping path runs from
(0, 0) to (n - 1, m - 1) with steps (1, 0), (0, 1) and (1, 1); and

    dtw(a, b) = sqrt( min over paths of the sum of the local costs along the path )

which is dtaidistance's ``dtw_ndim.distance`` (no window, no pruning; ``tests/test_dtw.py`` checks
both against a brute-force enumeration of every path, and against dtaidistance when it is installed).

**Drift** (issue 13, item 4): how far a user's last ``k`` item vectors are from the ``k`` before them,

    drift = dtw(x[t-2k+1 .. t-k], x[t-k+1 .. t]) / (2 sqrt(k))   in [0, 1]

For unit (or zero) vectors every local cost is at most 4 and the diagonal path has k cells, so dtw is
at most 2 sqrt(k): the division maps drift onto [0, 1] whatever k is (0: the user repeats the same
items; around 0.5: unrelated items, whose squared distance is about 2). A user with fewer than 2k
decisions has no drift (NaN).

Why our own code and not dtaidistance / tslearn: ``interestgym.core`` is numpy-only (the production
runtime imports it, and must not need a C extension or numba at serving time), and the product needs
DTW at *every* decision of a replay at once, where windows overlap. :func:`sequence_drift` computes
each decision's dot products with its 2k - 1 predecessors once (not k^2 per window) and runs the
dynamic programme over all windows with k^2 vector operations: on ml-100k's 27,823 training-user
windows (k = 5, d = 384) 0.05 s against 0.46 s for dtaidistance's C ``dtw_ndim.distance_fast`` called
per pair (9x), equal to 7e-16 (``benchmarks/sequence.py --dtw``; ``tests/test_dtw.py`` checks the
brute force and, when installed, dtaidistance). Costs use ``|a|^2 + |b|^2 - 2 a.b``: ~1e-16 of
cancellation on a cost, so a distance that should be 0 can read ~1e-8.
"""

from __future__ import annotations

import numpy as np

#: k of the drift signal (the ``dtw_refresh`` rule's and the ``dtw_drift`` observation's): the last k
#: decision items against the k before them.
DRIFT_WINDOW = 5
#: Pairs processed per block in :func:`dtw_distances` (bounds the (block, n, m) cost matrix).
_BLOCK = 4096


def _costs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(B, n, m) squared Euclidean distances ``|a_i|^2 + |b_j|^2 - 2 a_i . b_j``, float64, clipped at 0
    (the identity loses ~1e-16 to cancellation next to exact differences: far below any use here)."""
    sq_a = np.einsum("bnd,bnd->bn", a, a)
    sq_b = np.einsum("bmd,bmd->bm", b, b)
    return np.maximum(sq_a[:, :, None] + sq_b[:, None, :] - 2.0 * np.matmul(a, b.transpose(0, 2, 1)), 0.0)


def _accumulate(cost: np.ndarray) -> np.ndarray:
    """(B,) DTW distances from (B, n, m) local costs: the dynamic programme, vectorised over B."""
    n, m = cost.shape[1], cost.shape[2]
    acc = np.empty_like(cost)
    acc[:, 0, 0] = cost[:, 0, 0]
    for j in range(1, m):
        acc[:, 0, j] = acc[:, 0, j - 1] + cost[:, 0, j]
    for i in range(1, n):
        acc[:, i, 0] = acc[:, i - 1, 0] + cost[:, i, 0]
        for j in range(1, m):
            best = np.minimum(np.minimum(acc[:, i - 1, j], acc[:, i, j - 1]), acc[:, i - 1, j - 1])
            acc[:, i, j] = best + cost[:, i, j]
    return np.sqrt(acc[:, n - 1, m - 1])


def dtw_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """DTW distance of every pair ``(a[p], b[p])``.

    :param a: (B, n, d) first sequences.
    :param b: (B, m, d) second sequences (same B and d; m may differ from n).
    :return: (B,) float64 distances (see the module docstring).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"dtw_distances: expected (B, n, d) and (B, m, d) arrays, got {a.shape} and {b.shape}")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError("dtw_distances: sequences must hold at least one vector")
    out = np.empty(a.shape[0], dtype=np.float64)
    for s in range(0, a.shape[0], _BLOCK):
        out[s: s + _BLOCK] = _accumulate(_costs(a[s: s + _BLOCK], b[s: s + _BLOCK]))
    return out


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """DTW distance of one pair of sequences ``a`` (n, d) and ``b`` (m, d)."""
    return float(dtw_distances(np.asarray(a)[None], np.asarray(b)[None])[0])


def window_drift(windows: np.ndarray) -> np.ndarray:
    """Drift of windows of 2k vectors: the first k (older) against the last k (recent).

    :param windows: (B, 2k, d) item vectors in time order (the runtime's last-2k window).
    :return: (B,) drift in [0, 1] for unit / zero vectors (see the module docstring).
    """
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.shape[1] < 2 or windows.shape[1] % 2:
        raise ValueError(f"window_drift: expected (B, 2k, d) windows, got shape {windows.shape}")
    k = windows.shape[1] // 2
    return dtw_distances(windows[:, :k], windows[:, k:]) / (2.0 * np.sqrt(k))


def sequence_drift(vectors: np.ndarray, group: np.ndarray, k: int) -> np.ndarray:
    """Drift at every element of grouped sequences (e.g. every decision of every user).

    :param vectors: (n, d) item vectors in time order within each group (groups contiguous).
    :param group: (n,) group id (user) of each row; rows of one group are contiguous.
    :param k: window length.
    :return: (n,) drift of the window of 2k rows ending at each row (that row included); NaN for a
        row with fewer than 2k rows of its group up to it.
    """
    vectors = np.asarray(vectors)
    group = np.asarray(group)
    if k < 1:
        raise ValueError(f"sequence_drift: k={k}; expected an integer >= 1")
    n = len(group)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    start = np.concatenate([[True], group[1:] != group[:-1]])
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    position = np.arange(n) - first  # 0-based position within the group
    rows = np.nonzero(position >= 2 * k - 1)[0]
    if not len(rows):
        return out
    # Windows overlap: the window ending at row r pairs rows r-2k+1..r-k with rows r-k+1..r, and every
    # such dot product is x_q . x_(q-l) for a lag l in 1..2k-1. Computing those n x (2k-1) products once
    # (instead of k^2 per window) is what makes the drift of every decision of a log cheap.
    x = np.asarray(vectors, dtype=np.float64)
    sq = np.einsum("nd,nd->n", x, x)
    lag_dot = np.zeros((n, 2 * k), dtype=np.float64)  # lag_dot[q, l] = x_q . x_(q-l)
    for lag in range(1, 2 * k):
        lag_dot[lag:, lag] = np.einsum("nd,nd->n", x[lag:], x[:-lag])
    i = np.arange(k)[:, None]
    j = np.arange(k)[None, :]
    for s in range(0, len(rows), _BLOCK):
        r = rows[s: s + _BLOCK][:, None, None]
        older = r - 2 * k + 1 + i  # row of a_i
        newer = r - k + 1 + j  # row of b_j
        cost = np.maximum(sq[older] + sq[newer] - 2.0 * lag_dot[newer, newer - older], 0.0)
        out[rows[s: s + _BLOCK]] = _accumulate(cost) / (2.0 * np.sqrt(k))
    return out
