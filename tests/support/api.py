"""A test client of the API with an admin and a read-only (client) token; reading /metrics."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.testclient import TestClient


@dataclass
class Api:
    client: TestClient
    admin: dict[str, str]
    reader: dict[str, str]


def metric_value(exposition: str, name: str, **labels: str) -> float | None:
    """One sample of a Prometheus text exposition (labels in any order), None when absent."""
    for line in exposition.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if found == labels:
            return float(match.group(4))
    return None
