"""The FastAPI application behind `shipyard serve`: mounts the routers, owns no business rules.

Errors raised by the packages become RFC 9457 problem+json here; authentication (API tokens
with scopes) is a dependency handed to each router; `/healthz`, `/readyz` and `/metrics` need
no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import Engine, text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InvalidObjectError, ReleaseInProgress, ShipyardError, StateStoreUnavailable
from ..flags import FlagStore, LiveFlagSet
from ..host import state_dir
from ..jobs import JobRunner, OrphanReaper
from ..monitor import OutboxDelivery, ShipyardCollector
from ..rollout import KubeConnection
from ..state import open_engine, session_factory
from . import routes
from ._access_log import AccessLog
from ._auth import TokenAuth
from ._dashboard import mount_dashboard
from ._fast import FastRoutes
from ._method_not_allowed import allowed_methods
from ._metrics_registry import measured, server_metrics
from ._openapi import install as install_openapi
from ._scheduler import ScheduledJob, Scheduler, scheduled_jobs, served_background
from ._stale_flags import StaleFlagsHeader
from ._store_down import store_down_response

PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 1 << 20


@dataclass
class ServerConfig:
    database_url: str | None = None
    environment: str = "production"
    """The environment flag evaluations use when a request names none."""
    max_body_bytes: int = MAX_BODY_BYTES
    poll_interval: float = 0.25
    spec: Path | None = None
    """The stack whose scheduled work (backups, verifications) this server runs; none without it."""
    scheduled: tuple[ScheduledJob, ...] = ()
    """Jobs to schedule besides the spec's, for a program that embeds the server."""
    kube: KubeConnection | None = None
    """The cluster Kubernetes releases are steered on (None: `$KUBECONFIG`, `~/.kube/config` or
    the pod's service account, as kubectl finds it)."""
    job_log_dir: Path | None = None
    """Where jobs' output goes (default: `$SHIPYARD_STATE_DIR/jobs`, i.e. `.shipyard/jobs`)."""
    log_evaluations: bool = False
    """Log flag evaluations that succeed too (`_access_log.EVALUATION_ROUTES`); failures always are."""
    fast_routes: bool = True
    """Answer the evaluation routes below FastAPI (`_fast`); False leaves every request to
    FastAPI's routes, which answer the same (the tests compare the two)."""


