"""The live panel of `deploy --watch`: weights, error rate and p99 of each version."""

from __future__ import annotations

from rich.console import Console

from shipyard.cli._rollout import _panel
from shipyard.rollout import next_action, on_outcome, start
from shipyard.rollout._model import Observe, Observed
from unit.rollout.rollout_kit import happy, make_plan, real_analysis


def test_the_panel_shows_each_versions_weight_error_rate_and_p99() -> None:
    state = start(make_plan("canary"), 0.0)
    while not isinstance(action := next_action(state, 0.0), Observe):  # to the first analysis, at 5 %
        state = on_outcome(state, happy(action), 0.0)
    state = on_outcome(state, Observed(real_analysis(200, 40, stable_requests=2000), complete=False), 1.0)
    console = Console(width=160, record=True)
    console.print(_panel(state))
    text = console.export_text()
    assert "v1 → v2 (canary)" in text
    lines = {line.split()[1]: line for line in text.splitlines() if line.strip().startswith("│ v")}
    assert "20.00%" in lines["v2"]
    assert "0.00%" in lines["v1"]
    assert "200" in lines["v2"]
