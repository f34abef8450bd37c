"""Audit retention: which entries a prune removes, decided without a database, then the same
decision carried out by SQL on a real SQLite store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import UserError
from shipyard.state import AuditRow, open_engine, session_factory
from shipyard.state._audit import audit_cutoffs, expired, parse_since, prune_audit, query_audit

NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
DAY = 86400
PREFIXES = ["restore", "failover", "flag", "deploy", "rollback"]
actions = st.sampled_from(
    [
        "deploy",
        "flag.update",
        "flag.create",
        "backup.run",
        "backup.verify",
        "restore",
        "dr.drill",
        "rollback",
        "x",
    ]
)
ages = st.floats(min_value=0, max_value=10 * 365 * DAY, allow_nan=False)


@given(
    action=actions, age=ages, retention=st.integers(1, 400 * DAY), compliance=st.integers(1, 8 * 365 * DAY)
)
def test_an_entry_goes_exactly_when_it_is_older_than_its_retention(
    action: str, age: float, retention: int, compliance: int
) -> None:
    cutoffs = audit_cutoffs(NOW, retention, compliance, PREFIXES)
    is_compliance = any(action.startswith(p) for p in PREFIXES)
    keep_for = max(retention, compliance) if is_compliance else retention
    at = NOW - dt.timedelta(seconds=age)
    assert expired(at, action, cutoffs) == (age > keep_for)


@given(action=actions, age=ages)
def test_a_compliance_entry_outlives_every_other_one(action: str, age: float) -> None:
    cutoffs = audit_cutoffs(NOW, 90 * DAY, 7 * 365 * DAY, PREFIXES)
    at = NOW - dt.timedelta(seconds=age)
    if expired(at, "deploy", cutoffs):
        assert expired(at, action, cutoffs)


def test_zero_retention_is_refused() -> None:
    with pytest.raises(UserError, match="longer than zero"):
        audit_cutoffs(NOW, 0, DAY, PREFIXES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - dt.timedelta(days=7)),
        ("12h", NOW - dt.timedelta(hours=12)),
        (" 30m ", NOW - dt.timedelta(minutes=30)),
        ("2w", NOW - dt.timedelta(weeks=2)),
        ("2026-11-30T06:00:00Z", dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC)),
        ("2026-11-30T08:00:00+02:00", dt.datetime(2026, 11, 30, 6, tzinfo=dt.UTC)),
        ("2026-11-30", dt.datetime(2026, 11, 30, tzinfo=dt.UTC)),
    ],
)
def test_since_takes_an_age_or_a_moment(text: str, expected: dt.datetime) -> None:
    assert parse_since(text, NOW) == expected


def test_since_refuses_anything_else() -> None:
    with pytest.raises(UserError, match="7d"):
        parse_since("last tuesday", NOW)


def test_prune_removes_what_the_pure_decision_says(tmp_path: Path) -> None:
    sessions = session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    entries = [
        (action, NOW - dt.timedelta(days=days))
        for action in ("deploy", "flag.update", "backup.run", "dr.drill", "restore", "axb.c")
        for days in (1, 89, 91, 400, 7 * 365 + 1)
    ]
    with sessions() as session, session.begin():
        for action, at in entries:
            session.add(AuditRow(at=at, actor="a", action=action, target_kind="k", target="t"))
    cutoffs = audit_cutoffs(NOW, 90 * DAY, 7 * 365 * DAY, [*PREFIXES, "a_b"])
    doomed = sum(expired(at, action, cutoffs) for action, at in entries)
    # Others go at 91 days, 400 days and 7 years; compliance entries only at 7 years. `a_b` is a
    # prefix, not a LIKE pattern: it does not make `axb.c` a compliance entry.
    assert doomed == 3 * 3 + 3 * 1
    dry = prune_audit(sessions, cutoffs, dry_run=True)
    assert dry.removed == doomed
    kept_before = len(query_audit(sessions, limit=1000))
    assert kept_before == len(entries)
    done = prune_audit(sessions, cutoffs)
    assert done.removed == dry.removed
    kept = {(e.action, e.at) for e in query_audit(sessions, limit=1000)}
    assert kept == {(action, at) for action, at in entries if not expired(at, action, cutoffs)}


def test_query_filters_by_time_actor_and_action_prefix(tmp_path: Path) -> None:
    sessions = session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))
    with sessions() as session, session.begin():
        for index, (actor, action) in enumerate(
            [
                ("token:ops", "deploy"),
                ("cli:bob", "flag.update"),
                ("token:ops", "flag.create"),
                ("x", "flag%"),
            ]
        ):
            session.add(
                AuditRow(
                    at=NOW - dt.timedelta(days=index), actor=actor, action=action, target_kind="k", target="t"
                )
            )
    assert [e.action for e in query_audit(sessions, action="flag.")] == ["flag.update", "flag.create"]
    assert [e.action for e in query_audit(sessions, action="flag%")] == ["flag%"]
    assert [e.action for e in query_audit(sessions, actor="token:ops")] == ["deploy", "flag.create"]
    since = NOW - dt.timedelta(days=1, hours=1)
    assert [e.action for e in query_audit(sessions, since=since)] == ["deploy", "flag.update"]
    assert len(query_audit(sessions, limit=2)) == 2
