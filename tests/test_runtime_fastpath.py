"""The runtime's one-event fast path against the batched core path, to the bit.

``ExportedPolicy.update`` (one user, one event: ``runtime.update.update_one`` with the single-row
encoder ``runtime.rowfeatures.RowEncoder``) takes a different code path from ``update_batch`` (stacked
users through the core's ``encode_features`` / ``decision_transition``). These tests pin the two
together on random event streams (decisions, non-decisions, new and repeated categories, scoring
points folded at the next decision, the extra score terms), pin the encoder to ``encode_features``, and
check the state's block layout; ``tests/test_export_run.py`` then pins the one-event path to
``evaluate_policy`` on replayed users.
"""

from __future__ import annotations

import numpy as np
import pytest
from export_fixtures import trained_export

from interestgym.core.features import FEATURE_NAMES, encode_features
from interestgym.errors import InterestGymError
from interestgym.runtime import Event, UserState, load_policy
from interestgym.runtime.rowfeatures import RowEncoder, raw_row
from interestgym.runtime.state import STRENGTHS_SLICE
from interestgym.runtime.update import update_many

VARIANTS = ["next_positive", "impressions", "impressions_tied"]
ACTIONS = ("click", "view", "purchase", "impression", "rate")


@pytest.fixture(scope="module", params=VARIANTS)
def policy(request, tmp_path_factory):
    return load_policy(trained_export(tmp_path_factory, request.param).export)


def _unit(rng: np.random.Generator, d: int = 16) -> np.ndarray:
    v = rng.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def _random_event(rng: np.random.Generator, ts: int, categories: list[str]) -> Event:
    action = str(rng.choice(ACTIONS))
    return Event(ts=ts, action=action, item_vector=None if rng.random() < 0.05 else _unit(rng),
                 value=float(rng.integers(1, 6)) if action == "rate" else 1.0, category=str(rng.choice(categories)),
                 hour=int(rng.integers(0, 24)) if rng.random() < 0.7 else None, weekday=int(rng.integers(0, 7)) if rng.random() < 0.7 else None)


def _stream(policy, seed: int, n_users: int = 6, n_events: int = 60) -> list[tuple[list[UserState], list[UserState]]]:
    """Run the same random stream through update (one event) and the batched path (update_many with
    one row: the core's encode_features / decision_transition); return both states after each event."""
    rng = np.random.default_rng(seed)
    categories = ["", "c1", "c2", "c3", "sports", "unknown-to-the-export"]
    fast = [policy.new_state() for _ in range(n_users)]
    slow = [policy.new_state() for _ in range(n_users)]
    ts = [int(rng.integers(0, 10**6)) for _ in range(n_users)]
    pairs = []
    for _ in range(n_events):
        u = int(rng.integers(0, n_users))
        ts[u] += int(rng.choice([0, 1, 30, 3600, 86400 * 40, 86400 * 400]))
        event = _random_event(rng, ts[u], categories)
        fast[u] = policy.update(fast[u], event)
        slow[u] = update_many(policy, [slow[u]], [event])[0]
        if fast[u].counter("n_decisions") and rng.random() < 0.4:
            # scoring points recorded between decisions: folded into the running means at the next one
            cands = np.stack([_unit(rng) for _ in range(5)])
            labels = [1, 0, 0, 1, 0] if rng.random() < 0.5 else [0, 1, 0, 0, 0]
            ids = [f"i{k}" for k in rng.integers(0, 90, 5)]
            cats = [str(c) for c in rng.choice(categories, 5)]
            hour = int(rng.integers(0, 24))
            fast[u], _ = policy.record_outcome(fast[u], cands, labels, candidate_ids=ids, candidate_categories=cats, hour=hour)
            slow[u], _ = policy.record_outcome(slow[u], cands, labels, candidate_ids=ids, candidate_categories=cats, hour=hour)
        pairs.append(([s.copy() for s in fast], [s.copy() for s in slow]))
    return pairs


def test_the_row_encoder_is_active_and_equals_encode_features(policy):
    encoder = policy._row_encoder
    assert encoder.fast, "the one-event encoder fell back to the core: runtime/rowfeatures.py no longer matches core.features"
    weights = list(policy.action_weights.values())
    for seed in (1, 2, 3):
        probes = encoder.probes(weights, n_random=300, seed=seed)
        expected = np.concatenate([encode_features(raw_row(*p), FEATURE_NAMES, max_action_weight=policy.max_action_weight)
                                   for p in probes])
        got = np.concatenate([encoder.encode(*p) for p in probes])
        assert got.dtype == np.float32 and got.view(np.uint32).tolist() == expected.view(np.uint32).tolist()


def test_an_encoder_that_disagrees_with_the_core_falls_back_to_it(policy, monkeypatch):
    from interestgym.runtime import rowfeatures

    monkeypatch.setattr(rowfeatures, "_LOG_GAP", rowfeatures._LOG_GAP * 1.5)  # a drifted constant
    encoder = RowEncoder(policy.max_action_weight, policy.action_weights)
    assert not encoder.fast
    probe = encoder.probes(list(policy.action_weights.values()), n_random=1)[5]
    expected = encode_features(raw_row(*probe), FEATURE_NAMES, max_action_weight=policy.max_action_weight)
    assert encoder.encode(*probe).tobytes() == expected.tobytes()


@pytest.mark.parametrize("seed", [0, 1])
def test_one_event_updates_equal_the_batched_core_path_to_the_bit(policy, seed):
    pairs = _stream(policy, seed)
    assert pairs[-1][0][0].counter("n_decisions") > 0
    for fast, slow in pairs:
        for a, b in zip(fast, slow):
            assert a == b
            assert a.stats.tobytes() == b.stats.tobytes() and a.profiles.tobytes() == b.profiles.tobytes()
    # the stream exercised what it should: folded scoring points and more than one category
    last = pairs[-1][0]
    assert any(s.running_mean("reward_ema") != 0 for s in last)
    assert any(len(s.categories) > 1 for s in last)


