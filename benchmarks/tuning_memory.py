"""Benchmark: peak memory and time of tuning the baselines (``tune_reference`` of a default ``train``), bounded and not.

Each side runs in a fresh Python process (threads pinned) and prints its peak resident memory (``ru_maxrss``), its
wall, user and kernel time and the tuned reference; the sides alternate ``--rounds`` times:

* ``bounded``: today's :func:`interestgym.envs.rollout.replay_shared`: records kept for the tuning's
  :class:`~interestgym.envs.rollout.StateCache` only while they fit in it (256 MB), the buffer of kept scoring
  points ranked at 128 MB as well as at 32k rows;
* ``unbounded`` (the reference: what it did before session 15): every state's records kept until the end, the buffer
  ranked at 32k rows only (a cache of unbounded size, which the tuning then uses whole, and no byte budget).

On a catalogue of many categories every kept point holds its row's category counts (n_categories float64, three
times with the per-slot and exposure counts), so the difference grows with the catalogue: the Taobao sample's
2,083 categories are the case it was built for::

    interestgym prepare events ../shared/data/taobao-userbehavior-sample/UserBehavior_sample.csv --out /tmp/tb \\
        --columns user_id,item_id,category,action,ts --actions pv=view,cart=add_to_cart,fav=like,buy=purchase \\
        --item-text "category {category}" --tz-offset 8      # the README's Taobao recipe
    interestgym encode /tmp/tb --encoder cooc
    python benchmarks/tuning_memory.py /tmp/tb [--embeddings cooc] [--rounds 1]

Both sides must print the same reference and validation score (the budgets change no number).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_line

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {bench!r})
from _harness import pin_threads
pin_threads(1)
from interestgym.agents.config import TrainConfig
from interestgym.agents.tuning import tune_reference
import interestgym.envs.rollout as rollout

if {unbounded!r}:
    real = rollout.replay_shared
    rollout.StateCache.__init__.__defaults__ = (1 << 62,)
    rollout.replay_shared = lambda *a, **k: real(*a, **{{**k, "flush_bytes": 1 << 62}})
cfg = TrainConfig(dataset={dataset!r}, run_dir="unused", embeddings={embeddings!r}, progress_bar=False)
cfg.validate()
valid = cfg.replay_data("valid")
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
reference, _ = tune_reference(cfg, valid)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"wall": time.perf_counter() - t0, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                   "peak_mb": r1.ru_maxrss / 1024, "reference": reference["name"], "params": reference["params"],
                   "valid_score": reference["valid_score"]}}))
"""


def run_side(dataset: str, embeddings: str | None, unbounded: bool) -> dict:
    code = CHILD.format(bench=str(Path(__file__).resolve().parent), unbounded=unbounded, dataset=dataset, embeddings=embeddings)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"benchmark: the {'unbounded' if unbounded else 'bounded'} side failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="a prepared, encoded dataset (the Taobao sample with cooc is the case this is for)")
    parser.add_argument("--embeddings", default=None, help="which embeddings (default: the dataset's only one)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both sides (default 1)")
    args = parser.parse_args()
    print(f"{load_line('load before')}; each side in its own process, one thread")
    rows: dict[str, list[dict]] = {"bounded": [], "unbounded": []}
    for _ in range(args.rounds):
        for side in ("bounded", "unbounded"):
            rows[side].append(run_side(args.dataset, args.embeddings, side == "unbounded"))
            r = rows[side][-1]
            print(f"{side:9}  peak {r['peak_mb']:7,.0f} MB  wall {r['wall']:6.1f} s  user {r['user']:6.1f} s  sys {r['sys']:6.1f} s  "
                  f"-> {r['reference']} valid {r['valid_score']:.6f}")
    b, u = rows["bounded"], rows["unbounded"]
    same = all((x["reference"], x["params"], x["valid_score"]) == (b[0]["reference"], b[0]["params"], b[0]["valid_score"]) for x in b + u)
    best = lambda side, key: min(r[key] for r in side)
    print(f"peak memory: bounded / unbounded = {best(b, 'peak_mb'):,.0f} / {best(u, 'peak_mb'):,.0f} MB = "
          f"{best(b, 'peak_mb') / best(u, 'peak_mb'):.2f}x; wall {best(b, 'wall') / best(u, 'wall'):.2f}x; "
          f"the same tuned reference and score on every side: {same}")
    print(load_line("load after"))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
