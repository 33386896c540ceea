"""Checkpoints of ``interestgym finetune``: an interrupted fine-tune continues with ``--resume`` to the very
weights an uninterrupted run writes.

A fine-tune of MiniLM on ml-100k runs for minutes (tens of them on a busy machine). Every
``--checkpoint-every`` steps, and after every epoch's validation, everything the rest of the run depends
on is written to ``.<MODEL_DIR name>.checkpoint/checkpoint.pt`` beside ``MODEL_DIR`` (one file, written
to a temporary name and renamed, so an interrupt while it is written leaves the previous one whole):

* the trained weights (the top layers, or all of them), AdamW's moments and the learning-rate
  schedule's position;
* where the run is: the epoch, the batches of it done and the sum of their losses, the numpy
  generator's state at the start of that epoch (it draws the epoch's batch order), torch's generator
  (dropout);
* the bookkeeping of the validation: losses and top-1 so far, the best epoch and its weights, epochs
  without improvement, whether early stopping ended the epochs;
* what the run is of (:func:`run_identity`): every setting but the thread count, the dataset (path
  and item ids), the base model's files, the mined pairs (a hash of them). ``--resume`` refuses a
  checkpoint of anything else, naming what differs.

Read back with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.
The checkpoint folder is removed once the model folder is written.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import ArtifactError, InterestGymError
from interestgym.io import atomic_path

CHECKPOINT_FILE = "checkpoint.pt"
#: The provenance file written beside a fine-tuned model's weights (``interestgym.encoders.finetune`` writes it).
PROVENANCE_FILE = "finetune.json"
_FORMAT = 1
#: What ``--resume`` may change (its name in ``FinetuneConfig``): the thread count changes the summation
#: order, so the resumed weights may then differ from an uninterrupted run's in the last bits (so may the
#: CPUs behind ``threads=None`` and the device behind ``device="auto"``: a resume says when they differ).
#: ``--checkpoint-every`` is not a setting of the run: it may change too.
MAY_CHANGE = ("threads",)
#: ``FinetuneConfig`` fields whose option has another name.
FLAGS = {"learning_rate": "--lr", "window_seconds": "--window"}


def checkpoint_dir(out: Path) -> Path:
    """Where the checkpoints of a fine-tune into ``out`` go: a hidden sibling folder."""
    return out.parent / f".{out.name}.checkpoint"


def flag(name: str) -> str:
    """The command-line option of a ``FinetuneConfig`` field."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with its checkpoint (all but ``threads``)."""
    return {k: v for k, v in config.items() if k not in MAY_CHANGE}


def run_identity(config: dict[str, Any], dataset: Any, base_files: dict[str, str], train: Any, valid: Any,
                 steps_per_epoch: int) -> dict[str, Any]:
    """What a checkpoint belongs to: a resumed run must have the same (``threads`` aside)."""
    def pairs(p: Any) -> dict[str, Any]:
        digest = hashlib.sha256(np.ascontiguousarray(p.anchor, dtype=np.int64).tobytes()
                                + np.ascontiguousarray(p.positive, dtype=np.int64).tobytes()).hexdigest()
        return {**p.as_dict(), "sha256": digest}

    return {
        "config": settings(config),
        "dataset": {"path": str(Path(dataset.path).resolve()), "item_ids_sha256": dataset.item_ids_sha256},
        "base_files": dict(base_files),
        "pairs": {"train": pairs(train), "valid": pairs(valid)},
        "steps_per_epoch": int(steps_per_epoch),
    }


@dataclass
class TrainState:
    """Where a fine-tune is, and the validation's bookkeeping so far (everything but tensors)."""

    #: The epoch under way (or the next to start when ``step`` is 0).
    epoch: int = 1
    #: Batches of ``epoch`` done, and the sum of their losses.
    step: int = 0
    running: float = 0.0
    #: The numpy generator's state at the start of ``epoch`` (it draws the epoch's batch order).
    epoch_rng: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    valid_losses: list[float] = field(default_factory=list)
    best_loss: float | None = None
    base_top1: float | None = None
    best_epoch: int = 0
    stale: int = 0
    epochs_run: int = 0
    #: Early stopping ended the epochs.
    stopped: bool = False
    #: (epoch, step) of every resume, in order.
    resumed: list[list[int]] = field(default_factory=list)
    #: Seconds of fine-tuning before this call (the calls a resume continues).
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def save_checkpoint(folder: Path, identity: dict[str, Any], threads: int | None, state: TrainState,
                    trainable: list[tuple[str, Any]], optimizer: Any, scheduler: Any, best_state: dict[str, Any] | None,
                    device: str, resolved_threads: int) -> None:
    """Write ``folder/checkpoint.pt`` atomically (``threads``: the setting, None for every CPU; ``device`` and
    ``resolved_threads``: what the run used)."""
    import torch

    doc = {
        "format": _FORMAT,
        "identity": identity,
        "threads": threads,
        "ran_on": {"device": device, "threads": int(resolved_threads)},
        "state": state.as_dict(),
        "weights": {n: p.detach().to("cpu", copy=True) for n, p in trainable},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "best_state": best_state,
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if device.startswith("cuda") else None,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / CHECKPOINT_FILE) as tmp, open(tmp, "wb") as fh:  # a file, not a path: same bytes each time
        torch.save(doc, fh)


