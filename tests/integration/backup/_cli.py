"""Running the shipyard CLI in this process (fast: no interpreter start) and reading its output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from shipyard.cli import main
from support.backup_stack import BackupStack


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


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
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return Result(code, out, err)
