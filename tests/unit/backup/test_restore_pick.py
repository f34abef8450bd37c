"""Which set and artefact a restore picks, and its --dry-run with it (issue 12, defect 6): a
damaged artefact is skipped for an older intact copy, an intact artefact of a `partial` set is
still picked, and naming a damaged artefact's set is refused with a message that names it.

A real state store (SQLite) holding sets with the manifest of a real full set
(`stored_sets.json`); the damage is recorded through `record_damage`, as a restore records it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import plan_restore, plan_restore_volumes, record_damage
from shipyard.errors import NotFoundError, UserError
from shipyard.spec import Stack
from shipyard.state import BackupSetRow, open_engine, session_factory

FULL: dict[str, Any] = json.loads(
    json.loads(Path(__file__).with_name("stored_sets.json").read_text())[0]["manifest"]
)
STACK = cast(Stack, SimpleNamespace(name=FULL["spec"], environment=FULL["environment"]))
"""plan_restore reads only the stack's name and environment (to list its sets)."""
[VOLUME] = [a for a in FULL["artefacts"] if a["type"] == "files"]
SECOND = {**VOLUME, "name": "files:/srv/media", "path": "/srv/media"}


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _add(sessions: sessionmaker[Session], set_id: str, minute: int, *, volumes: int = 1) -> str:
    artefacts = [*FULL["artefacts"], *([SECOND] if volumes == 2 else [])]
    manifest = {
        **FULL,
        "id": set_id,
        "artefacts": artefacts,
        "sources": [a["name"] for a in artefacts],
    }
    with sessions.begin() as session:
        session.add(
            BackupSetRow(
                id=set_id, stack=FULL["spec"], environment=FULL["environment"], kind="full",
                state="complete", owner="test:1", actor="cli:test", manifest=manifest,
                started_at=dt.datetime(2026, 12, 6, 10, minute, tzinfo=dt.UTC),
            )
        )  # fmt: skip
    return set_id


def test_a_damaged_artefact_is_skipped_and_the_intact_ones_of_its_set_are_still_picked(
    sessions: sessionmaker[Session],
) -> None:
    older = _add(sessions, "20261206-100000-aaaa", 0)
    newer = _add(sessions, "20261206-101000-bbbb", 10)
    assert plan_restore(sessions, STACK, "redis")["set"] == newer

    demoted = record_damage(
        sessions, newer, "redis:cache", "the restored snapshot does not match its checksum"
    )
    assert demoted.state == "partial"
    assert plan_restore(sessions, STACK, "redis", into="live")["set"] == older
    assert plan_restore(sessions, STACK, "redis", name="cache")["set"] == older
    assert plan_restore(sessions, STACK, "database")["set"] == newer  # intact in the partial set
    assert plan_restore(sessions, STACK, "files", name=VOLUME["path"])["set"] == newer
    assert plan_restore(sessions, STACK, "database", set_id=newer)["artefact"] == "postgres:db"

    with pytest.raises(UserError) as refused:
        plan_restore(sessions, STACK, "redis", set_id=newer)
    assert "redis:cache of set" in refused.value.message
    assert newer in refused.value.message
    assert "does not match its checksum" in refused.value.message
    assert "shipyard backup list" in refused.value.message

    record_damage(sessions, older, "redis:cache", "restic could not restore its snapshot")
    with pytest.raises(NotFoundError, match="intact redis artefact"):
        plan_restore(sessions, STACK, "redis")


def test_a_set_with_every_artefact_damaged_is_failed_and_never_picked(
    sessions: sessionmaker[Session],
) -> None:
    set_id = _add(sessions, "20261206-100000-cccc", 0)
    for artefact in FULL["artefacts"]:
        record_damage(sessions, set_id, artefact["name"], "checksum mismatch")
    with pytest.raises(NotFoundError):
        plan_restore(sessions, STACK, "database")
    with pytest.raises(UserError, match="failed"):
        plan_restore(sessions, STACK, "database", set_id=set_id)


def test_restoring_every_volume_needs_every_volume_intact(sessions: sessionmaker[Session]) -> None:
    older = _add(sessions, "20261206-100000-dddd", 0, volumes=2)
    newer = _add(sessions, "20261206-101000-eeee", 10, volumes=2)
    record_damage(sessions, newer, SECOND["name"], "the restored files do not match the manifest's checksum")

    assert plan_restore_volumes(sessions, STACK)["set"] == older
    with pytest.raises(UserError, match=r"files:/srv/media of set .* is damaged"):
        plan_restore_volumes(sessions, STACK, set_id=newer, into="live")
    # The volume that is intact can still be restored alone, from the newer set.
    assert plan_restore(sessions, STACK, "files", name=VOLUME["path"])["set"] == newer
    assert plan_restore(sessions, STACK, "files", name="/srv/media")["set"] == older


def test_several_artefacts_of_a_kind_must_be_named_before_damage_is_reported(
    sessions: sessionmaker[Session],
) -> None:
    set_id = _add(sessions, "20261206-100000-ffff", 0, volumes=2)
    record_damage(sessions, set_id, SECOND["name"], "checksum mismatch")
    with pytest.raises(UserError, match="holds several files artefacts"):
        plan_restore(sessions, STACK, "files", set_id=set_id)
    with pytest.raises(UserError, match="damaged"):
        plan_restore(sessions, STACK, "files", set_id=set_id, name="/srv/media")
