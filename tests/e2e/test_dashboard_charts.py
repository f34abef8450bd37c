"""The dashboard's charts in a real browser: a known history in a real state store, served by a
real `shipyard serve`, read back from the SVG in headless Chromium.

The history is written as the product writes it, with no HAProxy or datastore running (the charts
read only the store):

* a canary release of `web` (v1 -> v2) driven through the real strategy (`start`, `next_action`,
  `on_outcome`, `on_command`) with analysis windows judged by the real `analyse` on known traffic
  samples, each step and the state stored as the controller stores them;
* three full backup sets holding `postgres:db` and `redis:cache`, with their manifests;
* four drills, recorded with `record_drill`.

Then each chart must be on its page with the exact numbers: the steps' durations, the traffic split,
the analysis windows' error rates and p99s against their limits, the backups' sizes, durations and
ages against the RPO, and the drills' RTOs and RPOs against the targets. Screenshots go to
out/e2e-screenshots/charts/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker

from shipyard.backup import Manifest, PostgresArtefact, RedisArtefact
from shipyard.dr import record_drill
from shipyard.host import free_port
from shipyard.rollout import (
    LATENCY_BUCKETS_MS,
    Health,
    Sample,
    analyse,
    is_finished,
    next_action,
    on_command,
    on_outcome,
    release_plan,
    start,
)
from shipyard.rollout._controller import to_data
from shipyard.rollout._model import Done, Finish, HealthChecked, Hold, Observe, Observed, Outcome, WaitHealthy
from shipyard.spec import Stack, load_spec
from shipyard.state import BackupSetRow, DrillRow, RolloutRow, RolloutStepRow, open_engine, session_factory
from shipyard.tokens import create_token
from support.browser import Browser, chromium_page
from support.serve import serving

ENVIRONMENT = "test"
NOW = time.time()
"""The history ends about an hour before the test runs: inside the services' 24 h charts."""
T0 = NOW - 3 * 3600
SPEC = textwrap.dedent(
    """\
    name: charts
    services:
      web:
        role: web
        run: python3 -m http.server {port}
        port: {port}
    datastores:
      db:
        kind: postgresql
        storage: {{size: 1Gi}}
        database: app
        user: app
        local: {{port: {pg_port}}}
      cache:
        kind: redis
        local: {{port: {redis_port}}}
    backup:
      repository: ./repo
      password: ${{env:CHARTS_RESTIC_PASSWORD}}
      sources:
        datastores: [db, cache]
    dr:
      rto: 15m
      rpo: 1h
    rollout:
      strategy: canary
      rollback_window: 5s
      steps:
        - {{weight: 20}}
        - {{analysis: 60s}}
        - {{pause: until-promoted}}
        - {{weight: 50}}
        - {{analysis: 60s}}
        - {{weight: 100}}
      analysis:
        interval: 60s
        window: 60s
        max_error_rate: 0.05
        max_p99_ratio: 2.0
        p99_margin_ms: 25
        min_requests: 10
    environments:
      {environment}: {{}}
    """
)

BUCKET_30 = LATENCY_BUCKETS_MS.index(30)
BUCKET_50 = LATENCY_BUCKETS_MS.index(50)
BUCKET_15 = LATENCY_BUCKETS_MS.index(15)


def window(requests: int, errors: int, bucket: int) -> Sample:
    """A window's traffic: every request's latency in one bucket of the histogram."""
    buckets = [0] * len(LATENCY_BUCKETS_MS)
    buckets[bucket] = requests
    return Sample(requests, errors, tuple(buckets))


