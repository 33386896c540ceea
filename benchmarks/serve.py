"""`interestgym serve` under a bounded loopback load, per store, against the runtime called in-process.

What is measured, in one run, on one fixed stream (the first ``--events`` events of the test users,
in time order per user):

* **in-process**: ``ExportedPolicy.update`` with the states in a dict (the runtime called directly,
  one thread), and the same plus the state's bytes round trip a store needs; events/s and p50 / p99
  of one call; ``ExportedPolicy.score`` of 100 candidates for the rank comparison;
* **per store** (``memory://``, ``sqlite:///`` in WAL mode with synchronous=FULL, ``redis://`` on a
  redis-server this script starts): a real ``interestgym serve`` process (one uvicorn worker) on
  127.0.0.1, ``--clients`` client threads (a user belongs to one client, so its events stay in
  order), one event per request (the service's worst case: no batching); events/s (events / wall
  time) and p50 / p99 of the request latency, then ``--ranks`` ``POST /v1/rank`` requests of 100
  candidates. Ratios are service / in-process (latency) and in-process / service (events/s).
* **one hot user** (sqlite and redis, ``--hot-events`` per client, 0 to skip): the ``--clients`` threads each send
  their own events (one per request, all at one time, so every order is in order) for ONE shared user, against the
  reference of the same requests each for the client's own user, on the same server kind; events/s, p50 / p99,
  hot / spread ratios, and the store's optimistic-concurrency retries (``interestgym_store_conflicts_total``: Redis).
  A worker serialises one user's events on a lock of its own before the store, so a hot user should cost about
  what as many users cost.
* **kill -9** (sqlite and redis, unless ``--no-kill``): the same load on a fresh store, the server
  killed with SIGKILL once a third of the events are acknowledged, restarted on the same port; the
  clients re-send what was not answered with the same event ids. Then every user's stored state is
  compared with the in-process one: acknowledged events lost, events applied twice, states that differ.

Threads are pinned (OMP / MKL / OpenBLAS = 1, onnxruntime 1 thread, in this process and the
servers); the load average is printed before and after (client threads, the server and Redis share
the machine's cores: on 2 cores the clients' own Python time is part of every figure). Usage::

    python benchmarks/serve.py                              # ml-100k (../shared/data), hashing, a short PPO run
    python benchmarks/serve.py --export runs/ml/export --items runs/data/ml-100k
    python benchmarks/serve.py --workdir runs/bench-serve   # keeps and reuses the prepared data and export
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported; the server processes inherit it

import argparse
import gc
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_ML100K = ROOT.parent / "shared" / "data" / "ml-100k"


def _cli(argv: list[str]) -> None:
    from interestgym.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        if exc.code:
            raise


def _build(workdir: Path, timesteps: int) -> tuple[Path, Path]:
    """ml-100k (or synthetic data when it is absent) + hashing embeddings + a short PPO run + export."""
    from interestgym.agents.train import TrainConfig, train_run

    from interestgym.export.run import export_run

    dataset, run, export = workdir / "dataset", workdir / "run", workdir / "export"
    if (export / "manifest.json").is_file():
        print(f"reusing {export} and {dataset}", file=sys.stderr)
        return export, dataset
    if not (dataset / "manifest.json").is_file():
        if SHARED_ML100K.is_dir():
            _cli(["prepare", "movielens", str(SHARED_ML100K), "--out", str(dataset)])
        else:
            print(f"{SHARED_ML100K} is missing: using synthetic data", file=sys.stderr)
            _cli(["prepare", "synthetic", "--out", str(dataset), "--users", "400", "--seed", "0"])
        _cli(["encode", str(dataset), "--encoder", "hashing"])
    t0 = time.perf_counter()
    config = TrainConfig(dataset=str(dataset), run_dir=str(run), timesteps=timesteps, n_envs=16, n_steps=64, batch_size=256,
                         n_epochs=2, eval_every=0, checkpoint_every=0, eval_users=50, progress_bar=False, reward_baseline=None)
    train_run(config)
    export_run(run, export, which="final", verify_observations=200)
    print(f"trained a {timesteps}-step PPO run and exported it in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return export, dataset


def _streams(dataset_dir: Path, n_events: int) -> dict[str, list[dict]]:
    """The first ``n_events`` events of the test users (whole users, the last one cut), as request items."""
    from interestgym.data.dataset import Dataset

    ds = Dataset.open(dataset_dir)
    test = set(ds.users_in("test"))
    ev = ds.events[ds.events["user_id"].astype(str).isin(test)]
    out: dict[str, list[dict]] = {}
    for row, e in zip(ev.index[:n_events], ev.head(n_events).itertuples(index=False)):
        out.setdefault(str(e.user_id), []).append({
            "event_id": f"r{row}", "user_id": str(e.user_id), "ts": int(e.ts), "action": str(e.action), "item_id": str(e.item_id),
            "value": float(e.value), "hour": int(e.hour), "weekday": int(e.weekday)})
    return out


def _runtime_event(cat, e: dict):
    from interestgym.runtime import Event

    row = cat.rows([e["item_id"]])[0]
    return Event(e["ts"], e["action"], item_vector=cat.vectors[row] if row >= 0 else None, value=e["value"],
                 category=cat.categories[row] if row >= 0 else "", hour=e["hour"], weekday=e["weekday"])


def _pcts(seconds: list[float]) -> tuple[float, float]:
    a = np.asarray(seconds) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _in_process(policy, cat, streams, rank_bodies) -> dict:
    """The runtime called directly: per-event update (and + bytes round trip), and score of 100."""
    from interestgym.runtime import UserState

    events = [(u, _runtime_event(cat, e)) for u, evs in streams.items() for e in evs]
    out = {}
    for name, round_trip in (("update", False), ("update+bytes", True)):
        states: dict = {}
        lat = []
        t_all = time.perf_counter()
        for u, event in events:
            t = time.perf_counter()
            state = states.get(u)
            if state is None:
                state = policy.new_state()
            elif round_trip:
                state = UserState.from_bytes(state, dim=policy.dim)
            state = policy.update(state, event)
            states[u] = state.to_bytes() if round_trip else state
            lat.append(time.perf_counter() - t)
        out[name] = {"events_s": len(events) / (time.perf_counter() - t_all), "lat": _pcts(lat), "states": states}
    lat = []
    final = out["update"]["states"]
    t_all = time.perf_counter()
    for body in rank_bodies:
        t = time.perf_counter()
        rows = cat.rows(body["candidates"])
        policy.score(final[body["user_id"]], cat.vectors[rows], popularity=cat.popularity[rows],
                     candidate_categories=[cat.categories[j] for j in rows], hour=body["hour"])
        lat.append(time.perf_counter() - t)
    out["rank"] = {"lat": _pcts(lat), "per_s": len(rank_bodies) / (time.perf_counter() - t_all)}
    return out


def _start_redis(workdir: Path) -> tuple[subprocess.Popen | None, str | None]:
    from interestgym.serve.loadgen import free_port

    exe = shutil.which("redis-server")
    if exe is None:
        print("redis-server is not on PATH: the redis store is skipped (apt-get install redis-server)", file=sys.stderr)
        return None, None
    port = free_port()
    # appendonly + fsync always: the durability the sqlite store has with synchronous=FULL
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                             "--appendfsync", "always", "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    for _ in range(250):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"redis-server on port {port} did not answer")


def _serve_load(export: Path, items: Path, store: str, streams, rank_bodies, clients: int, log: Path) -> dict:
    from interestgym.serve.loadgen import ServerProcess, post_many, send_streams

    server = ServerProcess(export, store, args=["--items", str(items)], log=log).start()
    try:
        # warm-up (not timed): other user ids, so the measured stream starts from empty states
        warm = {f"warm-{u}": [{**e, "user_id": f"warm-{u}"} for e in evs[:20]] for u, evs in list(streams.items())[:clients]}
        send_streams(server.url, warm, clients)
        events = send_streams(server.url, streams, clients)
        ranks = post_many(server.url, "/v1/rank", rank_bodies, clients)
    finally:
        server.stop()
    if events.errors or ranks.errors:
        sys.exit(f"{store}: errors under load: {(events.errors + ranks.errors)[:3]}")
    return {"events_s": events.acked / events.seconds, "lat": _pcts(events.latencies), "rank_lat": _pcts(ranks.latencies),
            "rank_s": len(ranks.latencies) / ranks.seconds}


def _hot_user(export: Path, items: Path, store: str, item_id: str, clients: int, per_client: int, hot: bool, log: Path,
              workers: int = 1) -> dict:
    """``clients`` threads, ``per_client`` events each, one per request: for one shared user (``hot``) or each for its own;
    ``workers`` uvicorn worker processes."""
    from interestgym.serve.loadgen import ServerProcess, send_streams

    def body(k: int, j: int) -> dict:
        return {"event_id": f"c{k}-{j}", "user_id": "hot" if hot else f"user-{k}", "ts": 1_000_000, "action": "click", "item_id": item_id}

    streams = {f"c{k}": [body(k, j) for j in range(per_client)] for k in range(clients)}
    server = ServerProcess(export, store, args=["--items", str(items), "--workers", str(workers)], log=log).start()
    try:
        send_streams(server.url, {f"warm-{k}": [{**body(k, j), "user_id": f"warm-{k}", "event_id": f"w{k}-{j}"} for j in range(10)]
                                  for k in range(clients)}, clients)
        import httpx

        before = _conflicts(httpx.get(f"{server.url}/metrics").text)
        result = send_streams(server.url, streams, clients)
        conflicts = _conflicts(httpx.get(f"{server.url}/metrics").text) - before
    finally:
        server.stop()
    if result.errors:
        sys.exit(f"{store}: errors under the hot-user load: {result.errors[:3]}")
    return {"events_s": result.acked / result.seconds, "lat": _pcts(result.latencies), "conflicts": conflicts, "n": result.acked}


def _conflicts(metrics_text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines() if line.startswith("interestgym_store_conflicts_total"))


def _kill_check(export: Path, items: Path, store: str, streams, expected: dict, clients: int, log: Path) -> str:
    from interestgym.runtime import UserState
    from interestgym.serve.loadgen import ServerProcess, send_streams
    from interestgym.serve.stores import open_store

    total = sum(map(len, streams.values()))
    server = ServerProcess(export, store, args=["--items", str(items)], log=log).start()
    kill_at = threading.Event()
    timing: dict[str, float] = {}

    def killer() -> None:
        kill_at.wait()
        server.kill9()
        t = time.perf_counter()
        server.start()
        timing["restart_s"] = time.perf_counter() - t

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        result = send_streams(server.url, streams, clients, deadline_s=600,
                              on_ack=lambda n: kill_at.set() if n >= total // 3 else None)
    finally:
        kill_at.set()
        thread.join()
        server.stop()
    if result.errors:
        return f"errors: {result.errors[:3]}"
    reopened = open_store(store)
    lost = twice = differ = 0
    for user, events in streams.items():
        blob, _ = reopened.user_info(user)
        got = UserState.from_bytes(blob) if blob is not None else None
        n = got.counter("n_events") if got is not None else 0
        lost += max(len(events) - n, 0)
        twice += max(n - len(events), 0)
        differ += got is None or got != expected[user]
    reopened.close()
    dup = result.count("duplicate")
    return (f"{result.acked:,} of {total:,} events acknowledged; killed after {total // 3:,}, restarted in "
            f"{timing.get('restart_s', float('nan')):.1f} s; {result.failed_attempts} attempts failed and were re-sent, "
            f"{dup} of them answered 'duplicate' (applied before the kill, reply lost) -> acknowledged events lost: {lost}, "
            f"applied twice: {twice}, user states differing from in-process: {differ} of {len(streams)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=None, help="export directory (default: build one in --workdir)")
    parser.add_argument("--items", type=Path, default=None, help="its dataset folder (events and items); needed with --export")
    parser.add_argument("--workdir", type=Path, default=None, help="keep and reuse the prepared data, run and export here")
    parser.add_argument("--timesteps", type=int, default=4096, help="PPO steps of the short run trained without --export")
    parser.add_argument("--events", type=int, default=2000, help="events sent to each store (one per request)")
    parser.add_argument("--ranks", type=int, default=300, help="rank requests (100 candidates each) per store")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    parser.add_argument("--stores", default="memory,sqlite,redis", help="comma-separated: memory, sqlite, redis")
    parser.add_argument("--hot-events", type=int, default=100, help="events per client for the one-hot-user check (0: skip it)")
    parser.add_argument("--hot-workers", type=int, default=1, help="uvicorn worker processes of the one-hot-user check's servers")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill -9 check")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="interestgym-bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    redis_proc = None
    try:
        if args.export is None:
            export, items = _build(workdir, args.timesteps)
        else:
            if args.items is None:
                sys.exit("--export needs --items DATASET_DIR (the events sent come from its test users)")
            export, items = args.export, args.items
        redis_proc, redis_url = _start_redis(workdir) if "redis" in args.stores else (None, None)
        _measure(args, export, items, workdir, redis_url)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _measure(args: argparse.Namespace, export: Path, items: Path, workdir: Path, redis_url: str | None) -> None:
    from interestgym.runtime import load_policy
    from interestgym.serve.catalogue import load_catalogue

    policy = load_policy(export, threads=1)
    cat = load_catalogue(items)
    streams = _streams(items, args.events)
    n = sum(map(len, streams.values()))
    rng = np.random.default_rng(0)
    users = list(streams)
    rank_bodies = [{"user_id": users[i % len(users)], "candidates": [cat.item_ids[j] for j in rng.choice(len(cat), 100, replace=False)],
                    "hour": int(rng.integers(24))} for i in range(args.ranks)]
    gc.collect()
    gc.freeze()  # pandas' objects: keep full GC passes out of the in-process timings
    base = _in_process(policy, cat, streams, rank_bodies)
    print(f"data: {Path(items).name}, encoder {policy.encoder['name']} d={policy.dim}, {n:,} events of {len(streams)} test users, "
          f"{args.clients} clients, 1 server worker, 1 onnxruntime thread, one event per request")
    ref = base["update"]
    print("ratios against the in-process update: latency = this / in-process, throughput = in-process events/s / this")
    print(f"{'':36} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>9} {'p99 ratio':>9} {'throughput ratio':>16}")

    def row(name: str, events_s: float, lat: tuple[float, float]) -> None:
        print(f"{name:36} {events_s:9,.0f} {lat[0]:8.3f} {lat[1]:8.3f} {lat[0] / ref['lat'][0]:9.1f} {lat[1] / ref['lat'][1]:9.1f} "
              f"{ref['events_s'] / events_s:16.1f}")

    row("in-process runtime update", ref["events_s"], ref["lat"])
    row("in-process update + bytes round trip", base["update+bytes"]["events_s"], base["update+bytes"]["lat"])
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{workdir / 'bench-load.db'}", "redis": redis_url and f"{redis_url}?prefix=load{time.time_ns()}:"}
    served = {}
    for kind in args.stores.split(","):
        url = urls.get(kind)
        if url is None:
            continue
        if kind == "sqlite":
            for p in workdir.glob("bench-load.db*"):
                p.unlink()
        served[kind] = _serve_load(export, items, url, streams, rank_bodies, args.clients, workdir / f"server-{kind}.log")
        row(f"served, {kind} store", served[kind]["events_s"], served[kind]["lat"])
    r = base["rank"]["lat"]
    print(f"rank, 100 candidates: in-process p50 / p99 {r[0]:.3f} / {r[1]:.3f} ms; " + "; ".join(
        f"{kind} {s['rank_lat'][0]:.2f} / {s['rank_lat'][1]:.2f} ms ({s['rank_lat'][0] / r[0]:.0f}x / {s['rank_lat'][1] / r[1]:.0f}x), "
        f"{s['rank_s']:,.0f} ranks/s" for kind, s in served.items()))
    if args.hot_events > 0:
        item = cat.item_ids[0]
        for kind in ("sqlite", "redis"):
            if kind not in args.stores.split(",") or (kind == "redis" and redis_url is None):
                continue
            got = {}
            for hot in (False, True):
                url = f"sqlite:///{workdir / f'bench-hot-{hot}.db'}" if kind == "sqlite" else f"{redis_url}?prefix=hot{hot}{time.time_ns()}:"
                for p in workdir.glob(f"bench-hot-{hot}.db*"):
                    p.unlink()
                got[hot] = _hot_user(export, items, url, item, args.clients, args.hot_events, hot, workdir / f"server-hot-{kind}.log",
                                     workers=args.hot_workers)
            spread, one = got[False], got[True]
            print(f"one hot user, {kind}, {args.hot_workers} worker(s): {args.clients} clients x {args.hot_events} events; "
                  "each client its own user "
                  f"{spread['events_s']:,.0f} events/s, p50 / p99 {spread['lat'][0]:.2f} / {spread['lat'][1]:.2f} ms, "
                  f"{spread['conflicts']:.0f} store retries; all for one user {one['events_s']:,.0f} events/s, p50 / p99 "
                  f"{one['lat'][0]:.2f} / {one['lat'][1]:.2f} ms, {one['conflicts']:.0f} store retries "
                  f"({one['conflicts'] / one['n']:.2f} per event); hot / spread: throughput {one['events_s'] / spread['events_s']:.2f}x, "
                  f"p99 {one['lat'][1] / spread['lat'][1]:.2f}x")
    if args.no_kill:
        return
    expected = base["update"]["states"]
    for kind in ("sqlite", "redis"):
        if kind not in args.stores.split(",") or (kind == "redis" and redis_url is None):
            continue
        url = f"sqlite:///{workdir / 'bench-kill.db'}" if kind == "sqlite" else f"{redis_url}?prefix=kill{time.time_ns()}:"
        for p in workdir.glob("bench-kill.db*"):
            p.unlink()
        print(f"kill -9, {kind}: " + _kill_check(export, items, url, streams, expected, args.clients, workdir / f"server-kill-{kind}.log"))


if __name__ == "__main__":
    main()
