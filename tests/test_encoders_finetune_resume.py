"""``interestgym finetune --resume``: a fine-tune interrupted anywhere (mid-epoch, at an epoch's end, while a
checkpoint is written, during a resume) continues to the very weights and history of an uninterrupted run;
a checkpoint of other settings or data is refused, naming what differs; nothing is left behind."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

torch = importlib.import_module("torch")
importlib.import_module("transformers")

from click.testing import CliRunner
from interestgym.encoders import finetune as ft
from interestgym.encoders.finetune import FinetuneConfig, finetune
from interestgym.encoders.finetune_checkpoint import (
    CHECKPOINT_FILE,
    checkpoint_dir,
    read_checkpoint,
)
from safetensors.numpy import load_file
from test_encoders_bert import save_tiny_bert
from test_encoders_finetune import WINDOW, write_tiny_dataset

from interestgym.cli import cli
from interestgym.errors import InterestGymError

#: Changes with the run, not with its result.
RUN_FACTS = ("seconds", "command", "resumed")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


def config(tiny_bert: Path, **changes) -> FinetuneConfig:
    # 3 epochs of a few steps, with validation (so the best epoch's weights are kept while a later one runs) and dropout
    settings = {"base": str(tiny_bert), "max_length": 8, "batch_size": 8, "epochs": 3, "learning_rate": 1e-2, "max_pairs": 40,
                "max_valid_pairs": 24, "patience": 3, "window_seconds": WINDOW, "threads": 1}
    return FinetuneConfig(**{**settings, **changes})


class Interrupt:
    """Raise KeyboardInterrupt at the ``at``-th training step (1-based), counting across calls."""

    def __init__(self, monkeypatch, at: int) -> None:
        self.calls, self.at = 0, at
        real = ft.batch_loss

        def batch_loss(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(ft, "batch_loss", batch_loss)


def outputs(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    provenance = json.loads((out / "finetune.json").read_text())
    return load_file(str(out / "model.safetensors")), {k: v for k, v in provenance.items() if k not in RUN_FACTS}


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "m"
    finetune(tiny_dataset, out, config(tiny_bert), checkpoint_every=2, log=None)
    weights, provenance = outputs(out)
    assert provenance["steps_per_epoch"] == 5 and provenance["epochs_run"] == 3
    # the run this test needs: an epoch that is not the best, so the best one's weights sit in the checkpoints
    assert 1 <= provenance["best_epoch"] < 3, provenance["history"]
    return weights, provenance, json.loads((out / "finetune.json").read_text())["resumed"]


def same_as(result: tuple[dict, dict], reference: tuple[dict, dict, list]) -> None:
    weights, provenance = result
    assert weights.keys() == reference[0].keys()
    assert all(np.array_equal(weights[k], reference[0][k]) for k in weights), "weights differ"
    assert provenance == reference[1]


# steps 1-5 are epoch 1 (checkpoints after steps 2 and 4, and after its validation), 6-10 epoch 2, 11-15 epoch 3
@pytest.mark.parametrize("stops", [[3], [6], [8, 12], [1], [15]])
def test_an_interrupted_finetune_resumes_to_the_uninterrupted_weights(tiny_dataset, tiny_bert, tmp_path, monkeypatch,
                                                                      uninterrupted, stops):
    out = tmp_path / "m"
    done = 0  # training steps completed before the interrupt, as far as the checkpoint knows
    resumes = []
    for k, at in enumerate(stops):
        Interrupt(monkeypatch, at - done)
        with pytest.raises(KeyboardInterrupt):
            finetune(tiny_dataset, out, config(tiny_bert) if k == 0 else None, resume=k > 0, checkpoint_every=2, log=None)
        assert not out.exists()
        if (checkpoint_dir(out) / CHECKPOINT_FILE).exists():
            state = read_checkpoint(checkpoint_dir(out))["state"]
            done = (state["epoch"] - 1) * 5 + state["step"]
            # the last checkpoint: after an even step or after an epoch's end, never past the interrupt
            assert done == max(s for s in range(at) if s % 5 in (0, 2, 4))
            resumes.append([state["epoch"], state["step"]])
        monkeypatch.undo()
    if stops == [1]:  # interrupted before the first checkpoint: nothing to resume, a plain run starts over
        assert not checkpoint_dir(out).exists()
        with pytest.raises(InterestGymError, match="--resume: no checkpoint at"):
            finetune(tiny_dataset, out, None, resume=True, log=None)
        finetune(tiny_dataset, out, config(tiny_bert), checkpoint_every=2, log=None)
    else:
        finetune(tiny_dataset, out, None, resume=True, checkpoint_every=2, log=None)
    same_as(outputs(out), uninterrupted)
    assert json.loads((out / "finetune.json").read_text())["resumed"] == resumes
    assert not checkpoint_dir(out).exists()  # removed once the model is written


def test_an_interrupt_while_a_checkpoint_is_written_keeps_the_previous_one(tiny_dataset, tiny_bert, tmp_path, monkeypatch,
                                                                          uninterrupted):
    out = tmp_path / "m"
    real_save, calls = torch.save, []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the third checkpoint (after step 5's epoch end): half a file, then the interrupt
            Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_dataset, out, config(tiny_bert), checkpoint_every=2, log=None)
    monkeypatch.undo()
    state = read_checkpoint(checkpoint_dir(out))["state"]
    assert (state["epoch"], state["step"]) == (1, 4)  # the second checkpoint, whole
    assert [p.name for p in checkpoint_dir(out).iterdir()] == [CHECKPOINT_FILE]  # no half-written file left
    finetune(tiny_dataset, out, None, resume=True, checkpoint_every=2, log=None)
    same_as(outputs(out), uninterrupted)


def test_resume_refuses_other_settings_or_data_and_a_rerun_does_not_discard_a_checkpoint(tiny_dataset, tiny_bert, tmp_path,
                                                                                         monkeypatch):
    out = tmp_path / "m"
    Interrupt(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        finetune(tiny_dataset, out, config(tiny_bert), checkpoint_every=2, log=None)
    monkeypatch.undo()
    ckpt = checkpoint_dir(out)
    with pytest.raises(InterestGymError, match=rf"--out {out}: an interrupted fine-tune left a checkpoint \(epoch 1 of 3, step 2 "
                                               rf"of 5\) in {ckpt}; continue it with --resume, or delete {ckpt} to start over"):
        finetune(tiny_dataset, out, config(tiny_bert), log=None)
    with pytest.raises(InterestGymError, match=r"these differ: --lr 0.001 \(the checkpoint's: 0.01\); --seed 1 \(the "
                                               r"checkpoint's: 0\); drop them \(only --threads may change\)"):
        finetune(tiny_dataset, out, config(tiny_bert, learning_rate=1e-3, seed=1), resume=True, log=None)
    other = write_tiny_dataset(tmp_path / "other", seed=1)
    with pytest.raises(InterestGymError, match=rf"DATASET {other} \(the checkpoint's: {tiny_dataset}\)"):
        finetune(other, out, None, resume=True, log=None)
    (ckpt / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(InterestGymError, match=rf"{ckpt / CHECKPOINT_FILE}: cannot be read as a fine-tuning checkpoint .*delete "
                                               rf"{ckpt} to start over"):
        finetune(tiny_dataset, out, None, resume=True, log=None)


def test_the_command_line_says_how_to_resume_and_takes_the_checkpoints_settings(tiny_dataset, tiny_bert, tmp_path, monkeypatch,
                                                                               uninterrupted):
    out = tmp_path / "m"
    argv = ["finetune", str(tiny_dataset), "--base", str(tiny_bert), "--out", str(out), "--max-length", "8", "--batch-size", "8",
            "--epochs", "3", "--lr", "1e-2", "--max-pairs", "40", "--max-valid-pairs", "24", "--patience", "3", "--window",
            str(WINDOW), "--threads", "1", "--checkpoint-every", "2"]
    Interrupt(monkeypatch, 7)
    result = CliRunner().invoke(cli, argv)
    monkeypatch.undo()
    assert result.exit_code == 1 and not out.exists()
    assert (f"the last checkpoint (after epoch 1 of 3) is in {checkpoint_dir(out)}: continue with `interestgym finetune "
            f"{tiny_dataset} --out {out} --resume`") in result.stderr
    # a setting that differs is refused; the checkpoint's settings need not be repeated; --threads may change
    result = CliRunner().invoke(cli, ["finetune", str(tiny_dataset), "--out", str(out), "--resume", "--epochs", "4"])
    assert result.exit_code != 0 and "--epochs 4 (the checkpoint's: 3)" in str(result.exception)
    assert "pairs:" not in result.stderr  # refused before any data is read
    result = CliRunner().invoke(cli, ["finetune", str(tiny_dataset), "--out", str(out), "--resume", "--threads", "1",
                                      "--checkpoint-every", "2"])
    assert result.exit_code == 0, result.output
    assert "resuming the fine-tune checkpointed in" in result.stderr
    same_as(outputs(out), uninterrupted)
