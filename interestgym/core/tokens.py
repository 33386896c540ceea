"""What a sequence tracker reads of a decision besides its item: the action code and the time-gap bucket.

One home for both formulas: training and scoring (:mod:`interestgym.agents.sequence.data`) and the
production runtime (:mod:`interestgym.runtime.tracker`, numpy only) tokenise decisions with them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from interestgym.data.schema import ACTION_INDEX, ACTIONS

#: Gap buckets: 0 = the user's first decision, 1 = same second, 2 + floor(log2(gap in s)) above,
#: capped (2 + 30 is about 34 years).
N_GAP_BUCKETS = 33
#: Action codes: one per :data:`ACTIONS` entry plus one for an action the schema does not know.
N_ACTIONS = len(ACTIONS) + 1


def gap_buckets(gaps_s: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Bucket of every gap: 0 where ``first`` (no previous decision), 1 for a gap of 0 s (the same
    second: a batch of ratings), else ``2 + floor(log2(gap))``, capped at ``N_GAP_BUCKETS - 1``."""
    gaps = np.maximum(np.asarray(gaps_s, dtype=np.float64), 0.0)
    with np.errstate(divide="ignore"):
        log = np.floor(np.log2(np.where(gaps >= 1.0, gaps, 1.0)))
    bucket = np.where(gaps < 1.0, 1, 2 + log.astype(np.int64))
    return np.where(np.asarray(first, dtype=bool), 0, np.minimum(bucket, N_GAP_BUCKETS - 1)).astype(np.int64)


def action_codes(actions: Iterable[object]) -> np.ndarray:
    """Code of every action name (unknown names share the last code)."""
    return np.array([ACTION_INDEX.get(str(a), len(ACTIONS)) for a in actions], dtype=np.int64)
