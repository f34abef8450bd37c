"""The `shipyard` command line: one module per command group, errors turned into messages here.

Library code raises `shipyard.errors` exceptions and never prints; `main()` is the only place
that turns an error into a message and an exit code. Usage mistakes (an unknown option, a missing
argument) are Typer's to report, with exit code 2.
"""

from __future__ import annotations

from rich.markup import escape

from ..errors import ShipyardError
from . import _audit, _backup, _capacity, _dr, _flags, _notify, _render, _rollout, _spec
from ._app import app, console_err

_spec.register(app)
_render.register(app)
_capacity.register(app)
_flags.register(app)
_rollout.register(app)
_backup.register(app)
_dr.register(app)
_notify.register(app)
_audit.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; always ends by raising SystemExit with the exit code."""
    try:
        app(args=argv, prog_name="shipyard")
    except ShipyardError as exc:
        console_err.print(f"[bold red]error:[/] {_escape(exc.message)}")
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        console_err.print("interrupted")
        raise SystemExit(130) from None


def _escape(text: str) -> str:
    return escape(text)


__all__ = ["app", "main"]
