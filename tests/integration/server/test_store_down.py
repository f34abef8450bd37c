"""A real `shipyard serve` on a real PostgreSQL state store, and the store stopped under it.

Flag evaluations (seed 003's value route, OFREP, Unleash's client and frontend APIs, on the fast
path and FastAPI's) go on answering the last value, saying since when the store has not answered
(`X-Shipyard-Flags-Stale`); reads and writes that need the store are 503 problem+json with
Retry-After; the dashboard is a page with the stale banner. Started again, all is as before.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.state import open_engine, session_factory
from shipyard.tokens import create_token
from support.serve import start_serve, stop_serve, wait_ready
from support.servers import Postgres, free_port, postgres_server

STALE = "x-shipyard-flags-stale"
TOKEN_CACHE_SECONDS = 5.0  # server._auth.CACHE_SECONDS: past it, a token is checked the full way


@dataclass
class Served:
    postgres: Postgres
    base: str
    admin: dict[str, str]
    client: dict[str, str]
    unseen: dict[str, str]
    """A client token the server has never checked."""
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # A PostgreSQL of this module's own: it is stopped and started again.
    with postgres_server() as postgres:
        postgres.psql("CREATE DATABASE store_down")
        url = postgres.url("store_down")
        engine = open_engine(url)
        with session_factory(engine)() as session:
            admin = create_token(session, "ops", "admin")
            client = create_token(session, "web", "client")
            unseen = create_token(session, "late", "client")
        engine.dispose()
        tmp = tmp_path_factory.mktemp("store-down")
        port = free_port()
        log = tmp / "serve.log"
        args = ["--database-url", url, "--env", "production"]
        env = {**os.environ, "SHIPYARD_STATE_DIR": str(tmp / "state")}
        process = start_serve(args, port=port, log=log, cwd=tmp, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, process, log)
            yield Served(
                postgres,
                base,
                {"Authorization": f"Bearer {admin}"},
                {"Authorization": f"Bearer {client}"},
                {"Authorization": f"Bearer {unseen}"},
                log,
            )
        finally:
            stop_serve(process)


def _evaluations(http: httpx.Client, served: Served) -> dict[str, httpx.Response]:
    """One answer of each evaluation route, for the client token."""
    headers = served.client
    return {
        "value": http.get("/feature-flags/checkout/value", params={"userId": "u1"}, headers=headers),
        "evaluate": http.post("/feature-flags/evaluate", json={"context": {"userId": "u1"}}, headers=headers),
        "ofrep": http.post("/ofrep/v1/evaluate/flags/checkout", json={"context": {}}, headers=headers),
        "ofrep-bulk": http.post("/ofrep/v1/evaluate/flags", json={"context": {}}, headers=headers),
        "unleash-frontend": http.get("/api/frontend", params={"userId": "u1"}, headers=headers),
        "unleash-client": http.get("/api/client/features", headers=headers),
    }


def _values(answers: dict[str, httpx.Response]) -> dict[str, Any]:
    """What each answer says about the flag `checkout`."""
    body = {name: answer.json() for name, answer in answers.items()}
    return {
        "value": body["value"]["value"],
        "evaluate": body["evaluate"]["results"]["checkout"]["value"],
        "ofrep": body["ofrep"]["value"],
        "ofrep-bulk": next(f["value"] for f in body["ofrep-bulk"]["flags"] if f["key"] == "checkout"),
        "unleash-frontend": [t["name"] for t in body["unleash-frontend"]["toggles"]],
        "unleash-client": [f["name"] for f in body["unleash-client"]["features"]],
    }


def _assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/problem+json"), what
    assert int(response.headers["retry-after"]) > 0, what
    problem = response.json()
    assert problem["status"] == 503, what
    assert "state store" in problem["detail"], (what, problem)


def test_flags_answer_from_memory_and_the_rest_is_503_while_the_store_is_down(served: Served) -> None:
    with httpx.Client(base_url=served.base, timeout=10) as http:
        created = http.post(
            "/feature-flags",
            json={
                "key": "checkout",
                "type": "boolean",
                "defaultValue": True,
                "environments": {"production": {"enabled": True}},
            },
            headers=served.admin,
        )
        assert created.status_code == 201, created.text
        before = _evaluations(http, served)
        assert all(answer.status_code == 200 for answer in before.values()), {
            name: (a.status_code, a.text[:200]) for name, a in before.items()
        }
        assert not any(STALE in answer.headers for answer in before.values())
        expected = _values(before)
        assert expected["value"] is True
        assert "checkout" in expected["unleash-frontend"]
        login = http.post(
            "/ui/login", data={"token": served.admin["Authorization"][7:]}, headers={"Origin": served.base}
        )
        assert login.status_code == 303, login.text
        assert http.get("/ui/jobs").status_code == 200
        checked_at = time.monotonic()
        last_up = dt.datetime.now(dt.UTC)

        served.postgres.stop()
        try:
            # Reads and writes that need the store: 503 problem+json, Retry-After; never 500.
            _assert_unavailable(http.get("/feature-flags", headers=served.client), "GET /feature-flags")
            _assert_unavailable(http.get("/jobs", headers=served.admin), "GET /jobs")
            _assert_unavailable(http.get("/feature-flags/checkout", headers=served.admin), "GET one flag")
            write = http.post(
                "/feature-flags",
                json={"key": "later", "type": "boolean", "defaultValue": False},
                headers=served.admin,
            )
            _assert_unavailable(write, "POST /feature-flags")
            # A token never checked before cannot be checked now.
            unseen = http.get("/feature-flags/checkout/value", headers=served.unseen)
            _assert_unavailable(unseen, "a token never seen")

            page = http.get("/ui/jobs", headers={"Accept": "text/html"})
            assert page.status_code == 503, page.text[:500]
            assert page.headers["content-type"].startswith("text/html")
            assert 'class="stale-banner"' in page.text
            assert "stale: store unreachable since" in page.text

            # Past the token cache, so that the evaluations also prove the last check stays trusted.
            time.sleep(max(0.0, checked_at + TOKEN_CACHE_SECONDS + 1 - time.monotonic()))
            during = _evaluations(http, served)
            assert {name: a.status_code for name, a in during.items()} == dict.fromkeys(during, 200), {
                name: (a.status_code, a.text[:300]) for name, a in during.items()
            }
            assert _values(during) == expected
            for name, answer in during.items():
                stamp = answer.headers.get(STALE)
                assert stamp is not None, f"{name} does not say its flag set is stale"
                assert stamp.endswith("Z"), stamp
                since = dt.datetime.fromisoformat(stamp)
                assert since <= last_up + dt.timedelta(seconds=1), (name, stamp, last_up)
        finally:
            served.postgres.start()

        deadline = time.monotonic() + 60
        while (
            http.get("/readyz").status_code != 200
            or STALE in http.get("/feature-flags/checkout/value", headers=served.client).headers
        ):
            assert time.monotonic() < deadline, "the server did not come back with the store"
            time.sleep(0.2)
        after = _evaluations(http, served)
        assert {name: a.status_code for name, a in after.items()} == dict.fromkeys(after, 200)
        assert not any(STALE in answer.headers for answer in after.values())
        assert _values(after) == expected
        assert http.get("/feature-flags", headers=served.client).status_code == 200
        assert http.get("/jobs", headers=served.admin).status_code == 200
        page = http.get("/ui/jobs", headers={"Accept": "text/html"})
        assert page.status_code == 200
        assert "stale: store unreachable" not in page.text
        assert "Traceback" not in served.log.read_text()
