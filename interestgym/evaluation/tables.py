"""Result tables: per-policy means with bootstrap CIs, paired differences, as text / Markdown / JSON.

Input is one :class:`PolicyScores` per policy, all evaluated on the same users and the same scoring
points (the batched evaluator guarantees identical candidate sets), so paired differences are
well defined. Everything here is plain numpy (see :mod:`interestgym.core.stats`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interestgym.core.stats import FEW_POINTS, bootstrap_mean_ci, paired_bootstrap_diff

#: Said under any evaluation of the validation users: they are not held out.
VALIDATION_CAUTION = ("these are the validation users: the baselines were tuned, the run's model selected and its shipping "
                      "decided on them, so every tuned policy's figures here are optimistic; the test split (the default) "
                      "gives the held-out verdict")
#: Said under any evaluation of the training users: they are what the learned models were fitted on.
TRAIN_CAUTION = ("these are the training users: the run's policy and any --sequence tracker were fitted on them, so their "
                 "figures here are not a held-out verdict; the test split (the default) gives one")


def split_caution(split: str | None) -> str | None:
    """What an evaluation of ``split`` must say of its users (the validation or training users are not held out)."""
    return {"valid": VALIDATION_CAUTION, "train": TRAIN_CAUTION}.get(str(split))


def not_scored_text(protocol: dict[str, Any]) -> str | None:
    """What of a log of impressions was not scored, and why (``impressions_*`` counts), in words; None when every
    impression was scored or the protocol samples its candidates."""
    counts = protocol.get("counts") or {}
    if protocol.get("protocol") != "impressions" or "impressions" not in counts:
        return None
    reasons = [(counts.get("impressions_without_click", 0), "without a click on a candidate with an item row"),
               (counts.get("impressions_without_unclicked", 0), "without an unclicked candidate with an item row"),
               (counts.get("impressions_without_user_decisions", 0), "of users without a decision"),
               (counts.get("impressions_before_first_decision", 0), "before the user's first decision")]
    parts = [f"{n:,} {why}" for n, why in reasons if n]
    missing = counts.get("candidates_without_item", 0)
    if not parts and not missing:
        return None
    text = f"{counts['impressions'] - counts.get('impressions_scored', 0):,} of {counts['impressions']:,} impressions"
    text += f" ({'; '.join(parts)})" if parts else ""
    if missing:
        text += f"; {missing:,} candidates without an item row (no text to embed) left out of the rankings"
    return text


def chance_lines(summary: dict[str, Any], names: Iterable[str]) -> list[str]:
    """Caution lines for the rows ``names`` (the learned rows and the reference: what a run ships or is measured
    against) whose AUC's 95% CI reaches down to 0.5, the AUC of candidates in a random order: such a row is not shown to
    order a user's candidates better than chance, whatever it gains over another row. Empty when each is above."""
    out = []
    for name in dict.fromkeys(names):
        auc = ((summary["policies"].get(name) or {}).get("metrics") or {}).get("auc")
        if not auc or not np.isfinite(auc["lo"]) or auc["lo"] > 0.5:
            continue
        shown = f"AUC {auc['mean']:.4f} [{auc['lo']:.4f}, {auc['hi']:.4f}]"
        out.append((f"- caution: `{name}` ranks worse than a random order of the candidates here: {shown} lies below 0.5"
                    if auc["hi"] < 0.5 else
                    f"- caution: `{name}` is not shown to rank better than chance here: {shown} reaches 0.5, a random order "
                    "of the candidates")
                   + " (few or unrepresentative scoring points, or items whose text says little of what is clicked)")
    return out


def leader_lines(summary: dict[str, Any], metric: str) -> list[str]:
    """Verdict lines when a row other than the reference leads on ``metric`` (``summary["leader"]``): that row against
    the reference, and each learned policy's distance to it, so that a policy that beats the rules but trails a
    sequence tracker says both."""
    lead = summary.get("leader")
    if not lead:
        return []
    ref = summary.get("reference")
    d = ((summary.get("policies") or {}).get(lead["name"], {}).get("diff_vs_reference") or {}).get(metric)
    against = f": {d['mean']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] over `{ref}`" if d else ""
    out = [f"- the best row on {metric} is `{lead['name']}` ({kind_label(lead['name'], lead['kind'])}), {lead['mean']:.4f}{against}"]
    for name, b in (lead.get("behind") or {}).items():
        verdict = "trails" if b["hi"] < 0 else ("is ahead of" if b["lo"] > 0 else "is not distinguishable from")
        out.append(f"- `{name}` {verdict} `{lead['name']}` on {metric}: {b['mean']:+.4f} [{b['lo']:+.4f}, {b['hi']:+.4f}] "
                   "(paired, over users)")
    return out


