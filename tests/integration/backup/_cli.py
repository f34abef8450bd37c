"""Running the shipyard CLI in this process (fast: no interpreter start) and reading its output."""

from __future__ import annotations

import pytest

from support.backup_stack import BackupStack
from support.cli import CliResult as Result
from support.cli import run_cli


def shipyard(
    stack: BackupStack,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    **env: str,
) -> Result:
    """`shipyard ARGS` with the stack's environment (state store, repository password, actor)."""
    for key, value in {**stack.cli_env(), **env}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(stack.base)
    return run_cli(capsys, *args)
