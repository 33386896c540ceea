"""The runtime's update / score / outcome bookkeeping against independently written formulas."""

from __future__ import annotations

import numpy as np
import pytest
from export_fixtures import trained_export

from interestgym.core.features import FeatureView
from interestgym.errors import InterestGymError
from interestgym.runtime import Event, UserState, load_policy


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return load_policy(trained_export(tmp_path_factory, "next_positive").export)


def _unit(rng, d=16):
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def _expected_update(profile: np.ndarray, x: np.ndarray, a: float) -> np.ndarray:
    v = (1 - np.float32(a)) * profile.astype(np.float64) + np.float32(a) * x.astype(np.float64)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def test_update_moves_profiles_by_the_policys_strengths(policy):
    rng = np.random.default_rng(0)
    state = policy.new_state()
    x1, x2 = _unit(rng), _unit(rng)
    e1 = Event(ts=1_000, action="click", item_vector=x1, category="c1", hour=9, weekday=2)
    s1 = policy.update(state, e1)
    a = policy.strengths(policy.observe(state, e1)[None])[0]
    # from the zero profile, any positive strength lands exactly on the item
    assert a[0] > 0
    np.testing.assert_allclose(s1.long_term, x1, atol=1e-6)
    e2 = Event(ts=4_600, action="purchase", item_vector=x2, category="c2", hour=10, weekday=2)
    obs = policy.observe(s1, e2)
    b = policy.strengths(obs[None])[0]
    s2 = policy.update(s1, e2)
    np.testing.assert_allclose(s2.long_term, _expected_update(s1.long_term, x2, b[0]), atol=1e-6)
    np.testing.assert_allclose(s2.short_term, _expected_update(s1.short_term, x2, b[1]), atol=1e-6)
    np.testing.assert_allclose(s2.strengths, b)
    # the observation of e2 saw the past correctly: one previous event 3,600 s before, cos with L
    view = FeatureView(obs[None])
    assert view.n_events[0] == 1 and view.n_decisions[0] == 1
    assert view.gap_seconds[0] == pytest.approx(3600, rel=1e-4)
    assert view["cos_item_long"][0] == pytest.approx(float(x2 @ s1.long_term), abs=1e-6)
    assert view["category_new"][0] == 1.0
    assert state == policy.new_state()  # update never mutates its input


def test_non_decisions_only_advance_counters(policy):
    rng = np.random.default_rng(1)
    s = policy.update(policy.new_state(), Event(ts=10, action="click", item_vector=_unit(rng), category="c1"))
    before = s.copy()
    for event in (
        Event(ts=20, action="impression", item_vector=_unit(rng)),          # weight 0
        Event(ts=30, action="rate", value=2.0, item_vector=_unit(rng)),     # rating below 4
        Event(ts=40, action="click", item_vector=None),                     # item without embedding
    ):
        s = policy.update(s, event)
    np.testing.assert_array_equal(s.long_term, before.long_term)
    np.testing.assert_array_equal(s.short_term, before.short_term)
    assert s.counter("n_events") == 4 and s.counter("n_decisions") == 1 and s.counter("last_event_ts") == 40


def test_score_is_the_documented_formula(policy):
    rng = np.random.default_rng(2)
    s = policy.new_state()
    for t in range(3):
        s = policy.update(s, Event(ts=100 * (t + 1), action="click", item_vector=_unit(rng), category=f"c{t}"))
    cands = np.stack([_unit(rng) for _ in range(7)])
    ids = ["i0", "i5", "i17", "unknown-item", "i3", "i8", "i2"]
    got = policy.score(s, cands, candidate_ids=ids)
    _, _, w, p = s.strengths
    pop = np.array([policy.popularity[int(i[1:])] if i != "unknown-item" else 0.0 for i in ids])
    expected = (1 - p) * (w * (cands @ s.short_term) + (1 - w) * (cands @ s.long_term)) + p * pop
    np.testing.assert_allclose(got, expected, atol=1e-6)
    with pytest.raises(InterestGymError, match="candidate_ids"):
        policy.score(s, cands)
    # popularity given by the caller: the formula's own, where it is a share in [0, 1]; NaN or outside, refused (Trial M)
    given = np.linspace(0.0, 1.0, 7)
    np.testing.assert_allclose(policy.score(s, cands, popularity=given),
                               (1 - p) * (w * (cands @ s.short_term) + (1 - w) * (cands @ s.long_term)) + p * given, atol=1e-6)
    with pytest.raises(InterestGymError, match=r"popularity of shape \(3,\); expected \(7,\) \(one value per candidate\)"):
        policy.score(s, cands, popularity=given[:3])
    with pytest.raises(InterestGymError, match=r"popularity: <U1 values that are not numbers; expected numbers in \[0, 1\]"):
        policy.score(s, cands, popularity=list("abcdefg"))
    for bad, found in ((np.nan, "nan"), (-1.0, "-1.0"), (1.5, "1.5")):
        with pytest.raises(InterestGymError, match=rf"popularity {found} at candidate 2 \(1 such values\); expected numbers in \[0, 1\]"):
            policy.score(s, cands, popularity=np.where(np.arange(7) == 2, bad, 0.5))


