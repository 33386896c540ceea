"""Small numpy helpers of the core's hot paths.

:func:`clip` is numpy's own ``clip`` ufunc, the one :func:`numpy.clip` ends in: for float arrays and
bounds the same values, bit for bit (NaN and signed zeros included), without ``np.clip``'s Python-level dispatch
(``fromnumeric`` -> ``ndarray.clip`` -> ``_methods._clip``), ~1 us of the ~1.5 us a call on a few values
costs. The runtime updates one user per call, so that overhead is most of each clip it makes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

try:  # numpy 2
    from numpy._core.umath import clip as _clip_ufunc
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.umath import clip as _clip_ufunc  # type: ignore[no-redef]

if not isinstance(_clip_ufunc, np.ufunc):  # pragma: no cover - a numpy without the ufunc
    _clip_ufunc = np.clip


def clip(a, low, high, out=None):  # type: ignore[no-untyped-def]
    """``np.clip(a, low, high)`` (both bounds given), through numpy's clip ufunc."""
    return _clip_ufunc(a, low, high, out=out)


def clip_float(value: float, low: float, high: float) -> float:
    """:func:`clip` of one Python float (the one-user forms' scalar maths): the value itself inside the bounds, -0.0
    and NaN included, as numpy's clip keeps them."""
    # min(value, high) without the call (~60 ns, ~19 times an event in the runtime)
    return low if value < low else (high if high < value else value)  # noqa: FURB136


def finite_number(value: Any) -> bool:
    """A finite real number that is not a bool (``true`` / ``false`` read from a file are not weights): the check every
    value read from a manifest, a config or a rule's parameters goes through."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
