"""Point-in-time recovery through the real CLI: `backup pitr init`, `backup incremental`,
`backup pitr list`, `restore database --time/--lsn`, `backup prune`, against a real PostgreSQL 15
archiving into a real pgBackRest repository (issue 5).

One primary serves the module; the tests run in file order (prune, last, expires the first full).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from shipyard.backup import ResticRepository, ScratchPostgres, start_scratch_postgres
from shipyard.state import AuditRow, open_engine, session_factory
from support.cli import CliResult, run_cli
from support.servers import Postgres, free_port, pg_bin

SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    user: {user}
    local: {{port: {port}, data_dir: {data_dir}}}
backup:
  repository: ./restic
  password: ${{env:PITR_CLI_RESTIC_PASSWORD}}
  retention: {{keep_last: {keep_last}, daily: 0, weekly: 0, monthly: 0}}
  pitr: {{repository: ./pgbackrest, stanza: shop, archive_timeout: 1}}
environments:
  test: {{}}
"""


@dataclass
class Rig:
    base: Path
    server: ScratchPostgres
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str] | None = None

    @property
    def pg(self) -> Postgres:
        return Postgres(port=self.server.port, datadir=self.server.data_dir, user=self.server.user)

    @property
    def config(self) -> Path:
        return self.base / "state" / "pgbackrest" / "shop-test" / "pgbackrest.conf"

    def write_spec(self, *, keep_last: int) -> None:
        server = self.server
        spec = SPEC.format(user=server.user, port=server.port, data_dir=server.data_dir, keep_last=keep_last)
        (self.base / "shipyard.yaml").write_text(spec)

    def shipyard(self, *args: str) -> CliResult:
        """`shipyard ARGS` in this process (the real entry point, errors turned into exit codes)."""
        assert self.capsys is not None
        return run_cli(self.capsys, *args)

    def audit(self) -> list[tuple[str, str, str]]:
        sessions = session_factory(open_engine(f"sqlite:///{self.base / 'state.db'}"))
        with sessions() as session:
            rows = session.scalars(select(AuditRow).where(AuditRow.action.like("backup.pitr.%")))
            return [(r.action, r.outcome, r.actor) for r in rows]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    base = Path(tempfile.mkdtemp(prefix="shipyard-pitr-cli-"))
    if os.geteuid() == 0:  # pgBackRest and archive_command run as postgres: it must reach the state dir
        shutil.chown(base, "postgres", "postgres")
    server = start_scratch_postgres()
    patch = pytest.MonkeyPatch()
    try:
        rig = Rig(base, server, patch)
        rig.write_spec(keep_last=2)
        password = "pitr cli test password"
        ResticRepository(str(base / "restic"), password, cache_dir=base / "cache").init()
        for key, value in {
            "PITR_CLI_RESTIC_PASSWORD": password,
            "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
            "SHIPYARD_STATE_DIR": str(base / "state"),
            "SHIPYARD_ACTOR": "tester",
            "SHIPYARD_SPEC": str(base / "shipyard.yaml"),
            "XDG_CACHE_HOME": str(base / "cache"),
        }.items():
            patch.setenv(key, value)
        patch.chdir(base)
        rig.pg.psql("CREATE TABLE marks (seq int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        yield rig
    finally:
        patch.undo()
        for pid_file in base.glob("*/data/postmaster.pid"):  # a restored copy a failed test left running
            stop = [pg_ctl(), "-D", str(pid_file.parent), "-m", "immediate", "-w", "stop"]
            subprocess.run(as_postgres_user(stop), check=False, capture_output=True, timeout=60)
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cli(rig: Rig, capsys: pytest.CaptureFixture[str]) -> Rig:
    rig.capsys = capsys
    return rig


def pg_ctl() -> str:
    return pg_bin("pg_ctl") or "pg_ctl"


def as_postgres_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def insert(pg: Postgres, seqs: range) -> None:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        for seq in seqs:
            conn.execute("INSERT INTO marks (seq) VALUES (%s)", (seq,))


def server_now(pg: Postgres) -> datetime:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def archive_current_wal(pg: Postgres, timeout: float = 15) -> None:
    """Close the current WAL segment and wait until PostgreSQL reports it archived."""
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        while True:
            done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            if done is not None and done[0] is not None and str(done[0]) >= str(row[0]):
                return
            assert time.monotonic() < deadline, f"WAL {row[0]} not archived in {timeout}s"
            time.sleep(0.05)


def archive_mode(pg: Postgres) -> str:
    return pg.psql("SHOW archive_mode")


def test_init_dry_run_changes_nothing_then_asks_for_a_restart_then_restarts(cli: Rig) -> None:
    dry = cli.shipyard("backup", "pitr", "init", "--dry-run", "-o", "json")
    assert dry.code == 0, dry.err
    plan = dry.json()
    assert plan["config_path"] == str(cli.config)
    assert f"--config={cli.config}" in plan["postgresql_settings"]["archive_command"]
    assert "[shop]" in plan["config"]
    assert not cli.config.exists()
    assert archive_mode(cli.pg) == "off"
    assert cli.audit() == []

    pending = cli.shipyard("backup", "pitr", "init")
    assert pending.code == 1
    assert "must restart" in pending.err
    assert "--restart" in pending.err
    assert cli.config.exists()
    assert archive_mode(cli.pg) == "off"  # ALTER SYSTEM done, restart still needed

    ready = cli.shipyard("backup", "pitr", "init", "--restart", "-o", "json")
    assert ready.code == 0, ready.err
    result = ready.json()
    assert result["restarted"]
    assert result["checked"]
    assert not result["restart_needed"]
    assert archive_mode(cli.pg) == "on"
    assert str(cli.config) in cli.pg.psql("SHOW archive_command")
    assert (
        cli.audit()
        == [
            ("backup.pitr.init", "started", "cli:tester"),
            ("backup.pitr.init", "ok", "cli:tester"),
        ]
        * 2
    )


def test_incremental_without_a_full_takes_a_full_and_says_so(cli: Rig) -> None:
    before = len(cli.audit())
    dry = cli.shipyard("backup", "incremental", "--dry-run")
    assert dry.code == 0, dry.err
    assert "would take a full instead of incremental" in dry.out
    assert len(cli.audit()) == before

    taken = cli.shipyard("backup", "incremental")
    assert taken.code == 0, taken.err
    assert "no full backup existed" in taken.out
    assert "full backup" in taken.out
    listed = cli.shipyard("backup", "pitr", "list", "-o", "json").json()
    assert [b["kind"] for b in listed["backups"]] == ["full"]
    assert listed["backups"][0]["label"] in taken.out
    assert cli.audit()[before:] == [("backup.pitr.incr", "started", "cli:tester"),
                                    ("backup.pitr.incr", "ok", "cli:tester")]  # fmt: skip

    again = cli.shipyard("backup", "incremental", "-o", "json")
    assert again.code == 0, again.err
    assert again.json()["kind"] == "incr"
    assert not again.json()["promoted_to_full"]
    assert again.json()["prior"] == listed["backups"][0]["label"]


def test_restore_to_a_time_has_exactly_the_rows_before_it(cli: Rig) -> None:
    insert(cli.pg, range(1, 6))
    time.sleep(0.2)
    target = server_now(cli.pg)
    time.sleep(0.2)
    insert(cli.pg, range(6, 11))
    archive_current_wal(cli.pg)

    listed = cli.shipyard("backup", "pitr", "list", "-o", "json").json()
    window = listed["window"]
    assert window["from"] == listed["backups"][0]["stopped_at"]
    assert datetime.fromisoformat(window["from"]) < target < datetime.fromisoformat(window["to"])
    assert [b["kind"] for b in listed["backups"]] == ["full", "incr"]
    assert all(b["start_lsn"] and b["stop_lsn"] for b in listed["backups"])
    table = cli.shipyard("backup", "pitr", "list")
    assert f"restorable from {window['from']} to {window['to']}" in table.out
    assert all(b["label"] in table.out for b in listed["backups"])

    scratch = cli.base / "restored"
    dry = cli.shipyard("restore", "database", "--time", target.isoformat(), "--target-dir", str(scratch),
                       "--dry-run", "-o", "json")  # fmt: skip
    assert dry.code == 0, dry.err
    assert "--type=time" in dry.json()["pgbackrest_arguments"]
    assert not scratch.exists()

    port = free_port()
    restored = cli.shipyard("restore", "database", "--time", target.isoformat(), "--into", "scratch",
                            "--target-dir", str(scratch), "--port", str(port), "-o", "json")  # fmt: skip
    assert restored.code == 0, restored.err
    result = restored.json()
    try:
        assert result["port"] == port
        copy = Postgres(port=port, datadir=scratch / "data", user=cli.pg.user)
        assert copy.psql("SELECT array_agg(seq ORDER BY seq) FROM marks") == "{1,2,3,4,5}"
        assert copy.psql("SHOW archive_mode") == "off"  # never pushes into the primary's archive
    finally:
        subprocess.run(result["stop_command"], check=False, capture_output=True, timeout=60)
    assert not (scratch / "data" / "postmaster.pid").exists()  # the printed stop command works
    assert cli.audit()[-2:] == [("backup.pitr.restore", "started", "cli:tester"),
                                ("backup.pitr.restore", "ok", "cli:tester")]  # fmt: skip

    latest = cli.shipyard("restore", "database", "--latest", "--into", "scratch",
                          "--target-dir", str(cli.base / "latest"), "-o", "json")  # fmt: skip
    assert latest.code == 0, latest.err
    newest = latest.json()
    try:
        copy = Postgres(port=newest["port"], datadir=cli.base / "latest" / "data", user=cli.pg.user)
        assert copy.psql("SELECT array_agg(seq ORDER BY seq) FROM marks") == "{1,2,3,4,5,6,7,8,9,10}"
    finally:
        subprocess.run(newest["stop_command"], check=False, capture_output=True, timeout=60)


def test_bad_restore_targets_are_clear_errors_that_create_nothing(cli: Rig) -> None:
    listing = cli.shipyard("backup", "pitr", "list", "-o", "json")
    assert listing.code == 0, listing.err
    listed = listing.json()
    oldest = listed["window"]["from"]
    before = len(cli.audit())
    scratch = cli.base / "never"
    early = (datetime.fromisoformat(oldest) - timedelta(hours=1)).isoformat()
    too_early = cli.shipyard("restore", "database", "--time", early, "--target-dir", str(scratch))
    assert too_early.code == 2
    assert f"the oldest restorable time is {oldest}" in too_early.err
    for args, message in (
        (("--time", early, "--into", "live", "--yes"), "scratch only"),
        (("--time", "2026-12-01 02:00:00"), "no time zone"),
        (("--time", "yesterday"), "is not a time"),
        (("--lsn", "nonsense"), "is not an LSN"),
        (("--latest", "--lsn", "0/1"), "without --time/--lsn"),
        (("--lsn", "0/1", "--target-dir", str(scratch)), "oldest restorable LSN"),
    ):
        failed = cli.shipyard("restore", "database", *args)
        assert failed.code == 2, (args, failed.err)
        assert message in failed.err
        assert "Traceback" not in failed.err
    assert not scratch.exists()
    assert len(cli.audit()) == before


def test_prune_expires_old_pgbackrest_backups(cli: Rig) -> None:
    """Last: it expires the first full backup the restores above used.

    pgBackRest expires by itself after each backup with the retention `pitr init` wrote (2 fulls
    here); `backup prune` applies the spec's current one (now 1), which is what an operator does
    after lowering it."""
    first = [b["label"] for b in cli.shipyard("backup", "pitr", "list", "-o", "json").json()["backups"]]
    newest_full = cli.shipyard("backup", "pitr", "full", "-o", "json")
    assert newest_full.code == 0, newest_full.err
    label = newest_full.json()["label"]

    listed = cli.shipyard("backup", "pitr", "list", "-o", "json").json()
    assert [b["label"] for b in listed["backups"]] == [*first, label]  # within 2 fulls: all kept
    cli.write_spec(keep_last=1)
    dry = cli.shipyard("backup", "prune", "--dry-run", "-o", "json")
    assert dry.code == 0, dry.err
    assert dry.json()["pitr"]["retention_full"] == 1
    assert dry.json()["pitr"]["expire"] == sorted(first)
    listed = cli.shipyard("backup", "pitr", "list", "-o", "json").json()
    assert [b["label"] for b in listed["backups"]] == [*first, label]  # the dry run changed nothing

    pruned = cli.shipyard("backup", "prune", "-o", "json")
    assert pruned.code == 0, pruned.err
    assert pruned.json()["pitr"]["expire"] == sorted(first)
    listed = cli.shipyard("backup", "pitr", "list", "-o", "json").json()
    assert [b["label"] for b in listed["backups"]] == [label]
    assert listed["window"]["from"] == listed["backups"][0]["stopped_at"]
    assert cli.audit()[-2:] == [("backup.pitr.expire", "started", "cli:tester"),
                                ("backup.pitr.expire", "ok", "cli:tester")]  # fmt: skip
