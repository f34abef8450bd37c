"""The flag pages' forms as a browser without JavaScript posts them, over the real app and a real
SQLite store (no browser): the rule builder with its spare empty rows, a split of variants,
negated and case-insensitive conditions and variant payloads (evaluated through the real
evaluation routes, refused beside their fields, and every rule the builder can show saved back
unchanged from its own page), the settings and an environment's value with errors beside their
fields, escaping, the archive, and the list's filters. The browser's side is
tests/e2e/test_dashboard_flags.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.flags import FlagStore
from shipyard.server import ServerConfig, create_app
from shipyard.tokens import create_token
from support.flag_rules import builder_rules

ORIGIN = "http://testserver"
HTML = {"Accept": "text/html", "Origin": ORIGIN}
SPEC = "name: shop\nenvironments:\n  staging: {}\n  production: {}\n"


@dataclass
class Pages:
    client: TestClient
    store: FlagStore
    client_token: str

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
        client_token = create_token(session, "web", "client")
    store = app.state.live.store
    store.create({"key": "colour", "type": "string", "default_value": "grey"}, "token:seed")
    store.create({"key": "kill", "kind": "kill-switch", "default_value": False}, "token:seed")
    with TestClient(app, base_url=ORIGIN, follow_redirects=False) as client:
        response = client.post("/ui/login", data={"token": admin}, headers={"Origin": ORIGIN})
        assert response.status_code == 303
        yield Pages(client, store, client_token)
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
    overridden = {
        "split": {
            "variants": [
                {
                    "name": "a",
                    "value": "x",
                    "weight": 1,
                    "overrides": [{"attribute": "userId", "values": ["7"]}],
                }
            ]
        }
    }
    patch = {"environments": {"staging": {"rules": [overridden]}}}
    pages.store.patch("colour", patch, "token:seed")
    edit = pages.get("/ui/flags/colour/rule", environment="staging", index="0")
    assert re.search(r'data-testid="builder-drops">\s*<p>[^<]*variant a: overrides', edit)


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


# --- negated and case-insensitive conditions, variant payloads ------------------------------------


class _FormData(HTMLParser):
    """What a browser without JavaScript posts from the page's form `testid` (HTML's form data set):
    in document order, text and hidden inputs, checked checkboxes and radios, each select's selected
    option (else its first), and textareas, less the one newline HTML drops right after the start
    tag and with every line end as CRLF."""

    def __init__(self, testid: str) -> None:
        super().__init__(convert_charrefs=True)
        self.testid = testid
        self.inside = False
        self.fields: dict[str, list[str]] = {}
        self._select: tuple[str, list[tuple[str | None, str, bool]]] | None = None
        self._option: list[Any] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def _add(self, name: str | None, value: str) -> None:
        if name:
            self.fields.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("data-testid") == self.testid:
            self.inside = True
        if not self.inside:
            return
        kind = a.get("type", "text")
        if tag == "input" and kind in ("checkbox", "radio"):
            if "checked" in a:
                self._add(a.get("name"), a.get("value", "on"))
        elif tag == "input" and kind not in ("submit", "button"):
            self._add(a.get("name"), a.get("value", ""))
        elif tag == "select":
            self._select = (a.get("name", ""), [])
        elif tag == "option" and self._select is not None:
            self._option = [a.get("value"), "", "selected" in a]
        elif tag == "textarea":
            self._textarea = (a.get("name", ""), [])

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option[1] += data
        elif self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "option" and self._option is not None and self._select is not None:
            value, text, selected = self._option
            self._select[1].append((value, text, selected))
            self._option = None
        elif tag == "select" and self._select is not None:
            name, options = self._select
            chosen = next((o for o in options if o[2]), options[0])
            self._add(name, chosen[0] if chosen[0] is not None else chosen[1].strip())
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            name, parts = self._textarea
            text = "".join(parts).removeprefix("\n")
            self._add(name, text.replace("\r\n", "\n").replace("\n", "\r\n"))
            self._textarea = None


def _form_data(page: str, testid: str = "rule-builder") -> dict[str, list[str]]:
    parser = _FormData(testid)
    parser.feed(page)
    assert parser.fields, f"no form {testid!r} on the page"
    return parser.fields


def _rules(pages: Pages, key: str, environment: str = "production") -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = pages.store.get(key).data["environments"][environment]["rules"]
    return rules


def _evaluate(pages: Pages, key: str, **context: str) -> dict[str, Any]:
    """The flag's answer through `GET /feature-flags/{key}/value`, as an app with a client token asks."""
    response = pages.client.get(
        f"/feature-flags/{key}/value",
        params={"environment": "production", **context},
        headers={"Authorization": f"Bearer {pages.client_token}"},
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_negated_and_case_insensitive_conditions_from_the_builder(pages: Pages) -> None:
    pages.store.create({"key": "eu-banner", "default_value": False}, "token:seed")
    form = _form_data(pages.get("/ui/flags/eu-banner/rule", environment="production"))
    form.update(
        version=[_version(pages, "eu-banner")],
        attribute=["country", "plan", ""],
        op=["in", "eq", "in"],
        values=["nl, de", "free", ""],
        # The spare row is key 1 here; a browser's script keys a row it adds after the others.
        condition_row=["0", "1", "2"],
        case_insensitive=["0"],
        inverted=["1"],
        value=["true"],
    )
    status, location = pages.post("/ui/flags/eu-banner/rule", form)
    assert (status, location) == (303, "/ui/flags/eu-banner")
    assert _rules(pages, "eu-banner") == [
        {
            "conditions": [
                {"attribute": "country", "op": "in", "value": ["nl", "de"], "case_insensitive": True},
                {"attribute": "plan", "op": "eq", "value": "free", "inverted": True},
            ],
            "value": True,
        }
    ]
    page = pages.get("/ui/flags/eu-banner")
    assert "country is one of nl, de (any case)" in page
    assert "NOT plan equals free" in page
    # The form shows them again, checked on their rows.
    edit = pages.get("/ui/flags/eu-banner/rule", environment="production", index="0")
    assert re.search(r'id="case_insensitive-0" name="case_insensitive" value="0" data-row-key checked', edit)
    assert re.search(r'id="inverted-1" name="inverted" value="1" data-row-key checked', edit)
    assert not re.search(r'id="(inverted-0|case_insensitive-1)"[^>]* checked', edit)
    assert "builder-drops" not in edit

    status, _ = pages.post(
        "/ui/flags/eu-banner/toggle", {"environment": "production", "enabled": "true", "next": ""}
    )
    assert status == 303
    answers = {
        (country, plan): _evaluate(pages, "eu-banner", country=country, plan=plan)
        for country, plan in [("NL", "pro"), ("De", "team"), ("nl", "free"), ("FR", "pro")]
    }
    assert {k: v["value"] for k, v in answers.items()} == {
        ("NL", "pro"): True,  # any case
        ("De", "team"): True,
        ("nl", "free"): False,  # NOT plan equals free
        ("FR", "pro"): False,
    }
    assert answers["NL", "pro"]["reason"] == "TARGETING_MATCH"
    assert answers["FR", "pro"]["reason"] == "DEFAULT"


def test_variant_payloads_from_the_builder_reach_the_sdks(pages: Pages) -> None:
    pages.store.create({"key": "theme", "default_value": False}, "token:seed")
    form = _form_data(pages.get("/ui/flags/theme/rule", environment="production"))
    config = '{\n  "color": "blue",\n  "sizes": [1, 2]\n}'
    form.update(
        version=[_version(pages, "theme")],
        attribute=[""],
        values=[""],
        serve=["split"],
        variant_name=["blue", "big", ""],
        variant_value=["true", "true", ""],
        variant_weight=["1", "0", ""],
        variant_payload_type=["json", "number", ""],
        variant_payload=[config.replace("\n", "\r\n"), "12.5", ""],
    )
    status, location = pages.post("/ui/flags/theme/rule", form)
    assert (status, location) == (303, "/ui/flags/theme")
    assert _rules(pages, "theme") == [
        {
            "split": {
                "variants": [
                    {
                        "name": "blue",
                        "value": True,
                        "weight": 1,
                        "payload": {"type": "json", "value": config},
                    },
                    {
                        "name": "big",
                        "value": True,
                        "weight": 0,
                        "payload": {"type": "number", "value": "12.5"},
                    },
                ]
            }
        }
    ]
    # The form shows the payloads again, as saved.
    again = _form_data(pages.get("/ui/flags/theme/rule", environment="production", index="0"))
    assert again["variant_payload_type"] == ["json", "number", ""]
    assert again["variant_payload"] == [config.replace("\n", "\r\n"), "12.5", ""]

    pages.post("/ui/flags/theme/toggle", {"environment": "production", "enabled": "true", "next": ""})
    # Unleash's frontend API (what its browser SDKs read) reports the served variant's payload.
    response = pages.client.get(
        "/api/frontend",
        params={"userId": "7"},
        headers={"Authorization": pages.client_token, "X-Shipyard-Environment": "production"},
    )
    assert response.status_code == 200, response.text
    (toggle,) = [t for t in response.json()["toggles"] if t["name"] == "theme"]
    assert toggle["variant"]["name"] == "blue"
    assert toggle["variant"]["payload"] == {"type": "json", "value": config}
    assert json.loads(toggle["variant"]["payload"]["value"]) == {"color": "blue", "sizes": [1, 2]}


def test_payloads_and_case_refused_beside_their_fields(pages: Pages) -> None:
    pages.store.create({"key": "refusals", "default_value": False}, "token:seed")
    version = _version(pages, "refusals")
    form = _form_data(pages.get("/ui/flags/refusals/rule", environment="production"))
    form.update(
        version=[version],
        attribute=["age"],
        op=["lt"],
        values=["30"],
        condition_row=["0"],
        case_insensitive=["0"],
        serve=["split"],
        variant_name=["a", "b", "c"],
        variant_value=["true", "true", "false"],
        variant_weight=["1", "1", "1"],
        variant_payload_type=["json", "number", ""],
        variant_payload=["{colour: <b>blue</b>}", "twelve", "7"],
    )
    status, page = pages.post("/ui/flags/refusals/rule", form)
    assert status == 422
    assert pages.store.get("refusals").version == int(version)  # nothing written
    # The text's own problem (a payload without a type) is found first, alone.
    assert re.findall(r'data-testid="error-([a-z0-9_-]+)"', page) == ["variants-2-payload_type"]
    form["variant_payload"] = ["{colour: <b>blue</b>}", "twelve", ""]
    status, page = pages.post("/ui/flags/refusals/rule", form)
    assert status == 422
    errors = dict(re.findall(r'data-testid="error-([a-z0-9_-]+)">([^<]*)<', page))
    assert set(errors) == {"conditions-0-case_insensitive", "variants-0-payload", "variants-1-payload"}
    assert "applies to string operators, not to &#39;lt&#39;" in errors["conditions-0-case_insensitive"]
    assert errors["variants-0-payload"].startswith("a json payload is JSON: Expecting property name")
    assert "not &#39;twelve&#39;" in errors["variants-1-payload"]
    assert re.search(r'id="case_insensitive-0"[^>]* checked aria-invalid="true"', page)
    assert re.search(r'id="variant-payload-0"[^>]* aria-invalid="true"[^>]*>\n\{colour: &lt;b&gt;', page)
    assert re.search(r'id="variant-payload-1"[^>]* aria-invalid="true"[^>]*>\ntwelve</textarea>', page)
    assert "<b>blue</b>" not in page
    assert pages.store.get("refusals").version == int(version)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule=builder_rules(segments=st.just("beta")))
def test_every_rule_the_builder_shows_is_saved_back_unchanged(pages: Pages, rule: dict[str, Any]) -> None:
    """Through the real pages: the rule is stored, its builder page is read as a browser reads it,
    and posted back as the browser would post it untouched."""
    snapshot = pages.store.snapshot()
    if not snapshot.segments:
        beta = {"conditions": [{"attribute": "plan", "op": "eq", "value": "b"}]}
        pages.store.put_segment("beta", beta, "token:seed")
    if snapshot.flag("round-trip") is None:
        pages.store.create({"key": "round-trip", "default_value": False}, "token:seed")
    pages.store.patch("round-trip", {"environments": {"production": {"rules": [rule]}}}, "token:seed")
    stored = _rules(pages, "round-trip")
    page = pages.get("/ui/flags/round-trip/rule", environment="production", index="0")
    assert "builder-drops" not in page
    status, location = pages.post("/ui/flags/round-trip/rule", _form_data(page))
    assert (status, location) == (303, "/ui/flags/round-trip"), location
    assert _rules(pages, "round-trip") == stored
