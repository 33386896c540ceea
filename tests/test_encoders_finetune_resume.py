"""``interestgym finetune --resume``: a fine-tune interrupted anywhere (mid-epoch, at an epoch's end, while a
checkpoint is written, during a resume) continues to the very weights and history of an uninterrupted run;
a checkpoint of other settings or data is refused, naming what differs; nothing is left behind."""

# ruff: noqa: F811  (test parameters named after the imported fixtures, as pytest wants them)
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

# the fixtures tiny_bert and tiny_dataset are test_encoders_finetune's (pytest finds them by name here)
from test_encoders_finetune import WINDOW, tiny_bert, tiny_dataset, write_tiny_dataset  # noqa: F401

from interestgym.cli import cli
from interestgym.errors import InterestGymError

#: Changes with the run, not with its result.
RUN_FACTS = ("seconds", "command", "resumed")


@pytest.fixture(autouse=True, scope="module")
def _keep_rule_without_noise():
    """These runs check the resume's mechanics, among them putting a kept epoch's weights back: on their 24 validation
    pairs no top-1 gain exceeds its noise (the keep rule's margin, tested in test_encoders_finetune), so here an epoch
    is kept with a top-1 no worse than the base's, the rule the margin was added to."""
    with pytest.MonkeyPatch.context() as patch:  # module scope: the reference runs are module fixtures
        patch.setattr(ft, "top1_noise", lambda base, now, n_pairs: -1e-12)
        yield


#: Two runs of 5 steps an epoch, with validation and dropout:
#: - "all": every weight trained (3 layers asked of a 2-layer BERT), 3 epochs, the best is epoch 2, so its weights
#:   sit in the checkpoints of epoch 3 and are put back at the end;
#: - "top": the top layer trained on the kept outputs of the one below, patience 2 of 6 epochs: the best is epoch 2,
#:   epoch 3 leaves one epoch without improvement in the checkpoints of epoch 4, and early stopping ends the run
#:   after epoch 4 (checked by the reference runs).
RUNS = {"all": {"learning_rate": 1e-2, "epochs": 3, "patience": 3},
        "top": {"learning_rate": 3e-3, "epochs": 6, "patience": 2, "train_layers": 1}}


def config(tiny_bert: Path, run: str = "all", **changes) -> FinetuneConfig:
    settings = {"base": str(tiny_bert), "max_length": 8, "batch_size": 8, "max_pairs": 40, "max_valid_pairs": 24,
                "window_seconds": WINDOW, "threads": 1, **RUNS[run]}
    return FinetuneConfig(**{**settings, **changes})


