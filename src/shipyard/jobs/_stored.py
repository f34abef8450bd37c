"""A job's request as stored (its JSON), read without its types: its subject for the audit, its
line for people, and the checks made before it is recorded.

Apart from `_requests` (the typed union of every request) because that union loads every ops
module a job may run, backups and drills included: a CLI run recorded as a job (`shipyard deploy`)
needs only these, and under load each import is CPU taken from the apps it releases.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import UserError
from ..spec import Stack

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


def subject_of(request: dict[str, Any]) -> tuple[str, str]:
    """(subject kind, subject) of a stored request, for the audit trail: ("service", "web"),
    ("backup_set", "2026…"); "latest" for a verification of the newest set."""
    kind = str(request.get("kind", "?"))
    if kind not in SUBJECTS:
        return "job", kind
    subject_kind, field = SUBJECTS[kind]
    value = request.get(field)
    return subject_kind, str(value) if value is not None else "latest"


def describe(request: dict[str, Any]) -> str:
    """A stored request in one line for people: `deploy service=web version=v2`."""
    kind = str(request.get("kind", "?"))
    fields = " ".join(
        f"{key}={value}" for key, value in request.items() if key != "kind" and value is not None
    )
    return f"{kind} {fields}".strip()


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
