"""Sharding helpers (no Ray here): user shards of a replay, the merge of evaluator results, text shards.

Users are replayed independently (see :mod:`interestgym.envs.engine`), so a shard of users gives for
them exactly what the whole replay gives; shards are contiguous runs of ``data.user_ids`` (replay
order), so concatenating the shards' results in shard order is the single-process order.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd


def user_shards(data: Any, n: int, users: list[str] | None = None) -> list[list[str]]:
    """At most ``n`` non-empty contiguous shards of ``users`` (default: every user of ``data``, in replay
    order), balanced by decisions."""
    if users is None:
        ids = [str(u) for u in data.user_ids]
        weight = (data.user_decision_end - data.user_decision_start).astype(np.float64)
    else:
        index = {str(u): i for i, u in enumerate(data.user_ids)}
        # replay order, so that the shards' results concatenate into the single-process order
        ids = sorted((str(u) for u in users), key=lambda u: index.get(u, len(index)))
        rows = np.array([index.get(u, -1) for u in ids], dtype=np.int64)
        weight = np.where(rows >= 0, (data.user_decision_end - data.user_decision_start)[np.maximum(rows, 0)], 1).astype(np.float64)
    n = max(1, min(int(n), len(ids)))
    if not ids:
        return []
    cum = np.cumsum(weight)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, n) / n, side="left") + 1
    bounds = [0, *sorted({int(c) for c in cuts if 0 < c < len(ids)}), len(ids)]
    return [ids[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def merge_evaluations(results: list[Any]) -> Any:
    """One :class:`~interestgym.envs.vector.EvaluationResult` from the results of contiguous user shards
    (in shard order): what ``evaluate_policy`` gives for all their users at once."""
    from interestgym.envs.vector import EvaluationResult

    if len(results) == 1:
        return results[0]
    first = results[0]
    features = None
    if all(r.features is not None for r in results):
        features = np.concatenate([r.features for r in results])
    return EvaluationResult(
        policy=first.policy, metric=first.metric, metrics=first.metrics, protocol=first.protocol,
        points=pd.concat([r.points for r in results], ignore_index=True),
        decisions=pd.concat([r.decisions for r in results], ignore_index=True),
        features=features, feature_names=first.feature_names,
    )


#: Texts per shard are a multiple of this for an encoder that sorts texts by length in chunks of
#: ``max(batch_size * 64, 16384)`` (:meth:`interestgym.encoders.bert.BertEncoder.encode`): each
#: shard then forms exactly the batches the single process forms, so the vectors are the same bits.
SORT_CHUNK_MIN = 16384


def encode_chunk(encoder: Any) -> int:
    """The shard granularity (texts) that keeps an encoder's batches as in one process: the BERT
    encoder's sort chunk, or 1 for encoders whose vector of a text does not depend on the others."""
    batch = getattr(encoder, "batch_size", None)
    if isinstance(batch, int) and batch > 0:
        return max(batch * 64, SORT_CHUNK_MIN)
    return 1


def text_shards(n_texts: int, n: int, chunk: int) -> list[tuple[int, int]]:
    """At most ``n`` contiguous ``(start, stop)`` ranges covering ``n_texts``, cut at multiples of ``chunk``."""
    if n_texts == 0:
        return []
    blocks = -(-n_texts // chunk)
    n = max(1, min(int(n), blocks))
    per = -(-blocks // n)
    return [(a * chunk, min((a + per) * chunk, n_texts)) for a in range(0, blocks, per)]
