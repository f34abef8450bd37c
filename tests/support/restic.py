"""Helpers for tests against the real `restic` binary: repositories in temp dirs, file trees
with known contents, checksums, and the means to damage a repository on purpose."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

from shipyard.backup._restic import ResticRepository

PASSWORD = "correct horse battery staple"


def restic_binary() -> str:
    found = shutil.which("restic")
    if found is None:
        raise RuntimeError("restic is not installed: `apt-get install restic` (or run `make install`)")
    return found


def local_repository(base: Path, *, password: str = PASSWORD, name: str = "repo") -> ResticRepository:
    """A repository object for `<base>/<name>` (not initialised), its cache under `<base>`."""
    restic_binary()
    return ResticRepository(str(base / name), password, cache_dir=base / "restic-cache")


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Create `files` (relative path -> contents) under `root`."""
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes (compression would hide the sizes tests reason about)."""
    return random.Random(seed).randbytes(size)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under `root` (empty dirs are listed too)."""
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file():
            digest[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir() and not any(path.iterdir()):
            digest[relative] = "<empty dir>"
    return digest


def pack_files(repository_dir: Path) -> list[Path]:
    """The pack files of a local repository, largest first (data packs hold file contents)."""
    return sorted(
        (repository_dir / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else -1
    )[::-1]


def flip_byte(path: Path, offset: int | None = None) -> int:
    """Invert one byte of `path` (restic makes packs read-only); returns the offset flipped."""
    path.chmod(0o600)
    data = bytearray(path.read_bytes())
    where = len(data) // 2 if offset is None else offset
    data[where] ^= 0xFF
    path.write_bytes(bytes(data))
    return where


def restic_children(parent: int | None = None) -> list[int]:
    """PIDs of `restic` processes started by `parent` (this process by default): its children,
    and the children of its children (shipyard runs each restic under a guard process)."""
    parent = os.getpid() if parent is None else parent
    processes: dict[int, tuple[str, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
        comm = text[text.index("(") + 1 : text.rindex(")")]
        processes[int(stat.parent.name)] = (comm, int(text[text.rindex(")") + 2 :].split()[1]))
    return [
        pid
        for pid, (comm, ppid) in processes.items()
        if comm == "restic" and parent in (ppid, processes.get(ppid, ("", -1))[1])
    ]


def kill_restic_child(*, when: Callable[[], bool] = lambda: True, timeout: float = 30.0) -> int:
    """Wait for a restic child of this process and for `when()` to hold, SIGKILL that child by
    pid, and return the pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = restic_children()
        if children and when():
            os.kill(children[0], signal.SIGKILL)
            return children[0]
        time.sleep(0.02)
    raise TimeoutError("no restic child process appeared in time")


def has_finished_lock(repository_dir: Path) -> bool:
    """Whether a local repository holds a completely written lock file. restic writes files in
    place and makes them read-only when done; a half-written lock is ignored by restic."""
    return bool(finished_locks(repository_dir))


def finished_locks(repository_dir: Path) -> list[Path]:
    """The completely written lock files of a local repository (see `has_finished_lock`)."""
    locks = repository_dir / "locks"
    return [p for p in locks.iterdir() if p.stat().st_mode & 0o222 == 0] if locks.is_dir() else []


def working_on(repository: Path) -> list[str]:
    """The live processes (a zombie holds nothing) working on a repository through restic, as
    "pid (name)": restic, and the guard shipyard runs it under, carry it in RESTIC_REPOSITORY."""
    wanted = f"RESTIC_REPOSITORY={repository}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if stat[stat.rfind(")") + 2] != "Z" and wanted in environ.split(b"\0"):
            found.append(f"{entry.name} {stat[stat.find('(') : stat.rfind(')') + 1]}")
    return found
