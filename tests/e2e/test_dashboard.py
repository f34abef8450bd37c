"""The dashboard end to end, in a real browser: headless Chromium (Debian's) driven by Playwright
against a real `shipyard serve` with a real stack (the demo app behind HAProxy, PostgreSQL, Redis,
restic).

Logs in with an admin token, toggles a flag and watches the Python SDK's value change, starts a
canary and promotes it, verifies a backup set, runs a DR drill, and finds each in the activity log.
One screenshot per step, in the test's temp dir and in out/e2e-screenshots/dashboard/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from shipyard.backup import list_sets
from shipyard.flags.client import FlagsClient
from shipyard.rollout import latest_release
from shipyard.rollout._loadgen import LoadGenerator
from support.browser import Browser, chromium_page
from support.dashboard_stack import ENVIRONMENT, DashboardStack, dashboard_stack

FLAG = {
    "key": "new-checkout",
    "type": "boolean",
    "default_value": False,
    # Off: the default (False); on: the environment's value (True).
    "environments": {ENVIRONMENT: {"enabled": False, "value": True}},
}
USER = {"userId": "42"}
JOB_TIMEOUT_MS = 90_000


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def finish_job(page: Page) -> None:
    """On a job's page: wait until its state (polled by the page itself) is final; it must succeed."""
    expect(page).to_have_url(re.compile(r"/ui/jobs/\d+$"))
    state = page.get_by_test_id("job-state")
    expect(state).not_to_have_text("running", timeout=JOB_TIMEOUT_MS)
    assert state.inner_text() == "succeeded", page.locator("pre.log").inner_text()


def test_dashboard_end_to_end(tmp_path: Path) -> None:
    started = time.monotonic()
    with dashboard_stack() as stack, chromium_page(tmp_path, "dashboard") as browser:
        print(f"\nset-up: {time.monotonic() - started:.1f} s")
        admin = {"Authorization": f"Bearer {stack.admin}"}
        created = httpx.post(f"{stack.url}/feature-flags", json=FLAG, headers=admin, timeout=10)
        assert created.status_code == 201, created.text
        sdk = FlagsClient(stack.url, stack.client, ENVIRONMENT, min_retry_delay=0.2)
        try:
            assert sdk.wait_until_ready(10)
            assert sdk.is_enabled("new-checkout", USER) is False
            _log_in(stack, browser)
            _toggle_flag(browser, sdk)
        finally:
            sdk.close(timeout=5)
        step = time.monotonic()
        _canary_and_promote(stack, browser)
        print(f"_canary_and_promote: {time.monotonic() - step:.1f} s")
        step = time.monotonic()
        _verify_backup(stack, browser)
        print(f"_verify_backup: {time.monotonic() - step:.1f} s")
        step = time.monotonic()
        _drill(browser)
        print(f"_drill: {time.monotonic() - step:.1f} s")
        step = time.monotonic()
        _activity(stack, browser)
        print(f"_activity: {time.monotonic() - step:.1f} s")
        for shot in browser.shots:
            assert shot.stat().st_size > 0
        assert len(browser.shots) >= 8