def read_checkpoint(folder: Path) -> dict[str, Any]:
    """The checkpoint in ``folder``, checked for its fields; a missing or damaged one is refused."""
    import torch

    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        raise InterestGymError(f"--resume: no checkpoint at {path}; expected one left by an interrupted `interestgym finetune` "
                               "with the same --out (run without --resume to start a fine-tune)")
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged or foreign file
        raise ArtifactError(f"{path}: cannot be read as a fine-tuning checkpoint ({' '.join(str(exc).split())[:200]}); "
                            f"delete {folder} to start over") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ArtifactError(f"{path}: format {found!r}; this interestgym reads fine-tuning checkpoints of format {_FORMAT}; "
                            f"delete {folder} to start over")
    missing = [k for k in ("identity", "state", "weights", "optimizer", "scheduler", "best_state", "torch_rng") if k not in doc]
    if missing:
        raise ArtifactError(f"{path}: field(s) {', '.join(missing)} missing; expected a checkpoint written by "
                            f"`interestgym finetune`; delete {folder} to start over")
    return doc


def saved_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The settings of the checkpointed run (``threads`` as it was)."""
    return {**doc["identity"]["config"], "threads": doc.get("threads")}


def finished(doc: dict[str, Any]) -> bool:
    """The checkpointed run has trained every epoch it will (only its model folder was left to write)."""
    state = doc["state"]
    return bool(state.get("stopped")) or state["epoch"] > doc["identity"]["config"].get("epochs", 0)


def written_after(doc: dict[str, Any], folder: Path, out: Path) -> bool:
    """The checkpoint in ``folder`` is of a finished fine-tune whose model ``out`` was written after it: an interrupt
    came between writing the model and removing the checkpoint, which is left over."""
    model = out / PROVENANCE_FILE
    return finished(doc) and model.is_file() and model.stat().st_mtime >= (folder / CHECKPOINT_FILE).stat().st_mtime


def describe(doc: dict[str, Any]) -> str:
    """``epoch 2 of 3, step 150 of 313`` (or ``after epoch 1`` at an epoch's end)."""
    state, epochs = doc["state"], doc["identity"]["config"].get("epochs")
    steps = doc["identity"].get("steps_per_epoch")
    if finished(doc):
        return f"after epoch {state['epoch'] - 1} (training done)"
    if state["step"] == 0:
        return f"after epoch {state['epoch'] - 1} of {epochs}"
    return f"epoch {state['epoch']} of {epochs}, step {state['step']} of {steps}"


#: How a setting's value reads on the command line, where it differs from the Python value.
_SPELLED_NONE = {"train_layers": "all", "pooling": "(the base folder's)"}


def spelled(name: str, value: Any) -> str:
    """``value`` of setting ``name`` as the option takes it (``--train-layers all``, not None)."""
    return _SPELLED_NONE.get(name, repr(value)) if value is None else repr(value)


def _same_setting(name: str, value: Any, was: Any) -> bool:
    if name == "base" and value != was and "minilm" not in (value, was):  # a folder given by another path
        return Path(str(value)).expanduser().resolve() == Path(str(was)).expanduser().resolve()
    return value == was


def identity_conflicts(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's run and this one, as a user would name it (``now`` may hold the
    settings only: ``{"config": ...}``, checked before any data is read)."""
    differ = []
    for name, value in now["config"].items():
        was = saved["config"].get(name)
        if not _same_setting(name, value, was):
            differ.append(f"{flag(name)} {spelled(name, value)} (the checkpoint's: {spelled(name, was)})")
    if "dataset" not in now:
        return differ
    if saved["dataset"] != now["dataset"]:
        if saved["dataset"]["path"] != now["dataset"]["path"]:
            differ.append(f"DATASET {now['dataset']['path']} (the checkpoint's: {saved['dataset']['path']})")
        else:
            differ.append(f"DATASET {now['dataset']['path']}: its items changed since the checkpoint (item ids hash)")
    if saved["base_files"] != now["base_files"]:
        changed = sorted(k for k in set(saved["base_files"]) | set(now["base_files"])
                         if saved["base_files"].get(k) != now["base_files"].get(k))
        differ.append(f"--base: file(s) {', '.join(changed)} of the base model changed since the checkpoint")
    if not differ and (saved["pairs"] != now["pairs"] or saved["steps_per_epoch"] != now["steps_per_epoch"]):
        differ.append("DATASET: its events give other co-engagement pairs than at the checkpoint (prepared again?)")
    return differ


def refuse_conflicts(folder: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to resume the checkpoint in ``folder`` for a run that differs from it (:func:`identity_conflicts`)."""
    differ = identity_conflicts(saved["identity"], now)
    if differ:
        raise InterestGymError(f"--resume continues the fine-tune checkpointed in {folder} with its own settings and data, "
                               f"but these differ: {'; '.join(differ)}; drop them (only --threads and --checkpoint-every may "
                               f"change), or delete {folder} to start over")


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
