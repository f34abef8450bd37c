"""The feature-flag REST API (a FastAPI router), seed 003's endpoints and what an SDK needs.

    GET    /feature-flags                  the whole flag set (ETag = its version; 304 on If-None-Match)
    POST   /feature-flags                  create a flag                                   (admin)
    POST   /feature-flags/import           write a whole flag set at once (?replace=true)  (admin)
    GET    /feature-flags/stream           Server-Sent Events: the flag set, then every new version
    POST   /feature-flags/evaluate         evaluate many flags for one context
    GET    /feature-flags/{key}            one flag (ETag = the flag's version)
    PUT    /feature-flags/{key}            replace it (If-Match: a stale version is 412)  (admin)
    PATCH  /feature-flags/{key}            JSON merge patch (RFC 7396)                    (admin)
    DELETE /feature-flags/{key}                                                           (admin)
    GET    /feature-flags/{key}/value      evaluate: ?userId=&role=&environment=, other params are attributes
    GET    /feature-flags/{key}/audit      who changed it, when, before and after          (admin)
    GET    /feature-segments, PUT|DELETE /feature-segments/{name}

Every write goes through the flag verbs of `shipyard.ops` (the ones the CLI calls), handed the
store the live flag set follows, so that evaluations on this server see a change at once. Reads
come from the live snapshot or the store. Errors are raised as `shipyard.errors` exceptions; the
server turns them into RFC 9457 problem+json. Authentication is injected by the server (`admin`
and `client` dependencies, each returning the actor).

Bodies are camelCase both ways, as seed 003 writes them (`defaultValue`): `shipyard.flags._wire`
renames field names at this edge, and files, the store and Python keep snake_case. snake_case bodies
are still accepted for one release (clients older than issue 14 send them). A failed `If-Match` is
412 (RFC 9110 §13.1.1); 409 is kept for a real conflict (creating a key that exists).

No `from __future__ import annotations` here: FastAPI must see the dependency aliases built
inside `build_router` as real objects, not strings.
"""

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from ... import ops
from ...errors import InvalidObjectError, NotFoundError, PreconditionFailedError, StateStoreUnavailable
from ...flags import (
    AuditEntry,
    ErrorCode,
    Flag,
    FlagSet,
    LiveFlagSet,
    LocalBackend,
    Segment,
    evaluation_data,
    flag_to_snake,
    flag_to_wire,
    flagset_to_wire,
    new_key_problem,
    segment_to_wire,
)
from ...ops import (
    CreateFlag,
    DeleteFlag,
    DeleteSegment,
    FlagChanged,
    ImportFlags,
    PutSegment,
    SetFlag,
    Workspace,
)
from ...state import rfc3339
from .._auth import TokenAuth
from .._fast import FastAnswer, FastRequest, FastRoute, json_bytes

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# The response models document the bodies (the OpenAPI document shows the flag model's camelCase
# aliases); the routes build the bodies themselves with `shipyard.flags._wire`, defaults left out
# as in the flag files, rather than validating every stored flag again on the way out.


class FlagSetOut(BaseModel):
    version: int
    flags: list[Flag]
    segments: list[Segment]


class FlagOut(BaseModel):
    version: int
    flag: Flag


class SegmentOut(BaseModel):
    version: int
    segment: Segment


class EvaluationOut(BaseModel):
    key: str
    value: Any
    variant: str | None
    reason: str
    error_code: str | None = Field(None, alias="errorCode")
    error_message: str | None = Field(None, alias="errorMessage")
    flag_set_version: int = Field(alias="flagSetVersion")


class EvaluateIn(BaseModel):
    context: dict[str, Any] = {}
    environment: str | None = None
    keys: list[str] | None = None


class EvaluateOut(BaseModel):
    flag_set_version: int = Field(alias="flagSetVersion")
    environment: str
    results: dict[str, EvaluationOut]


class ImportOut(BaseModel):
    version: int


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _flagset_body(flagset: FlagSet) -> dict[str, Any]:
    """The flag set as the list route and the stream both send it (empty lists included), camelCase."""
    data = flagset.to_data()
    return flagset_to_wire(
        {"version": flagset.version, "flags": data.get("flags", []), "segments": data.get("segments", [])}
    )


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


