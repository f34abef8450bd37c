"""The workspace every verb runs in: the stack, the state store, local paths, who acts, the notifier.

It is built once at an edge (a CLI command, an API request's server, a job child, the scheduler)
and handed to the `ops` functions, which never read the environment themselves. That keeps one
answer to "which spec, which store, which directory, who" per process.
"""

from __future__ import annotations

import functools
import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError
from ..host import state_dir
from ..spec import Spec, Stack, load_spec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ..monitor import Notifier

ACTOR_ENV = "SHIPYARD_ACTOR"


def current_actor() -> str:
    """Who is acting, for the audit trail: `$SHIPYARD_ACTOR`, else the login name, as `cli:<name>`.

    An actor that already says where it acts from (`token:ops` for a job the server started for
    an API token, `schedule:backup-full` for a scheduled run) is kept as it is.
    """
    name = os.environ.get(ACTOR_ENV) or getpass.getuser()
    return name if ":" in name else f"cli:{name}"


def pick_environment(spec: Spec, environment: str | None) -> str:
    """`environment`, else the spec's only environment, else production."""
    if environment is not None:
        return environment
    return spec.environments[0] if len(spec.environments) == 1 else "production"


@dataclass
class Workspace:
    """One stack in one environment, over one state store, as one actor.

    A verb that needs no stack (a flag change, steering a recorded release) runs in a workspace
    with no spec; asking such a workspace for its stack is a UserError that names `-f`.
    """

    spec_path: Path | None = None
    environment: str = "production"
    database_url: str | None = None
    """The state store (None: `$SHIPYARD_DATABASE_URL`, else SQLite under the state directory)."""
    actor: str = field(default_factory=current_actor)
    state_dir: Path = field(default_factory=state_dir)
    opened_sessions: sessionmaker[Session] | None = field(default=None, repr=False)
    """Sessions an edge already holds (the server's), used instead of opening the store again."""
    any_environment: bool = False
    """Steering with no environment named: act on the service's newest release in any environment
    (one store can hold staging's and production's); else only on `environment`'s."""
    reads_only: bool = False
    """A verb that only reads: the store must exist already (StateStoreMissing, naming where it
    looked, instead of an empty store created to answer "nothing yet")."""

    @classmethod
    def open(
        cls,
        spec_path: Path,
        environment: str | None = None,
        *,
        database_url: str | None = None,
        actor: str | None = None,
    ) -> Workspace:
        """A workspace on `spec_path`; with no environment, the spec's only one, else production."""
        spec = load_spec(spec_path)
        workspace = cls(
            spec_path=spec_path,
            environment=pick_environment(spec, environment),
            database_url=database_url,
            actor=actor or current_actor(),
        )
        workspace.__dict__["spec"] = spec  # the cached_property, already read
        return workspace

    @functools.cached_property
    def spec(self) -> Spec:
        if self.spec_path is None:
            raise UserError("this needs the stack's spec: give it with -f shipyard.yaml (or `serve -f SPEC`)")
        return load_spec(self.spec_path)

    @functools.cached_property
    def stack(self) -> Stack:
        return self.spec.stack(self.environment)

    @property
    def workdir(self) -> Path:
        """Where the services' commands run: the spec's directory."""
        return (self.spec_path or Path("shipyard.yaml")).resolve().parent

    @functools.cached_property
    def sessions(self) -> sessionmaker[Session]:
        """Sessions on the state store (migrated when behind; created unless `reads_only`), opened
        on first use."""
        if self.opened_sessions is not None:
            return self.opened_sessions
        from ..state import open_engine, open_existing, session_factory  # noqa: PLC0415 - SQLAlchemy only when used

        opened = open_existing if self.reads_only else open_engine
        return session_factory(opened(self.database_url))

    @functools.cached_property
    def notifier(self) -> Notifier:
        from ..monitor import Notifier  # noqa: PLC0415 - the outbox only when something notifies

        return Notifier(self.stack.notifications, self.sessions)

    def local_state(self) -> Path:
        """Where the local target keeps this stack's instances and HAProxy."""
        return self.state_dir / "local" / f"{self.stack.name}-{self.environment}"

    def drill_reports(self) -> Path:
        """Where drill reports go by default."""
        return self.state_dir / "drills"

    def job_logs(self) -> Path:
        """Where jobs' output goes."""
        return self.state_dir / "jobs"
