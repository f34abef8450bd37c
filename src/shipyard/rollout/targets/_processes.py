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
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import TargetError
from .._model import MigrationResult

SUPERVISE_MODULE = "shipyard.rollout.targets._supervise"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TAIL_LINES = 20
"""Lines of a log or of a command's output quoted in an error or a MigrationResult."""
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


# --- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    ppid: int
    pgrp: int
    start_time: int
    """Clock ticks after boot (field 22 of /proc/<pid>/stat)."""


def proc_stat(pid: int) -> ProcStat | None:
    """The kernel's view of `pid`, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    #  cutime cstime priority nice num_threads itrealvalue starttime ..." - comm may hold spaces.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[19]))
    except (IndexError, ValueError):  # pragma: no cover - a malformed stat file
        return None


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


def start_time(pid: int) -> int:
    """The start time of a running `pid` (0 where /proc is unavailable or the pid is gone)."""
    stat = proc_stat(pid)
    return stat.start_time if stat else 0


def pid_alive(pid: int | None, started: int = 0) -> bool:
    """`pid` runs (not a zombie) and, when `started` is given, is the process that started then."""
    if not pid or pid <= 0:
        return False
    if not _has_proc():  # pragma: no cover - Linux has /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = proc_stat(pid)
    if stat is None or stat.state in ("Z", "X", "x"):
        return False
    return not started or stat.start_time == started


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of process group `pgid`."""
    if not _has_proc():  # pragma: no cover - Linux has /proc
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat and stat.pgrp == pgid and stat.state not in ("Z", "X", "x"):
            members.append(stat.pid)
    return members


def signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_group(pgid: int, grace_s: float, *, poll_s: float = 0.05) -> bool:
    """SIGTERM process group `pgid`, wait up to `grace_s` for it to empty, then SIGKILL the rest.

    Returns True if the group ended within the grace period.
    """
    if not group_members(pgid):
        return True
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(poll_s)
    signal_group(pgid, signal.SIGKILL)
    kill_deadline = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < kill_deadline:
        time.sleep(poll_s)
    return False


# --- files ------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_pidfile(path: Path) -> tuple[int, int] | None:
    """(pid, start time) from a pid file, or None if absent or unreadable."""
    try:
        parts = path.read_text().split()
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (OSError, ValueError, IndexError):
        return None


def write_pidfile(path: Path, pid: int) -> None:
    write_atomic(path, f"{pid} {start_time(pid)}\n")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a file, decoded ("" if it cannot be read)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def tail(path: Path, lines: int = TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` lines of a file ("" if it does not exist)."""
    return "\n".join(read_tail(path, max_bytes).splitlines()[-lines:])


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        # Children that outlived the shell keep nothing of ours, but must not keep running.
        if group_members(proc.pid):
            signal_group(proc.pid, signal.SIGKILL)
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - 64 * 1024))
        lines = out.read().decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    if timed_out:
        lines.append(f"[shipyard] `{command}` timed out after {timeout_s:g}s and was killed")
    return MigrationResult(ok=code == 0 and not timed_out, exit_code=code, output_tail="\n".join(lines))
