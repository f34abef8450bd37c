"""What a job runs: one ops request, stored as JSON, and the ops function that runs it.

A job is an ops request run in a child process, because a release, a backup or a drill outlives
the request (or the scheduled fire) that started it. The request is checked here before the job
is recorded, so a bad one is refused at once (422), never started.
"""

from __future__ import annotations

import re
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
from ..spec import Stack

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
SUBJECTS: dict[str, tuple[str, str]] = {
    # kind: (what the audit calls the job's subject, the request field that names it)
    "deploy": ("service", "service"),
    "rollback": ("service", "service"),
    "resume": ("service", "service"),
    "backup": ("backup_kind", "what"),
    "verify": ("backup_set", "set_id"),
    "restore": ("backup_set", "set_id"),
    "drill": ("drill_mode", "mode"),
}
VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
SET_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")


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


def subject_of(request: dict[str, Any]) -> tuple[str, str]:
    """(subject kind, subject) of a stored request, for the audit trail: ("service", "web"),
    ("backup_set", "2026…"); "latest" for a verification of the newest set."""
    kind = str(request.get("kind", "?"))
    if kind not in SUBJECTS:
        return "job", kind
    subject_kind, field = SUBJECTS[kind]
    value = request.get(field)
    return subject_kind, str(value) if value is not None else "latest"


def check_request(request: Any, stack: Stack) -> None:
    """Refuse a request this stack cannot run, before it is recorded: UserError saying why."""
    service = getattr(request, "service", None)
    if request.kind in ("deploy", "rollback", "resume") and service not in stack.services:
        raise UserError(
            f"service {str(service)[:80]!r} is not in stack {stack.name!r};"
            f" services: {', '.join(stack.services)}"
        )
    version = getattr(request, "version", None)
    if request.kind == "deploy" and not VERSION.fullmatch(str(version)):
        raise UserError(f"version {str(version)[:80]!r} is not valid (e.g. v2 or 1.4.0)")
    set_id = getattr(request, "set_id", None)
    if set_id is not None and not SET_ID.fullmatch(str(set_id)):
        raise UserError(f"backup set {str(set_id)[:80]!r} is not valid (e.g. 20261201-031500-ab12)")
    if request.kind == "restore" and getattr(request, "into", "scratch") != "scratch":
        # Overwriting live data takes an operator at a terminal (`shipyard restore … --into live`).
        raise UserError("a job restores into scratch only; restore over live data with the CLI")


def describe(request: dict[str, Any]) -> str:
    """A stored request in one line for people: `deploy service=web version=v2`."""
    kind = str(request.get("kind", "?"))
    fields = " ".join(
        f"{key}={value}" for key, value in request.items() if key != "kind" and value is not None
    )
    return f"{kind} {fields}".strip()
