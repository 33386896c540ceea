"""Ranking metrics for one scoring point (a candidate set with click labels), batched.

Every function takes ``scores`` (P, C) and ``labels`` (P, C) for P scoring points of up to C candidates;
``labels`` is 1 for a clicked candidate, 0 for an unclicked one and -1 for padding (rows of different
lengths are padded to C; padding never counts). Each row must hold at least one clicked and one unclicked
candidate (the protocol guarantees it and counts the rows it could not score).

**Tie rule: expected value over random tie orders.** Candidates with equal scores are ranked in a
uniformly random order and every metric is its exact expectation over those orders. This is the value
a random tie-breaker achieves on average, and it is what AUC's usual "ties count one half" already is.
It matters because empty (zero) profiles give every candidate the same score: such a ranking is then
worth exactly what a random ranking is worth, neither better (optimistic rule) nor worse (pessimistic).

Metric names (:func:`parse_metric`): ``auc``, ``mrr``, ``first_click_rr``, and ``ndcg@K``, ``hit@K``,
``click@K`` (alias of ``hit@K``: the user clicks something among the top K), ``precision@K``,
``recall@K``, ``f1@K``. ``mrr`` is MIND's: the mean over an impression's clicks of 1 / rank of each click
(its official ``mrr_score``); ``first_click_rr`` is 1 / rank of the best-ranked click only. They agree on
scoring points with one click (the next-positive protocol) and differ when several were clicked.

The computation never sorts: for each clicked candidate it counts the candidates scored strictly higher
and the candidates tied with it (integer counts, exact), so a row's result does not depend on how much
padding the batch around it has: the single env and the batched evaluator agree to the last bit.

A few rows with one click each (the single env and the runtime: one scoring point, ranked by the agent's
score and by L and S alone) take a scalar path, :func:`_one_click_metrics`: the same integer counts
(counted in Python for tiny inputs), then the same float64 operations in the same order on Python
floats (IEEE-754 ``+ - * /`` round alike in numpy and Python), for a fraction of the general path's
~80 numpy calls. Both paths give bit-identical results (``tests/test_metrics_fast_path.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from interestgym.errors import InterestGymError

#: The metrics every scoring point reports (MIND's official set + the seed's precision / recall / F1).
DEFAULT_METRICS: tuple[str, ...] = (
    "auc", "mrr", "ndcg@5", "ndcg@10", "hit@10", "precision@10", "recall@10", "f1@10",
)

_METRIC_RE = re.compile(r"^(?:(auc|mrr|first_click_rr)|(ndcg|hit|click|precision|recall|f1)@([1-9][0-9]*))$")
#: Every metric name :func:`parse_metric` takes, in words (the options' help and its error say it).
METRIC_NAMES_TEXT = "auc, mrr, first_click_rr, or one of ndcg, hit, click, precision, recall, f1 followed by @K (e.g. ndcg@10)"


@lru_cache(maxsize=256)
def parse_metric(name: str) -> tuple[str, int | None]:
    """Split a metric name into (kind, k): ``"ndcg@10" -> ("ndcg", 10)``, ``"auc" -> ("auc", None)``.

    :raises InterestGymError: for an unknown name.
    """
    m = _METRIC_RE.match(name.strip().lower())
    if m is None:
        raise InterestGymError(
            f"metric {name!r}: expected {METRIC_NAMES_TEXT}"
        )
    if m.group(1):
        return m.group(1), None
    return m.group(2), int(m.group(3))


def metric_names(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """:data:`DEFAULT_METRICS` plus any ``extra`` names (validated, normalised, no duplicates)."""
    names = list(DEFAULT_METRICS)
    for name in extra:
        parse_metric(name)
        name = name.strip().lower()
        if name not in names:
            names.append(name)
    return tuple(names)


@lru_cache(maxsize=256)
def _harmonic_cumsum(length: int) -> np.ndarray:
    """cum[i] = sum of 1 / (j + 1) for positions j < i (the harmonic number H_i, float64)."""
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, length + 1, dtype=np.float64))])
    cum.flags.writeable = False  # shared through the cache
    return cum


@lru_cache(maxsize=256)
def _discount_cumsum(k: int, length: int) -> np.ndarray:
    """cum[i] = sum of the DCG discounts 1/log2(j+2) of positions j < i, truncated at k (float64)."""
    pos = np.arange(length, dtype=np.float64)
    disc = np.where(pos < k, 1.0 / np.log2(pos + 2.0), 0.0)
    cum = np.concatenate([[0.0], np.cumsum(disc)])
    cum.flags.writeable = False  # shared through the cache
    return cum


#: Up to this many rows with one click each, :func:`ranking_metrics` takes the scalar path (per-row
#: Python work grows with the rows; the general path's numpy calls do not). The single env scores 3
#: rows a step (the agent's ranking, L alone, S alone).
_SCALAR_ROWS = 8
#: Up to this many cells (rows x candidates) the scalar path also counts in Python, from ``tolist()``:
#: cheaper than a dozen numpy calls on tiny arrays (10 candidates x 3 rankings); above it, numpy counts.
_PYTHON_CELLS = 64

#: One row's integer counts: (start, group, neg_higher, neg_tied, n_neg): valid candidates scored above
#: the click, valid candidates tied with it (itself included), the same two among unclicked candidates,
#: and the row's unclicked candidates.
_Counts = tuple[int, int, int, int, int]


@lru_cache(maxsize=256)
def _table_list(kind: str, k: int, length: int) -> list[float]:
    """The cached float64 tables as Python floats (exact: a float64 is a Python float), for the scalar path."""
    return (_harmonic_cumsum(length) if kind == "harmonic" else _discount_cumsum(k, length)).tolist()


def _python_counts(scores: np.ndarray, labels: np.ndarray) -> list[_Counts] | None:
    """Every row's counts, in Python, when every row has exactly one click with a non-NaN score; else None.

    Comparisons of the ``tolist()`` floats equal numpy's (float32 and float64 widen to Python floats
    exactly); a NaN score on an unclicked candidate compares False both ways, as in numpy.
    :raises ValueError: a row without a click or without an unclicked candidate (the general path's).
    """
    out = []
    for srow, lrow in zip(scores.tolist(), labels.tolist()):
        n_pos = lrow.count(1)
        n_neg = lrow.count(0)
        if n_pos == 0 or n_neg == 0:
            raise ValueError("every scoring point needs at least one clicked and one unclicked candidate")
        if n_pos != 1:
            return None
        pos = srow[lrow.index(1)]
        if math.isnan(pos):  # NaN click score: the general path's NaN behaviour
            return None
        start = group = neg_higher = neg_tied = 0
        for score, label in zip(srow, lrow):
            if label >= 0:
                if score > pos:
                    start += 1
                    neg_higher += label == 0
                elif score == pos:
                    group += 1
                    neg_tied += label == 0
        out.append((start, group, neg_higher, neg_tied, n_neg))
    return out


def _numpy_counts(scores: np.ndarray, valid: np.ndarray, clicked: np.ndarray, unclicked: np.ndarray,
                  n_neg: np.ndarray) -> list[_Counts]:
    """Every row's counts (one click per row), with the general path's comparisons, counted in one call."""
    n_points = len(scores)
    pos = scores[clicked][:, None]  # one click per row: the clicked scores in row order
    higher = scores > pos
    tied = scores == pos
    counts = np.count_nonzero(np.concatenate([higher & valid, tied & valid, higher & unclicked, tied & unclicked]), axis=1).tolist()
    return list(zip(counts[:n_points], counts[n_points: 2 * n_points], counts[2 * n_points: 3 * n_points], counts[3 * n_points:],
                    n_neg.tolist()))


def _one_click_metrics(rows: list[_Counts], n_cand: int, kinds: dict[str, tuple[str, int | None]]) -> dict[str, np.ndarray]:
    """:func:`ranking_metrics` of rows with exactly one click each, from their counts, bit-identical to the
    general path.

    Every metric is the general path's float64 expression, evaluated on Python floats in the same order.
    With one click per row the general path's sums over clicked slots are sums of one term
    (``0 + v = v``) and n_pos = 1. The first click's tie group (start s, size g) holds m0 = 1 click, so
    the general path's survival ratios ``max(g - m0 - i, 0) / max(g - i, 1)`` are ``(g - 1 - i) / (g - i)``
    for i < g (exact integers, one correctly rounded division either way), and ``survive[t]`` is their
    sequential product for i < t, as ``np.cumprod`` takes it (t <= g: the ratios past g are never read).
    """
    flat: list[float] = []
    for kind, k in kinds.values():
        if kind == "auc":
            flat += [((neg - nh - nt) + 0.5 * nt) / neg for _, _, nh, nt, neg in rows]
        elif kind == "ndcg":
            cum = _table_list("discount", k or 0, n_cand)
            flat += [((cum[s + g] - cum[s]) / g) / cum[1] for s, g, _, _, _ in rows]
        elif kind == "mrr":
            harmonic = _table_list("harmonic", 0, n_cand)
            flat += [((harmonic[s + g] - harmonic[s]) / g) / 1 for s, g, _, _, _ in rows]
        elif kind in ("hit", "click"):
            for s, g, _, _, _ in rows:
                survive = 1.0
                for i in range(min(max((k or 0) - s, 0), g)):
                    survive *= (g - 1 - i) / (g - i)
                flat.append(1.0 - survive)
        elif kind == "first_click_rr":
            for s, g, _, _, _ in rows:
                # sum over j of P(first click at rank j of the group) / (s + j); the terms past the group
                # are 0.0 / (s + j) = 0.0 and leave the general path's sequential sum as it is
                total, survive = 0.0, 1.0
                for j in range(1, g + 1):
                    after = survive * ((g - j) / (g - j + 1))
                    total += (survive - after) / float(s + j)
                    survive = after
                flat.append(total)
        else:  # precision, recall, f1 of the expected hit count in the top k
            k = k or 0
            hits = [min(max(k - s, 0), g) / g for s, g, _, _, _ in rows]
            if kind == "precision":
                flat += [h / k for h in hits]
            elif kind == "recall":
                flat += [h / 1 for h in hits]
            else:
                flat += [2.0 * h / (k + 1) for h in hits]
    # one array for every metric (one row each): a numpy call per metric costs more than its values here
    table = np.array(flat, dtype=np.float64).reshape(len(kinds), len(rows))
    return dict(zip(kinds, table))


@lru_cache(maxsize=256)
def _parse_names(names: tuple[str, ...]) -> tuple[list[str], dict[str, tuple[str, int | None]]]:
    """Normalised names and their (kind, k), cached per names tuple (the engine asks for the same set at
    every step). Internal: callers must not modify the returned list or dict."""
    normalised = [n.strip().lower() for n in names]
    return normalised, {name: parse_metric(name) for name in normalised}


def ranking_metrics(scores: np.ndarray, labels: np.ndarray, names: Iterable[str] = DEFAULT_METRICS) -> dict[str, np.ndarray]:
    """Each named metric for every row, as float64 arrays of shape (P,).

    :param scores: (P, C) candidate scores; higher ranks first.
    :param labels: (P, C) int, 1 = clicked, 0 = not clicked, -1 = padding.
    :param names: metric names (see :func:`parse_metric`).
    :return: ``{name: values}``; values are expectations over random orders of tied candidates.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    n_points, n_cand = scores.shape
    names, kinds = _parse_names(tuple(names))
    if n_points == 0:
        return {name: np.zeros(0, dtype=np.float64) for name in names}
    if n_points * n_cand <= _PYTHON_CELLS and n_points <= _SCALAR_ROWS:
        counted = _python_counts(scores, labels)
        if counted is not None:
            return _one_click_metrics(counted, n_cand, kinds)

    valid = labels >= 0
    clicked = labels == 1
    unclicked = labels == 0
    # Both counts in one call (this prelude runs at every single-env step: a few numpy calls fewer matter).
    n_both = np.count_nonzero(np.concatenate([clicked, unclicked]), axis=1)
    n_pos, n_neg = n_both[:n_points], n_both[n_points:]
    if not n_both.all():
        raise ValueError("every scoring point needs at least one clicked and one unclicked candidate")

    # Pack the clicked candidates' scores to the front of a (P, K) matrix; K = most clicks in a row.
    k_max = int(n_pos.max())
    if k_max == 1 and n_points <= _SCALAR_ROWS and not np.isnan(scores).any():
        # NaN scores (never produced by finite profiles) keep the general path's exact NaN behaviour.
        return _one_click_metrics(_numpy_counts(scores, valid, clicked, unclicked, n_neg), n_cand, kinds)
    if k_max == 1:  # one click per row (the next-positive protocol): no packing needed
        pos_scores = scores[np.arange(n_points), np.argmax(clicked, axis=1)][:, None]
    else:
        rows, cols = np.nonzero(clicked)
        slot = np.arange(len(rows)) - np.repeat(np.concatenate([[0], np.cumsum(n_pos)[:-1]]), n_pos)
        pos_scores = np.zeros((n_points, k_max), dtype=scores.dtype)
        pos_scores[rows, slot] = scores[rows, cols]
    pos_valid = np.arange(k_max)[None, :] < n_pos[:, None]

    # For every clicked candidate: how many valid candidates score strictly higher (its group starts
    # there) and how many tie with it (itself included); the same counted among unclicked ones.
    s3 = scores[:, None, :]
    p3 = pos_scores[:, :, None]
    higher = (s3 > p3) & valid[:, None, :]
    tied = (s3 == p3) & valid[:, None, :]
    start = np.count_nonzero(higher, axis=2)
    group = np.count_nonzero(tied, axis=2)
    neg_higher = np.count_nonzero(higher & unclicked[:, None, :], axis=2)
    neg_tied = np.count_nonzero(tied & unclicked[:, None, :], axis=2)
    # Padding slots get a harmless in-range group (start 0, size 1); they are masked out below.
    start = np.where(pos_valid, start, 0)
    group = np.where(pos_valid, group, 1)

    def over_clicked(values: np.ndarray) -> np.ndarray:
        # Sequential sum over the packed clicked slots (padding slots are exact zeros), so the result
        # does not depend on how many padding slots the batch has.
        return np.cumsum(np.where(pos_valid, values, 0.0), axis=1)[:, -1]

    out: dict[str, np.ndarray] = {}
    cache: dict[tuple[str, int | None], np.ndarray] = {}

    def expected_hits(k: int) -> np.ndarray:
        key = ("hits", k)
        if key not in cache:
            cache[key] = over_clicked(np.clip(k - start, 0, group) / group)
        return cache[key]

    # First (best) tie group holding a click: its start s0, size g0 and the clicks m0 inside it. The
    # rank of the first click inside the group is J (1-based) with P(J > j) = prod_{i<j} (g0-m0-i)/(g0-i).
    survive: np.ndarray | None = None
    if any(kind in ("first_click_rr", "hit", "click") for kind, _ in kinds.values()):
        best = np.argmax(np.where(pos_valid, pos_scores, -np.inf), axis=1)
        ridx = np.arange(n_points)
        s0 = start[ridx, best]
        g0 = group[ridx, best]
        best_score = pos_scores[ridx, best]
        m0 = np.count_nonzero((pos_scores == best_score[:, None]) & pos_valid, axis=1)
        i = np.arange(n_cand, dtype=np.float64)[None, :]
        ratio = np.where(i < g0[:, None], np.maximum(g0[:, None] - m0[:, None] - i, 0.0) / np.maximum(g0[:, None] - i, 1.0), 0.0)
        survive = np.concatenate([np.ones((n_points, 1)), np.cumprod(ratio, axis=1)], axis=1)  # (P, C+1)

    for name, (kind, k) in kinds.items():
        if kind == "auc":
            # Unclicked candidates ranked below a click, ties counting one half (Mann-Whitney U).
            below = n_neg[:, None] - neg_higher - neg_tied
            out[name] = over_clicked(below + 0.5 * neg_tied) / (n_pos * n_neg)
        elif kind == "ndcg":
            cum = _discount_cumsum(k, n_cand)
            dcg = over_clicked((cum[start + group] - cum[start]) / group)
            idcg = cum[np.minimum(n_pos, n_cand)]
            out[name] = dcg / idcg
        elif kind in ("hit", "click"):
            assert survive is not None
            t = np.clip(k - s0, 0, g0)
            out[name] = 1.0 - survive[ridx, t]
        elif kind == "mrr":
            # MIND's: every click's reciprocal rank, averaged over the clicks. A click in a tie group
            # (start s, size g) takes each of the ranks s+1..s+g with probability 1/g.
            harmonic = _harmonic_cumsum(n_cand)
            out[name] = over_clicked((harmonic[start + group] - harmonic[start]) / group) / n_pos
        elif kind == "first_click_rr":
            assert survive is not None
            p_first = survive[:, :-1] - survive[:, 1:]  # P(J = j), j = 1..C
            j = np.arange(1, n_cand + 1, dtype=np.float64)[None, :]
            out[name] = np.cumsum(p_first / (s0[:, None] + j), axis=1)[:, -1]
        elif kind == "precision":
            out[name] = expected_hits(k) / k
        elif kind == "recall":
            out[name] = expected_hits(k) / n_pos
        elif kind == "f1":
            # F1@k = 2 h / (k + n_pos) is linear in the hit count h, so its expectation is exact.
            out[name] = 2.0 * expected_hits(k) / (k + n_pos)
    return out
