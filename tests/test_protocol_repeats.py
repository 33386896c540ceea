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


def test_auto_picks_the_honest_protocol_only_for_logs_with_repeats(datasets):
    spec = ProtocolSpec(split="test", n_negatives=30)
    assert build_replay_data(Dataset.open(datasets["repeats"]), None, spec).describe()["exclude"] == "target"
    assert build_replay_data(Dataset.open(datasets["no_repeats"]), None, spec).describe()["exclude"] == "log"


def test_target_exclusion_keeps_out_only_the_target_and_its_moment(datasets):
    ds = Dataset.open(datasets["repeats"])
    data = build_replay_data(ds, None, ProtocolSpec(split="test", n_negatives=30, exclude="target"))
    ev = ds.events
    item_index = {iid: i for i, iid in enumerate(ds.items["item_id"].astype(str))}
    ev_item = ev["item_id"].astype(str).map(item_index).to_numpy()
    own_items_as_negatives = 0
    for k, (user, target, negatives, repeat) in enumerate(_points(data)):
        mine = ev[ev["user_id"] == user]
        items = ev_item[mine.index]
        # the point scores the decision that follows its own: that decision's event is the target's
        row = data.decision_event_row[np.searchsorted(data.decision_point_end, k, side="right") + 1]
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
