"""Users of a split without a positive event have no decision to replay: `prepare` counts them in the split, and
`train` / `evaluate` say how many they left out wherever they give the users they replayed (prepare said 189
validation users where train said 188, without a word). A target with no item left to draw a negative from (the
user rated the whole catalogue) is not a scoring point, and is counted (it failed the tuning with a bare ValueError).
Also: `--tuned-baselines` takes a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cli_fixtures import run

N_USERS, N_MOVIES, N_RATED = 48, 40, 12


def _silent(user: int) -> bool:
    """Every fourth user rates every movie 3 or less: no positive rating (>= 4), so no decision."""
    return user % 4 == 0


def _completist(user: int) -> bool:
    """Every eighth user (from 1) rates the whole catalogue: no item is left to draw a negative from."""
    return user % 8 == 1


def _ratings(user: int) -> list[tuple[int, int]]:
    """(movie, rating) of the user, in time order."""
    movies = range(1, N_MOVIES + 1) if _completist(user) else [(5 * user + j) % N_MOVIES + 1 for j in range(N_RATED)]
    return [(m, 1 + (user + m) % 3 if _silent(user) else 1 + (user * 7 + m) % 5) for m in movies]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("silent")
    src = root / "ml"
    src.mkdir()
    (src / "u.genre").write_text("unknown|0\nAction|1\nComedy|2\n")
    (src / "u.item").write_text("\n".join(f"{m}|Movie {m} (1995)|01-Jan-1995||http://x|0|{m % 2}|{1 - m % 2}"
                                          for m in range(1, N_MOVIES + 1)) + "\n")
    rows = [f"{u}\t{m}\t{r}\t{880000000 + 1000 * u + 10 * k}"
            for u in range(1, N_USERS + 1) for k, (m, r) in enumerate(_ratings(u))]
    (src / "u.data").write_text("\n".join(rows) + "\n")
    out = root / "data"
    pytest.MonkeyPatch().setattr("sys.argv", ["interestgym"])
    from interestgym.cli import main

    for argv in (["prepare", "movielens", str(src), "--out", str(out)], ["encode", str(out), "--encoder", "hashing", "--dim", "16"]):
        try:
            main(argv)
        except SystemExit as exc:
            assert not exc.code, argv
    return out


def _split(data: Path, split: str) -> list[int]:
    users = pd.read_parquet(data / "users.parquet")
    return users.loc[users["split"] == split, "user_id"].astype(int).tolist()


def _silent_in(data: Path, split: str) -> tuple[int, int]:
    """(users of ``split`` without a positive rating, users of ``split``), from the fixture's rule and users.parquet."""
    ids = _split(data, split)
    return sum(_silent(u) for u in ids), len(ids)


def _scored(user: int) -> bool:
    """The user has a scoring point: a positive rating after the first, with items left to draw negatives from."""
    return sum(r >= 4 for _, r in _ratings(user)) >= 2 and not _completist(user)


def _targets_without_negatives(data: Path, split: str) -> int:
    """Next-positive targets of the split's completists (every positive rating after their first): none can be ranked
    against a negative, every item being in their log."""
    return sum(max(0, sum(r >= 4 for _, r in _ratings(u)) - 1) for u in _split(data, split) if _completist(u))


TRAIN = ["--timesteps", "100", "--n-envs", "4", "--n-steps", "16", "--batch-size", "32", "--n-epochs", "1", "--eval-every", "0",
         "--checkpoint-every", "0", "--no-progress"]


