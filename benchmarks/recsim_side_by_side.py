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
  Measured at every size of ``--vec-envs`` (default 64, 256, 1024).

The embedding dimension (``--dims``, default ``384,20``): RecSim's documents (and its user interest
vector) are 20-dimensional, ours are d = 384 with the product's default encoder, and most of a replay
step's arithmetic is over d. Our envs are therefore measured at each dimension given, in the same
interleaved rounds as RecSim: d = 384 is the headline (the product's default; its embeddings come from
``--encoder``), and d = 20, labelled "at RecSim's document dimension (20)", uses the product's hashing
encoder at 20 dimensions (``interestgym encode DATASET --encoder hashing --dim 20 --name hashing20``,
run by this script when missing). Any other dimension N uses ``hashingN`` the same way. The targets
are printed for each dimension; the d = 20 lines say how fast the same replay is on vectors as small as
RecSim's, not how fast the product is by default.

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
        [--dims 384,20] [--vec-envs 64,256,1024] [--rounds 5] [--slice 1.0] [--threads 1]

With the defaults (2 dimensions x (2 single-env rows + 3 vector sizes) + RecSim = 11 sides, 5 rounds of
~1 s each) a run takes about 70 s.
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
#: The product's default encoder dimension (the headline) and RecSim's document dimension.
PRODUCT_DIM, RECSIM_DIM = 384, 20

#: The RecSim worker: builds the env once, then answers one JSON line per request ``{"steps": n}`` with
#: the wall and CPU seconds of n steps (resets included). Actions are drawn before the timed loop.
RECSIM_WORKER = r"""
import json, resource, sys, time, warnings
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
    w0, c0, f0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for slate in slates:
        _, _, done, _ = env.step(slate)
        if done:
            env.reset()
            episodes += 1
    print(json.dumps({"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0, "steps": n,
                      "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0,
                      "episodes": episodes}), flush=True)
"""


class RecSimWorker:
    """RecSim's env in a subprocess of another interpreter; :meth:`run` times ``n`` steps there."""

    def __init__(self, python: str, threads: int, seed: int = 0) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env.pop("PYTHONPATH", None)  # RecSim's interpreter must not see this repo's packages
        if not os.access(python, os.X_OK):
            sys.exit(f"--recsim-python {python}: no such interpreter; set up RecSim's venv first (see this script's docstring)")
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

    def run(self, n: int) -> tuple[float, float, int]:
        """Wall and CPU seconds and minor page faults of ``n`` RecSim steps, measured inside the worker."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"steps": n}) + "\n")
        self.proc.stdin.flush()
        out = self._read()
        return out["wall"], out["cpu"], out["faults"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def timed(fn: Callable[[], None]) -> tuple[float, float, int]:
    """Wall and CPU seconds and minor page faults of ``fn()``."""
    from _harness import minor_faults

    w0, c0, f0 = time.perf_counter(), time.process_time(), minor_faults()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0, minor_faults() - f0


def single_env_loop(env: Any, rng: np.random.Generator) -> Callable[[int], tuple[float, float, int]]:
    """n single-env steps (resets included), actions drawn before the clock starts."""

    def run(n: int) -> tuple[float, float, int]:
        actions = rng.uniform(-1.0, 1.0, (n, 4)).astype(np.float32)

        def loop() -> None:
            step, reset = env.step, env.reset
            for action in actions:
                _, _, terminated, truncated, _ = step(action)
                if terminated or truncated:
                    reset()

        return timed(loop)

    return run


def vector_env_loop(venv: Any, rng: np.random.Generator) -> Callable[[int], tuple[float, float, int]]:
    """n vector steps of every slot (autoreset inside the vector env)."""

    def run(n: int) -> tuple[float, float, int]:
        actions = rng.uniform(-1.0, 1.0, (n, venv.num_envs, 4)).astype(np.float32)

        def loop() -> None:
            step = venv.step
            for batch in actions:
                step(batch)

        return timed(loop)

    return run


def int_list(text: str) -> list[int]:
    """``"384,20"`` -> ``[384, 20]`` (positive integers, order kept, duplicates dropped)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers separated by commas")
    return list(dict.fromkeys(values))


