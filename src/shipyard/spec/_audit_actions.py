"""Every kind of audit entry shipyard writes, and how long the audit log keeps it by default.

Seed 001 keeps compliance logs for 7 years and security logs for 90 days. Every entry that says
who changed the world (a deploy, a rollback, a flag change, a restore, a failover, a token) or
that proves it can be recovered (a backup, a verification, a drill) is a compliance entry; who
signed in to the dashboard is a security entry, kept for `audit.retention`.

An entry's action is matched by prefix, as `audit.compliance_actions` matches it: a family ending
in `.` (e.g. `rollout.`) covers every action written with a computed suffix (`rollout.promote`,
`rollout.rollback`). A test reads every place that writes an audit entry and fails on an action
this table does not name (tests/unit/state/test_compliance_actions.py): a new action is classed
here, once, and the default below follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RetentionClass = Literal["compliance", "security"]


@dataclass(frozen=True)
class AuditAction:
    action: str
    """The action, or a family of them when it ends in `.`."""
    retention: RetentionClass
    written_when: str


AUDIT_ACTIONS: tuple[AuditAction, ...] = (
    AuditAction("apply", "compliance", "an environment's manifests are applied"),
    AuditAction("down", "compliance", "a stack is taken down"),
    AuditAction("deploy", "compliance", "a release starts and ends (rolled back or not)"),
    AuditAction("rollout.", "compliance", "a release is promoted, aborted, paused, resumed, rolled back"),
    AuditAction("promote", "compliance", "what passed in one environment is released into another"),
    AuditAction("create", "compliance", "a flag or a segment is created (the flag store)"),
    AuditAction("update", "compliance", "a flag or a segment is changed"),
    AuditAction("delete", "compliance", "a flag or a segment is deleted"),
    AuditAction("token.create", "compliance", "an API token is created"),
    AuditAction("token.revoke", "compliance", "an API token is revoked"),
    AuditAction("backup", "compliance", "a backup set is taken"),
    AuditAction("backup.import", "compliance", "backup sets are imported from a repository"),
    AuditAction("backup.verify", "compliance", "a backup set is restored into scratch and checked"),
    AuditAction("backup.restore", "compliance", "a backup set is restored"),
    AuditAction("backup.restore.drop", "compliance", "a scratch restore left running is dropped"),
    AuditAction("backup.pitr.", "compliance", "pgBackRest: stanza, backup, restore, expiry, WAL stream"),
    AuditAction("dr.failover", "compliance", "a datastore fails over to its standby"),
    AuditAction("dr.failback", "compliance", "a datastore fails back"),
    AuditAction("dr.drill", "compliance", "a DR drill runs"),
    AuditAction("dr.ha.", "compliance", "a Patroni cluster is brought up or down"),
    AuditAction("job.", "compliance", "a job (a deploy, restore, backup, drill, …) starts and ends"),
    AuditAction("login", "security", "someone signs in to the dashboard, or fails to"),
    AuditAction("logout", "security", "someone signs out of the dashboard"),
)  # fmt: skip

COMPLIANCE_ACTIONS: tuple[str, ...] = tuple(a.action for a in AUDIT_ACTIONS if a.retention == "compliance")
"""The default `audit.compliance_actions`: every action of the compliance class."""


def retention_class(action: str) -> RetentionClass | None:
    """The class of an action as AUDIT_ACTIONS names it (the longest matching entry); None when
    no entry does."""
    matches = [
        entry
        for entry in AUDIT_ACTIONS
        if action == entry.action or (entry.action.endswith(".") and action.startswith(entry.action))
    ]
    return max(matches, key=lambda e: len(e.action)).retention if matches else None
