"""Backup sets in the state store: the record that says what a set holds and whether it can be trusted.

A set is written `running` before anything is read, `complete` once every artefact is in the
repository, `failed` on any error, and `verified` once a real restore proved it. Each artefact's
last integrity check (a verification's, or a restore's that found the data damaged) is kept on its
own: a set whose artefacts are some damaged, some intact is `partial`, and its intact artefacts
stay restorable (`BackupSet.intact`). The process
writing a set holds the lease `backup-set:<id>` (see shipyard.locks) and renews it; a set whose
lease is gone (its process was killed) is marked failed by the next command that looks.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import BackupError, NotFoundError
from ..locks import Lease, holder
from ..state import RESTORABLE_SET_STATES, BackupSetRow, as_utc, utcnow
from ._manifest import Artefact, ArtefactHealth, Manifest, Verification

LEASE_TTL_S = 60.0


def lease_name(set_id: str) -> str:
    return f"backup-set:{set_id}"


SET_ID_PATTERN = r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$"
"""The shape of every set id (`new_set_id`): requests and routes refuse anything else."""


def new_set_id() -> str:
    """A short id that sorts by time: `YYYYMMDD-HHMMSS-xxxx`."""
    return f"{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


def temp_prefix(set_id: str) -> str:
    """The prefix of the temp dirs a set's backup writes, so an abandoned one can be cleaned."""
    return f"shipyard-backup-{set_id}-"


@dataclass(frozen=True)
class BackupSet:
    """A backup set as read from the state store."""

    id: str
    stack: str
    environment: str
    kind: str
    state: str
    phase: str | None
    actor: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    manifest: Manifest
    verification: Verification | None
    verified_at: dt.datetime | None
    error: str | None
    health: dict[str, ArtefactHealth] = field(default_factory=dict)
    """Artefact name → its last integrity check; unchecked artefacts have no entry."""

    @property
    def restorable(self) -> bool:
        """Some artefact of the set can be restored (every one, unless the set is `partial`)."""
        return self.state in RESTORABLE_SET_STATES

    @property
    def artefacts(self) -> list[Artefact]:
        return list(self.manifest.artefacts)

    def artefact(self, name: str) -> Artefact | None:
        return self.manifest.artefact(name)

    def damaged(self, name: str) -> bool:
        """The artefact's last integrity check failed (or the set lacks it)."""
        health = self.health.get(name)
        return health is not None and health.state == "failed"

    def intact(self, name: str) -> bool:
        """The artefact can be restored: the set is restorable, holds it, and no check found it
        damaged."""
        return self.restorable and self.artefact(name) is not None and not self.damaged(name)

    @property
    def intact_artefacts(self) -> list[Artefact]:
        return [a for a in self.artefacts if self.intact(a.name)]

    @classmethod
    def from_row(cls, row: BackupSetRow) -> BackupSet:
        try:
            manifest = Manifest.model_validate(row.manifest)
            verification = Verification.model_validate(row.verification) if row.verification else None
            health = {name: ArtefactHealth.model_validate(h) for name, h in (row.health or {}).items()}
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise BackupError(
                f"backup set {row.id}: its record in the state store is not one shipyard wrote"
                f" ({where}: {first['msg']}); `shipyard backup show {row.id} -o json` from the"
                " version that took it shows it"
            ) from None
        return cls(
            id=row.id,
            stack=row.stack,
            environment=row.environment,
            kind=row.kind,
            state=row.state,
            phase=row.phase,
            actor=row.actor,
            started_at=as_utc(row.started_at),
            finished_at=as_utc(row.finished_at) if row.finished_at else None,
            manifest=manifest,
            verification=verification,
            verified_at=as_utc(row.verified_at) if row.verified_at else None,
            error=row.error,
            health=health,
        )


