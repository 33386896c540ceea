"""Decision-time observation features: the single source of the observation vector.

:data:`FEATURES` is the table (name, definition, min, max) that the env's Observation Space section,
the export manifest and the runtime all read. :func:`encode_features` turns *raw quantities* (counts,
seconds, cosines, running means; all known at decision time, never the future) into the bounded
float32 features; :class:`FeatureView` and the ``decode_*`` helpers invert the transforms so that rules
can act on the same observation vector as the agent (a gap in seconds, an event count, an hour).

Raw quantities (the keys of the ``raw`` mapping):

====================  ==============================================================================
``cos_item_long``      cos(x, L) before the update (x = the event's item vector)
``cos_item_short``     cos(x, S) before the update
``cos_long_short``     cos(L, S)
``long_empty``         1 if L is still the zero vector (no update yet), else 0
``action_weight``      the event's action weight (manifest ``action_weights``), e.g. purchase 3, click 1; the
                       observation divides it by the table's largest weight, over every action of the table,
                       not only those the log has (a MovieLens rating, weight 1, reads 1/3)
``value``              the event's value (rating, quantity, 1.0)
``gap_event``          seconds since the user's previous event of any type (0 for the first)
``gap_decision``       seconds since the user's previous decision (positive event; 0 for the first)
``hour``, ``weekday``  of the event (0-23, 0 = Monday)
``n_events``           the user's events before this one (any type)
``n_decisions``        the user's decisions before this one
``category_count``     the user's previous decisions in this event's category
``categories_seen``    distinct categories among the user's previous decisions
``category_streak``    previous decisions in a row, ending just before this one, in this category
``reward_ema``         running mean of the step metric (the policy's own ranking quality)
``drift_ema``          running mean of cos(x, L) before the update (low = interests moving away)
``short_long_ema``     running mean of cos(x, S) - cos(x, L) before the update
``long_metric_ema``    running mean of the step metric had the ranking used L only (w = 0, p = 0)
``short_metric_ema``   running mean of the step metric had the ranking used S only (w = 1, p = 0)
``shadow_cos_ema``     (B, 3) running means of cos(x, H_a) for shadow profiles updated with the fixed
                       strengths a in :data:`SHADOW_STRENGTHS` at every decision (policy-independent)
====================  ==============================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from interestgym.core.interest import cosine_rows
from interestgym.core.numeric import clip

#: Scale of the log-gap features: gaps of a year or more map to 1.
GAP_MAX_SECONDS = 365.0 * 24 * 3600
#: Scale of the log-count features: 10,000 or more events map to 1.
COUNT_MAX = 10_000.0
#: Category streaks of this length or longer map to 1.
STREAK_MAX = 20.0
#: Scale of the feedback value (ratings 1-5 map to 0.2-1; other actions' value 1.0 to 0.2).
VALUE_SCALE = 5.0
#: Strengths of the policy-independent shadow profiles H_a (a slow EMA, a fast EMA, "last item").
SHADOW_STRENGTHS: tuple[float, ...] = (0.05, 0.3, 1.0)
#: Rate of every running mean in the observation: m <- m + EMA_RATE (v - m), from m = 0.
EMA_RATE = 0.2

_LOG_GAP = np.log1p(GAP_MAX_SECONDS)
_SHADOW_NAMES = [f"shadow_{a:g}_cos_ema" for a in SHADOW_STRENGTHS]
_LOG_COUNT = np.log1p(COUNT_MAX)


@dataclass(frozen=True)
class Feature:
    """One observation component: index = its position in :data:`FEATURES`."""

    name: str
    definition: str
    low: float
    high: float


FEATURES: tuple[Feature, ...] = (
    Feature("cos_item_long", "cos(x, L) before the update", -1.0, 1.0),
    Feature("cos_item_short", "cos(x, S) before the update", -1.0, 1.0),
    Feature("cos_long_short", "cos(L, S) before the update", -1.0, 1.0),
    Feature("long_empty", "1 if L is still zero (no interest known yet), else 0", 0.0, 1.0),
    # the largest of the whole table, not of the actions the log has: a MovieLens rating (weight 1) reads 0.333
    Feature("action_weight", "action weight / the action table's largest (all its actions: purchase 3 by default)", 0.0, 1.0),
    Feature("feedback_value", f"clip(value / {VALUE_SCALE:g}, 0, 1) (rating, quantity, 1.0)", 0.0, 1.0),
    Feature("log_gap_event", "log1p(seconds since previous event) / log1p(365 days), clipped; 0 if first", 0.0, 1.0),
    Feature("log_gap_decision", "log1p(seconds since previous decision) / log1p(365 days), clipped; 0 if first", 0.0, 1.0),
    Feature("hour_sin", "sin(2 pi hour / 24), hour 0-23 on the dataset's clock (UTC + replay.tz_offset_hours)", -1.0, 1.0),
    Feature("hour_cos", "cos(2 pi hour / 24)", -1.0, 1.0),
    Feature("weekday_sin", "sin(2 pi weekday / 7), weekday 0 = Monday, on the dataset's clock", -1.0, 1.0),
    Feature("weekday_cos", "cos(2 pi weekday / 7)", -1.0, 1.0),
    Feature("log_events", "log1p(events before this one) / log1p(10000), clipped", 0.0, 1.0),
    Feature("log_decisions", "log1p(decisions before this one) / log1p(10000), clipped", 0.0, 1.0),
    Feature("category_new", "1 if no previous decision had this category", 0.0, 1.0),
    Feature("category_fraction", "previous decisions in this category / previous decisions (0 if none)", 0.0, 1.0),
    Feature("category_streak", f"min(streak, {STREAK_MAX:g}) / {STREAK_MAX:g}; streak = the decisions in a row just before this one "
            "(this one not counted) in this event's category", 0.0, 1.0),
    Feature("category_diversity", "distinct categories seen / previous decisions (0 if none)", 0.0, 1.0),
    Feature("reward_ema", "running mean of the step metric (own ranking quality)", 0.0, 1.0),
    Feature("drift_ema", "running mean of cos(x, L) before the update", -1.0, 1.0),
    Feature("short_long_ema", "running mean of (cos(x, S) - cos(x, L)) / 2", -1.0, 1.0),
    Feature("long_metric_ema", "running mean of the step metric ranking by L only", 0.0, 1.0),
    Feature("short_metric_ema", "running mean of the step metric ranking by S only", 0.0, 1.0),
    *(
        Feature(f"shadow_{a:g}_cos_ema", f"running mean of cos(x, H) for a shadow profile updated with strength {a:g}", -1.0, 1.0)
        for a in SHADOW_STRENGTHS
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
N_FEATURES = len(FEATURES)
FEATURE_LOW = np.array([f.low for f in FEATURES], dtype=np.float32)
FEATURE_HIGH = np.array([f.high for f in FEATURES], dtype=np.float32)

#: Optional observations an agent may see after :data:`FEATURES`, in this order when several are on. They
#: read only the log (and a sequence tracker), never the policy's profiles, so the replay precomputes them
#: once per decision (``ReplayData.decision_extra_obs``):
#:
#: * with a sequence tracker (``train --sequence RUN``, unless ``--no-tracker-observations``): how the
#:   tracker has ranked for this user lately and how sure it is now, so the agent can learn when to trust
#:   it (``agents.sequence.term.tracker_observations``);
#: * with ``--dtw-observation``: the DTW drift of the user's last k decision items from the k before
#:   (``core.dtw``; the ``dtw_refresh`` rule's signal).
EXTRA_FEATURES: tuple[Feature, ...] = (
    Feature("tracker_metric_ema", "running mean of the step metric ranking by the sequence tracker only", 0.0, 1.0),
    Feature("tracker_top1_prob", "the tracker's probability of its most likely next item (softmax over the catalogue), "
            "after this decision", 0.0, 1.0),
    Feature("tracker_entropy", "entropy of that softmax / log(catalogue size)", 0.0, 1.0),
    Feature("dtw_drift", "DTW distance of the last k decision items from the k before, / (2 sqrt(k)); 0 before the "
            "user's 2k-th decision", 0.0, 1.0),
)
TRACKER_FEATURE_NAMES: tuple[str, ...] = ("tracker_metric_ema", "tracker_top1_prob", "tracker_entropy")
DRIFT_FEATURE_NAMES: tuple[str, ...] = ("dtw_drift",)
_EXTRA_BY_NAME = {f.name: f for f in EXTRA_FEATURES}


def observation_features(extra: tuple[str, ...] = ()) -> tuple[Feature, ...]:
    """An agent's observation table: :data:`FEATURES`, then the ``extra`` ones (names of
    :data:`EXTRA_FEATURES`, in that table's order; anything else raises KeyError)."""
    order = [f.name for f in EXTRA_FEATURES]
    if list(extra) != sorted(extra, key=order.index):
        raise ValueError(f"extra observations {list(extra)}: expected them in the order {order}")
    return FEATURES + tuple(_EXTRA_BY_NAME[name] for name in extra)


