"""``interestgym evaluate``: every policy on the same held-out users, with CIs.

Heavy imports (torch, stable-baselines3) happen inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from interestgym.core.metrics import METRIC_NAMES_TEXT
from interestgym.errors import InterestGymError
from interestgym.scale.ray_backend import ray_option


@click.command("evaluate")
@click.argument("run_or_dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["test", "valid", "train"]), default="test", show_default=True)
@click.option("--model", "which_model", type=click.Choice(["shipped", "best", "final"]), default="shipped", show_default=True, help="What of a run to evaluate: the policy it ships (its learned model, or its reference rule when validation did not prove the model: RUN/shipped.json), or a saved model.")
@click.option("--embeddings", default=None, help="Embedding name (default: the run's, or the dataset's only one; with --dataset: the other dataset's embedding of the run's encoder, found by its fingerprint; DATASET --sequence RUN: the trackers' own).")
@click.option("--negatives", type=click.Choice(["uniform", "popularity"]), default=None, help="Negative sampling (default: the run's, else uniform).")
@click.option("--n-negatives", type=int, default=None, help="Sampled negatives per scoring point (default: the run's, else 99).")
@click.option("--exclude", type=click.Choice(["auto", "target", "log", "past"]), default=None, help="Which items the negatives leave out (default: the run's, else auto: 'target' when training users have repeats, 'log' otherwise); 'log' is the classic protocol, kept for comparison.")
@click.option("--seed", type=int, default=None, help="Protocol seed (default: the run's, else 0).")
@click.option("--history-negatives", type=int, default=None, help="How many negatives are drawn from the user's own earlier items (default: the run's, else 0; needs --exclude target or a log with repeats).")
@click.option("--select-metric", default=None, help=f"Metric that picks the best tuned baseline on validation users: {METRIC_NAMES_TEXT} (default: the run's reward, else ndcg@10).")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, help="Transfer: evaluate the run's policy on this other prepared dataset (its own tuned rules are the reference; needs --out; refused when the encoder or the action table does not match).")
@click.option("--sequence", "sequence_runs", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="A tracker run folder (`interestgym train-sequence`) to list as a row of kind sequence (its best model, the one early stopping kept, whatever --model says), on the same users and candidates; repeat for several.")
@click.option("--policy", "policy_specs", multiple=True, metavar="FILE.py:NAME", help="Your own update rule, a row of kind custom on the same users and candidates, compared with the best tuned baseline: NAME in FILE.py is a policy object (name, act(observations) -> actions in [-1, 1], optional scoring) evaluated as it is, or a class with a `grid` dict ({param: [values]}) tuned on the baselines' validation users. Repeat for several. README: \"Your own update rule\".")
@ray_option
@click.option("--n-boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where evaluation.json / .md go (default: the run directory; required for a dataset).")
@click.option("--baselines", default="all", show_default=True, help="Comma-separated baseline names, or 'all'.")
@click.option("--reference", default="best", show_default=True, help="Baseline the paired differences are taken against: 'best' (best tuned on validation users) or a name.")
@click.option("--progress/--no-progress", default=None, help="Progress bars on a terminal, plain log lines otherwise (the default); --no-progress: none.")
@click.option("--chunk-users", type=click.IntRange(min=1), default=None, help="Users replayed per chunk (default 5000): memory holds one chunk's replay arrays, not the split's; the results do not depend on it.")
def evaluate(run_or_dataset: Path, split: str, which_model: str, out: Path | None, progress: bool | None,
             policy_specs: tuple[str, ...], **options) -> None:
    """Compare a trained policy (RUN dir) and every baseline on held-out users.

    \b
    Tunes the tunable baselines on validation users (grid search), runs every policy on the SAME
    users and candidates of --split, and prints the protocol and a table of AUC, MRR, nDCG@5/10,
    precision / recall / F1 / hit@10 (mean over users, bootstrap 95% CIs), the paired difference of
    each policy against the best tuned baseline, and on synthetic data the tracking error and
    fraction of the oracle. Writes evaluation.json and evaluation.md.
    --policy FILE.py:NAME adds your own rule (tuned over its `grid` on the same validation users).
    """
    from interestgym.evaluation.custom import load_policy_spec, raised_in
    from interestgym.evaluation.run import evaluate_run

    extra = [load_policy_spec(spec) for spec in policy_specs]  # a bad FILE.py:NAME is said before any tuning
    # --progress keeps the default (None: a bar on a terminal, log lines otherwise); --no-progress silences them
    try:
        text = evaluate_run(run_or_dataset, split=split, which_model=which_model, out=out,
                            progress=False if progress is False else None, extra_policies=extra, **options)
    except InterestGymError:
        raise
    except Exception as exc:  # the user's own act() failing: one line with its file and line, not interestgym's frames
        if (said := raised_in(exc, policy_specs)) is None:
            raise
        raise said from None
    click.echo(text)