def test_a_user_without_a_decision_is_ranked_by_popularity(policy):
    """Cold start: no profile and no strengths yet, so the score is the popularity prior alone (it was 0
    for every candidate); after a first decision the policy's own strengths take over."""
    rng = np.random.default_rng(5)
    cands = np.stack([_unit(rng) for _ in range(6)])
    ids = ["i4", "i0", "i9", "unknown-item", "i2", "i7"]
    pop = np.array([policy.popularity[int(i[1:])] if i != "unknown-item" else 0.0 for i in ids])
    cold = policy.new_state()
    got = policy.score(cold, cands, candidate_ids=ids)
    np.testing.assert_allclose(got, pop, atol=1e-6)
    assert len(set(np.round(got, 6))) > 1  # not every candidate alike
    # an event that is not a decision leaves the user cold
    cold = policy.update(cold, Event(ts=5, action="impression", item_vector=_unit(rng)))
    np.testing.assert_allclose(policy.score(cold, cands, candidate_ids=ids), pop, atol=1e-6)
    warm = policy.update(cold, Event(ts=10, action="click", item_vector=cands[0], category="c1"))
    _, _, w, p = warm.strengths
    expected = (1 - p) * (w * (cands @ warm.short_term) + (1 - w) * (cands @ warm.long_term)) + p * pop
    np.testing.assert_allclose(policy.score(warm, cands, candidate_ids=ids), expected, atol=1e-6)


def test_batched_forms_equal_one_user_at_a_time(policy):
    rng = np.random.default_rng(3)
    states = [policy.new_state() for _ in range(5)]
    for t in range(4):
        events = [Event(ts=1000 * t + u, action=("click", "view", "impression", "purchase", "click")[(t + u) % 5],
                        item_vector=_unit(rng), category=f"c{(t * u) % 3}") for u in range(5)]
        one_by_one = [policy.update(s, e) for s, e in zip(states, events)]
        batched = policy.update_batch(states, events)
        assert all(a == b for a, b in zip(one_by_one, batched))
        states = batched
    cands = np.stack([np.stack([_unit(rng) for _ in range(6)]) for _ in range(5)])
    ids = np.array([[f"i{k}" for k in range(6)]] * 5)
    batch_scores = policy.score_batch(states, cands, ids)
    for u in range(5):
        np.testing.assert_array_equal(batch_scores[u], policy.score(states[u], cands[u], candidate_ids=ids[u]))


