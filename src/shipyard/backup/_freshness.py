"""Is the newest restorable backup young enough? A stale backup is a missed RPO waiting to happen.

The limit is the spec's `dr.rpo` (the most data the team accepts to lose): when the newest
restorable set of a source is older than that, a disaster now would lose more. Checked by
`shipyard backup freshness` (and so by `serve`'s scheduler and a CronJob), which pages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..monitor import Event, Notifier
from ..spec import Postgres, Stack
from ..state import as_utc
from ._sets import BackupSet, list_sets


@dataclass(frozen=True)
class SourceFreshness:
    source: str
    """The artefact name, e.g. `postgres:db`, `redis:cache`, `files:/srv/uploads`."""
    newest_set: str | None
    age_s: float | None
    """Seconds since the newest restorable copy's point in time; None when there is none."""
    limit_s: float

    @property
    def stale(self) -> bool:
        return self.age_s is None or self.age_s > self.limit_s

    def as_data(self) -> dict[str, object]:
        return {
            "source": self.source,
            "newest_set": self.newest_set,
            "age_s": None if self.age_s is None else round(self.age_s, 1),
            "limit_s": self.limit_s,
            "stale": self.stale,
        }


def check_freshness(
    sessions: sessionmaker[Session],
    stack: Stack,
    *,
    now: dt.datetime,
    notifier: Notifier | None = None,
) -> list[SourceFreshness]:
    """Each backed-up source's newest restorable copy against the RPO; notifies the stale ones."""
    if stack.dr is None:
        raise UserError("the spec has no `dr: {rpo: …}` target to measure backup age against")
    limit = float(stack.dr.rpo)
    sets = [s for s in list_sets(sessions, stack=stack.name, environment=stack.environment) if s.restorable]
    names = _artefact_names(stack)
    report = [_freshness(name, sets, limit, now) for name in names]
    stale = [f for f in report if f.stale]
    if stale and notifier is not None and notifier.channels:
        worst = ", ".join(
            f"{f.source} {'has no restorable backup' if f.age_s is None else f'is {f.age_s:.0f} s old'}"
            for f in stale
        )
        notifier.send(
            Event(
                "backup.stale",
                f"{stack.name} ({stack.environment}): backups older than the RPO ({limit:.0f} s): {worst}",
                "page",
                {"sources": [f.as_data() for f in stale]},
            )
        )
        notifier.wait()
    return report


def _freshness(name: str, sets: list[BackupSet], limit: float, now: dt.datetime) -> SourceFreshness:
    for backup_set in sets:  # newest first
        if backup_set.intact(name):  # a copy found damaged is no backup
            # A set's data is as old as its start: what was written after it began may be missing.
            age = (now - as_utc(backup_set.started_at)).total_seconds()
            return SourceFreshness(name, backup_set.id, max(age, 0.0), limit)
    return SourceFreshness(name, None, None, limit)


def _artefact_names(stack: Stack) -> list[str]:
    """What a full backup of the stack holds, named as its artefacts are (no secrets needed)."""
    if stack.backup is None:
        raise UserError(f"stack {stack.name} has no `backup:` section; add one to shipyard.yaml")
    names = [
        f"{'postgres' if isinstance(stack.datastores[name], Postgres) else 'redis'}:{name}"
        for name in stack.backup.sources.datastores
    ]
    return names + [f"files:{volume}" for volume in stack.backup.sources.volumes]
