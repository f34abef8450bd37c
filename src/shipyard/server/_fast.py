"""The evaluation routes' fast path: answered in plain ASGI, below FastAPI's routing and validation.

An SDK asks for one flag per page view or request, so `GET /feature-flags/{key}/value` and OFREP's
single evaluation are by far the busiest routes, and FastAPI's routing, dependency solving and
response classes cost several times what the evaluation itself does. Such a route also has a
`FastRoute`: a plain function that answers from memory (the live flag set, the tokens verified in
the last seconds) and never awaits. `FastRoutes` runs it before FastAPI's router sees the request.

A fast route answers only what it can answer exactly as the FastAPI route would; for the rest it
returns None and the request goes on to the FastAPI route, which answers it the usual way (a
token not verified recently, a refusal, a flag that does not exist). So both paths give the same
status codes and bodies, and the refusals' wording lives in one place.

`FastRoutes` sits inside the access log, the metrics and the body limit (it is the innermost
middleware), so a fast answer is logged, measured and size-checked like any other: it sets the
scope's `route` to the fast route, whose `path` is the FastAPI route's (what the access log and the
metrics read of a matched route), and records the actor the route authenticated
(`_auth.record_scope_actor`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._auth import record_scope_actor

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class FastRequest:
    """What a fast route may read of a request."""

    param: str
    """The path's one `{...}` segment ('' for a path without one)."""
    query_string: bytes
    headers: dict[bytes, bytes]
    """Lower-case names; the first value of a repeated header (as Starlette's `Headers.get`)."""
    body: bytes

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def query(self) -> dict[str, str]:
        """The query parameters as Starlette's `request.query_params` reads them (the last value of
        a repeated name, blank values kept)."""
        return dict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))


@dataclass(frozen=True)
class FastAnswer:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)
    """Besides content-length and content-type (JSON), which every answer has."""
    actor: str | None = None
    """Who the route authenticated, for the access log."""


@dataclass(frozen=True)
class FastRoute:
    """`answer` for `method path`, where `path` is a FastAPI route's template with at most one
    `{parameter}`, and `answer` returns None to leave the request to the FastAPI route."""

    method: str
    path: str
    answer: Callable[[FastRequest], FastAnswer | None]
    reads_body: bool = False


def json_bytes(body: Any) -> bytes:
    """`body` as compact JSON, UTF-8 (orjson; the standard library for what orjson refuses, such as
    an integer beyond 64 bits in a flag's value)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def json_loads(raw: bytes) -> Any:
    """`json.loads(raw)`, faster: orjson first, the standard library when orjson refuses, so that what
    is accepted (NaN, UTF-16, huge integers) and the error's wording stay the standard library's."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


_JSON_HEADERS = (b"content-type", b"application/json")


class _Template:
    """A fast route compiled for matching."""

    def __init__(self, route: FastRoute) -> None:
        self.route = route
        self.method = route.method
        self.prefix = route.path.partition("{")[0]
        self.suffix = route.path.rpartition("}")[2] if "{" in route.path else ""
        self.param_name = route.path.partition("{")[2].partition("}")[0]

    def param(self, path: str) -> str | None:
        """The path's parameter when `path` matches (Starlette's `[^/]+`), '' for an exact path."""
        if not self.param_name:
            return "" if path == self.prefix else None
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        value = path[len(self.prefix) : len(path) - len(self.suffix)]
        return value if value and "/" not in value else None


class FastRoutes:
    """ASGI middleware: the fast routes' answers, every other request to `app`."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self._templates = [_Template(route) for route in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            for template in self._templates:
                if template.method == method and (param := template.param(path)) is not None:
                    await self._answer(template, param, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _answer(
        self, template: _Template, param: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        reads_body = template.route.reads_body
        if reads_body:
            body = await _read_body(receive)
            if body is None:  # the client left before its body was in: nothing to answer
                return
        else:
            body = b""
        request_headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            request_headers.setdefault(name, value)
        answer = template.route.answer(FastRequest(param, scope["query_string"], request_headers, body))
        if answer is None:
            await self.app(scope, _replay(body, receive) if reads_body else receive, send)
            return
        # As Starlette's router would set them: the access log and the metrics read the route's path.
        scope["route"] = template.route
        scope["path_params"] = {template.param_name: param} if template.param_name else {}
        if answer.actor is not None:
            record_scope_actor(scope, answer.actor)
        headers = [*answer.headers, (b"content-length", str(len(answer.body)).encode()), _JSON_HEADERS]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


async def _read_body(receive: Receive) -> bytes | None:
    """The request's whole body; None when the client disconnected first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the FastAPI route after the body was read here: the body once, then the rest."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
