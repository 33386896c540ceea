"""RecSim's interest-evolution env and interestgym's envs, side by side at 10 candidates, in ONE run.

Issue 16 asks for a single env at least as fast as RecSim's ``interest_evolution`` at 10 candidates and a
vector env at least 20 times as fast. A number quoted from elsewhere (the "~3,500 steps/s" anchor
``env_throughput.py`` used to print) says nothing about this machine, so RecSim is measured here, next to our envs:

* **RecSim** runs in its own interpreter (``--recsim-python``: a benchmark-only venv, see below), in a
  worker subprocess that stays up for the whole run; the parent asks it for one timed slice per round.
* **interestgym** runs in this process, on MovieLens 100K prepared by the product's own reader (cached
  in ``--work``), train split, next-positive protocol with 10 candidates: the next positive item + 9
  uniform negatives.

What each env computes per step (so that a reader can judge the ratio):

* RecSim ``interest_evolution`` (``create_environment({"num_candidates": 10, "slate_size": 2,
  "resample_documents": True, "seed": 0})``, RecSim's own tutorial setting): the user's choice is
  *sampled* from a multinomial-proportional model over the 2-item slate (20-topic documents), the user's
  interest vector and time budget evolve, the document sampler draws 10 fresh candidates (Python
  objects), and the observation is a dict of the user, the 10 documents and the responses. The reward is
  the clicked watch time. Episodes end when the time budget runs out (resets included in the timing).
* interestgym ``InterestReplayEnv`` (the registered ``interestgym/InterestReplay-v0``): *replays* a logged
  history. A step updates the long- and short-term profiles and 3 shadow profiles (d = 384 with the
  default encoder) with the action's strengths, scores the 10 candidates three ways (the agent's score,
  L alone, S alone), computes every ranking metric (auc, mrr, ndcg@5, ndcg@10, hit@10, precision@10,
  recall@10, f1@10: exact expectations over tie orders), folds them into the running statistics, and
  builds the 30-feature observation and an ``info`` dict with the step's metrics. Resets included.
* the vector env: ``gymnasium.make_vec("interestgym/InterestReplay-v0", num_envs=...)``: the same replay
  for ``num_envs`` users in lock-step (numpy over the batch); steps/s counts env steps (calls x envs).

Both sides get actions drawn before the timed loop (random slates of 2 distinct documents for RecSim,
uniform actions in [-1, 1]^4 for ours), so policy cost is not in either number.

Honest ratios on a shared machine: BLAS / OpenMP threads are pinned (``--threads``, default 1) in this
process and in RecSim's, the load average is printed before and after, and the sides run interleaved,
``--rounds`` rounds of a ``--slice``-second slice each, so load that comes and goes hits every side;
the printed steps/s are medians over rounds and the ratios are ratios of medians measured in this run.

Setting up the RecSim venv (outside the repo; RecSim's last release is from 2020)::

    python3 -m venv /tmp/recsim-venv
    /tmp/recsim-venv/bin/pip install recsim-no-tf six "numpy<2"

``recsim-no-tf`` (0.2.3) is RecSim without TensorFlow; it pulls ``gym`` (0.26.2), ``gin-config``,
``absl-py`` and ``scipy``, but not ``six``, which ``recsim/agent.py`` imports. ``numpy<2`` because gym
0.26 does not support NumPy 2 (it warns). RecSim runs with either; in an alternating check on the
development machine NumPy 2.4 was ~10% faster per RecSim step than 1.26, within this benchmark's noise.

Usage::

    python benchmarks/recsim_side_by_side.py --recsim-python /tmp/recsim-venv/bin/python \\
        [--data ../shared/data/ml-100k] [--work /tmp/interestgym-bench] [--encoder hashing] \\
        [--rounds 5] [--slice 1.5] [--vec-envs 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

N_CANDIDATES = 10

#: The RecSim worker: builds the env once, then answers one JSON line per request ``{"steps": n}`` with
#: the wall and CPU seconds of n steps (resets included). Actions are drawn before the timed loop.
RECSIM_WORKER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
from recsim.environments import interest_evolution
import recsim, gym

n_candidates, slate_size, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
env = interest_evolution.create_environment(
    {"num_candidates": n_candidates, "slate_size": slate_size, "resample_documents": True, "seed": seed})
env.reset()
rng = np.random.default_rng(seed)
try:
    from importlib.metadata import version
    recsim_version = version("recsim-no-tf")
except Exception:
    recsim_version = "?"
print(json.dumps({"ready": True, "python": sys.version.split()[0], "numpy": np.__version__, "gym": gym.__version__,
                  "recsim": recsim_version}), flush=True)
episodes = 0
for line in sys.stdin:
    n = int(json.loads(line)["steps"])
    slates = [list(s) for s in np.argsort(rng.random((n, n_candidates)), axis=1)[:, :slate_size]]
    w0, c0 = time.perf_counter(), time.process_time()
    for slate in slates:
        _, _, done, _ = env.step(slate)
        if done:
            env.reset()
            episodes += 1
    print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "steps": n,
                      "episodes": episodes}), flush=True)
"""


