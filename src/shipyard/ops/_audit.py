"""The audit trail as verbs: read it (who did what, when, to which object, how it ended) and prune
it by the spec's retention.

`shipyard audit`, `shipyard audit prune` and the API's `GET /audit` call these and only these.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from .. import state
from ..state import MAX_AUDIT_LIMIT, AuditEntry, audit_cutoffs, parse_since, query_audit, utcnow
from ._base import Request, Result
from ._workspace import Workspace

__all__ = [
    "AuditLog",
    "AuditPruned",
    "AuditQuery",
    "PruneAudit",
    "audit_log",
    "prune_audit",
]


class AuditQuery(Request):
    """Audit entries, newest first, narrowed by age, actor and action."""

    kind: Literal["audit-query"] = "audit-query"
    since: str | None = None
    """Only entries this recent: an age (`7d`, `12h`, `30m`) or an ISO 8601 moment (UTC when it names
    no zone). An age counts back from when the query runs."""
    actor: str | None = None
    """Only this actor, exactly (e.g. `token:ops`)."""
    action: str | None = None
    """Only actions starting with this (e.g. `deploy`, `flag.`)."""
    limit: int = Field(100, ge=1, le=MAX_AUDIT_LIMIT)
    target: str | None = None
    """Only targets starting with this (e.g. `web`, a backup set's id)."""
    until: str | None = None
    """Only entries older than this: an age or a moment, as `since`."""
    older_than: int | None = Field(None, ge=1)
    """The page after this entry's id (keyset paging, newest first)."""
    newer_than: int | None = Field(None, ge=1)
    """The page before this entry's id."""


class AuditLog(Result):
    entries: list[AuditEntry]
    """Newest first."""

    def summary(self) -> str:
        return f"audit log: {len(self.entries)} entries, newest first"


def audit_log(ws: Workspace, request: AuditQuery) -> AuditLog:
    """The audit entries the query asks for, newest first; a `since` that is neither an age nor a
    moment is a UserError that shows both forms."""
    sessions = ws.sessions
    now = utcnow()
    since = parse_since(request.since, now) if request.since else None
    until = parse_since(request.until, now) if request.until else None
    entries = query_audit(
        sessions, since=since, actor=request.actor, action=request.action, limit=request.limit,
        target=request.target, until=until, older_than=request.older_than, newer_than=request.newer_than,
    )  # fmt: skip
    return AuditLog(entries=entries)


class PruneAudit(Request):
    """Remove the entries past the workspace stack's `audit.retention` (compliance actions:
    `compliance_retention`)."""

    kind: Literal["audit-prune"] = "audit-prune"
    dry_run: bool = False


class AuditPruned(Result):
    """How many entries went (in a dry run: would go), and the cutoffs that decided it."""

    removed: int
    dry_run: bool = False
    before: dt.datetime
    """Entries older than this went, unless their action is a compliance action."""
    compliance_before: dt.datetime
    """Entries of compliance actions older than this went."""
    compliance_actions: list[str]
    """The action prefixes kept for the compliance retention."""

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return (
            f"{verb} {self.removed} audit entries: older than {self.before:%Y-%m-%d}, or than"
            f" {self.compliance_before:%Y-%m-%d} for {', '.join(self.compliance_actions) or 'no'} actions"
        )


def prune_audit(ws: Workspace, request: PruneAudit) -> AuditPruned:
    """Remove (in a dry run, count) the entries past the stack's audit retention."""
    policy = ws.stack.audit
    cutoffs = audit_cutoffs(
        utcnow(), policy.retention, policy.compliance_retention, policy.compliance_actions
    )
    pruned = state.prune_audit(ws.sessions, cutoffs, dry_run=request.dry_run)
    return AuditPruned(
        removed=pruned.removed,
        dry_run=request.dry_run,
        before=cutoffs.regular,
        compliance_before=cutoffs.compliance,
        compliance_actions=list(cutoffs.compliance_actions),
    )
