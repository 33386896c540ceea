"""The DTW drift rule (issue 13, item 4): refresh the short-term profile when the user's recent items
depart from the ones before them.

**Signal.** At every decision, ``drift`` = :func:`interestgym.core.dtw.window_drift` of the user's last
2k decision items: multivariate DTW between the older k item vectors and the newest k (the current
decision's item included), scaled to [0, 1]; NaN while the user has fewer than 2k decisions. It
depends on the log only (the decisions' items), never on a policy's state, so it is computed once per
replay: :func:`decision_drift`.

**Rule** ``dtw_refresh``: the tuned two-profile rule (a_L, a_S, w, p), except that when ``drift > tau``
the short-term profile is reset to the current item (a_S = 1) and takes weight ``refresh_weight`` in
the score. ``tau`` and ``refresh_weight`` are tuned on validation users (:func:`tune_dtw_rule`), the
two-profile strengths come from the tuned ``ema_two_profile`` (as ``behaviour_rule`` does).

**Replay.** A rule sees only the observation, and today's observation has no drift column. Until the
engine carries one (a log feature ``dtw_drift``, see docs/sequence.md), :func:`replay_with_signal`
replays users through the unchanged :class:`~interestgym.envs.engine.ReplayEngine` and hands the rule
the drift of each row's current decision beside its observation: the same engine, users, scoring
points and metrics as :func:`~interestgym.envs.vector.evaluate_policy`, and with ``tau = inf`` exactly
the two-profile rule's numbers (``tests/test_dtw.py`` checks it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from interestgym.agents.rules import TwoProfileEMAPolicy

from interestgym.core.dtw import DRIFT_WINDOW, sequence_drift
from interestgym.core.features import FEATURE_INDEX, FeatureView
from interestgym.core.interest import ScoringConfig
from interestgym.core.protocol import strengths_to_action
from interestgym.errors import InterestGymError

#: k: drift compares the last k decision items with the k before them.
DTW_WINDOW = DRIFT_WINDOW
#: refresh weights tried by :func:`tune_dtw_rule` (besides the two-profile rule's own w).
REFRESH_WEIGHTS = (0.5, 0.7, 0.9)
#: quantiles of the validation users' drift tried as tau.
TAU_QUANTILES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def decision_drift(data: Any, k: int = DTW_WINDOW) -> np.ndarray:
    """(n_decisions,) drift at every decision of a ReplayData (NaN before a user's 2k-th decision)."""
    return sequence_drift(data.embeddings[data.decision_item], data.decision_user, k)


def attach_drift(data: Any, k: int = DTW_WINDOW) -> Any:
    """A copy of ``data`` whose extra observations include ``dtw_drift`` (:func:`decision_drift`, 0 where
    the user has fewer than 2k decisions: no evidence of drift yet)."""
    return data.with_extra_observations({"dtw_drift": np.clip(np.nan_to_num(decision_drift(data, k), nan=0.0), 0.0, 1.0)})


class DTWRefreshRule(TwoProfileEMAPolicy):
    """The two-profile rule, with S reset to the item and weight ``refresh_weight`` when drift > ``tau``."""

    name = "dtw_refresh"

    def __init__(self, tau: float = 0.5, refresh_weight: float = 0.8, window: int = DTW_WINDOW, long_rate: float = 0.1,
                 short_rate: float = 0.6, short_weight: float = 0.5, popularity_weight: float = 0.0,
                 scoring: ScoringConfig | None = None) -> None:
        super().__init__(long_rate, short_rate, short_weight, popularity_weight, scoring=scoring)
        self.params.update(tau=tau, refresh_weight=refresh_weight, window=int(window))

    def strengths_with_drift(self, view: FeatureView, drift: np.ndarray) -> tuple[np.ndarray, ...]:
        p = self.params
        refresh = np.nan_to_num(np.asarray(drift, dtype=np.float64), nan=-np.inf) > p["tau"]
        a_s = np.where(refresh, 1.0, p["short_rate"])
        w = np.where(refresh, p["refresh_weight"], p["short_weight"])
        return p["long_rate"], a_s, w, p["popularity_weight"]

    def act_with_drift(self, observations: np.ndarray, drift: np.ndarray) -> np.ndarray:
        """Actions for observations (n, N_FEATURES) and the drift (n,) of their decisions."""
        view = FeatureView(observations)
        n = view.obs.shape[0]
        strengths = [np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in self.strengths_with_drift(view, drift)]
        return strengths_to_action(np.stack(strengths, axis=1))

    def act(self, observations: np.ndarray) -> np.ndarray:
        if "dtw_drift" not in FEATURE_INDEX:
            raise InterestGymError("dtw_refresh needs the decision's DTW drift, which the observation does not carry yet; "
                                   "replay it with interestgym.agents.dtw_rule.replay_with_signal")
        view = FeatureView(observations)
        return self.act_with_drift(observations, view["dtw_drift"])


class _RuleWithSignal:
    """``rule`` acting with ``signal[decision]``: the replay loop passes each row's decision index."""

    def __init__(self, rule: DTWRefreshRule, signal: np.ndarray) -> None:
        self.rule, self.signal = rule, signal
        self.name, self.scoring = rule.name, rule.scoring

    def act_at(self, observations: np.ndarray, decisions: np.ndarray) -> np.ndarray:
        return self.rule.act_with_drift(observations, self.signal[decisions])

    def act(self, observations: np.ndarray) -> np.ndarray:
        raise InterestGymError("dtw_refresh acts with its decisions' drift: replay it with replay_with_signal")


def replay_with_signal(data: Any, rule: DTWRefreshRule, signal: np.ndarray, *, metric: str = "ndcg@10",
                       users: list[str] | None = None, batch_size: int = 1024) -> Any:
    """Replay ``users`` (default all of ``data``) with ``rule``, which gets ``signal[decision]`` with
    every observation: the batched evaluator's one loop (:func:`interestgym.envs.rollout.replay_users`),
    so the result is an :class:`~interestgym.envs.vector.EvaluationResult` like any policy's."""
    from interestgym.envs.vector import evaluate_policy

    signal = np.asarray(signal, dtype=np.float64)
    if signal.shape != (data.n_decisions,):
        raise InterestGymError(f"signal of shape {signal.shape}; expected one value per decision ({data.n_decisions},)")
    return evaluate_policy(data, _RuleWithSignal(rule, signal), metric=metric, users=users, batch_size=batch_size,
                           record_features=False, progress=False)


def tune_dtw_rule(valid: Any, two_profile: dict[str, Any], *, metric: str = "ndcg@10", users: list[str] | None = None,
                  k: int = DTW_WINDOW) -> dict[str, Any]:
    """Tune ``tau`` (quantiles of the validation users' drift) and ``refresh_weight`` on validation
    users, with the tuned two-profile strengths ``two_profile`` fixed.

    :return: ``{"params": ..., "valid_score": ..., "grid": [...]}`` as :func:`~interestgym.agents.tuning.tune_baselines`.
    """
    from interestgym.agents.tuning import grid_search

    drift = decision_drift(valid, k)
    finite = drift[np.isfinite(drift)]
    taus = sorted({round(float(np.quantile(finite, q)), 4) for q in TAU_QUANTILES}) if len(finite) else [1.0]
    weights = sorted({float(two_profile["short_weight"]), *REFRESH_WEIGHTS})
    base = {key: two_profile[key] for key in ("long_rate", "short_rate", "short_weight", "popularity_weight")}

    def score(policies: list[DTWRefreshRule]) -> list[float]:
        return [float(replay_with_signal(valid, p, drift, metric=metric, users=users).per_user()[metric].mean())
                for p in policies]

    res = grid_search(lambda params: DTWRefreshRule(**params), {"tau": taus, "refresh_weight": weights}, score,
                      fixed={**base, "window": k})
    return {"params": res.best_params, "valid_score": res.best_score, "grid": res.table}
