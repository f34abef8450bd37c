"""Health, shipyard's own metrics and notification channels."""

from ._notify import Event, Notifier, resolve

__all__ = ["Event", "Notifier", "resolve"]
