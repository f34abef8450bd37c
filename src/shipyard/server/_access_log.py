"""The API's access log: one `shipyard.access` line per HTTP request, when its response has ended.

Fields: method, path (never the query string, whose values may be secrets: only the names of its
parameters, each `=***`), route (the matched template), status, duration_ms, client (its address)
and, when the route authenticated the request (an `Authorization: Bearer` header, or the
dashboard's session cookie), the actor behind it (`token:<name>`). Headers and bodies are never logged.

The actor is the one the route's own authentication found (`_auth.record_actor`): the log never
checks a token itself.

Flag evaluations that succeed (EVALUATION_ROUTES answering 2xx or 304) are not logged unless the
server is told to (`serve --log-evaluations`): an SDK's traffic is thousands of identical reads a
second, the access line would cost more than the evaluation itself, and
`shipyard_http_request_duration_seconds` counts them by route and status anyway. Their failures
(401, 404, …) are always logged. Unleash's proxy and Edge do not log evaluations either.

Plain ASGI (no task per request, unlike BaseHTTPMiddleware); installed outermost, so that a 413
from the body limit is logged too.
"""

from __future__ import annotations

import logging
import re
import time
from urllib.parse import unquote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import IN_MESSAGE, MASK

LOGGER = "shipyard.access"
MAX_PATH_CHARS = 2048
MAX_QUERY_CHARS = 256
_NAME = re.compile(r"[A-Za-z0-9_.\[\]-]{1,64}")

EVALUATION_ROUTES = frozenset({
    "/feature-flags/{key}/value",
    "/ofrep/v1/evaluate/flags/{key}",
    "/ofrep/v1/evaluate/flags",
    "/api/frontend",
    "/api/client/features",
})  # fmt: skip
"""The routes SDKs poll or call per evaluation (see the module's docstring)."""


def query_keys(query: bytes) -> str | None:
    """`a=***&b=***` for the query string `query`: the names of its parameters, never a value; a
    part that is not `name=value` with a plain name (`?abc123`, which may be a key) is `***`."""
    if not query:
        return None
    shown = []
    for part in query.decode("latin-1").split("&"):
        name, equals, _ = part.partition("=")
        name = unquote_plus(name)
        shown.append(f"{name}={MASK}" if equals and _NAME.fullmatch(name) else MASK)
    return "&".join(shown)[:MAX_QUERY_CHARS]


def _route(scope: Scope) -> str | None:
    """The template of the route that answered (FastAPI's or a fast route's), if any."""
    return getattr(scope.get("route"), "path", None)


def _actor(scope: Scope) -> str | None:
    """`token:<name>` when the route authenticated the request (`_auth.record_actor`), else None."""
    state = scope.get("state")
    actor = state.get("actor") if isinstance(state, dict) else None
    return actor if isinstance(actor, str) else None


class AccessLog:
    """Logs every HTTP request once its response has ended (or failed)."""

    def __init__(self, app: ASGIApp, logger: str = LOGGER, *, log_evaluations: bool = False) -> None:
        self.app = app
        self.log = logging.getLogger(logger)
        self.log_evaluations = log_evaluations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        # The request's state, where the route's authentication says who asked: made here, so that
        # every layer below shares this one dict.
        scope.setdefault("state", {})

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        except BaseException as exc:
            # Not answered yet: the server's error handler answers 500. Cancelled: the client left.
            self._write(scope, status or 500, started, None, error=type(exc).__name__)
            raise
        final = status or 500
        if final < 400 and not self.log_evaluations and _route(scope) in EVALUATION_ROUTES:
            return
        self._write(scope, final, started, _actor(scope))

    def _write(
        self, scope: Scope, status: int, started: float, actor: str | None, error: str | None = None
    ) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        method = str(scope.get("method", "?"))
        path = str(scope.get("path", ""))[:MAX_PATH_CHARS]
        client = scope.get("client")
        fields: dict[str, object] = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "client": client[0] if client else None,
        }
        query = query_keys(scope.get("query_string", b""))
        if query is not None:
            fields["query"] = query
        route = _route(scope)
        if route is not None:
            fields["route"] = route
        if actor is not None:
            fields["actor"] = actor
        if error is not None:
            fields["error"] = error
        where = f"{path}?{query}" if query is not None else path
        by = f" {actor}" if actor is not None else ""
        failed = f" ({error})" if error is not None else ""
        message = f"{method} {where} {status} {duration_ms:.1f}ms {fields['client'] or '-'}{by}{failed}"
        # `log.info` less its search of the stack for the caller's file and line, which an access
        # line never shows (a few microseconds of every request).
        fields[IN_MESSAGE] = True
        self.log.handle(
            self.log.makeRecord(self.log.name, logging.INFO, __file__, 0, message, (), None, extra=fields)
        )
