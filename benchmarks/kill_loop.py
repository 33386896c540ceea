"""kill -9 at random times during prepare --overwrite, encode and train; every rerun must succeed.

For each stage the script runs it once uninterrupted (the reference), then ``--kills`` times starts
it, sends SIGKILL after a random delay, and reruns it to the end (train with ``--resume``). After every
rerun it checks that the outputs are the reference's bytes (the folder a kill left is judged by the rerun
that has to read it; a kill that lands after the stage finished is counted, not a kill):

* prepare: events / items / users parquet and the manifest minus ``created`` (the dataset folder is
  swapped in whole, so a kill leaves the old dataset or the new one);
* encode: the embedding matrix (the cache makes a rerun finish the job);
* train: the rerun reaches the target step from the last intact checkpoint, its best / final folders
  verify (checksums), ``shipped.json`` exists, and the final model's weights (the tensors in SB3's zip;
  its other entries hold addresses and times that differ between any two runs) are the uninterrupted
  run's: a checkpoint keeps the env's replay and the random states (``agents.resume_state``).

Usage: ``python benchmarks/kill_loop.py --kills 10 --workdir /tmp/killloop`` (loopback only, bounded:
kills x stages runs of a few seconds each).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

CLI = [sys.executable, "-c", "from interestgym.cli import main; main()"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_sha(model_zip: Path) -> str:
    """sha256 of an SB3 model's network weights (its zip's ``policy.pth``): what two runs that learnt alike share."""
    with zipfile.ZipFile(model_zip) as zf:
        return hashlib.sha256(zf.read("policy.pth")).hexdigest()


def dataset_digest(folder: Path) -> dict[str, str]:
    out = {name: sha(folder / name) for name in ("events.parquet", "items.parquet", "users.parquet")}
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.pop("created", None)
    out["manifest"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return out


def run(args: list[str], *, kill_after: float | None = None) -> int | None:
    """Run the CLI; with ``kill_after`` send SIGKILL after that many seconds (None if it ended first)."""
    proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {err.strip()[-400:]}")
        return proc.returncode
    try:
        proc.wait(timeout=kill_after)
        return None  # ended before the kill
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return -9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per stage")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/interestgym-killloop"))
    parser.add_argument("--users", type=int, default=800)
    parser.add_argument("--timesteps", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    rng = random.Random(a.seed)
    work = a.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "data"
    prepare = ["prepare", "synthetic", "--out", str(data), "--users", str(a.users), "--seed", "0", "--overwrite"]
    encode = ["encode", str(data), "--encoder", "hashing"]
    train_args = ["train", str(data), "--run-dir", str(work / "run"), "--timesteps", str(a.timesteps), "--n-envs", "8",
                  "--n-steps", "32", "--batch-size", "64", "--eval-every", "512", "--checkpoint-every", "256",
                  "--tune-users", "10", "--eval-users", "20", "--no-progress"]

    t0 = time.perf_counter()
    run(prepare)
    reference = dataset_digest(data)
    killed = 0
    for _ in range(a.kills):
        if run(prepare, kill_after=rng.uniform(1.0, 4.0)) == -9:
            killed += 1
        run(prepare)  # the rerun takes whatever the kill left
        assert dataset_digest(data) == reference, "prepare: rerun bytes differ from the uninterrupted run"
    print(f"prepare --overwrite: {killed}/{a.kills} runs killed; every rerun gave the reference bytes")

    run(encode)
    emb = data / "embeddings" / "hashing.npy"
    reference_emb = sha(emb)
    killed = 0
    for _ in range(a.kills):
        shutil.rmtree(data / "embeddings", ignore_errors=True)
        if run(encode, kill_after=rng.uniform(0.3, 3.0)) == -9:
            killed += 1
        run(encode)
        assert sha(emb) == reference_emb, "encode: rerun bytes differ from the uninterrupted run"
    print(f"encode: {killed}/{a.kills} runs killed; every rerun gave the reference embedding bytes")

    killed = same = 0
    run(train_args)
    reference_final = weights_sha(work / "run" / "final" / "model.zip")
    for k in range(a.kills):
        shutil.rmtree(work / "run", ignore_errors=True)
        if run(train_args, kill_after=rng.uniform(5.0, 25.0)) == -9:
            killed += 1
        resume = ["--resume"] if (work / "run" / "config.json").is_file() else []
        run(train_args + resume)
        info = json.loads((work / "run" / "final" / "info.json").read_text())
        assert info["step"] >= a.timesteps and (work / "run" / "shipped.json").is_file()
        for folder in ("best", "final"):
            for name, digest in json.loads((work / "run" / folder / "info.json").read_text())["files"].items():
                assert sha(work / "run" / folder / name) == digest, f"train: {folder}/{name} fails its checksum"
        same += weights_sha(work / "run" / "final" / "model.zip") == reference_final
        assert same == k + 1, f"train: rerun {k + 1} ended with other weights than the uninterrupted run's"
    print(f"train: {killed}/{a.kills} runs killed; every rerun reached step {a.timesteps} with verified best/ and final/; "
          f"{same}/{a.kills} final models with the uninterrupted run's weights")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
