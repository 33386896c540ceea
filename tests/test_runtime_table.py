"""The runtime's state table (``StateTable``: many users' states as columns) against the one-user path, to the bit.

``ExportedPolicy.update_table`` / ``score_table`` / ``record_outcomes_table`` move rows of a table; the
reference is ``update`` / ``score`` / ``record_outcome`` on one ``UserState`` at a time (the one-event path,
:mod:`interestgym.runtime.update`'s ``update_one``, a separate layout pinned to the evaluator by the parity
tests). Random streams mix decisions and non-decisions, new and repeated categories, ratings, events without
an item, scoring points between decisions and batches of random subsets of the users.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from export_fixtures import trained_export

from interestgym.errors import InterestGymError
from interestgym.runtime import (
    EmbeddingDimensionError,
    Event,
    EventBatch,
    StateTable,
    load_policy,
)

ACTIONS = ("click", "view", "purchase", "impression", "rate")
CATEGORIES = ["", "c1", "c2", "c3", "sports", "unknown-to-the-export"]


def _with_more_terms(policy):
    """The policy with the category counts per time of day (lambda 2) and the exposure counts (b 3) switched on:
    the table's blocks for them, exercised on the same export."""
    more = copy.copy(policy)
    more._slot_weight, more._exposure_prior = 2.0, 3.0
    return more


@pytest.fixture(scope="module", params=["next_positive", "impressions", "impressions_tied", "impressions+slots+exposure"])
def policy(request, tmp_path_factory):
    variant = request.param.split("+")[0]
    loaded = load_policy(trained_export(tmp_path_factory, variant).export)
    return _with_more_terms(loaded) if "+" in request.param else loaded


def _unit(rng: np.random.Generator, d: int = 16) -> np.ndarray:
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def _event(rng: np.random.Generator, ts: int) -> Event:
    action = str(rng.choice(ACTIONS))
    return Event(ts=ts, action=action, item_vector=None if rng.random() < 0.05 else _unit(rng),
                 value=float(rng.integers(1, 6)) if action == "rate" else 1.0, category=str(rng.choice(CATEGORIES)),
                 hour=int(rng.integers(0, 24)) if rng.random() < 0.7 else None,
                 weekday=int(rng.integers(0, 7)) if rng.random() < 0.7 else None)


def _outcome(rng: np.random.Generator, c: int = 5):
    cands = np.stack([_unit(rng) for _ in range(c)])
    labels = np.array([1, 0, 0, 1, 0] if rng.random() < 0.5 else [0, 1, 0, 0, 0][:c])
    if rng.random() < 0.15:
        labels[:] = 0  # nothing clicked: not scored
    ids = [f"i{k}" for k in rng.integers(0, 90, c)]
    cats = [str(x) for x in rng.choice(CATEGORIES, c)]
    return cands, labels, ids, cats, int(rng.integers(0, 24))


@pytest.mark.parametrize("seed", [0, 1])
def test_table_updates_scores_and_outcomes_equal_the_one_user_path_to_the_bit(policy, seed):
    rng = np.random.default_rng(seed)
    n = 7
    states = [policy.new_state() for _ in range(n)]
    table = policy.new_table(n)
    ts = [int(rng.integers(0, 10**6)) for _ in range(n)]
    for _ in range(40):
        rows = rng.choice(n, size=int(rng.integers(1, n + 1)), replace=False)
        events = []
        for u in rows.tolist():
            ts[u] += int(rng.choice([0, 1, 30, 3600, 86400 * 40]))
            events.append(_event(rng, ts[u]))
        for u, e in zip(rows.tolist(), events):
            states[u] = policy.update(states[u], e)
        policy.update_table(table, rows, events)
        # scores of every row, and outcomes recorded for some
        shown = [_outcome(rng) for _ in range(n)]
        hours = [h for *_, h in shown]
        kw = {"candidate_ids": [o[2] for o in shown], "candidate_categories": [o[3] for o in shown], "hours": hours}
        got = policy.score_table(table, np.arange(n), np.stack([o[0] for o in shown]), **kw)
        for u in range(n):
            expected = policy.score(states[u], shown[u][0], shown[u][2], candidate_categories=shown[u][3], hour=hours[u])
            np.testing.assert_array_equal(got[u], expected)
        some = rng.choice(n, size=3, replace=False)
        metrics = policy.record_outcomes_table(table, some, np.stack([shown[u][0] for u in some]),
                                               np.stack([shown[u][1] for u in some]),
                                               candidate_ids=[shown[u][2] for u in some],
                                               candidate_categories=[shown[u][3] for u in some], hours=[hours[u] for u in some])
        for k, u in enumerate(some.tolist()):
            states[u], one = policy.record_outcome(states[u], shown[u][0], shown[u][1], candidate_ids=shown[u][2],
                                                   candidate_categories=shown[u][3], hour=hours[u])
            if one is None:
                assert all(np.isnan(v[k]) for v in metrics.values())
            else:
                assert {name: float(v[k]) for name, v in metrics.items()} == one
        for u in range(n):
            assert table.state(u) == states[u], f"user {u}"
    assert sum(s.counter("n_decisions") for s in states) > 40 and any(len(s.categories) > 2 for s in states)