def test_outcomes_feed_the_running_means_at_the_next_decision(policy):
    rng = np.random.default_rng(4)
    s = policy.update(policy.new_state(), Event(ts=10, action="click", item_vector=_unit(rng), category="c1"))
    cands = np.stack([s.long_term, -s.long_term, _unit(rng)])  # the click is the best-scored by L
    s, m = policy.record_outcome(s, cands, [1, 0, 0], candidate_ids=["i1", "i2", "i3"])
    assert m is not None and 0.0 <= m["ndcg@10"] <= 1.0
    unchanged, none = policy.record_outcome(s, cands, [0, 0, 0], candidate_ids=["i1", "i2", "i3"])
    assert none is None and unchanged is s  # no click: not a scoring point
    for bad in ([2, 0, 0], [1, -1, 0], [0.5, 0, 1]):  # a label is 0 or 1: anything else is refused, not read as "no click"
        with pytest.raises(InterestGymError, match="labels hold .*; expected 0 .not clicked. or 1 .clicked."):
            policy.record_outcome(s, cands, bad, candidate_ids=["i1", "i2", "i3"])
    s = policy.update(s, Event(ts=20, action="click", item_vector=_unit(rng), category="c1"))
    # running mean from 0 with rate 0.2: 0.2 * (the point's metric)
    assert s.running_mean("reward_ema") == pytest.approx(0.2 * m[policy.reward_metric])
    assert s.running_mean("long_metric_ema") == pytest.approx(0.2 * 1.0)  # L ranks the click first


def test_bad_events_are_refused(policy):
    rng = np.random.default_rng(5)
    s = policy.update(policy.new_state(), Event(ts=100, action="click", item_vector=_unit(rng)))
    with pytest.raises(InterestGymError, match="time order"):
        policy.update(s, Event(ts=50, action="click", item_vector=_unit(rng)))
    with pytest.raises(InterestGymError, match="'tap'"):
        policy.update(s, Event(ts=150, action="tap", item_vector=_unit(rng)))


@pytest.mark.parametrize(("fields", "message"), [
    ({"ts": "yesterday"}, r"Event.ts='yesterday': expected UTC unix seconds"),
    ({"ts": 10**30}, r"Event.ts=10+: expected UTC unix seconds, a number from 0 to 4102444799"),
    ({"ts": -1}, r"Event.ts=-1: expected"),
    ({"ts": 5, "value": float("nan")}, r"Event.value=nan: expected a finite number"),
    ({"ts": 5, "value": float("inf")}, r"Event.value=inf: expected a finite number"),
    ({"ts": 5, "value": 1e300}, r"Event.value=1e\+300: expected a finite number .* float32"),
])
def test_an_event_of_impossible_time_or_value_is_refused_when_made(fields, message):
    with pytest.raises(InterestGymError, match=message):
        Event(action="click", **fields)


def test_a_rating_needs_its_value_and_other_events_count_one_without_it():
    with pytest.raises(InterestGymError, match=r"Event\(action='rate'\) without value: a rating needs its value"):
        Event(ts=5, action="rate")
    assert Event(ts=5, action="click").value == 1.0 and Event(ts=5, action="rate", value=4.0).value == 4.0


def test_a_state_of_another_export_is_refused_by_update_and_score(policy, tmp_path_factory):
    """A state written under a policy without time-of-day profiles or category counts, given to one that has
    them, is refused naming what it lacks (it used to fail in numpy with a TypeError)."""
    other = load_policy(trained_export(tmp_path_factory, "impressions").export)
    rng = np.random.default_rng(1)
    plain = policy.update(policy.new_state(), Event(ts=100, action="click", item_vector=_unit(rng)))
    assert plain.category_counts is None and plain.slot_profiles is None
    for state in (plain, UserState.from_bytes(plain.to_bytes(), dim=policy.dim)):
        with pytest.raises(InterestGymError, match=r"category counts of none .* start users with policy.new_state\(\)"):
            other.update(state, Event(ts=200, action="click", item_vector=_unit(rng)))
        with pytest.raises(InterestGymError, match=r"category counts of none"):
            other.score(state, np.stack([_unit(rng) for _ in range(3)]), candidate_ids=["a", "b", "c"], hour=3)
    counted = policy.update(policy.new_state(), Event(ts=100, action="click", item_vector=_unit(rng)))
    counted.category_counts = np.zeros(len(policy.categories) + 2)  # counts over another export's categories
    with pytest.raises(InterestGymError, match=rf"category counts of {len(policy.categories) + 2} columns .* counts over its "
                                               rf"{len(policy.categories)} categories \(or none: its score has no category term\)"):
        policy.update(counted, Event(ts=200, action="click", item_vector=_unit(rng)))
    no_profiles = other.new_state()
    no_profiles.slot_profiles = None
    with pytest.raises(InterestGymError, match=r"without time-of-day profiles .*\(beta_ctx\)"):
        other.score(no_profiles, np.stack([_unit(rng) for _ in range(3)]), candidate_ids=["a", "b", "c"], hour=3)


