"""The dashboard's live pages in a real browser (Debian's Chromium, driven by Playwright) against a
real `shipyard serve` over a real PostgreSQL state store.

- Pages that show running work update without a reload, and say "stale: store unreachable since …"
  while the store is stopped, until it answers again.
- Jobs: durations, cancelling a running release (its child process ends), jobs run from the CLI
  listed beside the server's, and the scratch Redis a CLI restore left running, dropped.
- Activity: field diffs, filters by actor, target and time, and paging past 200 rows.
- An id out of range is a 404 page; every page fits a 390 px wide screen.

The stack is the lightest that does all of it: the store, one Redis to back up and restore, and a
service whose instance never gets ready (its release waits for it: a job that runs until it is
cancelled). Screenshots go to out/e2e-screenshots/live/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import select

from shipyard.host import free_port, pid_alive
from shipyard.spec import load_spec
from shipyard.state import JobRow, open_engine, record_audit, session_factory
from shipyard.tokens import create_token
from support.browser import ARGS, ARTEFACTS, CHROMIUM
from support.redis import RedisServer, redis_server
from support.serve import start_serve, stop_serve, wait_ready
from support.servers import Postgres, postgres_server

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
ENVIRONMENT = "test"
PASSWORD_ENV = "SHIPYARD_TEST_RESTIC_PASSWORD"
SHOTS = ARTEFACTS / "live"
LIVE_MS = 15_000
"""How long a live part may take to show a change (it polls every 2 s; a CLI start takes seconds)."""
SPEC = """\
name: live
services:
  web:
    role: web
    run: exec sleep 600
    port: {web_port}
    health:
      readiness: {{path: /healthz, period: 1s, timeout: 1s, failure_threshold: 1}}
    replicas: 1
datastores:
  cache:
    kind: redis
    local: {{port: {redis_port}}}
backup:
  repository: ./repo
  password: ${{env:{password_env}}}
  sources:
    datastores: [cache]
rollout:
  strategy: blue-green
  health_timeout: 10m
environments:
  {environment}: {{}}
"""


WIDER = """Array.from(document.querySelectorAll("body *"))
  .filter((e) => e.getBoundingClientRect().right > 390)
  .filter((e) => !(e.parentElement && e.parentElement.getBoundingClientRect().right > 390))
  .map((e) => e.tagName + "." + e.className + "#" + e.id + " in " + e.parentElement.tagName + "."
    + e.parentElement.className + " " + getComputedStyle(e.parentElement).overflowX).slice(0, 8)"""
"""What sticks out of a 390 px screen (the first few), for a failure's message."""


@dataclass
class Stack:
    postgres: Postgres
    redis: RedisServer
    base: Path
    url: str
    state_url: str
    admin: str
    env: dict[str, str]

    @property
    def spec_args(self) -> tuple[str, ...]:
        return ("-f", str(self.base / "shipyard.yaml"), "-e", ENVIRONMENT)

    def sessions(self) -> Any:
        return session_factory(open_engine(self.state_url))

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [SHIPYARD, *args, *self.spec_args],
            env=self.env,
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"shipyard {' '.join(args)}: {result.stderr}{result.stdout}"
        return result.stdout


def _tidy(stack: Stack) -> None:
    """Kill what a failed test may have left: jobs' children, the app's instance and HAProxy."""
    from shipyard.rollout.targets.local import LocalTarget  # noqa: PLC0415 - teardown only

    with contextlib.suppress(Exception), stack.sessions()() as session:
        for row in session.scalars(select(JobRow).where(JobRow.state == "running")):
            if row.pid and row.pid != os.getpid():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(row.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        spec = load_spec(stack.base / "shipyard.yaml").stack(ENVIRONMENT)
        state_dir = stack.base / ".shipyard" / "local" / f"{spec.name}-{ENVIRONMENT}"
        LocalTarget(spec, state_dir, workdir=stack.base).destroy()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make install installs it)")
    base = Path(tempfile.mkdtemp(prefix="shipyard-live-"))
    with postgres_server() as postgres, redis_server() as redis:
        postgres.psql("CREATE DATABASE live")
        state_url = postgres.url("live")
        redis.cli("SET", "greeting", "hello")
        (base / "shipyard.yaml").write_text(
            SPEC.format(
                web_port=free_port(),
                redis_port=redis.port,
                password_env=PASSWORD_ENV,
                environment=ENVIRONMENT,
            )
        )
        env = {
            **os.environ,
            PASSWORD_ENV: "correct horse battery staple",
            "SHIPYARD_DATABASE_URL": state_url,
            "SHIPYARD_STATE_DIR": str(base / ".shipyard"),
            "SHIPYARD_ACTOR": "tester",
        }
        engine = open_engine(state_url)
        with session_factory(engine)() as session:
            admin = create_token(session, "ops", "admin")
        engine.dispose()
        port = free_port()
        stack = Stack(postgres, redis, base, f"http://127.0.0.1:{port}", state_url, admin, env)
        log = base / "serve.log"
        server = start_serve(stack.spec_args, port=port, log=log, cwd=base, env=env)
        try:
            wait_ready(stack.url, server, log)
            yield stack
        finally:
            stop_serve(server)
            _tidy(stack)


