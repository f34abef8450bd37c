"""Log lines for `shipyard serve` and its scheduled jobs: JSON off a terminal, one readable line on one.

Everything goes through the standard `logging` module; `configure_logging()` puts one handler on
the root logger (uvicorn's loggers propagate to it) that

- masks secrets first (`RedactFilter`): in the message, in every extra field and in tracebacks,
  before any formatter sees the record: bearer and basic credentials, API tokens (`shy_…`), the
  password of a URL (`scheme://user:***@host`), `password=…`-style pairs (and extra fields named
  so), a few well-known token shapes, and every value registered with `register_secret()`;
- then writes one JSON object a line (`JsonFormatter`: `time` in RFC 3339 UTC with `Z`, `level`,
  `logger`, `message`, then the record's extra fields, then `exception` when there is one), or,
  when stderr is a terminal, `TextFormatter`'s `TIME LEVEL LOGGER: MESSAGE key=value …`.

Extra fields whose name starts with `_` are hints for the formatters, never written.

Standard library only: the CLI imports this before (and without) the web stack.
"""

from __future__ import annotations

import datetime as dt
import functools
import json as jsonlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

MASK = "***"
MIN_SECRET_CHARS = 6
"""Registered values shorter than this are not masked: they would mask ordinary words."""
IN_MESSAGE = "_in_message"
"""An extra field: True when the message already says what the other extra fields hold, so that
the text form does not repeat them (JSON always has them)."""

_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn's colored copy of the message
)
_CORE = ("time", "level", "logger", "message")

_KEY = (
    r"(?i:passw(?:or)?d|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credential"
    r"|authorization|shipyard_session)[\w.-]*"
)
"""A key whose value is a secret (then `=`, or `:` with a space or quote around it)."""

# Where a secret stands, by its shape: (pattern, what follows the mask). A group `(?P<keep>…)` is
# kept; the rest of the match is masked. `_shapes_in()` must know each one's literal.
_SHAPES: tuple[tuple[str, str], ...] = (
    # 0: -----BEGIN … PRIVATE KEY----- … -----END … PRIVATE KEY-----, or up to the end of the text.
    (r"(?s:-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z))", ""),
    # 1: the password of a URL, up to the last @ of the authority: scheme://user:***@host.
    (r"(?P<keep>://[^/\s:@]*:)[^/\s]+@", "@"),
    # 2: Authorization: Bearer …, Basic … (a token68: letters, digits, -._~+/ then any =; not the
    # word itself: `Bearer Bearer x` masks x).
    (r"(?P<keep>\b(?i:bearer|basic)\s+)(?!(?i:bearer|basic)\s)[A-Za-z0-9._~+/-]{6,}=*", ""),
    # 3: shipyard's own API tokens (shy_<scope>_<random>, see shipyard.tokens).
    (r"(?P<keep>(?<![A-Za-z0-9])shy_)[A-Za-z0-9_-]{4,}", ""),
    # 4: password=…, "token": "…", api_key: … (a colon only with a space or a quote around it, so
    # that an actor such as `token:ops` stays readable; the value is not such a key itself, but
    # after `Bearer `/`Basic ` anything is a credential).
    (
        rf"(?P<keep>{_KEY}(?:[\"']?\s*=\s*[\"']?|[\"']?:\s+[\"']?|[\"']:[\"']?)"
        r"(?P<scheme>(?i:bearer|basic)\s+(?!(?i:bearer|basic)\s))?)"
        rf"(?(scheme)|(?!{_KEY}(?:[\"']?\s*=|[\"']?:\s|[\"']:)))[^\s\"'&;,]+",
        "",
    ),
    # 5-9: chat, cloud and web tokens (the shapes the spec loader refuses, see shipyard.spec).
    (r"(?P<keep>\bxox[abposr]-)[0-9A-Za-z-]{10,}", ""),
    (r"(?P<keep>\bgh[pousr]_)[0-9A-Za-z]{30,}", ""),
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", ""),
    (r"(?<![0-9])\d{8,10}:[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", ""),
    (r"\beyJ[0-9A-Za-z_-]{8,}\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]*", ""),
)
_EVERY_SHAPE = tuple(range(len(_SHAPES)))
_TAILS = {f"s{index}": (f"k{index}", tail) for index, (_, tail) in enumerate(_SHAPES)}
_KEY_STEMS = ("passw", "pwd", "secret", "token", "key", "credential", "authorization", "session")
_AFTER_KEY = re.compile(r"[\w.-]*(?:[\"']?\s*=|[\"']?:\s|[\"']:)")


def _has_pair(lowered: str) -> bool:
    """Shape 4's test: a key named like a secret, then a separator (cheaper than its 10 words)."""
    for stem in _KEY_STEMS:
        at = lowered.find(stem)
        while at != -1:
            if _AFTER_KEY.match(lowered, at + len(stem)):
                return True
            at = lowered.find(stem, at + 1)
    return False


