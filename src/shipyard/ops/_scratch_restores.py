"""Scratch restores left behind: the servers and directories that restores into scratch made for
people to look at (`shipyard restore … --into scratch`, restore jobs), and dropping them.

A restore into scratch leaves its PostgreSQL or Redis server running, or its directory on disk, and
says where in its `backup.restore` audit entry (outcome `ok`). That entry is the record: a restore
is listed while what it made is still there and no `backup.restore.drop` entry names it. Dropping
stops the server (as its stop command would) and removes the directory it made.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ..backup import ScratchPostgres, ScratchRedis
from ..errors import ConflictError, NotFoundError
from ..host import pid_alive
from ..state import AuditEntry, query_audit, record_audit
from ._base import Request, Result
from ._workspace import Workspace

__all__ = [
    "DROP_ACTION",
    "DropScratchRestore",
    "ListScratchRestores",
    "ScratchRestoreDropped",
    "ScratchRestoreView",
    "ScratchRestoresListed",
    "drop_scratch_restore",
    "scratch_restores",
]

RESTORE_ACTION = "backup.restore"
DROP_ACTION = "backup.restore.drop"
SCAN_LIMIT = 2000
"""How many restore entries (newest first) are looked through for scratch copies still there."""

ScratchKind = Literal["postgresql", "redis", "directory"]


class ScratchRestoreView(BaseModel):
    """One scratch copy a restore left: what it holds and where."""

    restore_id: int
    """The id of the restore's audit entry: what a drop names."""
    at: dt.datetime
    actor: str
    set_id: str
    artefact: str
    scratch: ScratchKind
    where: str
    """`127.0.0.1:5433` for a server, the directory for files."""
    path: str
    """The server's data directory, or the restored directory."""
    url: str | None = None


class ListScratchRestores(Request):
    kind: Literal["scratch-restores"] = "scratch-restores"


class ScratchRestoresListed(Result):
    restores: list[ScratchRestoreView]
    """Newest first."""

    def summary(self) -> str:
        return f"{len(self.restores)} scratch restores left"


class DropScratchRestore(Request):
    kind: Literal["scratch-restore-drop"] = "scratch-restore-drop"
    restore_id: int


class ScratchRestoreDropped(Result):
    dropped: ScratchRestoreView

    def summary(self) -> str:
        return (
            f"dropped the scratch {self.dropped.scratch} of {self.dropped.artefact} at {self.dropped.where}"
        )


def _view(entry: AuditEntry) -> ScratchRestoreView | None:
    """The scratch copy a successful restore entry describes; None for a restore over live data."""
    after: dict[str, Any] = entry.after or {}
    location = after.get("location")
    if entry.outcome != "ok" or after.get("into") != "scratch" or not isinstance(location, dict):
        return None
    common = {
        "restore_id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "set_id": str(after.get("set", "")),
        "artefact": str(after.get("artefact", "")),
    }
    host, port = location.get("host"), location.get("port")
    if "data_dir" in location:
        return ScratchRestoreView(
            **common, scratch="postgresql", where=f"{host}:{port}", path=str(location["data_dir"]),
            url=location.get("url"),
        )  # fmt: skip
    if "pid" in location:
        return ScratchRestoreView(
            **common, scratch="redis", where=f"{host}:{port}", path=str(location.get("dir", "")),
            url=f"redis://{host}:{port}",
        )  # fmt: skip
    if "path" in location:
        return ScratchRestoreView(
            **common, scratch="directory", where=str(location["path"]), path=str(location["path"])
        )
    return None


def _location(entry: AuditEntry) -> dict[str, Any]:
    location: dict[str, Any] = (entry.after or {}).get("location") or {}
    return location


def _postgres_of(entry: AuditEntry) -> ScratchPostgres:
    location = _location(entry)
    return ScratchPostgres(
        base=Path(location["data_dir"]), port=int(location["port"]), user=str(location["user"])
    )


def _postgres_pid(server: ScratchPostgres) -> int | None:
    """The postmaster's pid from its pid file, when it runs."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return pid if pid_alive(pid) else None
    return None


def _redis_runs(pid: int, port: int) -> bool:
    """`pid` is still that redis-server (not another process that got its number). Redis rewrites
    its process title (`redis-server 127.0.0.1:6380`): the name and the port are looked for in it."""
    if not pid_alive(pid):
        return False
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"redis-server" in title and str(port).encode() in title


def _still_there(view: ScratchRestoreView, entry: AuditEntry) -> bool:
    location = _location(entry)
    if view.scratch == "postgresql":
        return _postgres_pid(_postgres_of(entry)) is not None
    if view.scratch == "redis":
        return _redis_runs(int(location["pid"]), int(location["port"]))
    return Path(view.path).is_dir()


def _left(ws: Workspace) -> list[tuple[ScratchRestoreView, AuditEntry]]:
    entries = query_audit(ws.sessions, action=RESTORE_ACTION, limit=SCAN_LIMIT)
    dropped = {
        (e.after or {}).get("restore") for e in entries if e.action == DROP_ACTION and e.outcome == "ok"
    }
    left = []
    for entry in entries:
        if entry.action != RESTORE_ACTION or entry.id in dropped:
            continue
        view = _view(entry)
        if view is not None and _still_there(view, entry):
            left.append((view, entry))
    return left


def scratch_restores(ws: Workspace, request: ListScratchRestores) -> ScratchRestoresListed:
    """The scratch copies restores left on this host that are still there, newest first."""
    return ScratchRestoresListed(restores=[view for view, _ in _left(ws)])


def _safe_to_remove(path: Path) -> bool:
    # Never a root or a top-level directory, whatever an entry says.
    return path.is_absolute() and len(path.resolve().parts) >= 3


def drop_scratch_restore(ws: Workspace, request: DropScratchRestore) -> ScratchRestoreDropped:
    """Stop the scratch server a restore left (or remove its directory) and record it; NotFoundError
    when the restore left nothing that is still there."""
    found = {view.restore_id: (view, entry) for view, entry in _left(ws)}
    if request.restore_id not in found:
        raise NotFoundError(
            f"restore {request.restore_id} left no scratch server or directory that is still there"
        )
    view, entry = found[request.restore_id]
    if view.scratch == "postgresql":
        server = _postgres_of(entry)
        server.stop()
        if _postgres_pid(server) is not None:
            raise ConflictError(
                f"the scratch PostgreSQL at {view.where} did not stop; see {server.base / 'log'}"
            )
    elif view.scratch == "redis":
        location = _location(entry)
        ScratchRedis(base=Path(view.path), port=int(location["port"]), pid=int(location["pid"])).stop()
    path = Path(view.path)
    if path.is_dir() and _safe_to_remove(path):
        shutil.rmtree(path, ignore_errors=True)
    record_audit(
        ws.sessions, actor=ws.actor, action=DROP_ACTION, target_kind="backup_set",
        target=f"{view.set_id}/{view.artefact}", after={"restore": view.restore_id, "scratch": view.scratch,
        "where": view.where, "path": view.path}, outcome="ok",
    )  # fmt: skip
    return ScratchRestoreDropped(dropped=view)
