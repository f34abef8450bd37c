"""The dashboard: server-rendered pages over the same functions the API and the CLI call.

Every page is under `/ui` and needs an admin token (given once at `/ui/login`, which opens a
server-side session whose id, never the token, an HttpOnly cookie carries); every POST must come
from one of these pages (Origin/Referer check). Actions
go through the owning package's functions (the flag store, `queue_command`, the job runner), so
each one lands in the audit log with the token's actor. No route is in the OpenAPI schema.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from ..backup import get_set, list_sets
from ..errors import ShipyardError
from ..jobs import JobRunner, choices, parse_request
from ..ops import Steer, refuse_concurrent_release
from ..rollout import COMMANDS
from ..spec import Stack
from ._dashboard_activity import add_activity_routes
from ._dashboard_auth import (
    COOKIE_PATH,
    CrossOrigin,
    LoginRequired,
    clear_session,
    cross_origin,
    dashboard_actor,
    login_required,
    safe_next,
    same_origin,
    set_session,
    sign_in,
    sign_out,
)
from ._dashboard_charts import backup_charts, dr_charts, release_charts, service_charts
from ._dashboard_flags import add_flag_routes
from ._dashboard_jobs import add_job_routes
from ._dashboard_live import live_block, wants_live
from ._dashboard_traffic import services_traffic_charts
from ._dashboard_views import dr_overview, service_release
from .routes.rollouts import served_workspace, steer_or_carry_on

HERE = Path(__file__).parent
FLASH = "shipyard_flash"
STEERING = ("promote", "promote-full", "abort", "pause", "resume", "retry")
"""Commands queued for the controller running a release (rollback runs as a job of its own);
promote-full is a promote with `full` (every remaining step skipped)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals["commands"] = COMMANDS

Actor = Annotated[str, Depends(dashboard_actor)]


# --- helpers --------------------------------------------------------------------------------------


