"""The dashboard's pages over the real app and a real SQLite state store (no browser).

Login and logout, 303 for browsers and 401 for everything else without a session, refusal of
cross-site POSTs, every page rendering with real data, and no token on any page.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from shipyard.rollout import Plan, start
from shipyard.server import ServerConfig, create_app
from shipyard.spec import load_spec
from shipyard.state import AuditRow, RolloutRow
from shipyard.tokens import create_token

ORIGIN = "http://testserver"
HTML = {"Accept": "text/html,application/xhtml+xml"}
SPEC = """\
name: shop
services:
  web: {{role: web, image: "example/web:1", run: "exec python3 -m http.server 8080", port: 8080}}
backup:
  repository: ./repo
  password: ${{env:SHOP_RESTIC_PASSWORD}}
  sources: {{volumes: [{files}]}}
dr:
  rto: 15m
  rpo: 5m
environments:
  test: {{}}
"""
FLAG = {
    "key": "new-checkout",
    "description": "<script>alert(1)</script> the new checkout",
    "type": "boolean",
    "default_value": False,
    "environments": {"test": {"enabled": False}},
}
PAGES = [
    "/ui/services",
    "/ui/flags",
    "/ui/flags/new-checkout",
    "/ui/backups",
    "/ui/dr",
    "/ui/jobs",
    "/ui/activity",
]


@dataclass
class Dashboard:
    client: TestClient
    admin: str
    reader: str
    spec: Path

    def login(self, token: str | None = None) -> None:
        response = self.client.post(
            "/ui/login", data={"token": token or self.admin, "next": "/ui/flags"}, headers={"Origin": ORIGIN}
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/ui/flags"

    def post(self, path: str, data: dict[str, str] | None = None) -> tuple[int, str]:
        """A same-origin POST; returns the status and where it redirects (or the body)."""
        response = self.client.post(path, data=data or {}, headers={"Origin": ORIGIN, **HTML})
        return response.status_code, response.headers.get("location") or response.text

    def flag_env(self) -> dict[str, object]:
        store = self.client.app.state.live.store  # type: ignore[attr-defined]
        env: dict[str, object] = store.get("new-checkout").data["environments"]["test"]
        return env

    def audit(self) -> list[AuditRow]:
        with self.client.app.state.sessions() as session:  # type: ignore[attr-defined]
            return list(session.scalars(select(AuditRow).order_by(AuditRow.id)))


def _enabled(dashboard: Dashboard) -> bool:
    return bool(dashboard.flag_env().get("enabled", False))


@pytest.fixture
def dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dashboard]:
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text("hello")
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC.format(files=files))
    monkeypatch.setenv("SHOP_RESTIC_PASSWORD", "correct horse battery staple")
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / ".shipyard"))
    monkeypatch.chdir(tmp_path)
    app = create_app(
        ServerConfig(
            database_url=f"sqlite:///{tmp_path / 'state.db'}",
            environment="test",
            spec=spec,
            job_log_dir=tmp_path / "jobs",
        )
    )
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin")
        reader = create_token(session, "web", "client")
    app.state.live.store.create(FLAG, "token:seed")
    with TestClient(app, base_url=ORIGIN, follow_redirects=False) as client:
        yield Dashboard(client, admin, reader, spec)
    app.state.engine.dispose()


def test_login_sets_a_strict_httponly_cookie_scoped_to_ui_and_logout_clears_it(dashboard: Dashboard) -> None:
    response = dashboard.client.post(
        "/ui/login", data={"token": dashboard.admin, "next": "/ui/flags"}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Path=/ui" in cookie
    assert dashboard.client.get("/ui/flags", headers=HTML).status_code == 200

    status, location = dashboard.post("/ui/logout")
    assert (status, location) == (303, "/ui/login")
    assert dashboard.client.get("/ui/flags", headers=HTML).status_code == 303


@pytest.mark.parametrize("which", ["client", "garbage", "empty"])
def test_login_refuses_anything_but_an_admin_token_and_never_echoes_it(
    dashboard: Dashboard, which: str
) -> None:
    token = {"client": dashboard.reader, "garbage": "shy_admin_not-a-real-token", "empty": ""}[which]
    response = dashboard.client.post("/ui/login", data={"token": token}, headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert "not a valid admin token" in response.text
    assert "set-cookie" not in response.headers
    if token:
        assert token not in response.text
    assert dashboard.client.get("/ui/services", headers=HTML).status_code == 303


def test_login_goes_back_only_to_dashboard_pages(dashboard: Dashboard) -> None:
    for target in ("//evil.example/ui", "https://evil.example/", "/feature-flags", "/ui\\..\\x"):
        response = dashboard.client.post(
            "/ui/login", data={"token": dashboard.admin, "next": target}, headers={"Origin": ORIGIN}
        )
        assert response.headers["location"] == "/ui/", target


def test_without_a_session_browsers_are_sent_to_login_and_others_get_401(dashboard: Dashboard) -> None:
    for path in [*PAGES, "/ui/", "/ui/jobs/1", "/ui/services/web/release", "/ui/no-such-page"]:
        browser = dashboard.client.get(path, headers=HTML)
        assert browser.status_code == 303, path
        assert browser.headers["location"].startswith("/ui/login?next=")
        script = dashboard.client.get(path, headers={"Accept": "application/json"})
        assert script.status_code == 401, path
        assert script.headers["content-type"].startswith("application/problem+json")
    # A bearer token is not a dashboard session (the dashboard is for browsers).
    api_style = dashboard.client.get("/ui/flags", headers={"Authorization": f"Bearer {dashboard.admin}"})
    assert api_style.status_code == 401
    status, location = dashboard.post(
        "/ui/flags/new-checkout/toggle", {"environment": "test", "enabled": "true"}
    )
    assert (status, location) == (303, "/ui/login?next=%2Fui%2F")  # an action is not replayed after login
    assert not _enabled(dashboard)
    # The login page itself and the static files need no session.
    assert dashboard.client.get("/ui/login", headers=HTML).status_code == 200
    assert dashboard.client.get("/ui/static/dashboard.css").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Referer": "http://evil.example/ui/flags"}],
    ids=["none", "other-origin", "null-origin", "other-referer"],
)
def test_a_post_from_another_site_is_refused_and_changes_nothing(
    dashboard: Dashboard, headers: dict[str, str]
) -> None:
    dashboard.login()
    before = len(dashboard.audit())
    response = dashboard.client.post(
        "/ui/flags/new-checkout/toggle", data={"environment": "test", "enabled": "true"}, headers=headers
    )
    assert response.status_code == 403
    assert not _enabled(dashboard)
    assert len(dashboard.audit()) == before
    # Login is guarded too (login CSRF), and a same-origin Referer is enough for a browser without Origin.
    assert (
        dashboard.client.post("/ui/login", data={"token": dashboard.admin}, headers=headers).status_code
        == 403
    )
    referer = dashboard.client.post(
        "/ui/flags/new-checkout/toggle",
        data={"environment": "test", "enabled": "true"},
        headers={"Referer": f"{ORIGIN}/ui/flags"},
    )
    assert referer.status_code == 303


def test_toggling_a_flag_goes_through_the_store_and_is_audited_with_the_token(dashboard: Dashboard) -> None:
    dashboard.login()
    status, location = dashboard.post(
        "/ui/flags/new-checkout/toggle", {"environment": "test", "enabled": "true"}
    )
    assert (status, location) == (303, "/ui/flags")
    store = dashboard.client.app.state.live.store  # type: ignore[attr-defined]
    assert store.get("new-checkout").data["environments"]["test"]["enabled"] is True
    entry = dashboard.audit()[-1]
    assert (entry.actor, entry.action, entry.target) == ("token:ops", "update", "new-checkout")
    page = dashboard.client.get("/ui/flags", headers=HTML).text
    assert "new-checkout is now on in test" in page  # the one-time message
    assert 'aria-pressed="true"' in page
    assert "new-checkout is now on in test" not in dashboard.client.get("/ui/flags", headers=HTML).text


def test_rules_are_validated_and_the_errors_shown_next_to_the_form(dashboard: Dashboard) -> None:
    dashboard.login()
    store = dashboard.client.app.state.live.store  # type: ignore[attr-defined]
    version = str(store.get("new-checkout").version)

    status, body = dashboard.post(
        "/ui/flags/new-checkout/rules", {"environment": "test", "rules": "[{", "version": version}
    )
    assert status == 422
    assert "not JSON" in body
    assert 'aria-invalid="true"' in body
    assert "[{" in body  # what was typed is kept for fixing

    bad = '[{"conditions": [{"attribute": "role", "op": "in", "value": "ADMIN"}], "value": true}]'
    status, body = dashboard.post(
        "/ui/flags/new-checkout/rules", {"environment": "test", "rules": bad, "version": version}
    )
    assert status == 422
    assert "takes a list" in body
    assert store.get("new-checkout").data["environments"]["test"].get("rules") is None

    good = '[{"conditions": [{"attribute": "role", "op": "in", "value": ["ADMIN"]}], "value": true}]'
    status, location = dashboard.post(
        "/ui/flags/new-checkout/rules", {"environment": "test", "rules": good, "version": version}
    )
    assert (status, location) == (303, "/ui/flags/new-checkout")
    assert store.get("new-checkout").data["environments"]["test"]["rules"][0]["value"] is True

    # A form read before that change is stale: a conflict, shown, not a lost update.
    status, body = dashboard.post(
        "/ui/flags/new-checkout/rules", {"environment": "test", "rules": "[]", "version": version}
    )
    assert status == 422
    assert "read it again" in body
    page = dashboard.client.get("/ui/flags/new-checkout", headers=HTML).text
    assert "token:ops" in page  # the flag's audit


def test_actions_with_bad_input_start_nothing_and_say_why(dashboard: Dashboard) -> None:
    dashboard.login()
    status, location = dashboard.post(
        "/ui/services/web/deploy", {"version": "v2; rm -rf /", "strategy": "canary"}
    )
    assert (status, location) == (303, "/ui/services")
    assert "is not valid" in dashboard.client.get("/ui/services", headers=HTML).text
    status, _ = dashboard.post("/ui/dr/drills", {"mode": "everything"})
    assert "drill mode" in dashboard.client.get("/ui/dr", headers=HTML).text
    status, _ = dashboard.post("/ui/services/web/promote")
    assert "never been released" in dashboard.client.get("/ui/services", headers=HTML).text
    status, _ = dashboard.post("/ui/services/web/frobnicate")
    assert "unknown command" in dashboard.client.get("/ui/services", headers=HTML).text
    assert dashboard.client.app.state.jobs.recent() == []  # type: ignore[attr-defined]


def _seed_release(dashboard: Dashboard) -> None:
    """A canary release as the controller stores it after its first step (the real strategy's state)."""
    stack = load_spec(dashboard.spec).stack("test")
    plan = Plan(
        service="web", strategy="canary", stable="v1", candidate="v2", instances=1, policy=stack.rollout,
        has_migration=False,
    )  # fmt: skip
    state = start(plan, time.time())
    with dashboard.client.app.state.sessions() as session, session.begin():  # type: ignore[attr-defined]
        session.add(
            RolloutRow(
                service="web", environment="test", target="local", strategy="canary", stable="v1",
                candidate="v2", phase=str(state.phase), actor="token:ops", stack={}, state=state.to_data(),
            )
        )  # fmt: skip


def test_every_page_renders_with_real_data_and_shows_no_token(dashboard: Dashboard) -> None:
    dashboard.login()
    _seed_release(dashboard)
    status, location = dashboard.post("/ui/backups", {"kind": "files"})
    assert status == 303, location
    assert location.startswith("/ui/jobs/"), location
    job_id = int(location.rsplit("/", 1)[1])
    view = dashboard.client.app.state.jobs.wait(job_id, timeout_s=60)  # type: ignore[attr-defined]
    assert view.state == "succeeded", dashboard.client.app.state.jobs.log_tail(job_id)  # type: ignore[attr-defined]

    bodies = {}
    for path in [*PAGES, f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/log", "/ui/services/web/release"]:
        response = dashboard.client.get(path, headers=HTML)
        assert response.status_code == 200, (path, response.text[:500])
        assert response.headers["content-type"].startswith("text/html")
        bodies[path] = response.text
        for secret in (dashboard.admin, dashboard.reader, dashboard.admin[:14] + dashboard.admin[14:30]):
            assert secret not in response.text, path
        assert "correct horse" not in response.text
    assert "v2" in bodies["/ui/services"]
    assert "v1" in bodies["/ui/services"]
    assert 'action="/ui/services/web/abort"' in bodies["/ui/services"]
    assert "Skip to content" in bodies["/ui/services"]
    assert "<script>alert(1)</script>" not in bodies["/ui/flags"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in bodies["/ui/flags"]
    assert re.search(r'data-testid="set-state-[0-9-a-f]+">complete<', bodies["/ui/backups"])
    assert "Verify" in bodies["/ui/backups"]
    assert '<s class="state-failed"' not in bodies["/ui/backups"]  # a complete set's artefacts are intact
    assert "succeeded" in bodies[f"/ui/jobs/{job_id}/log"]
    activity = bodies["/ui/activity"]
    assert "job.backup" in activity
    assert "token:ops" in activity
    filtered = dashboard.client.get("/ui/activity", params={"action": "job.backup"}, headers=HTML).text
    assert "job.backup" in filtered
    assert "new-checkout" not in filtered
    assert dashboard.client.get("/ui/jobs/999", headers=HTML).status_code == 404

    # Restore into scratch: a job with exactly the scratch-only request.
    (set_id,) = re.findall(r'data-testid="set-state-([0-9a-f-]+)"', bodies["/ui/backups"])
    status, location = dashboard.post(f"/ui/backups/{set_id}/restore", {"what": "files"})
    assert status == 303, location
    jobs = dashboard.client.app.state.jobs  # type: ignore[attr-defined]
    restored = jobs.wait(int(location.rsplit("/", 1)[1]), timeout_s=60)
    assert restored.state == "succeeded", jobs.log_tail(restored.id)
    assert restored.request == {"kind": "restore", "what": "files", "set_id": set_id, "into": "scratch"}
    dashboard.post("/ui/backups/20990101-000000-ffff/restore", {"what": "files"})
    assert "no backup set" in dashboard.client.get("/ui/backups", headers=HTML).text


def test_the_dashboard_is_not_in_the_openapi_schema(dashboard: Dashboard) -> None:
    paths = dashboard.client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/ui")]
