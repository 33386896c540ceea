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
    RUN/report/report.md, report.html  the summary: protocol, results table, verdict, the figures

Every number of the summary's table comes from ``evaluation.json`` (written by ``interestgym
evaluate``); the figures of the policy's behaviour come from replaying the evaluated split with the
evaluated model (``best`` or ``final``, as recorded in evaluation.json).

**Implied topic mix.** A profile direction u (the scoring direction ``normalise(w S + (1 - w) L)``)
implies the mix ``v_k = max(0, cos(u, c_k)) / sum_j max(0, cos(u, c_j))`` over topics (categories),
with c_k the normalised mean embedding of the items of topic k: the quantity whose distance to the
true interest is ``interestgym evaluate``'s tracking error (:mod:`interestgym.evaluation.run`).

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the non-interactive Agg
canvas: no pyplot, no display and no global figure registry (nothing leaks across many reports).
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.agents.run_folder import EVALUATION_FILE, EVALUATION_MARKDOWN, REPORT_DIR, read_evaluation, read_run_config
from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import write_bytes_atomic, write_text_atomic

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
#: Synthetic user types shown first in the timelines (the ones where the update decision matters most).
TIMELINE_TYPE_ORDER = ("switcher", "drifting", "bursty", "context", "noisy", "stable")
#: Topics / categories drawn individually in a timeline; the rest are summed into "other".
TIMELINE_TOP_TOPICS = 8
#: Rate of the running mean of clicked categories drawn for real data (same as the features' EMA_RATE).
CATEGORY_EMA_RATE = 0.2
#: Columns of the results table besides the selection metric: (metric, header).
SIDE_METRICS = (("auc", "AUC"), ("mrr", "MRR"))

KIND_COLOURS = {"learned": "#d62728", "reference": "#1f4e9c", "baseline": "#8fb3de", "oracle": "#7f7f7f"}
ACTION_COLOURS = {"long_strength": "#1f77b4", "short_strength": "#ff7f0e", "short_weight": "#2ca02c"}
ACTION_LABELS = {"long_strength": "a_L (long-term strength)", "short_strength": "a_S (short-term strength)",
                 "short_weight": "w (short-term weight in the score)"}
_STYLE = {
    "font.size": 10.5, "axes.titlesize": 12, "axes.labelsize": 10.5, "legend.fontsize": 9, "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5, "figure.titlesize": 13.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 110,
}


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


