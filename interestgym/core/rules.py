"""Hand-written profile-update rules (the baselines): their formulas, pure numpy.

Shared by the evaluator, training (the reference a learned policy starts from) and the production
runtime (a shipped rule, or the reference under a learned residual). Their tuning grids are in
:mod:`interestgym.agents.rules`.

Every baseline is a :class:`~interestgym.envs.policies.Policy`: a stateless map from observations to
actions in the env's [-1, 1]^4 box (strengths (a_L, a_S, w, p) in [0, 1] through
:func:`~interestgym.core.protocol.strengths_to_action`), plus a fixed
:class:`~interestgym.core.interest.ScoringConfig` for the rules that add a score term. What a rule
needs from the past (gap, counts, streak, hour, similarity of the item to the profiles) it reads from
the observation with :class:`~interestgym.core.features.FeatureView`.

==========================  ===========================================================================
``static``                   L = the user's first positive item, never updated again (a_L = 1 while L is
                             empty, else 0); w = 0.
``always_replace``           L = S = the latest positive item (a_L = a_S = 1, w = 1).
``mean_history``             L = running mean of the positives' directions: a_L = 1 / (n + 1) after n
                             decisions (each step renormalises, so it is the mean of directions up to
                             renormalisation); w = 0.
``ema``                      one profile, fixed strength a = ``rate``; w = 0; p = ``popularity_weight`` (both tuned).
``ema_two_profile``          L with a_L = ``long_rate``, S with a_S = ``short_rate``, fixed mix w =
                             ``short_weight`` and popularity weight p = ``popularity_weight`` (all tuned):
                             the "best tuned fixed rule" of the acceptance test.
``time_decay``               one profile, a = max(``min_rate``, 1 - 2^(-gap / ``half_life_hours``)) with gap =
                             hours since the previous decision (a long absence makes the old profile
                             stale; the minimum so that bursts still move it), a = 1 while L is empty;
                             a_S = w = 0, p = ``popularity_weight`` (the three tuned).
``recsim_saturating``        RecSim-style saturating step: a_L = a0 (1 - clip(cos(x, L), 0, 1)), a0 =
                             ``base_rate``, a_L = 1 while L is empty: an item the profile already explains
                             moves it little, a novel one moves it a lot (the interest-evolution model's
                             step that shrinks as interest saturates); a0 tuned; a_S = ``short_rate``, w =
                             ``short_weight``, p = ``popularity_weight`` start at the tuned two-profile
                             rule's and are tuned again.
``behaviour_rule``           the seed's behaviour rule: at the k-th consecutive decision in one category
                             (this one included: streak + 1 >= k, k = ``streak``, streak = the previous
                             decisions in a row in its category, a count, not the scaled feature) and after, the
                             short-term profile jumps to the item (a_S = 1) and takes weight w_burst =
                             ``burst_weight`` in the score; otherwise the tuned two-profile rule (a_L =
                             ``long_rate``, a_S = ``short_rate``, w = ``short_weight``); k, w_burst tuned.
``context_rule``             the seed's context rule: time-of-day profiles (4 slots of 6 h), the current
                             slot's updated at every decision with strength ``context_rate``, added to the
                             score with ``beta_ctx`` (both tuned); L, S, w, p start at the tuned two-profile
                             rule's and are tuned again with the context term (coordinate ascent).
``bayesian_category``        Dirichlet category counts with forgetting (Dirichlet ``prior`` per category);
                             ``beta_cat`` log P(cat(c) | user) in the score; beta_cat and the
                             ``forgetting`` tuned: a fixed factor f, or ``None``
                             = tied to the rule's long-term strength (f = 1 - a_L, the mode a learned
                             policy gets: see ScoringConfig); with ``slot_weight`` lambda > 0 (tuned,
                             0 included) the counts of the current time-of-day slot are added with
                             weight lambda = ``slot_weight`` (P(cat | user, slot)); on logs of impressions,
                             with ``exposure`` b > 0 (tuned, 0 included) the term is clicks per exposure,
                             log P(cat | user) - log(shown(cat) + b), shown = a forgetful count of the
                             candidates of the user's scored impressions (those with a click and a
                             non-click); with ``value_gain`` s > 0 (tuned, 0 included, where the
                             events' feedback values vary) an event adds ``clip(1 + s (v / median - 1),
                             0, 2)`` to its category's count instead of 1 (v its ``feedback_value``
                             feature: a read fraction, a rating, scaled; median = ``value_median``, of the
                             tuning users' decisions);
                             L, S, w, p start at the tuned two-profile rule's and are tuned
                             again with the category term (coordinate ascent; on the quick start p ends
                             at 1: the profiles leave the score, popularity and the category term rank).
``popularity``               rank by training popularity only (p = 1): the reference a personalised
                             rule must beat.
==========================  ===========================================================================

"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.core.features import FEATURE_INDEX, FeatureView
from interestgym.core.interest import ScoringConfig
from interestgym.core.numeric import clip, clip_float, finite_number
from interestgym.core.protocol import (
    ENV_ACTION_NAMES,
    GAIN_CHANGE,
    env_action_layout,
    strengths_to_action,
)
from interestgym.errors import InterestGymError

LN2 = float(np.log(2.0))
#: The column of the count gain's change in an env action (a rule that weighs its counts fills it).
_GAIN_COLUMN = ENV_ACTION_NAMES.index(GAIN_CHANGE)
#: The observation column of the event's feedback value (what bayesian_category's value gain reads).
_VALUE_COLUMN = FEATURE_INDEX["feedback_value"]


class RuleParameterError(InterestGymError, ValueError):
    """A rule's parameter the rule does not have, or of the wrong type or range (:func:`check_rule_params`)."""


