"""A sequence tracker as a score term beside the profiles: ``score += beta_trk * z_trk(c)``.

:func:`attach_tracker` gives a :class:`~interestgym.envs.replay_data.ReplayData` the tracker's score of
every candidate of every scoring point, standardised over the point's candidates
(:func:`interestgym.core.interest.standardise_scores`). A tracker reads only the user's decisions, never a
policy's actions, so these scores are part of the log, computed once per replay data, and any policy's
scoring can weigh them (``ScoringConfig.tracker_weight``): the engine adds the term like the category
and time-of-day terms.

:class:`~interestgym.core.rules.TrackerMixRule` is a rule with that term at a fixed weight: the tracker/profile mixture. Tuned on
validation users over :data:`TRACKER_WEIGHTS` on top of the best tuned rule
(:func:`tune_tracker_weight`), it is the reference a policy that uses the tracker must beat. The weight
is a score-only parameter: every grid point shares the rule's interest state, so the whole grid costs
one replay (:func:`interestgym.envs.rollout.replay_shared`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from interestgym.core.features import TRACKER_FEATURE_NAMES
from interestgym.core.interest import standardise_scores
from interestgym.core.rules import RulePolicy, TrackerMixRule

#: Tracker weights tried on top of a tuned rule (0 = the rule itself).
TRACKER_WEIGHTS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0)


def attach_tracker(data: Any, tracker: Any, result: Any = None, *, observe: str | None = None) -> Any:
    """A copy of ``data`` with ``point_tracker_z`` (flat float32, aligned with ``point_candidates``) and
    ``tracker`` (which tracker: its run and weights) set; ``data`` itself is not modified.

    :param tracker: a loaded :class:`~interestgym.agents.sequence.scoring.Tracker` (checked against the
        data's items and embeddings).
    :param result: ``tracker.score(data, keep_scores=True)`` when the caller has it already.
    :param observe: a step metric (e.g. ``ndcg@10``): also add the agent's tracker observations
        (:func:`tracker_observations`) to the data's extra observations.
    """
    res = result if result is not None and result.scores is not None else tracker.score(data, keep_scores=True)
    scores = res.scores
    assert scores is not None
    valid = np.isfinite(scores)
    z = standardise_scores(np.where(valid, scores, 0.0), valid)
    flat = z[valid]  # row-major: point by point, each point's candidates in order, as point_candidates
    if len(flat) != len(data.point_candidates):
        raise AssertionError(f"tracker scores for {len(flat)} candidates; the replay data has {len(data.point_candidates)}")
    info = {"name": tracker.name, "model": tracker.spec.model, "run": str(tracker.run_dir),
            "epoch": tracker.info.get("epoch"), "sha256": tracker.info.get("sha256")}
    attached = dataclasses.replace(data, point_tracker_z=flat.astype(np.float32), tracker=info)
    if observe is not None:
        obs = tracker_observations(attached, tracker, observe)
        attached = attached.with_extra_observations(dict(zip(TRACKER_FEATURE_NAMES, obs.T)))
    return attached


def tracker_observations(data: Any, tracker: Any, metric: str) -> np.ndarray:
    """The tracker observations (:data:`~interestgym.core.features.TRACKER_FEATURE_NAMES`) of every decision of ``data`` (a tracker
    attached), (n_decisions, 3) float32 in [0, 1]:

    * ``tracker_metric_ema``: the running mean (``core.transition.fold_outcomes``, as the engine folds the
      L-only and S-only metrics) of ``metric`` at the scoring points of the user's earlier steps, each
      point ranked by the tracker's standardised scores alone; 0 at a user's first decision;
    * ``tracker_top1_prob`` and ``tracker_entropy``: the tracker's softmax over the catalogue after this
      decision (:func:`~interestgym.agents.sequence.scoring.decision_confidence`).

    None of them reads a policy's action: they are part of the log, computed once per replay data.
    """
    from interestgym.agents.sequence.scoring import decision_confidence

    from interestgym.core.metrics import ranking_metrics
    from interestgym.core.transition import fold_outcomes

    points = np.arange(data.n_points)
    _, labels, length = data.padded_points(points)
    width = labels.shape[1]
    mask = np.arange(width)[None, :] < length[:, None]
    flat = np.where(mask, data.point_offsets[:-1, None] + np.arange(width)[None, :], 0)
    z = np.where(mask, data.point_tracker_z[flat] if len(data.point_tracker_z) else 0.0, 0.0)
    point_metric = ranking_metrics(z, labels, [metric])[metric]
    # each decision's step: the mean over its points (NaN when it has none: the running mean stays)
    counts = data.decision_point_end - data.decision_point_start
    sums = np.bincount(np.repeat(np.arange(data.n_decisions), counts), weights=point_metric, minlength=data.n_decisions)
    ema = np.zeros(data.n_decisions)
    for u in range(data.n_users):
        lo, hi = int(data.user_decision_start[u]), int(data.user_decision_end[u])
        mean = np.zeros((1, 1))
        for d in range(lo, hi):
            ema[d] = mean[0, 0]  # what the observation of decision d sees: steps before it
            mean = fold_outcomes(mean, sums[d: d + 1, None], counts[d: d + 1])
    confidence = decision_confidence(data, tracker.model)
    out = np.stack([ema, confidence["top1_prob"], confidence["entropy"]], axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def cached_tracker(run_dir: str) -> Any:
    """The tracker of ``run_dir`` (best weights), loaded once per process."""
    from interestgym.agents.sequence.scoring import load_tracker

    return load_tracker(run_dir, "best")


def tune_tracker_weight(data: Any, base: RulePolicy, metric: str = "ndcg@10", users: list[str] | None = None,
                        weights: tuple[float, ...] = TRACKER_WEIGHTS) -> tuple[TrackerMixRule, list[dict[str, float]]]:
    """The weight of ``weights`` whose mixture scores best on ``data`` (validation users, a tracker
    attached), first on ties; and the table of every weight's score (mean over users of ``metric``)."""
    from interestgym.agents.tuning import score_policies

    rules = [TrackerMixRule(base, w) for w in weights]
    scores = score_policies(data, rules, metric, users)
    best = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))
    return rules[best], [{"tracker_weight": w, "score": s} for w, s in zip(weights, scores)]
