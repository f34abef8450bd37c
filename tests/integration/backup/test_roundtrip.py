"""A full backup through the real CLI, verified by a real restore, then restored into scratch and
over the live data: identical tables, Redis keys and files each time."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from integration.backup._cli import shipyard
from shipyard.backup import ResticRepository, tree_digest
from shipyard.state import AuditRow, BackupSetRow, open_engine, session_factory
from support.backup_stack import BackupStack, backup_stack, redis_keys, table_checksums
from support.servers import Postgres


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


@pytest.fixture(scope="module")
def taken(stack: BackupStack) -> dict[str, Any]:
    """One full backup through the real entry point (a `shipyard` process), shared by the tests."""
    result = stack.run("backup", "full", "-f", str(stack.spec), "-o", "json")
    return dict(json.loads(result.stdout))


def _same_tree(left: Path, right: Path) -> bool:
    compared = filecmp.dircmp(left, right)
    if compared.left_only or compared.right_only or compared.diff_files or compared.funny_files:
        return False
    return all(_same_tree(left / sub, right / sub) for sub in compared.common_dirs)


def test_full_backup_verify_and_restore_into_scratch_give_identical_data(
    stack: BackupStack,
    taken: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tables, keys = table_checksums(stack.postgres), redis_keys(stack.redis.port)
    files = tree_digest(stack.files)
    backup_set = taken
    assert backup_set["state"] == "complete"
    manifest = backup_set["manifest"]
    by_name = {a["name"]: a for a in manifest["artefacts"]}
    assert set(by_name) == {"postgres:db", "redis:cache", f"files:{stack.files}"}
    postgres = by_name["postgres:db"]
    assert postgres["row_counts"] == {"audit.events": 2, "public.items": 2000, "public.orders": 3000}
    assert postgres["lsn"].count("/") == 1
    assert postgres["raw_bytes"] > 0
    assert by_name["redis:cache"]["dbsize"] == len(keys)
    assert by_name[f"files:{stack.files}"]["sha256"] == files.sha256
    assert {"restic", "pg_dump", "redis-cli", "redis-server"} <= set(manifest["tools"])
    assert all("unknown" not in version for version in manifest["tools"].values())

    repository = ResticRepository(str(stack.base / "repo"), stack.password, cache_dir=stack.base / "cache")
    snapshots = repository.snapshots(tags=[f"set:{backup_set['id']}"])
    assert sorted(t for s in snapshots for t in s.tags if t.startswith("artefact:")) == sorted(
        f"artefact:{name}" for name in by_name
    )

    verified = shipyard(
        stack, monkeypatch, capsys, "backup", "verify", backup_set["id"], "--read-data-subset", "100%",
        "-f", str(stack.spec), "-o", "json",
    )  # fmt: skip
    assert verified.code == 0, verified.err
    assert verified.json()["state"] == "verified"
    checks = verified.json()["verification"]["checks"]
    # The set's record (against the repository's copy, sources and spec), each artefact, the repository.
    assert {c["artefact"] for c in checks} == {*by_name, "manifest", "repository"}
    assert all(c["ok"] for c in checks)
    assert {c["check"] for c in checks if c["artefact"] == "manifest"} >= {"matches the repository's copy"}

    restored = shipyard(
        stack,
        monkeypatch,
        capsys,
        "restore",
        "database",
        "--set",
        backup_set["id"],
        "-f",
        str(stack.spec),
        "-o",
        "json",
    )
    assert restored.code == 0, restored.err
    location = restored.json()["location"]
    try:
        scratch = Postgres(port=location["port"], datadir=Path(location["data_dir"]), user=location["user"])
        assert table_checksums(scratch) == tables
    finally:
        subprocess.run(restored.json()["stop_command"], check=True, capture_output=True)
        shutil.rmtree(location["data_dir"], ignore_errors=True)  # a scratch restore is left for people

    restored = shipyard(
        stack,
        monkeypatch,
        capsys,
        "restore",
        "redis",
        "--set",
        backup_set["id"],
        "-f",
        str(stack.spec),
        "-o",
        "json",
    )
    assert restored.code == 0, restored.err
    try:
        assert redis_keys(restored.json()["location"]["port"]) == keys
    finally:
        subprocess.run(restored.json()["stop_command"], check=True, capture_output=True)
        shutil.rmtree(restored.json()["location"]["dir"], ignore_errors=True)

    target = stack.base / "restored-files"
    restored = shipyard(
        stack, monkeypatch, capsys, "restore", "files", "--set", backup_set["id"],
        "--target-dir", str(target), "-f", str(stack.spec), "-o", "json",
    )  # fmt: skip
    assert restored.code == 0, restored.err
    assert tree_digest(target) == files
    assert _same_tree(stack.files, target)
    assert (target / "link").is_symlink()

    sessions = session_factory(open_engine(stack.state_url))
    with sessions() as session:
        audit = list(session.scalars(select(AuditRow).where(AuditRow.action == "backup.restore")))
    assert [(row.outcome, row.actor) for row in audit] == [
        ("started", "cli:tester"),
        ("ok", "cli:tester"),
    ] * 3


def test_restore_over_live_data_needs_yes_and_takes_a_safety_backup_first(
    stack: BackupStack,
    taken: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tables, keys = table_checksums(stack.postgres), redis_keys(stack.redis.port)
    files = tree_digest(stack.files)
    set_id = taken["id"]

    stack.postgres.psql("DELETE FROM orders WHERE id > 100; UPDATE items SET price = 0", database="app")
    stack.redis.cli("flushall")
    stack.redis.cli("set", "intruder", "1")
    (stack.files / "uploads" / "2026" / "a.txt").write_text("changed\n")
    (stack.files / "new.txt").write_text("new\n")

    planned = shipyard(
        stack, monkeypatch, capsys, "restore", "database", "--set", set_id, "--into", "live", "--yes",
        "--dry-run", "-f", str(stack.spec), "-o", "json",
    )  # fmt: skip
    assert planned.code == 0, planned.err
    assert planned.json()["safety_backup"] == "database"
    assert stack.postgres.psql("SELECT count(*) FROM orders", database="app") == "100"
    refused = shipyard(
        stack, monkeypatch, capsys, "restore", "database", "--into", "live", "-f", str(stack.spec)
    )
    assert refused.code == 2
    assert "--yes" in refused.err
    assert stack.postgres.psql("SELECT count(*) FROM orders", database="app") == "100"

    for kind in ("database", "redis", "files"):
        restored = shipyard(
            stack, monkeypatch, capsys, "restore", kind, "--set", set_id, "--into", "live", "--yes",
            "-f", str(stack.spec), "-o", "json",
        )  # fmt: skip
        assert restored.code == 0, restored.err
        safety = shipyard(
            stack, monkeypatch, capsys, "backup", "show", restored.json()["safety_set"], "-o", "json"
        )
        assert safety.json()["kind"] == kind
        assert safety.json()["state"] == "complete"
        if kind == "database":  # the safety set holds the data as it was just before the restore
            assert safety.json()["manifest"]["artefacts"][0]["row_counts"]["public.orders"] == 100

    assert table_checksums(stack.postgres) == tables
    assert redis_keys(stack.redis.port) == keys
    assert tree_digest(stack.files) == files


def test_files_that_do_not_match_the_manifest_never_replace_the_live_tree(
    stack: BackupStack,
    taken: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The restored tree is checked before it is swapped in: the live one stays as it was."""
    sessions = session_factory(open_engine(stack.state_url))
    with sessions.begin() as session:
        row = session.get(BackupSetRow, taken["id"])
        assert row is not None
        original = row.manifest
        artefacts = [
            {**a, "sha256": "0" * 64} if a["name"].startswith("files:") else a for a in original["artefacts"]
        ]
        row.manifest = {**original, "artefacts": artefacts}
    written_since = stack.files / "written-after-the-set.txt"  # the live tree differs from the set
    written_since.write_text("kept\n")
    before = tree_digest(stack.files)
    siblings = sorted(p.name for p in stack.files.parent.iterdir())
    try:
        refused = shipyard(
            stack, monkeypatch, capsys, "restore", "files", "--set", taken["id"], "--into", "live", "--yes",
            "-f", str(stack.spec),
        )  # fmt: skip
    finally:
        with sessions.begin() as session:
            row = session.get(BackupSetRow, taken["id"])
            assert row is not None
            row.manifest = original
    assert refused.code != 0
    assert "do not match the manifest's checksum" in refused.err
    assert tree_digest(stack.files) == before
    # No staging tree is left next to the live one (the safety set is in the repository).
    assert sorted(p.name for p in stack.files.parent.iterdir()) == siblings
    written_since.unlink()