#: Rule parameters that only weigh score terms (w, p, beta_cat, beta_ctx, the Dirichlet prior, the slot
#: counts' lambda, the exposure prior b): rules that differ only in them move every profile, count and slot
#: alike (see :meth:`RulePolicy.state_key`, which still tells apart the rules that keep slot or exposure
#: counts from those that do not).
SCORE_ONLY_PARAMS: frozenset[str] = frozenset({"short_weight", "popularity_weight", "burst_weight", "beta_cat", "beta_ctx", "prior",
                                               "slot_weight", "exposure"})


class RulePolicy:
    """Base class of the baselines: ``name``, ``params`` (JSON-able), ``scoring`` and ``strengths``."""

    name = "rule"

    def __init__(self, scoring: ScoringConfig | None = None, **params: Any) -> None:
        self.params = dict(params)
        self.scoring = scoring or ScoringConfig()

    def strengths(self, view: FeatureView) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def act(self, observations: np.ndarray) -> np.ndarray:
        view = FeatureView(observations)
        n = view.obs.shape[0]
        strengths = np.empty((n, 4), dtype=np.float64)
        for column, value in enumerate(self.strengths(view)):
            strengths[:, column] = value  # a scalar or (n,) array: broadcast into its column
        return strengths_to_action(strengths)

    def act_row(self, observations: np.ndarray) -> list[float]:
        """:meth:`act` of one observation (1, n), as Python floats of its float32 values: the runtime's one-event
        update. A rule may give a cheaper form with the same numbers to the bit (``tests/test_transition_one_action.py``
        holds the product's own to :meth:`act`)."""
        return np.asarray(self.act(observations), dtype=np.float32)[0].tolist()

    def describe(self) -> dict[str, Any]:
        """What a run's config, its shipping decision and an export's manifest record of the rule; a rule another
        installed package adds also says which (``provider``: :func:`rule_from_record` checks it when read)."""
        out = {"name": self.name, "params": self.params, "scoring": self.scoring.as_dict()}
        provider = rule_provider(self.name)
        if provider is not None:
            out["provider"] = provider
        return out

    def state_key(self) -> str:
        """What the interest state under this rule depends on: its class, its parameters but the
        :data:`SCORE_ONLY_PARAMS`, and the state its score terms keep (category counts and their
        forgetting, their per-slot copies, time-slot profiles and their rate). Rules with equal keys replay one shared state in
        tuning (:func:`interestgym.envs.rollout.replay_shared`, which checks that their a_L and a_S agree
        at every decision)."""
        sc = self.scoring
        state = {"category_counts": sc.beta_cat != 0, "category_forgetting": sc.category_forgetting,
                 "slot_profiles": sc.beta_ctx != 0, "context_rate": sc.context_rate}
        if sc.slot_category_counts:  # only when kept: keys of rules without them read as before
            state["slot_category_counts"] = True
        if sc.exposure_counts:
            state["exposure_counts"] = True
        params = {k: v for k, v in self.params.items() if k not in SCORE_ONLY_PARAMS}
        return json.dumps([f"{type(self).__module__}.{type(self).__qualname__}", params, state], sort_keys=True, default=repr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.params)})"


class StaticFirstPolicy(RulePolicy):
    name = "static"

    def strengths(self, view):
        empty = view["long_empty"] > 0
        a = np.where(empty, 1.0, 0.0)
        return a, 0.0, 0.0, 0.0


class AlwaysReplaceRule(RulePolicy):
    name = "always_replace"

    def strengths(self, view):
        return 1.0, 1.0, 1.0, 0.0


class MeanHistoryPolicy(RulePolicy):
    name = "mean_history"

    def strengths(self, view):
        return 1.0 / (view.n_decisions + 1.0), 0.0, 0.0, 0.0


class EMAPolicy(RulePolicy):
    """One profile with a fixed strength ``rate``."""

    name = "ema"

    def __init__(self, rate: float = 0.2, popularity_weight: float = 0.0) -> None:
        super().__init__(rate=rate, popularity_weight=popularity_weight)

    def strengths(self, view):
        return self.params["rate"], 0.0, 0.0, self.params["popularity_weight"]


class TwoProfileEMAPolicy(RulePolicy):
    """L and S with fixed strengths, fixed mixing weight and popularity weight."""

    name = "ema_two_profile"

    def __init__(self, long_rate: float = 0.1, short_rate: float = 0.6, short_weight: float = 0.5,
                 popularity_weight: float = 0.0, scoring: ScoringConfig | None = None) -> None:
        super().__init__(scoring, long_rate=long_rate, short_rate=short_rate, short_weight=short_weight,
                         popularity_weight=popularity_weight)

    def strengths(self, view):
        p = self.params
        return p["long_rate"], p["short_rate"], p["short_weight"], p["popularity_weight"]

    def act(self, observations: np.ndarray) -> np.ndarray:
        """:meth:`RulePolicy.act`; where the strengths are this class's constants (not a subclass's own
        ``strengths``), their action row is computed once per set of values and repeated: the same numbers,
        without the per-call work (the runtime calls it once per event)."""
        if type(self).strengths is not TwoProfileEMAPolicy.strengths:
            return super().act(observations)
        obs = np.asarray(observations)
        return np.repeat(self._action_row(4), 1 if obs.ndim == 1 else obs.shape[0], axis=0)

    def act_row(self, observations: np.ndarray) -> list[float]:
        """:meth:`RulePolicy.act_row`: the constant strengths' row as floats, computed once (:meth:`_action_row`)."""
        if type(self).strengths is not TwoProfileEMAPolicy.strengths:
            return super().act_row(observations)
        return self._action_row(4, as_list=True)

    def _action_row(self, width: int, *, as_list: bool = False) -> Any:
        """(1, width) float32: the action of this rule's constant strengths, zeros after the fourth column;
        computed once per set of values (the parameters may change after a call: the row follows them).
        ``as_list``: the row's values as a new list of Python floats."""
        p = self.params
        key = (p["long_rate"], p["short_rate"], p["short_weight"], p["popularity_weight"], width)
        cached = self.__dict__.get("_action_rows")
        if cached is None or cached[0] != key:
            row = np.zeros((1, width), dtype=np.float32)
            row[:, :4] = strengths_to_action(np.array([key[:4]], dtype=np.float64))
            cached = (key, row, row[0].tolist())
            self.__dict__["_action_rows"] = cached
        return list(cached[2]) if as_list else cached[1]


