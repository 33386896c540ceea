"""The ``interestgym`` command line: one subcommand per pipeline stage.

Subcommands are imported only when run, so ``interestgym --help`` is instant and ``prepare`` never
loads torch. Errors the user can fix (:class:`~interestgym.errors.InterestGymError`) are printed as
one line and exit with status 2, as does a permission error (a read-only output folder); anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import click

from interestgym import __version__
from interestgym.errors import InterestGymError, Interrupted

# name -> (module, attribute, one-line help shown by `interestgym --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": ("interestgym.data.cli", "prepare", "Raw logs -> a validated, split canonical dataset."),
    "encode": ("interestgym.encoders.cli", "encode", "Item texts -> cached, L2-normalised embeddings."),
    "finetune": ("interestgym.encoders.cli_finetune", "finetune", "Fine-tune a BERT encoder on training users' co-engagement pairs."),
    "train": ("interestgym.agents.cli", "train", "Train a PPO update policy on the replay env."),
    "train-sequence": ("interestgym.agents.sequence.cli", "train_sequence", "Train a GRU / SASRec sequence tracker (a baseline) on training users."),
    "search": ("interestgym.agents.search", "search", "Budgeted hyper-parameter search of PPO settings, picked on validation users."),
    "evaluate": ("interestgym.evaluation.cli", "evaluate", "Compare a trained policy with every baseline on held-out users."),
    "export": ("interestgym.export.cli", "export", "Export a trained policy to ONNX + manifest for the runtime."),
    "compare": ("interestgym.evaluation.compare", "compare", "Two evaluations of the same users, row by row, paired over users."),
    "report": ("interestgym.report.cli", "report", "Figures and a summary of a run."),
    "quickstart": ("interestgym.quickstart.cli", "quickstart", "The whole pipeline on built-in synthetic data."),
    "serve": ("interestgym.serve.cli", "serve", "Serve an export over HTTP with user states in SQLite or Redis."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Pipeline"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="interestgym")
def cli() -> None:
    """interestgym: learn when and how strongly to update user-interest profiles.

    \b
    prepare -> encode -> train -> evaluate -> export -> runtime
    Start with `interestgym quickstart`, or see each command's --help.
    """


#: What an interrupted command says (every output is written to a temporary name and renamed into place).
INTERRUPTED = "interrupted: every file it wrote is whole (none is left half-written); run the command again to finish"


#: MB of freed heap the ``interestgym`` command keeps (glibc ``M_TOP_PAD``); this variable overrides it, 0 leaves
#: glibc's own behaviour. See :func:`keep_freed_heap`.
TOP_PAD_VARIABLE = "INTERESTGYM_MALLOC_TOP_PAD_MB"
DEFAULT_TOP_PAD_MB = 64
#: Arrays below this many bytes come from the heap, not from their own mmap (glibc's ``M_MMAP_THRESHOLD``): 32 MB, the
#: largest its own sliding threshold reaches on a 64-bit machine, fixed from the start.
MMAP_THRESHOLD = 32 << 20
#: glibc's own settings: where the user set one, the command leaves the heap to them.
GLIBC_MALLOC_VARIABLES = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_heap(environ: dict[str, str] | None = None) -> int:
    """Have glibc keep up to 64 MB of freed heap instead of giving it back to the kernel; return the MB set (0: none).

    The replay, the evaluator and the runtime's batches allocate and free numpy temporaries of a few MB at every
    step. At glibc's defaults the heap's freed top goes back to the kernel and faults in again at the next step: the
    quick start's ``evaluate`` took 1.7M minor page faults and 15.5 s against 11.2 s with the heap kept
    (``benchmarks/malloc_top_pad.py``). So: ``M_TOP_PAD`` (the heap keeps that much when it shrinks) and ``M_MMAP_THRESHOLD`` 32 MB (arrays below it come
    from the heap: setting the pad alone stops glibc's sliding threshold at 128 KB, and ``prepare``'s MB-sized columns
    then each got a fresh mmap, 6x the faults). Neither changes a number, only where memory comes from. Left alone where
    the user chose (glibc's ``MALLOC_*_`` variables or ``GLIBC_TUNABLES`` set, or ``INTERESTGYM_MALLOC_TOP_PAD_MB``:
    0 = leave glibc as it is) and on a C library without ``mallopt`` (macOS, musl: nothing happens).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in GLIBC_MALLOC_VARIABLES):
        return 0
    raw = env.get(TOP_PAD_VARIABLE, str(DEFAULT_TOP_PAD_MB))
    try:
        mb = int(raw)
    except ValueError:
        mb = -1
    if not 0 <= mb < 2048:  # mallopt takes a C int of bytes
        click.echo(f"warning: {TOP_PAD_VARIABLE}={raw!r}: expected a whole number of MB from 0 to 2047; glibc's heap left "
                   "at its defaults", err=True)
        return 0
    if mb == 0:
        return 0
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # mallopt returns 1 on success; M_TOP_PAD = -2, M_MMAP_THRESHOLD = -3 (malloc.h)
        return mb if libc.mallopt(-3, MMAP_THRESHOLD) == 1 and libc.mallopt(-2, mb << 20) == 1 else 0
    except (OSError, AttributeError):
        return 0


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # the `interestgym` command owns its process: its heap is its own to tune
        keep_freed_heap()
    try:
        rv = cli.main(args=argv, prog_name="interestgym", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except InterestGymError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except PermissionError as exc:
        # A read-only output folder (or an unreadable input) is the user's to fix: one line, no traceback.
        where = exc.filename or "a file"
        click.echo(f"error: {where}: permission denied ({exc.strerror or exc}); expected a location this user can "
                   "read and write (check the folder's permissions, or choose another --out / --run-dir)", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # Ctrl-C: click turns it into Abort (the cause kept)
        if not isinstance(exc, Interrupted) and not isinstance(exc.__cause__, Interrupted):
            click.echo(INTERRUPTED, err=True)  # else the command has said what it left and how to go on
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
