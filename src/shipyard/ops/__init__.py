"""The application layer: one typed function per verb, over a `Workspace` built once.

The CLI, the API routes, the dashboard, jobs and the scheduler call these functions and only
these: nothing is implemented twice, and nothing calls the CLI through argv. Each function takes
a frozen request (`Request`) and returns a typed result (`Result`) whose `summary()` is its one
line for people; requests are JSON so that a job can store one and run it later.

    ws = Workspace.open(Path("shipyard.yaml"), "production")
    result = take_backup(ws, TakeBackup(what="full"))
    print(result.summary())
"""

from ._base import Request, Result
from ._workspace import Workspace, current_actor, pick_environment

__all__ = [
    "Request",
    "Result",
    "Workspace",
    "current_actor",
    "pick_environment",
]
