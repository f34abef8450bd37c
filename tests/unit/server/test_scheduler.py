"""The scheduler's pieces without waiting on a clock: cron reading, the once-per-fire guard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from shipyard.errors import BackupError, UserError
from shipyard.locks import Lease, holder
from shipyard.server._scheduler import (
    ScheduledJob,
    ScheduledRunRow,
    Scheduler,
    UtcCronTrigger,
    check_schedule,
    planned_requests,
    scheduled_runs,
)
from shipyard.spec import DrTargets, load_spec_text
from shipyard.state import open_engine, session_factory

TUESDAY = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
FIRE = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = open_engine(f"sqlite:///{tmp_path / 'state.db'}")
    yield session_factory(engine)
    engine.dispose()


def next_fire(expression: str, now: dt.datetime, previous: dt.datetime | None = None) -> dt.datetime | None:
    return UtcCronTrigger(expression).get_next_fire_time(previous, now)


def test_weekday_zero_is_sunday_as_in_cron_and_kubernetes() -> None:
    # APScheduler's own CronTrigger would read 0 as Monday.
    assert next_fire("0 5 * * 0", TUESDAY) == dt.datetime(2026, 12, 6, 5, 0, tzinfo=dt.UTC)
    assert next_fire("0 5 * * 1-5", TUESDAY) == dt.datetime(2026, 12, 2, 5, 0, tzinfo=dt.UTC)


def test_a_day_of_month_and_a_weekday_match_either_as_in_cron() -> None:
    # "on the 13th, and on Fridays": the first Friday comes before the 13th.
    assert next_fire("0 0 13 * 5", TUESDAY) == dt.datetime(2026, 12, 4, 0, 0, tzinfo=dt.UTC)


def test_a_time_on_the_schedule_fires_now_and_then_moves_on() -> None:
    assert next_fire("0 10 * * *", FIRE) == FIRE
    assert next_fire("0 10 * * *", FIRE, previous=FIRE) == FIRE + dt.timedelta(days=1)
    other_zone = FIRE.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert next_fire("0 10 * * *", other_zone) == FIRE


def test_a_sixth_field_counts_seconds() -> None:
    assert next_fire("* * * * * */5", FIRE + dt.timedelta(seconds=1)) == FIRE + dt.timedelta(seconds=5)


@pytest.mark.parametrize("schedule", ["0 3 * * *", "*/15 * * * *", "0 5 * * 0", "* * * * * */2"])
def test_good_schedules_pass(schedule: str) -> None:
    check_schedule("job", schedule)


@pytest.mark.parametrize("schedule", ["61 * * * *", "* * *", "daily", "0 3 * * * * *"])
def test_bad_schedules_name_the_job(schedule: str, sessions: sessionmaker[Session]) -> None:
    with pytest.raises(UserError, match=r"job nightly: .* is not a cron schedule"):
        Scheduler(sessions, [ScheduledJob("nightly", schedule, lambda _: None)])


def test_a_job_name_given_twice_is_refused(sessions: sessionmaker[Session]) -> None:
    job = ScheduledJob("nightly", "0 3 * * *", lambda _: None)
    with pytest.raises(UserError, match="job nightly is scheduled twice"):
        Scheduler(sessions, [job, job])


def test_a_fire_runs_once_and_is_recorded(sessions: sessionmaker[Session]) -> None:
    seen: list[dt.datetime] = []
    scheduler = Scheduler(sessions, [ScheduledJob("tick", "0 10 * * *", seen.append)])
    assert scheduler.run_fire("tick", FIRE) == "succeeded"
    assert scheduler.run_fire("tick", FIRE) == "taken"
    assert scheduler.run_fire("tick", FIRE + dt.timedelta(days=1)) == "succeeded"
    assert seen == [FIRE, FIRE + dt.timedelta(days=1)]
    runs = scheduled_runs(sessions, "tick")
    assert [(r.fire_time, r.outcome) for r in runs] == [
        (FIRE, "succeeded"),
        (FIRE + dt.timedelta(days=1), "succeeded"),
    ]
    assert all(r.finished_at is not None and r.finished_at >= r.started_at for r in runs)
    assert holder(sessions, "schedule:tick") is None, "the lease is released after the run"
    assert scheduler.results() == {"tick": {"succeeded": 2, "taken": 1}}


def test_a_fire_is_left_alone_while_another_run_of_the_job_holds_its_lease(
    sessions: sessionmaker[Session],
) -> None:
    seen: list[dt.datetime] = []
    scheduler = Scheduler(sessions, [ScheduledJob("tick", "0 10 * * *", seen.append)])
    elsewhere = Lease(sessions, "schedule:tick", owner="other-host:1:abcd", ttl_s=60)
    elsewhere.acquire()
    assert scheduler.run_fire("tick", FIRE) == "busy"
    assert seen == []
    assert scheduled_runs(sessions) == []
    elsewhere.release()
    assert scheduler.run_fire("tick", FIRE) == "succeeded"


def test_a_failing_job_is_recorded_as_failed_and_frees_its_lease(sessions: sessionmaker[Session]) -> None:
    def explode(_: dt.datetime) -> None:
        raise BackupError("the repository is unreachable")

    scheduler = Scheduler(sessions, [ScheduledJob("backup-full", "0 10 * * *", explode)])
    assert scheduler.run_fire("backup-full", FIRE) == "failed"
    [run] = scheduled_runs(sessions)
    assert (run.job, run.fire_time, run.outcome) == ("backup-full", FIRE, "failed")
    assert run.finished_at is not None
    assert holder(sessions, "schedule:backup-full") is None


def test_a_skipped_fire_is_recorded_once(sessions: sessionmaker[Session]) -> None:
    scheduler = Scheduler(sessions, [ScheduledJob("slow", "0 10 * * *", lambda _: None)])
    scheduler.record_skipped("slow", FIRE)
    scheduler.record_skipped("slow", FIRE)
    assert [(r.fire_time, r.outcome) for r in scheduled_runs(sessions)] == [(FIRE, "skipped")]
    assert scheduler.run_fire("slow", FIRE) == "taken", "a skipped fire is not run later"


PLANNED = """\
name: shop
services:
  web: {role: web, image: "example/web:1", run: "exec true", port: 8080}
