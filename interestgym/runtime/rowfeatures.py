"""The observation of ONE decision, from Python scalars, bit-identical to ``core.features.encode_features``.

Why a second code path: :func:`interestgym.core.features.encode_features` is written for batches (one
numpy call per column and transform: ~130 calls), which is what the engine and ``update_batch`` need;
for the one event a service updates per request those calls cost ~100 us, ten times the policy call.
:class:`RowEncoder` computes the same 26 values with a handful of calls:

* columns of a small discrete domain (hour, weekday, action) are **tabulated by the core itself**
  (``encode_features`` on every value of the domain, once, at load): no formula is restated;
* ``log1p`` of the gaps and counts goes through numpy's ``np.log1p`` (one call on four values), as in
  the core (numpy's log1p may differ from ``math.log1p`` in the last bit);
* the rest are IEEE-exact scalar operations (identity, x / 2, x / 5, a / b, x / 20) done on Python
  floats, which are the same float64 operations numpy performs element by element;
* the float32 cast and the clip to the declared bounds are the core's: ``np.array(float32)`` and
  ``np.clip`` with :data:`~interestgym.core.features.FEATURE_LOW` / ``FEATURE_HIGH``.

The guarantee is checked, not assumed: :meth:`RowEncoder.self_check` (run when a policy loads) encodes
a probe set of raw quantities (edges, saturation, every hour / weekday / action, random values) both
ways and compares the bits. If any differs (e.g. a formula changed in ``core.features`` and this module
was not updated) the encoder falls back to calling ``encode_features`` for every row: slower, never
different. ``tests/test_runtime_fastpath.py`` asserts the fast path is active and exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from interestgym.core.features import (
    COUNT_MAX,
    FEATURE_HIGH,
    FEATURE_LOW,
    FEATURE_NAMES,
    GAP_MAX_SECONDS,
    N_FEATURES,
    SHADOW_STRENGTHS,
    STREAK_MAX,
    VALUE_SCALE,
    encode_features,
)
from interestgym.core.numeric import clip

#: The feature order the fast path writes (checked against the core's FEATURE_NAMES at construction).
_ROW_ORDER: tuple[str, ...] = (
    "cos_item_long", "cos_item_short", "cos_long_short", "long_empty", "action_weight", "feedback_value",
    "log_gap_event", "log_gap_decision", "hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "log_events",
    "log_decisions", "category_new", "category_fraction", "category_streak", "category_diversity", "reward_ema",
    "drift_ema", "short_long_ema", "long_metric_ema", "short_metric_ema",
    *(f"shadow_{a:g}_cos_ema" for a in SHADOW_STRENGTHS),
)
# The core's scales, computed as the core computes them (np.log1p of the Python constants).
_LOG_GAP = float(np.log1p(GAP_MAX_SECONDS))
_LOG_COUNT = float(np.log1p(COUNT_MAX))


def raw_row(cos_long: float, cos_short: float, cos_long_short: float, long_empty: bool, means: list[float],
            shadow_cos: list[float], action_weight: float, value: float, gap_event: int, gap_decision: int,
            hour: int, weekday: int, n_events: int, n_decisions: int, category_count: int, categories_seen: int,
            category_streak: int) -> dict[str, np.ndarray]:
    """The raw quantities of one decision as ``encode_features`` takes them (1-row arrays): the
    reference form of :meth:`RowEncoder.encode`'s arguments (the fallback and the self-check use it).

    :param means: the running means in ``RUNNING_MEAN_NAMES`` order; ``shadow_cos``: (len(SHADOW_STRENGTHS),).
    """
    from interestgym.core.features import RUNNING_MEAN_NAMES

    raw: dict[str, np.ndarray] = {
        "cos_item_long": np.array([cos_long], dtype=np.float32), "cos_item_short": np.array([cos_short], dtype=np.float32),
        "cos_long_short": np.array([cos_long_short], dtype=np.float32), "long_empty": np.array([bool(long_empty)]),
        "shadow_cos_ema": np.array([shadow_cos], dtype=np.float64), "action_weight": np.array([action_weight], dtype=np.float64),
        "value": np.array([value], dtype=np.float64), "gap_event": np.array([gap_event], dtype=np.int64),
        "gap_decision": np.array([gap_decision], dtype=np.int64), "hour": np.array([hour], dtype=np.int64),
        "weekday": np.array([weekday], dtype=np.int64), "n_events": np.array([n_events], dtype=np.int64),
        "n_decisions": np.array([n_decisions], dtype=np.int64), "category_count": np.array([category_count], dtype=np.int64),
        "categories_seen": np.array([categories_seen], dtype=np.int64),
        "category_streak": np.array([category_streak], dtype=np.int64),
    }
    raw.update({name: np.array([m], dtype=np.float64) for name, m in zip(RUNNING_MEAN_NAMES, means)})
    return raw


class RowEncoder:
    """One decision's observation (1, N_FEATURES) float32, equal to the core's to the bit.

    :param max_action_weight: the export's ``replay.max_action_weight`` (as ``encode_features`` takes it).
    :param action_weights: action name -> weight (every action the policy accepts): their column is
        tabulated by the core.
    """

    def __init__(self, max_action_weight: float, action_weights: Mapping[str, float]) -> None:
        self.max_action_weight = float(max_action_weight)
        self.fast = tuple(FEATURE_NAMES) == _ROW_ORDER
        # Discrete columns, tabulated by the core (exact by construction; any int outside the table
        # falls back to the core per row).
        hours = encode_features({"hour": np.arange(24)}, ("hour_sin", "hour_cos"))
        days = encode_features({"weekday": np.arange(7)}, ("weekday_sin", "weekday_cos"))
        self._hour = {h: (float(hours[h, 0]), float(hours[h, 1])) for h in range(24)}
        self._weekday = {w: (float(days[w, 0]), float(days[w, 1])) for w in range(7)}
        weights = np.array(list(action_weights.values()), dtype=np.float64)
        encoded = encode_features({"action_weight": weights}, ("action_weight",), max_action_weight=self.max_action_weight)
        self._action = {float(w): float(v) for w, v in zip(weights, encoded[:, 0])}
        if self.fast:
            self.fast = self.self_check(list(action_weights.values()))

    def encode(self, cos_long: float, cos_short: float, cos_long_short: float, long_empty: bool, means: list[float],
               shadow_cos: list[float], action_weight: float, value: float, gap_event: int, gap_decision: int,
               hour: int, weekday: int, n_events: int, n_decisions: int, category_count: int, categories_seen: int,
               category_streak: int) -> np.ndarray:
        """The observation (1, N_FEATURES) float32 of one decision from its raw quantities (the names of
        :func:`interestgym.core.features.encode_features`' raw quantities; ``means`` in
        ``RUNNING_MEAN_NAMES`` order). ``cos_*`` are the float32 cosines (as Python floats)."""
        hw = self._hour.get(hour)
        wd = self._weekday.get(weekday)
        aw = self._action.get(action_weight)
        if not self.fast or hw is None or wd is None or aw is None:
            return encode_features(raw_row(cos_long, cos_short, cos_long_short, long_empty, means, shadow_cos, action_weight,
                                           value, gap_event, gap_decision, hour, weekday, n_events, n_decisions,
                                           category_count, categories_seen, category_streak),
                                   FEATURE_NAMES, max_action_weight=self.max_action_weight)
        # _log_scaled: log1p(max(x, 0)) / log_max, with numpy's log1p (the core's), on the four at once.
        logs = np.log1p(np.array([max(gap_event, 0), max(gap_decision, 0), max(n_events, 0), max(n_decisions, 0)],
                                 dtype=np.float64)).tolist()
        nd = float(n_decisions)
        reward, drift, short_long, long_metric, short_metric = means
        row = [
            cos_long, cos_short, cos_long_short, 1.0 if long_empty else 0.0, aw, float(value) / VALUE_SCALE,
            logs[0] / _LOG_GAP, logs[1] / _LOG_GAP, hw[0], hw[1], wd[0], wd[1], logs[2] / _LOG_COUNT, logs[3] / _LOG_COUNT,
            1.0 if category_count == 0 else 0.0,
            float(category_count) / nd if nd > 0 else 0.0,
            float(category_streak) / STREAK_MAX,
            float(categories_seen) / nd if nd > 0 else 0.0,
            reward, drift, short_long / 2.0, long_metric, short_metric, *shadow_cos,
        ]
        out = np.array([row], dtype=np.float32)
        return clip(out, FEATURE_LOW, FEATURE_HIGH, out=out)

    # ------------------------------------------------------------------------------ the check
    def probes(self, action_weights: list[float], n_random: int = 256, seed: int = 0) -> list[tuple[Any, ...]]:
        """Argument tuples of :meth:`encode` covering every branch: empty / saturated / clipped
        values, every hour, weekday and action, and random values."""
        rng = np.random.default_rng(seed)
        year = int(GAP_MAX_SECONDS)
        gaps = [0, 1, 59, 3600, year - 1, year, year + 1, 10 * year]
        counts = [0, 1, 2, 19, 20, 21, 9_999, 10_000, 10_001, 50_000]
        out: list[tuple[Any, ...]] = []
        for i in range(max(len(gaps), len(counts), 24, 7, len(action_weights), n_random)):
            nd = counts[i % len(counts)] if i < 40 else int(rng.integers(0, 3000))
            cc = 0 if i % 3 == 0 else int(rng.integers(0, nd + 1))
            cos = rng.uniform(-1.2, 1.2, 3).astype(np.float32)
            out.append((
                float(cos[0]), float(cos[1]), float(cos[2]), bool(i % 5 == 0),
                [float(v) for v in rng.uniform(-1.5, 1.5, 5)], [float(v) for v in rng.uniform(-1.5, 1.5, len(SHADOW_STRENGTHS))],
                float(action_weights[i % len(action_weights)]) if action_weights else 1.0,
                float(rng.choice([0.0, 1.0, 2.0, 3.5, 4.0, 5.0, 7.0, rng.uniform(0, 10)])),
                gaps[i % len(gaps)] if i < 40 else int(rng.integers(0, 2 * year)),
                gaps[(i + 3) % len(gaps)] if i < 40 else int(rng.integers(0, 2 * year)),
                i % 24, i % 7,
                counts[(i + 1) % len(counts)] if i < 40 else int(rng.integers(0, 20_000)), nd, cc,
                int(rng.integers(0, nd + 1)), int(rng.integers(0, 30)),
            ))
        return out

    def self_check(self, action_weights: list[float]) -> bool:
        """True when the fast path equals ``encode_features`` to the bit on :meth:`probes`."""
        probes = self.probes(action_weights)
        raws = [raw_row(*p) for p in probes]
        batch = {k: np.concatenate([r[k] for r in raws]) for k in raws[0]}
        expected = encode_features(batch, FEATURE_NAMES, max_action_weight=self.max_action_weight)
        got = np.concatenate([self.encode(*p) for p in probes])
        return got.shape == (len(probes), N_FEATURES) and got.tobytes() == expected.tobytes()
