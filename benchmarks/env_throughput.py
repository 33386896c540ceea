"""Throughput of the replay env, the vector env and the batched evaluator, against PPO's own rate.

Everything is measured in ONE run on the same data (MovieLens 100K, 100 candidates = the next positive
+ 99 uniform negatives, d = 384), so the printed ratios hold on whatever machine runs it:

* single env: ``InterestReplayEnv.step`` with random actions (resets included), steps/s;
* vector env: ``InterestReplayVecEnv`` (n_envs slots in lock-step), steps/s;
* batched evaluator: ``evaluate_policy`` over every training user, decisions/s, scoring points/s and
  events/s (events = every replayed log event of those users, positive or not);
* PPO: ``PPO("MlpPolicy", env, n_steps=...).learn(...)`` on a **null** vector env (same spaces,
  constant observations, no replay at all): the environment steps PPO itself consumes per second
  (rollout inference + gradient updates), the rate an env must beat by a wide margin not to be the
  bottleneck. Measuring PPO on the replay env would mix the env's own cost into its reference.

Honest ratios on a shared machine: torch / BLAS / Arrow threads are pinned (``--threads``, default
1, both sides), the load average is printed before and after, and the four measurements run
interleaved, ``--rounds`` rounds of one slice each, so load that comes and goes hits every side;
the ratios ("x PPO") are ratios of the medians over rounds, given per wall-clock second and per
second of this process's CPU time.

RecSim is not quoted here: ``benchmarks/recsim_side_by_side.py`` measures RecSim's interest-evolution
env next to the single and vector envs in one run (at 10 candidates). The public anchor this script
used to print (~3,500 steps/s) undersold RecSim several times over on the development machine.

Usage::

    python benchmarks/env_throughput.py [--data ../shared/data/ml-100k] [--work /tmp/interestgym-bench]
        [--encoder minilm|hashing|random] [--ppo-steps 4096] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from interestgym.cli import main; main()", *args], check=False, capture_output=True, text=True)


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

    def __enter__(self) -> Timer:  # noqa: PYI034
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


class NullVecEnv:
    """Built lazily (SB3 import): a VecEnv with the replay env's spaces and no work at all."""

    @staticmethod
    def make(n_envs: int, episode: int = 64):
        from gymnasium import spaces
        from stable_baselines3.common.vec_env.base_vec_env import VecEnv

        from interestgym.core.features import FEATURE_HIGH, FEATURE_LOW, N_FEATURES

        class _Null(VecEnv):
            def __init__(self) -> None:
                super().__init__(n_envs, spaces.Box(FEATURE_LOW.copy(), FEATURE_HIGH.copy(), (N_FEATURES,), dtype=np.float32),
                                 spaces.Box(-1.0, 1.0, (4,), dtype=np.float32))
                self._obs = np.clip(np.zeros((n_envs, N_FEATURES), np.float32), FEATURE_LOW, FEATURE_HIGH).astype(np.float32)
                self._t = 0

            def reset(self):
                self._t = 0
                return self._obs.copy()

            def step_async(self, actions):
                pass

            def step_wait(self):
                self._t += 1
                done = self._t % episode == 0
                dones = np.full(n_envs, done)
                infos = [{"terminal_observation": self._obs[0].copy()} if done else {} for _ in range(n_envs)]
                return self._obs.copy(), np.zeros(n_envs, np.float32), dones, infos

            def close(self):
                pass

            def get_attr(self, attr_name, indices=None):
                return [getattr(self, attr_name) for _ in self._get_indices(indices)]

            def set_attr(self, attr_name, value, indices=None):
                setattr(self, attr_name, value)

            def env_method(self, method_name, *args, indices=None, **kwargs):
                return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

            def env_is_wrapped(self, wrapper_class, indices=None):
                return [False for _ in self._get_indices(indices)]

        return _Null()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import ml100k_arguments, ml100k_ready

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ml100k_arguments(parser, encoder="minilm")
    parser.add_argument("--single-steps", type=int, default=5000, help="single-env steps (over all rounds)")
    parser.add_argument("--vec-envs", type=int, default=64)
    parser.add_argument("--vec-steps", type=int, default=300, help="vector steps (each n_envs env steps; over all rounds)")
    parser.add_argument("--ppo-envs", type=int, default=8)
    parser.add_argument("--ppo-n-steps", type=int, default=128)
    parser.add_argument("--ppo-steps", type=int, default=4096, help="PPO env steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ml100k_ready(args)
    from _harness import load_line
    from interestgym.agents.rules import make_baseline
    from interestgym.envs.replay import InterestReplayEnv
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
    from interestgym.envs.vector import InterestReplayVecEnv, evaluate_policy
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    ds, emb = prepare(args.data, args.work, args.encoder)
    t0 = time.perf_counter()
    data = load_replay_data(ds, emb, ProtocolSpec(split="train"))
    t_pre = time.perf_counter() - t0
    info = data.describe()
    print(f"data: {ds} embeddings={emb} d={data.dim} split=train users={data.n_users} decisions={data.n_decisions} "
          f"scoring points={data.n_points} (candidates per point: {int(np.diff(data.point_offsets).mean())}) "
          f"events={info['counts']['events']}; precompute {t_pre:.1f} s")

    env = InterestReplayEnv(ds, embeddings=emb, split="train")
    env.action_space.seed(0)
    env.reset(seed=0)
    venv = InterestReplayVecEnv(data, n_envs=args.vec_envs, seed=0)
    venv.reset()
    rng = np.random.default_rng(0)
    rule = make_baseline("ema_two_profile", long_rate=0.1, short_rate=0.5, short_weight=0.5)
    model = PPO("MlpPolicy", NullVecEnv.make(args.ppo_envs), n_steps=args.ppo_n_steps, batch_size=256, seed=0, verbose=0, device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))  # no log: SB3 would leave an empty folder in /tmp
    model.learn(total_timesteps=args.ppo_n_steps * args.ppo_envs)  # warm-up (torch's first calls)

    single_per_round = max(1, args.single_steps // args.rounds)
    vec_per_round = max(1, args.vec_steps // args.rounds)
    samples: dict[str, list[tuple[float, float]]] = {}  # name -> (count / wall, count / cpu) per round

    def record(name: str, count: int, t: Timer) -> None:
        samples.setdefault(name, []).append((count / t.wall, count / t.cpu))

    n_decisions = n_points = 0
    for _ in range(args.rounds):
        with Timer() as t:
            for _ in range(single_per_round):
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    env.reset()
        record("single env", single_per_round, t)
        actions = rng.uniform(-1, 1, (vec_per_round, args.vec_envs, 4)).astype(np.float32)
        with Timer() as t:
            for k in range(vec_per_round):
                venv.step(actions[k])
        record(f"vector env ({args.vec_envs} envs)", vec_per_round * args.vec_envs, t)
        with Timer() as t:
            res = evaluate_policy(data, rule, batch_size=1024, progress=False)
        n_decisions, n_points = len(res.decisions), len(res.points)
        record("batched evaluator: decisions", n_decisions, t)
        record("batched evaluator: scoring points (100 cand.)", n_points, t)
        record("batched evaluator: log events replayed", info["counts"]["events"], t)
        before = model.num_timesteps
        with Timer() as t:
            model.learn(total_timesteps=args.ppo_steps, reset_num_timesteps=False)
        record(f"PPO learn on a null env (MlpPolicy, {args.ppo_envs} envs, n_steps={args.ppo_n_steps})", model.num_timesteps - before, t)

    def med(name: str, k: int) -> float:
        return float(np.median([s[k] for s in samples[name]]))

    ppo_name = next(n for n in samples if n.startswith("PPO"))
    ppo_wall, ppo_cpu = med(ppo_name, 0), med(ppo_name, 1)
    print()
    print(f"medians over {args.rounds} interleaved rounds")
    print(f"{'what':<66} {'per wall s':>12} {'x PPO':>7} {'per CPU s':>12} {'x PPO':>7}")
    for name in [ppo_name] + [n for n in samples if n != ppo_name]:
        wall, cpu = med(name, 0), med(name, 1)
        spread = ", ".join(f"{s[0]:,.0f}" for s in samples[name])
        print(f"{name:<66} {wall:>12,.0f} {wall / ppo_wall:>7.1f} {cpu:>12,.0f} {cpu / ppo_cpu:>7.1f}   (wall per round: {spread})")
    single, vec = med("single env", 0), med(f"vector env ({args.vec_envs} envs)", 0)
    events = (med("batched evaluator: log events replayed", 0), med("batched evaluator: log events replayed", 1))
    print()
    print(f"target env >= 10x PPO (wall): single env {single / ppo_wall:.1f}x, vector env {vec / ppo_wall:.1f}x")
    print(f"target evaluator >= 20,000 events/s: {events[0]:,.0f} per wall s ({events[0] / 20000:.2f}x), "
          f"{events[1]:,.0f} per CPU s ({events[1] / 20000:.2f}x); decisions {med('batched evaluator: decisions', 0):,.0f} per wall s")
    print("RecSim side by side (measured, 10 candidates): python benchmarks/recsim_side_by_side.py --recsim-python ...")
    print(load_line("load after"))


if __name__ == "__main__":
    main()
