"""Unleash's client and frontend APIs, so that Unleash's own SDKs work against shipyard unchanged.

    GET  /api/client/features            every flag as Unleash features (server SDKs evaluate them
                                         locally); ETag, and 304 on a matching If-None-Match
    POST /api/client/register            an SDK announcing itself: accepted (202)
    POST /api/client/metrics             an SDK's usage counts: accepted (202)
    GET  /api/frontend                   the enabled toggles for one context (browser SDKs), the
    POST /api/frontend                   context in the query or in a JSON body; ETag, 304
    POST /api/frontend/client/metrics    accepted (202)
    POST /api/frontend/client/register   accepted (202)

The client API's body is `shipyard.flags._unleash_export`'s: a flag that Unleash's SDKs could not
evaluate exactly as shipyard does is left out of it, named in the `X-Shipyard-Unleash-Omitted`
header (its keys percent-encoded, comma separated) and in one warning per flag-set version. The
frontend API evaluates with shipyard's own evaluator, so it serves every flag: a boolean flag is
listed when it is on (with its variant and payload), a string, number or json flag when it is on,
with its value as the variant's payload (`string`, `number` or `json`).

Authentication is a client (or admin) token, sent as Unleash's SDKs send theirs, in
`Authorization: <token>` (or `Authorization: Bearer <token>`); 401 without a valid one. The
environment is the `X-Shipyard-Environment` header (an SDK's custom headers), else, on the
frontend API, the context's `environment` unless it is Unleash's placeholder `default`, else the
server's `--env`. The frontend API's context is Unleash's: `userId`, `sessionId`,
`remoteAddress`, `currentTime`, `appName` and `properties[name]=value` (any other query parameter
is a property too, as Unleash reads it), flattened into one shipyard context; the context's
`environment` is the one evaluated. Unleash's server also fills `remoteAddress` from the client's
address; shipyard does not (a rule on `remoteAddress` needs the app to send it).

Metrics and registrations are accepted and counted (the request metrics on `/metrics`, by route)
but not stored: shipyard's own audit and metrics say who changed and evaluated what.

No `from __future__ import annotations` here: FastAPI must see the dependency aliases built inside
`build_router` as real objects, not strings.
"""

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Header, HTTPException, Request, Response, Security

from ...flags import (
    Evaluation,
    Flag,
    FlagSet,
    LiveFlagSet,
    Omitted,
    build_client_features,
    frontend_toggle,
    prerequisites_hold,
    unleash_context,
)
from .._auth import UNLEASH_KEY, TokenAuth
from .._fast import FastAnswer, FastRequest, FastRoute, json_bytes, json_loads
from .._stale_flags import STALE_HEADER
from .ofrep import ENVIRONMENT_HEADER

log = logging.getLogger(__name__)

CLIENT = "/api/client"
FRONTEND = "/api/frontend"
OMITTED_HEADER = "X-Shipyard-Unleash-Omitted"
UNLEASH_PLACEHOLDER_ENVIRONMENT = "default"
"""The environment Unleash's browser SDK puts in every context unless told otherwise."""
_TOP_LEVEL = ("userId", "sessionId", "remoteAddress", "currentTime", "appName", "environment")

# A web page on another origin calls the frontend API from the browser: any origin may, since the
# token travels in a header (never a cookie) and a client token only reads flags.
# A page may read the ETag, and whether the answer came from a stale flag set (`_stale_flags`).
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": f"ETag, {STALE_HEADER}"}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join(
        (
            "Authorization",
            "Content-Type",
            "If-None-Match",
            ENVIRONMENT_HEADER,
            "UNLEASH-APPNAME",
            "UNLEASH-CONNECTION-ID",
            "UNLEASH-INSTANCEID",
            "UNLEASH-SDK",
            "x-unleash-appname",
            "x-unleash-connection-id",
            "x-unleash-sdk",
        )
    ),
    "Access-Control-Max-Age": "600",
}
_CORS = [(k.lower().encode(), v.encode()) for k, v in CORS_HEADERS.items()]


def bearer(authorization: str | None) -> str | None:
    """Unleash's `Authorization: <token>` as shipyard's `Bearer <token>` (either is accepted)."""
    if not authorization:
        return None
    if authorization[:7].lower() == "bearer ":
        return authorization
    return f"Bearer {authorization.strip()}"


def _matches(etag: str, if_none_match: str | None) -> bool:
    if if_none_match is None:
        return False
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


def _etag(version: int, body: bytes) -> str:
    return f'"{version}-{hashlib.blake2b(body, digest_size=8).hexdigest()}"'


# --- the client API -------------------------------------------------------------------------------


