"""Throughput of the replay env, the vector env and the batched evaluator, against PPO's own rate.

Everything is measured in ONE run on the same data (MovieLens 100K, 100 candidates = the next positive
+ 99 uniform negatives, d = 384), so the printed ratios hold on whatever machine runs it:

* single env: ``InterestReplayEnv.step`` with random actions (resets included), steps/s;
* vector env: ``InterestReplayVecEnv`` (n_envs slots in lock-step), steps/s;
* batched evaluator: ``evaluate_policy`` over every training user, decisions/s, scoring points/s and
  events/s (events = every replayed log event of those users, positive or not);
* PPO: ``PPO("MlpPolicy", vec_env, n_steps=...).learn(...)``, environment steps consumed per second
  (rollouts + gradient updates), the rate an env must beat by a wide margin not to be the bottleneck.

Each rate is given per second of wall-clock time and per second of this process's CPU time: on a
shared machine the wall-clock rates fall with the load, the CPU-time rates much less (PPO's torch may
use several threads, so its CPU-time rate is the conservative one).

Public anchor (not measured here): RecSim's interest-evolution env runs ~3,500 steps/s with 10
candidates and ~1,400 with 50 on this kind of machine.

Usage::

    python benchmarks/env_throughput.py [--data ../shared/data/ml-100k] [--work /tmp/interestgym-bench]
        [--encoder minilm|hashing|random] [--ppo-steps 8192]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECSIM_ANCHOR = {"10 candidates": 3500, "50 candidates": 1400}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from interestgym.cli import main; main()", *args], capture_output=True, text=True)


def prepare(data: Path, work: Path, encoder: str) -> tuple[Path, str]:
    """ml-100k prepared by the product's reader and encoded by its encoder (cached in ``work``)."""
    ds = work / "ml-100k"
    if not (ds / "manifest.json").is_file():
        proc = run_cli("prepare", "movielens", str(data), "--out", str(ds))
        if proc.returncode != 0:
            sys.exit(f"prepare failed: {proc.stderr.strip()[-500:]}")
    from interestgym.data.dataset import Dataset, item_ids_sha256

    dataset = Dataset.open(ds)
    names = dataset.embedding_names()
    wanted = {"minilm": "minilm", "hashing": "hashing384", "random": "random384"}[encoder]
    if wanted in names:
        return ds, wanted
    if encoder == "minilm":
        proc = run_cli("encode", str(ds), "--encoder", "minilm")
        if proc.returncode == 0:
            return ds, "minilm"
        print(f"note: minilm encoding failed ({proc.stderr.strip()[-200:]}); falling back to hashing", file=sys.stderr)
        encoder, wanted = "hashing", "hashing384"
    if encoder == "hashing":
        proc = run_cli("encode", str(ds), "--encoder", "hashing", "--dim", "384", "--name", "hashing384")
        if proc.returncode == 0:
            return ds, "hashing384"
        print(f"note: hashing encoding failed ({proc.stderr.strip()[-200:]}); falling back to random vectors", file=sys.stderr)
    # Last resort: random unit vectors (the speed does not depend on what the vectors mean).
    rng = np.random.default_rng(0)
    mat = rng.standard_normal((len(dataset.items), 384)).astype(np.float32)
    mat /= np.linalg.norm(mat, axis=1, keepdims=True)
    (ds / "embeddings").mkdir(exist_ok=True)
    np.save(ds / "embeddings" / "random384.npy", mat)
    (ds / "embeddings" / "random384.json").write_text(json.dumps(
        {"encoder": "random", "dim": 384, "item_ids_sha256": item_ids_sha256(dataset.items["item_id"])}))
    return ds, "random384"


