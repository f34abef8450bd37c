"""The tree in `shipyard.errors`' docstring is the truth about every error class: each class shipyard
raises on purpose is in it, with the exit code and HTTP status it really carries, and states its
own status (none reaches 500 by inheriting it by accident)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import shipyard
from shipyard import errors
from shipyard.errors import ShipyardError

ROW = re.compile(r"^\s*[│├└─ ]*(?P<name>_?[A-Z][A-Za-z]+)\s+(?P<exit>\d+)\s+(?P<http>\d{3})\s", re.MULTILINE)


def _every_error_class() -> dict[str, type[ShipyardError]]:
    # Import every module, so that error classes defined beside the code that raises them count.
    for module in pkgutil.walk_packages(shipyard.__path__, "shipyard."):
        if module.name.endswith("__main__") or ".migrations" in module.name:
            continue
        importlib.import_module(module.name)
    found: dict[str, type[ShipyardError]] = {}
    todo: list[type[ShipyardError]] = [ShipyardError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def test_the_tree_lists_every_class_with_its_exit_code_and_status() -> None:
    tree = {m["name"]: (int(m["exit"]), int(m["http"])) for m in ROW.finditer(errors.__doc__ or "")}
    classes = _every_error_class()
    assert set(classes) == set(tree), "errors.py's tree and the error classes differ"
    for name, cls in classes.items():
        assert (cls.exit_code, cls.http_status) == tree[name], name


def test_every_class_states_its_own_http_status() -> None:
    for name, cls in _every_error_class().items():
        assert "http_status" in vars(cls), f"{name} inherits its HTTP status; state it in the class"
