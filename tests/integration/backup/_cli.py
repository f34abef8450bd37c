"""Running the shipyard CLI in this process (fast: no interpreter start) and reading its output."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from shipyard.state import open_engine, session_factory
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


def sessions_of(stack: BackupStack) -> sessionmaker[Session]:
    return session_factory(open_engine(stack.state_url))


def shipyard_json(stack: BackupStack, *args: str) -> Any:
    """`shipyard ARGS -o json`, with `-f` where the command reads the spec (not `show`, `list`)."""
    spec = [] if args[:2] in (("backup", "show"), ("backup", "list")) else ["-f", str(stack.spec)]
    if args[:2] == ("backup", "list") and "--from-repository" in args:
        spec = ["-f", str(stack.spec)]
    return json.loads(stack.run(*args, *spec, "-o", "json").stdout)


def take_full(stack: BackupStack) -> dict[str, Any]:
    taken: dict[str, Any] = shipyard_json(stack, "backup", "full")
    assert taken["state"] == "complete"
    return taken


def plain_restic(stack: BackupStack, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain restic on the stack's repository: what an operator would run by hand."""
    env = {**os.environ, "RESTIC_REPOSITORY": str(stack.base / "repo"), "RESTIC_PASSWORD": stack.password}
    return subprocess.run(
        ["restic", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
