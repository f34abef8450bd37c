"""The audit REST API: `GET /audit`, who did what, when, to which object, and how it ended."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ...ops import AuditQuery, Workspace, audit_log
from ...state import MAX_AUDIT_LIMIT


class AuditEntryOut(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    action: str
    target_kind: str
    target: str
    outcome: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def build_router(sessions: sessionmaker[Session], *, admin: Callable[..., Awaitable[str]]) -> APIRouter:
    """`GET /audit`: the audit log, newest first (admin token)."""
    router = APIRouter(tags=["audit"])

    @router.get("/audit", response_model=list[AuditEntryOut])
    def audit(
        admin_actor: str = Depends(admin),
        since: str | None = Query(None, max_length=64, description="7d, 12h, 30m, or an ISO 8601 moment"),
        actor: str | None = Query(None, max_length=128),
        action: str | None = Query(None, max_length=64, description="actions starting with this"),
        limit: int = Query(100, ge=1, le=MAX_AUDIT_LIMIT),
    ) -> list[AuditEntryOut]:
        """Who did what, when, to which object, and how it ended."""
        ws = Workspace(actor=admin_actor, opened_sessions=sessions)
        entries = audit_log(ws, AuditQuery(since=since, actor=actor, action=action, limit=limit)).entries
        return [AuditEntryOut(**dataclasses.asdict(entry)) for entry in entries]

    return router
