"""A real `shipyard serve` per test, over a copy of a state database made once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.flag_server import FlagServer, StateTemplate, prepare_state, running_flag_server


@pytest.fixture(scope="session")
def flag_state(tmp_path_factory: pytest.TempPathFactory) -> StateTemplate:
    return prepare_state(tmp_path_factory.mktemp("flag-state"))


@pytest.fixture
def flag_server(flag_state: StateTemplate, tmp_path: Path) -> Iterator[FlagServer]:
    with running_flag_server(flag_state, tmp_path / "server") as server:
        yield server
