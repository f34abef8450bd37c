"""The drill core: which phases each mode runs, and timing/verdicts with a fake clock and plain-function
phases (the phases stand in for nothing real here: the core's job is timing and arithmetic)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.backup import BackupSet, Commit, WalAtDisaster
from shipyard.dr._drills import (
    DrillSource,
    Phase,
    PhaseOutcome,
    _pitr_point,
    drill_sources,
    plan_drill,
    restore_point_of,
    run_drill,
)
from shipyard.dr._report import RestorePoint
from shipyard.errors import BackupError, DrError, UserError
from shipyard.spec import DrTargets, load_spec_text

T0 = 1_764_554_400.0  # 2025-12-01T02:00:00Z
SOURCES = (
    DrillSource("db", "postgresql"),
    DrillSource("cache", "redis"),
    DrillSource("files:/srv/uploads", "files"),
)


class FakeClock:
    """Time moves only when a phase says it took time."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def at(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def taking(clock: FakeClock, seconds: float, outcome: PhaseOutcome | None = None) -> Phase:
    def phase() -> PhaseOutcome:
        clock.advance(seconds)
        return outcome or PhaseOutcome()

    return phase


def names(mode: str, sources: tuple[DrillSource, ...] = SOURCES) -> list[str]:
    return [phase.name for phase in plan_drill(mode, sources).phases]


def test_each_mode_plans_its_phases_and_its_disaster() -> None:
    assert names("backup") == ["take backup set", "verify backup set"]
    assert plan_drill("backup", SOURCES).disaster_before == 1
    recovery = [
        "select newest restorable set",
        "restore db",
        "restore cache",
        "restore files:/srv/uploads",
        "health db",
        "health cache",
        "health files:/srv/uploads",
    ]
    assert names("restore") == recovery
    assert plan_drill("restore", SOURCES).disaster_before == 0
    assert names("full") == ["take backup set", *recovery]
    assert plan_drill("full", SOURCES).disaster_before == 1
    assert names("partial") == ["select newest restorable set", "restore db", "health db"]
    assert plan_drill("partial", SOURCES).disaster_before == 0


def test_plan_refuses_unknown_modes_and_empty_sources() -> None:
    with pytest.raises(UserError, match="use one of full, partial, backup, restore"):
        plan_drill("everything", SOURCES)
    with pytest.raises(UserError, match="partial drill restores the PostgreSQL datastores"):
        plan_drill("partial", (DrillSource("cache", "redis"),))
    with pytest.raises(UserError, match=r"backup\.sources is empty"):
        plan_drill("restore", ())


SPEC = """
name: shop
datastores:
  db: {kind: postgresql, storage: {size: 1Gi}}
  cache: {kind: redis}
backup:
  repository: /var/backups/shop
  password: ${env:RESTIC_PASSWORD}
  sources: {datastores: [cache, db], volumes: [/srv/uploads]}
dr: {rto: 15m, rpo: 5m, mttr: 30m}
"""


def test_sources_come_from_the_spec_backup_in_order() -> None:
    stack = load_spec_text(SPEC, "shipyard.yaml").stack("production")
    assert drill_sources(stack) == (
        DrillSource("redis:cache", "redis"),
        DrillSource("postgres:db", "postgresql"),
        DrillSource("files:/srv/uploads", "files"),
    )
    assert stack.dr == DrTargets(rto=900, rpo=300, mttr=1800)
    without = load_spec_text("name: shop\n", "shipyard.yaml").stack("production")
    with pytest.raises(UserError, match="no `backup:` section"):
        drill_sources(without)


def _restore_phases(clock: FakeClock, backup_age: float) -> dict[str, Phase]:
    point = RestorePoint("set", "set-1", at(T0 - backup_age))
    return {
        "select newest restorable set": taking(clock, 0.5, PhaseOutcome(detail="set-1", points=(point,))),
        "restore db": taking(clock, 20),
        "health db": taking(clock, 1.5),
    }


