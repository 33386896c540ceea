"""The sequence trackers: a GRU (GRU4Rec-style) and a causal Transformer (SASRec-style), in torch.

Both follow the reference shapes (Hidasi et al. 2016; Kang & McAuley 2018):

* **Item representation** ``e_i = id_emb[id_row(i)] + W x_i`` (``hidden`` wide): a learned item-id
  embedding where ids recur (items never seen in training share one row) plus a learned projection
  of the encoder's vector ``x_i`` (the same vectors the profiles live in). The same table embeds the
  inputs and scores the candidates (tied, as in SASRec).
* **Input token** of a decision: ``e_item + act_emb[action] + gap_emb[gap bucket]`` (+ a learned
  position embedding for the Transformer), with dropout.
* **State**: the window of the user's last ``k`` decisions, laid out oldest first and right-padded
  (:mod:`.data`). The model is causal: the output at position t depends on positions 0..t only (the
  GRU by construction; the Transformer through its causal attention mask), so padding after the
  newest decision never changes its output, and no event after a decision changes the score of the
  scoring points that follow it (``tests/test_sequence_models.py`` proves both).
* **Score** of candidate c for a user state h: the dot product ``h . e_c``.

Training (:mod:`.train`) is next-item prediction with a softmax over the whole catalogue (or over
sampled items for very large catalogues).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from interestgym.agents.sequence.config import MODELS
from interestgym.agents.sequence.data import N_ACTIONS, N_GAP_BUCKETS
from torch import nn

from interestgym.errors import InterestGymError

__all__ = ["MODELS", "GRUTracker", "ModelSpec", "SASRecTracker", "build_model", "pick_device"]


@dataclass
class ModelSpec:
    """The architecture: everything needed to rebuild the network before loading its weights."""

    model: str
    """``gru`` (GRU4Rec-style) or ``sasrec`` (SASRec-style causal Transformer)."""
    n_items: int
    """Items in the catalogue (rows of items.parquet)."""
    n_id_rows: int
    """Rows of the item-id embedding (row 0: items without their own id; 1 when ids are off)."""
    text_dim: int
    """Dimension of the encoder's item vectors (0: no text vectors)."""
    window: int = 50
    """k: the last k decisions are the tracker's state."""
    hidden: int = 64
    """Width of item representations and of the state."""
    layers: int = 2
    """Transformer blocks (sasrec) or stacked GRU layers (gru)."""
    heads: int = 1
    """Attention heads (sasrec)."""
    dropout: float = 0.2
    """Dropout on the input tokens and inside the blocks."""
    use_ids: bool = True
    """Learned item-id embeddings (else every item's id row is 0 and only the text vector counts)."""
    use_text: bool = True
    """Projected encoder vectors in the item representation."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InterestGymError(f"model {self.model!r}: expected one of {', '.join(MODELS)}")
        if not (self.use_ids or (self.use_text and self.text_dim > 0)):
            raise InterestGymError("the tracker needs item ids or text vectors: both are off")
        for name in ("window", "hidden", "layers", "heads"):
            if int(getattr(self, name)) < 1:
                raise InterestGymError(f"{name}={getattr(self, name)!r}: expected an integer >= 1")
        if self.model == "sasrec" and self.hidden % self.heads:
            raise InterestGymError(f"hidden={self.hidden} is not divisible by heads={self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise InterestGymError(f"dropout={self.dropout!r}: expected a number in [0, 1)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> ModelSpec:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        missing = sorted(n for n in ("model", "n_items", "n_id_rows", "text_dim") if n not in values)
        if unknown or missing:
            raise InterestGymError(f"{where}: model spec has unknown field(s) {unknown} / lacks {missing}; "
                                   f"expected {sorted(names)}")
        return cls(**values)


class ItemTable(nn.Module):
    """``e_i = id_emb[id_row(i)] + W x_i`` for every item i (see the module docstring).

    ``id_rows`` (n_items,) is a persistent buffer (part of the saved weights); the encoder's vectors
    are not saved with the weights but given at load time (:meth:`set_text_vectors`), checked against
    the sha256 recorded at training.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.id_emb = nn.Embedding(spec.n_id_rows, spec.hidden)
        nn.init.normal_(self.id_emb.weight, std=0.02 if spec.use_text else 1.0 / math.sqrt(spec.hidden))
        self.register_buffer("id_rows", torch.zeros(spec.n_items, dtype=torch.long))
        self.text_proj = nn.Linear(spec.text_dim, spec.hidden, bias=False) if spec.use_text and spec.text_dim else None
        self.register_buffer("text_vectors", torch.zeros(spec.n_items, max(spec.text_dim, 1)), persistent=False)

    def set_id_rows(self, rows: np.ndarray) -> None:
        self.id_rows.copy_(torch.as_tensor(np.asarray(rows), dtype=torch.long))

    def set_text_vectors(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (self.spec.n_items, self.spec.text_dim):
            raise InterestGymError(f"item vectors of shape {vectors.shape}; the tracker was built for "
                                   f"({self.spec.n_items}, {self.spec.text_dim})")
        self.text_vectors = torch.as_tensor(vectors, device=self.id_emb.weight.device).clone()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(..., hidden) representations of the item indices ``items``."""
        if items.numel() > self.spec.n_items:  # more lookups than items: project the catalogue once
            return self.all_items()[items]
        return self._represent(items)

    def _represent(self, items: torch.Tensor) -> torch.Tensor:
        out = self.id_emb(self.id_rows[items])
        if self.text_proj is not None:
            out = out + self.text_proj(self.text_vectors[items])
        return out

    def all_items(self) -> torch.Tensor:
        """(n_items, hidden): every item's representation (the candidate table)."""
        return self._represent(torch.arange(self.spec.n_items, device=self.id_rows.device))


class SequenceTracker(nn.Module):
    """Base of both trackers: tokens -> causal encoder -> states; scores = states . item table."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.items = ItemTable(spec)
        self.action_emb = nn.Embedding(N_ACTIONS, spec.hidden)
        self.gap_emb = nn.Embedding(N_GAP_BUCKETS, spec.hidden)
        for emb in (self.action_emb, self.gap_emb):
            nn.init.normal_(emb.weight, std=0.02)
        self.input_dropout = nn.Dropout(spec.dropout)

    def encode(self, item: torch.Tensor, action: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden) causal states of windows of item indices: position t depends on positions 0..t only."""
        return self.encode_reps(self.items(item), action, gap)

    def encode_reps(self, item_reps: torch.Tensor, action: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` from the items' representations (B, L, hidden) instead of their indices: what an
        exported graph takes, so that a runtime can feed an item outside the catalogue (its
        ``id_emb[0] + W x``)."""
        raise NotImplementedError

    def states(self, item: torch.Tensor, action: torch.Tensor, gap: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """(B, hidden): the state after each window's newest decision (position ``length - 1``)."""
        out = self.encode(item, action, gap)
        return out[torch.arange(out.shape[0], device=out.device), length - 1]

    def forward(self, item: torch.Tensor, action: torch.Tensor, gap: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return self.states(item, action, gap, length)


class GRUTracker(SequenceTracker):
    """GRU4Rec-style: a GRU over the window's tokens; the state is its output at the newest decision."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.gru = nn.GRU(spec.hidden, spec.hidden, num_layers=spec.layers, batch_first=True,
                          dropout=spec.dropout if spec.layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(spec.dropout)

    def encode_reps(self, item_reps, action, gap):
        tokens = item_reps + self.action_emb(action) + self.gap_emb(gap)
        out, _ = self.gru(self.input_dropout(tokens))
        return self.output_dropout(out)


class CausalSelfAttentionBlock(nn.Module):
    """One pre-norm Transformer block: ``x + attn(LN(x))`` then ``x + FFN(LN(x))``, attention causal.

    Written out (rather than ``nn.TransformerEncoderLayer``) so that training and inference run the same
    operations (torch's inference fast path is a different kernel, and slower here on CPU) and the
    block exports to ONNX as plain matrix products.
    """

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, H); ``blocked`` (L, L) bool, True where position i may not attend to j."""
        b, length, hidden = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-1, -2)) / math.sqrt(hidden // self.heads)
        weights = torch.softmax(weights.masked_fill(blocked, float("-inf")), dim=-1)
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, length, hidden)
        x = x + self.dropout(self.out(attended))
        return x + self.dropout(self.ffn(self.norm2(x)))


class SASRecTracker(SequenceTracker):
    """SASRec-style: pre-norm causal self-attention blocks over the window, learned positions."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.position_emb = nn.Embedding(spec.window, spec.hidden)
        nn.init.normal_(self.position_emb.weight, std=0.02)
        self.blocks = nn.ModuleList([CausalSelfAttentionBlock(spec.hidden, spec.heads, spec.dropout) for _ in range(spec.layers)])
        self.final_norm = nn.LayerNorm(spec.hidden)

    def encode_reps(self, item_reps, action, gap):
        length = item_reps.shape[1]
        if length > self.spec.window:
            raise InterestGymError(f"window of {length} decisions; this tracker was trained with window {self.spec.window}")
        device = item_reps.device
        x = item_reps + self.action_emb(action) + self.gap_emb(gap) + self.position_emb(torch.arange(length, device=device))[None]
        # True = may not attend: every position sees itself and the positions before it only.
        blocked = torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)
        x = self.input_dropout(x)
        for block in self.blocks:
            x = block(x, blocked)
        return self.final_norm(x)


def build_model(spec: ModelSpec) -> SequenceTracker:
    """The tracker network of ``spec`` (untrained)."""
    return GRUTracker(spec) if spec.model == "gru" else SASRecTracker(spec)


def pick_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise InterestGymError(f"--device {device!r}: {exc}; expected auto, cpu or cuda[:N]") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InterestGymError(f"--device {device!r}: CUDA is not available here (this torch "
                               f"{'has no CUDA build' if torch.version.cuda is None else 'sees no GPU'}); expected auto or cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise InterestGymError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                               f"expected cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return chosen