def settled_state(sources: list[str], health: dict[str, ArtefactHealth]) -> str:
    """A finished set's state from its artefacts' checks: `failed` when every artefact it should
    hold (its sources, and any other a check named) is damaged or missing, `partial` when some
    are, `verified` when each passed a verification, else `complete`."""
    names = list(dict.fromkeys([*sources, *health]))
    damaged = [n for n in names if (h := health.get(n)) is not None and h.state == "failed"]
    if damaged:
        return "failed" if len(damaged) == len(names) else "partial"
    if names and all((h := health.get(n)) is not None and h.state == "verified" for n in names):
        return "verified"
    return "complete"


class SetRecorder:
    """Writes one set's record as its backup goes; holds and renews the set's lease meanwhile."""

    def __init__(
        self, sessions: sessionmaker[Session], *, stack: str, environment: str, kind: str, actor: str
    ) -> None:
        self.sessions = sessions
        self.id = new_set_id()
        self.lease = Lease(sessions, lease_name(self.id), ttl_s=LEASE_TTL_S)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._fields = {"stack": stack, "environment": environment, "kind": kind, "actor": actor}

    def start(self, manifest: Manifest) -> None:
        """Take the lease, then record the set `running` (in that order: a set is never seen
        running without a live lease, so no one can take it for abandoned)."""
        self.lease.acquire()
        with self.sessions() as session, session.begin():
            session.add(
                BackupSetRow(
                    id=self.id,
                    state="running",
                    phase="starting",
                    owner=self.lease.owner,
                    manifest=manifest.stored(),
                    started_at=utcnow(),
                    **self._fields,
                )
            )
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.id}", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_TTL_S / 4):
            try:
                self.lease.renew()
            except Exception:  # a lost lease shows as an abandoned set; the work goes on
                return

    def phase(self, phase: str, manifest: Manifest | None = None) -> None:
        with self.sessions() as session, session.begin():
            row = session.get(BackupSetRow, self.id)
            assert row is not None
            row.phase = phase
            if manifest is not None:
                row.manifest = manifest.stored()

    def finish(self, state: str, manifest: Manifest, error: str | None = None) -> None:
        with self.sessions() as session, session.begin():
            row = session.get(BackupSetRow, self.id)
            assert row is not None
            row.state = state
            row.manifest = manifest.stored()
            row.error = error
            row.finished_at = utcnow()
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        self.lease.release()


def reap_abandoned(sessions: sessionmaker[Session]) -> list[str]:
    """Mark failed every `running` set whose writer is gone; return their ids."""
    with sessions() as session:
        running = list(session.scalars(select(BackupSetRow).where(BackupSetRow.state == "running")))
    reaped: list[str] = []
    for row in running:
        if holder(sessions, lease_name(row.id)) is not None:
            continue
        with sessions() as session, session.begin():
            current = session.get(BackupSetRow, row.id)
            if current is None or current.state != "running":
                continue
            current.state = "failed"
            current.finished_at = utcnow()
            current.error = (
                f"abandoned: the process writing it ({row.owner}) stopped during {row.phase or 'start'}"
            )
        for leftover in Path(tempfile.gettempdir()).glob(temp_prefix(row.id) + "*"):
            shutil.rmtree(leftover, ignore_errors=True)
        reaped.append(row.id)
    return reaped


def list_sets(
    sessions: sessionmaker[Session], *, stack: str | None = None, environment: str | None = None
) -> list[BackupSet]:
    """Sets newest first, abandoned ones marked failed first."""
    reap_abandoned(sessions)
    query = select(BackupSetRow).order_by(BackupSetRow.started_at.desc(), BackupSetRow.id.desc())
    if stack is not None:
        query = query.where(BackupSetRow.stack == stack)
    if environment is not None:
        query = query.where(BackupSetRow.environment == environment)
    with sessions() as session:
        return [BackupSet.from_row(row) for row in session.scalars(query)]


