"""The flag pages' forms as a browser without JavaScript posts them, over the real app and a real
SQLite store (no browser): the rule builder with its spare empty rows, a split of variants, the
settings and an environment's value with errors beside their fields, escaping, the archive, and the
list's filters. The browser's side is tests/e2e/test_dashboard_flags.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shipyard.flags import FlagStore
from shipyard.server import ServerConfig, create_app
from shipyard.tokens import create_token

ORIGIN = "http://testserver"
HTML = {"Accept": "text/html", "Origin": ORIGIN}
SPEC = "name: shop\nenvironments:\n  staging: {}\n  production: {}\n"


@dataclass
class Pages:
    client: TestClient
    store: FlagStore

    def post(self, path: str, data: dict[str, Any]) -> tuple[int, str]:
        response = self.client.post(path, data=data, headers=HTML)
        return response.status_code, response.headers.get("location") or response.text

    def get(self, path: str, **params: str) -> str:
        response = self.client.get(path, params=params, headers=HTML)
        assert response.status_code == 200, response.text[:300]
        return response.text


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    base = tmp_path_factory.mktemp("flag-forms")
    spec = base / "shipyard.yaml"
    spec.write_text(SPEC)
    app = create_app(
        ServerConfig(
            database_url=f"sqlite:///{base / 'state.db'}",
            environment="staging",
            spec=spec,
            job_log_dir=base / "jobs",
        )
    )
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin")
    store = app.state.live.store
    store.create({"key": "colour", "type": "string", "default_value": "grey"}, "token:seed")
    store.create({"key": "kill", "kind": "kill-switch", "default_value": False}, "token:seed")
    with TestClient(app, base_url=ORIGIN, follow_redirects=False) as client:
        response = client.post("/ui/login", data={"token": admin}, headers={"Origin": ORIGIN})
        assert response.status_code == 303
        yield Pages(client, store)
    app.state.engine.dispose()


def _version(pages: Pages, key: str) -> str:
    return str(pages.store.get(key).version)


def test_a_split_rule_from_the_builder_without_javascript(pages: Pages) -> None:
    form = pages.get("/ui/flags/colour/rule", environment="production")
    assert form.count('name="attribute"') == 2  # one to fill, one spare
    assert form.count('name="variant_name"') == 1
    posted = {
        "version": _version(pages, "colour"),
        "index": "",
        "environment": "production",
        "name": "<b>beta</b>",
        "attribute": ["country", ""],  # the spare row left empty
        "op": ["in", "in"],
        "values": ["NL, <script>x</script>", ""],
        "percent": "100",
        "stickiness": "userId",
        "serve": "split",
        "value": "",
        "variant_name": ["blue", "red", ""],
        "variant_value": ["#00f", "#f00", ""],
        "variant_weight": ["30", "70", ""],
    }
    status, location = pages.post("/ui/flags/colour/rule", posted)
    assert (status, location) == (303, "/ui/flags/colour")
    (rule,) = pages.store.get("colour").data["environments"]["production"]["rules"]
    assert rule == {
        "name": "<b>beta</b>",
        "conditions": [{"attribute": "country", "op": "in", "value": ["NL", "<script>x</script>"]}],
        "split": {
            "variants": [
                {"name": "blue", "value": "#00f", "weight": 30},
                {"name": "red", "value": "#f00", "weight": 70},
            ]
        },
    }
    page = pages.get("/ui/flags/colour")
    assert "<script>x</script>" not in page
    assert "<b>beta</b>" not in page
    assert "blue = #00f (30 %); red = #f00 (70 %)" in page
    # Editing shows the rule as it is, the variants' rows filled in.
    edit = pages.get("/ui/flags/colour/rule", environment="production", index="0")
    assert 'value="NL, &lt;script&gt;x&lt;/script&gt;"' in edit
    assert re.search(r'id="serve-split" name="serve" value="split" checked', edit)
    assert 'value="70"' in edit
    assert "builder-drops" not in edit
    # A rule with parts the builder has no field for says so before it can drop them.
    inverted = {
        "conditions": [{"attribute": "country", "op": "in", "value": ["NL"], "inverted": True}],
        "value": "x",
    }
    patch = {"environments": {"staging": {"rules": [inverted]}}}
    pages.store.patch("colour", patch, "token:seed")
    edit = pages.get("/ui/flags/colour/rule", environment="staging", index="0")
    assert re.search(r'data-testid="builder-drops">\s*<p>[^<]*condition 1: inverted', edit)


def test_settings_and_an_environments_value_refused_beside_their_fields(pages: Pages) -> None:
    version = _version(pages, "kill")
    status, body = pages.post(
        "/ui/flags/kill/settings",
        {"version": version, "description": "stop it", "kind": "kill-switch", "default_value": "maybe"},
    )
    assert status == 422
    assert re.search(r'id="default_value" name="default_value" value="maybe" aria-invalid="true"', body)
    assert 'id="error-default_value"' in body
    assert "true or false" in body
    assert 'value="stop it"' in body  # kept as typed
    assert pages.store.get("kill").version == int(version)

    status, body = pages.post(
        "/ui/flags/kill/value", {"version": version, "environment": "staging", "value": "7"}
    )
    assert status == 422
    assert re.search(r'id="value-staging" name="value" value="7" aria-invalid="true"', body)
    status, _ = pages.post(
        "/ui/flags/kill/value", {"version": version, "environment": "staging", "value": "true"}
    )
    assert status == 303
    assert pages.store.get("kill").data["environments"]["staging"] == {"value": True}

    # A stale version is the form's error (read it again), not a lost update.
    status, body = pages.post(
        "/ui/flags/kill/settings",
        {"version": version, "description": "", "kind": "kill-switch", "default_value": "false"},
    )
    assert status == 422
    assert "read it again" in body


def test_production_first_then_the_specs_order(pages: Pages) -> None:
    page = pages.get("/ui/flags/kill")
    assert re.findall(r'<h3 id="env-([a-z]+)"', page) == ["production", "staging"]
    listing = pages.get("/ui/flags")
    assert re.findall(r'data-testid="env-column">([a-z]+)<', listing) == ["production", "staging"]


def test_filters_and_the_archive(pages: Pages) -> None:
    def keys(page: str) -> list[str]:
        return re.findall(r'data-testid="flag-row-([a-z-]+)"', page)

    assert keys(pages.get("/ui/flags", type="string")) == ["colour"]
    assert keys(pages.get("/ui/flags", q="COL")) == ["colour"]
    assert keys(pages.get("/ui/flags", state="off:production")) == ["colour", "kill"]

    pages.store.create({"key": "old-banner", "type": "string", "default_value": "hi"}, "token:seed")
    status, location = pages.post("/ui/flags/old-banner/archive", {"version": "1"})
    assert (status, location) == (303, "/ui/flags")
    assert "old-banner" not in keys(pages.get("/ui/flags"))
    archive = pages.get("/ui/flags", archived="1")
    assert 'data-testid="archived-old-banner"' in archive
    missing = pages.client.get("/ui/flags/old-banner", headers=HTML)
    assert missing.status_code == 404
    assert "it is archived" in missing.text
    status, location = pages.post("/ui/flags/old-banner/revive", {})
    assert (status, location) == (303, "/ui/flags/old-banner")
    assert pages.store.get("old-banner").data == {
        "key": "old-banner",
        "type": "string",
        "default_value": "hi",
    }
    assert 'data-testid="archived-old-banner"' not in pages.get("/ui/flags", archived="1")
    status, location = pages.post("/ui/flags/nothing/revive", {})
    assert (status, location) == (303, "/ui/flags?archived=1")
