"""Serve an exported update policy over HTTP, with user states in a store.

``interestgym serve EXPORT --store URL [--items DATASET_OR_CATALOGUE]`` (see its ``--help``):

* :mod:`~interestgym.serve.app` - the FastAPI app: endpoints, JSON errors, request metrics;
* :mod:`~interestgym.serve.service` - policy + catalogue + store: batches, idempotency, time order,
  policy swaps (every per-user computation is the runtime's);
* :mod:`~interestgym.serve.stores` - ``memory://``, ``sqlite:///...``, ``redis://...`` behind one
  interface, one atomic write per batch (states + applied event ids);
* :mod:`~interestgym.serve.catalogue` - the service's own item table (vectors, popularity,
  categories and how each was computed), checked against the export's expectations;
* :mod:`~interestgym.serve.metrics` - the Prometheus metrics; :mod:`~interestgym.serve.schemas` - the
  request and response bodies.

Needs the ``serve`` extra (FastAPI, uvicorn, redis, prometheus-client): ``pip install 'interestgym[serve]'``.
"""
