"""The OpenAPI document's error responses, and `/docs` served from this server alone.

Errors: every route answers them as RFC 9457 problem+json (`_app.problem`), so the document says
so once, here, rather than in each route's decorator: the `Problem` schema, and for each
operation the answers it can give besides its own: 401 and 403 when it takes a token, 404 when
its path names an object (`{key}`, `{service}`, …), 409 when it changes something (a write that
lost a race for the object, or a lease another release, restore or drill holds), 413 when it
takes a body, 400 when that body cannot be read at all (not UTF-8), 422 for a request that is not
valid (FastAPI's default says `HTTPValidationError`, which this server never sends) and 503 when
the state store cannot be reached. A response a route declares itself keeps its description and
gains the problem+json body. The OFREP and Unleash routes answer their protocols' own error
bodies and are left as they declare themselves, but for the 503 of a store that cannot check
their token.

Links (`LINKS`): where an answer names an object another operation reads or changes (a created
flag's key and ETag, a started job's id, a listed set's id), so that a client, and Schemathesis's
stateful phase, can follow them. Each is written here rather than guessed from names: a job
started by `POST /backups` is a job, not a backup set.

Docs: Swagger UI's files come from the `swagger-ui-bundle-v2` package and are served under
DOCS_ASSETS, so `/docs` works on a host with no internet access and loads nothing from a CDN.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

PROBLEM_MEDIA_TYPE = "application/problem+json"
DOCS_ASSETS = "/docs/assets"
OWN_ERROR_BODIES = ("/ofrep/", "/api/")
"""Routes that answer in their protocol's error format (OFREP's `errorDetails`, Unleash's)."""
READ_ONLY_POSTS = frozenset({"/feature-flags/evaluate"})
"""POST routes that change nothing (a body carries what a query string could not): no 409."""
_WRITES = frozenset({"post", "put", "patch", "delete"})
_PATH_PARAMETER = re.compile(r"\{[^}]+\}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem: what went wrong, and for a bad request which fields.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_ANSWERS = {
    "400": "Bad Request: the body could not be read (not UTF-8 text)",
    "401": "Unauthorized: no token, or not a valid one",
    "403": "Forbidden: the token's scope does not allow this",
    "404": "Not Found: the object the path names does not exist",
    "409": "Conflict: the object changed meanwhile, or other work holds it (a release, restore, drill)",
    "413": "Payload Too Large: the body is over the server's limit",
    "422": "Unprocessable Content: the request is not valid (`errors` names each field)",
    "503": "Service Unavailable: the state store cannot be reached",
}  # fmt: skip


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _answers(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses `operation` can answer besides those it declares."""
    answers = []
    if operation.get("parameters") or "requestBody" in operation or "422" in operation["responses"]:
        answers.append("422")
    if operation.get("security"):  # the token is checked against the state store
        answers += ["401", "403", "503"]
    if _PATH_PARAMETER.search(path):
        answers.append("404")
    if method in _WRITES and path not in READ_ONLY_POSTS:
        answers.append("409")
    if "requestBody" in operation:
        answers += ["400", "413"]
    return answers


def _link(path: str, method: str, **parameters: str) -> dict[str, Any]:
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {"operationRef": f"#/paths/{pointer}/{method}", "parameters": parameters}


def _job_links(job_id: str) -> dict[str, dict[str, Any]]:
    return {
        "GetJob": _link("/jobs/{job_id}", "get", job_id=job_id),
        "GetJobLog": _link("/jobs/{job_id}/log", "get", job_id=job_id),
        "CancelJob": _link("/jobs/{job_id}/cancel", "post", job_id=job_id),
    }


_FLAG = "$response.body#/flag/key"
_AT_ITS_VERSION = {"header.If-Match": "$response.header.ETag"}
_CREATED_FLAG = {
    "GetFlag": _link("/feature-flags/{key}", "get", key=_FLAG),
    "ReplaceFlag": _link("/feature-flags/{key}", "put", key=_FLAG, **_AT_ITS_VERSION),
    "PatchFlag": _link("/feature-flags/{key}", "patch", key=_FLAG, **_AT_ITS_VERSION),
    "DeleteFlag": _link("/feature-flags/{key}", "delete", key=_FLAG, **_AT_ITS_VERSION),
    "FlagValue": _link("/feature-flags/{key}/value", "get", key=_FLAG),
    "FlagAudit": _link("/feature-flags/{key}/audit", "get", key=_FLAG),
    "EvaluateFlag": _link("/ofrep/v1/evaluate/flags/{key}", "post", key=_FLAG),
}  # fmt: skip
_FIRST_SET = "$response.body#/0/id"
_FIRST_SERVICE = "$response.body#/0/service"
LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
    ("/feature-flags", "post", "201"): _CREATED_FLAG,
    ("/feature-flags/{key}", "put", "200"): _CREATED_FLAG,
    ("/feature-flags/{key}", "patch", "200"): _CREATED_FLAG,
    ("/feature-segments/{name}", "put", "200"): {
        "DeleteSegment": _link("/feature-segments/{name}", "delete", name="$response.body#/segment/name",
                               **_AT_ITS_VERSION),
    },
    ("/backups", "get", "200"): {
        "GetBackup": _link("/backups/{set_id}", "get", set_id=_FIRST_SET),
        "VerifyBackup": _link("/backups/{set_id}/verify", "post", set_id=_FIRST_SET),
        "RestoreBackup": _link("/backups/{set_id}/restore", "post", set_id=_FIRST_SET),
    },
    ("/jobs", "get", "200"): _job_links("$response.body#/0/id"),
    ("/rollouts", "get", "200"): {
        "GetRollout": _link("/rollouts/{service}", "get", service=_FIRST_SERVICE),
        "RolloutHistory": _link("/rollouts/{service}/history", "get", service=_FIRST_SERVICE),
    },
    **{
        (path, "post", "202"): _job_links("$response.body#/id")
        for path in ("/backups", "/backups/{set_id}/verify", "/backups/{set_id}/restore", "/dr/drills",
                     "/rollouts/{service}/deploy", "/rollouts/{service}/rollback")
    },
}  # fmt: skip
"""(path, method, status) → the links of that answer, by name (OpenAPI `links`)."""


def _with_links(paths: dict[str, Any]) -> None:
    for (path, method, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is not None:
            response["links"] = links


def with_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with the Problem schema and each operation's problem+json answers (in place)."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if path.startswith(OWN_ERROR_BODIES):
                if "422" in responses:  # FastAPI's own check of the parameters: a problem here too
                    responses["422"] = _problem_response(_ANSWERS["422"])
                if operation.get("security"):  # a token the store cannot check: the app's 503
                    responses.setdefault("503", _problem_response(_ANSWERS["503"]))
                continue
            for status in _answers(path, method, operation):
                if status == "422" or status not in responses:
                    responses[status] = _problem_response(_ANSWERS[status])
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400 and not response.get("content"):
                    response["content"] = _problem_response("")["content"]
    schemas.pop("HTTPValidationError", None)  # never sent: validation errors are problems too
    schemas.pop("ValidationError", None)
    _with_links(schema.get("paths", {}))
    return schema


def install(app: FastAPI) -> None:
    """Serve `/docs` from the bundled Swagger UI and the document with its problem answers.

    The app must be made with `docs_url=None, redoc_url=None` (FastAPI's pages load from a CDN).
    """
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            # Swagger UI would otherwise fetch a validity badge from validator.swagger.io.
            swagger_ui_parameters={**swagger_ui_default_parameters, "validatorUrl": None},
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
