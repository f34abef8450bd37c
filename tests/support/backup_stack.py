"""A stack to back up, for integration tests: a spec naming a live PostgreSQL, a live Redis and a
directory of files, plus a restic repository and a state store, all in one temp dir.

Also the fingerprints tests compare before and after a restore: per-table checksums, every Redis
key's DUMP, and a file tree's digest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.backup import start_scratch_postgres
from shipyard.backup._resp import RespClient
from support.redis import RedisServer, redis_server
from support.servers import Postgres

RESTIC_PASSWORD_ENV = "SHIPYARD_TEST_RESTIC_PASSWORD"
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))

SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    database: app
    user: {pg_user}
    local: {{port: {pg_port}}}
  cache:
    kind: redis
    local: {{port: {redis_port}}}
backup:
  repository: ./repo
  password: ${{env:{password_env}}}
  sources:
    datastores: [db, cache]
    volumes: [{files}]
  checks:
    - SELECT count(*) FROM items WHERE price > 0
    - SELECT o.id FROM orders o JOIN items i ON i.id = o.item_id LIMIT 5
{extra}environments:
  test: {{}}
"""


@dataclass
class BackupStack:
    base: Path
    postgres: Postgres
    redis: RedisServer
    files: Path
    password: str = "correct horse battery staple"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> Path:
        return self.base / "shipyard.yaml"

    @property
    def state_url(self) -> str:
        return f"sqlite:///{self.base / 'state.db'}"

    def write_spec(self, *, pg_port: int | None = None, extra: str = "", name: str = "shipyard.yaml") -> Path:
        path = self.base / name
        path.write_text(
            SPEC.format(
                pg_user=self.postgres.user,
                pg_port=pg_port or self.postgres.port,
                redis_port=self.redis.port,
                password_env=RESTIC_PASSWORD_ENV,
                files=self.files,
                extra=extra,
            )
        )
        return path

    def cli_env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            RESTIC_PASSWORD_ENV: self.password,
            "SHIPYARD_DATABASE_URL": self.state_url,
            "SHIPYARD_STATE_DIR": str(self.base / ".shipyard"),
            "SHIPYARD_ACTOR": "tester",
            **extra,
        }

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real `shipyard` CLI in a subprocess."""
        result = subprocess.run(
            [SHIPYARD, *args],
            check=False,
            env=env or self.cli_env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"shipyard {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        return result


def seed(stack: BackupStack) -> None:
    """Small but varied data: two related tables, Redis keys of several types, nested files."""
    pg = stack.postgres
    pg.psql("CREATE DATABASE app")
    pg.psql(
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric, tags jsonb);"
        "INSERT INTO items (name, price, tags) SELECT 'item ' || g, g * 1.5, jsonb_build_object('n', g)"
        " FROM generate_series(1, 2000) g;"
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item_id int REFERENCES items(id), at timestamptz);"
        "INSERT INTO orders (item_id, at)"
        " SELECT 1 + g % 2000, '2026-01-01'::timestamptz + g * interval '1 min'"
        " FROM generate_series(1, 3000) g;"
        "CREATE SCHEMA audit; CREATE TABLE audit.events (id int, what text);"
        "INSERT INTO audit.events VALUES (1, 'created'), (2, 'it''s quoted');",
        database="app",
    )
    with RespClient("127.0.0.1", stack.redis.port, password=stack.redis.password) as redis:
        for index in range(100):
            redis.call("SET", f"session:{index}", f"user-{index}")
        redis.call("HSET", "cart:7", "apples", 3, "pears", 4)
        redis.call("RPUSH", "queue", "a", "b", "c")
        redis.call("SADD", "tags", "x", "y")
        redis.call("SET", "with-ttl", "soon", "EX", 3600)
        redis.call("SET", b"bin\x00key", b"\xff\xfe")
    (stack.files / "uploads" / "2026").mkdir(parents=True)
    (stack.files / "uploads" / "2026" / "a.txt").write_text("alpha\n")
    (stack.files / "uploads" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (stack.files / "empty-dir").mkdir()
    (stack.files / "link").symlink_to("uploads/b.bin")


def table_checksums(pg: Postgres, database: str = "app") -> dict[str, str]:
    """md5 of every table's rows in a stable order, keyed `schema.table`."""
    tables = pg.psql(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        database=database,
    ).split()
    return {
        table: pg.psql(
            f"SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {table} t", database=database
        )
        for table in tables
    }


def redis_keys(port: int, password: str | None = None) -> dict[bytes, tuple[str, object, bool]]:
    """Every key: its type, its value in a canonical form (members sorted), and whether it expires.

    Not DUMP: a set's or hash's serialised order depends on the server's random hash seed."""
    with RespClient("127.0.0.1", port, password=password) as redis:
        keys: dict[bytes, tuple[str, object, bool]] = {}
        for key in redis.scan_keys():
            kind = redis.call("TYPE", key)
            value: object
            if kind == "string":
                value = redis.call("GET", key)
            elif kind == "hash":
                flat = redis.call("HGETALL", key)
                value = sorted(zip(flat[::2], flat[1::2], strict=True))
            elif kind == "list":
                value = redis.call("LRANGE", key, 0, -1)
            elif kind == "set":
                value = sorted(redis.call("SMEMBERS", key))
            else:
                value = redis.call("DUMP", key)
            keys[key] = (kind, value, redis.call("TTL", key) > 0)
        return keys


@contextlib.contextmanager
def backup_stack() -> Iterator[BackupStack]:
    """A live PostgreSQL and Redis seeded with data, a files directory, and a spec naming them."""
    base = Path(tempfile.mkdtemp(prefix="shipyard-backup-stack-"))
    # The product's scratch server (a copy of a cached initdb template: fast), not a second copy
    # of the same code: it runs as `postgres` under root like tests/support/servers.py's.
    server = start_scratch_postgres()
    try:
        with redis_server() as redis:
            pg = Postgres(port=server.port, datadir=server.data_dir, user=server.user)
            files = base / "files"
            files.mkdir()
            stack = BackupStack(base=base, postgres=pg, redis=redis, files=files)
            stack.write_spec()
            seed(stack)
            yield stack
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
