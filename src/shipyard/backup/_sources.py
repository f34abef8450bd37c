"""Reading the sources: a consistent PostgreSQL dump, a Redis RDB snapshot, file trees, and the
facts about each that a verification later checks (row counts, key counts, checksums).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..errors import BackupError, DatastoreUnreachable
from ._connect import PostgresSource, RedisSource
from ._tools import find_tool, run_tool

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TreeDigest:
    """A directory tree as one hash: the SHA-256 of its sorted listing of (path, kind, size, sha256)."""

    sha256: str
    files: int
    bytes: int

    def as_data(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "files": self.files, "bytes": self.bytes}


def tree_digest(root: Path) -> TreeDigest:
    """The digest of a directory (or of a single file: its own SHA-256). Ownership and times are
    left out: a restore by another user, later, is still the same content."""
    if root.is_file():
        return TreeDigest(file_sha256(root), 1, root.stat().st_size)
    if not root.is_dir():
        raise BackupError(f"{root} is not a directory; check backup.sources.volumes")
    lines: list[str] = []
    regular: list[tuple[str, int, Path]] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(directory)
        for name in sorted([*dirnames, *filenames]):
            path = here / name
            relative = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                lines.append(f"L {relative} {os.readlink(path)}")
            elif stat.S_ISDIR(info.st_mode):
                lines.append(f"D {relative}")
            elif stat.S_ISREG(info.st_mode):
                regular.append((relative, info.st_size, path))
    # hashlib lets go of the GIL while it hashes, so files hash on every core at once.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sums = pool.map(file_sha256, [path for _, _, path in regular])
        lines += [
            f"F {relative} {size} {digest}" for (relative, size, _), digest in zip(regular, sums, strict=True)
        ]
    listing = "\n".join(sorted(lines)).encode()
    return TreeDigest(hashlib.sha256(listing).hexdigest(), len(regular), sum(size for _, size, _ in regular))


# --- PostgreSQL ------------------------------------------------------------------------------

_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""


def list_tables(connection: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    return [(str(schema), str(name)) for schema, name in connection.execute(_TABLES).fetchall()]


def row_counts(connection: psycopg.Connection[Any]) -> dict[str, int]:
    """Exact `count(*)` of every user table, keyed `schema.table`."""
    counts: dict[str, int] = {}
    for schema, table in list_tables(connection):
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        row = connection.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


_POSTGRES_DOWN = (
    "connection refused",
    "failed to resolve host",
    "could not translate host name",
    "timeout expired",
    "connection timed out",
    "no route to host",
    "network is unreachable",
    "the database system is shutting down",  # a server going away: no session is taken now
    "the database system is starting up",
    "no such file or directory",  # a UNIX socket nobody listens on
)
"""What libpq says when no server answers at the address (a wrong password is an answer)."""


def connect_postgres(source: PostgresSource, *, database: str | None = None) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(**source.conninfo(database))  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
        # libpq's first line ends with why ("… port 5432 failed: Connection refused"), then a hint.
        reason = text.splitlines()[0].rpartition(" failed: ")[2] if text else type(exc).__name__
        down = any(hint in text.lower() for hint in _POSTGRES_DOWN)
        raise (DatastoreUnreachable if down else BackupError)(
            f"{source.artefact}: cannot connect to PostgreSQL at {source.where()}: {reason};"
            f" check datastores.{source.name}.local (host, port) and that the server runs"
        ) from None


@dataclass(frozen=True)
class PostgresSnapshot:
    """An exported snapshot held open while pg_dump reads it, and what it saw."""

    snapshot_id: str
    lsn: str
    snapshot_time: dt.datetime
    server_version: str
    row_counts: dict[str, int]


@contextlib.contextmanager
def postgres_snapshot(source: PostgresSource) -> Iterator[PostgresSnapshot]:
    """Open a REPEATABLE READ transaction and export its snapshot: pg_dump then dumps exactly
    what the row counts, the LSN and the time recorded here describe."""
    connection = connect_postgres(source)
    # The transaction stays open while the caller dumps and ends when the connection closes (read
    # only: nothing to commit). A `transaction()` block would roll back on the way out, and log
    # that rollback's failure (a warning on stderr) when the server cut the connection mid-dump.
    try:
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        exported = connection.execute("SELECT pg_export_snapshot()").fetchone()
        facts = connection.execute(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
            " ELSE pg_current_wal_lsn() END)::text, now(), current_setting('server_version')"
        ).fetchone()
        assert exported is not None
        assert facts is not None
        snapshot = PostgresSnapshot(
            snapshot_id=str(exported[0]),
            lsn=str(facts[0]),
            snapshot_time=facts[1],
            server_version=str(facts[2]),
            row_counts=row_counts(connection),
        )
    except psycopg.Error as exc:
        lost = connection.broken  # (before close(), after which no connection is "broken")
        connection.close()
        reason = str(exc).strip().splitlines()[0]
        if lost:
            raise DatastoreUnreachable(
                f"{source.artefact}: PostgreSQL at {source.where()} stopped answering ({reason});"
                f" check that the server runs (datastores.{source.name}.local), then take the backup again"
            ) from None
        raise BackupError(f"{source.artefact}: {reason}") from None
    try:
        yield snapshot
    finally:
        connection.close()


def dump_postgres(source: PostgresSource, snapshot: PostgresSnapshot, out_dir: Path, jobs: int) -> None:
    """pg_dump the database, as of `snapshot`, to `out_dir` in directory format, uncompressed
    (restic compresses and deduplicates, which compressed dumps would defeat)."""
    pg_dump = find_tool("pg_dump")
    argv = [
        pg_dump, "--format=directory", f"--jobs={jobs}", "--compress=0", f"--snapshot={snapshot.snapshot_id}",
        "--no-password", "-h", source.host, "-p", str(source.port), "-U", source.user,
        "-d", source.database, "-f", str(out_dir),
    ]  # fmt: skip
    try:
        run_tool(argv, what=f"{source.artefact}: pg_dump", env=source.env)
    except BackupError as failed:
        raise _lost_postgres(source, "pg_dump", failed) from None


_POSTGRES_LOST = (
    "server closed the connection unexpectedly",
    # libpq's message goes on over two more lines, and pg_dump's parallel workers may print after
    # it: the tool's last lines, which is all an error keeps, may hold only these
    "this probably means the server terminated abnormally",
    "before or while processing the request",
    "terminating connection due to administrator command",
    "terminating connection due to immediate shutdown",
    "terminating connection because of crash of another server process",
    "the database system is shutting down",
    "could not receive data from server",
    "no connection to the server",
    "connection to server was lost",
)
"""What libpq says when the server goes away under a session (a crash, a stop, a lost network)."""


def _lost_postgres(source: PostgresSource, tool: str, failed: BackupError) -> BackupError:
    """`failed` (a client tool's failure mid-way) as DatastoreUnreachable, naming the server and
    what to check, when the server went away under it: libpq says its connection was lost, or no
    server answers at the address now. Any other failure (a permission, a full disk) as it was."""
    said = failed.message.lower()
    lost = next((words for words in _POSTGRES_LOST if words in said), None)
    if lost is None:
        try:
            connect_postgres(source).close()
        except DatastoreUnreachable as down:
            lost = down.message.rpartition(f"{source.where()}: ")[2].partition(";")[0] or "no answer"
        except BackupError:
            return failed  # it answers (and refuses us): not a server that went away
        else:
            return failed
    return DatastoreUnreachable(
        f"{source.artefact}: PostgreSQL at {source.where()} stopped answering during {tool} ({lost});"
        f" check that the server runs (datastores.{source.name}.local), then take the backup again"
    )


def restore_postgres(
    dump_dir: Path,
    *,
    host: str,
    port: int,
    user: str,
    database: str,
    jobs: int,
    env: dict[str, str],
    what: str,
    clean: bool = False,
    keep_owners: bool = False,
) -> None:
    """pg_restore a directory-format dump into `database` (which must exist).

    Its sessions get RESTORE_SESSION_OPTIONS: session settings only, so a live server's own
    configuration is left alone."""
    argv = [
        find_tool("pg_restore"), f"--jobs={jobs}", "--exit-on-error", "--no-password",
        "-h", host, "-p", str(port), "-U", user, "-d", database,
    ]  # fmt: skip
    if not keep_owners:
        argv += ["--no-owner", "--no-privileges"]
    if clean:
        argv += ["--clean", "--if-exists"]
    # Ours first: an operator's own PGOPTIONS (later on the line) still win.
    ours = [f"-c {o}" for o in RESTORE_SESSION_OPTIONS]
    options = " ".join([*ours, *filter(None, [os.environ.get("PGOPTIONS"), env.get("PGOPTIONS")])])
    run_tool([*argv, str(dump_dir)], what=what, env={**env, "PGOPTIONS": options})


# Index and primary-key builds sort in memory instead of in temporary files (the default 64 MB
# spills for a table of a few million rows). Nothing that weakens durability: this also runs
# against the live database.
RESTORE_SESSION_OPTIONS = ("maintenance_work_mem=512MB",)


# --- Redis -----------------------------------------------------------------------------------


def redis_cli(source: RedisSource, *args: str, what: str) -> str:
    argv = [find_tool("redis-cli"), "--no-auth-warning", "-h", source.host, "-p", str(source.port), *args]
    try:
        out = run_tool(argv, what=what, env=source.env, timeout_s=120)
    except BackupError as exc:
        said = exc.message
    else:
        if not out.startswith(("ERR", "NOAUTH", "WRONGPASS", "Could not connect")):
            return out
        said = f"{what}: {out.strip().splitlines()[0]}"
    if "Could not connect to Redis" in said:  # redis-cli's words when nothing answers there
        raise DatastoreUnreachable(
            f"{what}: cannot connect to Redis at {source.where()}: {said.rpartition(': ')[2]};"
            f" check datastores.{source.name}.local (host, port) and that Redis runs"
        )
    raise BackupError(said)


def redis_info(source: RedisSource, section: str) -> dict[str, str]:
    text = redis_cli(source, "info", section, what=f"{source.artefact}: INFO {section}")
    info: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and not key.startswith("#"):
            info[key] = value
    return info


def redis_dbsize(source: RedisSource) -> int:
    text = redis_cli(source, "dbsize", what=f"{source.artefact}: DBSIZE").strip()
    try:
        return int(text.split()[-1])
    except (ValueError, IndexError):
        raise BackupError(f"{source.artefact}: unexpected DBSIZE reply {text[:80]!r}") from None


@dataclass(frozen=True)
class RedisSnapshot:
    dbsize_before: int
    dbsize_after: int
    master_repl_offset: int
    redis_version: str


def snapshot_redis(source: RedisSource, rdb_file: Path) -> RedisSnapshot:
    """Fetch a consistent RDB snapshot over the replication protocol (no access to the server's
    disk needed), with the key count around it and the replication offset it corresponds to."""
    try:
        before = redis_dbsize(source)
    except DatastoreUnreachable:
        raise  # it says what to check
    except BackupError as exc:
        raise BackupError(
            f"{exc.message}; check datastores.{source.name}.local (host, port) and that Redis runs"
        ) from None
    replication = redis_info(source, "replication")
    server = redis_info(source, "server")
    try:
        redis_cli(source, "--rdb", str(rdb_file), what=f"{source.artefact}: redis-cli --rdb")
    except DatastoreUnreachable:
        raise  # it says what to check
    except BackupError as failed:
        raise _lost_redis(source, failed) from None
    if not rdb_file.exists() or rdb_file.stat().st_size == 0:
        raise BackupError(f"{source.artefact}: redis-cli --rdb wrote no snapshot")
    after = redis_dbsize(source)
    return RedisSnapshot(
        dbsize_before=before,
        dbsize_after=after,
        master_repl_offset=int(replication.get("master_repl_offset", "0") or 0),
        redis_version=server.get("redis_version", "unknown"),
    )


def _lost_redis(source: RedisSource, failed: BackupError) -> BackupError:
    """`redis-cli --rdb`'s failure mid-transfer as DatastoreUnreachable when Redis no longer
    answers (it went away under the transfer); any other failure as it was."""
    try:
        redis_dbsize(source)
    except DatastoreUnreachable as down:
        reason = down.message.rpartition(": ")[2].partition(";")[0] or "no answer"
        return DatastoreUnreachable(
            f"{source.artefact}: Redis at {source.where()} stopped answering during redis-cli --rdb"
            f" ({reason}); check that Redis runs (datastores.{source.name}.local), then take the"
            " backup again"
        )
    except BackupError:
        pass
    return failed
