"""The dashboard's flag pages end to end, in a real browser: headless Chromium (Debian's) driven by
Playwright against a real `shipyard serve -f SPEC` on SQLite, the spec naming three environments
(dev, staging, production; the server's own is staging).

An operator creates a flag (a bad key first: the error is beside the key field), builds a rule with
the rule builder (two conditions, one of them wrong: the error is beside its values field; then a
50 % rollout), turns the flag on, and the Python SDK against the same server evaluates exactly that
rule. Then: every environment on every flag, production first; search and filters; the change
history as field diffs; an environment the spec does not name refused beside the environment
field; archive and revive. Last, a rule with a case-insensitive condition, a negated one (in a row
the page's script added) and a variant with a payload (a number payload that is no number refused
beside its field first), which the evaluation routes then honour. Screenshots in
out/e2e-screenshots/flags/.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from shipyard.flags import in_rollout
from shipyard.flags.client import FlagsClient
from shipyard.state import open_engine, session_factory
from shipyard.tokens import create_token
from support.browser import Browser, chromium_page
from support.flag_server import FlagServer

SPEC = textwrap.dedent(
    """\
    name: shop
    environments:
      dev: {}
      staging: {}
      production: {}
    """
)
SHOWN_ORDER = ["production", "dev", "staging"]
"""Production first, then the spec's order."""
KEY = "new-checkout"
BUILT_RULE = {
    "conditions": [{"attribute": "role", "op": "in", "value": ["ADMIN", "BETA"]}],
    "rollout": {"percent": 50},
    "value": True,
}


@dataclass
class SpecFlagServer(FlagServer):
    """`shipyard serve -f SPEC -e staging`: the dashboard reads the spec's environments."""

    spec: Path | None = None

    def serve_argv(self) -> list[str]:
        assert self.spec is not None
        return [*super().serve_argv(), "-f", str(self.spec)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpecFlagServer]:
    base = tmp_path_factory.mktemp("flags-dashboard")
    spec = base / "shipyard.yaml"
    spec.write_text(SPEC)
    database = base / "state.db"
    engine = open_engine(f"sqlite:///{database}")
    try:
        with session_factory(engine)() as session:
            admin = create_token(session, "ops", "admin")
            client = create_token(session, "web-app", "client")
    finally:
        engine.dispose()
    running = SpecFlagServer(database, admin, client, environment="staging", spec=spec)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_flags_in_the_dashboard(server: SpecFlagServer, tmp_path: Path) -> None:
    with chromium_page(tmp_path, "flags") as browser:
        page = browser.page
        page.goto(f"{server.url}/ui/flags")
        page.get_by_label("Admin token").fill(server.admin_token)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.url}/ui/flags")
        browser.shot("empty")

        _create_flag(browser)
        _environments_production_first(page)
        _build_rule(browser)
        page.get_by_test_id(f"toggle-{KEY}-production").click()
        expect(page.get_by_role("status")).to_contain_text(f"{KEY} is now on in production")
        _sdk_evaluates_the_rule_as_built(server)
        _unknown_environment_beside_its_field(browser, server)
        _search_and_filter(browser, server)
        _history_diff(browser)
        _archive_and_revive(browser)
        _negation_case_and_payload(browser, server)
        assert len(browser.shots) >= 12


def _create_flag(browser: Browser) -> None:
    page = browser.page
    page.get_by_role("link", name="New flag").click()
    page.get_by_label("Key").fill("New Checkout")
    page.get_by_label("Description").fill("The new checkout flow")
    page.get_by_role("button", name="Create flag").click()
    key = page.get_by_label("Key")
    expect(key).to_have_attribute("aria-invalid", "true")
    error = page.get_by_test_id("error-key")
    expect(error).to_contain_text("is not a key for a new flag")
    # Beside the field: named by it, and right under it in the same field group.
    assert key.get_attribute("aria-describedby") == "error-key"
    assert page.locator(".field", has=key).locator(".field-error").inner_text() == error.inner_text()
    expect(page.get_by_label("Description")).to_have_value("The new checkout flow")  # kept as typed
    browser.shot("create-error")
    key.fill(KEY)
    page.get_by_role("button", name="Create flag").click()
    expect(page).to_have_url(re.compile(rf"/ui/flags/{KEY}$"))
    expect(page.get_by_role("status")).to_contain_text(f"flag {KEY} created")


