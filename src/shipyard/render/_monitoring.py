"""The monitoring outputs as files: Prometheus (config + rules), Alertmanager, Grafana.

Each renders one environment's files; for every environment they go under `<env>/`. The same
spec gives the same bytes (sorted keys, no timestamps).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from ..errors import UserError
from ..spec import Spec, Stack
from ._alertmanager import alertmanager_config, alertmanager_header
from ._grafana import dashboard
from ._outputs import EnvironmentOutput, Rendered, Written
from ._prometheus import CONFIG_FILE, RULES_FILE, Target, rule_groups, scrape_config
from ._writer import write_tree
from ._yaml import dump

MonitoringKind = Literal["prometheus", "alertmanager", "grafana"]
ALERTMANAGER_FILE = "alertmanager.yml"
DASHBOARD_FILE = "dashboard.json"


def _prometheus(stack: Stack, target: Target) -> tuple[dict[str, str], dict[str, int]]:
    groups = rule_groups(stack)
    rules = [rule for group in groups["groups"] for rule in group["rules"]]
    config = scrape_config(stack, target)
    header = (
        f"# Prometheus for stack {stack.name!r} ({stack.environment or 'default'}), rendered by shipyard.\n"
    )
    files = {CONFIG_FILE: header + dump(config), RULES_FILE: header + dump(groups)}
    counts = {
        "scrape jobs": len(config["scrape_configs"]),
        "recording rules": sum("record" in rule for rule in rules),
        "alerts": sum("alert" in rule for rule in rules),
    }
    return files, counts


def _alertmanager(stack: Stack) -> tuple[dict[str, str], dict[str, int]]:
    config = alertmanager_config(stack)
    configs = sum(len(v) for r in config["receivers"] for k, v in r.items() if k.endswith("_configs"))
    files = {ALERTMANAGER_FILE: alertmanager_header(stack) + dump(config)}
    return files, {"receivers": len(config["receivers"]), "channel configs": configs}


def _grafana(stack: Stack) -> tuple[dict[str, str], dict[str, int]]:
    model = dashboard(stack)
    text = json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    panels = model["panels"]
    return {DASHBOARD_FILE: text}, {
        "rows": sum(p["type"] == "row" for p in panels),
        "panels": sum(p["type"] != "row" for p in panels),
    }


def monitoring_files(
    stack: Stack, kind: MonitoringKind, target: Target = "local"
) -> tuple[dict[str, str], dict[str, int]]:
    """One environment's files of `kind` (name -> text) and counts of what they hold."""
    if kind == "prometheus":
        return _prometheus(stack, target)
    if kind == "alertmanager":
        return _alertmanager(stack)
    return _grafana(stack)


def monitoring_tree(
    spec: Spec,
    kind: MonitoringKind,
    environments: Iterable[str] | None = None,
    *,
    target: Target = "local",
    per_environment: bool = True,
) -> Rendered:
    """The files of the given environments (default: all), under `<env>/` when `per_environment`."""
    names = list(spec.environments if environments is None else environments)
    files: dict[str, str] = {}
    outputs = []
    for name in names:
        stack = spec.stack(name)
        own, counts = monitoring_files(stack, kind, target)
        prefix = f"{name}/" if per_environment else ""
        files.update({prefix + file: text for file, text in own.items()})
        outputs.append(EnvironmentOutput(name, stack.k8s_namespace, prefix or ".", counts))
    return Rendered(files, tuple(outputs))


def write_monitoring(
    spec: Spec,
    kind: MonitoringKind,
    out_dir: str | Path,
    environment: str | None = None,
    *,
    target: Target = "local",
) -> Written:
    """Write `kind`'s files: of `environment` into `out_dir`, or of every one under `<env>/`."""
    environments = None if environment is None else [environment]
    rendered = monitoring_tree(spec, kind, environments, target=target, per_environment=environment is None)
    directory = write_tree(rendered.files, out_dir)
    return Written(directory, len(rendered.files), rendered.environments)


def monitoring_text(
    spec: Spec, kind: MonitoringKind, environment: str | None = None, *, target: Target = "local"
) -> str:
    """One environment's files for stdout: a YAML stream (each file a document) or the JSON.

    Without `environment`, the spec's only one; a spec with several needs `-e` (or `-o`).
    """
    if environment is None:
        if len(spec.environments) != 1:
            raise UserError(
                f"the spec has {len(spec.environments)} environments ({', '.join(spec.environments)}):"
                " name one with -e, or write every one with -o DIR"
            )
        environment = spec.environments[0]
    files, _ = monitoring_files(spec.stack(environment), kind, target)
    if kind == "grafana":
        return files[DASHBOARD_FILE]
    return "".join(f"---\n# {name}\n{text}" for name, text in files.items())
