"""Prometheus metrics of the service (``GET /metrics``, text exposition format).

==========================================  =========  ================================================
name                                        type       labels / meaning
==========================================  =========  ================================================
``interestgym_http_requests_total``         counter    method, route, status
``interestgym_http_request_seconds``        histogram  method, route: wall time of the request
``interestgym_events_total``                counter    kind (event / outcome), result (applied /
                                                       duplicate / out_of_order: left out, late="skip")
``interestgym_decisions_total``             counter    events that were decisions (profiles updated)
``interestgym_events_unknown_item_total``   counter    events whose item the catalogue does not hold
                                                       (applied as item-less events: not decisions)
``interestgym_events_default_value_total``  counter    applied events sent without ``value``, read as 1.0
                                                       (what the policy's features and a value-weighted
                                                       rule then see: a client that never sends it shows
                                                       here)
``interestgym_events_refused_total``        counter    reason (out_of_order, invalid: by the schema or the runtime, conflict): batches refused
``interestgym_event_ids_forgotten_total``   counter    applied event ids forgotten under ``--event-id-retention``
``interestgym_store_seconds``               histogram  store, op: time in the store (transaction, read)
``interestgym_store_errors_total``          counter    store, op: the store failed or did not answer
``interestgym_store_conflicts_total``       counter    store: optimistic-concurrency retries (Redis)
``interestgym_policy_generation``           gauge      the active policy's generation in the store
``interestgym_policy_info``                 gauge      manifest_sha256 (first 16), path, interestgym_version: 1 for
                                                       the export a live worker serves, 0 after it left it
``interestgym_policy_swaps_total``          counter    result (swapped / refused / unchanged: the export already active)
``interestgym_catalogue_items``             gauge      items the worker can score
==========================================  =========  ================================================

Each app gets its own registry (several apps in one test process do not collide). With several
uvicorn workers, ``interestgym serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums the
workers' files (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class ServeMetrics:
    """The service's metrics in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("interestgym_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("interestgym_http_request_seconds", "HTTP request wall time", ["method", "route"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.events = Counter("interestgym_events", "Events and outcomes received", ["kind", "result"], registry=r)
        self.decisions = Counter("interestgym_decisions", "Events that were decisions (profiles updated)", registry=r)
        self.unknown_items = Counter("interestgym_events_unknown_item", "Events whose item the catalogue does not hold", registry=r)
        self.default_value = Counter("interestgym_events_default_value", "Applied events sent without value (read as 1.0)",
                                     registry=r)
        self.refused = Counter("interestgym_events_refused", "Event batches refused", ["reason"], registry=r)
        self.forgotten_ids = Counter("interestgym_event_ids_forgotten", "Applied event ids forgotten (--event-id-retention)",
                                     registry=r)
        self.store_seconds = Histogram("interestgym_store_seconds", "Time in the store", ["store", "op"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("interestgym_store_errors", "Store failures", ["store", "op"], registry=r)
        self.store_conflicts = Counter("interestgym_store_conflicts", "Optimistic-concurrency retries", ["store"], registry=r)
        self.policy_generation = Gauge("interestgym_policy_generation", "Generation of the active policy", registry=r,
                                       multiprocess_mode="max")
        self.policy_info = Gauge("interestgym_policy_info", "The export a worker serves (1; 0 once it left it)",
                                 ["manifest_sha256", "path", "interestgym_version"], registry=r, multiprocess_mode="livemax")
        self._policy_labels: tuple[str, str] | None = None
        self.policy_swaps = Counter("interestgym_policy_swaps", "Policy swaps", ["result"], registry=r)
        self.catalogue_items = Gauge("interestgym_catalogue_items", "Items the worker can score", registry=r,
                                     multiprocess_mode="max")

    def serving(self, record: dict) -> None:
        """The active policy's gauges: its generation, and ``interestgym_policy_info`` moved to its labels."""
        from interestgym import __version__

        self.policy_generation.set(record.get("generation", 0))
        labels = (str(record.get("manifest_sha256", ""))[:16], str(record.get("path", "")))
        if labels != self._policy_labels:
            if self._policy_labels is not None:
                self.policy_info.labels(*self._policy_labels, __version__).set(0)
            self.policy_info.labels(*labels, __version__).set(1)
            self._policy_labels = labels

    def exposition(self) -> bytes:
        """The text format: this registry, or every worker's when in multiprocess mode."""
        if folder := os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            _forget_dead_workers(folder)
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _forget_dead_workers(folder: str) -> None:
    """Drop the live-only gauges (``interestgym_policy_info``) of worker processes that are gone (a crash, uvicorn's
    respawn): prometheus-client keeps a dead process's file until ``mark_process_dead`` is called, and its export would
    stay at 1 beside the one the live workers serve."""
    for path in Path(folder).glob("gauge_live*_*.db"):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:  # a process of another user: alive
            continue
