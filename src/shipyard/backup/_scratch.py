"""Throwaway PostgreSQL and Redis servers on free loopback ports, for verification and restores.

PostgreSQL refuses to run as root: when shipyard runs as root, the server runs as the `postgres`
system user (Debian's package creates it) in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import BackupError
from ..host import free_port, pid_alive, wait_for_port
from ._tools import as_postgres_user, find_tool, run_tool


@dataclass(frozen=True)
class ScratchPostgres:
    """A PostgreSQL started by shipyard: trust authentication, loopback only."""

    base: Path
    port: int
    user: str

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def stop_command(self) -> list[str]:
        return as_postgres_user([find_tool("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def stop(self) -> None:
        subprocess.run(self.stop_command(), capture_output=True, check=False, timeout=60)


def _initdb(initdb: str, data_dir: Path, user: str) -> None:
    """A fresh cluster in `data_dir`: a copy of a cached, freshly initdb'ed template (initdb takes
    seconds, a copy a fraction of one), or initdb itself when no trustworthy template exists."""
    template = _template(initdb, user)
    if template is not None:
        with contextlib.suppress(BackupError):
            run_tool(as_postgres_user(["cp", "-a", str(template / "data"), str(data_dir)]), what="copy")
            return
        shutil.rmtree(data_dir, ignore_errors=True)
    run_tool(
        as_postgres_user(
            [initdb, "-D", str(data_dir), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"]
        ),
        what="scratch PostgreSQL: initdb",
        timeout_s=120,
    )


def _template(initdb: str, user: str) -> Path | None:
    """The cached template cluster for this initdb and superuser, built once; None if unusable."""
    owner = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    try:
        version = run_tool([initdb, "--version"], what="initdb --version", timeout_s=30).strip()
    except BackupError:
        return None
    key = hashlib.sha256(f"{initdb}\0{version}\0{user}".encode()).hexdigest()[:16]
    template = Path(tempfile.gettempdir()) / f"shipyard-pg-template-{key}"
    if not template.exists():
        building = Path(tempfile.mkdtemp(prefix=f"{template.name}-building-"))
        try:
            if os.geteuid() == 0:
                shutil.chown(building, "postgres", "postgres")
            run_tool(
                as_postgres_user(
                    [
                        initdb,
                        "-D",
                        str(building / "data"),
                        "-U",
                        user,
                        "--auth=trust",
                        "-E",
                        "UTF8",
                        "--no-sync",
                    ]
                ),
                what="scratch PostgreSQL: initdb",
                timeout_s=120,
            )
            os.rename(building, template)  # atomic; loses harmlessly to a concurrent builder
        except (BackupError, OSError):
            pass
        finally:
            shutil.rmtree(building, ignore_errors=True)
    # /tmp is shared: use only a template that we (or postgres) own and no one else can change,
    # since its configuration would run as the postgres user.
    try:
        info = template.stat()
    except OSError:
        return None
    if info.st_uid != owner or info.st_mode & 0o022 or not (template / "data" / "PG_VERSION").exists():
        return None
    return template


# A scratch server's data is thrown away or re-created from a backup: durability buys nothing.
_SCRATCH_OPTIONS = ("fsync=off",)

# For a server that only receives a restore: no WAL for the restore's COPYs (pg_restore -j wraps
# each COPY in a transaction with a TRUNCATE when it created the table, so wal_level=minimal
# skips their WAL), no full-page images, no checkpoint forced by WAL volume in the middle of a
# load. wal_level=minimal rules out archiving and replication, so it is not the default: a
# scratch server may be a PITR test's primary.
BULK_LOAD_OPTIONS = (
    "wal_level=minimal",
    "max_wal_senders=0",
    "full_page_writes=off",
    "synchronous_commit=off",
    "max_wal_size=8GB",
    "checkpoint_timeout=1h",
)


def start_scratch_postgres(
    base: Path | None = None, port: int | None = None, *, bulk_load: bool = False
) -> ScratchPostgres:
    """initdb + start in `base` (a new temp dir when None); the caller stops it.

    bulk_load: tune the server for being restored into (BULK_LOAD_OPTIONS), at the price of
    WAL archiving and replication."""
    initdb, pg_ctl = find_tool("initdb"), find_tool("pg_ctl")
    base = base or Path(tempfile.mkdtemp(prefix="shipyard-scratch-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    sockets = base / "sockets"
    sockets.mkdir(exist_ok=True)
    root = os.geteuid() == 0
    user = "postgres" if root else os.environ.get("USER", "postgres")
    if root:
        for path in (base, sockets):
            shutil.chown(path, "postgres", "postgres")
    port = port or free_port()
    scratch = ScratchPostgres(base=base, port=port, user=user)
    _initdb(initdb, scratch.data_dir, user)
    settings = [*_SCRATCH_OPTIONS, *(BULK_LOAD_OPTIONS if bulk_load else ())]
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockets} " + " ".join(f"-c {s}" for s in settings)
    run_tool(
        as_postgres_user(
            [
                pg_ctl,
                "-D",
                str(scratch.data_dir),
                "-o",
                options,
                "-l",
                str(base / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        what=f"scratch PostgreSQL: start on port {port}",
        timeout_s=90,
    )
    if not wait_for_port(port):
        scratch.stop()
        raise BackupError(f"scratch PostgreSQL did not accept connections on port {port}; see {base / 'log'}")
    return scratch


@contextlib.contextmanager
def scratch_postgres(*, bulk_load: bool = False) -> Iterator[ScratchPostgres]:
    """A scratch PostgreSQL for the duration of the block: always stopped, its directory removed."""
    base = Path(tempfile.mkdtemp(prefix="shipyard-scratch-pg-"))
    try:
        scratch = start_scratch_postgres(base, bulk_load=bulk_load)
        try:
            yield scratch
        finally:
            subprocess.run(
                as_postgres_user(
                    [find_tool("pg_ctl"), "-D", str(scratch.data_dir), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                check=False,
                timeout=60,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class ScratchRedis:
    """A redis-server started by shipyard on an RDB file, persistence off, loopback only."""

    base: Path
    port: int
    pid: int

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def stop_command(self) -> list[str]:
        return [find_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(self.port), "shutdown", "nosave"]

    def stop(self) -> None:
        subprocess.run(self.stop_command(), capture_output=True, check=False, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)  # reap it when it is our child
                if done:
                    return
            except ChildProcessError:  # started by another process: wait for it to vanish
                if not pid_alive(self.pid):
                    return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)


def start_scratch_redis(base: Path, rdb_name: str = "dump.rdb", port: int | None = None) -> ScratchRedis:
    """Start redis-server in `base`, loading `base/rdb_name` if it exists; the caller stops it."""
    server = find_tool("redis-server")
    port = port or free_port()
    argv = [
        server,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(base),
        "--dbfilename", rdb_name,
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(base / "redis.log"),
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    scratch = ScratchRedis(base=base, port=port, pid=process.pid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BackupError(
                f"scratch Redis exited at start (code {process.returncode}); see {base / 'redis.log'}"
            )
        try:
            reply = run_tool(
                [find_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), "info", "server"],
                what="ping",
                timeout_s=5,
            )
        except BackupError:
            reply = ""
        # INFO answers only once the RDB is loaded; the pid proves it is our server that answers,
        # not another one that took the port first.
        if f"process_id:{process.pid}\n" in reply.replace("\r", ""):
            return scratch
        time.sleep(0.05)
    scratch.stop()
    raise BackupError(f"scratch Redis did not answer on port {port}; see {base / 'redis.log'}")


@contextlib.contextmanager
def scratch_redis(rdb: Path) -> Iterator[ScratchRedis]:
    """A scratch Redis loaded from `rdb` for the duration of the block; always stopped and removed."""
    base = Path(tempfile.mkdtemp(prefix="shipyard-scratch-redis-"))
    try:
        shutil.copyfile(rdb, base / "dump.rdb")
        scratch = start_scratch_redis(base)
        try:
            yield scratch
        finally:
            scratch.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
