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

from interestgym.core.interest import standardise_scores
from interestgym.core.rules import RulePolicy, TrackerMixRule

#: Tracker weights tried on top of a tuned rule (0 = the rule itself).
TRACKER_WEIGHTS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0)


def attach_tracker(data: Any, tracker: Any, result: Any = None) -> Any:
    """A copy of ``data`` with ``point_tracker_z`` (flat float32, aligned with ``point_candidates``) and
    ``tracker`` (which tracker: its run and weights) set; ``data`` itself is not modified.

    :param tracker: a loaded :class:`~interestgym.agents.sequence.scoring.Tracker` (checked against the
        data's items and embeddings).
    :param result: ``tracker.score(data, keep_scores=True)`` when the caller has it already.
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
    return dataclasses.replace(data, point_tracker_z=flat.astype(np.float32), tracker=info)


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
