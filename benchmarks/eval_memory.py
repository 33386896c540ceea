"""Benchmark: peak memory of evaluating a split's users, and of the reads it is made of.

Each step runs in a fresh Python process (threads pinned), and its peak resident memory (``ru_maxrss``)
is printed with its time, next to the reference peak of a process that only imports interestgym, so
that the numbers are what the step itself costs:

* ``import``: the reference (interestgym, numpy, pandas, pyarrow, torch imported);
* ``events``: ``Dataset.events``, every column of every split (what the replay build reads today);
* ``events-needed``: ``Dataset.read_events(columns=..., users=<the split's users>)``: the columns the
  replay uses, the split's users only (Parquet projection + pyarrow filter);
* ``context``: what every chunk shares (embeddings, training popularity): one streamed pass over four
  columns of the events (:func:`interestgym.envs.replay_build.replay_context`);
* ``replay-data``: ``load_replay_data`` of the whole split (the arrays every policy replays, read with
  projection + row-group push-down);
* ``evaluate-whole``: ``replay-data`` + ``evaluate_policy`` of one tuned-like rule over every user of
  the split at once (how ``interestgym evaluate`` worked before streaming);
* ``evaluate``: the same rule over the same users streamed ``--chunk-users`` at a time
  (:func:`interestgym.evaluation.stream.evaluate_in_chunks`, what ``interestgym evaluate`` does per
  policy, tuning aside); it prints a digest of the per-user means, equal to ``evaluate-whole``'s;
* ``evaluate-run``: ``interestgym evaluate DATASET --baselines ema_two_profile`` end to end (validation
  pass, tuning on 100 validation users, the streamed test split with the oracle and tracking error).

    interestgym prepare synthetic --out /tmp/m/data --users 100000 --drift strong
    interestgym encode /tmp/m/data --encoder hashing
    python benchmarks/eval_memory.py /tmp/m/data [--split test] [--chunk-users 5000] [--steps import,evaluate]

The peaks are ``ru_maxrss`` of the step's process, imports included (``import`` is that floor).

A log larger than ``prepare synthetic`` can make on the box (its generator holds the whole log in
memory): ``--replicate K --out DIR`` writes K renamed copies of a prepared dataset (user ``u1`` of copy
``k`` becomes ``r{k}u1``; items, embeddings and the split fractions stay), streamed a row group at a
time, then the steps run on DIR:

    python benchmarks/eval_memory.py /tmp/m/data --replicate 10 --out /tmp/m/data1m --steps import,context,evaluate
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_line

STEP = r"""
import hashlib, json, resource, sys, tempfile, time
sys.path.insert(0, {bench!r})
from _harness import pin_threads
pin_threads({threads})
import numpy, pandas, pyarrow, torch
import interestgym
step, path, split, chunk_users = {step!r}, {path!r}, {split!r}, {chunk_users!r}
t0 = time.perf_counter()
info = {{}}
RULE = dict(long_rate=0.1, short_rate=0.5, short_weight=0.4)

def digest(users, per_user):
    h = hashlib.sha256(numpy.asarray(users).astype(str).tobytes())
    for m in sorted(per_user):
        h.update(numpy.ascontiguousarray(per_user[m], dtype=numpy.float64).tobytes())
    return h.hexdigest()[:16]

if step != "import":
    from interestgym.data.dataset import Dataset
    ds = Dataset.open(path)
    if step == "events":
        info["rows"] = len(ds.events)
    elif step == "events-needed":
        users = ds.users.loc[ds.users["split"] == split, "user_id"].astype(str)
        ev = ds.read_events(columns=["user_id", "item_id", "ts", "seq", "action", "value", "hour", "weekday"], users=users)
        info["rows"] = len(ev)
    elif step == "context":
        from interestgym.envs.replay_build import replay_context
        from interestgym.envs.replay_data import ProtocolSpec
        ctx = replay_context(ds, None, ProtocolSpec(split=split))
        info["train_positives"] = int(ctx.train_counts.sum())
    elif step == "evaluate":
        from interestgym.agents.rules import make_baseline
        from interestgym.evaluation.stream import evaluate_in_chunks
        res = evaluate_in_chunks(ds, make_baseline("ema_two_profile", **RULE), split=split, chunk_users=chunk_users, progress=False)
        info.update(users=int(len(res.users)), scored_points=res.n_points, chunk_users=chunk_users, digest=digest(res.users, res.per_user))
    elif step == "evaluate-run":
        from interestgym.evaluation.run import evaluate_run
        with tempfile.TemporaryDirectory(prefix="eval_memory_") as out:
            evaluate_run(path, split=split, out=out, baselines="ema_two_profile", n_boot={n_boot}, progress=False, chunk_users=chunk_users)
            doc = json.loads(open(out + "/evaluation.json").read())
        info.update(users=doc["header"]["users"], scoring_points=doc["header"]["scoring_points"], chunk_users=chunk_users,
                    policies=sorted(doc["per_user"]))
    else:
        from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
        data = load_replay_data(ds, None, ProtocolSpec(split=split))
        info.update(users=int(data.n_users), decisions=int(data.n_decisions), points=int(data.n_points))
        if step == "evaluate-whole":
            from interestgym.agents.rules import make_baseline
            from interestgym.envs.vector import evaluate_policy
            from interestgym.core.stats import per_user_means
            t1 = time.perf_counter()
            res = evaluate_policy(data, make_baseline("ema_two_profile", **RULE), record_features=False, progress=False)
            info["evaluate_s"] = round(time.perf_counter() - t1, 1)
            info["scored_points"] = len(res.points)
            uid = res.points["user_id"].to_numpy()
            users = per_user_means(uid, res.points["ndcg@10"].to_numpy())[0]
            info["digest"] = digest(users, {{m: per_user_means(uid, res.points[m].to_numpy())[1] for m in res.metrics}})
