"""Jobs: ops requests run in child processes, their state and typed results kept in the store.

    runner = JobRunner(sessions, spec=Path("shipyard.yaml"), environment="production", ...)
    job_id = runner.start(TakeBackup(what="full"), actor="token:ops")
    runner.get(job_id)          # JobView: state, exit code, summary, request, result

The child is `python -m shipyard.jobs <id>`: it reads its request from the row, calls the ops
function of its kind and records its typed result and summary. Whoever sees the end first (the
child, the server's watcher thread, or a server's start-up reconciliation) records it, once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import ConflictError, JobFailedError, NotFoundError, UserError
from ..host import pid_alive, read_tail, terminate_group
from ..spec import Stack, load_spec
from ..state import JobRow, as_utc, record_audit, utcnow
from ._stored import check_request, describe, subject_of

SUMMARY_CHARS = 300
STOPPED = "server stopped while it ran"
CLI_STOPPED = "the CLI that ran it ended without recording how"
Origin = Literal["cli", "server"]
CANCELLED = "cancelled"
"""The state of a job someone cancelled (the others: running, succeeded, failed)."""
JobState = Literal["running", "succeeded", "failed", "cancelled"]
"""Every state a job can be in: running until it ends, then one of the other three for good."""
MAX_JOB_ID = 2**31 - 1
"""The largest job id there can be (`jobs.id` is a 32-bit INTEGER on PostgreSQL): a larger one
names no job, and is not sent to the database, which would refuse it as out of range."""
CANCEL_GRACE_S = 10.0
"""How long a cancelled job's child has to stop on SIGTERM before it gets SIGKILL."""
SPEC_ENV = "SHIPYARD_SPEC"
ENVIRONMENT_ENV = "SHIPYARD_JOB_ENVIRONMENT"


def action_of(kind: str) -> str:
    """The audit action of a job of `kind` (started, then succeeded or failed). The operation the
    job runs writes its own entries too (deploy, backup, backup.verify, …) as the same actor: the
    job's say that it ran, the operation's what it did."""
    return f"job.{kind}"


@dataclass(frozen=True)
class JobView:
    """One job as every edge shows it (API, dashboard, CLI)."""

    id: int
    kind: str
    request: dict[str, Any]
    result: dict[str, Any] | None
    actor: str
    state: str
    """One of `JobState`: running | succeeded | failed | cancelled"""
    exit_code: int | None
    summary: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    origin: Origin = "server"
    """Where it ran: "server" (a child a server started for the API, the dashboard or the
    scheduler) or "cli" (the CLI's own process, `run_recorded_here`)."""

    @property
    def description(self) -> str:
        """The request in one line: `deploy service=web version=v2`."""
        return describe(self.request)


def origin_of(owner: str, pid: int | None) -> Origin:
    """Where a job ran: "cli" when its owner (`host:pid`) is the process that ran it, "server" when
    a server started a child for it."""
    return "cli" if pid is not None and owner.rpartition(":")[2] == str(pid) else "server"


def _view(row: JobRow) -> JobView:
    return JobView(
        id=row.id,
        kind=row.kind,
        request=dict(row.request or {"kind": row.kind}),
        result=dict(row.result) if row.result is not None else None,
        actor=row.actor,
        state=row.state,
        exit_code=row.exit_code,
        summary=row.summary,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        origin=origin_of(row.owner, row.pid),
    )


def _last_line(log_path: Path | None) -> str | None:
    """The last line of a job's output that says something: what a job that died without a result
    (killed, or its server stopped) last said."""
    if log_path is None:
        return None
    lines = [
        line.strip() for line in read_tail(log_path, 8192).splitlines() if any(c.isalnum() for c in line)
    ]
    return _message_of(lines[-1])[:SUMMARY_CHARS] if lines else None


