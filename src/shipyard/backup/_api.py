"""The backups REST API (a FastAPI router): sets, and taking, verifying and restoring them as jobs.

    GET  /backups                   sets, newest first (?limit=)
    GET  /backups/{id}              one set with its artefacts and verification
    POST /backups                   {kind}: take a backup (`shipyard backup KIND`)       → 202 + job
    POST /backups/{id}/verify       restore it into scratch and check it                → 202 + job
    POST /backups/{id}/restore      {what}: restore one kind of artefact into scratch   → 202 + job

Everything needs an admin token. A restore from the API goes into scratch only: overwriting live
data stays a deliberate `shipyard restore … --into live --yes` at a terminal.

No `from __future__ import annotations` here (FastAPI reads the dependency aliases at runtime).
"""

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ..server._jobs import JobOut, JobRunner, backup_args, restore_args, verify_args
from ._sets import BackupSet, get_set, list_sets

SetId = Annotated[str, Path(pattern=r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$", max_length=20)]


class ArtefactOut(BaseModel):
    name: str
    type: str
    snapshot_id: str | None
    raw_bytes: int | None
    data_added: int | None


class BackupSetOut(BaseModel):
    id: str
    stack: str
    environment: str
    kind: str
    state: str
    """running | complete | failed | verified"""
    phase: str | None
    actor: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    verified_at: dt.datetime | None
    error: str | None
    restorable: bool
    artefacts: list[ArtefactOut]


class BackupSetDetailOut(BackupSetOut):
    manifest: dict[str, Any]
    verification: dict[str, Any] | None


class BackupIn(BaseModel):
    kind: Literal["full", "database", "files", "redis"] = "full"


class RestoreIn(BaseModel):
    what: Literal["database", "redis", "files", "volumes"]
    """volumes: every file volume of the set (files: the set's only one)."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fields(backup_set: BackupSet) -> dict[str, Any]:
    return {
        "id": backup_set.id,
        "stack": backup_set.stack,
        "environment": backup_set.environment,
        "kind": backup_set.kind,
        "state": backup_set.state,
        "phase": backup_set.phase,
        "actor": backup_set.actor,
        "started_at": backup_set.started_at,
        "finished_at": backup_set.finished_at,
        "verified_at": backup_set.verified_at,
        "error": backup_set.error,
        "restorable": backup_set.restorable,
        "artefacts": [
            ArtefactOut(
                name=str(artefact.get("name", "?")),
                type=str(artefact.get("type", "?")),
                snapshot_id=artefact.get("snapshot_id")
                if isinstance(artefact.get("snapshot_id"), str)
                else None,
                raw_bytes=_int(artefact.get("raw_bytes")),
                data_added=_int(artefact.get("data_added")),
            )
            for artefact in backup_set.artefacts
        ],
    }


def build_router(
    sessions: sessionmaker[Session], jobs: JobRunner, *, admin: Callable[..., Awaitable[str]]
) -> APIRouter:
    router = APIRouter(prefix="/backups", tags=["backups"])
    Admin = Annotated[str, Depends(admin)]

    @router.get("", response_model=list[BackupSetOut])
    def list_backups(_: Admin, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[BackupSetOut]:
        """Backup sets, newest first."""
        return [BackupSetOut(**_fields(s)) for s in list_sets(sessions)[:limit]]

    @router.get("/{set_id}", response_model=BackupSetDetailOut)
    def get_backup(set_id: SetId, _: Admin) -> BackupSetDetailOut:
        """One set: its artefacts, manifest and verification."""
        backup_set = get_set(sessions, set_id)
        return BackupSetDetailOut(
            **_fields(backup_set), manifest=backup_set.manifest, verification=backup_set.verification
        )

    @router.post("", status_code=202, response_model=JobOut)
    def take_backup(body: BackupIn, actor: Admin) -> JobOut:
        """Take a backup set of the served stack, as a job."""
        return JobOut.of(jobs.get(jobs.start("backup", backup_args(body.kind), actor)))

    @router.post("/{set_id}/verify", status_code=202, response_model=JobOut)
    def verify_backup(set_id: SetId, actor: Admin) -> JobOut:
        """Prove a set restorable by restoring it into scratch servers and checking it, as a job."""
        get_set(sessions, set_id)  # 404 now rather than a failed job
        return JobOut.of(jobs.get(jobs.start("verify", verify_args(set_id), actor)))

    @router.post("/{set_id}/restore", status_code=202, response_model=JobOut)
    def restore_backup(set_id: SetId, body: RestoreIn, actor: Admin) -> JobOut:
        """Restore one kind of artefact of a set into scratch (never over live data), as a job."""
        get_set(sessions, set_id)
        return JobOut.of(jobs.get(jobs.start("restore", restore_args(body.what, set_id), actor)))

    return router
