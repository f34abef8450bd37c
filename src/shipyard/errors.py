"""Every error shipyard raises on purpose.

Each error carries the exit code the CLI ends with; the CLI turns errors into messages at its edge
and nowhere else (as click does), so library code raises and never prints.

    ShipyardError                 exit 1   something went wrong that is not the user's input
    ├── UserError                 exit 2   a mistake the user can fix; the message says how
    │   ├── SpecError                      shipyard.yaml is invalid; carries every SpecIssue
    │   ├── UnknownEnvironmentError        -e names an environment the spec does not define
    │   ├── UnknownProviderError           --provider names a provider without a price catalog
    │   ├── NoNodeTypeFitsError            no node type of a provider can hold the stack's pods
    │   ├── RenderError                    a rendered object failed its schema (names the object)
    │   ├── NotFoundError                  no such object (a flag, a token)           HTTP 404
    │   ├── ConflictError                  the object changed since it was read       HTTP 409
    │   └── InvalidObjectError             an object (a flag, a rule) fails its rules HTTP 422
    ├── TargetError               exit 1   a target (HAProxy, a process, a cluster) failed or is unreachable
    ├── RolloutError              exit 1   a release cannot go on (another holds the lock, a step failed)
    ├── BackupError               exit 1   a backup or restore failed (a tool missing, a server unreachable)
    │   ├── RepositoryError                the repository refused (wrong password, unreachable, damaged)
    │   └── VerificationError              a backup set failed its verification; names the artefact
    ├── DrError                   exit 1   a failover, failback or drill could not go on
    ├── NotificationError         exit 1   a channel refused or cannot be reached (the message stays queued)
    └── CatalogError              exit 1   a price catalog shipped with shipyard is malformed

No message here holds a secret value: errors about secrets name the field, never its value.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShipyardError(Exception):
    """The root of shipyard's errors."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(ShipyardError):
    """A mistake in the user's input; exit code 2."""

    exit_code = 2


@dataclass(frozen=True, order=True)
class SpecIssue:
    """One problem in a spec file, located as precisely as the file allows."""

    file: str
    line: int  # 1-based; 0 when the problem has no place in the file
    column: int  # 1-based; 0 when unknown
    path: str  # the field path, e.g. "services.api.replicas"; "" for the whole document
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class SpecError(UserError):
    """The spec is invalid; `issues` lists every problem found, not only the first."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = sorted(set(issues))
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the spec"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues))


class UnknownEnvironmentError(UserError):
    """An environment name the spec does not define."""


class UnknownProviderError(UserError):
    """A cloud provider shipyard has no price catalog for."""


class NoNodeTypeFitsError(UserError):
    """No node type of a provider can hold the stack's pods (a pod is bigger than any node)."""


class RenderError(UserError):
    """A rendered object is not valid for Kubernetes."""


class NotFoundError(UserError):
    """The named object does not exist."""


class ConflictError(UserError):
    """A write based on a stale version (If-Match), or one that clashes with an existing object."""


class InvalidObjectError(UserError):
    """An object fails validation; `problems` lists each as (field path, message)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class TargetError(ShipyardError):
    """A target could not do what it was asked (HAProxy unreachable, a process would not start)."""


class RolloutError(ShipyardError):
    """A release cannot proceed: another release holds the service's lock, or a command is not
    allowed in the release's current phase."""


class CatalogError(ShipyardError):
    """A price catalog is malformed (a bug in shipyard's data, not the user's input)."""


class BackupError(ShipyardError):
    """A backup, restore or prune failed: a tool is missing, a server is unreachable, a step failed."""


class RepositoryError(BackupError):
    """The backup repository refused: a wrong password, unreachable, missing or damaged."""


class VerificationError(BackupError):
    """A backup set failed verification; `artefact` names which part (e.g. `postgres:db`)."""

    def __init__(self, message: str, artefact: str | None = None) -> None:
        super().__init__(message)
        self.artefact = artefact


class DrError(ShipyardError):
    """A failover, failback or drill could not go on; the world is left as the message says."""


class NotificationError(ShipyardError):
    """Sending to a notification channel failed, or its secret is not set in this process."""
