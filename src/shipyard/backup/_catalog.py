"""The repository's own record of its sets: each finished set's manifest, stored beside its snapshots.

The state store says what a set should hold; without a copy elsewhere, losing the state store
would leave snapshots no one can tell apart, and an edited record could drop an artefact unseen.
So when a set completes, its manifest is also written into the restic repository: a snapshot of
one file named by the document's sha256 (`<sha256>.json`), tagged `shipyard-manifest` and
`set:<id>` (so prune forgets it with the set's artefacts). A repository alone then lists its sets,
and `import_sets` records them in an empty state store for verification and restore.

A copy whose content does not hash to its name is damaged and never trusted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, NotFoundError
from ..spec import Stack
from ..state import BackupSetRow, record_audit
from ._manifest import Manifest
from ._restic import ResticRepository, Snapshot

MANIFEST_TAG = "shipyard-manifest"
IMPORTED_OWNER = "imported from the repository"


def manifest_bytes(manifest: Manifest) -> bytes:
    """The stored form of a manifest: its JSON document, keys in the model's order."""
    return manifest.model_dump_json().encode()


def manifest_filename(document: bytes) -> str:
    return f"{hashlib.sha256(document).hexdigest()}.json"


def store_manifest(repository: ResticRepository, manifest: Manifest) -> str:
    """Write the manifest of a finished set into the repository; return its file name."""
    document = manifest_bytes(manifest)
    filename = manifest_filename(document)
    repository.store_bytes(
        document, filename, tags=[MANIFEST_TAG, f"set:{manifest.id}"], host=manifest.restic_host
    )
    return filename


def set_of(snapshot: Snapshot) -> str | None:
    """The set a snapshot belongs to (its `set:<id>` tag)."""
    return next((t.removeprefix("set:") for t in snapshot.tags if t.startswith("set:")), None)


@dataclass(frozen=True)
class StoredManifest:
    """One set as the repository records it."""

    set_id: str
    snapshot_id: str
    filename: str
    manifest: Manifest | None
    """None when the copy is damaged (`problem` says how)."""
    problem: str | None = None


def read_manifest(repository: ResticRepository, snapshot: Snapshot) -> StoredManifest:
    """Read one manifest copy back and check it against the hash in its name."""
    set_id = set_of(snapshot) or "?"
    filename = PurePosixPath(snapshot.paths[0]).name if snapshot.paths else ""
    found = StoredManifest(set_id, snapshot.id, filename, None)
    try:
        document = repository.read_bytes(snapshot.id, filename)
    except BackupError as exc:
        return _damaged(found, f"cannot be read: {exc.message}")
    if manifest_filename(document) != filename:
        return _damaged(found, f"its content does not hash to its name {filename}")
    try:
        manifest = Manifest.model_validate_json(document)
    except ValidationError as exc:
        return _damaged(found, f"is not a manifest: {exc.errors()[0]['msg']}")
    if manifest.id != set_id:
        return _damaged(found, f"names set {manifest.id}, but is tagged set:{set_id}")
    return StoredManifest(set_id, snapshot.id, filename, manifest)


def _damaged(found: StoredManifest, problem: str) -> StoredManifest:
    return StoredManifest(found.set_id, found.snapshot_id, found.filename, None, problem)


def stored_manifests(repository: ResticRepository, set_id: str | None = None) -> list[StoredManifest]:
    """The manifests the repository holds (of one set, when given), oldest first."""
    tags = [MANIFEST_TAG, *([f"set:{set_id}"] if set_id else [])]
    return [read_manifest(repository, snapshot) for snapshot in repository.snapshots(tags=tags)]


ImportOutcome = Literal["imported", "present", "damaged", "other stack"]


@dataclass(frozen=True)
class ImportedSet:
    set_id: str
    outcome: ImportOutcome
    detail: str = ""


def import_sets(
    sessions: sessionmaker[Session],
    stack: Stack,
    repository: ResticRepository,
    *,
    set_ids: list[str] | None = None,
    actor: str,
    dry_run: bool = False,
) -> list[ImportedSet]:
    """Record in the state store the sets the repository holds manifests of and the store lacks
    (after it was lost, or to move to a new one), as `complete`: they have to be verified again,
    since their verifications were in the lost store. Sets of other stacks are left alone."""
    found = stored_manifests(repository)
    if set_ids:
        missing = sorted(set(set_ids) - {m.set_id for m in found})
        if missing:
            raise NotFoundError(
                f"the repository holds no manifest of set {', '.join(missing)}; "
                "`shipyard backup list --from-repository` shows the sets it holds"
            )
        found = [m for m in found if m.set_id in set_ids]
    outcomes: list[ImportedSet] = []
    for stored in found:
        manifest = stored.manifest
        if manifest is None or manifest.finished_at is None:
            problem = stored.problem or "its manifest was never finished"
            outcomes.append(ImportedSet(stored.set_id, "damaged", problem))
            continue
        if (manifest.spec, manifest.environment) != (stack.name, stack.environment):
            where = f"{manifest.spec} ({manifest.environment})"
            outcomes.append(ImportedSet(stored.set_id, "other stack", where))
            continue
        with sessions() as session, session.begin():
            if session.get(BackupSetRow, stored.set_id) is not None:
                outcomes.append(ImportedSet(stored.set_id, "present"))
                continue
            if not dry_run:
                session.add(_row_of(manifest, actor))
        outcomes.append(ImportedSet(stored.set_id, "imported", stored.filename))
        if not dry_run:
            record_audit(
                sessions, actor=actor, action="backup.import", target_kind="backup_set",
                target=stored.set_id, after={"manifest": stored.filename}, outcome="ok",
            )  # fmt: skip
    return outcomes


def _row_of(manifest: Manifest, actor: str) -> BackupSetRow:
    assert manifest.finished_at is not None
    return BackupSetRow(
        id=manifest.id,
        stack=manifest.spec,
        environment=manifest.environment,
        kind=manifest.kind,
        state="complete",
        phase=None,
        owner=IMPORTED_OWNER,
        actor=actor,
        started_at=dt.datetime.fromisoformat(manifest.started_at),
        finished_at=dt.datetime.fromisoformat(manifest.finished_at),
        manifest=manifest.stored(),
        error=None,
    )