# (candidate, stable) per analysis window, in order: the first too small to decide, then two passes.
WINDOWS = [
    (window(5, 0, BUCKET_30), window(20, 0, BUCKET_15)),
    (window(200, 2, BUCKET_30), window(800, 4, BUCKET_15)),
    (window(500, 10, BUCKET_50), window(500, 1, BUCKET_15)),
]
ERROR_RATES = ([0.0, 0.01, 0.02], [0.0, 0.005, 0.002])
# p99 inside a bucket is interpolated: 20 + 10 x 0.99 = 29.9 ms, 30 + 20 x 0.99 = 49.8, 10 + 5 x 0.99.
P99S = ([29.9, 29.9, 49.8], [14.95, 14.95, 14.95])
P99_LIMIT = 2.0 * 14.95 + 25  # max_p99_ratio x the stable's p99 + p99_margin_ms
STEP_SECONDS = {"Prepare": 3.0, "WaitHealthy": 2.0, "SetWeights": 1.0, "Retire": 2.0, "Finish": 0.0}
PROMOTE_AFTER = 30.0


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def seed_release(sessions: sessionmaker[Session], stack: Stack) -> list[tuple[str, float]]:
    """Release v2 of web over v1 as the controller does, on a clock of our own; returns each
    recorded step's (action type, seconds)."""
    plan = release_plan(stack, "web", "v2", {"v1": 100}, "canary")
    now = T0
    state = start(plan, now)
    windows = iter(WINDOWS)
    steps: list[tuple[str, float, float, dict[str, Any], dict[str, Any]]] = []
    while not is_finished(state):
        action = next_action(state, now)
        begun = now
        outcome: Outcome = Done()
        if isinstance(action, Observe):
            while next_action(state, now) == action:  # a window observed again is the same step
                candidate, stable_sample = next(windows)
                now += action.interval_s
                analysis = analyse(candidate, stable_sample, plan.policy.analysis)
                outcome = Observed(analysis, complete=True)
                state = on_outcome(state, outcome, now, action=action)
        elif isinstance(action, Hold) and action.until is None:
            now += PROMOTE_AFTER  # someone looks at the canary, then promotes it
            state = on_command(state, "promote", now)
        elif isinstance(action, Hold):
            now = action.until or now
            state = on_outcome(state, outcome, now, action=action)
        else:
            now += STEP_SECONDS[type(action).__name__]
            if isinstance(action, WaitHealthy):
                outcome = HealthChecked(Health(1, 1), timed_out=False)
            if not isinstance(action, Finish):
                state = on_outcome(state, outcome, now, action=action)
        steps.append((type(action).__name__, begun, now, to_data(action), to_data(outcome)))
        if isinstance(action, Finish):
            break  # the controller records the end and stops, as `Controller._finish` does
    assert state.outcome == "succeeded", state.reason
    with sessions() as session, session.begin():
        row = RolloutRow(
            service="web", environment=ENVIRONMENT, target="local", strategy="canary", stable="v1",
            candidate="v2", phase=str(state.phase), outcome="succeeded", reason=state.reason,
            actor="token:ops", stack=stack.model_dump(mode="json", by_alias=True), state=state.to_data(),
            created_at=_utc(T0), updated_at=_utc(now), finished_at=_utc(now),
        )  # fmt: skip
        session.add(row)
        session.flush()
        for seq, (_, begun, ended, action_data, outcome_data) in enumerate(steps, start=1):
            session.add(
                RolloutStepRow(
                    rollout_id=row.id, seq=seq, action=action_data, status="done", outcome=outcome_data,
                    started_at=_utc(begun), finished_at=_utc(ended),
                )
            )  # fmt: skip
    return [(kind, ended - begun) for kind, begun, ended, _, _ in steps]


@dataclass(frozen=True)
class SetSeed:
    started: float
    seconds: float
    """How long the set took (each artefact half of it)."""
    db_bytes: int
    cache_bytes: int


SETS = [
    SetSeed(NOW - 5 * 3600, 60.0, 1_048_576, 4096),
    SetSeed(NOW - 3 * 3600, 90.0, 2_097_152, 8192),
    SetSeed(NOW - 1800, 120.0, 3_145_728, 16384),
]


def seed_backups(sessions: sessionmaker[Session]) -> None:
    for number, seed in enumerate(SETS):
        set_id = f"{_utc(seed.started):%Y%m%d-%H%M%S}-{number:04x}"
        started, finished = _utc(seed.started), _utc(seed.started + seed.seconds)
        half = seed.seconds / 2
        manifest = Manifest(
            id=set_id, spec="charts", environment=ENVIRONMENT, kind="full", repository="./repo",
            restic_host="charts-test", sources=["postgres:db", "redis:cache"], tools={"restic": "0.16"},
            started_at=started.isoformat(), finished_at=finished.isoformat(),
            artefacts=[
                PostgresArtefact(
                    name="postgres:db", datastore="db", database="app", snapshot_id=f"pg{number}",
                    sha256="0" * 64, files=3, raw_bytes=seed.db_bytes, data_added=seed.db_bytes // 2,
                    lsn="0/1000000", snapshot_time=started.isoformat(), server_version="15",
                    row_counts={"public.items": 10}, seconds=half,
                ),
                RedisArtefact(
                    name="redis:cache", datastore="cache", snapshot_id=f"rd{number}", sha256="1" * 64,
                    raw_bytes=seed.cache_bytes, data_added=seed.cache_bytes, dbsize=5, dbsize_range=(5, 5),
                    master_repl_offset=0, redis_version="7", seconds=half,
                ),
            ],
        )  # fmt: skip
        with sessions() as session, session.begin():
            session.add(
                BackupSetRow(
                    id=set_id, stack="charts", environment=ENVIRONMENT, kind="full", state="complete",
                    phase="done", owner="charts-test:1", actor="token:ops", started_at=started,
                    finished_at=finished, manifest=manifest.stored(),
                )
            )  # fmt: skip


