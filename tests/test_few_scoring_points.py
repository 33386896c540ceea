"""Logs where few rankings can be scored (a MIND slice: most candidates have no news row): the tuning and the
validation sample the users a metric is measured on, and the evaluation says how little it rests on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from interestgym.cli import main
from interestgym.data.mind import prepare_mind

NEWS = ["\t".join([f"N{i}", "sports" if i % 2 else "news", "x", f"Title number {i}", "", f"https://x/N{i}", "[]", "[]"])
        for i in range(1, 9)]


def _mind(folder: Path) -> Path:
    """60 users, each with one known history click and one impression: every third user's impression holds a known
    click and 2 or 4 known non-clicks (scored); the others' hold only news without a row beside the click (not scored)."""
    rows = []
    for u in range(60):
        scored = "N2-1 N3-0 N4-0 N5-0 N6-0 X1-0" if (u // 3) % 3 == 1 else "N2-1 N3-0 N4-0 X1-0"  # 5 or 3 known
        cands = scored if u % 3 == 0 else ("N2-1 X1-0 X2-0" if u % 3 == 1 else "X5-1 N3-0")
        rows.append(f"{u + 1}\tU{u:02d}\t11/12/2019 {1 + u % 11}:00:00 PM\tN1\t{cands}")
    folder.mkdir(parents=True)
    (folder / "news.tsv").write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    (folder / "behaviors.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def mind(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("few")
    out = root / "data"
    prepare_mind(_mind(root / "in"), out, deterministic=True)
    _run(["encode", str(out), "--encoder", "hashing", "--dim", "16"])
    return out


def _run(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as exc:
        assert exc.code in (0, None), argv


def _scored_users(data: Path, split: str) -> set[str]:
    """Users of ``split`` with an impression holding a clicked and an unclicked candidate that have a news row (each
    user's history click comes before it): from the files, not from the replay."""
    users = pd.read_parquet(data / "users.parquet")
    in_split = set(users.loc[users["split"] == split, "user_id"].astype(str))
    known = set(pd.read_parquet(data / "items.parquet")["item_id"].astype(str))
    imp = pd.read_parquet(data / "impressions.parquet")
    out = set()
    for user, cands, labels in zip(imp["user_id"].astype(str), imp["candidates"], imp["labels"]):
        kept = [int(lab) for c, lab in zip(cands, labels) if c in known]
        if user in in_split and 1 in kept and 0 in kept:
            out.add(user)
    return out


def _widths(data: Path, split: str) -> list[int]:
    """Candidates with a news row of each scored impression of ``split`` (from the files)."""
    scored = _scored_users(data, split)
    known = set(pd.read_parquet(data / "items.parquet")["item_id"].astype(str))
    imp = pd.read_parquet(data / "impressions.parquet")
    return [sum(c in known for c in cands) for user, cands in zip(imp["user_id"].astype(str), imp["candidates"]) if user in scored]


def test_scored_users_are_the_users_with_a_scoring_point(mind):
    from interestgym.agents.config import TrainConfig

    for split in ("train", "valid", "test"):
        data = TrainConfig(dataset=str(mind), run_dir="unused").replay_data(split)
        assert set(map(str, data.scored_user_ids)) == _scored_users(mind, split)
        assert 0 < len(data.scored_user_ids) < data.n_users  # the fixture has both kinds in every split


def test_the_tuning_samples_users_with_a_scoring_point(mind):
    """--tune-users draws from the users a metric is measured on: a draw from every user would tune on users that
    score nothing (on the MIND slice: 100 users drawn, 2 scoring points)."""
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.tuning import (
        subsample_users,
        tune_reference,
        validation_scorer,
    )

    config = TrainConfig(dataset=str(mind), run_dir="unused", tune_users=1, reward_baseline="ema", seed=0)
    valid = config.replay_data("valid")
    scored = _scored_users(mind, "valid")
    assert not set(subsample_users(valid.user_ids, 1, 0)) <= scored  # the old draw: a user without a point
    seen = []

    def spy(data, metric, users):
        seen.append(users)
        return validation_scorer(data, metric, users)

    reference, _ = tune_reference(config, valid, spy)
    assert len(seen[0]) == 1 and set(seen[0]) <= scored
    assert np.isfinite(reference["valid_score"])


def test_an_evaluation_on_few_points_says_so(mind, tmp_path, capsys):
    _run(["evaluate", str(mind), "--out", str(tmp_path / "ev"), "--n-boot", "50", "--baselines", "ema,static", "--no-progress"])
    header = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["header"]
    test_scored = _scored_users(mind, "test")
    users = pd.read_parquet(mind / "users.parquet")
    n_test = int((users["split"] == "test").sum())
    assert header["scoring_points"] == len(test_scored)
    # impressions of the test users: a third scored (4 candidates, 3 with a news row), a third without an unclicked
    # candidate with a row, a third without a click on one; two candidates without a row in each of the first kind
    widths = _widths(mind, "test")
    assert min(widths) == 3 and max(widths) == 5
    assert header["candidates_per_point"] == f"{np.mean(widths):.1f} on average (3-5)"
    for chunk in ("1", "2"):  # chunk by chunk: the same counts, the fewest and the most over every chunk
        _run(["evaluate", str(mind), "--out", str(tmp_path / f"ev{chunk}"), "--n-boot", "50", "--baselines", "ema,static",
              "--no-progress", "--chunk-users", chunk])
        again = json.loads((tmp_path / f"ev{chunk}" / "evaluation.json").read_text())["header"]
        assert {k: again[k] for k in ("candidates_per_point", "not_scored", "few_points")} == \
            {k: header[k] for k in ("candidates_per_point", "not_scored", "few_points")}
    n_unclicked = sum(1 for u in users.loc[users["split"] == "test", "user_id"] if int(str(u)[1:]) % 3 == 1)
    n_click = n_test - len(test_scored) - n_unclicked
    assert header["not_scored"] == (
        f"{n_test - len(test_scored)} of {n_test} impressions ({n_click} without a click on a candidate with an item row; "
        f"{n_unclicked} without an unclicked candidate with an item row); {len(test_scored) + 2 * n_unclicked + n_click} "
        "candidates without an item row (no text to embed) left out of the rankings")
    assert header["few_points"] == (
        f"only {len(test_scored)} scoring points over {len(test_scored)} users: the tables rest on few rankings; no scoring "
        "point ranks more than 5 candidates: hit@10 and recall@10 are 1 whatever the policy, and nDCG@10 is high; compare "
        "AUC and MRR")
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert f"- not_scored: {header['not_scored']}" in md and f"- caution: {header['few_points']}" in md
    n_valid_scored = len(_scored_users(mind, "valid"))
    n_valid = int((users["split"] == "valid").sum())
    assert header["tuned_on"].startswith(f"valid ({n_valid_scored} of the {n_valid_scored} users with a scoring point; "
                                         f"{n_valid} replayed)")


def test_more_negatives_than_the_catalogue_holds_is_said_in_the_protocol(tmp_path):
    """99 negatives asked of a 15-item catalogue: each point draws the 14 it may, and the protocol line says how many
    points hold fewer than asked (the candidates per point say how many they hold)."""
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,action,ts"]
    for u in range(30):
        for k, item in enumerate(rng.choice(15, size=8, replace=False)):
            lines.append(f"u{u},i{item},click,{1_600_000_000 + 3600 * (10 * u + k)}")
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    _run(["prepare", "events", str(tmp_path / "log.csv"), "--out", str(tmp_path / "d"), "--item-text", "item {item_id}"])
    _run(["encode", str(tmp_path / "d"), "--encoder", "hashing", "--dim", "8"])
    _run(["evaluate", str(tmp_path / "d"), "--out", str(tmp_path / "ev"), "--n-boot", "20", "--baselines", "ema", "--no-progress",
          "--exclude", "log"])
    header = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["header"]
    points = header["scoring_points"]
    assert header["candidates"] == (f"next positive + 99 uniform negatives (exclude: every item of the user's log); {points} of {points} "
                                    "points with fewer (too few items to draw from)")
    assert header["candidates_per_point"] == "8"  # the target and the 7 items outside the user's 8


def test_train_and_evaluate_sample_users_with_a_scoring_point_and_say_when_they_are_few(mind, tmp_path, monkeypatch, capsys):
    """--tune-users / --eval-users smaller than the validation split: train's tuning and validation and evaluate's
    tuning draw from the users with a scoring point (every population drawn from is checked), and train notes that
    its validation rests on few rankings."""
    import interestgym.agents.train as train_module
    import interestgym.agents.tuning as tuning_module
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.train import train_run

    from interestgym.evaluation.run import evaluate_run

    drawn_from: list[set[str]] = []
    original = tuning_module.subsample_users

    def recording(user_ids, n, seed):
        drawn_from.append(set(map(str, user_ids)))
        return original(user_ids, n, seed)

    monkeypatch.setattr(tuning_module, "subsample_users", recording)
    monkeypatch.setattr(train_module, "subsample_users", recording)
    run = tmp_path / "run"
    config = TrainConfig(dataset=str(mind), run_dir=str(run), timesteps=64, n_envs=4, n_steps=16, batch_size=32, n_epochs=1,
                         eval_every=32, checkpoint_every=0, tune_users=1, eval_users=1, reward_baseline="ema", net_arch=[8],
                         progress_bar=False, seed=0)
    train_run(config)
    scored = _scored_users(mind, "valid")
    # the tuning's and the validation's draw from the validation users with a scoring point; the one other draw is the
    # sample of training users (those with a scoring point) the reference is also replayed on (the training gap)
    from_training = [pop for pop in drawn_from if pop != scored]
    assert len(drawn_from) - len(from_training) >= 2 and from_training == [_scored_users(mind, "train")]
    err = capsys.readouterr().err
    assert (f"note: the valid split has {len(scored)} scoring points ({len(scored)} of its "
            f"{int((pd.read_parquet(mind / 'users.parquet')['split'] == 'valid').sum())} users have one)") in err
    drawn_from.clear()
    evaluate_run(run, out=tmp_path / "ev", seed=5, baselines="ema", n_boot=20, progress=False)  # another protocol: tuned again
    assert drawn_from and all(pop == scored for pop in drawn_from)


def test_train_refuses_a_validation_split_without_a_scoring_point(tmp_path):
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.train import train_run

    from interestgym.errors import InterestGymError

    rows = [f"{u + 1}\tU{u:02d}\t11/12/2019 1:00:00 PM\tN1\tX5-1 N3-0" for u in range(20)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "news.tsv").write_text("\n".join(NEWS) + "\n", encoding="utf-8")
    (tmp_path / "in" / "behaviors.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    prepare_mind(tmp_path / "in", tmp_path / "data", deterministic=True)
    _run(["encode", str(tmp_path / "data"), "--encoder", "hashing", "--dim", "8"])
    with pytest.raises(InterestGymError, match=r"validation users have no scoring point \(4 users with a decision, none ranked"):
        train_run(TrainConfig(dataset=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), timesteps=64, progress_bar=False))
