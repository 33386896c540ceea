"""Benchmark: the ``interestgym`` command with glibc's heap kept (``M_TOP_PAD`` 64 MB, the command's default) against
glibc's defaults (``INTERESTGYM_MALLOC_TOP_PAD_MB=0``), in one run.

Each side runs the same command in a fresh subprocess, the two alternating ``--rounds`` times (who goes first
alternates too); printed per side: medians of wall, user and system seconds and of minor page faults (the children's
``getrusage``), and the ratios. The commands (``--run RUN``, a trained run such as the quick start's):

* ``interestgym evaluate RUN --out TMP`` (the shipped policy and every tuned rule on the test users);
* with ``--train-steps N``, also ``interestgym train DATASET --embeddings E --timesteps N`` into a fresh folder
  (its tuning and N PPO steps; the dataset and embeddings from RUN's config).

Both sides must print the same results: the script compares ``evaluation.json``'s table between them.

    python benchmarks/malloc_top_pad.py --run runs/quickstart/run
    python benchmarks/malloc_top_pad.py --run runs/quickstart/run --train-steps 150000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_line

SIDES = {"kept heap (default)": None, "glibc defaults": "0"}


def timed(argv: list[str], top_pad: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "INTERESTGYM_MALLOC_TOP_PAD_MB")}
    if top_pad is not None:
        env["INTERESTGYM_MALLOC_TOP_PAD_MB"] = top_pad
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"benchmark: {' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            "faults": after.ru_minflt - before.ru_minflt}


def table_of(path: Path) -> str:
    """The evaluation's numbers, as a canonical string (what both sides must agree on)."""
    data = json.loads(path.read_text())
    return json.dumps({key: data[key] for key in ("summary", "per_user", "tuned_baselines")}, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run (e.g. runs/quickstart/run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=0, help="also time a train of this many steps (0: no)")
    args = parser.parse_args()
    config = json.loads((args.run / "config.json").read_text())["config"]
    exe = shutil.which("interestgym") or sys.exit("benchmark: the interestgym command is not on PATH")
    print(load_line("load before"))
    work = Path(tempfile.mkdtemp(prefix="interestgym-bench-heap-"))
    jobs = {"evaluate": lambda side, k: [exe, "evaluate", str(args.run), "--out", str(work / f"eval-{side}-{k}")]}
    if args.train_steps:
        jobs["train"] = lambda side, k: [exe, "train", config["dataset"], "--embeddings", str(config["embeddings"]),
                                         "--run-dir", str(work / f"train-{side}-{k}"), "--timesteps", str(args.train_steps),
                                         "--no-progress"]
    try:
        for job, argv_of in jobs.items():
            results: dict[str, list[dict[str, float]]] = {name: [] for name in SIDES}
            for k in range(args.rounds):
                order = list(SIDES.items()) if k % 2 == 0 else list(SIDES.items())[::-1]
                for name, pad in order:
                    results[name].append(timed(argv_of(list(SIDES).index(name), k), pad))
            med = {name: {key: statistics.median(r[key] for r in rows) for key in ("wall", "user", "sys", "faults")}
                   for name, rows in results.items()}
            print(f"\n{job} ({args.rounds} rounds each, medians):")
            print(f"{'side':<22}{'wall s':>9}{'user s':>9}{'sys s':>9}{'minor faults':>15}")
            for name, m in med.items():
                print(f"{name:<22}{m['wall']:>9.2f}{m['user']:>9.2f}{m['sys']:>9.2f}{m['faults']:>15,.0f}")
            kept, default = med["kept heap (default)"], med["glibc defaults"]
            print(f"glibc defaults / kept heap: wall {default['wall'] / kept['wall']:.2f}x, "
                  f"faults {default['faults'] / max(kept['faults'], 1):.1f}x")
            if job == "evaluate":
                tables = {table_of(p / "evaluation.json") for p in sorted(work.glob("eval-*"))}
                print(f"evaluation tables: {'identical on both sides' if len(tables) == 1 else 'DIFFERENT'} "
                      f"({args.rounds * 2} runs)")
        print(load_line("\nload after"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