# (mode, passed, RTO, RPO, hours ago); the targets are 15 min and 1 h.
DRILLS = [
    ("restore", True, 300.0, 1200.0, 20),
    ("restore", False, None, None, 15),
    ("restore", False, 1200.0, 600.0, 10),
    ("full", True, 600.0, 3000.0, 5),
]


def seed_drills(sessions: sessionmaker[Session]) -> None:
    for mode, passed, rto, rpo, hours in DRILLS:
        finished = NOW - hours * 3600
        record_drill(
            sessions,
            DrillRow(
                stack="charts", environment=ENVIRONMENT, mode=mode, passed=passed, actor="token:ops",
                started_at=_utc(finished - (rto or 60)), finished_at=_utc(finished), rto_seconds=rto,
                rpo_seconds=rpo, failed_phase=None if passed else "verify",
                reason=None if passed else "row counts differ",
            ),
        )  # fmt: skip


@dataclass
class Served:
    url: str
    admin: str
    steps: list[tuple[str, float]]


@contextlib.contextmanager
def served(base: Path) -> Iterator[Served]:
    spec = base / "shipyard.yaml"
    spec.write_text(SPEC.format(port=free_port(), pg_port=free_port(), redis_port=free_port(),
                                environment=ENVIRONMENT))  # fmt: skip
    state_url = f"sqlite:///{base / 'state.db'}"
    sessions = session_factory(open_engine(state_url))
    stack = load_spec(spec).stack(ENVIRONMENT)
    steps = seed_release(sessions, stack)
    seed_backups(sessions)
    seed_drills(sessions)
    with sessions() as session:
        admin = create_token(session, "ops", "admin", created_by="test")
    env = {
        **os.environ,
        "CHARTS_RESTIC_PASSWORD": "unused",
        "SHIPYARD_DATABASE_URL": state_url,
        "SHIPYARD_STATE_DIR": str(base / ".shipyard"),
    }
    args = ["-f", str(spec), "-e", ENVIRONMENT]
    with serving(args, log=base / "serve.log", cwd=base, env=env) as url:
        yield Served(url, admin, steps)


def numbers(page: Page, selector: str, attribute: str = "data-y") -> list[float]:
    """The attribute of every element matching `selector`, as numbers, in document order."""
    values = page.locator(selector).evaluate_all(f"els => els.map(e => e.getAttribute('{attribute}'))")
    return [float(value) for value in values]


def in_series(page: Page, chart: str) -> list[list[float]]:
    groups = page.locator(f'svg[data-chart="{chart}"] g[data-series]')
    expect(groups.first).to_be_attached()
    return [
        [float(v) for v in groups.nth(i).locator("circle").evaluate_all("els => els.map(e => e.dataset.y)")]
        for i in range(groups.count())
    ]


def test_charts_show_the_recorded_history(tmp_path: Path) -> None:
    with served(tmp_path) as server, chromium_page(tmp_path, "charts") as browser:
        page = browser.page
        page.goto(f"{server.url}/ui/login?next=/ui/services")
        page.get_by_label("Admin token").fill(server.admin)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.url}/ui/services")
        _release(page, server, browser)
        _backups(page, server, browser)
        _drills(page, server, browser)
        assert [shot.name for shot in browser.shots] == ["01-services.png", "02-backups.png", "03-dr.png"]
        assert all(shot.stat().st_size > 0 for shot in browser.shots)


