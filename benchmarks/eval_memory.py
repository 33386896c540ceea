"""Benchmark: peak memory of evaluating a split's users, and of the reads it is made of.

Each step runs in a fresh Python process (threads pinned), and its peak resident memory (``ru_maxrss``)
is printed with its time, next to the reference peak of a process that only imports interestgym, so
that the numbers are what the step itself costs:

* ``import``: the reference (interestgym, numpy, pandas, pyarrow, torch imported);
* ``events``: ``Dataset.events``, every column of every split (what the replay build reads today);
* ``events-needed``: ``Dataset.read_events(columns=..., users=<the split's users>)``: the columns the
  replay uses, the split's users only (Parquet projection + pyarrow filter);
* ``replay-data``: ``load_replay_data`` of the split (the arrays every policy replays);
* ``evaluate``: ``replay-data`` + ``evaluate_policy`` of one tuned-like rule over every user of the
  split (what ``interestgym evaluate`` does per policy, tuning aside).

    interestgym prepare synthetic --out /tmp/m/data --users 100000 --drift strong
    interestgym encode /tmp/m/data --encoder hashing
    python benchmarks/eval_memory.py /tmp/m/data [--split test]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_line

STEP = r"""
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from _harness import pin_threads
pin_threads({threads})
import numpy, pandas, pyarrow, torch
import interestgym
step, path, split = {step!r}, {path!r}, {split!r}
t0 = time.perf_counter()
info = {{}}
if step != "import":
    from interestgym.data.dataset import Dataset
    ds = Dataset.open(path)
    if step == "events":
        info["rows"] = len(ds.events)
    elif step == "events-needed":
        users = ds.users.loc[ds.users["split"] == split, "user_id"].astype(str)
        ev = ds.read_events(columns=["user_id", "item_id", "ts", "seq", "action", "value", "hour", "weekday"], users=users)
        info["rows"] = len(ev)
    else:
        from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
        data = load_replay_data(ds, None, ProtocolSpec(split=split))
        info.update(users=int(data.n_users), decisions=int(data.n_decisions), points=int(data.n_points))
        if step == "evaluate":
            from interestgym.agents.rules import make_baseline
            from interestgym.envs.vector import evaluate_policy
            t1 = time.perf_counter()
            res = evaluate_policy(data, make_baseline("ema_two_profile", long_rate=0.1, short_rate=0.5, short_weight=0.4),
                                  record_features=False, progress=False)
            info["evaluate_s"] = round(time.perf_counter() - t1, 1)
            info["scored_points"] = len(res.points)
info["seconds"] = round(time.perf_counter() - t0, 1)
info["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(info))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", default="import,events,events-needed,replay-data,evaluate")
    args = ap.parse_args()
    print(f"threads pinned to {args.threads}; {load_line('load before')}")
    bench = str(Path(__file__).resolve().parent)
    ref = None
    for step in args.steps.split(","):
        code = STEP.format(bench=bench, threads=args.threads, step=step, path=str(args.dataset), split=args.split)
        proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{step:<14} failed: {proc.stderr.strip()[-400:]}")
            continue
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = info["peak_mb"] if step == "import" else ref
        extra = f" (+{info['peak_mb'] - ref:,.0f} MB over import)" if ref is not None and step != "import" else ""
        rest = {k: v for k, v in info.items() if k not in ("peak_mb", "seconds")}
        print(f"{step:<14} peak {info['peak_mb']:>9,.0f} MB{extra:<28} {info['seconds']:>6.1f} s  {rest}")
    print(load_line("load after"))


if __name__ == "__main__":
    main()
