"""The WAL a drill's disaster leaves: the restore script (run by real bash) and the WAL arithmetic."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipyard.backup import Commit, WalAtDisaster
from shipyard.backup._disaster_wal import _copy_spool, _segment_end

CAP = "000000010000000000000004"
SEG_3, SEG_5, SEG_6 = CAP[:-1] + "3", CAP[:-1] + "5", CAP[:-1] + "6"


def _wal(directory: Path, *, streamed: bool) -> WalAtDisaster:
    return WalAtDisaster(
        at=datetime(2026, 12, 1, 2, 0, tzinfo=UTC),
        primary_lsn="0/6000100",
        archived_through=CAP,
        directory=directory,
        streamed=streamed,
        commits=(Commit(0x5000000, datetime(2026, 12, 1, 1, 59, 58, tzinfo=UTC)),),
    )


def _fetch(command: str, name: str, into: Path) -> tuple[int, str]:
    """Run the restore_command as PostgreSQL would (through a shell, %f and %p filled in)."""
    line = command.replace("%f", name).replace('"%p"', f'"{into}"')
    result = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=False)
    return result.returncode, into.read_text() if into.exists() else ""


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A stand-in for pgBackRest's archive: it already holds segments archived after the disaster."""
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in (SEG_3, CAP, SEG_5, "00000002.history"):
        (archive / name).write_text(f"archived {name}")
    return archive


def test_the_restore_script_serves_only_what_existed_at_the_disaster(tmp_path: Path, archive: Path) -> None:
    wal = _wal(tmp_path / "drill", streamed=True)
    wal.spool.mkdir(parents=True)
    (wal.spool / SEG_5).write_text("spool 5")
    (wal.spool / f"{SEG_6}.partial").write_text("spool 6 partial")
    command = wal.restore_command(f'cp {archive}/%f "%p"')
    assert command.startswith(str(tmp_path / "drill" / "restore_wal.sh"))

    assert _fetch(command, SEG_3, tmp_path / "a") == (0, f"archived {SEG_3}")
    assert _fetch(command, CAP, tmp_path / "b") == (0, f"archived {CAP}")
    # Archived after the disaster: not used, the spool's copy as it stood is.
    assert _fetch(command, SEG_5, tmp_path / "c") == (0, "spool 5")
    assert _fetch(command, SEG_6, tmp_path / "d") == (0, "spool 6 partial")
    assert _fetch(command, "00000002.history", tmp_path / "e") == (0, "archived 00000002.history")
    assert _fetch(command, CAP[:-1] + "7", tmp_path / "f")[0] != 0  # the end of the WAL


def test_without_a_stream_the_archive_ends_at_its_newest_segment(tmp_path: Path, archive: Path) -> None:
    wal = _wal(tmp_path / "drill", streamed=False)
    wal.directory.mkdir()
    command = wal.restore_command(f'cp {archive}/%f "%p"')
    assert _fetch(command, CAP, tmp_path / "a") == (0, f"archived {CAP}")
    assert _fetch(command, SEG_5, tmp_path / "b")[0] != 0


def test_only_the_spool_files_newer_than_the_archive_are_frozen(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    for name in (SEG_3, CAP, SEG_5, f"{SEG_6}.partial", "pg_receivewal.pid", "00000001.history"):
        (spool / name).write_text(name)
    _copy_spool(spool, tmp_path / "frozen", after=CAP)
    assert sorted(p.name for p in (tmp_path / "frozen").iterdir()) == [SEG_5, f"{SEG_6}.partial"]


def test_lost_commits_start_at_or_after_the_end_of_the_replay(tmp_path: Path) -> None:
    wal = _wal(tmp_path, streamed=True)
    assert wal.lost_commits("0/5000000") == wal.commits
    assert wal.lost_commits("0/5000008") == ()


def test_wal_positions_follow_postgresql_segment_names() -> None:
    assert _segment_end("000000010000000000000004", 16 * 1024**2) == 0x5000000
    assert _segment_end("0000000100000001000000FF", 16 * 1024**2) == 0x2_0000_0000
    assert _segment_end("000000010000000000000001", 64 * 1024**2) == 0x8000000
