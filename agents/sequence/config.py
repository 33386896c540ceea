"""``SequenceConfig``: every setting of ``interestgym train-sequence``, with its default and meaning."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from interestgym.core.metrics import parse_metric
from interestgym.errors import InterestGymError

#: The tracker networks (:mod:`interestgym.agents.sequence.models`).
MODELS = ("gru", "sasrec")

#: Defaults that differ between the two models (reference shapes, CPU-friendly sizes).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "gru": {"layers": 1, "heads": 1, "dropout": 0.3},
    "sasrec": {"layers": 2, "heads": 2, "dropout": 0.3},
}


#: What a resume may change: how long and how verbosely training goes on, and where it runs.
RESUME_MAY_CHANGE = ("max_epochs", "patience", "max_minutes", "progress_bar", "device", "torch_threads")


@dataclass
class SequenceConfig:
    """Settings of one tracker training run (``RUN_DIR/sequence.json`` keeps them)."""

    dataset: str
    """Dataset directory (prepared and encoded)."""
    run_dir: str
    """Output folder of the run."""
    model: str = "sasrec"
    """``gru`` (GRU4Rec-style) or ``sasrec`` (SASRec-style causal Transformer)."""
    name: str | None = None
    """Name in result tables (default: the model's name)."""
    embeddings: str | None = None
    """Embedding name in the dataset (default: the only one)."""
    window: int = 50
    """k: the tracker's state is the user's last k decisions."""
    hidden: int = 64
    """Width of item representations and states."""
    layers: int | None = None
    """Transformer blocks / GRU layers (default: sasrec 2, gru 1)."""
    heads: int | None = None
    """Attention heads of sasrec (default 2)."""
    dropout: float | None = None
    """Dropout (default 0.3)."""
    item_ids: str = "auto"
    """Learned item-id embeddings: ``on``, ``off`` or ``auto`` (on when most validation decisions are on
    items that training users decided on, i.e. ids recur)."""
    text: bool = True
    """Add the projected encoder vector to every item's representation."""
    learning_rate: float = 1e-3
    """Adam's learning rate."""
    weight_decay: float = 0.0
    """AdamW's weight decay."""
    batch_size: int = 128
    """Training chunks (windows) per batch."""
    max_epochs: int = 200
    """Most passes over the training users."""
    patience: int = 5
    """Stop after this many validations without a better validation metric."""
    max_minutes: float | None = None
    """Stop training after this many minutes (the best model so far is kept)."""
    loss: str = "auto"
    """``full`` softmax over the catalogue, ``sampled`` (shared uniform negatives per batch), or ``auto``
    (full up to 10,000 items)."""
    train_negatives: int = 1024
    """Shared negatives per batch with ``loss = sampled``."""
    metric: str = "ndcg@10"
    """Validation metric for early stopping and the best model (mean over validation users)."""
    negatives: str = "uniform"
    """Negatives of validation scoring points (logs without impressions), as ``interestgym train``."""
    n_negatives: int = 99
    """Sampled negatives per validation scoring point."""
    protocol_seed: int = 0
    """Seed of the scoring protocol's negatives."""
    exclude: str = "auto"
    """Which items the validation negatives leave out, as ``interestgym train --exclude``."""
    history_negatives: int = 0
    """Up to this many validation negatives from the user's own earlier items, as ``interestgym train
    --history-negatives`` (validate a tracker under the protocol it will be evaluated on)."""
    eval_users: int | None = None
    """Validation users scored for early stopping (seeded subsample; None: all)."""
    seed: int = 0
    """Seed of initialisation, dropout and chunk offsets."""
    device: str = "auto"
    """Torch device: ``auto`` (CUDA when available), ``cpu``, ``cuda``."""
    torch_threads: int | None = 1
    """Torch CPU threads (None: torch's default). One is fastest for these small models on a shared
    2-core machine (several threads spin against each other under load: 10x slower measured)."""
    progress_bar: bool = True
    """Progress bar (log lines when output is not a terminal)."""
    folds: int = 0
    """After the tracker, train this many more, each on the training users outside one fold (a seeded
    partition of them): ``train --sequence`` then gives every training user the scores of the tracker that never
    saw them (out-of-fold), as validation and test users get the main tracker's. 0: none (the agent then learns
    on scores the tracker fitted to)."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InterestGymError(f"--model {self.model!r}: expected one of {', '.join(MODELS)}")
        for key, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.item_ids not in ("auto", "on", "off"):
            raise InterestGymError(f"--item-ids {self.item_ids!r}: expected auto, on or off")
        if self.loss not in ("auto", "full", "sampled"):
            raise InterestGymError(f"--loss {self.loss!r}: expected auto, full or sampled")
        for key in ("window", "hidden", "layers", "heads", "batch_size", "max_epochs", "patience", "train_negatives", "n_negatives"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise InterestGymError(f"--{key.replace('_', '-')} {value!r}: expected an integer >= 1")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise InterestGymError(f"--dropout {self.dropout!r}: expected a number in [0, 1) (the share of units dropped)")
        if self.model == "sasrec" and self.hidden % self.heads:
            raise InterestGymError(f"--hidden {self.hidden} is not divisible by --heads {self.heads}: each attention head takes "
                                   "hidden / heads of the width; expected a --hidden that is a multiple of --heads")
        if not (isinstance(self.learning_rate, (int, float)) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InterestGymError(f"--learning-rate {self.learning_rate!r}: expected a finite number > 0")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InterestGymError(f"--max-minutes {self.max_minutes!r}: expected a number > 0")
        if self.negatives not in ("uniform", "popularity"):
            raise InterestGymError(f"--negatives {self.negatives!r}: expected uniform or popularity")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise InterestGymError(f"--weight-decay {self.weight_decay!r}: expected a number >= 0")
        if self.torch_threads is not None and not (isinstance(self.torch_threads, int) and self.torch_threads >= 0):
            raise InterestGymError(f"--torch-threads {self.torch_threads!r}: expected an integer >= 0 (0: torch's default)")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 0 or self.folds == 1:
            raise InterestGymError(f"--folds {self.folds!r}: expected 0 (no out-of-fold trackers) or an integer >= 2 (a fold is "
                                   "left out of each one's training users)")
        if self.eval_users is not None and not (isinstance(self.eval_users, int) and self.eval_users >= 0):
            raise InterestGymError(f"--eval-users {self.eval_users!r}: expected an integer >= 0 (0: all validation users)")
        parse_metric(self.metric.strip().lower())  # here: a bad metric found after the run folder is written strands it
        if self.name is None:
            self.name = self.model
        if self.eval_users == 0:
            self.eval_users = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> SequenceConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InterestGymError(f"{where}: unknown setting(s) {', '.join(unknown)}; expected {', '.join(sorted(names))}")
        return cls(**values)

    def protocol_spec(self, split: str):
        """The scoring protocol of ``split``, as ``interestgym train`` / ``evaluate`` build it."""
        from interestgym.envs.replay_data import ProtocolSpec

        return ProtocolSpec(split=split, n_negatives=self.n_negatives, negatives=self.negatives, seed=self.protocol_seed,
                            exclude=self.exclude, history_negatives=self.history_negatives)

    def replay_data(self, split: str):
        from interestgym.envs.replay_data import load_replay_data

        return load_replay_data(self.dataset, self.embeddings, self.protocol_spec(split))
