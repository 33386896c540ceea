"""Trackers beside an ``interestgym evaluate`` table: the same users, candidates and bootstrap.

``interestgym evaluate DATASET --sequence RUN_DIR`` lists trackers beside the rules in one run (see
docs/sequence.md). This module adds trackers (and the DTW rule) to an ``evaluation.json`` that already exists,
without replaying its rules again: it rebuilds the replay data of its protocol (the same split, negatives and
seed: the same scoring points), scores each tracker on it (:meth:`Tracker.score`), and summarises every row,
old and new, with :func:`interestgym.evaluation.tables.summarise` (bootstrap over users, paired differences
against the evaluation's reference). It imports ``interestgym.evaluation`` (a stage above ``agents``) lazily,
one of the layering's listed exceptions (docs/architecture.md)::

    python -m interestgym.agents.sequence.compare EVAL_DIR/evaluation.json RUN_DIR [RUN_DIR ...] [--dtw]

``--dtw`` adds the DTW refresh rule (:mod:`interestgym.agents.dtw_rule`), tuned on the validation
users ``evaluate`` tuned on (its default seeded subsample of 100) with its tuned two-profile strengths.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import ArtifactError, InterestGymError


def sequence_policy_scores(tracker: Any, data: Any, metric: str = "ndcg@10") -> Any:
    """A tracker's :class:`~interestgym.evaluation.tables.PolicyScores` (kind ``sequence``) on ``data``."""
    from interestgym.core.stats import per_user_means
    from interestgym.evaluation.tables import PolicyScores

    res = tracker.score(data, metric=metric)
    uid = res.points["user_id"].to_numpy()
    users, _ = per_user_means(uid, res.points[metric].to_numpy())
    per_user = {m: per_user_means(uid, res.points[m].to_numpy())[1] for m in res.metrics}
    return PolicyScores(name=tracker.name, kind="sequence", users=users, per_user=per_user, params=tracker.params,
                        valid_score=tracker.info.get("valid_score"), n_points=len(res.points))


def replay_data_of(evaluation: dict[str, Any]) -> Any:
    """The ReplayData an evaluation scored (its protocol rebuilt and checked)."""
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

    protocol = evaluation["protocol"]
    spec = ProtocolSpec(split=protocol["split"], n_negatives=int(protocol.get("n_negatives", 99)),
                        negatives=protocol.get("negatives", "uniform"), seed=int(protocol.get("seed", 0)),
                        exclude=protocol.get("exclude", "auto"), history_negatives=int(protocol.get("history_negatives", 0)))
    data = load_replay_data(protocol["dataset"], protocol["embeddings"], spec)
    now = data.describe()
    for key in ("split", "protocol", "users", "decisions", "scoring_points", "n_negatives", "negatives", "exclude", "seed",
                "history_negatives"):
        if key in protocol and now.get(key) != protocol[key]:
            raise ArtifactError(f"the evaluation's {key} is {protocol[key]!r} but the replay data rebuilt from "
                                f"{protocol['dataset']} has {now.get(key)!r}; re-run `interestgym evaluate`")
    return data


def dtw_rule_scores(evaluation: dict[str, Any], data: Any, metric: str, *, tune_users: int = 100, seed: int = 0) -> Any:
    """The DTW refresh rule (:mod:`interestgym.agents.dtw_rule`) tuned on validation users (the same
    seeded subsample ``evaluate`` tunes on, with its tuned two-profile strengths) and replayed on ``data``."""
    import dataclasses

    from interestgym.agents.dtw_rule import (
        DTWRefreshRule,
        decision_drift,
        replay_with_signal,
        tune_dtw_rule,
    )
    from interestgym.agents.tuning import subsample_users
    from interestgym.envs.replay_data import load_replay_data

    from interestgym.core.stats import per_user_means
    from interestgym.evaluation.tables import PolicyScores

    two = (evaluation.get("tuned_baselines") or {}).get("ema_two_profile")
    if not two:
        raise InterestGymError("the evaluation has no tuned ema_two_profile (run `interestgym evaluate` with it)")
    valid = load_replay_data(data.dataset_path, data.embeddings_name, dataclasses.replace(data.spec, split="valid"))
    tuned = tune_dtw_rule(valid, two["params"], metric=metric, users=subsample_users(valid.scored_user_ids, tune_users, seed))
    rule = DTWRefreshRule(**tuned["params"])
    res = replay_with_signal(data, rule, decision_drift(data, rule.params["window"]), metric=metric)
    uid = res.points["user_id"].to_numpy()
    users, _ = per_user_means(uid, res.points[metric].to_numpy())
    per_user = {m: per_user_means(uid, res.points[m].to_numpy())[1] for m in res.metrics}
    return PolicyScores(name=rule.name, kind="baseline", users=users, per_user=per_user, params=tuned["params"],
                        valid_score=tuned["valid_score"], n_points=len(res.points))