def _environments_production_first(page: Page) -> None:
    headings = page.locator("section.env-card h3").all_inner_texts()
    assert headings == SHOWN_ORDER


def _build_rule(browser: Browser) -> None:
    page = browser.page
    page.get_by_test_id("add-rule-production").click()
    expect(page.get_by_label("Environment", exact=True)).to_have_value("production")
    page.locator("#attribute-0").fill("role")
    page.locator("#op-0").select_option("in")
    page.locator("#values-0").fill("ADMIN, BETA")
    # A second condition, added by the page's script; a number operator given a word.
    page.get_by_role("button", name="Add condition").click()
    second = page.locator(".condition-row").nth(1)
    second.get_by_label("Attribute").fill("age")
    second.get_by_label("Operator").select_option("lt")
    second.get_by_label("Values").fill("old")
    page.get_by_label("Percentage of matching contexts").fill("50")
    expect(page.get_by_test_id("percent-shown")).to_have_text("50 %")
    page.get_by_role("button", name="Save rule").click()

    values = page.locator("#values-1")
    expect(values).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-conditions-1-values")).to_contain_text("takes a number")
    assert values.get_attribute("aria-describedby") == "error-conditions-1-values"
    for other in ("#attribute-0", "#values-0", "#attribute-1", "#percent"):
        assert page.locator(other).get_attribute("aria-invalid") is None, other
    expect(page.locator("#values-0")).to_have_value("ADMIN, BETA")  # what was typed is kept
    expect(page.get_by_label("Percentage of matching contexts")).to_have_value("50")
    browser.shot("rule-error")

    page.locator(".condition-row").nth(1).get_by_role("button", name="Remove").click()
    expect(page.locator(".condition-row")).to_have_count(1)
    browser.shot("rule-builder")
    page.get_by_role("button", name="Save rule").click()
    expect(page).to_have_url(re.compile(rf"/ui/flags/{KEY}$"))
    expect(page.get_by_role("status")).to_contain_text(f"rule 1 of {KEY} in production added")
    rule = page.get_by_test_id("rule-production-0")
    expect(rule).to_contain_text("role is one of ADMIN, BETA")
    expect(rule).to_contain_text("50 % of them by userId")


def _sdk_evaluates_the_rule_as_built(server: SpecFlagServer) -> None:
    stored = server.request("GET", f"/feature-flags/{KEY}").json()["flag"]
    assert stored["environments"]["production"] == {"enabled": True, "rules": [BUILT_RULE]}
    sdk = FlagsClient(server.url, server.client_token, "production", min_retry_delay=0.2)
    try:
        assert sdk.wait_until_ready(10)
        served = {}
        for n in range(200):
            user = str(n)
            on = sdk.is_enabled(KEY, {"userId": user, "role": "ADMIN"})
            assert on is in_rollout(KEY, user, 50), user  # Unleash's bucketing, half of them
            served[user] = on
            assert sdk.is_enabled(KEY, {"userId": user, "role": "USER"}) is False
        assert 60 < sum(served.values()) < 140
        inside = next(user for user, on in served.items() if on)
        evaluation = sdk.evaluate(KEY, {"userId": inside, "role": "BETA"})
        assert (evaluation.value, str(evaluation.reason)) == (True, "SPLIT")
    finally:
        sdk.close(timeout=5)


def _unknown_environment_beside_its_field(browser: Browser, server: SpecFlagServer) -> None:
    """A rule for an environment the spec does not name (a typo in a link) is refused, with a
    suggestion, beside the environment field; nothing is written."""
    page = browser.page
    before = server.version()
    page.goto(f"{server.url}/ui/flags/{KEY}/rule?environment=prodution")
    page.locator("#attribute-0").fill("role")
    page.locator("#values-0").fill("ADMIN")
    page.get_by_role("button", name="Save rule").click()
    environment = page.get_by_label("Environment", exact=True)
    expect(environment).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-environment")).to_contain_text("did you mean 'production'")
    browser.shot("unknown-environment")
    assert server.version() == before


