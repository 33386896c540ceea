"""A tiny synthetic dataset with topic-structured embeddings, for the agents' tests (seconds to build)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from interestgym.data.dataset import Dataset, SplitSpec
from interestgym.data.synthetic import SyntheticConfig, prepare_synthetic


def tiny_synthetic(out: Path, *, users: int = 40, events_per_user: int = 24, dim: int = 16, seed: int = 0) -> Path:
    """Write a small strong-drift synthetic dataset plus embeddings ``topic16`` (items near their topic's
    random direction) into ``out``; return ``out``."""
    cfg = SyntheticConfig(users=users, seed=seed, drift="strong", events_per_user=events_per_user,
                          candidates=8, items_per_topic=12)
    prepare_synthetic(out, cfg, split=SplitSpec(0.5, 0.25, 0.25, seed=seed), command=["test"], deterministic=True)
    ds = Dataset.open(out)
    rng = np.random.default_rng(seed)
    topics = ds.manifest["synthetic"]["topics"]
    centres = rng.normal(size=(len(topics), dim))
    index = {t: i for i, t in enumerate(topics)}
    item_topic = np.array([index[t] for t in ds.items["category"].astype(str)])
    emb = centres[item_topic] + 0.6 * rng.normal(size=(len(item_topic), dim))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    (out / "embeddings").mkdir(exist_ok=True)
    np.save(out / "embeddings" / "topic16.npy", emb)
    meta = {"encoder": "test-topic", "dim": dim, "item_ids_sha256": ds.item_ids_sha256}
    (out / "embeddings" / "topic16.json").write_text(json.dumps(meta))
    return out
