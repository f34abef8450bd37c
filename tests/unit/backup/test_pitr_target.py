"""The restorable window is checked in one place (`PitrStatus.check_target`), used by both the
ops-level PITR restore and `PgBackRest.restore`: no backup, a future time, a time or an LSN before
the end of the oldest backup are each a UserError naming the way out; the rest passes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.backup._pgbackrest import PitrBackup, PitrStatus, lsn_value
from shipyard.backup._pitr_ops import check_target
from shipyard.errors import BackupError, UserError

ENDED = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _backup(label: str, stopped_at: datetime, stop_lsn: str) -> PitrBackup:
    return PitrBackup(
        label=label, kind="full", started_at=stopped_at - timedelta(minutes=5), stopped_at=stopped_at,
        start_lsn="0/1000000", stop_lsn=stop_lsn, wal_start="", wal_stop="", database_size=1,
        backup_size=1, repository_size=1, repository_delta=1, prior=None, error=False,
    )  # fmt: skip


def _status(*backups: PitrBackup, code: int = 0) -> PitrStatus:
    return PitrStatus("db", code, "ok", None, None, backups)


STATUS = _status(
    _backup("20261201-015500F", ENDED, "0/3000100"),
    _backup("20261201-035500F", ENDED + timedelta(hours=2), "0/5000100"),
)


def test_a_stanza_without_a_backup_names_the_pgbackrest_command_that_takes_one() -> None:
    # `PgBackRest.restore` said "take one with `shipyard backup full`": restic's, no help here.
    with pytest.raises(
        UserError, match=r"no backup to restore from: take one with `shipyard backup pitr full`"
    ):
        _status().check_target(time=None, lsn=None)


def test_a_missing_stanza_is_a_backup_error_before_the_window() -> None:
    with pytest.raises(BackupError, match="does not exist: run `shipyard backup pitr init`"):
        check_target(_status(code=1), time=None, lsn=None)


def test_a_future_time_is_refused() -> None:
    future = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(UserError, match="that time is in the future"):
        STATUS.check_target(time=future, lsn=None)


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_a_time_up_to_the_end_of_the_oldest_backup_names_the_oldest_restorable_time(
    before: timedelta,
) -> None:
    with pytest.raises(UserError) as refused:
        check_target(STATUS, time=ENDED - before, lsn=None)
    assert "the oldest restorable time is 2026-12-01T02:00:00Z (the end of backup 20261201-015500F)" in (
        refused.value.message
    )


@given(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3)))
def test_a_time_after_the_end_of_the_oldest_backup_passes(after: timedelta) -> None:
    STATUS.check_target(time=ENDED + after, lsn=None)


@given(st.integers(min_value=0, max_value=2**40))
def test_an_lsn_is_judged_against_the_oldest_backups_stop_lsn(position: int) -> None:
    lsn = f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
    if lsn_value(lsn) < lsn_value("0/3000100"):
        with pytest.raises(UserError, match=r"the oldest restorable LSN is 0/3000100 \(the end of backup"):
            check_target(STATUS, time=None, lsn=lsn)
    else:
        check_target(STATUS, time=None, lsn=lsn)
