"""Jobs: long operations (releases, backups, restores, drills) as recorded child processes.

A job stores one typed ops request and, when it ends, its typed result; its child runs the ops
function of its kind (`python -m shipyard.jobs <id>`). The API, the dashboard, the scheduler and
`--detach` start jobs through `JobRunner`, so every one of them is listed in `/jobs`.
"""

from ._cli_runs import run_recorded_here
from ._orphans import OrphanReaper
from ._requests import (
    KINDS,
    OPERATIONS,
    JobRequest,
    check_request,
    choices,
    describe,
    parse_request,
    subject_of,
)
from ._runner import CANCELLED, MAX_JOB_ID, JobRunner, JobState, JobView, Origin, action_of, finish_job

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
