"""Production runtime for an exported update policy: numpy + onnxruntime only (no torch, no SB3, no pandas).

>>> from interestgym.runtime import load_policy, Event, UserState      # doctest: +SKIP
>>> policy = load_policy("runs/ppo/export", encoder_fingerprint=my_encoder_fingerprint)
>>> state = policy.new_state()
>>> state = policy.update(state, Event(ts=1700000000, action="click", item_vector=x, category="sports"))
>>> scores = policy.score(state, candidate_vectors, candidate_ids=ids)
>>> blob = state.to_bytes(); state = UserState.from_bytes(blob)

Loading verifies the export (manifest format version and content digest, every file's sha256) and
raises an :class:`~interestgym.errors.ArtifactError` subclass naming what is wrong. Observation
features, profile updates, scores and metrics are computed by the same ``interestgym.core``
functions as the training env, so served behaviour cannot drift from what was evaluated.
"""

from __future__ import annotations

from interestgym.runtime.codec import StateFormatError
from interestgym.runtime.load import load_policy
from interestgym.runtime.manifest import (
    FORMAT_VERSION,
    ChecksumMismatchError,
    EmbeddingDimensionError,
    EncoderMismatchError,
    ExportError,
    ExportFileCorruptError,
    ExportFileMissingError,
    FormatVersionError,
)
from interestgym.runtime.policy import ExportedPolicy
from interestgym.runtime.state import Event, UserState
from interestgym.runtime.table import EventBatch, StateTable

__all__ = [
    "FORMAT_VERSION",
    "ChecksumMismatchError",
    "EmbeddingDimensionError",
    "EncoderMismatchError",
    "Event",
    "EventBatch",
    "ExportError",
    "ExportFileCorruptError",
    "ExportFileMissingError",
    "ExportedPolicy",
    "FormatVersionError",
    "StateFormatError",
    "StateTable",
    "UserState",
    "load_policy",
]
