"""The registry `/metrics` serves: the process, the build, the API's own request metrics and
refused credentials (the store-derived families are `shipyard.monitor.ShipyardCollector`'s).

Counters and histograms carry no `_created` series: Prometheus ignores them in the text format,
and they doubled every counter's lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from .. import __version__

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
UNMEASURED_PREFIXES = ("/ui/", "/docs/assets/")
"""Dashboard pages and static files: not the API, kept out of its latency histogram."""


def measured(path: str) -> bool:
    """Whether a request to `path` belongs in the API's request histogram."""
    return path != "/ui" and not path.startswith(UNMEASURED_PREFIXES)


@dataclass(frozen=True)
class ServerMetrics:
    registry: CollectorRegistry
    requests: Histogram
    """API latency by method, route template and status `code`."""
    evaluations: Counter
    auth_failures: Counter
    """Refused tokens and sign-ins, by `via` (api, dashboard) and `reason`."""

    def refused(self, via: str) -> Callable[[str], None]:
        """A callback counting one refusal through `via`, given its reason."""
        return lambda reason: self.auth_failures.labels(via, reason).inc()


def server_metrics() -> ServerMetrics:
    # Process-wide in prometheus_client (untyped there); nothing in shipyard wants them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    Info("shipyard_build", "The running shipyard's version", registry=registry).info({"version": __version__})
    requests = Histogram(
        "shipyard_http_request_duration_seconds",
        "API latency by route and status code (dashboard pages and static files excluded)",
        ["method", "route", "code"],
        registry=registry,
        buckets=REQUEST_BUCKETS,
    )
    evaluations = Counter(
        "shipyard_flag_evaluations", "Flag evaluations served by the API", registry=registry
    )
    auth_failures = Counter(
        "shipyard_auth_failures",
        "Refused API tokens (missing, invalid, scope) and dashboard sign-ins (invalid, rate_limited)",
        ["via", "reason"],
        registry=registry,
    )
    return ServerMetrics(registry, requests, evaluations, auth_failures)
