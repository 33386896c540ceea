"""Stored user states: sparse category fields against the dense layout, in size and in a service's events/s.

A user state keeps its category counts as dense rows over the export's whole category list (what the core
computes with): with the Taobao sample's 2,083 categories, counts + 4 per-slot copies are ~83 KB a user, nearly
all zeros. The byte codec (``interestgym.runtime.codec``, version 2) stores such a field as (position, value)
pairs. This script measures, on one export and its dataset, in one run:

* **size**: every test user's final state (the runtime's ``update`` over the user's events), ``to_bytes()`` with
  sparse fields and with the dense layout (the codec's threshold raised so no field is sparse: the version-1 bytes);
* **encode + decode** of those states, per state, both layouts, alternately (``--repeats`` rounds, medians);
* **a service applying events** (``InterestService.apply``, one event per call, in process: no HTTP) on SQLite
  (synchronous=FULL) and on a Redis this script starts (appendonly, appendfsync always), both layouts, alternately:
  events/s, ratios against the dense layout of the same store measured in the same run; the events are the first
  ``--events`` of the dataset's log in (user, time) order, whatever the users' split (a service sees everyone).
  The dense layout goes first in each round and nothing is warmed up: read the medians over ``--repeats`` rounds.

    python benchmarks/state_codec.py EXPORT DATASET [--events 3000] [--repeats 2]

For the Taobao sample: prepare it and train as the README says (cooc embeddings), export the run, then pass the
export folder and the dataset folder.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_line, median, pin_threads


def _states(export: Path, dataset: Path):
    import numpy as np

    from interestgym.data.dataset import Dataset
    from interestgym.runtime import Event, load_policy

    policy = load_policy(export, threads=1)
    ds = Dataset.open(dataset)
    emb = np.load(Path(dataset) / "embeddings" / f"{policy.encoder['name']}.npy")
    items = ds.items
    index = {str(i): k for k, i in enumerate(items["item_id"])}
    cats = items["category"].fillna("").astype(str).to_numpy()
    users = ds.users
    test = set(users.loc[users["split"] == "test", "user_id"].astype(str))
    ev = ds.events[ds.events["user_id"].astype(str).isin(test)].sort_values(["user_id", "ts"], kind="stable")
    states: dict[str, object] = {}
    for row in ev.itertuples(index=False):
        u, k = str(row.user_id), index.get(str(row.item_id), -1)
        states[u] = policy.update(states.get(u) or policy.new_state(), Event(
            ts=int(row.ts), action=str(row.action), item_vector=emb[k] if k >= 0 else None, value=float(row.value),
            category=str(cats[k]) if k >= 0 else ""))
    return policy, ds, list(states.values())


def _wait_for_redis(port: int, timeout: float = 10.0) -> None:
    """Until the server answers PING on loopback (a fixed sleep raced a slow start)."""
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"redis-server on port {port} did not answer PING within {timeout:g} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--events", type=int, default=3000, help="events applied per store and layout")
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of each measure")
    args = parser.parse_args()
    pin_threads(1)
    print(load_line("load before"))
    import numpy as np

    from interestgym.runtime import codec
    from interestgym.serve.loadgen import free_port
    from interestgym.serve.schemas import BehaviourEvent
    from interestgym.serve.service import InterestService, ServeConfig

    sparse_min = codec._SPARSE_MIN_SIZE
    layouts = {"dense": 10**18, "sparse": sparse_min}  # the threshold: no field is sparse / the codec's own

    policy, ds, states = _states(args.export, args.dataset)
    print(f"export {args.export} ({len(policy.categories):,} categories, d={policy.dim}); {len(states)} test users' final states")
    sizes, codec_s = {}, {name: [] for name in layouts}
    for _ in range(args.repeats):
        for name, threshold in layouts.items():
            codec._SPARSE_MIN_SIZE = threshold
            blobs = [s.to_bytes() for s in states]
            sizes[name] = [len(b) for b in blobs]
            t = time.perf_counter()
            for s in states:
                type(s).from_bytes(s.to_bytes())
            codec_s[name].append((time.perf_counter() - t) / len(states))
    for name in layouts:
        print(f"  {name:6} state bytes: median {np.median(sizes[name]):9,.0f}, max {max(sizes[name]):9,}; "
              f"encode + decode {median(codec_s[name]) * 1e6:6.0f} us a state")
    print(f"  sparse / dense: size {np.median(sizes['sparse']) / np.median(sizes['dense']):.3f}x (median), "
          f"encode + decode {median(codec_s['sparse']) / median(codec_s['dense']):.2f}x")

    ev = ds.events.sort_values(["user_id", "ts"], kind="stable").head(args.events)
    events = [BehaviourEvent(event_id=f"e{k}", user_id=str(r.user_id), ts=int(r.ts), action=str(r.action), item_id=str(r.item_id))
              for k, r in enumerate(ev.itertuples(index=False))]
    work = Path(tempfile.mkdtemp(prefix="ig-state-codec-"))
    redis = shutil.which("redis-server")
    proc = None
    stores = {"sqlite": lambda tag: f"sqlite:///{work / tag}.db"}
    if redis:
        port = free_port()
        proc = subprocess.Popen([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
                                 "--appendfsync", "always", "--dir", str(work)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_for_redis(port)
        stores["redis"] = lambda tag: f"redis://127.0.0.1:{port}/0?prefix={tag}:"
    else:
        print("redis-server is not on PATH: the redis store is skipped", file=sys.stderr)
    rates: dict[tuple[str, str], list[float]] = {}
    try:
        for k in range(args.repeats):
            for name, threshold in layouts.items():
                codec._SPARSE_MIN_SIZE = threshold
                for kind, url in stores.items():
                    service = InterestService.open(ServeConfig(export=str(args.export), store=url(f"{name}{k}"),
                                                               items=str(args.dataset)), install=True)
                    t = time.perf_counter()
                    for e in events:
                        service.apply([e])
                    rates.setdefault((kind, name), []).append(len(events) / (time.perf_counter() - t))
                    service.close()
    finally:
        codec._SPARSE_MIN_SIZE = sparse_min
        if proc is not None:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"service, one event per apply (no HTTP), {len(events):,} events, medians of {args.repeats} alternating rounds:")
    for kind in stores:
        dense, sparse = median(rates[(kind, "dense")]), median(rates[(kind, "sparse")])
        print(f"  {kind:6} dense {dense:7,.0f} events/s, sparse {sparse:7,.0f} events/s: {sparse / dense:.2f}x")
    print(load_line("load after"))


if __name__ == "__main__":
    main()
