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
from collections.abc import Sequence
from typing import Any

import numpy as np

from interestgym.core.features import TRACKER_FEATURE_NAMES
from interestgym.core.interest import standardise_scores
from interestgym.core.rules import RulePolicy, TrackerMixRule
from interestgym.errors import InterestGymError

#: Tracker weights tried on top of a tuned rule (0 = the rule itself).
TRACKER_WEIGHTS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0)


def attach_tracker(data: Any, tracker: Any, result: Any = None, *, observe: str | None = None,
                   out_of_fold: Sequence[tuple[Any, Sequence[str]]] | None = None) -> Any:
    """A copy of ``data`` with ``point_tracker_z`` (flat float32, aligned with ``point_candidates``) and
    ``tracker`` (which tracker: its run and weights) set; ``data`` itself is not modified.

    :param tracker: a loaded :class:`~interestgym.agents.sequence.scoring.Tracker` (checked against the
        data's items and embeddings).
    :param result: ``tracker.score(data, keep_scores=True)`` when the caller has it already.
    :param observe: a step metric (e.g. ``ndcg@10``): also add the agent's tracker observations
        (:func:`tracker_observations`) to the data's extra observations.
    :param out_of_fold: for the tracker's own training users (``data`` of the training split): ``(fold tracker,
        its fold's user ids)`` pairs (:func:`cached_folds`); each user is scored, and observed, by the tracker trained
        without the user's fold instead of ``tracker``. Every user of ``data`` must be in a fold.
    """
    # each fold's tracker with the mask of its users among data's (every user in exactly one), found once
    folds = None if out_of_fold is None else list(zip((t for t, _ in out_of_fold), _fold_members(data, out_of_fold)))
    if folds is not None:
        scores = _out_of_fold_scores(data, folds)
    else:
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
    if out_of_fold is not None:  # which trackers scored the training users
        info["out_of_fold"] = fold_weights(out_of_fold)
    attached = dataclasses.replace(data, point_tracker_z=flat.astype(np.float32), tracker=info)
    if observe is not None:
        obs = tracker_observations(attached, tracker, observe, folds=folds)
        attached = attached.with_extra_observations(dict(zip(TRACKER_FEATURE_NAMES, obs.T)))
    return attached


def _fold_members(data: Any, out_of_fold: Sequence[tuple[Any, Sequence[str]]]) -> list[np.ndarray]:
    """Per fold, which of ``data``'s users (a boolean mask over ``data.user_ids``) it holds; refuses users in no fold."""
    ids = np.asarray(data.user_ids, dtype=str)
    members = [np.isin(ids, np.asarray(list(users), dtype=str)) for _, users in out_of_fold]
    held = np.sum(members, axis=0) if members else np.zeros(len(ids), dtype=np.int64)
    if (held != 1).any():
        k = int(np.argmax(held != 1))
        raise InterestGymError(f"out-of-fold tracker scores: user {str(ids[k])!r} of {data.dataset_path} ({data.spec.split} split) is in "
                               f"{int(held[k])} of the tracker's {len(out_of_fold)} folds ({int((held != 1).sum())} such user(s)); "
                               "expected every training user in exactly one (the folds were cut from other users: train the "
                               "tracker again)")
    return members


def fold_weights(out_of_fold: Sequence[tuple[Any, Sequence[str]]]) -> list[str | None]:
    """Which out-of-fold trackers these are: their weights' sha256, fold by fold (what a run records and checks)."""
    return [fold.weights_sha256 for fold, _ in out_of_fold]