def test_an_event_batch_of_columns_updates_as_the_events_do(policy):
    rng = np.random.default_rng(5)
    events = [_event(rng, 1_700_000_000 + k) for k in range(6)]
    events = [Event(ts=e.ts, action=e.action, item_vector=_unit(rng), value=e.value, category=e.category, hour=e.hour,
                    weekday=e.weekday) for e in events]
    columns = EventBatch(ts=[e.ts for e in events], action=[e.action for e in events],
                         item_vectors=np.stack([e.item_vector for e in events]), value=[e.value for e in events],
                         category=[e.category for e in events], hour=[-1 if e.hour is None else e.hour for e in events],
                         weekday=[-1 if e.weekday is None else e.weekday for e in events])
    a, b = policy.new_table(6), policy.new_table(6)
    policy.update_table(a, np.arange(6), events)
    policy.update_table(b, np.arange(6), columns)
    assert a.states() == b.states() == policy.update_batch([policy.new_state()] * 6, events)


def test_states_go_into_a_table_and_back_unchanged(policy):
    rng = np.random.default_rng(2)
    states = [policy.new_state() for _ in range(4)]
    for k in range(30):
        u = k % 4
        states[u] = policy.update(states[u], _event(rng, 1_000 + k))
    table = StateTable.from_states(states)
    assert table.states() == states and table.state(2) == states[2] and len(table) == 4
    rows = table.append([policy.new_state(), states[1]])
    assert rows.tolist() == [4, 5] and table.state(4) == policy.new_state() and table.state(5) == states[1]
    copy_of_one = table.state(1)
    copy_of_one.profiles[:] = 0.5  # a state taken out is a copy
    assert table.state(1) == states[1]


def _snapshot(table):
    return ([a.copy() for a in (table.profiles, table.stats, table.counters)], table.states())


def test_a_bad_batch_is_refused_and_leaves_the_table_as_it_was(policy):
    rng = np.random.default_rng(3)
    table = policy.new_table(3)
    policy.update_table(table, [0, 1, 2], [Event(ts=100, action="click", item_vector=_unit(rng), category="c1")] * 3)
    before = _snapshot(table)
    good = Event(ts=200, action="click", item_vector=_unit(rng), category="c2")
    cases = [
        ([0, 1, 2], [good, good, Event(ts=50, action="click", item_vector=_unit(rng))], InterestGymError,
         r"event ts 50 is before the user's previous event \(100\); expected events in time order \(event 2 of the batch\)"),
        ([0, 1, 1], [good] * 3, InterestGymError, r"row 1 appears 2 times in one batch"),
        ([0, 3], [good] * 2, InterestGymError, r"row 3: expected row numbers in \[0, 3\)"),
        ([0, 1], [good] * 3, InterestGymError, r"2 rows for 3 events; expected one row per event"),
        ([0, 1], [good, Event(ts=200, action="clik", item_vector=_unit(rng))], InterestGymError, r"event action 'clik': expected one of"),
        ([0, 1], [good, Event(ts=200, action="click", item_vector=np.ones(8, np.float32))], EmbeddingDimensionError,
         r"event 1 of the batch: item_vector of shape \(8,\); expected shape \(16,\)"),
        ([0, 1], [good, Event(ts=200, action="click", item_vector=np.full(16, 0.5, np.float32))], InterestGymError,
         r"a vector of L2 norm 2; expected L2-normalised rows"),
    ]
    for rows, events, error, message in cases:
        with pytest.raises(error, match=message):
            policy.update_table(table, rows, events)
        after = _snapshot(table)
        assert all(np.array_equal(x, y) for x, y in zip(before[0], after[0])) and after[1] == before[1]


@pytest.mark.parametrize("field,value,message", [
    ("ts", [-5, 1], r"event 0 of the batch: ts -5; expected UTC unix seconds"),
    ("ts", [1.5, 2.0], r"EventBatch.ts of shape \(2,\) and type float64; expected a 1-d array of integer UTC unix seconds"),
    ("value", [1.0, float("nan")], r"event 1 of the batch: value nan; expected a finite number"),
    ("hour", [3, 24], r"event 1 of the batch: hour 24; expected an integer in \[0, 23\]"),
    ("weekday", [7, 0], r"event 0 of the batch: weekday 7; expected an integer in \[0, 6\]"),
    ("action", ["rate", "click"], r"event 0 of the batch: action 'rate' without value: a rating needs its value"),
    ("item_vectors", np.zeros((3, 16), np.float32), r"EventBatch.item_vectors of shape \(3, 16\); expected \(2, d\)"),
])
def test_event_batch_columns_are_checked_naming_the_event(field, value, message):
    columns = {"ts": [1, 2], "action": ["click", "click"], "item_vectors": np.zeros((2, 16), np.float32)}
    columns[field] = value
    with pytest.raises(InterestGymError, match=message):
        EventBatch(**columns)


