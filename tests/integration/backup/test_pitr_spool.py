"""The pg_receivewal spool is pruned in step with pgBackRest (issue 12, defect 7): a spool segment
goes once pgBackRest's archive holds it, never before, so the spool keeps the un-archived tail
(what only it can restore) and a PITR restore to the newest commit still works afterwards.

Real PostgreSQL 15, pgBackRest and pg_receivewal, driven through the CLI: `backup pitr incr`
prunes after its backup, and `backup pitr stream start` (the scheduler runs it every minute)
prunes as it finds the receiver running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from shipyard.backup import start_scratch_postgres
from support.cli import run_cli
from support.pitr import use_stream_stack, wait_streamed

pytestmark = pytest.mark.integration

_ARCHIVED = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


@dataclass
class Rig:
    base: Path
    user: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    @property
    def spool(self) -> Path:
        return self.base / "pgbackrest.walstream" / "shop" / "wal"

    def spooled(self) -> set[str]:
        """The spool's complete segments (not the `.partial` one being received)."""
        return {p.name for p in self.spool.iterdir() if _SEGMENT.match(p.name)}

    def archived(self) -> set[str]:
        """The segments pgBackRest's archive holds, read from the repository itself."""
        files = (self.base / "pgbackrest" / "archive" / "shop").rglob("*")
        return {match.group(1) for p in files if (match := _ARCHIVED.match(p.name))}

    def execute(self, statement: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(statement)
            row = cursor.fetchone() if cursor.description is not None else None
        return "" if row is None else str(row[0])

    def new_segments(self, count: int, first: int, *, archived: bool) -> list[int]:
        """Commit a row, then close its WAL segment, `count` times; wait until the receiver has
        each (and, with `archived`, until pgBackRest's archive has it too). The rows' seqs."""
        seqs = []
        for seq in range(first, first + count):
            self.execute(f"INSERT INTO marks (seq) VALUES ({seq})")
            segment = self.execute("SELECT pg_walfile_name(pg_switch_wal())")
            # pg_receivewal completes a segment when WAL of the next one arrives: write some.
            self.execute("INSERT INTO nudges DEFAULT VALUES")
            wait_streamed(self.url)
            deadline = time.monotonic() + 60
            while segment not in self.spooled() or (archived and segment not in self.archived()):
                assert time.monotonic() < deadline, f"{segment} was not received (and archived) in 60 s"
                time.sleep(0.05)
            seqs.append(seq)
        return seqs


@pytest.fixture
def rig(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    base = Path(tempfile.mkdtemp(prefix="shipyard-pitr-spool-"))
    if os.geteuid() == 0:  # pgBackRest, archive_command and pg_receivewal run as postgres
        shutil.chown(base, "postgres", "postgres")
    server = start_scratch_postgres()
    try:
        use_stream_stack(base, server, monkeypatch)
        rig = Rig(base, server.user, server.port)
        rig.execute("CREATE TABLE marks (seq int PRIMARY KEY); CREATE TABLE nudges (n serial)")
        for args in (["backup", "pitr", "init", "--restart"], ["backup", "pitr", "full"]):
            code, _, err = run_cli(capsys, *args, "-o", "json")
            assert code == 0, err
        yield rig
    finally:
        with contextlib.suppress(Exception):
            run_cli(capsys, "backup", "pitr", "stream", "stop")
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def test_the_spool_keeps_only_what_the_archive_does_not_hold(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    seqs = rig.new_segments(4, 1, archived=True)
    before = rig.spooled()
    assert len(before & rig.archived()) >= 4, "the spool held no archived segment to prune"

    # After a pgBackRest backup, the spool holds nothing its archive holds.
    code, _, err = run_cli(capsys, "backup", "pitr", "incremental", "-o", "json")
    assert code == 0, err
    assert not rig.spooled() & rig.archived(), "archived segments were left in the spool"

    # Archiving breaks: new segments exist only in the spool. The periodic start prunes what
    # the archive holds and keeps the rest.
    seqs += rig.new_segments(2, 5, archived=True)
    rig.execute("ALTER SYSTEM SET archive_command = '/bin/false'")
    rig.execute("SELECT pg_reload_conf()")
    seqs += rig.new_segments(3, 7, archived=False)
    spooled, archived = rig.spooled(), rig.archived()
    unarchived = spooled - archived
    assert len(unarchived) >= 3
    code, out, err = run_cli(capsys, "backup", "pitr", "stream", "start", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["running"]
    left = rig.spooled()
    assert left == unarchived, f"kept {sorted(left)}, the archive lacks {sorted(unarchived)}"

    # The newest commit comes back from the archive plus the un-archived tail of the spool.
    rig.execute("INSERT INTO marks (seq) VALUES (10)")
    seqs.append(10)
    wait_streamed(rig.url)
    code, out, err = run_cli(capsys, "restore", "database", "--latest", "--into", "scratch",
                             "--target-dir", str(rig.base / "latest"), "-o", "json")  # fmt: skip
    assert code == 0, err
    restored = json.loads(out)
    try:
        copy = f"postgresql://{rig.user}@127.0.0.1:{restored['port']}/postgres"
        with psycopg.connect(copy, autocommit=True) as conn:
            assert [r[0] for r in conn.execute("SELECT seq FROM marks ORDER BY seq")] == seqs
    finally:
        subprocess.run(restored["stop_command"], check=False, capture_output=True, timeout=60)
