"""``interestgym compare A B``: two evaluations of the same users, row by row, with paired differences.

What it is for: one question asked of two ``evaluate`` outputs that differ in one thing, e.g. frozen vs fine-tuned
embeddings (``docs/finetune.md``), two encoders, two runs. Both must score the same users at the same scoring points
(same split, candidates, protocol seed and number of points: the negatives do not depend on the embedding), so a
policy's per-user metric in B minus its per-user metric in A is a paired difference; its CI is the percentile
bootstrap over users (:func:`interestgym.core.stats.paired_bootstrap_diff`), as every table of ``evaluate`` has.

Rows: every policy both evaluations list (by name), then "reference (each's own)": A's best tuned rule against B's,
which may be different rules, and, where each lists one learned row under another name (a run evaluated as shipped,
``shipped:RULE``, and its best model, ``ppo``), "run's policy (each's own)": the one against the other. What differs between the two headers besides (the encoder, the run) is said above the
table, and so is a row whose name stands for another policy in B (a rule tuned to other parameters or from another
package version or code, a learned row acting on another rule); what would break the pairing is refused, naming both
files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from interestgym.errors import ArtifactError, InterestGymError
from interestgym.evaluation.tables import ci_text, diff_text
from interestgym.io import read_json_artifact

EVALUATION_FILE = "evaluation.json"
#: Header fields that fix which users, scoring points and candidates an evaluation scores: they must agree.
PAIRING_FIELDS = ("split", "candidates", "protocol_seed", "scoring_points")
#: Header fields worth saying when they differ (the thing compared, usually).
SAID_FIELDS = ("data", "encoder", "dim", "run", "model", "reference", "reference_params")
REFERENCE_ROW = "reference (each's own)"
#: The row pairing two runs' policies of different names (each evaluation's one learned row).
POLICY_ROW = "run's policy (each's own)"


def read_evaluation(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(the evaluation.json, its content): ``path`` is the file or a folder holding it (an ``--out`` or a run)."""
    path = Path(path)
    file = path / EVALUATION_FILE if path.is_dir() else path
    if not file.is_file():
        raise ArtifactError(f"{path}: no {EVALUATION_FILE}; expected an `interestgym evaluate` output (its --out folder, "
                            "a run folder evaluated in place, or the file)")
    doc = read_json_artifact(file, "an `interestgym evaluate` output")
    missing = [k for k in ("header", "summary", "users", "per_user") if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise ArtifactError(f"{file}: no {', '.join(missing)}; expected an `interestgym evaluate` output")
    return file, doc


def _values(doc: dict[str, Any], file: Path, row: str, metric: str, order: np.ndarray) -> np.ndarray:
    per_user = doc["per_user"][row]
    if metric not in per_user:
        have = ", ".join(sorted(per_user))
        raise InterestGymError(f"{file}: row {row!r} has no per-user {metric!r}; it has {have} (--metric)")
    values = np.array([np.nan if v is None else v for v in per_user[metric]], dtype=np.float64)
    return values[order]


def compare_evaluations(a: str | Path, b: str | Path, *, metric: str | None = None, n_boot: int = 2000,
                        seed: int = 0) -> dict[str, Any]:
    """The rows of both evaluations, paired over their users: ``{"a", "b", "metric", "users", "differs", "rows"}``,
    each row ``{"row", "a": Interval, "b": Interval, "diff": Interval (b - a)}`` as dicts.

    :raises InterestGymError: the two do not score the same users at the same scoring points (naming what differs).
    """
    from interestgym.core.stats import bootstrap_mean_ci, paired_bootstrap_diff

    file_a, doc_a = read_evaluation(a)
    file_b, doc_b = read_evaluation(b)
    head_a, head_b = doc_a["header"], doc_b["header"]

    def check(key: str) -> None:
        if head_a.get(key) != head_b.get(key):
            raise InterestGymError(f"{file_a} and {file_b}: {key} {head_a.get(key)!r} vs {head_b.get(key)!r}; expected the same "
                                   f"{', '.join(PAIRING_FIELDS)} and users (the same users scored at the same points, so that a "
                                   "difference is paired)")

    for key in PAIRING_FIELDS[:-1]:
        check(key)
    # the users before the number of points: other users (another dataset or split seed) is the cause, not a symptom
    users_a, users_b = [str(u) for u in doc_a["users"]], [str(u) for u in doc_b["users"]]
    if set(users_a) != set(users_b) or len(users_a) != len(users_b):
        only_a, only_b = sorted(set(users_a) - set(users_b)), sorted(set(users_b) - set(users_a))
        raise InterestGymError(f"{file_a} and {file_b}: {len(users_a):,} vs {len(users_b):,} users ({len(only_a):,} only in the first, "
                               f"e.g. {only_a[:3]}; {len(only_b):,} only in the second, e.g. {only_b[:3]}); expected the same users "
                               "(evaluations of one dataset and split: another dataset, or one prepared with another split seed, "
                               "has other users)")
    check(PAIRING_FIELDS[-1])
    order_a = np.arange(len(users_a))
    position = {u: i for i, u in enumerate(users_b)}
    order_b = np.array([position[u] for u in users_a], dtype=np.int64)  # B's values in A's user order
    metric = (metric or head_a.get("selection_metric") or "ndcg@10").strip().lower()
    names = [n for n in doc_a["per_user"] if n in doc_b["per_user"]]
    pairs = [(n, n, n) for n in names]
    ref_a, ref_b = doc_a["summary"].get("reference"), doc_b["summary"].get("reference")
    if ref_a in doc_a["per_user"] and ref_b in doc_b["per_user"]:
        pairs.append((REFERENCE_ROW if ref_a == ref_b else f"{REFERENCE_ROW}: {ref_a} / {ref_b}", ref_a, ref_b))
    # each run's own policy under its own name (e.g. a run's shipped rule `shipped:R` against its best model `ppo`)
    learned_a, learned_b = _learned_rows(doc_a), _learned_rows(doc_b)
    paired_learned: list[str] = []
    if len(learned_a) == 1 and len(learned_b) == 1 and learned_a[0] != learned_b[0]:
        pairs.append((f"{POLICY_ROW}: {learned_a[0]} / {learned_b[0]}", learned_a[0], learned_b[0]))
        paired_learned = [learned_a[0], learned_b[0]]
    if not pairs:
        raise InterestGymError(f"{file_a} and {file_b}: no row in common; expected evaluations of the same policies")
    rows = []
    for label, name_a, name_b in pairs:
        va = _values(doc_a, file_a, name_a, metric, order_a)
        vb = _values(doc_b, file_b, name_b, metric, order_b)
        rows.append({"row": label, "a": bootstrap_mean_ci(va, n_boot=n_boot, seed=seed).as_dict(),
                     "b": bootstrap_mean_ci(vb, n_boot=n_boot, seed=seed).as_dict(),
                     "diff": paired_bootstrap_diff(vb, va, n_boot=n_boot, seed=seed).as_dict()})
    differs = {key: [head_a.get(key), head_b.get(key)] for key in SAID_FIELDS if head_a.get(key) != head_b.get(key)}
    # a row of one name that is another policy in B: a rule tuned otherwise or from other code, a learned row on another rule
    # (provider fields only one file records, e.g. a source digest an older evaluation lacks, are not a difference)
    definitions = {n: [_row_definition(doc_a, n, doc_b), _row_definition(doc_b, n, doc_a)] for n in names}
    row_differs = {n: d for n, d in definitions.items() if d[0] != d[1]}
    return {"a": str(file_a), "b": str(file_b), "metric": metric, "users": len(users_a),
            "scoring_points": head_a.get("scoring_points"), "split": head_a.get("split"), "differs": differs,
            "row_differs": row_differs,
            "bootstrap": {"resamples": n_boot, "unit": "user", "confidence": 0.95, "seed": seed}, "rows": _json_safe(rows),
            # rows one evaluation lists and the other not (another --baselines, a run's learned row, --sequence rows)
            "only_in_a": [n for n in doc_a["per_user"] if n not in doc_b["per_user"] and n not in paired_learned],
            "only_in_b": [n for n in doc_b["per_user"] if n not in doc_a["per_user"] and n not in paired_learned]}


def _one_folder_from_here(a: Any, b: Any) -> bool:
    """Two dataset paths as the evaluations recorded them (relative to where each `evaluate` ran, or absolute, as a run
    records it) that resolve to one folder from the current directory: likely one dataset written two ways, which the
    comparison says rather than hides (a relative path may have meant another folder where it was written)."""
    if not (isinstance(a, str) and isinstance(b, str)) or Path(a).is_absolute() == Path(b).is_absolute():
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


#: What a header field's null means, in words (an evaluation of a dataset has no run, hence no model).
_NONE_TEXT = {"run": "none (an evaluation of a dataset, no run)", "model": "none (no run)"}


def _said(key: str, value: Any) -> str:
    return _NONE_TEXT.get(key, "not recorded") if value is None else str(value)


def _learned_rows(doc: dict[str, Any]) -> list[str]:
    """The rows of kind ``learned``: a run's policy (its learned model, or the rule it ships as ``shipped:RULE``)."""
    return [n for n, e in (doc["summary"].get("policies") or {}).items() if isinstance(e, dict) and e.get("kind") == "learned"
            and n in doc["per_user"]]


def _params_text(params: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items()) if isinstance(params, dict) and params else "defaults"


def _provider_text(provider: Any, other: Any) -> str:
    """A rule's package in words; a source digest only where the other file's record of it has one too."""
    if not isinstance(provider, dict):
        return ""
    source = provider.get("source_sha256") if isinstance(other, dict) and other.get("source_sha256") else None
    return f"; {provider.get('distribution')} {provider.get('version')}" + (f", source {str(source)[:12]}" if source else "")


def _rule_record(doc: dict[str, Any], name: str) -> tuple[str | None, dict[str, Any] | None]:
    """(how the row ``name`` is a rule: ``tuned`` or ``learned``, its rule's record), or (None, None)."""
    tuned = (doc.get("tuned_baselines") or {}).get(name)
    if isinstance(tuned, dict):
        return "tuned", tuned
    kind = ((doc["summary"].get("policies") or {}).get(name) or {}).get("kind")
    shipped = doc["header"].get("shipped")
    if kind == "learned" and isinstance(shipped, dict) and isinstance(shipped.get("rule"), dict):
        return "learned", shipped["rule"]
    return None, None


def _row_definition(doc: dict[str, Any], name: str, other: dict[str, Any]) -> str | None:
    """What the row ``name`` of an evaluation is, in words, where the file says: a tuned rule's parameters (and its
    package), a learned row's rule (the one it acts on or ships), None otherwise (a custom policy, the oracle).
    ``other``: the other evaluation, whose record of the same row decides which provider fields are compared."""
    how, record = _rule_record(doc, name)
    if record is None:
        return None
    provider = _provider_text(record.get("provider"), (_rule_record(other, name)[1] or {}).get("provider"))
    if how == "tuned":
        return f"tuned to {_params_text(record.get('params'))}{provider}"
    return f"acts on {record.get('name')} ({_params_text(record.get('params'))}{provider})"


def _json_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN (a row whose metric no user has) as None: compare.json is strict JSON, as evaluation.json is."""
    return [{k: ({f: (None if isinstance(x, float) and np.isnan(x) else x) for f, x in v.items()} if isinstance(v, dict) else v)
             for k, v in r.items()} for r in rows]


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a small markdown document: what was compared, then one row per policy."""
    lines = ["# Comparison", "", f"- A: {result['a']}", f"- B: {result['b']}",
             f"- users: {result['users']:,} ({result['split']} split), {result['scoring_points']:,} scoring points, the same in both",
             (f"- metric: {result['metric']}, mean over users [95% CI]; B - A paired over users "
              f"({result['bootstrap']['resamples']} bootstrap resamples); * = the paired CI excludes 0")]
    for key, (va, vb) in result["differs"].items():
        same = " (one folder from here: the same dataset if both evaluations ran here)" if key == "data" and _one_folder_from_here(va, vb) else ""
        lines.append(f"- {key}: A {_said(key, va)} / B {_said(key, vb)}{same}")
    if result.get("row_differs"):
        lines.append("- rows of one name defined otherwise in A and B (each row compares these):")
        for name, (va, vb) in result["row_differs"].items():
            lines.append(f"  - {name}: A {va or 'not recorded'} / B {vb or 'not recorded'}")
    lines += ["", f"| row | A {result['metric']} | B {result['metric']} | B - A | relative |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        a, d = r["a"], r["diff"]
        rel = f"{100 * d['mean'] / a['mean']:+.1f}%" if a["mean"] and d["mean"] is not None else "-"
        lines.append(f"| {r['row']} | {ci_text(a)} | {ci_text(r['b'])} | {diff_text(d)} | {rel} |")
    for side in ("a", "b"):
        if result.get(f"only_in_{side}"):
            lines.append(f"\nOnly in {side.upper()} (not compared): {', '.join(result[f'only_in_{side}'])}")
    return "\n".join(lines) + "\n"


@click.command("compare")
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
@click.option("--metric", default=None, help="Per-user metric to compare (default: A's selection metric, e.g. ndcg@10).")
@click.option("--n-boot", type=click.IntRange(min=1), default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write compare.md and compare.json into this folder.")
def compare(a: Path, b: Path, metric: str | None, n_boot: int, out: Path | None) -> None:
    """Two evaluations of the same users, row by row: B - A per policy, paired over users.

    \b
    A and B are `interestgym evaluate` outputs (an --out folder, a run evaluated in place, or the
    evaluation.json) that score the same users at the same points: e.g. the same dataset evaluated with
    frozen and with fine-tuned embeddings. Every policy both list is a row, and so is each one's own
    best tuned rule, and each one's learned row where the names differ (a run evaluated as shipped,
    shipped:RULE, against its best model, ppo); a row whose name stands for another policy in B (a rule
    tuned to other parameters or from another package version, a learned row acting on another rule) is
    said above the table.
    Example:
      interestgym evaluate data --out eval-frozen --embeddings minilm
      interestgym evaluate data --out eval-tuned --embeddings minilm-ml100k
      interestgym compare eval-frozen eval-tuned
    """
    from interestgym.io import make_out_dir, write_json_atomic, write_text_atomic

    result = compare_evaluations(a, b, metric=metric, n_boot=n_boot)
    text = markdown(result)
    click.echo(text, nl=False)
    if out is not None:
        make_out_dir(out)
        write_json_atomic(out / "compare.json", result)
        write_text_atomic(out / "compare.md", text)
        click.echo(f"wrote {out / 'compare.json'} and {out / 'compare.md'}")
