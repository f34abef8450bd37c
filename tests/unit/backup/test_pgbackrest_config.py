"""The pure parts of the pgBackRest adapter: config rendering, restore arguments, info parsing,
error messages. No server, no binary (except the one test that proves a missing binary is named)."""

from __future__ import annotations

import configparser
import dataclasses
import re
import shlex
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.backup._pgbackrest import (
    PgBackRest,
    PgBackRestSettings,
    archive_command,
    classify_error,
    format_target_time,
    lsn_value,
    parse_info,
    render_config,
    restore_arguments,
    retention_full_count,
    settings_from_spec,
)
from shipyard.errors import BackupError, UserError
from shipyard.spec import Pitr, Postgres, Retention

# `pgbackrest info --output=json` from pgBackRest 2.45 for a stanza with one full backup.
INFO = [
    {
        "archive": [
            {
                "database": {"id": 1, "repo-key": 1},
                "id": "15-1",
                "max": "000000010000000000000004",
                "min": "000000010000000000000001",
            }
        ],
        "backup": [
            {
                "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000004"},
                "backrest": {"format": 5, "version": "2.45"},
                "database": {"id": 1, "repo-key": 1},
                "error": False,
                "info": {
                    "delta": 22992515,
                    "repository": {"delta": 2811751, "size": 2811751},
                    "size": 22992515,
                },
                "label": "20261201-021813F",
                "lsn": {"start": "0/2000028", "stop": "0/4000050"},
                "prior": None,
                "reference": None,
                "timestamp": {"start": 1796091493, "stop": 1796091498},
                "type": "full",
            }
        ],
        "cipher": "none",
        "db": [{"id": 1, "repo-key": 1, "system-id": 7714154179525582720, "version": "15"}],
        "name": "main",
        "repo": [{"cipher": "none", "key": 1, "status": {"code": 0, "message": "ok"}}],
        "status": {"code": 0, "lock": {"backup": {"held": False}}, "message": "ok"},
    }
]


