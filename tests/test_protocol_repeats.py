"""The honest next-positive protocol for logs with repeat consumption.

With ``exclude="log"`` any item of the user's log is kept out of the negatives, so a candidate the user
touched before can only be the target ("seen before" alone then ranks well). ``exclude="target"``
keeps out only the target and the items engaged with at that same moment; ``auto`` picks it for logs
with repeats. Checked here against the event log itself, point by point.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from env_fixtures import make_dataset, random_unit
from interestgym.envs.replay_data import ProtocolSpec, build_replay_data

from interestgym.data.dataset import Dataset


def _events(repeats: bool) -> pd.DataFrame:
    """24 users who click 10-16 items each; with ``repeats`` users come back to items they clicked."""
    rng = np.random.default_rng(7)
    rows, seq = [], 0
    for u in range(24):
        n = int(rng.integers(10, 17))
        ts = 1_000_000 + np.sort(rng.choice(30 * 86400, n, replace=False))
        ts[3] = ts[2]  # two clicks in one second: a "same moment" pair
        items = rng.integers(0, 8, n) if repeats else rng.choice(40, n, replace=False)
        for k in range(n):
            rows.append({"user_id": f"u{u:02d}", "ts": int(ts[k]), "item_id": f"i{int(items[k])}", "action": "click",
                         "value": np.float32(1.0), "hour": np.int8((ts[k] // 3600) % 24),
                         "weekday": np.int8((ts[k] // 86400 + 3) % 7), "seq": seq})
            seq += 1
    df = pd.DataFrame(rows)
    df["ts"], df["seq"] = df["ts"].astype(np.int64), df["seq"].astype(np.int64)
    return df


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("repeats")
    rng = np.random.default_rng(1)
    return {kind: make_dataset(root / kind, n_items=40, events=_events(kind == "repeats"), embeddings=random_unit(40, 8, rng))
            for kind in ("repeats", "no_repeats")}


def _points(data):
    """(user id, target item, candidate items, repeat flag) of every scoring point."""
    out = []
    for p in range(data.n_points):
        lo, hi = data.point_offsets[p], data.point_offsets[p + 1]
        cand, labels = data.point_candidates[lo:hi], data.point_labels[lo:hi]
        user = data.user_ids[data.decision_user[np.searchsorted(data.decision_point_end, p, side="right")]]
        out.append((user, int(cand[labels == 1][0]), cand[labels == 0], bool(data.point_repeat[p])))
    return out


def _points_in_the_log(ds, data):
    """Each scoring point beside the user's log: (target, negatives, repeat flag, the user's events, their item
    indices, the target event's row). The point scores the decision after its own: that decision's event is the
    target's."""
    ev = ds.events
    item_index = {iid: i for i, iid in enumerate(ds.items["item_id"].astype(str))}
    ev_item = ev["item_id"].astype(str).map(item_index).to_numpy()
    for k, (user, target, negatives, repeat) in enumerate(_points(data)):
        mine = ev[ev["user_id"] == user]
        row = data.decision_event_row[np.searchsorted(data.decision_point_end, k, side="right") + 1]
        yield target, negatives, repeat, mine, ev_item[mine.index], row


def test_auto_picks_the_honest_protocol_only_for_logs_with_repeats(datasets):
    spec = ProtocolSpec(split="test", n_negatives=30)
    assert build_replay_data(Dataset.open(datasets["repeats"]), None, spec).describe()["exclude"] == "target"
    assert build_replay_data(Dataset.open(datasets["no_repeats"]), None, spec).describe()["exclude"] == "log"


def test_target_exclusion_keeps_out_only_the_target_and_its_moment(datasets):
    ds = Dataset.open(datasets["repeats"])
    data = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=30, exclude="target"))
    ev = ds.events
    own_items_as_negatives = 0
    for target, negatives, repeat, mine, items, row in _points_in_the_log(ds, data):
        moment = mine["ts"].to_numpy() == ev.loc[row, "ts"]
        assert target in set(items[moment].tolist())
        assert not (set(negatives.tolist()) & set(items[moment].tolist()))
        own_items_as_negatives += len(set(negatives.tolist()) & set(items.tolist()))
        before = (mine["ts"].to_numpy() < ev.loc[row, "ts"]) | (moment & (mine["seq"].to_numpy() < ev.loc[row, "seq"]))
        assert repeat == (target in set(items[before].tolist()))
    assert own_items_as_negatives > 0  # the user's own items do appear as negatives


