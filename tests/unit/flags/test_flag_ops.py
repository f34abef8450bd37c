"""The flag verbs of `shipyard.ops` over a real SQLite state store: a dry run plans exactly what
the write then does (the same before/after, version and audit record), and writes nothing."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import ConflictError, InvalidObjectError, NotFoundError, UserError
from shipyard.flags import FlagStore
from shipyard.ops import Workspace
from shipyard.ops._flags import (
    CreateFlag,
    CreateToken,
    DeleteFlag,
    DeleteSegment,
    FlagChanged,
    ImportFlags,
    PutSegment,
    RevokeToken,
    SetFlag,
    create_flag,
    create_token,
    delete_flag,
    delete_segment,
    import_flags,
    put_segment,
    revoke_token,
    set_flag,
)

STAFF = {"conditions": [{"attribute": "email", "op": "ends_with", "value": "@corp.io"}]}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(
        spec_path=tmp_path / "shipyard.yaml",
        environment="production",
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        actor="test:ops",
    )


def rows(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    FlagStore(ws.sessions).version()  # the store exists (migrated) before it is read here
    assert ws.database_url is not None
    with contextlib.closing(sqlite3.connect(ws.database_url.removeprefix("sqlite:///"))) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in sorted(tables)}


def last_audit(ws: Workspace, kind: str = "flag") -> tuple[str, str, Any, Any]:
    entry = FlagStore(ws.sessions).audit(kind=kind, limit=1)[0]
    return entry.action, entry.target, entry.before, entry.after


def planned_then_done(ws: Workspace, verb: Any, request: Any) -> FlagChanged:
    """Dry-run `request`, check nothing changed, run it, check it did what was planned."""
    before = rows(ws)
    plan = verb(ws, request.model_copy(update={"dry_run": True}))
    assert plan.dry_run
    assert rows(ws) == before
    done = verb(ws, request)
    assert not done.dry_run
    assert (done.action, done.key, done.version) == (plan.action, plan.key, plan.version)
    assert last_audit(ws, plan.target_kind) == (plan.action, plan.key, plan.before, plan.after)
    if plan.after is not None:
        assert done.after == plan.after
    return plan


def test_every_flag_verb_does_what_its_dry_run_planned(ws: Workspace) -> None:
    planned_then_done(ws, put_segment, PutSegment(name="staff", segment=STAFF))
    create = CreateFlag(flag={"key": "dark-mode", "default_value": False})
    assert planned_then_done(ws, create_flag, create).summary() == (
        "dry run: would create flag dark-mode (version 1)"
    )
    rule = {"conditions": [{"op": "segment", "value": "staff"}], "value": True}
    patch = {"environments": {"production": {"enabled": True, "rules": [rule]}}}
    plan = planned_then_done(ws, set_flag, SetFlag(key="dark-mode", merge_patch=patch, if_match=1))
    assert plan.summary() == "dry run: would update flag dark-mode (version 1 → 2)"
    definition = {"default_value": True, "description": "the whole flag, replaced"}
    planned_then_done(ws, set_flag, SetFlag(key="dark-mode", definition=definition))
    segment = {"conditions": [*STAFF["conditions"], {"attribute": "role", "op": "eq", "value": "ADMIN"}]}
    planned_then_done(ws, put_segment, PutSegment(name="staff", segment=segment, if_match=1))
    planned_then_done(ws, delete_segment, DeleteSegment(name="staff", if_match=2))
    plan = planned_then_done(ws, delete_flag, DeleteFlag(key="dark-mode", if_match=3))
    assert plan.summary() == "dry run: would delete flag dark-mode (at version 3)"


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (CreateFlag(flag={"key": "Not A Key", "default_value": 1}), InvalidObjectError),
        (CreateFlag(flag={"key": "gate", "default_value": False}), ConflictError),
        (SetFlag(key="ghost", merge_patch={}), NotFoundError),
        (SetFlag(key="gate", merge_patch={"default_value": "text"}), InvalidObjectError),
        (SetFlag(key="gate", definition={"key": "other", "default_value": False}), InvalidObjectError),
        (SetFlag(key="gate", merge_patch={}, if_match=9), ConflictError),
        (DeleteFlag(key="gate"), InvalidObjectError),  # `gated` requires it
        (DeleteSegment(name="ghost"), NotFoundError),
        (PutSegment(name="new", segment=STAFF, if_match=1), ConflictError),
        (ImportFlags(flags={"flags": [{"key": "x", "prerequisites": [{"flag": "y"}]}]}), InvalidObjectError),
    ],
)
def test_a_dry_run_refuses_what_the_write_refuses(
    ws: Workspace, request_: Any, error: type[Exception]
) -> None:
    create_flag(ws, CreateFlag(flag={"key": "gate", "default_value": False}))
    create_flag(
        ws, CreateFlag(flag={"key": "gated", "default_value": False, "prerequisites": [{"flag": "gate"}]})
    )
    verb = {
        "flag-create": create_flag,
        "flag-set": set_flag,
        "flag-delete": delete_flag,
        "flags-import": import_flags,
        "segment-put": put_segment,
        "segment-delete": delete_segment,
    }[request_.kind]
    before = rows(ws)
    with pytest.raises(error):
        verb(ws, request_.model_copy(update={"dry_run": True}))
    with pytest.raises(error):
        verb(ws, request_)
    assert rows(ws) == before


def test_import_dry_run_lists_the_changes_the_import_makes(ws: Workspace) -> None:
    import_flags(ws, ImportFlags(flags={"a": {"default_value": False}, "b": {"default_value": False}}))
    request = ImportFlags(flags={"a": {"default_value": True}, "c": {"default_value": False}}, replace=True)
    before = rows(ws)
    plan = import_flags(ws, request.model_copy(update={"dry_run": True}))
    assert rows(ws) == before
    assert [(c.action, c.key) for c in plan.changes or []] == [
        ("update", "a"),
        ("create", "c"),
        ("delete", "b"),
    ]
    assert plan.summary() == (
        "dry run: importing 2 flags and 0 segments would create 1, update 1 and delete 1 flags and segments "
        "(flag set version 1 now)"
    )
    done = import_flags(ws, request)
    assert done.summary() == "imported 2 flags and 0 segments; flag set version 2"
    audit = FlagStore(ws.sessions).audit(limit=3)
    assert [(e.action, e.target, e.before, e.after) for e in reversed(audit)] == [
        (c.action, c.key, c.before, c.after) for c in plan.changes or []
    ]


def test_token_verbs_dry_run_and_never_show_the_token(ws: Workspace) -> None:
    before = rows(ws)
    plan = create_token(ws, CreateToken(name="ci", scope="admin", dry_run=True))
    assert (plan.token, plan.prefix, rows(ws)) == (None, None, before)
    created = create_token(ws, CreateToken(name="ci", scope="admin"))
    assert created.token is not None
    value = created.token.get_secret_value()
    assert value.startswith("shy_admin_")
    assert value not in repr(created) + created.model_dump_json() + created.summary()
    with pytest.raises(UserError, match="exists"):
        create_token(ws, CreateToken(name="ci", dry_run=True))
    before = rows(ws)
    assert revoke_token(ws, RevokeToken(name="ci", dry_run=True)).summary() == (
        "dry run: would revoke token 'ci' with scope admin"
    )
    assert rows(ws) == before
    assert revoke_token(ws, RevokeToken(name="ci")).revoked_before is None
    assert revoke_token(ws, RevokeToken(name="ci", dry_run=True)).revoked_before is not None
    with pytest.raises(UserError, match="no token named 'ghost'"):
        revoke_token(ws, RevokeToken(name="ghost", dry_run=True))


def test_requests_are_json_and_set_takes_one_change() -> None:
    request = SetFlag(key="a", merge_patch={"environments": {"dev": {"enabled": True}}}, if_match=3)
    assert SetFlag.model_validate_json(request.model_dump_json()) == request
    assert request.kind == "flag-set"
    with pytest.raises(ValueError, match="exactly one"):
        SetFlag(key="a")
    with pytest.raises(ValueError, match="exactly one"):
        SetFlag(key="a", merge_patch={}, definition={"default_value": False})
