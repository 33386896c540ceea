"""Small canonical datasets for the core / env tests, written with the real ``write_dataset``.

Not a test module: imported by tests/test_env_*.py (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from interestgym.data.dataset import SplitSpec, item_ids_sha256, write_dataset
from interestgym.data.validate import RejectLog


def write_embeddings(path: Path, matrix: np.ndarray, name: str = "rand") -> None:
    """Write DATASET/embeddings/NAME.npy + NAME.json as ``encode`` does (with the item-id hash)."""
    emb_dir = Path(path) / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    np.save(emb_dir / f"{name}.npy", matrix.astype(np.float32))
    items = pd.read_parquet(Path(path) / "items.parquet")
    meta = {"encoder": "random", "dim": int(matrix.shape[1]), "item_ids_sha256": item_ids_sha256(items["item_id"])}
    (emb_dir / f"{name}.json").write_text(json.dumps(meta))


def write_users(path: Path, users: pd.DataFrame) -> None:
    """Write DATASET/users.parquet with another split of its users, and the manifest's record of it, as `prepare` with
    another split writes them (a users table changed behind the manifest's back is refused)."""
    from interestgym.data.dataset import SPLITS, split_sha256

    users.to_parquet(Path(path) / "users.parquet", index=False)
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    manifest["split"]["users"] = {k: int((users["split"] == k).sum()) for k in SPLITS}
    manifest["split"]["users_sha256"] = split_sha256(users)
    (Path(path) / "manifest.json").write_text(json.dumps(manifest))
    reseal_tables(path)


def reseal_tables(path: Path) -> None:
    """Record the tables' bytes as they are now in the manifest's ``tables_sha256``, as `prepare` records what it wrote:
    a test that writes a table on purpose (a case prepare could write) reaches the checks behind the digest's."""
    from interestgym.io import sha256_file

    manifest = json.loads((Path(path) / "manifest.json").read_text())
    manifest["tables_sha256"] = {p.name: sha256_file(p) for p in sorted(Path(path).iterdir())
                                 if p.is_file() and p.suffix in (".parquet", ".npy")}
    (Path(path) / "manifest.json").write_text(json.dumps(manifest))


def without_table_digests(path: Path) -> None:
    """Drop ``tables_sha256`` from the manifest: a dataset prepared before it was recorded (its tables then meet only the
    row-count, users and content checks)."""
    manifest = json.loads((Path(path) / "manifest.json").read_text())
    manifest.pop("tables_sha256", None)
    (Path(path) / "manifest.json").write_text(json.dumps(manifest))


def make_items(n_items: int, n_categories: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "text": [f"item {i}" for i in range(n_items)],
        "category": [f"c{i % n_categories}" for i in range(n_items)],
        "subcategory": ["" for _ in range(n_items)],
    })


def random_unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    m = rng.standard_normal((n, d)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def make_events(n_users: int, n_items: int, rng: np.random.Generator, *, min_events: int = 4, max_events: int = 30,
                actions: tuple[str, ...] = ("click", "view", "rate", "purchase", "impression")) -> pd.DataFrame:
    rows = []
    seq = 0
    for u in range(n_users):
        n = int(rng.integers(min_events, max_events + 1))
        ts = 1_000_000 + np.sort(rng.integers(0, 30 * 86400, n))
        # a few events share a second (ties resolved by seq)
        if n > 3:
            ts[2] = ts[1]
        for k in range(n):
            action = str(rng.choice(actions))
            value = float(rng.integers(1, 6)) if action == "rate" else 1.0
            rows.append({
                "user_id": f"u{u:03d}", "ts": int(ts[k]), "item_id": f"i{int(rng.integers(n_items))}",
                "action": action, "value": np.float32(value), "hour": np.int8((ts[k] // 3600) % 24),
                "weekday": np.int8(((ts[k] // 86400) + 3) % 7), "seq": seq,
            })
            seq += 1
    df = pd.DataFrame(rows)
    df["ts"] = df["ts"].astype(np.int64)
    df["seq"] = df["seq"].astype(np.int64)
    df["value"] = df["value"].astype(np.float32)
    return df


def make_impressions(events: pd.DataFrame, n_items: int, rng: np.random.Generator, *, per_user: int = 6,
                     n_candidates: int = 8) -> pd.DataFrame:
    """Impressions at random times of each user's span (some at the same ts as events), with a missing
    candidate id now and then and a few unscorable impressions (no click / all clicked)."""
    rows = []
    for user, g in events.groupby("user_id", sort=True):
        times = g["ts"].to_numpy()
        for k in range(per_user):
            ts = int(times[rng.integers(len(times))]) if k % 2 == 0 else int(rng.integers(times.min(), times.max() + 2))
            cands = [f"i{int(c)}" for c in rng.choice(n_items, n_candidates, replace=False)]
            labels = (rng.random(n_candidates) < 0.25).astype(np.int8)
            if k == 0:
                labels[:] = 0  # unscorable: no click
            elif k == 1:
                labels[:] = 1  # unscorable: no unclicked candidate
            elif labels.sum() == 0:
                labels[rng.integers(n_candidates)] = 1
            if k == 3:
                cands[0] = "missing-item"
            rows.append({"impression_id": f"{user}-imp{k}", "user_id": user, "ts": ts,
                         "candidates": cands, "labels": labels.tolist()})
    imp = pd.DataFrame(rows)
    imp["ts"] = imp["ts"].astype(np.int64)
    return imp


def make_dataset(path: Path, *, n_users: int = 24, n_items: int = 60, n_categories: int = 5, dim: int = 16, seed: int = 0,
                 impressions: bool = False, events: pd.DataFrame | None = None,
                 impressions_df: pd.DataFrame | None = None, embeddings: np.ndarray | None = None) -> Path:
    """Write a dataset directory with one embedding ("rand") and return its path."""
    rng = np.random.default_rng(seed)
    items = make_items(n_items, n_categories, rng)
    if events is None:
        events = make_events(n_users, n_items, rng)
    if impressions and impressions_df is None:
        impressions_df = make_impressions(events, n_items, rng)
    src = Path(path).parent / f"{Path(path).name}-source.txt"
    src.write_text("fixture")
    write_dataset(path, source_format="fixture", source_files=[src], items=items, events=events, rejects=RejectLog(),
                  split=SplitSpec(0.5, 0.25, 0.25, seed=0), impressions=impressions_df, deterministic=True)
    write_embeddings(path, embeddings if embeddings is not None else random_unit(n_items, dim, rng))
    return Path(path)
