"""The package installs under one namespace and its CLI explains itself."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from click.testing import CliRunner

from interestgym.cli import COMMANDS, cli


def test_pillars_import_under_the_namespace_only():
    import interestgym.agents
    import interestgym.encoders
    import interestgym.envs  # noqa: F401

    for bare in ("agents", "envs", "encoders"):
        spec = importlib.util.find_spec(bare)
        # Another installed package may legitimately own the bare name; ours must not.
        assert spec is None or "interestgym" not in str(spec.origin or spec.submodule_search_locations)


def test_help_lists_every_available_stage():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    for name in cli.list_commands(None):
        assert name in result.output


def test_every_subcommand_has_help():
    runner = CliRunner()
    names = cli.list_commands(None)
    assert "prepare" in names
    for name in names:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage:" in result.output and len(result.output.splitlines()) > 4, name


def test_every_metric_option_names_every_metric_the_product_takes():
    """The metric options' help lists each metric name parse_metric accepts (it once left out first_click_rr and
    recall@K, which work)."""
    import re

    from interestgym.core.metrics import _METRIC_RE, parse_metric

    kinds = re.findall(r"[a-z_0-9]+", _METRIC_RE.pattern.split("|(")[0]) + re.findall(r"[a-z_0-9]+", _METRIC_RE.pattern.split("|(")[1].split(")")[0])
    assert set(kinds) == {"auc", "mrr", "first_click_rr", "ndcg", "hit", "click", "precision", "recall", "f1"}
    for argv, option in ((["train"], "--reward"), (["quickstart"], "--reward"), (["evaluate"], "--select-metric")):
        text = " ".join(CliRunner().invoke(cli, [*argv, "--help"], terminal_width=2000).output.split())
        helped = text.split(option, 1)[1].split(" --", 1)[0]
        for kind in kinds:
            assert re.search(rf"\b{kind}\b", helped), (argv, option, kind, helped)
            parse_metric(kind if kind in ("auc", "mrr", "first_click_rr") else f"{kind}@5")


def test_console_script_reports_user_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from interestgym.cli import main; main()", "prepare", "nosuchformat", str(tmp_path), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "nosuchformat" in proc.stderr


def test_commands_table_points_at_real_modules():
    for name, (module, attr, _) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            assert hasattr(importlib.import_module(module), attr), name


def test_an_interrupt_says_so_in_one_line_and_exits_130(monkeypatch, capsys):
    """Ctrl-C reaches main as KeyboardInterrupt or as click's Abort (click turns it into one in prompts and some
    commands): the same line either way (it printed a bare "aborted" for the second)."""
    import click

    from interestgym import cli as cli_module

    for raised in (KeyboardInterrupt(), click.exceptions.Abort()):
        def interrupted(*args, raised=raised, **kwargs):
            raise raised

        monkeypatch.setattr(cli_module.cli, "main", interrupted)
        with pytest.raises(SystemExit) as info:
            cli_module.main(["evaluate", "x"])
        assert info.value.code == 130
        assert capsys.readouterr().err == cli_module.INTERRUPTED + "\n"


def test_a_command_that_says_what_its_interruption_left_gets_no_second_line(tmp_path, monkeypatch, capsys):
    """Ctrl-C in `train`: its own line (the checkpoint to resume from, or nothing to resume) and exit 130, not also the
    generic "run the command again to finish", which contradicts it where only --resume continues (a new user's trial)."""
    import interestgym.agents.train as train_module
    from agents_fixtures import tiny_synthetic

    from interestgym import cli as cli_module

    data = tiny_synthetic(tmp_path / "tiny", users=12)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train_run", interrupted)
    with pytest.raises(SystemExit) as info:
        cli_module.main(["train", str(data), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 130
    assert "interrupted before training started: nothing to resume" in err and cli_module.INTERRUPTED not in err, err


def test_an_interrupted_train_sequence_says_its_own_line_only(tmp_path, monkeypatch, capsys):
    """The same for `train-sequence` (its line: the epochs checkpointed and the --resume to continue)."""
    import interestgym.agents.sequence.train as seq_train
    from agents_fixtures import tiny_synthetic

    from interestgym import cli as cli_module

    data = tiny_synthetic(tmp_path / "tiny", users=12)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(seq_train, "chunk_loss", interrupted)
    with pytest.raises(SystemExit) as info:
        cli_module.main(["train-sequence", str(data), "--run-dir", str(tmp_path / "seq"), "--max-epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 130 and "--resume`" in err and cli_module.INTERRUPTED not in err, err
