"""Trained runs and exports for the export / runtime tests, built once per test session.

Not a test module: imported by tests/test_export_*.py and tests/test_runtime_*.py. A run is a real
``interestgym train`` run directory (H5's ``train_run``) on a small fixture dataset written with the
real ``write_dataset`` (tests/env_fixtures.py), so the export reads exactly the layout training writes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from env_fixtures import make_dataset

from interestgym.core.interest import ScoringConfig

#: Non-default scoring terms for the impressions run: exercises the category model, the time-of-day
#: context profiles and forgetting in the runtime (p stays with the action).
EXTRA_SCORING = ScoringConfig(beta_cat=0.3, category_forgetting=0.9, beta_ctx=0.2, context_rate=0.4)
#: The same with the category counts forgetting by 1 - a_L of each decision (the tied mode).
TIED_SCORING = dataclasses.replace(EXTRA_SCORING, category_forgetting=None)


@dataclass
class Fixture:
    dataset: Path
    run: Path
    export: Path


_CACHE: dict[str, Fixture] = {}


def trained_export(tmp_path_factory, variant: str = "next_positive") -> Fixture:
    """``next_positive``: a log without impressions (1 positive + sampled negatives per scoring point),
    default scoring. ``impressions``: logged impressions, and the run's agent scoring replaced by
    :data:`EXTRA_SCORING` before export (evaluation reads the same config, so parity still holds).
    ``impressions_tied``: the same with :data:`TIED_SCORING` (category forgetting = 1 - a_L)."""
    if variant in _CACHE:
        return _CACHE[variant]
    from interestgym.agents.train import TrainConfig, train_run

    from interestgym.export.run import export_run

    root = tmp_path_factory.mktemp(f"export-{variant}")
    impressions = variant in ("impressions", "impressions_tied")
    dataset = make_dataset(root / "dataset", n_users=100, n_items=90, dim=16, seed=3, impressions=impressions)
    run = root / "run"
    config = TrainConfig(
        dataset=str(dataset), run_dir=str(run), timesteps=128, n_envs=4, n_steps=32, batch_size=64, n_epochs=1,
        eval_every=0, checkpoint_every=0, eval_users=None, progress_bar=False, reward_baseline=None, n_negatives=20,
    )
    train_run(config)
    if impressions:
        conf_path = run / "config.json"
        conf = json.loads(conf_path.read_text())
        conf["agent_scoring"] = (TIED_SCORING if variant == "impressions_tied" else EXTRA_SCORING).as_dict()
        conf_path.write_text(json.dumps(conf))
    export = root / "export"
    export_run(run, export, which="best", verify_observations=200)
    _CACHE[variant] = Fixture(dataset=dataset, run=run, export=export)
    return _CACHE[variant]