def _search_and_filter(browser: Browser, server: SpecFlagServer) -> None:
    page = browser.page
    banner = {"key": "banner-text", "type": "string", "defaultValue": "", "description": "Homepage banner"}
    assert server.request("POST", "/feature-flags", json=banner).status_code == 201
    page.get_by_role("link", name="Flags", exact=True).click()
    headers = page.locator("table.flag-list thead th[data-testid=env-column]").all_inner_texts()
    assert headers == SHOWN_ORDER
    for key in (KEY, "banner-text"):
        for environment in SHOWN_ORDER:
            expect(page.get_by_test_id(f"toggle-{key}-{environment}")).to_be_visible()
    browser.shot("list")

    def shown() -> list[str]:
        return [t.strip() for t in page.locator("table.flag-list tbody th a").all_inner_texts()]

    page.get_by_role("searchbox", name="Search").fill("homepage")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("flag-count")).to_have_text("1 of 2 flags")
    assert shown() == ["banner-text"]
    browser.shot("search")
    page.get_by_role("searchbox", name="Search").fill("")
    page.get_by_label("Type").select_option("boolean")  # applies at once (the page's script)
    expect(page).to_have_url(re.compile(r"type=boolean"))
    assert shown() == [KEY]
    page.get_by_label("Type").select_option("")
    expect(page).not_to_have_url(re.compile(r"type=boolean"))
    page.get_by_label("State").select_option("off:production")
    expect(page).to_have_url(re.compile(r"state=off%3Aproduction"))
    assert shown() == ["banner-text"]
    # A toggle keeps the filter it was made under.
    page.get_by_test_id("toggle-banner-text-dev").click()
    expect(page.get_by_role("status")).to_contain_text("banner-text is now on in dev")
    expect(page).to_have_url(re.compile(r"state=off%3Aproduction"))
    page.get_by_label("State").select_option("on:production")
    expect(page).to_have_url(re.compile(r"state=on%3Aproduction"))
    assert shown() == [KEY]
    browser.shot("filter")


def _history_diff(browser: Browser) -> None:
    page = browser.page
    page.get_by_role("link", name=KEY, exact=True).click()
    entries = page.get_by_test_id("history-entry")
    expect(entries).to_have_count(3)  # newest first: on in production, the rule, the create
    toggled, ruled, created = (entries.nth(i) for i in range(3))
    expect(toggled).to_contain_text("update by token:ops")
    toggled_rows = toggled.locator("table.diff tbody tr")
    expect(toggled_rows).to_have_count(1)
    assert toggled_rows.locator("th, td").all_inner_texts() == [
        "environments.production.enabled",
        "(none)",
        "true",
    ]
    percent = ruled.locator("tr", has=page.locator("code", has_text="rules[0].rollout.percent"))
    expect(percent.locator("ins")).to_have_text("50")
    value = ruled.locator("tr", has=page.locator("code", has_text="conditions[0].value[1]"))
    expect(value.locator("ins")).to_have_text("BETA")
    expect(created).to_contain_text("create by token:ops")
    expect(created.locator("tr", has=page.locator("code", has_text="description"))).to_contain_text(
        "The new checkout flow"
    )
    page.get_by_role("heading", name="Changes").scroll_into_view_if_needed()
    browser.shot("history")


def _archive_and_revive(browser: Browser) -> None:
    page = browser.page
    page.get_by_role("link", name="Flags", exact=True).click()
    page.get_by_role("link", name="banner-text", exact=True).click()
    page.get_by_role("button", name="Archive").click()  # the confirm dialog is accepted
    expect(page.get_by_role("status")).to_contain_text("banner-text archived")
    expect(page.get_by_test_id("flag-count")).to_have_text("1 of 1 flag")
    page.get_by_label("Archived (1)").check()
    expect(page.get_by_test_id("archived-banner-text")).to_contain_text("token:ops")
    browser.shot("archive")
    page.get_by_test_id("archived-banner-text").get_by_role("button", name="Revive").click()
    expect(page).to_have_url(re.compile(r"/ui/flags/banner-text$"))
    expect(page.get_by_role("status")).to_contain_text("banner-text revived")
    expect(page.get_by_test_id("toggle-banner-text-dev")).to_have_attribute("aria-pressed", "true")
    browser.shot("revived")


