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
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import JobFailedError, NotFoundError, UserError
from ..host import pid_alive, read_tail
from ..spec import Stack, load_spec
from ..state import JobRow, as_utc, record_audit, utcnow
from ._requests import check_request, describe, subject_of

SUMMARY_CHARS = 300
STOPPED = "server stopped while it ran"
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
    """running | succeeded | failed"""
    exit_code: int | None
    summary: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @property
    def description(self) -> str:
        """The request in one line: `deploy service=web version=v2`."""
        return describe(self.request)


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
) -> bool:
    """Record a job's end once (whoever comes first: the child or the server); True if this did."""
    state = "succeeded" if exit_code == 0 else "failed"
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
        """The served stack (read again each time, so an edited spec counts); UserError without one."""
        if self.spec is None:
            raise UserError(
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

    def process(self, job_id: int) -> tuple[int | None, Path | None]:
        """The job's child (pid) and the file its output goes to."""
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"job {job_id} does not exist")
            return row.pid, Path(row.log_path) if row.log_path else None

    def get(self, job_id: int) -> JobView:
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"job {job_id} does not exist")
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
            row = session.get(JobRow, job_id)
            if row is None:
                raise NotFoundError(f"job {job_id} does not exist")
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
            last = _last_line(Path(log_path) if log_path else None)
            summary = f"{STOPPED}; last output: {last}"[:SUMMARY_CHARS] if last else STOPPED
            if finish_job(self._sessions, job_id, -1, summary):
                closed += 1
        return closed
