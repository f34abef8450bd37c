"""Access control over the real app and a real SQLite state store: the dashboard's server-side
sessions (never the token in the cookie; ended at sign-out and when the token is revoked), failed
logins limited per address (429 with Retry-After), logins and token changes in the audit log and
the access log, and the flag audit closed to client tokens."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from shipyard.server import ServerConfig, create_app
from shipyard.server._login_limit import MAX_FAILURES, FailedLogins
from shipyard.state import DashboardSessionRow, utcnow
from shipyard.tokens import create_token
from support.cli import run_cli

ORIGIN = "http://testserver"
COOKIE = "shipyard_session"
FLAG = {"key": "checkout", "type": "boolean", "defaultValue": False}


@dataclass
class Server:
    app: Any
    api: TestClient
    """The one client that ran the app's lifespan (a second would start its threads again)."""
    database_url: str
    admin: str
    reader: str

    def browser(self, address: str = "10.0.0.1") -> TestClient:
        """A client from `address` (each its own failed-login count), following no redirects."""
        return TestClient(self.app, follow_redirects=False, client=(address, 50000))

    def login(self, browser: TestClient, token: str) -> int:
        response = browser.post(
            "/ui/login", data={"token": token, "next": "/ui/flags"}, headers={"Origin": ORIGIN}
        )
        return int(response.status_code)

    def audit(self, action: str) -> list[dict[str, Any]]:
        response = self.api.get(
            "/audit",
            params={"action": action, "limit": 500},
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()
        return entries

    def sessions(self) -> list[DashboardSessionRow]:
        with self.app.state.sessions() as session:
            return list(session.scalars(select(DashboardSessionRow)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database_url = f"sqlite:///{Path(tmp_path_factory.mktemp('access')) / 'state.db'}"
    app = create_app(ServerConfig(database_url=database_url))
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin", created_by="test")
        reader = create_token(session, "web", "client", created_by="test")
    with TestClient(app) as api:  # the lifespan: the live flag set, as `serve` runs it
        yield Server(app, api, database_url, admin, reader)
    app.state.engine.dispose()


def _signed_in(server: Server, token: str, address: str) -> TestClient:
    browser = server.browser(address)
    assert server.login(browser, token) == 303
    return browser


def _page_status(browser: TestClient, cookie: str | None = None) -> int:
    if cookie is not None:
        browser.cookies.set(COOKIE, cookie, path="/ui")
    response = browser.get("/ui/flags", headers={"Accept": "application/json"})
    return int(response.status_code)


def test_the_cookie_holds_a_session_id_not_the_token_and_the_store_keeps_only_its_hash(
    server: Server,
) -> None:
    browser = _signed_in(server, server.admin, "10.0.1.1")
    cookie = browser.cookies[COOKIE]
    assert cookie != server.admin
    assert server.admin not in cookie
    assert len(cookie) >= 32
    assert _page_status(browser) == 200
    stored = {row.session_hash: row for row in server.sessions()}
    row = stored[hashlib.sha256(cookie.encode()).hexdigest()]
    assert cookie not in stored
    assert row.address == "10.0.1.1"
    lifetime = row.expires_at - row.created_at
    assert 0 < lifetime.total_seconds() <= 24 * 3600


def test_signing_out_ends_the_session_on_the_server(server: Server) -> None:
    browser = _signed_in(server, server.admin, "10.0.2.1")
    cookie = browser.cookies[COOKIE]
    assert _page_status(browser) == 200
    out = browser.post("/ui/logout", headers={"Origin": ORIGIN})
    assert out.status_code == 303
    # The old cookie, kept by whoever copied it, is worth nothing now.
    assert _page_status(server.browser("10.0.2.2"), cookie) == 401
    assert hashlib.sha256(cookie.encode()).hexdigest() not in {r.session_hash for r in server.sessions()}


def test_revoking_the_token_ends_its_sessions_at_once(
    server: Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_ACTOR", "alice")
    created = run_cli(
        capsys,
        "flags",
        "token",
        "create",
        "oncall",
        "--scope",
        "admin",
        "--database-url",
        server.database_url,
    )
    assert created.code == 0, created.err
    token = next(word for word in created.out.split() if word.startswith("shy_admin_"))
    browser = _signed_in(server, token, "10.0.3.1")
    other = _signed_in(server, server.admin, "10.0.3.2")
    assert _page_status(browser) == 200

    revoked = run_cli(capsys, "flags", "token", "revoke", "oncall", "--database-url", server.database_url)
    assert revoked.code == 0, revoked.err
    assert _page_status(browser) == 401  # no cache to wait out: the session is gone with the token
    assert _page_status(other) == 200  # another token's sessions are untouched

    # Created and revoked are audited, with who did it and never the token's value.
    (create,) = [e for e in server.audit("token.create") if e["target"] == "oncall"]
    (revoke,) = [e for e in server.audit("token.revoke") if e["target"] == "oncall"]
    assert create["actor"] == revoke["actor"]
    assert "alice" in create["actor"]
    assert create["after"]["scope"] == "admin"
    assert revoke["after"]["sessions_ended"] == 1
    assert token not in json.dumps([create, revoke])
    assert token[14:] not in json.dumps(server.audit(""))


def test_an_expired_session_is_refused(server: Server) -> None:
    browser = _signed_in(server, server.admin, "10.0.4.1")
    digest = hashlib.sha256(browser.cookies[COOKIE].encode()).hexdigest()
    with server.app.state.sessions() as session, session.begin():
        session.execute(
            update(DashboardSessionRow)
            .where(DashboardSessionRow.session_hash == digest)
            .values(expires_at=utcnow())
        )
    assert _page_status(browser) == 401


def test_failed_logins_are_limited_per_address_with_429_and_retry_after(server: Server) -> None:
    attacker = server.browser("10.0.5.1")
    for attempt in range(MAX_FAILURES):
        assert server.login(attacker, f"shy_admin_guess{attempt}") == 401
    refused = attacker.post(
        "/ui/login",
        data={"token": server.admin, "next": "/ui/"},
        headers={"Origin": ORIGIN, "Accept": "text/html"},
    )
    assert refused.status_code == 429  # even the right token: the address must wait
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Too many failed sign-ins" in refused.text
    assert COOKIE not in refused.cookies
    # Another address is not held back by this one.
    assert server.login(server.browser("10.0.5.2"), server.admin) == 303

    failures = [e for e in server.audit("login") if e["target"] == "10.0.5.1"]
    assert len(failures) == MAX_FAILURES  # the refused ones are in the access log, not the audit
    assert {(e["actor"], e["outcome"]) for e in failures} == {("anonymous", "failed")}
    assert "guess" not in json.dumps(failures)


def test_the_limit_forgets_failures_after_its_window() -> None:
    now = [1000.0]
    limit = FailedLogins(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        limit.failed("10.0.6.1")
    assert limit.retry_after("10.0.6.1") == 60
    now[0] += 45
    assert limit.retry_after("10.0.6.1") == 15
    now[0] += 15
    assert limit.retry_after("10.0.6.1") is None
    limit.failed("10.0.6.1")
    limit.succeeded("10.0.6.1")
    assert limit.retry_after("10.0.6.1") is None


def test_logins_and_logouts_are_audited_with_the_address_and_never_the_token(server: Server) -> None:
    browser = server.browser("10.0.7.1")
    assert server.login(browser, server.reader) == 401  # a client token may not sign in
    assert server.login(browser, server.admin) == 303
    assert browser.post("/ui/logout", headers={"Origin": ORIGIN}).status_code == 303
    entries = [e for e in server.audit("log") if e["target"] == "10.0.7.1"]
    seen = sorted((e["action"], e["actor"], e["outcome"]) for e in entries)
    assert seen == [
        ("login", "anonymous", "failed"),
        ("login", "token:ops", "ok"),
        ("logout", "token:ops", "ok"),
    ]
    assert all(e["after"]["address"] == "10.0.7.1" for e in entries)
    text = json.dumps(entries)
    assert server.admin not in text
    assert server.reader not in text


def test_logins_and_auth_failures_are_in_the_access_log(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    browser = server.browser("10.0.8.1")
    with caplog.at_level(logging.INFO, logger="shipyard.access"):
        assert server.login(browser, "shy_admin_wrong") == 401
        assert server.login(browser, server.admin) == 303
        assert (
            browser.get("/feature-flags", headers={"Authorization": "Bearer shy_client_wrong"}).status_code
            == 401
        )
    lines = [(r.getMessage(), r.__dict__) for r in caplog.records if r.name == "shipyard.access"]
    logins = [fields for _, fields in lines if fields.get("path") == "/ui/login"]
    assert [(f["status"], f["client"], f.get("actor")) for f in logins] == [
        (401, "10.0.8.1", None),
        (303, "10.0.8.1", "token:ops"),
    ]
    api = [fields for _, fields in lines if fields.get("path") == "/feature-flags"]
    assert [(f["status"], f["client"]) for f in api] == [(401, "10.0.8.1")]
    assert not any("wrong" in message or server.admin in message for message, _ in lines)


def test_a_client_token_may_not_read_the_flag_audit(server: Server) -> None:
    api = server.api
    admin = {"Authorization": f"Bearer {server.admin}"}
    assert api.post("/feature-flags", json=FLAG, headers=admin).status_code in (201, 409)
    refused = api.get("/feature-flags/checkout/audit", headers={"Authorization": f"Bearer {server.reader}"})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 403
    assert "token:" not in refused.text
    assert api.get("/feature-flags/checkout/audit").status_code == 401
    allowed = api.get("/feature-flags/checkout/audit", headers=admin)
    assert allowed.status_code == 200
    assert allowed.json()[0]["actor"] == "token:ops"
    # The client token still reads and evaluates the flag itself.
    reader = {"Authorization": f"Bearer {server.reader}"}
    assert api.get("/feature-flags/checkout", headers=reader).status_code == 200
