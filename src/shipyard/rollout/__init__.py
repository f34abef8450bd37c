"""Zero-downtime releases: blue-green and canary strategies as pure state machines, the analysis
that decides, and the controller that drives a strategy against a target, step by recorded step.

    controller = Controller(sessions, stack, LocalTarget(stack, state_dir))
    release = controller.begin("api", "v2", actor="cli:alice")
    controller.run(release)
"""

from ._analysis import PROMETHEUS_URL_ENV, analyse
from ._controller import (
    COMMANDS,
    Controller,
    latest_release,
    lock_name,
    queue_command,
    steer_release,
    wait_for_command,
)
from ._loadgen import LoadGenerator, LoadReport
from ._model import (
    LATENCY_BUCKETS_MS,
    Analysis,
    Check,
    Health,
    MigrationResult,
    Sample,
    TargetStatus,
    Verdict,
    Weights,
)
from ._prometheus import PrometheusChecks, ReleaseContext
from ._strategy import (
    Phase,
    Plan,
    RolloutState,
    allowed_commands,
    is_finished,
    next_action,
    on_command,
    on_outcome,
    start,
)

__all__ = [
    "COMMANDS",
    "LATENCY_BUCKETS_MS",
    "PROMETHEUS_URL_ENV",
    "Analysis",
    "Check",
    "Controller",
    "Health",
    "LoadGenerator",
    "LoadReport",
    "MigrationResult",
    "Phase",
    "Plan",
    "PrometheusChecks",
    "ReleaseContext",
    "RolloutState",
    "Sample",
    "TargetStatus",
    "Verdict",
    "Weights",
    "allowed_commands",
    "analyse",
    "is_finished",
    "latest_release",
    "lock_name",
    "next_action",
    "on_command",
    "on_outcome",
    "queue_command",
    "start",
    "steer_release",
    "wait_for_command",
]
