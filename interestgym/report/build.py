"""The report stage: figures and a short Markdown + HTML summary of a training run (``RUN/report/``).

:func:`build_report` (what ``interestgym report RUN`` runs) reads what the earlier stages wrote and
replays a few test users with the trained policy; it writes, atomically::

    RUN/report/learning_curves.png     training reward, validation metric (vs the reference rule),
                                       update rate and mean update strengths over training steps
                                       (the run's TensorBoard event files, tags of
                                       :mod:`interestgym.agents.callbacks`)
    RUN/report/policies.png            every policy's metric with its bootstrap 95% CI, and the paired
                                       difference against the reference rule (evaluation.json)
    RUN/report/timeline_<user>.png     one test user: the true interest over topics (synthetic data,
                                       truth.npy) or the recent clicked categories (real data), the
                                       topic / category mix the policy's profile implies, and the
                                       policy's update strengths a_L, a_S and mixing weight w per event
    RUN/report/actions.png             the policy's actions against the features that drive them
                                       (a_L vs cos(x, L), a_S vs cos(x, S), w vs the short-vs-long
                                       signal) and the distribution of the actions, on test users
    RUN/report/components.png          a learned policy's every action component (p, the keep factor,
                                       the count gain, the context rate, the tracker weight included)
                                       against the feature that drives it, per user type on synthetic
                                       data, with the reference rule's mean
    RUN/report/report.md, report.html  the summary: protocol, results table, verdict, the figures

The HTML embeds the figures (base64 ``data:`` URIs), so ``report.html`` alone is the whole report.

Every number of the summary's table comes from ``evaluation.json`` (written by ``interestgym
evaluate``); the figures of the policy's behaviour come from replaying the evaluated split with the
evaluated model (``best`` or ``final``, as recorded in evaluation.json).

This module only orchestrates: reading (:mod:`~interestgym.report.scalars`), the tables
(:mod:`~interestgym.report.tables`), the replay (:mod:`~interestgym.report.timelines`), the figures
(:mod:`~interestgym.report.figures`) and the summary (:mod:`~interestgym.report.render`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.agents.run_folder import (
    EVALUATION_FILE,
    INFO_FILE,
    MODEL_CHOICES,
    MODEL_FILE,
    REPORT_DIR,
    SHIPPED_FILE,
    evaluated_policy,
    has_policy,
    model_identity,
    read_evaluation,
    read_json_or_none,
    read_run_config,
    read_shipped,
    shipped_choice,
)
from interestgym.core.rules import params_text
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import make_out_dir, write_text_atomic
from interestgym.report.figures import (
    can_render,
    plot_actions,
    plot_components,
    plot_learning_curves,
    plot_policies,
    plot_timeline,
)
from interestgym.report.render import Page, _html, _markdown
from interestgym.report.scalars import read_scalars
from interestgym.report.tables import results_rows
from interestgym.report.timelines import (
    CATEGORY_EMA_RATE,
    UserTimeline,
    _running_one_hot,
    choose_timeline_users,
    replay_timelines,
)

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
#: The figures a report writes besides the timelines (``timeline_<user>.png``).
FIGURE_FILES = ("learning_curves.png", "policies.png", "actions.png", "components.png")


@dataclass
class ReportResult:
    """What :func:`build_report` wrote.

    :param out: the report directory.
    :param figures: figure name -> PNG path, in the order they appear in the summary.
    :param markdown: ``report.md``.
    :param html: ``report.html``.
    :param table: the results table rows (see :func:`results_rows`).
    :param skipped: what could not be drawn, each with the reason (also written in the summary).
    """

    out: Path
    figures: dict[str, Path]
    markdown: Path
    html: Path
    table: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def decision_user_types(dataset: Any, res: Any) -> np.ndarray | None:
    """The synthetic user type of every recorded decision (None on data without types)."""
    if "user_type" not in dataset.events.columns:
        return None
    types = dataset.events.drop_duplicates("user_id").set_index("user_id")["user_type"].astype(str)
    return types.reindex(res.decisions["user_id"].astype(str)).to_numpy()


def differences_from_rule(policy: Any, reference: Any, res: Any, dataset: Any) -> list[str]:
    """What the learned policy does differently from its reference rule, in sentences: each action
    component's mean on the same decisions (:func:`action_components`), overall and, on synthetic data,
    per user type."""
    columns, notes = action_components(policy, reference, res)

    def sentence(mask: np.ndarray) -> str:
        return ", ".join(f"{n} {a[mask].mean():.3f} vs {b[mask].mean():.3f} ({a[mask].mean() - b[mask].mean():+.3f})"
                         for n, (a, b) in columns.items())

    everyone = np.ones(len(res.features), dtype=bool)
    lines = [(f"What the policy does differently from its reference rule `{reference.name}` (mean over the same "
              f"{len(res.features):,} decisions, policy vs rule): {sentence(everyone)}.")]
    params = params_text(getattr(reference, "params", {}))
    lines.append(f"The reference rule: `{reference.name}`" + (f" with {params}." if params else "."))
    p = columns.get("p")
    if p is not None and len(p[1]) and bool(np.all(p[1] == 1.0)):
        # say it: a rule at p = 1 ranks by popularity and its other terms alone, whatever its profiles hold
        lines.append(f"The rule's score gives the profiles no weight (p = 1: popularity and its other terms rank alone), so "
                     f"its a_L, a_S and w change nothing in its ranking; the policy gives them {1 - p[0].mean():.3f} of the "
                     f"profile-vs-popularity mix on average (p {p[0].mean():.3f}).")
    lines += notes
    user_type = decision_user_types(dataset, res)
    if user_type is not None:
        for t in sorted(set(user_type)):
            lines.append(f"  {t} users: {sentence(user_type == t)}.")
    return lines


def action_components(policy: Any, reference: Any, res: Any) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Every action component of the policy and of its reference rule on the same decisions (the rule
    acting on the policy's own observations): name -> (policy's, rule's), as the engine applies them,
    and sentences on how the levers follow their signals. The keep factor is the category counts' (a
    residual policy's fifth component changes it); the count gain is what each event adds to its
    category's count; the context rate the time-slot profile's update rate; the slot weight the per-slot
    category counts' lambda; the tracker weight its term's."""
    from interestgym.core.protocol import action_to_strengths
    from interestgym.core.transition import (
        action_changes,
        apply_keep_change,
        apply_rate_change,
        apply_slot_change,
        apply_tracker_change,
        category_forgetting_factor,
    )

    obs = res.features
    ours_actions = np.asarray(policy.act(obs), dtype=np.float64)
    ours = action_to_strengths(ours_actions[:, :4])
    their_actions = np.asarray(reference.act(obs), dtype=np.float64)
    theirs = action_to_strengths(their_actions[:, :4])
    names = ["a_L", "a_S", "w", "p"]
    columns = {n: (ours[:, j], theirs[:, j]) for j, n in enumerate(names)}
    changes = action_changes(ours_actions)  # as the engine reads them
    if reference.scoring.beta_cat != 0:
        fixed = reference.scoring.category_forgetting
        base_ours, base_theirs = category_forgetting_factor(fixed, ours), category_forgetting_factor(fixed, theirs)
        columns["keep"] = (apply_keep_change(base_ours, changes.keep), base_theirs)
    tracker_note = gain_note = None
    components = getattr(policy, "names", ())
    if "gain_change" in components:  # what each event adds to its category's count
        gain = changes.gain
        their_gain = action_changes(their_actions).gain  # the rule's own (value gain), else +1 per event
        their_gain = np.ones(len(obs)) if their_gain is None else their_gain
        columns["count gain"] = (gain, their_gain)
        value = obs[:, list(res.feature_names).index("feedback_value")]
        low, high = np.quantile(value, [1 / 3, 2 / 3]) if len(obs) >= 3 else (0.0, 0.0)
        if high > low:
            theirs_text = ("the reference adds 1 for every event" if np.all(their_gain == 1.0) else
                           f"the reference's own value gain: {their_gain[value <= low].mean():.3f} and "
                           f"{their_gain[value >= high].mean():.3f}")
            gain_note = (f"The count gain averages {gain[value <= low].mean():.3f} for the events with the lowest feedback value "
                         f"(bottom third of feedback_value: e.g. the shortest reads) and {gain[value >= high].mean():.3f} for the "
                         f"highest (top third); {theirs_text}.")
    if "context_change" in components:  # the time-slot profile's update rate
        rate = float(reference.scoring.context_rate)
        columns["context rate"] = (apply_rate_change(np.full(len(obs), rate), changes.context), np.full(len(obs), rate))
    slot_note = None
    if "slot_change" in components:  # the per-slot category counts' weight in the scoring after the decision
        lam = np.full(len(obs), float(reference.scoring.category_slot_weight))
        weight = apply_slot_change(lam, changes.slot)
        columns["slot weight"] = (weight, lam)
        hour_cos = obs[:, list(res.feature_names).index("hour_cos")]
        low, high = np.quantile(hour_cos, [1 / 3, 2 / 3]) if len(obs) >= 3 else (0.0, 0.0)
        if high > low:
            slot_note = (f"The weight of the time-of-day category counts averages {weight[hour_cos <= low].mean():.3f} for "
                         f"decisions nearest midday (bottom third of hour_cos) and {weight[hour_cos >= high].mean():.3f} for "
                         f"those nearest midnight (top third); the reference keeps {lam[0]:g}.")
    if changes.tracker is not None and (not components or "tracker_change" in components):
        # the tracker's weight, moved by its component (as the engine moves it)
        base = np.full(len(obs), float(reference.scoring.tracker_weight))
        weight = apply_tracker_change(base, changes.tracker)
        columns["tracker weight"] = (weight, base)
        names_seen = list(res.feature_names)
        if "tracker_metric_ema" in names_seen and len(obs) >= 3:
            ema = obs[:, names_seen.index("tracker_metric_ema")]
            low, high = np.quantile(ema, [1 / 3, 2 / 3])
            tracker_note = (f"The tracker weight averages {weight[ema >= high].mean():.3f} where the tracker has ranked well for "
                            f"the user lately (top third of tracker_metric_ema) and {weight[ema <= low].mean():.3f} where it "
                            f"has ranked badly (bottom third); the reference keeps {base[0]:g}.")

    return columns, [note for note in (tracker_note, gain_note, slot_note) if note]


