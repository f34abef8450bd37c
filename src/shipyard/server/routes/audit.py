"""The audit REST API: `GET /audit`, who did what, when, to which object, and how it ended."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, BaseModel, WithJsonSchema
from sqlalchemy.orm import Session, sessionmaker

from ...ops import AuditQuery, Workspace, audit_log
from ...state import MAX_AUDIT_LIMIT

_AGE = r"^[0-9]+[smhdw]$"
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)


def _since(text: str) -> str:
    """`text` when it is what the document says `since` is (its UTC letters upper case, as Python
    reads them); else ValueError (422 naming `query.since`). Narrower than `parse_since`, which
    takes any ISO 8601 form Python reads: an API's contract is what JSON Schema can state."""
    if re.fullmatch(_AGE, text):  # fullmatch: Python's `$` also matches before a final newline
        return text
    moment = text.upper()
    if _DATE_TIME.fullmatch(moment) or _DATE.fullmatch(moment):
        try:
            dt.datetime.fromisoformat(moment)
            return moment
        except ValueError:
            pass  # 2026-02-30 and the like
    raise ValueError("give an age like 7d, 12h, 30m, a date-time like 2026-12-01T06:00:00Z, or a date")


Since = Annotated[
    str,
    AfterValidator(_since),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _AGE},
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "date"},
            ],
            "description": "An age (7d, 12h, 30m, 90s, 2w), an RFC 3339 date-time, or a date (midnight UTC)",
        }
    ),
]


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
        since: Annotated[Since | None, Query(description="Only entries this recent")] = None,
        actor: str | None = Query(None, max_length=128),
        action: str | None = Query(None, max_length=64, description="actions starting with this"),
        limit: int = Query(100, ge=1, le=MAX_AUDIT_LIMIT),
    ) -> list[AuditEntryOut]:
        """Who did what, when, to which object, and how it ended."""
        ws = Workspace(actor=admin_actor, opened_sessions=sessions)
        entries = audit_log(ws, AuditQuery(since=since, actor=actor, action=action, limit=limit)).entries
        return [AuditEntryOut(**dataclasses.asdict(entry)) for entry in entries]

    return router
