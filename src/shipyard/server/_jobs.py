"""Long operations started from the API or the dashboard, each run as a `shipyard` child process.

A job is recorded (`jobs` row, audit entry) before its process starts. The child runs the same
CLI verb a person would, in a session of its own (a SIGTERM to the server does not reach it),
writes its output to `<log_dir>/<id>.log` and records its own outcome when it ends, so the
outcome stands even when the server was stopped meanwhile. The server also waits on it and
records the outcome if the child could not (killed by a signal). A job left `running` by a
server on this host whose child is gone is closed as failed when the next server starts.

Every argument is checked against the kind's exact shape before anything runs, and the argv
goes to `exec` as a list: user text never reaches a shell.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi import Path as FastApiPath
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..errors import NotFoundError, UserError
from ..host import pid_alive, read_tail
from ..spec import Stack, load_spec
from ..state import JobRow, as_utc, open_engine, record_audit, session_factory, utcnow

KINDS = ("deploy", "rollback", "resume", "backup", "verify", "restore", "drill")
ACTIONS = {kind: f"job.{kind}" for kind in KINDS}
"""The audit action of each kind's job (started, then succeeded or failed). The operation the job
runs writes its own entries too (deploy, backup, backup.verify, backup.restore, dr.drill), as the
same actor: the job's say that it ran, the operation's what it did."""
BACKUP_KINDS = ("full", "database", "files", "redis")
RESTORE_WHATS = ("database", "redis", "files", "volumes")
DRILL_MODES = ("full", "partial", "backup", "restore")
STRATEGIES = ("blue-green", "canary")
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
SET_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")
SERVICE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
SUMMARY_CHARS = 300
STOPPED = "server stopped while it ran"
JOB_ID_ENV = "SHIPYARD_JOB_ID"
_CHILD = "from shipyard.server._jobs import run_job_child; run_job_child()"


@dataclass(frozen=True)
class JobView:
    id: int
    kind: str
    args: tuple[str, ...]
    actor: str
    state: str
    """running | succeeded | failed"""
    exit_code: int | None
    summary: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


def deploy_args(service: str, version: str, strategy: str | None = None) -> list[str]:
    return ["deploy", service, "--version", version] + (["--strategy", strategy] if strategy else [])


def rollback_args(service: str) -> list[str]:
    return ["rollout", "rollback", service]


def resume_args(service: str) -> list[str]:
    """Carry on a release whose controller is gone, applying the commands queued for it."""
    return ["rollout", "resume", service]


def backup_args(kind: str) -> list[str]:
    return ["backup", kind]


def verify_args(set_id: str) -> list[str]:
    return ["backup", "verify", set_id]


def restore_args(what: str, set_id: str) -> list[str]:
    """A restore into scratch only: a job never overwrites live data."""
    return ["restore", what, "--set", set_id, "--into", "scratch"]


def drill_args(mode: str) -> list[str]:
    return ["dr", "test", mode]


def _one_of(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UserError(f"{what} {value!r}: use one of {', '.join(allowed)}")


def _matches(what: str, value: str, pattern: re.Pattern[str], example: str) -> None:
    if not pattern.fullmatch(value):
        raise UserError(f"{what} {value[:80]!r} is not valid (e.g. {example})")


def _service(stack: Stack, service: str) -> None:
    if not SERVICE.fullmatch(service) or service not in stack.services:
        raise UserError(
            f"service {service[:80]!r} is not in stack {stack.name!r}; services: {', '.join(stack.services)}"
        )


def check_args(kind: str, args: Sequence[str], stack: Stack) -> str:
    """Refuse anything but the exact argv of `kind` with valid values; returns the job's subject."""
    args = list(args)
    shape = UserError(f"not a {kind} job: {' '.join(a[:40] for a in args)[:200]!r}")
    if kind == "deploy":
        if len(args) not in (4, 6) or args[0] != "deploy" or args[2] != "--version":
            raise shape
        _service(stack, args[1])
        _matches("version", args[3], VERSION, "v2 or 1.4.0")
        if len(args) == 6:
            if args[4] != "--strategy":
                raise shape
            _one_of("strategy", args[5], STRATEGIES)
        return args[1]
    if kind in ("rollback", "resume"):
        if len(args) != 3 or args[:2] != ["rollout", kind]:
            raise shape
        _service(stack, args[2])
        return args[2]
    if kind == "backup":
        if len(args) != 2 or args[0] != "backup":
            raise shape
        _one_of("backup kind", args[1], BACKUP_KINDS)
        return args[1]
    if kind == "verify":
        if len(args) != 3 or args[:2] != ["backup", "verify"]:
            raise shape
        _matches("backup set", args[2], SET_ID, "20261201-031500-ab12")
        return args[2]
    if kind == "restore":
        if len(args) != 6 or args[0] != "restore" or args[2] != "--set" or args[4:] != ["--into", "scratch"]:
            raise shape
        _one_of("restore", args[1], RESTORE_WHATS)
        _matches("backup set", args[3], SET_ID, "20261201-031500-ab12")
        return args[3]
    if kind == "drill":
        if len(args) != 3 or args[:2] != ["dr", "test"]:
            raise shape
        _one_of("drill mode", args[2], DRILL_MODES)
        return args[2]
    raise UserError(f"unknown job kind {kind!r}; use one of {', '.join(KINDS)}")