def test_partial_drill_times_phases_and_measures_rto_rpo() -> None:
    clock = FakeClock()
    plan = plan_drill("partial", SOURCES)
    result = run_drill(
        plan,
        _restore_phases(clock, backup_age=120),
        targets=DrTargets(rto=900, rpo=300),
        stack="shop",
        environment="production",
        clock=clock,
    )
    assert [(p.name, p.status, p.seconds) for p in result.phases] == [
        ("select newest restorable set", "passed", 0.5),
        ("restore db", "passed", 20),
        ("health db", "passed", 1.5),
    ]
    assert result.phases[1].source == "db"
    assert result.disaster_at == T0
    assert result.rto == 22.0
    assert result.rpo == 120.0  # the set is two minutes old at the disaster
    assert result.mttr == 22.0
    assert result.mttr_drills == 1
    assert [(c.name, c.target, c.achieved, c.verdict) for c in result.checks] == [
        ("rto", 900, 22.0, "pass"),
        ("rpo", 300, 120.0, "pass"),
        ("mttr", None, 22.0, "not set"),
    ]
    assert result.passed
    assert result.failed_phase is None


def test_missed_targets_fail_the_drill_though_every_phase_passed() -> None:
    clock = FakeClock()
    result = run_drill(
        plan_drill("partial", SOURCES),
        _restore_phases(clock, backup_age=600),
        targets=DrTargets(rto=10, rpo=300, mttr=60),
        stack="shop",
        environment="production",
        clock=clock,
        previous_recoveries=[100.0, 150.0],
    )
    assert [c.verdict for c in result.checks] == ["fail", "fail", "fail"]
    assert result.mttr == pytest.approx((100 + 150 + 22) / 3)
    assert result.mttr_drills == 3
    assert result.failed_phase is None
    assert not result.passed


def test_a_failed_phase_stops_the_drill_and_rto_is_not_achieved() -> None:
    clock = FakeClock()
    phases = _restore_phases(clock, backup_age=60)

    def broken_restore() -> PhaseOutcome:
        clock.advance(3)
        raise BackupError('pg_restore exited 1: relation "orders" already exists')

    phases["restore db"] = broken_restore
    result = run_drill(
        plan_drill("partial", SOURCES),
        phases,
        targets=DrTargets(rto=900, rpo=300, mttr=1800),
        stack="shop",
        environment="production",
        clock=clock,
        previous_recoveries=[50.0],
    )
    assert [(p.status, p.seconds) for p in result.phases] == [
        ("passed", 0.5),
        ("failed", 3),
        ("skipped", None),
    ]
    failed = result.failed_phase
    assert failed is not None
    assert failed.name == "restore db"
    assert failed.detail == 'pg_restore exited 1: relation "orders" already exists'
    assert result.rto is None
    assert result.rpo == 60.0  # a restorable point was found before the failure
    assert result.mttr is None
    assert [(c.name, c.verdict) for c in result.checks] == [
        ("rto", "fail"),
        ("rpo", "pass"),
        ("mttr", "fail"),
    ]
    assert not result.passed


def test_a_phase_may_fail_by_its_outcome_and_os_errors_are_caught() -> None:
    clock = FakeClock()
    phases = _restore_phases(clock, backup_age=60)
    phases["health db"] = taking(
        clock, 1, PhaseOutcome(ok=False, detail="SELECT count(*) FROM orders: 0 rows")
    )
    result = run_drill(
        plan_drill("partial", SOURCES), phases, targets=None, stack="s", environment="e", clock=clock
    )
    assert result.failed_phase is not None
    assert result.failed_phase.detail == "SELECT count(*) FROM orders: 0 rows"
    assert [c.verdict for c in result.checks] == ["not set", "not set", "not set"]
    assert not result.passed  # no target, but the drill did not recover

    def no_disk() -> PhaseOutcome:
        raise OSError(28, "No space left on device")

    phases["restore db"] = no_disk
    result = run_drill(
        plan_drill("partial", SOURCES), phases, targets=None, stack="s", environment="e", clock=clock
    )
    assert result.failed_phase is not None
    assert result.failed_phase.detail == "OSError: [Errno 28] No space left on device"


