"""Fixtures of the capacity tests: the Apricode (seed 004) stack and its totals."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.capacity import CapacityTotals, capacity_totals
from shipyard.spec import Spec, load_spec


@pytest.fixture(scope="session")
def apricode(apricode_spec: Path) -> Spec:
    return load_spec(apricode_spec)


@pytest.fixture(scope="session")
def production(apricode: Spec) -> CapacityTotals:
    return capacity_totals(apricode.stack("production"))
