"""Health, shipyard's own metrics and notification channels (webhook, Slack, Telegram, email).

Events go through a durable outbox in the state store: `Notifier.send()` queues, a background
thread (and, in `shipyard serve`, `OutboxDelivery`) delivers each channel's messages in order,
with retries, backoff and a circuit breaker per channel.
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

__all__ = [
    "TELEGRAM_API",
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
    "channel_url_problems",
    "check_resolvable",
    "deliver",
    "list_queue",
    "matches",
    "purge_delivered",
    "redact",
    "redact_url",
    "resolve",
]
