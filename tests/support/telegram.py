"""A local Telegram Bot API: answers `POST /bot<token>/sendMessage` as api.telegram.org does.

Wrong token: 401 Unauthorized; unknown chat: 400 "chat not found"; `rate_limit(n)`: the next n
calls get 429 with `parameters.retry_after`. Every answer is `{"ok": ..., ...}` JSON.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

from support.webhook import RecordingServer, Reply, Request


class TelegramBotApi:
    def __init__(self, token: str, chat_id: str) -> None:
        self.token = token
        self.chat_id = chat_id
        self.messages: list[dict[str, Any]] = []
        self._limited = 0
        self._retry_after = 1
        self._ids = itertools.count(1)
        self.server = RecordingServer(self._answer)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def rate_limit(self, calls: int, retry_after: int = 1) -> None:
        self._limited, self._retry_after = calls, retry_after

    def _answer(self, request: Request) -> Reply:
        prefix, _, method = request.path.lstrip("/").partition("/")
        if prefix != f"bot{self.token}":
            return _reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        if method != "sendMessage":
            return _reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        if self._limited > 0:
            self._limited -= 1
            description = f"Too Many Requests: retry after {self._retry_after}"
            body = {"parameters": {"retry_after": self._retry_after}}
            return _reply(429, {"ok": False, "error_code": 429, "description": description, **body})
        params = request.json()
        if str(params.get("chat_id")) != self.chat_id:
            return _reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"})
        if not params.get("text"):
            return _reply(
                400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}
            )
        self.messages.append(params)
        message = {"message_id": next(self._ids), "date": int(time.time()), "chat": {"id": int(self.chat_id)}}
        return _reply(200, {"ok": True, "result": {**message, "text": params["text"]}})


def _reply(status: int, body: dict[str, Any]) -> Reply:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


@contextlib.contextmanager
def telegram_bot_api(token: str, chat_id: str) -> Iterator[TelegramBotApi]:
    api = TelegramBotApi(token, chat_id)
    api.server.start()
    try:
        yield api
    finally:
        api.server.stop()
