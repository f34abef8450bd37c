"""App processes on this host: each instance supervised by its own small detached process.

    sup = Supervisor(state_dir)
    inst = sup.start(InstanceSpec("api-v2-0", "python app.py", free_port(), env, workdir))
    sup.get("api-v2-0"); sup.list()
    sup.stop("api-v2-0")          # SIGTERM to the app, SIGKILL after its grace; waits

`start` spawns `python -m shipyard.rollout.targets._supervise <state_dir> <name>` in a new
session. That process runs the service's command (`/bin/sh -c`, in a process group of its own),
restarts it when it crashes (with backoff, counting restarts), and on SIGTERM forwards SIGTERM to
the app's process group, waits up to the grace period, SIGKILLs what is left and exits. Nothing
ties it to the process that started it: a controller killed mid-release leaves its instances
serving, and a new `Supervisor` over the same `state_dir` finds them.

`state_dir` holds, per instance:

    <name>.json             the spec (never its environment) and the supervisor's view of the app
                            (state, restarts, last exit), written atomically (write + rename)
    <name>.supervisor.pid   "<pid> <start time>" of the supervisor
    <name>.app.pid          "<pid> <start time>" of the app (the shell running the command)
    <name>.log              the app's stdout and stderr, and the supervisor's own lines
    <name>.lock             serialises start/stop of one instance across threads and processes

A pid counts as alive only if /proc/<pid>/stat shows a process that is not a zombie and started
when recorded (the start time guards against a recycled pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import TargetError
from ...host import (
    TAIL_LINES,
    group_members,
    kill_group,
    pid_alive,
    read_json,
    read_pidfile,
    signal_group,
    tail,
    terminate_group,
    write_json,
    write_pidfile,
)
from .._model import MigrationResult

SUPERVISE_MODULE = "shipyard.rollout.targets._supervise"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BASE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")
"""What an app inherits from the controller's environment; everything else comes from its spec."""
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class InstanceSpec:
    """One instance of one version of a service."""

    name: str
    """Unique per instance, e.g. "api-v2-0"; letters, digits, '.', '_' and '-'."""
    command: str
    """The service's `run` command, run by /bin/sh -c."""
    port: int
    """Passed to the app as PORT."""
    env: Mapping[str, str]
    """The app's environment (VERSION included by the caller); never written to disk or a log."""
    workdir: Path
    grace_s: float = 20.0
    """On stop: SIGTERM, then SIGKILL after this many seconds."""


@dataclass(frozen=True)
class Instance:
    name: str
    port: int
    supervisor_pid: int | None
    app_pid: int | None
    alive: bool
    """The supervisor runs and so does the app (False while it waits to restart a crashed app)."""
    restarts: int
    log: Path
    last_exit_code: int | None = None
    """The exit code of the app's last exit that was not asked for (a crash); None if none."""
    crash_log: str = ""
    """The end of the log when it last crashed."""

    def crash(self) -> str | None:
        """The app's last crash in words, with its log's end; None if it never crashed."""
        if self.last_exit_code is None:
            return None
        plural = "s" if self.restarts != 1 else ""
        restarted = f", restarted {self.restarts} time{plural}" if self.restarts else ""
        lines = f"; last lines of {self.log}:\n{self.crash_log}" if self.crash_log else ""
        return f"instance {self.name} exited with code {self.last_exit_code}{restarted}{lines}"


@dataclass(frozen=True)
class Paths:
    """Where one instance keeps its state."""

    state: Path
    supervisor_pid: Path
    app_pid: Path
    log: Path
    lock: Path

    @classmethod
    def of(cls, state_dir: Path, name: str) -> Paths:
        return cls(
            state_dir / f"{name}.json",
            state_dir / f"{name}.supervisor.pid",
            state_dir / f"{name}.app.pid",
            state_dir / f"{name}.log",
            state_dir / f"{name}.lock",
        )


