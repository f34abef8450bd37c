"""The one interface every place a release can run behind (plain hosts + HAProxy, Kubernetes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .._model import Health, MigrationResult, Sample, TargetStatus


class Target(Protocol):
    """Runs versions of services and routes traffic between them. It decides nothing.

    Every method is idempotent: the controller may call one again after a crash without knowing
    whether the first call took effect. Errors are `shipyard.errors.TargetError`.
    """

    name: str

    def status(self, service: str) -> TargetStatus:
        """The versions running for `service`, their weights and health."""
        ...

    def prepare(self, service: str, version: str, instances: int) -> None:
        """Start `instances` instances of `version` that take no traffic yet."""
        ...

    def health(self, service: str, version: str) -> Health:
        """How many of `version`'s instances pass their health check now."""
        ...

    def migrate(self, service: str, version: str) -> MigrationResult:
        """Run the service's migration command with `version`'s code and environment."""
        ...

    def set_weights(self, service: str, weights: Mapping[str, int]) -> None:
        """Route `service`'s traffic: version -> percent (the percentages sum to 100)."""
        ...

    def crashed(self, service: str, version: str) -> str | None:
        """Why `version` is not running as it was started: an instance exited without being asked
        to (restarted or not), with the end of its log; None if none did. Cheap: called often."""
        ...

    def sample(self, service: str, version: str) -> Sample:
        """Cumulative counters of `version`'s traffic since its instances started."""
        ...

    def retire(self, service: str, version: str) -> None:
        """Stop sending `version` new requests, let in-flight ones finish, stop its instances."""
        ...
