"""Shared fixtures: the repository root and the example specs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The suite shares two cores with real servers: a property's examples are judged by what they
# return, never by how long one took (Hypothesis' default 200 ms deadline made loaded runs flaky).
settings.register_profile("shipyard", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shipyard")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def apricode_spec() -> Path:
    return ROOT / "examples" / "apricode" / "shipyard.yaml"