def test_log_exclusion_is_the_old_protocol_and_keeps_its_negatives(datasets):
    ds = Dataset.open(datasets["repeats"])
    data = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=30, exclude="log"))
    ev = ds.events
    for user, _target, negatives, _repeat in _points(data):
        log_items = set(ev.loc[ev["user_id"] == user, "item_id"].astype(str))
        names = set(ds.items["item_id"].astype(str).to_numpy()[negatives])
        assert not (names & log_items)


def test_past_exclusion_keeps_out_what_the_user_touched_up_to_the_target_and_nothing_later(datasets):
    """``exclude="past"``: the negatives of a point avoid every item of the user's log up to the target's event (its
    own included); items the user touches only afterwards may be negatives. Checked against the event log."""
    ds = Dataset.open(datasets["no_repeats"])
    data = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=30, exclude="past"))
    later_items_as_negatives = 0
    for target, negatives, _repeat, mine, items, row in _points_in_the_log(ds, data):
        upto = int(np.flatnonzero(mine.index == row)[0])  # the target's position in the user's log
        assert items[upto] == target
        assert not (set(negatives.tolist()) & set(items[: upto + 1].tolist()))
        later_items_as_negatives += len(set(negatives.tolist()) & set(items[upto + 1:].tolist()))
    assert later_items_as_negatives > 0  # what comes after the target is not excluded


# ------------------------------------------------------------------------------- history negatives
def test_history_negatives_are_the_users_earlier_items_and_the_rest_come_from_the_catalogue(datasets):
    """K of the N negatives are drawn from the items the user engaged with before the target (never the target
    nor an item of its moment), the rest from the catalogue, never twice; checked against the event log."""
    ds = Dataset.open(datasets["repeats"])
    k, n = 3, 12
    data = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=n, history_negatives=k))
    plain = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=n))
    assert data.describe()["history_negatives"] == k and "history_negatives" not in plain.describe()
    ev = ds.events
    item_index = {iid: i for i, iid in enumerate(ds.items["item_id"].astype(str))}
    ev_item = ev["item_id"].astype(str).map(item_index).to_numpy()
    full_history = 0
    for target, negatives, _repeat, mine, items, row in _points_in_the_log(ds, data):
        assert len(negatives) == n and len(set(negatives.tolist())) == n and target not in set(negatives.tolist())
        moment = mine["ts"].to_numpy() == ev.loc[row, "ts"]
        # "before": events ahead of the target's in the user's log order (the order its first_seen positions count)
        earlier = set(items[: int(np.flatnonzero(mine.index == row)[0])].tolist()) - set(items[moment].tolist())
        from_history = set(negatives.tolist()) & earlier
        # the history draw takes min(k, eligible) of the earlier items; the catalogue draw may add more of them
        assert len(from_history) >= min(k, len(earlier))
        assert not (set(negatives.tolist()) & set(items[moment].tolist()))
        full_history += len(earlier) >= k
    assert full_history > 10
    # the plain protocol's users' own earlier items are rarely negatives; here at least k per point where possible
    mean_plain = np.mean([len(set(neg.tolist()) & set(ev_item[ev["user_id"] == u])) for u, _, neg, _ in _points(plain)])
    mean_history = np.mean([len(set(neg.tolist()) & set(ev_item[ev["user_id"] == u])) for u, _, neg, _ in _points(data)])
    assert mean_history > mean_plain


