"""`shipyard serve`'s log lines, from the real server process: stderr is a pipe (not a terminal),
so every line is JSON; each request has one access line with its status and actor; and no token,
query value or secret of the server's environment shows anywhere in what it wrote."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.state import open_engine, session_factory
from shipyard.tokens import create_token
from support.servers import free_port

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))


@dataclass
class Served:
    url: str
    admin: str
    reader: str
    environment_secret: str
    process: subprocess.Popen[str]

    def stop(self) -> tuple[str, list[dict[str, Any]]]:
        """Stop the server; its stdout, and its stderr as JSON lines (each line must be one)."""
        self.process.send_signal(signal.SIGTERM)
        stdout, stderr = self.process.communicate(timeout=30)
        lines = [json.loads(line) for line in stderr.splitlines()]
        return stdout + stderr, lines


@contextlib.contextmanager
def _serve(tmp_path: Path, *extra_args: str) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = open_engine(url)
    with session_factory(engine)() as session:
        admin = create_token(session, "ops", "admin")
        reader = create_token(session, "web", "client")
    engine.dispose()
    environment_secret = "env-" + secrets.token_urlsafe(24)
    port = free_port()
    process = subprocess.Popen(
        [SHIPYARD, "serve", "--database-url", url, "--port", str(port), *extra_args],
        cwd=tmp_path,
        env={
            **os.environ,
            "SHIPYARD_STATE_DIR": str(tmp_path / "state"),
            # Named like a secret: the server must never log its value, wherever it turns up.
            "SHOP_API_TOKEN": environment_secret,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    served = Served(f"http://127.0.0.1:{port}", admin, reader, environment_secret, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(f"{served.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with _serve(tmp_path) as server:
        yield server


def _access(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The access lines of requests the test made (not the readiness polls)."""
    return [line for line in lines if line["logger"] == "shipyard.access" and line["path"] != "/readyz"]


def test_serve_logs_json_lines_with_one_access_line_per_request_and_no_secret(served: Served) -> None:
    query_secret = "q-" + secrets.token_urlsafe(24)
    bogus = "shy_admin_" + secrets.token_urlsafe(32)
    as_admin = {"Authorization": f"Bearer {served.admin}"}
    with httpx.Client(base_url=served.url, timeout=10, follow_redirects=False) as client:
        made = [
            client.get(
                "/feature-flags", params={"password": query_secret, "token": served.admin}, headers=as_admin
            ),
            client.get("/jobs", headers={"Authorization": f"Bearer {served.reader}"}),
            client.get("/jobs", headers={"Authorization": f"Bearer {bogus}"}),
            client.get("/healthz"),
            client.get(f"/healthz?{query_secret}"),  # a bare value (a key, say): not even its name
            # A secret the server knows (from its environment) is masked even in a path.
            client.get(f"/feature-flags/{served.environment_secret}", headers=as_admin),
            # The dashboard: the token goes in a form, then comes back as the session cookie.
            client.post(
                "/ui/login", data={"token": served.admin, "next": "/ui/"}, headers={"Origin": served.url}
            ),
            client.get("/ui/"),
        ]
    output, lines = served.stop()

    assert [response.status_code for response in made] == [200, 403, 401, 200, 200, 404, 303, 303]
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message"}, line
        assert line["time"].endswith("Z")
    access = _access(lines)
    assert [(a["method"], a["path"], a["status"], a.get("actor")) for a in access] == [
        ("GET", "/feature-flags", 200, "token:ops"),
        ("GET", "/jobs", 403, "token:web"),
        ("GET", "/jobs", 401, None),
        ("GET", "/healthz", 200, None),
        ("GET", "/healthz", 200, None),
        ("GET", "/feature-flags/***", 404, "token:ops"),
        ("POST", "/ui/login", 303, "token:ops"),  # who signed in
        ("GET", "/ui/", 303, "token:ops"),
    ]
    assert access[0]["query"] == "password=***&token=***"
    assert access[4]["query"] == "***"
    for line in access:
        assert line["level"] == "INFO"
        assert line["client"] == "127.0.0.1"
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
        assert line["message"].startswith(f"{line['method']} {line['path']}")
    assert any(line["logger"] == "shipyard.server._scheduler" for line in lines), "the scheduler logs"
    assert any(line["logger"] == "uvicorn.error" for line in lines), "uvicorn's lines are JSON too"

    for secret in (served.admin, served.reader, bogus, query_secret, served.environment_secret):
        assert secret not in output
    assert "Bearer" not in output, "no header is logged"


def test_each_worker_process_logs_json_access_lines(tmp_path: Path) -> None:
    with _serve(tmp_path, "--workers", "2") as served:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            statuses = [
                client.get("/jobs", headers={"Authorization": f"Bearer {served.admin}"}).status_code
                for _ in range(4)
            ]
        output, lines = served.stop()

        assert statuses == [200] * 4
        access = _access(lines)
        assert [(a["path"], a["status"], a["actor"]) for a in access] == [("/jobs", 200, "token:ops")] * 4
        assert served.admin not in output


def test_a_server_that_cannot_reach_its_store_logs_one_record_without_the_password(
    tmp_path: Path,
) -> None:
    password = "pw-" + secrets.token_urlsafe(16)
    result = subprocess.run(
        [SHIPYARD, "serve", "--database-url", f"postgresql://app:{password}@127.0.0.1:{free_port()}/shop"],
        cwd=tmp_path,
        env={**os.environ, "SHIPYARD_STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Exit 3 (unavailable) with one record naming the store and its address, and no traceback.
    assert result.returncode == 3
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[-1]["level"] == "CRITICAL"
    assert lines[-1]["message"].startswith(
        "cannot start: state store unreachable at postgresql://app:***@127.0.0.1:"
    )
    assert "exception" not in lines[-1]
    assert "Traceback" not in result.stdout + result.stderr
    assert password not in result.stdout + result.stderr
