"""``interestgym train``.

Heavy imports (torch, stable-baselines3) happen inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from interestgym.errors import InterestGymError


def _defaults():
    from interestgym.agents.config import TrainConfig

    return TrainConfig(dataset="", run_dir="")


_D = None


def _d(name: str):
    # TrainConfig holds the one copy of every default; the options read it (without importing torch).
    global _D
    if _D is None:
        _D = _defaults()
    return getattr(_D, name)


@click.command("train")
@click.argument("dataset", type=click.Path(file_okay=False, path_type=Path))
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output directory of the run (config, TensorBoard logs, checkpoints, models).")
@click.option("--embeddings", default=None, help="Embedding name in the dataset (default: the only one).")
@click.option("--timesteps", type=int, default=_d("timesteps"), show_default=True, help="Total env steps (decisions) of the run; with --resume, the total to reach.")
@click.option("--n-envs", type=int, default=_d("n_envs"), show_default=True, help="Users replayed in lock-step.")
@click.option("--seed", type=int, default=_d("seed"), show_default=True)
@click.option("--reward", default=_d("reward"), show_default=True, help="Reward metric: ndcg@K, click@K, mrr, auc, f1@K, hit@K, precision@K.")
@click.option("--reward-baseline", default=_d("reward_baseline"), show_default=True, help="Rule whose metric at the same scoring points is subtracted from the reward: 'best' (every baseline is tuned on validation users, the best one is used), a baseline name, or 'none' for the raw metric.")
@click.option("--tune-users", type=int, default=_d("tune_users"), show_default=True, help="Validation users the baselines are tuned on (seeded subsample; 0: all).")
@click.option("--tuned-baselines", type=click.Path(dir_okay=False), default=None, help="Reuse a baselines.json (same metric and protocol) instead of tuning again.")
@click.option("--agent-scoring", type=click.Choice(["reference", "reference-fixed", "plain"]), default=_d("agent_scoring"), show_default=True, help="The agent's fixed score terms: 'reference' = the reference rule's (e.g. its Bayesian category term), with the category counts forgetting by 1 - a_L of the agent's action (so the agent decides when to forget; its a_L starts at 1 - the rule's forgetting); 'reference-fixed' = the rule's terms with its fixed forgetting; 'plain' = none.")
@click.option("--negatives", type=click.Choice(["uniform", "popularity"]), default=_d("negatives"), show_default=True, help="Negative sampling for logs without impressions.")
@click.option("--n-negatives", type=int, default=_d("n_negatives"), show_default=True)
@click.option("--max-events", type=int, default=None, help="Truncate episodes after this many decisions (a user's later decisions are not replayed).")
@click.option("--learning-rate", type=float, default=_d("learning_rate"), show_default=True)
@click.option("--n-steps", type=int, default=_d("n_steps"), show_default=True, help="Steps per env per PPO rollout.")
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True)
@click.option("--n-epochs", type=int, default=_d("n_epochs"), show_default=True)
@click.option("--gamma", type=float, default=_d("gamma"), show_default=True)
@click.option("--gae-lambda", type=float, default=_d("gae_lambda"), show_default=True)
@click.option("--ent-coef", type=float, default=_d("ent_coef"), show_default=True)
@click.option("--log-std-init", type=float, default=_d("log_std_init"), show_default=True)
@click.option("--init-from-reference/--no-init-from-reference", default=_d("init_from_reference"), show_default=True, help="Start the policy at the reference rule's mean action (residual learning).")
@click.option("--net-arch", default=",".join(map(str, _d("net_arch"))), show_default=True, help="Hidden layer sizes, comma-separated.")
@click.option("--norm-reward/--no-norm-reward", default=_d("norm_reward"), show_default=True, help="Normalise rewards with VecNormalize (observations are always normalised).")
@click.option("--eval-every", type=int, default=_d("eval_every"), show_default=True, help="Validate every N steps (0: at the end only).")
@click.option("--eval-users", type=int, default=_d("eval_users"), show_default=True, help="Validation users for periodic validation (0: all).")
@click.option("--checkpoint-every", type=int, default=_d("checkpoint_every"), show_default=True)
@click.option("--device", default=_d("device"), show_default=True, help="Torch device (cpu is fastest for this MLP).")
@click.option("--torch-threads", type=int, default=_d("torch_threads"), show_default=True, help="Torch CPU threads (1 is fastest for this small MLP).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint (step counter, normalisation and TensorBoard curves continue).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
def train(dataset: Path, run_dir: Path, resume: bool, progress: bool, net_arch: str, eval_users: int, tune_users: int, **options) -> None:
    """Train a PPO profile-update policy on DATASET's training users.

    \b
    Writes into --run-dir: config.json, baselines.json (the tuned baselines), tb/ (TensorBoard:
    `tensorboard --logdir RUN_DIR/tb`), checkpoints/, best/ (best validation metric), final/.
    Example:
      interestgym prepare synthetic --out data/syn --drift strong
      interestgym encode data/syn --encoder hashing
      interestgym train data/syn --run-dir runs/syn
      interestgym evaluate runs/syn
    """
    from interestgym.agents.train import TrainConfig, train_run

    try:
        arch = [int(x) for x in net_arch.split(",") if x.strip()]
    except ValueError:
        raise InterestGymError(f"--net-arch {net_arch!r}: expected comma-separated layer sizes, e.g. 64,64") from None
    baseline = options.pop("reward_baseline")
    config = TrainConfig(
        dataset=str(dataset), run_dir=str(run_dir), net_arch=arch, progress_bar=progress,
        reward_baseline=None if baseline in (None, "", "none") else baseline,
        eval_users=eval_users or None, tune_users=tune_users or None, **options,
    )
    if resume:
        _refuse_changed_options_on_resume(click.get_current_context(), dataset, run_dir, config)
    result = train_run(config, resume=resume)
    click.echo(f"trained {result['num_timesteps']} steps in {result['seconds']:.0f} s; "
               f"best validation {result['select_metric']} = {result['best_value']:.4f} at step {result['best_step']}")
    click.echo(f"run directory: {run_dir}  (evaluate with: interestgym evaluate {run_dir})")


def _refuse_changed_options_on_resume(ctx: click.Context, dataset: Path, run_dir: Path, config) -> None:
    """--resume trains on with the run's own options: refuse ones given on the command line that differ
    (they would otherwise be ignored without a word)."""
    from click.core import ParameterSource
    from interestgym.agents.train import CONFIG_FILE, read_run_config

    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return  # train_run says what is missing
    saved = read_run_config(Path(run_dir))["config"]
    differ = []
    if Path(str(saved.get("dataset", ""))).resolve() != Path(dataset).resolve():
        differ.append(f"DATASET {dataset} (the run's: {saved.get('dataset')})")
    for param in ctx.command.params:
        name = param.name
        if name in ("timesteps", "device", "progress", "resume", "run_dir", "dataset") or name not in saved:
            continue
        if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
            continue
        if getattr(config, name) != saved[name]:
            differ.append(f"--{name.replace('_', '-')} {getattr(config, name)!r} (the run's: {saved[name]!r})")
    if differ:
        raise InterestGymError(f"--resume continues {run_dir} with its own options, but {'; '.join(differ)}; "
                               "drop them (only --timesteps, --device and --progress may change), or train a new --run-dir")