def test_history_negatives_need_an_exclusion_that_lets_past_items_in(datasets):
    from interestgym.errors import InterestGymError

    with pytest.raises(InterestGymError, match=r"history_negatives=3 with exclude='log'"):
        ProtocolSpec(split="test", n_negatives=12, exclude="log", history_negatives=3)
    with pytest.raises(InterestGymError, match=r"history_negatives=13 \(--history-negatives\): expected an integer in \[0, n_negatives=12\]"):
        ProtocolSpec(split="test", n_negatives=12, history_negatives=13)
    # auto on a log without repeats means 'log': refused when the points are built, naming the way out
    with pytest.raises(InterestGymError, match=r"this log's exclusion is 'log'.*pass --exclude target .* or --history-negatives 0"):
        build_replay_data(Dataset.open(datasets["no_repeats"]), None, ProtocolSpec(split="test", n_negatives=12, history_negatives=3))
    assert build_replay_data(Dataset.open(datasets["no_repeats"]), None,
                             ProtocolSpec(split="test", n_negatives=12, exclude="target", history_negatives=3)).n_points > 0


def test_k_zero_draws_the_same_negatives_as_before():
    from interestgym.core.protocol import sample_negatives, user_rng

    rng_a, rng_b = user_rng(0, "u"), user_rng(0, "u")
    first_seen = np.full(50, np.iinfo(np.int64).max, dtype=np.int64)
    first_seen[[3, 7]] = [0, 2]
    cutoff = np.array([-1, 5, 9], dtype=np.int64)
    a = sample_negatives(rng_a, 10, np.ones(50), first_seen, cutoff)
    b = sample_negatives(rng_b, 10, np.ones(50), first_seen, cutoff, per_point=np.array([10, 10, 10]))
    assert np.array_equal(a, b)
    # keeping fewer keeps the first draws: a subset of the full draw
    c = sample_negatives(user_rng(0, "u"), 10, np.ones(50), first_seen, cutoff, per_point=np.array([4, 10, 0]))
    assert set(c[0][c[0] >= 0].tolist()) <= set(a[0].tolist()) and (c[0] >= 0).sum() == 4 and (c[2] < 0).all()


def test_a_points_history_draw_depends_on_the_past_only():
    """A point's history negatives are the same whatever the user does after its target, and whatever block
    size the draw runs in; the catalogue's generator is not touched by them."""
    from interestgym.core.protocol import history_rng, sample_history

    never = np.iinfo(np.int64).max
    first_seen = np.full(30, never, dtype=np.int64)
    first_seen[[4, 9, 2, 17, 11, 25]] = [0, 1, 2, 3, 5, 8]  # item 25 first seen after every target below
    target_pos = np.array([2, 4, 6, 7], dtype=np.int64)
    exclude = (np.array([1, 3]), np.array([9, 11]))
    a = sample_history(history_rng(0, "u"), 2, first_seen, target_pos, exclude)
    later = first_seen.copy()
    later[[25, 27]] = [6, 7]  # more items, seen later: they may join later points, never earlier ones
    b = sample_history(history_rng(0, "u"), 2, later, target_pos[:2], exclude)
    assert np.array_equal(a[:2], b)
    c = sample_history(history_rng(0, "u"), 2, first_seen, target_pos, exclude, max_block=3)
    assert np.array_equal(a, c)
    for p, row in enumerate(a):
        eligible = {i for i in range(30) if first_seen[i] < target_pos[p]} - {int(i) for q, i in zip(*exclude) if q == p}
        picked = {int(i) for i in row if i >= 0}
        assert picked <= eligible and len(picked) == min(2, len(eligible))


def test_evaluates_by_target_table_splits_the_points_by_the_logs_repeat_flags(datasets, tmp_path):
    """`evaluate`'s by-target table: its "repeat" rows are the points whose target the user engaged with before (the
    replay's flags, checked against the log above), "new" the others, each a mean over users of their points there."""
    import json

    from interestgym.agents.rules import make_baseline
    from interestgym.envs.vector import evaluate_policy

    from interestgym.evaluation.run import evaluate_run

    evaluate_run(datasets["repeats"], out=tmp_path / "ev", baselines="ema", n_boot=50, progress=False)
    doc = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    ref = doc["summary"]["reference"]
    data = build_replay_data(Dataset.open(datasets["repeats"]), None, ProtocolSpec(split="test"))
    points = evaluate_policy(data, make_baseline(ref, **doc["tuned_baselines"][ref]["params"]), progress=False).points
    flags = dict(zip(data.point_key, data.point_repeat))
    repeat = points["point_key"].map(flags).to_numpy(dtype=bool)
    assert 0 < repeat.sum() < len(repeat)
    for target, mask in (("repeat", repeat), ("new", ~repeat)):
        entry = doc["summary"]["by_target"][target]["policies"][ref]
        assert entry["n_points"] == int(mask.sum()), target
        expected = points[mask].groupby("user_id")["ndcg@10"].mean().mean()
        assert entry["metrics"]["ndcg@10"]["mean"] == pytest.approx(expected, abs=1e-12), target


