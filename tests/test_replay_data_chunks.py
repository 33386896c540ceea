"""Replay arrays read in bounded memory: a chunk of users gives exactly the whole split's arrays of those
users, the chunks' counts add up to the split's protocol, and the reads take only the rows they need."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from env_fixtures import make_dataset, reseal_tables
from interestgym.envs.replay_build import (
    SplitSummary,
    _RepeatCheck,
    chunk_user_lists,
    iter_replay_chunks,
)
from interestgym.envs.replay_data import ProtocolSpec, build_replay_data
from interestgym.envs.replay_points import resolve_exclusion

from interestgym.data.dataset import Dataset, _row_groups_overlapping
from interestgym.errors import ArtifactError, InterestGymError

PER_DECISION = ["decision_item", "decision_ts", "decision_slot", "decision_category", "decision_event_row", "decision_log_features"]
PER_POINT = ["point_slot", "point_key", "point_repeat"]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunks")
    next_positive = make_dataset(root / "np", n_users=30)
    impressions = make_dataset(root / "imp", n_users=30, impressions=True, seed=1)
    return {"next_positive": next_positive, "impressions": impressions}


def _stitch(chunks):
    """The chunks' arrays laid end to end as one split's (indices shifted by the earlier chunks)."""
    out: dict[str, list[np.ndarray]] = {}
    n_user = n_dec = n_pt = n_cand = 0
    for c in chunks:
        add = {
            "user_ids": c.user_ids, "user_decision_start": c.user_decision_start + n_dec,
            "user_decision_end": c.user_decision_end + n_dec, "decision_user": c.decision_user + n_user,
            "decision_point_start": c.decision_point_start + n_pt, "decision_point_end": c.decision_point_end + n_pt,
            "point_offsets": c.point_offsets[:-1] + n_cand, "point_candidates": c.point_candidates,
            "point_labels": c.point_labels, **{f: getattr(c, f) for f in PER_DECISION + PER_POINT},
        }
        for k, v in add.items():
            out.setdefault(k, []).append(np.asarray(v))
        n_user, n_dec, n_pt, n_cand = n_user + c.n_users, n_dec + c.n_decisions, n_pt + c.n_points, n_cand + int(c.point_offsets[-1])
    out.setdefault("point_offsets", []).append(np.array([n_cand]))
    return {k: np.concatenate(v) for k, v in out.items()}


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "OU" or b.dtype.kind in "OU":
        return a.astype(str).tolist() == b.astype(str).tolist()
    return a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("name,kw", [("next_positive", {}), ("next_positive", {"exclude": "past", "negatives": "popularity"}),
                                     ("impressions", {}), ("impressions", {"protocol": "next_positive", "seed": 3})])
@pytest.mark.parametrize("chunk_users", [1, 4])
def test_chunks_are_the_whole_splits_arrays_user_by_user(datasets, name, kw, chunk_users):
    for split in ("train", "test"):
        spec = ProtocolSpec(split=split, **kw)
        whole = build_replay_data(Dataset.open(datasets[name]), None, spec)
        chunks = list(iter_replay_chunks(datasets[name], None, spec, chunk_users=chunk_users, progress=False))
        assert len(chunks) > 1
        stitched = _stitch(chunks)
        for field, value in stitched.items():
            assert _equal(getattr(whole, field), value), (split, field)
        summary = SplitSummary()
        for c in chunks:
            summary.add(c)
        assert summary.describe() == whole.describe()
        assert summary.user_ids.tolist() == whole.user_ids.tolist()


def test_a_subset_of_users_is_the_whole_splits_arrays_of_those_users(datasets):
    spec = ProtocolSpec(split="train")
    ds = Dataset.open(datasets["next_positive"])
    whole = build_replay_data(ds, None, spec)
    pick = sorted(whole.user_ids[[1, 4, 6]].tolist())
    sub = build_replay_data(ds, None, spec, users=pick)
    assert sub.user_ids.tolist() == pick
    for i, user in enumerate(pick):
        u = int(np.nonzero(whole.user_ids == user)[0][0])
        wd = slice(whole.user_decision_start[u], whole.user_decision_end[u])
        sd = slice(sub.user_decision_start[i], sub.user_decision_end[i])
        for field in PER_DECISION:
            assert np.array_equal(getattr(whole, field)[wd], getattr(sub, field)[sd]), field
        wp = np.arange(whole.decision_point_start[wd.start], whole.decision_point_end[wd.stop - 1])
        sp = np.arange(sub.decision_point_start[sd.start], sub.decision_point_end[sd.stop - 1])
        assert np.array_equal(whole.padded_points(wp)[0], sub.padded_points(sp)[0])
        assert whole.point_key[wp].tolist() == sub.point_key[sp].tolist()


def test_small_row_groups_are_skipped_by_their_user_range_and_give_the_same_arrays(datasets, tmp_path):
    """events.parquet / impressions.parquet rewritten with tiny row groups: the same rows (and file row
    numbers) come back, and a chunk's read skips the row groups outside its users."""
    import shutil

    src = datasets["impressions"]
    dst = tmp_path / "small_groups"
    shutil.copytree(src, dst)
    for name in ("events.parquet", "impressions.parquet"):
        table = pq.read_table(src / name)
        pq.write_table(table, dst / name, row_group_size=37)
    reseal_tables(dst)  # the same rows in other row groups: other bytes, recorded as prepare would
    for spec in (ProtocolSpec(split="test"), ProtocolSpec(split="test", protocol="next_positive")):
        a = build_replay_data(Dataset.open(src), None, spec)
        b = build_replay_data(Dataset.open(dst), None, spec)
        for field in ("user_ids", "decision_event_row", "decision_log_features", "point_candidates", "point_key"):
            assert _equal(getattr(a, field), getattr(b, field)), field
        assert a.describe()["counts"] == b.describe()["counts"]

    ds = Dataset.open(dst)
    events = pq.read_table(dst / "events.parquet").to_pandas()
    user = str(events["user_id"].iloc[len(events) // 2])
    read = ds.read_user_rows("events.parquet", [user], ["item_id", "ts"])
    expected = np.nonzero(events["user_id"].astype(str).to_numpy() == user)[0]
    assert read.column("__row__").to_numpy().tolist() == expected.tolist()
    assert read.column("item_id").to_pylist() == events["item_id"].iloc[expected].tolist()
    pf = pq.ParquetFile(dst / "events.parquet")
    kept = _row_groups_overlapping(pf, "user_id", user, user)
    assert pf.metadata.num_row_groups > 10 and 1 <= len(kept) <= 3  # the other row groups are never decoded


def test_read_user_rows_refuses_a_missing_column_and_reads_everything_without_users(datasets):
    ds = Dataset.open(datasets["next_positive"])
    with pytest.raises(ArtifactError, match="no column"):
        ds.read_user_rows("events.parquet", ["u000"], ["nope"])
    every = ds.read_user_rows("events.parquet", None, ["user_id"])
    assert every.num_rows == len(ds.events)
    assert every.column("__row__").to_numpy().tolist() == list(range(len(ds.events)))
    assert ds.read_user_rows("events.parquet", [], ["ts"]).num_rows == 0


def test_truth_rows_are_the_rows_of_truth_npy(tmp_path):
    from agents_fixtures import tiny_synthetic

    ds = Dataset.open(tiny_synthetic(tmp_path / "syn", users=12))
    rows = np.array([5, 0, 7, 7, len(ds.events) - 1])
    assert ds.truth_shape == ds.truth.shape
    assert np.array_equal(ds.truth_rows(rows), ds.truth[rows])
    with pytest.raises(ArtifactError, match="rows"):
        ds.truth_rows(np.array([len(ds.events)]))


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 8])
def test_the_streamed_repeat_check_agrees_with_the_whole_log_one_across_batch_boundaries(cut):
    rng = np.random.default_rng(cut)
    for trial in range(20):
        n_users = 6
        sizes = rng.integers(1, 6, n_users)
        users = np.repeat([f"u{i}" for i in range(n_users)], sizes)
        items = rng.integers(-1, 40 if trial % 2 else 400, len(users))  # -1: an item without a row
        expected = resolve_exclusion("auto", np.repeat(np.arange(n_users), sizes), items) == "target"
        check = _RepeatCheck()
        for lo in range(0, len(users), cut):
            check.add(pa.chunked_array([pa.array(users[lo: lo + cut].tolist(), type=pa.large_string())]), items[lo: lo + cut])
        assert check.found == expected


