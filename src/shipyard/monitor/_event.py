"""What a notification says: an event, independent of the channel that carries it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SEVERITY_RANK = {"info": 0, "ticket": 1, "page": 2}


@dataclass(frozen=True)
class Event:
    kind: str  # e.g. "rollout.started", "rollout.rolled_back"
    summary: str
    severity: str = "info"  # page | ticket | info
    details: dict[str, Any] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        """The event as JSON-ready data (details that JSON cannot hold become strings)."""
        return {
            "kind": self.kind,
            "summary": self.summary,
            "severity": self.severity,
            "details": json.loads(json.dumps(self.details, default=str)),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Event:
        return cls(
            data["kind"], data["summary"], data.get("severity", "info"), dict(data.get("details") or {})
        )