def test_a_failure_before_the_disaster_leaves_nothing_measured() -> None:
    clock = FakeClock()

    def backup_fails() -> PhaseOutcome:
        raise BackupError("restic: repository is locked")

    result = run_drill(
        plan_drill("backup", SOURCES),
        {"take backup set": backup_fails, "verify backup set": taking(clock, 1)},
        targets=DrTargets(rto=60, rpo=60),
        stack="s",
        environment="e",
        clock=clock,
    )
    assert result.disaster_at is None
    assert (result.rto, result.rpo, result.mttr) == (None, None, None)
    assert [p.status for p in result.phases] == ["failed", "skipped"]
    assert [c.verdict for c in result.checks] == ["fail", "fail", "not set"]


def test_backup_drill_declares_the_disaster_after_the_backup() -> None:
    clock = FakeClock()
    fresh = RestorePoint("set", "set-9", at(T0 + 30))  # the set finished when the backup phase ended
    result = run_drill(
        plan_drill("backup", SOURCES),
        {
            "take backup set": taking(clock, 30, PhaseOutcome(detail="set-9", points=(fresh,))),
            "verify backup set": taking(clock, 45),
        },
        targets=DrTargets(rto=60, rpo=1),
        stack="s",
        environment="e",
        clock=clock,
    )
    assert result.disaster_at == T0 + 30
    assert result.rto == 45
    assert result.rpo == 0
    assert result.passed


def test_pitr_rpo_is_the_committed_writes_lost_and_later_points_replace_earlier() -> None:
    clock = FakeClock()
    stale = RestorePoint("db", "set-1", at(T0 - 3600))
    pitr = RestorePoint("db", "pitr", at(T0 - 2.5), last_write=at(T0 - 1))
    cache = RestorePoint("cache", "set-1", at(T0 - 3600))
    phases: dict[str, Callable[[], PhaseOutcome]] = {
        "select newest restorable set": taking(clock, 1, PhaseOutcome(points=(stale, cache))),
        "restore db": taking(clock, 10, PhaseOutcome(points=(pitr,))),
        "restore cache": taking(clock, 2),
        "restore files:/srv/uploads": taking(clock, 2),
        "health db": taking(clock, 1),
        "health cache": taking(clock, 1),
        "health files:/srv/uploads": taking(clock, 1),
    }
    result = run_drill(
        plan_drill("restore", SOURCES), phases, targets=None, stack="s", environment="e", clock=clock
    )
    assert [(p.source, p.label) for p in result.points] == [("cache", "set-1"), ("db", "pitr")]
    assert result.points[1].loss_seconds(T0) == 1.5
    assert result.rpo == 3600  # the worst source: the cache restored from the hour-old set
    assert result.rto == 18

    only_db = run_drill(
        plan_drill("partial", SOURCES),
        {
            "select newest restorable set": taking(clock, 1, PhaseOutcome(points=(stale,))),
            "restore db": taking(clock, 10, PhaseOutcome(points=(pitr,))),
            "health db": taking(clock, 1),
        },
        targets=DrTargets(rto=900, rpo=2),
        stack="s",
        environment="e",
        clock=clock,
    )
    assert only_db.rpo == 1.5
    assert only_db.passed


def test_every_planned_phase_needs_a_callable() -> None:
    with pytest.raises(DrError, match="restore db, health db"):
        run_drill(
            plan_drill("partial", SOURCES),
            {"select newest restorable set": PhaseOutcome},
            targets=None,
            stack="s",
            environment="e",
        )


@given(
    durations=st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), min_size=3, max_size=3),
    age=st.floats(min_value=0, max_value=100_000, allow_nan=False),
    fail_at=st.one_of(st.none(), st.integers(min_value=0, max_value=2)),
    rto_target=st.integers(min_value=0, max_value=20_000),
    rpo_target=st.integers(min_value=0, max_value=200_000),
)
def test_verdicts_follow_the_measurements(
    durations: list[float], age: float, fail_at: int | None, rto_target: int, rpo_target: int
) -> None:
    clock = FakeClock()
    plan = plan_drill("partial", SOURCES)
    point = RestorePoint("set", "s", at(T0 - age))
    phases: dict[str, Phase] = {}
    for index, planned in enumerate(plan.phases):
        outcome = PhaseOutcome(ok=index != fail_at, points=(point,) if index == 0 else ())
        phases[planned.name] = taking(clock, durations[index], outcome)
    result = run_drill(
        plan,
        phases,
        targets=DrTargets(rto=rto_target, rpo=rpo_target),
        stack="s",
        environment="e",
        clock=clock,
    )
    rto, rpo, _ = result.checks
    if fail_at is None:
        assert result.rto == pytest.approx(sum(durations), abs=1e-6)
        assert rto.verdict == ("pass" if result.rto <= rto_target else "fail")
    else:
        assert result.rto is None
        assert rto.verdict == "fail"
        assert [p.status for p in result.phases][fail_at + 1 :] == ["skipped"] * (2 - fail_at)
    assert result.rpo is not None
    assert result.rpo == pytest.approx(age, abs=1e-3)
    assert rpo.verdict == ("pass" if result.rpo <= rpo_target else "fail")
    assert result.passed == (fail_at is None and rto.verdict == "pass" and rpo.verdict == "pass")


