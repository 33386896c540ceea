"""A tiny synthetic dataset with topic-structured embeddings, for the agents' tests (seconds to build)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from interestgym.data.dataset import Dataset, SplitSpec
from interestgym.data.synthetic import SyntheticConfig, prepare_synthetic

#: A bayesian_category rule's parameters for the category-term tests (slot counts, exposure counts).
CATEGORY_RULE_PARAMS = {"beta_cat": 1.0, "forgetting": 0.9, "long_rate": 0.2, "short_rate": 0.7, "short_weight": 0.4,
                        "popularity_weight": 0.1}


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


def small_train_config(dataset: Path, run_dir: Path, **overrides):
    """A TrainConfig that trains in seconds on :func:`tiny_synthetic` data (4 envs x 16 steps, an 8-unit
    network, no reward baseline); ``overrides`` change any setting."""
    from interestgym.agents.config import TrainConfig

    base = {"dataset": str(dataset), "run_dir": str(run_dir), "timesteps": 128, "n_envs": 4, "n_steps": 16,
            "batch_size": 32, "n_epochs": 1, "eval_every": 64, "checkpoint_every": 64, "eval_users": None,
            "progress_bar": False, "reward_baseline": None, "net_arch": [8]}
    return TrainConfig(**{**base, **overrides})


def shipping_config(dataset: Path, run_dir: Path, **overrides):
    """:func:`small_train_config` for the residual agent's tests: 256 steps, a 16x16 network, validation
    every 128 steps on every validation user, ``bayesian_category`` as the reward baseline (tuned on 5
    users)."""
    return small_train_config(dataset, run_dir, **{
        "timesteps": 256, "n_epochs": 2, "eval_every": 128, "checkpoint_every": 128, "net_arch": [16, 16],
        "reward_baseline": "bayesian_category", "tune_users": 5, **overrides})


def per_user_metrics(data, policy) -> dict:
    """Every metric's per-user means of ``policy`` replayed on ``data`` (numpy arrays by metric name)."""
    from interestgym.envs.vector import evaluate_policy

    res = evaluate_policy(data, policy, record_features=False, progress=False)
    return {m: res.per_user()[m].to_numpy() for m in res.metrics}


def tiny_tracker(data: Path, run_dir: Path, model: str = "gru") -> Path:
    """Train a tiny sequence tracker (window 6, hidden 16, 2 epochs: seconds) on ``data`` into ``run_dir``."""
    from interestgym.agents.sequence.config import SequenceConfig
    from interestgym.agents.sequence.train import train_sequence

    train_sequence(SequenceConfig(dataset=str(data), run_dir=str(run_dir), model=model, window=6, hidden=16, max_epochs=2,
                                  batch_size=16, n_negatives=15, progress_bar=False), log=lambda _: None)
    return run_dir


def resealed_copy(export: Path, folder: Path, change) -> Path:
    """A copy of the export folder ``export`` at ``folder`` whose manifest ``change(manifest)`` edited and that is
    sealed again (checksums made to match), as a tampered-with but self-consistent export would be."""
    import shutil

    from interestgym.runtime.manifest import (
        read_manifest,
        seal_manifest,
        write_manifest,
    )

    shutil.copytree(export, folder)
    manifest = read_manifest(folder)
    change(manifest)
    (folder / "manifest.json").unlink()
    write_manifest(folder, seal_manifest(folder, {k: v for k, v in manifest.items() if k not in ("files", "manifest_sha256")}))
    return folder