def _subject_kind(kind: str) -> str:
    return {
        "deploy": "service",
        "rollback": "service",
        "resume": "service",
        "backup": "backup_kind",
        "verify": "backup_set",
        "restore": "backup_set",
        "drill": "drill_mode",
    }[kind]


def _view(row: JobRow) -> JobView:
    return JobView(
        id=row.id,
        kind=row.kind,
        args=tuple(row.argv),
        actor=row.actor,
        state=row.state,
        exit_code=row.exit_code,
        summary=row.summary,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
    )


def _summary(log_path: Path | None) -> str | None:
    """The last line of a job's log that says something (not a table's border or row)."""
    if log_path is None:
        return None
    tail = read_tail(log_path, 8192)
    lines = [line.strip() for line in tail.splitlines() if any(c.isalnum() for c in line)]
    # A table the command printed last (its rows start with a box-drawing character) is detail:
    # the line before it says what happened.
    prose = [line for line in lines if not ("\u2500" <= line[0] <= "\u257f")]
    chosen = prose or lines
    return chosen[-1][:SUMMARY_CHARS] if chosen else None


def finish_job(
    sessions: sessionmaker[Session], job_id: int, exit_code: int, summary: str | None = None
) -> bool:
    """Record a job's end once (whoever comes first: the child or the server); True if this did."""
    state = "succeeded" if exit_code == 0 else "failed"
    with sessions() as session, session.begin():
        row = session.get(JobRow, job_id)
        if row is None:
            return False
        if summary is None:
            summary = _summary(Path(row.log_path) if row.log_path else None)
        changed = session.execute(
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.state == "running")
            .values(state=state, exit_code=exit_code, summary=summary, finished_at=utcnow())
        )
        kind, actor, argv = row.kind, row.actor, list(row.argv)
    if not changed.rowcount:  # type: ignore[attr-defined]
        return False
    record_audit(
        sessions,
        actor=actor,
        action=ACTIONS.get(kind, kind),
        target_kind=_subject_kind(kind) if kind in ACTIONS else "job",
        target=_subject_of(kind, argv),
        after={"job": job_id, "args": argv, "exit_code": exit_code, "summary": summary},
        outcome=state,
    )
    return True


