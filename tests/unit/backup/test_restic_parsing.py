"""What restic 0.14 prints, parsed without restic. The samples are real output of restic 0.14.0."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.backup._restic import (
    BackupProgress,
    BackupSummary,
    ResticRepository,
    check_errors,
    failure_kind,
    parse_backup_message,
    parse_restic_time,
    parse_snapshots,
    readable_stderr_line,
    redact_url,
)
from shipyard.errors import BackupError, RepositoryError

STATUS_START = '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":10000000}'
STATUS = (
    '{"message_type":"status","percent_done":0.30927668,"total_files":5,"files_done":1,'
    '"total_bytes":50000000,"bytes_done":15463834,"current_files":["/f1","/f3"]}'
)
SUMMARY = (
    '{"message_type":"summary","files_new":2,"files_changed":0,"files_unmodified":0,"dirs_new":0,'
    '"dirs_changed":0,"dirs_unmodified":0,"data_blobs":4,"tree_blobs":1,"data_added":3000831,'
    '"total_files_processed":2,"total_bytes_processed":3000003,"total_duration":0.252085596,'
    '"snapshot_id":"07672fe7"}'
)
SNAPSHOTS = (
    '[{"time":"2026-12-01T02:02:44.638506113Z","tree":"3f0a5c2e","paths":["/db.dump"],'
    '"hostname":"vm","username":"root","id":"33622bbffd2cbe0a7c685175e7a5252b6c19098c3cca7558c30d81ef75a78015",'
    '"short_id":"33622bbf"},'
    '{"time":"2026-12-01T03:02:28.048115628+01:00","tree":"2b0df2c1","paths":["/tmp/rx/src"],'
    '"hostname":"h","username":"root","tags":["t1","daily"],'
    '"id":"07672fe79c9d15aeca5593b8a8195ab77aed9c5bcd68fce2632ce5770f3c10aa","short_id":"07672fe7"}]'
)
WRONG_PASSWORD = "Fatal: wrong password or no key found\n"
MISSING_LOCAL = (
    "Fatal: unable to open config file: stat nope/config: no such file or directory\n"
    "Is there a repository at the following location?\nnope\n"
)
S3_REFUSED = (
    'Fatal: unable to open config file: Stat: Get "http://127.0.0.1:1/bkt/?location=": dial tcp '
    "127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?\n"
    "s3:http://127.0.0.1:1/bkt/repo\n"
)
LOCKED = (
    "unable to create lock in backend: repository is already locked by PID 21775 on vm by root "
    "(UID 0, GID 0)\nlock was created at 2026-12-01 02:12:10 (1.427643791s ago)\nstorage ID e245c44e\n"
    "the `unlock` command can be used to remove stale locks\n"
)
CHECK_STDOUT = (
    "using temporary cache in /tmp/rx/cache/restic-check-cache-2857119765\ncreate exclusive lock for "
    "repository\nload indexes\ncheck all packs\ncheck snapshots, trees and blobs\n"
    "[0:00] 100.00%  3 / 3 snapshots\n\nread 100.0% of data packs\n[0:00] 100.00%  8 / 8 packs\n"
)
CHECK_STDERR = (
    "Pack ID does not match, want 545a897b526fd815f653c14808e53138cdd22d6141a8823d39cb0ed442094b41, "
    "got d9b85d7495f0dbfe1a7004e25c167892b08f85e3eda503421a316e33d37a9aee\n"
    "Fatal: repository contains errors\n"
)


def test_status_lines_become_progress() -> None:
    assert parse_backup_message(STATUS_START) == BackupProgress(
        fraction=0.0, bytes_done=0, total_bytes=10_000_000, files_done=0, total_files=1, seconds=0.0
    )
    progress = parse_backup_message(STATUS)
    assert isinstance(progress, BackupProgress)
    assert progress.fraction == pytest.approx(0.30927668)
    assert (progress.bytes_done, progress.files_done, progress.total_files) == (15463834, 1, 5)


def test_summary_line_becomes_summary() -> None:
    assert parse_backup_message(SUMMARY) == BackupSummary(
        snapshot_id="07672fe7",
        files_new=2,
        files_changed=0,
        files_unmodified=0,
        data_added=3000831,
        total_bytes_processed=3000003,
        total_files_processed=2,
        seconds=0.252085596,
    )


def test_summary_prefers_the_packed_size_of_newer_restic() -> None:
    line = json.dumps({**json.loads(SUMMARY), "data_added_packed": 1200})
    summary = parse_backup_message(line)
    assert isinstance(summary, BackupSummary)
    assert summary.data_added == 1200


@pytest.mark.parametrize(
    "line",
    [
        "",
        "using parent snapshot 07672fe7",
        "[1, 2]",
        "{not json",
        '{"message_type":"verbose_status","action":"new","item":"/a"}',
        '{"message_type":"status","percent_done":"lots"}',
    ],
)
def test_other_lines_are_ignored(line: str) -> None:
    assert parse_backup_message(line) is None


@given(
    st.dictionaries(
        st.sampled_from(["percent_done", "bytes_done", "total_bytes", "files_done", "seconds_elapsed", "x"]),
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), st.lists(st.integers())
        ),
    )
)
def test_any_status_message_parses_to_a_fraction_in_range_or_nothing(fields: dict[str, object]) -> None:
    message = parse_backup_message(json.dumps({"message_type": "status", **fields}))
    assert message is None or (isinstance(message, BackupProgress) and 0.0 <= message.fraction <= 1.0)


def test_restic_times_are_aware_utc() -> None:
    assert parse_restic_time("2026-12-01T02:02:28.048115628Z") == datetime(
        2026, 12, 1, 2, 2, 28, 48115, tzinfo=UTC
    )
    assert parse_restic_time("2026-12-01T03:02:28+01:00") == datetime(2026, 12, 1, 2, 2, 28, tzinfo=UTC)
    assert parse_restic_time("2026-12-01T02:02:28.5-00:30").utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_restic_time("yesterday")


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
    st.integers(min_value=0, max_value=999),
)
def test_go_rfc3339nano_round_trips(moment: datetime, offset_minutes: int, nanos: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    local = moment.replace(tzinfo=zone)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    suffix = "Z" if offset_minutes == 0 else f"{sign}{hours:02d}:{minutes:02d}"
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond:06d}{nanos:03d}" + suffix
    parsed = parse_restic_time(text)
    assert parsed == local
    assert parsed.tzinfo == UTC


def test_snapshots_parse_sorted_by_time() -> None:
    first, second = parse_snapshots(SNAPSHOTS)
    assert first.short_id == "07672fe7"  # 03:02+01:00 is 02:02 UTC, before 02:02:44 UTC
    assert first.tags == ("t1", "daily")
    assert first.paths == ("/tmp/rx/src",)
    assert first.hostname == "h"
    assert second.id.startswith("33622bbf")
    assert second.tags == ()
    assert second.time == datetime(2026, 12, 1, 2, 2, 44, 638506, tzinfo=UTC)


@pytest.mark.parametrize("empty", ["", "null", "[]"])
def test_no_snapshots(empty: str) -> None:
    assert parse_snapshots(empty) == []


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        (WRONG_PASSWORD, "password"),
        (MISSING_LOCAL, "missing"),
        (S3_REFUSED, "unreachable"),  # it also asks "Is there a repository...?"
        (LOCKED, "locked"),
        ("Fatal: The AWS Access Key Id you provided does not exist in our records.", "denied"),
        ("Fatal: something else broke", "other"),
    ],
)
def test_failure_kind(stderr: str, kind: str) -> None:
    assert failure_kind(stderr) == kind


def test_check_errors_keep_restic_messages_but_not_the_verdict() -> None:
    errors = check_errors(CHECK_STDOUT, CHECK_STDERR)
    assert errors == (CHECK_STDERR.splitlines()[0],)
    assert check_errors("error for tree 2b0df2c1:\n  blob 1: not found\nno errors were found", "") == (
        "error for tree 2b0df2c1:",
    )


def test_redact_url_hides_userinfo() -> None:
    assert (
        redact_url("rest:https://user:hunter2@backup.example:8000/repo")
        == "rest:https://***@backup.example:8000/repo"
    )
    assert redact_url("s3:http://127.0.0.1:9000/bucket/repo") == "s3:http://127.0.0.1:9000/bucket/repo"


def test_json_errors_on_stderr_name_the_item() -> None:
    line = '{"message_type":"error","error":{},"during":"archival","item":"/srv/data/locked.db"}'
    assert readable_stderr_line(line) == "/srv/data/locked.db: unreadable (during archival)"
    newer = '{"message_type":"error","error":{"message":"permission denied"},"during":"scan","item":"/x"}'
    assert readable_stderr_line(newer) == "/x: permission denied (during scan)"
    assert readable_stderr_line("Fatal: plain text") == "Fatal: plain text"


def offline_repository(tmp_path: Path, url: str = "repo") -> ResticRepository:
    """A repository whose restic cannot start: a test reaching restic fails with RESTIC_MISSING."""
    return ResticRepository(
        url if url != "repo" else str(tmp_path / "repo"),
        "hunter2-password",
        env={"AWS_SECRET_ACCESS_KEY": "aws-secret-value", "AWS_ACCESS_KEY_ID": "AKIA"},
        cache_dir=tmp_path / "cache",
        binary=str(tmp_path / "no-restic"),
    )


def test_messages_quoting_restic_never_carry_secrets(tmp_path: Path) -> None:
    repo = offline_repository(tmp_path, "rest:https://user:url-password@backup.example/repo")
    stderr = "Fatal: hunter2-password aws-secret-value url-password went wrong"
    message = str(repo._error("backup", 1, stderr))
    assert "went wrong" in message
    for secret in ("hunter2-password", "aws-secret-value", "url-password"):
        assert secret not in message
    assert "url-password" not in repr(repo)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda r, p: r.restore("--help", p), "snapshot id"),
        (lambda r, p: r.dump("latest; rm", "x", io.BytesIO()), "snapshot id"),
        (lambda r, p: r.forget(["-x"]), "snapshot id"),
        (lambda r, p: r.snapshots(tags=["a,b"]), "backup tag"),
        (lambda r, p: r.backup_path(p, tags=["--tag"]), "backup tag"),
        (lambda r, p: r.backup_path(p / "nowhere"), "no such file"),
        (lambda r, p: r.backup_command(["true"], "../etc/passwd"), "stream file name"),
        (lambda r, p: r.backup_command([], "x.dump"), "needs a command"),
        (lambda r, p: r.backup_path(p, host="-h"), "host"),
        (lambda r, p: r.check(read_data_subset="all of it"), "read_data_subset"),
    ],
)
def test_bad_arguments_are_refused_before_restic_runs(
    tmp_path: Path, call: Callable[[ResticRepository, Path], object], field: str
) -> None:
    with pytest.raises(BackupError, match=field) as caught:
        call(offline_repository(tmp_path), tmp_path)
    assert not isinstance(caught.value, RepositoryError)  # restic was never started


def test_missing_restic_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"apt-get install restic"):
        offline_repository(tmp_path).exists()


def test_empty_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match=r"password .* is empty"):
        ResticRepository(str(tmp_path / "repo"), "")
