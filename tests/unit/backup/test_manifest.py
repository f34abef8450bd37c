"""Manifests and verification reports are typed, and stored exactly as before they were.

`stored_sets.json` holds the documents the state store held for four sets taken, verified and
failed by the backup code before these models existed (the dict-building code of
backup/_run.py and _verify.py), exactly as its `backup_sets.manifest` and `.verification` columns
held them. Each is read into the models and written back through the state store: the stored
text must be the same, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import (
    FilesArtefact,
    Manifest,
    PostgresArtefact,
    RedisArtefact,
    Verification,
    get_set,
)
from shipyard.state import BackupSetRow, open_engine, session_factory

STORED: list[dict[str, Any]] = json.loads(Path(__file__).with_name("stored_sets.json").read_text())


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _columns(sessions: sessionmaker[Session], set_id: str) -> tuple[str, str | None]:
    """The manifest and verification columns' text, as the database holds it."""
    with sessions() as session:
        row = session.execute(
            text("SELECT manifest, verification FROM backup_sets WHERE id = :id"), {"id": set_id}
        ).one()
    return row[0], row[1]


@pytest.mark.parametrize("stored", STORED, ids=[s["what"] for s in STORED])
def test_a_stored_set_reads_into_the_models_and_writes_back_byte_for_byte(
    sessions: sessionmaker[Session], stored: dict[str, Any]
) -> None:
    manifest = json.loads(stored["manifest"])
    row = BackupSetRow(
        id=manifest["id"], stack=manifest["spec"], environment=manifest["environment"], kind=manifest["kind"],
        state=stored["state"], owner="test:1", actor="cli:test", manifest=manifest,
        started_at=dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
    )  # fmt: skip
    if stored["verification"] is not None:  # a set never verified has no report (SQL NULL)
        row.verification = json.loads(stored["verification"])
    with sessions() as session, session.begin():
        session.add(row)
    assert _columns(sessions, manifest["id"]) == (stored["manifest"], stored["verification"])

    backup_set = get_set(sessions, manifest["id"])
    assert [a.name for a in backup_set.artefacts] == [a["name"] for a in manifest["artefacts"]]
    for manifest_now, verification_now in (
        # something else first, so that writing the models' documents is a real write
        ({}, {} if backup_set.verification else None),
        (backup_set.manifest.stored(), backup_set.verification.stored() if backup_set.verification else None),
    ):
        with sessions() as session, session.begin():
            stored_row = session.get(BackupSetRow, manifest["id"])
            assert stored_row is not None
            stored_row.manifest = manifest_now
            if verification_now is not None:
                stored_row.verification = verification_now
    assert _columns(sessions, manifest["id"]) == (stored["manifest"], stored["verification"])


def test_each_artefact_is_read_as_its_own_type_with_typed_facts() -> None:
    full = Manifest.model_validate_json(STORED[0]["manifest"])
    postgres, redis, files = full.artefacts
    assert isinstance(postgres, PostgresArtefact)
    assert postgres.row_counts == {"audit.events": 2, "public.items": 2000, "public.orders": 3000}
    assert isinstance(redis, RedisArtefact)
    assert (redis.dbsize, redis.dbsize_range, redis.expected_keys()) == (105, (105, 105), "105")
    assert redis.holds_keys(105)
    assert not redis.holds_keys(104)
    assert isinstance(files, FilesArtefact)
    assert files.path == files.name.removeprefix("files:")
    assert full.artefact("redis:cache") is redis
    assert full.artefact("redis:other") is None


def test_a_redis_snapshot_taken_while_keys_were_written_promises_a_range() -> None:
    full = Manifest.model_validate_json(STORED[0]["manifest"])
    redis = full.artefacts[1]
    assert isinstance(redis, RedisArtefact)
    busy = redis.model_copy(update={"dbsize": None, "dbsize_range": (100, 105)})
    assert busy.expected_keys() == "100..105"
    assert [busy.holds_keys(n) for n in (99, 100, 105, 106)] == [False, True, True, False]


def test_a_verification_report_has_seconds_or_error_only_when_its_outcome_gave_one() -> None:
    passed = Verification.model_validate_json(STORED[0]["verification"])
    assert passed.ok is True
    assert len(passed.checks) == 10
    assert all(check.ok for check in passed.checks)
    assert list(passed.stored()) == ["started_at", "read_data_subset", "ok", "checks", "seconds"]
    failed = Verification.model_validate_json(STORED[1]["verification"])
    assert failed.ok is False
    assert [c.check for c in failed.checks if not c.ok] == ["row counts of 3 tables"]
    could_not = Verification.model_validate_json(STORED[3]["verification"])
    assert (could_not.ok, could_not.seconds, could_not.checks) == (None, None, [])
    assert list(could_not.stored()) == ["started_at", "read_data_subset", "ok", "checks", "error"]


def test_keys_a_newer_version_added_are_kept_after_the_known_ones() -> None:
    document = json.loads(STORED[2]["manifest"])
    document["encryption"] = "repository key v2"
    assert list(Manifest.model_validate(document).stored()) == list(document)
    assert Manifest.model_validate(document).stored() == document
