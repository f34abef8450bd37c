"""The `Allow` header of a 405: every method the path is served with, not one route's.

Starlette answers a method a path is not served with by the first route that matches the path
alone, and names that route's methods only: `OPTIONS /backups` said `Allow: GET` although `POST
/backups` is served too (RFC 9110 §15.5.6: the header lists the target's methods).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Match, Mount

METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """The methods the request's path is served with, for a 405's `Allow` header: each that a
    route (or an included router's route) matches in full. Mounts (static files) are left out."""
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = [
        method
        for method in METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return ", ".join(allowed)
