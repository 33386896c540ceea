"""The README tells the truth: every `interestgym` command and option it shows exists, and the cheap
ones run as written (on small data, in a temporary folder)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from interestgym.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED_DATA = ROOT.parent / "shared" / "data"


def readme_commands() -> list[str]:
    """Every `interestgym ...` command line in the README (code blocks, indented blocks, table cells)."""
    text = README.read_text(encoding="utf-8")
    text = re.sub(r"\\\n\s*", " ", text)  # join shell continuation lines
    commands = []
    for line in text.splitlines():
        for match in re.finditer(r"(?:^|[`&|]\s*|^\s+)(interestgym\s+[a-z][^`&|#\n]*)", line):
            cmd = match.group(1).strip()
            if cmd.split()[1] in cli.list_commands(None):
                commands.append(cmd)
    return commands


def test_readme_shows_every_stage():
    shown = {shlex.split(c)[1] for c in readme_commands()}
    assert set(cli.list_commands(None)) <= shown


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- test-command -->", 1)[1].split("```", 2)[1]
    assert "pytest" in block and "torch==2.13.0" in block and "constraints" in block
    # and CI's own extraction (its awk line, run as CI runs it) gives exactly that block's command
    line = next(ln for ln in ci.splitlines() if ln.startswith("cmd=$(awk "))
    extracted = subprocess.run(["bash", "-c", line.removeprefix("cmd=$(").removesuffix(")")], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
    assert extracted == block.removeprefix("bash").strip()


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_and_options_exist(command):
    args = shlex.split(command)[1:]
    cmd = cli.get_command(None, args[0])
    assert cmd is not None, command
    known = {opt for p in cmd.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    known |= {"--help", "-h"}
    for arg in args[1:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in known, f"README shows {arg} for `interestgym {args[0]}`; options are {sorted(known)}"


def _run(args: list[str], cwd: Path) -> str:
    import os

    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.output


def _readme_command(prefix: str) -> list[str]:
    found = [c for c in readme_commands() if c.startswith(prefix)]
    assert found, f"the README no longer shows `{prefix} ...`"
    args = shlex.split(found[0])[1:]
    return [str(SHARED_DATA / a[len("../shared/data/"):]) if a.startswith("../shared/data/") else a for a in args]


def test_readme_synthetic_prepare_and_hashing_encode_run(tmp_path):
    args = _readme_command("interestgym prepare synthetic")
    args[args.index("--users") + 1] = "40"  # small data; every other option as written
    _run(args, tmp_path)
    out = args[args.index("--out") + 1]
    manifest = (tmp_path / out / "manifest.json")
    assert manifest.is_file()
    output = _run(["encode", out, "--encoder", "hashing"], tmp_path)
    assert "encoded" in output


@pytest.mark.skipif(not (SHARED_DATA / "ml-100k").is_dir(), reason="../shared/data/ml-100k not present")
def test_readme_movielens_prepare_gives_the_numbers_it_states(tmp_path):
    import json

    args = _readme_command("interestgym prepare movielens ../shared/data/ml-100k")
    _run(args, tmp_path)
    manifest = json.loads((tmp_path / args[args.index("--out") + 1] / "manifest.json").read_text())
    assert (manifest["counts"]["events"], manifest["counts"]["users"], manifest["counts"]["items"]) == (100_000, 943, 1_682)
    assert "100,000 events, 943 users, 1,682 items" in README.read_text(encoding="utf-8")


@pytest.mark.skipif(not (SHARED_DATA / "taobao-userbehavior-sample").is_dir(), reason="../shared/data/taobao-userbehavior-sample not present")
def test_readme_taobao_command_runs(tmp_path):
    import json

    args = _readme_command("interestgym prepare events ../shared/data/taobao")
    _run(args, tmp_path)
    manifest = json.loads((tmp_path / args[args.index("--out") + 1] / "manifest.json").read_text())
    assert (manifest["counts"]["events"], manifest["counts"]["users"]) == (43_411, 407)
