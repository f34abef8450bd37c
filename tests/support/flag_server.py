"""A real `shipyard serve` in a subprocess, for the SDK's integration tests.

    state = prepare_state(tmp_dir)                 # tokens made with `shipyard flags token create`
    with running_flag_server(state, workdir) as server:
        server.create_flag({...})                  # through the API, with the admin token
        server.stop(); server.start()              # same port, same database

`prepare_state` costs two CLI runs (~2 s each), so the tests make one state database per session
and give each server a copy of it (`StateTemplate.copy_to`): the tokens are rows in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from support.servers import free_port

SHIPYARD = str(Path(sys.executable).with_name("shipyard"))


@dataclass(frozen=True)
class StateTemplate:
    """A state database holding an admin and a client token."""

    database: Path
    admin_token: str
    client_token: str

    def copy_to(self, directory: Path) -> Path:
        """A consistent copy of the database in `directory` (SQLite's backup API: WAL-safe)."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "state.db"
        with (
            contextlib.closing(sqlite3.connect(self.database)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)
        return target


def _create_token(database_url: str, name: str, scope: str) -> str:
    result = subprocess.run(
        [SHIPYARD, "flags", "token", "create", name, "--scope", scope, "--database-url", database_url],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1].strip()


def prepare_state(directory: Path) -> StateTemplate:
    """A new state database in `directory` with an admin and a client token, made by the CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "state.db"
    url = f"sqlite:///{database}"
    admin = _create_token(url, "sdk-tests-admin", "admin")
    client = _create_token(url, "sdk-tests-client", "client")
    return StateTemplate(database, admin, client)


@dataclass
class FlagServer:
    """One `shipyard serve` process; stop and start it again on the same port and database."""

    database: Path
    admin_token: str
    client_token: str
    port: int = field(default_factory=free_port)
    environment: str = "production"
    process: subprocess.Popen[bytes] | None = None
    killed: int = 0
    """How many stops needed SIGKILL (SIGTERM did not end the process in time)."""
    ready_path: str = "/healthz"
    """What `start` waits for: the server answers it with 200."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    @property
    def log_path(self) -> Path:
        return self.database.with_name("serve.log")

    def serve_argv(self) -> list[str]:
        return [
            SHIPYARD,
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            "--env",
            self.environment,
        ]

    def serve_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(self, timeout: float = 90.0) -> None:
        """Start the server and wait until `ready_path` answers (a loaded machine, e.g. CI beside
        `stress-ng`, took over 30 s to import and start it)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the flag server is already running")
        self.database.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.serve_argv(), stdout=log, stderr=subprocess.STDOUT, env=self.serve_env()
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"shipyard serve exited with {self.process.returncode}: {self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{self.ready_path}", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(
            f"shipyard serve did not answer {self.ready_path} within {timeout} s: {self.log()}"
        )

    def stop(self, grace: float = 1.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds (open event streams can hold it up)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            self.killed += 1
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    # --- the API, as an admin ------------------------------------------------------------------

    def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.admin_token}", **kwargs.pop("headers", {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10.0, **kwargs)

    def create_flag(self, flag: dict[str, Any]) -> int:
        """Create a flag; the flag set's new version."""
        response = self.request("POST", "/feature-flags", json=flag)
        assert response.status_code == 201, response.text
        return self.version()

    def patch_flag(self, key: str, patch: dict[str, Any]) -> int:
        """JSON-merge-patch a flag; the flag set's new version."""
        response = self.request("PATCH", f"/feature-flags/{key}", json=patch)
        assert response.status_code == 200, response.text
        return self.version()

    def set_enabled(self, key: str, enabled: bool, environment: str = "production") -> int:
        return self.patch_flag(key, {"environments": {environment: {"enabled": enabled}}})

    def version(self) -> int:
        response = self.request("GET", "/feature-flags")
        assert response.status_code == 200, response.text
        return int(response.json()["version"])

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a Prometheus sample `name` over the series matching `labels` (0 if none)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10.0).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] != name:
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def requests_served(self, route: str, status: int, method: str = "GET") -> int:
        """How many requests the server answered on `route` with `status` (from its /metrics)."""
        return int(
            self.metric(
                "shipyard_http_request_duration_seconds_count", method=method, route=route, code=str(status)
            )
        )


@contextlib.contextmanager
def running_flag_server(
    template: StateTemplate, directory: Path, environment: str = "production"
) -> Iterator[FlagServer]:
    """A started server over a copy of `template`'s database in `directory`; stopped on exit."""
    server = FlagServer(
        template.copy_to(directory), template.admin_token, template.client_token, environment=environment
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