def evaluation_mismatches(run_dir: Path, conf: dict[str, Any], header: dict[str, Any], evaluation_file: Path, which: str,
                          split: str) -> list[str]:
    """Sentences on where the summarised evaluation is not of what the figures show: another run, another
    dataset (a transfer evaluation), another model or split; and a caution when it is of the validation users."""
    out = []
    c = conf.get("config", {})
    ran = header.get("run")
    if ran and not _same_path(ran, run_dir):
        seeds = (f" (train seed {header.get('train_seed')}; this run's is {c.get('seed')})"
                 if header.get("train_seed") != c.get("seed") else "")
        out.append(f"`{evaluation_file}` evaluated the run `{ran}`, not `{run_dir}`{seeds}: the Results table is that run's; "
                   "the other sections are this run's.")
    data = header.get("data")
    if data and c.get("dataset") and not _same_path(data, c["dataset"]):
        how = " (evaluated with `--dataset`)" if not ran or _same_path(ran, run_dir) else ""
        out.append(f"The Results table is on `{data}`{how}; the learning curves and the behaviour "
                   f"figures are of the run's own dataset `{c['dataset']}`.")
    if header.get("model") and header["model"] != which:
        out.append(f"The figures show the run's **{which}** model; the Results table evaluated its **{header['model']}** model.")
    elif header.get("model") == "shipped" and (not ran or _same_path(ran, run_dir)) and \
            (then := evaluated_policy(header, run_dir)) != (now_ships := shipped_choice(read_shipped(run_dir) or {}, run_dir)):
        words = {"rule": "its reference rule", "best": "its best model", "final": "its final model"}
        out.append(f"The Results table evaluated what the run shipped then, {words.get(then, then)}; it now ships "
                   f"{words.get(now_ships, now_ships)} (trained further since), which the figures show: "
                   f"`interestgym evaluate {run_dir}` again for its table.")
    elif isinstance(header.get("model_identity"), dict) and (not ran or _same_path(ran, run_dir)):
        recorded, now = header["model_identity"], model_identity(run_dir, header["model"]) or {}
        if now.get("sha256") and recorded.get("sha256") != now.get("sha256"):
            out.append(f"The Results table evaluated the {recorded.get('model')} model of step {recorded.get('step')}; the run "
                       f"has trained further since (step {now.get('step')}), and the figures show that model: "
                       f"`interestgym evaluate {run_dir}` again for its table.")
    if header.get("split") and header["split"] != split:
        out.append(f"The figures replay {split} users; the Results table is of {header['split']} users.")
    return out


