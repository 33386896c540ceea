"""Running the ``interestgym`` command in-process, as the tests of several stages do."""

from __future__ import annotations

import pytest

from interestgym.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``interestgym ARGV``: (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
