"""A database restore into scratch, the fast way (issue 5's restore-speed target): the scratch
server is tuned for bulk loading and starts while restic restores the dump, and the dump's
checksum is computed while pg_restore reads it. Real PostgreSQL, restic and state store."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select

from integration.backup._cli import shipyard
from shipyard.state import AuditRow, BackupSetRow, open_engine, session_factory
from support.backup_stack import BackupStack, backup_stack, table_checksums
from support.servers import Postgres


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


@pytest.fixture(scope="module")
def taken(stack: BackupStack) -> dict[str, Any]:
    result = stack.run("backup", "database", "-f", str(stack.spec), "-o", "json")
    return dict(json.loads(result.stdout))


@pytest.fixture
def scratch_base() -> Iterator[Path]:
    """A directory the `postgres` user can reach (the stack's own base is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="shipyard-restore-scratch-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _settings(port: int, user: str, names: tuple[str, ...]) -> dict[str, str]:
    with psycopg.connect(host="127.0.0.1", port=port, user=user, dbname="postgres") as conn:
        rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(names)])
        return {str(name): str(value) for name, value in rows.fetchall()}


def test_restore_into_scratch_is_tuned_for_bulk_loading_and_gives_identical_data(
    stack: BackupStack,
    taken: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scratch_base: Path,
) -> None:
    target = scratch_base / "restored-pg"
    restored = shipyard(
        stack, monkeypatch, capsys, "restore", "database", "--set", taken["id"], "--jobs", "2",
        "--target-dir", str(target), "-f", str(stack.spec), "-o", "json",
    )  # fmt: skip
    assert restored.code == 0, restored.err
    location = restored.json()["location"]
    try:
        scratch = Postgres(port=location["port"], datadir=Path(location["data_dir"]), user=location["user"])
        assert table_checksums(scratch) == table_checksums(stack.postgres)
        names = ("wal_level", "full_page_writes", "fsync", "max_wal_senders", "max_wal_size")
        assert _settings(location["port"], location["user"], names) == {
            "wal_level": "minimal",  # pg_restore -j's COPYs into tables it created write no WAL
            "full_page_writes": "off",
            "fsync": "off",
            "max_wal_senders": "0",
            "max_wal_size": "8192",  # MB: no checkpoint forced in the middle of a load
        }
        # The live server is not a restore target: its own settings are untouched.
        assert _settings(stack.postgres.port, stack.postgres.user, ("wal_level",)) == {"wal_level": "replica"}
    finally:
        subprocess.run(restored.json()["stop_command"], check=True, capture_output=True)


def test_a_dump_that_does_not_match_its_checksum_fails_the_restore_and_stops_the_server(
    stack: BackupStack,
    taken: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    scratch_base: Path,
) -> None:
    """The checksum is now checked while pg_restore runs: a mismatch must still fail the restore,
    and the scratch server it was loading must not be left running."""
    sessions = session_factory(open_engine(stack.state_url))
    with sessions() as session:
        row = session.get(BackupSetRow, taken["id"])
        assert row is not None
        original = row.manifest
        artefacts = [
            {**a, "sha256": "0" * 64} if a["type"] == "postgres" else a for a in original["artefacts"]
        ]
        row.manifest = {**original, "artefacts": artefacts}
        session.commit()
    target = scratch_base / "restored-bad"
    try:
        failed = shipyard(
            stack, monkeypatch, capsys, "restore", "database", "--set", taken["id"],
            "--target-dir", str(target), "-f", str(stack.spec), "-o", "json",
        )  # fmt: skip
    finally:
        with sessions() as session:
            row = session.get(BackupSetRow, taken["id"])
            assert row is not None
            row.manifest = original
            session.commit()
    assert failed.code != 0
    assert "does not match its checksum" in failed.err
    assert "backup verify" in failed.err
    assert not (target / "data" / "postmaster.pid").exists()  # stopped, not left loading
    # The server did start (it wrote its command line), and no longer listens on its port.
    [port] = re.findall(r'"-p" "(\d+)"', (target / "data" / "postmaster.opts").read_text())
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", int(port)), timeout=1):
        pass
    with sessions() as session:
        audit = list(session.scalars(select(AuditRow).where(AuditRow.action == "backup.restore")))
    assert audit[-1].outcome == "failed"
