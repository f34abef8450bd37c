"""The CLI loads command modules (and their heavy libraries) only when used, and lists the same commands.

`shipyard --help` lists the commands from `shipyard.cli._COMMANDS` without importing their
modules; these tests check that listing is exactly what the real commands would show, that the
table knows every command a module registers, and that the cheap imports stay cheap (which
modules are imported, checked in a fresh interpreter; no timings).
"""

from __future__ import annotations

import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap
from importlib import import_module

import pytest
import typer
from typer._click import Context
from typer.testing import CliRunner

import shipyard.cli
from shipyard.cli import _COMMANDS, _LazyGroup, _module_commands, app

HEAVY = ("fastapi", "sqlalchemy", "kubernetes", "psycopg")
MODULES = sorted({entry.module for entry in _COMMANDS.values()})


def loaded_after(code: str) -> list[str]:
    """The modules imported by `code` in a fresh interpreter."""
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout.splitlines()[-1]))


def heavy(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in HEAVY]


SHARED = ("shipyard.cli._app", "shipyard.cli._tables")
"""What every command shares (options, output, tables): not a command module."""


def command_modules(modules: list[str]) -> list[str]:
    return [name for name in modules if name.startswith("shipyard.cli._") and name not in SHARED]


def test_importing_the_cli_imports_no_command_and_no_heavy_library() -> None:
    modules = loaded_after("import shipyard.cli")
    assert heavy(modules) == []
    assert command_modules(modules) == []


def test_top_level_help_imports_no_command_module() -> None:
    modules = loaded_after(
        """
        from shipyard.cli import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        """
    )
    assert heavy(modules) == []
    assert command_modules(modules) == []


def test_a_command_imports_only_its_module() -> None:
    modules = loaded_after(
        """
        from shipyard.cli import main
        try:
            main(["validate", "--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        """
    )
    assert command_modules(modules) == ["shipyard.cli._spec"]
    assert heavy(modules) == []


def test_importing_the_flags_sdk_imports_no_heavy_library() -> None:
    modules = loaded_after("import shipyard.flags")
    assert heavy(modules) == []
    assert "pydantic" not in modules


def test_the_flags_package_still_exports_every_name() -> None:
    flags = import_module("shipyard.flags")
    for name in flags.__all__:
        where = flags._MODULE_OF[name]
        module = import_module(where if "." in where else f"shipyard.flags.{where}")
        assert getattr(flags, name) is getattr(module, name)
    assert set(flags._MODULE_OF) == set(flags.__all__)
    with pytest.raises(AttributeError):
        _ = flags.no_such_name


def test_the_table_knows_every_command_each_module_registers() -> None:
    package = shipyard.cli.__path__
    registering = sorted(
        info.name
        for info in pkgutil.iter_modules(package)
        if hasattr(import_module(f"shipyard.cli.{info.name}"), "register")
    )
    assert registering == MODULES
    for module in MODULES:
        registered = set(_module_commands(module))
        assert registered == {name for name, entry in _COMMANDS.items() if entry.module == module}


@pytest.mark.parametrize("name", list(_COMMANDS))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    command = _module_commands(_COMMANDS[name].module)[name]
    # What `shipyard --help` shows for a command: its help's first paragraph (typer's rich listing).
    assert inspect.cleandoc(command.help or "").split("\n\n")[0].strip() == _COMMANDS[name].help
    assert command.short_help is None
    assert not command.hidden
    assert not command.deprecated
    assert not getattr(command, "rich_help_panel", None)  # the default panel, "Commands"


def root_help(group: _LazyGroup, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        group.main(["--help"], prog_name="shipyard")
    assert caught.value.code == 0
    return capsys.readouterr().out


def test_the_lazy_listing_is_the_listing_of_the_real_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    lazy = typer.main.get_command(app)
    assert isinstance(lazy, _LazyGroup)
    loaded = typer.main.get_command(app)
    assert isinstance(loaded, _LazyGroup)
    ctx = Context(loaded, info_name="shipyard")
    assert loaded.list_commands(ctx) == list(_COMMANDS)
    for name in _COMMANDS:
        assert loaded.get_command(ctx, name) is not None
    listing = root_help(lazy, capsys)
    assert listing == root_help(loaded, capsys)
    for name in _COMMANDS:
        assert f"│ {name} " in listing


@pytest.mark.parametrize("name", list(_COMMANDS))
def test_every_command_and_group_still_has_its_help(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    assert f"Usage: shipyard {name} " in result.output
    command = _module_commands(_COMMANDS[name].module)[name]
    subcommands = getattr(command, "commands", {})
    for sub in subcommands:
        assert f"│ {sub} " in result.output


def test_an_unknown_command_is_still_a_usage_error_with_suggestions() -> None:
    result = CliRunner().invoke(app, ["valdate"], env={"COLUMNS": "100"})
    assert result.exit_code == 2
    assert "No such command 'valdate'. Did you mean 'validate'?" in result.output
