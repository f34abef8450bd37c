"""What Argo Rollouts' controller refuses that its CRDs do not.

The CRDs' schemas (checked in `_crds.py`, as the API server checks them) admit a Rollout with two
strategies, a step with two actions, a weight of 150 or a metric with two providers: the API
server stores such an object, and the controller then marks it `InvalidSpec` and does nothing.
These are the controller's own checks (argo-rollouts `pkg/apis/rollouts/validation`), for the
fields shipyard renders, so a render that the controller would refuse fails here instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import RenderError

STEP_ACTIONS = (
    "setWeight",
    "pause",
    "experiment",
    "analysis",
    "setCanaryScale",
    "setHeaderRoute",
    "setMirrorRoute",
    "plugin",
)
PROVIDERS_KEY = "provider"


def check_argo_objects(objects: list[Mapping[str, Any]]) -> None:
    """Raise RenderError naming the first Rollout or AnalysisTemplate Argo's controller refuses."""
    for obj in objects:
        kind = obj.get("kind")
        if kind == "Rollout":
            problems = list(_rollout_problems(obj))
        elif kind in ("AnalysisTemplate", "ClusterAnalysisTemplate"):
            problems = list(_template_problems(obj))
        else:
            continue
        if problems:
            name = obj["metadata"]["name"]
            refused = "; ".join(problems)
            raise RenderError(f"{kind}/{name} would be refused by Argo Rollouts' controller: {refused}")


def _rollout_problems(rollout: Mapping[str, Any]) -> Iterator[str]:
    strategy = rollout.get("spec", {}).get("strategy", {})
    given = [name for name in ("canary", "blueGreen") if name in strategy]
    if len(given) != 1:
        yield f"spec.strategy: exactly one of canary and blueGreen must be given (found {given or 'none'})"
    canary = strategy.get("canary")
    if not isinstance(canary, dict):
        return
    for index, step in enumerate(canary.get("steps", [])):
        actions = [action for action in STEP_ACTIONS if action in step]
        if len(actions) != 1:
            yield f"spec.strategy.canary.steps[{index}]: a step has exactly one action (found {actions})"
        weight = step.get("setWeight")
        if isinstance(weight, int) and not 0 <= weight <= 100:
            yield f"spec.strategy.canary.steps[{index}].setWeight: {weight} is not between 0 and 100"
    for index, step in enumerate(canary.get("steps", [])):
        # The controller's own rule: the basic canary scales by weight, so it cannot scale otherwise.
        if "setCanaryScale" in step and "trafficRouting" not in canary:
            where = f"spec.strategy.canary.steps[{index}].setCanaryScale"
            yield f"{where}: needs spec.strategy.canary.trafficRouting"
    if "trafficRouting" in canary:
        missing = [key for key in ("canaryService", "stableService") if not canary.get(key)]
        if missing:
            yield f"spec.strategy.canary: trafficRouting needs {' and '.join(missing)}"


def _template_problems(template: Mapping[str, Any]) -> Iterator[str]:
    for index, metric in enumerate(template.get("spec", {}).get("metrics", [])):
        providers = sorted(metric.get(PROVIDERS_KEY, {}))
        if len(providers) != 1:
            yield f"spec.metrics[{index}].provider: exactly one provider (found {providers})"
        count = metric.get("count")
        if isinstance(count, str) and not (count.isdigit() or count.startswith("{{")):
            yield f"spec.metrics[{index}].count: {count!r} is neither a number nor an argument"