def _shapes_in(text: str) -> tuple[int, ...]:
    """The shapes that may stand in `text`: those whose literal it holds (exact for ASCII text;
    any other text gets every shape). Cheap, so that most texts are never scanned at all."""
    if not text.isascii():
        return _EVERY_SHAPE
    lowered = text.lower()
    tests = (
        "PRIVATE KEY-----" in text,
        "://" in text,
        "bearer" in lowered or "basic" in lowered,
        "shy_" in text,
        _has_pair(lowered),
        "xox" in text,
        "gh" in text and "_" in text,
        "AKIA" in text or "ASIA" in text,
        ":" in text,
        "eyJ" in text,
    )
    return tuple(index for index, found in enumerate(tests) if found)


@functools.lru_cache(maxsize=256)
def _scanner(shapes: tuple[int, ...]) -> re.Pattern[str]:
    """These shapes as one alternation (shape i is group `s<i>`, its kept part `k<i>`): one scan."""
    return re.compile(
        "|".join(f"(?P<s{i}>{_SHAPES[i][0].replace('(?P<keep>', f'(?P<k{i}>')})" for i in shapes)
    )


def _masked(match: re.Match[str]) -> str:
    keep, tail = _TAILS[match.lastgroup or ""]
    kept = match[keep] if keep in match.re.groupindex else ""
    return f"{kept}{MASK}{tail}"


def _mask_shapes(text: str) -> str:
    shapes = _shapes_in(text)
    return _scanner(shapes).sub(_masked, text) if shapes else text


_SECRET_FIELD = re.compile(
    r"passw(or)?d|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|credential"
    r"|authorization|cookie|session",
    re.I,
)
"""An extra field named like this is masked whole, whatever it holds."""
_SECRET_VARIABLE = re.compile(
    r"passw(or)?d|passwd|secret|token|api[-_]?key|private[-_]?key|credential|access[-_]?key"
    r"|signing[-_]?key|webhook[-_]?url|database[-_]?url|redis[-_]?url|dsn|_pass$|^pass$",
    re.I,
)


_MAX_CACHED_TEXT = 512
_MAX_CACHED_TEXTS = 4096


class SecretRegistry:
    """Values masked wherever they appear (thread-safe; values only ever get added)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        # text → (the pattern it was masked with, the masked text): a busy server's log lines
        # repeat the same methods, paths, routes and actors, and masking is the dearest part of a
        # line. An entry is good only while the pattern is the same object (adding a secret
        # replaces it), so a cached text is never shown unmasked.
        self._redacted: dict[str, tuple[re.Pattern[str] | None, str]] = {}
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        """Mask `value` from now on; for a URL, its password too (on its own)."""
        candidates = [value]
        if "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                candidates.append(password)
        with self._lock:
            new = {c for c in candidates if len(c) >= MIN_SECRET_CHARS} - self._values
            if new:
                self._values |= new
                # Longest first: of two secrets starting at one place, the longer is masked.
                ordered = sorted(self._values, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def values(self) -> list[str]:
        with self._lock:
            return sorted(self._values)

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def redact(self, text: str) -> str:
        """`text` with these secrets and every known secret shape masked (see `redact`)."""
        pattern = self._pattern
        cached = self._redacted.get(text)
        if cached is not None and cached[0] is pattern:
            return cached[1]
        masked = _mask_shapes(pattern.sub(MASK, text) if pattern is not None else text)
        if len(text) <= _MAX_CACHED_TEXT:
            if len(self._redacted) >= _MAX_CACHED_TEXTS:
                self._redacted.clear()  # simpler than an LRU, and a busy line set refills at once
            self._redacted[text] = (pattern, masked)
        return masked


SECRETS = SecretRegistry()
"""The process's registry, which the filters of `configure_logging()` and `make_handler()` use."""


def register_secret(value: str | None) -> None:
    """Never log `value` (ignored when shorter than MIN_SECRET_CHARS)."""
    if value:
        SECRETS.add(value)


def register_environment_secrets(environ: Mapping[str, str] | None = None) -> int:
    """Register the values of environment variables named like secrets (`*_PASSWORD`, `*_TOKEN`,
    `DATABASE_URL`…); returns how many variables were registered."""
    count = 0
    for name, value in (os.environ if environ is None else environ).items():
        if _SECRET_VARIABLE.search(name) and len(value) >= MIN_SECRET_CHARS:
            SECRETS.add(value)
            count += 1
    return count


def redact(text: str, secrets: SecretRegistry | None = None) -> str:
    """`text` with registered secrets and every known secret shape masked."""
    return (SECRETS if secrets is None else secrets).redact(text)