def test_restore_point_of_a_backup_set_artefact() -> None:
    started = at(T0 - 100)
    backup_set = BackupSet(
        id="20251201-015820-ab12",
        stack="shop",
        environment="production",
        kind="full",
        state="complete",
        phase="done",
        actor="cli:ops",
        started_at=started,
        finished_at=at(T0 - 40),
        manifest={},
        verification=None,
        verified_at=None,
        error=None,
    )
    database = restore_point_of(backup_set, "postgres:db", "2025-12-01T01:58:30+00:00")
    assert database == RestorePoint("postgres:db", "20251201-015820-ab12", at(T0 - 90))
    # Redis and files are read while the set runs: the set's start is the earliest their data can be.
    assert restore_point_of(backup_set, "redis:cache").time == started
    assert restore_point_of(backup_set, "postgres:db", "garbage").time == started


def test_the_pitr_datastore_is_recovered_by_pitr_even_when_no_set_holds_it() -> None:
    pitr = SPEC.replace(
        "password: ${env:RESTIC_PASSWORD}", "password: ${env:RESTIC_PASSWORD}\n  pitr: {repository: /r}"
    )
    stack = load_spec_text(pitr, "shipyard.yaml").stack("production")
    assert DrillSource("postgres:db", "postgresql", pitr=True) in drill_sources(stack)
    not_listed = pitr.replace("datastores: [cache, db]", "datastores: [cache]")
    sources = drill_sources(load_spec_text(not_listed, "shipyard.yaml").stack("production"))
    assert sources[0] == DrillSource("postgres:db", "postgresql", pitr=True)
    # With two PostgreSQL datastores the spec does not say which one pgBackRest protects.
    other = "  other: {kind: postgresql, port: 5433, storage: {size: 1Gi}}"
    two = pitr.replace("  cache: {kind: redis}", "  cache: {kind: redis}\n" + other)
    assert not any(
        source.pitr for source in drill_sources(load_spec_text(two, "shipyard.yaml").stack("production"))
    )


def _wal(commits: tuple[Commit, ...], error: str | None = None) -> WalAtDisaster:
    return WalAtDisaster(
        at=at(T0),
        primary_lsn="0/5000100",
        archived_through="000000010000000000000004",
        directory=Path("/nonexistent"),
        streamed=True,
        commits=commits,
        commits_error=error,
    )


def test_a_pitr_restore_point_loses_the_commits_after_what_it_replayed() -> None:
    commits = (Commit(0x5000000, at(T0 - 3)), Commit(0x5000080, at(T0 - 2)), Commit(0x50000C0, at(T0 - 1.5)))
    replayed = at(T0 - 3)
    point, words = _pitr_point("postgres:db", _wal(commits), "0/5000080", replayed)
    assert point.lost_commits == 2
    assert point.loss_seconds(T0) == pytest.approx(1.5)  # the last lost commit, not the disaster
    assert words == "2 committed transaction(s) lost, 1.500 s of writes"
    everything, words = _pitr_point("postgres:db", _wal(commits), "0/5000100", at(T0 - 1.5))
    assert everything.lost_commits == 0
    assert everything.loss_seconds(T0 + 60) == 0
    assert words == "no committed transaction lost"
    unknown, words = _pitr_point("postgres:db", _wal(commits, "no WAL"), "0/5000080", replayed)
    assert unknown.lost_commits is None
    assert unknown.loss_seconds(T0) == pytest.approx(3)  # bounded by the disaster
    assert "could not be read (no WAL)" in words
