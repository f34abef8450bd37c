"""Orphaned jobs: a job whose server and child have both died is closed by any live server.

A server beats a lease `server:<owner>` (its JobRunner's `host:pid`) every BEAT_SECONDS, valid for
HEARTBEAT_TTL_SECONDS, and a job's child holds `job:<id>` the same way while it runs (`JobLease`).
On each beat every server (`OrphanReaper`) looks at the jobs still `running` that another process
owns, and closes as failed each one whose owner and child are both gone (`orphaned: server X
stopped`, audited as the job's end, as `finish_job` records every end):

- the owner is gone when, on this host, its pid no longer runs; on another host, when its lease
  has lapsed or is not there (a server that stopped releases it);
- the child is gone when, on this host, its pid no longer runs; on another host, when its lease is
  there and has lapsed. A child that never held one (a CLI's own run, a child of an older
  shipyard) is left alone there: nothing this server sees can tell that it died.

So a job left by a SIGKILLed server and child is closed within BEAT_SECONDS on the same host, and
within HEARTBEAT_TTL_SECONDS + BEAT_SECONDS from another. After this server could not reach the
store, it takes no lapsed lease as a death for RECOVERY_GRACE_SECONDS: every lease lapsed during
the outage, and the live holders need one beat to renew theirs.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..host import pid_alive
from ..locks import Lease, LockHeldError
from ..state import JobRow, LockRow, as_utc, utcnow
from ._runner import SUMMARY_CHARS, _last_line, finish_job, origin_of

log = logging.getLogger(__name__)

HEARTBEAT_TTL_SECONDS = 30.0
"""How long a beat keeps a server's (or a child's) lease: past it, a silent holder counts as dead."""
BEAT_SECONDS = 10.0
"""How often servers and children renew their leases, and servers look for orphans."""
RECOVERY_GRACE_SECONDS = 2 * BEAT_SECONDS
"""After this server reached the store again, how long before it reads a lapsed lease as a death."""
ORPHANED = "orphaned"


def server_lease_name(owner: str) -> str:
    """The lease a server beats: named after the owner its jobs record (`host:pid`)."""
    return f"server:{owner}"


def job_lease_name(job_id: int) -> str:
    """The lease a job's child holds while it runs."""
    return f"job:{job_id}"


# --- who is alive (pure: the rows read, this host, which pids run here) ----------------------------


@dataclass(frozen=True)
class SeenLease:
    """A lease as read from the store: who holds it (`host:pid:…`) and until when."""

    owner: str
    expires_at: dt.datetime


LeaseState = Literal["live", "lapsed", "absent"]


def _host_pid(owner: str) -> tuple[str, int | None]:
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return host, int(pid) if pid.isdigit() else None


def lease_state(
    lease: SeenLease | None, *, now: dt.datetime, host: str, alive: Callable[[int], bool]
) -> LeaseState:
    """`lapsed` when its holder is a process of this host that no longer runs (known at once), or
    when it has expired; `absent` when there is none."""
    if lease is None:
        return "absent"
    holder_host, pid = _host_pid(lease.owner)
    if holder_host == host and pid is not None and not alive(pid):
        return "lapsed"
    return "live" if as_utc(lease.expires_at) >= now else "lapsed"


def is_orphaned(
    owner: str,
    child_pid: int | None,
    server_lease: SeenLease | None,
    child_lease: SeenLease | None,
    *,
    now: dt.datetime,
    host: str,
    alive: Callable[[int], bool],
    trust_expiry: bool,
) -> bool:
    """Whether a running job's owner (`host:pid`) and child are both gone (the module's rules).
    `trust_expiry`: a lapsed lease may be read as a death (not right after an outage)."""
    owner_host, owner_pid = _host_pid(owner)
    if owner_host == host:
        # The child runs where its owner does: this host's processes are looked at directly.
        if owner_pid is not None and alive(owner_pid):
            return False
        if child_pid is not None:
            return not alive(child_pid)
        # Killed before its pid was recorded: only its lease can say it runs.
        return lease_state(child_lease, now=now, host=host, alive=alive) != "live"
    server = lease_state(server_lease, now=now, host=host, alive=alive)
    child = lease_state(child_lease, now=now, host=host, alive=alive)
    owner_gone = server == "absent" or (server == "lapsed" and trust_expiry)
    return owner_gone and child == "lapsed" and trust_expiry


# --- keeping a lease ------------------------------------------------------------------------------