class TimeDecayPolicy(RulePolicy):
    """a = max(a_min, 1 - 2^(-gap / half_life)), gap = seconds since the previous decision."""

    name = "time_decay"

    def __init__(self, half_life_hours: float = 24.0, min_rate: float = 0.05, popularity_weight: float = 0.0) -> None:
        super().__init__(half_life_hours=half_life_hours, min_rate=min_rate, popularity_weight=popularity_weight)

    def strengths(self, view):
        gap_h = view.decision_gap_seconds / 3600.0
        a = -np.expm1(-LN2 * gap_h / self.params["half_life_hours"])
        a = np.maximum(a, self.params["min_rate"])
        a = np.where(view["long_empty"] > 0, 1.0, a)
        return a, 0.0, 0.0, self.params["popularity_weight"]


class RecSimSaturatingPolicy(TwoProfileEMAPolicy):
    """a_L = a0 (1 - max(cos(x, L), 0)); S, w, p as the two-profile rule."""

    name = "recsim_saturating"

    def __init__(self, base_rate: float = 0.3, short_rate: float = 0.6, short_weight: float = 0.5,
                 popularity_weight: float = 0.0) -> None:
        super().__init__(0.0, short_rate, short_weight, popularity_weight)
        self.params = {"base_rate": base_rate, **{k: v for k, v in self.params.items() if k != "long_rate"}}

    def strengths(self, view):
        p = self.params
        a = p["base_rate"] * (1.0 - clip(view["cos_item_long"], 0.0, 1.0))
        a = np.where(view["long_empty"] > 0, 1.0, a)
        return a, p["short_rate"], p["short_weight"], p["popularity_weight"]


class BehaviourRulePolicy(TwoProfileEMAPolicy):
    """After ``streak`` consecutive decisions in one category, S jumps to the item and gets weight
    ``burst_weight``; otherwise the two-profile rule."""

    name = "behaviour_rule"

    def __init__(self, streak: int = 3, burst_weight: float = 0.8, long_rate: float = 0.1, short_rate: float = 0.6,
                 short_weight: float = 0.5, popularity_weight: float = 0.0) -> None:
        super().__init__(long_rate, short_rate, short_weight, popularity_weight)
        self.params.update(streak=int(streak), burst_weight=burst_weight)

    def strengths(self, view):
        p = self.params
        # category_streak counts previous decisions in a row in this category: this one makes streak+1.
        burst = view.category_streak + 1 >= p["streak"]
        a_s = np.where(burst, 1.0, p["short_rate"])
        w = np.where(burst, p["burst_weight"], p["short_weight"])
        return p["long_rate"], a_s, w, p["popularity_weight"]


class ContextRulePolicy(TwoProfileEMAPolicy):
    """Time-of-day slot profiles added to the score (ScoringConfig.beta_ctx / context_rate)."""

    name = "context_rule"

    def __init__(self, beta_ctx: float = 0.3, context_rate: float = 0.3, long_rate: float = 0.1, short_rate: float = 0.6,
                 short_weight: float = 0.5, popularity_weight: float = 0.0) -> None:
        super().__init__(long_rate, short_rate, short_weight, popularity_weight,
                         scoring=ScoringConfig(beta_ctx=beta_ctx, context_rate=context_rate))
        self.params.update(beta_ctx=beta_ctx, context_rate=context_rate)


class BayesianCategoryPolicy(TwoProfileEMAPolicy):
    """Dirichlet category counts with forgetting, beta_cat log P(cat(c) | user) in the score.

    ``forgetting``: the counts' factor in (0, 1], or ``None`` = ``1 - a_L`` with the rule's (fixed)
    ``long_rate`` as a_L: the same tied mode the learned policy uses.
    """

    name = "bayesian_category"

    def __init__(self, beta_cat: float = 0.1, forgetting: float | None = 0.9, prior: float = 1.0, long_rate: float = 0.1,
                 short_rate: float = 0.6, short_weight: float = 0.5, popularity_weight: float = 0.0,
                 slot_weight: float = 0.0, exposure: float = 0.0, value_gain: float = 0.0,
                 value_median: float | None = None) -> None:
        # 0 = no category counts per time of day / no division by what was shown / no weighing by the feedback value
        check_rule_params(self.name, {"slot_weight": slot_weight, "exposure": exposure, "value_gain": value_gain})
        if value_gain and (not finite_number(value_median) or value_median <= 0):
            raise InterestGymError(f"bayesian_category value_median={value_median!r} with value_gain={value_gain!r}: expected "
                                   "a finite number > 0 (the median feedback value of the tuning users' decisions)")
        super().__init__(long_rate, short_rate, short_weight, popularity_weight,
                         scoring=ScoringConfig(beta_cat=beta_cat, category_forgetting=forgetting, category_prior=prior,
                                               category_slot_weight=float(slot_weight), category_exposure_prior=float(exposure)))
        self.params.update(beta_cat=beta_cat, forgetting=forgetting, prior=prior)
        if slot_weight:  # only when used: the parameters of a rule without slot counts read as before
            self.params["slot_weight"] = float(slot_weight)
        if exposure:  # likewise: clicks per exposure, with b = exposure
            self.params["exposure"] = float(exposure)
        if value_gain:  # likewise: an event counts s x (value / median) + 1 - s (see act)
            self.params.update(value_gain=float(value_gain), value_median=float(value_median))  # type: ignore[arg-type]

    def act(self, observations: np.ndarray) -> np.ndarray:
        """The two-profile rule's (n, 4) actions; with ``value_gain`` s > 0, (n, 7) in the engine's layout
        (:data:`~interestgym.core.protocol.ENV_ACTION_NAMES`): no keep or tracker change, and the count gain
        change ``clip(s x (v / median - 1), -1, 1)`` with v the event's ``feedback_value``, so the event adds
        ``clip(1 + change, 0, 2)`` to its category's count (s = 1: v / median, a typical event 1, a read of
        half the median 0.5). The same column a learned gain lever moves (``compose_residual`` adds to it)."""
        s = self.params.get("value_gain")
        if not s:
            return super().act(observations)
        obs = np.asarray(observations)  # the observations' own dtype, as FeatureView reads them
        obs = obs[None, :] if obs.ndim == 1 else obs
        out = np.repeat(self._action_row(_GAIN_COLUMN + 1), obs.shape[0], axis=0)  # the strengths; no keep / tracker change
        out[:, _GAIN_COLUMN] = clip(s * (obs[:, _VALUE_COLUMN] / self.params["value_median"] - 1.0), -1.0, 1.0)
        return out

    def act_row(self, observations: np.ndarray) -> list[float]:
        """:meth:`act` of one observation as floats: the count gain from the row's value as a numpy scalar of the
        observations' dtype, so each operation is the array form's (the same dtypes, the same rounding)."""
        s = self.params.get("value_gain")
        if not s:
            return super().act_row(observations)
        obs = np.asarray(observations)
        value = obs[0, _VALUE_COLUMN] if obs.ndim == 2 else obs[_VALUE_COLUMN]
        row = self._action_row(_GAIN_COLUMN + 1, as_list=True)
        row[_GAIN_COLUMN] = float(np.float32(clip(s * (value / self.params["value_median"] - 1.0), -1.0, 1.0)))
        return row


