"""The service's item table: ids, vectors, popularity and categories, and how each was computed.

An export carries its training data's popularity table and category list keyed by item id. Loaded
against another catalogue whose ids overlap, the runtime would look popularity up by id in the
*training* table and rank with the wrong numbers, silently. The service therefore never scores with
the export's tables: it takes every item's vector, popularity and category from its own
:class:`Catalogue`, which records how each was computed, and :func:`check_catalogue` refuses an export
whose expectations the catalogue does not meet (encoder, dimension, popularity definition, category
list), naming the cause.

A catalogue comes from one of two places (:func:`load_catalogue`):

* a **dataset folder** (``interestgym prepare`` + ``encode``): vectors from its embeddings, popularity
  and the category list computed by the replay data's own code (``interestgym.envs.replay_data``, the
  code the export took its tables from), so the definitions cannot drift;
* a **catalogue folder** written by :meth:`Catalogue.save` (or by hand, for items that live outside a
  dataset)::

      catalogue.json        kind, format_version, n_items, encoder {name, kind, fingerprint, dim},
                            popularity {definition, computed_from}, categories {definition, list},
                            source, and the sha256 of each file below
      item_ids.json         ["i1", "i2", ...]
      vectors.npy           (n, dim) float32, L2-normalised rows (zero rows: no text)
      popularity.npy        (n,) float32 in [0, 1]
      item_categories.json  one category per item ("" if none)

Items added through ``PUT /v1/items`` live in the store (so every worker and a restart see them) and
are merged on top: a new item's popularity is 0 (no positive event among the catalogue's training
users, as the runtime counts an item it does not know).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.errors import InterestGymError
from interestgym.io import (
    read_string_list,
    save_npy_atomic,
    sha256_file,
    write_json_atomic,
)
from interestgym.runtime.load import check_popularity_range
from interestgym.runtime.manifest import POPULARITY_DEFINITION

CATALOGUE_KIND = "interestgym-item-catalogue"
CATALOGUE_FORMAT = 1
CATALOGUE_FILE = "catalogue.json"
IDS_FILE = "item_ids.json"
VECTORS_FILE = "vectors.npy"
POPULARITY_FILE = "popularity.npy"
ITEM_CATEGORIES_FILE = "item_categories.json"
CATEGORIES_DEFINITION = "the items' category column (the category model's index: sorted distinct categories)"
#: Norm tolerance of a unit vector (the runtime's).
_NORM_TOLERANCE = 1e-3


class CatalogueError(InterestGymError):
    """An item table cannot be read or an item cannot be added; the message says what is wrong."""


class CatalogueMismatchError(CatalogueError):
    """The catalogue does not meet an export's expectations (encoder, popularity, categories)."""


