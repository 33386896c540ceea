"""The ``interestgym`` command line: one subcommand per pipeline stage.

Subcommands are imported only when run, so ``interestgym --help`` is instant and ``prepare`` never
loads torch. Errors the user can fix (:class:`~interestgym.errors.InterestGymError`) are printed as
one line and exit with status 2, as does a permission error (a read-only output folder); anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
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


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # the `interestgym` command owns its process: its heap is its own to tune
        from interestgym.heap import keep_freed_heap

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
