"""The dashboard's login and request guards: a server-side session in a cookie, and same-origin POSTs.

Signing in with an admin token opens a session in the state store (`shipyard.tokens.open_session`)
and the cookie (HttpOnly, SameSite=Strict, Path=/ui) holds only its random id, never the token:
the store keeps the id's SHA-256, when it expires, and which token opened it. Every request looks
the session up there, so any number of server processes accept it, signing out deletes it, and
revoking the token ends it at once. Scripts cannot read the cookie and other sites cannot send it;
pages never show it.

Every sign-in, failed or not, and every sign-out is audited (`login`, `logout`) with the client's
address, never with what was typed. Failed sign-ins are limited per address (`_login_limit`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from ..state import record_audit
from ..tokens import Token, close_session, open_session, session_token
from ._auth import actor_of_token, record_actor
from ._login_limit import FailedLogins

COOKIE = "shipyard_session"
COOKIE_PATH = "/ui"
LOGIN_PATH = "/ui/login"


class LoginRequired(Exception):
    """The request carries no valid admin token."""


class CrossOrigin(Exception):
    """A state-changing request that does not come from one of this server's own pages."""


def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def failed_logins(request: Request) -> FailedLogins:
    """The server's count of failed sign-ins (made on first use; one per process)."""
    limit = getattr(request.app.state, "failed_logins", None)
    if not isinstance(limit, FailedLogins):
        limit = request.app.state.failed_logins = FailedLogins()
    return limit


@dataclass(frozen=True)
class SignIn:
    session_id: str | None
    """The new session's id, for the cookie; None when the sign-in failed or was refused."""
    retry_after: int | None = None
    """Set when refused for too many failures from this address: seconds to wait."""


async def sign_in(request: Request, token: str) -> SignIn:
    """Open a session for `token` when it is a live admin token, audited either way; refused
    without looking at the token while the address has failed too often."""
    address = _address(request)
    limit = failed_logins(request)
    retry_after = limit.retry_after(address)
    if retry_after is not None:
        # Not audited: a flood would fill the audit log; the access log has each 429 and address.
        _count_refusal(request, "rate_limited")
        return SignIn(None, retry_after)
    sessions = _sessions(request)
    session_id = None
    if token and len(token) <= 512:
        session_id = await asyncio.to_thread(_open, sessions, token, address)
    if session_id is None:
        limit.failed(address)
        _count_refusal(request, "invalid")
        await asyncio.to_thread(_audit_login, sessions, "anonymous", "login", address, "failed")
        return SignIn(None)
    limit.succeeded(address)
    actor = await dashboard_actor_of(request, session_id)
    if actor is not None:
        record_actor(request, actor)  # the access line of the sign-in names who signed in
        await asyncio.to_thread(_audit_login, sessions, actor, "login", address, "ok")
    return SignIn(session_id)


def _count_refusal(request: Request, reason: str) -> None:
    """Count a refused sign-in in `/metrics` (`shipyard_auth_failures_total{via="dashboard"}`)."""
    failures = getattr(request.app.state, "auth_failures", None)
    if failures is not None:
        failures.labels("dashboard", reason).inc()


async def sign_out(request: Request) -> None:
    """End the request's session (if it has one), audited."""
    session_id = request.cookies.get(COOKIE, "")
    actor = await dashboard_actor_of(request, session_id) if session_id else None
    if actor is None:
        return
    record_actor(request, actor)
    sessions = _sessions(request)
    await asyncio.to_thread(_close, sessions, session_id)
    await asyncio.to_thread(_audit_login, sessions, actor, "logout", _address(request), "ok")


async def dashboard_actor_of(request: Request, session_id: str) -> str | None:
    """The actor (`token:<name>`) behind a live session of an admin token, else None."""
    if not session_id or len(session_id) > 128:
        return None
    token = await asyncio.to_thread(_session_token, _sessions(request), session_id)
    if token is None or not token.allows("admin"):
        return None
    return actor_of_token(token)


async def dashboard_actor(request: Request) -> str:
    """Dependency of every dashboard page but the login: the signed-in admin's actor."""
    actor = await dashboard_actor_of(request, request.cookies.get(COOKIE, ""))
    if actor is None:
        raise LoginRequired
    record_actor(request, actor)
    return actor


def _open(sessions: sessionmaker[Session], token: str, address: str) -> str | None:
    with sessions() as session:
        return open_session(session, token, address)


def _session_token(sessions: sessionmaker[Session], session_id: str) -> Token | None:
    with sessions() as session:
        return session_token(session, session_id)


def _close(sessions: sessionmaker[Session], session_id: str) -> None:
    with sessions() as session:
        close_session(session, session_id)


def _audit_login(
    sessions: sessionmaker[Session], actor: str, action: str, address: str, outcome: str
) -> None:
    record_audit(
        sessions, actor=actor, action=action, target_kind="dashboard", target=address,
        after={"address": address}, outcome=outcome,
    )  # fmt: skip


def same_origin(request: Request) -> None:
    """Dependency of every dashboard POST: refuse one whose Origin (or Referer) is another site."""
    source = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host")
    if not source or not host or source == "null" or urlsplit(source).netloc != host:
        raise CrossOrigin


def set_session(response: Response, request: Request, session_id: str) -> None:
    response.set_cookie(
        COOKIE,
        session_id,
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
