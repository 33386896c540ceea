"""The user-interest model: profile update and candidate scoring, batched over users (pure numpy).

One implementation shared by the replay env (batch of 1), the batched evaluator / vector env and the
production runtime.

* A **profile** is a unit vector in the encoder's space, or the zero vector meaning "no interest known"
  (cosine with it is 0 for every candidate, so every candidate ties).
* **Update** (:func:`update_profile`): ``P <- normalise((1 - a) P + a x)`` for the event's item vector x
  and strength a in [0, 1]; a = 0 leaves P unchanged (the "when"), a = 1 replaces it by x, and the first
  update with any a > 0 of a zero profile sets it to x.
* **Score** (:func:`score_candidates`) of candidate c::

      score(c) = (1 - p) (w cos(S, c) + (1 - w) cos(L, c)) + p pop(c)
                 + beta_cat log P(cat(c) | user, slot) + beta_ctx cos(T_slot(now), c) + beta_trk z_trk(c)

  with L / S the long- / short-term profiles, w the short-term weight, p the popularity weight, pop(c) in
  [0, 1] the item's normalised log-popularity, P(cat | user) a Dirichlet-smoothed category distribution
  from counts with forgetting (:func:`category_log_prob`) and T_slot the profile of the time-of-day slot.
  The counts forget with a fixed factor f (``counts <- f counts + onehot(cat(x))``) or, with
  ``ScoringConfig(category_forgetting=None)``, with ``1 - a_L`` of the decision: the policy's long-term
  strength then also decides how much of the category history it keeps (a_L = 0: keep all; a_L = 1:
  only the event's category). With ``category_slot_weight`` lambda > 0 the user also keeps counts per
  time-of-day slot (forgetting and growing with the same factor and weight, in the event's slot only), and
  P(cat | user, slot) comes from ``counts + lambda slot_counts(slot of now)``: the time of day shifts the
  category distribution where the user's own history says it should (lambda = 0: P(cat | user) alone). z_trk(c) is a sequence tracker's score of c standardised over the
  point's candidates (:func:`standardise_scores`; mean 0, sd 1, since raw dot products are unbounded).
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from interestgym.core.clock import N_TIME_SLOTS, time_slot  # noqa: F401  (re-exported: the slot of the context term)
from interestgym.errors import InterestGymError


@dataclass(frozen=True)
class ScoringConfig:
    """Fixed parts of a policy's scoring and state bookkeeping (the action sets the rest).

    :param popularity_weight: fixed p in [0, 1]; ``None`` takes p from the action.
    :param beta_cat: weight of log P(cat(c) | user) in the score (0 = off).
    :param category_forgetting: factor in (0, 1] the category counts are multiplied by at every decision
        before the new count is added (1 = never forget); ``None`` ties it to the decision's action:
        forgetting = ``1 - a_L`` (a_L the long-term strength in [0, 1], after the action's [-1, 1] ->
        [0, 1] map), so the policy chooses when to forget the category history (a_L = 1 keeps only the
        event's category).
    :param category_prior: Dirichlet pseudo-count per category (> 0).
    :param beta_ctx: weight of cos(T_slot(now), c) in the score (0 = off).
    :param context_rate: update strength of the current time slot's profile at every decision.
    :param tracker_weight: weight beta_trk >= 0 of a sequence tracker's standardised score in the score
        (0 = off; needs replay data with a tracker attached: ``agents.sequence.term.attach_tracker``).
    :param category_slot_weight: weight lambda >= 0 of the current time slot's category counts added to the
        user's counts before the category term's probability (0 = off; needs beta_cat != 0).
    :param category_exposure_prior: b >= 0: the category term becomes clicks per exposure,
        ``log P(cat | user) - log(exposure(cat) + b)``, exposure = a forgetful count of the candidates of the
        user's *scored* impressions per category (what was shown; it forgets with the category counts). As in
        the replay, an impression counts only when it is a scoring point: after the user's first decision,
        with a click and a candidate not clicked; an impression the user ignored entirely is not counted
        (a known limit of the term). 0 = off; needs beta_cat != 0, and logged impressions (on sampled
        negatives the "shown" candidates would be the sampler's).
    """

    popularity_weight: float | None = None
    beta_cat: float = 0.0
    category_forgetting: float | None = 1.0
    category_prior: float = 1.0
    beta_ctx: float = 0.0
    context_rate: float = 0.3
    tracker_weight: float = 0.0
    category_slot_weight: float = 0.0
    category_exposure_prior: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):  # numbers, before any comparison (a string raised a bare TypeError)
            name, value = f.name, getattr(self, f.name)
            if value is None and name in ("popularity_weight", "category_forgetting"):
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise InterestGymError(f"ScoringConfig.{name}={value!r}: expected a number")
        for name in ("beta_cat", "beta_ctx"):  # the other fields' range checks below refuse NaN and infinity
            if not np.isfinite(getattr(self, name)):
                raise InterestGymError(f"ScoringConfig.{name}={getattr(self, name)!r}: expected a finite number (0 = off)")
        if self.popularity_weight is not None and not 0.0 <= self.popularity_weight <= 1.0:
            raise InterestGymError(f"ScoringConfig.popularity_weight={self.popularity_weight}: expected None or a number in [0, 1]")
        if self.category_forgetting is not None and not 0.0 < self.category_forgetting <= 1.0:
            raise InterestGymError(f"ScoringConfig.category_forgetting={self.category_forgetting}: expected None (1 - a_L) or a number in (0, 1]")
        if not self.category_prior > 0.0:
            raise InterestGymError(f"ScoringConfig.category_prior={self.category_prior}: expected a number > 0")
        if not 0.0 <= self.context_rate <= 1.0:
            raise InterestGymError(f"ScoringConfig.context_rate={self.context_rate}: expected a number in [0, 1]")
        if not (np.isfinite(self.tracker_weight) and self.tracker_weight >= 0.0):
            raise InterestGymError(f"ScoringConfig.tracker_weight={self.tracker_weight}: expected a finite number >= 0")
        if not (np.isfinite(self.category_slot_weight) and self.category_slot_weight >= 0.0):
            raise InterestGymError(f"ScoringConfig.category_slot_weight={self.category_slot_weight}: expected a finite number >= 0")
        if self.category_slot_weight != 0 and self.beta_cat == 0:
            raise InterestGymError(f"ScoringConfig.category_slot_weight={self.category_slot_weight} with beta_cat=0: the per-slot "
                                   "counts weigh into the category term; expected beta_cat != 0, or category_slot_weight 0")
        if not (np.isfinite(self.category_exposure_prior) and self.category_exposure_prior >= 0.0):
            raise InterestGymError(f"ScoringConfig.category_exposure_prior={self.category_exposure_prior}: expected a finite number >= 0")
        if self.category_exposure_prior != 0 and self.beta_cat == 0:
            raise InterestGymError(f"ScoringConfig.category_exposure_prior={self.category_exposure_prior} with beta_cat=0: exposure "
                                   "divides the category term; expected beta_cat != 0, or category_exposure_prior 0")

    @property
    def slot_category_counts(self) -> bool:
        """True when the category term reads counts per time slot (beta_cat != 0 and lambda > 0)."""
        return self.beta_cat != 0 and self.category_slot_weight != 0

    @property
    def exposure_counts(self) -> bool:
        """True when the category term divides by the counts of shown candidates (beta_cat != 0 and b > 0)."""
        return self.beta_cat != 0 and self.category_exposure_prior != 0

    @property
    def ties_category_forgetting(self) -> bool:
        """True when the category counts forget with ``1 - a_L`` of each decision (``category_forgetting=None``)."""
        return self.category_forgetting is None

    def as_dict(self) -> dict[str, Any]:
        """The fields, without ``tracker_weight`` / ``category_slot_weight`` / ``category_exposure_prior`` when
        they are off (so configurations, manifests and tuned baselines written before those terms existed read
        the same)."""
        out = asdict(self)
        for name in ("tracker_weight", "category_slot_weight", "category_exposure_prior"):
            if not out[name]:
                del out[name]
        return out


def normalise_rows(vectors: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero ("no interest known").

    ``in_place=True``: when no row is zero, ``vectors`` itself is divided and returned (the same values, no new
    array: for a caller's own temporary, e.g. :func:`update_profile`'s).
    """
    norm = np.sqrt(np.einsum("...d,...d->...", vectors, vectors))[..., None]
    if norm.size == 0 or norm.min() > 0:  # the usual case: one plain division (the same values as the masked one below;
        # min is NaN, so not > 0, when a norm is NaN: the masked path, as norm > 0 is False there)
        if in_place and norm.dtype == vectors.dtype:
            return np.divide(vectors, norm, out=vectors)
        return (vectors / norm).astype(vectors.dtype, copy=False)
    # one division, only where the norm is positive, into a zeroed output: the values of
    # where(norm > 0, v / norm, 0) without its temporaries (this runs at every decision of every row)
    out = np.zeros(vectors.shape, dtype=np.result_type(vectors, norm))
    np.divide(vectors, norm, out=out, where=norm > 0)
    return out.astype(vectors.dtype, copy=False)


def update_profile(profile: np.ndarray, item: np.ndarray, strength: np.ndarray | float) -> np.ndarray:
    """``normalise((1 - a) P + a x)`` row by row.

    :param profile: (..., d) current profiles (unit or zero rows), e.g. (B, d) or (B, K, d).
    :param item: item vectors of the events (unit rows), broadcast against ``profile`` (e.g. (B, 1, d)
        for K profiles of one user moved by the same item).
    :param strength: update strengths a in [0, 1] of shape ``profile.shape[:-1]`` (or scalar).
    :return: new profiles of ``profile``'s shape (float32 when the inputs are).
    """
    a = np.asarray(strength, dtype=profile.dtype)
    if a.ndim:
        a = a[..., None]
    # (1 - a) P + a x, the sum taken into the first product's array: the same values with one temporary less (the
    # engine moves (B, 5, d) profiles at every step; each temporary is megabytes for a vector env)
    moved = (1 - a) * profile
    pull = a * item
    if pull.shape == moved.shape and pull.dtype == moved.dtype:
        moved += pull
    else:  # an item broadcasting past the profiles' shape, or of a wider dtype: the sum's own shape and dtype
        moved = moved + pull
    moved = normalise_rows(moved, in_place=True)
    # a = 0 must leave the profile bit-for-bit unchanged (re-normalising would drift it by rounding).
    if not a.all():  # the row mask only when some row has a = 0 (0 and -0.0 are falsy; NaN is not, nor equal to 0)
        keep = np.broadcast_to(a == 0, moved.shape[:-1] + (1,))[..., 0]
        moved[keep] = np.broadcast_to(profile, moved.shape)[keep]
    return moved


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of unit-or-zero vectors (their cosine, 0 for a zero vector)."""
    return np.einsum("bd,bd->b", a, b)


def category_log_prob(counts: np.ndarray, candidate_category: np.ndarray, prior: float | np.ndarray) -> np.ndarray:
    """log P(cat(c) | user) under a Dirichlet(prior) posterior from (forgetful) category counts.

    :param counts: (B, n_categories) counts.
    :param candidate_category: (B, C) category index of every candidate; an index outside the counts'
        columns (a category the counts do not know, e.g. new in a serving catalogue) counts 0.
    :param prior: pseudo-count per category (scalar or (B,)).
    """
    prior = np.asarray(prior, dtype=np.float64)
    prior_col = prior[:, None] if prior.ndim else prior
    n_columns = counts.shape[1]
    total = counts.sum(axis=1, dtype=np.float64)[:, None] + prior_col * n_columns
    known = (candidate_category >= 0) & (candidate_category < n_columns)
    picked = np.take_along_axis(counts, np.where(known, candidate_category, 0), axis=1).astype(np.float64)
    return np.log((np.where(known, picked, 0.0) + prior_col) / total)


def slot_mixed_counts(counts: np.ndarray, slot_counts: np.ndarray | None, weight: np.ndarray | float) -> np.ndarray:
    """``counts + lambda slot_counts`` per row: what P(cat | user, slot) is computed from. Rows with
    lambda = 0 (and every row when ``slot_counts`` is None or every lambda is 0) keep ``counts`` to the bit.

    :param counts: (B, n_categories); ``slot_counts``: (B, n_categories) the scored slot's counts;
        ``weight``: scalar or (B,) lambda >= 0.
    """
    weight = np.asarray(weight, dtype=np.float64)
    if not np.any(weight != 0):
        return counts
    if slot_counts is None:
        raise ValueError("slot_mixed_counts: a non-zero lambda without per-slot counts (the state does not keep them)")
    column = weight[:, None] if weight.ndim else weight
    return np.where(column != 0, counts + column * slot_counts, counts)


def exposure_log(exposure: np.ndarray, candidate_category: np.ndarray, prior: np.ndarray | float) -> np.ndarray:
    """``log(exposure(cat(c)) + b)`` per candidate: what the category term subtracts to become clicks per
    exposure.

    :param exposure: (B, n_categories) forgetful counts of shown candidates per category.
    :param candidate_category: (B, C) category index of every candidate; an index outside the columns (a
        category unknown to the counts) was never shown: exposure 0.
    :param prior: b > 0, scalar or (B,).
    """
    b = np.asarray(prior, dtype=np.float64)
    b_col = b[:, None] if b.ndim else b
    n_columns = exposure.shape[1]
    known = (candidate_category >= 0) & (candidate_category < n_columns)
    shown = np.take_along_axis(exposure, np.where(known, candidate_category, 0), axis=1).astype(np.float64)
    return np.log(np.where(known, shown, 0.0) + b_col)


def combine_scores(
    cos_long: np.ndarray,
    cos_short: np.ndarray,
    short_weight: np.ndarray,
    popularity_weight: np.ndarray,
    popularity: np.ndarray,
    *,
    category_term: np.ndarray | None = None,
    beta_cat: np.ndarray | float = 0.0,
    context_term: np.ndarray | None = None,
    beta_ctx: np.ndarray | float = 0.0,
    tracker_term: np.ndarray | None = None,
    beta_trk: np.ndarray | float = 0.0,
) -> np.ndarray:
    """The score of every candidate (see the module docstring); all (B, C) arrays, weights (B,)."""
    w = _column(short_weight)
    p = _column(popularity_weight)
    score = (1 - p) * (w * cos_short + (1 - w) * cos_long) + p * popularity
    if category_term is not None:
        score = score + _column(beta_cat) * category_term
    if context_term is not None:
        score = score + _column(beta_ctx) * context_term
    if tracker_term is not None:
        score = score + _column(beta_trk) * tracker_term
    return score


def standardise_scores(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Scores standardised over each row's valid entries: (s - mean) / sd (float32; 0 where the sd is 0
    and in invalid entries). A tracker's raw dot products have no fixed scale; standardised, one
    weight beta_trk means the same at every scoring point.

    :param scores: (P, C) raw scores; ``valid``: (P, C) bool (False = padding).
    """
    s = np.where(valid, np.asarray(scores, dtype=np.float64), 0.0)
    n = np.maximum(valid.sum(axis=1, keepdims=True), 1)
    mean = s.sum(axis=1, keepdims=True) / n
    sd = np.sqrt(np.where(valid, (s - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / n)
    z = np.where(valid & (sd > 0), (s - mean) / np.where(sd > 0, sd, 1.0), 0.0)
    return z.astype(np.float32)


def _column(weight: np.ndarray | float) -> np.ndarray:
    """A per-user weight (B,) as a (B, 1) column; a scalar stays a scalar."""
    weight = np.asarray(weight)
    return weight[:, None] if weight.ndim else weight


def score_candidates(
    cos_long: np.ndarray,
    cos_short: np.ndarray,
    strengths: np.ndarray,
    popularity: np.ndarray,
    *,
    beta_cat: np.ndarray | float = 0.0,
    category_counts: np.ndarray | None = None,
    candidate_category: np.ndarray | None = None,
    category_prior: float | np.ndarray = 1.0,
    cos_context: np.ndarray | None = None,
    beta_ctx: np.ndarray | float = 0.0,
    tracker_z: np.ndarray | None = None,
    beta_trk: np.ndarray | float = 0.0,
    slot_category_counts: np.ndarray | None = None,
    category_slot_weight: np.ndarray | float = 0.0,
    exposure_counts: np.ndarray | None = None,
    exposure_prior: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Score candidate sets from their similarities to the profiles: the one scoring function of the
    replay engine, the evaluator and the runtime (each computes the cosines its own fastest way).

    :param cos_long: (B, C) cos(L, c); ``cos_short``: (B, C) cos(S, c).
    :param strengths: (B, 4) the decision's (a_L, a_S, w, p): w weighs S against L, p the popularity.
    :param popularity: (B, C) pop(c) in [0, 1].
    :param beta_cat: weight(s) of the category term; it is computed only when some is non-zero and
        ``category_counts`` (B, n_categories) and ``candidate_category`` (B, C) are given.
    :param cos_context: (B, C) cos(T_slot, c) with the current time slot's profile (or None).
    :param tracker_z: (B, C) a sequence tracker's standardised scores (or None); the term is added only
        when some ``beta_trk`` is non-zero, so without one the score is exactly what it was before.
    :param slot_category_counts: (B, n_categories) the counts of the time slot each row is scored in (or
        None), added to ``category_counts`` with weight(s) ``category_slot_weight`` (lambda); where lambda
        is 0 the counts are the user's alone, exactly.
    :param exposure_counts: (B, n_categories) forgetful counts of shown candidates per category (or None);
        where ``exposure_prior`` b > 0 the category term is ``log P(cat | user) - log(exposure(cat) + b)``
        (:func:`exposure_log`); where b is 0 it is ``log P(cat | user)`` exactly.
    :return: (B, C) scores.
    """
    category_term = None
    if category_counts is not None and candidate_category is not None and np.any(np.asarray(beta_cat) != 0):
        category_term = category_log_prob(
            slot_mixed_counts(category_counts, slot_category_counts, category_slot_weight), candidate_category, category_prior)
        b = np.asarray(exposure_prior, dtype=np.float64)
        if exposure_counts is not None and np.any(b > 0):
            on = (b > 0)[:, None] if b.ndim else b > 0
            category_term = np.where(on, category_term - exposure_log(exposure_counts, candidate_category, np.where(b > 0, b, 1.0)),
                                     category_term)
    use_tracker = tracker_z is not None and np.any(np.asarray(beta_trk) != 0)
    return combine_scores(cos_long, cos_short, strengths[:, 2], strengths[:, 3], popularity,
                          category_term=category_term, beta_cat=beta_cat, context_term=cos_context, beta_ctx=beta_ctx,
                          tracker_term=tracker_z if use_tracker else None, beta_trk=beta_trk)


def scoring_direction(long_term: np.ndarray, short_term: np.ndarray, short_weight: np.ndarray) -> np.ndarray:
    """u = normalise(w S + (1 - w) L): the direction the profiles rank candidates along (float64).

    The profile part of the score is ``cos(u', c)`` for ``u' = w S + (1 - w) L``; its direction is what
    the tracking error and the report's implied topic mix read.
    """
    w = np.asarray(short_weight, dtype=np.float64).reshape(-1, 1)
    return normalise_rows((w * short_term + (1 - w) * long_term).astype(np.float64))
