"""The service behind the HTTP API: policy + catalogue + store, no HTTP in it.

Every per-user computation is the runtime's (:meth:`ExportedPolicy.update_batch`, ``score``,
``record_outcome``, ``UserState.to_bytes`` / ``from_bytes``); this module decides what is read,
what is written, and what is refused.

**Events** (``apply``): a batch is applied whole or not at all, in one store transaction holding the
users' states and the applied event ids. Per user the events are applied in the order given; across
users, the k-th events of every user go through the policy in one ``update_batch`` call.

* An event id the store has already applied for that user (or met earlier in the batch) is a
  *duplicate*: skipped, reported, never an error (that is what makes retries safe).
* **Retention** (``event_id_retention_s``, ``--event-id-retention``, 30 days by default): applied ids are remembered
  while their time (an event's ``ts``; an outcome's ``ts``, or without one the server's clock, or the user's last event
  if later) is within that many seconds of the user's last event; older ones are forgotten in the write that moves the
  user past them, so the store holds a bounded window of ids per user instead of every id ever applied. A late retry
  of a forgotten event is still never applied twice: its time is before the user's last event, so it is *out of
  order* (below). An outcome sent with a ``ts`` that far back is refused the same way, and so is one older than the
  user's stored ``forgotten_before`` (what a worker, or an earlier run, with a shorter retention forgot). An outcome
  sent without ``ts`` carries the server's clock, and a retry of it after its id was forgotten would be applied again:
  send outcomes with their ``ts``.
* **Out of order**: the runtime refuses an event older than the user's last one. The service refuses
  the whole batch with 409 ``out_of_order``, naming the event, its time and the user's last time;
  nothing is applied (the client re-sends the batch without it, or with a corrected time). Equal
  times are in order. A batch sent with ``late="skip"`` instead reports such an event ``out_of_order``
  (not applied, its id not recorded) and applies the rest, in the same transaction.
* An event whose item the catalogue does not hold (or without an item) is applied as the runtime
  applies an item-less event: it counts (event counters, time gaps) but is not a decision.
* An outcome's candidates the catalogue does not hold are left out (as the replay protocol leaves
  them out of logged impressions). Outcomes are not ordered by time (the runtime defines no order
  for them): each is scored with the user's state when it is applied; its ``ts`` / ``hour`` only
  set the hour of the time-of-day term.

**Policy**: the store records the state contract its states were written under (encoder, feature
table, state layout) and the active export (path, manifest sha256, generation). Every transaction
reads that record and a worker that finds a newer one loads it before applying anything, so a swap
(``swap_policy``) is atomic across workers: no event is applied with the old policy after the swap
committed. A swap to an export whose contract differs from the stored states' is refused, naming
the difference; so is one whose expectations the catalogue does not meet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interestgym.core.features import RUNNING_MEAN_NAMES
from interestgym.core.log_features import RATING_ACTION
from interestgym.core.protocol import ACTION_NAMES
from interestgym.core.transition import apply_slot_change
from interestgym.errors import InterestGymError
from interestgym.runtime import Event, ExportedPolicy, UserState, load_policy
from interestgym.runtime.codec import decode_bytes, encode_bytes
from interestgym.runtime.state import DEFAULT_VALUE, READABLE_STATE_VERSIONS
from interestgym.serve.catalogue import (
    Catalogue,
    CatalogueError,
    check_catalogue,
    check_unit_vectors,
    load_catalogue,
)
from interestgym.serve.metrics import ServeMetrics
from interestgym.serve.schemas import BehaviourEvent, ItemIn, Outcome, repeated_id
from interestgym.serve.stores import (
    Snapshot,
    Store,
    StoreError,
    StoreUnavailableError,
    UserWrite,
    open_store,
)

log = logging.getLogger("interestgym.serve")


# ------------------------------------------------------------------------------------ errors
class ServeError(InterestGymError):
    """A request the service refuses: ``status`` (HTTP), ``code`` (the JSON ``error`` field), ``detail``."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class InvalidRequestError(ServeError):
    status, code = 422, "invalid_request"


class NotFoundError(ServeError):
    status, code = 404, "not_found"


class OutOfOrderError(ServeError):
    status, code = 409, "out_of_order"


class EventConflictError(ServeError):
    """An event id applied before (or earlier in the batch) came again with other content."""

    status, code = 409, "event_conflict"


class PolicyMismatchError(ServeError):
    status, code = 409, "policy_mismatch"


class CatalogueRefusedError(ServeError):
    status, code = 409, "catalogue_mismatch"


class ForbiddenError(ServeError):
    status, code = 403, "forbidden"


class CorruptStateError(ServeError):
    """A user's stored state cannot be read (damaged in the store): the service's fault, not the request's."""

    status, code = 500, "corrupt_state"


class PolicyUnavailableError(ServeError):
    """The store's active policy (swapped by another worker) cannot be served by this worker."""

    status, code = 503, "policy_unavailable"