async def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object. Read here rather than by a `Body()` parameter so that the OpenAPI
    document can describe the body with the flag model (each route's `openapi_extra`) while the
    flag verbs keep validating it, with their field-by-field problems."""
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidObjectError(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidObjectError("the request body must be a JSON object")
    return body


_CAMEL = (
    "Field names are camelCase, as seed 003 writes them (`defaultValue`), in requests and responses. "
    "snake_case names (`default_value`) are still accepted in requests for one release, for clients "
    "older than this one; responses are camelCase only."
)


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose JSON body `_json_object` reads."""
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema}},
        }
    }


_FLAG_BODY = _body({"$ref": "#/components/schemas/Flag"}, "A flag. " + _CAMEL)
_PATCH_BODY = _body(
    {"type": "object", "additionalProperties": True},
    "A JSON merge patch (RFC 7396) of the flag: the fields to change, null to remove one. " + _CAMEL,
)
_SEGMENT_BODY = _body({"$ref": "#/components/schemas/Segment"}, "A segment. " + _CAMEL)
_IMPORT_BODY = _body(
    {"type": "object", "additionalProperties": True},
    "A flag set: `{flags: [...], segments: [...]}` (the `shipyard flags export` format). " + _CAMEL,
)
_PRECONDITION: dict[int | str, dict[str, Any]] = {
    412: {"description": "Precondition Failed: If-Match names a version the object is not at"}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"description": "Conflict: a flag with this key exists"}}


def _etag(version: int) -> str:
    return f'"{version}"'


