"""Operations run in the CLI's own process, recorded as jobs, so that `/jobs` and the dashboard
list them beside the ones a server started:

    result = run_recorded_here(ws, request, lambda: take_backup(ws, request))

The row is the one a `JobRunner` writes (kind, typed request, actor, state, typed result and
summary, audited as `job.<kind>`), with the CLI itself as both owner and child: its `pid` is the
owner's pid, which is how `JobView.origin` tells a CLI run from a server's child. A server on the same
host closes the row if the CLI dies before it records its end (`JobRunner.reconcile`), and can
cancel it (SIGTERM to the CLI, as Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ShipyardError
from ..ops import Result, Workspace
from ..state import JobRow, record_audit
from ._runner import SUMMARY_CHARS, action_of, finish_job
from ._stored import subject_of

R = TypeVar("R", bound=Result)


def _start(ws: Workspace, request: Any) -> int:
    stored = request.model_dump(mode="json")
    pid = os.getpid()
    with ws.sessions() as session, session.begin():
        row = JobRow(
            kind=request.kind,
            request=stored,
            actor=ws.actor,
            state="running",
            owner=f"{socket.gethostname()}:{pid}",
            pid=pid,
        )
        session.add(row)
        session.flush()
        job_id = row.id
    subject_kind, subject = subject_of(stored)
    record_audit(
        ws.sessions, actor=ws.actor, action=action_of(request.kind), target_kind=subject_kind,
        target=subject, after={"job": job_id, "request": stored, "origin": "cli"}, outcome="started",
    )  # fmt: skip
    return job_id


def _ended(exc: BaseException) -> tuple[int, str]:
    """(exit code, summary) of an operation that raised `exc`."""
    if isinstance(exc, ShipyardError):
        return exc.exit_code, exc.message[:SUMMARY_CHARS]
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, SystemExit):
        return (exc.code if isinstance(exc.code, int) else 1), "exited"
    return 1, f"failed: {type(exc).__name__}"


def run_recorded_here(ws: Workspace, request: Any, run: Callable[[], R]) -> R:
    """Run `run()` (the ops call of `request`) here, recorded as a job run from the CLI; its result,
    or what it raised (after the job's end is recorded)."""
    job_id = _start(ws, request)
    try:
        result = run()
    except BaseException as exc:
        code, summary = _ended(exc)
        with contextlib.suppress(Exception):  # what the operation raised matters more
            finish_job(ws.sessions, job_id, code, summary)
        raise
    ok = bool(getattr(result, "ok", True))
    finish_job(
        ws.sessions, job_id, 0 if ok else 1, result.summary()[:SUMMARY_CHARS], result.model_dump(mode="json")
    )
    return result
