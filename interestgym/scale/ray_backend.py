"""The Ray backend (optional: ``pip install -c .ci/constraints.txt '.[ray]'`` in the checkout): evaluation and tuning sharded by
user, encoding sharded by text, with results identical to the single process.

:func:`connect` joins a cluster (``auto``: the one ``ray start`` runs on this machine; ``ADDRESS``:
``ray://host:10001`` or ``host:6379``) or starts one on this machine (``local`` or ``local:N`` CPUs).
The replay data are put in Ray's object store once per call and read by every worker without a copy
(numpy arrays); each task replays one contiguous shard of users (:mod:`interestgym.scale.shards`),
and the driver merges the shards in replay order before anything is averaged, so the numbers are
the single process's to the bit.

Drop-in functions, same signatures as the single-process ones plus ``backend``:

* :func:`evaluate_policy` for :func:`interestgym.envs.vector.evaluate_policy`;
* :func:`validation_scorer` for :func:`interestgym.agents.tuning.validation_scorer` (tuning: every
  grid point of every shard in one task per shard);
* :func:`sharded_encoder` wraps an encoder so that ``encode_dataset`` encodes on the cluster.

:func:`scaled` bundles them for a command that gained ``--ray`` (:func:`ray_option`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from interestgym.errors import InterestGymError
from interestgym.heap import worker_environment
from interestgym.scale.shards import (
    encode_chunk,
    merge_evaluations,
    text_shards,
    user_shards,
)

INSTALL_HINT = "Ray is not installed: pip install -c .ci/constraints.txt '.[ray]' in the checkout (the constraints pin torch and Ray)"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InterestGymError(f"--ray: {INSTALL_HINT}") from None
    return ray


@dataclass
class RayBackend:
    """A connection to a Ray cluster and how many shards a job is cut into."""

    address: str
    shards: int
    #: torch threads in each task; None (the default): the driver's at the time of each :meth:`run` (a command may pin
    #: its own after connecting, as ``evaluate`` pins one): thread counts can change float results.
    threads: int | None = None

    @property
    def ray(self) -> Any:
        return _ray()

    def run(self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
        """``fn(*args)`` for every ``args`` of ``calls`` as Ray tasks; results in the order of ``calls``."""
        ray = self.ray
        task = ray.remote(num_cpus=1)(_with_threads)
        threads = self.threads if self.threads is not None else _driver_threads()
        return ray.get([task.remote(threads, fn, *args) for args in calls])

    def put(self, value: Any) -> Any:
        """``value`` in the object store; the same object put again in a row goes once, through any backend of this
        process (the replay data of the many policies a chunk evaluates, and of every trial a search replays on
        validation users: each trial connects anew). Only the last one is kept: a command that goes chunk by chunk
        holds one chunk's data in the store, not every chunk's (``evaluate --chunk-users``)."""
        global _LAST_PUT
        # this process's driver in this Ray session: a reference put before a ray.shutdown() is owned by a driver that
        # is gone, and Ray refuses it in the next session
        owner = self.ray.get_runtime_context().get_worker_id()
        if _LAST_PUT is None or _LAST_PUT[0] is not value or _LAST_PUT[1] != owner:
            _LAST_PUT = None  # the old value and reference go before the new one is put
            _LAST_PUT = (value, owner, self.ray.put(value))  # the value kept, to know it again by identity
        return _LAST_PUT[2]


#: The last object a backend of this process put in the object store, the driver that put it, and its reference (one
#: process joins one Ray at a time).
_LAST_PUT: tuple[Any, str, Any] | None = None


def _driver_threads() -> int:
    try:
        import torch
    except ImportError:
        return 1
    return int(torch.get_num_threads())


def _with_threads(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    return fn(*args)


_ADDRESS_FORMS = "auto, local, local:N with N >= 1 CPUs, or a cluster address (HOST:PORT or ray://HOST:PORT)"


def check_address(address: str) -> str:
    """``address`` if it has one of the forms :func:`connect` takes, checked before Ray starts (Ray's own
    message for a malformed one is a traceback); raises :class:`InterestGymError` naming the forms otherwise."""
    head, colon, tail = address.partition(":")
    if address == "auto" or (head == "local" and (not colon or (tail.isdigit() and int(tail) >= 1))):
        return address
    if head == "local":
        raise InterestGymError(f"--ray {address!r}: expected {_ADDRESS_FORMS}")
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not (colon and host and port.isdigit() and 0 < int(port) < 65536 and not any(c.isspace() or c in "/?#" for c in host)):
        raise InterestGymError(f"--ray {address!r}: expected {_ADDRESS_FORMS}")
    return address


#: Seconds a cluster address's port is given to answer before Ray is asked to join it (Ray itself retries a silent
#: address for minutes, printing only its own timeouts).
PROBE_SECONDS = 5.0


#: What a client sends first on an HTTP/2 connection (RFC 9113, 3.4): the preface, then an empty SETTINGS frame.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _probe(address: str) -> None:
    """An :class:`InterestGymError` at once when nothing accepts a TCP connection at a cluster address's host and port,
    or when what does is not a gRPC server: Ray's head (GCS) and its client server speak gRPC, i.e. HTTP/2, and answer a
    client's preface with a SETTINGS frame; a web server, the dashboard or any other service does not (Ray itself waits
    on such an address for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    try:
        sock = socket.create_connection((host, int(port)), timeout=PROBE_SECONDS)
    except OSError as exc:
        raise InterestGymError(f"--ray {address}: nothing answers at {host}:{port} within {PROBE_SECONDS:g} s "
                               f"({exc.strerror or exc}); expected a Ray cluster there (its head's `ray start` prints the "
                               "address), or use --ray local") from None
    answer: bytes | None = b""
    with sock:
        if os.environ.get("RAY_USE_TLS", "0").lower() not in ("", "0", "false"):
            return  # a cluster with TLS answers a TLS handshake, not a plain greeting: the TCP connection is all we check
        try:
            sock.sendall(_HTTP2_HELLO)
            while len(answer) < 9:  # a frame header: length (3 bytes), type, flags, stream (4 bytes)
                chunk = sock.recv(64)  # more than a header: enough of another protocol's answer to name it
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            answer = None  # connected, but no answer to the greeting in time
        except OSError:
            pass  # reset after the greeting: what came before it is the answer
    if answer is not None and len(answer) >= 9 and answer[3] == 4:  # its first frame SETTINGS: an HTTP/2 (gRPC) server
        return
    found = (f"no answer within {PROBE_SECONDS:g} s" if answer is None else
             f"the answer {answer[:40]!r}" if answer else "the connection closed")
    raise InterestGymError(f"--ray {address}: something listens at {host}:{port} but it is not a Ray cluster ({found} to a "
                           "gRPC client's greeting; Ray's head answers one); expected the address its head's `ray start` "
                           "prints (the GCS port, 6379 by default, or ray://HOST:10001 for Ray Client), or use --ray local")