def test_state_round_trips_after_real_updates(policy):
    rng = np.random.default_rng(6)
    s = policy.new_state()
    for t in range(5):
        s = policy.update(s, Event(ts=100 * t, action="click", item_vector=_unit(rng), category=f"c{t % 2}"))
    assert UserState.from_bytes(s.to_bytes(), dim=16) == s
    assert UserState.from_json(s.to_json(), dim=16) == s
    with pytest.raises(InterestGymError, match="dimension 16"):
        UserState.from_bytes(s.to_bytes(), dim=384)
    assert len(s.to_bytes()) < 1200  # d=16: profiles + statistics, a few hundred bytes


def test_unnormalised_or_broken_vectors_are_refused(policy):
    rng = np.random.default_rng(7)
    s = policy.new_state()
    with pytest.raises(InterestGymError, match="L2 norm 3"):
        policy.update(s, Event(ts=1, action="click", item_vector=3.0 * _unit(rng)))
    with pytest.raises(InterestGymError, match="L2-normalised"):
        policy.score(s, np.full((2, 16), np.nan, np.float32), candidate_ids=["i1", "i2"])
    zero_text = np.zeros((1, 16), np.float32)  # items without text encode to zero rows: allowed
    assert policy.score(s, zero_text, candidate_ids=["i1"]).shape == (1,)


def test_a_float64_vector_is_read_as_its_float32_rounding(policy):
    """The README: vectors are read as float32; a float64 one updates exactly as its float32 rounding does."""
    rng = np.random.default_rng(8)
    x64 = rng.standard_normal(16)
    x64 /= np.linalg.norm(x64)
    x32 = x64.astype(np.float32)
    assert not np.array_equal(x32.astype(np.float64), x64)  # the rounding is real
    s = policy.new_state()
    for ts in (10, 20):
        a = policy.update(s, Event(ts=ts, action="click", item_vector=x64, category="c1", hour=9, weekday=2))
        b = policy.update(s, Event(ts=ts, action="click", item_vector=x32, category="c1", hour=9, weekday=2))
        assert a == b and a.profiles.dtype == np.float32
        s = a


@pytest.mark.parametrize("category", [float("nan"), None, 123, ("a",), b"news"])
def test_a_category_that_is_not_a_str_is_refused_in_events_and_batches(policy, category):
    """A review's find: Event.category was never checked. pandas' NaN for an item without a category was kept as a float,
    and a stored state read it back as the name 'nan': the next observation then differed between a service that keeps
    states in memory and one that stores them. "" is how an event says it has no category."""
    from interestgym.runtime.table import EventBatch

    x = _unit(np.random.default_rng(0))
    with pytest.raises(InterestGymError, match=r"Event.category=.*expected a str \(\"\" when the item has none\)"):
        Event(ts=100, action="click", item_vector=x, category=category)
    categories = np.empty(2, dtype=object)
    categories[0], categories[1] = "c1", category
    with pytest.raises(InterestGymError, match=r"event 1 of the batch: category .*expected a str"):
        EventBatch(ts=np.array([100, 101]), action=np.array(["click", "click"], dtype=object), item_vectors=np.stack([x, x]),
                   category=categories)
    state = policy.update(policy.new_state(), Event(ts=100, action="click", item_vector=x, category=""))
    assert UserState.from_bytes(state.to_bytes()) == state


def test_an_outcomes_hour_is_checked_before_the_users_first_decision_too(policy):
    """A review's find: record_outcome returned (state, None) for a user without a decision whatever the hour, while
    record_outcomes_table refused the same hour; both refuse it now."""
    cands = np.stack([_unit(np.random.default_rng(i)) for i in range(3)])
    new = policy.new_state()
    assert policy.record_outcome(new, cands, [1, 0, 0], hour=5) == (new, None)  # not scored, as before
    with pytest.raises(InterestGymError, match=r"hour \[99\]: expected integers in \[0, 23\]"):
        policy.record_outcome(new, cands, [1, 0, 0], hour=99)