class _Stale(Exception):
    """Raised inside a transaction or read when the store's active policy or items are newer than the
    worker's: nothing is written, the worker catches up and runs the request again."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot


# ------------------------------------------------------------------------------------ config
#: Per-user lock stripes of a worker (:meth:`InterestService.apply`): many, so that a batch of many users (holding
#: its users' stripes while it is computed) leaves most other users' stripes free. With 64, a batch of 1,000 users
#: held them all: another user's single event on Redis waited ~1.0 s for it; with 8,192, 0.026 s (median of 8).
_USER_STRIPES = 8192

#: The default of ``--event-id-retention``: 30 days.
EVENT_ID_RETENTION_S = 30 * 86_400


@dataclass(frozen=True)
class ServeConfig:
    """What ``interestgym serve`` starts with (JSON-able: it travels to uvicorn's workers)."""

    export: str
    store: str = "sqlite:///interestgym-serve.db"
    items: str | None = None
    embeddings: str | None = None
    threads: int = 1
    admin_token: str | None = None
    text_encoder: str | None = None
    #: how far past the server's clock an event's ts may be: a later one is refused (it would put the user's real
    #: events, all before it, out of order)
    future_tolerance_s: int = 86_400
    #: the largest request body read (a larger one is refused with 413 before it is parsed)
    max_body_bytes: int = 16 * 2**20
    #: how long (on the user's own clock: seconds before the user's last event) an applied event id is remembered
    #: as a retry; None: for as long as the user is (see ``apply``)
    event_id_retention_s: int | None = EVENT_ID_RETENTION_S
    #: how states are written: "sparse" (codec 2: mostly-zero fields as positions and values) or "dense" (codec 1, which
    #: earlier releases read: for a rolling upgrade from one, or to keep a rollback possible)
    state_format: str = "sparse"

    def __post_init__(self) -> None:
        if self.state_format not in ("sparse", "dense"):
            raise InterestGymError(f"state_format {self.state_format!r}; expected 'sparse' or 'dense'")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def state_contract(policy: ExportedPolicy) -> dict[str, Any]:
    """What stored states depend on: a policy with another contract cannot read or extend them."""
    features = policy.manifest["observation"]["features"]
    canonical = json.dumps(features, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {
        # the version the policy's states need: 4 with the exposure counts, 3 with the per-slot category counts,
        # else 2 (what a reader from before those reads; their states are written at 1 or 2)
        "state_version": 4 if policy._exposure_prior != 0 else 3 if policy._slot_weight != 0 else 2,
        "encoder": {"name": policy.encoder.get("name"), "fingerprint": policy.encoder.get("fingerprint"), "dim": policy.dim},
        "features_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "category_columns": list(policy.categories) if float(policy.scoring.get("beta_cat", 0.0)) != 0 else None,
        "slot_profiles": float(policy.scoring.get("beta_ctx", 0.0)) != 0,
        "slot_category_counts": policy._slot_weight != 0,
        "exposure_counts": policy._exposure_prior != 0,
        # a sequence tracker's window holds rows of ITS catalogue (the export's item order) and at most `window` of them:
        # an export whose catalogue is in another order would read the stored windows as other items
        "tracker": None if policy.tracker is None else {
            "items_sha256": hashlib.sha256(json.dumps(list(policy.tracker.item_ids), ensure_ascii=False).encode("utf-8")).hexdigest(),
            "window": int(policy.tracker.window)},
    }


def contract_differences(stored: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each field where ``new`` differs from ``stored``, in words."""
    out = []
    if stored.get("encoder") != new.get("encoder"):
        a, b = stored.get("encoder") or {}, new.get("encoder") or {}
        out.append(f"encoder {b.get('name')!r} fingerprint {str(b.get('fingerprint'))[:16]}... dim {b.get('dim')} differs from the "
                   f"stored states' {a.get('name')!r} fingerprint {str(a.get('fingerprint'))[:16]}... dim {a.get('dim')}")
    if stored.get("features_sha256") != new.get("features_sha256"):
        out.append(f"feature table sha256 {str(new.get('features_sha256'))[:16]}... differs from the stored states' "
                   f"{str(stored.get('features_sha256'))[:16]}...")
    if stored.get("category_columns") != new.get("category_columns"):
        out.append(f"category model columns {new.get('category_columns')} differ from the stored states' {stored.get('category_columns')}")
    if stored.get("slot_profiles") != new.get("slot_profiles"):
        out.append(f"time-of-day profiles {'used' if new.get('slot_profiles') else 'not used'}; the stored states "
                   f"{'have' if stored.get('slot_profiles') else 'do not have'} them")
    # absent from contracts written before the per-slot category counts existed: not kept
    if bool(stored.get("slot_category_counts")) != bool(new.get("slot_category_counts")):
        out.append(f"category counts per time of day {'used' if new.get('slot_category_counts') else 'not used'}; the stored "
                   f"states {'have' if stored.get('slot_category_counts') else 'do not have'} them")
    # absent from contracts written before the exposure counts existed: not kept
    if bool(stored.get("exposure_counts")) != bool(new.get("exposure_counts")):
        out.append(f"counts of shown candidates (exposure) {'used' if new.get('exposure_counts') else 'not used'}; the stored "
                   f"states {'have' if stored.get('exposure_counts') else 'do not have'} them")
    # absent from contracts written before it was recorded: not known, not checked
    if "tracker" in stored and stored["tracker"] != new.get("tracker"):
        a, b = stored["tracker"], new.get("tracker")
        out.append("no sequence tracker; the stored states hold its windows" if b is None else
                   "a sequence tracker; the stored states have no window for it" if a is None else
                   f"sequence tracker catalogue sha256 {b['items_sha256'][:16]}... window {b['window']} differs from the stored "
                   f"windows' {a['items_sha256'][:16]}... window {a['window']} (a window holds rows of its tracker's catalogue)")
    # this code reads every state version up to its own; a store of newer states needs a newer interestgym
    # (whether the states have what the policy needs is the fields' business, above)
    if stored.get("state_version") not in READABLE_STATE_VERSIONS:
        out.append(f"the stored states' version {stored.get('state_version')} is not one this interestgym reads "
                   f"({', '.join(map(str, READABLE_STATE_VERSIONS))}); upgrade interestgym to serve this store")
    return out


def _policy_record(policy: ExportedPolicy, generation: int) -> dict[str, Any]:
    return {"path": str(Path(policy.directory).resolve()), "manifest_sha256": policy.manifest["manifest_sha256"],
            "generation": generation, "installed_at": _utc(int(time.time()))}


@dataclass(frozen=True)
class _Active:
    policy: ExportedPolicy
    record_text: str
    record: dict[str, Any]


#: The store operations (``_timed``'s names) that only read.
_READ_OPS = frozenset({"read", "read items"})


class _OutageLog:
    """A store outage in the server's log (each failed request is a 503 and a count in ``interestgym_store_errors_total``,
    the log is for the operator): its first failure's cause at once, then at most one line per ``every_s`` while
    it lasts, and one when the store answers again.

    A store can fail writes and still answer reads (a full disk, a read-only file): an outage in which a write failed
    ends only with a write that succeeds, so reads in between neither end it nor start a new one in the log."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._since: float | None = None  # monotonic time of the outage's first failure, None while the store answers
        self._failures = 0
        self._logged = 0.0
        self._writes_failed = False

    def failed(self, exc: StoreError, *, write: bool) -> None:
        with self._lock:
            now = time.monotonic()
            self._failures += 1
            self._writes_failed |= write
            if self._since is None:
                self._since, self._logged = now, now
                log.warning("store unavailable: %s; requests answer 503 store_unavailable until it answers again", exc)
            elif now - self._logged >= self.every_s:
                self._logged = now
                log.warning("store still unavailable after %d failed operations in %.0f s: %s", self._failures, now - self._since, exc)

    def answered(self, *, write: bool) -> None:
        if self._since is None:  # the usual case, without the lock
            return
        with self._lock:
            if self._since is not None and (write or not self._writes_failed):
                log.warning("store answers again after %d failed operations in %.0f s", self._failures, time.monotonic() - self._since)
                self._since, self._failures, self._writes_failed = None, 0, False


# ------------------------------------------------------------------------------------ service
class InterestService:
    """Policy + catalogue + store. Build with :meth:`open`."""

    def __init__(self, config: ServeConfig, store: Store, base_catalogue: Catalogue, active: _Active,
                 metrics: ServeMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics or ServeMetrics()
        self.started = time.time()
        self._base = base_catalogue
        #: (items version, catalogue with the store's added items), replaced as one
        self._items: tuple[int, Catalogue] = (-1, base_catalogue)
        self._active = active
        self._lock = threading.Lock()
        self._encoder: Any = None
        self._encoder_lock = threading.Lock()
        #: per-user locks of this process (users hashed onto stripes): a worker's threads applying events of the same
        #: user queue here instead of racing in the store (Redis: every race is a WATCH conflict and a retry)
        self._user_stripes = [threading.Lock() for _ in range(_USER_STRIPES)]
        self.notes: list[str] = []
        self._outage = _OutageLog()
        store.on_conflict = lambda: self.metrics.store_conflicts.labels(store.kind).inc()
        self.metrics.serving(active.record)
        self._refresh_items()

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, config: ServeConfig, *, install: bool = True, metrics: ServeMetrics | None = None,
             log_notes: bool = True) -> InterestService:
        """Open the store, the export and the items.

        :param install: make ``config.export`` the store's active policy (what ``interestgym serve``
            does once, before its workers start); False: follow the store's active policy if it has
            one (a worker, which must not undo a swap when it restarts).
        :param log_notes: log each of :attr:`notes` as a WARNING (False: the caller shows them itself, as
            ``interestgym serve``'s start-up lines do, which would otherwise print each twice).
        :raises InterestGymError: the export, the items or the store refused, naming why.
        """
        store = open_store(config.store)
        try:
            policy = load_policy(config.export, threads=config.threads)
            source = cls.items_source(config, policy)
            catalogue = load_catalogue(source, config.embeddings or _export_embedding(source, policy))
            notes = check_catalogue(catalogue, policy)
            if install:
                before = store.update_meta(lambda m: {}).get("policy")  # the store's active policy until now, if any
                meta = install_policy(store, policy)
                previous = json.loads(before) if before else None
                if previous and previous.get("manifest_sha256") != policy.manifest["manifest_sha256"]:
                    # e.g. a restart with another EXPORT after a swap: said, not silent
                    notes.append(f"this start replaced the store's active policy {previous.get('path')} (generation "
                                 f"{previous.get('generation')}) with {config.export}; start the service with the export you "
                                 "want active (or swap with POST /v1/admin/policy)")
            else:
                meta = store.update_meta(lambda m: {} if m.get("policy") else _install_fn(policy)(m))
                record = json.loads(meta["policy"])
                if record["manifest_sha256"] != policy.manifest["manifest_sha256"]:
                    policy = _load_recorded(record, config.threads)
                    notes += check_catalogue(catalogue, policy)
            active = _Active(policy, meta["policy"], json.loads(meta["policy"]))
        except BaseException:
            store.close()
            raise
        service = cls(config, store, catalogue, active, metrics)
        service.notes = notes
        for note in notes if log_notes else ():
            log.warning(note)
        return service

    @staticmethod
    def items_source(config: ServeConfig, policy: ExportedPolicy) -> str:
        """``--items``, else the export's training dataset (from its manifest) when it is still there."""
        if config.items:
            return config.items
        dataset = policy.manifest.get("provenance", {}).get("dataset", {}).get("path")
        if dataset and Path(dataset).is_dir():
            return dataset
        raise CatalogueError(f"export {policy.directory}: no --items given and its training dataset {dataset!r} is not there; "
                             "pass --items DATASET_DIR or a catalogue folder")

    def close(self) -> None:
        self.store.close()

    # ------------------------------------------------------------------------------ policy
    @property
    def policy(self) -> ExportedPolicy:
        return self._active.policy

    @property
    def policy_record(self) -> dict[str, Any]:
        """The active export as the store records it: path, manifest_sha256, generation, installed_at."""
        return dict(self._active.record)

    @property
    def policy_id(self) -> str:
        return self._active.record["manifest_sha256"][:16]

    def _current(self, snapshot: Snapshot, active: _Active, items_version: int) -> None:
        """Raise :class:`_Stale` unless the worker's policy and items are the snapshot's (a store without a policy
        record is stale too: its meta was lost, see :meth:`_restore_record`)."""
        if snapshot.policy != active.record_text or snapshot.items_version != items_version:
            raise _Stale(snapshot)

    def _run_current(self, run: Any) -> Any:
        """``run(active, (items version, catalogue))``, again after catching up while it raises :class:`_Stale`."""
        for _ in range(5):
            try:
                return run(self._active, self._items)
            except _Stale as stale:
                if stale.snapshot.policy is None:
                    self._restore_record()
                elif stale.snapshot.policy != self._active.record_text:
                    self._follow(stale.snapshot.policy)
                if stale.snapshot.items_version != self._items[0]:
                    self._refresh_items()
        raise ServeError("the active policy or the items changed five times during one request; retry")

    def _restore_record(self) -> None:
        """The store holds no active policy record, so no state contract either: its data were lost under the running
        service (a Redis restarted without persistence, a FLUSHDB). Before anything is written, this worker writes its
        own policy back, as a start does; otherwise states would be written under no contract, and a server started
        next with another export would take the store over and answer their users with errors."""
        policy = self._active.policy
        install = _install_fn(policy)
        wrote = []

        def restore(meta: dict[str, str | None]) -> dict[str, str]:
            if meta.get("policy"):  # another worker restored it, or swapped, meanwhile: that record stands
                return {}
            wrote.append(True)
            return install(meta)  # refused (409) when another export's contract got there first

        meta = self.store.update_meta(restore)
        if wrote:
            log.warning("the store %s held no active policy record (its data were lost or flushed: the user states, applied "
                        "event ids and items stored before are gone); this worker wrote its own back: %s",
                        self.store.describe(), policy.directory)
        if meta["policy"] is not None:
            self._follow(meta["policy"])

    def _follow(self, record_text: str) -> None:
        """Load the store's active policy (another worker swapped it)."""
        with self._lock:
            if self._active.record_text == record_text:
                return
            record = json.loads(record_text)
            if record["manifest_sha256"] == self._active.record["manifest_sha256"]:
                policy = self._active.policy
            else:
                policy = _load_recorded(record, self.config.threads)
                try:
                    check_catalogue(self.catalogue, policy)
                except CatalogueError as exc:
                    raise PolicyUnavailableError(f"the store's active policy {record['path']} does not fit this worker's items: {exc}") from None
                # a swap (POST /v1/admin/policy, a start) never changes the contract; a record that does was written over
                # a store that had lost its own: the states stored now may belong to either export
                diffs = contract_differences(state_contract(self._active.policy), state_contract(policy))
                if diffs:
                    raise PolicyUnavailableError(
                        f"the store's active policy {record['path']} keeps other user state than this worker's "
                        f"{self._active.policy.directory} ({'; '.join(diffs)}): its record was written over a store that "
                        "had lost its own; stop the servers and restart them on one export (a new store, if the states "
                        "were written under both)")
            log.warning("following the store's active policy: %s (generation %s)", record["path"], record.get("generation"))
            self._active = _Active(policy, record_text, record)
            self.metrics.serving(record)

    def swap_policy(self, path: str) -> dict[str, Any]:
        """Make the export at ``path`` the store's active policy, or refuse (409) naming why."""
        try:
            new = load_policy(path, threads=self.config.threads)
        except InterestGymError as exc:
            self.metrics.policy_swaps.labels("refused").inc()
            raise InvalidRequestError(f"cannot load the export: {exc}") from None
        try:
            check_catalogue(self.catalogue, new)
        except CatalogueError as exc:
            self.metrics.policy_swaps.labels("refused").inc()
            raise CatalogueRefusedError(str(exc)) from None
        previous = self._active.record
        # the record holds the resolved path: a relative path to the same folder is the same export
        if previous.get("manifest_sha256") == new.manifest["manifest_sha256"] and previous.get("path") == str(Path(new.directory).resolve()):
            # the export already active, from the same folder: nothing changes (no new generation), and the answer says so
            self.metrics.policy_swaps.labels("unchanged").inc()
            log.info("policy swap to %s: already the active export (generation %s)", path, previous.get("generation"))
            return {"previous": previous, "active": previous, "unchanged": True}
        try:
            meta = install_policy(self.store, new)
        except PolicyMismatchError:
            self.metrics.policy_swaps.labels("refused").inc()
            raise
        record = json.loads(meta["policy"])
        with self._lock:
            self._active = _Active(new, meta["policy"], record)
        self.metrics.serving(record)
        self.metrics.policy_swaps.labels("swapped").inc()
        log.warning("policy swapped to %s (generation %s)", record["path"], record["generation"])
        return {"previous": previous, "active": record}

    def active_policy(self) -> dict[str, Any]:
        def run(active: _Active, items: tuple[int, Catalogue]) -> dict[str, Any]:
            self._current(self._timed("read", lambda: self.store.read([])), active, items[0])
            return dict(active.record)

        return self._run_current(run)

    # ------------------------------------------------------------------------------ items
    @property
    def catalogue(self) -> Catalogue:
        return self._items[1]

    def _refresh_items(self) -> None:
        """Re-read the items added through the API (by any worker) when the store's version moved."""
        version, stored = self._timed("read items", self.store.items)
        with self._lock:
            if version != self._items[0]:
                added = {iid: _decode_item(blob) for iid, blob in stored.items()}
                self._items = (version, self._base.with_items(added))
        self.metrics.catalogue_items.set(len(self._items[1]))

    def put_items(self, items: Sequence[ItemIn]) -> dict[str, int]:
        """Add or replace items (vectors, or texts encoded with the catalogue's encoder)."""
        cat = self.catalogue
        policy = self.policy
        known_categories = set(policy.categories) if float(policy.scoring.get("beta_cat", 0.0)) != 0 else None
        vectors = np.zeros((len(items), cat.dim), np.float32)
        texts = [(i, it.text) for i, it in enumerate(items) if it.text is not None]
        for i, it in enumerate(items):
            if it.vector is not None:
                if len(it.vector) != cat.dim:
                    raise InvalidRequestError(f"items[{i}] ({it.item_id!r}): vector of length {len(it.vector)}; expected {cat.dim} "
                                              f"(the dimension of encoder {cat.encoder.get('name')!r})")
                vectors[i] = it.vector
            if known_categories is not None and it.category not in known_categories:
                listed = f"{', '.join(map(repr, policy.categories[:8]))}{', ...' if len(policy.categories) > 8 else ''}"
                if not it.category:
                    raise InvalidRequestError(f"items[{i}] ({it.item_id!r}): no category given, and the export scores with its "
                                              f"category model ({listed}): give the item one of its categories")
                raise InvalidRequestError(
                    f"items[{i}] ({it.item_id!r}): category {it.category!r} is not in the export's category model ({listed}): the "
                    "export scores with counts per category it was trained with; give one of them, or serve an export trained on "
                    "data that has this category")
        if texts:
            vectors[[i for i, _ in texts]] = self._encode([t for _, t in texts])
        for i, it in enumerate(items):
            try:
                check_unit_vectors(vectors[i:i + 1], f"items[{i}] ({it.item_id!r}).vector")
            except CatalogueError as exc:
                raise InvalidRequestError(str(exc).replace(": row 0 has", " has")) from None
        records = {it.item_id: encode_bytes({"vector": vectors[i]}, {"category": it.category}) for i, it in enumerate(items)}
        replaced = int((cat.rows(list(records)) >= 0).sum())
        self._timed("put items", lambda: self.store.put_items(records))
        self._refresh_items()
        return {"added": len(records) - replaced, "replaced": replaced, "n_items": len(self.catalogue)}

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Texts -> vectors with the catalogue's encoder, if it can run here and has its fingerprint."""
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = self._build_encoder()
            return self._encoder.encode(texts, progress=False)

    def _build_encoder(self) -> Any:
        enc = self.catalogue.encoder
        spec = self.config.text_encoder or {"hashing": "hashing"}.get(str(enc.get("kind"))) or (
            "minilm" if enc.get("name") == "minilm" else None)
        if spec is None and str(enc.get("kind")) in ("cooc", "tfidf"):
            # fitted on the dataset: no encoder outside it gives the same space, whatever --text-encoder names
            raise InvalidRequestError(f"items given as text need the encoder {enc.get('name')!r} ({enc.get('kind')}), which was fitted "
                                      "on the training data and cannot encode new texts here; send each item's vector instead")
        if spec is None:
            raise InvalidRequestError(f"items given as text need the encoder {enc.get('name')!r} ({enc.get('kind')}); it cannot be "
                                      "rebuilt here (start the service with --text-encoder PATH, or send vectors)")
        try:
            from interestgym.encoders.registry import build_encoder

            encoder = build_encoder(spec, dim=enc.get("dim") if spec == "hashing" else None)
            fingerprint = encoder.fingerprint
        except (ImportError, InterestGymError, OSError) as exc:
            raise InvalidRequestError(f"items given as text: encoder {spec!r} cannot be loaded here ({exc}); send vectors") from None
        if fingerprint != enc.get("fingerprint"):
            raise InvalidRequestError(f"items given as text: encoder {spec!r} here has fingerprint {fingerprint[:16]}...; the "
                                      f"catalogue's vectors come from {str(enc.get('fingerprint'))[:16]}... (send vectors)")
        return encoder

    # ------------------------------------------------------------------------------ events
    def apply(self, events: Sequence[BehaviourEvent | Outcome], *, late: str = "refuse") -> dict[str, Any]:
        """Apply a batch (see the module docstring); returns the per-event results.

        :param late: ``"refuse"``: an event older than its user's last applied one refuses the batch (409);
            ``"skip"``: it is reported ``out_of_order`` and left out, the rest applied.
        """
        if late not in ("refuse", "skip"):
            raise InvalidRequestError(f"late is {late!r}; expected 'refuse' or 'skip'")
        ids = [e.item_id for e in events if isinstance(e, BehaviourEvent) and e.item_id is not None]
        ids += [c for e in events if isinstance(e, Outcome) for c in e.candidates]
        by_user: dict[str, list[int]] = {}
        for i, e in enumerate(events):
            by_user.setdefault(e.user_id, []).append(i)
        event_ids = {u: [events[i].event_id for i in idx] for u, idx in by_user.items()}
        results: list[dict[str, Any]] = []
        now = int(time.time())  # the time of an outcome sent without ts (one value, however often compute runs)
        limit = now + self.config.future_tolerance_s
        for i, e in enumerate(events):
            if e.ts is not None and e.ts > limit:
                self.metrics.refused.labels("invalid").inc()
                raise InvalidRequestError(
                    f"events[{i}].ts is {e.ts} ({_utc(e.ts)}); expected at most {limit} ({_utc(limit)}: the server's clock plus "
                    f"{self.config.future_tolerance_s} s, --future-tolerance): a time in the future would put every later event of "
                    f"user {e.user_id!r} out of order (nothing in this batch was applied)", detail={"index": i, "event_id": e.event_id})

        def run(active: _Active, items: tuple[int, Catalogue]) -> str:
            version, cat = items
            row_of = dict(zip(ids, cat.rows(ids).tolist()))

            def compute(snapshot: Snapshot) -> dict[str, UserWrite]:
                self._current(snapshot, active, version)
                writes, results[:] = _apply_batch(active.policy, cat, row_of, events, by_user, snapshot,
                                                  self.config.event_id_retention_s, now, skip_late=late == "skip",
                                                  sparse=self.config.state_format != "dense")
                return writes

            forgotten = self._timed("transaction", lambda: self.store.transact(event_ids, compute))
            if forgotten:
                self.metrics.forgotten_ids.inc(forgotten)
            return active.record["manifest_sha256"][:16]

        try:
            with contextlib.ExitStack() as held:  # the batch's users' stripes, in one order (no two batches deadlock)
                self._hold_stripes(held, by_user)
                policy_id = self._run_current(run)
        except CorruptStateError as exc:
            self._damaged(exc, "transaction")
            raise
        except OutOfOrderError:
            self.metrics.refused.labels("out_of_order").inc()
            raise
        except InvalidRequestError:
            self.metrics.refused.labels("invalid").inc()
            raise
        except EventConflictError:
            self.metrics.refused.labels("conflict").inc()
            raise
        applied = sum(r["status"] == "applied" for r in results)
        for r in results:
            self.metrics.events.labels(r["kind"], r["status"]).inc()
            if r.get("decision"):
                self.metrics.decisions.inc()
            if r.get("item_known") is False and r["status"] == "applied":
                self.metrics.unknown_items.inc()
            if r.get("value_given") is False:
                self.metrics.default_value.inc()
        out_of_order = sum(r["status"] == "out_of_order" for r in results)  # left out with late="skip"
        return {"applied": applied, "duplicates": len(results) - applied - out_of_order, "out_of_order": out_of_order,
                "policy": policy_id, "results": results}

    def _hold_stripes(self, held: contextlib.ExitStack, users: Iterable[str]) -> None:
        """Take the users' stripes into ``held``, waiting at most the store's wait timeout for them all: behind a stalled
        store, a request queued after the same user's others gets its 503 when its own time is up, not after theirs."""
        timeout = self.store.wait_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        for k in sorted({zlib.crc32(u.encode("utf-8")) % _USER_STRIPES for u in users}):
            lock = self._user_stripes[k]
            if not lock.acquire(timeout=-1 if deadline is None else max(0.0, deadline - time.monotonic())):
                raise StoreUnavailableError(f"{self.store.kind} store: this worker's earlier requests for the same user "
                                            f"held it for the store's wait timeout ({timeout:g} s): the store is not answering")
            held.callback(lock.release)

    # ------------------------------------------------------------------------------ reads
    def rank(self, user_id: str, candidates: list[str], *, hour: int | None = None, ts: int | None = None,
             top_k: int | None = None) -> dict[str, Any]:
        """Scores of the known candidates for the user, best first (ties keep the request's order).

        :raises InvalidRequestError: for a candidate list holding an id twice (the HTTP schema refuses it first).
        """
        if (repeated := repeated_id(candidates)) is not None:
            raise InvalidRequestError(f"candidates: {repeated}")

        def run(active: _Active, items: tuple[int, Catalogue]) -> tuple[_Active, Catalogue, bytes | None]:
            snapshot = self._timed("read", lambda: self.store.read([user_id]))
            self._current(snapshot, active, items[0])
            return active, items[1], snapshot.users[user_id].state

        active, cat, blob = self._run_current(run)
        policy = active.policy
        state = self._state(blob, policy, user_id, "read")
        rows = cat.rows(candidates)
        known = rows >= 0
        r = rows[known]
        ranking: list[dict[str, Any]] = []
        if len(r):
            names = [c for c, k in zip(candidates, known) if k]
            # the ids are read only by a policy that scores with a sequence tracker
            scores = policy.score(state, cat.vectors[r], names, popularity=cat.popularity[r],
                                  candidate_categories=[cat.categories[j] for j in r], hour=_hour(policy, hour, ts))
            order = np.argsort(-scores, kind="stable")[: top_k or None]
            ranking = [{"item_id": names[j], "score": float(scores[j])} for j in order]
        return {"user_id": user_id, "known_user": blob is not None, "ranking": ranking,
                "unknown_items": [c for c, k in zip(candidates, known) if not k], "policy": active.record["manifest_sha256"][:16]}

    def user_summary(self, user_id: str, top: int = 5) -> dict[str, Any]:
        """The state in words: counters, last strengths, running means, categories, the category counts per
        time of day (when the policy keeps them), nearest items."""
        blob, n_applied = self._timed("read", lambda: self.store.user_info(user_id))
        if blob is None:
            raise NotFoundError(f"user {user_id!r} has no state (no event applied yet, or forgotten)")
        policy = self.policy
        state = self._state(blob, policy, user_id, "read")
        cat = self.catalogue
        profiles = {}
        for name, vec in (("long_term", state.long_term), ("short_term", state.short_term)):
            norm = float(np.linalg.norm(vec))
            nearest = []
            if norm > 0 and top > 0 and len(cat):
                cos = cat.vectors @ vec
                best = np.argsort(-cos, kind="stable")[:top]
                nearest = [{"item_id": cat.item_ids[j], "cosine": float(cos[j]), "category": cat.categories[j]} for j in best]
            profiles[name] = {"empty": norm == 0, "nearest_items": nearest}
        has_decision = state.counter("n_decisions") > 0
        time_of_day = None
        if state.slot_category_counts is not None:  # the category counts per time of day, their top categories
            hours = 24 // len(state.slot_category_counts)
            time_of_day = {"slot_weight": float(apply_slot_change(policy._slot_weight, np.array([state.slot_factor]))[0]),
                           "slot_factor": state.slot_factor, "slots": [
                {"hours": f"{k * hours}-{(k + 1) * hours - 1}",
                 "top_categories": [{"category": policy.categories[j], "count": float(row[j])}
                                    for j in np.argsort(-row, kind="stable")[:top] if row[j] > 0 and j < len(policy.categories)]}
                for k, row in enumerate(state.slot_category_counts)]}
        exposure = None
        if state.exposure is not None:  # what the user was shown, per category (the category term divides by it)
            shown = state.exposure[0]
            exposure = {"prior": policy._exposure_prior, "shown_since_last_decision": float(state.exposure[1].sum()),
                        "top_shown": [{"category": policy.categories[j], "count": float(shown[j])}
                                      for j in np.argsort(-shown, kind="stable")[:top] if shown[j] > 0 and j < len(policy.categories)]}
        return {
            "user_id": user_id,
            "events": state.counter("n_events"),
            "decisions": state.counter("n_decisions"),
            "last_event_ts": state.counter("last_event_ts") if state.counter("n_events") else None,
            "last_decision_ts": state.counter("last_decision_ts") if has_decision else None,
            "applied_event_ids": n_applied,
            "last_strengths": dict(zip(ACTION_NAMES, map(float, state.strengths))) if has_decision else None,
            "running_means": dict(zip(RUNNING_MEAN_NAMES, map(float, state.running_means))),
            "categories": [{"category": c, "decisions": int(n)} for c, n in zip(state.categories, state.category_decisions)],
            "time_of_day": time_of_day,
            "exposure": exposure,
            "profiles": profiles,
            "state_bytes": len(blob),
            "policy": self.policy_id,
        }

    def forget(self, user_id: str) -> None:
        if not self._timed("delete", lambda: self.store.delete_user(user_id)):
            raise NotFoundError(f"user {user_id!r} has no state to forget")

    def health(self) -> dict[str, Any]:
        self._timed("ping", self.store.ping)
        return {"status": "ok", "store": self.store.describe(), "policy": self._active.record,
                "encoder": self.policy.encoder, "catalogue": self.catalogue.describe(), "notes": self.notes,
                "uptime_s": round(time.time() - self.started, 1)}

    # ------------------------------------------------------------------------------ helpers
    def _state(self, blob: bytes | None, policy: ExportedPolicy, user_id: str, op: str) -> UserState:
        try:
            return _decode_state(blob, policy, user_id)
        except CorruptStateError as exc:
            self._damaged(exc, op)
            raise

    def _damaged(self, exc: CorruptStateError, op: str) -> None:
        """A damaged stored state: said in the server's log and counted as a store error (the client gets 500)."""
        self.metrics.store_errors.labels(self.store.kind, op).inc()
        log.error("%s (store %s, %s)", exc, self.store.describe(), op)

    def _timed(self, op: str, run: Any) -> Any:
        start = time.perf_counter()
        write = op not in _READ_OPS
        try:
            result = run()
        except StoreError as exc:
            self.metrics.store_errors.labels(self.store.kind, op).inc()
            if isinstance(exc, StoreUnavailableError):
                self._outage.failed(exc, write=write)
            raise
        else:
            self._outage.answered(write=write)
            return result
        finally:
            self.metrics.store_seconds.labels(self.store.kind, op).observe(time.perf_counter() - start)


# ------------------------------------------------------------------------------------ helpers
def _install_fn(policy: ExportedPolicy) -> Any:
    contract = state_contract(policy)

    def fn(meta: dict[str, str | None]) -> dict[str, str]:
        if meta.get("contract"):
            stored = json.loads(meta["contract"])  # type: ignore[arg-type]
            diffs = contract_differences(stored, contract)
            if diffs:
                raise PolicyMismatchError(
                    f"export {policy.directory} cannot serve this store's states: " + "; ".join(diffs)
                    + " (use a new store, or an export with the same encoder, features and kept state)",
                    detail={"stored": stored, "export": contract})
        record = json.loads(meta["policy"]) if meta.get("policy") else None
        if record and record["manifest_sha256"] == policy.manifest["manifest_sha256"] and record["path"] == str(Path(policy.directory).resolve()):
            return {} if meta.get("contract") else {"contract": json.dumps(contract)}
        generation = (record or {}).get("generation", 0) + 1
        return {"contract": json.dumps(contract), "policy": json.dumps(_policy_record(policy, generation))}

    return fn


def install_policy(store: Store, policy: ExportedPolicy) -> dict[str, str | None]:
    """Make ``policy`` the store's active one (a no-op if it already is); refuse
    (:class:`PolicyMismatchError`) one whose state contract differs from the stored states'."""
    return store.update_meta(_install_fn(policy))


def _load_recorded(record: dict[str, Any], threads: int) -> ExportedPolicy:
    try:
        policy = load_policy(record["path"], threads=threads)
    except InterestGymError as exc:
        raise PolicyUnavailableError(f"the store's active policy {record['path']} cannot be loaded by this worker: {exc}") from None
    if policy.manifest["manifest_sha256"] != record["manifest_sha256"]:
        raise PolicyUnavailableError(f"the store's active policy {record['path']} has manifest sha256 {policy.manifest['manifest_sha256'][:16]}...; "
                         f"the store records {record['manifest_sha256'][:16]}... (the export was replaced in place)")
    return policy


def _export_embedding(source: Any, policy: ExportedPolicy) -> str | None:
    """The embedding of a dataset folder that the export's encoder wrote, where the folder has several (after a
    fine-tune, say); None otherwise (the folder's only one, or its own refusal naming them)."""
    from pathlib import Path

    folder = Path(str(source))
    if not (folder / "manifest.json").is_file():
        return None  # a catalogue folder: one set of vectors
    from interestgym.data.dataset import Dataset

    dataset = Dataset.open(folder)
    names = dataset.embedding_names()
    if len(names) < 2:
        return None
    found = dataset.embedding_of(policy.encoder.get("fingerprint"), policy.dim)
    if found is None:  # "choose one with --embeddings" would point at vectors the export cannot rank with
        from interestgym.serve.catalogue import CatalogueError

        raise CatalogueError(f"--items {folder}: none of its embeddings ({', '.join(names)}) was written by the export's encoder "
                             f"({policy.encoder.get('name')}, d={policy.dim}); expected one: `interestgym encode {folder} --encoder "
                             f"{policy.encoder.get('name')}` with the export's settings (--embeddings NAME says why one of these "
                             "does not fit)")
    return found


def _decode_state(blob: bytes | None, policy: ExportedPolicy, user_id: str) -> UserState:
    if blob is None:
        return policy.new_state()
    try:
        return UserState.from_bytes(blob, dim=policy.dim)
    except InterestGymError as exc:
        raise CorruptStateError(f"user {user_id!r}: the stored state cannot be read ({exc}); expected a state this "
                                "service wrote (restore the user from a backup of the store, or forget it with "
                                "DELETE /v1/users/ID to start it afresh)", detail={"user_id": user_id}) from None


def _utc(ts: int) -> str:
    """Unix seconds as an ISO 8601 UTC time (2024-01-09T18:45:30Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _decode_item(blob: bytes) -> tuple[np.ndarray, str]:
    fields, meta = decode_bytes(blob)
    return np.asarray(fields["vector"], np.float32), str(meta.get("category", ""))


def _hour(policy: ExportedPolicy, hour: int | None, ts: int | None) -> int:
    """The hour of a ranking: given, else from ts (or now) on the export's clock (the runtime's)."""
    if hour is not None:
        return int(hour)
    return Event(ts=int(time.time()) if ts is None else int(ts), action="").hour_weekday(policy.tz_offset_hours)[0]


def event_digest(event: BehaviourEvent | Outcome) -> str:
    """A digest of what an event says, its id aside: what it applies, not how the request spelled it, so that a retry
    matches whatever its client filled in by default. An event: user, time, action, item and value (1.0 when absent,
    as it is applied; a rating's absent value is refused before this). An outcome: user, time, the candidates in order
    and their labels (``clicked`` in any order is the same labels). Hour and weekday are left out: given or derived
    from the time, they are context of the same event."""
    if isinstance(event, Outcome):
        what: dict[str, Any] = {"kind": "outcome", "user_id": event.user_id, "ts": event.ts, "candidates": list(event.candidates),
                                "labels": event.label_list()}
    else:
        what = {"kind": "event", "user_id": event.user_id, "ts": int(event.ts), "action": event.action, "item_id": event.item_id,
                "value": float(DEFAULT_VALUE if event.value is None else event.value)}
    body = json.dumps(what, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8")).hexdigest()[:32]


def _forget_cutoff(state: UserState, retention: int | None) -> int | None:
    """The time before which a user's applied ids are forgotten under ``retention`` (``--event-id-retention``): the
    user's last event minus it; None when ids are kept forever or the user has no event yet."""
    if retention is None or state.counter("n_events") == 0:
        return None
    return state.counter("last_event_ts") - retention


def _apply_batch(policy: ExportedPolicy, cat: Catalogue, row_of: dict[str, int], events: Sequence[BehaviourEvent | Outcome],
                 by_user: dict[str, list[int]], snapshot: Snapshot, retention: int | None = None, now: int = 0,
                 skip_late: bool = False, sparse: bool = True) -> tuple[dict[str, UserWrite], list[dict[str, Any]]]:
    """The transaction's computation: pure in its inputs (it may run more than once).

    :param retention: ``ServeConfig.event_id_retention_s``: each write forgets the user's ids older than the user's last
        event minus this, and an outcome sent with a ``ts`` that old is refused (its id may be forgotten already).
    :param now: the time given to an outcome sent without ``ts`` (its id's time; the user's last event when that is later).
    :param skip_late: an event (or outcome) that would refuse the batch as out of order is reported ``out_of_order`` and
        left out instead (not applied, its id not recorded); the request's ``"late": "skip"``.
    :param sparse: states written with mostly-zero fields sparse (``ServeConfig.state_format``).
    """
    for i, e in enumerate(events):
        if isinstance(e, BehaviourEvent) and e.action not in policy.action_weights:
            raise InvalidRequestError(f"events[{i}].action is {e.action!r}; expected one of {', '.join(sorted(policy.action_weights))}",
                                      detail={"index": i, "event_id": e.event_id})
        if isinstance(e, BehaviourEvent) and e.value is None and e.action == RATING_ACTION:
            # a rating without its value would be read as a rating of 1.0: below any positive_rating, never a decision
            raise InvalidRequestError(f"events[{i}].value is missing: a {RATING_ACTION!r} event needs its rating (the export counts "
                                      f"ratings >= {policy.positive_rating:g} as positive)", detail={"index": i, "event_id": e.event_id})
    states = {u: _decode_state(snapshot.users[u].state, policy, u) for u in by_user}
    seen = {u: dict(snapshot.users[u].applied) for u in by_user}  # event id -> digest of its content
    queues = {u: deque(idx) for u, idx in by_user.items()}
    new_ids: dict[str, dict[str, int | None]] = {u: {} for u in by_user}  # per user: the ids applied now -> their times
    digests = [event_digest(e) for e in events]
    results: list[dict[str, Any] | None] = [None] * len(events)
    skipped: dict[str, dict[str, str]] = {u: {} for u in by_user}  # per user: the ids left out as late -> their digests

    def late(i: int, u: str, message: str, **detail: Any) -> None:
        """Refuse the batch as out of order (``message``; the detail names the event, its user and time, and ``detail``),
        or with ``skip_late`` leave event ``i`` out and say so."""
        if not skip_late:
            raise OutOfOrderError(message, detail={"index": i, "event_id": events[i].event_id, "user_id": u, "ts": events[i].ts,
                                                   **detail})
        results[i] = {"event_id": events[i].event_id, "user_id": u, "kind": events[i].kind, "status": "out_of_order",
                      "last_event_ts": states[u].counter("last_event_ts")}
        # not applied: the id is not one the store keeps (a copy later in the batch is looked at again)
        skipped[u][events[i].event_id] = seen[u].pop(events[i].event_id)
        del new_ids[u][events[i].event_id]

    in_batch: dict[str, str] = {}  # user -> the id of the user's last event this batch applied (to its copy of the state)
    while any(queues.values()):
        round_events: list[tuple[str, int]] = []
        round_outcomes: list[tuple[str, int]] = []
        for u, q in queues.items():
            while q and events[q[0]].event_id in seen[u]:
                i = q.popleft()
                before = seen[u][events[i].event_id]
                if before and before != digests[i]:
                    raise EventConflictError(
                        f"events[{i}]: event id {events[i].event_id!r} of user {u!r} was applied before (or earlier in this "
                        "batch) with other content; expected a retry to resend the same event, or a new event to have a new "
                        "id (nothing in this batch was applied)", detail={"index": i, "event_id": events[i].event_id, "user_id": u})
                results[i] = {"event_id": events[i].event_id, "user_id": u, "kind": events[i].kind, "status": "duplicate"}
            if q:
                i = q.popleft()
                if skipped[u].get(events[i].event_id, digests[i]) != digests[i]:
                    # as if the first copy had been in order: one id, two contents (a retry of this batch would find the
                    # second applied and refuse the first as a conflict)
                    raise EventConflictError(
                        f"events[{i}]: event id {events[i].event_id!r} of user {u!r} came earlier in this batch with other content "
                        "(left out as out of order); expected a retry to resend the same event, or a new event to have a new id "
                        "(nothing in this batch was applied)", detail={"index": i, "event_id": events[i].event_id, "user_id": u})
                seen[u][events[i].event_id] = digests[i]
                new_ids[u][events[i].event_id] = None if events[i].ts is None else int(events[i].ts)  # the retention's start
                (round_events if isinstance(events[i], BehaviourEvent) else round_outcomes).append((u, i))
        if round_events:
            runtime_events = []
            kept: list[tuple[str, int]] = []
            for u, i in round_events:
                e = events[i]
                st = states[u]
                if st.counter("n_events") > 0 and e.ts < st.counter("last_event_ts"):
                    gone = snapshot.users[u].forgotten_before
                    cutoff = _forget_cutoff(st, retention)  # (the user has events: this one is before its last)
                    forgotten = (cutoff is not None and e.ts < cutoff) or (gone is not None and e.ts < gone)
                    maybe = ("; events that old have their ids forgotten (--event-id-retention), so if this is a retry of one, "
                             "it was applied then" if forgotten else "")
                    # the user's last event may be one of this batch's, not yet applied to the store
                    last = (f"event {in_batch[u]!r} earlier in this batch (ts {st.counter('last_event_ts')})" if u in in_batch else
                            f"the user's last applied event at ts {st.counter('last_event_ts')}")
                    late(i, u, f"event {e.event_id!r} of user {u!r} has ts {e.ts}, before {last}; a user's events must arrive in "
                               f"time order{maybe} (nothing in this batch was applied; \"late\": \"skip\" applies the rest)",
                         last_event_ts=st.counter("last_event_ts"))
                    continue
                kept.append((u, i))
                row = row_of.get(e.item_id, -1) if e.item_id is not None else -1
                runtime_events.append(Event(ts=e.ts, action=e.action, item_vector=cat.vectors[row] if row >= 0 else None,
                                            value=e.value,
                                            category=cat.categories[row] if row >= 0 else "", hour=e.hour, weekday=e.weekday,
                                            item_id=e.item_id))
            updated = policy.update_batch([states[u] for u, _ in kept], runtime_events) if kept else []
            for (u, i), new in zip(kept, updated):
                decided = new.counter("n_decisions") > states[u].counter("n_decisions")
                states[u] = new
                e = events[i]
                in_batch[u] = e.event_id
                results[i] = {"event_id": e.event_id, "user_id": u, "kind": "event", "status": "applied", "decision": decided,
                              "item_known": e.item_id is not None and row_of.get(e.item_id, -1) >= 0,
                              "value_given": e.value is not None}
        for u, i in round_outcomes:
            o = events[i]
            assert isinstance(o, Outcome)
            st = states[u]
            gone = snapshot.users[u].forgotten_before  # stored: another worker (or an earlier run) may keep ids less long
            cutoff = _forget_cutoff(st, retention)
            if o.ts is not None and cutoff is not None and o.ts < cutoff:
                late(i, u, f"outcome {o.event_id!r} of user {u!r} has ts {o.ts}, more than {retention} s (--event-id-retention) "
                           f"before the user's last applied event at ts {st.counter('last_event_ts')}: ids that old are forgotten, so "
                           "a retry could not be told from a new outcome (nothing in this batch was applied)",
                     last_event_ts=st.counter("last_event_ts"))
                continue
            if o.ts is not None and gone is not None and o.ts < gone:
                late(i, u, f"outcome {o.event_id!r} of user {u!r} has ts {o.ts}, before {gone}: the user's applied ids older than "
                           "that were forgotten (--event-id-retention of the worker that wrote them), so a retry could not be told "
                           "from a new outcome (nothing in this batch was applied)", forgotten_before=gone)
                continue
            labels = np.asarray(o.label_list(), np.int8)
            r = np.array([row_of.get(c, -1) for c in o.candidates], dtype=np.int64)
            known = r >= 0
            r, labels = r[known], labels[known]
            metrics = None
            if len(r):
                states[u], metrics = policy.record_outcome(
                    states[u], cat.vectors[r], labels, [c for c, k in zip(o.candidates, known) if k], popularity=cat.popularity[r],
                    candidate_categories=[cat.categories[j] for j in r], hour=_hour(policy, o.hour, o.ts))
            results[i] = {"event_id": o.event_id, "user_id": u, "kind": "outcome", "status": "applied", "scored": metrics is not None,
                          "unknown_candidates": int((~known).sum()), "metrics": metrics}
    writes = {}
    for u, ids in new_ids.items():
        if ids:
            st = states[u]
            forget = _forget_cutoff(st, retention)
            # an outcome without ts: the server's clock, or the user's last event when later (a user whose clock is ahead,
            # up to --future-tolerance: the server's clock would be forgotten at once, and a retry applied again)
            no_ts = max(now, st.counter("last_event_ts"))
            times = {e: no_ts if t is None else t for e, t in ids.items()}
            writes[u] = UserWrite(st.to_bytes(sparse=sparse), {e: seen[u][e] for e in ids}, times, forget)
    return writes, [r for r in results if r is not None]