# ------------------------------------------------------------------------------------------ inputs
def read_scalars(tb_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar series of a TensorBoard log directory: ``tag -> (steps, values)``.

    A resumed run appends event files to the same directory; the accumulator reads them in order, and
    a step logged twice (the resumed run repeats the checkpoint's step) keeps its last value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for tag in acc.Tags().get("scalars", []):
        by_step: dict[int, float] = {}
        for event in acc.Scalars(tag):
            by_step[int(event.step)] = float(event.value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out


# ------------------------------------------------------------------------------------ results table
def results_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy of ``evaluation.json``, in its order: what the summary's table shows.

    Keys: ``policy``, ``kind`` (``reference`` for the best tuned rule), ``metric`` (the selection
    metric's mean, ``lo``, ``hi``), ``diff`` / ``diff_lo`` / ``diff_hi`` (paired difference against the
    reference; None for the reference), ``significant`` (the diff's CI excludes 0), the side metrics'
    means, ``oracle_fraction`` (None without an oracle) and ``tracking_error`` (None if not measured).
    """
    summary = evaluation["summary"]
    metric = evaluation["header"].get("selection_metric") or summary["metrics"][0]
    reference = summary.get("reference")
    rows = []
    for name, entry in summary["policies"].items():
        ci = entry["metrics"].get(metric) or {}
        diff = entry.get("diff_vs_reference", {}).get(metric)
        track = entry.get("extra", {}).get("tracking_error")
        frac = entry.get("fraction_of_oracle", {}).get(metric)
        rows.append({
            "policy": name,
            "kind": "reference" if name == reference else entry["kind"],
            "metric": ci.get("mean"), "lo": ci.get("lo"), "hi": ci.get("hi"),
            "diff": None if diff is None else diff["mean"],
            "diff_lo": None if diff is None else diff["lo"],
            "diff_hi": None if diff is None else diff["hi"],
            "significant": bool(diff is not None and (diff["lo"] > 0 or diff["hi"] < 0)),
            **{m: (entry["metrics"].get(m) or {}).get("mean") for m, _ in SIDE_METRICS},
            "oracle_fraction": frac,
            "tracking_error": None if track is None else track.get("mean"),
        })
    return rows


def _num(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def table_cells(evaluation: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text cells) of the results table (shared by Markdown, HTML and quickstart)."""
    metric = evaluation["header"].get("selection_metric") or evaluation["summary"]["metrics"][0]
    reference = evaluation["summary"].get("reference") or "reference"
    rows = results_rows(evaluation)
    has_oracle = any(r["oracle_fraction"] is not None for r in rows)
    has_tracking = any(r["tracking_error"] is not None for r in rows)
    header = ["policy", "kind", metric, "95% CI", f"diff vs {reference}", "diff 95% CI",
              *(label for _, label in SIDE_METRICS)]
    if has_oracle:
        header.append(f"% of oracle {metric}")
    if has_tracking:
        header.append("tracking error")
    cells = []
    for r in rows:
        line = [r["policy"], r["kind"], _num(r["metric"]), f"[{_num(r['lo'])}, {_num(r['hi'])}]",
                "-" if r["diff"] is None else _num(r["diff"], sign=True) + ("*" if r["significant"] else ""),
                "-" if r["diff"] is None else f"[{_num(r['diff_lo'], sign=True)}, {_num(r['diff_hi'], sign=True)}]",
                *(_num(r[m]) for m, _ in SIDE_METRICS)]
        if has_oracle:
            line.append("-" if r["oracle_fraction"] is None else f"{100 * r['oracle_fraction']:.1f}")
        if has_tracking:
            line.append(_num(r["tracking_error"]))
        cells.append(line)
    return header, cells


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded into aligned columns (readable as plain text too)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    numeric = [i >= 2 for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).rjust(w) if num else str(c).ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def results_table(evaluation: dict[str, Any]) -> str:
    """The results table as aligned Markdown (what ``interestgym quickstart`` prints)."""
    return markdown_table(*table_cells(evaluation))


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """Rows of the first Markdown table in ``text`` as ``{header: cell}`` (used to check summaries)."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("|") and i + 1 < len(lines)
                  and re.fullmatch(r"\|[\s:|-]+\|", lines[i + 1])), None)
    if start is None:
        return []
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))))
    return rows


def verdict_lines(evaluation: dict[str, Any]) -> list[str]:
    """Plain-language verdicts of the learned policies against the reference rule."""
    summary = evaluation["summary"]
    metric = evaluation["header"].get("selection_metric") or summary["metrics"][0]
    ref = summary.get("reference")
    out = []
    for name, entry in summary["policies"].items():
        if entry["kind"] != "learned":
            continue
        d = entry.get("diff_vs_reference", {}).get(metric)
        if d is not None and ref:
            verdict = "beats" if d["lo"] > 0 else ("is worse than" if d["hi"] < 0 else "is not distinguishable from")
            out.append(f"`{name}` {verdict} the best tuned rule `{ref}` on {metric}: "
                       f"{d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] (paired bootstrap over users, 95% CI).")
        frac = entry.get("fraction_of_oracle", {}).get(metric)
        if frac is not None:
            out.append(f"`{name}` reaches {100 * frac:.1f}% of the oracle's {metric} (the oracle knows the true interest).")
    return out


def protocol_lines(evaluation: dict[str, Any]) -> list[str]:
    h = evaluation["header"]
    lines = [f"data `{h.get('data')}`, split **{h.get('split')}**: {h.get('users')} users, {h.get('scoring_points')} scoring points",
             f"encoder `{h.get('encoder')}` (dim {h.get('dim')}); candidates: {h.get('candidates')}; protocol seed {h.get('protocol_seed')}"]
    if h.get("run"):
        lines.append(f"policy: the run's **{h.get('model')}** model (deterministic), train seed {h.get('train_seed')}")
    lines.append(f"baselines tuned on {h.get('tuned_on')} by {h.get('selection_metric')}; reference = best tuned rule "
                 f"`{h.get('reference')}`")
    boot = h.get("bootstrap") or {}
    lines.append(f"mean over users; {boot.get('resamples', '?')} bootstrap resamples of users, 95% percentile intervals; "
                 "`*` = the paired CI excludes 0")
    return lines


# ------------------------------------------------------------------------------------------ figures
def _figure(width: float, height: float, **kwargs: Any):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), **kwargs)


def save_figure(fig: Any, path: Path) -> Path:
    """Render with the Agg canvas into memory, then one atomic write (no half-written PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())
    return path


#: Fonts with Chinese glyphs, used as fallbacks when installed (category / topic names of zh data).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Droid Sans Fallback")


def font_families() -> list[str]:
    """DejaVu Sans (matplotlib's own) followed by every installed CJK font (matplotlib falls back per glyph)."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *(f for f in CJK_FONTS if f in installed)]


def can_render(labels: Sequence[str]) -> bool:
    """Whether every character of ``labels`` has a glyph in one of :func:`font_families`."""
    from matplotlib import font_manager, ft2font

    maps = []
    for family in font_families():
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        maps.append(set(ft2font.FT2Font(path).get_charmap()))
    return all(any(ord(ch) in m for m in maps) for label in labels for ch in str(label) if not ch.isspace())


def _style():
    import matplotlib

    return matplotlib.rc_context({**_STYLE, "font.family": "sans-serif", "font.sans-serif": font_families()})


def plot_learning_curves(scalars: dict[str, tuple[np.ndarray, np.ndarray]], metric: str, path: Path,
                         title: str = "Training", reward_label: str = "reward") -> Path:
    """2 x 2 panels: training reward, validation metric (with the reference rule), update rate, strengths.

    :raises ArtifactError: when the log has none of the product's scalars.
    """
    reward = scalars.get("charts/mean_reward")
    valid = scalars.get(f"eval/{metric}")
    if reward is None and valid is None:
        raise ArtifactError(f"no charts/mean_reward or eval/{metric} scalars in the TensorBoard log: "
                            "expected a log written by `interestgym train`")
    with _style():
        fig = _figure(11, 7.2, layout="constrained")
        axes = fig.subplots(2, 2, sharex=True)
        ax = axes[0, 0]
        if reward is not None:
            ax.plot(*reward, color="#444444", lw=1.2, marker="o" if len(reward[0]) < 30 else None, ms=3)
            ax.axhline(0.0, color="#999999", lw=0.8, ls=":")
        ax.set_title("Training reward (mean per decision over a rollout)")
        ax.set_ylabel(reward_label)
        ax = axes[0, 1]
        if valid is not None:
            ax.plot(*valid, color=KIND_COLOURS["learned"], lw=1.8, marker="o", ms=4, label="PPO policy")
            minus = scalars.get(f"eval/{metric}_minus_reference")
            if minus is not None:
                steps = np.intersect1d(valid[0], minus[0])
                ref = valid[1][np.searchsorted(valid[0], steps)] - minus[1][np.searchsorted(minus[0], steps)]
                ax.plot(steps, ref, color=KIND_COLOURS["reference"], lw=1.4, ls="--", label="reference rule")
            best = int(np.argmax(valid[1]))
            ax.scatter([valid[0][best]], [valid[1][best]], s=90, facecolors="none", edgecolors="black", lw=1.5,
                       zorder=5, label=f"best ({valid[1][best]:.4f} at step {valid[0][best]:,})")
            ax.legend(loc="lower right")
        ax.set_title(f"Validation {metric} (held-out users)")
        ax.set_ylabel(metric)
        ax = axes[1, 0]
        rate = scalars.get("charts/update_rate")
        if rate is not None:
            ax.plot(*rate, color="#9467bd", lw=1.5)
            ax.set_ylim(-0.03, 1.03)
        ax.set_title("Update rate (share of decisions with a_L or a_S > threshold)")
        ax.set_ylabel("fraction of decisions")
        ax.set_xlabel("environment steps (decisions)")
        ax = axes[1, 1]
        for key, name in (("charts/mean_a_long", "long_strength"), ("charts/mean_a_short", "short_strength"),
                          ("charts/mean_mix_weight", "short_weight")):
            if key in scalars:
                ax.plot(*scalars[key], color=ACTION_COLOURS[name], lw=1.5, label=ACTION_LABELS[name])
        ax.set_ylim(-0.03, 1.03)
        ax.set_title("Mean action during training")
        ax.set_ylabel("mean value in [0, 1]")
        ax.set_xlabel("environment steps (decisions)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        from matplotlib.ticker import FuncFormatter

        if max((float(v[0].max()) for v in scalars.values() if len(v[0])), default=0.0) >= 10_000:
            for a in axes[1]:
                a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
        fig.suptitle(title)
        return save_figure(fig, path)


def plot_policies(evaluation: dict[str, Any], path: Path) -> Path:
    """The selection metric of every policy with its 95% CI, and the paired difference to the reference."""
    rows = results_rows(evaluation)
    metric = evaluation["header"].get("selection_metric") or evaluation["summary"]["metrics"][0]
    reference = evaluation["summary"].get("reference")
    rows = [r for r in rows if r["metric"] is not None]
    order = sorted(rows, key=lambda r: r["metric"])
    has_diff = any(r["diff"] is not None for r in rows)
    with _style():
        fig = _figure(12 if has_diff else 7, 0.42 * len(order) + 1.8, layout="constrained")
        axes = fig.subplots(1, 2 if has_diff else 1, sharey=True, squeeze=False)[0]
        y = np.arange(len(order))
        names = [r["policy"] for r in order]
        colours = [KIND_COLOURS.get(r["kind"], KIND_COLOURS["baseline"]) for r in order]
        ax = axes[0]
        mean = np.array([r["metric"] for r in order])
        err = np.array([[r["metric"] - r["lo"], r["hi"] - r["metric"]] for r in order]).T
        ax.barh(y, mean, color=colours, height=0.65)
        ax.errorbar(mean, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        for yi, m, hi in zip(y, mean, [r["hi"] for r in order]):
            ax.text(hi, yi, f"  {m:.3f}", va="center", fontsize=8.5)
        ax.set_yticks(y, names)
        ax.set_xlabel(f"{metric}, mean over {evaluation['header'].get('split', 'test')} users")
        ax.set_xlim(0, max(1e-9, float(np.nanmax([r["hi"] for r in order]))) * 1.15)
        ax.set_title(f"{metric} with bootstrap 95% CI")
        ax.grid(axis="y", visible=False)
        from matplotlib.patches import Patch

        kinds = [k for k in ("learned", "reference", "baseline", "oracle") if any(r["kind"] == k for r in order)]
        labels = {"learned": "learned policy", "reference": f"best tuned rule ({reference})", "baseline": "baseline rule",
                  "oracle": "oracle (knows the true interest)"}
        fig.legend(handles=[Patch(color=KIND_COLOURS[k], label=labels[k]) for k in kinds], loc="outside lower center",
                   ncols=len(kinds), frameon=False)
        if has_diff:
            ax = axes[1]
            diff = np.array([np.nan if r["diff"] is None else r["diff"] for r in order])
            lo = np.array([np.nan if r["diff"] is None else r["diff_lo"] for r in order])
            hi = np.array([np.nan if r["diff"] is None else r["diff_hi"] for r in order])
            ok = ~np.isnan(diff)
            ax.axvline(0.0, color="black", lw=1)
            ax.errorbar(diff[ok], y[ok], xerr=np.vstack([diff[ok] - lo[ok], hi[ok] - diff[ok]]), fmt="none",
                        ecolor="#555555", capsize=3, lw=1.2)
            ax.scatter(diff[ok], y[ok], c=[c for c, k in zip(colours, ok) if k], s=45, zorder=3, edgecolors="black", lw=0.5)
            ax.set_xlabel(f"paired difference in {metric} (policy - {reference})")
            ax.set_title("Against the best tuned rule, paired over users")
            ax.grid(axis="y", visible=False)
        h = evaluation["header"]
        fig.suptitle(f"Policy vs baselines: {h.get('split')} split, {h.get('users')} users, {h.get('scoring_points')} scoring points")
        return save_figure(fig, path)


@dataclass
class UserTimeline:
    """One replayed user: per decision, the observed interest, the profile's implied mix and the actions."""

    user_id: str
    label: str
    topic_names: list[str]
    observed: np.ndarray  # (n, T) true interest (synthetic) or running mean of clicked categories
    observed_kind: str
    implied: np.ndarray  # (n, T) the scoring direction's implied topic mix
    strengths: np.ndarray  # (n, 4) a_L, a_S, w, p as applied
    ts: np.ndarray  # (n,) unix seconds
    clicked: np.ndarray  # (n,) topic index of the decision's item
    step_metric: np.ndarray  # (n,) step reward metric (NaN when unscored)


def implied_mix(direction: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``v_k = max(0, cos(u, c_k))``, normalised to sum 1 (zero rows stay zero): see the module docstring."""
    v = np.maximum(np.asarray(direction, np.float64) @ centroids.T, 0.0)
    total = v.sum(axis=1, keepdims=True)
    return np.where(total > 0, v / np.where(total > 0, total, 1.0), 0.0)


def replay_timelines(data: Any, policy: Any, users: Sequence[str], topic_of_item: np.ndarray, n_topics: int,
                     metric: str = "ndcg@10") -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Replay ``users`` through the env's engine with ``policy``; per user (id, decisions, strengths,
    implied mix, step metric), decisions in order.

    :param topic_of_item: (n_items,) topic / category index of every item (the centroids' grouping).
    :param metric: the step metric recorded per decision.
    """
    from interestgym.evaluation.run import topic_centroids
    from interestgym.envs.engine import ReplayEngine

    from interestgym.core.interest import ScoringConfig, normalise_rows

    index = {str(u): i for i, u in enumerate(data.user_ids)}
    rows_users = np.array([index[str(u)] for u in users], dtype=np.int64)
    centroids = topic_centroids(data.embeddings, topic_of_item, n_topics)
    engine = ReplayEngine(data, len(rows_users), metric=metric)
    engine.set_scoring(slice(0, len(rows_users)), getattr(policy, "scoring", None) or ScoringConfig())
    active = np.arange(len(rows_users))
    engine.start(active, rows_users)
    per_row: list[list[tuple[int, np.ndarray, np.ndarray, float]]] = [[] for _ in rows_users]
    while len(active):
        obs = engine.observe(active)
        step = engine.step(active, np.asarray(policy.act(obs), dtype=np.float32).reshape(len(active), 4))
        w = step.strengths[:, 2:3]
        u = normalise_rows((w * engine.short_term[active] + (1 - w) * engine.long_term[active]).astype(np.float64))
        mix = implied_mix(u, centroids)
        metric = step.metrics[engine.metric]
        for k, row in enumerate(active):
            per_row[row].append((int(step.decision[k]), step.strengths[k], mix[k], float(metric[k])))
        active = active[~step.done]
    out = []
    for row, user in enumerate(users):
        recs = per_row[row]
        out.append((str(user), np.array([r[0] for r in recs]), np.array([r[1] for r in recs]),
                    np.array([r[2] for r in recs]), np.array([r[3] for r in recs])))
    return out


def _running_one_hot(topics: np.ndarray, n_topics: int, rate: float) -> np.ndarray:
    """Running mean (rate ``rate``, from the first click) of the one-hot clicked topic: the recent mix."""
    out = np.zeros((len(topics), n_topics))
    state = np.zeros(n_topics)
    for i, t in enumerate(topics):
        hot = np.zeros(n_topics)
        hot[t] = 1.0
        state = hot if i == 0 else state + rate * (hot - state)
        out[i] = state
    return out


def _duration(seconds: float) -> str:
    """A time span in the unit a reader wants: days, hours or minutes."""
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def plot_timeline(tl: UserTimeline, path: Path, top: int = TIMELINE_TOP_TOPICS) -> Path:
    """Three stacked panels over the user's decisions: observed interest, implied profile mix, actions."""
    import matplotlib

    n_topics = tl.observed.shape[1]
    mass = tl.observed.sum(axis=0) + tl.implied.sum(axis=0)
    keep = np.argsort(-mass)[: min(top, n_topics)]
    keep = keep[mass[keep] > 0]
    rest = np.setdiff1d(np.arange(n_topics), keep)
    cmap = matplotlib.colormaps["tab10"]
    colours = [cmap(i % 10) for i in range(len(keep))]
    labels = [tl.topic_names[k] for k in keep]

    def stack(values: np.ndarray) -> list[np.ndarray]:
        parts = [values[:, k] for k in keep]
        if len(rest):
            parts.append(values[:, rest].sum(axis=1))
        return parts

    x = np.arange(len(tl.observed))
    with _style():
        fig = _figure(11.5, 8.8, layout="constrained")
        axes = fig.subplots(4, 1, sharex=True, height_ratios=[0.09, 1.0, 1.0, 0.9])
        all_colours = colours + (["#d9d9d9"] if len(rest) else [])
        all_labels = labels + (["other"] if len(rest) else [])
        # A strip of the clicked items' topics above the true mixture: where the evidence came from.
        pos = {k: i for i, k in enumerate(keep)}
        strip = axes[0]
        strip.scatter(x, np.zeros(len(x)), c=[colours[pos[t]] if t in pos else "#bdbdbd" for t in tl.clicked], s=60,
                      marker="s", edgecolors="none")
        strip.set_yticks([])
        strip.set_ylabel("clicked", rotation=0, ha="right", va="center")
        strip.grid(False)
        for side in ("left", "bottom"):
            strip.spines[side].set_visible(False)
        strip.set_title("Topic of each clicked item" if tl.observed_kind == "truth" else "Category of each clicked item")
        axes[1].stackplot(x, *stack(tl.observed), colors=all_colours, labels=all_labels, alpha=0.9)
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("share")
        axes[1].set_title("True interest of the user (truth.npy)" if tl.observed_kind == "truth" else
                          f"Recently clicked categories (running mean of the clicks, rate {CATEGORY_EMA_RATE:g})")
        axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title="topic" if tl.observed_kind == "truth" else "category")
        axes[2].stackplot(x, *stack(tl.implied), colors=all_colours, alpha=0.9)
        axes[2].set_ylim(0, 1)
        axes[2].set_ylabel("share")
        axes[2].set_title("Mix implied by the policy's profile: v_k ~ max(0, cos(w S + (1 - w) L, centroid of k))")
        for j, name in enumerate(("long_strength", "short_strength", "short_weight")):
            axes[3].plot(x, tl.strengths[:, j], color=ACTION_COLOURS[name], lw=1.4, label=ACTION_LABELS[name],
                         marker="." if len(x) < 80 else None)
        axes[3].set_ylim(-0.03, 1.03)
        axes[3].set_ylabel("action value")
        axes[3].set_xlabel("decision (positive event) of the user, in time order")
        axes[3].set_title("The policy's update strengths and mixing weight")
        axes[3].legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
        span = float(tl.ts[-1] - tl.ts[0]) if len(tl.ts) > 1 else 0.0
        fig.suptitle(f"User {tl.user_id}{f' ({tl.label})' if tl.label else ''}: {len(x)} decisions over {_duration(span)}")
        return save_figure(fig, path)


def _binned_means(x: np.ndarray, y: np.ndarray, bins: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres, means and standard deviations of y in equal-count bins of x (empty bins dropped)."""
    if len(x) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        return np.array([x.mean()]), np.array([y.mean()]), np.array([y.std()])
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    centre, mean, sd = [], [], []
    for b in range(len(edges) - 1):
        sel = idx == b
        if sel.any():
            centre.append(x[sel].mean())
            mean.append(y[sel].mean())
            sd.append(y[sel].std())
    return np.array(centre), np.array(mean), np.array(sd)


def plot_actions(decisions: Any, features: np.ndarray, feature_names: Sequence[str], path: Path,
                 title: str = "Actions against the features that drive them") -> tuple[Path, int]:
    """2 x 2: a_L vs cos(x, L), a_S vs cos(x, S), w vs the short-vs-long signal, action histograms.

    Decisions with an empty long-term profile (a user's first) have no meaningful cosine and are left
    out of the scatter panels; their count is returned and shown in the figure.
    """
    fi = {n: i for i, n in enumerate(feature_names)}
    strengths = decisions[["long_strength", "short_strength", "short_weight"]].to_numpy(dtype=np.float64)
    empty = features[:, fi["long_empty"]] > 0.5
    n_left_out = int(empty.sum())
    keep = ~empty
    panels = [
        ("cos_item_long", 0, "cos(x, L): the item vs the long-term profile", "a_L (long-term strength)"),
        ("cos_item_short", 1, "cos(x, S): the item vs the short-term profile", "a_S (short-term strength)"),
        ("short_long_ema", 2, "running mean of (cos(x, S) - cos(x, L)) / 2", "w (short-term weight)"),
    ]
    rng = np.random.default_rng(0)
    with _style():
        fig = _figure(11, 8.2, layout="constrained")
        axes = fig.subplots(2, 2).ravel()
        for ax, (feat, j, xlabel, ylabel) in zip(axes, panels):
            xv = features[keep, fi[feat]].astype(np.float64)
            yv = strengths[keep, j]
            # Many points: draw a random 4,000 (the binned means use all of them).
            show = rng.choice(len(xv), size=min(4000, len(xv)), replace=False) if len(xv) else np.zeros(0, np.int64)
            name = ("long_strength", "short_strength", "short_weight")[j]
            ax.scatter(xv[show], yv[show], s=7, alpha=0.25, color=ACTION_COLOURS[name], edgecolors="none", label="decisions")
            cx, my, sd = _binned_means(xv, yv)
            ax.errorbar(cx, my, yerr=sd, color="black", lw=1.6, capsize=2.5, marker="o", ms=4, label="binned mean ± sd")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_ylim(-0.03, 1.03)
            ax.legend(loc="best")
        ax = axes[3]
        bins = np.linspace(0, 1, 26)
        for j, name in enumerate(("long_strength", "short_strength", "short_weight")):
            ax.hist(strengths[:, j], bins=bins, histtype="step", lw=1.8, color=ACTION_COLOURS[name], label=ACTION_LABELS[name],
                    density=True)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.4)  # headroom for the legend
        ax.set_xlabel("action value")
        ax.set_ylabel("density")
        ax.set_title("Distribution of the actions (all decisions)")
        ax.legend(loc="best")
        fig.suptitle(f"{title}\n{int(keep.sum()):,} decisions"
                     + (f"; {n_left_out:,} first decisions (empty profile) left out of the scatter plots" if n_left_out else ""))
        return save_figure(fig, path), n_left_out


# --------------------------------------------------------------------------------------- selection
def choose_timeline_users(data: Any, n: int, user_types: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Up to ``n`` users of ``data`` for the timelines, as (user id, label).

    Synthetic data: one user of each type in :data:`TIMELINE_TYPE_ORDER` (the longest history of the
    type), so the figures show a switch, a drift, a burst ... Otherwise: the users with the longest
    histories. Deterministic (no randomness).
    """
    lengths = data.user_decision_end - data.user_decision_start
    order = np.lexsort((np.asarray(data.user_ids, dtype=str), -lengths))  # longest first, then by id
    chosen: list[tuple[str, str]] = []
    if user_types:
        for t in TIMELINE_TYPE_ORDER:
            for i in order:
                uid = str(data.user_ids[i])
                if user_types.get(uid) == t and lengths[i] > 1:
                    chosen.append((uid, f"{t} user"))
                    break
            if len(chosen) >= n:
                break
    taken = {u for u, _ in chosen}
    for i in order:
        if len(chosen) >= n:
            break
        uid = str(data.user_ids[i])
        if uid not in taken:
            chosen.append((uid, (user_types or {}).get(uid, "") and f"{user_types[uid]} user"))
            taken.add(uid)
    return chosen[:n]


def _safe_name(user_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", user_id)[:60] or "user"


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
    :param which_model: ``best`` / ``final`` (default: the model evaluation.json evaluated, else best).
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
    out_dir = Path(out) if out is not None else run_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    if evaluation_path is not None and not Path(evaluation_path).is_file():
        raise ArtifactError(f"{evaluation_path}: no such evaluation file (written by `interestgym evaluate`)")
    evaluation = read_evaluation(run_dir, evaluation_path)
    header = (evaluation or {}).get("header", {})
    which = which_model or header.get("model") or "best"
    split = split or header.get("split") or "test"
    metric = header.get("selection_metric") or conf.get("config", {}).get("reward", "ndcg@10")
    figures: dict[str, Path] = {}
    skipped: list[str] = []
    notes: list[str] = []

    # 1. learning curves (TensorBoard)
    tb_dir = run_dir / "tb"
    if tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*")):
        scalars = read_scalars(tb_dir)
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
    model_path = run_dir / which / "model.zip"
    if not model_path.is_file():
        skipped.append(f"timelines and actions: {model_path} is missing")
    else:
        timeline_figs, n_left_out = _behaviour_figures(run_dir, conf, evaluation, which, split, out_dir, figures,
                                                       skipped, notes, timeline_users, users, progress, say)
        if n_left_out:
            notes.append(f"actions.png: {n_left_out:,} first decisions of users (empty long-term profile, so no cosine yet) "
                         "are left out of the scatter panels; the histograms include them")

    md = _markdown(run_dir, conf, evaluation, which, figures, timeline_figs, skipped, notes, out_dir)
    md_path = out_dir / MARKDOWN_FILE
    write_text_atomic(md_path, md)
    html_path = out_dir / HTML_FILE
    write_text_atomic(html_path, _html(run_dir, conf, evaluation, which, figures, timeline_figs, skipped, notes, out_dir))
    for note in skipped:
        say(f"report: not drawn: {note}")
    return ReportResult(out=out_dir, figures=figures, markdown=md_path, html=html_path,
                        table=results_rows(evaluation) if evaluation is not None else [], skipped=skipped, notes=notes)


def _behaviour_figures(run_dir: Path, conf: dict[str, Any], evaluation: dict[str, Any] | None, which: str, split: str,
                       out_dir: Path, figures: dict[str, Path], skipped: list[str], notes: list[str], n_timeline: int,
                       users: Sequence[str] | None, progress: bool | None,
                       say: Callable[[str], None]) -> tuple[list[tuple[str, str, Path]], int]:
    import torch
    from interestgym.agents.run_folder import load_run_policy
    from interestgym.agents.run_folder import run_train_config
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
    from interestgym.envs.vector import evaluate_policy

    from interestgym.data.dataset import Dataset

    torch.set_num_threads(1)  # tiny MLP inference: one thread is fastest (see TrainConfig.torch_threads)
    config = run_train_config(run_dir, conf)
    # The evaluated protocol (embeddings, negatives, seed) wins over the run's, so the figures show
    # the same replay as the table.
    proto = (evaluation or {}).get("protocol", {})
    base = config.protocol_spec(split)
    spec = ProtocolSpec(split=split, n_negatives=int(proto.get("n_negatives", base.n_negatives)),
                        negatives=str(proto.get("negatives", base.negatives)), exclude=str(proto.get("exclude", base.exclude)),
                        seed=int(proto.get("seed", base.seed)))
    dataset = Dataset.open(config.dataset)
    data = load_replay_data(dataset, proto.get("embeddings") or config.embeddings, spec)
    if data.n_users == 0:
        skipped.append(f"timelines and actions: split {split!r} of {config.dataset} has no user with a decision")
        return [], 0
    policy = load_run_policy(run_dir, which, device="cpu")

    # Actions vs features: every decision of the split.
    res = evaluate_policy(data, policy, metric=config.reward, record_features=True, progress=progress)
    figures["actions"], n_left_out = plot_actions(
        res.decisions, res.features, res.feature_names, out_dir / "actions.png",
        title=f"The {which} policy's actions against the features that drive them ({split} users)")

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
            raise InterestGymError(f"--user {missing[0]}: no decision in split {split!r} of {config.dataset}; "
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
    say(f"report: replayed {data.n_users} {split} users ({data.n_decisions:,} decisions) with the {which} model")
    return timeline_figs, n_left_out


# ------------------------------------------------------------------------------------------ summary
def _run_facts(run_dir: Path, conf: dict[str, Any], which: str) -> list[str]:
    c = conf.get("config", {})
    facts = [f"dataset `{c.get('dataset')}`, embeddings `{c.get('embeddings') or 'the only one'}`"]
    steps = None
    info = run_dir / "final" / "info.json"
    if info.is_file():
        try:
            steps = json.loads(info.read_text(encoding="utf-8")).get("step")
        except (json.JSONDecodeError, UnicodeDecodeError):
            steps = None
    best = run_dir / "best" / "info.json"
    best_info = {}
    if best.is_file():
        try:
            best_info = json.loads(best.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            best_info = {}
    def count(v: Any) -> str:
        return f"{v:,}" if isinstance(v, int) else "?"

    facts.append(f"PPO, {count(steps)} steps trained (asked {count(c.get('timesteps'))}), {c.get('n_envs')} users in "
                 f"lock-step, seed {c.get('seed')}; reward {c.get('reward')}"
                 + (f" minus the tuned `{conf['reference']['name']}` rule's" if conf.get("reference") else ""))
    if best_info:
        facts.append(f"best validation {best_info.get('metric')} {best_info.get('value', float('nan')):.4f} at step "
                     f"{count(best_info.get('step'))}; this report shows the **{which}** model")
    facts.append(f"TensorBoard: `tensorboard --logdir {run_dir / 'tb'}`")
    return facts


_FIGURE_TEXT = {
    "learning_curves": ("Learning curves", ("Training reward (baseline-subtracted when the run uses a reference rule), "
                        "the validation metric of the deterministic policy against the reference rule on the same "
                        "validation users, the update rate and the mean actions, over environment steps.")),
    "policies": ("Policy vs baselines", ("Mean over test users with bootstrap 95% CIs (left) and the paired "
                 "difference to the best tuned rule (right; a CI right of 0 = better on the same users).")),
    "actions": ("Actions against features", ("Each point is a decision of a test user; black: mean (± sd) of the "
                "action in equal-count bins of the feature.")),
}


def _markdown(run_dir: Path, conf: dict[str, Any], evaluation: dict[str, Any] | None, which: str, figures: dict[str, Path],
              timeline_figs: list[tuple[str, str, Path]], skipped: list[str], notes: list[str], out_dir: Path) -> str:
    lines = [f"# Report: {run_dir.name}", ""]
    lines += [f"- {f}" for f in _run_facts(run_dir, conf, which)]
    lines.append("")
    if evaluation is not None:
        lines += ["## Results", ""]
        lines += [f"- {p}" for p in protocol_lines(evaluation)]
        lines += ["", results_table(evaluation), ""]
        lines += [f"- {v}" for v in verdict_lines(evaluation)]
        lines += ["", f"Full tables (every metric): `{run_dir / EVALUATION_MARKDOWN}`; numbers: `{run_dir / EVALUATION_FILE}`.", ""]
    for key in ("learning_curves", "policies", "actions"):
        if key in figures:
            title, text = _FIGURE_TEXT[key]
            lines += [f"## {title}", "", text, "", f"![{title}]({_rel(figures[key], out_dir)})", ""]
    if timeline_figs:
        lines += ["## Timelines of test users", "",
                  ("Top: the true interest over topics (synthetic data) or the recently clicked categories (real data); "
                   "middle: the mix the policy's scoring profile implies; bottom: the policy's actions at every event."), ""]
        for uid, label, path in timeline_figs:
            lines += [f"![user {uid}{f' ({label})' if label else ''}]({_rel(path, out_dir)})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if skipped:
        lines += ["## Not drawn", ""] + [f"- {s}" for s in skipped] + [""]
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _md_inline(text: str) -> str:
    """Minimal inline Markdown -> HTML (code spans and bold) for the few sentences of the summary."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 1em 0; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
tr.learned td { background: #fdecec; font-weight: 600; } tr.reference td { background: #e8eef8; } tr.oracle td { color: #666; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1em; }
code { background: #f4f4f4; padding: 0 0.25em; border-radius: 3px; }
.note { color: #555; font-size: 0.92em; }
"""


def _html(run_dir: Path, conf: dict[str, Any], evaluation: dict[str, Any] | None, which: str, figures: dict[str, Path],
          timeline_figs: list[tuple[str, str, Path]], skipped: list[str], notes: list[str], out_dir: Path) -> str:
    esc = html.escape
    parts = [(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Report: {esc(run_dir.name)}</title>"
              f"<style>{_CSS}</style></head><body>"), f"<h1>Report: {esc(run_dir.name)}</h1>", "<ul>"]
    parts += [f"<li>{_md_inline(f)}</li>" for f in _run_facts(run_dir, conf, which)]
    parts.append("</ul>")
    if evaluation is not None:
        parts += ["<h2>Results</h2>", "<ul>"] + [f"<li>{_md_inline(p)}</li>" for p in protocol_lines(evaluation)] + ["</ul>"]
        header, rows = table_cells(evaluation)
        kinds = [r["kind"] for r in results_rows(evaluation)]
        parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for kind, row in zip(kinds, rows):
            parts.append(f"<tr class=\"{esc(kind)}\">" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
        parts += [f"<p>{_md_inline(v)}</p>" for v in verdict_lines(evaluation)]
        parts.append(f"<p class=\"note\">Full tables: <code>{esc(str(run_dir / 'evaluation.md'))}</code>.</p>")
    for key in ("learning_curves", "policies", "actions"):
        if key in figures:
            title, text = _FIGURE_TEXT[key]
            parts += [f"<h2>{esc(title)}</h2>", f"<p class=\"note\">{esc(text)}</p>",
                      f"<img src=\"{esc(_rel(figures[key], out_dir))}\" alt=\"{esc(title)}\">"]
    if timeline_figs:
        parts += ["<h2>Timelines of test users</h2>",
                  ("<p class=\"note\">Top: true interest (synthetic) or recently clicked categories (real data); middle: the "
                   "mix the policy's scoring profile implies; bottom: the policy's actions at every event.</p>")]
        for uid, label, path in timeline_figs:
            parts.append(f"<img src=\"{esc(_rel(path, out_dir))}\" alt=\"user {esc(uid)} {esc(label)}\">")
    if notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_md_inline(n)}</li>" for n in notes] + ["</ul>"]
    if skipped:
        parts += ["<h2>Not drawn</h2>", "<ul>"] + [f"<li>{esc(s)}</li>" for s in skipped] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
