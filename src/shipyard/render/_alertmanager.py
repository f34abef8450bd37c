"""Alertmanager: alerts routed by severity to the spec's notification channels.

One receiver per severity (`page`, `ticket`, `info`) holds every channel whose `min_severity`
lets that severity through, so a page reaches every channel and an info only the chatty ones.
A page inhibits the ticket of the same alert, service and SLO. Secrets are never written: each
reference becomes a file Alertmanager reads (`*_file` fields, Alertmanager 0.26 or later) under
SECRETS_DIR, `<secret>/<key>` as a mounted Kubernetes Secret lays them out, `env/<NAME>` for an
`${env:NAME}` reference.
"""

from __future__ import annotations

from typing import Any

from ..errors import RenderError
from ..spec import Channel, SecretRef, Stack

SECRETS_DIR = "/etc/alertmanager/secrets"
SEVERITIES = ("page", "ticket", "info")
_RANK = {severity: rank for rank, severity in enumerate(reversed(SEVERITIES))}
DEFAULT_RECEIVER = "info"


def secret_file(reference: SecretRef | str) -> str:
    """Where Alertmanager reads a referenced secret from."""
    if isinstance(reference, SecretRef):
        return f"{SECRETS_DIR}/{reference.name}/{reference.key}"
    name = reference.removeprefix("${env:").removesuffix("}")
    return f"{SECRETS_DIR}/env/{name}"


def _webhook(channel: Channel) -> tuple[str, dict[str, Any]]:
    assert channel.url is not None  # the model requires a url of a webhook channel
    return "webhook_configs", {"url_file": secret_file(channel.url), "send_resolved": True}


def _slack(channel: Channel) -> tuple[str, dict[str, Any]]:
    assert channel.url is not None
    return "slack_configs", {
        "api_url_file": secret_file(channel.url),
        "send_resolved": True,
        "title": "{{ .Status | toUpper }}: {{ .CommonLabels.alertname }}"
        " {{ with .CommonLabels.service }}({{ . }}){{ end }}",
        "text": "{{ range .Alerts }}{{ .Annotations.summary }}\n{{ .Annotations.description }}\n"
        "Runbook: {{ .Annotations.runbook_url }}\n{{ end }}",
    }


def _telegram(name: str, channel: Channel) -> tuple[str, dict[str, Any]]:
    assert channel.token is not None
    assert channel.chat_id is not None
    try:
        chat_id = int(channel.chat_id)
    except ValueError:
        raise RenderError(
            f"notifications.{name}.chat_id: Alertmanager needs a numeric chat id, not {channel.chat_id!r}"
        ) from None
    config: dict[str, Any] = {
        "bot_token_file": secret_file(channel.token),
        "chat_id": chat_id,
        "parse_mode": "HTML",
        "send_resolved": True,
    }
    if channel.api_url:
        config["api_url"] = channel.api_url
    return "telegram_configs", config


def _email(channel: Channel) -> tuple[str, dict[str, Any]]:
    assert channel.smtp_host is not None
    config: dict[str, Any] = {
        "to": ", ".join(channel.to),
        "from": channel.sender or f"shipyard@{channel.smtp_host}",
        "smarthost": f"{channel.smtp_host}:{channel.smtp_port}",
        "require_tls": channel.starttls,
        "send_resolved": True,
    }
    if channel.smtp_user:
        config["auth_username"] = channel.smtp_user
    if channel.smtp_password is not None:
        config["auth_password_file"] = secret_file(channel.smtp_password)
    return "email_configs", config


def channel_config(name: str, channel: Channel) -> tuple[str, dict[str, Any]]:
    """The receiver field (`slack_configs`, …) and the config one channel adds to it."""
    if channel.kind == "webhook":
        return _webhook(channel)
    if channel.kind == "slack":
        return _slack(channel)
    if channel.kind == "telegram":
        return _telegram(name, channel)
    return _email(channel)


def receives(channel: Channel, severity: str) -> bool:
    """Whether a channel takes alerts of `severity` (page > ticket > info)."""
    return _RANK[severity] >= _RANK[channel.min_severity]


def secret_files(stack: Stack) -> list[str]:
    """Every file the configuration reads a secret from (to be mounted), sorted."""
    found = set()
    for channel in stack.notifications.values():
        for reference in (channel.url, channel.token, channel.smtp_password):
            if reference is not None:
                found.add(secret_file(reference))
    return sorted(found)


def alertmanager_config(stack: Stack) -> dict[str, Any]:
    """alertmanager.yml for one environment."""
    receivers = []
    for severity in SEVERITIES:
        receiver: dict[str, Any] = {"name": severity}
        for name, channel in sorted(stack.notifications.items()):
            if receives(channel, severity):
                field, config = channel_config(name, channel)
                receiver.setdefault(field, []).append(config)
        receivers.append(receiver)
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": DEFAULT_RECEIVER,
            "group_by": ["alertname", "service"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ['severity="page"'],
                    "receiver": "page",
                    "group_wait": "10s",
                    "repeat_interval": "1h",
                },
                {"matchers": ['severity="ticket"'], "receiver": "ticket", "repeat_interval": "12h"},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": ['severity="page"'],
                "target_matchers": ['severity="ticket"'],
                # `slo` too, so one SLO's page does not hide another SLO's ticket (a label
                # neither alert has counts as equal)
                "equal": ["alertname", "service", "slo"],
            }
        ],
        "receivers": receivers,
    }


def alertmanager_header(stack: Stack) -> str:
    """A comment naming the secret files to mount (paths only, never values)."""
    lines = [
        f"# Alertmanager for stack {stack.name!r} ({stack.environment or 'default'}), rendered by shipyard."
    ]
    files = secret_files(stack)
    if files:
        lines.append("# Secrets are read from files; mount each before starting Alertmanager (0.26+):")
        lines += [f"#   {path}" for path in files]
    return "\n".join(lines) + "\n"
