"""A test client of the API with an admin and a read-only (client) token."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient


@dataclass
class Api:
    client: TestClient
    admin: dict[str, str]
    reader: dict[str, str]
