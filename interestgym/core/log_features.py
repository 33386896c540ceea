"""What the user's own log says at a decision: the decision rule and the log features' raw quantities.

One definition, two ways of computing it, side by side in this module:

* **batched** (:func:`log_quantities`): over a whole replay at once, vectorised over every event of
  every user (the replay precomputes the log features once per decision);
* **online** (:func:`online_log_quantities` + :func:`next_category_run`): one event at a time from a
  few counters (what the production runtime keeps per user).

Both return the raw quantities :func:`interestgym.core.features.encode_features` turns into features,
and replay-parity tests pin them together. The quantities, per decision (a positive event):

=====================  =====================================================================
``gap_event``          seconds since the user's previous event of any type (0 for the first)
``gap_decision``       seconds since the user's previous decision (0 for the first)
``n_events``           the user's events before this one (any type)
``n_decisions``        the user's decisions before this one
``category_count``     the user's previous decisions in this event's category
``categories_seen``    distinct categories among the user's previous decisions
``category_streak``    previous decisions in a row, ending just before this one, in this category
``action_weight``      the action's weight; ``value`` the event's value; ``hour`` / ``weekday``
=====================  =====================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The action whose events are decisions only when their value (a rating) reaches ``positive_rating``.
RATING_ACTION = "rate"

#: The largest |feedback value| (rating, quantity, read fraction) an event may carry: it enters the float32
#: observation, where a larger one is infinite. ``prepare`` rejects such rows; the runtime refuses such events.
VALUE_MAX = float(np.finfo(np.float32).max)


def is_decision(action_weight: np.ndarray, is_rating: np.ndarray, value: np.ndarray, positive_rating: float,
                has_item: np.ndarray | bool = True) -> np.ndarray:
    """The decision rule: positive feedback on an item with a vector.

    An event is a decision when its action weight is > 0 (a view, click, purchase ...; weights from the
    dataset's manifest), a rating only when ``value >= positive_rating``, and its item is known.
    """
    weight = np.asarray(action_weight, dtype=np.float64)
    rating = np.asarray(is_rating, dtype=bool)
    positive = (weight > 0) & (~rating | (np.asarray(value, dtype=np.float64) >= positive_rating))
    return positive & np.asarray(has_item, dtype=bool)


# --------------------------------------------------------------------------------------- batched
def group_starts(codes: np.ndarray) -> np.ndarray:
    """True where a new run of equal consecutive codes starts."""
    new = np.ones(len(codes), dtype=bool)
    new[1:] = codes[1:] != codes[:-1]
    return new


def position_in_run(codes: np.ndarray) -> np.ndarray:
    """Position within runs of equal consecutive codes (0, 1, 2, ... restarting at every new run)."""
    idx = np.arange(len(codes))
    start = np.maximum.accumulate(np.where(group_starts(codes), idx, 0)) if len(codes) else idx
    return idx - start


def log_quantities(user_codes: np.ndarray, ts: np.ndarray, decision: np.ndarray, decision_category: np.ndarray,
                   n_categories: int) -> dict[str, np.ndarray]:
    """The raw log quantities of every decision of a replay, vectorised.

    :param user_codes: (n_events,) user of each event; events grouped by user, in replay order.
    :param ts: (n_events,) unix seconds.
    :param decision: (n_events,) bool, the decision rule (:func:`is_decision`).
    :param decision_category: (n_decisions,) category index of each decision's item.
    :param n_categories: number of category indices.
    :return: one (n_decisions,) array per quantity (``gap_event`` ... ``category_streak``; the event's
        own action weight, value, hour and weekday are the caller's columns).
    """
    first_event = group_starts(user_codes)
    prev_ts = np.concatenate([ts[:1], ts[:-1]])
    gap_event = np.where(first_event, 0, ts - prev_ts)
    n_events_before = position_in_run(user_codes)

    d_idx = np.nonzero(decision)[0]
    d_user = user_codes[d_idx]
    d_ts = ts[d_idx]
    d_cat = np.asarray(decision_category, dtype=np.int64)
    d_first = group_starts(d_user)
    gap_decision = np.where(d_first, 0, d_ts - np.concatenate([d_ts[:1], d_ts[:-1]]))
    # previous decisions of the user in the same category: position among the (user, category) pairs
    user_cat = d_user.astype(np.int64) * (n_categories + 1) + d_cat
    order = np.argsort(user_cat, kind="stable")
    category_count = np.empty(len(d_idx), dtype=np.int64)
    category_count[order] = position_in_run(user_cat[order])
    first_in_cat = (category_count == 0).astype(np.int64)
    csum = np.cumsum(first_in_cat)
    user_base = np.maximum.accumulate(np.where(d_first, csum - first_in_cat, 0)) if len(d_idx) else csum
    run_codes = np.cumsum(group_starts(d_user) | group_starts(d_cat))
    return {
        "gap_event": gap_event[d_idx],
        "gap_decision": gap_decision,
        "n_events": n_events_before[d_idx],
        "n_decisions": position_in_run(d_user),
        "category_count": category_count,
        "categories_seen": csum - first_in_cat - user_base,
        "category_streak": position_in_run(run_codes),
    }


# ---------------------------------------------------------------------------------------- online
def online_log_quantities(ts: np.ndarray, n_events: np.ndarray, last_event_ts: np.ndarray, n_decisions: np.ndarray,
                          last_decision_ts: np.ndarray, category_count: np.ndarray, categories_seen: np.ndarray,
                          same_category: np.ndarray, category_run: np.ndarray) -> dict[str, np.ndarray]:
    """The same quantities for events arriving one by one, from per-user counters (arrays over users).

    :param ts: (n,) the events' unix seconds.
    :param n_events: (n,) events so far; ``last_event_ts`` their last time (ignored while 0).
    :param n_decisions: (n,) decisions so far; ``last_decision_ts`` their last time (ignored while 0).
    :param category_count: (n,) previous decisions in the event's category (0 for a new category).
    :param categories_seen: (n,) distinct categories of previous decisions.
    :param same_category: (n,) bool, the previous decision had the event's category.
    :param category_run: (n,) decisions in a row, up to the previous one, in its category
        (:func:`next_category_run`).
    """
    ts = np.asarray(ts, dtype=np.int64)
    n_events = np.asarray(n_events, dtype=np.int64)
    n_decisions = np.asarray(n_decisions, dtype=np.int64)
    return {
        "gap_event": np.where(n_events > 0, ts - np.asarray(last_event_ts, dtype=np.int64), 0),
        "gap_decision": np.where(n_decisions > 0, ts - np.asarray(last_decision_ts, dtype=np.int64), 0),
        "n_events": n_events,
        "n_decisions": n_decisions,
        "category_count": np.asarray(category_count, dtype=np.int64),
        "categories_seen": np.asarray(categories_seen, dtype=np.int64),
        "category_streak": np.where(np.asarray(same_category, dtype=bool), np.asarray(category_run, dtype=np.int64), 0),
    }


def next_category_run(last_category: Any, category_run: Any, category: Any) -> Any:
    """The same-category run after a decision in ``category``: one longer if it continues, else 1. Python ints (one
    user, the runtime's one-event path) or int arrays of users (its batched path), the same rule."""
    if isinstance(category, (int, np.integer)):
        return category_run + 1 if last_category == category else 1
    return np.where(np.equal(last_category, category), np.add(category_run, 1), 1)


def engaged_items(ev_item: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each event's item where the event is an engagement (its action has a weight > 0: a click, a view, a
    rating of any value, a purchase), -1 elsewhere (an impression, an action without a weight): what the
    next-positive protocol counts as the user's own items (repeats, ``exclude``, history negatives)."""
    return np.where(weight > 0, ev_item, -1)


def repeated_engagements(user_codes: np.ndarray, engaged: np.ndarray) -> int:
    """How many engagements are of an item the same user engaged with before (``engaged`` as :func:`engaged_items`
    gives it, item codes >= 0, with each event's user code): a log with any has repeats, and the next-positive
    protocol's ``exclude auto`` leaves only the target out of the negatives."""
    known = engaged >= 0
    pairs = np.sort(user_codes[known].astype(np.int64) * (int(engaged.max(initial=0)) + 1) + engaged[known])
    # distinct pairs from the sorted array: np.unique (numpy 2.4) hashes instead, ~40x slower on a 1M-row log
    distinct = int(np.count_nonzero(pairs[1:] != pairs[:-1])) + 1 if len(pairs) else 0
    return int(len(pairs) - distinct)
