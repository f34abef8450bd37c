"""Running the app under uvicorn, with a shutdown that does not wait on open event streams."""

from __future__ import annotations

import os
from types import FrameType

import uvicorn
from fastapi import FastAPI

from ._app import ServerConfig, create_app

# Streams are ended at once on SIGTERM (single process); anything still open after this long
# (several worker processes, where the hook below does not reach) is cut.
GRACEFUL_SECONDS = 3


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # uvicorn waits for open responses before it shuts down, and an SDK's event stream never
        # ends by itself: end the streams first, so a stop takes milliseconds, not a timeout.
        self._app.state.live.close()
        super().handle_exit(sig, frame)


def serve(config: ServerConfig, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM."""
    if workers > 1:
        os.environ["SHIPYARD_SERVE_DATABASE_URL"] = config.database_url or ""
        os.environ["SHIPYARD_SERVE_ENVIRONMENT"] = config.environment
        os.environ["SHIPYARD_SERVE_SPEC"] = str(config.spec or "")
        uvicorn.run(
            "shipyard.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
        return
    app = create_app(config)
    uv_config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACEFUL_SECONDS
    )
    _Server(uv_config, app).run()
