"""Running the shipyard CLI in this process (fast: no interpreter start) and reading its output."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest

from shipyard.cli import main


class CliResult(NamedTuple):
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def exit_code(*args: str) -> int:
    """`shipyard ARGS` through the real entry point: errors become exit codes, as in a shell."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """`shipyard ARGS` with what it printed."""
    capsys.readouterr()
    code = exit_code(*args)
    out, err = capsys.readouterr()
    return CliResult(code, out, err)
