"""A blue-green release whose controller is SIGKILLed at each step, then resumed: it completes and
no request fails for lack of a healthy server (issue 4's acceptance, a test per step)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.releases import kill_at_step_then_resume

pytestmark = pytest.mark.integration

BLUE_GREEN_STEPS = ["Migrate", "Prepare", "WaitHealthy", "SetWeights", "Observe", "Hold", "Retire"]


@pytest.mark.parametrize("step", BLUE_GREEN_STEPS)
def test_blue_green_survives_a_killed_controller(tmp_path: Path, step: str) -> None:
    kill_at_step_then_resume(tmp_path, "blue-green", step)
