"""Artefact health and retention (issue 12): one damaged artefact leaves the set's others
restorable and kept, and `prune --dry-run` lists every snapshot the real prune forgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from integration.backup._cli import plain_restic, sessions_of, shipyard_json, take_full
from shipyard.backup import PAUSE_ENV
from shipyard.state import BackupSetRow
from support.backup_stack import SHIPYARD, BackupStack, backup_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


def _forget_artefact(stack: BackupStack, taken: dict[str, Any], name: str) -> None:
    """Damage one artefact for real: its snapshot disappears from the repository."""
    snapshot = next(a["snapshot_id"] for a in taken["manifest"]["artefacts"] if a["name"] == name)
    assert plain_restic(stack, "forget", snapshot).returncode == 0


def test_one_damaged_artefact_leaves_the_others_restorable_and_kept(stack: BackupStack) -> None:
    """Defect 4: one bad artefact failed the whole set, and prune then forgot all its snapshots."""
    stack.write_spec(
        extra="  retention: {keep_last: 1, hourly: 0, daily: 0, weekly: 0, monthly: 0, min_verified: 1}\n"
    )
    older, newer = take_full(stack), take_full(stack)
    _forget_artefact(stack, newer, "redis:cache")
    failed = stack.run("backup", "verify", newer["id"], "-f", str(stack.spec), check=False)
    assert failed.returncode != 0
    assert "redis:cache" in failed.stderr

    shown = shipyard_json(stack, "backup", "show", newer["id"])
    assert shown["state"] == "partial"
    listed = {s["id"]: s for s in shipyard_json(stack, "backup", "list")}
    assert listed[newer["id"]]["restorable"] is True

    planned = shipyard_json(stack, "backup", "prune", "--dry-run")
    assert "last 1" in planned["keep"][newer["id"]]
    assert "newest intact postgres:db" in planned["keep"][newer["id"]]
    assert planned["keep"][older["id"]] == ["newest intact redis:cache"]
    assert planned["drop"] == []
    assert planned["snapshots"] == []
    pruned = shipyard_json(stack, "backup", "prune")
    assert pruned["forgotten_snapshots"] == 0
    remaining = {json.dumps(s["tags"]) for s in json.loads(plain_restic(stack, "snapshots", "--json").stdout)}
    assert any(f"set:{newer['id']}" in tags and "artefact:postgres:db" in tags for tags in remaining)


def _killed_at_manifest(stack: BackupStack) -> str:
    """A backup SIGKILLed after every artefact was uploaded, before it was recorded complete."""
    sessions = sessions_of(stack)
    with sessions() as session:
        before = {row.id for row in session.query(BackupSetRow)}
    process = subprocess.Popen(
        [SHIPYARD, "backup", "full", "-f", str(stack.spec)],
        env=stack.cli_env(**{PAUSE_ENV: "manifest"}),
        cwd=stack.base,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with sessions() as session:
                rows = [r for r in session.query(BackupSetRow) if r.id not in before]
            if rows and rows[0].phase == "manifest":
                return rows[0].id
            assert process.poll() is None, "the backup ended before its manifest phase"
            assert time.monotonic() < deadline, "the backup never reached its manifest phase"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_prune_dry_run_lists_the_failed_sets_snapshots_the_real_run_forgets(stack: BackupStack) -> None:
    """Defect 5: `prune --dry-run` did not list the failed sets' snapshots, which the run deletes."""
    kept = take_full(stack)
    killed = _killed_at_manifest(stack)
    assert shipyard_json(stack, "backup", "show", killed)["state"] == "failed"
    planned = shipyard_json(stack, "backup", "prune", "--dry-run")
    doomed = {(s["set"], s["holds"], s["reason"]) for s in planned["snapshots"]}
    assert doomed == {(killed, a["name"], "set failed") for a in kept["manifest"]["artefacts"]}
    pruned = shipyard_json(stack, "backup", "prune")
    assert sorted(s["id"] for s in pruned["snapshots"]) == sorted(s["id"] for s in planned["snapshots"])
    left = json.loads(plain_restic(stack, "snapshots", "--json").stdout)
    assert not [s for s in left if f"set:{killed}" in s.get("tags", [])]
    assert [s for s in left if f"set:{kept['id']}" in s.get("tags", [])]
