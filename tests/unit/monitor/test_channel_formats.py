"""What each channel sends and how failures are classified: pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.monitor import DeliveryFailed, Event, redact, redact_url, resolve
from shipyard.monitor._channels import (
    email_message,
    is_retryable_status,
    parse_retry_after,
    raise_for_status,
    slack_body,
    telegram_body,
    webhook_body,
)
from shipyard.monitor._secrets import reference_variable, remember_secret
from shipyard.spec import Channel, SecretRef

NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
EVENT = Event("backup.failed", "shop (prod): <db> & files failed", "page", {"set": "s1", "kind": None})


@given(st.integers(min_value=100, max_value=599))
def test_only_408_429_and_5xx_are_worth_retrying(status: int) -> None:
    assert is_retryable_status(status) == (status in (408, 429) or status >= 500)


def test_retry_after_as_seconds_or_an_http_date_capped_at_an_hour() -> None:
    assert parse_retry_after("7", NOW) == 7.0
    later = email.utils.format_datetime(NOW + dt.timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, NOW) == 90.0
    earlier = email.utils.format_datetime(NOW - dt.timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, NOW) == 0.0
    assert parse_retry_after("86400", NOW) == 3600.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_raise_for_status_classifies() -> None:
    raise_for_status(204, None)
    with pytest.raises(DeliveryFailed) as retry:
        raise_for_status(429, "3", "slow down", NOW)
    assert retry.value.retryable
    assert retry.value.retry_after_s == 3.0
    assert retry.value.message == "HTTP 429: slow down"
    with pytest.raises(DeliveryFailed) as dead:
        raise_for_status(404, "3", "no_service", NOW)
    assert not dead.value.retryable
    assert dead.value.retry_after_s is None


def test_webhook_body_keeps_its_shape() -> None:
    assert webhook_body(EVENT) == {
        "event": "backup.failed",
        "summary": "shop (prod): <db> & files failed",
        "severity": "page",
        "details": {"set": "s1", "kind": None},
    }


def test_slack_body_has_a_fallback_text_and_escaped_blocks() -> None:
    body = slack_body(EVENT)
    assert body["text"] == ":rotating_light: shop (prod): <db> & files failed"
    section = body["blocks"][0]["text"]["text"]
    assert "&lt;db&gt; &amp; files" in section
    assert "*PAGE*" in section
    context = body["blocks"][1]["elements"][0]["text"]
    assert "`backup.failed`" in context
    assert "*set*: s1" in context
    assert "kind" not in context


def test_telegram_body_is_escaped_html_within_the_limit() -> None:
    channel = Channel(kind="telegram", token="${env:TG}", chat_id="-100123")
    body = telegram_body(channel, EVENT)
    assert body["chat_id"] == "-100123"
    assert body["parse_mode"] == "HTML"
    assert "&lt;db&gt; &amp; files" in body["text"]
    assert "<b>PAGE</b>" in body["text"]
    huge = Event("x", "y" * 10_000, "info", {"k": "v" * 10_000})
    assert len(telegram_body(channel, huge)["text"]) <= 4096


def test_email_message_headers() -> None:
    channel = Channel(kind="email", to=["ops@example.com", "dev@example.com"], smtp_host="mail.example.com")
    message = email_message(channel, Event("x", "two\nlines", "ticket"))
    assert message["From"] == "shipyard@mail.example.com"
    assert message["To"] == "ops@example.com, dev@example.com"
    assert message["Subject"] == "[TICKET] two lines"
    sender = Channel(kind="email", to=["a@b.c"], smtp_host="h", sender="alerts@shop.example")
    assert email_message(sender, EVENT)["From"] == "alerts@shop.example"


def test_references_resolve_from_the_environment_as_backups_do() -> None:
    env = {"HOOK": "http://h/x", "ALERTS_SLACK_URL": "http://s/y"}
    assert reference_variable("${env:HOOK}") == "HOOK"
    assert (
        reference_variable(SecretRef.model_validate({"secretRef": "alerts/slack-url"})) == "ALERTS_SLACK_URL"
    )
    assert resolve("${env:HOOK}", env) == "http://h/x"
    assert resolve(SecretRef.model_validate({"secretRef": "alerts/slack-url"}), env) == "http://s/y"
    assert resolve("${env:MISSING}", env) is None
    assert resolve("-100123", env) == "-100123"


def test_redaction_masks_known_secrets_bot_tokens_and_url_credentials() -> None:
    remember_secret("hooks-secret-path-123")
    text = (
        "POST http://h/hooks-secret-path-123 and https://api.telegram.org/bot123456:AAbb-cc_dd/sendMessage"
        " and postgresql://user:pw@db/x"
    )
    masked = redact(text)
    assert "hooks-secret-path-123" not in masked
    assert "AAbb-cc_dd" not in masked
    assert "bot***/sendMessage" in masked
    assert "user:pw" not in masked
    assert redact_url("https://hooks.slack.com:8443/services/T/B/X") == "https://hooks.slack.com:8443/***"
