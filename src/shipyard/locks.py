"""Leases in the state store: one holder at a time, surviving restarts, expiring when abandoned.

A release holds `rollout:<service>` while its controller runs and renews it as it goes; a
controller killed with SIGKILL stops renewing, and its lease is free again when it expires — at
once when the holder was a process on this host that no longer exists, so `rollout resume`
right after a crash does not wait out the lease. The scheduler's one-run-at-a-time guarantee
uses the same table.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .errors import ShipyardError
from .host import pid_alive
from .state import LockRow, as_utc, utcnow


class LockHeldError(ShipyardError):
    """Someone else holds the lease."""

    http_status = 409


def new_owner() -> str:
    """An owner id naming this host and process, so a dead local holder can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    return not pid_alive(int(pid_text))


class Lease:
    def __init__(
        self, sessions: sessionmaker[Session], name: str, owner: str | None = None, ttl_s: float = 15.0
    ):
        self._sessions = sessions
        self.name = name
        self.owner = owner or new_owner()
        self.ttl = dt.timedelta(seconds=ttl_s)

    def acquire(self) -> None:
        """Take the lease, or raise LockHeldError naming the holder and when it expires."""
        now = utcnow()
        claim = insert(LockRow).values(name=self.name, owner=self.owner, expires_at=now + self.ttl)
        with self._sessions() as session, session.begin():
            try:
                with session.begin_nested():
                    session.execute(claim)
                return
            except IntegrityError:
                pass
            row = session.get(LockRow, self.name)
            if row is None:  # released between our insert and our read: try once more
                try:
                    with session.begin_nested():
                        session.execute(claim)
                    return
                except IntegrityError:  # a third process took it in between
                    raise LockHeldError(f"{self.name} was just taken by another process") from None
            free = row.owner == self.owner or as_utc(row.expires_at) < now or _owner_is_dead(row.owner)
            if free:
                taken = session.execute(
                    update(LockRow)
                    .where(LockRow.name == self.name, LockRow.owner == row.owner)
                    .values(owner=self.owner, expires_at=now + self.ttl)
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return
            until = as_utc(row.expires_at).isoformat(timespec="seconds")
            raise LockHeldError(f"{self.name} is held by {row.owner} until {until}")

    def renew(self) -> None:
        """Extend the lease; raise LockHeldError if it was lost (taken over after expiring)."""
        with self._sessions() as session, session.begin():
            renewed = session.execute(
                update(LockRow)
                .where(LockRow.name == self.name, LockRow.owner == self.owner)
                .values(expires_at=utcnow() + self.ttl)
            )
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                raise LockHeldError(f"{self.name} was lost: another process took it over")

    def release(self) -> None:
        with self._sessions() as session, session.begin():
            session.execute(delete(LockRow).where(LockRow.name == self.name, LockRow.owner == self.owner))


def holder(sessions: sessionmaker[Session], name: str) -> tuple[str, dt.datetime] | None:
    """Who holds `name` and until when, if the lease is live."""
    with sessions() as session:
        row = session.scalar(select(LockRow).where(LockRow.name == name))
        if row is None or as_utc(row.expires_at) < utcnow() or _owner_is_dead(row.owner):
            return None
        return row.owner, as_utc(row.expires_at)
