"""Every restore checks its artefact's checksum before it touches anything live, and a restore that
finds the data itself wrong demotes the set (issue 12, defects 2 and 6).

Real PostgreSQL, Redis, restic and state store. The tampering is honest: the manifest's record of
an artefact is made not to match what the repository holds (its snapshot pointed at another set's
snapshot of the same datastore, or its checksum changed), as a damaged or swapped snapshot would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integration.backup._cli import shipyard
from shipyard.backup import ResticRepository, get_set, tree_digest
from shipyard.backup._resp import RespClient
from shipyard.host import free_port
from shipyard.state import AuditRow, BackupSetRow, open_engine, session_factory
from support.backup_stack import RESTIC_PASSWORD_ENV, BackupStack, backup_stack, redis_keys, table_checksums
from support.cli import CliResult, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


def _run(
    stack: BackupStack, mp: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> CliResult:
    """`shipyard ARGS -f SPEC -o json` in this process."""
    return shipyard(stack, mp, capsys, *args, "-f", str(stack.spec), "-o", "json")


def _sessions(stack: BackupStack) -> sessionmaker[Session]:
    return session_factory(open_engine(stack.state_url))


def _tamper(stack: BackupStack, set_id: str, artefact: str, **fields: Any) -> None:
    """Change the manifest's record of one artefact in the state store."""
    with _sessions(stack).begin() as session:
        row = session.get(BackupSetRow, set_id)
        assert row is not None
        manifest = row.manifest
        artefacts = [{**a, **fields} if a["name"] == artefact else a for a in manifest["artefacts"]]
        assert artefacts != manifest["artefacts"]
        row.manifest = {**manifest, "artefacts": artefacts}


def _set_ids(stack: BackupStack) -> set[str]:
    with _sessions(stack)() as session:
        return set(session.scalars(select(BackupSetRow.id)))


def _last_restore_audit(stack: BackupStack) -> AuditRow:
    with _sessions(stack)() as session:
        rows = list(
            session.scalars(select(AuditRow).where(AuditRow.action == "backup.restore").order_by(AuditRow.id))
        )
    return rows[-1]


def _artefact(taken: dict[str, Any], kind: str) -> dict[str, Any]:
    [found] = [a for a in taken["manifest"]["artefacts"] if a["type"] == kind]
    return dict(found)


def _listed(
    stack: BackupStack, mp: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], set_id: str
) -> Any:
    listed = shipyard(stack, mp, capsys, "backup", "list", "-o", "json")
    assert listed.code == 0, listed.err
    [found] = [s for s in listed.json() if s["id"] == set_id]
    return found