info["seconds"] = round(time.perf_counter() - t0, 1)
info["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
print(json.dumps(info))
"""


def replicate(src: Path, out: Path, copies: int) -> None:
    """Write ``copies`` renamed copies of dataset ``src`` into ``out`` (see the module docstring): events,
    impressions, users and synthetic users with ``r{k}`` before every user id and impression id, truth
    rows stacked, items / embeddings / cache copied, the manifest's counts scaled."""
    import shutil

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if out.exists():
        raise SystemExit(f"{out}: exists; remove it or choose another --out")
    out.mkdir(parents=True)

    def renamed(table: pa.Table, k: int) -> pa.Table:
        for col in ("user_id", "impression_id"):
            if col in table.column_names:
                i = table.column_names.index(col)
                prefix = pa.scalar(f"r{k}", type=table.schema.field(col).type)  # k < 10 keeps the file sorted by user
                table = table.set_column(i, col, pc.binary_join_element_wise(prefix, table.column(col), pa.scalar("", type=prefix.type)))
        return table

    for name in ("events.parquet", "impressions.parquet", "users.parquet", "synthetic_users.parquet"):
        if not (src / name).is_file():
            continue
        pf = pq.ParquetFile(src / name)
        with pq.ParquetWriter(out / name, pf.schema_arrow) as writer:
            for k in range(copies):
                for rg in range(pf.metadata.num_row_groups):
                    writer.write_table(renamed(pf.read_row_group(rg), k), row_group_size=1 << 20)
        print(f"wrote {out / name}", flush=True)
    if (src / "truth.npy").is_file():
        truth = np.load(src / "truth.npy", mmap_mode="r")
        stacked = np.lib.format.open_memmap(out / "truth.npy", mode="w+", dtype=truth.dtype, shape=(copies * truth.shape[0], truth.shape[1]))
        for k in range(copies):
            for lo in range(0, truth.shape[0], 1 << 20):
                hi = min(lo + (1 << 20), truth.shape[0])
                stacked[k * truth.shape[0] + lo: k * truth.shape[0] + hi] = truth[lo:hi]
        stacked.flush()
        del stacked
    for name in ("items.parquet", "rejects.jsonl"):
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    for folder in ("embeddings", "cache"):
        if (src / folder).is_dir():
            shutil.copytree(src / folder, out / folder)
    manifest = json.loads((src / "manifest.json").read_text())
    counts = manifest["counts"]
    for key in ("events", "users", "impressions"):
        counts[key] = int(counts.get(key, 0)) * copies
    counts["actions"] = {a: int(n) * copies for a, n in counts.get("actions", {}).items()}
    manifest["split"]["users"] = {s: int(n) * copies for s, n in manifest["split"]["users"].items()}
    manifest["command"] = f"{manifest.get('command', '')} (replicated x{copies} by benchmarks/eval_memory.py)"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(f"wrote {copies} copies of {src} into {out}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunk-users", type=int, default=5000, help="users per chunk of the streamed steps")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of evaluate-run (default: the command's own, 2000)")
    ap.add_argument("--steps", default="import,events,events-needed,context,replay-data,evaluate-whole,evaluate,evaluate-run")
    ap.add_argument("--replicate", type=int, default=None, metavar="K", help="first write K renamed copies of DATASET into --out")
    ap.add_argument("--out", type=Path, default=None, help="where --replicate writes (the steps then run there)")
    args = ap.parse_args()
    if not (args.dataset / "manifest.json").is_file():
        raise SystemExit(f"{args.dataset}: no manifest.json; expected a dataset prepared by `interestgym prepare` (and encoded)")
    if args.replicate is not None:
        if args.out is None or args.replicate < 1:
            raise SystemExit("--replicate K needs K >= 1 and --out DIR")
        t0 = time.perf_counter()
        # in its own process: a child inherits its parent's peak resident memory as its own ru_maxrss
        code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from pathlib import Path; "
                f"from eval_memory import replicate; replicate(Path({str(args.dataset)!r}), Path({str(args.out)!r}), {args.replicate})")
        subprocess.run([sys.executable, "-c", code], check=True)
        print(f"replicated in {time.perf_counter() - t0:.0f} s")
        args.dataset = args.out
    print(f"threads pinned to {args.threads}; {load_line('load before')}")
    bench = str(Path(__file__).resolve().parent)
    ref = None
    failed = []
    digests: dict[str, str] = {}
    for step in args.steps.split(","):
        code = STEP.format(bench=bench, threads=args.threads, step=step, path=str(args.dataset), split=args.split,
                           chunk_users=args.chunk_users, n_boot=args.n_boot)
        proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{step:<14} failed: {proc.stderr.strip()[-400:]}")
            failed.append(step)
            continue
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        ref = info["peak_mb"] if step == "import" else ref
        extra = f" (+{info['peak_mb'] - ref:,.0f} MB over import)" if ref is not None and step != "import" else ""
        rest = {k: v for k, v in info.items() if k not in ("peak_mb", "seconds")}
        if "digest" in info:
            digests[step] = info["digest"]
        print(f"{step:<14} peak {info['peak_mb']:>9,.0f} MB{extra:<28} {info['seconds']:>6.1f} s  {rest}")
    print(load_line("load after"))
    if len(set(digests.values())) > 1:  # the streamed evaluation must give the whole replay's per-user means
        failed.append(f"digests differ ({', '.join(f'{k} {v}' for k, v in digests.items())})")
    elif len(digests) > 1:
        print(f"per-user means identical: {' == '.join(digests)} ({next(iter(digests.values()))})")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
