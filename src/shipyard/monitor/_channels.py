"""The four channel kinds: how each formats an event, sends it once, and what its failures mean.

A delivery is one attempt with a timeout. It succeeds, or raises `DeliveryFailed`, which says
whether trying again can help (connection errors, timeouts, 408, 429, 5xx, SMTP 4xx) and how
long the channel asked to be left alone (Retry-After), or `NotResolvable` when a secret reference
is not set in this process (another process, such as the server, may have it).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import os
import smtplib
import ssl
import threading
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

import httpx

from ..errors import NotificationError
from ..spec import Channel, url_problem
from ._channel_urls import RefusedAddress, Resolver, checked_transport, system_resolver
from ._event import Event
from ._secrets import redact, reference_variable, resolve

TELEGRAM_API = "https://api.telegram.org"
_ICONS = {"page": ":rotating_light:", "ticket": ":warning:", "info": ":information_source:"}
_EMOJI = {
    "page": "\N{POLICE CARS REVOLVING LIGHT}",
    "ticket": "\N{WARNING SIGN}",
    "info": "\N{INFORMATION SOURCE}",
}
_TELEGRAM_LIMIT = 4096
_MAX_RETRY_AFTER_S = 3600.0


class DeliveryFailed(NotificationError):
    """One attempt failed; `retryable` says whether another may succeed. The message holds no secret."""

    http_status = 502

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class NotResolvable(NotificationError):
    """A channel's secret reference is not set in this process; names the variable, never a value."""

    http_status = 422


def deliver(
    channel: Channel,
    event: Event,
    *,
    timeout_s: float = 5.0,
    environ: Mapping[str, str] | None = None,
    resolver: Resolver = system_resolver,
) -> None:
    """Send `event` once over `channel`; raises DeliveryFailed or NotResolvable.

    `resolver` turns the URL's host into the addresses it is sent to, each checked first
    (`_channel_urls`): a host that resolves to a refused address is a failure no retry mends."""
    if channel.kind == "email":
        _send_email(channel, event, timeout_s, environ)
        return
    if channel.kind == "telegram":
        token = _required(channel.token, "token", environ)
        base = _allowed((channel.api_url or TELEGRAM_API).rstrip("/"), "api_url")
        response = _post(
            f"{base}/bot{token}/sendMessage", telegram_body(channel, event), timeout_s, resolver, "api_url"
        )
        _check_telegram(response)
        return
    url = _allowed(_required(channel.url, "url", environ), "url")
    body = slack_body(event) if channel.kind == "slack" else webhook_body(event)
    response = _post(url, body, timeout_s, resolver, "url")
    raise_for_status(response.status_code, response.headers.get("Retry-After"), _short(response.text))


def _allowed(url: str, field_name: str) -> str:
    """`url` unless `spec.url_problem` refuses it (checked at validation too; a reference may have
    changed since): then a failure no retry mends."""
    problem = url_problem(url)
    if problem is not None:
        raise DeliveryFailed(f"the channel's {field_name} {problem}", retryable=False)
    return url


def check_resolvable(channel: Channel, environ: Mapping[str, str] | None = None) -> None:
    """Raise NotResolvable when a reference this channel needs is not set here."""
    fields = {"webhook": ["url"], "slack": ["url"], "telegram": ["token"], "email": []}[channel.kind]
    if channel.kind == "email" and channel.smtp_user:
        fields.append("smtp_password")
    for name in fields:
        _required(getattr(channel, name), name, environ)


def webhook_body(event: Event) -> dict[str, Any]:
    return {
        "event": event.kind,
        "summary": event.summary,
        "severity": event.severity,
        "details": event.details,
    }


def slack_body(event: Event) -> dict[str, Any]:
    """An incoming-webhook message: `text` (the notification's fallback) and Block Kit blocks."""
    icon = _ICONS.get(event.severity, _ICONS["info"])
    context = [f"`{_slack_escape(event.kind)}`"] + [
        f"*{_slack_escape(str(k))}*: {_slack_escape(str(v))}"
        for k, v in event.details.items()
        if v is not None
    ]
    return {
        "text": f"{icon} {event.summary}",
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"{icon} *{event.severity.upper()}* {_slack_escape(event.summary)}",
                },
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)[:3000]}]},
        ],
    }


def telegram_body(channel: Channel, event: Event) -> dict[str, Any]:
    """sendMessage's parameters; the text is HTML (parse_mode) with every value escaped."""
    lines = [
        f"{_EMOJI.get(event.severity, '')} <b>{event.severity.upper()}</b> {html.escape(event.summary)}",
        f"<code>{html.escape(event.kind)}</code>",
    ]
    lines += [
        f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in event.details.items() if v is not None
    ]
    text = "\n".join(lines)
    if len(text) > _TELEGRAM_LIMIT:
        text = html.escape(event.summary)[: _TELEGRAM_LIMIT - 1] + "…"
    return {"chat_id": channel.chat_id, "text": text, "parse_mode": "HTML"}


