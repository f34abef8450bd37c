"""Zero-downtime releases: blue-green and canary strategies as pure state machines, the analysis
that decides, and the drivers that run a release where it runs, step by recorded step.

Every release goes through one interface, `ReleaseDriver`, with two implementations: the local
controller (`LocalReleases`: `Controller` over HAProxy and supervised processes) and Argo Rollouts
(`ArgoReleases`, in `rollout.argo`, imported on demand: the Kubernetes client is slow to
load). A release is steered through the driver of the target it was recorded with.

    driver = release_driver("local", sessions, stack=lambda: stack, local_state=..., workdir=...)
    rollout_id = driver.start("api", "v2", actor="cli:alice", strategy=None)
    driver.run(rollout_id)
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Imported on first use (see shipyard._lazy): an instance's supervisor runs as a module of this
# package and must not load the controller, the analysis and the database layer to watch a process.
if TYPE_CHECKING:
    from ._analysis import PROMETHEUS_URL_ENV, analyse
    from ._controller import (
        COMMANDS,
        Controller,
        action_from_data,
        check_release,
        latest_release,
        lock_name,
        queue_command,
        release_in_progress,
        release_plan,
        steer_release,
        wait_for_command,
    )
    from ._detached import last_release_id, recorded_release
    from ._driver import (
        TARGETS,
        KubeConnection,
        OnProgress,
        PlannedRelease,
        ReleaseDriver,
        Steered,
        TargetName,
        describe_plan,
        release_driver,
        where,
    )
    from ._loadgen import LoadGenerator, LoadReport
    from ._local_releases import LocalReleases
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
        describe,
        is_finished,
        next_action,
        on_command,
        on_outcome,
        plan_steps,
        start,
    )

__all__ = [
    "COMMANDS",
    "LATENCY_BUCKETS_MS",
    "PROMETHEUS_URL_ENV",
    "TARGETS",
    "Analysis",
    "Check",
    "Controller",
    "Health",
    "KubeConnection",
    "LoadGenerator",
    "LoadReport",
    "LocalReleases",
    "MigrationResult",
    "OnProgress",
    "Phase",
    "Plan",
    "PlannedRelease",
    "PrometheusChecks",
    "ReleaseContext",
    "ReleaseDriver",
    "RolloutState",
    "Sample",
    "Steered",
    "TargetName",
    "TargetStatus",
    "Verdict",
    "Weights",
    "action_from_data",
    "allowed_commands",
    "analyse",
    "check_release",
    "describe",
    "describe_plan",
    "is_finished",
    "last_release_id",
    "latest_release",
    "lock_name",
    "next_action",
    "on_command",
    "on_outcome",
    "plan_steps",
    "queue_command",
    "recorded_release",
    "release_driver",
    "release_in_progress",
    "release_plan",
    "start",
    "steer_release",
    "wait_for_command",
    "where",
]


if not TYPE_CHECKING:  # to a type checker, a module `__getattr__` would make every name exist
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