datastores:
  db: {kind: postgresql, storage: {size: 1Gi}}
backup:
  repository: /var/backups/app
  password: ${env:RESTIC_PASSWORD}
  sources: {datastores: [db]}
  schedules: {full: "0 2 * * *", verify: "0 5 * * 0", database: "0 * * * *"}
dr:
  rto: 15m
  rpo: 5m
  drills: {restore: "0 4 * * 0", full: "0 3 1 * *"}
environments:
  production: {}
images: {environments: []}  # schedules, not which images production may run
"""


def test_the_spec_schedules_typed_requests_for_backups_verifications_and_drills() -> None:
    stack = load_spec_text(PLANNED, "shipyard.yaml").stack("production")
    planned = [
        (name, schedule, request.model_dump(mode="json"))
        for name, schedule, request in planned_requests(stack)
    ]
    assert planned == [
        ("backup-database", "0 * * * *", {"kind": "backup", "what": "database"}),
        ("backup-full", "0 2 * * *", {"kind": "backup", "what": "full"}),
        ("backup-verify", "0 5 * * 0", {"kind": "verify", "set_id": None, "read_data": None}),
        ("backup-freshness", "*/5 * * * *", {"kind": planned[3][2]["kind"]}),
        ("dr-drill-full", "0 3 1 * *", planned[4][2]),
        ("dr-drill-restore", "0 4 * * 0", planned[5][2]),
    ]
    assert [planned[4][2]["mode"], planned[5][2]["mode"]] == ["full", "restore"]
    assert {planned[4][2]["kind"], planned[5][2]["kind"]} == {"drill"}


def test_drill_modes_are_checked_by_the_spec() -> None:
    with pytest.raises(ValidationError):
        DrTargets.model_validate({"rto": "15m", "rpo": "5m", "drills": {"sometimes": "0 4 * * 0"}})


def test_a_run_whose_process_died_is_closed_as_abandoned_by_the_next_run(
    sessions: sessionmaker[Session],
) -> None:
    # A process killed mid-run leaves its row open and its lease to expire.
    with sessions() as session, session.begin():
        session.add(ScheduledRunRow(job="tick", fire_time=FIRE, owner="gone:1:dead", started_at=FIRE))
    scheduler = Scheduler(sessions, [ScheduledJob("tick", "0 10 * * *", lambda _: None)])
    later = FIRE + dt.timedelta(days=1)
    assert scheduler.run_fire("tick", later) == "succeeded"
    runs = scheduled_runs(sessions, "tick")
    assert [(r.fire_time, r.outcome) for r in runs] == [(FIRE, "abandoned"), (later, "succeeded")]
    assert runs[0].finished_at is not None