class PopularityPolicy(RulePolicy):
    """Rank by training popularity only (p = 1); the profiles are kept but do not enter the score."""

    name = "popularity"

    def __init__(self) -> None:
        super().__init__(ScoringConfig(popularity_weight=1.0))

    def strengths(self, view):
        return 0.2, 0.0, 0.0, 1.0


#: name -> class of every rule.
RULES: dict[str, type[RulePolicy]] = {
    "static": StaticFirstPolicy,
    "always_replace": AlwaysReplaceRule,
    "mean_history": MeanHistoryPolicy,
    "popularity": PopularityPolicy,
    "ema": EMAPolicy,
    "ema_two_profile": TwoProfileEMAPolicy,
    "time_decay": TimeDecayPolicy,
    "recsim_saturating": RecSimSaturatingPolicy,
    "behaviour_rule": BehaviourRulePolicy,
    "context_rule": ContextRulePolicy,
    "bayesian_category": BayesianCategoryPolicy,
}


class TrackerMixRule(RulePolicy):
    """``base`` (a tuned rule) with a sequence tracker's standardised score added to its score at the fixed
    weight ``tracker_weight`` (``ScoringConfig.tracker_weight``): the tracker/profile mixture. Named
    ``"<base>+tracker"``; :func:`make_rule` rebuilds it from that name and its parameters. Its replay data
    must carry the tracker's scores (``agents.sequence.term.attach_tracker``)."""

    SUFFIX = "+tracker"

    def __init__(self, base: RulePolicy, tracker_weight: float) -> None:
        from dataclasses import replace

        super().__init__(replace(base.scoring, tracker_weight=float(tracker_weight)), **base.params,
                         tracker_weight=float(tracker_weight))
        self.base = base
        self.name = base.name + self.SUFFIX

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.base.act(observations)

    def state_key(self) -> str:
        return self.base.state_key()  # the tracker term is score-only


@functools.cache
def rule_definitions() -> dict[str, str]:
    """Each rule's definition, as the table of this module's docstring gives it (its one home): name -> text.
    An export's manifest carries its rule's, so that a service in another language can implement it. Parsed
    once; callers must not modify the dict."""
    definitions: dict[str, str] = {}
    name = None
    for line in (__doc__ or "").splitlines():
        if line.startswith("``") and "``" in line[2:]:
            name, _, text = line[2:].partition("``")
            definitions[name] = text.strip()
        elif name is not None and line.startswith(" " * 20) and line.strip():
            definitions[name] += " " + line.strip()
        elif line.startswith("="):
            name = None
    return definitions


def rule_definition(name: str) -> str | None:
    """:func:`rule_definitions`' text of ``name`` (a ``<rule>+tracker`` mixture: its rule's, and the mixture's; a
    rule of another package (:func:`plugin_rules`): its class's docstring, first paragraph)."""
    if name.endswith(TrackerMixRule.SUFFIX):
        base = rule_definition(name[: -len(TrackerMixRule.SUFFIX)])
        return None if base is None else f"{base} Mixed with a sequence tracker: + tracker_weight z_trk(c) in the score."
    if name in RULES:
        return rule_definitions().get(name)
    plugin = plugin_rule(name)
    doc = inspect.getdoc(plugin.cls) if plugin is not None else None
    return " ".join(doc.split("\n\n")[0].split()) if doc else None


# ------------------------------------------------------------------------------ rules of other packages
#: The entry-point group through which an installed package adds rules of its own: in its pyproject.toml,
#: ``[project.entry-points."interestgym.rules"]`` ``my_rule = "my_package.rules:MyRule"``. Such a rule is then a
#: baseline like the built-in ones: tuned on its class's ``grid``, a row of every evaluation, a candidate for the
#: reference a residual agent starts from, and a rule an export ships or composes with (the runtime needs the same
#: package, at the same version, installed: the manifest names it).
RULE_ENTRY_POINT_GROUP = "interestgym.rules"
_PLUGIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class RulePluginError(InterestGymError):
    """An installed package's rule (entry-point group ``interestgym.rules``) that cannot be used, or a rule an
    artifact names that is not installed here (at the version it was made with)."""