def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def _jobs(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.jobs
    return jobs


def _stack(request: Request) -> tuple[Stack | None, str | None]:
    """The served stack, or None and why not (no spec, or the spec is broken)."""
    try:
        return _jobs(request).stack(), None
    except ShipyardError as exc:
        return None, exc.message


def _page(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    if wants_live(request):  # a page's polling script: the content alone, the message left unread
        live = {"request": request, "path": request.url.path, **context}
        response = HTMLResponse(live_block(templates.env, template, live), status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response
    flash = _read_flash(request)
    response = templates.TemplateResponse(
        request, template, {"flash": flash, "path": request.url.path, **context}, status_code=status
    )
    if flash is not None:
        response.delete_cookie(FLASH, path=COOKIE_PATH)
    response.headers.update(SECURITY_HEADERS)
    return response


def _fragment(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context)
    response.headers.update(SECURITY_HEADERS)
    return response


def _read_flash(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return None
    return {"kind": "error" if data.get("kind") == "error" else "ok", "text": data["text"][:500]}


def _back(to: str, text: str, kind: str = "ok") -> RedirectResponse:
    """Post/redirect/get: back to a page, with a one-time message for it."""
    response = RedirectResponse(to, status_code=303)
    payload = json.dumps({"kind": kind, "text": text[:500]}).encode()
    response.set_cookie(
        FLASH,
        base64.urlsafe_b64encode(payload).decode(),
        httponly=True,
        samesite="strict",
        path=COOKIE_PATH,
        max_age=60,
    )
    return response


def _start_job(request: Request, wanted: dict[str, Any], actor: str, back: str) -> RedirectResponse:
    """Start the job a form asks for (an ops request as a dict); back with why not if it cannot."""
    try:
        job_id = _jobs(request).start(parse_request(wanted), actor)
        view = _jobs(request).get(job_id)
    except ShipyardError as exc:
        return _back(back, exc.message, "error")
    return _back(f"/ui/jobs/{job_id}", f"job {job_id} started: {view.description}")


# --- routes ---------------------------------------------------------------------------------------


def build_router() -> APIRouter:
    router = APIRouter(prefix="/ui", include_in_schema=False)
    Post = [Depends(same_origin)]

    @router.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str | None = None) -> HTMLResponse:
        return _page(request, "login.html", {"next": safe_next(next), "error": None})

    @router.post("/login", dependencies=Post, response_model=None)
    async def login(
        request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/ui/"
    ) -> Response:
        signed_in = await sign_in(request, token.strip())
        if signed_in.session_id is None:
            # Never echo what was typed: it may be a real token of the wrong scope.
            error = "That is not a valid admin token."
            if signed_in.retry_after is not None:
                error = f"Too many failed sign-ins from this address: try again in {signed_in.retry_after} s."
            status = 401 if signed_in.retry_after is None else 429
            refused = _page(request, "login.html", {"next": safe_next(next), "error": error}, status=status)
            if signed_in.retry_after is not None:
                refused.headers["Retry-After"] = str(signed_in.retry_after)
            return refused
        response = RedirectResponse(safe_next(next), status_code=303)
        set_session(response, request, signed_in.session_id)
        return response

    @router.post("/logout", dependencies=Post)
    async def logout(request: Request) -> RedirectResponse:
        await sign_out(request)  # the session ends here, not only its cookie
        response = RedirectResponse("/ui/login", status_code=303)
        clear_session(response)
        return response

    @router.get("/")
    def home(_: Actor) -> RedirectResponse:
        return RedirectResponse("/ui/services", status_code=303)

    # --- services and releases ----------------------------------------------------------------

    @router.get("/services", response_class=HTMLResponse)
    def services(request: Request, actor: Actor) -> HTMLResponse:
        stack, problem = _stack(request)
        names = sorted(stack.services) if stack else []
        releases = {name: service_release(_sessions(request), name) for name in names}
        return _page(
            request,
            "services.html",
            {
                "actor": actor,
                "stack": stack,
                "problem": problem,
                "releases": releases,
                "release_charts": {name: release_charts(_sessions(request), name) for name in names},
                "service_charts": {name: service_charts(_sessions(request), name) for name in names},
                "traffic_charts": services_traffic_charts(_sessions(request), stack),
                "strategies": choices("deploy", "strategy"),
                "default_strategy": stack.rollout.strategy if stack else "canary",
            },
        )

    @router.get("/services/{service}/release", response_class=HTMLResponse)
    def release_fragment(request: Request, _: Actor, service: str) -> HTMLResponse:
        return _fragment(
            request,
            "_release.html",
            {
                "service": service,
                "release": service_release(_sessions(request), service),
                "release_charts": {service: release_charts(_sessions(request), service)},
            },
        )

    @router.post("/services/{service}/deploy", dependencies=Post)
    def deploy(
        request: Request,
        actor: Actor,
        service: str,
        version: Annotated[str, Form()] = "",
        strategy: Annotated[str, Form()] = "",
    ) -> RedirectResponse:
        wanted = {
            "kind": "deploy",
            "service": service,
            "version": version.strip(),
            "strategy": strategy or None,
        }
        try:  # refused at once while another release runs, not failed later in its job
            refuse_concurrent_release(_sessions(request), service)
        except ShipyardError as exc:
            return _back("/ui/services", exc.message, "error")
        return _start_job(request, wanted, actor, "/ui/services")

    @router.post("/services/{service}/rollback", dependencies=Post)
    def rollback(request: Request, actor: Actor, service: str) -> RedirectResponse:
        return _start_job(request, {"kind": "rollback", "service": service}, actor, "/ui/services")

    @router.post("/services/{service}/{command}", dependencies=Post)
    def steer(request: Request, actor: Actor, service: str, command: str) -> RedirectResponse:
        if command not in STEERING:
            return _back("/ui/services", f"unknown command {command[:40]!r}", "error")
        ws = served_workspace(_jobs(request), _sessions(request), actor)
        full = command == "promote-full"
        try:
            steered = steer_or_carry_on(
                ws,
                _jobs(request),
                Steer(service=service, command="promote" if full else command, full=full),
                kube=getattr(request.app.state, "kube", None),
            )
        except ShipyardError as exc:
            return _back("/ui/services", exc.message, "error")
        rollout_id, running, job_id = steered.rollout_id, steered.controller_running, steered.job_id
        if steered.target == "kubernetes":
            said = f"{command} sent to release {rollout_id} of {service}: {steered.applied}"
            return _back("/ui/services", said)
        note = ""
        if job_id is not None:
            note = f" (no controller ran it: job {job_id} carries the release on)"
        elif not running:
            note = " (the release is over: nothing runs it now)"
        return _back("/ui/services", f"{command} queued for release {rollout_id} of {service}{note}")

    add_flag_routes(router, page=_page, back=_back)

    # --- backups ------------------------------------------------------------------------------

    @router.get("/backups", response_class=HTMLResponse)
    def backups(request: Request, actor: Actor) -> HTMLResponse:
        stack, problem = _stack(request)
        sets = list_sets(_sessions(request))[:100]
        return _page(
            request,
            "backups.html",
            {
                "actor": actor,
                "stack": stack,
                "problem": problem,
                "sets": sets,
                "backup_charts": backup_charts(sets, stack),
                "kinds": choices("backup", "what"),
                "whats": choices("restore", "what"),
            },
        )

    @router.post("/backups", dependencies=Post)
    def take_backup(request: Request, actor: Actor, kind: Annotated[str, Form()]) -> RedirectResponse:
        return _start_job(request, {"kind": "backup", "what": kind}, actor, "/ui/backups")

    @router.post("/backups/{set_id}/verify", dependencies=Post)
    def verify(request: Request, actor: Actor, set_id: str) -> RedirectResponse:
        return _start_job(request, {"kind": "verify", "set_id": set_id}, actor, "/ui/backups")

    @router.post("/backups/{set_id}/restore", dependencies=Post)
    def restore(
        request: Request, actor: Actor, set_id: str, what: Annotated[str, Form()]
    ) -> RedirectResponse:
        try:
            get_set(_sessions(request), set_id)
        except ShipyardError as exc:
            return _back("/ui/backups", exc.message, "error")
        return _start_job(request, {"kind": "restore", "what": what, "set_id": set_id}, actor, "/ui/backups")

    # --- DR -----------------------------------------------------------------------------------

    @router.get("/dr", response_class=HTMLResponse)
    def dr(request: Request, actor: Actor) -> HTMLResponse:
        stack, problem = _stack(request)
        return _page(
            request,
            "dr.html",
            {
                "actor": actor,
                "stack": stack,
                "problem": problem,
                "overview": dr_overview(_sessions(request), stack, choices("drill", "mode")),
                "dr_charts": dr_charts(_sessions(request), stack),
                "modes": choices("drill", "mode"),
            },
        )

    @router.post("/dr/drills", dependencies=Post)
    def drill(request: Request, actor: Actor, mode: Annotated[str, Form()]) -> RedirectResponse:
        return _start_job(request, {"kind": "drill", "mode": mode}, actor, "/ui/dr")

    # --- jobs and activity --------------------------------------------------------------------

    add_job_routes(router, page=_page, fragment=_fragment, back=_back)
    add_activity_routes(router, page=_page)

    @router.get("/{rest:path}", response_class=HTMLResponse)
    def missing(request: Request, actor: Actor, rest: str) -> HTMLResponse:
        return _page(
            request, "missing.html", {"actor": actor, "message": "There is no such page."}, status=404
        )

    return router


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages (under `/ui`) and static files to the app."""
    # The static files first: the router ends with a catch-all for unknown dashboard pages.
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.include_router(build_router())
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(CrossOrigin, cross_origin)
