"""The jobs REST API: what the API, the dashboard and the scheduler started, and how it ended.

    GET /jobs                 newest first (?kind=deploy|backup|…)
    GET /jobs/{id}            one job: its request, state, exit code, summary and typed result
    GET /jobs/{id}/log        the end of its output

Everything needs an admin token: job logs are operations data.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as FastApiPath
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from ...jobs import KINDS, JobRunner, JobView


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: int
    kind: str
    request: dict[str, Any]
    """The ops request the job runs, as JSON (its `kind` says which)."""
    result: dict[str, Any] | None
    """The ops result, as JSON, once the job ended with one."""
    actor: str
    state: str
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

    @router.get("/{job_id}", response_model=JobOut)
    def get_job(job_id: int = FastApiPath(ge=1, le=2**31 - 1), _: str = Depends(admin)) -> JobOut:
        """One job: its request, state, exit code, summary and result."""
        return JobOut.of(jobs.get(job_id))

    @router.get(
        "/{job_id}/log",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def get_job_log(
        job_id: int = FastApiPath(ge=1, le=2**31 - 1),
        _: str = Depends(admin),
        max_bytes: int = Query(20000, ge=1, le=1_000_000),
    ) -> PlainTextResponse:
        """The end of the job's output."""
        return PlainTextResponse(jobs.log_tail(job_id, max_bytes))

    return router
