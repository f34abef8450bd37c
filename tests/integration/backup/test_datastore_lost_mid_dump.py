"""A datastore that dies while it is being read is a component that went away, not a tool's raw
failure: `shipyard backup` ends with one line naming the datastore, its address and what to check,
exit 3 (`DatastoreUnreachable`), no traceback, and the set is recorded failed.

Both servers are real and really die mid-way: PostgreSQL is stopped (immediate: its sessions cut,
as in a crash) while pg_dump copies a table of a few hundred MB, seen copying in
`pg_stat_activity`; Redis is killed (SIGKILL) while it streams its snapshot to `redis-cli --rdb`,
seen as a replica in `CLIENT LIST`, its RDB slowed per key (`rdb-key-save-delay`) so that the
transfer is still going when it dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from shipyard.backup._resp import RespClient
from support.backup_stack import SHIPYARD
from support.redis import redis_server
from support.replication import as_postgres
from support.servers import Postgres, pg_bin, postgres_server

RESTIC_PASSWORD = "correct horse battery staple"
SPEC = """\
name: shop
datastores:
  {name}:
    kind: {kind}
    storage: {{size: 1Gi}}
{more}    local: {{port: {port}}}
backup:
  repository: ./repo
  password: ${{env:RESTIC_PASSWORD}}
  sources:
    datastores: [{name}]
environments:
  test: {{}}
"""


def _backup(base: Path, what: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "RESTIC_PASSWORD": RESTIC_PASSWORD,
        "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
        "SHIPYARD_STATE_DIR": str(base / ".shipyard"),
    }
    return subprocess.Popen(
        [SHIPYARD, "backup", what, "-f", "shipyard.yaml"],
        cwd=base,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _when(seen: Callable[[], bool], backup: subprocess.Popen[str], what: str) -> None:
    """Wait until `seen()`; fail if the backup ended first (it must still be reading)."""
    deadline = time.monotonic() + 120
    while not seen():
        if backup.poll() is not None:
            out, err = backup.communicate()
            pytest.fail(f"the backup ended before {what}: exit {backup.returncode}\n{out}{err}")
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.01)


def _said_unavailable(backup: subprocess.Popen[str], *named: str) -> str:
    out, err = backup.communicate(timeout=120)
    assert backup.returncode == 3, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("backup ", "  "))]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    for part in named:
        assert part in line, line
    return line


def _recorded(base: Path) -> dict[str, object]:
    listed = subprocess.run(
        [SHIPYARD, "backup", "list", "-o", "json", "--database-url", f"sqlite:///{base / 'state.db'}"],
        cwd=base, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (backup_set,) = json.loads(listed.stdout)
    return dict(backup_set)


def _copying(postgres: Postgres) -> Callable[[], bool]:
    def seen() -> bool:
        with psycopg.connect(postgres.url(), autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'pg_dump' AND query LIKE 'COPY public.big %'"
            ).fetchone()
        return bool(row and row[0])

    return seen


def test_postgresql_dying_while_pg_dump_copies_a_table(tmp_path: Path) -> None:
    with postgres_server() as postgres:
        postgres.psql("CREATE DATABASE app")
        postgres.psql(  # ~300 MB of COPY text: pg_dump is still copying when the server dies
            "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad"
            " FROM generate_series(1, 1000000) g",
            database="app",
        )
        more = f"    database: app\n    user: {postgres.user}\n"
        (tmp_path / "shipyard.yaml").write_text(
            SPEC.format(name="db", kind="postgresql", more=more, port=postgres.port)
        )
        backup = _backup(tmp_path, "database")
        try:
            _when(_copying(postgres), backup, "pg_dump copying the table")
            pg_ctl = pg_bin("pg_ctl") or "pg_ctl"
            subprocess.run(
                as_postgres([pg_ctl, "-D", str(postgres.datadir), "-m", "immediate", "-w", "stop"]),
                check=True, capture_output=True,
            )  # fmt: skip
            line = _said_unavailable(
                backup,
                f"PostgreSQL at 127.0.0.1:{postgres.port}/app as {postgres.user} stopped answering"
                " during pg_dump",
                "check that the server runs (datastores.db.local)",
            )
            assert "pg_dump exited with" not in line  # not the tool's raw failure
        finally:
            if backup.poll() is None:
                backup.kill()
                backup.wait()
            postgres.start()  # for the fixture's own stop
    recorded = _recorded(tmp_path)
    assert recorded["state"] == "failed", recorded
    assert "stopped answering during pg_dump" in str(recorded["error"])


def test_redis_dying_while_it_streams_its_snapshot(tmp_path: Path) -> None:
    with redis_server() as redis:
        with RespClient("127.0.0.1", redis.port, password=redis.password) as client:
            for index in range(2000):
                client.call("SET", f"key:{index}", "x" * 100)
            client.call("CONFIG", "SET", "rdb-key-save-delay", "5000")  # 5 ms a key: 10 s for the RDB
            pid = int(client.call("INFO", "server").decode().split("process_id:")[1].split()[0])

        def streaming() -> bool:
            with RespClient("127.0.0.1", redis.port, password=redis.password) as watcher:
                clients = watcher.call("CLIENT", "LIST", "TYPE", "replica").decode()
            return "flags=S" in clients

        (tmp_path / "shipyard.yaml").write_text(
            SPEC.format(name="cache", kind="redis", more="", port=redis.port)
        )
        backup = _backup(tmp_path, "redis")
        try:
            _when(streaming, backup, "Redis streaming its snapshot")
            os.kill(pid, signal.SIGKILL)
            line = _said_unavailable(
                backup,
                f"Redis at 127.0.0.1:{redis.port} stopped answering during redis-cli --rdb",
                "check that Redis runs (datastores.cache.local)",
            )
            assert "exited with" not in line
        finally:
            if backup.poll() is None:
                backup.kill()
                backup.wait()
    recorded = _recorded(tmp_path)
    assert recorded["state"] == "failed", recorded
