"""Each channel kind against a real local server: a Bot-API-like HTTP server for Telegram, aiosmtpd
with STARTTLS (a self-signed certificate made here) for email, a recording HTTP server for webhooks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from shipyard.monitor import Backoff, Breakers, DeliveryFailed, Event, Notifier, deliver
from shipyard.spec import Channel
from shipyard.state import NotificationRow, open_engine, session_factory
from support.smtp import smtp_server
from support.telegram import telegram_bot_api
from support.webhook import Reply, Request, recording_server

TOKEN = "123456789:AAH-not-a-real_token-0123456789"
CHAT = "-1001234567890"
PASSWORD = "smtp-pass-7f3a9c"
HOOK_PATH = "/services/T000/B000/hook-secret-4b1d"
EVENT = Event("backup.failed", "shop (production): <db> & files failed", "page", {"set": "s1"})


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    return session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))


def _rows(sessions: sessionmaker[Session]) -> dict[str, NotificationRow]:
    with sessions() as session:
        return {
            row.channel: row for row in session.scalars(select(NotificationRow).order_by(NotificationRow.id))
        }


def _fast(channels: dict[str, Channel], sessions: sessionmaker[Session]) -> Notifier:
    return Notifier(channels, sessions, backoff=Backoff(base_s=0.1, cap_s=0.5), breakers=Breakers())


def test_telegram_send_message_honours_retry_after_and_dead_letters_an_unknown_chat(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with telegram_bot_api(TOKEN, CHAT) as api:
        monkeypatch.setenv("TG_TOKEN", TOKEN)
        good = Channel(kind="telegram", token="${env:TG_TOKEN}", chat_id=CHAT, api_url=api.api_url)
        unknown_chat = Channel(kind="telegram", token="${env:TG_TOKEN}", chat_id="42", api_url=api.api_url)
        api.rate_limit(1, retry_after=1)  # the first call (the first channel's) gets 429
        notifier = _fast({"tg": good, "tg-unknown": unknown_chat}, sessions)
        notifier.send(EVENT)
        assert notifier.wait(60)
    (message,) = api.messages
    assert message["chat_id"] == CHAT
    assert message["parse_mode"] == "HTML"
    assert "shop (production): &lt;db&gt; &amp; files failed" in message["text"]
    rows = _rows(sessions)
    assert (rows["tg"].state, rows["tg"].attempts) == ("delivered", 2)
    assert (rows["tg-unknown"].state, rows["tg-unknown"].last_error) == (
        "dead",
        "HTTP 400: Bad Request: chat not found",
    )


def test_telegram_with_a_wrong_token_fails_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    with telegram_bot_api(TOKEN, CHAT) as api:
        monkeypatch.setenv("TG_TOKEN", "987654321:wrong-token-abcdef")
        channel = Channel(kind="telegram", token="${env:TG_TOKEN}", chat_id=CHAT, api_url=api.api_url)
        with pytest.raises(DeliveryFailed) as failed:
            deliver(channel, EVENT)
    assert failed.value.message == "HTTP 401: Unauthorized"
    assert not failed.value.retryable


def test_email_over_starttls_with_login(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server(tls=True, users={"alerts": PASSWORD}) as server:
        assert server.cert_file is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_file))  # trust the test's own certificate
        monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
        channel = Channel(
            kind="email",
            to=["ops@shop.example", "dev@shop.example"],
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_user="alerts",
            smtp_password="${env:SMTP_PASSWORD}",
        )
        deliver(channel, EVENT)
    (got,) = server.received
    assert got.tls
    assert got.login == "alerts"
    assert server.logins == [("alerts", True)]
    assert got.rcpt_tos == ["ops@shop.example", "dev@shop.example"]
    assert got.message["From"] == "shipyard@127.0.0.1"
    assert got.message["Subject"] == "[PAGE] shop (production): <db> & files failed"
    assert "event: backup.failed" in got.message.get_payload()


def test_email_with_an_untrusted_certificate_is_kept_for_later_and_sends_no_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with smtp_server(tls=True, users={"alerts": PASSWORD}) as server:
        monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
        channel = Channel(
            kind="email",
            to=["ops@shop.example"],
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_user="alerts",
            smtp_password="${env:SMTP_PASSWORD}",
        )
        with pytest.raises(DeliveryFailed) as failed:
            deliver(channel, EVENT)
    assert failed.value.retryable
    assert failed.value.message.startswith("TLS: ")
    assert server.logins == []
    assert server.received == []


def test_email_refuses_to_send_credentials_in_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    with smtp_server(tls=False) as server:
        monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)
        in_clear = Channel(
            kind="email",
            to=["ops@shop.example"],
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_user="alerts",
            smtp_password="${env:SMTP_PASSWORD}",
            starttls=False,
        )
        with pytest.raises(DeliveryFailed) as refused:
            deliver(in_clear, EVENT)
        assert not refused.value.retryable
        assert "without TLS" in refused.value.message
        wants_tls = Channel(
            kind="email", to=["ops@shop.example"], smtp_host="127.0.0.1", smtp_port=server.port
        )
        with pytest.raises(DeliveryFailed) as no_starttls:
            deliver(wants_tls, EVENT)
        assert not no_starttls.value.retryable
        assert "does not offer STARTTLS" in no_starttls.value.message
        assert server.received == []
        plain = wants_tls.model_copy(update={"starttls": False})
        deliver(plain, EVENT)  # no credentials: plain SMTP is allowed when asked for
    (got,) = server.received
    assert not got.tls
    assert got.login is None


def test_no_channel_secret_in_any_row_log_line_or_error(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every kind, delivered or failing, through the outbox: the secrets appear nowhere."""

    def hook(request: Request) -> Reply:
        return (204, {}, b"") if request.path == HOOK_PATH else (503, {}, f"no route {request.path}".encode())

    caplog.set_level(logging.DEBUG)
    with (
        recording_server(hook) as web,
        telegram_bot_api(TOKEN, CHAT) as api,
        smtp_server(tls=True, users={"alerts": "another-password"}) as mail,
    ):
        assert mail.cert_file is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(mail.cert_file))
        monkeypatch.setenv("HOOK_URL", web.url(HOOK_PATH))
        monkeypatch.setenv("BAD_HOOK_URL", web.url(HOOK_PATH + "-wrong"))
        monkeypatch.setenv("TG_TOKEN", TOKEN)
        monkeypatch.setenv("SMTP_PASSWORD", PASSWORD)  # not the server's: 535
        channels = {
            "hook": Channel(kind="webhook", url="${env:HOOK_URL}"),
            "slack": Channel(kind="slack", url="${env:BAD_HOOK_URL}"),
            "tg": Channel(kind="telegram", token="${env:TG_TOKEN}", chat_id=CHAT, api_url=api.api_url),
            "tg-unknown": Channel(kind="telegram", token="${env:TG_TOKEN}", chat_id="7", api_url=api.api_url),
            "mail": Channel(
                kind="email",
                to=["ops@shop.example"],
                smtp_host="127.0.0.1",
                smtp_port=mail.port,
                smtp_user="alerts",
                smtp_password="${env:SMTP_PASSWORD}",
            ),
        }
        notifier = Notifier(channels, sessions, backoff=Backoff(0.05, 0.1), breakers=Breakers(threshold=2))
        notifier.send(EVENT)
        assert notifier.wait(60)
    rows = _rows(sessions)
    assert {name: row.state for name, row in rows.items()} == {
        "hook": "delivered",
        "slack": "pending",  # 503: kept
        "tg": "delivered",
        "tg-unknown": "dead",
        "mail": "dead",  # 535: wrong password
    }
    assert (rows["mail"].last_error or "").startswith("SMTP 535")
    assert "httpx" in caplog.text  # httpx logged its requests (and was masked)
    stored = " ".join(f"{r.channel_config} {r.body} {r.last_error} {r.claimed_by}" for r in rows.values())
    for secret in (TOKEN, PASSWORD, HOOK_PATH, TOKEN.split(":")[1]):
        assert secret not in stored
        assert secret not in caplog.text