def short_points_text(protocol: dict[str, Any]) -> str:
    """``"; 12 points with fewer (too few items to draw from)"`` when sampled points hold fewer negatives than asked
    (a catalogue smaller than ``--n-negatives``, or a user who touched most of it), and the targets left unscored for
    want of any negative; else ``""``."""
    counts = protocol.get("counts") or {}
    from interestgym.envs.replay_data import targets_without_negatives_text

    short, unscored = int(counts.get("points_with_fewer_negatives", 0)), targets_without_negatives_text(counts)
    text = f"; {short:,} of {protocol.get('scoring_points', 0):,} points with fewer (too few items to draw from)" if short else ""
    return text + (f"; {unscored}" if unscored else "")


def few_points_caution(points: int, users: int, mean_candidates: float, widest: int) -> str | None:
    """A caution when the tables rest on few scoring points, or on points of fewer than 10 candidates (where a metric
    at 10 says little of the ranking); None otherwise."""
    said = []
    if points < FEW_POINTS:
        said.append(f"only {points:,} scoring point{'s' if points != 1 else ''} over {users:,} user{'s' if users != 1 else ''}: "
                    "the tables rest on few rankings")
    if points and widest <= 10:
        said.append(f"no scoring point ranks more than {widest} candidates: hit@10 and recall@10 are 1 whatever the policy, "
                    "and nDCG@10 is high; compare AUC and MRR")
    elif points and mean_candidates < 10:
        said.append(f"a scoring point ranks {mean_candidates:.1f} candidates on average: hit@10 and recall@10 are 1 at most "
                    "points whatever the policy; compare AUC and MRR")
    return "; ".join(said) or None


@dataclass
class PolicyScores:
    """One policy's per-user results.

    :param name: policy name as shown in tables (e.g. ``ppo``, ``ema_two_profile``).
    :param kind: ``learned``, ``baseline``, ``oracle`` or ``reference``.
    :param users: (n_users,) sorted user ids (the same array for every policy of one evaluation).
    :param per_user: metric name -> (n_users,) mean over that user's scoring points.
    :param params: the policy's parameters (tuned values for baselines).
    :param valid_score: the selection metric on validation users (baselines; None if not tuned).
    :param extra: additional per-user series (e.g. ``tracking_error``), same layout as ``per_user``.
    """

    name: str
    kind: str
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    valid_score: float | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    n_points: int = 0