def tracker_confidence(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``tracker_top1_prob`` and ``tracker_entropy`` from a tracker's logits over the whole catalogue,
    (B, n_items) -> two (B,) float32: the softmax's top probability and its entropy / log(n_items). The
    one formula of the replay (``agents.sequence.scoring.decision_confidence``) and the runtime
    (``TrackerRuntime.confidence``)."""
    logits = np.asarray(logits, dtype=np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True, dtype=np.float32))
    p = np.exp(logp)
    return p.max(axis=1), -(p * logp).sum(axis=1, dtype=np.float32) / np.float32(np.log(logits.shape[1]))


def observation_bounds(extra: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) float32 of :func:`observation_features` (an env's observation box)."""
    table = observation_features(extra)
    return (np.array([f.low for f in table], dtype=np.float32), np.array([f.high for f in table], dtype=np.float32))


#: Features that depend only on the log (the event and the user's past events), not on the policy's
#: profiles: the replay precomputes them once per decision.
LOG_FEATURES: tuple[str, ...] = (
    "action_weight", "feedback_value", "log_gap_event", "log_gap_decision", "hour_sin", "hour_cos",
    "weekday_sin", "weekday_cos", "log_events", "log_decisions", "category_new", "category_fraction",
    "category_streak", "category_diversity",
)
#: Features that depend on the policy's state.
STATE_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in LOG_FEATURES)


