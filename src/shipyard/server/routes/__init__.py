"""The REST API's routers, one module per resource; `mount` puts them all on the app.

Each router is thin: it checks the request's shape (FastAPI), calls `shipyard.ops` functions or
starts a job with an ops request, and returns the read model. Errors are the ops layer's own
(`shipyard.errors`), turned into problem+json by the app, each with its class' HTTP status.
"""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from ...flags import LiveFlagSet
from ...jobs import JobRunner
from ...rollout import KubeConnection
from .._auth import TokenAuth
from . import audit, backups, drills, flags, ofrep, rollouts, traffic, unleash
from . import jobs as job_routes


def mount(
    app: FastAPI,
    *,
    live: LiveFlagSet,
    sessions: sessionmaker[Session],
    runner: JobRunner,
    auth: TokenAuth,
    environment: str,
    kube: KubeConnection | None = None,
) -> None:
    """Include every router, each with the dependencies it needs."""
    app.include_router(
        flags.build_router(live, admin=auth.admin, client=auth.client, default_environment=environment)
    )
    app.include_router(ofrep.build_router(live, auth=auth, default_environment=environment))
    # Kept on the app for the fast path (`unleash.fast_routes`), which shares its caches.
    app.state.unleash_api = unleash.UnleashApi(live, auth, environment)
    app.include_router(unleash.build_router(app.state.unleash_api))
    app.include_router(job_routes.build_router(runner, admin=auth.admin))
    app.include_router(rollouts.build_router(sessions, runner, admin=auth.admin, kube=kube))
    for module in (backups, drills, traffic):
        app.include_router(module.build_router(sessions, runner, admin=auth.admin))
    app.include_router(audit.build_router(sessions, admin=auth.admin))


__all__ = [
    "audit",
    "backups",
    "drills",
    "flags",
    "job_routes",
    "mount",
    "ofrep",
    "rollouts",
    "traffic",
    "unleash",
]
