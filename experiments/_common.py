"""What the diagnostics in experiments/ share: their arguments, the rule they vary, and the product's paired CI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def arguments(doc: str, data_help: str) -> argparse.Namespace:
    """DATA, --baselines (a run's baselines.json, tuned on DATA), --embeddings (default: the tuning's) and --metric."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("data", type=Path, help=data_help)
    parser.add_argument("--baselines", type=Path, required=True, help="a run's baselines.json (its tuned rule is varied)")
    parser.add_argument("--embeddings", default=None, help="embedding name (default: the one the baselines were tuned with)")
    parser.add_argument("--metric", default="ndcg@10")
    args = parser.parse_args()
    protocol = json.loads(args.baselines.read_text()).get("protocol") or {}
    tuned_on = protocol.get("dataset")
    if tuned_on and Path(tuned_on).resolve() != args.data.resolve():
        sys.exit(f"{args.baselines}: tuned on {tuned_on}, not on {args.data}; give the baselines.json of a run on {args.data}")
    args.embeddings = args.embeddings or protocol.get("embeddings")
    return args


def tuned_rule(baselines: Path, data) -> dict:
    """The run's tuned ``bayesian_category`` parameters, with the median its value gain divides by: the tuned
    one, else ``data``'s (validation users'); None where the values do not vary (no value gain can apply)."""
    from interestgym.agents.rules import feedback_median

    params = dict(json.loads(baselines.read_text())["baselines"]["bayesian_category"]["params"])
    if params.get("value_median") is None:
        params["value_median"] = feedback_median(data)
    return params


def gain_line(what: str, a: np.ndarray, b: np.ndarray, against: str, users: str) -> str:
    """``what`` (per-user ``a``) against ``against`` (``b``): means and the paired 95% bootstrap CI, as evaluate gives it."""
    from interestgym.core.stats import paired_bootstrap_diff

    ci = paired_bootstrap_diff(a, b)
    return (f"{what} {np.mean(a):.4f} vs {against} {np.mean(b):.4f} on {len(a)} {users}: "
            f"{ci.mean:+.4f} [{ci.lo:+.4f}, {ci.hi:+.4f}] ({ci.mean / np.mean(b) * 100:+.2f}%)")


def load(data_dir: Path, embeddings: str, split: str):
    """The replay data of ``split``'s users, under the protocol train and evaluate use."""
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data

    return load_replay_data(data_dir, embeddings, ProtocolSpec.resolve(None, split))
