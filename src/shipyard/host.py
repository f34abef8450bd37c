"""This host: its processes, files and ports, and where shipyard keeps its local state.

Each helper is defined here once and used by every package that touches the host (the release
targets, backups, DR, jobs). A pid counts as alive only if /proc/<pid>/stat shows a process that
is not a zombie and, when a start time was recorded, started then (a recycled pid is not it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_DIR_ENV = "SHIPYARD_STATE_DIR"
TAIL_LINES = 20
"""Lines of a log or of a command's output quoted in an error or a result."""


def state_dir() -> Path:
    """Where shipyard keeps local state: `$SHIPYARD_STATE_DIR`, else `.shipyard` (relative to the cwd)."""
    return Path(os.environ.get(STATE_DIR_ENV) or ".shipyard")


# --- processes ---------------------------------------------------------------------------------


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
    kill_group(pgid, poll_s=poll_s)
    return False


def kill_group(pgid: int, *, wait_s: float = 5.0, poll_s: float = 0.05) -> bool:
    """SIGKILL process group `pgid` and wait up to `wait_s` until none of it runs.

    A kill is delivered asynchronously: right after killpg() returns, the group's processes can
    still be running on a busy machine. Returns True if the group is gone.
    """
    signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on `host:port` within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return True
        time.sleep(0.05)
    return False
