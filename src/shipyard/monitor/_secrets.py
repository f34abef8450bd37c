"""Channel secrets: read from the environment at delivery, and kept out of every log line and error.

`${env:NAME}` reads NAME; `{secretRef: alerts/slack-url}` reads ALERTS_SLACK_URL (name and key
upper-cased, every other character `_`), the variable a Kubernetes Secret mounted as environment
would be — the same rule backups follow. A resolved value is remembered so that the log filter
installed on httpx's logger (which logs every request URL at INFO) and `redact()` can mask it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

from ..spec import SecretRef

_ENV_REF = re.compile(r"^\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}$")
_BOT_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_MIN_SECRET = 6  # shorter values would mask ordinary words; no real token is this short
_MIN_SEGMENT = 12  # a path segment this long is an id or a key, not a word like `services`

_known: set[str] = set()
_known_lock = threading.Lock()


def reference_variable(reference: object) -> str | None:
    """The environment variable a reference is read from; None for a plain value."""
    if isinstance(reference, SecretRef):
        return re.sub(r"[^A-Za-z0-9]", "_", f"{reference.name}_{reference.key}").upper()
    if isinstance(reference, str):
        match = _ENV_REF.match(reference.strip())
        return match.group(1) if match else None
    return None


def resolve(reference: object, environ: Mapping[str, str] | None = None) -> str | None:
    """The value behind `${env:NAME}` or a `secretRef`; a plain string as is; None when unset here."""
    variable = reference_variable(reference)
    if variable is None:
        return reference if isinstance(reference, str) else None
    value = (os.environ if environ is None else environ).get(variable) or None
    if value is not None:
        remember_secret(value)
    return value


def remember_secret(value: str) -> None:
    """Mask `value` from now on; for a URL also its path, query and long path segments, which a
    server may echo back in an error ("no route /services/T0/B0/XXXX")."""
    parts = [value]
    if "://" in value:
        url = urlsplit(value)
        parts += [url.path, url.query, *(s for s in url.path.split("/") if len(s) >= _MIN_SEGMENT)]
    with _known_lock:
        _known.update(p for p in parts if len(p) >= _MIN_SECRET and p.strip("/"))


def redact(text: str) -> str:
    """`text` with every known channel secret, bot token and URL credential masked."""
    with _known_lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    return _USERINFO.sub("***@", _BOT_TOKEN.sub("bot***", text))


def redact_url(url: str) -> str:
    """Only the scheme and host of a URL: a webhook's path is its secret."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/***"


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


for _name in ("httpx", "shipyard.notify"):
    logging.getLogger(_name).addFilter(_RedactingFilter())
