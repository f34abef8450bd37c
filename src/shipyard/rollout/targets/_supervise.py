"""The supervisor of one instance: `python -m shipyard.rollout.targets._supervise STATE_DIR NAME`.

Started by `Supervisor.start` in a session of its own, with the app's environment as its own. It
reads the instance's spec from STATE_DIR/NAME.json, then:

- runs the command with /bin/sh -c in a new process group, output appended to NAME.log;
- when the app exits without being asked to, records its exit code and the end of its log
  (`last_exit_code`, `crash_log`) in NAME.json at once (a release watching the instance fails on
  it), kills what is left of its process group, waits (backoff: 0.5 s doubling to 30 s, back to
  0.5 s once an app ran for 10 s) and starts it again, counting restarts in NAME.json;
- on SIGTERM (or SIGINT) sends SIGTERM to the app's process group, waits up to the grace period
  for the group to empty, SIGKILLs what is left, records the state "stopped" and exits;
- exits the same way if NAME.json disappears (its state directory was removed: nobody could stop
  it any more).

It writes NAME.supervisor.pid and NAME.app.pid ("<pid> <start time>"), and never logs the
environment.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ...host import (
    group_members,
    read_json,
    signal_group,
    tail,
    terminate_group,
    write_json,
    write_pidfile,
)
from ._processes import Paths

MIN_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 10.0
"""An app that ran this long before crashing is restarted after the minimum backoff again."""
CHECK_STATE_S = 1.0


class _Supervise:
    def __init__(self, name: str, paths: Paths, spec: dict[str, Any]) -> None:
        self.name = name
        self.paths = paths
        self.command = str(spec["command"])
        self.workdir = Path(spec["workdir"])
        self.grace_s = float(spec.get("grace_s", 20.0))
        self.port = spec.get("port")
        self.stop_reason: str | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        # Python-level handlers (not SIG_IGN) so that the app starts with default dispositions.
        signal.signal(signal.SIGCHLD, self._on_wake)
        signal.signal(signal.SIGHUP, self._on_wake)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_reason = self.stop_reason or signal.Signals(signum).name

    def _on_wake(self, signum: int, frame: FrameType | None) -> None:
        pass

    def _wait(self, timeout_s: float) -> None:
        """Sleep until a signal arrives or `timeout_s` passes."""
        with contextlib.suppress(InterruptedError):
            select.select([self._wake_r], [], [], max(0.0, timeout_s))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        print(f"{stamp} [shipyard-supervise {self.name}] {message}", file=sys.stderr, flush=True)

    def update(self, **fields: Any) -> None:
        data = read_json(self.paths.state)
        if data is None:
            return  # the record is gone: we are being abandoned (see _check_state)
        data.update(fields, updated_at=time.time())
        try:
            write_json(self.paths.state, data)
        except OSError as e:
            self.log(f"cannot record state: {e}")

    def _check_state(self) -> None:
        if self.stop_reason is None and not self.paths.state.exists():
            self.stop_reason = f"{self.paths.state} was removed"

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        try:
            with self.paths.log.open("ab") as log:
                return subprocess.Popen(
                    ["/bin/sh", "-c", self.command],
                    cwd=self.workdir,
                    env=os.environ,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                    close_fds=True,
                )
        except OSError as e:
            self.log(f"cannot start the app: {e}")
            return None

    def run(self) -> int:
        write_pidfile(self.paths.supervisor_pid, os.getpid())
        restarts = int((read_json(self.paths.state) or {}).get("restarts", 0))
        backoff = MIN_BACKOFF_S
        while self.stop_reason is None:
            started = time.monotonic()
            app = self._spawn()
            if app is not None:
                write_pidfile(self.paths.app_pid, app.pid)
                self.update(state="running", app_pid=app.pid, app_started_at=time.time())
                self.log(f"app started (pid {app.pid}, port {self.port})")
                next_check = time.monotonic() + CHECK_STATE_S
                while app.poll() is None and self.stop_reason is None:
                    self._wait(max(0.0, next_check - time.monotonic()))
                    if time.monotonic() >= next_check:
                        self._check_state()
                        next_check = time.monotonic() + CHECK_STATE_S
                if self.stop_reason is not None:
                    self._stop_app(app)
                    break
                code: int = app.returncode
                leftovers = group_members(app.pid)
                if leftovers:
                    self.log(f"killing {len(leftovers)} process(es) the app left behind")
                    signal_group(app.pid, signal.SIGKILL)
            else:
                code = 127
            ran = time.monotonic() - started
            if ran >= STABLE_S:
                backoff = MIN_BACKOFF_S
            self.paths.app_pid.unlink(missing_ok=True)
            self.log(f"app exited with code {code} after {ran:.1f}s; restarting in {backoff:g}s")
            # The log's end as the app left it (a restarted app writes on): what a release that
            # fails on this crash quotes.
            self.update(
                state="backoff",
                app_pid=None,
                last_exit_code=code,
                last_exit_at=time.time(),
                crash_log=tail(self.paths.log),
            )
            deadline = time.monotonic() + backoff
            while self.stop_reason is None and time.monotonic() < deadline:
                self._wait(min(CHECK_STATE_S, deadline - time.monotonic()))
                self._check_state()
            if self.stop_reason is not None:
                break
            restarts += 1
            self.update(restarts=restarts)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
        self.paths.app_pid.unlink(missing_ok=True)
        self.update(state="stopped", app_pid=None, stopped_at=time.time())
        self.log(f"supervisor exits ({self.stop_reason})")
        return 0

    def _stop_app(self, app: subprocess.Popen[bytes]) -> None:
        self.update(state="stopping")
        self.log(f"stopping the app ({self.stop_reason}): SIGTERM, SIGKILL after {self.grace_s:g}s")
        began = time.monotonic()
        graceful = terminate_group(app.pid, self.grace_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            app.wait(timeout=5)
        took = time.monotonic() - began
        if graceful:
            self.log(f"app stopped in {took:.2f}s (exit code {app.returncode})")
        else:
            self.log(f"app did not stop within {self.grace_s:g}s: killed")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m shipyard.rollout.targets._supervise STATE_DIR NAME", file=sys.stderr)
        return 2
    state_dir, name = Path(args[0]), args[1]
    paths = Paths.of(state_dir, name)
    spec = read_json(paths.state)
    if spec is None or "command" not in spec or "workdir" not in spec:
        print(f"shipyard-supervise: no instance record at {paths.state}", file=sys.stderr)
        return 2
    return _Supervise(name, paths, spec).run()


if __name__ == "__main__":
    sys.exit(main())
