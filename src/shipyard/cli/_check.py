"""`shipyard check images`: hadolint and the USER rule on each service's Dockerfile.

The check is `ops.check_images`; this module shows it: one row per finding for people, or `-o
json|yaml`. It ends with exit code 1 when anything was found, so CI can gate on it.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from ..ops import ImagesChecked, check_images
from ._app import DEFAULT_SPEC, OneEnvOption, Output, OutputOption, SpecOption, console, emit, read_spec
from ._tables import fitted, whole, wrapped

HELP = "Check what the spec builds: its Dockerfiles under hadolint, and their USER."


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="check", help=HELP, no_args_is_help=True)
    group.command("images")(images)
    app.add_typer(group, name="check")


def images(
    file: SpecOption = DEFAULT_SPEC, env: OneEnvOption = None, output: OutputOption = Output.table
) -> None:
    """hadolint (with the repository's .hadolint.yaml) on each Dockerfile a service's `build:`
    names, and its final USER: root, or a name the kubelet cannot check under runAsNonRoot, is a
    finding. Exit code 1 when there is any."""
    spec = read_spec(file)
    stack = spec.stack(env or ("production" if "production" in spec.environments else spec.environments[-1]))
    checked = check_images(stack, file.parent)
    if not emit(_data(checked), output):
        _show(checked)
    if checked.findings:
        raise typer.Exit(1)


def _data(checked: ImagesChecked) -> dict[str, Any]:
    def finding(f: Any) -> dict[str, Any]:
        return {"rule": f.rule, "level": f.level, "line": f.line, "message": f.message}

    return {
        "hadolint_config": checked.hadolint_config,
        "findings": checked.findings,
        "dockerfiles": [
            {
                "dockerfile": c.dockerfile,
                "services": list(c.services),
                "user": c.user,
                "findings": [finding(f) for f in c.findings],
                "notes": [finding(f) for f in c.notes],
            }
            for c in checked.checks
        ],
        "not_built_here": list(checked.skipped),
    }


def _show(checked: ImagesChecked) -> None:
    if not checked.checks:
        console.print("No service has a `build:` section: no Dockerfile to check.")
        return
    rows = [
        (f"{c.dockerfile}:{f.line}", f.rule, f.level, f.message)
        for c in checked.checks
        for f in [*c.findings, *c.notes]
    ]
    config = checked.hadolint_config or "hadolint's defaults"
    title = escape(f"{checked.summary()} ({config})")
    if rows:
        columns = (whole("where"), whole("rule"), whole("level"), wrapped("message"))
        console.print(fitted(columns, rows, title=title))
    else:
        console.print(title)
    for c in checked.checks:
        if not c.findings:
            console.print(escape(f"{c.dockerfile} ({', '.join(c.services)}): clean, USER {c.user}"))