def app_environment(env: Mapping[str, str], port: int | None = None) -> dict[str, str]:
    """An app's environment: a few basics from ours (PATH, HOME, locale…), then `env`, then PORT."""
    base = {key: os.environ[key] for key in BASE_ENV_KEYS if key in os.environ}
    base.setdefault("PATH", DEFAULT_PATH)
    base.update(env)
    if port is not None:
        base["PORT"] = str(port)
    return base


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise TargetError(
            f"invalid instance name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )


# --- the supervisor's client ------------------------------------------------------------------


class Supervisor:
    """Starts, finds and stops instances whose state lives in `state_dir`.

    Any number of `Supervisor` objects, in any number of processes, may share a `state_dir`: start
    and stop of one instance are serialised by a lock file.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        check_s: float = 0.5,
        spawn_timeout_s: float = 15.0,
    ) -> None:
        """`check_s`: how long `start` watches a new app for exiting at once (then it is an error)."""
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.check_s = check_s
        self.spawn_timeout_s = spawn_timeout_s
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- reading

    def get(self, name: str) -> Instance | None:
        """The instance called `name`, alive or not; None if there is none (or it was stopped)."""
        check_name(name)
        paths = Paths.of(self.state_dir, name)
        data = read_json(paths.state)
        if data is None:
            return None
        return self._instance(name, data, paths)

    def list(self) -> list[Instance]:
        """Every instance this state_dir knows, by name."""
        found = []
        for path in sorted(self.state_dir.glob("*.json")):
            name = path.name.removesuffix(".json")
            if not NAME_RE.match(name):
                continue
            instance = self.get(name)
            if instance is not None:
                found.append(instance)
        return found

    def _instance(self, name: str, data: Mapping[str, Any], paths: Paths) -> Instance:
        self._reap()
        sup = read_pidfile(paths.supervisor_pid)
        app = read_pidfile(paths.app_pid)
        sup_alive = sup is not None and pid_alive(*sup)
        app_alive = sup_alive and app is not None and pid_alive(*app)
        return Instance(
            name=name,
            port=int(data.get("port", 0)),
            supervisor_pid=sup[0] if sup and sup_alive else None,
            app_pid=app[0] if app and app_alive else None,
            alive=app_alive,
            restarts=int(data.get("restarts", 0)),
            log=paths.log,
            last_exit_code=None if data.get("last_exit_code") is None else int(data["last_exit_code"]),
            crash_log=str(data.get("crash_log", "")),
        )

    def _supervisor_alive(self, paths: Paths) -> bool:
        self._reap()
        sup = read_pidfile(paths.supervisor_pid)
        return sup is not None and pid_alive(*sup)

    def _reap(self) -> None:
        """Collect the exit status of supervisors this object started, so none lingers as a zombie."""
        for name, child in list(self._children.items()):
            if child.poll() is not None:
                self._children.pop(name, None)

    @contextlib.contextmanager
    def _locked(self, paths: Paths) -> Iterator[None]:
        with paths.lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- start

    def start(self, spec: InstanceSpec) -> Instance:
        """Start `spec` under a supervisor of its own and return it once the app runs.

        Idempotent: if a supervisor for `spec.name` already runs, that instance is returned as is
        (its port is the one it was started with: the returned `Instance` is authoritative).
        Raises TargetError if the command cannot start or exits at once (quoting its log's end).
        """
        check_name(spec.name)
        if not spec.workdir.is_dir():
            raise TargetError(f"instance {spec.name}: working directory {spec.workdir} does not exist")
        paths = Paths.of(self.state_dir, spec.name)
        with self._locked(paths):
            data = read_json(paths.state)
            if data is not None and self._supervisor_alive(paths):
                return self._instance(spec.name, data, paths)
            # A dead record (its supervisor was killed): clear it, and any app it left behind.
            if data is not None:
                self._kill_orphan_app(paths, float(data.get("grace_s", spec.grace_s)))
            for stale in (paths.supervisor_pid, paths.app_pid):
                stale.unlink(missing_ok=True)
            return self._spawn(spec, paths)

    def _spawn(self, spec: InstanceSpec, paths: Paths) -> Instance:
        write_json(
            paths.state,
            {
                "name": spec.name,
                "command": spec.command,
                "port": spec.port,
                "workdir": str(spec.workdir),
                "grace_s": spec.grace_s,
                "log": str(paths.log),
                "state": "starting",
                "restarts": 0,
                "created_at": time.time(),
            },
        )
        env = app_environment(spec.env, spec.port)
        # `-m` puts the working directory first on sys.path: the directory holding the shipyard
        # package, so the supervisor imports the same shipyard as we do, installed or not.
        package_root = Path(__file__).resolve().parents[3]
        with paths.log.open("ab") as log:
            try:
                child = subprocess.Popen(
                    [sys.executable, "-m", SUPERVISE_MODULE, str(self.state_dir.resolve()), spec.name],
                    cwd=package_root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as e:
                paths.state.unlink(missing_ok=True)
                raise TargetError(f"instance {spec.name}: cannot start its supervisor: {e}") from e
        self._children[spec.name] = child
        write_pidfile(paths.supervisor_pid, child.pid)

        # Wait for the supervisor to start the app, then watch the app for `check_s`.
        deadline = time.monotonic() + self.spawn_timeout_s
        app_seen: float | None = None
        while True:
            data = read_json(paths.state) or {}
            if child.poll() is not None:
                self._forget(paths)
                raise TargetError(
                    f"instance {spec.name}: its supervisor exited with code {child.returncode}"
                    + self._log_excerpt(paths)
                )
            if data.get("last_exit_code") is not None:
                code = data["last_exit_code"]
                self._stop_locked(spec.name, paths)
                self._forget(paths)
                raise TargetError(
                    f"instance {spec.name}: `{spec.command}` exited at once with code {code}"
                    + self._log_excerpt(paths)
                )
            if app_seen is None and data.get("app_pid"):
                app_seen = time.monotonic()
            if app_seen is not None and time.monotonic() - app_seen >= self.check_s:
                return self._instance(spec.name, data, paths)
            if app_seen is None and time.monotonic() > deadline:
                self._stop_locked(spec.name, paths)
                self._forget(paths)
                raise TargetError(
                    f"instance {spec.name}: its supervisor did not start the app within "
                    f"{self.spawn_timeout_s:g}s" + self._log_excerpt(paths)
                )
            time.sleep(0.02)

    @staticmethod
    def _log_excerpt(paths: Paths) -> str:
        text = tail(paths.log)
        return f"; last lines of {paths.log}:\n{text}" if text else f" (its log {paths.log} is empty)"

    @staticmethod
    def _forget(paths: Paths) -> None:
        for path in (paths.state, paths.supervisor_pid, paths.app_pid):
            path.unlink(missing_ok=True)

    def _kill_orphan_app(self, paths: Paths, grace_s: float) -> None:
        """Stop an app whose supervisor is gone (SIGKILLed, say), if it still runs."""
        app = read_pidfile(paths.app_pid)
        if app is not None and pid_alive(*app):
            terminate_group(app[0], grace_s)  # the app leads its own process group

    # -- stop

    def stop(self, name: str) -> None:
        """Stop `name`: SIGTERM to the app, SIGKILL after its grace period; returns when it is gone.

        Idempotent: stopping an unknown or stopped instance does nothing. The log is kept.
        """
        check_name(name)
        paths = Paths.of(self.state_dir, name)
        with self._locked(paths):
            self._stop_locked(name, paths)
            self._forget(paths)

    def _stop_locked(self, name: str, paths: Paths) -> None:
        data = read_json(paths.state) or {}
        grace_s = float(data.get("grace_s", 20.0))
        sup = read_pidfile(paths.supervisor_pid)
        if sup is not None and pid_alive(*sup):
            with contextlib.suppress(ProcessLookupError):
                os.kill(sup[0], signal.SIGTERM)
            # The supervisor SIGKILLs the app after grace_s; give it a margin to notice and exit.
            deadline = time.monotonic() + grace_s + 10
            while pid_alive(*sup) and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.02)
            if pid_alive(*sup):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(sup[0], signal.SIGKILL)
        # Whatever the supervisor did, make sure no process of the app survives.
        app = read_pidfile(paths.app_pid)
        if app is not None and pid_alive(*app):
            terminate_group(app[0], grace_s)
        elif app is not None and (members := group_members(app[0])) and app[0] not in members:
            # The app's shell is gone but processes it started linger (a live process whose pid is
            # the group id would mean the pid was reused by someone else: leave that alone).
            terminate_group(app[0], min(grace_s, 5.0))
        child = self._children.pop(name, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)


# --- one-off commands (migrations) ------------------------------------------------------------


def run_command(command: str, env: Mapping[str, str], workdir: Path, timeout_s: float) -> MigrationResult:
    """Run `command` with /bin/sh -c in `workdir`; its exit code and the last lines of its output.

    On timeout its whole process group is killed and the result says so (exit code -9). Raises
    TargetError only if the command cannot be started at all.
    """
    if not workdir.is_dir():
        raise TargetError(f"cannot run `{command}`: working directory {workdir} does not exist")
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=app_environment(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            raise TargetError(f"cannot run `{command}`: {e}") from e
        timed_out = False
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            signal_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
        # Children that outlived the shell keep nothing of ours, but must not keep running; the
        # caller (a migration, a hook) goes on only once they are gone.
        if group_members(proc.pid):
            kill_group(proc.pid)
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - 64 * 1024))
        lines = out.read().decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    if timed_out:
        lines.append(f"[shipyard] `{command}` timed out after {timeout_s:g}s and was killed")
    return MigrationResult(ok=code == 0 and not timed_out, exit_code=code, output_tail="\n".join(lines))
