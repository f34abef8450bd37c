"""How the packages may use each other, beyond the layers `lint-imports` holds (see pyproject.toml).

A package's private modules (`_name.py`) are its own: other packages use its public names, the
ones its `__init__` exports. These tests read the imports from the source (no module is run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import shipyard

SRC = Path(shipyard.__file__).parent


def _package_of(parts: tuple[str, ...]) -> str:
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


def _cross_private_imports(path: Path) -> list[str]:
    """`module -> target` for each import in `path` of another top-level package's private module."""
    here = path.relative_to(SRC).parts
    own = _package_of(here)
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = list(here[:-1])[: len(here) - node.level]
            target = [*base, *(node.module or "").split(".")]
        elif (node.module or "").startswith("shipyard."):
            target = (node.module or "").split(".")[1:]
        else:
            continue
        target = [part for part in target if part]
        if not target or target[0] == own:
            continue
        names = [alias.name for alias in node.names]
        if any(part.startswith("_") for part in target[1:]) or any(
            n.startswith("_") and not n.startswith("__") for n in names if len(target) == 1
        ):
            found.append(f"{'/'.join(here)}:{node.lineno} -> {'.'.join(target)}")
    return found


ROUTERS = sorted((SRC / "server" / "routes").glob("*.py"))


@pytest.mark.parametrize("path", ROUTERS, ids=lambda p: p.name)
def test_no_router_imports_another_package_private_module(path: Path) -> None:
    assert _cross_private_imports(path) == []


def test_routers_live_in_server_routes_only() -> None:
    """Domain packages build no FastAPI router (and import no FastAPI, Typer or Rich)."""
    offenders = []
    for package in ("rollout", "backup", "dr", "flags", "monitor", "ops", "jobs", "state", "spec", "render"):
        for path in (SRC / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                modules = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                for module in modules:
                    if module.split(".")[0] in ("fastapi", "starlette", "typer", "rich"):
                        offenders.append(f"{path.relative_to(SRC)}:{node.lineno} imports {module}")
    assert offenders == []
