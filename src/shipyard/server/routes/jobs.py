"""The jobs REST API: what the API, the dashboard and the scheduler started, and how it ended.

    GET  /jobs                newest first (?kind=deploy|backup|…), from a server or the CLI
    GET  /jobs/{id}           one job: its request, state, origin, exit code, summary and typed result
    GET  /jobs/{id}/log       the end of its output
    POST /jobs/{id}/cancel    cancel a running job (`JobRunner.cancel`, as the dashboard's button)

Everything needs an admin token: job logs are operations data. An id that names no job, however
large, is a 404 (never a 422 or the database's own error).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from ...jobs import KINDS, JobRunner, JobState, JobView, Origin


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: int
    kind: str
    request: dict[str, Any]
    """The ops request the job runs, as JSON (its `kind` says which)."""
    result: dict[str, Any] | None
    """The ops result, as JSON, once the job ended with one."""
    actor: str
    state: JobState = Field(
        description="running until it ends; then succeeded or failed as its exit code says, or"
        " cancelled (`POST /jobs/{id}/cancel`, the dashboard's button; its exit code is then 130)"
    )
    origin: Origin = Field(
        description="where it ran: `server` (a child a server started for the API, the dashboard or"
        " the scheduler) or `cli` (the CLI's own process)"
    )
    exit_code: int | None
    summary: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        return cls(**dataclasses.asdict(view))


def build_router(jobs: JobRunner, *, admin: Callable[..., Awaitable[str]]) -> APIRouter:
    router = APIRouter(prefix="/jobs", tags=["jobs"])

    @router.get("", response_model=list[JobOut])
    def list_jobs(
        _: str = Depends(admin),
        limit: int = Query(50, ge=1, le=500),
        kind: str | None = Query(None, pattern="^(" + "|".join(KINDS) + ")$"),
    ) -> list[JobOut]:
        """Jobs started from the API, the dashboard, the scheduler or `--detach`, newest first."""
        return [JobOut.of(view) for view in jobs.recent(limit, kind)]

    # Ids are not bounded here: one that names no job, out of any row's range too, is the
    # runner's NotFoundError (404), as an unknown one is.
    @router.get("/{job_id}", response_model=JobOut)
    def get_job(job_id: int, _: str = Depends(admin)) -> JobOut:
        """One job: its request, state, origin, exit code, summary and result."""
        return JobOut.of(jobs.get(job_id))

    @router.post("/{job_id}/cancel", response_model=JobOut)
    def cancel_job(job_id: int, actor: str = Depends(admin)) -> JobOut:
        """Cancel a running job: recorded `cancelled` at once, its child stopped (SIGTERM, then
        SIGKILL after a grace period). 409 if it has already ended (or runs on another host); a job
        that ends on its own meanwhile is returned as it ended."""
        return JobOut.of(jobs.cancel(job_id, actor))

    @router.get(
        "/{job_id}/log",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def get_job_log(
        job_id: int,
        _: str = Depends(admin),
        max_bytes: int = Query(20000, ge=1, le=1_000_000),
    ) -> PlainTextResponse:
        """The end of the job's output."""
        return PlainTextResponse(jobs.log_tail(job_id, max_bytes))

    return router
