"""The Typer application, the options every command shares, and output helpers."""

from __future__ import annotations

import getpass
import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ..spec import Spec, Stack

app = typer.Typer(
    name="shipyard",
    help="Deployment and operations from one spec: render, price, release, back up, recover.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)
console = Console(highlight=False, soft_wrap=True)
console_err = Console(stderr=True, highlight=False, soft_wrap=True)


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


SpecOption = Annotated[
    Path,
    typer.Option(
        "--file", "-f", envvar="SHIPYARD_SPEC", help="The stack spec.", show_default=True, dir_okay=False
    ),
]
"""Every command takes it (the README promises so, and scripts pass it to each): one that reads
only the state store (`backup list`, `rollout history`, `flags …`, `notify queue`) accepts it and
needs no spec there."""


def _print_version(asked: bool) -> None:
    if asked:
        from .. import __version__  # noqa: PLC0415 - the package's one version (pyproject reads it too)

        typer.echo(f"shipyard {__version__}")
        raise typer.Exit()


VersionOption = Annotated[
    bool,
    typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print shipyard's version and exit."
    ),
]
EnvOption = Annotated[str | None, typer.Option("--env", "-e", help="The environment (default: every one).")]
OneEnvOption = Annotated[
    str | None, typer.Option("--env", "-e", help="The environment (default: the only one, else production).")
]
"""For verbs that act on one environment and can pick it when the spec has only one."""
NamedEnvOption = Annotated[str, typer.Option("--env", "-e", help="The environment.")]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url", envvar="SHIPYARD_DATABASE_URL", help="State store (default: .shipyard/state.db)."
    ),
]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="table for people; json or yaml for machines.")
]

ContextOption = Annotated[
    str | None,
    typer.Option("--context", help="kubernetes: the kubeconfig context (default: its current one)."),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubernetes: the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
        dir_okay=False,
    ),
]

DEFAULT_SPEC = Path(os.environ.get("SHIPYARD_SPEC", "shipyard.yaml"))


def actor() -> str:
    """Who is acting, for the audit trail: `$SHIPYARD_ACTOR`, else the login name, as `cli:<name>`.

    An actor that already says where it acts from (`token:ops`, for a job the server started for
    an API token) is kept as it is.
    """
    name = os.environ.get("SHIPYARD_ACTOR") or getpass.getuser()
    return name if ":" in name else f"cli:{name}"


def read_spec(path: Path) -> Spec:
    from ..spec import load_spec  # noqa: PLC0415 - pydantic models: only for commands that read the spec

    return load_spec(path)


def one_stack(file: Path, env: str | None) -> Stack:
    """The stack of `env`; with none given, the spec's only environment, else production (OneEnvOption)."""
    spec = read_spec(file)
    if env is None:
        env = spec.environments[0] if len(spec.environments) == 1 else "production"
    return spec.stack(env)


def read_sessions(database_url: str | None) -> sessionmaker[Session]:
    """Sessions on a state store that exists already, for verbs that only read (never creates one)."""
    from ..state import open_existing, session_factory  # noqa: PLC0415 - SQLAlchemy: only for the state store

    return session_factory(open_existing(database_url))


def emit(data: Any, output: Output) -> bool:
    """Print `data` for machines when asked; return True when it was printed."""
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2, sort_keys=False))
        return True
    if output is Output.yaml:
        import yaml  # noqa: PLC0415 - only when YAML is asked for

        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
        return True
    return False
