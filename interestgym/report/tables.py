"""The summary's text from ``evaluation.json``: results rows, table cells, the Markdown table, verdicts, protocol.

Pure functions of the evaluation document (no files, no plotting): the Markdown and HTML summaries, the
policies figure and ``interestgym quickstart`` all read the same rows and cells from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from interestgym.evaluation.tables import kind_label, leader_lines, split_caution

#: Columns of the results table besides the selection metric: (metric, header).
SIDE_METRICS = (("auc", "AUC"), ("mrr", "MRR"))


def results_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy of ``evaluation.json``, in its order: what the summary's table shows.

    Keys: ``policy``, ``kind`` (``reference`` for the best tuned rule), ``metric`` (the selection
    metric's mean, ``lo``, ``hi``), ``diff`` / ``diff_lo`` / ``diff_hi`` (paired difference against the
    reference; None for the reference), ``significant`` (the diff's CI excludes 0), the side metrics'
    means, ``oracle_fraction`` (None without an oracle), ``tracking_error`` and ``profile_weight`` (the weight the
    policy's score puts on the profiles the tracking error reads; None if not measured).
    """
    summary = evaluation["summary"]
    metric = evaluation["header"].get("selection_metric") or summary["metrics"][0]
    reference = summary.get("reference")
    rows = []
    for name, entry in summary["policies"].items():
        ci = entry["metrics"].get(metric) or {}
        diff = entry.get("diff_vs_reference", {}).get(metric)
        track = entry.get("extra", {}).get("tracking_error")
        weight = entry.get("extra", {}).get("profile_weight")
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
            "profile_weight": None if weight is None else weight.get("mean"),
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
    has_weight = any(r["profile_weight"] is not None for r in rows)  # evaluations before session 22 have none
    header = ["policy", "kind", metric, "95% CI", f"diff vs {reference}", "diff 95% CI",
              *(label for _, label in SIDE_METRICS)]
    if has_oracle:
        header.append(f"% of oracle {metric}")
    if has_tracking:
        header.append("tracking error")
    if has_weight:
        header.append("profile weight")
    shipped_model = evaluation["header"].get("model") == "shipped"  # an evaluation of what the run ships
    cells = []
    for r in rows:
        line = [r["policy"], kind_label(r["policy"], r["kind"], shipped_model), _num(r["metric"]), f"[{_num(r['lo'])}, {_num(r['hi'])}]",
                "-" if r["diff"] is None else _num(r["diff"], sign=True) + ("*" if r["significant"] else ""),
                "-" if r["diff"] is None else f"[{_num(r['diff_lo'], sign=True)}, {_num(r['diff_hi'], sign=True)}]",
                *(_num(r[m]) for m, _ in SIDE_METRICS)]
        if has_oracle:
            line.append("-" if r["oracle_fraction"] is None else f"{100 * r['oracle_fraction']:.1f}")
        if has_tracking:
            line.append(_num(r["tracking_error"]))
        if has_weight:
            line.append(_num(r["profile_weight"], digits=3))
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
    out += [("T" + line[3:] if line.startswith("- the") else line[2:]) + "." for line in leader_lines(summary, metric)]
    shipped = evaluation["header"].get("shipped")
    if shipped:
        what = "its learned model" if shipped["policy"] == "learned" else f"its reference rule `{shipped['rule']['name']}`"
        out.append(f"The run ships {what}: {shipped['reason']}.")
    return out


def protocol_lines(evaluation: dict[str, Any]) -> list[str]:
    h = evaluation["header"]
    lines = [f"data `{h.get('data')}`, split **{h.get('split')}**"
             + (f" (users split {h['users_split']})" if h.get("users_split") else "")
             + f": {h.get('users')} users, {h.get('scoring_points')} scoring points"
             + (f"; candidates per point: {h['candidates_per_point']}" if h.get("candidates_per_point") else "")
             + (f"; not scored: {h['not_scored']}" if h.get("not_scored") else ""),
             f"encoder `{h.get('encoder')}` (dim {h.get('dim')}); candidates: {h.get('candidates')}; protocol seed {h.get('protocol_seed')}"]
    if h.get("run"):
        lines.append(f"policy: the run's **{h.get('model')}** model (deterministic), train seed {h.get('train_seed')}")
    lines.append(f"baselines tuned on {h.get('tuned_on')} by {h.get('selection_metric')}; reference = best tuned rule "
                 f"`{h.get('reference')}`" + (f" ({h['reference_params']})" if h.get("reference_params") else ""))
    boot = h.get("bootstrap") or {}
    lines.append(f"mean over users; {boot.get('resamples', '?')} bootstrap resamples of users, 95% percentile intervals; "
                 "`*` = the paired CI excludes 0")
    for caution in (split_caution(h.get("split")), h.get("few_points"), h.get("transfer_overlap"), h.get("transfer_actions")):
        if caution:
            lines.append(f"**Caution**: {caution}")
    return lines
