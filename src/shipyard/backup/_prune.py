"""Pruning: the retention plan applied to the repository and the state store.

The snapshots to forget are worked out the same way for `--dry-run` and for the real run, from
the repository's own listing, so a dry run shows exactly what the run would delete: the
snapshots of the sets retention drops, and those of failed sets (partial uploads of a set that
failed while taken, or sets with nothing intact left). A set with only some artefacts damaged
(`partial`) is a set like any other to retention: its intact artefacts are kept with it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..spec import Stack
from ..state import record_audit
from ._catalog import MANIFEST_TAG, set_of
from ._retention import RetentionPlan, SetFacts, plan_retention
from ._run import open_repository
from ._sets import BackupSet, delete_set, list_sets


@dataclass(frozen=True)
class DoomedSnapshot:
    """One snapshot prune forgets, and why."""

    id: str
    set_id: str
    holds: str
    """The artefact it holds, or `manifest` (the set's record)."""
    reason: Literal["dropped by retention", "set failed"]


@dataclass(frozen=True)
class PruneResult:
    plan: RetentionPlan
    snapshots: tuple[DoomedSnapshot, ...]
    dry_run: bool

    @property
    def forgotten_snapshots(self) -> int:
        return len(self.snapshots)

    def as_data(self) -> dict[str, Any]:
        return {
            "keep": {k: list(v) for k, v in self.plan.keep.items()},
            "drop": list(self.plan.drop),
            "ignored": list(self.plan.ignored),
            "snapshots": [
                {"id": s.id, "set": s.set_id, "holds": s.holds, "reason": s.reason} for s in self.snapshots
            ],
            "forgotten_snapshots": self.forgotten_snapshots,
            "dry_run": self.dry_run,
        }


def set_facts(backup_set: BackupSet) -> SetFacts:
    return SetFacts(
        id=backup_set.id,
        finished_at=backup_set.finished_at or backup_set.started_at,
        state=backup_set.state,  # type: ignore[arg-type]
        intact=frozenset(a.name for a in backup_set.intact_artefacts),
    )


def retention_plan(sessions: sessionmaker[Session], stack: Stack) -> RetentionPlan:
    return _plan(stack, list_sets(sessions, stack=stack.name, environment=stack.environment))


def _plan(stack: Stack, sets: list[BackupSet]) -> RetentionPlan:
    if stack.backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    return plan_retention([set_facts(s) for s in sets], stack.backup.retention)


def prune(
    sessions: sessionmaker[Session], stack: Stack, *, base_dir: Path, actor: str, dry_run: bool = False
) -> PruneResult:
    """Delete the sets the retention policy drops: their snapshots (restic forget --prune), then
    their records. Snapshots of failed sets are forgotten too; their records stay as history.
    Running sets are never touched."""
    sets = list_sets(sessions, stack=stack.name, environment=stack.environment)
    plan = _plan(stack, sets)
    # A failed set holds nothing restorable: failed while taken (partial uploads), or every
    # artefact found damaged, or its repository check failed.
    failed = {s.id for s in sets if s.state == "failed"}
    dropped = set(plan.drop)
    repository = open_repository(stack, base_dir)
    doomed: list[DoomedSnapshot] = []
    for snapshot in repository.snapshots():
        set_id = set_of(snapshot)
        if set_id is None or not {"shipyard", MANIFEST_TAG} & set(snapshot.tags):
            continue
        if set_id in dropped or set_id in failed:
            holds = next(
                (t.removeprefix("artefact:") for t in snapshot.tags if t.startswith("artefact:")), "manifest"
            )
            reason: Literal["dropped by retention", "set failed"] = (
                "dropped by retention" if set_id in dropped else "set failed"
            )
            doomed.append(DoomedSnapshot(snapshot.id, set_id, holds, reason))
    if dry_run:
        return PruneResult(plan, tuple(doomed), dry_run=True)
    audit = functools.partial(
        record_audit, sessions, actor=actor, action="backup.prune", target_kind="backup_stack",
        target=f"{stack.name}/{stack.environment}", after={"drop": list(plan.drop), "snapshots": len(doomed)},
    )  # fmt: skip
    audit(outcome="started")
    repository.forget([s.id for s in doomed], prune=True)
    for set_id in plan.drop:
        delete_set(sessions, set_id)
    audit(outcome="ok")
    return PruneResult(plan, tuple(doomed), dry_run=False)
