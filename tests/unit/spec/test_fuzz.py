"""The loader never raises anything but SpecError, whatever it is given."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipyard.errors import SpecError
from shipyard.spec import load_spec_text

EXAMPLE = yaml.safe_load((Path(__file__).parents[3] / "examples/apricode/shipyard.yaml").read_text())
KEYS = sorted(
    {
        "name",
        "services",
        "datastores",
        "environments",
        "role",
        "image",
        "port",
        "replicas",
        "kind",
        "env",
        "resources",
        "requests",
        "limits",
        "cpu",
        "memory",
        "autoscaling",
        "min",
        "max",
        "depends_on",
        "ingress",
        "host",
        "cron",
        "schedule",
        "command",
        "storage",
        "size",
        "secretRef",
        "platform",
        "backup",
    }
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.sampled_from(KEYS)
)
trees = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def loads_or_spec_error(text: str) -> None:
    error: SpecError | None = None
    try:
        load_spec_text(text)
    except SpecError as exc:
        error = exc
    if error is not None:
        assert error.issues
        assert error.exit_code == 2


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    loads_or_spec_error(text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_arbitrary_documents(tree: Any) -> None:
    loads_or_spec_error(yaml.safe_dump(tree))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000,
        "{a: " * 3000,
        "a: &x [*x]",
        "&a [*a, *a]",
        "a: !!python/object/apply:os.system [id]",
        "\x00\x01",
    ],
)
def test_hostile_documents(text: str) -> None:
    loads_or_spec_error(text)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += _paths(value, (*prefix, index))
    return found


PATHS = _paths(EXAMPLE)[1:]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PATHS), trees)
def test_one_field_of_a_real_spec_replaced(path: tuple[Any, ...], value: Any) -> None:
    tree = copy.deepcopy(EXAMPLE)
    node = tree
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    loads_or_spec_error(yaml.safe_dump(tree))
