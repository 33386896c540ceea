"""``cooc``: item vectors from the training users' behaviour co-occurrence, with fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from env_fixtures import reseal_tables, write_users
from interestgym.encoders.cooc import CoocEncoder
from interestgym.encoders.pipeline import encode_dataset

from interestgym.data.dataset import Dataset, SplitSpec, write_dataset
from interestgym.data.validate import RejectLog
from interestgym.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

A_ITEMS = [f"a{k}" for k in range(6)]
B_ITEMS = [f"b{k}" for k in range(6)]


def catalogue() -> pd.DataFrame:
    ids = A_ITEMS + B_ITEMS + ["a_new", "orphan", "never"]
    cats = ["A"] * 6 + ["B"] * 6 + ["A", "", "Z"]
    return pd.DataFrame({"item_id": ids, "text": "", "category": cats, "subcategory": ""})


def browsing_log(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """20 training users who each browse one cluster (A or B); test users who also touch new items."""
    rng = np.random.default_rng(seed)
    rows, users = [], []
    for u in range(20):
        cluster = A_ITEMS if u % 2 == 0 else B_ITEMS
        for t, item in enumerate(rng.choice(cluster, size=12)):
            rows.append((f"u{u}", t, item, "view"))
        users.append((f"u{u}", "train"))
    for u in range(20, 24):  # test users: the only ones who see a_new / orphan
        for t, item in enumerate(["a0", "a_new", "orphan", "b0", "a_new"]):
            rows.append((f"u{u}", t, item, "click"))
        users.append((f"u{u}", "test"))
    events = pd.DataFrame(rows, columns=["user_id", "ts", "item_id", "action"])
    events["ts"] = events["ts"].astype("int64")
    events["seq"] = np.arange(len(events), dtype="int64")
    return events, pd.DataFrame(users, columns=["user_id", "split"])


def cos_means(vectors: np.ndarray, ids: list[str], rows: dict[str, int]) -> tuple[float, float]:
    a = vectors[[rows[i] for i in A_ITEMS]]
    b = vectors[[rows[i] for i in B_ITEMS]]
    aa, bb, ab = a @ a.T, b @ b.T, a @ b.T
    off = ~np.eye(len(A_ITEMS), dtype=bool)
    return float((aa[off].mean() + bb[off].mean()) / 2), float(ab.mean())


def test_items_browsed_together_are_close_and_clusters_apart():
    items = catalogue()
    events, users = browsing_log()
    enc = CoocEncoder(dim=4, window=3).fit(items, events, users)
    vectors = enc.encode(items["item_id"].tolist())
    assert vectors.dtype == np.float32 and vectors.shape == (15, 4)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    rows = {iid: i for i, iid in enumerate(items["item_id"])}
    within, between = cos_means(vectors, items["item_id"].tolist(), rows)
    assert within > 0.5 and between < within - 0.5, (within, between)


def test_fallbacks_for_items_not_seen_in_training():
    items = catalogue()
    events, users = browsing_log()
    enc = CoocEncoder(dim=4, window=3).fit(items, events, users)
    ids = items["item_id"].tolist()
    vectors = enc.encode(ids)
    assert enc.counts["items_trained"] == 12
    # a_new: only test users saw it -> the normalised mean of the trained category-A items.
    mean_a = vectors[[ids.index(i) for i in A_ITEMS]].mean(axis=0)
    np.testing.assert_allclose(vectors[ids.index("a_new")], mean_a / np.linalg.norm(mean_a), atol=1e-5)
    # orphan (no category) and never (category Z has no trained item): a stable hashed unit vector each.
    assert enc.counts["items_category_fallback"] == 1 and enc.counts["items_random_fallback"] == 2
    again = CoocEncoder(dim=4, window=3).fit(items, events, users).encode(["orphan", "never", "unknown-id"])
    np.testing.assert_array_equal(again[:2], vectors[[ids.index("orphan"), ids.index("never")]])
    np.testing.assert_allclose(np.linalg.norm(again, axis=1), 1.0, atol=1e-6)
    assert abs(again[0] @ again[1]) < 0.99
    assert any("1 use their category's mean vector, 2 a hashed random vector" in line for line in enc.fit_report())


def test_only_training_users_shape_the_vectors():
    items = catalogue()
    events, users = browsing_log()
    base = CoocEncoder(dim=4, window=3).fit(items, events, users)
    # Test users' behaviour changes: neither vectors nor fingerprint move.
    changed = events.copy()
    test_rows = changed["user_id"].isin(users.loc[users["split"] == "test", "user_id"])
    changed.loc[test_rows, "item_id"] = "b3"
    other = CoocEncoder(dim=4, window=3).fit(items, changed, users)
    np.testing.assert_array_equal(other.encode(items["item_id"].tolist()), base.encode(items["item_id"].tolist()))
    assert other.fingerprint == base.fingerprint
    # A training user's event changes: the fingerprint does.
    changed = events.copy()
    changed.loc[0, "item_id"] = "b5" if changed.loc[0, "item_id"] != "b5" else "b4"
    assert CoocEncoder(dim=4, window=3).fit(items, changed, users).fingerprint != base.fingerprint
    # Options are part of it too.
    assert CoocEncoder(dim=4, window=2).fit(items, events, users).fingerprint != base.fingerprint


def test_impressions_and_immediate_repeats_do_not_count():
    items = catalogue()
    events, users = browsing_log()
    base = CoocEncoder(dim=4, window=3).fit(items, events, users)
    extra = events.iloc[[0]].copy()
    # An impression of a B item in the middle of an A user's session would add A-B pairs if counted.
    noisy = pd.concat([events, extra.assign(item_id="b1", action="impression", seq=10_000)], ignore_index=True)
    np.testing.assert_array_equal(CoocEncoder(dim=4, window=3).fit(items, noisy, users).encode(A_ITEMS + B_ITEMS),
                                  base.encode(A_ITEMS + B_ITEMS))
    # Duplicating every event (each view logged twice in a row) collapses back to the same log.
    doubled = pd.concat([events, events.assign(seq=events["seq"] + 100_000)], ignore_index=True)
    np.testing.assert_allclose(CoocEncoder(dim=4, window=3).fit(items, doubled, users).encode(A_ITEMS + B_ITEMS),
                               base.encode(A_ITEMS + B_ITEMS), atol=1e-5)
    # With the manifest's weights, any action without a weight is no engagement (as the replay protocol counts it):
    # a "hover" of weight 0 adds nothing, and "view" of weight 0 leaves nothing to learn from the views
    hovered = pd.concat([events, extra.assign(item_id="b1", action="hover", seq=10_001)], ignore_index=True)
    weights = {"view": 0.5, "click": 1.0, "hover": 0.0, "impression": 0.0}
    np.testing.assert_array_equal(CoocEncoder(dim=4, window=3).fit(items, hovered, users, weights).encode(A_ITEMS + B_ITEMS),
                                  base.encode(A_ITEMS + B_ITEMS))
    silent = CoocEncoder(dim=4, window=3).fit(items, events, users, {**weights, "view": 0.0})
    assert silent.counts["train_events"] == 0 and silent.counts["items_trained"] == 0


def test_no_training_users_is_an_error():
    items = catalogue()
    events, users = browsing_log()
    with pytest.raises(DataError, match="no user with split == 'train'"):
        CoocEncoder().fit(items, events, users.assign(split="test"))


def test_cooc_through_the_pipeline_caches_by_item_id(tmp_path):
    items = catalogue()
    events, _ = browsing_log()
    events = events.assign(action="view", value=np.float32(1.0), hour=np.int8(0), weekday=np.int8(0))
    write_dataset(tmp_path / "ds", source_format="test", source_files=[], items=items, events=events,
                  rejects=RejectLog(), split=SplitSpec(train=0.8, valid=0.1, test=0.1), deterministic=True)
    messages: list[str] = []
    first = encode_dataset(tmp_path / "ds", CoocEncoder(dim=4), log=messages.append)
    assert first.matrix.shape == (15, 4) and first.encoded == 15 and first.meta["input"] == "item_id"
    assert first.meta["encoder_details"]["fit"]["items"] == 15
    assert any(m.startswith("cooc: learned from") for m in messages)
    fit = first.meta["encoder_details"]["fit"]
    # cooc encodes no text: its summary says what it fitted, from how many training events
    assert first.summary().startswith(f"fitted 15 item vectors with cooc ({fit['items_trained']} from co-occurrence in "
                                      f"{fit['train_events']} training events, ")
    assert encode_dataset(tmp_path / "ds", CoocEncoder(dim=4), log=None).encoded == 0
    mat, _meta = Dataset.open(tmp_path / "ds").load_embeddings("cooc")
    np.testing.assert_array_equal(mat, first.matrix)


def test_taobao_sample_gets_a_vector_for_every_item(tmp_path):
    csv = DATA / "taobao-userbehavior-sample" / "UserBehavior_sample.csv"
    if not csv.is_file():
        pytest.skip("shared data ../shared/data/taobao-userbehavior-sample is absent")
    raw = pd.read_csv(csv, header=None, names=["user_id", "item_id", "category_id", "behavior", "ts"], dtype=str)
    action = raw["behavior"].map({"pv": "view", "cart": "add_to_cart", "fav": "like", "buy": "purchase"})
    items = raw.drop_duplicates("item_id")[["item_id", "category_id"]].rename(columns={"category_id": "category"})
    items = items.assign(text="", subcategory="").reset_index(drop=True)
    ts = raw["ts"].astype("int64")
    events = pd.DataFrame({"user_id": raw["user_id"], "ts": ts, "item_id": raw["item_id"], "action": action,
                           "value": np.float32(1.0), "hour": np.int8(0), "weekday": np.int8(0),
                           "seq": np.arange(len(raw), dtype="int64")})
    write_dataset(tmp_path / "taobao", source_format="test", source_files=[], items=items, events=events,
                  rejects=RejectLog(), split=SplitSpec(), deterministic=True)
    result = encode_dataset(tmp_path / "taobao", CoocEncoder(), log=None)
    counts = result.meta["encoder_details"]["fit"]
    assert result.matrix.shape == (len(items), 64)
    np.testing.assert_allclose(np.linalg.norm(result.matrix, axis=1), 1.0, atol=1e-4)
    assert counts["items_trained"] + counts["items_category_fallback"] + counts["items_random_fallback"] == len(items)
    assert counts["items_trained"] > 1000


def test_vectors_fitted_on_another_split_or_other_events_are_refused(tmp_path):
    """cooc learns from the training users' events: after the dataset is prepared again with another split (its
    test users were training users at the fit) or other training events, its vectors are refused, not used, whether
    the dataset's manifest changed or not (a deterministic prepare writes the same one); an events file rewritten with
    the same training events (another row order of the file, or other users' events changed) is accepted."""
    from interestgym.errors import ArtifactError

    items = catalogue()
    events, _ = browsing_log()
    events = events.assign(action="view", value=np.float32(1.0), hour=np.int8(0), weekday=np.int8(0))
    ds_path = tmp_path / "ds"
    write_dataset(ds_path, source_format="test", source_files=[], items=items, events=events,
                  rejects=RejectLog(), split=SplitSpec(train=0.6, valid=0.2, test=0.2), deterministic=True)
    encode_dataset(ds_path, CoocEncoder(dim=4), log=None)
    meta = json.loads((ds_path / "embeddings" / "cooc.json").read_text())
    assert meta["encoder_details"]["events_file_sha256"] == Dataset.open(ds_path).events_file_sha256
    Dataset.open(ds_path).load_embeddings("cooc")  # as fitted

    users = pd.read_parquet(ds_path / "users.parquet")
    swapped = users.assign(split=users["split"].map({"train": "test", "test": "train", "valid": "valid"}))
    write_users(ds_path, swapped)
    with pytest.raises(ArtifactError, match=r"cooc.json: these cooc vectors were fitted on another split of the users than .*"
                                            r"re-run `interestgym encode"):
        Dataset.open(ds_path).load_embeddings("cooc")
    write_users(ds_path, users)

    original = pd.read_parquet(ds_path / "events.parquet")
    train = set(users.loc[users["split"] == "train", "user_id"])
    in_train = original["user_id"].isin(train).to_numpy()
    other_users = original.copy()
    other_users.loc[int(np.flatnonzero(~in_train)[0]), "item_id"] = "never"  # a test user's event: not what cooc read
    other_users.to_parquet(ds_path / "events.parquet", index=False, compression="gzip")  # another file, same training events
    reseal_tables(ds_path)  # as prepare would record it
    assert Dataset.open(ds_path).events_file_sha256 != meta["encoder_details"]["events_file_sha256"]
    Dataset.open(ds_path).load_embeddings("cooc")

    changed = original.copy()
    changed.loc[int(np.flatnonzero(in_train)[0]), "item_id"] = "never"  # one training event changed; the manifest not
    changed.to_parquet(ds_path / "events.parquet", index=False)
    reseal_tables(ds_path)
    with pytest.raises(ArtifactError, match=r"fitted on other training events than"):
        Dataset.open(ds_path).load_embeddings("cooc")
