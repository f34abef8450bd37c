"""The `shipyard` command line: one module per command group, errors turned into messages here.

Library code raises `shipyard.errors` exceptions and never prints; `main()` is the only place
that turns an error into a message and an exit code. Usage mistakes (an unknown option, a missing
argument) are Typer's to report, with exit code 2.

The command modules are imported lazily: `shipyard --help` lists every command from `_COMMANDS`
(name, one-line help, module) without importing any, and `shipyard <command> …` imports only the
module that registers it, so that a command does not pay for the web server, the database layer
or the Kubernetes client of the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, NamedTuple

import typer
from rich.markup import escape
from typer._click import Command, Context, HelpFormatter  # the click that typer ships (and builds on)
from typer.core import TyperCommand, TyperGroup

from ..errors import ShipyardError
from ._app import VersionOption, app, console_err


class _Lazy(NamedTuple):
    module: str
    """The module (in this package) whose `register(app)` adds the command."""
    help: str
    """The first paragraph of the command's own help, as `shipyard --help` lists it."""


# Every top-level command, in the order `shipyard --help` lists them. The help strings must be the
# first paragraph of each command's help (its docstring, or its group's `help=`): `shipyard --help`
# shows these without importing the module; tests/unit/cli/test_lazy_commands.py checks they match.
_COMMANDS: dict[str, _Lazy] = {
    "init": _Lazy("_spec", "Write a commented starter spec to edit."),
    "validate": _Lazy(
        "_spec", "Check the spec and every environment's overlay; report every problem at once."
    ),
    "capacity": _Lazy(
        "_capacity", "Requests and limits per component at min and max replicas, and node pools."
    ),
    "cost": _Lazy("_capacity", "Monthly cost per provider, line by line, cheapest first."),
    "serve": _Lazy(
        "_flags", "Run the shipyard server: the flag API, /healthz, /readyz, /metrics and the scheduler."
    ),
    "deploy": _Lazy(
        "_rollout",
        "Release a new version of a service with the spec's strategy; roll back by itself if it is bad.",
    ),
    "down": _Lazy(
        "_rollout", "local: stop every app process of the stack and its HAProxy (the releases stay recorded)."
    ),
    "promote": _Lazy(
        "_promote",
        "Release into one environment exactly what passed in another: the version (local) or digest.",
    ),
    "apply": _Lazy(
        "_apply", "Server-side apply a whole environment to its cluster: datastores ready before workloads."
    ),
    "status": _Lazy(
        "_apply",
        "What runs in an environment's cluster: rollouts, pods ready, autoscalers, ingress, CronJobs.",
    ),
    "render": _Lazy(
        "_render",
        "Render the spec as Kubernetes manifests, a Kustomize tree, a Helm chart, or its monitoring.",
    ),
    "check": _Lazy("_check", "Check what the spec builds: its Dockerfiles under hadolint, and their USER."),
    "flags": _Lazy("_flags", "Feature flags: list, change, evaluate, audit, export and import."),
    "rollout": _Lazy("_rollout", "Follow and steer releases."),
    "backup": _Lazy("_backup", "Take, list, verify and prune backup sets."),
    "restore": _Lazy("_backup", "Restore a backup set into scratch servers or over the live data."),
    "dr": _Lazy("_dr", "Disaster recovery: failover, failback, drills."),
    "notify": _Lazy("_notify", "Notification channels: send a test, see the outbox, deliver what is due."),
    "audit": _Lazy(
        "_audit",
        "The audit trail: every deploy, rollback, flag change, backup, restore, failover and drill.",
    ),
}

_registered: dict[str, typer.Typer] = {}
"""Per command module, a Typer holding what its `register()` added (called once per process)."""


def _module_commands(module: str) -> dict[str, Command]:
    """The click commands that `module` registers, by name, built as Typer builds the app's."""
    holder = _registered.get(module)
    if holder is None:
        holder = typer.Typer(
            rich_markup_mode=app.rich_markup_mode,
            pretty_exceptions_short=app.pretty_exceptions_short,
            suggest_commands=app.suggest_commands,
        )
        importlib.import_module(f"{__name__}.{module}").register(holder)
        _registered[module] = holder
    return dict(typer.main.get_group(holder).commands)


class _LazyCommands(MutableMapping[str, Command]):
    """A group's commands by name, each built (its module imported) on first lookup."""

    def __init__(self, built: Mapping[str, Command]) -> None:
        self._names = [*_COMMANDS, *(name for name in built if name not in _COMMANDS)]
        self._built = dict(built)

    def load(self, name: str) -> Command | None:
        """The command, its module imported and its commands built if need be; None if unknown."""
        if name not in self._built and name in self._names and name in _COMMANDS:
            self._built.update(
                (built_name, command)
                for built_name, command in _module_commands(_COMMANDS[name].module).items()
                if built_name in self._names and built_name not in self._built
            )
        return self._built.get(name)

    def __getitem__(self, name: str) -> Command:
        command = self.load(name)
        if command is None:
            raise KeyError(name)
        return command

    def __setitem__(self, name: str, command: Command) -> None:
        if name not in self._names:
            self._names.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._names.remove(name)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def summary(self, name: str) -> Command | None:
        """The command if built, else a stand-in with its name and one-line help (for listings)."""
        if name in self._built:
            return self._built[name]
        if name in self._names and name in _COMMANDS:
            return TyperCommand(name, help=_COMMANDS[name].help)
        return None


class _LazyGroup(TyperGroup):
    """The root group: lists its commands from `_COMMANDS`, imports a module when one is run."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands: _LazyCommands = _LazyCommands(self.commands)
        self._listing = False

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if self._listing:
            return self.commands.summary(cmd_name)
        # Not `.get()`: a KeyError raised while importing a module must not read as "No such command".
        return self.commands.load(cmd_name)

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        # The listing needs each command's name and one-line help only: no import for it.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


@app.callback(cls=_LazyGroup)
def _root(version: VersionOption = False) -> None:
    # No docstring: the app's `help=` stays its help. A callback makes Typer build a group, of
    # `_LazyGroup`, even though no command is registered on `app` itself.
    pass


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; always ends by raising SystemExit with the exit code."""
    try:
        app(args=argv, prog_name="shipyard")
    except ShipyardError as exc:
        console_err.print(f"[bold red]error:[/] {_escape(exc.message)}")
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        console_err.print("interrupted")
        raise SystemExit(130) from None


def _escape(text: str) -> str:
    return escape(text)


__all__ = ["app", "main"]
