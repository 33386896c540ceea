"""``interestgym report``: figures and a Markdown + HTML summary of a training run.

Heavy imports (matplotlib, torch, stable-baselines3) happen inside the command, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default: RUN_DIR/report).")
@click.option("--model", "which_model", type=click.Choice(["shipped", "best", "final"]), default=None,
              help="Model whose behaviour the figures replay (default: the one evaluation.json evaluated, else what the run ships).")
@click.option("--split", type=click.Choice(["test", "valid", "train"]), default=None,
              help="Users replayed for the timelines and the actions figure (default: evaluation.json's split, else test).")
@click.option("--timeline-users", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many users get a timeline figure (chosen automatically; 0: none).")
@click.option("--evaluation", "evaluation_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The evaluation.json to summarise (default: RUN_DIR/evaluation.json).")
@click.option("--user", "users", multiple=True, metavar="USER_ID",
              help="Draw the timeline of this user instead (repeat for several).")
def report(run_dir: Path, out: Path | None, which_model: str | None, split: str | None, timeline_users: int,
           users: tuple[str, ...], evaluation_path: Path | None) -> None:
    """Figures and a short summary of RUN_DIR (a run of `interestgym train`, evaluated by `interestgym evaluate`).

    \b
    Writes into RUN_DIR/report (or --out), every file atomically:
      learning_curves.png   training reward, validation metric vs the reference rule, update rate
                            and mean actions over training steps (from the TensorBoard logs)
      policies.png          every policy's metric with its bootstrap 95% CI and the paired
                            difference to the best tuned rule (from evaluation.json)
      timeline_<user>.png   a few test users: true interest (synthetic) or clicked categories,
                            the mix the policy's profile implies, and its actions at every event
      actions.png           the policy's actions against cos(x, L), cos(x, S) and the short-vs-long
                            signal, and the distribution of the actions
      components.png        a learned policy's every action component (p, keep factor, count gain,
                            context rate, tracker weight) against its driver, per user type, vs the rule
      report.md, report.html  protocol, results table (numbers from evaluation.json), verdict, figures
    Example:
      interestgym evaluate runs/syn && interestgym report runs/syn
    """
    from interestgym.agents.run_folder import read_evaluation
    from interestgym.report.build import build_report
    from interestgym.report.tables import results_table

    result = build_report(run_dir, out=out, timeline_users=timeline_users, users=list(users) or None,
                          which_model=which_model, split=split, evaluation_path=evaluation_path,
                          log=lambda m: click.echo(m, err=True))
    evaluation = read_evaluation(run_dir, evaluation_path)
    if evaluation is not None:
        click.echo(results_table(evaluation))
        click.echo("")
    for path in result.figures.values():
        click.echo(f"  {path}")
    click.echo(f"summary: {result.markdown}  and  {result.html}")
    if result.skipped:
        click.echo(f"{len(result.skipped)} item(s) not drawn (see the summary's 'Not drawn' section):")
        for note in result.skipped:
            click.echo(f"  - {note}")
