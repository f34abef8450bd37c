"""Fixtures for the render tests."""

from __future__ import annotations

import pytest
from render_helpers import ROOT

from shipyard.spec import Spec, load_spec


@pytest.fixture(scope="session")
def apricode() -> Spec:
    return load_spec(ROOT / "examples" / "apricode" / "shipyard.yaml")