def settings(**changes: object) -> PgBackRestSettings:
    base = PgBackRestSettings(
        stanza="main",
        repository=Path("/var/lib/shipyard/pitr"),
        data_dir=Path("/var/lib/postgresql/15/main"),
        port=5432,
        work_dir=Path("/var/lib/shipyard/pgbackrest"),
        socket_dir=Path("/var/run/postgresql"),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def parse(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


path_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_. ", min_size=1, max_size=12).filter(
    lambda s: s.strip(" .") != "" and s == s.strip()
)
absolute_path = st.lists(path_part, min_size=1, max_size=4).map(lambda parts: Path("/" + "/".join(parts)))


@given(
    repository=absolute_path,
    data_dir=absolute_path,
    work_dir=absolute_path,
    port=st.integers(1, 65535),
    stanza=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
    retention=st.integers(1, 50),
    timeout=st.integers(1, 3600),
    archive_async=st.booleans(),
)
def test_rendered_config_says_exactly_the_settings(
    repository: Path,
    data_dir: Path,
    work_dir: Path,
    port: int,
    stanza: str,
    retention: int,
    timeout: int,
    archive_async: bool,
) -> None:
    chosen = settings(
        repository=repository,
        data_dir=data_dir,
        work_dir=work_dir,
        port=port,
        stanza=stanza,
        retention_full=retention,
        archive_timeout=timeout,
        archive_async=archive_async,
    )
    config = parse(render_config(chosen))
    assert config.sections() == ["global", stanza]
    glob, section = config["global"], config[stanza]
    assert Path(glob["repo1-path"]) == repository
    assert glob["repo1-retention-full"] == str(retention)
    assert Path(glob["log-path"]) == work_dir / "log"
    assert Path(glob["lock-path"]) == work_dir / "lock"
    assert Path(glob["spool-path"]) == work_dir / "spool"
    assert glob["archive-async"] == ("y" if archive_async else "n")
    assert glob["start-fast"] == "y"
    assert Path(section["pg1-path"]) == data_dir
    assert section["pg1-port"] == str(port)
    assert section["pg1-socket-path"] == "/var/run/postgresql"
    assert not any("pass" in key or "cipher" in key for key in [*glob, *section])


def test_optional_options_appear_only_when_set() -> None:
    plain = parse(render_config(settings(socket_dir=None)))
    assert "pg1-socket-path" not in plain["main"]
    assert "repo1-retention-diff" not in plain["global"]
    assert "archive-push-queue-max" not in plain["global"]
    tuned = parse(
        render_config(
            settings(retention_diff=4, archive_push_queue_max="4GiB", compress_type="zst", compress_level=3)
        )
    )
    assert tuned["global"]["repo1-retention-diff"] == "4"
    assert tuned["global"]["archive-push-queue-max"] == "4GiB"
    assert tuned["global"]["compress-type"] == "zst"
    assert tuned["global"]["compress-level"] == "3"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"repository": Path("relative/repo")}, "repo1-path"),
        ({"data_dir": Path("/data\n[evil]")}, "pg1-path"),
        ({"stanza": "main]\n[x"}, "stanza"),
        ({"db_user": "postgres\nrepo1-path=/x"}, "pg1-user"),
    ],
)
def test_config_refuses_values_that_would_break_the_file(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        render_config(settings(**changes))


def postgres(**local: object) -> Postgres:
    return Postgres.model_validate({"kind": "postgresql", "storage": {"size": "1Gi"}, "local": local})


def test_settings_from_spec() -> None:
    pitr = Pitr(repository="pitr-repo", stanza="app", archive_timeout=30)
    made = settings_from_spec(
        pitr,
        postgres(data_dir="/srv/pg", port=6543),
        work_dir=Path("/state/pgbackrest"),
        retention=Retention(keep_last=5),
        base_dir=Path("/srv/stack"),
    )
    assert made.repository == Path("/srv/stack/pitr-repo")
    assert made.data_dir == Path("/srv/pg")
    assert made.port == 6543
    assert made.stanza == "app"
    assert made.archive_timeout == 30
    assert made.retention_full == 5
    assert (
        settings_from_spec(pitr, postgres(data_dir="/d"), work_dir=Path("/w"), base_dir=Path("/")).port
        == 5432
    )


def test_settings_from_spec_names_the_missing_field() -> None:
    with pytest.raises(UserError, match=r"datastores\.db\.local\.data_dir is not set"):
        settings_from_spec(Pitr(repository="/r"), postgres(), work_dir=Path("/w"), datastore="db")
    with pytest.raises(UserError, match=r"backup\.pitr\.repository: 'rel' must be an absolute path"):
        settings_from_spec(Pitr(repository="rel"), postgres(data_dir="/d"), work_dir=Path("/w"))


@given(keep_last=st.integers(0, 30), min_verified=st.integers(1, 30))
def test_retention_keeps_at_least_one_full_and_the_verified_minimum(
    keep_last: int, min_verified: int
) -> None:
    count = retention_full_count(Retention(keep_last=keep_last, min_verified=min_verified))
    assert count >= max(1, keep_last, min_verified)
    assert count == max(1, keep_last, min_verified)


def test_archive_command_quotes_paths() -> None:
    command = archive_command("/usr/bin/pgbackrest", Path("/state dir/pgbackrest.conf"), "main")
    assert shlex.split(command) == [
        "/usr/bin/pgbackrest",
        "--config=/state dir/pgbackrest.conf",
        "--stanza=main",
        "archive-push",
        "%p",
    ]


@given(
    st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))])
    )
)
def test_target_time_is_utc_with_microseconds(moment: datetime) -> None:
    text = format_target_time(moment)
    assert text.endswith("+00")
    assert datetime.strptime(text[:-3], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC) == moment


