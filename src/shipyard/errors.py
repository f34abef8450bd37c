"""Every error shipyard raises on purpose, each with its exit code and its HTTP status.

Each class carries the exit code the CLI ends with and the status the API answers with; the edges
turn errors into messages (the CLI's `main`, the server's problem+json handler) and nowhere else,
as click does, so library code raises and never prints. A class states its own status: none
inherits 500 by accident (`tests/unit/test_errors.py` holds this tree against the classes).

    class                          exit  HTTP  meaning
    ShipyardError                  1     500   something went wrong that is not the user's input
    ├── UserError                  2     422   a mistake the user can fix; the message says how
    │   ├── SpecError              2     422   shipyard.yaml is invalid; carries every SpecIssue
    │   ├── UnknownEnvironmentError 2    422   -e names an environment the spec does not define
    │   ├── UnknownProviderError   2     422   --provider names a provider without a price catalog
    │   ├── UnknownInstanceClassError 2  422   an external datastore's instance class is in no price catalog
    │   ├── NoNodeTypeFitsError    2     422   no node type of a provider can hold the stack's pods
    │   ├── RenderError            2     422   a rendered object failed its schema (names the object)
    │   ├── NotFoundError          2     404   no such object (a flag, a token, a job, a release)
    │   │   └── StateStoreMissing  2     404   a read found no state store where it looked (names where)
    │   ├── ConflictError          2     409   the write clashes with the object's state (the key exists)
    │   │   ├── PreconditionFailedError 2  412   an If-Match names a version the object is not at
    │   │   ├── ReleaseInProgress  2     409   a deploy while another release of the service runs (names it)
    │   │   └── PromotionRefused   2     409   `promote`: nothing live passed, no digest, or target runs it
    │   └── InvalidObjectError     2     422   an object (a flag, a rule) fails its rules
    ├── TargetError                1     502   a target (HAProxy, a process, a cluster) failed
    │   └── _MissingError          1     404   (rollout.targets.kubernetes) the cluster has no such object
    ├── RolloutError               1     409   a release cannot go on (another holds the lock, a step failed)
    │   ├── ReleaseStopped         130   503   this process stopped running a release (Ctrl-C, SIGTERM)
    │   ├── ReleaseUnattended      1     409   an unfinished release that no controller runs
    │   └── QueryRefused           1     502   (rollout._prometheus) Prometheus refused a query
    ├── BackupError                1     502   a backup or restore failed (a tool missing, a server down)
    │   ├── RepositoryError        1     502   the repository refused (wrong password, unreachable, damaged)
    │   └── VerificationError      1     409   a backup set failed its verification; names the artefact
    ├── DrError                    1     502   a failover, failback or drill could not go on
    │   └── EtcdRefused            1     502   (dr._etcd) etcd refused a request (HA datastores' DCS)
    ├── NotificationError          1     502   a channel refused or is down (the message stays queued)
    │   ├── DeliveryFailed         1     502   (monitor._channels) one attempt failed
    │   └── NotResolvable          1     422   (monitor._channels) a channel's secret is not set here
    ├── LockHeldError              1     409   (locks) someone else holds the lease
    ├── JobFailedError             1     502   a job (a child process) ended in failure
    ├── UnavailableError           3     503   a component is unreachable (says which, where, what to check)
    │   ├── StateStoreUnavailable  3     503   the state store's database refuses or does not answer
    │   ├── HAProxyUnreachable     3     503   (rollout.targets.haproxy) nothing answers on the admin socket ¹
    │   ├── KubernetesUnreachable  3     503   the Kubernetes API server does not answer ¹
    │   ├── RepositoryUnreachable  3     503   the repository (S3, rest server, a directory) is unreachable ²
    │   ├── DatastoreUnreachable   3     503   a PostgreSQL or Redis backed up or restored does not answer ³
    │   └── PrometheusUnreachable  3     503   (rollout._prometheus) Prometheus did not answer ⁴
    └── CatalogError               1     500   a price catalog shipped with shipyard is malformed (our bug)

¹ a TargetError too, ² a RepositoryError too, ³ a BackupError too, ⁴ a RolloutError too: code that
handles a target's, the repository's, a backup's or a release's failure handles these as before,
and the CLI ends with 3.

No message here holds a secret value: errors about secrets name the field, never its value.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShipyardError(Exception):
    """The root of shipyard's errors."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(ShipyardError):
    """A mistake in the user's input; exit code 2."""

    exit_code = 2
    http_status = 422


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

    http_status = 422

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = sorted(set(issues))
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} in the spec"
        super().__init__(head + ":\n" + "\n".join(f"  {issue}" for issue in self.issues))


class UnknownEnvironmentError(UserError):
    """An environment name the spec does not define."""

    http_status = 422


class UnknownProviderError(UserError):
    """A cloud provider shipyard has no price catalog for."""

    http_status = 422


