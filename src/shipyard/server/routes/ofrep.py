"""The OpenFeature Remote Evaluation Protocol (OFREP v1): any OpenFeature SDK's OFREP provider.

    POST /ofrep/v1/evaluate/flags/{key}   one flag for one context (server SDKs: a NestJS app)
    POST /ofrep/v1/evaluate/flags         every flag for one context (web SDKs: a Next.js page);
                                          ETag, and 304 on a matching If-None-Match

Both take `{"context": {...}}` and answer with the protocol's shapes: `{key, value, reason,
variant, metadata}` on success, `{key, errorCode, errorDetails}` on failure. Evaluation is the
server's one evaluator (the live flag set the seed-003 routes use), so every API gives the same
answer for the same context.

How shipyard's notions map onto the protocol's:
- The context's `targetingKey` becomes the `userId` attribute (the default stickiness of
  rollouts and splits, and what user-id rules test), as shipyard's own OpenFeature provider does;
  every other context attribute passes through unchanged.
- The environment is the context's `environment` attribute when it is a string, else the
  `X-Shipyard-Environment` header (set once in a provider's `headers`), else the server's
  `--env`. Tokens are not bound to an environment: a client token may evaluate any of them.
- Authentication is a client (or admin) token, as `Authorization: Bearer <token>` or, as the
  protocol also allows, `X-API-Key: <token>`; 401 without a valid one, 403 for a lesser scope.
- Reasons are shipyard's (STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED: all OpenFeature
  reasons). `variant` is the split's or the rule's variant name; a value served without one is
  named after where it came from: `default` (the flag's or the environment's value), `disabled`,
  or `rule` (a matching rule that names no variant). Python's OFREP provider requires the field.
- `metadata` carries the flag's `type`, `kind`, `owner` and `description` (the latter two only
  when set), the `environment` evaluated and the `flagSetVersion`; the bulk answer's own
  `metadata` has the last two.
- Errors: a body that is not JSON is 400 PARSE_ERROR; a context that is not an object is 400
  INVALID_CONTEXT; an unknown flag is 404 FLAG_NOT_FOUND; an evaluation that failed inside the
  evaluator is 500 GENERAL. shipyard never rate-limits (no 429) and never requires a targeting
  key (a rollout without its stickiness attribute does not match, or buckets at random, as the
  rule says), so TARGETING_KEY_MISSING is never sent.
- The bulk ETag is the flag set's version with a digest of the environment and the context: it
  changes when any flag or segment changes, and a client whose context changed is never told
  "not modified" about another context's answer.

No `from __future__ import annotations` here: FastAPI must see the dependency aliases built
inside `build_router` as real objects, not strings.
"""

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response, Security

from ...flags import ErrorCode, Evaluation, FlagSet, LiveFlagSet, Reason
from .._auth import API_KEY, TokenAuth, bearer_header
from .._fast import FastAnswer, FastRequest, FastRoute, json_bytes, json_loads
from .._stale_flags import STALE_HEADER

PREFIX = "/ofrep/v1"
ENVIRONMENT_HEADER = "X-Shipyard-Environment"

# A web page on another origin (a Next.js app) calls these routes from the browser: any origin may,
# since the token travels in a header (never a cookie) and a client token only reads flags.
# A page may read the ETag, and whether the answer came from a stale flag set (`_stale_flags`).
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": f"ETag, {STALE_HEADER}"}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join(
        ("Authorization", "Content-Type", "If-None-Match", "X-API-Key", ENVIRONMENT_HEADER)
    ),
    "Access-Control-Max-Age": "600",
}

_UNNAMED_VARIANT = {
    Reason.STATIC: "default",
    Reason.DEFAULT: "default",
    Reason.DISABLED: "disabled",
    Reason.TARGETING_MATCH: "rule",
    Reason.SPLIT: "rule",
}

_CONTEXT_SCHEMA = {
    "type": "object",
    "properties": {
        "context": {
            # null, like no context at all, is the empty context (`_context`)
            "type": ["object", "null"],
            "description": "The evaluation context: `targetingKey` (the user's id) and any attributes",
            "additionalProperties": True,
        }
    },
}
_REQUEST_BODY = {"requestBody": {"content": {"application/json": {"schema": _CONTEXT_SCHEMA}}}}


class _BadRequest(Exception):
    def __init__(self, code: ErrorCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json_bytes(body), status_code=status, media_type="application/json", headers=headers or CORS_HEADERS
    )