def problem(status: int, title: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class BodyLimit:
    """Refuse request bodies over a limit with 413, whether or not they declare their length."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope.get("headers") or () if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await problem(413, "Payload Too Large", f"the body may be at most {self.limit} bytes")(
                scope, receive, send
            )
            return
        seen = 0
        too_large = answered = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise _TooLarge
            return message

        async def unless_too_large(message: Message) -> None:
            # A route that reads the body through FastAPI catches the error and answers 400
            # ("There was an error parsing the body"): once the body is over the limit, only the
            # 413 below is sent.
            nonlocal answered
            if too_large:
                return
            answered = True
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, limited, unless_too_large)
        if too_large and not answered:
            await problem(413, "Payload Too Large", f"the body may be at most {self.limit} bytes")(
                scope, receive, send
            )


class _TooLarge(Exception):
    pass


class Measure:
    """Request latency by route and status code for `/metrics` (plain ASGI: no per-request task);
    the dashboard's pages and static files are not the API and are not measured."""

    def __init__(self, app: ASGIApp, requests: Histogram, evaluations: Counter) -> None:
        self.app = app
        self.requests = requests
        self.evaluations = evaluations
        # The histogram's child per (method, route, code), looked up once: `labels()` checks
        # and locks on every call. Routes are templates, so the combinations are few.
        self._children: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not measured(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            labels = (scope["method"], route, str(status))
            child = self._children.get(labels)
            if child is None:
                if len(self._children) > 10_000:  # any method name may be sent; keep the dict small
                    self._children.clear()
                child = self._children[labels] = self.requests.labels(*labels)
            child.observe(time.perf_counter() - started)
            if route == "/feature-flags/{key}/value" and status == 200:
                self.evaluations.inc()


def create_app(config: ServerConfig | None = None, engine: Engine | None = None) -> FastAPI:
    """The whole API over one state store."""
    config = config or ServerConfig()
    engine = engine or open_engine(config.database_url)
    sessions = session_factory(engine)
    live = LiveFlagSet(FlagStore(sessions), poll_interval=config.poll_interval)
    meters = server_metrics()  # not `metrics`: the /metrics route below takes that name
    registry = meters.registry
    auth = TokenAuth(sessions, on_refused=meters.refused("api"))

    jobs = JobRunner(
        sessions,
        spec=config.spec,
        environment=config.environment,
        # The children must use this very store, even when it was handed over as an engine.
        database_url=config.database_url or engine.url.render_as_string(hide_password=False),
        log_dir=config.job_log_dir or state_dir() / "jobs",
    )
    # Scheduled runs are jobs too: listed in /jobs and the dashboard beside the API's.
    scheduler = Scheduler(
        sessions, [*scheduled_jobs(jobs), *config.scheduled], background=served_background(jobs, sessions)
    )

    registry.register(ShipyardCollector(sessions, stack=lambda: jobs.stack() if config.spec else None))

    # Delivers the notifications every process queued (a CLI leaves what it could not send).
    delivery = OutboxDelivery(sessions)
    # This server's heartbeat, and its look for jobs whose server and child both died (any host's).
    reaper = OrphanReaper(sessions, jobs.owner)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        poller = asyncio.create_task(live.poll_forever())
        await asyncio.to_thread(jobs.reconcile)
        reaper.start()
        scheduler.start()
        delivery.start()
        try:
            yield
        finally:
            # A backup that has started finishes in its own process; no new one starts.
            scheduler.shutdown(wait=False)
            # A message being sent finishes (≤ 10 s); the rest stay queued for the next server.
            await asyncio.to_thread(delivery.stop)
            await asyncio.to_thread(reaper.stop)
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    app = FastAPI(
        title="shipyard",
        version=__version__,
        lifespan=lifespan,
        description="Deployment and operations: feature flags, rollouts, backups, DR.",
        # shipyard measures itself (`Measure`, /metrics); FastAPI's OpenTelemetry hook would only
        # read three environment variables per request to find it has nothing to do.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's pages load Swagger UI and ReDoc from a CDN: `/docs` is served locally instead.
        docs_url=None,
        redoc_url=None,
    )
    install_openapi(app)
    app.state.live = live
    app.state.scheduler = scheduler
    app.state.sessions = sessions
    app.state.engine = engine
    app.state.jobs = jobs
    app.state.auth = auth
    app.state.auth_failures = meters.auth_failures
    app.state.config = config
    app.state.kube = config.kube

    @app.exception_handler(ShipyardError)
    async def shipyard_error(_: Request, exc: ShipyardError) -> JSONResponse:
        status = exc.http_status
        extra: dict[str, Any] = {}
        if isinstance(exc, InvalidObjectError) and exc.problems:
            extra["errors"] = [{"field": field, "message": message} for field, message in exc.problems]
        if isinstance(exc, ReleaseInProgress):
            # The running release (or the job about to run it), for a client to follow or steer.
            found = {"rollout_id": exc.rollout_id, "job_id": exc.job_id}
            extra |= {name: value for name, value in found.items() if value is not None}
        return problem(status, HTTPStatus(status).phrase, exc.message, **extra)

    @app.exception_handler(StateStoreUnavailable)
    async def store_unavailable(request: Request, exc: StateStoreUnavailable) -> Response:
        return store_down_response(
            request, exc, live.stale_since, problem(503, "Service Unavailable", exc.message)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        return problem(422, "Unprocessable Content", "the request is not valid", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:
            response.headers["Allow"] = allowed_methods(request)
        return response

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Not ready"}})
    def readyz() -> Any:
        """Readiness: the state store answers and the scheduler runs."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            return problem(503, "Service Unavailable", f"state store: {type(exc).__name__}")
        if not scheduler.running:
            return problem(503, "Service Unavailable", "scheduler: not running")
        return {"status": "ready", "flagSetVersion": live.version, "scheduledJobs": list(scheduler.jobs)}

    @app.get("/metrics", tags=["health"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    routes.mount(
        app,
        live=live,
        sessions=sessions,
        runner=jobs,
        auth=auth,
        environment=config.environment,
        kube=config.kube,
    )
    mount_dashboard(app)
    if config.fast_routes:
        # Innermost: a fast answer is still size-checked, measured and logged like any other.
        fast_routes = [
            routes.flags.value_fast_route(live, auth, config.environment),
            routes.ofrep.evaluate_fast_route(live, auth, config.environment),
            *routes.unleash.fast_routes(app.state.unleash_api),
        ]
        app.add_middleware(FastRoutes, routes=fast_routes)
    app.add_middleware(StaleFlagsHeader, live=live)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(Measure, requests=meters.requests, evaluations=meters.evaluations)
    app.add_middleware(AccessLog, log_evaluations=config.log_evaluations)
    return app
