"""``interestgym serve EXPORT``: the HTTP service (FastAPI + uvicorn) over a store.

FastAPI, uvicorn and the store clients are imported inside the command, so ``interestgym --help``
stays instant; they come with ``pip install 'interestgym[serve]'``.
"""

from __future__ import annotations

import copy
import inspect
import ipaddress
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import click

from interestgym.core.clock import TS_MAX
from interestgym.errors import InterestGymError

#: The exit status of a start that could not listen (uvicorn's own for a failed start).
STARTUP_FAILURE = 3


#: Seconds per unit of a --event-id-retention duration.
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


class Duration(click.ParamType):
    """Seconds, written as a whole number with an optional unit (``3600``, ``90m``, ``12h``, ``30d``), or ``forever``
    (None)."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int):
            return value  # type: ignore[return-value]
        text = str(value).strip().lower()
        if text == "forever":
            return None
        number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
        if not (number.isascii() and number.isdigit()):  # str.isdigit alone takes '²', which int() refuses
            self.fail(f"{value!r} is not a duration; expected whole seconds or a number with s, m, h or d (e.g. 30d), "
                      "or 'forever'", param, ctx)
        seconds = int(number) * _UNITS[unit]
        if seconds >= TS_MAX:  # a store's times are 64-bit integers (SQLite refuses a larger one at every write)
            self.fail(f"{value!r} is {seconds} s; expected less than {TS_MAX} s (every time an event may have), or 'forever'",
                      param, ctx)
        return seconds


def open_admin_warning(host: str, admin_token: str | None) -> str | None:
    """What to say when the admin API is open to other machines: ``host`` is not a loopback address and no token is
    set (``POST /v1/admin/policy`` swaps to any export folder on this machine's disk). None otherwise."""
    if admin_token:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        loopback = False
    if loopback:
        return None
    return (f"--host {host} without --admin-token: /v1/admin/policy and PUT /v1/items are open to whoever reaches this "
            "address (they swap the served policy to any export folder on this machine's disk and replace item vectors); "
            "expected --admin-token TOKEN (or INTERESTGYM_ADMIN_TOKEN) on a host other machines can reach. With or without "
            "it, /v1/events, /v1/rank and /v1/users (DELETE forgets a user) are for your application's network only")


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging with a time on every line (access lines included), and the service's own logger
    (``interestgym``: store outages, policy swaps, workers that cannot start) through the same handler at ``level``."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = "%(asctime)s " + formatter["fmt"]
        formatter["datefmt"] = "%Y-%m-%dT%H:%M:%S%z"
    config["loggers"]["interestgym"] = {"handlers": ["default"], "level": level.upper()}
    return config


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening, or a one-line :class:`click.ClickException`.

    ``serve`` takes its port before it opens the store: a start that cannot listen (the port in use)
    must not have made its export the store's active policy, which every running server follows.
    """
    host = host.strip("[]")  # an IPv6 address as a URL writes it: [::1]
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP; without
    # it every request after the first on a kept-alive connection waits out a delayed ACK (~40 ms; uvicorn #3149)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait out TIME_WAIT
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # and accepted connections inherit it (Linux)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        error = click.ClickException(f"cannot listen on {host}:{port}: {exc}; expected a free port on an address of this "
                                     "host (stop what holds it, or pass another --port); nothing was started and the store "
                                     "was not touched")
        error.exit_code = STARTUP_FAILURE
        raise error from None
    sock.set_inheritable(True)  # uvicorn's worker processes accept on it
    return sock


@click.command("serve")
@click.argument("export_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--store", "store_url", default="sqlite:///interestgym-serve.db", show_default=True,
              help="sqlite:///relative.db | sqlite:////absolute.db | redis://HOST:PORT/DB | memory:// (one worker only)")
@click.option("--items", type=click.Path(exists=True, file_okay=False), default=None,
              help="Item table: a dataset folder (prepare + encode) or a catalogue folder. Default: the export's training dataset.")
@click.option("--embeddings", default=None, help="Which embeddings of a dataset folder (default: the only one; with several, the one the export's encoder wrote).")
@click.option("--save-catalogue", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write the item table (vectors, popularity, categories, how they were computed) as a catalogue folder.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="uvicorn worker processes sharing the store (sqlite: one file on a local disk; redis).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="onnxruntime threads per worker.")
@click.option("--admin-token", envvar="INTERESTGYM_ADMIN_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /v1/admin/* and PUT /v1/items (env INTERESTGYM_ADMIN_TOKEN).")
@click.option("--text-encoder", default=None,
              help="Encoder for items added as text (minilm, hashing or a model folder); default: rebuilt from the catalogue's encoder when possible.")
@click.option("--future-tolerance", type=click.IntRange(min=0), default=86_400, show_default=True,
              help="Seconds past the server's clock an event's ts may be; a later one is refused (422), since it would put "
                   "the user's real events out of order.")
@click.option("--event-id-retention", type=Duration(), default="30d", show_default=True,
              help="How long an applied event id is remembered for retries, on the user's own clock (before the user's "
                   "last event): 3600, 12h, 30d ... or 'forever'. A retry of an older event is refused as out of order, "
                   "never applied twice.")
@click.option("--state-format", type=click.Choice(["sparse", "dense"]), default="sparse", show_default=True,
              help="How user states are written: sparse (mostly-zero fields as positions and values: smaller and faster; "
                   "earlier releases cannot read them) or dense (the layout earlier releases read: during a rolling upgrade "
                   "from one, or to keep a rollback possible). Both are read.")
@click.option("--max-body-mb", type=click.IntRange(min=1), default=16, show_default=True,
              help="The largest request body, in MiB; a larger one is refused (413 body_too_large) before it is parsed.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info", show_default=True)
def serve(export_dir: Path, store_url: str, items: str | None, embeddings: str | None, save_catalogue: Path | None, host: str,
          port: int, workers: int, threads: int, admin_token: str | None, text_encoder: str | None, future_tolerance: int,
          event_id_retention: int | None, state_format: str, max_body_mb: int, log_level: str) -> None:
    """Serve EXPORT_DIR's policy over HTTP, with user states in a store.

    \b
    POST   /v1/events        events and outcomes; idempotent by event id; a user's events in time order
    POST   /v1/rank          a user + candidate item ids -> scores, best first
    GET    /v1/users/ID      the user's state in words;  DELETE forgets the user
    PUT    /v1/items         add items (vectors, or text with the catalogue's encoder); admin token
    POST   /v1/admin/policy  {"path": DIR}: swap to another export (same encoder and features)
    GET    /healthz  /metrics (Prometheus)  /docs (OpenAPI)

    \b
    Events: a batch is applied whole or not at all, and acknowledged once it is durable in the store
    (a killed server loses no acknowledged event); an event id applied before is answered
    'duplicate' and changes nothing, so clients may retry. An event older than the user's last one
    refuses its batch with 409 out_of_order, naming both times; one later than the server's clock
    plus --future-tolerance is refused with 422 (it would put every later event out of order).
    Applied ids are remembered for --event-id-retention before the user's last event (then forgotten,
    so the store does not grow with every event ever applied); a retry older than that is out of order.
    Items, popularity and categories come from --items, never from the export's tables; an export
    whose encoder, popularity definition or category list the items do not match is refused.
    Starting makes EXPORT_DIR the store's active policy, once the port is taken (a start that cannot
    listen exits with status 3 and leaves the store as it was); a store whose states were written
    with another encoder or feature table is refused.
    Example:
      interestgym serve runs/quickstart/export --store sqlite:///runs/serve.db --port 8000
    """
    try:
        import uvicorn
        from uvicorn.supervisors import Multiprocess

        from interestgym.serve.app import CONFIG_ENV, SUPERVISOR_ENV, create_app
        from interestgym.serve.service import InterestService, ServeConfig
    except ImportError as exc:
        raise click.ClickException(f"serving needs {exc.name}: pip install 'interestgym[serve]'") from None

    if workers > 1 and store_url.startswith("memory:"):
        # each worker process would hold its own memory store: a retry answered by another worker would apply twice
        raise InterestGymError(f"--store {store_url} with --workers {workers}: a memory store lives in one process, so "
                               "workers would not share states or applied event ids; expected --workers 1, or a shared store "
                               "(sqlite:///PATH.db or redis://HOST:PORT/DB)")
    config = ServeConfig(export=str(export_dir.resolve()), store=store_url, items=None if items is None else str(Path(items).resolve()),
                         embeddings=embeddings, threads=threads, admin_token=admin_token, text_encoder=text_encoder,
                         future_tolerance_s=future_tolerance, max_body_bytes=max_body_mb * 2**20,
                         event_id_retention_s=event_id_retention, state_format=state_format)
    sock = listen(host, port)  # first: a start that cannot listen must leave the store's active policy alone
    try:
        service = InterestService.open(config, install=True, log_notes=False)  # the notes are start-up lines below
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    record = service.policy_record
    cat = service.catalogue
    click.echo(f"store    {service.store.describe()}")
    click.echo(f"policy   {record['path']} (manifest {record['manifest_sha256'][:16]}..., generation {record['generation']})")
    click.echo(f"items    {len(cat):,} from {cat.source} (encoder {cat.encoder.get('name')!r}, dim {cat.dim}; "
               f"{cat.n_added} added through the API)")
    click.echo("ids      applied event ids kept " + ("forever" if event_id_retention is None else
                                                        f"{event_id_retention:,} s back from each user's last event")
               + " (--event-id-retention)")
    click.echo("states   written " + ("sparse (codec 2; earlier releases cannot read them)" if state_format == "sparse" else
                                      "dense (codec 1, which earlier releases read)") + " (--state-format)")
    for note in service.notes:
        click.echo(f"note     {note}")
    if save_catalogue is not None:
        service.catalogue.save(save_catalogue)
        click.echo(f"catalogue written to {save_catalogue}")
    click.echo(f"serving  http://{host}:{port}  (docs: /docs, metrics: /metrics)")
    if (warning := open_admin_warning(host, admin_token)) is not None:
        click.echo(f"warning  {warning}", err=True)
    # uvicorn serves on the socket taken above (what uvicorn.run does after binding its own)
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port, log_level=log_level,
                                               log_config=log_config(log_level)))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)
        return
    service.close()
    os.environ[CONFIG_ENV] = config.to_json()
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # the workers stop when this process is gone (app._stop_with_supervisor)
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="interestgym-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        config = uvicorn.Config("interestgym.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                                log_level=log_level, log_config=log_config(log_level))
        # uvicorn 0.29-0.36 (pyproject allows >= 0.29) take the worker's target, Server(config).run as uvicorn.run passed it;
        # later ones (0.54 here) build it themselves and have no such parameter
        target = {"target": uvicorn.Server(config).run} if "target" in inspect.signature(Multiprocess).parameters else {}
        Multiprocess(config, sockets=[sock], **target).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