def _release(page: Page, server: Served, browser: Browser) -> None:
    steps = page.locator('svg[data-chart="release-steps-web"] rect.bar')
    expect(steps).to_have_count(len(server.steps))
    assert numbers(page, 'svg[data-chart="release-steps-web"] rect.bar', "data-seconds") == pytest.approx(
        [seconds for _, seconds in server.steps]
    )
    assert set(page.locator('svg[data-chart="release-steps-web"] g.step').evaluate_all(
        "els => els.map(e => e.dataset.status)")) == {"done"}  # fmt: skip
    first_step = page.locator('svg[data-chart="release-steps-web"] rect.bar title').first.text_content()
    assert re.match(r"1\. prepare v2 x1: done, 3 s from \d{4}-", first_step or ""), first_step
    # The split after each change, held until the release ended: v1 gives way to v2.
    stable, candidate = in_series(page, "release-traffic-web")
    assert candidate == [0, 20, 50, 100, 100]
    assert stable == [100, 80, 50, 0, 0]
    # Each window's error rate and p99 against the limit it was judged by.
    rates = in_series(page, "release-error_rate-web")
    assert rates == [pytest.approx(v) for v in ERROR_RATES]
    assert numbers(page, 'svg[data-chart="release-error_rate-web"] g[data-limit]', "data-limit") == [0.05]
    p99 = in_series(page, "release-p99_ratio-web")
    assert p99 == [pytest.approx(v) for v in P99S]
    assert numbers(
        page, 'svg[data-chart="release-p99_ratio-web"] g[data-limit]', "data-limit"
    ) == pytest.approx([P99_LIMIT])
    # The first window was too small to decide: marked, and its title says why.
    first = page.locator('svg[data-chart="release-error_rate-web"] g[data-series] circle').first
    assert "warn" in (first.get_attribute("class") or "").split()
    assert "inconclusive" in (first.locator("title").text_content() or "")
    # The service's last hours: the same windows, the version under release and the live one.
    assert in_series(page, "service-errors-web") == [pytest.approx(v) for v in ERROR_RATES]
    assert in_series(page, "service-p99-web") == [pytest.approx(v) for v in P99S]
    page.locator('[data-testid="release-charts-web"]').scroll_into_view_if_needed()
    browser.shot("services")


def _backups(page: Page, server: Served, browser: Browser) -> None:
    page.get_by_role("link", name="Backups").click()
    expect(page.locator('svg[data-chart="backup-size-postgres-db"]')).to_be_visible()
    raw, added = in_series(page, "backup-size-postgres-db")
    assert raw == [s.db_bytes for s in SETS]
    assert added == [s.db_bytes // 2 for s in SETS]
    (cache_raw, _) = in_series(page, "backup-size-redis-cache")
    assert cache_raw == [s.cache_bytes for s in SETS]
    (durations,) = in_series(page, "backup-duration-postgres-db")
    assert durations == [s.seconds / 2 for s in SETS]
    # The newest copy's age: its own duration once stored, growing until the next one is stored.
    (ages,) = in_series(page, "backup-age-postgres-db")
    first, second, third = SETS
    expected = [
        first.seconds,
        second.started + second.seconds - first.started,
        second.seconds,
        third.started + third.seconds - second.started,
        third.seconds,
    ]
    assert ages[:-1] == pytest.approx(expected)
    # Now: the newest set's age, measured by the server a few seconds after NOW.
    assert NOW - third.started <= ages[-1] <= time.time() - third.started + 1
    assert numbers(page, 'svg[data-chart="backup-age-postgres-db"] g[data-limit]', "data-limit") == [3600.0]
    over = numbers(page, 'svg[data-chart="backup-age-postgres-db"] circle.fail')
    assert over == pytest.approx([expected[1], expected[3]])  # 2 h 1.5 min and 2.5 h: over the 1 h RPO
    browser.shot("backups")


def _drills(page: Page, server: Served, browser: Browser) -> None:
    page.get_by_role("link", name="DR").click()
    expect(page.locator('svg[data-chart="dr-rto"]')).to_be_visible()
    # A series per mode (sorted: full, restore); the drill that did not recover has no point.
    assert in_series(page, "dr-rto") == [[600.0], [300.0, 1200.0]]
    assert in_series(page, "dr-rpo") == [[3000.0], [1200.0, 600.0]]
    assert numbers(page, 'svg[data-chart="dr-rto"] g[data-limit]', "data-limit") == [900.0]
    assert numbers(page, 'svg[data-chart="dr-rpo"] g[data-limit]', "data-limit") == [3600.0]
    # Over its target, or a failed drill: marked.
    assert numbers(page, 'svg[data-chart="dr-rto"] circle.fail') == [1200.0]
    assert numbers(page, 'svg[data-chart="dr-rpo"] circle.fail') == [600.0]
    title = page.locator('svg[data-chart="dr-rto"] circle.fail title').text_content() or ""
    assert title.startswith("restore: 20m 0s at "), title
    assert "(restore, failed)" in title, title
    browser.shot("dr")