class RecSimWorker:
    """RecSim's env in a subprocess of another interpreter; :meth:`run` times ``n`` steps there."""

    def __init__(self, python: str, threads: int, seed: int = 0) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env.pop("PYTHONPATH", None)  # RecSim's interpreter must not see this repo's packages
        self.proc = subprocess.Popen([python, "-c", RECSIM_WORKER, str(N_CANDIDATES), "2", str(seed)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr is not None else ""
            sys.exit(f"the RecSim worker stopped (is recsim-no-tf installed in that venv? see this script's docstring):\n{err[-2000:]}")
        return json.loads(line)

    def run(self, n: int) -> tuple[float, float]:
        """Wall and CPU seconds of ``n`` RecSim steps, timed inside the worker."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"steps": n}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        return out["wall"], out["cpu"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def single_env_loop(env: Any, rng: np.random.Generator) -> Callable[[int], tuple[float, float]]:
    """n single-env steps (resets included), actions drawn before the clock starts."""

    def run(n: int) -> tuple[float, float]:
        actions = rng.uniform(-1.0, 1.0, (n, 4)).astype(np.float32)

        def loop() -> None:
            step, reset = env.step, env.reset
            for action in actions:
                _, _, terminated, truncated, _ = step(action)
                if terminated or truncated:
                    reset()

        return timed(loop)

    return run


def vector_env_loop(venv: Any, rng: np.random.Generator) -> Callable[[int], tuple[float, float]]:
    """n vector steps of every slot (autoreset inside the vector env)."""

    def run(n: int) -> tuple[float, float]:
        actions = rng.uniform(-1.0, 1.0, (n, venv.num_envs, 4)).astype(np.float32)

        def loop() -> None:
            step = venv.step
            for batch in actions:
                step(batch)

        return timed(loop)

    return run


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import load_line, ml100k_arguments, ml100k_ready

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recsim-python", required=True, help="python of a venv with recsim-no-tf (see the docstring)")
    ml100k_arguments(parser, encoder="hashing")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slice", type=float, default=1.5, help="seconds per side per round (sized at warm-up)")
    parser.add_argument("--vec-envs", type=int, default=64)
    args = parser.parse_args()
    ml100k_ready(args)
    import gymnasium
    from env_throughput import prepare
    from interestgym.envs.replay import ENV_ID, InterestReplayEnv

    import interestgym  # noqa: F401  (registers interestgym/InterestReplay-v0)

    recsim = RecSimWorker(args.recsim_python, args.threads)
    print(f"RecSim: recsim-no-tf {recsim.info['recsim']}, gym {recsim.info['gym']}, numpy {recsim.info['numpy']}, "
          f"python {recsim.info['python']} ({args.recsim_python})")
    print(f"interestgym: gymnasium {gymnasium.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")

    ds, emb = prepare(args.data, args.work, args.encoder)
    protocol = {"protocol": "next_positive", "n_negatives": N_CANDIDATES - 1}
    single = InterestReplayEnv(ds, embeddings=emb, split="train", protocol=protocol)
    made = gymnasium.make(ENV_ID, dataset=ds, embeddings=emb, split="train", protocol=protocol)
    venv = gymnasium.make_vec(ENV_ID, num_envs=args.vec_envs, dataset=ds, embeddings=emb, split="train", protocol=protocol)
    data = single.data
    width = np.diff(data.point_offsets)
    print(f"data: {ds} embeddings={emb} d={data.dim} split=train users={data.n_users} decisions={data.n_decisions} "
          f"scoring points={data.n_points} (candidates per point: {int(width.min())}-{int(width.max())})")
    single.reset(seed=0)
    made.reset(seed=0)
    venv.reset(seed=0)
    rng = np.random.default_rng(0)

    cases: dict[str, tuple[Callable[[int], tuple[float, float]], int]] = {
        "RecSim interest_evolution (10 candidates, slate 2)": (recsim.run, 1),
        "interestgym single env (InterestReplayEnv)": (single_env_loop(single, rng), 1),
        "interestgym single env (gymnasium.make, checker wrappers)": (single_env_loop(made, rng), 1),
        f"interestgym vector env (gymnasium.make_vec, {args.vec_envs} envs)": (vector_env_loop(venv, rng), args.vec_envs),
    }
    # Warm-up, then size every side's slice to about --slice seconds (env steps = calls x per_call).
    calls: dict[str, int] = {}
    for name, (run, _) in cases.items():
        run(20)
        wall, _ = run(200)
        calls[name] = max(20, int(args.slice * 200 / max(wall, 1e-9)))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (run, per_call) in cases.items():
            wall, cpu = run(calls[name])
            samples[name].append((calls[name] * per_call / wall, calls[name] * per_call / max(cpu, 1e-9)))
    recsim.close()

    def med(name: str, k: int) -> float:
        return float(np.median([s[k] for s in samples[name]]))

    ref = next(iter(cases))
    print()
    print(f"medians over {args.rounds} interleaved rounds of ~{args.slice:g} s per side")
    print(f"{'env':<64} {'steps/wall s':>13} {'x RecSim':>9} {'steps/CPU s':>12} {'x RecSim':>9}   wall steps/s per round")
    for name in cases:
        wall, cpu = med(name, 0), med(name, 1)
        spread = ", ".join(f"{s[0]:,.0f}" for s in samples[name])
        print(f"{name:<64} {wall:>13,.0f} {wall / med(ref, 0):>9.2f} {cpu:>12,.0f} {cpu / med(ref, 1):>9.2f}   ({spread})")
    names = list(cases)
    print()
    print(f"target single env >= 1x RecSim: {med(names[1], 0) / med(ref, 0):.2f}x (raw env), "
          f"{med(names[2], 0) / med(ref, 0):.2f}x (through gymnasium.make)")
    print(f"target vector env >= 20x RecSim: {med(names[3], 0) / med(ref, 0):.1f}x")
    print(load_line("load after"))


if __name__ == "__main__":
    main()