def test_chunk_users_must_be_a_positive_integer(datasets):
    with pytest.raises(InterestGymError, match="chunk_users"):
        chunk_user_lists(np.array(["a"]), 0)
    with pytest.raises(InterestGymError, match="not 'test' users"):
        list(iter_replay_chunks(datasets["next_positive"], None, ProtocolSpec(split="test"), users=["no-such-user"]))


def test_padded_points_of_one_candidate_count_equal_the_padded_rows_of_mixed_counts(datasets):
    """Points of one candidate count take a path without padding: their rows equal the same points' rows in
    a call that pads (a longer point among them), against the flat arrays themselves."""
    data = build_replay_data(Dataset.open(datasets["impressions"]), None, ProtocolSpec(split="train"))
    lengths = np.diff(data.point_offsets)
    short, long_ = int(lengths.min()), int(lengths.max())
    assert short < long_  # the fixture's impressions show varying counts
    same = np.flatnonzero(lengths == short)[:5]
    mixed = np.concatenate([same, [int(np.argmax(lengths))]])
    cand, labels, length = data.padded_points(same)
    padded_cand, padded_labels, _ = data.padded_points(mixed)
    assert cand.shape == (len(same), short) and labels.dtype == np.int8 and length.tolist() == [short] * len(same)
    assert np.array_equal(cand, padded_cand[: len(same), :short]) and np.array_equal(labels, padded_labels[: len(same), :short])
    assert (padded_labels[: len(same), short:] == -1).all()
    for row, p in enumerate(same):  # against the flat arrays
        lo, hi = data.point_offsets[p], data.point_offsets[p + 1]
        assert cand[row].tolist() == data.point_candidates[lo:hi].tolist()
        assert labels[row].tolist() == data.point_labels[lo:hi].tolist()