class _ClientBodies:
    """The client API's body per environment, built once per flag-set version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = -1
        self._by_env: dict[str, tuple[bytes, str, list[Omitted]]] = {}

    def of(self, flagset: FlagSet, environment: str) -> tuple[bytes, str, list[Omitted]]:
        with self._lock:
            if flagset.version != self._version:
                self._version, self._by_env = flagset.version, {}
            found = self._by_env.get(environment)
        if found is None:
            exported = build_client_features(flagset, environment)
            body = json_bytes(exported.body)
            found = (body, _etag(flagset.version, body), exported.omitted)
            for omitted in exported.omitted:
                log.warning(
                    "Unleash client API, environment %s, version %d: flag %r is left out: %s",
                    environment, flagset.version, omitted.flag, omitted.reason,
                )  # fmt: skip
            with self._lock:
                if flagset.version == self._version:
                    if len(self._by_env) > 100:  # environments are few; a caller may name many
                        self._by_env.clear()
                    self._by_env[environment] = found
        return found


def _name_prefix(body: bytes, prefix: str) -> bytes:
    """The body with only the features whose name starts with `prefix` (Unleash's `namePrefix`)."""
    data = json_loads(body)
    data["features"] = [f for f in data["features"] if f["name"].startswith(prefix)]
    data["query"] = {**data["query"], "namePrefix": prefix}
    return json_bytes(data)


def client_features_answer(
    live: LiveFlagSet,
    bodies: _ClientBodies,
    environment: str,
    if_none_match: str | None,
    name_prefix: str | None,
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """`GET /api/client/features`: status, body and headers."""
    flagset, _ = live.current()
    body, etag, omitted = bodies.of(flagset, environment)
    if name_prefix:
        body = _name_prefix(body, name_prefix)
        etag = _etag(flagset.version, body)
    headers = [("ETag", etag)]
    if omitted:
        headers.append((OMITTED_HEADER, ",".join(quote(o.flag, safe="") for o in omitted)))
    if _matches(etag, if_none_match):
        return 304, b"", headers
    return 200, body, headers


# --- the frontend API -----------------------------------------------------------------------------


def query_context(query: Mapping[str, str]) -> dict[str, Any]:
    """The query's Unleash context as shipyard evaluates it: `properties[name]=value`, and any
    parameter that is not one of Unleash's own fields, are properties (as Unleash reads them)."""
    context: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for name, value in query.items():
        if name.startswith("properties[") and name.endswith("]"):
            properties[name[11:-1]] = value
        elif name in _TOP_LEVEL:
            context[name] = value
        else:
            properties[name] = value
    return evaluation_context({**context, "properties": properties})


def evaluation_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """An Unleash context as shipyard's evaluator reads it (`_unleash.unleash_context`): flat,
    string-valued, and with `currentTime` now when it has none, as Unleash's SDKs compare dates."""
    return unleash_context(context, now=datetime.now(UTC))


def _environment(context: Mapping[str, Any], header: str | None, default: str) -> str:
    if header:
        return header
    named = context.get("environment")
    if isinstance(named, str) and named and named != UNLEASH_PLACEHOLDER_ENVIRONMENT:
        return named
    return default


class _Toggles:
    """The frontend API's answer for one context, from a cache of each evaluation's JSON.

    Evaluations are built once per flag-set version (the evaluator's prebuilt results), so each
    one's toggle is serialised once and an answer is a join of cached fragments.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = -1
        self._flags: list[tuple[str, Flag, bool]] = []
        self._by_key: dict[str, Flag] = {}
        self._fragments: dict[tuple[int, bool | None], tuple[Evaluation, bytes]] = {}

    def _state(self, flagset: FlagSet) -> tuple[list[tuple[str, Flag, bool]], dict[Any, Any]]:
        with self._lock:
            if flagset.version != self._version:
                self._version = flagset.version
                self._flags = [
                    (f.key, f, f.type != "boolean" and bool(f.prerequisites)) for f in flagset.flags
                ]
                self._by_key = {f.key: f for f in flagset.flags}
                self._fragments = {}
            return self._flags, self._fragments

    def body(self, live: LiveFlagSet, context: dict[str, Any], environment: str) -> tuple[bytes, int]:
        flagset, evaluator = live.current()
        flags, fragments = self._state(flagset)
        context["environment"] = environment
        parts = []
        for key, flag, needs_prerequisites in flags:
            evaluation = evaluator.evaluate(key, context, environment)
            on = (
                prerequisites_hold(flag, self._by_key, evaluator, context, environment)
                if needs_prerequisites
                else None
            )
            cache_key = (id(evaluation), on)
            cached = fragments.get(cache_key)
            if cached is not None and cached[0] is evaluation:
                fragment = cached[1]
            else:
                toggle = frontend_toggle(flag, evaluation, on=on)
                fragment = json_bytes(toggle) if toggle is not None else b""
                if evaluation.error_code is None:  # error results are built per call: not cached
                    if len(fragments) > 100_000:
                        fragments.clear()
                    fragments[cache_key] = (evaluation, fragment)
            if fragment:
                parts.append(fragment)
        return b'{"toggles":[' + b",".join(parts) + b"]}", flagset.version


def frontend_answer(
    live: LiveFlagSet,
    toggles: _Toggles,
    context: dict[str, Any],
    env_header: str | None,
    default_environment: str,
    if_none_match: str | None,
) -> tuple[int, bytes, list[tuple[str, str]]]:
    """`GET`/`POST /api/frontend`: status, body and headers."""
    environment = _environment(context, env_header, default_environment)
    body, version = toggles.body(live, context, environment)
    etag = _etag(version, body)
    if _matches(etag, if_none_match):
        return 304, b"", [("ETag", etag)]
    return 200, body, [("ETag", etag)]


class _BadBody(Exception):
    pass


def _context_of_body(raw: bytes) -> dict[str, Any]:
    """A POST body's context: `{"context": {...}}` (Unleash's browser SDK) or the context itself."""
    if not raw.strip():
        return {}
    try:
        body = json_loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadBody(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadBody('the request body must be an object: {"context": {...}}')
    context = body.get("context", body)
    if not isinstance(context, dict):
        raise _BadBody(f"context must be an object, not {type(context).__name__}")
    return evaluation_context(context)


def _accepted(raw: bytes) -> str | None:
    """Why a metrics or register body is refused (not a JSON object), or None: it is accepted."""
    if not raw.strip():
        return None
    try:
        body = json_loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"the request body is not JSON: {exc}"
    return None if isinstance(body, dict) else "the request body must be a JSON object"


# --- routes ---------------------------------------------------------------------------------------


class UnleashApi:
    """The caches behind the routes, shared by the FastAPI router and the fast routes."""

    def __init__(self, live: LiveFlagSet, auth: TokenAuth, default_environment: str) -> None:
        self.live = live
        self.auth = auth
        self.default_environment = default_environment
        self.bodies = _ClientBodies()
        self.toggles = _Toggles()


def _json_response(body: Any, status: int, headers: Mapping[str, str]) -> Response:
    return Response(
        json_bytes(body), status_code=status, media_type="application/json", headers=dict(headers)
    )


def build_router(api: UnleashApi) -> APIRouter:
    """The client and frontend API routes over `api`'s live flag set."""
    router = APIRouter(tags=["Unleash-compatible APIs"])
    Authorization = Annotated[str | None, Security(UNLEASH_KEY)]  # OpenAPI: the unleashToken scheme
    EnvironmentHeader = Annotated[str | None, Header(alias=ENVIRONMENT_HEADER)]
    IfNoneMatch = Annotated[str | None, Header(alias="If-None-Match")]

    async def refused(request: Request, authorization: str | None, cors: bool) -> Response | None:
        """None when the request's token may read flags; else the 401/403 answer."""
        try:
            await api.auth.client(request, bearer(authorization))
        except HTTPException as exc:
            headers = {**(exc.headers or {}), **(CORS_HEADERS if cors else {})}
            return _json_response({"message": str(exc.detail)}, exc.status_code, headers)
        return None

    def answer(status: int, body: bytes, headers: list[tuple[str, str]], cors: bool) -> Response:
        all_headers = {**dict(headers), **(CORS_HEADERS if cors else {})}
        if status == 304:
            return Response(status_code=304, headers=all_headers)
        return Response(body, status_code=status, media_type="application/json", headers=all_headers)

    @router.get(
        f"{CLIENT}/features",
        response_class=Response,
        responses={
            200: {"description": "`{version: 2, features, segments, query, meta}`, with an ETag"},
            304: {"description": "Not modified: the If-None-Match ETag is current"},
            401: {"description": "No valid token"},
        },
    )
    async def client_features(
        request: Request,
        authorization: Authorization = None,
        env_header: EnvironmentHeader = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """Every flag as Unleash's client API serves it (Unleash's server SDKs evaluate locally)."""
        if (refusal := await refused(request, authorization, cors=False)) is not None:
            return refusal
        environment = env_header or api.default_environment
        status, body, headers = client_features_answer(
            api.live, api.bodies, environment, if_none_match, request.query_params.get("namePrefix")
        )
        return answer(status, body, headers, cors=False)

    async def accept(request: Request, authorization: str | None, cors: bool) -> Response:
        if (refusal := await refused(request, authorization, cors=cors)) is not None:
            return refusal
        problem = _accepted(await request.body())
        if problem is not None:
            return _json_response({"message": problem}, 400, CORS_HEADERS if cors else {})
        return Response(status_code=202, headers=CORS_HEADERS if cors else {})

    accepted: dict[int | str, dict[str, Any]] = {
        202: {"description": "Accepted (counted, not stored)"},
        400: {"description": "Not a JSON object"},
        401: {"description": "No valid token"},
    }

    @router.post(f"{CLIENT}/register", response_class=Response, status_code=202, responses=accepted)
    async def client_register(request: Request, authorization: Authorization = None) -> Response:
        """An SDK announcing itself: accepted."""
        return await accept(request, authorization, cors=False)

    @router.post(f"{CLIENT}/metrics", response_class=Response, status_code=202, responses=accepted)
    async def client_metrics(request: Request, authorization: Authorization = None) -> Response:
        """An SDK's usage counts: accepted."""
        return await accept(request, authorization, cors=False)

    @router.post(f"{FRONTEND}/client/register", response_class=Response, status_code=202, responses=accepted)
    async def frontend_register(request: Request, authorization: Authorization = None) -> Response:
        """A browser SDK announcing itself: accepted."""
        return await accept(request, authorization, cors=True)

    @router.post(f"{FRONTEND}/client/metrics", response_class=Response, status_code=202, responses=accepted)
    async def frontend_metrics(request: Request, authorization: Authorization = None) -> Response:
        """A browser SDK's usage counts: accepted."""
        return await accept(request, authorization, cors=True)

    frontend_responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "`{toggles: [{name, enabled, variant, impressionData}]}`, with an ETag"},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        400: {"description": "The body is not a JSON object"},
        401: {"description": "No valid token"},
    }

    @router.get(FRONTEND, response_class=Response, responses=frontend_responses)
    async def frontend_get(
        request: Request,
        authorization: Authorization = None,
        env_header: EnvironmentHeader = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """The enabled toggles for the query's context (`userId=…&properties[plan]=pro`)."""
        if (refusal := await refused(request, authorization, cors=True)) is not None:
            return refusal
        context = query_context(request.query_params)
        status, body, headers = frontend_answer(
            api.live, api.toggles, context, env_header, api.default_environment, if_none_match
        )
        return answer(status, body, headers, cors=True)

    @router.post(FRONTEND, response_class=Response, responses=frontend_responses)
    async def frontend_post(
        request: Request,
        authorization: Authorization = None,
        env_header: EnvironmentHeader = None,
        if_none_match: IfNoneMatch = None,
    ) -> Response:
        """The enabled toggles for the body's context (`{"context": {"userId": …, "properties": …}}`)."""
        if (refusal := await refused(request, authorization, cors=True)) is not None:
            return refusal
        try:
            context = _context_of_body(await request.body())
        except _BadBody as exc:
            return _json_response({"message": str(exc)}, 400, CORS_HEADERS)
        status, body, headers = frontend_answer(
            api.live, api.toggles, context, env_header, api.default_environment, if_none_match
        )
        return answer(status, body, headers, cors=True)

    @router.options(FRONTEND, include_in_schema=False)
    @router.options(f"{FRONTEND}/client/metrics", include_in_schema=False)
    @router.options(f"{FRONTEND}/client/register", include_in_schema=False)
    async def preflight() -> Response:
        """CORS preflight: a browser asks before it sends the Authorization header cross-origin."""
        return Response(status_code=204, headers=PREFLIGHT_HEADERS)

    return router


def fast_routes(api: UnleashApi) -> list[FastRoute]:
    """The frontend API's GET and POST on the fast path (`server._fast`), for a client token
    verified in the last seconds; anything else goes on to the FastAPI routes."""

    def actor(request: FastRequest) -> str | None:
        return api.auth.cached_actor(bearer(request.header(b"authorization")), "client")

    def respond(status: int, body: bytes, headers: list[tuple[str, str]], who: str) -> FastAnswer:
        encoded = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
        return FastAnswer(status, body, [*encoded, *_CORS], actor=who)

    def frontend(
        context_of: Callable[[FastRequest], dict[str, Any]],
    ) -> Callable[[FastRequest], FastAnswer | None]:
        def answer(request: FastRequest) -> FastAnswer | None:
            who = actor(request)
            if who is None:
                return None
            try:
                context = context_of(request)
            except _BadBody:
                return None  # the FastAPI route words the refusal
            status, body, headers = frontend_answer(
                api.live,
                api.toggles,
                context,
                request.header(ENVIRONMENT_HEADER.lower().encode()),
                api.default_environment,
                request.header(b"if-none-match"),
            )
            return respond(status, body, headers, who)

        return answer

    return [
        FastRoute("GET", FRONTEND, frontend(lambda request: query_context(request.query()))),
        FastRoute(
            "POST", FRONTEND, frontend(lambda request: _context_of_body(request.body)), reads_body=True
        ),
    ]
