"""`shipyard notify`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `notify` command group to the app."""