class Timer:
    """Wall-clock and process CPU seconds of a block."""

    def __enter__(self) -> "Timer":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ml-100k")
    parser.add_argument("--work", type=Path, default=Path("/tmp/interestgym-bench"))
    parser.add_argument("--encoder", choices=["minilm", "hashing", "random"], default="minilm")
    parser.add_argument("--single-steps", type=int, default=5000)
    parser.add_argument("--vec-envs", type=int, default=64)
    parser.add_argument("--vec-steps", type=int, default=300, help="vector steps (each n_envs env steps)")
    parser.add_argument("--ppo-envs", type=int, default=8)
    parser.add_argument("--ppo-n-steps", type=int, default=128)
    parser.add_argument("--ppo-steps", type=int, default=8192)
    args = parser.parse_args()
    if not (args.data / "u.data").is_file():
        sys.exit(f"{args.data}: MovieLens 100K not found (expected u.data there)")

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from interestgym.agents.rules import make_baseline
    from interestgym.envs.replay import InterestReplayEnv
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
    from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy
    from stable_baselines3 import PPO

    ds, emb = prepare(args.data, args.work, args.encoder)
    t0 = time.perf_counter()
    data = load_replay_data(ds, emb, ProtocolSpec(split="train"))
    t_pre = time.perf_counter() - t0
    info = data.describe()
    print(f"data: {ds} embeddings={emb} d={data.dim} split=train users={data.n_users} decisions={data.n_decisions} "
          f"scoring points={data.n_points} (candidates per point: {int(np.diff(data.point_offsets).mean())}) "
          f"events={info['counts']['events']}; precompute {t_pre:.1f} s")

    # single env
    env = InterestReplayEnv(ds, embeddings=emb, split="train")
    env.action_space.seed(0)
    env.reset(seed=0)
    with Timer() as t_single:
        for _ in range(args.single_steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()

    # vector env
    venv = InterestReplayVecEnv(data, n_envs=args.vec_envs, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (args.vec_steps, args.vec_envs, 4)).astype(np.float32)
    with Timer() as t_vec:
        for k in range(args.vec_steps):
            venv.step(actions[k])

    # batched evaluator
    with Timer() as t_eval:
        res = evaluate_policy(data, make_baseline("ema_two_profile", long_rate=0.1, short_rate=0.5, short_weight=0.5), batch_size=1024, progress=False)

    # PPO's consumption rate on the vector env it would train on
    ppo_env = InterestReplayVecEnv(data, n_envs=args.ppo_envs, seed=0)
    model = PPO("MlpPolicy", ppo_env, n_steps=args.ppo_n_steps, batch_size=256, seed=0, verbose=0, device="cpu")
    with Timer() as t_ppo:
        model.learn(total_timesteps=args.ppo_steps)

    rows = [
        (f"PPO learn (MlpPolicy, {args.ppo_envs} envs, n_steps={args.ppo_n_steps})", model.num_timesteps, t_ppo, "steps"),
        ("single env", args.single_steps, t_single, "steps"),
        (f"vector env ({args.vec_envs} envs)", args.vec_steps * args.vec_envs, t_vec, "steps"),
        ("batched evaluator: decisions", len(res.decisions), t_eval, "decisions"),
        ("batched evaluator: scoring points (100 cand.)", len(res.points), t_eval, "points"),
        ("batched evaluator: log events replayed", info["counts"]["events"], t_eval, "events"),
    ]
    ppo_wall, ppo_cpu = rows[0][1] / t_ppo.wall, rows[0][1] / t_ppo.cpu
    print()
    print(f"{'what':<48} {'per wall s':>12} {'x PPO':>7} {'per CPU s':>12} {'x PPO':>7}")
    rates = {}
    for name, count, t, unit in rows:
        wall, cpu = count / t.wall, count / t.cpu
        rates[name] = (wall, cpu)
        print(f"{name:<48} {wall:>12,.0f} {wall / ppo_wall:>7.1f} {cpu:>12,.0f} {cpu / ppo_cpu:>7.1f}   {unit}")
    single, vec, events = rates["single env"], rates[rows[2][0]], rates["batched evaluator: log events replayed"]
    decisions = rates["batched evaluator: decisions"]
    print()
    print(f"target env >= 10x PPO (wall): single env {single[0] / ppo_wall:.1f}x, vector env {vec[0] / ppo_wall:.1f}x")
    print(f"target evaluator >= 20,000 events/s: {events[0]:,.0f} per wall s ({events[0] / 20000:.2f}x), "
          f"{events[1]:,.0f} per CPU s ({events[1] / 20000:.2f}x); decisions {decisions[0]:,.0f} per wall s")
    print(f"public anchor (not measured here): RecSim interest evolution ~{RECSIM_ANCHOR['10 candidates']:,} steps/s "
          f"(10 candidates), ~{RECSIM_ANCHOR['50 candidates']:,} (50 candidates)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in __import__('os').getloadavg())} on {__import__('os').cpu_count()} CPUs")


if __name__ == "__main__":
    main()
