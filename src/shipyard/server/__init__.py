"""`shipyard serve`: the FastAPI app with the routers of `routes/`, health, metrics and the dashboard."""

import os
from pathlib import Path

from fastapi import FastAPI

from ..rollout import KubeConnection
from ._app import ServerConfig, create_app, problem
from ._run import serve


def app_from_environment() -> FastAPI:
    """The app for uvicorn's `--factory` with several workers (settings come by environment)."""
    return create_app(
        ServerConfig(
            database_url=os.environ.get("SHIPYARD_SERVE_DATABASE_URL") or None,
            environment=os.environ.get("SHIPYARD_SERVE_ENVIRONMENT", "production"),
            spec=Path(spec) if (spec := os.environ.get("SHIPYARD_SERVE_SPEC")) else None,
            log_evaluations=os.environ.get("SHIPYARD_SERVE_LOG_EVALUATIONS") == "1",
            kube=KubeConnection(
                os.environ.get("SHIPYARD_SERVE_KUBECONFIG") or None,
                os.environ.get("SHIPYARD_SERVE_KUBE_CONTEXT") or None,
            ),
        )
    )


__all__ = ["ServerConfig", "app_from_environment", "create_app", "problem", "serve"]