def summarise(
    results: list[PolicyScores],
    metrics: Iterable[str],
    *,
    reference: str | None,
    oracle: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Means + CIs for every policy and metric, paired differences against ``reference``, fraction of oracle.

    :param progress: a progress bar over the rows (None: on a terminal, or lines in a log; a large evaluation's
        bootstraps take a minute: 2000 resamples of every user for every row and metric).
    :return: a JSON-ready dict ``{"policies": {name: {...}}, "reference": ..., "oracle": ...}``.
    """
    from interestgym.progress import progress_bar

    metrics = list(metrics)
    by_name = {r.name: r for r in results}
    ref = by_name.get(reference) if reference else None
    orc = by_name.get(oracle) if oracle else None
    out: dict[str, Any] = {"reference": reference, "oracle": oracle, "metrics": metrics, "policies": {}}
    with progress_bar(total=len(results), desc="confidence intervals", unit="row", enabled=None if progress is None else progress) as bar:
        for r in results:
            out["policies"][r.name] = _summarise_row(r, metrics, ref, orc, n_boot, seed)
            bar.update(1)
    return out


def _summarise_row(r: PolicyScores, metrics: list[str], ref: PolicyScores | None, orc: PolicyScores | None, n_boot: int,
                   seed: int) -> dict[str, Any]:
    """One row of :func:`summarise`: means with CIs, paired differences to ``ref``, fractions of ``orc``."""
    entry: dict[str, Any] = {
        "kind": r.kind,
        "params": r.params,
        "valid_score": r.valid_score,
        "n_users": len(r.users),
        "n_points": int(r.n_points),
        "metrics": {},
        "diff_vs_reference": {},
        "fraction_of_oracle": {},
        "extra": {},
    }
    for m in metrics:
        entry["metrics"][m] = bootstrap_mean_ci(r.per_user[m], n_boot=n_boot, seed=seed).as_dict()
        if ref is not None and r.name != ref.name:
            _check_same_users(r, ref)
            entry["diff_vs_reference"][m] = paired_bootstrap_diff(r.per_user[m], ref.per_user[m], n_boot=n_boot, seed=seed).as_dict()
        if orc is not None:
            denom = float(np.nanmean(orc.per_user[m]))
            entry["fraction_of_oracle"][m] = float(np.nanmean(r.per_user[m]) / denom) if denom else None
    for key, values in r.extra.items():
        entry["extra"][key] = bootstrap_mean_ci(values, n_boot=n_boot, seed=seed).as_dict()
    return entry


def _check_same_users(a: PolicyScores, b: PolicyScores) -> None:
    if len(a.users) != len(b.users) or not np.array_equal(a.users, b.users):
        raise ValueError(f"policies {a.name} and {b.name} were evaluated on different users; cannot pair them")


def ci_text(ci: dict[str, Any] | None, digits: int = 4) -> str:
    """``0.4233 [0.4071, 0.4395]`` (a mean and its CI, an :meth:`Interval.as_dict`); ``-`` when there is none."""
    if ci is None or ci.get("mean") is None or not np.isfinite(ci["mean"]):
        return "-"
    return f"{ci['mean']:.{digits}f} [{ci['lo']:.{digits}f}, {ci['hi']:.{digits}f}]"


def diff_text(ci: dict[str, Any] | None, digits: int = 4) -> str:
    """``+0.0049 [+0.0021, +0.0075]*`` (a paired difference; * = its CI excludes 0); ``-`` when there is none."""
    if ci is None or ci.get("mean") is None:
        return "-"
    mark = "*" if (ci["lo"] > 0 or ci["hi"] < 0) else ""
    return f"{ci['mean']:+.{digits}f} [{ci['lo']:+.{digits}f}, {ci['hi']:+.{digits}f}]{mark}"


def markdown_tables(summary: dict[str, Any], *, main_metrics: list[str] | None = None, order: list[str] | None = None,
                    shipped_model: bool = False) -> str:
    """Three Markdown tables: metrics with CIs; paired differences vs the reference; extras.

    :param shipped_model: the learned row is the model its run ships (an evaluation of ``--model shipped``): its kind
        reads ``learned (shipped)``, as a shipped rule's reads ``rule (shipped)``."""
    metrics = main_metrics or summary["metrics"]
    names = order or list(summary["policies"])
    pol = summary["policies"]
    lines = ["| policy | kind | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for n in names:
        e = pol[n]
        lines.append(f"| {n} | {kind_label(n, e['kind'], shipped_model)} | " + " | ".join(ci_text(e["metrics"].get(m)) for m in metrics) + " |")
    text = "\n".join(lines)
    ref = summary.get("reference")
    if ref:
        lines = [(f"\nPaired difference against `{ref}` ({summary.get('reference_reason', 'the reference')}); "
                 "mean over users [95% CI], * = CI excludes 0:\n"),
                 "| policy | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        for n in names:
            if n == ref:
                continue
            lines.append(f"| {n} | " + " | ".join(diff_text(pol[n]["diff_vs_reference"].get(m)) for m in metrics) + " |")
        text += "\n" + "\n".join(lines)
    if summary.get("oracle"):
        lines = [f"\nFraction of the oracle (`{summary['oracle']}`), ratio of means:\n",
                 "| policy | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 1)]
        for n in names:
            vals = pol[n]["fraction_of_oracle"]
            lines.append(f"| {n} | " + " | ".join("-" if vals.get(m) is None else f"{vals[m]:.3f}" for m in metrics) + " |")
        text += "\n" + "\n".join(lines)
    extra_keys = sorted({k for n in names for k in pol[n]["extra"]})
    if extra_keys:
        lines = ["\n| policy | " + " | ".join(extra_keys) + " |", "|" + "---|" * (len(extra_keys) + 1)]
        for n in names:
            lines.append(f"| {n} | " + " | ".join(ci_text(pol[n]["extra"].get(k)) for k in extra_keys) + " |")
        if "tracking_error" in extra_keys:
            lines.append("\ntracking_error: 1 - cos(the topic mix the embedding profiles point at, the true mix), at decisions. "
                         "It reads the profiles only, which a policy's score weighs by profile_weight (1 - p); a policy with "
                         "profile_weight 0 ranks without them (popularity, category counts), so its tracking error says "
                         "nothing about how it ranks.")
        text += "\n" + "\n".join(lines)
    return text + "\n"


def kind_label(name: str, kind: str, shipped_model: bool = False) -> str:
    """A policy's kind as tables show it: the run's own row is ``learned`` in the numbers (it is what the
    run ships), shown as ``rule (shipped)`` when the run ships its reference rule (row ``shipped:<rule>``), and as
    ``learned (shipped)`` when the evaluation is of the model the run ships (``shipped_model``: ``--model shipped``)."""
    if kind == "learned" and name.startswith("shipped:"):
        return "rule (shipped)"
    return "learned (shipped)" if kind == "learned" and shipped_model else kind
