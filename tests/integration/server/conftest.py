"""The API over a real state store: SQLite in a temp dir, and a real PostgreSQL on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipyard.server import ServerConfig, create_app
from shipyard.tokens import create_token
from support.api import Api
from support.servers import Postgres, postgres_server


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    name = f"t{next(_counter)}"
    server.psql(f"CREATE DATABASE {name}")
    return server.url(name)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    app = create_app(ServerConfig(database_url=database_url, environment="production"))
    with app.state.sessions() as session:
        admin = create_token(session, "ops", "admin")
        reader = create_token(session, "web", "client")
    with TestClient(app) as client:
        yield Api(client, {"Authorization": f"Bearer {admin}"}, {"Authorization": f"Bearer {reader}"})
    app.state.engine.dispose()