def shipping_lines(run_dir: Path) -> list[str]:
    """What the run ships and why, from ``shipped.json`` (for a report without an evaluation to say it)."""
    try:
        decision = read_shipped(run_dir)
    except ArtifactError as exc:
        return [f"What the run ships cannot be read: {exc}"]
    if decision is None:
        return []
    rule = (decision.get("rule") or {}).get("name", "?")
    what = f"its learned model (`{decision.get('model') or 'best'}`)" if decision["policy"] == "learned" else f"its reference rule `{rule}`"
    return [f"The run ships {what}: {decision.get('reason') or 'no reason recorded'} (`{run_dir / SHIPPED_FILE}`)."]


def log_cut_short(run_dir: Path, scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> str | None:
    """A sentence when the TensorBoard log ends well before the steps the run trained (a damaged or
    truncated event file: the reader stops at the first bad record), None otherwise."""
    infos = (read_json_or_none(run_dir / folder / INFO_FILE) for folder in MODEL_CHOICES)
    trained = [info["step"] for info in infos if isinstance(info, dict) and isinstance(info.get("step"), int)]
    last = max((int(v[0].max()) for v in scalars.values() if len(v[0])), default=0)
    if not trained or last >= max(trained):
        return None
    # a rollout's point is written when it ends: a log may end up to one rollout before the last model was saved
    reward_steps = scalars.get("charts/mean_reward", (np.zeros(0),))[0]
    rollout = int(np.diff(reward_steps).max()) if len(reward_steps) > 1 else 0
    if max(trained) - last <= rollout:
        return None
    return (f"the log ends at step {last:,}, but the run's models were saved at step {max(trained):,} (a damaged or "
            "truncated event file?): the curves stop there, and their best point is the best before it")


def _same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def _remove_stale_figures(out_dir: Path, written: dict[str, Path]) -> None:
    """Figures an earlier report wrote into ``out_dir`` that this one did not (other timeline users, a
    components figure no longer drawn): removed, so the folder holds this report's figures only."""
    keep = {p.resolve() for p in written.values()}
    for name in (*FIGURE_FILES, "timeline_*.png"):
        for path in out_dir.glob(name):
            if path.resolve() not in keep:
                path.unlink(missing_ok=True)


def profile_share_note(popularity_weight: np.ndarray, below: float = 0.2) -> str | None:
    """A sentence for the timelines when the profiles carry less than ``below`` of the policy's score on average
    (1 - p): their middle panel shows the profiles' mix, which then says little of how the policy ranks."""
    share = 1.0 - float(np.mean(popularity_weight)) if len(popularity_weight) else 1.0
    if share >= below:
        return None
    return (f"The timelines' middle panel is the mix the profiles imply; this policy gives the profiles {share:.0%} of its "
            "score on average (1 - p), the rest goes to popularity and its other terms (the category counts), which the "
            "panel does not show.")


def _safe_name(user_id: str) -> str:
    """A file-name part for ``user_id``: the id itself when it is plain ASCII (letters, digits, ``._-``) of at most
    60 characters; otherwise what is left of it plus a hash of the whole id, so that two ids never share a file
    (``用户026`` and ``读者026`` would both be ``_026``)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", user_id)
    if safe == user_id and 0 < len(safe) <= 60:
        return safe
    return f"{safe[:48] or 'user'}-{zlib.crc32(user_id.encode('utf-8')):08x}"


# --------------------------------------------------------------------------------------- the report
def build_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    timeline_users: int = 3,
    users: Sequence[str] | None = None,
    which_model: str | None = None,
    split: str | None = None,
    evaluation_path: str | Path | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> ReportResult:
    """Write the figures and the Markdown / HTML summary of a training run into ``out`` (``RUN/report``).

    :param run_dir: a run directory of ``interestgym train`` (evaluated by ``interestgym evaluate``).
    :param out: the report directory (default ``RUN/report``).
    :param timeline_users: how many users get a timeline figure (0: none).
    :param users: these user ids instead of the automatic choice (:func:`choose_timeline_users`).
    :param which_model: ``shipped`` / ``best`` / ``final`` (default: the model evaluation.json evaluated, else what the run
        ships, else best).
    :param split: users to replay for timelines and actions (default: evaluation.json's split, else test).
    :param evaluation_path: the evaluation.json to summarise (default ``RUN/evaluation.json``; give it
        when ``interestgym evaluate`` wrote elsewhere with ``--out``).
    :param progress: progress bars of the replays (None: only on a terminal).
    :param log: where one-line notes go (None: silent).
    :raises ArtifactError: when ``run_dir`` is not a training run.
    """
    say = log or (lambda message: None)
    run_dir = Path(run_dir)
    conf = read_run_config(run_dir)
    out_dir = make_out_dir(Path(out) if out is not None else run_dir / REPORT_DIR)
    if evaluation_path is not None and not Path(evaluation_path).is_file():
        raise ArtifactError(f"{evaluation_path}: no such evaluation file (written by `interestgym evaluate`)")
    evaluation = read_evaluation(run_dir, evaluation_path)
    evaluation_file = Path(evaluation_path) if evaluation_path is not None else run_dir / EVALUATION_FILE
    header = (evaluation or {}).get("header", {})
    # what the evaluation evaluated, else what the run ships (as evaluate does), else its best model
    which = which_model or header.get("model") or ("shipped" if has_policy(run_dir, "shipped") else "best")
    split = split or header.get("split") or "test"
    metric = header.get("selection_metric") or conf.get("config", {}).get("reward", "ndcg@10")
    figures: dict[str, Path] = {}
    skipped: list[str] = []
    notes: list[str] = evaluation_mismatches(run_dir, conf, header, evaluation_file, which, split) if evaluation else []
    for note in notes:  # said now too, not only at the end of report.md: the Results table is not what it seems
        say(f"note: {note}")
    if evaluation is None:
        notes += shipping_lines(run_dir)

    # 1. learning curves (TensorBoard)
    tb_dir = run_dir / "tb"
    if tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*")):
        scalars = read_scalars(tb_dir)
        short = log_cut_short(run_dir, scalars)
        if short:
            notes.append(f"learning curves: {tb_dir}: {short}")
        try:
            reference = conf.get("reference") or {}
            reward = conf.get("config", {}).get("reward", metric)
            label = f"{reward} minus {reference['name']}'s" if reference.get("name") else reward
            figures["learning_curves"] = plot_learning_curves(scalars, metric, out_dir / "learning_curves.png",
                                                              title=f"Training of {run_dir.name}", reward_label=label)
        except ArtifactError as exc:
            skipped.append(f"learning curves: {tb_dir}: {exc}")
    else:
        skipped.append(f"learning curves: {tb_dir} holds no TensorBoard event file")

    # 2. policy vs baselines (evaluation.json)
    if evaluation is not None:
        figures["policies"] = plot_policies(evaluation, out_dir / "policies.png")
    else:
        skipped.append(f"policy vs baselines and the results table: {run_dir / EVALUATION_FILE} is missing "
                       f"(run `interestgym evaluate {run_dir}` first)")

    # 3 + 4. the policy's behaviour: replay the split with the evaluated model
    timeline_figs: list[tuple[str, str, Path]] = []
    n_left_out = 0
    if not has_policy(run_dir, which):
        skipped.append(f"timelines and actions: the run has no {which} policy "
                       f"({run_dir / SHIPPED_FILE if which == 'shipped' else run_dir / which / MODEL_FILE} is missing)")
    else:
        try:
            timeline_figs, n_left_out = _behaviour_figures(run_dir, conf, evaluation, which, split, out_dir, figures,
                                                           skipped, notes, timeline_users, users, progress, say)
        except ArtifactError as exc:  # e.g. the shipped model's folder is gone: the rest of the report still holds
            skipped.append(f"timelines and actions: the {which} policy cannot be loaded ({exc})")

        if n_left_out:
            notes.append(f"actions.png: {n_left_out:,} first decisions of users (empty long-term profile, so no cosine yet) "
                         "are left out of the scatter panels; the histograms include them")

    page = Page(run_dir=run_dir, conf=conf, evaluation=evaluation, evaluation_file=evaluation_file, which=which, split=split,
                figures=figures, timelines=timeline_figs, skipped=skipped, notes=notes)
    md_path = out_dir / MARKDOWN_FILE
    write_text_atomic(md_path, _markdown(page, out_dir))
    html_path = out_dir / HTML_FILE
    write_text_atomic(html_path, _html(page))
    _remove_stale_figures(out_dir, figures)
    for note in skipped:
        say(f"report: not drawn: {note}")
    return ReportResult(out=out_dir, figures=figures, markdown=md_path, html=html_path,
                        table=results_rows(evaluation) if evaluation is not None else [], skipped=skipped, notes=notes)


def _behaviour_figures(run_dir: Path, conf: dict[str, Any], evaluation: dict[str, Any] | None, which: str, split: str,
                       out_dir: Path, figures: dict[str, Path], skipped: list[str], notes: list[str], n_timeline: int,
                       users: Sequence[str] | None, progress: bool | None,
                       say: Callable[[str], None]) -> tuple[list[tuple[str, str, Path]], int]:
    import torch

    from interestgym.agents.run_folder import (
        check_run_dataset,
        check_run_embedding,
        check_run_tracker,
        load_run_choice,
        run_reference,
        run_train_config,
    )
    from interestgym.data.dataset import Dataset
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
    from interestgym.envs.vector import evaluate_policy

    torch.set_num_threads(1)  # tiny MLP inference: one thread is fastest (see TrainConfig.torch_threads)
    config = run_train_config(run_dir, conf)
    check_run_tracker(run_dir, conf, config)
    # The evaluated protocol (embeddings, negatives, seed) wins over the run's, so the figures show
    # the same replay as the table.
    proto = (evaluation or {}).get("protocol", {})
    # what evaluate checks before it replays: the run's embedding as trained, its dataset's split as trained (a split made
    # again may put the policy's training users in the test split); a dataset whose events changed is said
    try:
        if (proto.get("embeddings") or config.embeddings) == config.embeddings:
            check_run_embedding(run_dir, conf, config)
        if (note := check_run_dataset(run_dir, conf, config)) is not None:
            notes.append(f"timelines and actions: {note}")
    except InterestGymError as exc:  # the run's dataset split again, its embedding re-encoded: the rest is still drawn
        skipped.append(f"timelines and actions: not replayed ({exc})")
        return [], 0
    base = config.protocol_spec(split)
    spec = ProtocolSpec(split=split, n_negatives=int(proto.get("n_negatives", base.n_negatives)),
                        negatives=str(proto.get("negatives", base.negatives)), exclude=str(proto.get("exclude", base.exclude)),
                        seed=int(proto.get("seed", base.seed)),
                        # describe() leaves K = 0 out: an evaluated protocol without the key had none
                        history_negatives=int(proto.get("history_negatives", 0) if proto else base.history_negatives))
    dataset = Dataset.open(config.dataset)
    # with the run's tracker and extra observations, as train and evaluate replay it
    data = config.attach_extras(load_replay_data(dataset, proto.get("embeddings") or config.embeddings, spec))
    if data.n_users == 0:
        skipped.append(f"timelines and actions: split {split!r} of {config.dataset} has no user with a decision")
        return [], 0
    policy = load_run_choice(run_dir, which, device="cpu")

    # Actions vs features: every decision of the split.
    res = evaluate_policy(data, policy, metric=config.reward, record_features=True, progress=progress)
    figures["actions"], n_left_out = plot_actions(
        res.decisions, res.features, res.feature_names, out_dir / "actions.png",
        title=f"The {which} policy's actions against the features that drive them ({split} users)")
    reference = run_reference(conf, run_dir)
    shipped_rule = str(getattr(policy, "name", "")).startswith("shipped:")
    if shipped_rule:
        notes.append(f"The run ships its reference rule `{reference.name if reference else '?'}` (its learned model was not "
                     f"proven on validation users): the figures show the rule; `interestgym report {run_dir} --model best` "
                     "shows what the learned model does.")
    if reference is not None and not shipped_rule and getattr(policy, "name", "") != reference.name and len(res.features):
        notes.extend(differences_from_rule(policy, reference, res, dataset))
        columns, _ = action_components(policy, reference, res)
        figures["components"] = plot_components(
            columns, res.features, res.feature_names, out_dir / "components.png", decision_user_types(dataset, res),
            title=f"The {which} policy's action components against the features that drive them ({split} users)")

    # Timelines: topics (synthetic truth) or categories (real data).
    timeline_figs: list[tuple[str, str, Path]] = []
    if n_timeline <= 0 and not users:
        return timeline_figs, n_left_out
    truth = dataset.truth
    topic_names: list[str]
    topic_of_item: np.ndarray
    synthetic = dataset.manifest.get("synthetic", {})
    user_types: dict[str, str] | None = None
    if truth is not None and synthetic.get("topics") and "true_topic" in dataset.items.columns:
        keys = list(synthetic["topics"])
        index = {t: i for i, t in enumerate(keys)}
        topic_of_item = np.array([index.get(str(t), -1) for t in dataset.items["true_topic"]], dtype=np.int64)
        topic_names = list(synthetic.get("topic_names") or keys)
        if not can_render(topic_names):
            topic_names = keys  # e.g. Chinese titles without a CJK font: the English topic keys are the same topics
        if truth.shape[1] != len(keys) or (topic_of_item < 0).any():
            truth = None
        users_file = dataset.path / str(synthetic.get("users_file", ""))
        if users_file.is_file() and users_file.suffix == ".parquet":
            import pandas as pd

            ut = pd.read_parquet(users_file)
            if {"user_id", "user_type"} <= set(ut.columns):
                user_types = dict(zip(ut["user_id"].astype(str), ut["user_type"].astype(str)))
    else:
        truth = None
    if truth is None:
        topic_of_item = np.asarray(data.item_category, dtype=np.int64)
        topic_names = [str(c) if str(c) else "(none)" for c in data.category_names]
        if not can_render(topic_names):
            # No installed font draws these names (e.g. Chinese without a CJK font): number them in the
            # figures and list the numbers in the summary, which a browser renders.
            notes.append("category names need a font that is not installed (e.g. `apt install fonts-noto-cjk`); the "
                         "timelines number them: " + ", ".join(f"#{i} = {n}" for i, n in enumerate(topic_names)))
            topic_names = [f"#{i}" for i in range(len(topic_names))]
    n_topics = len(topic_names)

    if users:
        known = {str(u) for u in data.user_ids}
        missing = [u for u in users if str(u) not in known]
        if missing:
            home = dataset.users.loc[dataset.users["user_id"].astype(str) == str(missing[0]), "split"].astype(str).tolist()
            hint = f"; that user is in split {home[0]!r} (give --split {home[0]})" if home and home[0] != split else ""
            raise InterestGymError(f"--user {missing[0]}: no decision in split {split!r} of {config.dataset}{hint}; "
                                   f"expected one of its {data.n_users} users (e.g. {', '.join(map(str, data.user_ids[:3]))})")
        chosen = [(str(u), (user_types or {}).get(str(u), "") and f"{user_types[str(u)]} user") for u in users]
    else:
        chosen = choose_timeline_users(data, n_timeline, user_types)
    replays = replay_timelines(data, policy, [u for u, _ in chosen], topic_of_item, n_topics, metric=config.reward)
    for (uid, label), (_, decisions, strengths, mix, step_metric) in zip(chosen, replays):
        clicked = topic_of_item[data.decision_item[decisions]]
        if truth is not None:
            observed, kind = truth[data.decision_event_row[decisions]].astype(np.float64), "truth"
        else:
            observed, kind = _running_one_hot(clicked, n_topics, CATEGORY_EMA_RATE), "categories"
        tl = UserTimeline(user_id=uid, label=label, topic_names=topic_names, observed=observed, observed_kind=kind,
                          implied=mix, strengths=strengths, ts=data.decision_ts[decisions], clicked=clicked,
                          step_metric=step_metric)
        path = plot_timeline(tl, out_dir / f"timeline_{_safe_name(uid)}.png")
        figures[f"timeline_{uid}"] = path
        timeline_figs.append((uid, label, path))
    note = profile_share_note(res.decisions["popularity_weight"].to_numpy()) if timeline_figs else None
    if note:
        notes.append(note)
    say(f"report: replayed {data.n_users} {split} users ({data.n_decisions:,} decisions; {len(data.scored_user_ids):,} of the users with a "
        f"scoring point, {data.n_points:,} points) with " + (f"the shipped rule `{getattr(policy, 'name', '').removeprefix('shipped:')}`"
                                                              if shipped_rule else f"the {which} model"))
    return timeline_figs, n_left_out

