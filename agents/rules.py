"""The baseline rules' tuning grids, and the registry the tuner and the CLI read.

The rules themselves (their formulas) live in :mod:`interestgym.core.rules`, where the evaluator and
the production runtime reach them; this module adds, per rule, the grid of parameters
:mod:`interestgym.agents.tuning` searches on validation users (a rule another installed package adds
brings its own: :func:`plugin_grids`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from interestgym.core.rules import (  # noqa: F401  (the rule classes, re-exported beside their grids)
    OPTIONAL_RULE_PARAMS,
    RULES,
    AlwaysReplaceRule,
    BayesianCategoryPolicy,
    BehaviourRulePolicy,
    ContextRulePolicy,
    EMAPolicy,
    MeanHistoryPolicy,
    PopularityPolicy,
    RecSimSaturatingPolicy,
    RuleParameterError,
    RulePluginError,
    RulePolicy,
    StaticFirstPolicy,
    TimeDecayPolicy,
    TwoProfileEMAPolicy,
    check_rule_params,
    make_rule,
    plugin_rule,
    plugin_rules,
    rule_parameters,
)

# ------------------------------------------------------------------------------------------ registry
#: popularity weights tried for ema_two_profile once its other parameters are tuned, and with the one-profile
#: rules' own parameters (score-only: every weight shares its state's replay in tuning)
POPULARITY_GRID = [0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
#: name -> (class, grid of its own tunable parameters; {} = nothing to tune)
GRIDS: dict[str, dict[str, list[Any]]] = {
    "static": {},
    "always_replace": {},
    "mean_history": {},
    "popularity": {},
    "ema": {"rate": [0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0], "popularity_weight": POPULARITY_GRID},
    "ema_two_profile": {
        "long_rate": [0.05, 0.1, 0.2, 0.35, 0.5],
        "short_rate": [0.3, 0.5, 0.7, 1.0],
        "short_weight": [0.2, 0.4, 0.6, 0.8],
    },
    "time_decay": {"half_life_hours": [1.0, 6.0, 24.0, 24.0 * 7, 24.0 * 30], "min_rate": [0.02, 0.1, 0.3],
                   "popularity_weight": POPULARITY_GRID},
    "recsim_saturating": {"base_rate": [0.1, 0.2, 0.4, 0.7, 1.0]},
    "behaviour_rule": {"streak": [2, 3, 4], "burst_weight": [0.5, 0.7, 0.9]},
    "context_rule": {"beta_ctx": [0.1, 0.3, 0.6], "context_rate": [0.1, 0.3]},
    # forgetting None = 1 - long_rate (tied; the coordinate ascent's long_rate grid then tunes it too);
    # slot_weight 0 = no per-slot counts (score-only: the non-zero values share one replay)
    "bayesian_category": {"beta_cat": [0.1, 0.3, 1.0, 3.0, 10.0], "forgetting": [0.8, 0.9, 0.95, 1.0, None],
                          "slot_weight": [0.0, 1.0, 2.0, 4.0, 8.0, 16.0], "exposure": [0.0, 1.0, 3.0, 10.0],
                          "value_gain": [0.0]},
}
#: bayesian_category's value gain s where the tuning users' feedback values vary (:func:`tuning_grids`).
VALUE_GAIN_GRID = [0.0, 0.5, 1.0, 2.0]
#: Parameters of a rule's own grid that tuning searches one at a time after the product of the others
#: (:func:`~interestgym.agents.tuning.tune_baselines`), from their first value: each value moves the counts
#: otherwise (a state of its own to replay), so in the product it would multiply the tuning's cost.
LINE_SEARCHED: dict[str, tuple[str, ...]] = {"bayesian_category": ("value_gain",)}

CLASSES: dict[str, type[RulePolicy]] = RULES
#: The built-in baselines; :func:`baseline_names` adds those of installed packages.
BASELINE_NAMES: tuple[str, ...] = tuple(CLASSES)


def baseline_names() -> tuple[str, ...]:
    """Every baseline: the built-in ones (:data:`BASELINE_NAMES`), then the rules installed packages add
    (:func:`~interestgym.core.rules.plugin_rules`: entry-point group ``interestgym.rules``)."""
    return BASELINE_NAMES + tuple(plugin_rules())


def plugin_grids(names: Iterable[str] | None = None) -> dict[str, dict[str, list[Any]]]:
    """The tuning grid of installed packages' rules (``names`` among them; None: every one): its class's ``grid``
    attribute (``{parameter: [values]}``; none or ``{}``: made with its defaults, nothing tuned), checked: each
    parameter one its constructor takes, each list non-empty, of numbers (None only where a built-in rule's parameter
    of that name may be None, which :func:`~interestgym.core.rules.check_rule_params` takes)."""
    wanted = plugin_rules() if names is None else {n: p for n in names if n not in RULES and (p := plugin_rule(n)) is not None}
    grids: dict[str, dict[str, list[Any]]] = {}
    for name, plugin in wanted.items():
        grid = getattr(plugin.cls, "grid", None) or {}
        where = f"{plugin.where()}: grid {grid!r}"
        if not isinstance(grid, dict):
            raise RulePluginError(f"{where}; expected a dict of parameter -> list of values")
        taken = rule_parameters(plugin.cls)
        for param, values in grid.items():
            if param not in taken:
                raise RulePluginError(f"{where}: {param!r} is not a parameter of {plugin.cls.__qualname__}; expected some of "
                                      f"{', '.join(taken) or 'none'}")
            if not isinstance(values, (list, tuple)) or not values or not all(
                    (v is None and param in OPTIONAL_RULE_PARAMS) or (isinstance(v, (int, float)) and not isinstance(v, bool))
                    for v in values):
                raise RulePluginError(f"{where}: {param}: {values!r}; expected a non-empty list of numbers")
            for value in values:  # every point up front, with the built-ins' range checks: not one failing after the tuning
                try:
                    check_rule_params(name, {param: value})
                except RuleParameterError as exc:
                    raise RulePluginError(f"{where}: {param}: {values!r}: {exc}") from None
        grids[name] = {k: list(v) for k, v in grid.items()}
    return grids


#: Rules that inherit (short_rate, short_weight, popularity_weight[, long_rate]) from ema_two_profile.
_INHERITS_TWO_PROFILE = {
    "recsim_saturating": ("short_rate", "short_weight", "popularity_weight"),
    "behaviour_rule": ("long_rate", "short_rate", "short_weight", "popularity_weight"),
    "context_rule": ("long_rate", "short_rate", "short_weight", "popularity_weight"),
    "bayesian_category": ("long_rate", "short_rate", "short_weight", "popularity_weight"),
}


def tuning_grids(slot_counts: bool = True, impressions: bool = True, value_median: float | None = None,
                 names: Iterable[str] | None = None) -> dict[str, dict[str, list[Any]]]:
    """The grids to tune: :data:`GRIDS`, with ``bayesian_category`` narrowed where a term does not apply:
    with ``slot_counts=False`` (``train --no-slot-counts``) without the category counts per time of day
    (``slot_weight`` 0 only), for a catalogue whose many categories would make every user's state several
    times larger; with ``impressions=False`` (scoring points with sampled negatives) without the counts of
    shown candidates (``exposure`` 0 only): the sampler's negatives were never shown to the user. With a
    ``value_median`` (:func:`feedback_median` of the tuning users: their decisions' feedback values vary)
    it also tries counting each event by its value, ``value_gain`` over :data:`VALUE_GAIN_GRID`. The rules of
    installed packages among ``names`` (None: every one) come with their own grids (:func:`plugin_grids`); a name list
    of built-in rules reads no package."""
    plugins = plugin_grids(names)
    if slot_counts and impressions and value_median is None:
        return {**GRIDS, **plugins} if plugins else GRIDS
    narrowed = dict(GRIDS["bayesian_category"])
    if not slot_counts:
        narrowed["slot_weight"] = [0.0]
    if not impressions:
        narrowed["exposure"] = [0.0]
    if value_median is not None:
        narrowed["value_gain"] = list(VALUE_GAIN_GRID)
        narrowed["value_median"] = [float(value_median)]
    return {**GRIDS, **plugins, "bayesian_category": narrowed}


def note_grids(slot_counts: bool, impressions: bool, values_vary: bool) -> dict[str, dict[str, list[Any]]]:
    """Today's grids as an older-grid note compares a saved tuning with them (:func:`~interestgym.agents.tuning.
    grid_params_missing`): the value gain's grid where the dataset's values vary
    (:func:`~interestgym.envs.replay_build.has_varying_values`); its median is a data constant the note skips."""
    return tuning_grids(slot_counts, impressions, 1.0 if values_vary else None, names=())  # the built-in grids' changes


def feedback_median(data: Any, users: Sequence[str] | None = None) -> float | None:
    """The median ``feedback_value`` of the decisions of ``users`` (all of ``data``'s when None) in a
    :class:`~interestgym.envs.replay_data.ReplayData`: the value a typical event has, which
    ``bayesian_category``'s value gain divides by (rounded to 4 significant digits, as the rule's parameter
    is written down). None where the values do not vary (one value for every decision, e.g. clicks or
    views without a dwell time or rating) or the median is 0: weighing by the value would change nothing."""
    from interestgym.envs.rollout import user_queue

    from interestgym.core.features import LOG_FEATURES

    column = data.decision_log_features[:, LOG_FEATURES.index("feedback_value")]
    if users is not None:
        index = user_queue(data, users)
        column = np.concatenate([column[a:b] for a, b in zip(data.user_decision_start[index], data.user_decision_end[index])]
                                or [column[:0]])
    if not len(column) or column.min() == column.max():
        return None
    median = float(f"{float(np.median(column)):.4g}")
    return median if median > 0 else None


def make_baseline(name: str, **params: Any) -> RulePolicy:
    """A baseline by name with the given parameters (unknown name -> InterestGymError)."""
    return make_rule(name, **params)