def _plain(value: Any, secrets: SecretRegistry, depth: int = 0) -> Any:
    """`value` as JSON-ready data with every string in it redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if depth < 8 and isinstance(value, Mapping):
        return {
            redact(str(key), secrets): MASK
            if isinstance(key, str) and _SECRET_FIELD.search(key)
            else _plain(item, secrets, depth + 1)
            for key, item in value.items()
        }
    if depth < 8 and isinstance(value, list | tuple | set | frozenset):
        return [_plain(item, secrets, depth + 1) for item in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return redact(str(value), secrets)


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given with `extra=` (not logging's own attributes, not `_hints`)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class RedactFilter(logging.Filter):
    """Masks secrets in a record in place (message, extra fields, traceback, stack), so that every
    handler after it, and every formatter, sees only the masked record."""

    def __init__(self, secrets: SecretRegistry | None = None) -> None:
        super().__init__()
        self.secrets = SECRETS if secrets is None else secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", None) is self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # wrong arguments: logging would print them in its error report
            message = f"{record.msg} (unformattable log arguments dropped)"
        record.msg, record.args = redact(message, self.secrets), None
        for key, value in extra_fields(record).items():
            masked = MASK if _SECRET_FIELD.search(key) else _plain(value, self.secrets)
            setattr(record, key, masked)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        setattr(record, "_redacted", self.secrets)  # noqa: B010 (not a LogRecord attribute)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{int(record.msecs):03d}Z"


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the extra fields, exception, stack."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            line[f"{key}_" if key in _CORE else key] = value
        if (exception := _exception_text(record)) is not None:
            line["exception"] = exception
        if record.stack_info:
            line["stack"] = record.stack_info
        return jsonlib.dumps(line, default=str)


_BARE = re.compile(r"[^\s\"'=\\\x00-\x1f\x7f]+")


def _text_value(value: Any) -> str:
    if isinstance(value, str) and _BARE.fullmatch(value):
        return value
    return jsonlib.dumps(value, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`2025-01-31T12:00:00.123Z INFO    shipyard.access: GET /x 200 key=value`, one line (a
    traceback follows on lines of its own)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {message}"
        if not getattr(record, IN_MESSAGE, False):
            line += "".join(f" {key}={_text_value(value)}" for key, value in extra_fields(record).items())
        if (exception := _exception_text(record)) is not None:
            line += "\n" + exception
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def wants_json(stream: IO[str] | None = None) -> bool:
    """JSON unless `stream` (default: stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return True


def make_handler(
    json: bool | None = None, stream: IO[str] | None = None, secrets: Iterable[str] = ()
) -> logging.Handler:
    """A handler writing to `stream` (default: stderr) that redacts, then formats as JSON when
    `json` (None: unless the stream is a terminal). `secrets` are registered first (this is how
    uvicorn's worker processes get the parent's, through `logging_config()`)."""
    for value in secrets:
        register_secret(value)
    handler = logging.StreamHandler(stream)  # None: sys.stderr
    use_json = wants_json(handler.stream) if json is None else json
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(RedactFilter())
    return handler


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return number


# Loggers that only add to the handler's, and those too chatty below WARNING: httpx logs every
# request URL at INFO (a webhook's URL is its secret), APScheduler every run (the scheduler logs
# its own), Alembic each of its plugins; uvicorn's access log is replaced by the app's.
_PROPAGATING = ("uvicorn", "uvicorn.error", "uvicorn.asgi")
_QUIET = ("httpx", "httpcore", "apscheduler", "alembic.runtime.plugins")


def configure_logging(
    level: str | int = "info", *, json: bool | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Send every record at `level` and above to one handler on the root logger (replacing the
    root's handlers) that redacts and writes JSON lines (`json=None`: unless stderr is a
    terminal); route uvicorn's loggers to it and switch its own access log off. Returns the
    handler."""
    number = _level(level)
    handler = make_handler(json, stream)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    for name in _PROPAGATING:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))
    return handler


def log_uncaught_exceptions(logger: str = "shipyard") -> None:
    """Log an exception that would end the process or a thread as a CRITICAL record of `logger`
    (so: masked, and in the log's format) instead of Python's bare traceback on stderr."""
    log = logging.getLogger(logger)

    def process_hook(
        kind: type[BaseException], value: BaseException, traceback: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
            return
        log.critical("uncaught %s", kind.__name__, exc_info=(kind, value, traceback))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        where = args.thread.name if args.thread is not None else "?"
        log.critical(
            "uncaught %s in thread %s",
            args.exc_type.__name__,
            where,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    sys.excepthook = process_hook
    threading.excepthook = thread_hook


def logging_config(level: str | int = "info", *, json: bool | None = None) -> dict[str, Any]:
    """`configure_logging()` as a `logging.config.dictConfig` dict: uvicorn's `log_config`, which
    its worker processes apply when they start. The format is decided here, for stderr as it is
    now, and the registered secrets go along."""
    number = _level(level)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "shipyard": {
                "()": "shipyard.logs.make_handler",
                "json": wants_json() if json is None else json,
                "secrets": SECRETS.values(),
            }
        },
        "root": {"level": number, "handlers": ["shipyard"]},
        "loggers": {
            **{name: {"level": "NOTSET", "handlers": [], "propagate": True} for name in _PROPAGATING},
            "uvicorn.access": {"handlers": [], "propagate": False},
            **{name: {"level": max(number, logging.WARNING)} for name in _QUIET},
        },
    }


__all__ = [
    "IN_MESSAGE",
    "MASK",
    "SECRETS",
    "JsonFormatter",
    "RedactFilter",
    "SecretRegistry",
    "TextFormatter",
    "configure_logging",
    "extra_fields",
    "log_uncaught_exceptions",
    "logging_config",
    "make_handler",
    "redact",
    "register_environment_secrets",
    "register_secret",
    "wants_json",
]
