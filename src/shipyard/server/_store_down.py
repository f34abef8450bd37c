"""What the server answers when the state store does not: 503, never 500.

`StateStoreUnavailable` (raised wherever a connection fails, `state._engine`) is handled here, at the
edge, once: the API answers problem+json with `Retry-After`, the dashboard a page whose banner says
since when the store has not answered (the `stale-banner` the live updates show too). The flag
evaluations do not get here: they answer from memory (`LiveFlagSet`, `_stale_flags`).
"""

from __future__ import annotations

import datetime as dt

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from ..errors import StateStoreUnavailable
from ..state import rfc3339
from ._dashboard import SECURITY_HEADERS, templates

RETRY_AFTER_SECONDS = 5
"""What `Retry-After` asks a client to wait: a restarting database is usually back within seconds."""


def store_down_response(
    request: Request,
    exc: StateStoreUnavailable,
    since: dt.datetime | None,
    problem: JSONResponse,
) -> Response:
    """The answer to a request that needed the store: `problem` (the API's 503) with Retry-After,
    or for a dashboard page the page with the banner; `since`: when the store last answered."""
    if request.url.path.startswith("/ui/"):
        context = {
            "actor": getattr(request.state, "actor", None),
            "path": request.url.path,
            "flash": None,
            "since": rfc3339(since or dt.datetime.now(dt.UTC)),
            "message": exc.message,
        }
        response: Response = templates.TemplateResponse(request, "store_down.html", context, status_code=503)
        response.headers.update(SECURITY_HEADERS)
    else:
        response = problem
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