#: The --ray value this process started or joined Ray with (None: not through :func:`connect`).
_CONNECTED: str | None = None


def connect(address: str = "auto", *, shards: int | None = None) -> RayBackend:
    """Connect to (or start) a Ray cluster.

    :param address: ``auto`` (a cluster running on this machine, as ``ray start --head`` leaves it),
        ``local`` / ``local:N`` (start one here with N CPUs; default: all), or a cluster address.
    :param shards: tasks per job (default: the cluster's CPUs).
    """
    global _CONNECTED, _LAST_PUT
    check_address(address)
    head, _, n = address.partition(":")
    local = head == "local"  # local, local:N (localhost:PORT is a cluster address)
    if not local and address != "auto":
        _probe(address)  # at once, whatever this process holds: a silent address is said, not waited for
    ray = _ray()
    explicit = not local and address != "auto"  # auto / local reuse the Ray this process holds; an address names one
    if explicit and ray.is_initialized() and _CONNECTED is not None and _CONNECTED != address:
        raise InterestGymError(f"--ray {address}: this process already holds Ray from --ray {_CONNECTED}; one process joins "
                               "one Ray (run the command again in a new process)")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        workers = worker_environment()  # the heap this command keeps, for the workers too (glibc reads it at start)
        if workers:
            kwargs["runtime_env"] = {"env_vars": workers}
        if local:  # a new instance here even where `ray start` left one (or RAY_ADDRESS names one): Ray's "local"
            ray.init(address="local", num_cpus=int(n) if n else None, **kwargs)
        else:
            try:
                ray.init(address=address, **kwargs)
            except ConnectionError as exc:
                hint = ("no Ray cluster there" if address == "auto" else
                        "something listens there but Ray could not join it (a cluster of another Ray version, or one that "
                        "asks for an authentication token: RAY_AUTH_MODE, ~/.ray/auth_token; Ray's own lines above say which)")
                raise InterestGymError(f"--ray {address}: {hint} ({exc}); start one with `ray start --head` "
                                       "or use --ray local") from None
        _CONNECTED = address  # the value that started or joined this process's Ray
        _LAST_PUT = None  # what an earlier session put (and the value it keeps) is of no use in this one
        # said once per process (a command's later steps reuse it): that the work is sharded, and where
        what = "started a local Ray instance" if local else f"joined the Ray cluster at {address}"
        sys.stderr.write(f"--ray {address}: {what} ({int(ray.cluster_resources().get('CPU', 0))} CPUs)\n")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:  # every task asks for one CPU: none would ever run (Ray waits for one without a word here)
        raise InterestGymError(f"--ray {address}: the cluster offers no CPU to run tasks on (found {cpus}; a head started "
                               "with --num-cpus 0 and no worker joined, or every worker gone); expected at least 1: join "
                               "a worker (`ray start --address HEAD:6379`) and run the command again")
    return RayBackend(address=address, shards=max(1, shards or cpus))


