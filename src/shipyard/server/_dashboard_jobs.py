"""The dashboard's jobs pages: every job (started by a server or run from the CLI) with its
duration and typed request and result shown as fields, cancelling one, and the scratch restores
left running with a button to drop each.

Cancelling goes through `JobRunner.cancel`, dropping a scratch restore through
`ops.drop_scratch_restore`: the same functions every other edge would call, audited with the
signed-in token's actor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session, sessionmaker

from ..dr import format_seconds
from ..errors import NotFoundError, ShipyardError
from ..jobs import MAX_JOB_ID, JobRunner, JobView, parse_request
from ..ops import (
    DropScratchRestore,
    ListScratchRestores,
    drop_scratch_restore,
    scratch_restores,
)
from ..state import utcnow
from ._dashboard_auth import dashboard_actor, same_origin
from ._dashboard_flag_forms import flatten
from .routes.rollouts import served_workspace

Actor = Annotated[str, Depends(dashboard_actor)]
Page = Callable[..., HTMLResponse]
Fragment = Callable[..., HTMLResponse]
Back = Callable[..., RedirectResponse]

RECENT = 100
RESULT_FIELDS = 40
"""A result's fields shown on a job's page; the rest are counted (a backup set has many)."""


def row_id(text: str) -> int | None:
    """A dashboard URL's row id, or None when it cannot name a row (not digits, 0, too large): the
    page is then a 404, never a database error."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_JOB_ID else None


@dataclass(frozen=True)
class Field:
    name: str
    value: str


@dataclass(frozen=True)
class JobSummary:
    """A job as the jobs pages show it."""

    job: JobView
    duration: str
    """How long it ran, or has run so far."""
    request: tuple[Field, ...]
    result: tuple[Field, ...]
    more_result_fields: int


def _request_fields(job: JobView) -> tuple[Field, ...]:
    """The typed request's fields that say something (those given, not left at their defaults)."""
    try:
        typed = parse_request(job.request)
        data: dict[str, Any] = typed.model_dump(mode="json", exclude_defaults=True)
    except ShipyardError:  # a request of an older shipyard: shown as stored
        data = dict(job.request)
    data.pop("kind", None)
    return tuple(Field(path, value) for path, value in flatten(data).items() if path and value != "null")


def job_row(job: JobView, now: dt.datetime) -> JobSummary:
    end = job.finished_at or now
    seconds = max(0.0, (end - job.started_at).total_seconds())
    fields = [Field(path, value) for path, value in flatten(job.result).items() if path] if job.result else []
    return JobSummary(
        job=job,
        duration=format_seconds(seconds),
        request=_request_fields(job),
        result=tuple(fields[:RESULT_FIELDS]),
        more_result_fields=max(0, len(fields) - RESULT_FIELDS),
    )


def _jobs(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.jobs
    return jobs


def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def add_job_routes(router: APIRouter, *, page: Page, fragment: Fragment, back: Back) -> None:
    """The jobs pages, on the dashboard's router (before its catch-all)."""
    post = [Depends(same_origin)]

    def missing(request: Request, actor: str, message: str) -> HTMLResponse:
        return page(request, "missing.html", {"actor": actor, "message": message}, status=404)

    def _job_or_missing(request: Request, actor: str, job_id: str) -> JobView | HTMLResponse:
        """The job a URL names, or the 404 page (an id that names no row never reaches the store)."""
        number = row_id(job_id)
        if number is None:
            return missing(request, actor, f"There is no job {job_id[:20]!r}.")
        try:
            return _jobs(request).get(number)
        except NotFoundError as exc:
            return missing(request, actor, exc.message)

    @router.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request, actor: Actor) -> HTMLResponse:
        now = utcnow()
        rows = [job_row(view, now) for view in _jobs(request).recent(RECENT)]
        return page(request, "jobs.html", {"actor": actor, "rows": rows})

    @router.get("/jobs/scratch-restores", response_class=HTMLResponse)
    def scratch(request: Request, actor: Actor) -> HTMLResponse:
        ws = served_workspace(_jobs(request), _sessions(request), actor)
        listed = scratch_restores(ws, ListScratchRestores())
        return page(request, "scratch_restores.html", {"actor": actor, "restores": listed.restores})

    @router.post("/jobs/scratch-restores/{restore_id}/drop", dependencies=post)
    def drop(request: Request, actor: Actor, restore_id: str) -> RedirectResponse:
        to = "/ui/jobs/scratch-restores"
        number = row_id(restore_id)
        if number is None:
            return back(to, f"no scratch restore {restore_id[:20]!r}", "error")
        ws = served_workspace(_jobs(request), _sessions(request), actor)
        try:
            dropped = drop_scratch_restore(ws, DropScratchRestore(restore_id=number))
        except ShipyardError as exc:
            return back(to, exc.message, "error")
        return back(to, dropped.summary())

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job(request: Request, actor: Actor, job_id: str) -> HTMLResponse:
        found = _job_or_missing(request, actor, job_id)
        if isinstance(found, HTMLResponse):
            return found
        context = {"actor": actor, "row": job_row(found, utcnow()), "job": found}
        return page(request, "job.html", {**context, "log": _jobs(request).log_tail(found.id)})

    @router.get("/jobs/{job_id}/log", response_class=HTMLResponse)
    def job_log(request: Request, actor: Actor, job_id: str) -> HTMLResponse:
        found = _job_or_missing(request, actor, job_id)
        if isinstance(found, HTMLResponse):
            return found
        context = {"job": found, "row": job_row(found, utcnow()), "log": _jobs(request).log_tail(found.id)}
        return fragment(request, "_job_log.html", context)

    @router.post("/jobs/{job_id}/cancel", dependencies=post)
    def cancel(request: Request, actor: Actor, job_id: str) -> RedirectResponse:
        number = row_id(job_id)
        if number is None:
            return back("/ui/jobs", f"there is no job {job_id[:20]!r}", "error")
        try:
            view = _jobs(request).cancel(number, actor)
        except ShipyardError as exc:
            return back(f"/ui/jobs/{number}", exc.message, "error")
        return back(f"/ui/jobs/{number}", f"job {number} {view.state}: {view.summary or ''}".strip())
