"""`interestgym train-sequence`: its help, a tiny run, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from env_fixtures import make_dataset

from interestgym.cli import cli, main


def test_help_lists_the_command_and_its_options_without_loading_torch():
    out = CliRunner().invoke(cli, ["--help"]).output
    assert "train-sequence" in out
    code = ("import sys; from interestgym.cli import main\n"
            "try:\n    main(['train-sequence', '--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported by --help'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for option in ("--model [gru|sasrec]", "--run-dir", "--window", "--item-ids", "--patience", "--resume", "--device"):
        assert option in done.stdout


def _run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return int(exc.value.code or 0), capsys.readouterr().err


def test_tiny_run_from_the_command_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", n_users=24, n_items=40, dim=8)
    code, err = _run(["train-sequence", str(data), "--model", "gru", "--run-dir", str(tmp_path / "run"), "--window", "6",
                      "--hidden", "8", "--max-epochs", "1", "--n-negatives", "10", "--no-progress"], capsys)
    assert code == 0, err
    assert "stopped after epoch 1" in err and (tmp_path / "run" / "best" / "model.pt").is_file()
    # a second start in the same folder is refused in one line
    code, err = _run(["train-sequence", str(data), "--run-dir", str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 2 and err.startswith("error: ") and "--resume" in err and len(err.strip().splitlines()) == 1


def test_the_progress_line_says_its_time_left_is_up_to_max_epochs(tmp_path, capsys, monkeypatch):
    """The bar counts every epoch up to --max-epochs; early stopping usually ends the run sooner, and the line says so."""
    import interestgym.progress

    monkeypatch.setattr(interestgym.progress, "LOG_EVERY_SECONDS", 0.0)
    data = make_dataset(tmp_path / "ds", n_users=24, n_items=40, dim=8)
    code, err = _run(["train-sequence", str(data), "--model", "gru", "--run-dir", str(tmp_path / "run"), "--window", "6",
                      "--hidden", "8", "--max-epochs", "3", "--patience", "1", "--n-negatives", "10", "--progress"], capsys)
    assert code == 0, err
    assert "[time left up to --max-epochs 3; 1 epoch without a better validation score stop it sooner]" in err


@pytest.mark.parametrize("args, expected", [
    (["--model", "lstm"], "'lstm' is not one of"),
    (["--window", "0"], "--window 0: expected an integer >= 1"),
    (["--item-ids", "maybe"], "'maybe' is not one of"),
    (["--layers", "0"], "--layers 0: expected an integer >= 1"),
    (["--dropout", "1.5"], "--dropout 1.5: expected a number in [0, 1)"),
    (["--model", "sasrec", "--hidden", "64", "--heads", "3"], "--hidden 64 is not divisible by --heads 3"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, args, expected):
    data = tmp_path / "nowhere"
    code, err = _run(["train-sequence", str(data), "--run-dir", str(tmp_path / "run"), *args], capsys)
    assert code == 2 and expected in err


def test_a_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    code, err = _run(["train-sequence", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 2 and err.startswith("error: ") and "nowhere" in err and len(err.strip().splitlines()) == 1


def test_a_resume_keeps_the_runs_own_limits_unless_typed_again(tmp_path, capsys):
    # a resume took --max-epochs / --patience / --max-minutes from the command line's defaults (200 epochs,
    # patience 5, no time limit) when they were not typed, and wrote them into sequence.json
    import json

    data = make_dataset(tmp_path / "ds", n_users=24, n_items=40, dim=8)
    run = tmp_path / "run"
    common = ["--no-progress"]
    code, err = _run(["train-sequence", str(data), "--model", "gru", "--run-dir", str(run), "--window", "6", "--hidden", "8",
                      "--max-epochs", "1", "--patience", "50", "--n-negatives", "10", *common], capsys)
    assert code == 0, err

    def epochs_and_limits() -> tuple[list[int], int, int]:
        state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
        spec = json.loads((run / "sequence.json").read_text())["config"]
        return [h["epoch"] for h in state["history"]], spec["max_epochs"], spec["patience"]

    code, err = _run(["train-sequence", str(data), "--run-dir", str(run), "--resume", *common], capsys)
    assert code == 0, err
    assert epochs_and_limits() == ([1], 1, 50)
    code, err = _run(["train-sequence", str(data), "--run-dir", str(run), "--resume", "--max-epochs", "2", *common], capsys)
    assert code == 0, err
    assert epochs_and_limits() == ([1, 2], 2, 50)


def test_a_run_started_without_embeddings_resumes_after_the_dataset_gained_another(tmp_path, capsys):
    # the run's recorded embeddings stayed None, so the resume asked for --embeddings NAME, and refused it too
    import shutil

    data = make_dataset(tmp_path / "ds", n_users=24, n_items=40, dim=8)
    run = tmp_path / "run"
    args = ["train-sequence", str(data), "--model", "gru", "--run-dir", str(run), "--window", "6", "--hidden", "8",
            "--n-negatives", "10", "--no-progress"]
    code, err = _run([*args, "--max-epochs", "1"], capsys)
    assert code == 0, err
    emb = data / "embeddings"
    shutil.copy(emb / "rand.npy", emb / "other.npy")
    (emb / "other.json").write_text((emb / "rand.json").read_text())
    for extra in ([], ["--embeddings", "rand"]):
        code, err = _run(["train-sequence", str(data), "--run-dir", str(run), "--resume", "--max-epochs", "2", "--no-progress",
                          *extra], capsys)
        assert code == 0, err
        assert "stopped after epoch 2" in err
