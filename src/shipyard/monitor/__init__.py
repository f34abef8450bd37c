"""Health, shipyard's own metrics and notification channels (webhook, Slack, Telegram, email).

Events go through a durable outbox in the state store: `Notifier.send()` queues, a background
thread (and, in `shipyard serve`, `OutboxDelivery`) delivers each channel's messages in order,
with retries, backoff and a circuit breaker per channel.

`TrafficHistory` (in `shipyard serve`) records every service's requests, 5xx and latency per
minute from HAProxy; `traffic_series` reads them back for the dashboard and the API.
"""

from ._backoff import Backoff, Breakers, BreakerState, CircuitBreaker
from ._channel_urls import channel_url_problems
from ._channels import TELEGRAM_API, DeliveryFailed, NotResolvable, check_resolvable, deliver
from ._delivery import OutboxDelivery
from ._event import Event
from ._metrics import ShipyardCollector
from ._notify import Notifier, matches
from ._outbox import Attempt, Outbox, QueuedMessage, list_queue, purge_delivered
from ._secrets import redact, redact_url, resolve
from ._traffic_history import RETENTION_S as TRAFFIC_RETENTION_S
from ._traffic_history import (
    TrafficHistory,
    TrafficMinute,
    TrafficPoint,
    TrafficSeries,
    record_minutes,
    recorded_services,
    traffic_minutes,
    traffic_series,
)

__all__ = [
    "TELEGRAM_API",
    "TRAFFIC_RETENTION_S",
    "Attempt",
    "Backoff",
    "BreakerState",
    "Breakers",
    "CircuitBreaker",
    "DeliveryFailed",
    "Event",
    "NotResolvable",
    "Notifier",
    "Outbox",
    "OutboxDelivery",
    "QueuedMessage",
    "ShipyardCollector",
    "TrafficHistory",
    "TrafficMinute",
    "TrafficPoint",
    "TrafficSeries",
    "channel_url_problems",
    "check_resolvable",
    "deliver",
    "list_queue",
    "matches",
    "purge_delivered",
    "record_minutes",
    "recorded_services",
    "redact",
    "redact_url",
    "resolve",
    "traffic_minutes",
    "traffic_series",
]
