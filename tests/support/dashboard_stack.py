"""A whole stack behind a real `shipyard serve`, for the dashboard's end-to-end test.

The demo app (v1 live behind a real HAProxy), a live PostgreSQL and Redis with data, a files
directory, a restic repository holding one full backup set, and `shipyard serve -f SPEC` on a
free loopback port over an SQLite state store; an admin and a client token. Everything is set up
with the real `shipyard` CLI, and torn down afterwards (the server, the app, HAProxy).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from shipyard.host import free_port
from shipyard.spec import load_spec
from shipyard.state import JobRow, open_engine, session_factory
from shipyard.tokens import Scope, create_token
from support.backup_stack import RESTIC_PASSWORD_ENV, SHIPYARD, BackupStack, backup_stack
from support.demo_app import demo_command
from support.serve import start_serve, stop_serve, wait_ready

ENVIRONMENT = "test"


def spec_text(data: BackupStack, web_port: int) -> str:
    """The backup stack's datastores and files, plus the demo app released by a canary that waits
    at 20 % until someone promotes it."""
    return textwrap.dedent(
        f"""\
        name: dash
        services:
          web:
            role: web
            run: {demo_command()}
            port: {web_port}
            health:
              readiness: {{path: /healthz, period: 1s, timeout: 1s, failure_threshold: 1}}
            replicas: 1
            drain: 1s
            env:
              ERROR_RATE: "0"
        datastores:
          db:
            kind: postgresql
            storage: {{size: 1Gi}}
            database: app
            user: {data.postgres.user}
            local: {{port: {data.postgres.port}}}
          cache:
            kind: redis
            local: {{port: {data.redis.port}}}
        backup:
          repository: ./repo
          password: ${{env:{RESTIC_PASSWORD_ENV}}}
          sources:
            datastores: [db, cache]
            volumes: [{data.files}]
          checks:
            - SELECT count(*) FROM items WHERE price > 0
        dr:
          rto: 15m
          rpo: 1h
        rollout:
          strategy: canary
          health_timeout: 15s
          rollback_window: 1s
          steps: [{{weight: 20}}, {{pause: until-promoted}}, {{weight: 100}}]
          analysis: {{interval: 1s, window: 2s, max_error_rate: 0.05, max_p99_ratio: 10.0, min_requests: 10}}
        environments:
          {ENVIRONMENT}: {{}}
        """
    )


@dataclass
class DashboardStack:
    data: BackupStack
    web_port: int
    port: int
    admin: str
    client: str

    @property
    def url(self) -> str:
        """The shipyard server."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def web_url(self) -> str:
        """The demo app through HAProxy."""
        return f"http://127.0.0.1:{self.web_port}/"

    @property
    def spec(self) -> Path:
        return self.data.spec

    @property
    def env(self) -> dict[str, str]:
        return self.data.cli_env()

    def cli(self, *args: str, timeout: float = 120) -> str:
        """Run `shipyard ARGS -f SPEC -e test`-style verbs (pass -f/-e yourself); stdout, or raise."""
        result = subprocess.run(
            [SHIPYARD, *args],
            env=self.env,
            cwd=self.data.base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"shipyard {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result.stdout

    def sessions(self) -> Any:
        return session_factory(open_engine(self.data.state_url))


def _token(stack: DashboardStack, name: str, scope: Scope) -> str:
    """A token made by the function behind `shipyard flags token create` (a CLI start costs seconds)."""
    with stack.sessions()() as session:
        return create_token(session, name, scope, created_by="test")


@contextlib.contextmanager
def dashboard_stack() -> Iterator[DashboardStack]:
    """The stack, v1 of `web` live, one full backup set, and `shipyard serve` ready."""
    with backup_stack() as data:
        web_port = free_port()
        data.spec.write_text(spec_text(data, web_port))
        stack = DashboardStack(data, web_port, free_port(), admin="", client="")
        spec_args = ("-f", str(data.spec), "-e", ENVIRONMENT)
        server: subprocess.Popen[bytes] | None = None
        try:
            stack.admin = _token(stack, "ops", "admin")
            stack.client = _token(stack, "web-app", "client")
            # v1's release and the first backup set are independent: both at once saves seconds.
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                deploy = pool.submit(
                    stack.cli, "deploy", "web", "--version", "v1", "--strategy", "blue-green", *spec_args
                )
                backup = pool.submit(stack.cli, "backup", "full", *spec_args)
                deploy.result()
                backup.result()
            log = data.base / "serve.log"
            server = start_serve(spec_args, port=stack.port, log=log, cwd=data.base, env=stack.env)
            wait_ready(stack.url, server, log)
            yield stack
        finally:
            if server is not None:
                stop_serve(server)
            _stop_jobs(stack)
            _destroy_target(data)


def _stop_jobs(stack: DashboardStack) -> None:
    """Kill the children of jobs still running (a failed test must not leave a controller behind)."""
    with contextlib.suppress(Exception), stack.sessions()() as session:
        pids = [row.pid for row in session.scalars(select(JobRow).where(JobRow.state == "running"))]
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


def _destroy_target(data: BackupStack) -> None:
    """Stop the app's instances and HAProxy, as `release_stack` does."""
    from shipyard.rollout.targets.local import LocalTarget  # noqa: PLC0415

    with contextlib.suppress(Exception):
        stack = load_spec(data.spec).stack(ENVIRONMENT)
        state_dir = data.base / ".shipyard" / "local" / f"{stack.name}-{ENVIRONMENT}"
        LocalTarget(stack, state_dir, workdir=data.base).destroy()