def _if_match(value: str | None) -> int | None:
    """The version an If-Match header names; None when absent or `*`."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        # An entity tag this server never issued matches no version: the condition is false (412).
        raise PreconditionFailedError(
            f"If-Match {value!r} is not a version this server issued (expected e.g. '\"3\"')"
        )
    return int(text)


def _evaluation_out(key: str, evaluation: Any, version: int) -> EvaluationOut:
    return EvaluationOut(
        key=key,
        value=evaluation.value,
        variant=evaluation.variant,
        reason=str(evaluation.reason),
        errorCode=str(evaluation.error_code) if evaluation.error_code else None,
        errorMessage=evaluation.error_message,
        flagSetVersion=version,
    )


def _audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        id=entry.id,
        at=rfc3339(entry.at),
        actor=entry.actor,
        action=entry.action,
        target=entry.target,
        before=flag_to_wire(entry.before) if entry.before is not None else None,
        after=flag_to_wire(entry.after) if entry.after is not None else None,
    )


def _flag_value(
    live: LiveFlagSet, key: str, query: Mapping[str, str], default_environment: str
) -> bytes | None:
    """`GET /feature-flags/{key}/value`'s JSON body for the query's context; None for no such flag.

    Every query parameter but `environment` is an attribute of the context (strings, as sent):
    `userId` and `role` as any other; the context's `environment` is the one evaluated.
    """
    context: dict[str, Any] = {k: v for k, v in query.items() if k != "environment"}
    environment = query.get("environment") or default_environment
    context["environment"] = environment
    flagset, evaluator = live.current()  # one snapshot: the value and its version go together
    evaluation = evaluator.evaluate(key, context, environment)
    if evaluation.error_code == ErrorCode.FLAG_NOT_FOUND:
        return None
    # Serialised from the plain dict rather than through the response model (which documents it).
    return json_bytes(evaluation_data(key, evaluation, flagset.version))


def value_fast_route(
    live: LiveFlagSet, auth: TokenAuth, default_environment: str = "production"
) -> FastRoute:
    """`GET /feature-flags/{key}/value` for a client token verified in the last seconds (`_fast`)."""

    def answer(request: FastRequest) -> FastAnswer | None:
        actor = auth.cached_actor(request.header(b"authorization"), "client")
        if actor is None:
            return None
        body = _flag_value(live, request.param, request.query(), default_environment)
        return FastAnswer(200, body, actor=actor) if body is not None else None

    return FastRoute("GET", "/feature-flags/{key}/value", answer)


def _workspace(actor: str, environment: str) -> Workspace:
    """The workspace a flag verb runs in for an API request: the request's actor.

    Flag verbs read neither the spec nor the workspace's own store when handed a backend (the
    router hands them the live set's store): the workspace has no spec.
    """
    return Workspace(environment=environment, actor=actor)


def build_router(
    live: LiveFlagSet,
    *,
    admin: Callable[..., Any],
    client: Callable[..., Any],
    default_environment: str = "production",
) -> APIRouter:
    """The router over one live flag set; `admin`/`client` are dependencies returning the actor."""
    store = live.store
    router = APIRouter(tags=["feature flags"])
    Admin = Annotated[str, Depends(admin)]
    Client = Annotated[str, Depends(client)]
    IfMatch = Annotated[str | None, Header(alias="If-Match")]
    JsonBody = Annotated[dict[str, Any], Depends(_json_object)]

    def backend(actor: str) -> LocalBackend:
        return LocalBackend(store, actor)

    def ws(actor: str) -> Workspace:
        return _workspace(actor, default_environment)

    def flag_response(changed: FlagChanged, status_code: int = 200, **headers: str) -> Response:
        assert changed.version is not None  # a create or an update leaves a versioned flag
        assert changed.after is not None
        body = {"version": changed.version, "flag": flag_to_wire(changed.after)}
        return _json(body, status_code, {"ETag": _etag(changed.version), **headers})

    @router.get("/feature-flags", response_model=FlagSetOut, responses={304: {"description": "Not modified"}})
    def list_flags(
        _: Client,
        response: Response,
        if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    ) -> Any:
        flagset = live.flagset
        if (since := live.stale_since) is not None:
            # Not served from memory as an evaluation is: a client that reads the whole set (the
            # SDK, a backup of the flags) must not take a set the store could not confirm as current.
            raise StateStoreUnavailable(
                f"the state store has not answered since {rfc3339(since)}; flag evaluations go on"
                " from the flag set read then, reading the set needs the store"
            )
        etag = _etag(flagset.version)
        if if_none_match is not None and etag in [
            t.strip().removeprefix("W/") for t in if_none_match.split(",")
        ]:
            return Response(status_code=304, headers={"ETag": etag})
        return _json(_flagset_body(flagset), headers={"ETag": etag})

    @router.post(
        "/feature-flags",
        response_model=FlagOut,
        status_code=201,
        responses=_CONFLICT,
        openapi_extra=_FLAG_BODY,
        description="Create a flag, e.g. seed 003's `{key, type, defaultValue, description}`. " + _CAMEL,
    )
    def create_flag(actor: Admin, body: JsonBody) -> Response:
        if problem := new_key_problem(body.get("key")):  # imported flags may keep Unleash's names
            raise InvalidObjectError(problem, [("key", problem)])
        request = CreateFlag(flag=flag_to_snake(body))
        changed = ops.create_flag(ws(actor), request, backend=backend(actor))
        return flag_response(changed, 201, Location=f"/feature-flags/{changed.key}")

    @router.get(
        "/feature-flags/stream",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "the flag set on each change"}},
    )
    async def stream(_: Client, request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            async for flagset in live.changes():
                if await request.is_disconnected():
                    return
                if flagset is None:
                    yield ": keep-alive\n\n"
                    continue
                payload = json.dumps(_flagset_body(flagset), separators=(",", ":"))
                yield f"id: {flagset.version}\nevent: flagset\ndata: {payload}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    @router.post("/feature-flags/import", response_model=ImportOut, openapi_extra=_IMPORT_BODY)
    def import_flags(actor: Admin, body: JsonBody, replace: Annotated[bool, Query()] = False) -> ImportOut:
        """Write a whole flag set (the export format) in one transaction; `replace` deletes the rest."""
        request = ImportFlags(flags=body, replace=replace)
        imported = ops.import_flags(ws(actor), request, backend=backend(actor))
        return ImportOut(version=imported.version)

    @router.post("/feature-flags/evaluate", response_model=EvaluateOut, response_model_by_alias=True)
    def evaluate_many(_: Client, body: EvaluateIn) -> EvaluateOut:
        # One snapshot for the whole answer: its evaluator and its version go together.
        flagset, evaluator = live.current()
        version = flagset.version
        environment = body.environment or default_environment
        keys = body.keys if body.keys is not None else list(evaluator.keys)
        results = {
            key: _evaluation_out(key, evaluator.evaluate(key, body.context, environment), version)
            for key in keys
        }
        return EvaluateOut(flagSetVersion=version, environment=environment, results=results)

    @router.get("/feature-flags/{key}", response_model=FlagOut)
    def get_flag(_: Client, key: str) -> Response:
        stored = store.get(key)
        body = {"version": stored.version, "flag": flag_to_wire(stored.data)}
        return _json(body, headers={"ETag": _etag(stored.version)})

    @router.put(
        "/feature-flags/{key}",
        response_model=FlagOut,
        responses=_PRECONDITION,
        openapi_extra=_FLAG_BODY,
        description="Replace the flag (If-Match: its version, else 412). " + _CAMEL,
    )
    def replace_flag(actor: Admin, key: str, body: JsonBody, if_match: IfMatch = None) -> Response:
        request = SetFlag(key=key, definition=flag_to_snake(body), if_match=_if_match(if_match))
        return flag_response(ops.set_flag(ws(actor), request, backend=backend(actor)))

    @router.patch(
        "/feature-flags/{key}",
        response_model=FlagOut,
        responses=_PRECONDITION,
        openapi_extra=_PATCH_BODY,
        description="Change some of the flag's fields (If-Match: its version, else 412). " + _CAMEL,
    )
    def patch_flag(actor: Admin, key: str, body: JsonBody, if_match: IfMatch = None) -> Response:
        # Renamed before the merge: a camelCase field replaces the stored snake_case one.
        request = SetFlag(key=key, merge_patch=flag_to_snake(body), if_match=_if_match(if_match))
        return flag_response(ops.set_flag(ws(actor), request, backend=backend(actor)))

    @router.delete("/feature-flags/{key}", status_code=204, responses=_PRECONDITION)
    def delete_flag(actor: Admin, key: str, if_match: IfMatch = None) -> Response:
        request = DeleteFlag(key=key, if_match=_if_match(if_match))
        ops.delete_flag(ws(actor), request, backend=backend(actor))
        return Response(status_code=204)

    @router.get("/feature-flags/{key}/value", response_model=EvaluationOut, response_model_by_alias=True)
    async def flag_value(
        _: Client,
        key: str,
        request: Request,
        # Declared for the OpenAPI document; the context is built from the whole query string.
        environment: Annotated[str | None, Query()] = None,
        user_id: Annotated[str | None, Query(alias="userId")] = None,
        role: Annotated[str | None, Query()] = None,
    ) -> Response:
        # Most requests are answered by `value_fast_route` before they get here; this answers the
        # rest (a token not verified in the last seconds, an unknown flag) the same way.
        body = _flag_value(live, key, request.query_params, default_environment)
        if body is None:
            raise NotFoundError(f"no flag {key!r}")
        return Response(body, media_type="application/json")

    @router.get("/feature-flags/{key}/audit", response_model=list[AuditOut])
    def flag_audit(_: Admin, key: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[AuditOut]:
        """Who changed the flag, when, before and after: admin only, since the entries name the
        actors and hold every past value (a client token evaluates flags, it does not audit them)."""
        entries = store.audit(key, limit=limit)
        if not entries:
            store.get(key)  # every write is audited: no entries means no such flag (404)
        return [_audit_out(entry) for entry in entries]

    @router.get("/feature-segments", response_model=list[SegmentOut])
    def list_segments(_: Client) -> Response:
        data = live.flagset.to_data().get("segments", [])
        return _json(
            [{"version": store.get_segment(s["name"]).version, "segment": segment_to_wire(s)} for s in data]
        )

    @router.put(
        "/feature-segments/{name}",
        response_model=SegmentOut,
        responses=_PRECONDITION,
        openapi_extra=_SEGMENT_BODY,
    )
    def put_segment(actor: Admin, name: str, body: JsonBody, if_match: IfMatch = None) -> Response:
        request = PutSegment(name=name, segment=body, if_match=_if_match(if_match))
        changed = ops.put_segment(ws(actor), request, backend=backend(actor))
        assert changed.version is not None  # a put leaves a versioned segment
        assert changed.after is not None
        body = {"version": changed.version, "segment": segment_to_wire(changed.after)}
        return _json(body, headers={"ETag": _etag(changed.version)})

    @router.delete("/feature-segments/{name}", status_code=204, responses=_PRECONDITION)
    def delete_segment(actor: Admin, name: str, if_match: IfMatch = None) -> Response:
        request = DeleteSegment(name=name, if_match=_if_match(if_match))
        ops.delete_segment(ws(actor), request, backend=backend(actor))
        return Response(status_code=204)

    return router