@dataclass
class Browser:
    page: Page
    count: int = 0

    def shot(self, name: str) -> None:
        self.count += 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{self.count:02d}-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    import shutil  # noqa: PLC0415

    shutil.rmtree(SHOTS, ignore_errors=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = chromium.new_context(viewport={"width": 1366, "height": 768})
            context.set_default_timeout(20_000)
            page = context.new_page()
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{stack.url}/ui/login")
            page.get_by_label("Admin token").fill(stack.admin)
            page.keyboard.press("Enter")
            expect(page).not_to_have_url(re.compile(r"/ui/login"))
            yield Browser(page)
        finally:
            chromium.close()


def _mark(page: Page) -> None:
    """A mark on the loaded document: gone if the page reloads."""
    page.evaluate("window.__notReloaded = true")


def _not_reloaded(page: Page) -> bool:
    return bool(page.evaluate("window.__notReloaded === true"))


def test_a_flag_created_through_the_api_shows_in_the_activity_without_a_reload(
    stack: Stack, browser: Browser
) -> None:
    page = browser.page
    page.goto(f"{stack.url}/ui/activity")
    _mark(page)
    created = httpx.post(
        f"{stack.url}/feature-flags",
        json={"key": "live-checkout", "type": "boolean", "defaultValue": False},
        headers={"Authorization": f"Bearer {stack.admin}"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    row = page.locator("table.activity tbody tr", has_text="live-checkout").first
    expect(row).to_be_visible(timeout=LIVE_MS)
    assert _not_reloaded(page)
    # Its fields, as a diff: each one of the new flag, not a line of JSON.
    expect(row.locator(".diff dt", has_text=re.compile(r"^key$"))).to_be_visible()
    expect(row.locator(".diff ins", has_text="live-checkout").first).to_be_visible()
    browser.shot("activity-live")


def test_the_stale_banner_shows_while_the_store_is_stopped_and_goes_when_it_is_back(
    stack: Stack, browser: Browser
) -> None:
    page = browser.page
    page.goto(f"{stack.url}/ui/jobs")
    _mark(page)
    banner = page.locator("#stale")
    expect(banner).to_be_hidden()
    stack.postgres.stop()
    try:
        expect(banner).to_be_visible(timeout=LIVE_MS)
        expect(banner).to_contain_text(re.compile(r"stale: store unreachable since \d\d:\d\d:\d\d UTC"))
        browser.shot("jobs-stale")
    finally:
        stack.postgres.start()
    expect(banner).to_be_hidden(timeout=LIVE_MS)
    assert _not_reloaded(page)
    browser.shot("jobs-fresh")


def test_a_running_job_shows_its_duration_and_is_cancelled_from_its_page(
    stack: Stack, browser: Browser
) -> None:
    page = browser.page
    page.goto(f"{stack.url}/ui/services")
    page.get_by_label("Version").fill("v1")
    page.get_by_role("button", name="Deploy").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_test_id("job-state")).to_have_text("running")
    with stack.sessions()() as session:
        pid = session.get(JobRow, job_id).pid
    assert pid is not None
    assert pid_alive(pid)
    # The jobs page lists it with how long it has run so far, which grows.
    page.goto(f"{stack.url}/ui/jobs")
    duration = page.get_by_test_id(f"job-duration-{job_id}")
    first = duration.inner_text()
    expect(duration).not_to_have_text(first, timeout=LIVE_MS)
    expect(duration).to_contain_text("so far")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row.locator(".fields")).to_contain_text("service web")
    expect(row.locator(".fields")).to_contain_text("version v1")
    browser.shot("jobs-running")
    page.get_by_role("link", name=f"#{job_id}").click()
    page.get_by_role("button", name="Cancel job").click()
    expect(page.get_by_role("status")).to_contain_text(f"job {job_id} cancelled")
    expect(page.get_by_test_id("job-state")).to_have_text("cancelled")
    expect(page.get_by_test_id("job-summary")).to_have_text("cancelled by token:ops")
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(pid), "the job's child still runs"
    browser.shot("job-cancelled")
    page.goto(f"{stack.url}/ui/activity?action=job.cancel")
    expect(page.locator("table.activity tbody tr")).to_have_count(1)
    cancelled = page.locator("table.activity tbody tr td").all_inner_texts()
    assert cancelled[1:4] == ["token:ops", "job.cancel", f"job {job_id}"], cancelled


def test_cli_runs_are_jobs_and_a_scratch_restore_left_running_is_dropped(
    stack: Stack, browser: Browser
) -> None:
    page = browser.page
    page.goto(f"{stack.url}/ui/jobs")
    _mark(page)
    stack.cli("backup", "redis")
    # Listed without a reload, from the CLI, with its typed result as fields.
    backup = page.locator("tr[data-job]", has_text="backup").first
    expect(backup).to_contain_text("from cli", timeout=LIVE_MS)
    expect(backup).to_contain_text("cli:tester")
    expect(backup.locator(".state")).to_have_text("succeeded")
    assert _not_reloaded(page)
    stack.cli("restore", "redis", "--into", "scratch")
    restore = page.locator("tr[data-job]", has_text="restore").first
    expect(restore.locator(".state")).to_have_text("succeeded", timeout=LIVE_MS)
    browser.shot("jobs-from-cli")
    restore.get_by_role("link").click()
    expect(page.locator("#job-result")).to_be_visible()
    expect(page.locator('section[aria-labelledby="job-result"] .facts')).to_contain_text(
        "restored[0].location.port"
    )
    with stack.sessions()() as session:
        (result,) = session.scalars(select(JobRow.result).where(JobRow.kind == "restore"))
    location = result["restored"][0]["location"]
    scratch_pid, scratch_port = location["pid"], location["port"]
    assert pid_alive(scratch_pid)

    page.goto(f"{stack.url}/ui/jobs/scratch-restores")
    row = page.locator("tr[data-restore]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"redis://127.0.0.1:{scratch_port}")
    browser.shot("scratch-restores")
    row.get_by_role("button", name=re.compile("^Drop the scratch redis")).click()
    expect(page.get_by_role("status")).to_contain_text(
        f"dropped the scratch redis of redis:cache at 127.0.0.1:{scratch_port}"
    )
    expect(page.locator("tr[data-restore]")).to_have_count(0)
    assert not pid_alive(scratch_pid), "the scratch redis-server still runs"
    browser.shot("scratch-dropped")


def test_activity_filters_by_actor_target_and_time_and_pages_past_200(stack: Stack, browser: Browser) -> None:
    sessions = stack.sessions()
    for index in range(230):
        record_audit(
            sessions, actor="cli:pager", action="test.page", target_kind="item", target=f"item-{index:03d}",
            before={"n": index}, after={"n": index + 1},
        )  # fmt: skip
    page = browser.page
    page.goto(f"{stack.url}/ui/activity")
    page.get_by_label("Actor").fill("cli:pager")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.activity tbody tr")
    expect(rows).to_have_count(200)
    assert set(page.locator("table.activity tbody tr td:nth-child(2)").all_inner_texts()) == {"cli:pager"}
    newest = rows.first.locator("td").nth(3).inner_text()
    assert newest.endswith("item-229"), newest
    # The change, field by field.
    expect(rows.first.locator(".diff del")).to_have_text("229")
    expect(rows.first.locator(".diff ins")).to_have_text("230")
    browser.shot("activity-actor")
    page.get_by_role("link", name="Older").click()
    expect(rows).to_have_count(30)
    assert rows.last.locator("td").nth(3).inner_text().endswith("item-000")
    expect(page.get_by_role("link", name="Older")).to_have_count(0)
    browser.shot("activity-older")
    page.get_by_role("link", name="Newer").click()
    expect(rows).to_have_count(200)
    assert rows.first.locator("td").nth(3).inner_text().endswith("item-229")

    page.goto(f"{stack.url}/ui/activity")
    page.get_by_label("Target").fill("item-01")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(10)  # item-010 … item-019
    # A time range that ends before these were written holds none of them.
    page.get_by_label("Until").fill(
        (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    )
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("Nothing recorded that matches these filters.")).to_be_visible()
    page.get_by_label("Until").fill("")
    page.get_by_label("Since").fill("1h")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(10)
    page.get_by_label("Since").fill("yesterday-ish")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#since-error")).to_contain_text("an age like 2h")
    browser.shot("activity-bad-since")


def test_an_id_out_of_range_is_a_404_page(stack: Stack, browser: Browser) -> None:
    page = browser.page
    for path in [
        "/ui/jobs/99999999999999999999",
        "/ui/jobs/0",
        "/ui/jobs/abc",
        "/ui/jobs/99999999999999999999/log",
    ]:
        response = page.goto(f"{stack.url}{path}")
        assert response is not None, path
        assert response.status == 404, (path, response.status)
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    browser.shot("job-404")


def test_every_page_fits_a_390_px_screen_with_a_favicon(stack: Stack, browser: Browser) -> None:
    page = browser.page
    icon = page.request.get(f"{stack.url}/ui/static/favicon.svg")
    assert icon.status == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        for name in ["services", "flags", "backups", "dr", "jobs", "activity", "jobs/scratch-restores"]:
            page.goto(f"{stack.url}/ui/{name}")
            assert page.locator('link[rel="icon"]').get_attribute("href") == "/ui/static/favicon.svg"
            width = page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 390, (f"/ui/{name} is {width} px wide at 390", page.evaluate(WIDER))
            expect(page.get_by_role("link", name="Activity")).to_be_in_viewport()
            browser.shot(f"narrow-{name.replace('/', '-')}")
    finally:
        page.set_viewport_size({"width": 1366, "height": 768})
