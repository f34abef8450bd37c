"""`shipyard audit`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `audit` command group to the app."""
