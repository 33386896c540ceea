"""Reading a run's TensorBoard scalars (the inputs of the learning-curves figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_scalars(tb_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar series of a TensorBoard log directory: ``tag -> (steps, values)``.

    A resumed run appends event files to the same directory; the accumulator reads them in order, and
    a step logged twice (the resumed run repeats the checkpoint's step) keeps its last value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for tag in acc.Tags().get("scalars", []):
        by_step: dict[int, float] = {}
        for event in acc.Scalars(tag):
            by_step[int(event.step)] = float(event.value)
        steps = np.array(sorted(by_step), dtype=np.int64)
        out[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return out