class Interrupt:
    """Raise KeyboardInterrupt at the ``at``-th training step (1-based), counting across calls; ``at="write"``:
    when the model folder is about to be written (training done)."""

    def __init__(self, monkeypatch, at: int | str) -> None:
        self.calls, self.at = 0, at
        real = ft.batch_loss

        def batch_loss(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        def write_model_folder(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(ft, "batch_loss", batch_loss)
        if at == "write":
            monkeypatch.setattr(ft, "write_model_folder", write_model_folder)


def outputs(out: Path) -> tuple[dict[str, np.ndarray], dict]:
    provenance = json.loads((out / "finetune.json").read_text())
    return load_file(str(out / "model.safetensors")), {k: v for k, v in provenance.items() if k not in RUN_FACTS}


@pytest.fixture(scope="module")
def references(tiny_dataset, tiny_bert, tmp_path_factory):
    """The uninterrupted runs (weights, provenance), computed once each."""
    made: dict[str, tuple] = {}

    def reference(run: str):
        if run not in made:
            out = tmp_path_factory.mktemp("ref") / run
            finetune(tiny_dataset, out, config(tiny_bert, run), checkpoint_every=2, log=None)
            made[run] = outputs(out)
            provenance = made[run][1]
            assert provenance["steps_per_epoch"] == 5 and provenance["best_epoch"] == 2, provenance["history"]
            assert provenance["epochs_run"] == {"all": 3, "top": 4}[run], provenance["history"]
            assert provenance["trained"] == {"all": "all weights", "top": "top 1 of 2 layers (embeddings and layers below "
                                                                          "frozen)"}[run]
        return made[run]

    return reference


@pytest.fixture()
def uninterrupted(references):
    return references("all")


def same_as(result: tuple[dict, dict], reference: tuple[dict, dict]) -> None:
    weights, provenance = result
    assert weights.keys() == reference[0].keys()
    assert all(np.array_equal(weights[k], reference[0][k]) for k in weights), "weights differ"
    assert provenance == reference[1]


# steps 1-5 are epoch 1 (checkpoints after steps 2 and 4, and after its validation), 6-10 epoch 2, 11-15 epoch 3, ...
@pytest.mark.parametrize(("run", "stops"), [("all", [3]), ("all", [6]), ("all", [8, 12]), ("all", [1]), ("all", [15]),
                                            ("top", [13]), ("top", [17]), ("top", [12, "write"])])
def test_an_interrupted_finetune_resumes_to_the_uninterrupted_weights(tiny_dataset, tiny_bert, tmp_path, monkeypatch,
                                                                      references, run, stops):
    out = tmp_path / "m"
    done = 0  # training steps completed before the interrupt, as far as the checkpoint knows
    resumes = []
    for k, at in enumerate(stops):
        Interrupt(monkeypatch, at if at == "write" else at - done)
        with pytest.raises(KeyboardInterrupt):
            finetune(tiny_dataset, out, config(tiny_bert, run) if k == 0 else None, resume=k > 0, checkpoint_every=2, log=None)
        assert not out.exists()
        if (checkpoint_dir(out) / CHECKPOINT_FILE).exists():
            doc = read_checkpoint(checkpoint_dir(out))
            state = doc["state"]
            done = (state["epoch"] - 1) * 5 + state["step"]
            # the last checkpoint: after an even step or after an epoch's end, never past the interrupt
            assert done == (20 if at == "write" else max(s for s in range(at) if s % 5 in (0, 2, 4)))
            assert state["stopped"] == (at == "write")  # early stopping after epoch 4, in the checkpoint
            resumes.append([state["epoch"], state["step"]])
        monkeypatch.undo()
    if stops == [1]:  # interrupted before the first checkpoint: nothing to resume, a plain run starts over
        assert not checkpoint_dir(out).exists()
        with pytest.raises(InterestGymError, match="--resume: no checkpoint at"):
            finetune(tiny_dataset, out, None, resume=True, log=None)
        finetune(tiny_dataset, out, config(tiny_bert, run), checkpoint_every=2, log=None)
    else:
        finetune(tiny_dataset, out, None, resume=True, checkpoint_every=2, log=None)
    same_as(outputs(out), references(run))
    provenance = json.loads((out / "finetune.json").read_text())
    assert provenance["resumed"] == resumes
    if resumes:  # every call's training time, not the last one's
        assert provenance["seconds"] >= round(doc["state"]["seconds"], 1) and doc["state"]["seconds"] > 0
    assert not checkpoint_dir(out).exists()  # removed once the model is written


def test_an_interrupt_while_a_checkpoint_is_written_keeps_the_previous_one(tiny_dataset, tiny_bert, tmp_path, monkeypatch,
                                                                          uninterrupted):
    out = tmp_path / "m"
    real_save, calls = torch.save, []

    def save(obj, fh, *args, **kwargs):
        calls.append(fh)
        if len(calls) == 3:  # the third checkpoint (after step 5's epoch end): half a file, then the interrupt
            fh.write(b"PK\x03\x04 half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, fh, *args, **kwargs)

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
                                               r"checkpoint's: 0\); drop them \(only --threads and --checkpoint-every may change\)"):
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
    # as the option is spelled, not as Python holds it; the base folder by another path is the same folder
    result = CliRunner().invoke(cli, ["finetune", str(tiny_dataset), "--out", str(out), "--resume", "--train-layers", "all",
                                      "--pooling", "mean"])
    assert "--pooling 'mean' (the checkpoint's: (the base folder's)); --train-layers all (the checkpoint's: 3)" in str(result.exception)
    result = CliRunner().invoke(cli, ["finetune", str(tiny_dataset), "--out", str(out), "--resume", "--threads", "1",
                                      "--checkpoint-every", "2", "--base", f"{tiny_bert.parent}/./{tiny_bert.name}/"])
    assert result.exit_code == 0, result.output
    assert "resuming the fine-tune checkpointed in" in result.stderr
    same_as(outputs(out), uninterrupted)


def test_an_interrupted_overwrite_says_to_resume_with_overwrite(tiny_dataset, tiny_bert, tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "m"
    finetune(tiny_dataset, out, config(tiny_bert, seed=1), log=None)  # the model the run is to replace
    argv = ["finetune", str(tiny_dataset), "--base", str(tiny_bert), "--out", str(out), "--max-length", "8", "--batch-size", "8",
            "--epochs", "3", "--lr", "1e-2", "--max-pairs", "40", "--max-valid-pairs", "24", "--patience", "3", "--window",
            str(WINDOW), "--threads", "1", "--checkpoint-every", "2", "--overwrite"]
    Interrupt(monkeypatch, 7)
    result = CliRunner().invoke(cli, argv)
    monkeypatch.undo()
    command = f"interestgym finetune {tiny_dataset} --out {out} --resume --overwrite"
    assert f"continue with `{command}`" in result.stderr
    result = CliRunner().invoke(cli, command.split()[1:] + ["--checkpoint-every", "2"])
    assert result.exit_code == 0, result.output
    same_as(outputs(out), uninterrupted)


def test_a_checkpoint_left_after_the_model_was_written_is_removed_by_the_next_run(tiny_dataset, tiny_bert, tmp_path, monkeypatch):
    out = tmp_path / "m"
    monkeypatch.setattr(ft, "remove_checkpoint", lambda folder: (_ for _ in ()).throw(KeyboardInterrupt))
    result = CliRunner().invoke(cli, ["finetune", str(tiny_dataset), "--base", str(tiny_bert), "--out", str(out), "--max-length",
                                      "8", "--epochs", "1", "--max-pairs", "16", "--window", str(WINDOW), "--threads", "1"])
    monkeypatch.undo()
    assert (out / "finetune.json").is_file() and (checkpoint_dir(out) / CHECKPOINT_FILE).is_file()
    assert f"interrupted after the fine-tuned model was written to {out}; {checkpoint_dir(out)} is left over" in result.stderr
    said: list[str] = []
    finetune(tiny_dataset, out, config(tiny_bert, epochs=1, max_pairs=16), overwrite=True, log=said.append)
    assert f"removing {checkpoint_dir(out)}: the checkpoint of a finished fine-tune whose model {out} was written after it" in said
    assert not checkpoint_dir(out).exists()


def test_a_checkpoint_of_the_same_state_has_the_same_bytes_wherever_it_is_written(tmp_path):
    # torch names a zip saved to a path after that path, and the checkpoint went through a random temporary name
    from interestgym.encoders.finetune_checkpoint import TrainState, save_checkpoint

    weight = torch.nn.Parameter(torch.arange(4.0))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    torch.manual_seed(0)
    for name in ("one", "two"):
        save_checkpoint(tmp_path / name, {"base": "x"}, 1, TrainState(), [("w", weight)], optimizer, scheduler, None,
                        "cpu", 1)
    assert (tmp_path / "one" / CHECKPOINT_FILE).read_bytes() == (tmp_path / "two" / CHECKPOINT_FILE).read_bytes()