def test_a_tampered_redis_snapshot_never_reaches_the_live_server_and_demotes_only_that_artefact(
    stack: BackupStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mp = monkeypatch
    redis = ("127.0.0.1", stack.redis.port)
    older = _run(stack, mp, capsys, "backup", "redis")
    assert older.code == 0, older.err
    older_keys = redis_keys(stack.redis.port, stack.redis.password)
    with RespClient(*redis, password=stack.redis.password) as client:
        client.call("SET", "written-after-the-older-set", "1")
    newer = _run(stack, mp, capsys, "backup", "full")
    assert newer.code == 0, newer.err
    newer_id = newer.json()["id"]
    # The newer set's Redis artefact now names the older set's snapshot: restic answers, and gives
    # back a whole, readable RDB, but not the one whose checksum the manifest recorded.
    _tamper(stack, newer_id, "redis:cache", snapshot_id=_artefact(older.json(), "redis")["snapshot_id"])
    with RespClient(*redis, password=stack.redis.password) as client:
        client.call("SET", "live-only", "written after both sets")
    live = redis_keys(stack.redis.port, stack.redis.password)

    # The means failing (a wrong repository password) is not the data failing: nothing is demoted.
    means = shipyard(
        stack, mp, capsys, "restore", "redis", "--set", newer_id, "--into", "live", "--yes",
        "-f", str(stack.spec), "-o", "json", **{RESTIC_PASSWORD_ENV: "not the password"},
    )  # fmt: skip
    assert means.code == 1
    assert "wrong password" in means.err
    assert _listed(stack, mp, capsys, newer_id)["state"] == "complete"
    assert redis_keys(stack.redis.port, stack.redis.password) == live

    sets_before = _set_ids(stack)
    refused = _run(stack, mp, capsys, "restore", "redis", "--set", newer_id, "--into", "live", "--yes")
    assert refused.code == 1, refused.out  # VerificationError
    assert "redis:cache" in refused.err
    assert newer_id in refused.err
    assert "checksum" in refused.err
    assert f"shipyard backup verify {newer_id}" in refused.err
    # Checked before anything live: no FLUSHALL, and no safety backup was needed.
    assert redis_keys(stack.redis.port, stack.redis.password) == live
    assert _set_ids(stack) == sets_before

    # The set is demoted: its Redis artefact is damaged, its other artefacts stay restorable.
    listed = _listed(stack, mp, capsys, newer_id)
    assert listed["state"] == "partial"
    assert listed["restorable"] is True
    assert "redis:cache" in (listed["error"] or "")
    demoted = get_set(_sessions(stack), newer_id)
    assert demoted.damaged("redis:cache")
    assert demoted.health["redis:cache"].by == "restore"
    assert {a.name for a in demoted.intact_artefacts} == {"postgres:db", f"files:{stack.files}"}
    audit = _last_restore_audit(stack)
    assert audit.outcome == "failed"
    assert audit.target == f"{newer_id}/redis:cache"
    assert audit.after is not None
    assert audit.after.get("demoted") == "partial"
    assert "checksum" in audit.after["error"]

    # No one is offered the damaged artefact again, by --dry-run or by a real restore.
    named = _run(stack, mp, capsys, "restore", "redis", "--set", newer_id, "--dry-run")
    assert named.code == 2
    assert "redis:cache" in named.err
    assert "damaged" in named.err
    assert "shipyard backup list" in named.err
    planned = _run(stack, mp, capsys, "restore", "redis", "--into", "live", "--yes", "--dry-run")
    assert planned.code == 0, planned.err
    assert planned.json()["set"] == older.json()["id"]
    restored = _run(stack, mp, capsys, "restore", "redis", "--into", "live", "--yes")
    assert restored.code == 0, restored.err
    assert restored.json()["set"] == older.json()["id"]
    assert redis_keys(stack.redis.port, stack.redis.password) == older_keys

    # The set's intact PostgreSQL dump is still the newest one: a restore without --set picks it.
    planned = _run(stack, mp, capsys, "restore", "database", "--dry-run")
    assert planned.code == 0, planned.err
    assert planned.json()["set"] == newer_id
    restored = _run(stack, mp, capsys, "restore", "database")
    assert restored.code == 0, restored.err
    assert restored.json()["set"] == newer_id
    subprocess.run(restored.json()["stop_command"], check=True, capture_output=True)
    shutil.rmtree(restored.json()["location"]["data_dir"], ignore_errors=True)


def test_files_and_a_database_failing_their_checksums_leave_live_data_alone_and_demote_the_set(
    stack: BackupStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mp = monkeypatch
    older = _run(stack, mp, capsys, "backup", "database")
    assert older.code == 0, older.err
    taken = _run(stack, mp, capsys, "backup", "full")
    assert taken.code == 0, taken.err
    set_id = taken.json()["id"]
    volume = f"files:{stack.files}"
    stack.postgres.psql("UPDATE items SET price = price + 1 WHERE id <= 10", database="app")
    (stack.files / "written-after-the-set.txt").write_text("kept\n")
    tables = table_checksums(stack.postgres)
    files = sorted(str(p.relative_to(stack.files)) for p in stack.files.rglob("*"))
    siblings = sorted(p.name for p in stack.files.parent.iterdir())
    sets_before = _set_ids(stack)

    _tamper(stack, set_id, volume, sha256="0" * 64)
    refused = _run(stack, mp, capsys, "restore", "files", "--set", set_id, "--into", "live", "--yes")
    assert refused.code == 1, refused.out
    assert sorted(str(p.relative_to(stack.files)) for p in stack.files.rglob("*")) == files
    assert sorted(p.name for p in stack.files.parent.iterdir()) == siblings  # no staging tree left
    assert _set_ids(stack) == sets_before  # checked before a safety backup was taken
    assert volume in refused.err
    assert set_id in refused.err
    assert "do not match the manifest's checksum" in refused.err
    assert get_set(_sessions(stack), set_id).damaged(volume)
    assert _listed(stack, mp, capsys, set_id)["state"] == "partial"

    _tamper(stack, set_id, "postgres:db", sha256="0" * 64)
    refused = _run(stack, mp, capsys, "restore", "database", "--set", set_id, "--into", "live", "--yes")
    assert refused.code == 1, refused.out
    assert "postgres:db" in refused.err
    assert set_id in refused.err
    assert "does not match its checksum" in refused.err
    assert table_checksums(stack.postgres) == tables
    assert _set_ids(stack) == sets_before
    demoted = get_set(_sessions(stack), set_id)
    assert demoted.state == "partial"
    assert {a.name for a in demoted.intact_artefacts} == {"redis:cache"}

    # Each picker skips the damaged artefact and agrees with --dry-run.
    planned = _run(stack, mp, capsys, "restore", "database", "--into", "live", "--yes", "--dry-run")
    assert planned.code == 0, planned.err
    assert planned.json()["set"] == older.json()["id"]
    planned = _run(stack, mp, capsys, "restore", "redis", "--dry-run")
    assert planned.code == 0, planned.err
    assert planned.json()["set"] == set_id  # the set's intact artefact stays restorable
    planned = _run(stack, mp, capsys, "restore", "files", "--dry-run")
    assert planned.code == 2 or planned.json()["set"] != set_id
    planned = _run(stack, mp, capsys, "restore", "volumes", "--set", set_id, "--dry-run")
    assert planned.code == 2
    assert volume in planned.err
    assert "damaged" in planned.err


def test_a_redis_snapshot_failing_its_checksum_never_starts_a_scratch_server(
    stack: BackupStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    mp = monkeypatch
    taken = _run(stack, mp, capsys, "backup", "redis")
    assert taken.code == 0, taken.err
    set_id = taken.json()["id"]
    _tamper(stack, set_id, "redis:cache", sha256="0" * 64)
    target = Path(tempfile.mkdtemp(prefix="shipyard-restore-integrity-")) / "redis"
    port = free_port()
    try:
        refused = _run(
            stack, mp, capsys, "restore", "redis", "--set", set_id, "--target-dir", str(target),
            "--port", str(port),
        )  # fmt: skip
        if refused.code == 0:  # the damaged snapshot was served: stop it, then fail
            subprocess.run(refused.json()["stop_command"], check=False, capture_output=True)
        assert refused.code == 1, refused.out
        assert "redis:cache" in refused.err
        assert "checksum" in refused.err
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        assert not (target / "dump.rdb").exists()  # the damaged snapshot is not left to be served
        # A Redis-only set with its one artefact damaged has nothing left to restore.
        assert get_set(_sessions(stack), set_id).state == "failed"
    finally:
        shutil.rmtree(target.parent, ignore_errors=True)


VOLUMES_SPEC = """\
name: shop
backup:
  repository: ./repo
  password: ${{env:{password_env}}}
  sources: {{volumes: [{volumes}]}}
environments:
  test: {{}}
"""


def test_one_damaged_volume_leaves_every_live_volume_as_it_was(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`restore volumes --into live` checks every volume before it swaps in the first: one that
    fails leaves all of them untouched, with no safety backup taken, and demotes only itself."""
    base = Path(tempfile.mkdtemp(prefix="shipyard-restore-integrity-volumes-"))
    try:
        uploads, media = base / "live" / "uploads", base / "live" / "media"
        uploads.mkdir(parents=True)
        media.mkdir()
        (uploads / "a.txt").write_text("alpha\n")
        (media / "logo.bin").write_bytes(bytes(range(256)) * 16)
        (base / "shipyard.yaml").write_text(
            VOLUMES_SPEC.format(password_env=RESTIC_PASSWORD_ENV, volumes=f"{uploads}, {media}")
        )
        ResticRepository(str(base / "repo"), "volumes password", cache_dir=base / "cache").init()
        for key, value in {
            RESTIC_PASSWORD_ENV: "volumes password",
            "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
            "SHIPYARD_STATE_DIR": str(base / "state"),
            "SHIPYARD_ACTOR": "tester",
            "XDG_CACHE_HOME": str(base / "cache"),
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(base)
        sessions = session_factory(open_engine(f"sqlite:///{base / 'state.db'}"))
        taken = run_cli(capsys, "backup", "files", "-o", "json")
        assert taken.code == 0, taken.err
        set_id = taken.json()["id"]
        (uploads / "a.txt").write_text("changed\n")
        (media / "logo.bin").write_bytes(b"changed")
        live = {path: tree_digest(path) for path in (uploads, media)}
        with sessions.begin() as session:
            row = session.get(BackupSetRow, set_id)
            assert row is not None
            artefacts = [
                {**a, "sha256": "0" * 64} if a["name"] == f"files:{media}" else a
                for a in row.manifest["artefacts"]
            ]
            row.manifest = {**row.manifest, "artefacts": artefacts}

        refused = run_cli(capsys, "restore", "volumes", "--set", set_id, "--into", "live", "--yes")
        assert refused.code == 1, refused.out
        assert {path: tree_digest(path) for path in (uploads, media)} == live  # uploads not swapped in
        assert sorted(p.name for p in (base / "live").iterdir()) == ["media", "uploads"]
        with sessions() as session:
            assert list(session.scalars(select(BackupSetRow.id))) == [set_id]  # no safety backup
            audit = list(
                session.scalars(
                    select(AuditRow).where(AuditRow.action == "backup.restore").order_by(AuditRow.id)
                )
            )
        assert [(a.target, a.outcome) for a in audit] == [
            (f"{set_id}/files:{uploads}", "started"),
            (f"{set_id}/files:{media}", "started"),
            (f"{set_id}/files:{uploads}", "failed"),
            (f"{set_id}/files:{media}", "failed"),
        ]
        assert audit[2].after is not None
        assert f"files:{media} of the same set failed" in audit[2].after["error"]
        demoted = get_set(sessions, set_id)
        assert demoted.state == "partial"
        assert [a.name for a in demoted.intact_artefacts] == [f"files:{uploads}"]

        # The intact volume of the partial set can still be restored over its live directory.
        restored = run_cli(capsys, "restore", "files", "--path", str(uploads), "--into", "live", "--yes")
        assert restored.code == 0, restored.err
        assert (uploads / "a.txt").read_text() == "alpha\n"
    finally:
        shutil.rmtree(base, ignore_errors=True)