@dataclass(frozen=True)
class PluginRule:
    """A rule another installed package provides: its class and where it comes from."""

    cls: type[RulePolicy]
    distribution: str
    version: str
    entry_point: str
    #: :func:`rule_source_sha256` of the rule's code as installed here (None: no source file to read)
    source_sha256: str | None = None

    def where(self) -> str:
        """The rule and its package, as an error message names them."""
        return _plugin_where(self.cls.name, self.entry_point, self.distribution, self.version)

    def provider(self) -> dict[str, str]:
        """What a run's config and an export's manifest record of it (:func:`rule_from_record` checks it): the package,
        its version, and the digest of the rule's source (an editable install edited at the same version acts otherwise)."""
        out = {"distribution": self.distribution, "version": self.version, "entry_point": self.entry_point,
               "group": RULE_ENTRY_POINT_GROUP}
        if self.source_sha256 is not None:
            out["source_sha256"] = self.source_sha256
        return out


#: id(module) -> (the module, the digest of its code when this process first read it): the code running, not the files
#: on disk now (an edit after the import is not what acts here until the process restarts).
_LOADED_DIGESTS: dict[int, tuple[Any, str | None]] = {}


def rule_source_sha256(cls: type, *, on_disk: bool = False) -> str | None:
    """The sha256 of the code a rule class runs: every ``.py`` file under the outermost regular package above its
    module (the folders with an ``__init__.py`` above it; sorted by path, each hashed with its path relative to that
    folder), or the module's own file when no folder above it has one (a top-level module, a script, a module of a
    namespace package: then only that file); files in symlinked folders are not followed. Any edit of those files
    changes it, a comment too: what a package's version cannot tell apart when an editable install is edited.

    Taken when this process first reads the module (the code that runs here, whatever the files say later); with
    ``on_disk`` the files as they are now. None when there is no readable source (a class made by ``exec``, a file
    that cannot be read)."""
    module = sys.modules.get(cls.__module__)
    cached = _LOADED_DIGESTS.get(id(module))
    if cached is not None and cached[0] is module and not on_disk:
        return cached[1]
    digest = _source_digest(getattr(module, "__file__", None))
    if not on_disk and module is not None:
        _LOADED_DIGESTS[id(module)] = (module, digest)
    return digest