def _log_in(stack: DashboardStack, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{stack.url}/ui/flags")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    browser.shot("login")
    # The keyboard alone: the skip link comes first, the token field has focus, Enter signs in.
    page.get_by_label("Admin token").fill(stack.admin)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{stack.url}/ui/flags")
    assert stack.admin not in page.content()
    cookie = next(c for c in page.context.cookies() if c["name"] == "shipyard_session")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()


def _toggle_flag(browser: Browser, sdk: FlagsClient) -> None:
    page = browser.page
    toggle = page.get_by_test_id(f"toggle-new-checkout-{ENVIRONMENT}")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    browser.shot("flags")
    toggle.click()
    expect(page.get_by_role("status")).to_contain_text(f"new-checkout is now on in {ENVIRONMENT}")
    expect(page.get_by_test_id(f"toggle-new-checkout-{ENVIRONMENT}")).to_have_attribute(
        "aria-pressed", "true"
    )
    # The SDK follows the server's stream: its local evaluation changes within moments.
    assert wait_for(lambda: sdk.is_enabled("new-checkout", USER) is True, 10), "the SDK never saw the change"
    browser.shot("flag-on")


def _canary_and_promote(stack: DashboardStack, browser: Browser) -> None:
    page = browser.page
    # The canary's analysis needs traffic: a steady load through HAProxy for the whole release.
    with LoadGenerator(stack.web_url, 40, connections=4) as load:
        page.get_by_role("link", name="Services").click()
        page.get_by_label("Version").fill("v2")
        page.get_by_label("Strategy").select_option("canary")
        browser.shot("deploy-form")
        page.get_by_role("button", name="Deploy").click()
        expect(page).to_have_url(re.compile(r"/ui/jobs/\d+$"))
        page.get_by_role("link", name="Services").click()
        phase = page.get_by_test_id("phase-web")
        # The services page polls the release: it reaches the step that waits for a person.
        expect(phase).to_have_text("paused", timeout=45_000)
        expect(page.get_by_text("20%").first).to_be_visible()
        browser.shot("canary-paused")
        page.get_by_role("button", name="Promote", exact=True).click()  # not "Promote fully"
        expect(page.get_by_role("status")).to_contain_text("promote queued")
        expect(page.get_by_test_id("phase-web")).to_have_text("succeeded", timeout=45_000)
        browser.shot("promoted")
    row = latest_release(stack.sessions(), "web")
    assert row is not None
    assert (row.candidate, row.outcome) == ("v2", "succeeded")
    # The job's child runs the CLI as the token's actor (the CLI prefixes its own `cli:`).
    assert row.actor.endswith("token:ops"), row.actor
    assert load.report is not None
    assert load.report.failed == 0, load.report
    assert set(load.report.by_version) == {"v1", "v2"}


def _verify_backup(stack: DashboardStack, browser: Browser) -> None:
    page = browser.page
    (taken,) = list_sets(stack.sessions())
    page.get_by_role("link", name="Backups").click()
    expect(page.get_by_test_id(f"set-state-{taken.id}")).to_have_text("complete")
    page.get_by_test_id(f"verify-{taken.id}").click()
    finish_job(page)
    browser.shot("verify-job")
    page.get_by_role("link", name="Backups").click()
    expect(page.get_by_test_id(f"set-state-{taken.id}")).to_have_text("verified")
    browser.shot("backup-verified")


def _drill(browser: Browser) -> None:
    page = browser.page
    page.get_by_role("link", name="DR").click()
    page.get_by_role("button", name="Run a restore drill").click()
    finish_job(page)
    browser.shot("drill-job")
    page.get_by_role("link", name="DR").click()
    expect(page.get_by_test_id("drill-restore")).to_have_text("pass")
    browser.shot("dr")


def _activity(stack: DashboardStack, browser: Browser) -> None:
    page = browser.page
    page.get_by_role("link", name="Activity").click()
    expected = {
        ("update", "new-checkout", "ok"),
        ("deploy", "web", "succeeded"),
        ("rollout.promote", "web", "queued"),
        ("job.verify", None, "succeeded"),
        ("backup.verify", None, "ok"),
        ("job.drill", "restore", "succeeded"),
        ("dr.drill", None, "passed"),
    }
    rows = page.locator("table.activity tbody tr")
    expect(rows.first).to_be_visible()  # the click navigates: read the rows once the page is there
    seen = []
    for index in range(rows.count()):
        cells = rows.nth(index).locator("td").all_inner_texts()
        seen.append(cells)
    for action, target, outcome in expected:
        assert any(
            c[1] == "token:ops" and c[2] == action and c[4] == outcome and (target is None or target in c[3])
            for c in seen
        ), (action, seen)
    browser.shot("activity")
    # The filter narrows the log to one action.
    page.get_by_label("Action").select_option("dr.drill")
    page.get_by_role("button", name="Filter").click()
    actions = set(page.locator("table.activity tbody tr td:nth-child(3)").all_inner_texts())
    assert actions == {"dr.drill"}
    browser.shot("activity-drills")
    assert stack.admin not in page.content()