def test_train_and_evaluate_say_the_users_left_out(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k_valid, n_valid = _silent_in(dataset, "valid")
    k_test, n_test = _silent_in(dataset, "test")
    assert k_valid and k_test  # the fixture puts some in both splits (seed 0)
    run_dir = tmp_path / "run"
    code, out, err = run(["train", str(dataset), "--run-dir", str(run_dir), *TRAIN], capsys)
    assert code == 0, err
    # the shipping reason names the replayed users and the ones left out
    measured = [u for u in _split(dataset, "valid") if _scored(u)]
    unscored = n_valid - k_valid - len(measured)  # a decision, but nothing ranked after it (a completist; one positive)
    assert unscored
    assert (f"on {len(measured)} validation users ({k_valid + unscored} of the split's {n_valid} left out: {k_valid} without a positive "
            f"event, {unscored} without a scoring point)" in out)
    assert "steps (--timesteps 100 rounded up to whole rollouts of 4 envs x 16 steps)" in out  # 128 steps trained
    shipped = json.loads((run_dir / "shipped.json").read_text())
    assert shipped["validation"]["users"] == len(measured)

    code, out, err = run(["evaluate", str(run_dir), "--n-boot", "200"], capsys)
    assert code == 0, err
    header = json.loads((run_dir / "evaluation.json").read_text())["header"]
    scored = [u for u in _split(dataset, "test") if _scored(u)]
    assert header["users"] == len(scored)
    unscored = n_test - k_test - len(scored)
    assert header["users_left_out"] == (f"{k_test + unscored} of the split's {n_test} left out: {k_test} without a positive event"
                                        + (f", {unscored} without a scoring point" if unscored else ""))
    none = _targets_without_negatives(dataset, "test")
    assert none  # the fixture has a completist among the test users (seed 0)
    assert header["candidates"].endswith(f"; {none} targets not scored: no item left to draw a negative from (the user "
                                         "engaged with every other item)")
    protocol = json.loads((run_dir / "evaluation.json").read_text())["protocol"]
    assert protocol["counts"]["points_without_negatives"] == none
    # the points that are scored: every positive after a user's first, but the completists'
    assert header["scoring_points"] == sum(max(0, sum(r >= 4 for _, r in _ratings(u)) - 1)
                                           for u in _split(dataset, "test") if not _completist(u))
    assert f"; {k_valid} more without a positive event, not replayed)" in header["tuned_on"]
    md = (run_dir / "evaluation.md").read_text()
    assert f"- users_left_out: {header['users_left_out']}" in md
    # the run ships its rule (its agent starts as the rule and 128 steps do not prove it better): the chance caution,
    # where the rule's AUC CI reaches 0.5, is said once, of the reference, not again of `shipped:<rule>`
    summary = json.loads((run_dir / "evaluation.json").read_text())["summary"]
    ref = summary["reference"]
    assert f"shipped:{ref}" in summary["policies"]
    near_chance = summary["policies"][ref]["metrics"]["auc"]["lo"] <= 0.5
    assert [line.split("`")[1] for line in md.splitlines() if line.startswith("- caution: `")] == ([ref] if near_chance else [])


def test_tuned_baselines_takes_a_run_folder(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    assert run(["train", str(dataset), "--run-dir", str(first), *TRAIN], capsys)[0] == 0
    code, _, err = run(["train", str(dataset), "--run-dir", str(tmp_path / "second"), "--tuned-baselines", str(first), *TRAIN],
                       capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "second" / "config.json").read_text())
    config = config.get("config", config)
    assert Path(config["tuned_baselines"]).resolve() == (first / "baselines.json").resolve()
    assert (json.loads((tmp_path / "second" / "baselines.json").read_text())["baselines"]
            == json.loads((first / "baselines.json").read_text())["baselines"])
    code, _, err = run(["train", str(dataset), "--run-dir", str(tmp_path / "third"), "--tuned-baselines", str(dataset), *TRAIN],
                       capsys)
    assert code == 2 and err == (f"error: --tuned-baselines {dataset}: a folder without baselines.json; expected a baselines.json "
                                 "or a run folder that holds one (`interestgym train` writes it)\n")


def test_the_env_warns_of_targets_without_a_negative(dataset: Path) -> None:
    """The Gymnasium env says how many targets are not scoring points for want of a negative (the completists')."""
    from interestgym.envs.replay import InterestReplayEnv

    none = _targets_without_negatives(dataset, "test")
    with pytest.warns(UserWarning, match=rf"^{none} targets not scored: no item left to draw a negative from \(the user engaged "
                                         r"with every other item\)$"):
        InterestReplayEnv(dataset, split="test")


def test_reset_with_a_user_the_split_does_not_replay_says_where_the_user_is(dataset: Path) -> None:
    """reset(options={"user_id": ...}) with a user of another split names that split; one of this split without a
    positive event, and one the dataset does not hold, are said as such."""
    from interestgym.envs.replay import InterestReplayEnv

    from interestgym.errors import InterestGymError

    env = InterestReplayEnv(dataset, split="test")
    train_user = _split(dataset, "train")[0]
    silent_test_user = next(u for u in _split(dataset, "test") if _silent(u))
    for user, said in ((train_user, "it is a 'train' user (make the env with split='train')"),
                       (silent_test_user, "the user has no positive event in its log (nothing to decide on)"),
                       ("nobody", "the dataset has no such user")):
        with pytest.raises(InterestGymError) as caught:
            env.reset(options={"user_id": str(user)})
        assert str(caught.value) == f"reset option user_id={str(user)!r}: no such user with decisions in split 'test'; {said}"
