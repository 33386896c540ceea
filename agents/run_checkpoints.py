"""A run's checkpoints: the numbered records ``checkpoints/checkpoint_<step>.json`` (files with their
sha256, callback state, SB3's episode window), ``state.json`` naming the newest, and resuming from the
newest intact one (a damaged checkpoint is skipped with a note naming it). A checkpoint's files: the model
(``model_<step>.zip``), the normaliser, and the env's and random generators' state (``rollout_<step>.npz``,
:mod:`interestgym.agents.resume_state`), with which a resumed run continues exactly as an uninterrupted one.

The folder layout and every other file of a run: :mod:`interestgym.agents.run_folder`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from interestgym.agents.run_folder import (
    CHECKPOINT_DIR,
    CHECKPOINT_STATE,
    KEEP_CHECKPOINTS,
    legacy_file_error,
    read_json_or_none,
    read_verified,
    sha256_bytes,
)

from interestgym.errors import ArtifactError
from interestgym.io import write_bytes_atomic, write_json_atomic


def _checkpoint_record(step: int) -> str:
    return f"checkpoint_{step}.json"


def _record_steps(folder: Path) -> list[int]:
    """Steps of the checkpoint records in ``folder``, newest first."""
    steps = []
    for p in folder.glob("checkpoint_*.json"):
        tail = p.stem.split("_", 1)[1]
        if tail.isdigit():
            steps.append(int(tail))
    return sorted(steps, reverse=True)


def has_checkpoint(run_dir: str | Path) -> bool:
    """True when the run has a checkpoint to resume from (state.json or a numbered record)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    return (folder / CHECKPOINT_STATE).is_file() or bool(_record_steps(folder))


def write_checkpoint(run_dir: str | Path, step: int, model: Any, vecnorm: Any | None, state: dict[str, Any],
                     keep: int = KEEP_CHECKPOINTS) -> None:
    """Write checkpoint ``step``: model, normaliser, its record (files + sha256 + ``state``), then
    state.json, each atomically; the record comes after the files it names and state.json last, so a
    kill at any point leaves the previous complete checkpoint in charge. Keeps the newest ``keep``."""
    from interestgym.agents.resume_state import capture
    from interestgym.agents.sb3_policy import Normaliser, model_bytes

    folder = Path(run_dir) / CHECKPOINT_DIR
    files = {f"model_{step}.zip": model_bytes(model)}
    if vecnorm is not None:
        files[f"normaliser_{step}.npz"] = Normaliser.from_vecnormalize(vecnorm).to_bytes()
    files[f"rollout_{step}.npz"] = capture(model)  # the env, the wrappers and the random states: an exact resume
    for name, data in files.items():
        write_bytes_atomic(folder / name, data)
    record = {"num_timesteps": int(step), "model": f"model_{step}.zip",
              "normaliser": f"normaliser_{step}.npz" if vecnorm is not None else None, "rollout": f"rollout_{step}.npz",
              "files": {name: sha256_bytes(data) for name, data in files.items()}, **state}
    write_json_atomic(folder / _checkpoint_record(step), record)
    write_json_atomic(folder / CHECKPOINT_STATE, record)
    kept = set(_record_steps(folder)[: max(1, keep)]) | {int(step)}
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):  # a temporary file a kill left before its rename (the run's
            p.unlink(missing_ok=True)                           # lock is held: no other writer has one open here)
            continue
        # numbered files of older checkpoints, and of ones a kill left without a record
        stem = p.name.split(".", 1)[0]
        prefix, _, tail = stem.rpartition("_")
        if prefix in ("model", "normaliser", "rollout", "checkpoint", "vecnormalize") and tail.isdigit() and int(tail) not in kept:
            p.unlink(missing_ok=True)


def _load_checkpoint_record(folder: Path, record_path: Path, venv: Any, device: str, clip_range: float,
                            note: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    from interestgym.agents.sb3_policy import Normaliser, load_ppo

    record = read_json_or_none(record_path)
    if not isinstance(record, dict) or not isinstance(record.get("num_timesteps"), int) or not isinstance(record.get("model"), str):
        raise ArtifactError(f"{record_path}: missing or damaged (not a checkpoint record)")
    if str(record.get("vecnormalize", "")).endswith(".pkl"):
        raise legacy_file_error(folder / record["vecnormalize"])
    files = record.get("files") if isinstance(record.get("files"), dict) else {}
    env = venv
    if record.get("normaliser"):
        name = str(record["normaliser"])
        env = Normaliser.from_bytes(read_verified(folder / name, files.get(name), record_path), folder / name).to_vecnormalize(venv)
    name = record["model"]
    model = load_ppo(read_verified(folder / name, files.get(name), record_path), folder / name, env=env, device=device,
                     clip_range=clip_range)
    if record.get("rollout"):  # after the load, which reseeds every generator: the run goes on as if never stopped
        from interestgym.agents.resume_state import restore

        name = str(record["rollout"])
        skipped = restore(model, read_verified(folder / name, files.get(name), record_path), folder / name)
        if skipped is not None and note is not None:
            note(f"note: {skipped}")
    elif note is not None:  # written by an earlier release: no replay state to put back
        step = record["num_timesteps"]
        note(f"note: the checkpoint of step {step} ({record_path.name}) has no rollout_{step}.npz (an earlier release wrote "
             "it): the run resumes from its weights with the env's users drawn afresh, so it will not end with the "
             "uninterrupted run's weights")
    return model, record


def load_checkpoint(run_dir: str | Path, venv: Any, *, device: str = "cpu", clip_range: float = 0.2,
                    note: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """The model (on ``venv`` wrapped in the checkpoint's VecNormalize) and record of the checkpoint
    to resume from: the one state.json names if intact, else the newest intact numbered one, with a
    one-line ``note`` per damaged checkpoint passed over. Checksums recorded at writing are checked
    before anything is loaded.

    :raises ArtifactError: when no checkpoint is intact (naming what is wrong with each).
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    candidates = [folder / CHECKPOINT_STATE] + [folder / _checkpoint_record(s) for s in _record_steps(folder)]
    problems: list[str] = []
    tried: set[Any] = set()
    for path in candidates:
        record = read_json_or_none(path)
        key = (record.get("num_timesteps"), json.dumps(record.get("files"), sort_keys=True)) if isinstance(record, dict) else path
        if key in tried:
            continue  # state.json and the newest record name the same files
        tried.add(key)
        try:
            model, record = _load_checkpoint_record(folder, path, venv, device, clip_range, note)
        except ArtifactError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            if note is not None:
                note(f"note: {problem}; resuming from the newest intact checkpoint, step {record['num_timesteps']}")
        return model, record
    raise ArtifactError(f"{folder}: no intact checkpoint to resume from ({'; '.join(problems) or 'none written'}); "
                        "train into a new --run-dir (or delete this one and train again)")