def test_a_row_without_a_decision_yet_is_not_scored_and_labels_are_checked(policy):
    rng = np.random.default_rng(4)
    table = policy.new_table(2)
    policy.update_table(table, [0], [Event(ts=10, action="click", item_vector=_unit(rng), category="c1")])
    cands = np.stack([[_unit(rng) for _ in range(3)] for _ in range(2)])
    before = table.states()
    with pytest.raises(InterestGymError, match=r"labels hold 2; expected 0 \(not clicked\) or 1"):
        policy.record_outcomes_table(table, [0, 1], cands, [[1, 0, 2], [1, 0, 0]], popularity=np.zeros((2, 3)), hours=[1, 1])
    with pytest.raises(InterestGymError, match=r"labels of shape \(2, 2\); expected \(2, 3\)"):
        policy.record_outcomes_table(table, [0, 1], cands, [[1, 0], [1, 0]], popularity=np.zeros((2, 3)), hours=[1, 1])
    assert table.states() == before
    metrics = policy.record_outcomes_table(table, [0, 1], cands, [[1, 0, 0], [1, 0, 0]], popularity=np.zeros((2, 3)),
                                           candidate_categories=[["c1"] * 3] * 2, hours=[1, 1])
    assert not np.isnan(metrics[policy.reward_metric][0]) and np.isnan(metrics[policy.reward_metric][1])
    assert table.state(1) == before[1] and table.state(0).counter("pending_points") == 1


def test_append_checks_every_new_state_before_it_adds_any(policy):
    table = policy.new_table(3)
    before = _snapshot(table)
    foreign = policy.new_state()
    foreign.profiles = np.zeros((foreign.profiles.shape[0], 8), np.float32)  # another encoder's dimension
    lacking = policy.new_state()
    lacking.category_counts = None  # a state written under a policy without the category counts
    cases = [([foreign], r"profiles of shape \(5, 8\) per user; the table's are \(5, 16\)"),
             ([policy.new_state(), foreign], r"states of dimensions \[8, 16\]; expected one dimension"),
             (["not a state"], r"item 0 is a str; expected UserState objects"),
             ([policy.new_state(), 3], r"item 1 is a int; expected UserState objects")]
    if table.category_counts is not None:
        cases.append(([policy.new_state(), lacking], r"new state 1 has no category_counts, the table's users have"))
        cases.append(([lacking], r"the new states' category_counts is missing; the table's has shape"))
    for states, message in cases:
        with pytest.raises(InterestGymError, match=message):
            table.append(states)
        after = _snapshot(table)
        assert len(table) == 3 and all(np.array_equal(x, y) for x, y in zip(before[0], after[0])) and after[1] == before[1]
    assert table.append([policy.new_state()]).tolist() == [3] and table.state(3) == policy.new_state()


def test_wrong_kinds_of_input_get_our_messages(policy):
    table = policy.new_table(2)
    with pytest.raises(InterestGymError, match=r"EventBatch.has_item of shape \(2,\) and type int64; expected \(2,\) booleans"):
        EventBatch(ts=[1, 2], action=["click"] * 2, item_vectors=np.zeros((2, 16), np.float32), has_item=[0, 2])
    with pytest.raises(InterestGymError, match=r"EventBatch.item_vectors: could not convert string to float"):
        EventBatch(ts=[1], action=["click"], item_vectors=[["a"] * 16])
    with pytest.raises(InterestGymError, match=r"update_table events: dict; expected an EventBatch or a list of Event"):
        policy.update_table(table, [0], {"ts": 1})
    rng = np.random.default_rng(8)
    policy.update_table(table, [0, 1], [Event(ts=5, action="click", item_vector=_unit(rng), category="c1")] * 2)
    cands = np.stack([[_unit(rng) for _ in range(3)] for _ in range(2)])
    with pytest.raises(InterestGymError, match=r"candidate_ids of shape \(2,\); expected \(2, 3\)"):
        policy.record_outcomes_table(table, [0, 1], cands, [[1, 0, 0]] * 2, candidate_ids=[["a", "b", "c"], ["d"]],
                                     candidate_categories=[["c1"] * 3] * 2, hours=[1, 1])
    # the hours are checked whether a row is scored or not (here none is: nothing clicked)
    with pytest.raises(InterestGymError, match=r"hour \[99, 99\]: expected integers in \[0, 23\]"):
        policy.record_outcomes_table(table, [0, 1], cands, [[0, 0, 0]] * 2, popularity=np.zeros((2, 3)), hours=[99, 99])
