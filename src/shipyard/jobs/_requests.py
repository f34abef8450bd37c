"""What a job runs: one ops request, stored as JSON, and the ops function that runs it.

A job is an ops request run in a child process, because a release, a backup or a drill outlives
the request (or the scheduled fire) that started it. The request is checked here before the job
is recorded, so a bad one is refused at once (422), never started.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from ..errors import UserError
from ..ops import (
    CheckFreshness,
    Deploy,
    Restore,
    Result,
    Resume,
    Rollback,
    RunDrill,
    StartWalStream,
    TakeBackup,
    TakePitrBackup,
    Verify,
    Workspace,
    check_freshness,
    deploy,
    restore,
    resume,
    rollback,
    run_drill,
    start_wal_stream,
    take_backup,
    take_pitr_backup,
    verify,
)

JobRequest = Annotated[
    Deploy
    | Rollback
    | Resume
    | TakeBackup
    | TakePitrBackup
    | Verify
    | Restore
    | RunDrill
    | CheckFreshness
    | StartWalStream,
    Field(discriminator="kind"),
]
"""Every request a job can run, told apart by its `kind`."""

_ADAPTER: TypeAdapter[Any] = TypeAdapter(JobRequest)

OPERATIONS: dict[str, Callable[[Workspace, Any], Result]] = {
    "deploy": deploy,
    "rollback": rollback,
    "resume": resume,
    "backup": take_backup,
    "verify": verify,
    "restore": restore,
    "drill": run_drill,
    "pitr-backup": take_pitr_backup,
    "backup-freshness": check_freshness,
    "wal-stream-start": start_wal_stream,
}
"""The ops function of each job kind: the only thing a job's child calls."""

KINDS: tuple[str, ...] = tuple(OPERATIONS)


def _refusal(exc: ValidationError, prefix: str) -> UserError:
    """One line naming the field, the value and what it may be: `drill mode 'chaos': Input should
    be 'full', 'partial', 'backup' or 'restore'`."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ())]
    message = str(first.get("msg", "invalid"))
    if len(location) >= 2:
        value = first.get("input")
        shown = f" {str(value)[:80]!r}" if isinstance(value, str | int | float) else ""
        return UserError(f"{location[0]} {'.'.join(location[1:])}{shown}: {message}")
    return UserError(f"{prefix}: {message}")


def parse_request(data: Any) -> Any:
    """The typed request of a job's stored JSON; UserError naming the field when it is not one."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise _refusal(exc, "not a job request") from None


def parse_request_json(text: str) -> Any:
    """`parse_request` of a JSON document (the `--request` of `python -m shipyard.jobs`)."""
    try:
        return _ADAPTER.validate_json(text)
    except ValidationError as exc:
        raise _refusal(exc, "--request is not a job request") from None


def choices(kind: str, field: str) -> tuple[str, ...]:
    """The values a request field may take (a form's options): `choices("backup", "what")`."""
    for model in typing.get_args(typing.get_args(JobRequest)[0]):
        if model.model_fields["kind"].default == kind:
            annotation = model.model_fields[field].annotation
            return tuple(v for v in _literals(annotation) if v is not None)
    raise KeyError(kind)


def _literals(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]
