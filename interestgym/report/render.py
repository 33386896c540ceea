"""The summary's Markdown (``report.md``) and HTML (``report.html``).

The HTML embeds every figure as a base64 ``data:`` URI, so the one file shows the whole report (mail it,
attach it, open it anywhere); the PNG files beside it are the same images, for the Markdown and reuse.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interestgym.agents.run_folder import (
    EVALUATION_MARKDOWN,
    INFO_FILE,
    read_json_or_none,
)
from interestgym.report.tables import (
    protocol_lines,
    results_rows,
    results_table,
    table_cells,
    verdict_lines,
)


@dataclass
class Page:
    """What the summary shows: the run, the evaluation summarised (and its file), the model and split the
    figures replay, the figures, the timelines (user id, label, path), what was not drawn, and notes."""

    run_dir: Path
    conf: dict[str, Any]
    evaluation: dict[str, Any] | None
    evaluation_file: Path
    which: str
    split: str
    figures: dict[str, Path]
    timelines: list[tuple[str, str, Path]]
    skipped: list[str]
    notes: list[str]

    @property
    def tables_file(self) -> Path:
        """The evaluation.md written beside the summarised evaluation.json."""
        return self.evaluation_file.with_name(EVALUATION_MARKDOWN)

    def figure_text(self, key: str) -> tuple[str, str]:
        """(title, caption) of a figure, naming the users it shows."""
        table_split = (self.evaluation or {}).get("header", {}).get("split", "test")
        return {
            "learning_curves": ("Learning curves", (
                "Training reward (baseline-subtracted when the run uses a reference rule), the validation metric of the "
                "deterministic policy against the reference rule on the same validation users, the update rate and the "
                "mean of PPO's sampled actions, over environment steps.")),
            "policies": ("Policy vs baselines", (
                f"Mean over {table_split} users with bootstrap 95% CIs (left) and the paired difference to the best tuned "
                "rule (right; a CI right of 0 = better on the same users).")),
            "actions": ("Actions against features", (
                f"Each point is a decision of a {self.split} user; black: mean (± sd) of the action in equal-count bins of "
                "the feature.")),
            "components": ("Every action component against its driver", (
                "The learned policy's mean of each component in equal-count bins of the feature it most plausibly reads "
                f"(per user type on synthetic data; {self.split} users); dashed: the reference rule's mean in the same bins "
                "over the same decisions.")),
        }[key]


def _run_facts(run_dir: Path, conf: dict[str, Any], which: str) -> list[str]:
    c = conf.get("config", {})
    facts = [f"dataset `{c.get('dataset')}`, embeddings `{c.get('embeddings') or 'the only one'}`"]
    final_info = read_json_or_none(run_dir / "final" / INFO_FILE)
    steps = final_info.get("step") if isinstance(final_info, dict) else None
    best_info = read_json_or_none(run_dir / "best" / INFO_FILE)
    best_info = best_info if isinstance(best_info, dict) else {}
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


FIGURE_ORDER = ("learning_curves", "policies", "actions", "components")
TIMELINE_TEXT = ("Top: the true interest over topics (synthetic data) or the recently clicked categories (real data); "
                 "middle: the mix the policy's scoring profile implies; bottom: the policy's actions at every event.")


def _markdown(page: Page, out_dir: Path) -> str:
    lines = [f"# Report: {page.run_dir.name}", ""]
    lines += [f"- {f}" for f in _run_facts(page.run_dir, page.conf, page.which)]
    lines.append("")
    if page.evaluation is not None:
        lines += ["## Results", ""]
        lines += [f"- {p}" for p in protocol_lines(page.evaluation)]
        lines += ["", results_table(page.evaluation), ""]
        lines += [f"- {v}" for v in verdict_lines(page.evaluation)]
        lines += ["", f"Full tables (every metric): `{page.tables_file}`; numbers: `{page.evaluation_file}`.", ""]
    for key in FIGURE_ORDER:
        if key in page.figures:
            title, text = page.figure_text(key)
            lines += [f"## {title}", "", text, "", f"![{title}]({_rel(page.figures[key], out_dir)})", ""]
    if page.timelines:
        lines += [f"## Timelines of {page.split} users", "", TIMELINE_TEXT, ""]
        for uid, label, path in page.timelines:
            lines += [f"![user {uid}{f' ({label})' if label else ''}]({_rel(path, out_dir)})", ""]
    if page.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in page.notes] + [""]
    if page.skipped:
        lines += ["## Not drawn", ""] + [f"- {s}" for s in page.skipped] + [""]
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


def _data_uri(path: Path) -> str:
    """The PNG at ``path`` as a ``data:`` URI (base64), so that report.html carries its figures."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html(page: Page) -> str:
    esc = html.escape
    name = esc(page.run_dir.name)
    parts = [(f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Report: {name}</title>"
              f"<style>{_CSS}</style></head><body>"), f"<h1>Report: {name}</h1>", "<ul>"]
    parts += [f"<li>{_md_inline(f)}</li>" for f in _run_facts(page.run_dir, page.conf, page.which)]
    parts.append("</ul>")
    if page.evaluation is not None:
        evaluation = page.evaluation
        parts += ["<h2>Results</h2>", "<ul>"] + [f"<li>{_md_inline(p)}</li>" for p in protocol_lines(evaluation)] + ["</ul>"]
        header, rows = table_cells(evaluation)
        kinds = [r["kind"] for r in results_rows(evaluation)]
        parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for kind, row in zip(kinds, rows):
            parts.append(f"<tr class=\"{esc(kind)}\">" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
        parts += [f"<p>{_md_inline(v)}</p>" for v in verdict_lines(evaluation)]
        parts.append(f"<p class=\"note\">Full tables: <code>{esc(str(page.tables_file))}</code>.</p>")
    for key in FIGURE_ORDER:
        if key in page.figures:
            title, text = page.figure_text(key)
            parts += [f"<h2>{esc(title)}</h2>", f"<p class=\"note\">{esc(text)}</p>",
                      f"<img src=\"{_data_uri(page.figures[key])}\" alt=\"{esc(title)}\">"]
    if page.timelines:
        parts += [f"<h2>Timelines of {esc(page.split)} users</h2>", f"<p class=\"note\">{esc(TIMELINE_TEXT)}</p>"]
        for uid, label, path in page.timelines:
            parts.append(f"<img src=\"{_data_uri(path)}\" alt=\"user {esc(uid)} {esc(label)}\">")
    if page.notes:
        parts += ["<h2>Notes</h2>", "<ul>"] + [f"<li>{_md_inline(n)}</li>" for n in page.notes] + ["</ul>"]
    if page.skipped:
        parts += ["<h2>Not drawn</h2>", "<ul>"] + [f"<li>{esc(s)}</li>" for s in page.skipped] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
