"""Retention: restic's `forget --keep-*` buckets over restorable sets, plus the safety rules."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.backup._retention import SetFacts, SetState, plan_retention
from shipyard.errors import BackupError
from shipyard.spec import Retention
from shipyard.state import RESTORABLE_SET_STATES

UTC = dt.UTC
NOTHING = Retention(keep_last=0, hourly=0, daily=0, weekly=0, monthly=0, min_verified=1)
START = dt.datetime(2026, 1, 1, tzinfo=UTC)
YEAR_S = 366 * 86400


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def daily_sets(last_day: dt.date, days: int, state: SetState = "complete") -> list[SetFacts]:
    """One set a day at 02:00, the newest on `last_day`; ids are the dates."""
    sets = []
    for back in range(days):
        day = last_day - dt.timedelta(days=back)
        when = dt.datetime.combine(day, dt.time(2), tzinfo=UTC)
        sets.append(SetFacts(id=day.isoformat(), finished_at=when, state=state))
    return sets


def policy(**rules: int) -> Retention:
    return NOTHING.model_copy(update=rules)


# --- readable cases ---------------------------------------------------------------------------


def test_thirty_daily_sets_with_daily_7_keep_the_seven_newest_days() -> None:
    sets = daily_sets(dt.date(2026, 11, 30), 30)
    plan = plan_retention(sets, policy(daily=7))
    days = [f"2026-11-{d}" for d in range(30, 23, -1)]
    assert dict(plan.keep) == {day: (f"daily {day}",) for day in days}
    assert plan.drop == tuple(f"2026-11-{d:02d}" for d in range(1, 24))
    assert plan.ignored == ()


def test_daily_keeps_the_newest_set_of_each_day() -> None:
    sets = [
        SetFacts("mon-early", at("2026-11-30T01:00:00"), "complete"),
        SetFacts("mon-late", at("2026-11-30T23:59:59"), "complete"),
        SetFacts("sun-early", at("2026-11-29T00:00:00"), "complete"),
        SetFacts("sun-late", at("2026-11-29T18:00:00"), "complete"),
    ]
    plan = plan_retention(sets, policy(daily=5))
    assert dict(plan.keep) == {"mon-late": ("daily 2026-11-30",), "sun-late": ("daily 2026-11-29",)}
    assert plan.drop == ("sun-early", "mon-early")


def test_days_without_a_set_do_not_use_up_the_daily_count() -> None:
    sets = [
        SetFacts("a", at("2026-11-01T10:00:00"), "complete"),
        SetFacts("b", at("2026-11-05T10:00:00"), "complete"),
        SetFacts("c", at("2026-11-20T10:00:00"), "complete"),
    ]
    plan = plan_retention(sets, policy(daily=2))
    assert set(plan.keep) == {"b", "c"}
    assert plan.drop == ("a",)


def test_default_policy_over_a_year_of_daily_sets() -> None:
    # keep_last 3, daily 7, weekly 4, monthly 6 (the spec's defaults); 2026-11-30 is a Monday.
    sets = daily_sets(dt.date(2026, 11, 30), 365)
    plan = plan_retention(sets, Retention(min_verified=1))
    assert list(plan.keep) == [
        "2026-11-30",
        "2026-11-29",
        "2026-11-28",
        "2026-11-27",
        "2026-11-26",
        "2026-11-25",
        "2026-11-24",
        "2026-11-22",
        "2026-11-15",
        "2026-10-31",
        "2026-09-30",
        "2026-08-31",
        "2026-07-31",
        "2026-06-30",
    ]
    assert plan.keep["2026-11-30"] == ("last 1", "daily 2026-11-30", "weekly 2026-W49", "monthly 2026-11")
    assert plan.keep["2026-11-29"] == ("last 2", "daily 2026-11-29", "weekly 2026-W48")
    assert plan.keep["2026-11-22"] == ("weekly 2026-W47",)
    assert plan.keep["2026-06-30"] == ("monthly 2026-06",)
    assert len(plan.drop) == 365 - 14
    assert plan.drop[0] == "2025-12-01"


def test_weeks_are_iso_weeks_across_the_new_year() -> None:
    # 2026-12-31 and 2027-01-01 are both in ISO week 2026-W53; 2027-01-04 starts 2027-W01.
    sets = [
        SetFacts("thu", at("2026-12-31T12:00:00"), "complete"),
        SetFacts("fri", at("2027-01-01T12:00:00"), "complete"),
        SetFacts("mon", at("2027-01-04T12:00:00"), "complete"),
    ]
    plan = plan_retention(sets, policy(weekly=2))
    assert dict(plan.keep) == {"mon": ("weekly 2027-W01",), "fri": ("weekly 2026-W53",)}
    assert plan.drop == ("thu",)


def test_hourly_buckets_are_utc_hours() -> None:
    offset = dt.timezone(dt.timedelta(hours=5, minutes=30))
    sets = [
        SetFacts("a", dt.datetime(2026, 11, 30, 15, 40, tzinfo=offset), "complete"),  # 10:10 UTC
        SetFacts("b", at("2026-11-30T10:50:00"), "complete"),
        SetFacts("c", at("2026-11-30T09:59:59"), "complete"),
    ]
    plan = plan_retention(sets, policy(hourly=24))
    assert dict(plan.keep) == {"b": ("hourly 2026-11-30T10",), "c": ("hourly 2026-11-30T09",)}
    assert plan.drop == ("a",)


def test_running_and_failed_sets_are_ignored_and_do_not_count() -> None:
    sets = [
        SetFacts("running", at("2026-11-30T12:00:00"), "running"),
        SetFacts("failed", at("2026-11-30T11:00:00"), "failed"),
        SetFacts("good", at("2026-11-30T10:00:00"), "complete"),
        SetFacts("older", at("2026-11-29T10:00:00"), "complete"),
    ]
    plan = plan_retention(sets, policy(keep_last=1))
    assert dict(plan.keep) == {"good": ("last 1",)}
    assert plan.drop == ("older",)
    assert plan.ignored == ("failed", "running")


def test_the_newest_verified_sets_survive_a_policy_that_would_drop_them() -> None:
    sets = [
        SetFacts("new", at("2026-11-30T10:00:00"), "complete"),
        SetFacts("v1", at("2026-11-29T10:00:00"), "verified"),
        SetFacts("c", at("2026-11-28T10:00:00"), "complete"),
        SetFacts("v2", at("2026-11-27T10:00:00"), "verified"),
        SetFacts("v3", at("2026-11-26T10:00:00"), "verified"),
    ]
    plan = plan_retention(sets, policy(keep_last=1, min_verified=2))
    assert dict(plan.keep) == {
        "new": ("last 1",),
        "v1": ("newest verified", "min verified"),
        "v2": ("min verified",),
    }
    assert plan.drop == ("v3", "c")


def test_min_verified_beyond_the_verified_sets_keeps_them_all() -> None:
    sets = daily_sets(dt.date(2026, 11, 30), 3, state="verified") + daily_sets(dt.date(2026, 10, 30), 3)
    plan = plan_retention(sets, policy(keep_last=1, min_verified=10))
    assert set(plan.keep) == {"2026-11-30", "2026-11-29", "2026-11-28"}
    assert set(plan.drop) == {"2026-10-30", "2026-10-29", "2026-10-28"}


def test_a_policy_with_no_rules_keeps_everything_as_restic_does() -> None:
    sets = daily_sets(dt.date(2026, 11, 30), 4)
    plan = plan_retention(sets, NOTHING)
    assert plan.drop == ()
    assert all(reasons == ("empty policy",) for reasons in plan.keep.values())
    assert len(plan.keep) == 4


def test_no_sets_plan_nothing() -> None:
    assert plan_retention([], Retention()) == plan_retention([], NOTHING)
    assert plan_retention([], Retention()).keep == {}


def test_a_set_without_a_time_zone_is_refused() -> None:
    with pytest.raises(BackupError, match="s1: finished_at has no time zone"):
        plan_retention([SetFacts("s1", dt.datetime(2026, 11, 30), "complete")], Retention())


def test_a_set_listed_twice_is_refused() -> None:
    twice = [SetFacts("s1", at("2026-11-30T00:00:00"), "complete")] * 2
    with pytest.raises(BackupError, match="s1 is listed twice"):
        plan_retention(twice, Retention())


# --- properties -------------------------------------------------------------------------------

states = st.sampled_from(get_args(SetState))
ARTEFACTS = ("postgres:db", "redis:cache", "files:/srv/uploads")


@st.composite
def backup_sets(draw: st.DrawFn) -> list[SetFacts]:
    """Sets spread over a year, some clustered in one hour, some finishing in the same second."""
    seconds = draw(st.lists(st.integers(0, YEAR_S), max_size=40))
    burst: bool = draw(st.booleans())
    if seconds and burst:  # a burst within one hour, and exact ties
        base = draw(st.sampled_from(seconds))
        seconds += draw(st.lists(st.integers(0, 3599).map(lambda s: base + s), max_size=10))
        seconds += draw(st.lists(st.sampled_from(seconds), max_size=6))
    return [
        SetFacts(
            id=f"s{index:03d}",
            finished_at=START + dt.timedelta(seconds=s),
            state=draw(states),
            intact=draw(st.frozensets(st.sampled_from(ARTEFACTS))),
        )
        for index, s in enumerate(seconds)
    ]


rules = st.integers(0, 8)
policies = st.one_of(
    st.builds(
        Retention,
        keep_last=rules,
        hourly=rules,
        daily=rules,
        weekly=rules,
        monthly=rules,
        min_verified=st.integers(1, 6),
    ),
    st.builds(lambda n: NOTHING.model_copy(update={"min_verified": n}), st.integers(1, 6)),
)


def newest_first(sets: Sequence[SetFacts]) -> list[SetFacts]:
    return sorted(sets, key=lambda s: (s.finished_at, s.id), reverse=True)


def restorable(sets: Sequence[SetFacts]) -> list[SetFacts]:
    return newest_first([s for s in sets if s.state in RESTORABLE_SET_STATES])


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies)
def test_keep_and_drop_partition_the_restorable_sets(sets: list[SetFacts], rules: Retention) -> None:
    plan = plan_retention(sets, rules)
    good = {s.id for s in restorable(sets)}
    assert set(plan.keep).isdisjoint(plan.drop)
    assert set(plan.keep) | set(plan.drop) == good
    assert len(plan.drop) == len(set(plan.drop))
    assert set(plan.ignored) == {s.id for s in sets} - good
    assert all(plan.keep.values()), "every kept set says why"
    by_id = {s.id: s for s in sets}
    dropped_times = [(by_id[i].finished_at, i) for i in plan.drop]
    assert dropped_times == sorted(dropped_times), "drop lists the oldest first"


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies)
def test_the_verified_sets_a_restore_needs_are_never_dropped(sets: list[SetFacts], rules: Retention) -> None:
    plan = plan_retention(sets, rules)
    verified = [s for s in restorable(sets) if s.state == "verified"]
    kept_verified = [s for s in verified if s.id in plan.keep]
    if verified:
        assert verified[0].id in plan.keep
        assert "newest verified" in plan.keep[verified[0].id]
    assert len(kept_verified) >= min(rules.min_verified, len(verified))


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies)
def test_pruning_twice_drops_nothing_more(sets: list[SetFacts], rules: Retention) -> None:
    plan = plan_retention(sets, rules)
    survivors = [s for s in sets if s.id in plan.keep]
    again = plan_retention(survivors, rules)
    assert again.drop == ()
    assert set(again.keep) == set(plan.keep)


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies, st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_the_order_sets_are_listed(
    sets: list[SetFacts], rules: Retention, rng: random.Random
) -> None:
    shuffled = list(sets)
    rng.shuffle(shuffled)
    assert plan_retention(shuffled, rules) == plan_retention(sets, rules)


@settings(max_examples=200, deadline=None)
@given(backup_sets(), st.integers(0, 10))
def test_keep_last_keeps_the_newest_restorable_sets(sets: list[SetFacts], n: int) -> None:
    plan = plan_retention(sets, policy(keep_last=n))
    newest = restorable(sets)[:n]
    for position, facts in enumerate(newest, start=1):
        assert f"last {position}" in plan.keep[facts.id]
    last_reasons = [r for reasons in plan.keep.values() for r in reasons if r.startswith("last ")]
    assert len(last_reasons) == len(newest)


BUCKET_OF: dict[str, Callable[[dt.datetime], object]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
}


@settings(max_examples=200, deadline=None)
@given(backup_sets(), st.sampled_from(sorted(BUCKET_OF)), st.integers(1, 12))
def test_each_gfs_rule_keeps_the_newest_set_of_its_n_most_recent_buckets(
    sets: list[SetFacts], rule: str, n: int
) -> None:
    # An independent statement of restic's rule: group by bucket, take the N most recent
    # buckets holding a restorable set, keep the newest set of each.
    buckets: dict[object, list[SetFacts]] = {}
    for facts in restorable(sets):
        buckets.setdefault(BUCKET_OF[rule](facts.finished_at), []).append(facts)
    recent = sorted(buckets, key=lambda b: newest_first(buckets[b])[0].finished_at, reverse=True)[:n]
    expected = {newest_first(buckets[b])[0].id for b in recent}
    plan = plan_retention(sets, policy(**{rule: n}))
    by_rule = {i for i, reasons in plan.keep.items() if any(r.startswith(f"{rule} ") for r in reasons)}
    assert by_rule == expected


@settings(max_examples=200, deadline=None)
@given(backup_sets(), policies)
def test_the_newest_intact_copy_of_every_artefact_is_kept(sets: list[SetFacts], rules: Retention) -> None:
    plan = plan_retention(sets, rules)
    for name in ARTEFACTS:
        holding = [s for s in restorable(sets) if name in s.intact]
        if holding:
            assert holding[0].id in plan.keep, f"the newest intact {name} ({holding[0].id}) is dropped"
            assert f"newest intact {name}" in plan.keep[holding[0].id]


def test_a_partial_set_keeps_its_intact_dump_and_an_older_set_keeps_the_only_intact_redis() -> None:
    """Issue 12, defect 4: one damaged artefact used to fail the whole set, so its intact (and
    newest) database dump was dropped with it."""
    sets = [
        SetFacts("old", at("2026-11-28T02:00:00"), "verified", frozenset({"postgres:db", "redis:cache"})),
        SetFacts("mid", at("2026-11-29T02:00:00"), "complete", frozenset({"postgres:db", "redis:cache"})),
        SetFacts("new", at("2026-11-30T02:00:00"), "partial", frozenset({"postgres:db"})),
    ]
    plan = plan_retention(sets, NOTHING.model_copy(update={"keep_last": 1}))
    assert plan.keep["new"] == ("last 1", "newest intact postgres:db")
    assert plan.keep["mid"] == ("newest intact redis:cache",)
    assert plan.keep["old"] == ("newest verified", "min verified")
    assert plan.drop == ()
