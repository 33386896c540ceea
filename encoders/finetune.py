"""Contrastive fine-tuning of a BERT encoder on co-engagement pairs: the text space learns behaviour.

A frozen sentence encoder places films by what their titles say; whether the same people like them
it cannot know. Fine-tuning moves the texts of items that one user liked one after the other
(:mod:`interestgym.encoders.pairs`, **training users only**) towards each other and away from the
other items of the batch. Top to bottom:

1. **Pairs**: training users' pairs (capped at ``max_pairs``, seeded) to learn from; validation
   users' pairs (capped at ``max_valid_pairs``) for the validation loss. Test users are not read.
2. **Loss** (InfoNCE with in-batch negatives, sentence-transformers' MultipleNegativesRankingLoss,
   made symmetric): a batch of B pairs (a_i, p_i) is encoded exactly as ``interestgym encode`` does
   (same tokenizer, max length and pooling: :func:`~interestgym.encoders.bert.pool_hidden_states`,
   then L2 normalisation); logits_ij = scale * cos(a_i, p_j); the loss is the cross-entropy of the
   diagonal, from a to p and from p to a, averaged. A column holding *the same item* as the row's
   positive or anchor (a popular film occurs in several pairs of a batch) is masked out rather than
   counted as a negative. Each distinct item of a batch goes through the model once.
3. **Training**: AdamW, linear warm-up then linear decay, dropout as in the base model's config.
   The validation loss (model in eval mode, fixed batches) is computed before training and after
   every epoch; training stops early after ``patience`` epochs without improvement, and the weights
   of the best epoch are kept.
4. **Saving**, atomically (built in a sibling folder, checked, then renamed into place): a Hugging
   Face folder: ``config.json``, ``model.safetensors``, the tokenizer, ``1_Pooling/config.json`` and
   ``sentence_bert_config.json`` (pooling and max length, which :class:`~interestgym.encoders.bert.BertEncoder`
   reads as its defaults; sentence-transformers reads them too, with ``modules.json``) and
   ``finetune.json``: the provenance (base, dataset, pair counts, epochs, seed, losses, time).
   ``interestgym encode DATASET --encoder MODEL_DIR`` loads it like any local model folder.

Determinism: one seed sets torch's generator (dropout, nothing else is random in torch here) and the
numpy generators of the pair subset and the batch order; torch runs with deterministic algorithms.
The same seed, data and thread count give the same weights on CPU.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from interestgym.encoders.bert import (
    ModelFolder,
    available_cpus,
    minilm_path,
    pool_hidden_states,
    resolve_device,
)
from interestgym.encoders.finetune_checkpoint import (
    CHECKPOINT_FILE,
    PROVENANCE_FILE,
    TrainState,
    checkpoint_dir,
    describe,
    read_checkpoint,
    refuse_conflicts,
    run_identity,
    save_checkpoint,
    saved_config,
    settings,
    written_after,
)
from interestgym.encoders.finetune_checkpoint import remove as remove_checkpoint
from interestgym.encoders.pairs import CoEngagementPairs, PairSpec, mine_pairs

from interestgym import __version__
from interestgym.errors import ArtifactError, DataError, InterestGymError
from interestgym.io import check_folder_path

_FORMAT = 1


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run (written to ``finetune.json``)."""

    #: ``minilm`` or the path of a local Hugging Face model folder.
    base: str = "minilm"
    #: Tokens per text (ml-100k's item texts have at most 31 MiniLM tokens).
    max_length: int = 32
    #: Pairs per step; the other pairs of the batch are each pair's negatives.
    batch_size: int = 64
    #: Most epochs over the training pairs (early stopping may end sooner).
    epochs: int = 2
    #: AdamW's peak learning rate.
    learning_rate: float = 1e-4
    #: Fraction of the steps with a linearly rising learning rate.
    warmup_fraction: float = 0.1
    #: AdamW's weight decay.
    weight_decay: float = 0.01
    #: Inverse temperature of the InfoNCE logits (sentence-transformers' default, 20).
    scale: float = 20.0
    #: A positive pairs with the next positive of the same user at most this many seconds later.
    window_seconds: float = 3600.0
    #: Following positives each positive pairs with.
    neighbours: int = 1
    #: At most this many training pairs (seeded subset).
    max_pairs: int | None = 20_000
    #: At most this many validation pairs (seeded subset).
    max_valid_pairs: int | None = 2_000
    #: Epochs without a lower validation loss before stopping.
    patience: int = 1
    #: Pooling (default: the base folder's).
    pooling: str | None = None
    #: Seed of the pair subsets, the batch order and dropout.
    seed: int = 0
    #: ``cpu``, ``cuda`` or ``auto``.
    device: str = "cpu"
    #: CPU threads of torch (default: every CPU this process may use).
    threads: int | None = None
    #: Train only the top N transformer layers (the frozen ones run once per item); None = every weight.
    #: 3 = the top half of MiniLM: a step costs about half of a full one.
    train_layers: int | None = 3

    def check(self) -> None:
        """Refuse settings that cannot work, naming the option."""
        positive_ints = {"max_length": self.max_length, "batch_size": self.batch_size, "epochs": self.epochs,
                         "neighbours": self.neighbours}
        for name, value in positive_ints.items():
            if not isinstance(value, int) or value < 1:
                raise InterestGymError(f"--{name.replace('_', '-')} {value!r}: expected an integer >= 1")
        if self.max_length < 2:
            raise InterestGymError(f"--max-length {self.max_length}: expected at least 2 (room for the special tokens)")
        if self.batch_size < 2:
            raise InterestGymError(f"--batch-size {self.batch_size}: expected at least 2 (the other pairs of a batch are the negatives)")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InterestGymError(f"--lr {self.learning_rate}: expected a finite number > 0")
        if not (0 <= self.warmup_fraction < 1):
            raise InterestGymError(f"warmup_fraction {self.warmup_fraction}: expected a number in [0, 1)")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise InterestGymError(f"--scale {self.scale}: expected a finite number > 0")
        if self.patience < 1:
            raise InterestGymError(f"--patience {self.patience}: expected an integer >= 1")
        if self.train_layers is not None and self.train_layers < 1:
            raise InterestGymError(f"--train-layers {self.train_layers}: expected an integer >= 1 (or all)")
        for name in ("max_pairs", "max_valid_pairs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InterestGymError(f"--{name.replace('_', '-')} {value}: expected at least 1")
        PairSpec(window_seconds=self.window_seconds, neighbours=self.neighbours)  # checks those two


@dataclass
class FinetuneResult:
    """What :func:`finetune` wrote and how it went."""

    out: Path
    provenance: dict[str, Any]
    #: Validation loss before training (index 0) and after each epoch.
    valid_losses: list[float] = field(default_factory=list)

    def summary(self) -> str:
        p = self.provenance
        best = p["best_epoch"]
        losses = ", ".join(f"{x:.4f}" for x in self.valid_losses) or "none (no validation pairs)"
        kept = ("the base model's weights (no epoch lowered the validation loss with an in-batch top-1 above the base's "
                "beyond its noise)" if best == 0 else f"the weights of epoch {best}")
        top1 = ("" if p.get("valid_top1_before") is None or p.get("valid_top1_best") is None else
                f" (in-batch top-1 {p['valid_top1_before']:.3f} -> {p['valid_top1_best']:.3f})")
        what = "fine-tuned" if best != 0 else "trained (nothing kept)"
        return (f"{what} {p['base']['spec']} on {p['pairs']['train']['kept']:,} training pairs for {p['epochs_run']} "
                f"epoch(s) in {p['seconds'] / 60:.1f} min; validation loss {losses}; saved {kept}{top1} to {self.out}")


# ------------------------------------------------------------------------------------------- loss
def masked_logits(anchor: Any, positive: Any, anchor_item: Any, positive_item: Any, scale: float = 1.0) -> tuple[Any, Any, Any]:
    """(anchor -> positive logits, positive -> anchor logits, the diagonal targets) of a batch of pairs: logits_ij =
    scale * cos(a_i, p_j), with column j masked (-inf) for row i when it is the same item as i's partner or as i
    itself (such a column is no negative), the diagonal kept."""
    import torch

    n = anchor.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=anchor.device)
    logits = scale * anchor @ positive.T  # row i: anchor i against every positive
    same_ap = (positive_item[None, :] == positive_item[:, None]) | (positive_item[None, :] == anchor_item[:, None])
    same_pa = (anchor_item[None, :] == anchor_item[:, None]) | (anchor_item[None, :] == positive_item[:, None])
    target = torch.arange(n, device=anchor.device)
    return logits.masked_fill(same_ap & ~eye, float("-inf")), logits.T.masked_fill(same_pa & ~eye, float("-inf")), target


