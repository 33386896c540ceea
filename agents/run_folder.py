"""A training run's folder: its file names, and the one reader of each file.

``train`` writes a run; ``evaluate``, ``report``, ``export`` and ``quickstart`` read it through this
module only, so no stage imports another to find its way around a run folder::

    RUN/config.json                 resolved TrainConfig + reference rule, agent scoring, protocol, embedding
    RUN/baselines.json              the baselines tuned on validation users (reused while the protocol holds)
    RUN/evaluation.json, .md        written by ``interestgym evaluate``
    RUN/tb/                         TensorBoard event files (one run; a resumed run appends to it)
    RUN/checkpoints/state.json      names the last complete checkpoint (step, files, callback state)
    RUN/checkpoints/model_<step>.zip, vecnormalize_<step>.pkl
    RUN/best/model.zip, vecnormalize.pkl, info.json   best validation metric so far
    RUN/final/model.zip, vecnormalize.pkl, info.json  end of training
    RUN/report/                     written by ``interestgym report``

Heavy libraries (torch, stable-baselines3) are imported only by the functions that load models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import write_json_atomic

CONFIG_FILE = "config.json"
BASELINES_FILE = "baselines.json"
EVALUATION_FILE = "evaluation.json"
EVALUATION_MARKDOWN = "evaluation.md"
#: Marks a dataset folder (``interestgym.data.dataset.MANIFEST``): a run never goes into one.
DATASET_MANIFEST = "manifest.json"
TENSORBOARD_DIR = "tb"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_STATE = "state.json"
MODEL_FILE = "model.zip"
NORMALISER_FILE = "vecnormalize.pkl"
INFO_FILE = "info.json"
REPORT_DIR = "report"
#: The saved models a run has (``--model``).
MODEL_CHOICES = ("best", "final")


def is_run_dir(path: str | Path) -> bool:
    """True for a folder written by ``interestgym train`` (config.json, and not a dataset)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and not (path / DATASET_MANIFEST).is_file()


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; expected {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); expected {what}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read it ({exc.strerror or exc}); expected {what}") from None


def read_json_or_none(path: str | Path) -> Any:
    """A small JSON file of a run (info.json, state.json), or None when it is absent or damaged
    (callers treat such a file as "not there yet")."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# -------------------------------------------------------------------------------------- config
def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/config.json`` as :func:`interestgym.agents.train.train_run` writes it.

    :raises ArtifactError: when it is missing, not JSON, or has no ``config`` object.
    """
    path = Path(run_dir) / CONFIG_FILE
    saved = _read_json(path, "a run directory written by `interestgym train`")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ArtifactError(f"{path}: no 'config' object; expected the config.json written by `interestgym train`")
    return saved


def run_train_config(run_dir: str | Path, saved: dict[str, Any] | None = None):
    """The run's :class:`~interestgym.agents.config.TrainConfig` (embedding name resolved)."""
    from interestgym.agents.config import TrainConfig

    saved = saved if saved is not None else read_run_config(run_dir)
    try:
        config = TrainConfig.from_dict(saved["config"])
    except InterestGymError as exc:
        raise ArtifactError(f"{Path(run_dir) / CONFIG_FILE}: {exc}") from None
    if config.embeddings is None:
        # runs whose config.json predates storing the resolved name: the protocol records it
        config.embeddings = (saved.get("protocol") or {}).get("train", {}).get("embeddings")
    return config


def embedding_identity(config: Any) -> dict[str, Any]:
    """Name, fingerprint and dimension of the embedding a run uses (recorded in ``config.json``)."""
    from interestgym.data.dataset import Dataset

    dataset = Dataset.open(config.dataset)
    name = dataset.resolve_embeddings(config.embeddings)
    matrix, meta = dataset.load_embeddings(name)
    return {"name": name, "fingerprint": meta.get("fingerprint"), "dim": int(matrix.shape[1])}


def check_run_embedding(run_dir: str | Path, saved: dict[str, Any], config: Any) -> None:
    """Refuse a run whose embedding was re-encoded differently after training: its policy would see
    vectors from another space without any other sign of it."""
    recorded = saved.get("embedding")
    if not recorded:
        return  # runs from before the identity was recorded
    now = embedding_identity(config)
    if (now["fingerprint"], now["dim"]) != (recorded.get("fingerprint"), recorded.get("dim")):
        raise InterestGymError(
            f"{Path(run_dir) / CONFIG_FILE}: the run was trained on embeddings {recorded.get('name')!r} with fingerprint "
            f"{str(recorded.get('fingerprint'))[:16]}... (dim {recorded.get('dim')}); the dataset's {now['name']!r} now has "
            f"fingerprint {str(now['fingerprint'])[:16]}... (dim {now['dim']}): it was re-encoded after training. "
            "Re-encode with the original options, or train again"
        )


# ------------------------------------------------------------------------------ tuned baselines
def write_tuned_baselines(path: str | Path, *, metric: str, tune_users: int | None, protocol: dict[str, Any],
                          baselines: dict[str, Any]) -> None:
    """Write a ``baselines.json``: every baseline tuned on validation users, with what it depends on."""
    write_json_atomic(Path(path), {"metric": metric, "split": "valid", "tune_users": tune_users, "protocol": protocol,
                                   "baselines": baselines})