class _LeaseKeeper:
    """A lease renewed by `beat()`: taken again when lost, a store that does not answer tolerated."""

    def __init__(self, sessions: sessionmaker[Session], name: str, owner: str | None = None) -> None:
        self.lease = Lease(sessions, name, owner, ttl_s=HEARTBEAT_TTL_SECONDS)
        self._held = False

    def beat(self) -> bool:
        """Take or renew the lease; False when the store could not be reached (or refused)."""
        try:
            if self._held:
                try:
                    self.lease.renew()
                    return True
                except LockHeldError:  # lapsed and cleared meanwhile: take it again
                    self._held = False
            self.lease.acquire()
            self._held = True
            return True
        except Exception as exc:  # the store is down: the next beat tries again
            log.warning("could not renew the lease %s: %s", self.lease.name, exc)
            return False

    def release(self) -> None:
        try:
            self.lease.release()
        except Exception as exc:  # it lapses by itself
            log.warning("could not release the lease %s: %s", self.lease.name, exc)


class JobLease:
    """A job's child's heartbeat: the lease `job:<id>`, renewed by a daemon thread from `start()`
    to `stop()`, which releases it."""

    def __init__(self, sessions: sessionmaker[Session], job_id: int) -> None:
        self._keeper = _LeaseKeeper(sessions, job_lease_name(job_id))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"job {job_id} lease", daemon=True)

    def start(self) -> None:
        self._keeper.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._keeper.release()

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            self._keeper.beat()


# --- the reaper -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Running:
    id: int
    owner: str
    pid: int | None
    log_path: str | None


class OrphanReaper:
    """A server's heartbeat and its look for orphaned jobs, in one daemon thread (`start`/`stop`)."""

    def __init__(self, sessions: sessionmaker[Session], owner: str) -> None:
        self._sessions = sessions
        self.owner = owner
        """This server's `host:pid`, as the jobs it starts record it."""
        # Held as `owner` itself: a server restarted with the same pid (a container's) takes over
        # the lease its previous run left, instead of waiting for it to lapse.
        self._keeper = _LeaseKeeper(sessions, server_lease_name(owner), owner)
        self._reachable_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating (again after `stop`: an app's lifespan may run more than once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="job reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and release the lease (the jobs' children go on; their leases cover them)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        self._keeper.release()

    def _run(self) -> None:
        while True:
            try:
                self.pass_once()
            except Exception as exc:  # the store went away mid-pass: the next beat tries again
                self._reachable_since = None
                log.warning("looking for orphaned jobs failed: %s", exc)
            if self._stop.wait(BEAT_SECONDS):
                return

    def pass_once(self) -> list[int]:
        """Beat, then close the orphaned jobs; their ids."""
        now_mono = time.monotonic()
        if not self._keeper.beat():
            self._reachable_since = None
            return []
        if self._reachable_since is None:
            self._reachable_since = now_mono
        trust_expiry = now_mono - self._reachable_since >= RECOVERY_GRACE_SECONDS
        return [job.id for job in self._orphans(trust_expiry) if self._close(job)]

    def _orphans(self, trust_expiry: bool) -> Iterable[_Running]:
        with self._sessions() as session:
            running = [
                _Running(row.id, row.owner, row.pid, row.log_path)
                for row in session.scalars(
                    select(JobRow).where(JobRow.state == "running", JobRow.owner != self.owner)
                )
            ]
            if not running:
                return []
            names = {server_lease_name(job.owner) for job in running} | {
                job_lease_name(job.id) for job in running
            }
            leases = {
                row.name: SeenLease(row.owner, row.expires_at)
                for row in session.scalars(select(LockRow).where(LockRow.name.in_(names)))
            }
        now, host = utcnow(), socket.gethostname()
        return [
            job
            for job in running
            if is_orphaned(
                job.owner,
                job.pid,
                leases.get(server_lease_name(job.owner)),
                leases.get(job_lease_name(job.id)),
                now=now,
                host=host,
                alive=pid_alive,
                trust_expiry=trust_expiry,
            )
        ]

    def _close(self, job: _Running) -> bool:
        who = "server" if origin_of(job.owner, job.pid) == "server" else "CLI process"
        summary = f"{ORPHANED}: {who} {job.owner} stopped (closed by server {self.owner})"
        last = _last_line(Path(job.log_path) if job.log_path else None)
        if last:
            summary = f"{summary}; last output: {last}"
        closed = finish_job(self._sessions, job.id, -1, summary[:SUMMARY_CHARS])
        if closed:
            log.warning("job %d closed as failed: %s", job.id, summary, extra={"job": job.id})
        return closed