def state_quantities(x: np.ndarray, long_term: np.ndarray, short_term: np.ndarray, running_means: Mapping[str, np.ndarray],
                     shadow_cos_ema: np.ndarray) -> dict[str, np.ndarray]:
    """The raw quantities of :data:`STATE_FEATURES` for B decisions: what the policy's own state says.

    :param x: (B, d) the decisions' item vectors; ``long_term`` / ``short_term``: (B, d) profiles L, S.
    :param running_means: ``reward_ema``, ``drift_ema``, ``short_long_ema``, ``long_metric_ema``,
        ``short_metric_ema``, each (B,).
    :param shadow_cos_ema: (B, len(SHADOW_STRENGTHS)).
    """
    return {
        "cos_item_long": cosine_rows(x, long_term),
        "cos_item_short": cosine_rows(x, short_term),
        "cos_long_short": cosine_rows(long_term, short_term),
        "long_empty": ~(long_term != 0).any(axis=1),
        **{name: running_means[name] for name in RUNNING_MEAN_NAMES},
        "shadow_cos_ema": shadow_cos_ema,
    }


#: The running means of the observation, by their raw-quantity names (state kept by engine and runtime).
RUNNING_MEAN_NAMES: tuple[str, ...] = ("reward_ema", "drift_ema", "short_long_ema", "long_metric_ema", "short_metric_ema")