def _context(raw: bytes) -> dict[str, Any]:
    """The request's context as shipyard's evaluator reads it, or _BadRequest."""
    if not raw.strip():
        return {}
    try:
        body = json_loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(ErrorCode.PARSE_ERROR, f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest(ErrorCode.INVALID_CONTEXT, 'the request body must be an object: {"context": {...}}')
    context = body.get("context")
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise _BadRequest(
            ErrorCode.INVALID_CONTEXT, f"context must be an object, not {type(context).__name__}"
        )
    targeting_key = context.get("targetingKey")
    if isinstance(targeting_key, str):
        context = {**context, "userId": targeting_key}
    return context


def _environment(context: dict[str, Any], header: str | None, default: str) -> str:
    named = context.get("environment")
    if isinstance(named, str) and named:
        return named
    return header or default


class _Metadata:
    """Each flag's OFREP metadata, built once per flag-set version and environment."""

    def __init__(self) -> None:
        self._version = -1
        self._by_env: dict[str, dict[str, dict[str, Any]]] = {}

    def of(self, flagset: FlagSet, environment: str) -> dict[str, dict[str, Any]]:
        if flagset.version != self._version:
            self._version, self._by_env = flagset.version, {}
        found = self._by_env.get(environment)
        if found is None:
            found = {}
            for flag in flagset.flags:
                data: dict[str, Any] = {"type": flag.type, "kind": flag.kind}
                if flag.owner:
                    data["owner"] = flag.owner
                if flag.description:
                    data["description"] = flag.description
                data["environment"] = environment
                data["flagSetVersion"] = flagset.version
                found[flag.key] = data
            if len(self._by_env) > 100:  # environments are few; a hostile caller may name many
                self._by_env.clear()
            self._by_env[environment] = found
        return found


def _result(key: str, evaluation: Evaluation, metadata: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the OFREP body of one evaluation."""
    code = evaluation.error_code
    if code is None:
        variant = evaluation.variant or _UNNAMED_VARIANT.get(evaluation.reason, "default")
        body: dict[str, Any] = {
            "key": key,
            "value": evaluation.value,
            "reason": str(evaluation.reason),
            "variant": variant,
        }
        if metadata is not None:
            body["metadata"] = metadata
        return 200, body
    details = evaluation.error_message or str(code)
    status = 404 if code == ErrorCode.FLAG_NOT_FOUND else 500 if code == ErrorCode.GENERAL else 400
    return status, {"key": key, "errorCode": str(code), "errorDetails": details}


def _failure(exc: _BadRequest, key: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"errorCode": str(exc.code), "errorDetails": exc.details}
    return {"key": key, **body} if key is not None else body


class _SingleEvaluation:
    """`POST /evaluate/flags/{key}` once authorized: its status and body (the FastAPI route and the
    fast route both answer with it)."""

    def __init__(self, live: LiveFlagSet, default_environment: str) -> None:
        self.live = live
        self.default_environment = default_environment
        self.metadata = _Metadata()

    def answer(self, key: str, raw: bytes, env_header: str | None) -> tuple[int, dict[str, Any]]:
        try:
            context = _context(raw)
        except _BadRequest as exc:
            return 400, _failure(exc, key)
        environment = _environment(context, env_header, self.default_environment)
        flagset, evaluator = self.live.current()  # one snapshot, one version check
        evaluation = evaluator.evaluate(key, context, environment)
        flag_metadata = None if evaluation.error_code else self.metadata.of(flagset, environment).get(key)
        return _result(key, evaluation, flag_metadata)


_CORS_RAW_HEADERS = [(name.lower().encode(), value.encode()) for name, value in CORS_HEADERS.items()]


def _bearer_or_api_key(authorization: str | None, api_key: str | None) -> str | None:
    """The Authorization header to check: the protocol also allows `X-API-Key: <token>`."""
    return f"Bearer {api_key}" if authorization is None and api_key else authorization


def evaluate_fast_route(
    live: LiveFlagSet, auth: TokenAuth, default_environment: str = "production"
) -> FastRoute:
    """`POST /evaluate/flags/{key}` for a token verified in the last seconds (`server._fast`)."""
    single = _SingleEvaluation(live, default_environment)

    def answer(request: FastRequest) -> FastAnswer | None:
        authorization = _bearer_or_api_key(request.header(b"authorization"), request.header(b"x-api-key"))
        actor = auth.cached_actor(authorization, "client")
        if actor is None:
            return None
        environment = request.header(ENVIRONMENT_HEADER.lower().encode())
        status, body = single.answer(request.param, request.body, environment)
        return FastAnswer(status, json_bytes(body), _CORS_RAW_HEADERS, actor)

    return FastRoute("POST", f"{PREFIX}/evaluate/flags/{{key}}", answer, reads_body=True)


def _etag(version: int, environment: str, context: dict[str, Any]) -> str:
    canonical = json.dumps([environment, context], sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    return f'"{version}-{digest}"'


def _matches(etag: str, if_none_match: str | None) -> bool:
    if if_none_match is None:
        return False
    return any(tag.strip().removeprefix("W/") in (etag, "*") for tag in if_none_match.split(","))


def build_router(live: LiveFlagSet, *, auth: TokenAuth, default_environment: str = "production") -> APIRouter:
    """The OFREP router over one live flag set; `auth` checks the client token."""
    router = APIRouter(prefix=PREFIX, tags=["OpenFeature Remote Evaluation Protocol"])
    single = _SingleEvaluation(live, default_environment)
    metadata = single.metadata

    async def authorize(request: Request, authorization: str | None, api_key: str | None) -> Response | None:
        """None when the request's token may evaluate; else the 401/403 (with CORS headers)."""
        try:
            await auth.client(request, _bearer_or_api_key(authorization, api_key))
        except HTTPException as exc:
            body = {"errorDetails": str(exc.detail)}
            return _json(body, exc.status_code, headers={**(exc.headers or {}), **CORS_HEADERS})
        return None

    # Declared to OpenAPI as the bearer scheme, or else X-API-Key:
    Authorization = Annotated[str | None, Depends(bearer_header)]
    ApiKey = Annotated[str | None, Security(API_KEY)]
    EnvironmentHeader = Annotated[str | None, Header(alias=ENVIRONMENT_HEADER)]

    responses: dict[int | str, dict[str, Any]] = {
        400: {"description": "PARSE_ERROR or INVALID_CONTEXT: `{key, errorCode, errorDetails}`"},
        401: {"description": "No valid token"},
        403: {"description": "The token may not evaluate flags"},
    }

    @router.post(
        "/evaluate/flags/{key}",
        response_class=Response,
        openapi_extra=_REQUEST_BODY,
        responses={
            200: {"description": "`{key, value, reason, variant, metadata}`"},
            404: {"description": "FLAG_NOT_FOUND: `{key, errorCode, errorDetails}`"},
            **responses,
        },
    )
    async def evaluate_flag(
        key: str,
        request: Request,
        authorization: Authorization = None,
        api_key: ApiKey = None,
        env_header: EnvironmentHeader = None,
    ) -> Response:
        """Evaluate one flag for the body's context."""
        # Most requests are answered by `evaluate_fast_route` before they get here; this answers
        # the rest (a token not verified in the last seconds, a refused one) the same way.
        if (refused := await authorize(request, authorization, api_key)) is not None:
            return refused
        status, body = single.answer(key, await request.body(), env_header)
        return _json(body, status)

    @router.post(
        "/evaluate/flags",
        response_class=Response,
        openapi_extra=_REQUEST_BODY,
        responses={
            200: {"description": "`{flags: [...], metadata}`, with an ETag"},
            304: {"description": "Not modified: the If-None-Match ETag is current"},
            **responses,
        },
    )
    async def evaluate_flags(
        request: Request,
        authorization: Authorization = None,
        api_key: ApiKey = None,
        env_header: EnvironmentHeader = None,
        if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    ) -> Response:
        """Evaluate every flag for the body's context (what a browser SDK caches and polls)."""
        if (refused := await authorize(request, authorization, api_key)) is not None:
            return refused
        try:
            context = _context(await request.body())
        except _BadRequest as exc:
            return _json(_failure(exc), 400)
        environment = _environment(context, env_header, default_environment)
        flagset, evaluator = live.current()  # one snapshot, one version check
        etag = _etag(flagset.version, environment, context)
        if _matches(etag, if_none_match):
            return Response(status_code=304, headers={"ETag": etag, **CORS_HEADERS})
        by_key = metadata.of(flagset, environment)
        flags = []
        for key in evaluator.keys:
            evaluation = evaluator.evaluate(key, context, environment)
            flags.append(_result(key, evaluation, by_key.get(key))[1])
        body = {"flags": flags, "metadata": {"environment": environment, "flagSetVersion": flagset.version}}
        return _json(body, headers={"ETag": etag, **CORS_HEADERS})

    @router.options("/evaluate/flags", include_in_schema=False)
    @router.options("/evaluate/flags/{key}", include_in_schema=False)
    async def preflight() -> Response:
        """CORS preflight: a browser asks before it sends the Authorization header cross-origin."""
        return Response(status_code=204, headers=PREFLIGHT_HEADERS)

    return router
