"""The WAL a lost primary would leave behind, for DR drills over point-in-time recovery.

A drill simulates losing the primary at one instant without touching it. What a real loss leaves
outside the primary is pgBackRest's archive up to its newest segment and, when WAL is streamed,
the pg_receivewal spool as it stood. `freeze_wal` records both at that instant (copying the
spool's newer files, which pg_receivewal goes on writing) and then the primary's WAL position;
`WalAtDisaster.restore_command` serves a restore exactly that WAL, so the restored copy holds
what a real disaster would have left, not what arrived afterwards.

What was lost is read from the primary's own pg_wal with pg_waldump: the commit records from the
end of the archive up to the primary's position at the disaster. Those at or after the end of the
WAL the restore replayed were lost (`lost_commits`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import BackupError
from ._pgbackrest import lsn_value
from ._pitr_ops import PitrStanza

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_COMMIT = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: COMMIT(?:_PREPARED \d+:)? "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
SCRIPT = "restore_wal.sh"


@dataclass(frozen=True)
class Commit:
    lsn: int
    """Where the commit record starts."""
    at: datetime


@dataclass(frozen=True)
class WalAtDisaster:
    at: datetime
    """The primary's clock at the disaster."""
    primary_lsn: str
    """The primary's WAL position at the disaster: every commit acknowledged before it is below."""
    archived_through: str | None
    """The newest segment in pgBackRest's archive at the disaster (None: none yet)."""
    directory: Path
    """Holds the frozen spool (`spool/`, when WAL is streamed) and the restore script."""
    streamed: bool
    commits: tuple[Commit, ...]
    """Commit records after the archive's end, up to `primary_lsn`."""
    commits_error: str | None = None
    """Why the commits could not be read (then the loss is only bounded by the disaster's time)."""

    @property
    def spool(self) -> Path:
        return self.directory / "spool"

    def lost_commits(self, replayed_to: str) -> tuple[Commit, ...]:
        """The commits a restore that replayed WAL up to `replayed_to` (the end of its last
        record, `pg_last_wal_replay_lsn()`) does not hold."""
        end = lsn_value(replayed_to)
        return tuple(commit for commit in self.commits if commit.lsn >= end)

    def restore_command(self, archive_get: str) -> str:
        """Write the restore script and return the restore_command that runs it.

        `archive_get` is pgBackRest's `archive-get %f "%p"` command line for the restored copy.
        """
        fetch = archive_get.replace('"%p"', '"$p"').replace("%f", '"$f"')
        cap = self.archived_through or ""
        lines = [
            "#!/bin/bash",
            "# restore_command of a DR drill: only the WAL that existed outside the primary at the",
            f"# simulated disaster ({self.at.isoformat()}): pgBackRest's archive up to {cap or '(none)'},",
            "# then the pg_receivewal spool as it stood (none when WAL is not streamed).",
            "f=$1 p=$2",
            f'if [[ $f == *.history || ( -n "{cap}" && ! $f > "{cap}" ) ]]; then',
            f"  {fetch} && exit 0",
            "fi",
        ]
        if self.streamed:
            spool = shlex.quote(str(self.spool))
            lines.append(f'cp {spool}/"$f" "$p" 2>/dev/null || cp {spool}/"$f".partial "$p" 2>/dev/null')
        else:
            lines.append("exit 1")
        script = self.directory / SCRIPT
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o755)
        return f'{shlex.quote(str(script))} %f "%p"'


def freeze_wal(stanza: PitrStanza, directory: Path) -> WalAtDisaster:
    """Record, at this instant, the WAL a loss of the primary would leave (see the module).

    The archive and the spool are read before the primary's position, so WAL written in between
    counts as lost: the measured loss errs high, never low. `directory` must be new and empty.
    """
    pg = stanza.pgbackrest
    streamed = stanza.streams
    directory.mkdir(parents=True, exist_ok=True)
    pg.own(directory)
    # The spool is held still from the archive's end to the copy past it: a prune in between
    # could delete a segment the archive gained meanwhile (see `WalStream.held`).
    with stanza.wal_stream().held() if streamed else contextlib.nullcontext():
        status = pg.status()
        archived = status.archive_max
        if streamed:
            spool = directory / "spool"
            _copy_spool(stanza.wal_stream().settings.wal_dir, spool, after=archived or "")
    if streamed:
        for path in (spool, *spool.iterdir()):  # the restored server reads them as its own user
            pg.own(path)
    with pg.connect() as conn:
        # One reading of the position: its segment's file name names the current timeline.
        row = conn.execute(
            "SELECT lsn::text, clock_timestamp(), pg_walfile_name(lsn),"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
            " FROM pg_current_wal_lsn() AS lsn"
        ).fetchone()
    assert row is not None
    primary_lsn, at, current_file, segment_bytes = str(row[0]), row[1], str(row[2]), int(row[3])
    start = max(
        lsn_value(status.backups[-1].stop_lsn) if status.backups else 0,
        _segment_end(archived, segment_bytes) if archived else 0,
    )
    commits: tuple[Commit, ...] = ()
    error: str | None = None
    if start < lsn_value(primary_lsn):
        try:
            commits = _commits(stanza, timeline=int(current_file[:8], 16), start=start, end=primary_lsn)
        except BackupError as exc:
            error = exc.message
    return WalAtDisaster(
        at=at,
        primary_lsn=primary_lsn,
        archived_through=archived,
        directory=directory,
        streamed=streamed,
        commits=commits,
        commits_error=error,
    )


def _copy_spool(wal_dir: Path, into: Path, *, after: str) -> None:
    """The spool's segments newer than the archive's newest, and the `.partial` one being written."""
    into.mkdir()
    names = sorted(p.name for p in wal_dir.iterdir()) if wal_dir.is_dir() else []
    for name in names:
        segment = name.removesuffix(".partial")
        if not _SEGMENT.match(segment) or segment <= after:
            continue
        try:
            shutil.copy2(wal_dir / name, into / name)
        except FileNotFoundError:
            # pg_receivewal finished the segment meanwhile: its .partial became the whole file.
            if name.endswith(".partial") and (wal_dir / segment).exists():
                shutil.copy2(wal_dir / segment, into / segment)


def _commits(stanza: PitrStanza, *, timeline: int, start: int, end: str) -> tuple[Commit, ...]:
    pg = stanza.pgbackrest
    argv = pg.as_user(
        [
            pg.pg_tool("pg_waldump"),
            f"--path={pg.settings.data_dir / 'pg_wal'}",
            f"--timeline={timeline}",
            f"--start={start >> 32:X}/{start & 0xFFFFFFFF:X}",
            f"--end={end}",
            "--rmgr=Transaction",
        ]
    )
    # pg_waldump prints commit times in its own time zone, named after the seconds.
    result = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}, check=False, timeout=120
    )
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackupError(f"pg_waldump could not read the primary's WAL: {reason}")
    commits = []
    for match in _COMMIT.finditer(result.stdout):
        at = datetime.fromisoformat(match.group(2)).replace(tzinfo=UTC)
        commits.append(Commit(lsn_value(match.group(1)), at))
    return tuple(commits)


def _segment_end(name: str, segment_bytes: int) -> int:
    """The WAL position just after segment `name` (timeline, log, segment: 8 hex digits each)."""
    per_log = 0x1_0000_0000 // segment_bytes
    return (int(name[8:16], 16) * per_log + int(name[16:24], 16) + 1) * segment_bytes
