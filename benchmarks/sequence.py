"""Training time of the sequence trackers (GRU, SASRec) against references measured in the same run,
plus the DTW drift signal against dtaidistance.

Everything runs in ONE process on the same data (MovieLens 100K prepared and encoded by the product,
training users' decisions), so the ratios hold on whatever machine runs it:

* **tracker epoch**: one pass of ``interestgym train-sequence``'s loop over every training user's
  decisions (default settings: window 50, hidden 64, full softmax), seconds per epoch, and the
  validation pass that follows each epoch (scoring every validation user's scoring points);
* **reference: evaluator pass**: ``evaluate_policy`` of the two-profile rule over the same training
  users (the product's batched replay of exactly these decisions);
* **reference: PPO pass** (``--ppo-steps N``, 0 to skip): PPO learning on the replay's vector env (8 envs,
  after an untimed warm-up of 1,024 steps; ``benchmarks/env_throughput.py`` times PPO on a null env instead,
  to isolate the env), turned into seconds per pass over the training decisions: what one "epoch" of the
  product's learned policy costs. The references are measured once, before the trackers, not interleaved
  with them: on a loaded machine read the CPU-second columns;
* ``--dtw``: the drift of every decision (k = 5 against the k before) with ``interestgym.core.dtw``'s
  batched numpy DTW and with dtaidistance (one C call per pair; not a dependency of the project:
  ``pip install dtaidistance`` first, else only the numpy side is timed), time and largest difference;
* ``--latency``: one user's tracker step in torch eager, one thread (window of 50 -> state, scores of
  100 candidates), p50 / p99, against the product's per-event numpy work (profile update + two-profile
  cosine scores of the same 100 candidates); then the same with each tracker exported
  (``interestgym export SEQUENCE_RUN``, one training epoch) and run by ``interestgym.runtime.tracker``
  (numpy + onnxruntime: window update, state, 100 scores).

Wall-clock and CPU seconds are both printed: on a shared machine wall-clock times grow with the load.

Usage::

    python benchmarks/sequence.py --dataset runs/data/ml-100k [--embeddings minilm] [--epochs 3] [--ppo-steps 4096] [--dtw] [--latency]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class Timer:
    def __enter__(self) -> Timer:  # noqa: PYI034 - typing.Self needs Python 3.11; the project supports 3.10
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def ensure_dataset(args: argparse.Namespace) -> Path:
    if args.dataset:
        return Path(args.dataset)
    ds = Path(args.work) / "ml-100k"
    for cmd in (["prepare", "movielens", str(args.data), "--out", str(ds)], ["encode", str(ds), "--encoder", "minilm"]):
        if cmd[0] == "prepare" and (ds / "manifest.json").is_file():
            continue
        proc = subprocess.run([sys.executable, "-c", "from interestgym.cli import main; main()", *cmd], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            sys.exit(f"{cmd[0]} failed: {proc.stderr.strip()[-500:]}")
    return ds


def tracker_epochs(dataset: Path, embeddings: str | None, model: str, epochs: int, threads: int) -> dict[str, float]:
    import torch
    from interestgym.agents.sequence.config import SequenceConfig
    from interestgym.agents.sequence.data import (
        decision_sequences,
        item_id_rows,
        training_chunks,
    )
    from interestgym.agents.sequence.models import ModelSpec, build_model
    from interestgym.agents.sequence.scoring import score_replay
    from interestgym.agents.sequence.train import chunk_loss

    config = SequenceConfig(dataset=str(dataset), run_dir="", model=model, embeddings=embeddings, torch_threads=threads)
    torch.set_num_threads(threads)  # --threads, as every other side (the config's default would be 1)
    torch.manual_seed(0)
    train, valid = config.replay_data("train"), config.replay_data("valid")
    seqs, vseqs = decision_sequences(train), decision_sequences(valid)
    rows = item_id_rows(seqs, train.embeddings.shape[0])
    spec = ModelSpec(model=model, n_items=train.embeddings.shape[0], n_id_rows=int(rows.max()) + 1, text_dim=train.dim,
                     window=config.window, hidden=config.hidden, layers=int(config.layers), heads=int(config.heads),
                     dropout=float(config.dropout))
    net = build_model(spec)
    net.items.set_id_rows(rows)
    net.items.set_text_vectors(train.embeddings)
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    walls, cpus, vwalls, vcpus = [], [], [], []
    for epoch in range(epochs):
        rng = np.random.default_rng([0, epoch])
        chunks = training_chunks(seqs, spec.window, rng)
        order = rng.permutation(len(chunks))
        net.train()
        with Timer() as t:
            for s in range(0, len(order), config.batch_size):
                loss, _ = chunk_loss(net, chunks, order[s: s + config.batch_size], torch.device("cpu"), sampled=None, rng=rng)
                opt.zero_grad()
                loss.backward()
                opt.step()
        walls.append(t.wall)
        cpus.append(t.cpu)
        with Timer() as v:
            score_replay(valid, net, seqs=vseqs)
        vwalls.append(v.wall)
        vcpus.append(v.cpu)
    return {"epoch_wall": float(np.median(walls)), "epoch_cpu": float(np.median(cpus)), "valid_wall": float(np.median(vwalls)),
            "valid_cpu": float(np.median(vcpus)), "targets": float(seqs.n_decisions - len(seqs.start)),
            "parameters": float(sum(p.numel() for p in net.parameters()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="A prepared + encoded ml-100k (default: prepare one in --work).")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/ml-100k"))
    parser.add_argument("--work", default="/tmp/interestgym-bench")
    parser.add_argument("--epochs", type=int, default=3, help="Tracker epochs timed per model (median reported).")
    parser.add_argument("--ppo-steps", type=int, default=4096, help="PPO steps timed for the reference (0: skip).")
    parser.add_argument("--dtw", action="store_true", help="Also time the DTW drift against dtaidistance.")
    parser.add_argument("--latency", action="store_true", help="Also time one tracker step (torch eager) per event.")
    parser.add_argument("--embeddings", default=None,
                        help="Embedding name in --dataset (default: its only one; minilm for the dataset prepared here).")
    parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads (pinned, every side)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import load_line, pin_threads

    pin_threads(args.threads)
    print(f"threads pinned to {args.threads}; {load_line('load before')}")
    dataset = ensure_dataset(args)
    embeddings = args.embeddings or (None if args.dataset else "minilm")

    from interestgym.agents.rules import TwoProfileEMAPolicy
    from interestgym.agents.sequence.config import SequenceConfig
    from interestgym.envs.vector import evaluate_policy

    from interestgym.errors import InterestGymError

    try:
        train = SequenceConfig(dataset=str(dataset), run_dir="", embeddings=embeddings).replay_data("train")
    except InterestGymError as exc:  # e.g. a dataset of several embeddings: --embeddings NAME
        sys.exit(f"error: {exc}")
    n_dec = train.n_decisions
    evaluate_policy(train, TwoProfileEMAPolicy(), record_features=False, progress=False)  # warm caches
    with Timer() as t_eval:
        evaluate_policy(train, TwoProfileEMAPolicy(), record_features=False, progress=False)
    refs = {"evaluator pass (two-profile rule)": (t_eval.wall, t_eval.cpu)}
    if args.ppo_steps:
        from interestgym.envs.vector import InterestReplayVecEnv
        from stable_baselines3 import PPO
        from stable_baselines3.common.logger import Logger

        model = PPO("MlpPolicy", InterestReplayVecEnv(train, n_envs=8, seed=0), n_steps=128, batch_size=256, seed=0, verbose=0,
                    device="cpu")
        model.set_logger(Logger(folder=None, output_formats=[]))  # no log: SB3 would leave an empty folder in /tmp
        model.learn(total_timesteps=1024)  # warm-up, untimed: the first rollouts and updates allocate
        with Timer() as t_ppo:
            model.learn(total_timesteps=args.ppo_steps, reset_num_timesteps=True)
        steps = model.num_timesteps
        refs["PPO pass (learn, 8 envs)"] = (t_ppo.wall * n_dec / steps, t_ppo.cpu * n_dec / steps)

    print(f"data: {dataset} ({train.embeddings_name}, d={train.dim}), training users {train.n_users}, decisions {n_dec:,}")
    print(f"{'reference':<40} {'wall s / pass':>14} {'CPU s / pass':>14}")
    for name, (wall, cpu) in refs.items():
        print(f"{name:<40} {wall:>14.2f} {cpu:>14.2f}")
    print()
    header = f"{'tracker':<8} {'params':>9} {'epoch wall s':>13} {'epoch CPU s':>12} {'targets/s':>10} {'valid pass s':>13}"
    header += "".join(f" {'x ' + n.split(' ')[0]:>14}" for n in refs)
    print(header)
    for name in ("gru", "sasrec"):
        r = tracker_epochs(dataset, embeddings, name, args.epochs, args.threads)
        line = (f"{name:<8} {int(r['parameters']):>9,} {r['epoch_wall']:>13.2f} {r['epoch_cpu']:>12.2f} "
                f"{r['targets'] / r['epoch_wall']:>10,.0f} {r['valid_wall']:>13.2f}")
        line += "".join(f" {r['epoch_cpu'] / cpu:>14.3f}" for _, (_, cpu) in refs.items())
        print(line)
    print("(x columns: tracker epoch CPU seconds / reference CPU seconds per pass over the same training decisions)")

    if args.dtw:
        from interestgym.core.dtw import sequence_drift

        vectors = train.embeddings[train.decision_item].astype(np.float64)
        with Timer() as t_mine:
            mine = sequence_drift(vectors, train.decision_user, 5)
        rows = np.nonzero(np.isfinite(mine))[0]
        try:
            from dtaidistance import dtw_ndim
        except ImportError:
            print(f"\nDTW drift of {len(rows):,} decisions (k=5): interestgym {t_mine.wall:.3f} s; dtaidistance not installed")
        else:
            with Timer() as t_lib:
                theirs = np.array([dtw_ndim.distance_fast(np.ascontiguousarray(vectors[r - 9: r - 4]),
                                                          np.ascontiguousarray(vectors[r - 4: r + 1])) for r in rows])
            diff = np.abs(mine[rows] - theirs / (2 * np.sqrt(5))).max()
            print(f"\nDTW drift of {len(rows):,} decisions (k=5, d={train.dim}): interestgym.core.dtw {t_mine.wall:.3f} s, "
                  f"dtaidistance (C, one call per pair) {t_lib.wall:.3f} s: {t_lib.wall / t_mine.wall:.1f}x; "
                  f"largest difference {diff:.2e}")

    if args.latency:
        latency(train, dataset, Path(args.work))
    print(load_line("load after"))


def latency(train, dataset: Path, work: Path) -> None:
    import torch
    from interestgym.agents.sequence.models import ModelSpec, build_model

    from interestgym.core.interest import update_profile

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n_items, d = train.embeddings.shape
    cand = rng.integers(0, n_items, 100)
    x = train.embeddings[cand]
    long_term = train.embeddings[0].copy()
    short_term = train.embeddings[1].copy()

    def product_event() -> None:
        item = train.embeddings[rng.integers(n_items)][None]
        lt = update_profile(long_term[None], item, np.array([0.1]))
        st = update_profile(short_term[None], item, np.array([0.6]))
        _ = 0.5 * (x @ lt[0]) + 0.5 * (x @ st[0])

    def timed(fn, n=2000) -> np.ndarray:
        for _ in range(50):
            fn()
        out = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            fn()
            out[i] = time.perf_counter() - t0
        return out * 1e6

    base = timed(product_event)
    print(f"\nper-event latency, one thread (µs p50 / p99): product numpy update + 100 scores {np.median(base):.1f} / "
          f"{np.percentile(base, 99):.1f}")
    for kind in ("gru", "sasrec"):
        spec = ModelSpec(model=kind, n_items=n_items, n_id_rows=n_items + 1, text_dim=d, layers=1 if kind == "gru" else 2, heads=2)
        net = build_model(spec).eval()
        net.items.set_text_vectors(train.embeddings)
        table = net.items.all_items().detach()
        item = torch.as_tensor(rng.integers(0, n_items, (1, 50)))
        zeros = torch.zeros_like(item)
        length = torch.tensor([50])
        cand_t = torch.as_tensor(cand)

        def step(net=net, item=item, zeros=zeros, length=length, table=table, cand_t=cand_t) -> None:
            with torch.inference_mode():
                h = net.states(item, zeros, zeros, length)
                _ = table[cand_t] @ h[0]

        lat = timed(step, 500)
        print(f"  {kind:<7} window 50 -> state + 100 scores (torch eager): {np.median(lat):.0f} / {np.percentile(lat, 99):.0f} µs "
              f"= {np.median(lat) / np.median(base):.0f}x / {np.percentile(lat, 99) / np.percentile(base, 99):.0f}x the product's")
    exported_latency(dataset, work, base, timed, train.embeddings_name)



def exported_latency(dataset: Path, work: Path, base: np.ndarray, timed, embeddings: str) -> None:
    """Per event in production: the exported tracker (numpy + onnxruntime) updating a user's window and
    scoring 100 candidates, after a one-epoch training run of each model (its speed, not its quality)."""
    from interestgym.agents.sequence.config import SequenceConfig
    from interestgym.agents.sequence.train import train_sequence

    from interestgym.export.tracker import export_tracker
    from interestgym.runtime.tracker import load_tracker_runtime

    rng = np.random.default_rng(1)
    for kind in ("gru", "sasrec"):
        work.mkdir(parents=True, exist_ok=True)
        run = Path(tempfile.mkdtemp(prefix=f"latency-{kind}-", dir=work))
        train_sequence(SequenceConfig(dataset=str(dataset), run_dir=str(run / "run"), model=kind, max_epochs=1, progress_bar=False,
                                      embeddings=embeddings),
                       log=lambda _: None)
        tracker = load_tracker_runtime(export_tracker(run / "run", run / "export").out)
        ids = tracker.item_ids
        window = tracker.new_window()
        for t in range(tracker.window):
            window = tracker.update(window, ids[rng.integers(len(ids))], "rate", t * 60, 5.0)
        cand = [ids[i] for i in rng.integers(0, len(ids), 100)]
        state = {"window": window, "t": tracker.window * 60}

        def event(tracker=tracker, state=state, cand=cand, ids=ids) -> None:
            state["t"] += 60
            state["window"] = tracker.update(state["window"], ids[rng.integers(len(ids))], "rate", state["t"], 5.0)
            tracker.score(state["window"], cand)

        lat = timed(event, 1000)
        print(f"  {kind:<7} exported (onnxruntime, window {tracker.window}): update + state + 100 scores "
              f"{np.median(lat):.0f} / {np.percentile(lat, 99):.0f} µs = {np.median(lat) / np.median(base):.1f}x / "
              f"{np.percentile(lat, 99) / np.percentile(base, 99):.1f}x the product's")


if __name__ == "__main__":
    main()