class UnknownInstanceClassError(UserError):
    """An external datastore's `instance_class` that no price catalog lists (or lists for another
    engine, or without the Multi-AZ price it asks for)."""

    http_status = 422


class NoNodeTypeFitsError(UserError):
    """No node type of a provider can hold the stack's pods (a pod is bigger than any node)."""

    http_status = 422


class RenderError(UserError):
    """A rendered object is not valid for Kubernetes."""

    http_status = 422


class NotFoundError(UserError):
    """The named object does not exist."""

    http_status = 404


class ConflictError(UserError):
    """A write that clashes with the object's state: it exists already, or changed under the write."""

    http_status = 409


class PreconditionFailedError(ConflictError):
    """A write whose If-Match names a version the object is not at (or an object that is gone).

    RFC 9110 §13.1.1 answers a false If-Match with 412, not 409. A ConflictError still, so that code
    catching a stale write (the SDK, the CLI) catches it under either name.
    """

    http_status = 412


class ReleaseInProgress(ConflictError):
    """A release asked for while another release of the same service runs (a controller holds its
    lease, or a job has just been started to run one); `rollout_id` is the running release's id
    (None while the job has not recorded it yet, its `job_id` then)."""

    http_status = 409

    def __init__(self, message: str, *, rollout_id: int | None = None, job_id: int | None = None) -> None:
        super().__init__(message)
        self.rollout_id = rollout_id
        self.job_id = job_id


class PromotionRefused(ConflictError):
    """`shipyard promote` found nothing it may release: the source environment has no successful
    release that is still live, its image has no digest (Kubernetes), or the target runs it already."""

    http_status = 409


class InvalidObjectError(UserError):
    """An object fails validation; `problems` lists each as (field path, message)."""

    http_status = 422

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class StateStoreMissing(NotFoundError):
    """A command that only reads found no state store where it looked; it creates none (an empty
    store would answer "nothing yet" for a store that is somewhere else). The message names the
    SQLite file or the URL (its password hidden) and how to point at or create the store."""

    http_status = 404


class TargetError(ShipyardError):
    """A target could not do what it was asked (HAProxy unreachable, a process would not start)."""

    http_status = 502


class RolloutError(ShipyardError):
    """A release cannot proceed: another release holds the service's lock, or a command is not
    allowed in the release's current phase."""

    http_status = 409


class ReleaseStopped(RolloutError):
    """This process stopped running a release (Ctrl-C, SIGTERM); the release stays recorded and
    `shipyard rollout resume` carries it on."""

    exit_code = 130
    http_status = 503


class ReleaseUnattended(RolloutError):
    """A release that is not over, and that no controller runs (its process was stopped)."""

    http_status = 409


class CatalogError(ShipyardError):
    """A price catalog is malformed (a bug in shipyard's data, not the user's input)."""

    http_status = 500


class BackupError(ShipyardError):
    """A backup, restore or prune failed: a tool is missing, a server is unreachable, a step failed."""

    http_status = 502


class RepositoryError(BackupError):
    """The backup repository refused: a wrong password, unreachable, missing or damaged."""

    http_status = 502


class VerificationError(BackupError):
    """A backup set failed verification; `artefact` names which part (e.g. `postgres:db`)."""

    http_status = 409

    def __init__(self, message: str, artefact: str | None = None) -> None:
        super().__init__(message)
        self.artefact = artefact


class DrError(ShipyardError):
    """A failover, failback or drill could not go on; the world is left as the message says."""

    http_status = 502


class NotificationError(ShipyardError):
    """Sending to a notification channel failed, or its secret is not set in this process."""

    http_status = 502


class JobFailedError(ShipyardError):
    """A job (an ops request run in a child process) ended in failure; the message says how."""

    http_status = 502


class UnavailableError(ShipyardError):
    """A real component (a database, a socket, a repository, an API) could not be reached; exit 3.

    The message is one line: the component, its address (never a password) and what to check.
    """

    exit_code = 3
    http_status = 503


class StateStoreUnavailable(UnavailableError):
    """The state store's database refused the connection or stopped answering."""

    http_status = 503


class KubernetesUnreachable(TargetError, UnavailableError):
    """The Kubernetes API server did not answer (refused, DNS, timeout); names its URL."""

    exit_code = 3
    http_status = 503


class RepositoryUnreachable(RepositoryError, UnavailableError):
    """The backup repository could not be reached: its S3 endpoint or rest-server refused or did not
    answer, or a local repository's directory is not there (an unmounted volume)."""

    exit_code = 3
    http_status = 503


class DatastoreUnreachable(BackupError, UnavailableError):
    """A PostgreSQL or Redis datastore being backed up or restored refused the connection or did
    not answer (not a wrong password: that stays a BackupError)."""

    exit_code = 3
    http_status = 503
