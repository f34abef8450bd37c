"""A canary release whose controller is SIGKILLed at each step, then resumed: it completes and no
request fails for lack of a healthy server (issue 4's acceptance, a test per step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.releases import kill_at_step_then_resume

pytestmark = pytest.mark.integration

CANARY_STEPS = [
    "Migrate",
    "Prepare",
    "WaitHealthy",
    "SetWeights",
    "Observe",
    "SetWeights#2",
    "Observe#2",
    "Hold",
    "Retire",
]


@pytest.mark.parametrize("step", CANARY_STEPS)
def test_canary_survives_a_killed_controller(tmp_path: Path, step: str) -> None:
    kill_at_step_then_resume(tmp_path, "canary", step)
