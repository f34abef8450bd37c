"""The dashboard: server-rendered pages over the same functions the API and the CLI call."""

from __future__ import annotations

from fastapi import FastAPI


def mount_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages (under `/ui`) and static files to the app."""
