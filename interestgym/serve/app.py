"""The HTTP API (FastAPI): thin handlers over :class:`~interestgym.serve.service.InterestService`.

=========================  ================================================================================
``POST /v1/events``        a batch of events and outcomes (``{"events": [...]}``), applied whole or not at all
``POST /v1/rank``          a user + candidate item ids -> scores, best first
``GET /v1/users/{id}``     the user's state in words (counters, last strengths, categories, the category counts per
                          time of day when the policy keeps them, nearest items)
``DELETE /v1/users/{id}``  forget the user (state and applied event ids)
``PUT /v1/items``          add or replace items (vectors, or text encoded with the catalogue's encoder)
``GET /v1/admin/policy``   the active export; ``POST`` ``{"path": DIR}`` swaps to another one
``GET /healthz``           store takes a write, active policy, catalogue and how it was computed
``GET /metrics``           Prometheus text (see :mod:`interestgym.serve.metrics`)
``GET /docs``              the OpenAPI page
=========================  ================================================================================

Errors are JSON ``{"error": CODE, "message": TEXT, "detail": ...}``, whether the request failed the
schema or the runtime refused it: 422 ``invalid_request`` (the body, a field, an unknown action, a
vector of the wrong size; the message says ``PATH is FOUND; expected WHAT``, e.g. ``events[0].ts is
'soon'; expected a valid integer ...``, and a schema failure lists every problem in
``detail["errors"]``), 404 ``not_found``, 409
``out_of_order`` / ``policy_mismatch`` / ``catalogue_mismatch``, 403 ``forbidden`` (admin without the
token), 415 ``unsupported_media_type`` (a body not sent as ``application/json``), 413 ``body_too_large`` (a body over ``--max-body-mb``, by its Content-Length or as it streams in, before
it is parsed), 503 ``store_unavailable`` / ``policy_unavailable`` (the store's active export cannot be loaded
here), 500 ``corrupt_state`` (a user's stored state cannot be read: logged naming the user, counted in
``interestgym_store_errors_total``); anything else is 500 ``internal_error`` with the traceback in the
server's log only.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from interestgym import __version__
from interestgym.core.clock import TS_MAX, TS_MIN
from interestgym.core.log_features import VALUE_MAX
from interestgym.data.columns import id_reason
from interestgym.errors import InterestGymError
from interestgym.serve.schemas import (
    MAX_ID_LENGTH,
    ErrorBody,
    EventsRequest,
    EventsResponse,
    ItemsRequest,
    ItemsResponse,
    PolicySwapRequest,
    RankRequest,
    RankResponse,
)
from interestgym.serve.service import (
    ForbiddenError,
    InterestService,
    InvalidRequestError,
    ServeConfig,
    ServeError,
)
from interestgym.serve.stores import StoreUnavailableError

log = logging.getLogger("interestgym.serve")
#: Environment variable carrying the JSON :class:`ServeConfig` to uvicorn's worker processes.
CONFIG_ENV = "INTERESTGYM_SERVE_CONFIG"
#: The pid of the `interestgym serve` process whose workers read CONFIG_ENV (set by it with --workers > 1).
SUPERVISOR_ENV = "INTERESTGYM_SERVE_SUPERVISOR"
_ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorBody} for code in (403, 404, 409, 413, 422, 500, 503)}


def _error(status: int, code: str, message: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, "detail": detail}, status_code=status)


#: Tags of the ``events`` union (:data:`~interestgym.serve.schemas.AnyEvent`): pydantic puts the one it
#: chose in an error's location (``events.0.event.ts``); the path a client sent has no such step.
_UNION_TAGS = frozenset({"event", "outcome"})
_SHOULD = re.compile(r"^\w+ should (?:be |have )?(?P<what>.*?)(?: after validation)?(?:, not \d+)?$")


def _path(loc: Sequence[Any]) -> str:
    """A pydantic error location as the client wrote it: ``events[0].ts``, ``top (query parameter)``."""
    parts = list(loc)
    where = ""
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        where = f" ({parts.pop(0)} parameter)"
    elif parts and parts[0] == "body":
        parts.pop(0)
    text = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            text += f"[{part}]"
        elif i > 0 and isinstance(parts[i - 1], int) and part in _UNION_TAGS:
            continue
        else:
            text += f".{part}" if text else str(part)
    return (text or "body") + where


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_validation_message(error: dict[str, Any]) -> str:
    """``PATH is FOUND; expected WHAT`` (or ``PATH: PROBLEM``) for one pydantic error."""
    loc = tuple(error.get("loc", ()))
    kind, msg, ctx = error.get("type", ""), str(error.get("msg", "invalid")), error.get("ctx") or {}
    if kind == "json_invalid":
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"body is not valid JSON{at} ({ctx.get('error', msg)}); expected a JSON object"
    path = _path(loc)
    if kind == "missing":
        return f"{path} is missing; expected a JSON object" if path == "body" else f"{path} is missing; expected a value (required field)"
    if kind == "extra_forbidden":
        return f"{path} is not a field of this request (found {_shown(error.get('input'))}); expected only the fields listed at /docs"
    if kind == "union_tag_invalid":  # an event's kind that is neither kind of event
        tags = str(ctx.get("expected_tags", "")).replace("', '", "' or '")
        return f"{path}.kind is {_shown(ctx.get('tag'))}; expected {tags}"
    if kind == "value_error":  # our own model validators: the text already says what is wrong and what is expected
        return f"{path}: {msg.removeprefix('Value error, ')}"
    if kind in ("too_long", "too_short") and "actual_length" in ctx:  # a list: its length, not its thousand items
        bound = f"at most {ctx.get('max_length')}" if kind == "too_long" else f"at least {ctx.get('min_length')}"
        return f"{path} has {ctx['actual_length']} items; expected {bound}"
    if path == "body" and isinstance(error.get("input"), list):  # the events without their envelope, most likely
        n = len(error["input"])
        return (f"body is a JSON array ({n} item{'s' * (n != 1)}); expected a JSON object: POST /v1/events takes "
                '{"events": [...]}, the other routes the fields listed at /docs')
    found = f" is {_shown(error['input'])}" if "input" in error else ""
    if kind in ("less_than_equal", "greater_than_equal") and (path == "value" or path.endswith(".value")):
        # the bound is float32's largest number: its 39 digits would say less than the words do
        return f"{path}{found}; expected a finite number within float32's range (|value| <= {VALUE_MAX:.4g})"
    should = _SHOULD.match(msg)
    if should:
        value = error.get("input")
        is_ts = path == "ts" or path.endswith(".ts")
        number = int(value) if isinstance(value, str) and value.strip().isdigit() else value  # "1511544070000": pydantic reads it
        millis = is_ts and isinstance(number, int) and TS_MIN * 1000 <= number < TS_MAX * 1000
        hint = (" (unix seconds: this looks like milliseconds; divide by 1000)" if millis else
                " (UTC unix seconds, e.g. 1704825930; convert a date and time to them)" if is_ts and isinstance(number, str) else "")
        return f"{path}{found}; expected {should.group('what')}{hint}"
    return f"{path}{found}: {msg}"


def _unparsed_body_message(cause: BaseException) -> str:
    """Why a body could not even be read as JSON (the cause of FastAPI's 400), in the refusals' words."""
    if isinstance(cause, UnicodeDecodeError):
        return f"body is not UTF-8 (byte {cause.start}: {cause.reason}); expected a JSON object in UTF-8"
    if isinstance(cause, RecursionError):
        return "body nests arrays or objects too deeply to be read; expected a JSON object of the API's shape (see /docs)"
    return f"body cannot be read as JSON ({type(cause).__name__}: {cause}); expected a JSON object"


def validation_message(errors: Sequence[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(message, detail) of a request that failed the schema, in the runtime errors' words.

    The message names the first problem (``events[0].ts is 'soon'; expected a valid integer ...``)
    and how many more there are; ``detail["errors"]`` lists every one as {path, message, type}.
    """
    listed = [{"path": "body" if e.get("type") == "json_invalid" else _path(tuple(e.get("loc", ())) + (
               ("kind",) if e.get("type") == "union_tag_invalid" else ())),
               "message": _one_validation_message(e), "type": e.get("type", "")} for e in errors]
    if not listed:
        return "the request does not match the API's schema (see /docs)", {"errors": []}
    more = f" (and {len(listed) - 1} more: see detail.errors)" if len(listed) > 1 else ""
    return listed[0]["message"] + more, {"errors": listed}


class _BodyTooLarge(StarletteHTTPException):
    """Raised from a request's ``receive`` once its body passes the limit (a body sent without Content-Length).
    An HTTPException: FastAPI lets those out of its body parsing (any other exception there becomes a 400)."""

    def __init__(self) -> None:
        super().__init__(413)


def _too_large(found: str, limit: int) -> JSONResponse:
    return _error(413, "body_too_large", f"the request body is {found}; expected at most {limit:,} bytes (--max-body-mb "
                  f"{limit / 2**20:g}): send fewer events or items per request", {"max_bytes": limit})


class _BodyLimit:
    """Pure ASGI middleware: a body over ``service.config.max_body_bytes`` is refused with 413 before it is parsed,
    by its Content-Length or, sent without one, as soon as the bytes received pass the limit."""

    def __init__(self, app: Any, service: InterestService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.service.config.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await _too_large(f"{int(length):,} bytes (its Content-Length)", limit)(scope, receive, send)
            return
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        await self.app(scope, limited, send)


class _RequestMetrics:
    """Pure ASGI middleware: request counts and latency per route template (not per raw path)."""

    def __init__(self, app: Any, service: InterestService) -> None:
        self.app = app
        self.metrics = service.metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.request_seconds.labels(scope["method"], path).observe(time.perf_counter() - start)


def create_app(service: InterestService) -> FastAPI:
    """The FastAPI app serving ``service`` (closed when the app shuts down)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = FastAPI(
        title="interestgym serve",
        version=__version__,
        lifespan=lifespan,
        description=("Per-user interest state updated by an exported interestgym policy. Events and outcomes go to "
                     "`POST /v1/events` (idempotent by event id; a user's events in time order), rankings come from "
                     "`POST /v1/rank`. Items, popularity and categories come from the service's own catalogue."),
    )
    app.state.service = service
    app.add_middleware(_BodyLimit, service=service)
    app.add_middleware(_RequestMetrics, service=service)  # outermost: a refused body is counted too

    @app.exception_handler(ServeError)
    async def _serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, exc.code, str(exc), exc.detail)

    @app.exception_handler(_BodyTooLarge)
    async def _body_too_large(_: Request, exc: _BodyTooLarge) -> JSONResponse:
        limit = service.config.max_body_bytes
        return _too_large(f"over {limit:,} bytes (sent without Content-Length)", limit)

    @app.exception_handler(StoreUnavailableError)
    async def _store_error(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        return _error(503, "store_unavailable", str(exc))

    @app.exception_handler(InterestGymError)
    async def _input_error(_: Request, exc: InterestGymError) -> JSONResponse:
        # the runtime's and the catalogue's refusals of what the request carried
        return _error(422, "invalid_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the same body as the runtime's refusals: 422 invalid_request, "PATH is FOUND; expected WHAT"
        if request.url.path == "/v1/events":  # a batch the schema refused is a refused batch too
            service.metrics.refused.labels("invalid").inc()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if (media != "application/json" and not media.endswith("+json")
                and any(tuple(e.get("loc", ())) == ("body",) and e.get("type") == "model_attributes_type"
                        and isinstance(e.get("input"), (str, bytes)) for e in exc.errors())):  # the body as text, unread
            # FastAPI reads a body as JSON only when it says so: anything else arrives as text ("expected a valid dictionary")
            return _error(415, "unsupported_media_type", f"body sent with Content-Type {media or '(none)'!r}; expected "
                          "'application/json' (curl: -H 'Content-Type: application/json')", {"content_type": media or None})
        return _error(422, "invalid_request", *validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, (UnicodeDecodeError, RecursionError, ValueError)):
            # FastAPI's "There was an error parsing the body" (a 400 of its own) for what its JSON read raised: a body
            # that is not UTF-8, or nested too deep. An unreadable body is a refused request like any other: 422.
            if request.url.path == "/v1/events":
                service.metrics.refused.labels("invalid").inc()
            return _error(422, "invalid_request", _unparsed_body_message(exc.__cause__))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error; the server's log has the details")

    def _token(what: str) -> list[Any]:
        """The admin token as a route dependency: checked before the body is validated (a client without the token
        learns nothing of what its body lacks)."""

        def check(authorization: str | None = Header(None)) -> None:
            token = service.config.admin_token
            if token and authorization != f"Bearer {token}":
                raise ForbiddenError(f"{what} needs the header 'Authorization: Bearer TOKEN' (the --admin-token the service "
                                     "was started with)")

        return [Depends(check)]

    admin = _token("admin endpoints")

    @app.post("/v1/events", response_model=EventsResponse, response_model_exclude_none=True, responses=_ERRORS, tags=["events"])
    def post_events(body: EventsRequest) -> dict[str, Any]:
        """Apply events (what users did) and outcomes (what they were shown and clicked), whole or not at all.

        Idempotent by `event_id` per user: an id applied before is reported `duplicate` and changes nothing.
        A user's events must come in time order: an event older than the user's last applied one refuses the
        batch with 409 `out_of_order` (nothing applied), or with `"late": "skip"` is reported `out_of_order` (not
        applied, its id not recorded) while the rest of the batch is applied."""
        return service.apply(body.events, late=body.late)

    @app.post("/v1/rank", response_model=RankResponse, responses=_ERRORS, tags=["rank"])
    def post_rank(body: RankRequest) -> dict[str, Any]:
        """Score candidate items for a user with the policy's score, best first."""
        return service.rank(body.user_id, body.candidates, hour=body.hour, ts=body.ts, top_k=body.top_k)

    @app.get("/v1/users/{user_id:path}", responses=_ERRORS, tags=["users"])
    def get_user(request: Request, user_id: str,
                 top: int = Query(5, ge=0, le=100, description="Nearest catalogue items per profile.")) -> dict[str, Any]:
        """The user's state in words."""
        return service.user_summary(_path_user(request), top)

    @app.delete("/v1/users/{user_id:path}", status_code=204, responses=_ERRORS, tags=["users"])
    def delete_user(request: Request, user_id: str) -> Response:
        """Forget the user: state and applied event ids (a re-sent old event would then apply again)."""
        service.forget(_path_user(request))
        return Response(status_code=204)

    @app.put("/v1/items", response_model=ItemsResponse, responses=_ERRORS, tags=["items"], dependencies=_token("PUT /v1/items"))
    def put_items(body: ItemsRequest) -> dict[str, int]:
        """Add or replace items (needs the admin token when the service has one: a replaced item's vector moves
        every user's ranking). A new item's popularity is 0 (no positive event among training users)."""
        return service.put_items(body.items)

    @app.get("/v1/admin/policy", responses=_ERRORS, tags=["admin"], dependencies=admin)
    def get_policy() -> dict[str, Any]:
        """The store's active export (path, manifest sha256, generation)."""
        return service.active_policy()

    @app.post("/v1/admin/policy", responses=_ERRORS, tags=["admin"], dependencies=admin)
    def post_policy(body: PolicySwapRequest) -> dict[str, Any]:
        """Swap to another export, atomically for every worker; refused (409) if its encoder, feature table
        or state layout differ from the stored states', or the catalogue does not meet its expectations."""
        return service.swap_policy(body.path)

    # /livez and /metrics are coroutines: they answer on the event loop, not in the thread pool that the handlers
    # waiting on a stalled store fill (40 threads), so a liveness probe and the metrics still answer during an outage.
    @app.get("/livez", tags=["ops"])
    async def livez() -> dict[str, Any]:
        """200 while the process answers (a liveness probe): no store call, so a store outage does not get healthy
        workers restarted; readiness is /healthz."""
        return {"status": "alive", "policy": service.policy_id, "uptime_s": round(time.time() - service.started, 1)}

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        """200 when the store takes a write (a probe key: a store that answers reads but refuses writes fails every
        event); the active policy and the catalogue's provenance."""
        return service.health()

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app


def _path_user(request: Request) -> str:
    """The user id of ``/v1/users/{user_id}`` as the request's path holds it, checked as a body's ids are.

    Starlette's ``{user_id:path}`` pattern ends in ``$``, which also matches before a final newline: ``/v1/users/bob%0A``
    would reach ``bob``'s state. The id is read from the decoded path itself instead, and refused when it holds a control
    character or is too long, as in ``POST /v1/events``."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    if root and path.startswith(root):  # mounted, or run with --root-path: the path holds the prefix (as Starlette's router strips it)
        path = path[len(root):]
    user = path.removeprefix("/v1/users/")
    if not user:
        raise InvalidRequestError("path: no user id; expected /v1/users/USER_ID")
    if (reason := id_reason(user, "user id")) is not None:
        raise InvalidRequestError(f"path: {reason}")
    if len(user) > MAX_ID_LENGTH:
        raise InvalidRequestError(f"path: user id of {len(user)} characters; expected at most {MAX_ID_LENGTH}")
    return user


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker: the config from the environment; follows the store's policy."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise RuntimeError(f"{CONFIG_ENV} is not set; start the service with `interestgym serve`")
    try:
        service = InterestService.open(ServeConfig.from_json(text), install=False)
    except InterestGymError as exc:
        # e.g. a worker respawned after the served export was replaced in place: one line in the server's log, not a
        # traceback per respawn (uvicorn starts it again; the other workers keep serving)
        log.error("worker %d cannot start: %s", os.getpid(), exc)
        raise SystemExit(3) from None
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and supervisor.isdigit() and int(supervisor) != os.getpid():  # a worker process the serve process started
        if os.getppid() != int(supervisor):  # it was killed while this worker started (adopted already)
            log.warning("worker %d: the serve process %s is gone; this worker does not start", os.getpid(), supervisor)
            raise SystemExit(0)
        _stop_with_supervisor(int(supervisor))
    return create_app(service)


def _stop_with_supervisor(supervisor: int, every_s: float = 1.0) -> threading.Thread:
    """A worker stops (SIGTERM to itself: uvicorn's graceful shutdown) when the `interestgym serve` process that started
    it is gone, e.g. killed with SIGKILL: otherwise the workers, adopted by init, keep serving on the port and a restart
    cannot listen on it. Checked every ``every_s`` seconds (the worker's parent pid changes when it is adopted)."""
    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(every_s)
        log.warning("worker %d: the serve process %d is gone; this worker stops", os.getpid(), supervisor)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="interestgym-supervisor-watch", daemon=True)
    thread.start()
    return thread
