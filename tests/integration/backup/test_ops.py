"""The backup verbs called as a job, the API and the scheduler call them: a typed request and a
workspace in, a typed result out, with its one-line summary (a job's outcome)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.backup import FilesArtefact, tree_digest
from shipyard.errors import UserError
from shipyard.ops import Workspace
from shipyard.ops._backups import (
    BackupTaken,
    CheckFreshness,
    Prune,
    Restore,
    Restored,
    TakeBackup,
    Verified,
    Verify,
    backup_set,
    backup_sets,
    check_freshness,
    prune,
    restore,
    take_backup,
    verify,
)
from support.backup_stack import BackupStack, backup_stack


@pytest.fixture(scope="module")
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        created.write_spec(extra="dr: {rto: 15m, rpo: 10m}\n")
        yield created


@pytest.fixture
def ws(stack: BackupStack, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    for key, value in stack.cli_env().items():  # the repository password, as a job's child has it
        monkeypatch.setenv(key, value)
    return Workspace.open(stack.spec, database_url=stack.state_url, actor="token:ops")


def test_take_verify_restore_prune_and_freshness_give_typed_results(
    stack: BackupStack, ws: Workspace, tmp_path: Path
) -> None:
    stale = check_freshness(ws, CheckFreshness())
    assert not stale.ok
    assert stale.summary() == (
        "3 of 3 sources older than the RPO (600 s): postgres:db (none), redis:cache (none),"
        f" files:{stack.files} (none)"
    )

    taken = take_backup(ws, TakeBackup(what="full"))
    set_id = taken.backup_set.id
    assert (taken.backup_set.state, taken.backup_set.actor) == ("complete", "token:ops")
    assert [a.name for a in taken.backup_set.artefacts] == [
        "postgres:db",
        "redis:cache",
        f"files:{stack.files}",
    ]
    assert re.fullmatch(rf"set {set_id} taken: 3 artefacts, [0-9.]+ KiB", taken.summary()), taken.summary()
    # What a job stores and shows later is the same result.
    assert BackupTaken.model_validate_json(taken.model_dump_json()) == taken

    verified = verify(ws, Verify())  # no set named: the newest restorable one
    assert (verified.backup_set.id, verified.backup_set.state) == (set_id, "verified")
    assert verified.backup_set.verification is not None
    checks = verified.backup_set.verification.checks
    assert verified.summary() == f"set {set_id} verified: {len(checks)} checks"
    assert Verified.model_validate_json(verified.model_dump_json()) == verified

    target = tmp_path / "volumes"
    restored = restore(ws, Restore(what="volumes", set_id=set_id, target_dir=str(target)))
    assert restored.summary() == f"set {set_id} restored into scratch: volumes"
    [files] = restored.restored
    assert files.location["path"] == str(target / str(stack.files).lstrip("/"))
    assert tree_digest(Path(files.location["path"])) == tree_digest(stack.files)
    assert Restored.model_validate_json(restored.model_dump_json()) == restored
    with pytest.raises(UserError, match="datastore"):
        restore(ws, Restore(what="files", set_id=set_id, datastore="db"))

    pruned = prune(ws, Prune(dry_run=True))
    assert (pruned.drop, list(pruned.keep), pruned.pitr) == ([], [set_id], None)
    assert pruned.summary() == "would drop 0 sets (0 snapshots), keep 1"

    fresh = check_freshness(ws, CheckFreshness())
    assert fresh.ok
    assert fresh.summary() == "backups fresh: 3 sources within the RPO (600 s)"
    assert {s.newest_set for s in fresh.sources} == {set_id}

    [listed] = backup_sets(ws.sessions)
    assert (listed.id, listed.state, listed.manifest, listed.verification) == (set_id, "verified", None, None)
    shown = backup_set(ws.sessions, set_id)
    assert shown.manifest == verified.backup_set.manifest
    assert isinstance(shown.manifest.artefact(f"files:{stack.files}"), FilesArtefact)