# ------------------------------------------------------------------------------ impressions in the log
def _events_with_impressions() -> pd.DataFrame:
    """24 users who click 10-16 distinct items each, every click preceded by an impression of that item and one of
    another item: shown items are in the log, but no user engages with an item twice."""
    rng = np.random.default_rng(11)
    rows, seq = [], 0
    for u in range(24):
        n = int(rng.integers(10, 17))
        clicked = rng.choice(40, n, replace=False)
        ts = 1_000_000 + np.sort(rng.choice(30 * 86400, n, replace=False)) * 2
        for k in range(n):
            shown = int(rng.integers(0, 40))
            for t, item, action in ((ts[k] - 1, int(clicked[k]), "impression"), (ts[k] - 1, shown, "impression"),
                                    (ts[k], int(clicked[k]), "click")):
                rows.append({"user_id": f"u{u:02d}", "ts": int(t), "item_id": f"i{item}", "action": action,
                             "value": np.float32(1.0), "hour": np.int8((t // 3600) % 24), "weekday": np.int8((t // 86400 + 3) % 7),
                             "seq": seq})
                seq += 1
    df = pd.DataFrame(rows)
    df["ts"], df["seq"] = df["ts"].astype(np.int64), df["seq"].astype(np.int64)
    return df


def test_an_impression_is_not_engagement(tmp_path):
    """A shown item is not one the user engaged with: a click on an item shown before is no repeat, a log whose only
    "repeats" are impression + click keeps the classic protocol under ``auto``, and an item only shown to the user
    may be a negative (``log`` keeps out what the user clicked). Checked against the event log."""
    ds = Dataset.open(make_dataset(tmp_path / "imp", n_items=40, events=_events_with_impressions(),
                                   embeddings=random_unit(40, 8, np.random.default_rng(2))))
    data = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=30))
    assert data.describe()["exclude"] == "log"
    assert not data.point_repeat.any()
    shown_only_as_negatives = 0
    for target, negatives, repeat, mine, items, _row in _points_in_the_log(ds, data):
        clicked = set(items[(mine["action"] == "click").to_numpy()].tolist())
        shown = set(items[(mine["action"] == "impression").to_numpy()].tolist())
        assert target in clicked and not repeat
        assert not (set(negatives.tolist()) & clicked)
        shown_only_as_negatives += len(set(negatives.tolist()) & (shown - clicked))
    assert shown_only_as_negatives > 0


def test_auto_reads_the_training_users_repeats_only(tmp_path):
    """Which negatives every split gets is not for test users to decide: a repeat by a test user alone leaves `auto`
    at `log`; the same repeat by a training user turns it to `target`."""
    events = _events(repeats=False)
    base = make_dataset(tmp_path / "base", n_items=40, events=events, embeddings=random_unit(40, 8, np.random.default_rng(1)))
    users = Dataset.open(base).users
    spec = ProtocolSpec(split="valid", n_negatives=30)
    found = {}
    for split in ("test", "train"):
        user = min(users.loc[users["split"] == split, "user_id"])
        mine = events[events["user_id"] == user]
        again = mine.iloc[[-1]].assign(ts=mine["ts"].max() + 60, seq=events["seq"].max() + 1)  # its last item, once more
        ds = make_dataset(tmp_path / split, n_items=40, events=pd.concat([events, again], ignore_index=True),
                          embeddings=random_unit(40, 8, np.random.default_rng(1)))
        assert Dataset.open(ds).users.equals(users)  # the same split: only the repeat differs
        found[split] = build_replay_data(Dataset.open(ds), None, spec).describe()["exclude"]
    assert found == {"test": "log", "train": "target"}
