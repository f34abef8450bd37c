"""Each package's public surface (`__all__`) is pinned, as httpx pins its own: a name added to or
dropped from a package's API is a decision this diff shows, not an accident.

After changing a surface on purpose: `python tests/unit/architecture/test_public_surface.py --write`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

import pytest

import shipyard

PINNED = Path(__file__).with_name("public_surface.json")


def packages() -> list[str]:
    """shipyard's packages and public top-level modules (private `_x` modules are no surface)."""
    names = ["shipyard"]
    for module in pkgutil.iter_modules(shipyard.__path__):
        if not module.name.startswith("_"):
            names.append(f"shipyard.{module.name}")
    return sorted(names)


def surface(name: str) -> list[str]:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return sorted(n for n in vars(module) if not n.startswith("_") and _defined_in(module, n))
    return sorted(exported)


def _defined_in(module: object, name: str) -> bool:
    value = getattr(module, name)
    return getattr(value, "__module__", None) == getattr(module, "__name__", None)


def test_every_package_surface_is_pinned() -> None:
    pinned = json.loads(PINNED.read_text())
    assert sorted(pinned) == packages(), "a package was added or removed: --write the pin"
    for name in packages():
        assert surface(name) == pinned[name], f"{name}'s public names changed: --write the pin if on purpose"


@pytest.mark.parametrize("name", packages())
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module(name)
    for exported in getattr(module, "__all__", []):
        assert getattr(module, exported, None) is not None, f"{name}.{exported}"


if __name__ == "__main__" and "--write" in sys.argv:
    PINNED.write_text(json.dumps({name: surface(name) for name in packages()}, indent=1) + "\n")
