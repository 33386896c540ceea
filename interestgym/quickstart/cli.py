"""``interestgym quickstart``: prepare -> encode -> train -> evaluate -> export -> report on synthetic data.

Heavy imports happen inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from interestgym.core.metrics import METRIC_NAMES_TEXT
from interestgym.errors import InterestGymError, Interrupted
from interestgym.scale.ray_backend import ray_option

#: Options passed to ``interestgym train`` (TrainConfig fields); None = the training default.
_TRAIN_OPTIONS = ("timesteps", "n_envs", "n_steps", "batch_size", "n_epochs", "learning_rate", "gamma", "ent_coef",
                  "reward", "eval_every", "eval_users", "checkpoint_every", "max_events",
                  "category_gain", "context_lever", "slot_counts", "slot_lever")


@click.command("quickstart")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/quickstart"), show_default=True,
              help="Folder for everything: OUT/data, OUT/run (with evaluation and report), OUT/export.")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True, help="Language of the synthetic titles.")
@click.option("--users", type=click.IntRange(min=10), default=1000, show_default=True, help="Synthetic users (60/20/20% train/valid/test).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, its split and the training run.")
@click.option("--drift", type=click.Choice(["none", "mild", "strong"]), default="strong", show_default=True,
              help="Interest dynamics of the synthetic users.")
@click.option("--events-per-user", type=click.IntRange(min=1), default=None, help="Mean events per synthetic user (default 60).")
@click.option("--encoder", default=None, metavar="NAME_OR_PATH",
              help="minilm | hashing | tfidf | a local Hugging Face model folder (default: minilm when installed and "
                   "--lang en; tfidf for --lang zh; else hashing).")
@click.option("--timesteps", type=click.IntRange(min=1), default=None, help="Training steps (default: `interestgym train`'s).")
@click.option("--n-envs", type=click.IntRange(min=1), default=None, help="Users replayed in lock-step in training.")
@click.option("--n-steps", type=click.IntRange(min=2), default=None, help="Steps per env per PPO rollout.")
@click.option("--batch-size", type=click.IntRange(min=2), default=None, help="PPO minibatch size.")
@click.option("--n-epochs", type=click.IntRange(min=1), default=None, help="PPO epochs per rollout.")
@click.option("--learning-rate", type=float, default=None, help="PPO's Adam learning rate (default: `interestgym train`'s).")
@click.option("--gamma", type=float, default=None, help="Discount in (0, 1] (default: `interestgym train`'s).")
@click.option("--ent-coef", type=float, default=None, help="PPO's entropy bonus, >= 0 (default: `interestgym train`'s).")
@click.option("--reward", default=None, help=f"Reward metric: {METRIC_NAMES_TEXT} (default ndcg@10).")
@click.option("--reward-baseline", default=None,
              help="Rule subtracted from the reward: a baseline name, best, or none (default: `interestgym train`'s).")
@click.option("--net-arch", default=None, help="Hidden layer sizes, comma-separated (e.g. 64,64).")
@click.option("--max-events", type=click.IntRange(min=1), default=None, help="Truncate training episodes after this many decisions (a user's later decisions are not replayed).")
@click.option("--eval-every", type=click.IntRange(min=0), default=None, help="Validate every N training steps.")
@click.option("--eval-users", type=click.IntRange(min=0), default=None, help="Validation users for periodic validation (a seeded sample of those with a scoring point; 0: all).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, help="Checkpoint every N training steps.")
@click.option("--category-gain/--no-category-gain", default=None,
              help="The agent's count gain lever (default: `interestgym train`'s, on).")
@click.option("--context-lever/--no-context-lever", default=None,
              help="The agent's time-slot profile rate lever (default: on; moves nothing without slot profiles).")
@click.option("--slot-counts/--no-slot-counts", default=None,
              help="Tune bayesian_category with category counts per time of day too (default: on).")
@click.option("--slot-lever/--no-slot-lever", default=None,
              help="The agent's lever on the weight of the counts per time of day (default: on).")
@click.option("--retrain", is_flag=True, help="Train again from scratch even if OUT/run holds a trained model.")
@click.option("--model", "which_model", type=click.Choice(["shipped", "best", "final"]), default="shipped", show_default=True,
              help="What of the run is evaluated and reported: the policy it ships (its learned model or its reference rule), or a saved model; the export is always the shipped policy.")
@click.option("--baselines", default="all", show_default=True, help="Baselines to evaluate: comma-separated names, or all.")
@click.option("--n-boot", type=click.IntRange(min=100), default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--timeline-users", type=click.IntRange(min=0), default=3, show_default=True, help="Users with a timeline figure.")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@ray_option
def quickstart(out: Path, lang: str, users: int, seed: int, drift: str, events_per_user: int | None, encoder: str | None,
               reward_baseline: str | None, net_arch: str | None, retrain: bool, which_model: str, baselines: str,
               n_boot: int, timeline_users: int, progress: bool | None, ray: str | None, **train: object) -> None:
    """The whole pipeline on built-in synthetic data: prepare -> encode -> train -> evaluate -> export -> report.

    \b
    Writes OUT/data (dataset + embeddings), OUT/run (training run, TensorBoard logs in OUT/run/tb,
    evaluation.json / .md, report/ with figures, report.md and report.html) and OUT/export (ONNX +
    manifest for interestgym.runtime), then prints the results table and where everything is.
    A stage whose output is already there is reused ("reusing ..."); an interrupted training run is
    resumed; --retrain trains again. Takes about 4-6 minutes on 2 CPU cores with the defaults (the install, if any, comes on top).
    Examples:
      interestgym quickstart
      interestgym quickstart --out runs/qs-zh --lang zh
      interestgym quickstart --out /tmp/qs-tiny --users 60 --timesteps 2048 --encoder hashing
    With --ray, encoding, the baselines' tuning and the evaluation run sharded on a Ray cluster
    (the same numbers as one process); PPO and the report run in this process.
    """
    from interestgym.quickstart.pipeline import (
        QuickstartConfig,
        closing_text,
        run_quickstart,
    )

    options = {k: v for k, v in train.items() if k in _TRAIN_OPTIONS and v is not None}
    if options.get("eval_users") == 0:
        options["eval_users"] = None  # as `interestgym train`: 0 = every validation user
    if reward_baseline is not None:
        options["reward_baseline"] = None if reward_baseline.strip().lower() in ("", "none") else reward_baseline
    if net_arch is not None:
        try:
            options["net_arch"] = [int(x) for x in net_arch.split(",") if x.strip()]
        except ValueError:
            raise InterestGymError(f"--net-arch {net_arch!r}: expected comma-separated layer sizes, e.g. 64,64") from None
    cfg = QuickstartConfig(out=str(out), lang=lang, users=users, seed=seed, drift=drift, events_per_user=events_per_user,
                           encoder=encoder, model=which_model, baselines=baselines, n_boot=n_boot,
                           timeline_users=timeline_users, retrain=retrain, train_options=options, progress=progress, ray=ray)
    try:
        result = run_quickstart(cfg, say=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted: run the same command again to continue (finished stages are reused, training resumes "
                   "from its last checkpoint)", err=True)
        raise Interrupted from None
    click.echo(closing_text(result))
