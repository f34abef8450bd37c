"""PITR with streamed WAL (issue 5's RPO target: at most 1 s of committed writes lost).

pg_receivewal streams the primary's WAL into a spool through a replication slot; a restore reads
pgBackRest's archive first, then the spool (complete segments, then the `.partial` one). The
disaster is every process of the primary SIGKILLed right after a commit returned, with
archive_timeout=60 s, so nothing after the base backup was ever archived: every row that comes
back came through the stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from shipyard.backup import start_scratch_postgres
from shipyard.backup._pgbackrest import lsn_value, restore_arguments
from shipyard.backup._walstream import (
    WalStream,
    WalStreamSettings,
    receivewal_argv,
    restore_command,
    spool_dir_for,
)
from shipyard.errors import UserError
from support.cli import run_cli
from support.pitr import (
    WAL_SEGMENT,
    PitrPrimary,
    now_utc,
    pitr_primary,
    started,
    use_stream_stack,
    wait_streamed,
)

# --- pure parts --------------------------------------------------------------------------------


def test_spool_sits_next_to_the_repository_not_inside_it() -> None:
    assert spool_dir_for(Path("/var/lib/pgbackrest"), "main") == Path("/var/lib/pgbackrest.walstream/main")


def test_receivewal_streams_through_the_slot_and_loops() -> None:
    settings = WalStreamSettings(spool_dir=Path("/s"), host="127.0.0.1", port=5433, slot="wal_1")
    argv = receivewal_argv(settings, "/usr/bin/pg_receivewal")
    assert argv[0] == "/usr/bin/pg_receivewal"
    assert {"--directory=/s/wal", "--port=5433", "--slot=wal_1", "--synchronous", "--no-password"} <= set(
        argv
    )
    assert "--no-loop" not in argv  # pg_receivewal reconnects by itself
    assert "-n" not in argv
    asynchronous = WalStreamSettings(spool_dir=Path("/s"), host="h", port=1, synchronous=False)
    assert "--synchronous" not in receivewal_argv(asynchronous, "pg_receivewal")
    with pytest.raises(UserError, match="replication slot"):
        receivewal_argv(WalStreamSettings(spool_dir=Path("/s"), host="h", port=1, slot="Bad-Slot"), "x")


def test_restore_command_tries_archive_then_segment_then_partial() -> None:
    command = restore_command('pgbackrest archive-get %f "%p"', Path("/spool/main/wal"))
    archive, segment, partial = command.split(" || ")
    assert archive == 'pgbackrest archive-get %f "%p"'
    assert segment.startswith('cp /spool/main/wal/%f "%p"')
    assert partial.startswith('cp /spool/main/wal/%f.partial "%p"')
    with pytest.raises(UserError, match="spool"):
        restore_command("x", Path("/a dir/wal"))


def test_restore_arguments_carry_the_restore_command() -> None:
    argv = restore_arguments(Path("/r"), restore_command="a || b")
    assert "--recovery-option=restore_command=a || b" in argv
    assert not any(a.startswith("--recovery-option") for a in restore_arguments(Path("/r")))
    with pytest.raises(UserError, match="single quotes"):
        restore_arguments(Path("/r"), restore_command="cp 'x'")


# --- the disaster ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Disaster:
    committed: dict[int, datetime]
    """seq -> when its COMMIT returned, for every row committed before the kill."""
    killed_at: datetime
    restored: set[int]

    @property
    def lost(self) -> list[int]:
        return sorted(set(self.committed) - self.restored)

    @property
    def seconds_lost(self) -> float:
        """From the oldest lost commit to the kill: the committed writes a restore cannot bring back."""
        if not self.lost:
            return 0.0
        return (self.killed_at - min(self.committed[s] for s in self.lost)).total_seconds()


def _server_pids(data_dir: Path) -> list[int]:
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _disaster(*, synchronous_standby: bool, seconds: float = 2.0) -> Disaster:
    with pitr_primary(archive_timeout=60) as primary:
        stream = WalStream(
            WalStreamSettings(
                spool_dir=spool_dir_for(primary.pgbackrest.settings.repository, "main"),
                host="127.0.0.1",
                port=primary.server.port,
                user=primary.server.user,
            )
        )
        with primary.connect() as conn:
            conn.execute("CREATE TABLE pitr_rows (seq int PRIMARY KEY)")
        primary.pgbackrest.backup("full")
        try:
            stream.start()
            if synchronous_standby:
                with primary.connect() as conn:
                    conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'pg_receivewal'")
                    conn.execute("SELECT pg_reload_conf()")
                    _wait_sync(conn)
            committed, killed_at = _write_then_kill(primary, seconds)
            stream.stop()
            restored = _restore_latest(primary, stream)
        finally:
            stream.stop()
        return Disaster(committed, killed_at, restored)


def _wait_sync(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = conn.execute("SELECT sync_state FROM pg_stat_replication").fetchone()
        if row is not None and row[0] == "sync":
            return
        time.sleep(0.05)
    raise AssertionError("pg_receivewal never became the synchronous standby")


def _write_then_kill(primary: PitrPrimary, seconds: float) -> tuple[dict[int, datetime], datetime]:
    """A row every 100 ms; right after the last COMMIT returns, SIGKILL every server process."""
    committed: dict[int, datetime] = {}
    with primary.connect() as conn:
        pids = _server_pids(primary.server.datadir)  # the postmaster, the walsender, this backend...
        deadline = time.monotonic() + seconds
        seq = 0
        while True:
            seq += 1
            conn.execute("INSERT INTO pitr_rows (seq) VALUES (%s)", (seq,))
            committed[seq] = now_utc()
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # e.g. an autovacuum worker that ended
                os.kill(pid, signal.SIGKILL)
        killed_at = now_utc()
    return committed, killed_at


def _restore_latest(primary: PitrPrimary, stream: WalStream) -> set[int]:
    pg = primary.pgbackrest
    target = primary.new_dir("restore")
    command = restore_command(pg.archive_get_command(target), stream.settings.wal_dir)
    pg.restore(target, restore_command=command)
    with started(primary, target) as server, psycopg.connect(server.url(), autocommit=True) as conn:
        return {int(r[0]) for r in conn.execute("SELECT seq FROM pitr_rows").fetchall()}


def test_streamed_wal_restores_what_was_never_archived() -> None:
    """Asynchronous receiver (the default): a few runs. Nothing was archived after the base backup,
    so what comes back came from the stream: every commit up to the newest it held, and only the
    newest are lost. How many seconds of writes that is (the issue's target: at most 1 s) is
    printed, not asserted: on a loaded host the receiver lags, and bench measures it."""
    worst = 0.0
    for run in range(3):
        disaster = _disaster(synchronous_standby=False)
        print(
            f"run {run}: committed {len(disaster.committed)} rows, lost {len(disaster.lost)} "
            f"({disaster.seconds_lost * 1000:.1f} ms of writes)"
        )
        assert disaster.restored, "nothing came back"
        newest = max(disaster.restored)
        assert disaster.restored == set(range(1, newest + 1))  # no commit missing in between
        assert disaster.lost == [seq for seq in sorted(disaster.committed) if seq > newest]
        worst = max(worst, disaster.seconds_lost)
    print(f"worst committed writes lost (asynchronous stream): {worst * 1000:.1f} ms")


def test_synchronous_receiver_loses_no_committed_row() -> None:
    disaster = _disaster(synchronous_standby=True)
    print(f"synchronous: committed {len(disaster.committed)} rows, lost {len(disaster.lost)}")
    assert disaster.lost == []


# --- through the CLI ---------------------------------------------------------------------------


def test_cli_init_streams_and_restore_latest_reads_the_spool(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Path(tempfile.mkdtemp(prefix="shipyard-pitr-stream-cli-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    server = start_scratch_postgres()
    restored: dict[str, object] = {}
    try:
        use_stream_stack(base, server, monkeypatch)
        url = f"postgresql://{server.user}@127.0.0.1:{server.port}/postgres"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE marks (seq int PRIMARY KEY)")

        code, out, err = run_cli(capsys, "backup", "pitr", "init", "--restart", "-o", "json")
        assert code == 0, err
        assert json.loads(out)["stream_pid"] > 0
        code, out, err = run_cli(capsys, "backup", "pitr", "stream", "status", "-o", "json")
        assert code == 0, err
        status = json.loads(out)
        assert status["running"]
        assert status["slot_active"]
        assert status["spool"] == str(base / "pgbackrest.walstream" / "shop" / "wal")
        code, out, err = run_cli(capsys, "backup", "pitr", "full", "-o", "json")
        assert code == 0, err

        written = now_utc()  # (before the rows: the WAL streamed with them came after)
        with psycopg.connect(url, autocommit=True) as conn:
            for seq in range(1, 6):
                conn.execute("INSERT INTO marks (seq) VALUES (%s)", (seq,))
        wait_streamed(url)  # archive_timeout is 60 s: these rows are in no archived segment
        code, out, err = run_cli(capsys, "backup", "pitr", "list", "-o", "json")
        assert code == 0, err
        window = json.loads(out)["window"]
        # The window reaches the streamed WAL, past the newest archived segment.
        assert datetime.fromisoformat(window["streamed_at"]) >= written - timedelta(seconds=1)
        assert window["to"] == window["streamed_at"]

        code, out, err = run_cli(capsys, "restore", "database", "--latest", "--into", "scratch",
                              "--target-dir", str(base / "latest"), "-o", "json")  # fmt: skip
        assert code == 0, err
        restored = json.loads(out)
        assert any("restore_command=" in a for a in restored["pgbackrest_arguments"])
        copy = f"postgresql://{server.user}@127.0.0.1:{restored['port']}/postgres"
        with psycopg.connect(copy, autocommit=True) as conn:
            assert [r[0] for r in conn.execute("SELECT seq FROM marks ORDER BY seq")] == [1, 2, 3, 4, 5]

        code, out, err = run_cli(capsys, "backup", "pitr", "stream", "stop", "--drop-slot", "-o", "json")
        assert code == 0, err
        stopped = json.loads(out)
        assert stopped["stopped"]
        assert not stopped["slot_exists"]
        code, out, err = run_cli(capsys, "backup", "pitr", "stream", "status", "-o", "json")
        assert code == 1
        assert not json.loads(out)["running"]
    finally:
        if restored.get("stop_command"):
            subprocess.run(restored["stop_command"], check=False, capture_output=True, timeout=60)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            run_cli(capsys, "backup", "pitr", "stream", "stop")
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


def test_a_slot_given_up_past_its_wal_limit_is_replaced_when_the_stream_starts() -> None:
    """backup.pitr.stream_max_wal: a receiver that is down must not fill the primary's disk."""
    with pitr_primary() as primary:
        stream = WalStream(
            WalStreamSettings(
                spool_dir=spool_dir_for(primary.pgbackrest.settings.repository, "main"),
                host="127.0.0.1",
                port=primary.server.port,
                user=primary.server.user,
                max_slot_wal=1024 * 1024,
            )
        )
        try:
            stream.start()
            assert primary.server.psql("SHOW max_slot_wal_keep_size") == "1MB"
            assert stream.status().safe_wal_size is not None
            stream.stop()
            with primary.connect() as conn:  # the receiver is down while the primary writes on
                conn.execute("CREATE TABLE filler (n int)")
                for _ in range(3):
                    conn.execute("INSERT INTO filler SELECT generate_series(1, 1000)")
                    conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
            lost = stream.status()
            assert lost.slot_exists
            assert lost.wal_status == "lost"

            stream.start()
            again = stream.status()
            assert again.slot_active
            assert again.wal_status in ("reserved", "extended")
            with primary.connect() as conn:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
            assert again.restart_lsn is not None
            assert lsn_value(again.restart_lsn) // WAL_SEGMENT == lsn_value(str(row[0])) // WAL_SEGMENT
            spool = stream.settings.spool_dir
            assert [p.name.startswith("wal.lost-") for p in spool.iterdir() if p.is_dir()].count(True) == 1
        finally:
            stream.stop()