# ----------------------------------------------------------------------------------- evaluation
def _evaluate_shard(data: Any, policy: Any, users: list[str], kwargs: dict[str, Any]) -> Any:
    from interestgym.envs.vector import evaluate_policy as evaluate

    return evaluate(data, policy, users=users, **kwargs)


def evaluate_policy(dataset: Any, policy: Any, *, backend: RayBackend, users: list[str] | None = None,
                    embeddings: str | None = None, split: str | None = None, protocol: Any = None, **kwargs: Any) -> Any:
    """:func:`interestgym.envs.vector.evaluate_policy` with the users cut into ``backend.shards`` shards."""
    from interestgym.envs.replay_data import ProtocolSpec
    from interestgym.envs.vector import _replay_data

    default_split = "test" if protocol is None or isinstance(protocol, str) else None
    data = _replay_data(dataset, embeddings, ProtocolSpec.resolve(protocol, split or default_split))
    shards = user_shards(data, backend.shards, users)
    if not shards:
        from interestgym.envs.vector import evaluate_policy as evaluate

        return evaluate(data, policy, users=users, **kwargs)
    kwargs = {**kwargs, "progress": False}
    ref = backend.put(data)
    return merge_evaluations(backend.run(_evaluate_shard, [(ref, policy, shard, kwargs) for shard in shards]))


# ---------------------------------------------------------------------------------------- tuning
def _score_shard(data: Any, policies: list[Any], metric: str, users: list[str], max_rows: int) -> dict[str, np.ndarray]:
    from interestgym.agents.tuning import replay_points

    return replay_points(data, policies, metric, users, max_rows=max_rows)


