"""`shipyard init` and `shipyard validate`."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import SpecError, SpecIssue, UserError
from ..spec import Spec, load_spec
from ._app import DEFAULT_SPEC, EnvOption, Output, OutputOption, SpecOption, console, emit
from ._tables import fitted, whole, wrapped


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("validate")(validate)


def starter_spec() -> str:
    """The commented starter spec that `shipyard init` writes."""
    return resources.files("shipyard.spec").joinpath("starter.yaml").read_text(encoding="utf-8")


def init(
    file: SpecOption = DEFAULT_SPEC,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter spec to edit."""
    if file.exists() and not force:
        raise UserError(f"{file} already exists; edit it, or pass --force to overwrite it")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(starter_spec(), encoding="utf-8")
    console.print(f"wrote {file}; check it with: shipyard validate -f {file}")


def validate(
    file: SpecOption = DEFAULT_SPEC, env: EnvOption = None, output: OutputOption = Output.table
) -> None:
    """Check the spec and every environment's overlay; report every problem at once."""
    try:
        spec = load_spec(file)
        _check_channel_urls(spec, env)
    except SpecError as exc:
        if output is not Output.table:
            emit({"file": str(file), "valid": False, "issues": [_issue(i) for i in exc.issues]}, output)
            raise typer.Exit(exc.exit_code) from None
        raise
    stacks = [spec.stack(env)] if env else list(spec.stacks())
    report: dict[str, Any] = {
        "file": str(file),
        "valid": True,
        "environments": {
            stack.environment: {
                "namespace": stack.k8s_namespace,
                "services": sorted(stack.services),
                "datastores": sorted(stack.datastores),
            }
            for stack in stacks
        },
    }
    if emit(report, output):
        return
    columns = (whole("environment"), whole("namespace"), wrapped("services"), wrapped("datastores"))
    rows = [
        (name, facts["namespace"], ", ".join(facts["services"]), ", ".join(facts["datastores"]))
        for name, facts in report["environments"].items()
    ]
    console.print(fitted(columns, rows, title=escape(f"{file}: valid")))


def _check_channel_urls(spec: Spec, env: str | None) -> None:
    """The channels' URL references as they resolve here (the loader sees only the references)."""
    # Here, not at the top: the monitor package loads SQLAlchemy, which `validate --help` and
    # the listing of commands must not wait for.
    from ..monitor import channel_url_problems  # noqa: PLC0415

    stacks = [spec.stack(env)] if env else list(spec.stacks())
    issues = {
        SpecIssue(spec.file, 0, 0, path, message)
        for stack in stacks
        for path, message in channel_url_problems(stack.notifications)
    }
    if issues:
        raise SpecError(list(issues))


def _issue(issue: Any) -> dict[str, Any]:
    return {
        "file": issue.file,
        "line": issue.line,
        "column": issue.column,
        "path": issue.path,
        "message": issue.message,
    }