def _subject_of(kind: str, argv: list[str]) -> str:
    places = {"deploy": 1, "rollback": 2, "resume": 2, "backup": 1, "verify": 2, "restore": 3, "drill": 2}
    index = places.get(kind)
    return argv[index] if index is not None and len(argv) > index else "?"


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

    def start(self, kind: str, args: Sequence[str], actor: str) -> int:
        """Check `args`, record the job and its audit entry, then start it; returns the job id."""
        if kind not in KINDS:
            raise UserError(f"unknown job kind {kind!r}; use one of {', '.join(KINDS)}")
        stack = self.stack()
        subject = check_args(kind, args, stack)
        assert self.spec is not None
        args = list(args)
        with self._sessions() as session, session.begin():
            row = JobRow(kind=kind, argv=args, actor=actor, state="running", owner=self.owner)
            session.add(row)
            session.flush()
            job_id = row.id
            log_path = self.log_dir / f"{job_id}.log"
            row.log_path = str(log_path.resolve())
        record_audit(
            self._sessions,
            actor=actor,
            action=ACTIONS[kind],
            target_kind=_subject_kind(kind),
            target=subject,
            after={"job": job_id, "args": args},
            outcome="started",
        )
        argv = [sys.executable, "-c", _CHILD, *args, "--file", str(self.spec), "--env", self.environment]
        env = dict(os.environ)
        env["SHIPYARD_ACTOR"] = actor
        env[JOB_ID_ENV] = str(job_id)
        if self._database_url:
            env["SHIPYARD_DATABASE_URL"] = self._database_url
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with log_path.open("wb") as out:
                process = subprocess.Popen(
                    argv,
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

    def _watch(self, job_id: int, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        try:
            finish_job(self._sessions, job_id, code)
        finally:
            with self._lock:
                self._processes.pop(job_id, None)

    def wait(self, job_id: int, timeout_s: float | None = None) -> JobView:
        """Wait for a job this server started to end (tests, the demo); its view afterwards."""
        with self._lock:
            process = self._processes.get(job_id)
        if process is not None:
            process.wait(timeout_s)
            deadline = timeout_s if timeout_s is not None else 30.0
            for _ in range(int(deadline * 20)):
                view = self.get(job_id)
                if view.state != "running":
                    return view
                threading.Event().wait(0.05)
        return self.get(job_id)

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
                (row.id, row.owner, row.pid)
                for row in session.scalars(select(JobRow).where(JobRow.state == "running"))
            ]
        for job_id, owner, pid in rows:
            if owner.partition(":")[0] != host:
                continue
            with self._lock:
                if job_id in self._processes:
                    continue
            if pid is not None and pid_alive(pid):
                continue  # the child goes on and records its own outcome
            summary = _summary_or(self._log_of(job_id), STOPPED)
            if finish_job(self._sessions, job_id, -1, summary):
                closed += 1
        return closed

    def _log_of(self, job_id: int) -> Path | None:
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            return Path(row.log_path) if row is not None and row.log_path else None


def _summary_or(log_path: Path | None, reason: str) -> str:
    last = _summary(log_path)
    return f"{reason}; last output: {last}"[:SUMMARY_CHARS] if last else reason


def run_job_child() -> None:
    """The child's entry point: run the CLI verb, then record the job's outcome itself."""
    from ..cli import main  # noqa: PLC0415 - the CLI is only needed in the child

    job_id = int(os.environ[JOB_ID_ENV])
    code: int = 1
    try:
        main(sys.argv[1:])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        code = 1
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            sessions = session_factory(open_engine(os.environ.get("SHIPYARD_DATABASE_URL"), migrate=False))
            finish_job(sessions, job_id, code)
        except Exception as exc:  # the server records it instead when it still runs
            print(f"could not record the job's outcome: {type(exc).__name__}", file=sys.stderr)
    raise SystemExit(code)


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: int
    kind: str
    args: list[str]
    actor: str
    state: str
    exit_code: int | None
    summary: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        return cls(**{**dataclasses.asdict(view), "args": list(view.args)})


def build_jobs_router(jobs: JobRunner, *, admin: Callable[..., Awaitable[str]]) -> APIRouter:
    """`GET /jobs`, `GET /jobs/{id}`, `GET /jobs/{id}/log` (admin token: job logs are operations data)."""
    router = APIRouter(prefix="/jobs", tags=["jobs"])

    @router.get("", response_model=list[JobOut])
    def list_jobs(
        _: str = Depends(admin),
        limit: int = Query(50, ge=1, le=500),
        kind: Literal["deploy", "rollback", "resume", "backup", "verify", "restore", "drill"] | None = None,
    ) -> list[JobOut]:
        """Jobs started from the API or the dashboard, newest first."""
        return [JobOut.of(view) for view in jobs.recent(limit, kind)]

    @router.get("/{job_id}", response_model=JobOut)
    def get_job(job_id: int = FastApiPath(ge=1, le=2**31 - 1), _: str = Depends(admin)) -> JobOut:
        """One job: its state, exit code and the last line of its output."""
        return JobOut.of(jobs.get(job_id))

    @router.get(
        "/{job_id}/log",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def get_job_log(
        job_id: int = FastApiPath(ge=1, le=2**31 - 1),
        _: str = Depends(admin),
        max_bytes: int = Query(20000, ge=1, le=1_000_000),
    ) -> PlainTextResponse:
        """The end of the job's output (the command's own output, as at a terminal)."""
        return PlainTextResponse(jobs.log_tail(job_id, max_bytes))

    return router
