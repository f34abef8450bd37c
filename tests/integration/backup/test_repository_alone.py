"""After the state store is lost, the restic repository alone lists, verifies and restores a set
(issue 12): each finished set's manifest is stored in the repository, named by its hash."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.backup._cli import shipyard_json, take_full
from support.backup_stack import BackupStack, backup_stack, table_checksums
from support.servers import Postgres

pytestmark = pytest.mark.integration


@pytest.fixture
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


def _assert_no_store(stack: BackupStack) -> None:
    listed = stack.run("backup", "list", "-o", "json", check=False)
    assert listed.returncode == 2, listed.stdout + listed.stderr
    assert f"no state store at {stack.base / 'state.db'}" in listed.stderr
    assert not (stack.base / "state.db").exists()


def test_a_repository_alone_lists_verifies_and_restores_a_set_after_the_state_store_is_lost(
    stack: BackupStack,
) -> None:
    taken = take_full(stack)
    tables = table_checksums(stack.postgres)
    (stack.base / "state.db").unlink()

    _assert_no_store(stack)  # a read says where it looked, and creates no store
    listed = shipyard_json(stack, "backup", "list", "--from-repository")
    assert [(s["id"], s["state"], s["problem"]) for s in listed] == [(taken["id"], None, None)]
    assert sorted(listed[0]["artefacts"]) == sorted(a["name"] for a in taken["manifest"]["artefacts"])
    assert listed[0]["manifest_file"].removesuffix(".json").isalnum()

    planned = shipyard_json(stack, "backup", "import", "--dry-run")
    assert [(s["id"], s["outcome"]) for s in planned["sets"]] == [(taken["id"], "imported")]
    _assert_no_store(stack)  # a dry run records nothing
    imported = shipyard_json(stack, "backup", "import")
    assert [(s["id"], s["outcome"]) for s in imported["sets"]] == [(taken["id"], "imported")]
    again = shipyard_json(stack, "backup", "import")
    assert [(s["id"], s["outcome"]) for s in again["sets"]] == [(taken["id"], "present")]

    recorded = shipyard_json(stack, "backup", "show", taken["id"])
    assert recorded["state"] == "complete"  # its verifications were in the lost store
    assert recorded["manifest"] == taken["manifest"]

    verified = shipyard_json(stack, "backup", "verify", taken["id"])
    assert verified["state"] == "verified"

    restored = shipyard_json(stack, "restore", "database", "--set", taken["id"])
    location = restored["location"]
    try:
        scratch = Postgres(port=location["port"], datadir=Path(location["data_dir"]), user=location["user"])
        assert table_checksums(scratch) == tables
    finally:
        subprocess.run(restored["stop_command"], check=False, capture_output=True, timeout=60)
