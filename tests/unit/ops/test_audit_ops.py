"""`shipyard.ops.audit_log` and `prune_audit` on a real SQLite store, and the notify and audit
requests as a job stores them: JSON in and out, with their `kind`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from shipyard.errors import UserError
from shipyard.ops import (
    AuditQuery,
    FlushQueue,
    ListQueue,
    PruneAudit,
    Request,
    TestChannel,
    Workspace,
    audit_log,
    prune_audit,
)
from shipyard.state import AuditRow, open_engine, session_factory, utcnow

SPEC = """\
name: shop
audit: {retention: 30d, compliance_retention: 365d, compliance_actions: [deploy]}
environments:
  production: {}
"""

ENTRIES = [  # days ago, actor, action, outcome
    (0, "token:ops", "deploy", "succeeded"),
    (2, "cli:bob", "flag.update", "ok"),
    (40, "cli:bob", "backup.run", "succeeded"),
    (40, "token:ops", "deploy", "started"),
    (400, "token:ops", "deploy", "succeeded"),
]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A workspace on the spec above and a store holding ENTRIES."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    sessions = session_factory(open_engine(url))
    now = utcnow()
    with sessions() as session, session.begin():
        for days, actor, action, outcome in ENTRIES:
            session.add(
                AuditRow(
                    at=now - dt.timedelta(days=days), actor=actor, action=action, target_kind="service",
                    target="web", outcome=outcome, after={"days": days},
                )
            )  # fmt: skip
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    return Workspace.open(spec, database_url=url, actor="cli:test")


def test_audit_log_filters_newest_first(ws: Workspace) -> None:
    every = audit_log(ws, AuditQuery())
    assert [e.after for e in every.entries] == [{"days": d} for d, *_ in ENTRIES]
    assert every.summary() == "audit log: 5 entries, newest first"
    recent = audit_log(ws, AuditQuery(since="7d"))
    assert [e.action for e in recent.entries] == ["deploy", "flag.update"]
    mine = audit_log(ws, AuditQuery(actor="token:ops", action="dep", limit=2))
    assert [(e.actor, e.outcome) for e in mine.entries] == [
        ("token:ops", "succeeded"),
        ("token:ops", "started"),
    ]
    moment = audit_log(ws, AuditQuery(since=(utcnow() - dt.timedelta(days=41)).isoformat()))
    assert len(moment.entries) == 4


def test_audit_log_refuses_a_since_it_cannot_read(ws: Workspace) -> None:
    with pytest.raises(UserError, match="give an age like 7d"):
        audit_log(ws, AuditQuery(since="yesterday-ish"))


def test_audit_query_keeps_the_limit_in_range() -> None:
    with pytest.raises(ValidationError):
        AuditQuery(limit=0)
    with pytest.raises(ValidationError):
        AuditQuery(limit=10_001)


def test_prune_audit_dry_run_counts_then_prune_removes(ws: Workspace) -> None:
    dry = prune_audit(ws, PruneAudit(dry_run=True))
    assert (dry.removed, dry.dry_run) == (2, True)  # backup.run at 40 days, deploy at 400 days
    assert dry.compliance_actions == ["deploy"]
    assert dry.compliance_before < dry.before
    assert dry.summary().startswith("would remove 2 audit entries: older than ")
    assert dry.summary().endswith(" for deploy actions")
    assert len(audit_log(ws, AuditQuery()).entries) == 5  # a dry run removes nothing

    done = prune_audit(ws, PruneAudit())
    assert (done.removed, done.dry_run) == (2, False)
    assert done.summary().startswith("removed 2 audit entries")
    left = audit_log(ws, AuditQuery()).entries
    assert [(e.action, e.outcome) for e in left] == [
        ("deploy", "succeeded"),
        ("flag.update", "ok"),
        ("deploy", "started"),
    ]


def test_prune_audit_needs_the_spec(tmp_path: Path) -> None:
    no_spec = Workspace(database_url=f"sqlite:///{tmp_path / 'state.db'}", actor="cli:test")
    with pytest.raises(UserError, match=r"-f shipyard\.yaml"):
        prune_audit(no_spec, PruneAudit())


@pytest.mark.parametrize(
    ("request_", "kind"),
    [
        (AuditQuery(since="7d", actor="token:ops", action="flag.", limit=5), "audit-query"),
        (PruneAudit(dry_run=True), "audit-prune"),
        (TestChannel(channel="ops", severity="page", dry_run=True), "notify-test"),
        (ListQueue(), "notify-queue"),
        (FlushQueue(ignore_schedule=True), "notify-flush"),
    ],
)
def test_requests_are_json_with_their_kind(request_: Request, kind: str) -> None:
    data = request_.model_dump(mode="json")
    assert data["kind"] == kind
    assert type(request_).model_validate_json(request_.model_dump_json()) == request_


def test_test_channel_refuses_an_unknown_severity() -> None:
    with pytest.raises(ValidationError):
        TestChannel.model_validate({"channel": "ops", "severity": "urgent"})
    with pytest.raises(ValidationError):
        FlushQueue.model_validate({"everything": True})  # extra fields are refused