def _out_of_fold_scores(data: Any, folds: list[tuple[Any, np.ndarray]]) -> np.ndarray:
    """(n_points, C) candidate scores, NaN in padding, each point scored by the tracker of its user's fold (``folds``:
    each fold's tracker and the mask of its users over ``data.user_ids``)."""
    width = int(np.diff(data.point_offsets).max()) if data.n_points else 0
    scores = np.full((data.n_points, width), np.nan, dtype=np.float32)
    counts = data.decision_point_end - data.decision_point_start
    point_user = data.decision_user[np.repeat(np.arange(data.n_decisions), counts)]
    for fold_tracker, member in folds:
        points = np.flatnonzero(member[point_user])  # ascending: score_replay's order for these users
        if not len(points):
            continue
        res = fold_tracker.score(data, users=list(np.asarray(data.user_ids, dtype=str)[member]), keep_scores=True)
        scores[points, : res.scores.shape[1]] = res.scores
    return scores


def tracker_observations(data: Any, tracker: Any, metric: str, folds: list[tuple[Any, np.ndarray]] | None = None) -> np.ndarray:
    """The tracker observations (:data:`~interestgym.core.features.TRACKER_FEATURE_NAMES`) of every decision of ``data`` (a tracker
    attached), (n_decisions, 3) float32 in [0, 1]:

    * ``tracker_metric_ema``: the running mean (``core.transition.fold_outcomes``, as the engine folds the
      L-only and S-only metrics) of ``metric`` at the scoring points of the user's earlier steps, each
      point ranked by the tracker's standardised scores alone; 0 at a user's first decision;
    * ``tracker_top1_prob`` and ``tracker_entropy``: the tracker's softmax over the catalogue after this
      decision (:func:`~interestgym.agents.sequence.scoring.decision_confidence`).

    None of them reads a policy's action: they are part of the log, computed once per replay data.

    :param folds: out-of-fold trackers, each with the mask of its users over ``data.user_ids``: a user's confidence is
        its fold tracker's (:func:`attach_tracker` finds them).
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
    if folds is None:
        confidence = decision_confidence(data, tracker.model)
    else:  # each decision by its user's fold tracker
        confidence = {"top1_prob": np.zeros(data.n_decisions, np.float32), "entropy": np.zeros(data.n_decisions, np.float32)}
        for fold_tracker, member in folds:
            decisions = np.flatnonzero(member[data.decision_user])
            if len(decisions):
                fold_tracker.bind(data)
                part = decision_confidence(data, fold_tracker.model, decisions=decisions)
                for key, values in part.items():
                    confidence[key][decisions] = values
    out = np.stack([ema, confidence["top1_prob"], confidence["entropy"]], axis=1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def cached_tracker(run_dir: str) -> Any:
    """The tracker of ``run_dir`` (best weights), loaded once per process."""
    from interestgym.agents.sequence.scoring import load_tracker

    return load_tracker(run_dir, "best")


@functools.lru_cache(maxsize=4)
def cached_folds(run_dir: str) -> tuple[tuple[Any, tuple[str, ...]], ...] | None:
    """The out-of-fold trackers of ``run_dir`` (best weights) with their folds' user ids, loaded once per process; None
    for a tracker trained without ``--folds``."""
    from interestgym.agents.sequence.folder import fold_run_dir, read_folds
    from interestgym.agents.sequence.scoring import load_tracker

    users = read_folds(run_dir)
    if users is None:
        return None
    return tuple((load_tracker(fold_run_dir(run_dir, f), "best"), tuple(fold)) for f, fold in enumerate(users, start=1))


def tune_tracker_weight(data: Any, base: RulePolicy, metric: str = "ndcg@10", users: list[str] | None = None,
                        weights: tuple[float, ...] = TRACKER_WEIGHTS) -> tuple[TrackerMixRule, list[dict[str, float]]]:
    """The weight of ``weights`` whose mixture scores best on ``data`` (validation users, a tracker
    attached), first on ties; and the table of every weight's score (mean over users of ``metric``)."""
    from interestgym.agents.tuning import score_policies

    rules = [TrackerMixRule(base, w) for w in weights]
    scores = score_policies(data, rules, metric, users)
    best = int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))
    return rules[best], [{"tracker_weight": w, "score": s} for w, s in zip(weights, scores)]
