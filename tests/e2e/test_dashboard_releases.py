"""The release card in a real browser: "Promote" goes one step, "Promote fully" skips the rest.

A light stack: the demo app behind a real HAProxy (v1 live, deployed by the CLI) and a real
`shipyard serve` on SQLite, driven by headless Chromium. A canary waits at a pause after each
weight; the test deploys v2 from the dashboard, clicks "Promote" (10 % → 50 %: the step position
moves by two), then "Promote fully" (the 75 % step and its pause skipped), and checks each
confirmation, the step position, the history and the labels once the release succeeded.
Screenshots go to out/e2e-screenshots/releases/.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from playwright.sync_api import Page, expect

from shipyard.tokens import create_token
from support.browser import chromium_page
from support.releases import ReleaseStack, release_stack
from support.serve import serving

STEPS = (
    "[{weight: 10}, {pause: until-promoted}, {weight: 50}, {pause: until-promoted},"
    " {weight: 75}, {pause: until-promoted}, {weight: 100}]"
)
"""migrate, prepare, health, 10 %, pause, 50 %, pause, 75 %, pause, 100 %, warm, retire: 12 steps."""
RELEASE_TIMEOUT_MS = 60_000


def _served(stack: ReleaseStack) -> contextlib.AbstractContextManager[str]:
    """`shipyard serve` over the stack's spec and store; its URL."""
    args = ["-f", str(stack.spec), "-e", "test"]
    return serving(args, log=stack.directory / "serve.log", cwd=stack.directory, env=stack.env)


def test_promote_one_step_then_promote_fully(tmp_path: Path) -> None:
    with (
        release_stack(tmp_path, "canary", steps=STEPS) as stack,
        _served(stack) as url,
        chromium_page(tmp_path, "releases") as browser,
    ):
        with stack.sessions()() as session:
            admin = create_token(session, "ops", "admin")
        page = browser.page
        asked: list[str] = []
        page.on("dialog", lambda dialog: asked.append(dialog.message))
        page.goto(f"{url}/ui/login?next=/ui/services")
        page.get_by_label("Admin token").fill(admin)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{url}/ui/services")

        page.get_by_label("Version").fill("v2")
        page.get_by_label("Strategy").select_option("canary")
        page.get_by_role("button", name="Deploy").click()
        expect(page).to_have_url(re.compile(r"/ui/jobs/\d+$"))
        page.goto(f"{url}/ui/services")
        step = page.get_by_test_id("step-web")
        expect(step).to_have_text("step 5 of 12: hold until promoted", timeout=RELEASE_TIMEOUT_MS)
        expect(page.get_by_test_id("phase-web")).to_have_text("paused")
        browser.shot("paused-at-10")

        _click(page, "Promote")
        expect(page.get_by_role("status")).to_contain_text("promote queued")
        # One step: past the 50 % weight to the next pause, not to 100 %.
        expect(step).to_have_text("step 7 of 12: hold until promoted", timeout=RELEASE_TIMEOUT_MS)
        expect(page.get_by_text("50%").first).to_be_visible()
        browser.shot("promoted-one-step")

        _click(page, "Promote fully")
        expect(page.get_by_role("status")).to_contain_text("promote-full queued")
        phase = page.get_by_test_id("phase-web")
        expect(phase).to_have_text("succeeded", timeout=RELEASE_TIMEOUT_MS)
        expect(step).to_have_text("all 12 steps done")
        card = page.get_by_role("region", name="web")
        # The label after success: v2 is the live version, v1 retired; the phase is not doubled.
        versions = card.locator("ul.weights li")
        expect(versions.nth(0)).to_contain_text("v1 retired")
        expect(versions.nth(1)).to_contain_text("v2 live")
        expect(phase.locator("xpath=..")).to_have_text("succeeded")
        history = page.get_by_test_id("history-web")
        expect(history).to_contain_text("set weights v1 50% / v2 50%")
        expect(history).not_to_contain_text("v2 75%")  # the skipped step never ran
        expect(history.locator("li").first).to_contain_text(re.compile(r"done · \d+\.\d\d s"))
        browser.shot("promoted-fully")

    assert len(asked) == 2, asked
    assert "one step: end hold until promoted (step 5 of 12) and go on to the next step" in asked[0]
    assert "fully: skip every remaining step" in asked[1]
    assert "give v2 all traffic now" in asked[1]
    row = stack.latest()
    assert (row.candidate, row.outcome) == ("v2", "succeeded")
    weights = [
        s.action["weights"]["candidate"] for s in stack.steps(row.id) if s.action["type"] == "SetWeights"
    ]
    assert weights == [10, 50, 100]


def _click(page: Page, name: str) -> None:
    """Click the release card's button `name` (exactly: "Promote" is also the start of "Promote fully")."""
    page.get_by_role("button", name=name, exact=True).click()
