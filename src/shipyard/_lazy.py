"""A package's exports imported on first use (PEP 562), from imports written once.

A package lists what it exports as `if TYPE_CHECKING:` imports, which type checkers read, and
hands `lazy_exports` its name, file and `__all__`. At run time the same import lines are read
back, and a module is imported only when one of its names is first looked up. A command then
loads only what it runs: `rollout promote` needs none of the backup or Kubernetes modules, and an
instance's supervisor (`python -m shipyard.rollout.targets._supervise`) none of the controller.
"""

from __future__ import annotations

import ast
import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def lazy_exports(
    package: str, init_file: str, exported: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of package `package`, whose `__init__.py` is `init_file`."""

    @functools.cache
    def module_of() -> dict[str, str]:
        """Each exported name's module, from the relative imports of `init_file`."""
        tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
        return {
            alias.asname or alias.name: f".{node.module}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
            for alias in node.names
        }

    def getattr_(name: str) -> Any:
        module = module_of().get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        vars(sys.modules[package])[name] = value  # later lookups skip this function
        return value

    def dir_() -> list[str]:
        return sorted(exported)

    return getattr_, dir_
