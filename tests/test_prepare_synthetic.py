"""The synthetic generator: deterministic, stores the true interest, and its clicks follow it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from interestgym.data.dataset import Dataset, SplitSpec
from interestgym.data.synthetic import (
    PRESETS,
    SYNTHETIC_USERS_FILE,
    USER_TYPES,
    SyntheticConfig,
    generate_synthetic,
    prepare_synthetic,
)
from interestgym.data.synthetic_vocab import TOPIC_KEYS
from interestgym.errors import InterestGymError

N_USERS = 200


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("synthetic") / "d"
    prepare_synthetic(out, SyntheticConfig(users=N_USERS, seed=0), command=["test"])
    return Dataset.open(out)


@pytest.fixture(scope="module")
def synthetic_users(dataset: Dataset) -> pd.DataFrame:
    return pd.read_parquet(dataset.path / SYNTHETIC_USERS_FILE).set_index("user_id")


def _topic_index(names: pd.Series) -> np.ndarray:
    return names.map({k: i for i, k in enumerate(TOPIC_KEYS)}).to_numpy()


def _manifest_without_created(path: Path) -> dict:
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    assert "created" in manifest
    manifest.pop("created")
    return manifest


def _assert_same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"items.parquet", "events.parquet", "impressions.parquet", "users.parquet", "truth.npy"} <= set(names)
    for name in names:
        if name == "manifest.json":
            assert _manifest_without_created(a) == _manifest_without_created(b)
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ------------------------------------------------------------------------------------------ determinism
def test_same_config_gives_byte_identical_files(tmp_path):
    cfg = SyntheticConfig(users=40, seed=3, events_per_user=30)
    prepare_synthetic(tmp_path / "a", cfg, command=["same"])
    prepare_synthetic(tmp_path / "b", cfg, command=["same"])
    _assert_same_files(tmp_path / "a", tmp_path / "b")

    prepare_synthetic(tmp_path / "c", SyntheticConfig(users=40, seed=4, events_per_user=30), command=["same"])
    assert (tmp_path / "a" / "events.parquet").read_bytes() != (tmp_path / "c" / "events.parquet").read_bytes()


def test_cli_run_twice_is_byte_identical_apart_from_creation_time(tmp_path, monkeypatch):
    from interestgym.cli import cli

    outs = []
    for run in ("first", "second"):
        (tmp_path / run).mkdir()
        # The same relative --out both times, so the recorded command line is identical too.
        monkeypatch.chdir(tmp_path / run)
        result = CliRunner().invoke(cli, ["prepare", "synthetic", "--out", "D", "--users", "200", "--seed", "0"])
        assert result.exit_code == 0, result.output
        outs.append(tmp_path / run / "D")
    _assert_same_files(*outs)
    manifest = json.loads((outs[0] / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"] == {"format": "synthetic", "files": []}
    assert manifest["has_truth"] is True
    assert manifest["counts"]["users"] == 200


# ----------------------------------------------------------------------------------------------- truth
def test_truth_is_a_distribution_per_event(dataset):
    truth = dataset.truth
    assert truth.dtype == np.float32
    assert truth.shape == (len(dataset.events), len(TOPIC_KEYS))
    assert (truth >= 0).all()
    np.testing.assert_allclose(truth.sum(axis=1), 1.0, atol=1e-5)
    # truth's columns are named by the topic keys that the true_topic columns use.
    assert dataset.manifest["synthetic"]["topics"] == list(TOPIC_KEYS)
    assert set(dataset.items["true_topic"]) == set(TOPIC_KEYS)


def test_truth_rows_are_aligned_with_their_users_events(dataset, synthetic_users):
    events, truth = dataset.events, dataset.truth
    checked = 0
    for user_id, rows in events.groupby("user_id").indices.items():
        info = synthetic_users.loc[user_id]
        base = np.asarray(info["base_interest"], dtype=np.float32)
        t = truth[rows]
        if info["user_type"] in ("stable", "noisy"):
            # A fixed mixture: every row of this user is the stored base mixture.
            np.testing.assert_allclose(t, np.broadcast_to(base, t.shape), atol=1e-6)
            checked += 1
        elif info["user_type"] == "switcher":
            # One distinct interest vector per regime, and the first regime is the base mixture.
            assert len(np.unique(t, axis=0)) == info["n_switches"] + 1
            np.testing.assert_allclose(t[0], base, atol=1e-6)
        elif info["user_type"] == "drifting":
            # Strong drift ends on a mixture whose top topic is none of the starting main topics.
            np.testing.assert_allclose(t[0], base, atol=1e-6)
            assert TOPIC_KEYS[int(t[-1].argmax())] not in list(info["main_topics"])
    assert checked >= 40


def test_each_users_type_is_recorded_consistently(dataset, synthetic_users):
    per_user = dataset.events.groupby("user_id")["user_type"].agg(["first", "nunique"])
    assert (per_user["nunique"] == 1).all()
    assert (per_user["first"] == synthetic_users.loc[per_user.index, "user_type"]).all()
    counts = synthetic_users["user_type"].value_counts().to_dict()
    # Largest-remainder counts of the strong preset's fractions x 200 users: exact, every type present.
    expected = {t: round(f * N_USERS) for t, f in PRESETS["strong"].fractions}
    assert counts == expected
    assert set(counts) == set(USER_TYPES)
    assert dataset.manifest["synthetic"]["user_types"] == {t: expected.get(t, 0) for t in USER_TYPES}


# ---------------------------------------------------------------------------------------------- items
def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9-]+", text.lower())) - {"the", "in", "and", "for", "what", "how", "why", "after", "means", "matters"}


def test_titles_share_more_words_within_a_topic_than_across(dataset):
    items = dataset.items
    words = [_words(t) for t in items["text"]]
    topic = _topic_index(items["true_topic"])
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(items), size=(4000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    overlap = np.array([len(words[a] & words[b]) / len(words[a] | words[b]) for a, b in pairs])
    same = topic[pairs[:, 0]] == topic[pairs[:, 1]]
    assert same.sum() > 50
    assert overlap[same].mean() > 3 * overlap[~same].mean()
    assert items["text"].is_unique
    assert (items["category"] == items["true_topic"]).all()  # English: category is the topic's name
    assert items.groupby("category")["subcategory"].nunique().eq(4).all()


def test_chinese_titles_are_chinese_and_topical():
    data = generate_synthetic(SyntheticConfig(users=5, lang="zh", items_per_topic=40))
    items = data.items
    assert items["text"].str.contains(r"[\u4e00-\u9fff]").all()
    assert not items["text"].str.contains(" ").any()  # words are concatenated, as Chinese is written
    assert set(items["category"]) == {"时政", "体育", "科技", "财经", "健康", "娱乐", "旅游", "美食", "科学", "教育", "游戏", "汽车"}
    assert data.topic_names[TOPIC_KEYS.index("sports")] == "体育"
    assert data.topics == list(TOPIC_KEYS)  # truth's columns keep the language-independent keys
    assert items.groupby("true_topic")["category"].nunique().eq(1).all()
    # Character bigrams overlap more within a topic than across topics.
    grams = [{t[i : i + 2] for i in range(len(t) - 1)} for t in items["text"]]
    topic = _topic_index(items["true_topic"])
    same, across = [], []
    for a in range(0, len(items), 3):
        for b in range(a + 1, len(items), 7):
            j = len(grams[a] & grams[b]) / len(grams[a] | grams[b])
            (same if topic[a] == topic[b] else across).append(j)
    assert np.mean(same) > 3 * np.mean(across)


def test_item_categories_can_be_left_empty():
    with_categories = generate_synthetic(SyntheticConfig(users=5, events_per_user=10))
    without = generate_synthetic(SyntheticConfig(users=5, events_per_user=10, item_categories=False))
    assert (without.items["category"] == "").all() and (without.items["subcategory"] == "").all()
    # Only the category columns change: the same titles, topics, events and truth.
    pd.testing.assert_frame_equal(with_categories.items.drop(columns=["category", "subcategory"]),
                                  without.items.drop(columns=["category", "subcategory"]))
    pd.testing.assert_frame_equal(with_categories.events, without.events)
    np.testing.assert_array_equal(with_categories.truth, without.truth)


def test_popular_items_are_shown_more_often(dataset):
    shown = pd.Series(np.concatenate(dataset.impressions["candidates"].to_numpy())).value_counts()
    items = dataset.items.set_index("item_id")
    counts = shown.reindex(items.index, fill_value=0)
    rho = pd.Series(items["true_popularity"]).rank().corr(counts.rank())
    assert rho > 0.5


# ------------------------------------------------------------------------------ impressions and clicks
def test_clicks_are_the_labelled_candidates_of_their_impression(dataset):
    imp = dataset.impressions.set_index("impression_id")
    events = dataset.events
    K = SyntheticConfig().candidates
    assert imp["candidates"].map(len).eq(K).all()
    assert imp["candidates"].map(lambda c: len(set(c)) == len(c)).all()
    assert imp["labels"].map(sum).ge(1).all()  # every impression has a click
    clicks = events[events["action"] == "click"]
    assert clicks.groupby("impression_id").size().sort_index().tolist() == imp["labels"].map(sum).sort_index().tolist()
    for row in clicks.sample(500, random_state=0).itertuples():
        shown = imp.loc[row.impression_id]
        pos = list(shown["candidates"]).index(row.item_id)
        assert shown["labels"][pos] == 1
        assert shown["ts"] == row.ts and shown["user_id"] == row.user_id
    # A like or share follows a click of the same item at the same time.
    prev = events.shift(1)
    follow = events["action"].isin(["like", "share"])
    assert (prev.loc[follow, "action"] == "click").all()
    assert (prev.loc[follow, "item_id"] == events.loc[follow, "item_id"]).all()
    assert (prev.loc[follow, "ts"] == events.loc[follow, "ts"]).all()


def test_click_rate_follows_the_true_interest(dataset):
    events, truth = dataset.events, dataset.truth
    first_row = events.reset_index().groupby("impression_id")["index"].first()
    imp = dataset.impressions.set_index("impression_id")
    theta = truth[first_row.loc[imp.index].to_numpy()]
    topic_of = dict(zip(dataset.items["item_id"], _topic_index(dataset.items["true_topic"])))
    cand_topic = np.array([[topic_of[i] for i in c] for c in imp["candidates"]])
    labels = np.stack(imp["labels"].to_numpy())
    interest = np.take_along_axis(theta, cand_topic, axis=1)
    high, low = interest >= 0.2, interest <= 0.02
    rate_high, rate_low = labels[high].mean(), labels[low].mean()
    assert rate_high > 8 * rate_low
    assert rate_low > 0  # noise clicks land on items of no interest too


def test_noise_clicks_are_uniform_short_and_at_the_configured_rate(dataset):
    clicks = dataset.events[dataset.events["action"] == "click"]
    noisy = clicks["user_type"] == "noisy"
    p = PRESETS["strong"]
    assert abs(clicks.loc[noisy, "noise"].mean() - p.noisy_noise) < 0.05
    assert abs(clicks.loc[~noisy, "noise"].mean() - p.base_noise) < 0.02
    # The read fraction (value) of a noise click is short on average, of an interest click long.
    assert clicks.loc[clicks["noise"], "value"].mean() < 0.3
    assert clicks.loc[~clicks["noise"], "value"].mean() > 0.55
    assert clicks["value"].between(0.01, 1.0).all()
    assert (dataset.events.loc[dataset.events["action"] != "click", "value"] == 1.0).all()


def test_context_users_prefer_news_in_the_morning_and_entertainment_at_night(dataset, synthetic_users):
    clicks = dataset.events[(dataset.events["action"] == "click") & (dataset.events["user_type"] == "context")]
    morning_topics = synthetic_users.loc[clicks["user_id"], "morning_topics"].to_numpy()
    evening_topics = synthetic_users.loc[clicks["user_id"], "evening_topics"].to_numpy()
    on_morning = np.array([t in set(m) for t, m in zip(clicks["true_topic"], morning_topics)])
    on_evening = np.array([t in set(e) for t, e in zip(clicks["true_topic"], evening_topics)])
    morning = clicks["hour"].between(6, 10).to_numpy()
    evening = clicks["hour"].between(19, 23).to_numpy()
    assert morning.sum() > 100 and evening.sum() > 100
    assert on_morning[morning].mean() > 2 * on_morning[evening].mean()
    assert on_evening[evening].mean() > 2 * on_evening[morning].mean()


def test_bursty_users_click_off_topic_in_burst_sessions_only(dataset, synthetic_users):
    bursty = synthetic_users[synthetic_users["user_type"] == "bursty"]
    assert bursty["n_burst_sessions"].sum() > 20
    assert (synthetic_users.loc[synthetic_users["user_type"] != "bursty", "n_burst_sessions"] == 0).all()
    switchers = synthetic_users[synthetic_users["user_type"] == "switcher"]
    assert (switchers["n_switches"] == np.minimum(PRESETS["strong"].n_switches, switchers["n_sessions"] - 1)).all()


# ------------------------------------------------------------------------------------------------ time
def test_timestamps_hours_and_sessions(dataset):
    events = dataset.events
    assert events["ts"].dtype == np.int64 and events["hour"].dtype == np.int8 and events["weekday"].dtype == np.int8
    when = [dt.datetime.fromtimestamp(int(t), dt.timezone.utc) for t in events["ts"].iloc[::97]]
    assert events["hour"].iloc[::97].tolist() == [w.hour for w in when]
    assert events["weekday"].iloc[::97].tolist() == [w.weekday() for w in when]
    imp = dataset.impressions
    gaps = imp.groupby("user_id")["ts"].diff().dropna()
    assert (gaps >= 20).all()  # impressions of a user are strictly ordered in time
    # Sessions: most gaps are minutes, some are hours or days.
    assert (gaps < 1800).mean() > 0.6 and (gaps > 6 * 3600).mean() > 0.05
    # More activity in the evening than at night.
    hours = (imp["ts"] // 3600) % 24
    assert hours.between(19, 22).mean() > 3 * hours.between(1, 4).mean()


def test_events_per_user_is_the_mean_number_of_event_rows():
    data = generate_synthetic(SyntheticConfig(users=300, events_per_user=40))
    per_user = data.events.groupby("user_id").size()
    assert len(per_user) == 300  # nobody dropped
    assert abs(per_user.mean() - 40) < 4
    assert per_user.min() < 30 and per_user.max() > 50  # spread U(0.5, 1.5) x mean


def test_drift_none_makes_every_user_stable():
    data = generate_synthetic(SyntheticConfig(users=30, drift="none", events_per_user=20))
    assert set(data.users["user_type"]) == {"stable"}
    for rows in data.events.groupby("user_id").indices.values():
        assert len(np.unique(data.truth[rows], axis=0)) == 1


def test_user_types_option_overrides_the_preset():
    data = generate_synthetic(SyntheticConfig(users=10, user_types=(("switcher", 1.0),), events_per_user=20))
    assert set(data.users["user_type"]) == {"switcher"}


# ----------------------------------------------------------------------------------------- split, errors
def test_split_is_recorded(tmp_path, dataset):
    users = dataset.users
    assert users["split"].value_counts().to_dict() == {"train": 120, "valid": 40, "test": 40}
    assert dataset.manifest["split"]["seed"] == 0 and dataset.manifest["split"]["users"]["test"] == 40

    spec = SplitSpec(train=0.5, valid=0.25, test=0.25, seed=7, time_fraction=0.5)
    manifest = prepare_synthetic(tmp_path / "s", SyntheticConfig(users=20, events_per_user=10), split=spec)
    assert manifest["split"]["fractions"] == {"train": 0.5, "valid": 0.25, "test": 0.25}
    assert manifest["split"]["seed"] == 7 and manifest["split"]["users"] == {"train": 10, "valid": 5, "test": 5}
    reread = Dataset.open(tmp_path / "s")
    assert "late" in reread.events.columns
    assert reread.manifest["validation"]["rejected_total"] == 0
    assert reread.manifest["validation"]["files"]["synthetic:events"]["rows_read"] == len(reread.events)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"users": 0}, "users"),
        ({"lang": "fr"}, "lang"),
        ({"drift": "wild"}, "drift"),
        ({"candidates": 1}, "candidates"),
        ({"user_types": (("sleepy", 1.0),)}, "user_types"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"popular_fraction": 1.5}, "popular_fraction"),
    ],
)
def test_bad_options_name_the_field_and_what_was_expected(kwargs, field):
    with pytest.raises(InterestGymError, match=rf"synthetic option {field}=.*expected"):
        SyntheticConfig(**kwargs)


def test_generation_and_reading_say_their_progress_in_a_log(tmp_path, monkeypatch, capsys):
    """Off a terminal (a job under nohup, a CI log) the user simulation, a CSV read line by line, a Parquet log read row
    by row and a JSON Lines log read column-wise each write plain progress lines (tqdm's own bar went silent there: minutes without a word at 100,000 users)."""
    import sys

    import interestgym.progress
    from interestgym.data.events import EventsOptions, read_events
    from interestgym.data.synthetic import SyntheticConfig, generate_synthetic
    from interestgym.data.validate import RejectLog

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(interestgym.progress, "LOG_EVERY_SECONDS", 0.0)
    generate_synthetic(SyntheticConfig(users=12, seed=0))
    assert "synthetic users: 12/12 users (100%)" in capsys.readouterr().err
    generate_synthetic(SyntheticConfig(users=12, seed=0), progress=False)  # quickstart --no-progress
    assert "synthetic users" not in capsys.readouterr().err
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id,action,ts,text\nu1,a,click,1511544070,t\n")
    read_events(csv, RejectLog(), EventsOptions(reader="lines"))
    assert f"log.csv: {csv.stat().st_size}/{csv.stat().st_size} B (100%)" in capsys.readouterr().err
    pd.read_csv(csv).to_parquet(tmp_path / "log.parquet", index=False)
    read_events(tmp_path / "log.parquet", RejectLog(), EventsOptions(reader="lines"))
    assert "log.parquet: 1/1 row (100%)" in capsys.readouterr().err
    pd.read_csv(csv).to_json(tmp_path / "log.jsonl", orient="records", lines=True)
    read_events(tmp_path / "log.jsonl", RejectLog(), EventsOptions())  # the columnar reader: a line per block of lines
    assert "log.jsonl: 1/1 line (100%)" in capsys.readouterr().err
