"""Aggregation and uncertainty for evaluation: per-user means, bootstrap CIs, paired differences.

The unit of resampling is the **user**: scoring points of one user are correlated (same profile,
same tastes), so a CI over scoring points would be too narrow. Every metric is first averaged per
user (:func:`per_user_means`), then

* :func:`bootstrap_mean_ci` resamples users with replacement and takes the percentile interval of
  the resampled means (Efron's percentile bootstrap);
* :func:`paired_bootstrap_diff` does the same on the per-user differences between two policies
  evaluated on the *same* users and the *same* candidates, which removes the between-user variance
  that both policies share (a paired comparison is far tighter than two independent CIs).

The resampling indices depend only on ``seed`` and the number of users, so two metrics (or two
policies) bootstrapped with the same seed use the same resamples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_N_BOOT = 2000
DEFAULT_CONFIDENCE = 0.95
#: Fewer scoring points than this and an evaluation's tables (or a run's validation) are said to rest on few rankings.
FEW_POINTS = 50


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    mean: float
    lo: float
    hi: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return self.lo > 0.0 or self.hi < 0.0


def per_user_means(user_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per user.

    :param user_ids: (n,) user id of every scoring point (any hashable dtype; ints or strings).
    :param values: (n,) metric value at every scoring point; NaNs (metric undefined) are ignored.
    :return: (sorted unique user ids, per-user mean) — users whose every value is NaN get NaN.
    """
    user_ids = np.asarray(user_ids)
    values = np.asarray(values, dtype=np.float64)
    if user_ids.shape != values.shape:
        raise ValueError(f"user_ids shape {user_ids.shape} != values shape {values.shape}")
    users, inverse = np.unique(user_ids, return_inverse=True)
    ok = ~np.isnan(values)
    sums = np.bincount(inverse[ok], weights=values[ok], minlength=len(users))
    counts = np.bincount(inverse[ok], minlength=len(users))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return users, means


#: Resample indices drawn (and gathered) at a time: 2^22 (32 MB of int64), whatever the number of users. The whole
#: (n_boot, n) matrix at once was 2000 x 60,000 x 8 bytes = 0.96 GB for one CI of a large evaluation.
_BOOT_BLOCK = 1 << 22


def _bootstrap_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The means of ``n_boot`` resamples of ``x`` with replacement: resample r's indices are row r of
    ``default_rng(seed).integers(0, n, size=(n_boot, n))``, drawn a block of rows at a time from the one generator
    (its draws are sequential, so the blocks are that matrix's rows, and each mean is the same reduction of a
    contiguous row as before)."""
    n = len(x)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, _BOOT_BLOCK // n)
    for start in range(0, n_boot, step):
        rows = min(step, n_boot - start)
        means[start : start + rows] = x[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    return means


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap CI of the mean of ``values`` (one value per user; NaNs dropped).

    :param values: (n_users,) per-user values.
    :param n_boot: number of bootstrap resamples.
    :param confidence: two-sided coverage, e.g. 0.95.
    :param seed: seed of the resampling (same seed and n -> same resamples).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if n == 1:
        return Interval(float(x[0]), float(x[0]), float(x[0]), 1)
    means = _bootstrap_means(x, n_boot, seed)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(float(x.mean()), float(lo), float(hi), n)


def paired_bootstrap_diff(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """CI of mean(a - b) over users, resampling users (pairs) with replacement.

    :param a: (n_users,) per-user values of policy A.
    :param b: (n_users,) per-user values of policy B, aligned with ``a`` (same users, same order).
    Users where either value is NaN are dropped from both.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values have different shapes {a.shape} and {b.shape}")
    return bootstrap_mean_ci(a - b, n_boot=n_boot, confidence=confidence, seed=seed)


def align_users(
    users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray, values_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Restrict two per-user series to their common users, in one order (for paired comparisons)."""
    common, ia, ib = np.intersect1d(np.asarray(users_a), np.asarray(users_b), return_indices=True)
    return common, np.asarray(values_a)[ia], np.asarray(values_b)[ib]
