"""Benchmark: per-event cost in production of a policy whose score weighs a sequence tracker, against the
same policy without the tracker term, in one run (interleaved).

Takes an export written by ``interestgym export RUN`` for a run whose shipped policy weighs a tracker
(e.g. the tracker/profile mixture ``context_rule+tracker`` on MovieLens-100K) and the dataset it was
trained on. Per event, one user: ``policy.update(state, event)`` (a decision: profiles, statistics, the
tracker's window) then ``policy.score(state, 100 candidates)`` (profiles + popularity + the tracker's
state and scores, standardised). The reference is the same export with the tracker detached (the rule
alone: today's runtime path), or ``--reference EXPORT`` (for an agent that observes the tracker, which
cannot run without it), timed in alternating blocks so that machine load hits both sides alike.
Prints p50 / p99 in µs and their ratios, the load average, threads pinned to one.

    interestgym export RUN --out /tmp/mix-export
    python benchmarks/tracker_policy.py /tmp/mix-export runs/data/ml-100k [--events 2000]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import load_line, pin_threads, thread_pools


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected a whole number >= 1")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--events", type=positive_int, default=2000, help="timed events per side")
    ap.add_argument("--candidates", type=positive_int, default=100)
    ap.add_argument("--block", type=positive_int, default=100, help="events per alternating block")
    ap.add_argument("--reference", type=Path, default=None,
                    help="another export to compare with (default: EXPORT with its tracker detached, which needs an "
                         "export that does not observe the tracker)")
    args = ap.parse_args()
    pin_threads(1, torch=False)  # the runtime is torch-free: torch is not loaded for it
    print(f"threads pinned to 1 (BLAS / OpenMP pools: {thread_pools()}); {load_line('load before')}")

    from interestgym.data.dataset import Dataset
    from interestgym.errors import InterestGymError
    from interestgym.runtime import Event, load_policy

    try:
        with_tracker = load_policy(args.export)
        without = load_policy(args.reference) if args.reference is not None else None
        dataset = Dataset.open(args.dataset)
        emb, meta = dataset.load_embeddings(with_tracker.encoder.get("embeddings"))
    except InterestGymError as exc:
        sys.exit(f"benchmark: {exc}")
    if with_tracker.tracker is None:
        sys.exit(f"{args.export}: this export's score weighs no tracker; expected one (e.g. a `<rule>+tracker` mixture)")
    ids = dataset.items["item_id"].astype(str).tolist()
    if ids != with_tracker.item_ids:
        # another dataset's items: the tracker knows none (or few) of them, its window never moves and its score term
        # is 0, so the ratio would time a tracker that does nothing
        known = sum(1 for i in ids if i in with_tracker.tracker.row)
        sys.exit(f"{args.dataset}: its {len(ids):,} items are not the export's ({len(with_tracker.item_ids):,} items of "
                 f"{(with_tracker.manifest.get('provenance', {}).get('dataset') or {}).get('path')}); the tracker knows {known:,} of them. Give the "
                 "dataset the export was made from")
    try:
        with_tracker.check_encoder(meta.get("fingerprint"))
    except InterestGymError as exc:
        sys.exit(f"{args.dataset} embeddings {with_tracker.encoder.get('embeddings')!r}: {exc}")
    if not with_tracker.scoring.get("tracker_weight") and "tracker_change" not in (with_tracker.change_names or ()):
        print(f"note: {args.export} weighs its tracker 0 and has no lever on that weight (its tuning found the mixture no "
              "better than the rule): the tracker's window is kept and its scores computed, but they do not move the "
              "ranking; the ratio is the tracker's cost, not that of a policy that uses it", file=sys.stderr)
    if without is not None:
        if without.tracker is not None:
            print(f"note: the reference {args.reference} weighs a tracker too: the ratio compares two policies that both "
                  "carry one, not the tracker's cost (give a reference without a tracker for that)", file=sys.stderr)
        if without.item_ids != with_tracker.item_ids:
            sys.exit(f"{args.reference}: exported from other items than {args.export}; expected an export of the same dataset")
    elif with_tracker.extra_obs:
        sys.exit(f"{args.export}: this policy observes the tracker, so it cannot run with the tracker detached; "
                 "give --reference EXPORT (e.g. the same run's rule, exported without a tracker)")
    else:
        without = copy.copy(with_tracker)
        without.tracker = None  # the same rule, scoring, encoder and data files; no tracker term, no window
    cats = dataset.items["category"].fillna("").astype(str).tolist()
    # the events timed: ratings of 5 (MovieLens' decisions); a dataset whose rule makes them no decisions would time
    # a tracker that never moves: refused (every dataset's action weights hold "rate", with its own weight)
    action = "rate"
    if not with_tracker._is_decision(Event(ts=0, action=action, value=5.0, item_vector=emb[0], category=cats[0], item_id=ids[0])):
        sys.exit(f"{args.dataset}: a rating of 5 is no decision under this export's rule (action weight "
                 f"{with_tracker.action_weights.get(action)}); the benchmark times rated events: give a dataset where they are "
                 "decisions (e.g. MovieLens)")
    rng = np.random.default_rng(0)
    n = len(ids)

    def warm_state(policy):
        state = policy.new_state()
        for t in range(60):  # a user with history: a full tracker window (50 by default)
            i = int(rng.integers(n))
            state = policy.update(state, Event(ts=1_000_000 + 60 * t, action=action, value=5.0, item_vector=emb[i],
                                               category=cats[i], item_id=ids[i]))
        return state

    sides = {"with tracker": [with_tracker, warm_state(with_tracker), []], "reference": [without, warm_state(without), []]}
    clock = {"t": 1_000_000 + 3600}

    def one_event(side) -> float:
        policy, state, _ = side
        i = int(rng.integers(n))
        cand = rng.integers(0, n, args.candidates)
        cand_ids, cand_cats, cand_vectors = [ids[c] for c in cand], [cats[c] for c in cand], emb[cand]  # untimed: a service has them
        clock["t"] += 60
        event = Event(ts=clock["t"], action=action, value=5.0, item_vector=emb[i], category=cats[i], item_id=ids[i])
        t0 = time.perf_counter()
        state = policy.update(state, event)
        policy.score(state, cand_vectors, cand_ids, candidate_categories=cand_cats, hour=12)
        elapsed = time.perf_counter() - t0
        side[1] = state
        return elapsed

    for side in sides.values():  # warm-up
        for _ in range(50):
            one_event(side)
    done = 0
    while done < args.events:
        block = min(args.block, args.events - done)  # --events per side exactly, whatever the block
        for side in sides.values():
            side[2].extend(one_event(side) for _ in range(block))
        done += block
    print(f"{args.events} events per side, update + score of {args.candidates} candidates, one user, alternating blocks of {args.block}")
    stats = {}
    for name, (_, _, times) in sides.items():
        us = np.array(times) * 1e6
        stats[name] = (np.median(us), np.percentile(us, 99))
        print(f"  {name:<13} p50 {stats[name][0]:7.1f} µs   p99 {stats[name][1]:7.1f} µs")
    a, b = stats["with tracker"], stats["reference"]
    print(f"ratio with the tracker / reference: p50 {a[0] / b[0]:.2f}x, p99 {a[1] / b[1]:.2f}x")
    print(load_line("load after"))


if __name__ == "__main__":
    main()