def read_tuned_baselines(path: str | Path, *, metric: str, protocol: dict[str, Any], names: list[str],
                         tune_users: int | None, strict: bool = False) -> dict[str, Any] | None:
    """The tuned baselines of a ``baselines.json`` when they fit (same metric, validation protocol,
    ``tune_users`` and every name in ``names``), else None: the caller tunes again.

    :param strict: raise (naming what differs) instead of returning None; for a file the user gave.
    """
    path = Path(path)
    if not path.is_file():
        if strict:
            raise InterestGymError(f"{path}: missing; expected a baselines.json written by `interestgym train` or `evaluate`")
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        if strict:
            raise InterestGymError(f"{path}: cannot read tuned baselines: {exc}") from None
        return None  # a damaged cache of the tuning: tune again (and rewrite it)
    if not isinstance(saved, dict) or not isinstance(saved.get("baselines"), dict):
        if strict:
            raise InterestGymError(f"{path}: no 'baselines' object; expected a baselines.json written by `interestgym train` or `evaluate`")
        return None
    tuned = saved["baselines"]
    fits = (saved.get("metric") == metric and saved.get("protocol") == protocol and saved.get("tune_users") == tune_users
            and all(n in tuned for n in names))
    if fits:
        return tuned
    if strict:
        raise InterestGymError(f"{path}: tuned with another metric, protocol or set of baselines than this run "
                               f"(metric {saved.get('metric')!r}, expected {metric!r}); tune again without --tuned-baselines")
    return None


# ---------------------------------------------------------------------------------- evaluation
def read_evaluation(run_dir: str | Path, path: str | Path | None = None) -> dict[str, Any] | None:
    """``RUN/evaluation.json``, or the evaluation file ``path`` (None if absent).

    :raises ArtifactError: when it exists but is not the JSON ``interestgym evaluate`` writes.
    """
    path = Path(path) if path is not None else Path(run_dir) / EVALUATION_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); re-run `interestgym evaluate {run_dir}`") from None
    for key in ("header", "summary"):
        if not isinstance(doc, dict) or key not in doc:
            raise ArtifactError(f"{path}: field {key!r} is missing; expected the output of `interestgym evaluate`")
    return doc


# -------------------------------------------------------------------------------------- models
def model_step(run_dir: str | Path, which: str) -> int | None:
    """The training step of the run's ``best`` / ``final`` model (None when absent or unrecorded)."""
    folder = Path(run_dir) / which
    if not (folder / MODEL_FILE).is_file():
        return None
    step = (read_json_or_none(folder / INFO_FILE) or {}).get("step")
    return int(step) if isinstance(step, int) else None


def load_vecnormalize(path: str | Path) -> Any:
    """A VecNormalize pickle (written by training) without an env attached, frozen for inference."""
    import pickle

    try:
        with open(path, "rb") as fh:
            norm = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
        raise ArtifactError(f"{path}: cannot read the VecNormalize statistics: {exc}") from None
    norm.training = False
    norm.norm_reward = False
    return norm


@dataclass
class TrainedModel:
    """A run's saved model with everything needed to act like it did in validation."""

    run_dir: Path
    which: str
    model: Any
    vecnormalize: Any | None
    config: dict[str, Any]
    step: int | None


def load_model(run_dir: str | Path, which: str = "best", *, device: str = "cpu") -> TrainedModel:
    """Load ``RUN/<which>/model.zip`` (+ its normaliser) and ``RUN/config.json``.

    :raises ArtifactError: naming the missing or unreadable file.
    """
    from stable_baselines3 import PPO

    run_dir = Path(run_dir)
    if which not in MODEL_CHOICES:
        raise ArtifactError(f"--model {which!r}: expected {' or '.join(MODEL_CHOICES)}")
    config = read_run_config(run_dir)
    folder = run_dir / which
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        other = "final" if which == "best" else "best"
        hint = f" (the run has a {other} model: --model {other})" if (run_dir / other / MODEL_FILE).is_file() else ""
        raise ArtifactError(f"{model_path}: missing; no {which} model in this run{hint}")
    try:
        model = PPO.load(str(model_path), device=device)
    except Exception as exc:  # noqa: BLE001 - zip / pickle / torch errors of a damaged file all mean the same
        raise ArtifactError(f"{model_path}: cannot load the PPO model ({exc})") from None
    norm_path = folder / NORMALISER_FILE
    vecnormalize = load_vecnormalize(norm_path) if norm_path.is_file() else None
    return TrainedModel(run_dir=run_dir, which=which, model=model, vecnormalize=vecnormalize, config=config,
                        step=model_step(run_dir, which))


def run_scoring(run_dir: str | Path, saved: dict[str, Any] | None = None):
    """The agent's fixed ScoringConfig recorded in a run's config.json (plain scoring if absent)."""
    from interestgym.core.interest import ScoringConfig

    saved = saved if saved is not None else read_run_config(run_dir)
    try:
        return ScoringConfig(**(saved.get("agent_scoring") or {}))
    except TypeError as exc:
        raise ArtifactError(f"{Path(run_dir) / CONFIG_FILE}: agent_scoring: {exc}") from None


def load_run_policy(run_dir: str | Path, which: str = "best", *, device: str = "cpu", name: str = "ppo"):
    """The ``best`` or ``final`` model of a run as a Policy (with the run's fixed scoring terms)."""
    from interestgym.agents.sb3_policy import policy_from_model

    trained = load_model(run_dir, which, device=device)
    return policy_from_model(trained.model, trained.vecnormalize, name=name, scoring=run_scoring(run_dir, trained.config))
