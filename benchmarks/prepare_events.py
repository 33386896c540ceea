"""Benchmark: ``prepare events`` on a generated 1,000,000-row log, against pyarrow's own CSV read.

One run, one machine, sides timed alternately (``--repeats`` rounds after ``--warmup`` untimed ones:
the first call of each side pays for Arrow's kernels and memory pool warming up), medians, threads pinned; on a
busy shared machine ``--clock cpu`` times each side by its own CPU time (``time.process_time``: one
thread pinned, so CPU time is the work done), which other jobs disturb far less than wall time:

* **reference**: ``pyarrow.csv.read_csv`` of the same file (every column as text, as a reader must
  see it before checking it): the time any columnar reader needs just to parse the bytes;
* **columnar**: ``read_events(..., reader="columnar")``: every check of the line reader, every bad
  row reported with file, line and reason, items built from the events;
* **lines**: ``read_events(..., reader="lines")``, the line reader (once: it takes seconds);
* **prepare**: the whole ``prepare_events`` (read + sort + split + write the dataset) with the
  columnar reader, once.

Then it checks that both readers give the same dataset: events / items / users parquet bytes,
rejects.jsonl, and manifest.json. The log is Taobao-like (``user,item,category,behavior,ts``, no
header) with ``--bad`` malformed rows mixed in (bad action, time, field count, duplicates, blank
lines, quoted fields, control characters, invalid UTF-8), so both readers' reject paths run, and a few good rows that
raise notes (a time with a UTC offset, an item id written as a float).

    python benchmarks/prepare_events.py                 # 1M rows, 0.1% bad, 3 rounds, 1 thread
    python benchmarks/prepare_events.py --rows 200000 --threads 2
    python benchmarks/prepare_events.py --clock cpu     # a loaded machine: CPU time of each side
    python benchmarks/prepare_events.py --format parquet --clock cpu   # a Parquet log, against pyarrow's read_table
    python benchmarks/prepare_events.py --format jsonl --clock cpu     # its rows as JSON Lines, against read_json

With ``--format parquet`` the log is a Parquet file of typed columns (integer ids, category and time; the action as
text; nulls, unknown actions, times in the wrong unit, duplicates), the reference is ``pyarrow.parquet.read_table``,
and the columnar side is the Parquet reader (:mod:`interestgym.data.fast_parquet`). ``--format jsonl`` writes the same
rows as JSON Lines; the reference is ``pyarrow.json.read_json`` (which infers each column's type and reports no bad
line: no reader of this contract), the columnar side :mod:`interestgym.data.fast_jsonl`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import interleaved, load_line, median, pin_threads, ratio_line

COLUMNS = ["user_id", "item_id", "category", "action", "ts"]
ACTIONS = {"pv": "view", "cart": "add_to_cart", "fav": "like", "buy": "purchase"}


def generate(path: Path, rows: int, bad: float, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    users = rng.integers(1, rows // 100 + 2, rows)
    items = rng.integers(1, max(rows // 2, 2), rows)
    cats = items % 5000 + 1000
    acts = rng.choice(np.array(["pv", "cart", "fav", "buy"]), rows, p=[0.85, 0.07, 0.05, 0.03])
    ts = 1511544070 + rng.integers(0, 9 * 86400, rows)
    lines = [f"{u},{i},{c},{a},{t}".encode() for u, i, c, a, t in
             zip(users.tolist(), items.tolist(), cats.tolist(), acts.tolist(), ts.tolist())]
    broken = [b"1,2,3,clik,1511544070", b"1,2,3,pv,1511544070000", b"1,2,3,pv,", b",2,3,pv,1511544070", b"1,2,3,pv",
              b"", b'1,"2,x",3,pv,1511544070', b"1,2\x00,3,pv,1511544070", b"1,2,3,pv,15115\xc3\x28", b" 1 ,2,3,pv,1511544070",
              b"1,2,3,pv,2017-11-25T12:00:00",
              # good rows that take the readers' notes: a zoned time, an id written as a float
              b"1,2,3,pv,2017-11-25T20:00:00+08:00", b"1,2268318.0,3,pv,1511544070"]
    for k, at in enumerate(rng.choice(rows, int(rows * bad), replace=False).tolist()):
        lines[at] = broken[k % len(broken)] if k % 3 else lines[max(at - 1, 0)]  # a third are duplicates
    path.write_bytes(b"\n".join(lines) + b"\n")


def generate_parquet(path: Path, rows: int, bad: float, seed: int = 0) -> None:
    """The same kind of log as a Parquet file of typed columns (integer ids, category and time; the action as text),
    with ``bad`` of its rows malformed (unknown action, a time in milliseconds or out of range, a missing id or time)
    or duplicated (a third of them), and a few good rows with a fractional time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = rng.integers(1, rows // 100 + 2, rows)
    items = rng.integers(1, max(rows // 2, 2), rows)
    cats = items % 5000 + 1000
    acts = rng.choice(np.array(["pv", "cart", "fav", "buy"]), rows, p=[0.85, 0.07, 0.05, 0.03]).astype(object)
    ts = (1511544070 + rng.integers(0, 9 * 86400, rows)).astype(np.float64)
    user_null = np.zeros(rows, dtype=bool)
    ts_null = np.zeros(rows, dtype=bool)
    for k, at in enumerate(rng.choice(rows, int(rows * bad), replace=False).tolist()):
        kind = k % 6
        if kind in (0, 3):  # a duplicate of the row before it
            src = max(at - 1, 0)
            users[at], items[at], cats[at], acts[at], ts[at] = users[src], items[src], cats[src], acts[src], ts[src]
            user_null[at], ts_null[at] = user_null[src], ts_null[src]
        elif kind == 1:
            acts[at] = "clik"
        elif kind == 2:
            ts[at] = ts[at] * 1000 if k % 4 else 5.0
        elif kind == 4:
            user_null[at] = True
        else:
            ts_null[at] = bool(k % 4)
            ts[at] += 0.5
    pq.write_table(pa.table({
        "user_id": pa.array(users, mask=user_null), "item_id": pa.array(items), "category": pa.array(cats),
        "action": pa.array(acts, pa.string()), "ts": pa.array(ts, mask=ts_null)}), path)


def generate_jsonl(path: Path, rows: int, bad: float, seed: int = 0) -> None:
    """The Parquet log's rows (:func:`generate_parquet`) as JSON Lines, one object per line (nulls as JSON null)."""
    import json

    import pyarrow.parquet as pq

    typed = path.with_suffix(".parquet")
    if not typed.is_file():
        generate_parquet(typed, rows, bad, seed)
    table = pq.read_table(typed).to_pylist()
    dumps = json.dumps
    path.write_text("".join(dumps({k: v for k, v in row.items()}) + "\n" for row in table), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bad", type=float, default=0.001, help="fraction of malformed rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds of both sides before the timed ones")
    ap.add_argument("--threads", type=int, default=1, help="threads of Arrow / BLAS / torch, both sides")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--format", choices=["csv", "parquet", "jsonl"], default="csv",
                    help="parquet: a log of typed columns, against pyarrow.parquet.read_table; jsonl: the same rows as JSON "
                         "Lines, against pyarrow.json.read_json")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: perf_counter; cpu: process_time (with --threads 1, the work done, whatever the load)")
    args = ap.parse_args()
    pin_threads(args.threads)
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    from interestgym.data.events import EventsOptions, prepare_events, read_events
    from interestgym.data.validate import RejectLog

    work = args.work or Path(tempfile.mkdtemp(prefix="ig-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    parquet, jsonl = args.format == "parquet", args.format == "jsonl"
    log_path = work / f"log{args.rows}-{args.bad:g}.{args.format}"
    if not log_path.is_file():
        {"csv": generate, "parquet": generate_parquet, "jsonl": generate_jsonl}[args.format](log_path, args.rows, args.bad)
    print(f"log: {log_path} ({log_path.stat().st_size / 1e6:.1f} MB, {args.rows:,} rows, {args.bad:.2%} malformed); "
          f"threads pinned to {args.threads} (Arrow cpu count {pa.cpu_count()})")
    print(load_line("load before"))

    def options(reader: str) -> EventsOptions:
        return EventsOptions(columns=None if parquet or jsonl else COLUMNS, actions=ACTIONS, item_text="category {category}", reader=reader)

    def pyarrow_read() -> None:
        if parquet:
            pq.read_table(log_path, use_threads=args.threads > 1)
            return
        if jsonl:
            pjson.read_json(log_path, read_options=pjson.ReadOptions(use_threads=args.threads > 1))
            return
        pcsv.read_csv(log_path, read_options=pcsv.ReadOptions(column_names=COLUMNS, use_threads=args.threads > 1),
                      parse_options=pcsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
                      convert_options=pcsv.ConvertOptions(column_types=dict.fromkeys(COLUMNS, pa.binary())))

    out: dict[str, object] = {}

    def columnar() -> None:
        log = RejectLog()
        out["columnar"] = (read_events(log_path, log, options("columnar")), log)

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"clock: {args.clock} ({clock.__name__})")
    reference = {"csv": "pyarrow.csv.read_csv", "parquet": "pyarrow.parquet.read_table", "jsonl": "pyarrow.json.read_json"}[args.format]
    sides = {reference: pyarrow_read, "read_events columnar": columnar}
    for _ in range(args.warmup):
        for side in sides.values():
            side()
    times = interleaved(sides, args.repeats, clock=clock)
    t0 = clock()
    line_log = RejectLog()
    line_out = read_events(log_path, line_log, options("lines"))
    times["read_events lines (once)"] = [clock() - t0]
    ref = times[reference]
    for name, secs in times.items():
        print(ratio_line(name, secs, "pyarrow", ref))
    print(f"columnar reader: {median(ref) / median(times['read_events columnar']) * args.rows / median(ref) / 1e6:.2f} M rows/s; "
          f"line reader / columnar: {median(times['read_events lines (once)']) / median(times['read_events columnar']):.1f}x")

    data, log = out["columnar"]  # type: ignore[misc]
    same = (data.events.equals(line_out.events) and data.items.equals(line_out.items) and data.reader == line_out.reader
            and data.counts == line_out.counts and data.time_offsets == line_out.time_offsets
            and log.rejects == line_log.rejects and log.report() == line_log.report())
    print(f"read_events: columnar == lines (events, items, counts, reader, time offsets, rejects, report with its notes): {same}; "
          f"{len(log.rejects):,} rejected / duplicate rows")

    datasets = {}
    for reader in ("columnar", "lines"):
        ds = work / f"ds-{reader}"
        shutil.rmtree(ds, ignore_errors=True)
        t0 = clock()
        prepare_events(log_path, ds, options=options(reader), max_reject_rate=1.0, command=["bench"], deterministic=True)
        datasets[reader] = (ds, clock() - t0)
    for reader, (_, secs) in datasets.items():
        print(f"prepare_events ({reader}), whole command: {secs:.2f} s = {secs / median(ref):.1f}x pyarrow's read")
    files = ["events.parquet", "items.parquet", "users.parquet", "rejects.jsonl", "manifest.json"]
    verdict = {f: (datasets["columnar"][0] / f).read_bytes() == (datasets["lines"][0] / f).read_bytes() for f in files}
    print("dataset bytes identical:", ", ".join(f"{f} {ok}" for f, ok in verdict.items()))
    print(load_line("load after"))
    if not same or not all(verdict.values()):
        sys.exit("the columnar reader differs from the line reader")


if __name__ == "__main__":
    main()
