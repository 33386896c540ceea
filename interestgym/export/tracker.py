"""Export a sequence tracker (``interestgym train-sequence``) for the runtime: ONNX + item table + manifest.

What production needs to run a tracker without torch (:mod:`interestgym.runtime.tracker`):

* ``tracker.onnx``: a window of the user's last ``k`` decisions -> the user's state ``h``. Inputs
  ``item_reps`` (B, k, hidden) float32 (the items' representations, looked up in the item table),
  ``action`` and ``gap`` (B, k) int64 (:mod:`interestgym.core.tokens`), ``length`` (B,) int64 (the window
  is laid out oldest first and right-padded; the model is causal, so padding never changes the state).
* ``items.npy``: (n_items, hidden) float32, every catalogue item's representation ``id_emb[id_row(i)] +
  W x_i``, computed once here with the encoder's vectors: the candidates' vectors and the window's inputs.
* ``item_ids.json``: the catalogue's item ids, row by row.
* ``tracker.json`` (written last): format, model spec, the decision rule (which events a tracker reads),
  the dataset and embeddings it was trained with, the ONNX-vs-torch check, sha256 of every file.

The score of a candidate is ``h . items[c]``, as :func:`interestgym.agents.sequence.scoring.score_replay`
computes it. The folder is written beside the target and swapped in (:func:`interestgym.export.writer.write_atomic_directory`).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from interestgym.errors import ArtifactError
from interestgym.export.writer import write_atomic_directory
from interestgym.io import sha256_file
from interestgym.runtime.tracker import TRACKER_FORMAT, TRACKER_MANIFEST

INPUTS = ("item_reps", "action", "gap", "length")
OUTPUT = "state"
#: The TorchScript exporter's opset (it writes opsets up to 17; the policy's torch.export graph is at 18).
ONNX_OPSET = 17


class _StateGraph(nn.Module):
    """The exported computation: item representations + tokens of a window -> the newest decision's state."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, item_reps: torch.Tensor, action: torch.Tensor, gap: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        out = self.model.encode_reps(item_reps, action, gap)
        return out[torch.arange(out.shape[0]), length - 1]


@dataclass
class TrackerExport:
    """What :func:`export_tracker` wrote: the folder, its manifest, and the ONNX-vs-torch check."""

    out: Path
    manifest: dict[str, Any]
    max_abs_state_diff: float


def _export_onnx(graph: _StateGraph, window: int, hidden: int, path: Path) -> None:
    example = (torch.zeros(2, window, hidden), torch.zeros(2, window, dtype=torch.long),
               torch.zeros(2, window, dtype=torch.long), torch.ones(2, dtype=torch.long))
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the exporters' own FutureWarnings / DeprecationWarnings are not the user's to act on
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # tracing notes (shape checks become constants: the window width is fixed) and the GRU's
            # batch-size note (the graph is checked below on a batch of another size)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)
            # The TorchScript exporter: it writes nn.GRU as the ONNX GRU operator (the torch.export one
            # unrolls it), and a window has a fixed width k, so no dynamic shape but the batch is needed.
            torch.onnx.export(graph, example, str(path), input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_axes={**{name: {0: "batch"} for name in INPUTS}, OUTPUT: {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)
    finally:
        registration_log.setLevel(level)
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))


def export_tracker(run_dir: str | Path, out: str | Path, *, which: str = "best", dataset: str | Path | None = None,
                   verify_windows: int = 256, seed: int = 0) -> TrackerExport:
    """Export the tracker of ``run_dir`` (its ``best`` or ``final`` weights) into ``out``, atomically
    (:func:`write_tracker_files` into a fresh folder, swapped in).

    :param dataset: the prepared dataset whose item vectors the tracker reads (default: the one it was
        trained on, as recorded in its ``sequence.json``); refused if its items or embeddings differ.
    :param verify_windows: random windows on which the ONNX states must match torch's (max |diff| <= 1e-4).
    """
    out = Path(out)
    written: dict[str, Any] = {}

    def write_all(tmp: Path) -> None:
        written["manifest"], written["diff"] = write_tracker_files(tmp, run_dir, which=which, dataset=dataset,
                                                                   verify_windows=verify_windows, seed=seed)

    write_atomic_directory(out, write_all, lambda d: (d / TRACKER_MANIFEST).is_file(), "a tracker export")
    return TrackerExport(out=out, manifest=written["manifest"], max_abs_state_diff=written["diff"])


