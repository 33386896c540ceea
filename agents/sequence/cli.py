"""``interestgym train-sequence``: train a GRU4Rec- or SASRec-style tracker on a dataset's training users.

Heavy imports (torch) happen inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click


def _d(name: str):
    """The default of a SequenceConfig setting: the one copy (config.py imports no torch)."""
    from interestgym.agents.sequence.config import SequenceConfig

    return SequenceConfig.__dataclass_fields__[name].default


@click.command("train-sequence")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path))
@click.option("--model", type=click.Choice(["gru", "sasrec"]), default=_d("model"), show_default=True, help="gru: GRU4Rec-style recurrent tracker; sasrec: SASRec-style causal Transformer.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder: sequence.json, best/, final/, checkpoints/, tb/ (and folds/ with --folds).")
@click.option("--name", default=None, help="Name in result tables (default: the model's).")
@click.option("--embeddings", default=None, help="Embedding name in the dataset (default: the only one).")
@click.option("--window", type=int, default=_d("window"), show_default=True, help="k: the tracker's state is the user's last k decisions.")
@click.option("--hidden", type=int, default=_d("hidden"), show_default=True, help="Width of item representations and states.")
@click.option("--layers", type=int, default=None, help="Transformer blocks / GRU layers (default: sasrec 2, gru 1).")
@click.option("--heads", type=int, default=None, help="Attention heads (sasrec; default 2); --hidden must be a multiple of it.")
@click.option("--dropout", type=float, default=None, help="Dropout (default 0.3).")
@click.option("--item-ids", type=click.Choice(["auto", "on", "off"]), default=_d("item_ids"), show_default=True, help="Learned item-id embeddings; auto: on when validation users' items recur among training users' (MovieLens yes, fresh news no).")
@click.option("--text/--no-text", default=True, show_default=True, help="Add the projected encoder vector to every item's representation.")
@click.option("--learning-rate", type=float, default=_d("learning_rate"), show_default=True)
@click.option("--weight-decay", type=float, default=_d("weight_decay"), show_default=True)
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True, help="Training windows per batch.")
@click.option("--max-epochs", type=int, default=_d("max_epochs"), show_default=True)
@click.option("--patience", type=int, default=_d("patience"), show_default=True, help="Stop after this many epochs without a better validation metric.")
@click.option("--max-minutes", type=float, default=None, help="Stop training after this many minutes (the best model so far is kept).")
@click.option("--loss", type=click.Choice(["auto", "full", "sampled"]), default="auto", show_default=True, help="Softmax over the whole catalogue (full), or the target + shared uniform negatives (sampled); auto: full up to 10,000 items (a full softmax over more is slow on a CPU).")
@click.option("--train-negatives", type=int, default=_d("train_negatives"), show_default=True, help="Shared negatives per batch with --loss sampled.")
@click.option("--metric", default=_d("metric"), show_default=True, help="Validation metric for early stopping.")
@click.option("--negatives", type=click.Choice(["uniform", "popularity"]), default="uniform", show_default=True, help="Negatives of the validation scoring points (logs without impressions), as `interestgym train`.")
@click.option("--n-negatives", type=int, default=_d("n_negatives"), show_default=True, help="Sampled negatives per validation scoring point.")
@click.option("--protocol-seed", type=int, default=_d("protocol_seed"), show_default=True, help="Seed of the scoring protocol's negatives.")
@click.option("--exclude", type=click.Choice(["auto", "target", "log", "past"]), default=_d("exclude"), show_default=True, help="Which items the validation negatives leave out, as `interestgym train --exclude`.")
@click.option("--history-negatives", type=int, default=_d("history_negatives"), show_default=True, help="Up to this many validation negatives from the user's own earlier items, as `interestgym train --history-negatives`.")
@click.option("--eval-users", type=int, default=0, show_default=True, help="Validation users scored for early stopping (a seeded sample of those with a scoring point; 0: all).")
@click.option("--seed", type=int, default=_d("seed"), show_default=True)
@click.option("--folds", type=int, default=_d("folds"), show_default=True, help="Also train this many trackers, each without one fold of the training users, so that `train --sequence` learns on scores of users the tracker never saw (out-of-fold); 0: none. Costs this many more trainings.")
@click.option("--device", default="auto", show_default=True, help="Torch device: auto (CUDA when available), cpu, cuda.")
@click.option("--torch-threads", type=int, default=1, show_default=True, help="Torch CPU threads (0: torch's default). 1 is fastest for these small models on a shared machine.")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint (same settings; --max-epochs etc. may grow).")
@click.option("--progress/--no-progress", "progress_bar", default=True, show_default=True, help="Progress bar (log lines when output is not a terminal).")
def train_sequence(dataset: Path, run_dir: Path, resume: bool, eval_users: int, torch_threads: int, **options) -> None:
    """Train a sequence tracker (GRU4Rec- or SASRec-style) on DATASET's training users.

    \b
    The tracker reads the user's last --window decisions (item: encoder vector + learned item-id
    embedding where ids recur; action; time gap) and scores candidates by a dot product. It trains on
    training users' decision sequences (next-item prediction), stops early on validation users'
    scoring points (the protocol `interestgym evaluate` uses), and never reads test users.
    Writes into --run-dir: sequence.json, best/ and final/ (weights + info.json), checkpoints/last/,
    tb/ (TensorBoard: `tensorboard --logdir RUN_DIR/tb`); with --folds K also folds.json and folds/1..K/
    (one tracker run each).
    Example (ml-100k, about 2-4 minutes on 2 CPU cores):
      interestgym train-sequence runs/data/ml-100k --model sasrec --run-dir runs/seq/sasrec
    """
    from click.core import ParameterSource
    from interestgym.agents.sequence.config import RESUME_MAY_CHANGE, SequenceConfig
    from interestgym.agents.sequence.train import train_sequence as run

    # the dataset as an absolute path: the run reads it later from anywhere (evaluate, --resume), as train's runs do
    config = SequenceConfig(dataset=str(dataset.resolve()), run_dir=str(run_dir), eval_users=eval_users or None,
                            torch_threads=torch_threads or None, **options)
    ctx = click.get_current_context()
    if resume:
        _refuse_changed_settings_on_resume(ctx, config)
    # on resume the run keeps its own limits and device unless typed here (their defaults are no one's choice);
    # the progress bar is this command's
    typed = [n for n in RESUME_MAY_CHANGE if n in ctx.params and ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
    run(config, resume=resume, log=lambda text: click.echo(text, err=True), changes=sorted({"progress_bar", *typed}))


def _refuse_changed_settings_on_resume(ctx: click.Context, config) -> None:
    """--resume continues with the run's own settings: refuse ones given on the command line that differ
    (they would otherwise be ignored without a word), as `interestgym train --resume` does."""
    from click.core import ParameterSource
    from interestgym.agents.config import resume_conflicts
    from interestgym.agents.sequence.config import RESUME_MAY_CHANGE
    from interestgym.agents.sequence.folder import CONFIG_FILE, run_settings

    from interestgym.errors import InterestGymError

    run_dir = Path(config.run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        return  # train_sequence says what is missing
    saved = run_settings(run_dir)
    mine = config.as_dict()
    given = {name: (mine[name], "--") for name in mine  # ("--": given on the command line)
             if name in ctx.params and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    differ = resume_conflicts(given, saved, RESUME_MAY_CHANGE, dataset=config.dataset)
    if differ:
        raise InterestGymError(f"--resume continues {run_dir} with its own settings, but these differ from them: {'; '.join(differ)}; "
                               f"drop them (only {', '.join(p.opts[0] for p in ctx.command.params if p.name in RESUME_MAY_CHANGE)} "
                               "may change), "
                               "or train a new --run-dir")