def _source_digest(file: Any) -> str | None:
    if not file or not str(file).endswith(".py") or not Path(file).is_file():
        return None
    path = Path(file).resolve()
    root = path.parent if path.name == "__init__.py" else None
    folder = path.parent
    while (folder / "__init__.py").is_file():  # up to the outermost regular package above the module
        root = folder
        folder = folder.parent
    files = sorted((p for p in root.rglob("*.py") if "__pycache__" not in p.parts), key=lambda p: p.relative_to(root).as_posix()) \
        if root is not None else [path]
    base = root if root is not None else path.parent
    digest = hashlib.sha256()
    try:
        for f in files:
            digest.update(f.relative_to(base).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    except OSError:  # a broken link, an unreadable file: no digest (the version alone is checked)
        return None
    return digest.hexdigest()


def _plugin_where(name: str, entry_point: str, distribution: str, version: str) -> str:
    """A rule of another package and where it comes from, as an error message names them."""
    return f"rule {name!r} (entry point {name} = {entry_point} of {distribution} {version}, group {RULE_ENTRY_POINT_GROUP})"


#: Names a rule of another package may not take besides the built-in rules': the tables' other rows (the learned policy,
#: the oracle) and the words the options take for "every rule", "no rule" or "the best one".
RESERVED_RULE_NAMES = frozenset({"ppo", "oracle", "best", "none", "all", "rule", "learned", "shipped", "custom"})


@functools.cache
def _rule_entry_points() -> dict[str, tuple[Any, ...]]:
    """name -> the entry points of that name in :data:`RULE_ENTRY_POINT_GROUP` (not loaded: listing them imports no
    package's code), in name order."""
    from importlib.metadata import entry_points

    found: dict[str, list[Any]] = {}
    for ep in sorted(entry_points(group=RULE_ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
        found.setdefault(ep.name, []).append(ep)
    return {name: tuple(eps) for name, eps in found.items()}


def rule_parameters(cls: type) -> list[str]:
    """The parameters a rule class is made with: its constructor's named parameters but ``scoring`` (a
    ScoringConfig is no file's value); ``**params`` of a class without a constructor of its own are none."""
    return [name for name, p in inspect.signature(cls).parameters.items()
            if name != "scoring" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@functools.cache
def plugin_rule(name: str) -> PluginRule | None:
    """The rule ``name`` an installed package adds through :data:`RULE_ENTRY_POINT_GROUP` (its entry point loaded and
    checked; only this one: a broken package elsewhere does not stop it), or None when none does. It must be a
    :class:`RulePolicy` subclass whose ``name`` is the entry point's, a name no built-in rule has nor
    :data:`RESERVED_RULE_NAMES` holds, one package's only, made with its defaults (every parameter has one: a rule is
    made by name); anything else is a :class:`RulePluginError` naming the package and the entry point (a broken package
    is not skipped in silence: uninstall it or fix it). Read once per process (:func:`refresh_plugin_rules` reads again)."""
    eps = _rule_entry_points().get(name)
    if not eps:
        return None
    ep = eps[0]
    dist = getattr(ep, "dist", None)
    dist_name = str(dist.name) if dist is not None else "an unknown package"
    version = str(dist.version) if dist is not None else "unknown"
    where = _plugin_where(ep.name, ep.value, dist_name, version)
    if not _PLUGIN_NAME.fullmatch(ep.name):
        raise RulePluginError(f"{where}: its name is not a word of letters, digits and _; expected one (rule names are "
                              "written in comma lists and file names)")
    if ep.name in RULES:
        raise RulePluginError(f"{where}: {ep.name!r} is a built-in rule's name; expected another name")
    if ep.name in RESERVED_RULE_NAMES:
        raise RulePluginError(f"{where}: {ep.name!r} names another row of the tables or an option's keyword; expected a name "
                              f"other than {', '.join(sorted(RESERVED_RULE_NAMES))}")
    if len(eps) > 1:
        others = ", ".join(f"{getattr(getattr(e, 'dist', None), 'name', 'an unknown package')} ({e.value})" for e in eps[1:])
        raise RulePluginError(f"{where}: {others} add{'s' * (len(eps) == 2)} a rule of that name too; expected one rule per name")
    try:
        cls = ep.load()
    except Exception as exc:  # the package's code: say which, keep the cause
        raise RulePluginError(f"{where}: importing it failed: {type(exc).__name__}: {exc}; fix {dist_name} or uninstall it") from exc
    if not (isinstance(cls, type) and issubclass(cls, RulePolicy)):
        raise RulePluginError(f"{where}: loads {cls!r}; expected a subclass of interestgym.core.rules.RulePolicy")
    if getattr(cls, "name", None) != ep.name:
        raise RulePluginError(f"{where}: its class {cls.__qualname__} has name {getattr(cls, 'name', None)!r}; expected "
                              f"{ep.name!r}, the entry point's name (a rule is found by its name)")
    signature = inspect.signature(cls).parameters
    required = [p for p in rule_parameters(cls) if signature[p].default is inspect.Parameter.empty]
    if required:
        raise RulePluginError(f"{where}: its constructor's parameter(s) {', '.join(required)} have no default; expected a "
                              "default for each (a rule is made by name, with its defaults where a run does not record a value)")
    return PluginRule(cls, dist_name, version, str(ep.value), rule_source_sha256(cls))


def plugin_rules() -> dict[str, PluginRule]:
    """name -> :class:`PluginRule` of every rule installed packages add (each loaded and checked by :func:`plugin_rule`),
    in name order: what the lists of every baseline read. Built-in rules never need it."""
    return {name: plugin_rule(name) for name in _rule_entry_points()}  # type: ignore[misc]


def refresh_plugin_rules() -> None:
    """Read the installed packages' rules again (a package installed or upgraded since this process read them)."""
    _rule_entry_points.cache_clear()
    plugin_rule.cache_clear()


def rule_class(name: str) -> type[RulePolicy] | None:
    """The class of the rule ``name``: a built-in one (:data:`RULES`), else the one an installed package adds (only
    that package's entry point is read); None when there is none."""
    if name in RULES:
        return RULES[name]
    plugin = plugin_rule(name)
    return None if plugin is None else plugin.cls


def rule_provider(name: str) -> dict[str, str] | None:
    """Where the rule ``name`` (or a ``<rule>+tracker`` mixture's rule) comes from when an installed package adds it
    (:meth:`PluginRule.provider`); None for a built-in rule."""
    base = name.removesuffix(TrackerMixRule.SUFFIX)
    if base in RULES:
        return None
    plugin = plugin_rule(base)
    return None if plugin is None else plugin.provider()


def rule_from_record(record: Mapping[str, Any], where: str) -> RulePolicy:
    """The rule a run's config or an export's manifest records (``{"name", "params"[, "provider"]}``), made with
    :func:`make_rule`. A rule another package provides must be installed here, from that package at the version
    recorded: otherwise a :class:`RulePluginError` saying ``where`` it was read and what to install (another version's
    code could act otherwise than the rule the run was trained, selected and measured with)."""
    name, provider = record["name"], record.get("provider")
    if isinstance(provider, Mapping):
        check_rule_provider(name, provider, where)
    return make_rule(name, **(record.get("params") or {}))


def _normalised(distribution: Any) -> str:
    """A distribution's name as packaging compares them (PEP 503: case and runs of ``-_.`` do not matter)."""
    return re.sub(r"[-_.]+", "-", str(distribution)).lower()


def check_rule_provider(name: str, provider: Mapping[str, Any], where: str) -> None:
    """A :class:`RulePluginError` unless the package ``provider`` records (:meth:`PluginRule.provider`) adds the rule
    ``name`` here, at the version recorded, from the same entry point. On a miss the installed packages are read again
    once (one installed since this process read them, e.g. by a running service's operator, is then found)."""
    base = name.removesuffix(TrackerMixRule.SUFFIX)
    dist, version, entry = provider.get("distribution"), provider.get("version"), provider.get("entry_point")

    source = provider.get("source_sha256")  # None: recorded before the digest was (the version alone is checked)

    def same_package(plugin: PluginRule | None) -> bool:
        return (plugin is not None and _normalised(plugin.distribution) == _normalised(dist) and plugin.version == version
                and (entry is None or plugin.entry_point == entry))

    def fits(plugin: PluginRule | None) -> bool:
        return same_package(plugin) and (source is None or plugin.source_sha256 == source)  # type: ignore[union-attr]

    plugin = plugin_rule(base)
    if not fits(plugin):
        refresh_plugin_rules()
        plugin = plugin_rule(base)
    if plugin is None:
        raise RulePluginError(f"{where}: rule {base!r} comes from the package {dist} {version} (entry point "
                              f"{entry}, group {RULE_ENTRY_POINT_GROUP}), which is not installed here; "
                              f"expected it installed: pip install '{dist}=={version}'")
    if same_package(plugin) and not fits(plugin):
        disk = rule_source_sha256(plugin.cls, on_disk=True)  # type: ignore[union-attr]
        if disk == source:  # the files now hold the recorded code; this process runs what it imported before the edit
            raise RulePluginError(f"{where}: rule {base!r} was recorded from {dist} {version} with source sha256 {source[:12]}, "
                                  f"which the files hold now, but this process runs the code it imported before they "
                                  f"changed (sha256 {(plugin.source_sha256 or 'unreadable')[:12]}); restart it")
        raise RulePluginError(f"{where}: rule {base!r} was recorded from {dist} {version} with source sha256 {source[:12]}; "
                              f"the code of {dist} {version} installed here differs (sha256 "
                              f"{(plugin.source_sha256 or 'unreadable')[:12]}: edited since, e.g. in an editable install?), so "
                              f"its rule may act otherwise; expected the code it was recorded with (or train and export again "
                              "with this one, ideally at a new version)")
    if not fits(plugin):
        found = f"{plugin.distribution} {plugin.version} (entry point {plugin.entry_point})"
        raise RulePluginError(f"{where}: rule {base!r} was recorded from {dist} {version} (entry point {entry}); {found} "
                              f"adds it here, whose rule may act otherwise; expected pip install '{dist}=={version}' "
                              "(or train and export again with this one)")


#: Rule parameters that are a rate or a weight in [0, 1] (the strengths and mixing weights a rule acts with).
_UNIT_PARAMS = frozenset({"rate", "long_rate", "short_rate", "short_weight", "popularity_weight", "min_rate", "base_rate",
                          "context_rate", "burst_weight"})
#: Rule parameters that are >= 0 (0 = the term off): bayesian_category's slot weight, exposure prior and value gain.
_NONNEGATIVE_PARAMS = frozenset({"slot_weight", "exposure", "value_gain", "tracker_weight"})
#: Rule parameters that may be None: the category forgetting tied to a_L, no value median without a value gain.
OPTIONAL_RULE_PARAMS = frozenset({"forgetting", "value_median"})


def _unit_param(key: str) -> bool:
    """A rate or a weight in [0, 1]: the built-ins' (:data:`_UNIT_PARAMS`) and any other ``*_rate`` / ``*_weight`` (a
    package's rule's), but the weights that are >= 0 (:data:`_NONNEGATIVE_PARAMS`: a slot weight of 4)."""
    return key in _UNIT_PARAMS or (key.endswith(("_rate", "_weight")) and key not in _NONNEGATIVE_PARAMS)


def check_rule_params(name: str, params: Mapping[str, Any]) -> None:
    """:class:`RuleParameterError` unless every parameter is a finite number (None where :data:`OPTIONAL_RULE_PARAMS` allow it),
    a rate or weight in [0, 1], >= 0 where :data:`_NONNEGATIVE_PARAMS` say, ``half_life_hours`` > 0 and ``streak`` a whole
    number >= 1: what a rule read from a file (an export's manifest, a config, an env's JSON arguments) must hold before
    it acts. The score terms' own ranges are :class:`~interestgym.core.interest.ScoringConfig`'s."""
    for key, value in params.items():
        if value is None and key in OPTIONAL_RULE_PARAMS:
            continue
        nonnegative = key in _NONNEGATIVE_PARAMS
        if not finite_number(value) or nonnegative and value < 0:
            raise RuleParameterError(f"rule {name!r} parameter {key}={value!r}: expected a finite number{' >= 0' * nonnegative}")
        if _unit_param(key) and not 0 <= value <= 1:
            raise RuleParameterError(f"rule {name!r} parameter {key}={value!r}: expected a number in [0, 1]")
        if key == "half_life_hours" and value <= 0:
            raise RuleParameterError(f"rule {name!r} parameter {key}={value!r}: expected a number > 0")
        if key == "streak" and (value < 1 or value != int(value)):
            raise RuleParameterError(f"rule {name!r} parameter {key}={value!r}: expected a whole number >= 1")


def make_rule(name: str, **params: Any) -> RulePolicy:
    """A baseline by name with the given parameters (unknown name -> InterestGymError); ``"<rule>+tracker"``
    with a ``tracker_weight`` parameter is that rule mixed with a tracker (:class:`TrackerMixRule`). Parameters are
    checked (:func:`check_rule_params`); one the rule does not have is a :class:`RuleParameterError` naming those it has."""
    if name.endswith(TrackerMixRule.SUFFIX):
        params = dict(params)
        weight = params.pop("tracker_weight", None)
        if weight is None:
            raise InterestGymError(f"rule {name!r}: expected a tracker_weight parameter")
        check_rule_params(name, {"tracker_weight": weight})
        return TrackerMixRule(make_rule(name[: -len(TrackerMixRule.SUFFIX)], **params), float(weight))
    cls = rule_class(name)  # another package's rule: only its entry point is read
    if cls is None:
        names = [*RULES, *_rule_entry_points()]
        raise InterestGymError(f"baseline rule {name!r}: expected one of {', '.join(names)} (or a rule an installed package "
                               f"adds under the entry-point group {RULE_ENTRY_POINT_GROUP})")
    known = rule_parameters(cls)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise RuleParameterError(f"rule {name!r} parameter(s) {', '.join(unknown)}: not parameters of this rule; expected some of "
                                 f"{', '.join(known) or 'none'}")
    check_rule_params(name, params)
    return cls(**params)


@functools.lru_cache(maxsize=64)
def _residual_layout(names: tuple[str, ...]) -> tuple[np.ndarray | None, int]:
    """:func:`~interestgym.core.protocol.env_action_layout` of a residual action's names (read-only) and the
    width of the env action they fill: computed once per layout (the runtime composes one row per event)."""
    columns = env_action_layout(names)
    if columns is None:
        return None, len(names)
    columns.setflags(write=False)
    return columns, int(columns.max()) + 1


@functools.lru_cache(maxsize=64)
def _residual_row_layout(names: tuple[str, ...] | None, n_change: int) -> tuple[tuple[int, ...], int]:
    """The env-action columns of a residual change's components after the first four, and the width they fill (as
    Python ints: :func:`compose_residual_row`'s loop)."""
    columns, width = (None, n_change) if names is None else _residual_layout(names)
    return (tuple(range(4, width)) if columns is None else tuple(int(c) for c in columns[4:])), width


def compose_residual_row(base: list[float], change: list[float], names: tuple[str, ...] | None = None) -> list[float]:
    """:func:`compose_residual` of ONE row, in Python floats: ``base`` and ``change`` the row's float32 values
    (``array[0].tolist()``), the result ``compose_residual(...)[0].tolist()`` to the bit
    (``tests/test_transition_one_action.py``), without the ~10 numpy calls of the array form on one row: the runtime's
    one-event update. The sums are taken in float64 and rounded to float32 together, in one array: a float32 sum
    computed in float64 and rounded once is the float32 sum itself (float64 has more than twice float32's precision,
    so the double rounding is exact)."""
    if names is not None and len(change) != len(names):
        raise ValueError(f"a residual change of {len(change)} components for the {len(names)} names {list(names)}")
    target, width = _residual_row_layout(None if names is None else tuple(names), len(change))
    n_base = len(base)
    out = [0.0] * max(width, n_base)
    sums = [base[0] + change[0], base[1] + change[1], base[2] + change[2], base[3] + change[3]]
    if n_base > 4:  # a rule's own changes (engine layout): kept, and a learned change adds to its column
        out[4:n_base] = base[4:]
        sums += [out[j] + c for j, c in zip(target, change[4:])]
    else:  # a rule of four columns: the change's own (float32 values already)
        sums += change[4:]
    rounded = np.array(sums, dtype=np.float32).tolist()
    out[:4] = [clip_float(v, -1.0, 1.0) for v in rounded[:4]]
    for j, v in zip(target, rounded[4:]):
        out[j] = clip_float(v, -1.0, 1.0)
    return out


def params_text(params: dict[str, Any]) -> str | None:
    """A rule's parameters in one line (``name value, ...``: what the evaluation header and the report
    print), or None when it has none."""
    if not params:
        return None

    def one(k: str, v: Any) -> str:
        if k == "forgetting" and v is None:  # bayesian_category's counts forget at 1 - a_L: say it, not "None"
            return "forgetting tied to a_L (1 - a_L)"
        return f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"

    return ", ".join(one(k, v) for k, v in params.items())


def grid_edges(params: Mapping[str, Any], grid: Any) -> list[str]:
    """The tuned ``params`` that sit at an open end of the values their tuning tried (``grid``: the tuning's table,
    one dict per point tried), in words (``long_rate 0.4 is the largest tried``): a better setting may lie past it.
    An end that is the parameter's own bound is not open (a rate or weight of 0 or 1, a forgetting of 1, 0 for a term
    that is then off), nor is a parameter tried at one value."""
    out: list[str] = []
    if not isinstance(grid, list):
        return out
    for key, value in params.items():
        if not finite_number(value):
            continue
        tried = sorted({row[key] for row in grid if isinstance(row, Mapping) and finite_number(row.get(key))})
        if len(tried) < 2:
            continue
        unit = _unit_param(key) or key == "forgetting"
        if value == tried[-1] and not (unit and value >= 1):
            out.append(f"{key} {value:g} is the largest tried")
        elif value == tried[0] and not ((unit or key in _NONNEGATIVE_PARAMS) and value <= 0):
            out.append(f"{key} {value:g} is the smallest tried")
    return out


def compose_residual(base_actions: np.ndarray, change: np.ndarray, names: tuple[str, ...] | None = None) -> np.ndarray:
    """A residual policy's env action: ``[clip(base + change[:, :4], -1, 1), clip(base' + change[:, 4:], -1, 1)]``,
    in the engine's layout (:data:`~interestgym.core.protocol.ENV_ACTION_NAMES`), base' = the rule's own change
    in that column (0 for most rules; ``bayesian_category`` with a value gain has its count gain's).

    ``base_actions``: (n, 4) the reference rule's actions, or (n, 4 + j) for a rule that fills change columns
    itself (engine layout); ``change``: (n, k) the learned change, whose
    components are ``names`` (default: the engine's own order; the fifth changes the category keep factor,
    then the tracker's weight, the category gain and the time-slot profile's rate). Components a policy does
    not have are zeros in the env action, which leaves the rule's own. A zero change returns the rule's actions exactly
    (``x + 0 == x``), which is why an untrained residual agent is its reference rule.
    """
    base = np.asarray(base_actions, dtype=np.float32)
    change = np.asarray(change, dtype=np.float32).reshape(len(base), -1)
    if names is not None and change.shape[1] != len(names):
        raise ValueError(f"a residual change of {change.shape[1]} components for the {len(names)} names {list(names)}")
    columns, width = (None, change.shape[1]) if names is None else _residual_layout(tuple(names))
    extra = base.shape[1] - 4  # a rule's own changes (e.g. bayesian_category's count gain), engine layout
    out = np.zeros((len(base), max(width, base.shape[1])), dtype=np.float32)
    out[:, :4] = clip(base[:, :4] + change[:, :4], -1.0, 1.0)
    if width <= 4:
        if extra > 0:
            out[:, 4:] = base[:, 4:]
        return out
    target = slice(4, width) if columns is None else columns[4:]
    if extra > 0:
        # the learned change adds to the rule's own change in its column (zero where the rule has none)
        out[:, 4:base.shape[1]] = base[:, 4:]
        out[:, target] = clip(out[:, target] + change[:, 4:], -1.0, 1.0)
    else:  # a rule of four columns: the change's own (the common case, one operation less per event)
        out[:, target] = clip(change[:, 4:], -1.0, 1.0)
    return out