def info_nce_loss(anchor: Any, positive: Any, anchor_item: Any, positive_item: Any, scale: float) -> Any:
    """Symmetric InfoNCE over in-batch negatives, with same-item columns masked (:func:`masked_logits`).

    :param anchor: (B, d) unit vectors of the first items.
    :param positive: (B, d) unit vectors of the second items.
    :param anchor_item: (B,) item ids (ints) of ``anchor``'s rows; ``positive_item`` likewise.
    :param scale: inverse temperature.
    :return: the mean of the a->p and p->a cross-entropies of the diagonal.
    """
    import torch

    a_to_p, p_to_a, target = masked_logits(anchor, positive, anchor_item, positive_item, scale)
    return (torch.nn.functional.cross_entropy(a_to_p, target) + torch.nn.functional.cross_entropy(p_to_a, target)) / 2


# ----------------------------------------------------------------------------------------- batches
class ItemTexts:
    """Token ids of every item text, computed once; batches of items padded on demand."""

    def __init__(self, tokenizer: Any, texts: list[str], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.features = tokenizer(texts, truncation=True, max_length=max_length, padding=False)
        self.keys = [k for k in self.features if k in ("input_ids", "attention_mask", "token_type_ids")]

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        chosen = {k: [self.features[k][int(i)] for i in rows] for k in self.keys}
        return dict(self.tokenizer.pad(chosen, padding="longest", return_tensors="pt"))


def pair_batches(n_pairs: int, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Indices of pairs per step: shuffled by ``rng`` (None keeps the order); a last batch of one
    pair (no negative) is dropped."""
    order = rng.permutation(n_pairs) if rng is not None else np.arange(n_pairs)
    batches = [order[i : i + batch_size] for i in range(0, n_pairs, batch_size)]
    return [b for b in batches if len(b) >= 2]


class ItemVectors:
    """Unit vectors of items, with gradients, computed as ``encode`` computes them.

    :param model: the transformers model (being trained).
    :param texts: every item's token ids.
    :param pooling: ``mean``, ``cls`` or ``last``.
    :param device: where the model is.
    :param train_layers: train only the top ``train_layers`` transformer layers; the embeddings and
        the layers below are frozen and run **once per item** (their outputs are kept), so a step
        runs and back-propagates through the top layers only. None, or at least the model's number
        of layers, trains every weight.
    """

    def __init__(self, model: Any, texts: ItemTexts, pooling: str, device: str, train_layers: int | None = None) -> None:
        import inspect

        self.model, self.texts, self.pooling, self.device = model, texts, pooling, device
        self.forward_args = set(inspect.signature(model.forward).parameters)
        self.train_layers = train_layers
        self._bottom: list[Any] | None = None
        #: Why ``train_layers`` was not applied (None when it was, or when every weight was asked for).
        self.note: str | None = None
        if train_layers is not None:
            self._split(train_layers)

    def describe(self) -> str:
        """Which weights are trained (for the provenance)."""
        if self._bottom is None:
            return "all weights"
        return f"top {len(self.layers) - self.n_bottom} of {len(self.layers)} layers (embeddings and layers below frozen)"

    # The top-layers mode needs the transformers layout of BERT-like encoders (model.embeddings,
    # model.encoder.layer, and an encoder that only loops over its layers); it is checked on a probe.
    def _split(self, k: int) -> None:
        import torch

        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(layers, torch.nn.ModuleList) or not hasattr(self.model, "embeddings") or "inputs_embeds" not in self.forward_args:
            self.note = (f"--train-layers {k}: this model ({type(self.model).__name__}) does not have BERT's embeddings + "
                         "encoder.layer layout; training all weights")
            self.train_layers = None
            return
        if k < 1:
            raise InterestGymError(f"--train-layers {k}: expected an integer >= 1 (or all)")
        if k >= len(layers):  # the whole model: nothing to keep
            self.train_layers = None
            return
        self.layers = layers
        self.n_bottom = len(layers) - k
        for p in self.model.parameters():
            p.requires_grad_(False)
        for layer in list(layers)[self.n_bottom :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self._bottom = self._bottom_states()
        probe = np.arange(min(8, len(self._bottom)))
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            split = self.vectors(probe)
            whole = self._full(probe)
        self.model.train(was_training)
        if not torch.allclose(split, whole, atol=1e-4):
            raise InterestGymError(f"--train-layers {k}: this model's layers cannot be run apart from its embeddings "
                                   f"(vectors differ by {float((split - whole).abs().max()):.1e}); use --train-layers all")

    @contextlib.contextmanager
    def _layers(self, chosen: list[Any], passthrough: bool) -> Iterator[None]:
        import torch

        embeddings = self.model.embeddings
        self.model.encoder.layer = torch.nn.ModuleList(chosen)
        if passthrough:
            self.model.embeddings = _Passthrough()
        try:
            yield
        finally:
            self.model.encoder.layer = self.layers
            self.model.embeddings = embeddings

    def _bottom_states(self) -> list[Any]:
        """The output of the frozen layers for every item, unpadded (one (length, hidden) tensor each)."""
        import torch

        n = len(self.texts.features["input_ids"])
        lengths = [len(ids) for ids in self.texts.features["input_ids"]]
        states: list[Any] = [None] * n
        was_training = self.model.training
        self.model.eval()
        # no_grad, not inference_mode: inference tensors could not be fed to the layers being trained.
        with torch.no_grad(), self._layers(list(self.layers)[: self.n_bottom], passthrough=False):
            order = np.argsort(lengths, kind="stable")
            for start in range(0, n, 128):
                rows = order[start : start + 128]
                batch = {k: v.to(self.device) for k, v in self.texts.batch(rows).items() if k in self.forward_args}
                hidden = self.model(**batch).last_hidden_state
                for j, row in enumerate(rows):
                    states[row] = hidden[j, : lengths[row]].clone()
        self.model.train(was_training)
        return states

    def _full(self, rows: np.ndarray) -> Any:
        batch = {k: v.to(self.device) for k, v in self.texts.batch(rows).items() if k in self.forward_args}
        return self._pool(self.model(**batch).last_hidden_state, batch["attention_mask"])

    def _pool(self, hidden: Any, attention_mask: Any) -> Any:
        import torch

        return torch.nn.functional.normalize(pool_hidden_states(hidden, attention_mask, self.pooling), p=2.0, dim=1)

    def vectors(self, rows: np.ndarray) -> Any:
        """(len(rows), hidden) unit vectors of the items ``rows``."""
        import torch

        if self._bottom is None:
            return self._full(rows)
        chosen = [self._bottom[int(r)] for r in rows]
        longest = max(len(x) for x in chosen)
        hidden = torch.zeros((len(chosen), longest, chosen[0].shape[1]), dtype=chosen[0].dtype, device=self.device)
        mask = torch.zeros((len(chosen), longest), dtype=torch.int64, device=self.device)
        padding_left = getattr(self.texts.tokenizer, "padding_side", "right") == "left"
        for j, x in enumerate(chosen):
            span = slice(longest - len(x), longest) if padding_left else slice(0, len(x))
            hidden[j, span] = x
            mask[j, span] = 1
        with self._layers(list(self.layers)[self.n_bottom :], passthrough=True):
            out = self.model(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
        return self._pool(out, mask)

    def trainable_parameters(self) -> list[tuple[str, Any]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


class _Passthrough:
    """Stands in for the embeddings while the top layers run on kept states: returns ``inputs_embeds``."""

    def __new__(cls) -> Any:
        import torch

        class Passthrough(torch.nn.Module):
            def forward(self, input_ids: Any = None, position_ids: Any = None, token_type_ids: Any = None,
                        inputs_embeds: Any = None, **kwargs: Any) -> Any:
                return inputs_embeds

        return Passthrough()


def batch_vectors(items: ItemVectors, pairs: CoEngagementPairs, index: np.ndarray) -> tuple[Any, Any, Any, Any]:
    """(anchor vectors, positive vectors, anchor item ids, positive item ids) of one batch of pairs; each distinct
    item goes through the model once (ids index the batch's distinct items)."""
    import torch

    a_items, p_items = pairs.anchor[index], pairs.positive[index]
    unique, inverse = np.unique(np.concatenate([a_items, p_items]), return_inverse=True)
    vectors = items.vectors(unique)
    inv = torch.as_tensor(inverse, device=vectors.device)
    a_ids, p_ids = inv[: len(index)], inv[len(index):]
    return vectors[a_ids], vectors[p_ids], a_ids, p_ids


def batch_loss(items: ItemVectors, pairs: CoEngagementPairs, index: np.ndarray, scale: float) -> Any:
    """The loss of one batch of pairs."""
    return info_nce_loss(*batch_vectors(items, pairs, index), scale)


def in_batch_top1(anchor: Any, positive: Any, anchor_item: Any, positive_item: Any) -> Any:
    """How often each pair's own partner is the most similar of the batch (both directions, same-item
    columns masked as in :func:`info_nce_loss`); chance is about 1 / batch size, and a collapsed encoder
    (every item one vector) scores chance, whatever its loss."""
    a_to_p, p_to_a, target = masked_logits(anchor, positive, anchor_item, positive_item)
    return ((a_to_p.argmax(dim=1) == target).float().mean() + (p_to_a.argmax(dim=1) == target).float().mean()) / 2


def top1_noise(base: float, now: float, n_pairs: int) -> float:
    """How far two in-batch top-1 accuracies over the same ``n_pairs`` validation pairs may differ by chance: 1.96
    standard errors of the difference of two proportions measured on ``n_pairs`` each (treating the two as
    independent, which overstates the noise of these paired measurements: a gain above it is no fluke)."""
    if n_pairs <= 0:
        return math.inf
    p = min(max((base + now) / 2, 0.0), 1.0)
    return 1.96 * math.sqrt(2 * p * (1 - p) / n_pairs)


def validation_scores(items: ItemVectors, pairs: CoEngagementPairs, batch_size: int, scale: float) -> tuple[float, float] | None:
    """(mean loss, mean in-batch top-1 accuracy) over fixed batches of the validation pairs (eval mode: no
    dropout); None without pairs."""
    import torch

    batches = pair_batches(len(pairs), batch_size, None)
    if not batches:
        return None
    was_training = items.model.training
    items.model.eval()
    loss = top1 = 0.0
    with torch.inference_mode():
        for index in batches:
            batch = batch_vectors(items, pairs, index)
            loss += float(info_nce_loss(*batch, scale))
            top1 += float(in_batch_top1(*batch))
    items.model.train(was_training)
    return loss / len(batches), top1 / len(batches)


# ------------------------------------------------------------------------------------------ saving
def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}-{os.getpid()}"


def check_out_dir(out: Path, overwrite: bool) -> None:
    """``--out`` must be a new or empty folder, or a model folder ``--overwrite`` may replace; its parent a folder
    it can be made in (checked before the training, not after it)."""
    if out.exists() and not out.is_dir():
        raise InterestGymError(f"--out {out}: is a file; expected a folder for the fine-tuned model")
    check_folder_path(out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InterestGymError(f"--out {out}: folder exists and is not empty; expected a new folder (or pass --overwrite to replace it)")
        if not ((out / "config.json").is_file() or (out / PROVENANCE_FILE).is_file()):
            # --overwrite replaces a model, never a dataset or any other folder a typo names
            raise InterestGymError(f"--out {out}: --overwrite replaces a model folder (one with config.json), and this folder "
                                   "holds none; expected a model folder or a new one")


@contextlib.contextmanager
def replacing_folder(out: Path) -> Iterator[Path]:
    """Yield a new sibling folder; on success it replaces ``out`` (two renames); on failure it is removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(out, "tmp"), _sibling(out, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_model_folder(folder: Path, model: Any, tokenizer: Any, pooling: str, max_length: int, provenance: dict[str, Any]) -> None:
    """A Hugging Face folder ``BertEncoder`` and sentence-transformers both load."""
    from interestgym.io import write_json_atomic

    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    write_json_atomic(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": int(model.config.hidden_size),
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_lasttoken": pooling == "last",
    })
    write_json_atomic(folder / "sentence_bert_config.json", {"max_seq_length": int(max_length), "do_lower_case": False})
    write_json_atomic(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    (folder / "2_Normalize").mkdir(exist_ok=True)
    write_json_atomic(folder / PROVENANCE_FILE, provenance)
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):  # some writers create 0600 files: give them an ordinary file's permissions
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
    ModelFolder.inspect(folder)  # what `encode` will check, checked before the folder is swapped in


def read_provenance(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``finetune.json`` of a model folder, or None when it has none (or it is unreadable)."""
    p = Path(folder) / PROVENANCE_FILE
    try:
        data = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def provenance_summary(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What an embedding's metadata records about a fine-tuned model folder (None for other folders)."""
    p = read_provenance(folder)
    if p is None:
        return None
    pairs = p.get("pairs") if isinstance(p.get("pairs"), dict) else {}
    dataset = p.get("dataset") if isinstance(p.get("dataset"), dict) else {}
    base = p.get("base") if isinstance(p.get("base"), dict) else {}
    return {
        "base": base.get("spec"),
        "dataset": dataset.get("path"),
        "train_pairs": (pairs.get("train") or {}).get("kept"),
        "epochs_run": p.get("epochs_run"),
        "best_epoch": p.get("best_epoch"),
        "seed": p.get("seed"),
        "valid_loss_before": p.get("valid_loss_before"),
        "valid_loss_best": p.get("valid_loss_best"),
    }


# ------------------------------------------------------------------------------------------- main
def resolve_base(spec: str) -> Path:
    """``minilm`` -> the installed model's folder; otherwise a local model folder path."""
    if spec == "minilm":
        return minilm_path()
    if spec in ("hashing", "tfidf", "cooc"):
        raise InterestGymError(f"--base {spec}: a {spec} encoder has no weights to fine-tune; expected minilm or a local Hugging Face model folder")
    path = Path(spec).expanduser()
    if not path.exists():
        raise InterestGymError(f"--base {spec}: not minilm and no such model folder; expected minilm or a local Hugging Face model folder")
    return path


@contextlib.contextmanager
def _deterministic_torch(seed: int, threads: int, device: str) -> Iterator[None]:
    import torch

    previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    torch.manual_seed(seed)
    # On CUDA some kernels have no deterministic version (and cuBLAS needs CUBLAS_WORKSPACE_CONFIG): warn there.
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def finetune(
    dataset: Any,
    out: str | os.PathLike[str],
    config: FinetuneConfig | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    checkpoint_every: int = 50,
    progress: bool | None = None,
    log: Callable[[str], None] | None = _stderr,
) -> FinetuneResult:
    """Fine-tune ``config.base`` on ``dataset``'s training users and save it to ``out``.

    :param dataset: a :class:`~interestgym.data.dataset.Dataset` or its folder.
    :param out: the model folder to write (must be new or empty unless ``overwrite``).
    :param config: the settings (defaults: :class:`FinetuneConfig`; with ``resume``, None = the checkpoint's).
    :param overwrite: replace an existing ``out``.
    :param resume: continue the interrupted fine-tune into ``out`` from its checkpoint
        (:mod:`~interestgym.encoders.finetune_checkpoint`): same settings (``threads`` aside), same data.
    :param checkpoint_every: write a checkpoint every this many steps (0: only after each epoch).
    :param progress: progress bar on stderr (None: a bar on a terminal, log lines otherwise).
    :param log: where one-line notes go; None = silent.
    """
    from interestgym.data.dataset import Dataset
    from interestgym.progress import progress_bar

    out = Path(out)
    ckpt_dir = checkpoint_dir(out)
    saved = read_checkpoint(ckpt_dir) if resume else None
    if saved is not None and config is None:
        config = FinetuneConfig(**saved_config(saved))
    cfg = config or FinetuneConfig()
    cfg.check()
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise InterestGymError(f"--checkpoint-every {checkpoint_every!r}: expected a whole number of steps >= 0 (0: after each epoch only)")
    say = log or (lambda message: None)
    check_out_dir(out, overwrite)
    if saved is not None:
        refuse_conflicts(ckpt_dir, saved, {"config": settings(asdict(cfg))})
        cfg = replace(cfg, base=saved["identity"]["config"]["base"])  # the same folder, perhaps by another path: as saved
    if saved is None and (ckpt_dir / CHECKPOINT_FILE).exists():
        left = read_checkpoint(ckpt_dir)
        if not written_after(left, ckpt_dir, out):
            raise InterestGymError(f"--out {out}: an interrupted fine-tune left a checkpoint ({describe(left)}) in {ckpt_dir}; "
                                   f"continue it with --resume, or delete {ckpt_dir} to start over")
        # interrupted between writing its model and removing its checkpoint: the model is there, the checkpoint stale
        say(f"removing {ckpt_dir}: the checkpoint of a finished fine-tune whose model {out} was written after it")
        remove_checkpoint(ckpt_dir)
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    base_path = resolve_base(cfg.base)
    folder = ModelFolder.inspect(base_path)
    pooling = cfg.pooling or folder.default_pooling()
    if folder.max_positions and cfg.max_length > folder.max_positions:
        raise InterestGymError(f"--max-length {cfg.max_length}: {folder.path / 'config.json'} field max_position_embeddings "
                               f"is {folder.max_positions}; expected at most that")
    device = resolve_device(cfg.device)

    started = time.perf_counter()
    seconds_before = float(saved["state"].get("seconds", 0.0)) if saved is not None else 0.0  # the calls a resume continues
    train = mine_pairs(ds, "train", PairSpec(cfg.window_seconds, cfg.neighbours, cfg.max_pairs, cfg.seed))
    valid = mine_pairs(ds, "valid", PairSpec(cfg.window_seconds, cfg.neighbours, cfg.max_valid_pairs, cfg.seed + 1))
    say("pairs: " + train.summary())
    say("pairs: " + valid.summary())
    if len(train) < 2:
        raise DataError(
            f"{ds.path / 'users.parquet'}: training users give {len(train)} co-engagement pair(s) "
            f"(two positive events of one user at most --window {cfg.window_seconds:g} s apart); expected at least 2: a larger "
            "--window pairs events further apart"
        )
    if len(valid) < 2:
        say(f"{ds.path / 'users.parquet'}: validation users give {len(valid)} pair(s): no validation loss, no early stopping; "
            "every epoch runs and the last one is saved")
    steps_per_epoch = len(pair_batches(len(train), cfg.batch_size, None))
    identity = run_identity(asdict(cfg), ds, folder.content_hashes(), train, valid, steps_per_epoch)
    if saved is not None:
        refuse_conflicts(ckpt_dir, saved, identity)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder.path), local_files_only=True)
        model = AutoModel.from_pretrained(str(folder.path), local_files_only=True, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a folder it cannot load
        raise ArtifactError(f"{folder.path}: cannot be loaded with transformers AutoTokenizer / AutoModel: {exc}") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ArtifactError(f"{folder.path}: the tokenizer has neither a pad token nor an EOS token; expected one to pad batches")
        tokenizer.pad_token = tokenizer.eos_token

    texts = ItemTexts(tokenizer, ds.items["text"].fillna("").astype(str).tolist(), cfg.max_length)
    rng = np.random.default_rng(cfg.seed)
    threads = cfg.threads or available_cpus()
    with _deterministic_torch(cfg.seed, threads, device), _dropped_when_diverged(ckpt_dir):
        model = model.to(device)
        items = ItemVectors(model, texts, pooling, device, cfg.train_layers)
        trainable = items.trainable_parameters()
        if items.note:
            say(items.note)
        say(f"training {items.describe()}: {sum(p.numel() for _, p in trainable):,} weights")
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        groups = [
            {"params": [p for n, p in trainable if not n.endswith(no_decay)], "weight_decay": cfg.weight_decay},
            {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_fraction * total_steps), total_steps)

        best_state: dict[str, Any] | None = None  # the best epoch's trained weights, while a later epoch runs
        n_valid_pairs = sum(len(index) for index in pair_batches(len(valid), cfg.batch_size, None))  # what top-1 is over
        if saved is None:
            st = TrainState()
            before = validation_scores(items, valid, cfg.batch_size, cfg.scale)
            if before is not None:
                st.best_loss, st.base_top1 = before
                _check_finite(st.best_loss, "before fine-tuning", cfg)
                st.valid_losses.append(st.best_loss)
                say(f"validation loss before fine-tuning: {st.best_loss:.4f}, in-batch top-1 accuracy {st.base_top1:.3f} (a "
                    f"collapsed encoder scores loss ~{math.log(cfg.batch_size):.2f}, top-1 ~{1 / cfg.batch_size:.3f})")
        else:
            st, best_state = _restore(saved, trainable, optimizer, scheduler, rng, device, ckpt_dir)
            st.resumed.append([st.epoch, st.step])
            say(f"resuming the fine-tune checkpointed in {ckpt_dir}: {describe(saved)}")
            ran_on = saved.get("ran_on") or {}
            if (ran_on.get("threads"), ran_on.get("device")) != (threads, device):
                say(f"note: the checkpoint ran with {ran_on.get('threads')} thread(s) on {ran_on.get('device')}, this resume with "
                    f"{threads} on {device}: the weights may differ from an uninterrupted run's in the last bits")

        def checkpoint() -> None:
            st.seconds = seconds_before + time.perf_counter() - started
            save_checkpoint(ckpt_dir, identity, cfg.threads, st, trainable, optimizer, scheduler, best_state, device, threads)

        for epoch in range(st.epoch, cfg.epochs + 1):
            if st.stopped:
                break
            if st.step == 0:
                st.epoch_rng = rng.bit_generator.state
            batches = pair_batches(len(train), cfg.batch_size, rng)
            model.train()
            with progress_bar(total=steps_per_epoch, desc=f"fine-tuning epoch {epoch}/{cfg.epochs}", unit="step",
                              enabled=progress) as bar:
                if st.step:
                    bar.update(st.step)
                for index in batches[st.step:]:
                    loss = batch_loss(items, train, index, cfg.scale)
                    _check_finite(float(loss.detach()), f"a training step of epoch {epoch}", cfg)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
                    optimizer.step()
                    scheduler.step()
                    st.running += float(loss.detach())
                    st.step += 1
                    bar.update(1)
                    bar.set_postfix_str(f"loss {st.running / st.step:.4f}")
                    if checkpoint_every and st.step % checkpoint_every == 0 and st.step < len(batches):
                        checkpoint()
            st.epochs_run = epoch
            train_loss = st.running / max(st.step, 1)
            st.epoch, st.step, st.running, st.epoch_rng = epoch + 1, 0, 0.0, rng.bit_generator.state
            scores = validation_scores(items, valid, cfg.batch_size, cfg.scale)
            loss_now, top1 = scores if scores is not None else (None, None)
            st.history.append({"epoch": epoch, "train_loss": round(train_loss, 6),
                               "valid_loss": None if loss_now is None else round(loss_now, 6),
                               "valid_top1": None if top1 is None else round(top1, 6)})
            if loss_now is None:
                say(f"epoch {epoch}: training loss {train_loss:.4f}")
                st.best_epoch = epoch
                checkpoint()
                continue
            _check_finite(loss_now, f"the validation after epoch {epoch}", cfg)
            st.valid_losses.append(loss_now)
            # a lower loss counts only with a top-1 accuracy above the base model's by more than its noise: a collapsing
            # encoder (every item alike) lowers the loss below the base's while ranking at chance, and a top-1 a hair
            # above the base's over a few thousand pairs is chance too
            margin = top1_noise(st.base_top1, top1, n_valid_pairs)
            real = top1 - st.base_top1 > margin
            improved = loss_now < st.best_loss and real
            say(f"epoch {epoch}: training loss {train_loss:.4f}, validation loss {loss_now:.4f}, top-1 {top1:.3f}"
                + (" (best)" if improved else
                   f" (lower loss, but top-1 not above the base model's {st.base_top1:.3f} by more than its noise, "
                   f"{margin:.3f} over {n_valid_pairs:,} pairs: not kept)" if loss_now < st.best_loss else
                   f" (best {st.best_loss:.4f} at epoch {st.best_epoch})"))
            if improved:
                st.best_loss, st.best_epoch, st.stale = loss_now, epoch, 0
                # a later epoch may be worse: keep these weights (the last epoch's are the model's)
                best_state = {n: p.detach().to("cpu", copy=True) for n, p in trainable} if epoch < cfg.epochs else None
            else:
                st.stale += 1
                if st.stale >= cfg.patience and epoch < cfg.epochs:
                    say(f"early stopping: no epoch kept for {st.stale} epoch(s) (a lower validation loss with a top-1 "
                        "above the base's beyond its noise)")
                    st.stopped = True
            checkpoint()
        if st.best_loss is not None and st.best_epoch != st.epochs_run:
            if st.best_epoch == 0:
                say("no epoch lowered the validation loss with a top-1 accuracy above the base's beyond its noise: saving "
                    "the base model's weights")
                model = AutoModel.from_pretrained(str(folder.path), local_files_only=True, dtype=torch.float32)
            else:
                loaded = model.load_state_dict(best_state, strict=False)  # the trained weights; the frozen ones never moved
                assert not loaded.unexpected_keys, loaded.unexpected_keys
        model = model.to("cpu").eval()

    seconds = seconds_before + time.perf_counter() - started
    provenance = {
        "format": _FORMAT,
        "kind": "contrastive fine-tuning on co-engagement pairs (symmetric InfoNCE, in-batch negatives)",
        "base": {"spec": cfg.base, "path": str(folder.path.resolve()), "model_type": folder.config.get("model_type"),
                 "files": folder.content_hashes()},
        "dataset": {"path": str(ds.path.resolve()), "name": ds.name, "item_ids_sha256": ds.item_ids_sha256,
                    "items": len(ds.items), "split": ds.manifest.get("split"),
                    "positive_rating": ds.positive_rating},
        "pairs": {"train": train.as_dict(), "valid": valid.as_dict(), "window_seconds": cfg.window_seconds,
                  "neighbours": cfg.neighbours, "rule": "consecutive positives (core.log_features.is_decision) of one user"},
        "config": asdict(cfg),
        "trained": items.describe(),
        "pooling": pooling,
        "max_length": cfg.max_length,
        "device": device,
        "threads": threads,
        "steps_per_epoch": steps_per_epoch,
        "epochs_run": st.epochs_run,
        "best_epoch": st.best_epoch,
        "history": st.history,
        "valid_loss_before": st.valid_losses[0] if st.valid_losses else None,
        "valid_loss_best": st.best_loss,
        "valid_top1_before": st.base_top1,
        "valid_top1_best": st.base_top1 if st.best_epoch == 0 else next(
            (h["valid_top1"] for h in st.history if h["epoch"] == st.best_epoch), None),
        "seed": cfg.seed,
        "seconds": round(seconds, 1),
        "resumed": st.resumed,
        "versions": {"interestgym": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "command": " ".join(sys.argv),
    }
    from safetensors import SafetensorError

    try:
        with replacing_folder(out) as tmp:
            write_model_folder(tmp, model, tokenizer, pooling, cfg.max_length, provenance)
    except (OSError, SafetensorError) as exc:  # a full disk, no permission (safetensors raises its own error type)
        detail = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:200]
        raise ArtifactError(f"--out {out}: cannot write the fine-tuned model ({detail}); nothing was written there") from None
    remove_checkpoint(ckpt_dir)
    return FinetuneResult(out=out, provenance=provenance, valid_losses=st.valid_losses)


def _restore(doc: dict[str, Any], trainable: list[tuple[str, Any]], optimizer: Any, scheduler: Any, rng: np.random.Generator,
             device: str, folder: Path) -> tuple[TrainState, dict[str, Any] | None]:
    """Put a checkpoint's weights, optimiser, schedule and generators back; returns its state and best weights."""
    import torch

    weights = doc["weights"]
    names = [n for n, _ in trainable]
    if sorted(weights) != sorted(names):
        raise ArtifactError(f"{folder / CHECKPOINT_FILE}: its weights are not this model's trained weights ({len(weights)} "
                            f"tensors, expected {len(names)}); delete {folder} to start over")
    with torch.no_grad():
        for n, p in trainable:
            p.copy_(weights[n].to(p.device))
    optimizer.load_state_dict(doc["optimizer"])
    scheduler.load_state_dict(doc["scheduler"])
    state = TrainState(**doc["state"])
    rng.bit_generator.state = state.epoch_rng
    torch.set_rng_state(doc["torch_rng"])
    if device.startswith("cuda") and doc.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(doc["cuda_rng"])
    return state, doc["best_state"]


class DivergedError(InterestGymError):
    """The loss stopped being a number."""


@contextlib.contextmanager
def _dropped_when_diverged(ckpt_dir: Path) -> Iterator[None]:
    """A run that diverged leaves no checkpoint: resuming it would diverge again."""
    try:
        yield
    except DivergedError:
        remove_checkpoint(ckpt_dir)
        raise


def _check_finite(loss: float, when: str, cfg: FinetuneConfig) -> None:
    """Stop (nothing is written) when the loss is no longer a number: training diverged."""
    if not math.isfinite(loss):
        raise DivergedError(f"the loss of {when} is {loss}: training diverged (--lr {cfg.learning_rate:g}, --scale "
                               f"{cfg.scale:g}); expected finite losses: lower --lr or --scale. Nothing was written")