def test_the_fallback_encoder_gives_the_same_updates(tmp_path_factory):
    fast_policy = load_policy(trained_export(tmp_path_factory, "impressions").export)
    slow_policy = load_policy(trained_export(tmp_path_factory, "impressions").export)
    slow_policy._row_encoder.fast = False  # every observation through core.features.encode_features
    rng = np.random.default_rng(4)
    a, b = fast_policy.new_state(), slow_policy.new_state()
    for t in range(40):
        event = _random_event(rng, 1000 * t, ["c1", "c2", "c3"])
        a, b = fast_policy.update(a, event), slow_policy.update(b, event)
        assert a == b
        seen_fast, seen_slow = fast_policy.observe(a, event), slow_policy.observe(b, event)
        assert (seen_fast is None and seen_slow is None) or seen_fast.tobytes() == seen_slow.tobytes()


def test_update_batch_equals_one_event_updates_with_mixed_events(policy):
    rng = np.random.default_rng(5)
    states = [policy.new_state() for _ in range(7)]
    for t in range(12):
        events = [_random_event(rng, 10_000 * t + u, ["c1", "c2"]) for u in range(7)]
        batched = policy.update_batch(states, events)
        one_by_one = [policy.update(s, e) for s, e in zip(states, events)]
        assert all(x == y for x, y in zip(batched, one_by_one))
        # new objects, no shared memory with the inputs or between users
        assert not any(np.shares_memory(x.profiles, s.profiles) for x, s in zip(batched, states))
        assert not np.shares_memory(batched[0].profiles, batched[1].profiles)
        states = batched


def test_updates_never_mutate_their_input_state(policy):
    rng = np.random.default_rng(6)
    s = policy.new_state()
    for t in range(10):
        before = s.copy()
        new = policy.update(s, Event(ts=100 * t, action="click", item_vector=_unit(rng), category=f"c{t % 3}"))
        assert s == before and new is not s
        assert not np.shares_memory(new.stats, s.stats) and not np.shares_memory(new.counters, s.counters)
        s = new


def test_decision_rule_outcomes_are_remembered_but_unknown_actions_always_refused(policy):
    rng = np.random.default_rng(7)
    s = policy.new_state()
    for _ in range(2):  # the second time the (action, value) pair would be remembered if it were
        with pytest.raises(InterestGymError, match="'tap'"):
            policy.update(s, Event(ts=1, action="tap", item_vector=_unit(rng)))
    high = policy.update(s, Event(ts=2, action="rate", value=5.0, item_vector=_unit(rng)))
    low = policy.update(s, Event(ts=2, action="rate", value=1.0, item_vector=_unit(rng)))
    assert high.counter("n_decisions") == 1 and low.counter("n_decisions") == 0
    assert policy._decision(Event(ts=3, action="rate", value=5.0, item_vector=_unit(rng)))
    assert not policy._decision(Event(ts=3, action="rate", value=5.0, item_vector=None))


def test_item_vectors_are_checked_on_the_fast_path(policy):
    rng = np.random.default_rng(8)
    s = policy.new_state()
    with pytest.raises(InterestGymError, match="L2 norm 2"):
        policy.update(s, Event(ts=1, action="click", item_vector=2.0 * _unit(rng)))
    with pytest.raises(InterestGymError, match="shape"):
        policy.update(s, Event(ts=1, action="click", item_vector=_unit(rng)[None]))
    with pytest.raises(InterestGymError, match="shape"):
        policy.update(s, Event(ts=1, action="click", item_vector=_unit(rng, 8)))
    nan = np.full(16, np.nan, np.float32)
    with pytest.raises(InterestGymError, match="L2-normalised"):
        policy.update(s, Event(ts=1, action="click", item_vector=nan))
    # a norm within the tolerance but outside the fast check's margin, and a zero row (no text), pass
    v = _unit(rng) * np.float32(1.0008)
    assert policy.update(s, Event(ts=1, action="click", item_vector=v)).counter("n_decisions") == 1
    assert policy.update(s, Event(ts=1, action="click", item_vector=np.zeros(16, np.float32))).counter("n_decisions") == 1


def test_state_blocks_are_the_named_fields(policy):
    rng = np.random.default_rng(9)
    s = policy.update(policy.new_state(), Event(ts=5, action="click", item_vector=_unit(rng), category="c1"))
    # the named fields are views into the blocks: one memory, both ways
    assert np.shares_memory(s.long_term, s.profiles) and np.shares_memory(s.strengths, s.stats)
    s.strengths[3] = 0.25
    assert s.stats[STRENGTHS_SLICE][3] == 0.25
    x = _unit(rng)
    s.short_term = x
    np.testing.assert_array_equal(s.profiles[1], x)
    # the serialised layout keeps the named fields (dtypes, shapes) and round-trips exactly
    back = UserState.from_bytes(s.to_bytes(), dim=16)
    assert back == s and back.shadow.shape == (3, 16) and back.running_means.shape == (5,)
    assert UserState.from_json(s.to_json()) == s
    built = UserState(long_term=s.long_term, short_term=s.short_term, shadow=s.shadow, running_means=s.running_means,
                      shadow_cos_ema=s.shadow_cos_ema, counters=s.counters, strengths=s.strengths,
                      pending_sums=s.pending_sums, categories=s.categories, category_decisions=s.category_decisions,
                      category_counts=s.category_counts, slot_profiles=s.slot_profiles)
    assert built == s and not np.shares_memory(built.profiles, s.profiles)