def validation_scorer(data: Any, metric: str, users: list[str] | None = None, *, backend: RayBackend,
                      max_rows: int = 1024) -> Callable[[list[Any]], list[float]]:
    """:func:`interestgym.agents.tuning.validation_scorer` with each grid replayed shard by shard on Ray."""
    from interestgym.agents.rules import feedback_median
    from interestgym.agents.tuning import mean_over_users_many

    shards = user_shards(data, backend.shards, users)
    ref = backend.put(data)

    def score(policies: list[Any]) -> list[float]:
        if not policies:
            return []
        parts = backend.run(_score_shard, [(ref, list(policies), metric, shard, max_rows) for shard in shards])
        return mean_over_users_many(data, len(policies), parts, metric)

    score.protocol = data.protocol  # type: ignore[attr-defined]  (what tune_baselines' default grids read)
    score.value_median = feedback_median(data, users)  # type: ignore[attr-defined]
    return score


# -------------------------------------------------------------------------------------- encoding
def _encode_shard(encoder: Any, texts: list[str]) -> np.ndarray:
    return encoder.encode(texts, progress=False)


class _ShardedEncoder:
    """An encoder whose ``encode`` runs on Ray in text shards cut at the encoder's own batching
    (:func:`~interestgym.scale.shards.encode_chunk`); every other attribute is the encoder's."""

    def __init__(self, encoder: Any, backend: RayBackend) -> None:
        self._encoder = encoder
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, inputs: Any, *, progress: bool | None = None) -> np.ndarray:
        texts = list(inputs)
        shards = text_shards(len(texts), self._backend.shards, encode_chunk(self._encoder))
        if len(shards) <= 1:
            return self._encoder.encode(texts, progress=progress)
        ref = self._backend.put(self._encoder)
        parts = self._backend.run(_encode_shard, [(ref, texts[a:b]) for a, b in shards])
        return np.concatenate(parts).astype(np.float32, copy=False)


def sharded_encoder(encoder: Any, backend: RayBackend) -> Any:
    """``encoder`` encoding on the cluster (fit it first if it needs fitting: the fitted state travels)."""
    return _ShardedEncoder(encoder, backend)


# ------------------------------------------------------------------------------------- commands
@dataclass
class Scaled:
    """What a command swaps in when it runs with ``--ray``."""

    backend: RayBackend | None

    def evaluate_policy(self, *args: Any, **kwargs: Any) -> Any:
        from interestgym.envs.vector import evaluate_policy as local

        return local(*args, **kwargs) if self.backend is None else evaluate_policy(*args, backend=self.backend, **kwargs)

    def validation_scorer(self, data: Any, metric: str, users: list[str] | None = None) -> Any:
        from interestgym.agents.tuning import validation_scorer as local

        return local(data, metric, users) if self.backend is None else validation_scorer(data, metric, users, backend=self.backend)

    def encoder(self, encoder: Any) -> Any:
        return encoder if self.backend is None else sharded_encoder(encoder, self.backend)


def scaled(ray_address: str | None) -> Scaled:
    """The single-process functions (``None``) or their Ray versions on the cluster at ``ray_address``."""
    return Scaled(None if not ray_address else connect(ray_address))


def ray_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--ray auto|local[:N]|ADDRESS`` click option (passed to the command as ``ray``)."""
    import click

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_address(value)
        except InterestGymError as exc:
            raise click.BadParameter(str(exc).removeprefix(f"--ray {value!r}: ") + f"; found {value!r}") from None

    return click.option("--ray", "ray", default=None, metavar="auto|local[:N]|ADDRESS", callback=check,
                        help="Shard the work by user (evaluation, tuning) or text (encoding) over a Ray cluster: "
                             "'auto' = the cluster `ray start` runs here, 'local[:N]' = start one here, or its address. "
                             "Results are identical to one process. Needs Ray: pip install -c .ci/constraints.txt '.[ray]' in the checkout.")(fn)


def cpu_count() -> int:
    return os.cpu_count() or 1
