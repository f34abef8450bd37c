"""Running the app under uvicorn, with a shutdown that does not wait on open event streams.

Logging is `shipyard.logs`: JSON lines on stderr (readable lines on a terminal), secrets masked,
uvicorn's own lines routed there too and its access log replaced by the app's (`_access_log`).
"""

from __future__ import annotations

import logging
import os
from types import FrameType

import uvicorn
from fastapi import FastAPI

from .. import __version__
from ..errors import ShipyardError
from ..logs import (
    configure_logging,
    log_uncaught_exceptions,
    logging_config,
    register_environment_secrets,
    register_secret,
)
from ..rollout import KubeConnection
from ._app import ServerConfig, create_app

log = logging.getLogger("shipyard.server")

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


def serve(
    config: ServerConfig,
    host: str,
    port: int,
    workers: int = 1,
    *,
    log_level: str = "info",
    log_json: bool | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, logging at `log_level` to stderr (`log_json`: JSON lines, text
    lines, or None: JSON unless stderr is a terminal)."""
    configure_logging(log_level, json=log_json)
    log_uncaught_exceptions()  # a failed start (the store unreachable, say) is a log line too
    # What this process knows that must never show: its store's URL and secret-named variables.
    register_secret(config.database_url)
    register_environment_secrets()
    log.info(
        "shipyard %s starting on http://%s:%d",
        __version__,
        host,
        port,
        extra={
            "host": host,
            "port": port,
            "workers": workers,
            "environment": config.environment,
            "spec": str(config.spec) if config.spec else None,
        },
    )
    if workers > 1:
        os.environ["SHIPYARD_SERVE_DATABASE_URL"] = config.database_url or ""
        os.environ["SHIPYARD_SERVE_ENVIRONMENT"] = config.environment
        os.environ["SHIPYARD_SERVE_SPEC"] = str(config.spec or "")
        os.environ["SHIPYARD_SERVE_LOG_EVALUATIONS"] = "1" if config.log_evaluations else ""
        kube = config.kube or KubeConnection()
        os.environ["SHIPYARD_SERVE_KUBECONFIG"] = kube.kubeconfig or ""
        os.environ["SHIPYARD_SERVE_KUBE_CONTEXT"] = kube.context or ""
        uvicorn.run(
            "shipyard.server:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # Each worker process applies this when it starts (configure_logging's, as a dict).
            log_config=logging_config(log_level, json=log_json),
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
        )
        return
    try:
        app = create_app(config)
    except ShipyardError as error:  # the store unreachable, say: one record, in the log's format
        log.critical("cannot start: %s", error, extra={"exit_code": error.exit_code})
        raise SystemExit(error.exit_code) from None
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # configured above: uvicorn's loggers propagate to the root's handler
        access_log=False,  # the app's AccessLog writes one (with the actor, without the query)
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    _Server(uv_config, app).run()