def email_message(channel: Channel, event: Event) -> EmailMessage:
    host = channel.smtp_host or "localhost"
    message = EmailMessage()
    message["From"] = channel.sender or f"shipyard@{host}"
    message["To"] = ", ".join(channel.to)
    summary = " ".join(event.summary.split())  # a header holds one line
    message["Subject"] = f"[{event.severity.upper()}] {summary}"[:250]
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=host)
    details = "".join(f"{k}: {v}\n" for k, v in event.details.items() if v is not None)
    message.set_content(f"{event.summary}\n\nevent: {event.kind}\nseverity: {event.severity}\n{details}")
    return message


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx may pass later; any other 4xx (and 3xx: shipyard follows no redirect) will not."""
    return status in (408, 429) or status >= 500


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped at an hour."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER_S)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return min(max((moment - now).total_seconds(), 0.0), _MAX_RETRY_AFTER_S)


def raise_for_status(
    status: int, retry_after: str | None, detail: str = "", now: dt.datetime | None = None
) -> None:
    if 200 <= status < 300:
        return
    message = f"HTTP {status}" + (f": {detail}" if detail else "")
    if is_retryable_status(status):
        wait = parse_retry_after(retry_after, now or dt.datetime.now(dt.UTC))
        raise DeliveryFailed(message, retryable=True, retry_after_s=wait)
    raise DeliveryFailed(message, retryable=False)


def _check_telegram(response: httpx.Response) -> None:
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    if 200 <= response.status_code < 300 and data.get("ok") is True:
        return
    description = _short(str(data.get("description") or response.text))
    retry_after = (data.get("parameters") or {}).get("retry_after")
    header = str(retry_after) if isinstance(retry_after, int) else response.headers.get("Retry-After")
    status = response.status_code if response.status_code >= 300 else 502  # 200 without ok: a broken answer
    raise_for_status(status, header, description)


_clients: dict[tuple[int, Resolver], httpx.Client] = {}
_clients_lock = threading.Lock()


def _client(resolver: Resolver) -> httpx.Client:
    """One HTTP client per process and resolver (building one loads the CA bundle, a fifth of a
    second), its connections opened only to the addresses its resolver gave and that were checked."""
    with _clients_lock:
        client = _clients.get((os.getpid(), resolver))
        if client is None:
            client = httpx.Client(follow_redirects=False, transport=checked_transport(resolver))
            _clients[os.getpid(), resolver] = client
        return client


def _post(
    url: str, body: dict[str, Any], timeout_s: float, resolver: Resolver, field_name: str
) -> httpx.Response:
    try:
        return _client(resolver).post(url, json=body, timeout=timeout_s)
    except RefusedAddress as exc:
        raise DeliveryFailed(
            f"the channel's {field_name} names {exc.host}, which resolves to {exc.address}, {exc.problem};"
            " nothing was sent: give the address of a real receiver",
            retryable=False,
        ) from None
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise DeliveryFailed(
            f"the channel's URL is not valid ({type(exc).__name__})", retryable=False
        ) from None
    except httpx.TimeoutException as exc:
        raise DeliveryFailed(
            f"no answer within {timeout_s:g} s ({type(exc).__name__})", retryable=True
        ) from None
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {_short(str(exc))}", retryable=True) from None


def _send_email(channel: Channel, event: Event, timeout_s: float, environ: Mapping[str, str] | None) -> None:
    password: str | None = None
    if channel.smtp_user:
        if not channel.starttls:
            raise DeliveryFailed(
                "refusing to send SMTP credentials without TLS: set starttls: true", retryable=False
            )
        if channel.smtp_password is None:
            raise DeliveryFailed("smtp_user is set but smtp_password is not", retryable=False)
        password = _required(channel.smtp_password, "smtp_password", environ)
    message = email_message(channel, event)
    host = channel.smtp_host or "localhost"
    try:
        with smtplib.SMTP(host, channel.smtp_port, timeout=timeout_s) as smtp:
            smtp.ehlo()
            if channel.starttls:
                if not smtp.has_extn("starttls"):
                    raise DeliveryFailed(
                        "the SMTP server does not offer STARTTLS; not sending in clear (starttls: true)",
                        retryable=False,
                    )
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if channel.smtp_user and password is not None:
                smtp.login(channel.smtp_user, password)
            smtp.send_message(message)
    except DeliveryFailed:
        raise
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        raise DeliveryFailed(
            f"SMTP refused every recipient ({', '.join(map(str, codes))})",
            retryable=all(400 <= code < 500 for code in codes),
        ) from None
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        raise DeliveryFailed(
            f"SMTP {exc.smtp_code}: {_short(text)}", retryable=400 <= exc.smtp_code < 500
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryFailed(f"SMTP: {_short(str(exc))}", retryable=False) from None
    except ssl.SSLCertVerificationError as exc:
        # The server's certificate may be fixed (renewed, trusted) later: keep the message.
        raise DeliveryFailed(f"TLS: {_short(exc.verify_message or str(exc))}", retryable=True) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {_short(str(exc))}", retryable=True) from None


def _required(reference: object, field_name: str, environ: Mapping[str, str] | None) -> str:
    value = resolve(reference, environ)
    if value:
        return value
    variable = reference_variable(reference)
    where = f"the environment variable {variable}" if variable else "a value"
    raise NotResolvable(f"{field_name} needs {where}, which is not set in this process")


def _short(text: str, limit: int = 200) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
