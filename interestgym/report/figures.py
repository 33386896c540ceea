"""The report's figures: learning curves, policies vs baselines, a user's timeline, actions vs features.

Figures are drawn on :class:`matplotlib.figure.Figure` objects rendered by the non-interactive Agg
canvas: no pyplot, no display and no global figure registry (nothing leaks across many reports).
matplotlib is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import ArtifactError
from interestgym.evaluation.tables import kind_label
from interestgym.io import write_bytes_atomic
from interestgym.report.tables import results_rows
from interestgym.report.timelines import CATEGORY_EMA_RATE, UserTimeline

#: Topics / categories drawn individually in a timeline; the rest are summed into "other".
TIMELINE_TOP_TOPICS = 8

KIND_COLOURS = {"learned": "#d62728", "reference": "#1f4e9c", "baseline": "#8fb3de", "oracle": "#7f7f7f"}
ACTION_COLOURS = {"long_strength": "#1f77b4", "short_strength": "#ff7f0e", "short_weight": "#2ca02c",
                  "popularity_weight": "#8c564b", "keep": "#17becf"}
ACTION_LABELS = {"long_strength": "a_L (long-term strength)", "short_strength": "a_S (short-term strength)",
                 "short_weight": "w (short-term weight in the score)", "popularity_weight": "p (popularity weight)",
                 "keep": "keep factor of the category counts"}
_STYLE = {
    "font.size": 10.5, "axes.titlesize": 12, "axes.labelsize": 10.5, "legend.fontsize": 9, "xtick.labelsize": 9.5,
    "ytick.labelsize": 9.5, "figure.titlesize": 13.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 110,
}



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
    maps = _charmaps(tuple(font_families()))
    return all(any(ord(ch) in m for m in maps) for label in labels for ch in str(label) if not ch.isspace())


@functools.lru_cache(maxsize=4)
def _charmaps(families: tuple[str, ...]) -> list[set[int]]:
    """The code points each installed family of ``families`` draws (read once per set of families)."""
    from matplotlib import font_manager, ft2font

    maps = []
    for family in families:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        except ValueError:
            continue
        maps.append(set(ft2font.FT2Font(path).get_charmap()))
    return maps


def drawable(text: str) -> str:
    """``text`` when an installed font draws every character of it; else with the characters none draws written as
    escapes (``用户026`` -> ``\\u7528\\u6237026``: unambiguous, where empty boxes would not be; the report's captions,
    which a browser renders, give the id itself)."""
    if can_render([text]):
        return text
    return "".join(ch if ch.isspace() or can_render([ch]) else ch.encode("ascii", "backslashreplace").decode("ascii") for ch in text)


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
            ax.plot(*rate, color="#9467bd", lw=1.5, marker="o" if len(rate[0]) < 30 else None, ms=3)
            ax.set_ylim(-0.03, 1.03)
        ax.set_title("Update rate (share of decisions with a_L or a_S > threshold)")
        ax.set_ylabel("fraction of decisions")
        ax.set_xlabel("environment steps (decisions)")
        ax = axes[1, 1]
        for key, name in (("charts/mean_a_long", "long_strength"), ("charts/mean_a_short", "short_strength"),
                          ("charts/mean_mix_weight", "short_weight"), ("charts/mean_pop_weight", "popularity_weight"),
                          ("charts/mean_keep", "keep")):
            if key in scalars:
                ax.plot(*scalars[key], color=ACTION_COLOURS[name], lw=1.5, label=ACTION_LABELS[name],
                        marker="o" if len(scalars[key][0]) < 30 else None, ms=3)
        ax.set_ylim(-0.03, 1.03)
        # PPO's sampled (stochastic) actions: the deterministic policy's means are in actions.png / components.png
        ax.set_title("Mean sampled action during training")
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


def legend_labels(rows: Sequence[dict[str, Any]], reference: str | None) -> dict[str, str]:
    """The policies figure's legend: kind -> label, for the kinds among ``rows`` (:func:`results_rows`). A run
    that ships its rule has that rule in the learned row ("rule (shipped)" in the tables): "shipped rule"."""
    shipped_rules = [kind_label(r["policy"], r["kind"]) == "rule (shipped)" for r in rows if r["kind"] == "learned"]
    labels = {"learned": "shipped rule" if shipped_rules and all(shipped_rules) else "learned policy",
              "reference": f"best tuned rule ({reference})", "baseline": "baseline rule",
              "oracle": "oracle (knows the true interest)"}
    return {k: text for k, text in labels.items() if any(r["kind"] == k for r in rows)}


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
        # a CI bound that is null in the file (no bootstrap possible) draws no bar on that side
        lo_hi = [(r["metric"] if r["lo"] is None else r["lo"], r["metric"] if r["hi"] is None else r["hi"]) for r in order]
        err = np.array([[m - lo, hi - m] for m, (lo, hi) in zip(mean, lo_hi)]).T
        ax.barh(y, mean, color=colours, height=0.65)
        ax.errorbar(mean, y, xerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        for yi, m, (_, hi) in zip(y, mean, lo_hi):
            ax.text(hi, yi, f"  {m:.3f}", va="center", fontsize=8.5)
        ax.set_yticks(y, names)
        ax.set_xlabel(f"{metric}, mean over {evaluation['header'].get('split', 'test')} users")
        ax.set_xlim(0, max(1e-9, float(np.nanmax([hi for _, hi in lo_hi]))) * 1.15)
        ax.set_title(f"{metric} with bootstrap 95% CI")
        ax.grid(axis="y", visible=False)
        from matplotlib.patches import Patch

        labels = legend_labels(order, reference)
        fig.legend(handles=[Patch(color=KIND_COLOURS[k], label=text) for k, text in labels.items()], loc="outside lower center",
                   ncols=len(labels), frameon=False)
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
        fig.suptitle(f"User {drawable(tl.user_id)}{f' ({tl.label})' if tl.label else ''}: {len(x)} decisions over {_duration(span)}")
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
        total = int(keep.sum()) + n_left_out
        fig.suptitle(f"{title}\n{total:,} decisions"
                     + (f"; the scatter plots show {int(keep.sum()):,}: each user's first ({n_left_out:,}, empty profile) left out"
                        if n_left_out else ""))
        return save_figure(fig, path), n_left_out


#: The feature each action component is drawn against (the signal a policy would most plausibly read for it).
COMPONENT_DRIVERS = {
    "a_L": "cos_item_long", "a_S": "cos_item_short", "w": "short_long_ema", "p": "log_decisions",
    "keep": "category_fraction", "count gain": "feedback_value", "context rate": "log_gap_event", "slot weight": "hour_cos",
    "tracker weight": "tracker_metric_ema",
}


def plot_components(columns: dict[str, tuple[np.ndarray, np.ndarray]], features: np.ndarray, feature_names: Sequence[str],
                    path: Path, groups: np.ndarray | None = None,
                    title: str = "Every action component against the feature that drives it") -> Path:
    """One panel per action component (``columns``: name -> (the policy's values, the rule's) on the same
    decisions): the policy's mean in equal-count bins of the component's driver (:data:`COMPONENT_DRIVERS`),
    one line per group (e.g. the synthetic user types) or one for all, and the rule's, dashed, in the same bins over
    all decisions."""
    fi = {n: i for i, n in enumerate(feature_names)}
    shown = [(name, values) for name, values in columns.items() if COMPONENT_DRIVERS.get(name) in fi]
    group_names = sorted(set(groups.tolist())) if groups is not None else []
    n_cols = min(4, max(1, len(shown)))
    n_rows = -(-len(shown) // n_cols)
    with _style():
        fig = _figure(3.6 * n_cols, 3.1 * n_rows + 0.6, layout="constrained")
        axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
        for ax, (name, (ours, theirs)) in zip(axes, shown):
            driver = COMPONENT_DRIVERS[name]
            x = features[:, fi[driver]].astype(np.float64)
            for g in group_names or [None]:
                sel = np.ones(len(x), bool) if g is None else groups == g
                cx, my, _ = _binned_means(x[sel], np.asarray(ours, np.float64)[sel], bins=8)
                ax.plot(cx, my, marker="o", ms=3, lw=1.4, label="all decisions" if g is None else str(g))
            # the rule binned the same way: a rule's component may follow the driver too (a count gain by the value),
            # and a flat line at its mean made the policy's slope look learnt where the rule has it as well
            rx, ry, _ = _binned_means(x, np.asarray(theirs, np.float64), bins=8)
            ax.plot(rx, ry, color="black", ls="--", lw=1.1, label="the rule")
            ax.set_xlabel(driver)
            ax.set_ylabel(name)
            ax.set_title(name, fontsize=10)
        for ax in axes[len(shown):]:
            ax.set_visible(False)
        if shown:
            handles, labels = axes[0].get_legend_handles_labels()
            fig.legend(handles, labels, loc="outside lower center", ncol=min(8, len(labels)), fontsize=8)
        fig.suptitle(f"{title}\n{len(features):,} decisions; binned means of the policy, by "
                     + ("user type" if group_names else "all decisions") + "; dashed: the reference rule's, binned alike")
        return save_figure(fig, path)