def get_set(sessions: sessionmaker[Session], set_id: str) -> BackupSet:
    """One set by id; NotFoundError (exit 2) naming how to list them."""
    reap_abandoned(sessions)
    with sessions() as session:
        row = session.get(BackupSetRow, set_id)
        if row is None:
            raise NotFoundError(f"no backup set {set_id!r}; `shipyard backup list` shows the sets")
        return BackupSet.from_row(row)


def latest_set(
    sessions: sessionmaker[Session],
    *,
    stack: str | None = None,
    environment: str | None = None,
    kind: str | None = None,
    restorable: bool = True,
    containing: str | None = None,
) -> BackupSet:
    """The newest set matching; NotFoundError when there is none."""
    for candidate in list_sets(sessions, stack=stack, environment=environment):
        if restorable and not candidate.restorable:
            continue
        if kind is not None and candidate.kind != kind:
            continue
        if containing is not None and not candidate.intact(containing):
            continue
        return candidate
    what = " ".join(filter(None, ["restorable" if restorable else "", kind or "", "backup set"]))
    where = f" of {stack}" + (f" ({environment})" if environment else "") if stack else ""
    holding = f" holding {containing}" if containing else ""
    raise NotFoundError(f"no {what}{where}{holding}; take one with `shipyard backup full`")


def record_verification(
    sessions: sessionmaker[Session],
    set_id: str,
    report: Verification,
    *,
    health: dict[str, ArtefactHealth] | None = None,
    error: str | None = None,
) -> BackupSet:
    """Store a verification's report and what it found of each artefact (`health`).

    The set's state follows its artefacts (`settled_state`). A failed check of the repository as a
    whole (ok False, no artefact named) fails the set: the damage cannot be pinned on one artefact.
    When the means of verifying failed (ok None) the report is kept and the state left alone."""
    with sessions() as session, session.begin():
        row = session.get(BackupSetRow, set_id)
        if row is None:
            raise NotFoundError(f"no backup set {set_id!r}")
        row.verification = report.stored()
        if report.ok is None:
            session.flush()
            return BackupSet.from_row(row)
        sources = list(row.manifest.get("sources") or [])
        found = dict(health or {})
        if report.ok is True:  # every check passed: every artefact of the set is proven
            passed = ArtefactHealth(state="verified", detail="restored and matched", at=report.started_at)
            found = {name: found.get(name, passed) for name in sources} | found
        state = _record_health(row, found)
        if report.ok is False and state in ("verified", "complete"):
            state = "failed"  # the repository failed its check: no artefact can be trusted
        row.state = state
        if state == "verified":
            row.verified_at = utcnow()
        row.error = None if state == "verified" else error
        session.flush()
        return BackupSet.from_row(row)


def record_damage(sessions: sessionmaker[Session], set_id: str, artefact: str, detail: str) -> BackupSet:
    """A restore found `artefact` damaged: mark it so, and the set `partial` (or `failed` when
    nothing intact is left), so no one is offered it again before a verification says otherwise."""
    with sessions() as session, session.begin():
        row = session.get(BackupSetRow, set_id)
        if row is None:
            raise NotFoundError(f"no backup set {set_id!r}")
        damage = ArtefactHealth(state="failed", detail=detail, at=utcnow().isoformat(), by="restore")
        state = _record_health(row, {artefact: damage})
        if row.state in RESTORABLE_SET_STATES:
            row.state = state
            row.error = f"{artefact} is damaged: {detail}"
        session.flush()
        return BackupSet.from_row(row)


def _record_health(row: BackupSetRow, found: dict[str, ArtefactHealth]) -> str:
    """Merge `found` into the row's artefact health; return the state the set settles in."""
    merged = {**(row.health or {}), **{name: h.stored() for name, h in found.items()}}
    row.health = merged
    sources = list(row.manifest.get("sources") or [])
    return settled_state(sources, {n: ArtefactHealth.model_validate(h) for n, h in merged.items()})


def delete_set(sessions: sessionmaker[Session], set_id: str) -> None:
    with sessions() as session, session.begin():
        row = session.get(BackupSetRow, set_id)
        if row is not None:
            session.delete(row)
