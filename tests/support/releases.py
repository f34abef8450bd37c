"""A stack on this machine for release tests: the demo app behind a real HAProxy, driven by the
real `shipyard` CLI in subprocesses, with its own state store and state directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from shipyard.host import free_port
from shipyard.rollout import LoadGenerator
from shipyard.rollout._controller import HOLD_STEP_ENV
from shipyard.spec import load_spec
from shipyard.state import RolloutRow, RolloutStepRow, open_engine, session_factory
from support.demo_app import demo_command, migrate_command

SHIPYARD = str(Path(sys.executable).parent / "shipyard")


def spec_text(
    port: int,
    strategy: str,
    *,
    steps: str | None = None,
    health_timeout: str = "15s",
    env: Mapping[str, str] | None = None,
    run: str | None = None,
    analysis: str = "{interval: 1s, window: 2s, max_error_rate: 0.02, max_p99_ratio: 5.0, min_requests: 20}",
) -> str:
    """A one-service stack with short windows, so a whole release takes seconds; `env` is added to
    the app's environment (e.g. the demo app's WORK_US), `run` replaces the demo app."""
    steps = steps or "[{weight: 10}, {analysis: 3s}, {weight: 50}, {analysis: 2s}, {weight: 100}]"
    indent = "\n" + " " * 14  # the env entries' indentation before dedent
    extra = "".join(f"{indent}{name}: {json.dumps(value)}" for name, value in (env or {}).items())
    return textwrap.dedent(
        f"""\
        name: releases
        services:
          web:
            role: web
            run: {run or demo_command()}
            port: {port}
            health:
              readiness: {{path: /healthz, period: 1s, timeout: 1s, failure_threshold: 1}}
            replicas: 2
            drain: 2s
            env:
              ERROR_RATE: "0"
              ERROR_RATE__bad: "0.2"
              FAIL_HEALTH__sick: "1"
              MIGRATION_FAIL__broken: "3"{extra}
            migration: {migrate_command()}
        rollout:
          strategy: {strategy}
          health_timeout: {health_timeout}
          rollback_window: 1s
          steps: {steps}
          analysis: {analysis}
        environments:
          test: {{}}
        """
    )


@dataclass
class ReleaseStack:
    directory: Path
    port: int
    extra_env: dict[str, str] = field(default_factory=dict)
    """Added to every command's environment (e.g. the controller's test hold)."""

    @property
    def spec(self) -> Path:
        return self.directory / "shipyard.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SHIPYARD_STATE_DIR": str(self.directory / "state"),
            "SHIPYARD_DATABASE_URL": f"sqlite:///{self.directory / 'state.db'}",
            "SHIPYARD_ACTOR": "test",
            **self.extra_env,
        }

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `shipyard ARGS`; `deploy` and the steering verbs also get this stack's spec."""
        return subprocess.run(
            self._argv(args), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def start_cli(self, *args: str) -> subprocess.Popen[str]:
        """`shipyard ARGS` in the background, in its own session (so it can be killed alone)."""
        return subprocess.Popen(
            self._argv(args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        steering = args[:1] == ("deploy",) or (
            args[:1] == ("rollout",) and args[1] not in ("status", "history")
        )
        return [SHIPYARD, *args, *(["-f", str(self.spec), "-e", "test"] if steering else [])]

    def sessions(self) -> Any:
        return session_factory(open_engine(self.env["SHIPYARD_DATABASE_URL"]))

    def latest(self) -> RolloutRow:
        with self.sessions()() as session:
            row = session.scalar(select(RolloutRow).order_by(RolloutRow.id.desc()).limit(1))
            assert row is not None
            return row

    def steps(self, rollout_id: int) -> list[RolloutStepRow]:
        with self.sessions()() as session:
            return list(
                session.scalars(
                    select(RolloutStepRow)
                    .where(RolloutStepRow.rollout_id == rollout_id)
                    .order_by(RolloutStepRow.seq)
                )
            )

    def target(self) -> Any:
        from shipyard.rollout.targets.local import LocalTarget  # noqa: PLC0415

        stack = load_spec(self.spec).stack("test")
        return LocalTarget(
            stack, self.directory / "state" / "local" / "releases-test", workdir=self.directory
        )


@contextlib.contextmanager
def release_stack(tmp: Path, strategy: str, **spec: Any) -> Iterator[ReleaseStack]:
    """A stack with v1 live (deployed by the CLI), torn down afterwards."""
    stack = ReleaseStack(tmp, free_port())
    stack.spec.write_text(spec_text(stack.port, strategy, **spec))
    try:
        first = stack.cli("deploy", "web", "--version", "v1", "--strategy", "blue-green")
        assert first.returncode == 0, first.stdout + first.stderr
        yield stack
    finally:
        with contextlib.suppress(Exception):
            target = stack.target()
            target.destroy()


def kill_group(process: subprocess.Popen[str]) -> None:
    """SIGKILL the controller and anything it started in its session (not the detached app)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def kill_at_step_then_resume(tmp: Path, strategy: str, step: str, rate: int = 200) -> None:
    """Deploy v2 under load, SIGKILL the controller once the release reaches `step` (e.g.
    `SetWeights#2`: its second SetWeights), `rollout resume`: v2 live and no request failed."""
    kind, _, nth = step.partition("#")
    occurrence = int(nth or 1)
    with release_stack(tmp, strategy) as stack:
        if kind == "Retire":
            # The last step is quick: without a hold the release may be over before the kill lands.
            stack.extra_env[HOLD_STEP_ENV] = kind
        with LoadGenerator(stack.url, rate, connections=8) as load:
            time.sleep(0.5)
            controller = stack.start_cli("deploy", "web", "--version", "v2")

            def reached() -> bool:
                with_kind = [
                    r
                    for r in stack.steps(stack.latest().id)
                    if stack.latest().candidate == "v2" and r.action["type"] == kind
                ]
                return len(with_kind) >= occurrence

            assert wait_for(reached, 60), f"the release never reached {step}"
            kill_group(controller)
            time.sleep(0.5)
            resumed = stack.cli("rollout", "resume", "web")
            time.sleep(0.5)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        row = stack.latest()
        assert row.outcome == "succeeded", (row.outcome, row.reason)
        assert stack.target().status("web").versions == {"v2": 100}
        # No request failed for lack of a healthy server, whenever the controller died.
        assert load.report.failed == 0, load.report.failures[:5]
