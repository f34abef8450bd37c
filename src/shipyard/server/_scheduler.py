"""Scheduled jobs for `shipyard serve`: cron schedules run in a thread pool, each fire once.

Within one process APScheduler runs at most one instance of a job: a fire that comes while the
job's previous run still goes on is skipped (and recorded as skipped), and fires missed while the
process was busy are coalesced into one. Across processes that share one state store (two `serve`
replicas on one PostgreSQL) two guards hold:

- a lease `schedule:<job>` (`shipyard.locks`), taken before a run and renewed while it goes on:
  a process that finds it held skips the fire, so runs of one job never overlap anywhere;
- a row in `scheduled_runs`, unique on (job, fire time), inserted before the job starts: the
  process whose insert fails skips, since another has already run that fire. The row outlives
  the lease, so a fire is never run twice, even after a crash or a restart. A row left open by a
  process that died mid-run is closed as `abandoned` by the job's next run.

Schedules are read as croniter (which validates the spec) and Kubernetes read them, in UTC:
0 is Sunday, and a day-of-month and a day-of-week both given match either (APScheduler's own
`CronTrigger` differs on both, so it is not used).

Work that runs all along rather than on fires (`Background`: the traffic history, which reads
HAProxy at every minute's start) starts and stops with the scheduler.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from apscheduler.executors.base import MaxInstancesReachedError  # type: ignore[import-untyped]
from apscheduler.executors.pool import ThreadPoolExecutor  # type: ignore[import-untyped]
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]
from croniter import croniter
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import UserError
from ..jobs import JobRunner, parse_request
from ..locks import Lease, LockHeldError, new_owner
from ..monitor import TrafficHistory
from ..ops import CheckFreshness, Request, RunDrill, StartWalStream, Workspace
from ..render import scheduled_request
from ..spec import Stack
from ..state import ScheduledRunRow, as_utc, utcnow

log = logging.getLogger(__name__)

FRESHNESS_SCHEDULE = "*/5 * * * *"

Outcome = Literal["succeeded", "failed", "skipped", "abandoned"]
FireResult = Literal["succeeded", "failed", "busy", "taken"]
"""What became of one fire here: run (and how it ended), or left alone because another run of
the job was going on (`busy`) or another process had already claimed the fire (`taken`)."""


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    schedule: str
    """Five cron fields (minute hour day month weekday) as in the spec; a sixth, seconds, is
    accepted after them (croniter's form) for sub-minute schedules."""
    run: Callable[[dt.datetime], object]
    """Called with the fire time (UTC) the run is for."""


def check_schedule(name: str, schedule: str) -> None:
    fields = schedule.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(schedule):
        raise UserError(
            f"job {name}: {schedule!r} is not a cron schedule; use five fields:"
            " minute hour day month weekday, e.g. '0 3 * * *'"
        )


class UtcCronTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger that fires when a cron expression does, in UTC."""

    __slots__ = ("expression",)

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        if previous_fire_time is not None:
            start = previous_fire_time.astimezone(dt.UTC)
        else:  # `now` itself fires when it is on the schedule
            start = now.astimezone(dt.UTC) - dt.timedelta(microseconds=1)
        following: dt.datetime = croniter(self.expression, start).get_next(dt.datetime)
        return following

    def __str__(self) -> str:
        return f"cron[{self.expression}]"


class _FireTimeExecutor(ThreadPoolExecutor):  # type: ignore[misc]
    """The thread pool, handing each run its scheduled fire time (the key that makes it unique)."""

    def __init__(self, scheduler: Scheduler, max_workers: int) -> None:
        super().__init__(max_workers)
        self._owner = scheduler

    def submit_job(self, job: Any, run_times: list[dt.datetime]) -> None:
        try:
            super().submit_job(_WithFireTime(job, run_times[-1]), run_times)
        except MaxInstancesReachedError:
            self._owner.record_skipped(job.id, run_times[-1])
            raise


class _WithFireTime:
    """An APScheduler job whose function receives the fire time it runs for."""

    def __init__(self, job: Any, fire_time: dt.datetime) -> None:
        self._job = job
        self.args = (job.id, fire_time)
        self.kwargs: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    def __str__(self) -> str:
        return str(self._job)


def _fields(
    name: str, fire_time: dt.datetime, *, started: float | None = None, result: str | None = None
) -> dict[str, object]:
    """A run's extra log fields: job, fire_time, and when known duration_ms and result."""
    fields: dict[str, object] = {"job": name, "fire_time": fire_time.isoformat()}
    if started is not None:
        fields["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
    if result is not None:
        fields["result"] = result
    return fields


class _Heartbeat:
    """Renews a lease in the background while a run goes on."""

    def __init__(self, lease: Lease, interval_s: float) -> None:
        self._lease = lease
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease {lease.name}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lease.renew()
            except LockHeldError:
                log.error(
                    "%s was lost while its run went on; another run may start",
                    self._lease.name,
                    extra={"lease": self._lease.name},
                )
                return
            except Exception:  # the store is briefly unreachable: try again next beat
                log.warning(
                    "could not renew %s", self._lease.name, exc_info=True, extra={"lease": self._lease.name}
                )


class Background(Protocol):
    """Work that runs in threads of its own from `start()` to `stop()`."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Scheduler:
    """Runs jobs on their cron schedules in a background thread pool, each fire once overall, and
    `background` work from its start to its shutdown."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        jobs: Sequence[ScheduledJob],
        *,
        background: Sequence[Background] = (),
        workers: int = 4,
        lease_ttl_s: float = 60.0,
        misfire_grace_s: float = 60.0,
    ) -> None:
        names = [job.name for job in jobs]
        for job in jobs:
            check_schedule(job.name, job.schedule)
            if names.count(job.name) > 1:
                raise UserError(f"job {job.name} is scheduled twice; give each job its own name")
            if len(job.name) > 128:
                raise UserError(f"job name {job.name[:40]}... is longer than 128 characters")
        self._sessions = sessions
        self._jobs = {job.name: job for job in jobs}
        self._background = tuple(background)
        self._lease_ttl = lease_ttl_s
        self._results: dict[str, Counter[FireResult]] = {job.name: Counter() for job in jobs}
        self._results_lock = threading.Lock()
        self._scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            executors={"default": _FireTimeExecutor(self, workers)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace_s},
        )
        for job in jobs:
            # The fire time is a placeholder here: the executor hands each run its own.
            self._scheduler.add_job(
                self.run_fire, UtcCronTrigger(job.schedule), args=(job.name, None), id=job.name, name=job.name
            )

    @property
    def jobs(self) -> tuple[str, ...]:
        return tuple(self._jobs)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()
        for work in self._background:
            work.start()
        log.info(
            "scheduler started: %s", ", ".join(self._jobs) or "no jobs", extra={"jobs": list(self._jobs)}
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing; with `wait`, let runs that have started finish first."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
        for work in self._background:
            work.stop()

    def next_fire_times(self) -> dict[str, dt.datetime | None]:
        return {job.id: job.next_run_time for job in self._scheduler.get_jobs()}

    def results(self) -> dict[str, dict[FireResult, int]]:
        """How each job's fires went in this process so far."""
        with self._results_lock:
            return {name: dict(counts) for name, counts in self._results.items()}

    def run_fire(self, name: str, fire_time: dt.datetime) -> FireResult:
        """Run job `name` for the fire at `fire_time`, unless a run of it is going on anywhere or
        another process has already claimed this fire."""
        result = self._run_fire(name, fire_time)
        with self._results_lock:
            self._results[name][result] += 1
        return result

    def _run_fire(self, name: str, fire_time: dt.datetime) -> FireResult:
        job = self._jobs[name]
        fire_time = fire_time.astimezone(dt.UTC)
        lease = Lease(self._sessions, f"schedule:{name}", ttl_s=self._lease_ttl)
        try:
            lease.acquire()
        except LockHeldError as held:
            log.info(
                "%s at %s skipped: %s",
                name,
                fire_time.isoformat(),
                held.message,
                extra=_fields(name, fire_time, result="busy"),
            )
            return "busy"
        try:
            self._close_abandoned(name)
            if not self._claim(name, fire_time, lease.owner):
                log.debug(
                    "%s at %s was already claimed",
                    name,
                    fire_time.isoformat(),
                    extra=_fields(name, fire_time, result="taken"),
                )
                return "taken"
            outcome: Literal["succeeded", "failed"] = "succeeded"
            log.debug("%s at %s started", name, fire_time.isoformat(), extra=_fields(name, fire_time))
            started = time.monotonic()
            with _Heartbeat(lease, self._lease_ttl / 3):
                try:
                    job.run(fire_time)
                except Exception:
                    outcome = "failed"
                    log.exception(
                        "scheduled job %s (fire %s) failed",
                        name,
                        fire_time.isoformat(),
                        extra=_fields(name, fire_time, started=started, result=outcome),
                    )
                else:
                    log.info(
                        "%s at %s succeeded",
                        name,
                        fire_time.isoformat(),
                        extra=_fields(name, fire_time, started=started, result=outcome),
                    )
            self._finish(name, fire_time, lease.owner, outcome)
            return outcome
        finally:
            lease.release()

    def record_skipped(self, name: str, fire_time: dt.datetime) -> None:
        """Record that a fire was skipped because the job's previous run was still going on."""
        log.warning(
            "%s at %s skipped: its previous run is still going on",
            name,
            fire_time.isoformat(),
            extra=_fields(name, fire_time, result="skipped"),
        )
        now = utcnow()
        try:
            with self._sessions() as session, session.begin():
                session.execute(
                    insert(ScheduledRunRow).values(
                        job=name,
                        fire_time=fire_time.astimezone(dt.UTC),
                        owner=new_owner(),
                        started_at=now,
                        finished_at=now,
                        outcome="skipped",
                    )
                )
        except IntegrityError:
            pass  # another process ran (or skipped) this fire: its record stands
        except Exception:
            log.warning("could not record the skipped fire of %s", name, exc_info=True, extra={"job": name})

    def _close_abandoned(self, name: str) -> None:
        # Called holding the job's lease: no run of it goes on anywhere, so a run still open was
        # cut short (its process killed, its host lost) and is closed as abandoned.
        with self._sessions() as session, session.begin():
            closed = session.execute(
                update(ScheduledRunRow)
                .where(ScheduledRunRow.job == name, ScheduledRunRow.outcome.is_(None))
                .values(finished_at=utcnow(), outcome="abandoned")
            )
        count: int = closed.rowcount  # type: ignore[attr-defined]
        if count:
            log.warning(
                "%s: %d earlier run(s) never finished; recorded as abandoned",
                name,
                count,
                extra={"job": name, "abandoned": count},
            )

    def _claim(self, name: str, fire_time: dt.datetime, owner: str) -> bool:
        try:
            with self._sessions() as session, session.begin():
                session.execute(
                    insert(ScheduledRunRow).values(
                        job=name, fire_time=fire_time, owner=owner, started_at=utcnow()
                    )
                )
        except IntegrityError:
            return False
        return True

    def _finish(self, name: str, fire_time: dt.datetime, owner: str, outcome: Outcome) -> None:
        with self._sessions() as session, session.begin():
            session.execute(
                update(ScheduledRunRow)
                .where(
                    ScheduledRunRow.job == name,
                    ScheduledRunRow.fire_time == fire_time,
                    ScheduledRunRow.owner == owner,
                )
                .values(finished_at=utcnow(), outcome=outcome)
            )


@dataclass(frozen=True)
class ScheduledRun:
    job: str
    fire_time: dt.datetime
    owner: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None


def scheduled_runs(sessions: sessionmaker[Session], job: str | None = None) -> list[ScheduledRun]:
    """The recorded fires, oldest first (of one job when `job` is given)."""
    query = select(ScheduledRunRow).order_by(ScheduledRunRow.fire_time, ScheduledRunRow.job)
    if job is not None:
        query = query.where(ScheduledRunRow.job == job)
    with sessions() as session:
        return [
            ScheduledRun(
                job=row.job,
                fire_time=as_utc(row.fire_time),
                owner=row.owner,
                started_at=as_utc(row.started_at),
                finished_at=as_utc(row.finished_at) if row.finished_at else None,
                outcome=row.outcome,
            )
            for row in session.scalars(query)
        ]


def planned_requests(stack: Stack, *, cluster_backups: bool = False) -> list[tuple[str, str, Request]]:
    """(name, schedule, ops request) of every run the spec schedules: its backups and
    verifications (the same requests its Kubernetes CronJobs run), its drills, and the upkeep
    they need. `cluster_backups`: the backups' CronJobs run them (the server is the control plane
    in the cluster), so the server leaves them out rather than run each twice."""
    planned: list[tuple[str, str, Request]] = []
    if stack.backup is not None:
        for kind, schedule in sorted(stack.backup.schedules.items()):
            if not cluster_backups:
                planned.append((f"backup-{kind}", schedule, parse_request(scheduled_request(kind))))
        if stack.backup.pitr is not None and stack.backup.pitr.stream and not cluster_backups:
            # pg_receivewal reconnects by itself, but nothing else restarts it if it dies (a
            # reboot): starting a running stream does nothing.
            planned.append(("pitr-stream", "* * * * *", StartWalStream()))
        if stack.dr is not None:
            # Pages when a source's newest restorable backup is older than the RPO.
            planned.append(("backup-freshness", FRESHNESS_SCHEDULE, CheckFreshness()))
    if stack.dr is not None:
        for mode, schedule in sorted(stack.dr.drills.items()):
            planned.append((f"dr-drill-{mode}", schedule, RunDrill(mode=mode)))
    return planned


def scheduled_jobs(runner: JobRunner) -> list[ScheduledJob]:
    """The served spec's schedules, each fire run as a job (so it is listed in /jobs) and waited
    for: the lease and the fire's row hold while it runs. None when the server has no spec."""
    if runner.spec is None:
        return []

    def fire(name: str, request: Request) -> Callable[[dt.datetime], object]:
        return lambda _fire_time: runner.run(request, actor=f"schedule:{name}")

    cluster_backups = _in_cluster()  # where CronJobs run the backups
    return [
        ScheduledJob(name, schedule, fire(name, request))
        for name, schedule, request in planned_requests(runner.stack(), cluster_backups=cluster_backups)
    ]


def served_background(runner: JobRunner, sessions: sessionmaker[Session]) -> list[Background]:
    """The served stack's work that runs all along: the traffic history of its web and api
    services, read from the HAProxy of its local target (`ops.Workspace.local_state`). None without
    a spec, without a service HAProxy routes, or in a cluster (`SHIPYARD_TARGET=kubernetes`), where
    no HAProxy of shipyard's runs."""
    if runner.spec is None or _in_cluster():
        return []
    local_state = Workspace(spec_path=runner.spec, environment=runner.environment).local_state()
    history = TrafficHistory(sessions, runner.stack(), local_state)
    return [history] if history.services else []


def _in_cluster() -> bool:
    # render/_backups.TARGET_ENV: set in the cluster's pods.
    return os.environ.get("SHIPYARD_TARGET") == "kubernetes"
