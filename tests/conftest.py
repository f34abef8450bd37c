"""Shared fixtures: the repository root and the example specs."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def apricode_spec() -> Path:
    return ROOT / "examples" / "apricode" / "shipyard.yaml"
