"""`shipyard init` and `shipyard validate`."""

from __future__ import annotations

import typer

from ._app import DEFAULT_SPEC, EnvOption, Output, OutputOption, SpecOption


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("validate")(validate)


def init(file: SpecOption = DEFAULT_SPEC) -> None:
    """Write a commented starter spec."""
    raise NotImplementedError


def validate(file: SpecOption = DEFAULT_SPEC, env: EnvOption = None, output: OutputOption = Output.table) -> None:
    """Check the spec and every environment's overlay; report every problem at once."""
    raise NotImplementedError
