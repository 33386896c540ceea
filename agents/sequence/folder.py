"""A tracker run folder: its file names and the one reader and writer of each.

::

    RUN_DIR/sequence.json          format, settings (SequenceConfig), model spec, the dataset it was
                                   trained on (path, item-id sha256, embedding name + sha256), seconds
    RUN_DIR/best/model.pt          state_dict of the best validation epoch (torch tensors only)
    RUN_DIR/best/info.json         epoch, validation metric, sha256 of model.pt
    RUN_DIR/final/...              the same for the last epoch trained
    RUN_DIR/checkpoints/last/      model-<epoch>.pt + optimizer-<epoch>.pt + state.json (epoch, best so far,
                                   history, the two files' names and sha256): what ``--resume`` continues from
    RUN_DIR/tb/                    TensorBoard scalars
    RUN_DIR/folds.json             with ``--folds K``: the seeded partition of the training users into K folds
    RUN_DIR/folds/<f>/             the tracker trained without fold f's users (a tracker run folder of its own)

No pickle anywhere: weights are tensors saved with ``torch.save`` and read with ``weights_only=True``,
everything else is JSON. Every file is written atomically (a temporary file renamed into place), and
``info.json`` / ``state.json``, written last, hold the sha256 of the tensors they describe: a folder
whose files do not match is refused (a checkpoint: skipped, with a note) rather than half-read.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from interestgym.agents.sequence.config import SequenceConfig
from interestgym.agents.sequence.models import ModelSpec

from interestgym.errors import ArtifactError
from interestgym.io import (
    atomic_path,
    read_json_artifact,
    sha256_file,
    write_json_atomic,
)

FORMAT = 1
CONFIG_FILE = "sequence.json"
MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
INFO_FILE = "info.json"
STATE_FILE = "state.json"
TENSORBOARD_DIR = "tb"
CHECKPOINT_DIR = "checkpoints/last"
MODELS = ("best", "final")
FOLDS_FILE = "folds.json"
FOLDS_DIR = "folds"


def is_sequence_run(path: str | Path) -> bool:
    """True for a folder written by ``interestgym train-sequence``."""
    return (Path(path) / CONFIG_FILE).is_file()


def write_run_config(run_dir: Path, config: SequenceConfig, spec: ModelSpec, dataset: dict[str, Any], **extra: Any) -> None:
    write_json_atomic(run_dir / CONFIG_FILE, {"format": FORMAT, "config": config.as_dict(), "spec": spec.as_dict(),
                                              "dataset": dataset, **extra})


def read_run_config(run_dir: str | Path) -> tuple[SequenceConfig, ModelSpec, dict[str, Any]]:
    """(settings, model spec, the whole document) of a tracker run."""
    path = Path(run_dir) / CONFIG_FILE
    doc = read_json_artifact(path, "the settings of an `interestgym train-sequence` run")
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not isinstance(doc.get("spec"), dict):
        raise ArtifactError(f"{path}: fields config / spec missing; expected a file written by `interestgym train-sequence`")
    if doc.get("format") != FORMAT:
        raise ArtifactError(f"{path}: format {doc.get('format')!r}; this interestgym reads format {FORMAT} (re-train the tracker)")
    return (SequenceConfig.from_dict(doc["config"], str(path)), ModelSpec.from_dict(doc["spec"], str(path)), doc)


def run_settings(run_dir: str | Path) -> dict[str, Any]:
    """A tracker run's settings as a resume continues them: those of ``sequence.json``, with the embedding it resolved
    to where it was started without ``--embeddings`` (the dataset may hold several since)."""
    settings, _, doc = read_run_config(run_dir)
    values = settings.as_dict()
    if values.get("embeddings") is None:
        values["embeddings"] = (doc.get("dataset") or {}).get("embeddings")
    return values


def check_finished(run_dir: str | Path, what: str) -> None:
    """Refuse a tracker run that has not finished training (its ``sequence.json`` has no summary yet): its
    best weights may still change, and whatever used them would no longer match."""
    _, _, doc = read_run_config(run_dir)
    if not isinstance(doc.get("summary"), dict):
        raise ArtifactError(f"{Path(run_dir) / CONFIG_FILE}: no summary: the tracker has not finished training (or was "
                            f"interrupted); {what} needs a finished tracker. Wait for `train-sequence`, or finish it with --resume")
    folds = read_folds(run_dir)
    for f in range(1, len(folds or []) + 1):
        folder = fold_run_dir(run_dir, f)
        try:
            finished = isinstance(read_run_config(folder)[2].get("summary"), dict) and (folder / "best" / INFO_FILE).is_file()
        except ArtifactError:
            finished = False
        if not finished:
            dataset = (doc.get("config") or {}).get("dataset", "DATASET")
            raise ArtifactError(f"{folder}: the out-of-fold tracker {f} of {len(folds or [])} of {run_dir} is missing or "
                                f"unfinished; {what} needs each one. `interestgym train-sequence {dataset} --run-dir {run_dir} "
                                "--resume` trains it again (the same tracker: it is seeded)")


def undertrained_note(run_dir: str | Path) -> str | None:
    """A caution when a finished tracker run stopped on a limit (``--max-minutes``, ``--max-epochs``) while still
    improving (its best validation score at its last epoch): it may rank far below what it would learn; else None."""
    _, _, doc = read_run_config(run_dir)
    dataset = (doc.get("config") or {}).get("dataset", "DATASET")
    trackers = [(f"the tracker {run_dir}", doc.get("summary") or {})]
    for f, summary in enumerate((doc.get("summary") or {}).get("folds") or [], start=1):
        trackers.append((f"the out-of-fold tracker {f} of {run_dir}", summary if isinstance(summary, dict) else {}))
    for who, summary in trackers:
        stopped, epochs, best = summary.get("stopped"), summary.get("epochs"), summary.get("best_epoch")
        if stopped not in ("max_minutes", "max_epochs") or not epochs or best != epochs:
            continue
        limit = "--max-minutes" if stopped == "max_minutes" else "--max-epochs"
        return (f"{who} stopped at {limit} after epoch {epochs} while still improving (its best validation "
                f"score was at its last epoch): it may be undertrained; `interestgym train-sequence {dataset} --run-dir {run_dir} "
                f"--resume` with a larger {limit} continues it" + (" and its out-of-fold trackers" if len(trackers) > 1 else ""))
    return None


def fold_run_dir(run_dir: str | Path, fold: int) -> Path:
    """The folder of the tracker trained without fold ``fold``'s users (1-based, as the messages count)."""
    return Path(run_dir) / FOLDS_DIR / str(fold)


