"""Benchmark: baseline tuning as one batched replay against one replay per grid point, and its share of
``interestgym train`` on the quick-start data.

One run, one machine, threads pinned, load average printed, the two scorers alternated
(``--rounds``) and their medians compared:

* **per point**: ``validation_scorer(..., batched=False)``: one ``evaluate_policy`` per grid point
  (the scorer ``train`` used before);
* **batched**: ``validation_scorer(...)``: every grid in one lean replay, one row per user and
  *interest state* (grid points that differ only in score weights, e.g. w and p, share a row and are
  ranked from the same similarities: ``envs.rollout.replay_shared``), coordinate-ascent points scored
  once, and interest states an earlier grid replayed ranked from the scorer's ``StateCache``.

Both tune every baseline on the run's validation users (``tune_users`` of them) and must return the
same tuned parameters, validation scores and grid tables (checked). Then ``interestgym train`` runs
once on the same data (``--timesteps``) and the share of its wall time spent tuning is printed
(from ``baselines.json``'s per-baseline seconds), with what the share would be with the per-point
scorer (its median tuning time in place of the batched one).

    interestgym prepare synthetic --out /tmp/s/data --users 1000 --drift strong
    interestgym encode /tmp/s/data --encoder minilm
    python benchmarks/tuning.py /tmp/s/data                # 1 round of each scorer, then train
    python benchmarks/tuning.py /tmp/s/data --tune-users 30 --no-train   # the ratio alone, in minutes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import interleaved, load_line, median, pin_threads, ratio_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timesteps", type=int, default=None, help="train's --timesteps (default: train's own)")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--embeddings", default=None, help="embedding name in DATASET (default: its only one)")
    ap.add_argument("--tune-users", type=int, default=None,
                    help="validation users tuned on, both scorers and train (default: train's own, 100); with today's grid the "
                         "per-point side takes tens of minutes at 100 on 2 cores: 20-40 gives a ratio in minutes")
    args = ap.parse_args()
    pin_threads(args.threads)
    from interestgym.agents.config import TrainConfig
    from interestgym.agents.rules import BASELINE_NAMES
    from interestgym.agents.tuning import (
        subsample_users,
        tune_baselines,
        validation_scorer,
    )

    print(f"threads pinned to {args.threads}; {load_line('load before')}")
    from interestgym.errors import InterestGymError

    extra = {} if args.tune_users is None else {"tune_users": args.tune_users}
    config = TrainConfig(dataset=str(args.dataset), run_dir="", embeddings=args.embeddings, **extra)
    try:
        valid = config.replay_data("valid")
    except InterestGymError as exc:
        sys.exit(f"error: {exc}")
    users = subsample_users(valid.user_ids, config.tune_users, config.seed)
    print(f"data: {args.dataset}, {valid.n_users} validation users ({len(users or valid.user_ids)} tuned on), "
          f"{valid.n_decisions} decisions, {valid.n_points} scoring points, metric {config.reward}")
    tuned: dict[str, dict] = {}

    def run(batched: bool) -> None:
        tuned["batched" if batched else "per point"] = tune_baselines(
            validation_scorer(valid, config.reward, users, batched=batched), BASELINE_NAMES)

    times = interleaved({"per point": lambda: run(False), "batched": lambda: run(True)}, args.rounds)
    cpu = interleaved({"per point": lambda: run(False), "batched": lambda: run(True)}, 1, clock=time.process_time) \
        if args.rounds > 1 else None
    for name, secs in times.items():
        print(ratio_line(f"tune_baselines, {name}", secs, "per point", times["per point"]))
    print(f"batched is {median(times['per point']) / median(times['batched']):.1f}x faster than one replay per grid point")
    if cpu:
        print(f"CPU seconds: per point {cpu['per point'][0]:.1f}, batched {cpu['batched'][0]:.1f}")
    a, b = tuned["per point"], tuned["batched"]
    same = all(a[n]["params"] == b[n]["params"] and a[n]["valid_score"] == b[n]["valid_score"] and a[n]["grid"] == b[n]["grid"]
               for n in a) and list(a) == list(b)
    print(f"identical tuning (params, valid scores, grid tables of {len(a)} baselines): {same}")
    print(f"rows in the grid tables: {sum(len(v['grid']) for v in a.values())} (the coordinate ascent replays more points "
          "than its tables keep)")

    if not args.no_train:
        run_dir = Path(tempfile.mkdtemp(prefix="ig-tune-")) / "run"
        cmd = [sys.executable, "-c", "from interestgym.cli import main; main()", "train", str(args.dataset), "--run-dir", str(run_dir)]
        if args.timesteps:
            cmd += ["--timesteps", str(args.timesteps)]
        if args.embeddings:
            cmd += ["--embeddings", args.embeddings]
        if args.tune_users is not None:
            cmd += ["--tune-users", str(args.tune_users)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            shutil.rmtree(run_dir.parent, ignore_errors=True)
            sys.exit(f"train failed: {proc.stderr.strip()[-800:]}")
        baselines = json.loads((run_dir / "baselines.json").read_text())
        entries = baselines.get("baselines", baselines)
        tuning = sum(float(v.get("seconds", 0.0)) for v in entries.values() if isinstance(v, dict))
        before = wall - tuning + median(times["per point"])
        print(f"train wall {wall:.1f} s, of which tuning {tuning:.1f} s = {100 * tuning / wall:.0f}% "
              f"(with the per-point scorer: ~{median(times['per point']):.0f} of ~{before:.0f} s = "
              f"{100 * median(times['per point']) / before:.0f}%)")
        shutil.rmtree(run_dir.parent, ignore_errors=True)
    print(load_line("load after"))
    if not same:
        sys.exit("batched tuning differs from per-point tuning")


if __name__ == "__main__":
    main()
