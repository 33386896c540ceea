"""A dataset folder edited or damaged after `prepare` wrote it is refused with the file, the row and what was expected;
events whose item has no row are counted and said, not dropped without a word (Trial M)."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from agents_fixtures import tiny_synthetic
from env_fixtures import reseal_tables

from interestgym.data.dataset import Dataset
from interestgym.errors import ArtifactError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_synthetic(tmp_path_factory.mktemp("integrity") / "data", users=24, events_per_user=10)


def _copy(dataset, tmp_path):
    out = tmp_path / "data"
    shutil.copytree(dataset, out)
    return out


@pytest.mark.parametrize("table", ["events", "items", "users", "impressions"])
def test_a_table_with_other_rows_than_the_manifest_counts_is_refused(dataset, tmp_path, table):
    data = _copy(dataset, tmp_path)
    path = data / f"{table}.parquet"
    rows = pq.read_table(path)
    expected = json.loads((data / "manifest.json").read_text())["counts"][table]
    assert rows.num_rows == expected  # as prepare wrote it
    pq.write_table(rows.slice(0, rows.num_rows - 3), path)  # cut short, as an edit or a broken copy leaves it
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: {expected - 3:,} rows; expected {expected:,} (manifest.json "
                                                      f"counts.{table}): the file was changed after `interestgym prepare` wrote it")):
        Dataset.open(data)


@pytest.mark.parametrize(("table", "edit"), [
    ("events", lambda t: t.assign(action=t["action"].where(t.index != 3, "teleport"))),  # an action no weight names
    ("events", lambda t: t.assign(ts=t["ts"].to_numpy()[[1, 0, *range(2, len(t))]])),  # a user's events out of time order
    ("events", lambda t: t.assign(user_id=t["user_id"].where(t.index != 0, "ghost"))),  # a user of no split
    ("items", lambda t: t.assign(text=t["text"].where(t.index != 2, "edited"))),
    ("users", lambda t: t.assign(note="x")),  # the same users and splits, another table
])
def test_a_table_edited_with_its_row_count_kept_is_refused_when_read(dataset, tmp_path, table, edit):
    """A review's find: edits that keep a table's row count (an action renamed to one no weight names, times swapped, a user
    renamed in the events only) were read as the dataset: the action weighed 0, the renamed user's events belonged to no
    split. prepare records each table's sha256 (tables_sha256); every stage's read checks it."""
    from env_fixtures import without_table_digests

    data = _copy(dataset, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    assert set(manifest["tables_sha256"]) >= {"events.parquet", "items.parquet", "users.parquet"}
    path = data / f"{table}.parquet"
    edit(pd.read_parquet(path)).to_parquet(path, index=False)
    message = re.escape(f"{path}: its bytes are not those `interestgym prepare` wrote (manifest.json tables_sha256): the table "
                        "was damaged, edited or replaced after prepare (prepare the dataset again)")
    ds = Dataset.open(data)  # the row counts still match
    with pytest.raises(ArtifactError, match=message):
        getattr(ds, table)
    if table == "events":
        with pytest.raises(ArtifactError, match=message):
            Dataset.open(data).read_events(["user_id"])
        with pytest.raises(ArtifactError, match=message):
            Dataset.open(data).read_user_rows("events.parquet", None, ["user_id"])
    without_table_digests(data)  # a dataset prepared before the digests were recorded reads as before
    assert len(getattr(Dataset.open(data), table)) == manifest["counts"][table]


def test_a_user_of_no_known_split_or_listed_twice_is_refused(dataset, tmp_path):
    from env_fixtures import without_table_digests

    data = _copy(dataset, tmp_path)
    without_table_digests(data)  # a dataset from before the tables' digests: the users checks are its guard
    path = data / "users.parquet"
    users = pd.read_parquet(path)
    first = str(users["user_id"].iloc[2])
    users.loc[2, "split"] = "tset"
    users.to_parquet(path, index=False)
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: row 2: user {first!r} has split 'tset'; expected one of train, "
                                                      "valid, test (1 such row)")):
        Dataset.open(data).users_in("test")
    users = pd.read_parquet(dataset / "users.parquet")
    users.loc[5, "user_id"] = users.loc[4, "user_id"]
    users.to_parquet(path, index=False)
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: row 5: user {str(users['user_id'].iloc[4])!r} appears again")):
        Dataset.open(data).users_in("test")


def test_a_user_renamed_or_moved_to_another_split_by_hand_is_refused(dataset, tmp_path):
    """The same row count and valid splits, but not the users `prepare` wrote: a renamed user's events would belong to
    nobody, and a user moved to the test split by hand would be evaluated on what it trained on."""
    from env_fixtures import without_table_digests, write_users

    data = _copy(dataset, tmp_path)
    without_table_digests(data)  # a dataset from before the tables' digests: the users' digest is its guard
    path = data / "users.parquet"
    users = pd.read_parquet(path)
    for edit in ({"user_id": "ghost"}, {"split": "test" if users.loc[5, "split"] != "test" else "train"}):
        changed = users.copy()
        for column, value in edit.items():
            changed.loc[5, column] = value
        changed.to_parquet(path, index=False)
        with pytest.raises(ArtifactError, match=re.escape(f"{path}: its users and their splits are not those `interestgym "
                                                          "prepare` wrote (manifest.json split.users_sha256)")):
            Dataset.open(data).users_in("test")
    write_users(data, changed)  # as prepare with another split writes it: the manifest records the new table
    assert len(Dataset.open(data).users_in("test")) == int((changed["split"] == "test").sum())


def _unknown_items(data, split: str, positions: list[int]):
    """Give the events at ``positions`` among ``split``'s users' events an item no table has (in ``data``'s events.parquet);
    (those users' events mask, the events, the rows changed)."""
    events = pd.read_parquet(data / "events.parquet")
    users = pd.read_parquet(data / "users.parquet")
    mine = events["user_id"].astype(str).isin(set(users.loc[users["split"] == split, "user_id"].astype(str))).to_numpy()
    rows = events.index[mine][positions]
    events.loc[rows, "item_id"] = "NOPE"
    events.to_parquet(data / "events.parquet", index=False)
    reseal_tables(data)  # such a log as prepare would record it
    return mine, events, rows


def test_events_whose_item_has_no_row_are_counted_and_said_by_evaluate(dataset, tmp_path, capsys):
    from interestgym.cli import main

    data = _copy(dataset, tmp_path)
    mine, events, rows = _unknown_items(data, "test", [1, 4])  # two events of test users
    of_valid, _, _ = _unknown_items(data, "valid", [0])  # and one of a validation user, whom the rules are tuned on
    positive = int(events.loc[rows, "action"].isin(["click", "like", "share"]).sum())
    main(["evaluate", str(data), "--embeddings", "topic16", "--baselines", "ema", "--out", str(tmp_path / "ev"), "--n-boot", "20",
          "--no-progress"])
    line = (f"- events_without_item: test users: 2 of {int(mine.sum()):,} events name an item with no row in items.parquet (no "
            f"vector); {positive:,} of them positive, not replayed as decisions")
    line += (f"; validation users (the rules' tuning): 1 of {int(of_valid.sum()):,} events name an item with no row in "
             "items.parquet (no vector); ")
    assert line in (tmp_path / "ev" / "evaluation.md").read_text()
    assert line in capsys.readouterr().out


def test_train_says_what_its_users_lose_to_unknown_items_and_short_catalogues(dataset, tmp_path, capsys):
    """train replays with the vector env, which does not warn as the single env does: it says both itself."""
    from agents_fixtures import small_train_config
    from interestgym.agents.train import train_run

    data = _copy(dataset, tmp_path)
    mine, _, _ = _unknown_items(data, "train", [0])
    (data / "impressions.parquet").unlink()  # sampled negatives (next positive + n), not the logged impressions
    n_items = len(pd.read_parquet(data / "items.parquet"))
    train_run(small_train_config(data, tmp_path / "run", embeddings="topic16", n_negatives=n_items + 5))
    err = capsys.readouterr().err
    assert f"note: train users: 1 of {int(mine.sum()):,} events name an item with no row in items.parquet (no vector)" in err
    assert re.search(rf"note: train users: [\d,]+ of [\d,]+ scoring points have fewer than --n-negatives {n_items + 5} negatives", err)
    assert re.search(rf"note: valid users: [\d,]+ of [\d,]+ scoring points have fewer than --n-negatives {n_items + 5} negatives", err)
