"""Sending events to the spec's notification channels, without ever holding up the work.

This is the first cut used by releases: a generic webhook (JSON body) and a Slack incoming
webhook, each tried a few times with backoff on a background thread. The durable queue, the
circuit breaker and the Telegram and email channels come with the monitoring issue.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..spec import Channel

log = logging.getLogger("shipyard.notify")
_ENV_REF = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclass(frozen=True)
class Event:
    kind: str  # e.g. "rollout.started", "rollout.rolled_back"
    summary: str
    severity: str = "info"  # page | ticket | info
    details: dict[str, Any] = field(default_factory=dict)


def resolve(reference: object) -> str | None:
    """The value behind `${env:NAME}`; None for what cannot be resolved here (a Kubernetes secret)."""
    if isinstance(reference, str):
        match = _ENV_REF.match(reference)
        return os.environ.get(match.group(1)) if match else reference
    return None


_RANK = {"info": 0, "ticket": 1, "page": 2}


class Notifier:
    """Delivers events to channels in the background; `wait()` lets a CLI finish sending."""

    def __init__(self, channels: dict[str, Channel], *, attempts: int = 3, timeout_s: float = 5.0) -> None:
        self.channels = channels
        self.attempts = attempts
        self.timeout_s = timeout_s
        self._threads: list[threading.Thread] = []

    def send(self, event: Event) -> None:
        for name, channel in self.channels.items():
            if channel.kind not in ("webhook", "slack"):
                continue  # telegram and email: the monitoring issue
            if _RANK[event.severity] < _RANK[channel.min_severity]:
                continue
            if "*" not in channel.events and not any(event.kind.startswith(e) for e in channel.events):
                continue
            url = resolve(channel.url)
            if not url:
                log.warning(
                    "channel %s: its URL is not available here (a secretRef or an unset env var)", name
                )
                continue
            body = _slack_body(event) if channel.kind == "slack" else _webhook_body(event)
            thread = threading.Thread(target=self._deliver, args=(name, url, body), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _deliver(self, name: str, url: str, body: dict[str, Any]) -> None:
        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            try:
                response = httpx.post(url, json=body, timeout=self.timeout_s)
                if response.status_code < 300:
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            log.warning("channel %s: attempt %d failed (%s)", name, attempt, problem)  # never the URL
            time.sleep(delay)
            delay *= 2

    def wait(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _webhook_body(event: Event) -> dict[str, Any]:
    return {
        "event": event.kind,
        "summary": event.summary,
        "severity": event.severity,
        "details": event.details,
    }


def _slack_body(event: Event) -> dict[str, Any]:
    icon = {"page": ":rotating_light:", "ticket": ":warning:", "info": ":information_source:"}[event.severity]
    return {"text": f"{icon} {event.summary}"}