@dataclass
class Catalogue:
    """Items the service can score: row i of ``vectors`` / ``popularity`` / ``categories`` is ``item_ids[i]``.

    ``meta`` records how each column was computed (``encoder``, ``popularity``, ``categories``,
    ``source``); ``n_added`` counts the rows merged from the store's ``PUT /v1/items`` additions.
    """

    item_ids: list[str]
    vectors: np.ndarray
    popularity: np.ndarray
    categories: list[str]
    meta: dict[str, Any]
    source: str
    n_added: int = 0
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {iid: i for i, iid in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            dup = next(i for i, k in Counter(self.item_ids).items() if k > 1)
            raise CatalogueError(f"{self.source}: item id {dup!r} appears more than once; expected unique ids")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def encoder(self) -> dict[str, Any]:
        return dict(self.meta.get("encoder") or {})

    @property
    def category_list(self) -> list[str]:
        """The distinct categories, sorted (the category model's index when built from a dataset)."""
        return sorted(set(self.categories))

    def __len__(self) -> int:
        return len(self.item_ids)

    def rows(self, item_ids: list[str]) -> np.ndarray:
        """Row of each id (-1 for an id the catalogue does not hold)."""
        get = self._index.get
        return np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))

    def with_items(self, added: dict[str, tuple[np.ndarray, str]]) -> Catalogue:
        """A new catalogue with ``added`` (id -> (unit vector, category)) merged in: an existing id gets
        the new vector and category and keeps its popularity; a new id gets popularity 0."""
        if not added:
            return self
        vectors = self.vectors.copy()
        categories = list(self.categories)
        new_ids = [i for i in added if i not in self._index]
        for iid, (vec, cat) in added.items():
            row = self._index.get(iid)
            if row is not None:
                vectors[row] = vec
                categories[row] = cat
        if new_ids:
            vectors = np.concatenate([vectors, np.stack([added[i][0] for i in new_ids]).astype(np.float32)])
            categories += [added[i][1] for i in new_ids]
        popularity = np.concatenate([self.popularity, np.zeros(len(new_ids), np.float32)])
        return Catalogue(self.item_ids + new_ids, vectors, popularity, categories, self.meta, self.source,
                         n_added=self.n_added + len(added))

    def describe(self) -> dict[str, Any]:
        """What /healthz shows: where the items come from and how each column was computed."""
        listed = self.category_list  # a probe's answer stays small: the count and a few names, not thousands
        return {"source": self.source, "n_items": len(self), "added_items": self.n_added, "dim": self.dim,
                "encoder": self.encoder, "popularity": self.meta.get("popularity"),
                "categories": {**{k: v for k, v in (self.meta.get("categories") or {}).items() if k != "list"},
                               "n": len(listed), "first": listed[:10]}}

    # -------------------------------------------------------------------------------- files
    def save(self, folder: str | Path) -> Path:
        """Write the catalogue folder (files first, ``catalogue.json`` with their sha256 last)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / IDS_FILE, self.item_ids)
        save_npy_atomic(folder / VECTORS_FILE, np.ascontiguousarray(self.vectors, np.float32))
        save_npy_atomic(folder / POPULARITY_FILE, np.ascontiguousarray(self.popularity, np.float32))
        write_json_atomic(folder / ITEM_CATEGORIES_FILE, self.categories)
        files = {name: sha256_file(folder / name) for name in (IDS_FILE, VECTORS_FILE, POPULARITY_FILE, ITEM_CATEGORIES_FILE)}
        meta = {"kind": CATALOGUE_KIND, "format_version": CATALOGUE_FORMAT, "n_items": len(self),
                **{k: v for k, v in self.meta.items() if k not in ("kind", "format_version", "n_items", "files")},
                "files": files}
        write_json_atomic(folder / CATALOGUE_FILE, meta)
        return folder


def check_unit_vectors(vectors: np.ndarray, where: str) -> None:
    """Refuse rows that are not finite and L2-normalised (norm 1, or 0 for an item the encoder has no vector for)."""
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise CatalogueError(f"{where}: row {row} has a NaN or infinite value; expected finite vectors")
    norms = np.sqrt(np.einsum("nd,nd->n", vectors, vectors, dtype=np.float64))
    bad = ~((np.abs(norms - 1.0) <= _NORM_TOLERANCE) | (norms == 0.0))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise CatalogueError(f"{where}: row {row} has L2 norm {norms[row]:.4g}; expected L2-normalised rows "
                             "(norm 1, or 0 for an item the encoder has no vector for) as the encoders write them")


def load_catalogue(path: str | Path, embeddings: str | None = None) -> Catalogue:
    """A catalogue folder (with ``catalogue.json``) or a dataset folder (``interestgym prepare``)."""
    path = Path(path)
    if (path / CATALOGUE_FILE).is_file():
        if embeddings is not None:
            raise CatalogueError(f"{path}: --embeddings applies to a dataset folder; a catalogue folder has one set of vectors")
        return _read_folder(path)
    if (path / "manifest.json").is_file() and (path / "items.parquet").is_file():
        return catalogue_from_dataset(path, embeddings)
    raise CatalogueError(f"{path}: neither a catalogue folder ({CATALOGUE_FILE}) nor a dataset folder "
                         "(manifest.json + items.parquet); expected one of them")


def _read_folder(folder: Path) -> Catalogue:
    meta_path = folder / CATALOGUE_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{meta_path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") != CATALOGUE_KIND:
        found = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
        raise CatalogueError(f"{meta_path}: field 'kind' is {found!r}; expected {CATALOGUE_KIND!r}")
    if meta.get("format_version") != CATALOGUE_FORMAT:
        raise CatalogueError(f"{meta_path}: format_version {meta.get('format_version')!r}; this interestgym reads {CATALOGUE_FORMAT}")
    for name, entry in (meta.get("files") or {}).items():
        p = folder / name
        if not p.is_file():
            raise CatalogueError(f"{p}: missing; {CATALOGUE_FILE} lists it")
        if sha256_file(p) != entry:
            raise CatalogueError(f"{p}: sha256 differs from the one {CATALOGUE_FILE} records (the file changed after it was written)")
    for key in ("encoder", "popularity", "categories"):
        if not isinstance(meta.get(key), dict):
            raise CatalogueError(f"{meta_path}: field {key!r} is {meta.get(key)!r}; expected an object saying how the column was computed")
    # lists of strings (a JSON object loaded as its keys, a number as its str); ids each once, named by file and rows
    ids = read_string_list(folder / IDS_FILE, "item id", "item ids, in the vectors' row order", CatalogueError)
    cats = read_string_list(folder / ITEM_CATEGORIES_FILE, "category", "each item's category, in item order", CatalogueError,
                            distinct=False)
    try:
        vectors = np.load(folder / VECTORS_FILE, allow_pickle=False)
        popularity = np.load(folder / POPULARITY_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{folder}: a catalogue file cannot be read ({exc})") from None
    n = len(ids)
    if vectors.ndim != 2 or vectors.shape[0] != n or vectors.dtype != np.float32:
        raise CatalogueError(f"{folder / VECTORS_FILE}: shape {vectors.shape} dtype {vectors.dtype}; expected ({n}, dim) float32")
    if popularity.shape != (n,) or popularity.dtype != np.float32:
        raise CatalogueError(f"{folder / POPULARITY_FILE}: shape {popularity.shape} dtype {popularity.dtype}; "
                             f"expected ({n},) float32 in [0, 1]")
    check_popularity_range(popularity, ids, folder / POPULARITY_FILE, CatalogueError)
    if len(cats) != n:
        raise CatalogueError(f"{folder / ITEM_CATEGORIES_FILE}: {len(cats)} categories; expected {n}, one per item")
    dim = meta["encoder"].get("dim")
    if dim is not None and dim != vectors.shape[1]:
        raise CatalogueError(f"{meta_path}: encoder.dim is {dim} but {VECTORS_FILE} has {vectors.shape[1]} columns")
    check_unit_vectors(vectors, str(folder / VECTORS_FILE))
    return Catalogue(ids, vectors, popularity, cats, meta, str(folder))


def catalogue_from_dataset(dataset: str | Path, embeddings: str | None = None) -> Catalogue:
    """Vectors, popularity and categories of a prepared + encoded dataset.

    Popularity and the category list are taken from the replay data (``load_replay_data``), the code
    the export took its own tables from: pop(c) = log1p(positive events of the train-split users) /
    max, categories = the sorted distinct categories. Needs pandas (``interestgym.data``).
    """
    from interestgym.data.dataset import Dataset
    from interestgym.envs.replay_data import ProtocolSpec, load_replay_data
    from interestgym.io import sha256_file as sha

    ds = Dataset.open(dataset)
    name = ds.resolve_embeddings(embeddings)
    _, emb_meta = ds.load_embeddings(name)
    # Any split gives the same popularity (training users only); one negative keeps it cheap.
    data = load_replay_data(ds, name, ProtocolSpec(split="test", protocol="next_positive", n_negatives=1))
    items = ds.items
    ids = items["item_id"].astype(str).tolist()
    cats = items["category"].fillna("").astype(str).tolist()
    n_train = int((ds.users["split"] == "train").sum())
    meta = {
        "encoder": {"name": emb_meta.get("encoder", name), "kind": emb_meta.get("kind"), "embeddings": name,
                    "dim": int(data.dim), "fingerprint": emb_meta.get("fingerprint")},
        "popularity": {"definition": POPULARITY_DEFINITION,
                       "computed_from": {"dataset": str(ds.path), "train_users": n_train,
                                         "code": "interestgym.envs.replay_data (item_popularity of train users' positive events)"}},
        "categories": {"definition": CATEGORIES_DEFINITION, "list": list(data.category_names)},
        "source": {"dataset": str(ds.path), "dataset_manifest_sha256": sha(ds.path / "manifest.json"),
                   "item_ids_sha256": ds.item_ids_sha256, "embeddings": name},
    }
    vectors = np.ascontiguousarray(data.embeddings, dtype=np.float32)
    check_unit_vectors(vectors, str(ds.embeddings_dir / f"{name}.npy"))
    return Catalogue(ids, vectors, np.asarray(data.item_popularity, np.float32), cats, meta, str(ds.path))


def check_catalogue(catalogue: Catalogue, policy: Any) -> list[str]:
    """Refuse (:class:`CatalogueMismatchError`, every cause named) a catalogue that does not meet the
    export's expectations; return notes worth logging (e.g. serving another dataset's items).

    Checked: the vectors' dimension; the encoder (fingerprint when either side records one, else the
    encoder name); the popularity definition, when the policy scores with popularity; that every
    category of the catalogue is in the export's category list, when the policy scores with the
    category model (its counts have one column per export category: another list would score every
    candidate as an unknown category).
    """
    causes: list[str] = []
    notes: list[str] = []
    where = f"export {policy.directory}"
    if catalogue.dim != policy.dim:
        causes.append(f"vectors of dimension {catalogue.dim}; the export's encoder has dimension {policy.dim}")
    enc, want = catalogue.encoder, policy.encoder
    if enc.get("fingerprint") is not None or want.get("fingerprint") is not None:
        if enc.get("fingerprint") != want.get("fingerprint"):
            causes.append(f"encoder fingerprint {str(enc.get('fingerprint'))[:16]}... ({enc.get('name')!r}); the export "
                          f"expects {str(want.get('fingerprint'))[:16]}... ({want.get('name')!r}): vectors from another encoder")
    elif enc.get("name") != want.get("name"):
        causes.append(f"encoder {enc.get('name')!r}; the export expects {want.get('name')!r} (neither records a fingerprint)")
    uses_popularity = policy.scoring.get("popularity_weight") != 0
    if uses_popularity:
        have = (catalogue.meta.get("popularity") or {}).get("definition")
        expected = policy.manifest["scoring"]["popularity"]["definition"]
        if have != expected:
            causes.append(f"popularity defined as {have!r}; the export's score expects {expected!r}")
    if float(policy.scoring.get("beta_cat", 0.0)) != 0.0:
        known = set(policy.categories)
        missing = [c for c in catalogue.category_list if c not in known]
        if missing:
            counts = {c: catalogue.categories.count(c) for c in missing[:5]}
            causes.append(f"{len(missing)} categories the export's category model does not know "
                          f"({', '.join(f'{c!r}: {k} items' for c, k in counts.items())}{', ...' if len(missing) > 5 else ''}); "
                          f"the export knows {len(known)}: {', '.join(map(repr, policy.categories[:8]))}"
                          f"{', ...' if len(known) > 8 else ''}")
    if causes:
        raise CatalogueMismatchError(f"items {catalogue.source} do not meet {where}'s expectations: " + "; ".join(causes))
    trained_on = policy.manifest.get("provenance", {}).get("dataset", {}).get("manifest_sha256")
    served = (catalogue.meta.get("source") or {}).get("dataset_manifest_sha256")
    if trained_on and served != trained_on:
        notes.append(f"items {catalogue.source} are not the export's training dataset: popularity and categories "
                     "come from these items, never from the export's tables")
    return notes
