"""The dashboard's activity page: the audit log with each entry's fields as a diff (before → after),
filters by actor, action, target and time, and keyset paging through as many entries as there are.

It reads through `ops.audit_log`, the function behind `shipyard audit` and `GET /audit`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..ops import AuditQuery, Workspace, audit_log
from ..state import AuditEntry, parse_since, utcnow
from ._dashboard_auth import dashboard_actor
from ._dashboard_flag_forms import FieldChange, diff
from ._dashboard_jobs import row_id
from ._dashboard_views import audit_actions

Actor = Annotated[str, Depends(dashboard_actor)]
Page = Callable[..., HTMLResponse]
E = TypeVar("E")

PAGE_SIZE = 200
FILTER_CHARS = 200


@dataclass(frozen=True)
class ActivityFilter:
    """The page's filters as its query string gives them ("" for none)."""

    actor: str = ""
    action: str = ""
    target: str = ""
    since: str = ""
    """An age (`2h`) or a moment (`2026-12-06T18:00`, UTC unless it names a zone)."""
    until: str = ""

    @classmethod
    def of(cls, **given: str) -> ActivityFilter:
        return cls(**{name: value.strip()[:FILTER_CHARS] for name, value in given.items()})

    @property
    def active(self) -> bool:
        return any(vars(self).values())

    def link(self, **cursor: int) -> str:
        """The page's URL with these filters and a paging cursor (`older_than=…`)."""
        params: dict[str, Any] = {name: value for name, value in vars(self).items() if value}
        params.update(cursor)
        return "/ui/activity" + (f"?{urlencode(params)}" if params else "")


@dataclass(frozen=True)
class Paged:
    """One page of a newest-first list, and the cursors of the pages beside it (None: no such page)."""

    items: list[Any]
    older_than: int | None
    """The cursor of the next (older) page: the last item's id."""
    newer_than: int | None
    """The cursor of the previous (newer) page: the first item's id."""


def page_of(
    fetched: Sequence[E],
    size: int,
    ids: Callable[[E], int],
    *,
    older_than: int | None = None,
    newer_than: int | None = None,
) -> Paged:
    """Cut one page from up to `size + 1` items fetched newest first by a keyset query (the extra
    one says that there are more that way): after `older_than`, the extra one is the oldest;
    before `newer_than`, it is the newest. A page reached by a cursor has a page the other way."""
    more = len(fetched) > size
    if newer_than is not None:
        items = list(fetched[-size:]) if more else list(fetched)
        has_newer, has_older = more, True
    else:
        items = list(fetched[:size])
        has_older, has_newer = more, older_than is not None
    if not items:
        return Paged([], None, None)
    return Paged(
        items,
        older_than=ids(items[-1]) if has_older else None,
        newer_than=ids(items[0]) if has_newer else None,
    )


@dataclass(frozen=True)
class ActivityEntry:
    entry: AuditEntry
    changes: tuple[FieldChange, ...]
    """Each field that differs between before and after (all of after for an action's inputs)."""


def activity_entry(entry: AuditEntry) -> ActivityEntry:
    return ActivityEntry(entry, tuple(diff(entry.before, entry.after)))


def _moment(field: str, text: str, now: dt.datetime, problems: dict[str, str]) -> str | None:
    """`text` checked as an age or a moment; None and a problem beside `field` if it is neither."""
    if not text:
        return None
    try:
        parse_since(text, now)
    except UserError:
        problems[field] = "an age like 2h or 7d, or a moment like 2026-12-06T18:00 (UTC)"
        return None
    return text


def add_activity_routes(router: APIRouter, *, page: Page) -> None:
    """The activity page, on the dashboard's router (before its catch-all)."""

    @router.get("/activity", response_class=HTMLResponse)
    def activity_page(
        request: Request,
        actor: Actor,
        action: str = "",
        who: Annotated[str, Query(alias="actor")] = "",
        target: str = "",
        since: str = "",
        until: str = "",
        older_than: str = "",
        newer_than: str = "",
    ) -> HTMLResponse:
        sessions: sessionmaker[Session] = request.app.state.sessions
        wanted = ActivityFilter.of(actor=who, action=action, target=target, since=since, until=until)
        problems: dict[str, str] = {}
        now = utcnow()
        checked = replace(
            wanted,
            since=_moment("since", wanted.since, now, problems) or "",
            until=_moment("until", wanted.until, now, problems) or "",
        )
        older, newer = row_id(older_than), row_id(newer_than)
        query = AuditQuery(
            since=checked.since or None,
            until=checked.until or None,
            actor=checked.actor or None,
            action=checked.action or None,
            target=checked.target or None,
            limit=PAGE_SIZE + 1,
            older_than=older if newer is None else None,
            newer_than=newer,
        )
        fetched = audit_log(Workspace(actor=actor, opened_sessions=sessions), query).entries
        paged = page_of(fetched, PAGE_SIZE, lambda e: e.id, older_than=query.older_than, newer_than=newer)
        return page(
            request,
            "activity.html",
            {
                "actor": actor,
                "entries": [activity_entry(entry) for entry in paged.items],
                "paged": paged,
                "filters": wanted,
                "problems": problems,
                "actions": audit_actions(sessions),
                "action": wanted.action,
                "paging": older is not None or newer is not None,
                "page_size": PAGE_SIZE,
            },
            status=422 if problems else 200,
        )
