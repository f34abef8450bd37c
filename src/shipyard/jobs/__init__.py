"""Jobs: long operations (releases, backups, restores, drills) as recorded child processes.

A job stores one typed ops request and, when it ends, its typed result; its child runs the ops
function of its kind (`python -m shipyard.jobs <id>`). The API, the dashboard, the scheduler and
`--detach` start jobs through `JobRunner`, so every one of them is listed in `/jobs`.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# Imported on first use (see shipyard._lazy): a CLI run recorded as a job needs `run_recorded_here`,
# not the union of every job request, which loads the backup and drill modules.
if TYPE_CHECKING:
    from ._cli_runs import run_recorded_here
    from ._orphans import OrphanReaper
    from ._requests import KINDS, OPERATIONS, JobRequest, choices, parse_request
    from ._runner import CANCELLED, MAX_JOB_ID, JobRunner, JobState, JobView, Origin, action_of, finish_job
    from ._stored import check_request, describe, subject_of

__all__ = [
    "CANCELLED",
    "KINDS",
    "MAX_JOB_ID",
    "OPERATIONS",
    "JobRequest",
    "JobRunner",
    "JobState",
    "JobView",
    "Origin",
    "OrphanReaper",
    "action_of",
    "check_request",
    "choices",
    "describe",
    "finish_job",
    "parse_request",
    "run_recorded_here",
    "subject_of",
]


if not TYPE_CHECKING:  # to a type checker, a module `__getattr__` would make every name exist
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