def write_tracker_files(folder: Path, run_dir: str | Path, *, which: str = "best", dataset: str | Path | None = None,
                        verify_windows: int = 256, seed: int = 0) -> tuple[dict[str, Any], float]:
    """Write the tracker of ``run_dir`` into the existing, empty ``folder`` (the files above, its
    manifest last) and return (the manifest, the largest ONNX-vs-torch state difference). Used by
    :func:`export_tracker`, and by a policy export whose score weighs the tracker (a sub-folder)."""
    from interestgym.agents.sequence.folder import check_finished
    from interestgym.agents.sequence.scoring import (
        embeddings_sha256,
        item_table,
        load_tracker,
    )
    from interestgym.core.tokens import N_ACTIONS, N_GAP_BUCKETS
    from interestgym.data.dataset import Dataset
    from interestgym.data.schema import ACTIONS

    run_dir, folder = Path(run_dir), Path(folder)
    check_finished(run_dir, "an export")
    tracker = load_tracker(run_dir, which)
    recorded = tracker.dataset
    ds = Dataset.open(Path(dataset) if dataset is not None else Path(str(recorded.get("path"))))
    embeddings, _ = ds.load_embeddings(recorded.get("embeddings"))

    class _Replay:  # what Tracker.bind reads of a replay: the dataset, its embeddings and their name
        dataset_path = ds.path
        embeddings_name = recorded.get("embeddings")

    _Replay.embeddings = embeddings
    tracker.bind(_Replay)  # refuses other items or other vectors
    model, spec = tracker.model.eval(), tracker.spec
    table = item_table(model)
    graph = _StateGraph(model).eval()

    np.save(folder / "items.npy", table)
    item_ids = [str(i) for i in ds.items["item_id"].tolist()]
    (folder / "item_ids.json").write_text(json.dumps(item_ids), encoding="utf-8")
    _export_onnx(graph, spec.window, spec.hidden, folder / "tracker.onnx")
    diff = _verify(graph, folder / "tracker.onnx", table, spec.window, verify_windows, seed)
    if diff > 1e-4:
        raise ArtifactError(f"{folder / 'tracker.onnx'}: ONNX states differ from torch's by up to {diff:.2e}; expected <= 1e-4")
    files = {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
             for name in ("tracker.onnx", "items.npy", "item_ids.json")}
    manifest = {
        "format": TRACKER_FORMAT,
        "model": spec.as_dict(),
        "window": spec.window,
        "hidden": spec.hidden,
        "inputs": list(INPUTS),
        "output": OUTPUT,
        "score": "h . items[c]: the state of the window ending at the user's last decision, dotted with the candidate's row",
        "tokens": {"actions": list(ACTIONS), "n_actions": N_ACTIONS, "n_gap_buckets": N_GAP_BUCKETS,
                   "gap": "0 first decision, 1 same second, else 2 + floor(log2(seconds since the previous decision)), capped"},
        "decisions": {"action_weights": ds.action_weights, "positive_rating": ds.positive_rating,
                      "rule": "action weight > 0, and for ratings value >= positive_rating, on a catalogue item"},
        "dataset": {"path": str(ds.path), "item_ids_sha256": ds.item_ids_sha256,
                    "embeddings": recorded.get("embeddings"), "embeddings_sha256": embeddings_sha256(embeddings)},
        "run": {"dir": str(run_dir), "which": which, "epoch": tracker.info.get("epoch"),
                "valid_score": tracker.info.get("valid_score")},
        "verification": {"windows": int(verify_windows), "max_abs_state_diff": diff},
        "files": files,
    }
    (folder / TRACKER_MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return manifest, diff


def _verify(graph: _StateGraph, path: Path, table: np.ndarray, window: int, n: int, seed: int) -> float:
    """Largest |ONNX - torch| state over ``n`` random windows of random lengths (0.0 when n = 0)."""
    if n <= 0:
        return 0.0
    import onnxruntime

    from interestgym.core.tokens import N_ACTIONS, N_GAP_BUCKETS

    rng = np.random.default_rng(seed)
    length = rng.integers(1, window + 1, size=n)
    valid = np.arange(window)[None, :] < length[:, None]
    items = np.where(valid, rng.integers(0, len(table), size=(n, window)), 0)
    reps = np.where(valid[..., None], table[items], table[0]).astype(np.float32)
    action = np.where(valid, rng.integers(0, N_ACTIONS, size=(n, window)), 0)
    gap = np.where(valid, rng.integers(0, N_GAP_BUCKETS, size=(n, window)), 0)
    with torch.inference_mode():
        expected = graph(*(torch.as_tensor(a) for a in (reps, action, gap, length))).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], dict(zip(INPUTS, (reps, action, gap, length))))[0]
    return float(np.abs(got - expected).max())