def test_restore_arguments_for_each_target() -> None:
    target = Path("/scratch/pg")
    moment = datetime(2026, 12, 1, 2, 30, 0, 250000, tzinfo=UTC)
    assert restore_arguments(target, time=moment) == [
        "--pg1-path=/scratch/pg",
        "--type=time",
        "--target=2026-12-01 02:30:00.250000+00",
        "--target-action=promote",
        "--archive-mode=off",
    ]
    assert restore_arguments(target, lsn="0/3000a60")[1:3] == ["--type=lsn", "--target=0/3000A60"]
    assert restore_arguments(target, set_label="20261201-021813F")[1:4] == [
        "--set=20261201-021813F",
        "--type=immediate",
        "--target-action=promote",
    ]
    latest = restore_arguments(target, delta=True, keep_archiving=True)
    assert latest == ["--pg1-path=/scratch/pg", "--delta"]  # replay everything; PostgreSQL promotes
    with_set = restore_arguments(target, time=moment, set_label="20261201-021813F_20261201-022000I")
    assert "--set=20261201-021813F_20261201-022000I" in with_set
    assert "--type=time" in with_set


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time": datetime(2026, 12, 1, 2, 30)}, "no time zone"),
        ({"time": datetime(2026, 12, 1, tzinfo=UTC), "lsn": "0/1"}, "not both"),
        ({"lsn": "3000060"}, "not an LSN"),
        ({"set_label": "latest; rm -rf /"}, "not a pgBackRest label"),
    ],
)
def test_restore_arguments_refuse_bad_targets(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UserError, match=message):
        restore_arguments(Path("/scratch"), **kwargs)  # type: ignore[arg-type]


def test_parse_info() -> None:
    status = parse_info(INFO, "main")
    assert status.exists
    assert status.code == 0
    assert (status.archive_min, status.archive_max) == (
        "000000010000000000000001",
        "000000010000000000000004",
    )
    (backup,) = status.backups
    assert backup.label == "20261201-021813F"
    assert backup.kind == "full"
    assert backup.started_at == datetime.fromtimestamp(1796091493, UTC)
    assert backup.stopped_at == datetime.fromtimestamp(1796091498, UTC)
    assert (backup.start_lsn, backup.stop_lsn) == ("0/2000028", "0/4000050")
    assert (backup.wal_start, backup.wal_stop) == ("000000010000000000000002", "000000010000000000000004")
    assert (backup.database_size, backup.backup_size) == (22992515, 22992515)
    assert (backup.repository_size, backup.repository_delta) == (2811751, 2811751)
    assert backup.prior is None
    assert not backup.error
    assert status.oldest_restorable == backup.stopped_at


def test_parse_info_of_a_missing_stanza() -> None:
    missing = [
        {"name": "main", "status": {"code": 1, "message": "missing stanza path"}, "backup": [], "archive": []}
    ]
    assert not parse_info(missing, "main").exists
    assert not parse_info(INFO, "other").exists
    assert parse_info(missing, "main").oldest_restorable is None


@pytest.mark.parametrize(
    ("code", "detail", "expected"),
    [
        (87, "archive_mode must be enabled", "WAL archiving is not enabled"),
        (55, "unable to load info file '/r/backup/main/backup.info' or '.copy': missing", "does not exist"),
        (27, "no database found (unable to connect to 'dbname=postgres port=1')", "cannot reach PostgreSQL"),
        (
            82,
            "WAL segment 000000010000000000000003 was not archived before the 60000ms timeout",
            "not archiving",
        ),
        (
            28,
            "unable to acquire lock on file '/l/main-backup.lock': Resource temporarily unavailable",
            "lock",
        ),
        (44, "archive_command 'x' must contain pgbackrest: invalid", "archive_command does not push"),
        (99, "something new", r"pgbackrest backup failed \[099\]: something new"),
    ],
)
def test_errors_say_what_to_do(code: int, detail: str, expected: str) -> None:
    error = classify_error("backup", code, detail, settings())
    assert isinstance(error, BackupError)
    assert re.search(expected, error.message), error.message


def test_no_backup_before_the_target_is_the_users_to_fix() -> None:
    error = classify_error(
        "restore", 75, "unable to find backup set with stop time less than '2000-01-01'", settings()
    )
    assert isinstance(error, UserError)


def test_missing_binary_says_how_to_install() -> None:
    adapter = PgBackRest(settings(), Path("/nonexistent/pgbackrest.conf"), binary="pgbackrest-not-installed")
    with pytest.raises(BackupError, match=r"apt-get install pgbackrest"):
        adapter.create_stanza()


def test_lsn_order() -> None:
    assert lsn_value("0/3000060") < lsn_value("0/3000061") < lsn_value("1/0") < lsn_value("A/0")
    assert lsn_value("1/0") == 1 << 32
