"""``cooc``: item vectors learned from behaviour co-occurrence, for logs whose items have no text.

The Taobao log, for one, has only item and category ids. Items a user touches close together in
time are related, so an item's vector is learned from the contexts it appears in:

1. Take the **training users'** events (``users.parquet`` split == "train"; validation and test
   users never leak into the vectors), without ``impression`` events, in time order per user;
   collapse immediate repeats of the same item (repeated page views).
2. Count co-occurrences within ``window`` positions, weighted 1/distance, symmetrically.
3. PPMI with context-distribution smoothing (alpha = 0.75, Levy et al. 2015).
4. Truncated SVD to ``dim`` components; vector = U * sqrt(S); L2-normalised.

**Fallback for items never seen in training** (only in valid/test users' events, in no event at
all, or with no co-occurrence): the normalised mean vector of the trained items of the same
category; if the item has no category or no trained item shares it, a deterministic random unit
vector hashed from the item id (so it is dissimilar to everything, but stable across runs). The
counts of each case are printed and stored in the metadata.

Every vector depends on the whole training log, so the fingerprint includes a hash of the training
events, of the split and of the item/category table: a different log re-encodes everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from interestgym.encoders.base import (
    Encoder,
    check_dim,
    fingerprint_of,
    hashed_unit_vectors,
    l2_normalise_rows,
)

from interestgym.data.dataset import (
    frame_sha256,
    split_sha256,
    training_events,
    training_events_sha256,
)
from interestgym.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from interestgym.data.dataset import Dataset

DEFAULT_COOC_DIM = 64
DEFAULT_COOC_WINDOW = 5
_CONTEXT_ALPHA = 0.75
_SVD_SEED = 0
_VERSION = 1


class CoocEncoder(Encoder):
    """Item vectors from PPMI + SVD of the training users' behaviour co-occurrence.

    :param dim: requested output dimension (the fitted one can be smaller for a small log).
    :param window: how many following events of the same user count as co-occurring.
    """

    kind = "cooc"
    name = "cooc"
    needs_fit = True

    def __init__(self, dim: int = DEFAULT_COOC_DIM, window: int = DEFAULT_COOC_WINDOW) -> None:
        check_dim("cooc", dim)
        if window < 1:
            raise ValueError(f"cooc window {window}: expected at least 1")
        self.requested_dim = int(dim)
        self.window = int(window)
        self._vectors: np.ndarray | None = None  # (n_items, dim), aligned with self._item_ids
        self._row_of: dict[str, int] = {}
        self._hashes: dict[str, str] = {}
        self._events_file_sha256: str | None = None
        self.counts: dict[str, int] = {}

    def inputs(self, items: pd.DataFrame) -> list[str]:
        """Items are encoded from (and cached by) their id: there is no text."""
        return items["item_id"].astype(str).tolist()

    # ------------------------------------------------------------------------------------- fitting
    def fit_dataset(self, dataset: Dataset) -> None:
        self.fit(dataset.items, dataset.events, dataset.users, dataset.action_weights)
        # the events file's bytes (not part of the fingerprint): a later load hashes the training events again only when
        # the file is another
        self._events_file_sha256 = dataset.events_file_sha256

    def fit(self, items: pd.DataFrame, events: pd.DataFrame, users: pd.DataFrame,
            action_weights: dict[str, float] | None = None) -> CoocEncoder:
        """Learn vectors for every row of ``items`` from the training users' ``events``.

        :param items: item table (item_id, category).
        :param events: event table (user_id, ts, seq, item_id, action).
        :param users: user_id -> split; only split == "train" users are learned from.
        :param action_weights: the manifest's: only events of an action with a weight are learned from (as the replay
            protocol counts engagement); None: every action but ``impression``.
        """
        from scipy import sparse

        item_ids = items["item_id"].astype(str).to_numpy()
        categories = items["category"].fillna("").astype(str).to_numpy() if "category" in items else np.full(len(items), "")
        n_items = len(item_ids)
        train_users = set(users.loc[users["split"] == "train", "user_id"].astype(str))
        if not train_users:
            raise DataError("cooc: users.parquet has no user with split == 'train'; expected some training users to learn from")

        ev = training_events(events, users, action_weights)
        index = pd.Index(item_ids)
        codes = index.get_indexer(ev["item_id"].astype(str))
        unknown = int((codes < 0).sum())
        user_codes = pd.factorize(ev["user_id"].astype(str))[0]
        known = codes >= 0
        codes, user_codes = codes[known], user_codes[known]
        # Collapse immediate repeats of one item by one user (e.g. several page views in a row).
        keep = np.ones(len(codes), dtype=bool)
        keep[1:] = (codes[1:] != codes[:-1]) | (user_codes[1:] != user_codes[:-1])
        codes, user_codes = codes[keep], user_codes[keep]

        counts = sparse.csr_matrix((n_items, n_items), dtype=np.float64)
        for d in range(1, self.window + 1):
            if len(codes) <= d:
                break
            a, b = codes[:-d], codes[d:]
            same = (user_codes[:-d] == user_codes[d:]) & (a != b)
            if same.any():
                w = np.full(int(same.sum()), 1.0 / d)
                counts = counts + sparse.csr_matrix((w, (a[same], b[same])), shape=(n_items, n_items))
        counts = (counts + counts.T).tocsr()

        row_sum = np.asarray(counts.sum(axis=1)).ravel()
        active = np.flatnonzero(row_sum > 0)
        vectors = np.zeros((n_items, self.requested_dim), dtype=np.float32)
        trained = np.zeros(n_items, dtype=bool)
        dim = self.requested_dim
        if len(active) >= 3:
            sub = counts[active][:, active].tocoo()
            total = sub.data.sum()
            row_p = np.asarray(sub.sum(axis=1)).ravel() / total
            ctx = np.asarray(sub.sum(axis=0)).ravel() ** _CONTEXT_ALPHA
            ctx_p = ctx / ctx.sum()
            pmi = np.log((sub.data / total) / (row_p[sub.row] * ctx_p[sub.col]))
            positive = pmi > 0
            ppmi = sparse.csr_matrix((pmi[positive], (sub.row[positive], sub.col[positive])), shape=sub.shape)
            dim = min(self.requested_dim, len(active) - 1)
            u, s = _truncated_svd(ppmi, dim)
            learned, zero = l2_normalise_rows(u * np.sqrt(s)[None, :])
            vectors = np.zeros((n_items, dim), dtype=np.float32)
            vectors[active[~zero]] = learned[~zero]
            trained[active[~zero]] = True

        # Fallbacks: the mean of the category's trained items, else a hashed random vector.
        n_category = n_random = 0
        cat_vectors: dict[str, np.ndarray] = {}
        if trained.any():
            df = pd.DataFrame(vectors[trained]).groupby(categories[trained]).mean()
            means, zero = l2_normalise_rows(df.to_numpy())
            cat_vectors = {c: means[i] for i, c in enumerate(df.index) if c != "" and not zero[i]}
        untrained = np.flatnonzero(~trained)
        random_rows = []
        for i in untrained:
            v = cat_vectors.get(categories[i])
            if v is not None:
                vectors[i] = v
                n_category += 1
            else:
                random_rows.append(i)
        if random_rows:
            vectors[random_rows] = hashed_unit_vectors([item_ids[i] for i in random_rows], dim, salt="cooc")
            n_random = len(random_rows)

        self._vectors = vectors
        self._row_of = {iid: i for i, iid in enumerate(item_ids)}
        self._dim = dim
        self._hashes = {
            "train_events_sha256": training_events_sha256(ev),
            "split_sha256": split_sha256(users),
            "items_sha256": frame_sha256(pd.DataFrame({"item_id": item_ids, "category": categories})),
        }
        self.counts = {
            "train_users": len(train_users),
            "train_events": len(ev),
            "train_events_unknown_item": unknown,
            "items": n_items,
            "items_trained": int(trained.sum()),
            "items_category_fallback": n_category,
            "items_random_fallback": n_random,
        }
        return self

    def _require_fit(self) -> None:
        if self._vectors is None:
            raise RuntimeError("CoocEncoder used before fit(): call fit(items, events, users) or fit_dataset(dataset) first")

    # ---------------------------------------------------------------------------------- interface
    @property
    def dim(self) -> int:
        self._require_fit()
        return int(self._dim)

    @property
    def fingerprint(self) -> str:
        self._require_fit()
        return fingerprint_of(
            {
                "kind": self.kind,
                "version": _VERSION,
                "requested_dim": self.requested_dim,
                "dim": self.dim,
                "window": self.window,
                "weighting": "1/distance, symmetric, repeats collapsed, impressions excluded",
                "ppmi_alpha": _CONTEXT_ALPHA,
                "svd": f"seed={_SVD_SEED} u*sqrt(s)",
                "fallback": "category mean, else hashed random",
                **self._hashes,
            }
        )

    def metadata(self) -> dict[str, Any]:
        self._require_fit()
        read = {"events_file_sha256": self._events_file_sha256} if self._events_file_sha256 else {}
        return {"options": {"dim": self.requested_dim, "window": self.window}, "fit": dict(self.counts), **self._hashes, **read}

    def fit_report(self) -> list[str]:
        self._require_fit()
        c = self.counts
        lines = [
            (f"cooc: learned from {c['train_events']} events of {c['train_users']} training users; "
             f"{c['items_trained']} of {c['items']} items trained, {c['items_category_fallback']} use their "
             f"category's mean vector, {c['items_random_fallback']} a hashed random vector")
        ]
        if c["train_events_unknown_item"]:
            lines.append(f"cooc: {c['train_events_unknown_item']} training events name an item that is not in items.parquet (ignored)")
        if self.dim < self.requested_dim:
            lines.append(f"cooc: --dim {self.requested_dim} asked, but the log supports only {self.dim} components")
        return lines

    def encode(self, inputs: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        self._require_fit()
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        missing = []
        for j, iid in enumerate(inputs):
            row = self._row_of.get(iid)
            if row is None:
                missing.append(j)
            else:
                out[j] = self._vectors[row]
        if missing:  # an id outside the fitted item table: same rule as an untrained item without category
            out[missing] = hashed_unit_vectors([inputs[j] for j in missing], self.dim, salt="cooc")
        return out


def _truncated_svd(matrix: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k left singular vectors and values of a sparse matrix (deterministic)."""
    from sklearn.decomposition import TruncatedSVD

    if k >= min(matrix.shape):  # tiny log: dense exact SVD
        u, s, _ = np.linalg.svd(matrix.toarray(), full_matrices=False)
        return u[:, :k], s[:k]
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=_SVD_SEED)
    us = svd.fit_transform(matrix)  # = U * S
    s = svd.singular_values_
    return us / np.where(s > 0, s, 1.0)[None, :], s