def _log_scaled(x: np.ndarray, log_max: float) -> np.ndarray:
    return np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0)) / log_max


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _feature_column(name: str, raw: Mapping[str, np.ndarray], max_action_weight: float) -> np.ndarray:
    """One feature before clipping (:func:`encode_features` clips every column to its bounds)."""
    r = raw
    if name in ("cos_item_long", "cos_item_short", "cos_long_short", "drift_ema", "long_empty", "reward_ema",
                "long_metric_ema", "short_metric_ema"):
        return np.asarray(r[name], dtype=np.float64)
    if name == "short_long_ema":
        return np.asarray(r[name], dtype=np.float64) / 2.0
    if name.startswith("shadow_"):
        k = _SHADOW_NAMES.index(name)
        return np.asarray(r["shadow_cos_ema"], dtype=np.float64)[:, k]
    if name == "action_weight":
        return np.asarray(r["action_weight"], dtype=np.float64) / max_action_weight
    if name == "feedback_value":
        return np.asarray(r["value"], dtype=np.float64) / VALUE_SCALE
    if name == "log_gap_event":
        return _log_scaled(r["gap_event"], _LOG_GAP)
    if name == "log_gap_decision":
        return _log_scaled(r["gap_decision"], _LOG_GAP)
    if name in ("hour_sin", "hour_cos"):
        angle = 2 * np.pi * np.asarray(r["hour"], dtype=np.float64) / 24.0
        return np.sin(angle) if name == "hour_sin" else np.cos(angle)
    if name in ("weekday_sin", "weekday_cos"):
        angle = 2 * np.pi * np.asarray(r["weekday"], dtype=np.float64) / 7.0
        return np.sin(angle) if name == "weekday_sin" else np.cos(angle)
    if name == "log_events":
        return _log_scaled(r["n_events"], _LOG_COUNT)
    if name == "log_decisions":
        return _log_scaled(r["n_decisions"], _LOG_COUNT)
    if name == "category_new":
        return (np.asarray(r["category_count"]) == 0).astype(np.float64)
    if name == "category_fraction":
        return _ratio(r["category_count"], r["n_decisions"])
    if name == "category_streak":
        return np.asarray(r["category_streak"], dtype=np.float64) / STREAK_MAX
    if name == "category_diversity":
        return _ratio(r["categories_seen"], r["n_decisions"])
    raise KeyError(name)


def encode_features(
    raw: Mapping[str, np.ndarray], names: tuple[str, ...] = FEATURE_NAMES, *, max_action_weight: float = 1.0
) -> np.ndarray:
    """The bounded float32 feature matrix (B, len(names)) from raw quantities (see the module docstring).

    :param raw: raw quantities, each (B,) (``shadow_cos_ema``: (B, len(SHADOW_STRENGTHS))).
    :param names: which features, in which order (default: the whole observation, :data:`FEATURES` order).
    :param max_action_weight: the dataset's largest action weight (scales ``action_weight`` to [0, 1]).
    """
    if max_action_weight <= 0:
        max_action_weight = 1.0
    plan = _state_plan(tuple(names))
    out = None if plan is None else _state_columns(raw, plan)
    if out is None:
        cols = [_feature_column(name, raw, max_action_weight) for name in names]
        out = np.stack(cols, axis=1).astype(np.float32)
    low, high = _bounds(tuple(names))
    # Every feature is clipped to its declared bounds here, after the float32 cast (so rounding cannot
    # step outside them): gaps over a year, counts over 10,000, streaks over 20 saturate at 1.
    return clip(out, low, high)