def write_folds(run_dir: Path, users: list[list[str]], seed: int) -> None:
    write_json_atomic(run_dir / FOLDS_FILE, {"format": FORMAT, "k": len(users), "seed": seed, "users": users})


def read_folds(run_dir: str | Path) -> list[list[str]] | None:
    """The training users of each fold (``folds.json``), or None for a run without folds."""
    path = Path(run_dir) / FOLDS_FILE
    if not path.exists():
        return None
    doc = read_json_artifact(path, "the folds of a tracker run's training users")
    users = doc.get("users") if isinstance(doc, dict) else None
    if (not isinstance(users, list) or len(users) < 2 or not all(isinstance(f, list) and all(isinstance(u, str) for u in f) for f in users)
            or doc.get("k") != len(users)):
        raise ArtifactError(f"{path}: field users is not k >= 2 lists of user ids (k {doc.get('k') if isinstance(doc, dict) else None!r}); "
                            "expected the file `interestgym train-sequence --folds K` writes (a damaged or edited file)")
    return users


def save_tensors(path: Path, tensors: dict[str, Any]) -> str:
    """Write a dict of tensors (a state_dict) atomically; returns its sha256.

    Saved through an open file, not a path: torch names a zip written to a path after that path (here the temporary
    one, random), so identical tensors gave different bytes; through a file object the archive is always ``archive``.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(tensors, fh)
    return sha256_file(path)


def load_tensors(path: Path, sha256: str | None) -> dict[str, Any]:
    """Read tensors written by :func:`save_tensors` (checksum checked, no unpickling of objects)."""
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; expected saved tracker weights")
    if sha256 is not None and sha256_file(path) != sha256:
        raise ArtifactError(f"{path}: sha256 does not match the one recorded beside it (damaged or replaced file)")
    try:
        with warnings.catch_warnings():  # torch's own warnings about a foreign file: the error below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # not torch's advice (load with weights_only=False: it runs the file's code): say what the file holds, where
        # torch says it found an object (other unpickling errors are damaged bytes: said below)
        found = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), "")
        if found:
            raise ArtifactError(f"{path}: holds Python objects besides tensors ({found[:160]}), which this loader never "
                                "executes; expected the tensors interestgym writes (train the tracker again)") from None
        detail = next((line.strip() for line in str(exc).splitlines() if line.strip().startswith("Unsupported")), "")
        raise ArtifactError(f"{path}: cannot be read as tensors (damaged bytes{': ' + detail if detail else ''}); expected the "
                            "tensors interestgym writes (train the tracker again)") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged or foreign file
        raise ArtifactError(f"{path}: cannot be read as tensors ({' '.join(str(exc).split())[:200]})") from None


def save_model(folder: Path, model: torch.nn.Module, info: dict[str, Any]) -> None:
    """``folder/model.pt`` then ``folder/info.json`` (with the weights' sha256)."""
    sha = save_tensors(folder / MODEL_FILE, {k: v.detach().cpu() for k, v in model.state_dict().items()})
    write_json_atomic(folder / INFO_FILE, {**info, "format": FORMAT, "sha256": {MODEL_FILE: sha}})


def load_model_state(run_dir: str | Path, which: str = "best") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state_dict, info) of a run's ``best`` or ``final`` model."""
    if which not in MODELS:
        raise ArtifactError(f"model {which!r}: expected one of {', '.join(MODELS)}")
    folder = Path(run_dir) / which
    info = read_json_artifact(folder / INFO_FILE, f"the description of the {which} tracker model")
    if not isinstance(info, dict):
        raise ArtifactError(f"{folder / INFO_FILE}: a JSON {type(info).__name__}; expected an object describing the {which} tracker model")
    shas = info.get("sha256")
    if not isinstance(shas, dict) or not isinstance(shas.get(MODEL_FILE), str):
        raise ArtifactError(f"{folder / INFO_FILE}: field sha256 is {json.dumps(shas)[:80]}; expected "
                            f'{{"{MODEL_FILE}": "<sha256 of {MODEL_FILE}>"}} as save_model writes it (a damaged or edited file)')
    return load_tensors(folder / MODEL_FILE, shas[MODEL_FILE]), info


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The epoch's tensors under new names (``model-<epoch>.pt``, ``optimizer-<epoch>.pt``), then ``state.json``
    naming them (the switch, one atomic rename), then the previous epoch's files removed: an interrupt at any
    point leaves a ``state.json`` whose files are all there and match."""
    folder = run_dir / CHECKPOINT_DIR
    tag = f"-{int(state['epoch'])}"
    files = {MODEL_FILE: MODEL_FILE.replace(".pt", f"{tag}.pt"), OPTIMIZER_FILE: OPTIMIZER_FILE.replace(".pt", f"{tag}.pt")}
    shas = {files[MODEL_FILE]: save_tensors(folder / files[MODEL_FILE], {k: v.detach().cpu() for k, v in model.state_dict().items()}),
            files[OPTIMIZER_FILE]: save_tensors(folder / files[OPTIMIZER_FILE], optimizer.state_dict())}
    write_json_atomic(folder / STATE_FILE, {**state, "format": FORMAT, "files": files, "sha256": shas})
    for path in folder.glob("*.pt"):
        if path.name not in shas:
            path.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path, log: Any = None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(model state, optimizer state, training state) of the last checkpoint, or None when there is none, or
    when it cannot be read (said through ``log``: training then starts again from scratch, which gives the
    same run, only later)."""
    folder = run_dir / CHECKPOINT_DIR
    if not (folder / STATE_FILE).is_file():
        return None
    try:
        state = read_json_artifact(folder / STATE_FILE, "a tracker checkpoint's state")
        files = state.get("files") or {MODEL_FILE: MODEL_FILE, OPTIMIZER_FILE: OPTIMIZER_FILE}  # before epoch-named files
        shas = state.get("sha256") or {}
        return (load_tensors(folder / files[MODEL_FILE], shas.get(files[MODEL_FILE])),
                load_tensors(folder / files[OPTIMIZER_FILE], shas.get(files[OPTIMIZER_FILE])), state)
    except (ArtifactError, KeyError, TypeError, AttributeError) as exc:
        if log is not None:
            log(f"note: the checkpoint in {folder} cannot be read ({exc}); training starts again from epoch 0")
        return None