def dim_label(dim: int, emb: str) -> str:
    if dim == PRODUCT_DIM:
        return f"d={dim}, the product's default encoder dimension; embeddings {emb}"
    if dim == RECSIM_DIM:
        return f"d={dim}, at RecSim's document dimension ({RECSIM_DIM}); embeddings {emb}"
    return f"d={dim}; embeddings {emb}"


def embeddings_at(data: Path, work: Path, encoder: str, dims: list[int]) -> tuple[Path, dict[int, str]]:
    """The dataset and an embedding name per dimension: ``--encoder`` for d = 384 (``env_throughput.prepare``),
    the product's hashing encoder at d dimensions (``hashing{d}``) for any other d, encoded when missing."""
    from env_throughput import prepare, run_cli

    from interestgym.data.dataset import Dataset

    ds, emb384 = prepare(data, work, encoder if PRODUCT_DIM in dims else "hashing")
    names = {PRODUCT_DIM: emb384} if PRODUCT_DIM in dims else {}
    have = set(Dataset.open(ds).embedding_names())
    for dim in dims:
        if dim == PRODUCT_DIM:
            continue
        name = f"hashing{dim}"
        if name not in have:
            proc = run_cli("encode", str(ds), "--encoder", "hashing", "--dim", str(dim), "--name", name)
            if proc.returncode != 0:
                sys.exit(f"encoding {name} failed: {proc.stderr.strip()[-500:]}")
            print(f"encoded {ds}/embeddings/{name} (hashing, d={dim})")
        names[dim] = name
    return ds, names