@functools.lru_cache(maxsize=64)
def _bounds(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    idx = [FEATURE_INDEX[n] for n in names]
    return FEATURE_LOW[idx], FEATURE_HIGH[idx]


#: State features that are their raw quantity as float64 (:func:`_feature_column`'s first case).
_AS_IS = frozenset(("cos_item_long", "cos_item_short", "cos_long_short", "drift_ema", "long_empty", "reward_ema",
                    "long_metric_ema", "short_metric_ema"))


@functools.lru_cache(maxsize=64)
def _state_plan(names: tuple[str, ...]) -> tuple[tuple[tuple[str, int | None], ...], tuple[int, ...]] | None:
    """For ``names`` made of state features only (the engine's and the runtime's per-decision call): per
    column the raw key and the shadow column (or None), and the columns halved (``short_long_ema``);
    None for any other feature (then each column goes through :func:`_feature_column`)."""
    sources: list[tuple[str, int | None]] = []
    halved: list[int] = []
    for j, name in enumerate(names):
        if name in _AS_IS:
            sources.append((name, None))
        elif name == "short_long_ema":
            sources.append((name, None))
            halved.append(j)
        elif name in _SHADOW_NAMES:
            sources.append(("shadow_cos_ema", _SHADOW_NAMES.index(name)))
        else:
            return None
    return tuple(sources), tuple(halved)


def _state_columns(raw: Mapping[str, np.ndarray],
                   plan: tuple[tuple[tuple[str, int | None], ...], tuple[int, ...]]) -> np.ndarray | None:
    """:func:`_feature_column`'s values for a :func:`_state_plan`, float32 (B, columns): the same numbers (each
    raw quantity widened to float64, ``short_long_ema`` divided by 2, then the float32 cast), written row by row
    into one (columns, B) block instead of a call and an array per column. None unless the quantities are (B,)
    arrays (then :func:`_feature_column` handles them)."""
    sources, halved = plan
    if not sources:
        return None
    first = raw[sources[0][0]]
    if np.ndim(first) != 1:
        return None
    block = np.empty((len(sources), np.shape(first)[0]))
    for j, (key, column) in enumerate(sources):
        block[j] = raw[key] if column is None else np.asarray(raw[key])[:, column]
    if halved:
        block[list(halved)] /= 2.0
    return block.T.astype(np.float32, order="C")


# ---------------------------------------------------------------------------------------- decoding
def decode_gap_seconds(feature: np.ndarray) -> np.ndarray:
    """Invert ``log_gap_*``: seconds (gaps of a year or more decode to a year)."""
    return np.expm1(np.asarray(feature, dtype=np.float64) * _LOG_GAP)


def decode_count(feature: np.ndarray) -> np.ndarray:
    """Invert ``log_events`` / ``log_decisions``: the count (rounded; 10,000+ decodes to 10,000)."""
    return np.rint(np.expm1(np.asarray(feature, dtype=np.float64) * _LOG_COUNT))


def decode_hour(sin: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Invert ``hour_sin`` / ``hour_cos``: the hour (0-23, rounded)."""
    hour = np.arctan2(np.asarray(sin, np.float64), np.asarray(cos, np.float64)) * 24.0 / (2 * np.pi)
    return np.rint(hour).astype(np.int64) % 24


def decode_weekday(sin: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Invert ``weekday_sin`` / ``weekday_cos``: the weekday (0 = Monday)."""
    day = np.arctan2(np.asarray(sin, np.float64), np.asarray(cos, np.float64)) * 7.0 / (2 * np.pi)
    return np.rint(day).astype(np.int64) % 7


class FeatureView:
    """Named, decoded access to a batch of observations, for rules.

    >>> view = FeatureView(obs)                        # doctest: +SKIP
    >>> view["cos_item_long"], view.gap_seconds, view.n_decisions, view.hour
    """

    def __init__(self, observations: np.ndarray) -> None:
        obs = np.asarray(observations)
        self.obs = obs[None, :] if obs.ndim == 1 else obs

    def __getitem__(self, name: str) -> np.ndarray:
        return self.obs[:, FEATURE_INDEX[name]]

    @property
    def gap_seconds(self) -> np.ndarray:
        """Seconds since the user's previous event (any type)."""
        return decode_gap_seconds(self["log_gap_event"])

    @property
    def decision_gap_seconds(self) -> np.ndarray:
        """Seconds since the user's previous decision (positive event)."""
        return decode_gap_seconds(self["log_gap_decision"])

    @property
    def n_events(self) -> np.ndarray:
        return decode_count(self["log_events"])

    @property
    def n_decisions(self) -> np.ndarray:
        return decode_count(self["log_decisions"])

    @property
    def category_streak(self) -> np.ndarray:
        return np.rint(self["category_streak"] * STREAK_MAX)

    @property
    def hour(self) -> np.ndarray:
        return decode_hour(self["hour_sin"], self["hour_cos"])

    @property
    def weekday(self) -> np.ndarray:
        return decode_weekday(self["weekday_sin"], self["weekday_cos"])
