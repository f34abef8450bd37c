"""Pruning: the retention plan applied to the repository and the state store."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..spec import Stack
from ..state import record_audit
from ._retention import RetentionPlan, SetFacts, plan_retention
from ._run import open_repository
from ._sets import delete_set, list_sets


@dataclass(frozen=True)
class PruneResult:
    plan: RetentionPlan
    forgotten_snapshots: int
    dry_run: bool

    def as_data(self) -> dict[str, Any]:
        return {
            "keep": {k: list(v) for k, v in self.plan.keep.items()},
            "drop": list(self.plan.drop),
            "ignored": list(self.plan.ignored),
            "forgotten_snapshots": self.forgotten_snapshots,
            "dry_run": self.dry_run,
        }


def retention_plan(sessions: sessionmaker[Session], stack: Stack) -> RetentionPlan:
    if stack.backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    sets = list_sets(sessions, stack=stack.name, environment=stack.environment)
    facts = [
        SetFacts(id=s.id, finished_at=s.finished_at or s.started_at, state=s.state)  # type: ignore[arg-type]
        for s in sets
    ]
    return plan_retention(facts, stack.backup.retention)


def prune(
    sessions: sessionmaker[Session], stack: Stack, *, base_dir: Path, actor: str, dry_run: bool = False
) -> PruneResult:
    """Delete the sets the retention policy drops: their snapshots (restic forget --prune), then
    their records. Snapshots of failed sets (partial uploads) are forgotten too; their records stay
    as history. Running sets are never touched."""
    plan = retention_plan(sessions, stack)
    if dry_run:
        return PruneResult(plan, 0, dry_run=True)
    failed = {
        s.id
        for s in list_sets(sessions, stack=stack.name, environment=stack.environment)
        if s.state == "failed"
    }
    doomed = set(plan.drop) | failed
    repository = open_repository(stack, base_dir)
    snapshots = repository.snapshots(tags=["shipyard"])
    ids = [
        snap.id
        for snap in snapshots
        if any(tag.removeprefix("set:") in doomed for tag in snap.tags if tag.startswith("set:"))
    ]
    audit = functools.partial(
        record_audit, sessions, actor=actor, action="backup.prune", target_kind="backup_stack",
        target=f"{stack.name}/{stack.environment}", after={"drop": list(plan.drop), "snapshots": len(ids)},
    )  # fmt: skip
    audit(outcome="started")
    repository.forget(ids, prune=True)
    for set_id in plan.drop:
        delete_set(sessions, set_id)
    audit(outcome="ok")
    return PruneResult(plan, len(ids), dry_run=False)
