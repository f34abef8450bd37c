"""The job child, `python -m shipyard.jobs`: runs one ops request and records how it ended.

    python -m shipyard.jobs 42                         the recorded job 42 (started by a JobRunner)
    python -m shipyard.jobs --request '{"kind": "backup", "what": "full"}' [--file SPEC] [--env ENV]
                                                       one request with no job row (a Kubernetes
                                                       CronJob's command)

Its output goes to the job's log; its typed result and one-line summary go to the job's row.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..errors import ShipyardError
from ..logs import configure_logging, register_environment_secrets
from ..ops import Result, Workspace
from ..state import JobRow, open_engine, session_factory
from ._orphans import JobLease
from ._requests import OPERATIONS, parse_request, parse_request_json
from ._runner import ENVIRONMENT_ENV, SPEC_ENV, SUMMARY_CHARS, finish_job

log = logging.getLogger("shipyard.jobs")


def _interrupt(*_: object) -> None:
    # SIGTERM (a stopping server or supervisor) stops the operation like Ctrl-C: a release stays
    # recorded as it was and `shipyard rollout resume` carries it on.
    raise KeyboardInterrupt


def _succeeded(result: Result) -> bool:
    return bool(getattr(result, "ok", True))


def execute(workspace: Workspace, request: Any) -> tuple[int, str, dict[str, Any] | None]:
    """Run `request`; (exit code, summary, result as JSON or None). Logs what people read."""
    fields = {"kind": request.kind, "actor": workspace.actor}
    log.info("%s started", request.kind, extra=fields)
    try:
        result = OPERATIONS[request.kind](workspace, request)
    except ShipyardError as exc:
        log.error("%s failed: %s", request.kind, exc.message, extra={**fields, "exit_code": exc.exit_code})
        return exc.exit_code, exc.message[:SUMMARY_CHARS], None
    except KeyboardInterrupt:
        log.warning("%s interrupted", request.kind, extra={**fields, "exit_code": 130})
        return 130, "interrupted", None
    summary = result.summary()
    code = 0 if _succeeded(result) else 1
    log.log(logging.INFO if code == 0 else logging.ERROR, "%s", summary, extra={**fields, "exit_code": code})
    return code, summary[:SUMMARY_CHARS], result.model_dump(mode="json")


def run_recorded(job_id: int) -> int:
    """Run job `job_id` as its row says; record its end; its exit code."""
    database_url = os.environ.get("SHIPYARD_DATABASE_URL")
    sessions = session_factory(open_engine(database_url, migrate=False))
    code, summary, result = 1, "the job could not start", None
    # The child's heartbeat: a server on another host closes the job if both this process and its
    # server die (`_orphans`), and leaves it alone while this lease is renewed.
    lease = JobLease(sessions, job_id)
    lease.start()
    try:
        with sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None:
                print(f"error: job {job_id} does not exist", file=sys.stderr)
                return 2
            stored, actor = dict(row.request or {}), row.actor
        request = parse_request(stored)
        workspace = Workspace.open(
            Path(os.environ[SPEC_ENV]),
            os.environ.get(ENVIRONMENT_ENV),
            database_url=database_url,
            actor=actor,
        )
        code, summary, result = execute(workspace, request)
    except ShipyardError as exc:
        print(f"error: {exc.message}", file=sys.stderr, flush=True)
        code, summary = exc.exit_code, exc.message[:SUMMARY_CHARS]
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            finish_job(sessions, job_id, code, summary, result)
        except Exception as exc:  # the server records it instead while it runs
            print(f"could not record the job's outcome: {type(exc).__name__}", file=sys.stderr)
        lease.stop()  # after the end is recorded: never a moment with neither
    return code


def run_inline(text: str, spec: Path, environment: str | None) -> int:
    """Run one request given as JSON, with no job row."""
    try:
        request = parse_request_json(text)
        workspace = Workspace.open(spec, environment, database_url=os.environ.get("SHIPYARD_DATABASE_URL"))
    except ShipyardError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    code, _, _ = execute(workspace, request)
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shipyard.jobs", description=__doc__.split("\n")[0])
    parser.add_argument("job_id", nargs="?", type=int, help="a recorded job to run")
    parser.add_argument("--request", help="a request as JSON, run with no job row")
    parser.add_argument("--file", "-f", default=os.environ.get(SPEC_ENV, "shipyard.yaml"), type=Path)
    parser.add_argument("--env", "-e", default=None)
    args = parser.parse_args(argv)
    if (args.job_id is None) == (args.request is None):
        parser.error("give a job id or --request, not both")
    signal.signal(signal.SIGTERM, _interrupt)
    # A job's output is a file: JSON lines, secrets masked (the environment's too).
    configure_logging(os.environ.get("SHIPYARD_LOG_LEVEL", "info"))
    register_environment_secrets()
    if args.request is not None:
        raise SystemExit(run_inline(args.request, args.file, args.env))
    raise SystemExit(run_recorded(args.job_id))
