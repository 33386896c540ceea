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
