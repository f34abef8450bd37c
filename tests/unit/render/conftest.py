"""Fixtures for the render tests."""

from __future__ import annotations

import pytest

from shipyard.spec import Spec, load_spec
from unit.render.render_helpers import ROOT


@pytest.fixture(scope="session")
def apricode() -> Spec:
    return load_spec(ROOT / "examples" / "apricode" / "shipyard.yaml")