def _message_of(line: str) -> str:
    """A log line's message: the `message` of a JSON line (the child logs JSON), else the line."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and isinstance(record.get("message"), str):
                return str(record["message"])
    return line


def finish_job(
    sessions: sessionmaker[Session],
    job_id: int,
    exit_code: int,
    summary: str | None = None,
    result: dict[str, Any] | None = None,
    *,
    state: str | None = None,
) -> bool:
    """Record a job's end once (whoever comes first: the child or the server); True if this did.
    `state`: as its exit code says (succeeded or failed) unless given (`CANCELLED`)."""
    state = state or ("succeeded" if exit_code == 0 else "failed")
    with sessions() as session, session.begin():
        row = session.get(JobRow, job_id)
        if row is None:
            return False
        if summary is None:
            summary = _last_line(Path(row.log_path) if row.log_path else None)
        changed = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == "running")
            .values(state=state, exit_code=exit_code, summary=summary, result=result, finished_at=utcnow())
        )
        kind, actor, request = row.kind, row.actor, dict(row.request or {"kind": row.kind})
    if not changed.rowcount:  # type: ignore[attr-defined]
        return False
    subject_kind, subject = subject_of(request)
    record_audit(
        sessions,
        actor=actor,
        action=action_of(kind),
        target_kind=subject_kind,
        target=subject,
        after={"job": job_id, "request": request, "exit_code": exit_code, "summary": summary},
        outcome=state,
    )
    return True


def _is_shipyard(pid: int) -> bool:
    """`pid` is still a shipyard process (a job's child or a CLI), not another that got its number."""
    try:
        return b"shipyard" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return pid_alive(pid)


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL after the grace period: the whole group of a child a server started
    (it leads its own session), the process alone for a CLI (its group is the operator's shell's)."""
    try:
        leads_group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return
    if leads_group:
        terminate_group(pid, CANCEL_GRACE_S)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _job_row(session: Session, job_id: int) -> JobRow:
    """The row of job `job_id`; NotFoundError when there is none (or the id cannot name one)."""
    row = session.get(JobRow, job_id) if 1 <= job_id <= MAX_JOB_ID else None
    if row is None:
        raise NotFoundError(f"job {job_id} does not exist")
    return row


class JobRunner:
    """Starts jobs as child processes and keeps their state in the store."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        spec: Path | None,
        environment: str,
        database_url: str | None,
        log_dir: Path,
    ) -> None:
        self._sessions = sessions
        self.spec = spec
        self.environment = environment
        self._database_url = database_url
        self.log_dir = log_dir
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def stack(self) -> Stack:
        """The served stack (read again each time, so an edited spec counts); ConflictError (409)
        without one: the request is valid, this server's state (no stack) is what refuses it."""
        if self.spec is None:
            raise ConflictError(
                "this server has no stack: start it with `shipyard serve -f SPEC` to run deploys,"
                " backups, restores and drills"
            )
        return load_spec(self.spec).stack(self.environment)

    def start(self, request: Any, actor: str) -> int:
        """Check `request`, record the job and its audit entry, then start it; returns the job id."""
        check_request(request, self.stack())
        assert self.spec is not None
        stored = request.model_dump(mode="json")
        with self._sessions() as session, session.begin():
            row = JobRow(kind=request.kind, request=stored, actor=actor, state="running", owner=self.owner)
            session.add(row)
            session.flush()
            job_id = row.id
            log_path = self.log_dir / f"{job_id}.log"
            row.log_path = str(log_path.resolve())
        subject_kind, subject = subject_of(stored)
        record_audit(
            self._sessions,
            actor=actor,
            action=action_of(request.kind),
            target_kind=subject_kind,
            target=subject,
            after={"job": job_id, "request": stored},
            outcome="started",
        )
        env = dict(os.environ)
        env["SHIPYARD_ACTOR"] = actor
        env[SPEC_ENV] = str(self.spec)
        env[ENVIRONMENT_ENV] = self.environment
        if self._database_url:
            env["SHIPYARD_DATABASE_URL"] = self._database_url
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with log_path.open("wb") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "shipyard.jobs", str(job_id)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            finish_job(self._sessions, job_id, 127, f"could not start: {exc.strerror or exc}")
            raise UserError(f"job {job_id} could not start: {exc.strerror or exc}") from None
        with self._sessions() as session, session.begin():
            session.execute(update(JobRow).where(JobRow.id == job_id).values(pid=process.pid))
        with self._lock:
            self._processes[job_id] = process
        threading.Thread(
            target=self._watch, args=(job_id, process), name=f"job {job_id}", daemon=True
        ).start()
        return job_id

    def run(self, request: Any, actor: str) -> JobView:
        """Start a job and wait for its end (the scheduler's runs); JobFailedError if it failed."""
        view = self.wait(self.start(request, actor))
        if view.state != "succeeded":
            raise JobFailedError(f"job {view.id} ({view.description}) failed: {view.summary or 'no output'}")
        return view

    def _watch(self, job_id: int, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        try:
            finish_job(self._sessions, job_id, code)
        finally:
            with self._lock:
                self._processes.pop(job_id, None)

    def wait(self, job_id: int, timeout_s: float | None = None) -> JobView:
        """Wait for a job this server started to end; its view afterwards."""
        with self._lock:
            process = self._processes.get(job_id)
        if process is not None:
            process.wait(timeout_s)
            # The watcher thread records the end right after the child exits (if the child did not).
            for _ in range(600):
                view = self.get(job_id)
                if view.state != "running":
                    return view
                threading.Event().wait(0.05)
        return self.get(job_id)

    def cancel(self, job_id: int, actor: str) -> JobView:
        """Cancel a running job: its end is recorded at once (cancelled by `actor`, so that the
        child's own record changes nothing), then its child gets SIGTERM, which stops it as Ctrl-C
        does (a release stays recorded as it was; `rollout resume` carries it on), and SIGKILL if
        it has not ended within CANCEL_GRACE_S. ConflictError if the job is not running."""
        with self._sessions() as session:
            row = _job_row(session, job_id)
            state, owner, pid = row.state, row.owner, row.pid
        if state != "running":
            raise ConflictError(f"job {job_id} is not running (it {state}): there is nothing to cancel")
        host = socket.gethostname()
        if owner.partition(":")[0] != host:
            raise ConflictError(
                f"job {job_id} runs on {owner.partition(':')[0]}, not on this server's host {host}:"
                " cancel it from a server there"
            )
        if not finish_job(self._sessions, job_id, 130, f"cancelled by {actor}", state=CANCELLED):
            return self.get(job_id)  # it ended on its own meanwhile
        # Who cancelled it (the job's own entry names who started it).
        record_audit(
            self._sessions, actor=actor, action="job.cancel", target_kind="job", target=str(job_id),
            after={"job": job_id, "pid": pid}, outcome="ok",
        )  # fmt: skip
        if pid is not None and _is_shipyard(pid):
            threading.Thread(target=_stop, args=(pid,), name=f"cancel job {job_id}", daemon=True).start()
        return self.get(job_id)

    def process(self, job_id: int) -> tuple[int | None, Path | None]:
        """The job's child (pid) and the file its output goes to."""
        with self._sessions() as session:
            row = _job_row(session, job_id)
            return row.pid, Path(row.log_path) if row.log_path else None

    def get(self, job_id: int) -> JobView:
        with self._sessions() as session:
            row = _job_row(session, job_id)
            return _view(row)

    def recent(self, limit: int = 50, kind: str | None = None) -> list[JobView]:
        """The newest jobs first (of one kind when given)."""
        query = select(JobRow).order_by(JobRow.id.desc()).limit(max(1, min(limit, 500)))
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        with self._sessions() as session:
            return [_view(row) for row in session.scalars(query)]

    def log_tail(self, job_id: int, max_bytes: int = 20000) -> str:
        """The end of a job's output (the child's own output, which redacts its secrets)."""
        with self._sessions() as session:
            row = _job_row(session, job_id)
            log_path = row.log_path
        return read_tail(Path(log_path), max_bytes) if log_path else ""

    def reconcile(self) -> int:
        """Close as failed the jobs a server on this host left running whose child is gone."""
        host = socket.gethostname()
        closed = 0
        with self._sessions() as session:
            rows = [
                (row.id, row.owner, row.pid, row.log_path)
                for row in session.scalars(select(JobRow).where(JobRow.state == "running"))
            ]
        for job_id, owner, pid, log_path in rows:
            if owner.partition(":")[0] != host:
                continue
            with self._lock:
                if job_id in self._processes:
                    continue
            if pid is not None and pid_alive(pid):
                continue  # the child goes on and records its own outcome
            if origin_of(owner, pid) == "cli":
                if finish_job(self._sessions, job_id, -1, CLI_STOPPED):
                    closed += 1
                continue
            last = _last_line(Path(log_path) if log_path else None)
            summary = f"{STOPPED}; last output: {last}"[:SUMMARY_CHARS] if last else STOPPED
            if finish_job(self._sessions, job_id, -1, summary):
                closed += 1
        return closed