def slice_calls(run: Callable[[int], tuple[float, float, int]], seconds: float) -> int:
    """Warm up, then the number of calls that take about ``seconds`` (probed by doubling to >= 0.15 s)."""
    run(2)
    n = 2
    while True:
        wall = run(n)[0]
        if wall >= 0.15 or n >= 1 << 22:
            return max(2, int(seconds * n / max(wall, 1e-9)))
        n = max(2 * n, int(n * 0.2 / max(wall, 1e-9)))


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import (
        apply_heap,
        heap_argument,
        load_line,
        ml100k_arguments,
        ml100k_ready,
    )

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recsim-python", required=True, help="python of a venv with recsim-no-tf (see the docstring)")
    ml100k_arguments(parser, encoder="hashing")
    parser.add_argument("--dims", type=int_list, default=[PRODUCT_DIM, RECSIM_DIM],
                        help="embedding dimensions of our envs, the first is the headline (default 384,20: the product's "
                             "default and RecSim's document dimension); d != 384 uses hashing{d}")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--slice", type=float, default=1.0, help="seconds per side per round (sized at warm-up)")
    parser.add_argument("--vec-envs", type=int_list, default=[64, 256, 1024], help="vector env sizes (default 64,256,1024)")
    heap_argument(parser)
    args = parser.parse_args()
    print(apply_heap(args.malloc_top_pad))
    ml100k_ready(args)
    import gymnasium
    from interestgym.envs.replay import ENV_ID, InterestReplayEnv

    import interestgym  # noqa: F401  (registers interestgym/InterestReplay-v0)

    recsim = RecSimWorker(args.recsim_python, args.threads)
    print(f"RecSim: recsim-no-tf {recsim.info['recsim']}, gym {recsim.info['gym']}, numpy {recsim.info['numpy']}, "
          f"python {recsim.info['python']} ({args.recsim_python}); documents d={RECSIM_DIM}")
    print(f"interestgym: gymnasium {gymnasium.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")

    ds, embs = embeddings_at(args.data, args.work, args.encoder, args.dims)
    protocol = {"protocol": "next_positive", "n_negatives": N_CANDIDATES - 1}
    rng = np.random.default_rng(0)
    recsim_name = f"RecSim interest_evolution ({N_CANDIDATES} candidates, slate 2, d={RECSIM_DIM})"
    # name -> (run n calls, env steps per call); groups: dimension -> its rows' names (kind, n_envs, name)
    cases: dict[str, tuple[Callable[[int], tuple[float, float, int]], int]] = {recsim_name: (recsim.run, 1)}
    groups: dict[int, list[tuple[str, int, str]]] = {}
    for dim in args.dims:
        emb = embs[dim]
        single = InterestReplayEnv(ds, embeddings=emb, split="train", protocol=protocol)
        made = gymnasium.make(ENV_ID, dataset=ds, embeddings=emb, split="train", protocol=protocol)
        data = single.data
        width = np.diff(data.point_offsets)
        print(f"data: {ds} embeddings={emb} d={data.dim} split=train users={data.n_users} decisions={data.n_decisions} "
              f"scoring points={data.n_points} (candidates per point: {int(width.min())}-{int(width.max())})")
        if data.dim != dim:
            sys.exit(f"embeddings {emb} have d={data.dim}, expected {dim}")
        single.reset(seed=0)
        made.reset(seed=0)
        rows = [("single", 1, f"[d={dim}] single env (InterestReplayEnv)"),
                ("single", 1, f"[d={dim}] single env (gymnasium.make, checker wrappers)")]
        cases[rows[0][2]] = (single_env_loop(single, rng), 1)
        cases[rows[1][2]] = (single_env_loop(made, rng), 1)
        for n_envs in args.vec_envs:
            venv = gymnasium.make_vec(ENV_ID, num_envs=n_envs, dataset=ds, embeddings=emb, split="train", protocol=protocol)
            venv.reset(seed=0)
            name = f"[d={dim}] vector env (gymnasium.make_vec, {n_envs} envs)"
            cases[name] = (vector_env_loop(venv, rng), n_envs)
            rows.append(("vector", n_envs, name))
        groups[dim] = rows

    # Warm-up, then size every side's slice to about --slice seconds (env steps = calls x per_call).
    calls = {name: slice_calls(run, args.slice) for name, (run, _) in cases.items()}
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, (run, per_call) in cases.items():
            wall, cpu, faults = run(calls[name])
            steps = calls[name] * per_call
            samples[name].append((steps / wall, steps / max(cpu, 1e-9), faults / steps))
    recsim.close()

    def med(name: str, k: int) -> float:
        return float(np.median([s[k] for s in samples[name]]))

    ref_wall, ref_cpu = med(recsim_name, 0), med(recsim_name, 1)

    def row(name: str, label: str) -> str:
        wall, cpu = med(name, 0), med(name, 1)
        spread = ", ".join(f"{s[0]:,.0f}" for s in samples[name])
        return (f"{label:<64} {wall:>13,.0f} {wall / ref_wall:>9.2f} {cpu:>12,.0f} {cpu / ref_cpu:>9.2f} {med(name, 2):>12.3f}"
                f"   ({spread})")

    print()
    print(f"medians over {args.rounds} interleaved rounds of ~{args.slice:g} s per side ({len(cases)} sides)")
    print(f"{'env':<64} {'steps/wall s':>13} {'x RecSim':>9} {'steps/CPU s':>12} {'x RecSim':>9} {'faults/step':>12}   "
          "wall steps/s per round")
    print(row(recsim_name, recsim_name))
    for dim, rows in groups.items():
        print(f"-- interestgym at {dim_label(dim, embs[dim])}")
        for _, _, name in rows:
            print(row(name, "   " + name.split("] ", 1)[1]))

    def verdict(ratio: float, target: float) -> str:
        return "met" if ratio >= target else "NOT met"

    print()
    for k, (dim, rows) in enumerate(groups.items()):
        head = "the headline" if k == 0 else "not the product's default" if dim != PRODUCT_DIM else ""
        print(f"targets at {dim_label(dim, embs[dim])}" + (f" ({head})" if head else "") + ":")
        raw, made = (med(rows[0][2], 0) / ref_wall, med(rows[1][2], 0) / ref_wall)
        print(f"  single env >= 1x RecSim: {raw:.2f}x (raw env), {made:.2f}x (through gymnasium.make): {verdict(raw, 1.0)}")
        vec = [(n, med(name, 0) / ref_wall) for kind, n, name in rows if kind == "vector"]
        best_n, best = max(vec, key=lambda v: v[1])
        met = [n for n, r in vec if r >= 20.0]
        print(f"  vector env >= 20x RecSim: {', '.join(f'{n} envs {r:.1f}x' for n, r in vec)}: "
              + (f"met at {', '.join(map(str, met))} envs" if met else f"NOT met at any size (best {best:.1f}x at {best_n} envs)"))
    print(load_line("load after"))


if __name__ == "__main__":
    main()
