"""The backups REST API: sets, and taking, verifying and restoring them as jobs.

    GET  /backups                   sets, newest first (?limit=)
    GET  /backups/{id}              one set with its manifest and verification
    POST /backups                   {kind}: take a backup set (`TakeBackup`)             → 202 + job
    POST /backups/{id}/verify       restore it into scratch and check it (`Verify`)      → 202 + job
    POST /backups/{id}/restore      {what}: restore from it into scratch (`Restore`)     → 202 + job

Everything needs an admin token. A restore from the API goes into scratch only: overwriting live
data stays a deliberate `shipyard restore … --into live --yes` at a terminal.

No `from __future__ import annotations` here (FastAPI reads the dependency aliases at runtime).
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ...backup import SET_ID_PATTERN, RestoreWhat
from ...jobs import JobRunner
from ...ops import BackupSetView, Restore, TakeBackup, Verify, backup_set, backup_sets
from ...spec import BackupWhat
from .jobs import JobOut

SetId = Annotated[str, Path(pattern=SET_ID_PATTERN, max_length=20)]


class BackupIn(BaseModel):
    kind: BackupWhat = "full"
    """What the set covers: every source, or one kind of them."""


class RestoreIn(BaseModel):
    what: RestoreWhat
    """volumes: every file volume of the set (files: the set's only one)."""


def build_router(
    sessions: sessionmaker[Session], jobs: JobRunner, *, admin: Callable[..., Awaitable[str]]
) -> APIRouter:
    router = APIRouter(prefix="/backups", tags=["backups"])
    Admin = Annotated[str, Depends(admin)]

    @router.get("", response_model=list[BackupSetView])
    def list_backups(_: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[BackupSetView]:
        """Backup sets, newest first, each with its artefacts (its manifest: `GET /backups/{id}`)."""
        return backup_sets(sessions, limit=limit)

    @router.get("/{set_id}", response_model=BackupSetView)
    def get_backup(set_id: SetId, _: Admin) -> BackupSetView:
        """One set: its artefacts, manifest and verification."""
        return backup_set(sessions, set_id)

    @router.post("", status_code=202, response_model=JobOut)
    def take_backup(body: BackupIn, actor: Admin) -> JobOut:
        """Take a backup set of the served stack, as a job."""
        return JobOut.of(jobs.get(jobs.start(TakeBackup(what=body.kind), actor)))

    @router.post("/{set_id}/verify", status_code=202, response_model=JobOut)
    def verify_backup(set_id: SetId, actor: Admin) -> JobOut:
        """Prove a set restorable by restoring it into scratch servers and checking it, as a job."""
        backup_set(sessions, set_id)  # 404 now rather than a failed job
        return JobOut.of(jobs.get(jobs.start(Verify(set_id=set_id), actor)))

    @router.post("/{set_id}/restore", status_code=202, response_model=JobOut)
    def restore_backup(set_id: SetId, body: RestoreIn, actor: Admin) -> JobOut:
        """Restore one kind of artefact of a set into scratch (never over live data), as a job."""
        backup_set(sessions, set_id)
        return JobOut.of(jobs.get(jobs.start(Restore(what=body.what, set_id=set_id), actor)))

    return router
