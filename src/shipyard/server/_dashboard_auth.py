"""The dashboard's login and request guards: an admin token in a cookie, and same-origin POSTs.

The cookie holds the admin token itself (HttpOnly, SameSite=Strict, Path=/ui), so every request
is checked exactly as an API request with that token is: a revoked token stops working within
TokenAuth's cache time, and any number of server processes accept it without shared sessions.
Scripts cannot read the cookie and other sites cannot send it; pages never show it.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from ._auth import TokenAuth, record_actor

COOKIE = "shipyard_session"
COOKIE_PATH = "/ui"
LOGIN_PATH = "/ui/login"


class LoginRequired(Exception):
    """The request carries no valid admin token."""


class CrossOrigin(Exception):
    """A state-changing request that does not come from one of this server's own pages."""


def token_auth(request: Request) -> TokenAuth:
    """The server's TokenAuth (create_app keeps one in app.state.auth; built here when it does not)."""
    auth = getattr(request.app.state, "auth", None)
    if not isinstance(auth, TokenAuth):
        auth = TokenAuth(request.app.state.sessions)
        request.app.state.auth = auth
    return auth


async def admin_actor(request: Request, token: str) -> str | None:
    """The actor (`token:<name>`) behind `token` when it is a live admin token, else None."""
    if not token or len(token) > 512:
        return None
    try:
        return await token_auth(request).actor_of(f"Bearer {token}", "admin")
    except HTTPException:
        return None


async def dashboard_actor(request: Request) -> str:
    """Dependency of every dashboard page but the login: the signed-in admin's actor."""
    actor = await admin_actor(request, request.cookies.get(COOKIE, ""))
    if actor is None:
        raise LoginRequired
    record_actor(request, actor)
    return actor


def same_origin(request: Request) -> None:
    """Dependency of every dashboard POST: refuse one whose Origin (or Referer) is another site."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not source or not host or source == "null" or urlsplit(source).netloc != host:
        raise CrossOrigin


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        secure=request.url.scheme == "https",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def login_required(request: Request, _: Exception) -> Response:
    """Browsers go to the login page (and come back after it); anything else gets 401."""
    from ._app import problem  # noqa: PLC0415 (_app imports this module)

    if wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/ui/"  # an action is not replayed after signing in: start from the dashboard
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
    response = problem(401, "Unauthorized", "sign in at /ui/login with an admin token")
    response.headers["WWW-Authenticate"] = 'Bearer realm="shipyard"'
    return response


async def cross_origin(_: Request, __: Exception) -> Response:
    from ._app import problem  # noqa: PLC0415 (_app imports this module)

    return problem(403, "Forbidden", "the request did not come from this server's dashboard")


def safe_next(value: str | None) -> str:
    """Where to go after login: a dashboard path only (never another site)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"