def _negation_case_and_payload(browser: Browser, server: SpecFlagServer) -> None:
    page = browser.page
    key = "eu-theme"
    assert (
        server.request("POST", "/feature-flags", json={"key": key, "defaultValue": False}).status_code == 201
    )
    page.goto(f"{server.url}/ui/flags/{key}/rule?environment=production")
    page.locator("#attribute-0").fill("country")
    page.locator("#values-0").fill("nl, de")
    page.locator("#case_insensitive-0").check()
    page.get_by_role("button", name="Add condition").click()
    second = page.locator(".condition-row").nth(1)
    second.get_by_label("Attribute").fill("plan")
    second.get_by_label("Operator").select_option("eq")
    second.get_by_label("Values").fill("free")
    second.get_by_label("Negate (NOT)").check()
    page.get_by_label("variants, by weight").check()
    variant = page.locator(".variant-row").first
    variant.get_by_label("Variant").fill("blue")
    variant.get_by_label("Value (boolean)").fill("true")
    variant.get_by_label("Weight").fill("1")
    variant.get_by_label("Payload type").select_option("number")
    variant.get_by_label("Payload", exact=True).fill("twelve")
    page.get_by_role("button", name="Save rule").click()

    payload = page.locator("#variant-payload-0")
    expect(payload).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_test_id("error-variants-0-payload")).to_contain_text("a number payload is a number")
    # What was typed is kept, the checkboxes on their rows included.
    expect(page.locator(".condition-row").nth(0).get_by_label("Ignore case")).to_be_checked()
    expect(page.locator(".condition-row").nth(1).get_by_label("Negate (NOT)")).to_be_checked()
    expect(page.locator(".condition-row").nth(0).get_by_label("Negate (NOT)")).not_to_be_checked()
    browser.shot("payload-error")
    page.locator(".variant-row").first.get_by_label("Payload type").select_option("json")
    payload.fill('{\n  "color": "blue"\n}')
    page.get_by_role("button", name="Save rule").click()
    expect(page).to_have_url(re.compile(rf"/ui/flags/{key}$"))
    rule = page.get_by_test_id("rule-production-0")
    expect(rule).to_contain_text("country is one of nl, de (any case)")
    expect(rule).to_contain_text("NOT plan equals free")
    expect(rule).to_contain_text("json payload")
    browser.shot("negated-rule")

    stored = server.request("GET", f"/feature-flags/{key}").json()["flag"]
    assert stored["environments"]["production"]["rules"] == [
        {
            "conditions": [
                {"attribute": "country", "op": "in", "value": ["nl", "de"], "caseInsensitive": True},
                {"attribute": "plan", "op": "eq", "value": "free", "inverted": True},
            ],
            "split": {
                "variants": [
                    {
                        "name": "blue",
                        "value": True,
                        "weight": 1,
                        "payload": {"type": "json", "value": '{\n  "color": "blue"\n}'},
                    }
                ]
            },
        }
    ]
    page.get_by_test_id(f"toggle-{key}-production").click()
    expect(page.get_by_role("status")).to_contain_text(f"{key} is now on in production")

    def frontend(country: str, plan: str) -> list[dict[str, object]]:
        query = {"userId": "7", "properties[country]": country, "properties[plan]": plan}
        answer = server.request("GET", "/api/frontend", token=server.client_token, params=query,
                                headers={"X-Shipyard-Environment": "production"})  # fmt: skip
        assert answer.status_code == 200, answer.text
        return [t for t in answer.json()["toggles"] if t["name"] == key]

    (toggle,) = frontend("NL", "pro")
    variant = toggle["variant"]
    assert isinstance(variant, dict)
    assert (variant["name"], variant["enabled"]) == ("blue", True)
    assert variant["payload"] == {"type": "json", "value": '{\n  "color": "blue"\n}'}
    assert frontend("De", "team") != []
    assert frontend("nl", "free") == []  # NOT plan equals free
    assert frontend("FR", "pro") == []