def compare(evaluation_json: str | Path, run_dirs: list[str | Path], *, n_boot: int = 2000, which: str = "best",
            dtw: bool = False) -> tuple[str, dict[str, Any]]:
    """(Markdown tables, summary) of every row of ``evaluation_json`` plus one row per tracker run (and the
    tuned DTW refresh rule with ``dtw``)."""
    from interestgym.agents.sequence.scoring import load_tracker, row_name

    from interestgym.evaluation.run import TABLE_METRICS
    from interestgym.evaluation.tables import PolicyScores, markdown_tables, summarise

    path = Path(evaluation_json)
    try:
        evaluation = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot be read as an evaluation.json ({exc})") from None
    header, summary_in = evaluation["header"], evaluation["summary"]
    metric = header["selection_metric"]
    users = np.asarray(evaluation["users"])
    rows: list[PolicyScores] = []
    for name, entry in summary_in["policies"].items():
        per_user = {m: np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                    for m, values in evaluation["per_user"][name].items()}
        rows.append(PolicyScores(name=name, kind=entry["kind"], users=users, per_user=per_user, params=entry.get("params") or {},
                                 valid_score=entry.get("valid_score"), n_points=int(entry.get("n_points") or 0)))
    data = replay_data_of(evaluation)
    # a tracker row is the same model as a run's when its weights' sha256 is (the folder's path as typed, or the
    # epoch, says neither: a folder retrained in place, or another folder reached by the same relative path)
    listed = {(e.get("params") or {}).get("weights_sha256"): name for name, e in summary_in["policies"].items()
              if e.get("kind") == "sequence" and (e.get("params") or {}).get("weights_sha256")}
    for run_dir in run_dirs:
        tracker = load_tracker(run_dir, which)
        already = listed.get(tracker.weights_sha256)
        if already is not None:  # `evaluate --sequence` scored this tracker's model already: its row is in the table
            print(f"{run_dir}: already a row of {path.name} (`{already}`, the same model); not added again", file=sys.stderr)
            continue
        row = sequence_policy_scores(tracker, data, metric)
        if not np.array_equal(row.users.astype(str), users.astype(str)):
            raise InterestGymError(f"{run_dir}: scored {len(row.users)} users, the evaluation {len(users)}; expected the same users")
        row.users = users
        row.name = row_name(row.name, run_dir, {r.name for r in rows})
        rows.append(row)
    if dtw:
        row = dtw_rule_scores(evaluation, data, metric)
        if not np.array_equal(row.users.astype(str), users.astype(str)):
            raise InterestGymError("the DTW rule was scored on other users than the evaluation's")
        row.users = users
        rows.append(row)
    metrics = list(dict.fromkeys([*TABLE_METRICS, metric]))
    summary = summarise(rows, metrics, reference=summary_in.get("reference"), oracle=summary_in.get("oracle"), n_boot=n_boot, seed=0)
    summary["reference_reason"] = summary_in.get("reference_reason", "the evaluation's reference")
    protocol = (f"Protocol: {header.get('data')}, split {header.get('split')}, {header.get('candidates')}, "
                f"{header.get('users')} users, {header.get('scoring_points')} scoring points; "
                f"bootstrap {n_boot} resamples of users, 95% percentile intervals.\n\n")
    return protocol + markdown_tables(summary, main_metrics=TABLE_METRICS, order=[r.name for r in rows]), summary


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dtw = "--dtw" in args
    args = [a for a in args if a != "--dtw"]
    if not args or args[0] in ("-h", "--help") or (len(args) < 2 and not dtw):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        text, _ = compare(args[0], args[1:], dtw=dtw)
    except InterestGymError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
