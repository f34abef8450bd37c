"""`shipyard.logs`: the JSON and text formats, the redaction filter, and how logging is set up.

The redaction properties generate secrets of every shape the filter knows, embed them in the
message, its arguments, nested extra fields and an exception, and check that no form of them
(raw, JSON-escaped, or inside the decoded JSON), nor any run of 8 of their characters, reaches
the output.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import logging.config
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shipyard import logs
from shipyard.logs import (
    IN_MESSAGE,
    JsonFormatter,
    RedactFilter,
    SecretRegistry,
    TextFormatter,
    configure_logging,
    log_uncaught_exceptions,
    logging_config,
    redact,
    register_environment_secrets,
)

MOMENT = dt.datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=dt.UTC)
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _record(
    message: str,
    args: tuple[object, ...] = (),
    extra: dict[str, Any] | None = None,
    error: BaseException | None = None,
    level: int = logging.INFO,
) -> logging.LogRecord:
    """A record as `Logger.info(message, *args, extra=extra, exc_info=error)` makes it, at MOMENT."""
    exc_info = (type(error), error, error.__traceback__) if error is not None else None
    record = logging.getLogger("shipyard.test").makeRecord(
        "shipyard.test", level, __file__, 1, message, args, exc_info, extra=extra
    )
    record.created = MOMENT.timestamp()
    record.msecs = MOMENT.microsecond // 1000
    return record


def _emit(record: logging.LogRecord, *, json_lines: bool, secrets: SecretRegistry | None = None) -> str:
    """What one handler set up as configure_logging's writes for `record`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RedactFilter(secrets or SecretRegistry()))
    handler.handle(record)
    return stream.getvalue()


def _raised(text: str) -> RuntimeError:
    try:
        raise RuntimeError(f"could not connect: {text}")
    except RuntimeError as error:
        return error


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Put the root logger, uvicorn's and the exception hooks back as they were after a test."""
    names = [
        "",
        "uvicorn",
        "uvicorn.error",
        "uvicorn.asgi",
        "uvicorn.access",
        "httpx",
        "httpcore",
        "apscheduler",
    ]
    saved = {
        name: (
            logging.getLogger(name).handlers[:],
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
        )
        for name in names
    }
    hooks = (sys.excepthook, threading.excepthook)
    yield
    sys.excepthook, threading.excepthook = hooks
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# --- formats -------------------------------------------------------------------------------------


def test_a_json_line_has_time_level_logger_message_then_the_extra_fields() -> None:
    record = _record(
        "GET %s %d", ("/feature-flags", 200), {"status": 200, "actor": "token:ops", "level": "x"}
    )
    output = _emit(record, json_lines=True)

    assert output.endswith("\n")
    assert output.count("\n") == 1
    line = json.loads(output)
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert RFC3339_Z.match(line["time"])
    assert dt.datetime.fromisoformat(line["time"]) == MOMENT
    assert line["level"] == "INFO"
    assert line["logger"] == "shipyard.test"
    assert line["message"] == "GET /feature-flags 200"
    assert line["status"] == 200
    assert line["actor"] == "token:ops"
    assert line["level_"] == "x", "an extra field named like a core one is kept, renamed"


def test_a_json_line_carries_the_traceback_and_any_value_type() -> None:
    record = _record(
        "failed",
        extra={
            "when": MOMENT,
            "tags": ("a", "b"),
            "nested": {"n": 1.5, "ok": True, "none": None},
            "_hint": 1,
        },
        error=_raised("refused"),
        level=logging.ERROR,
    )
    line = json.loads(_emit(record, json_lines=True))

    assert line["level"] == "ERROR"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: could not connect: refused" in line["exception"]
    assert line["when"] == MOMENT.isoformat()
    assert line["tags"] == ["a", "b"]
    assert line["nested"] == {"n": 1.5, "ok": True, "none": None}
    assert "_hint" not in line, "fields starting with _ are hints, never written"


def test_a_text_line_is_one_readable_line() -> None:
    record = _record("two\nlines", extra={"job": "backup-full", "detail": "a b", "count": 3})
    output = _emit(record, json_lines=False)

    assert output == (
        '2026-03-04T05:06:07.891Z INFO    shipyard.test: two\\nlines job=backup-full detail="a b" count=3\n'
    )


def test_a_text_line_leaves_out_fields_its_message_already_says() -> None:
    record = _record("GET /x 200", extra={"method": "GET", "status": 200, IN_MESSAGE: True})

    assert _emit(record, json_lines=False) == "2026-03-04T05:06:07.891Z INFO    shipyard.test: GET /x 200\n"
    assert json.loads(_emit(record, json_lines=True))["status"] == 200, "JSON keeps them all"


def test_a_text_line_puts_a_traceback_under_it() -> None:
    record = _record("failed", error=_raised("refused"), level=logging.ERROR)
    first, *rest = _emit(record, json_lines=False).splitlines()

    assert first == "2026-03-04T05:06:07.891Z ERROR   shipyard.test: failed"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "RuntimeError: could not connect: refused"


# --- redaction, by example -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abcdefgh.ijk-lmn", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "authorization=Basic ***"),
        ("token shy_admin_Zm9vYmFyYmF6cXV4cXV1eA rejected", "token shy_*** rejected"),
        ("postgresql://app:s3cr3t@db:5432/shop", "postgresql://app:***@db:5432/shop"),
        ("redis://:p@ss:w0rd@cache:6379/0", "redis://:***@cache:6379/0"),
        ("/audit?password=hunter22&limit=5", "/audit?password=***&limit=5"),
        ('{"api_key": "abc123xyz", "n": 1}', '{"api_key": "***", "n": 1}'),
        ("DB_PASSWORD = swordfish", "DB_PASSWORD = ***"),
        (
            "https://api.telegram.org/bot123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/x",
            "https://api.telegram.org/bot***/x",
        ),
        ("key AKIAABCDEFGHIJKLMNOP", "key ***"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcC\n-----END EC PRIVATE KEY-----!", "***!"),
        # Not secrets: kept as they are.
        ("done by token:ops", "done by token:ops"),
        ('WWW-Authenticate: Bearer realm="shipyard"', 'WWW-Authenticate: Bearer realm="shipyard"'),
        ("http://127.0.0.1:8080/readyz", "http://127.0.0.1:8080/readyz"),
        (
            "backup-full at 2026-03-04T05:06:00+00:00 succeeded",
            "backup-full at 2026-03-04T05:06:00+00:00 succeeded",
        ),
    ],
)
def test_redact_masks_secret_shapes(text: str, expected: str) -> None:
    assert redact(text, SecretRegistry()) == expected


def test_registered_secrets_are_masked_wherever_they_stand() -> None:
    secrets = SecretRegistry(["correct horse battery staple", "postgresql://u:pg-pass-42@db/x", "short"])

    assert redact("pw=[correct horse battery staple]", secrets) == "pw=[***]"
    assert redact("the pg-pass-42 leaked", secrets) == "the *** leaked", "a URL's password, alone too"
    assert redact("short", secrets) == "short", "values under MIN_SECRET_CHARS would mask words"


def test_extra_fields_named_like_secrets_are_masked_whole() -> None:
    record = _record(
        "login", extra={"password": "x", "db": {"token": 12345, "user": "app"}, "authorization": ["a"]}
    )
    line = json.loads(_emit(record, json_lines=True))

    assert line["password"] == "***"
    assert line["db"] == {"token": "***", "user": "app"}
    assert line["authorization"] == "***"


def test_a_secret_in_log_arguments_or_a_traceback_is_masked() -> None:
    token = "shy_admin_c2VjcmV0c2VjcmV0c2VjcmV0"
    record = _record("bad token %s", (token,), error=_raised(f"Bearer {token}"), level=logging.ERROR)
    record.stack_info = f"Stack (most recent call last):\n  verify({token!r})"
    for json_lines in (True, False):
        output = _emit(record, json_lines=json_lines)
        assert token not in output
        assert "c2VjcmV0" not in output


def test_unformattable_arguments_are_dropped_not_printed() -> None:
    record = _record("%d items", ("shy_admin_notanumbernotanumber",))
    line = json.loads(_emit(record, json_lines=True))

    assert line["message"] == "%d items (unformattable log arguments dropped)"


# --- redaction, as a property --------------------------------------------------------------------

URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TOKEN68 = URLSAFE + ".~+/"
# Anything visible: no whitespace, no control characters, no surrogates.
VISIBLE = st.characters(exclude_categories=("Z", "C"))
# Free text around a secret (whitespace and newlines too).
AROUND = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


@st.composite
def embedded_secrets(draw: st.DrawFn, kind: str) -> tuple[str, str, str, SecretRegistry]:
    """(secret, text holding it, the same text with a harmless value instead, registry) for one
    kind of secret."""
    placeholder = "placeholder"
    if kind == "token":
        scope = draw(st.sampled_from(["admin", "client"]))
        secret = f"shy_{scope}_{draw(st.text(URLSAFE, min_size=12, max_size=60))}"
        placeholder = f"shy_{scope}_{placeholder}"
        template = draw(st.sampled_from(["{}", "Bearer {}", "token={}", "'{}'", "(token {})"]))
    elif kind == "bearer":
        secret = draw(st.text(TOKEN68, min_size=8, max_size=80))
        template = draw(
            st.sampled_from(["Bearer {}", "authorization: bearer {}", "Authorization=Basic {}=="])
        )
    elif kind == "url":
        secret = draw(st.text(VISIBLE.filter(lambda c: c != "/"), min_size=8, max_size=40))
        template = draw(
            st.sampled_from(
                ["postgresql://app:{}@db:5432/shop", "redis://:{}@cache/0", "https://u:{}@h/p?q=1"]
            )
        )
    elif kind == "pair":
        secret = draw(st.text(VISIBLE.filter(lambda c: c not in "\"'&;,"), min_size=8, max_size=40))
        template = draw(
            st.sampled_from(
                ["password={}", "?token={}&x=1", '{{"db_password": "{}"}}', "api_key: {}", "secret = {}"]
            )
        )
    else:  # registered: any text at all, glued to what is around it
        secret = draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=8, max_size=40))
        template = "{}"
    registry = SecretRegistry([secret] if kind == "registered" else [])
    return secret, template.format(secret), template.format(placeholder), registry


WINDOW = 8
"""Every run of this many characters of a secret is checked: a part of it is a leak too."""


def _leaks(secret: str, output: str, json_lines: bool) -> bool:
    pieces = {secret[i : i + WINDOW] for i in range(max(1, len(secret) - WINDOW + 1))}
    forms = {f for p in pieces for f in (p, json.dumps(p)[1:-1], json.dumps(p, ensure_ascii=False)[1:-1])}
    if any(form in output for form in forms):
        return True
    if json_lines:
        texts = list(_strings(json.loads(output.splitlines()[0])))
        return any(piece in text for piece in pieces for text in texts)
    return False


def _records(text: str, before: str, after: str) -> list[logging.LogRecord]:
    holding = f"{before} {text} {after}"
    return [
        _record(holding),
        _record("connecting to %s", (holding,)),
        _record(
            "failed",
            extra={"detail": holding, "nested": {"items": [holding, 3], "url": holding}},
            error=_raised(holding),
            level=logging.ERROR,
        ),
    ]


@pytest.mark.parametrize("json_lines", [True, False], ids=["json", "text"])
@pytest.mark.parametrize("kind", ["token", "bearer", "url", "pair", "registered"])
@given(data=st.data(), before=AROUND, after=AROUND)
def test_no_generated_secret_reaches_the_output(
    kind: str, json_lines: bool, data: st.DataObject, before: str, after: str
) -> None:
    secret, text, harmless, registry = data.draw(embedded_secrets(kind))
    # The secret must not stand anywhere but where it was put (in the text around it, say).
    baseline = "".join(
        _emit(record, json_lines=json_lines, secrets=registry) for record in _records(harmless, before, after)
    )
    assume(not _leaks(secret, baseline, json_lines=False))

    for record in _records(text, before, after):
        output = _emit(record, json_lines=json_lines, secrets=registry)
        assert not _leaks(secret, output, json_lines), output


KEYS = st.sampled_from(
    [
        *("password", "DB_Passwd", "PWD", "secret", "TOKEN", "api_key", "access-key", "private_key"),
        *("x.token", "credential", "Authorization", "shipyard_session", "tokens", "keys", "monkey"),
    ]
)
SEPARATORS = st.sampled_from(["=", " = ", ": ", ":", '":"', "':'", '": "', "'=", ":\t", "-"])
PAIRS = st.tuples(KEYS, SEPARATORS, st.text(URLSAFE, max_size=8)).map("".join)
URLS = st.tuples(
    st.sampled_from(["postgresql://", "https://", "://", ":/"]),
    st.text(URLSAFE, max_size=6),
    st.sampled_from([":", ""]),
    st.text(URLSAFE + "@:", max_size=8),
    st.sampled_from(["@", "", "/"]),
    st.text(URLSAFE, max_size=6),
).map("".join)
CREDENTIALS = st.tuples(
    st.sampled_from(
        [
            *("Bearer ", "basic ", "BASIC  ", "bearer", "shy_", "xoxb-", "ghp_", "gh_", "AKIA", "ASIA"),
            *("eyJ", "123456789:", "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"),
        ]
    ),
    st.text(URLSAFE + ".~+/=", max_size=40),
).map("".join)
ASCII_TEXT = st.lists(
    st.one_of(
        PAIRS, URLS, CREDENTIALS, st.sampled_from([" ", "&", '"', ".", "/"]), st.text(URLSAFE, max_size=12)
    ),
    max_size=12,
).map("".join)


@given(ASCII_TEXT)
def test_the_cheap_pretests_skip_no_shape_in_ascii_text(text: str) -> None:
    """Only the shapes whose literal is in a text are scanned for: the same result as all of them."""
    assert logs._mask_shapes(text) == logs._scanner(logs._EVERY_SHAPE).sub(logs._masked, text)


# --- configuration -------------------------------------------------------------------------------


def test_configure_logging_writes_json_off_a_terminal(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    configure_logging("info", stream=stream)  # again: still one handler, one line a record
    logging.getLogger("shipyard.server").info("up", extra={"port": 8080})
    logging.getLogger("shipyard.server").debug("below the level")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42, extra={"color_message": "x"})
    logging.getLogger("uvicorn.access").info("uvicorn's own access line")
    logging.getLogger("httpx").info("HTTP Request: POST https://hooks.example/T0/B0/XXXX")

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("shipyard.server", "up"),
        ("uvicorn.error", "Started server process [42]"),
    ]
    assert lines[0]["port"] == 8080
    assert "color_message" not in lines[1]


def test_configure_logging_writes_text_on_a_terminal(root_logging: None) -> None:
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as terminal:
            configure_logging("debug", stream=terminal)
            logging.getLogger("shipyard.server").debug("tick", extra={"job": "x"})
            terminal.flush()
            written = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert re.fullmatch(r"\S+Z DEBUG   shipyard\.server: tick job=x\r?\n", written), written


def test_configure_logging_json_flag_wins_over_the_stream(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("warning", json=False, stream=stream)
    logging.getLogger("shipyard.x").warning("careful")

    assert stream.getvalue().endswith(" WARNING shipyard.x: careful\n")
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud")


def test_logging_config_is_what_uvicorn_workers_apply(
    root_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "worker-secret-" + os.urandom(8).hex()
    logs.register_secret(secret)
    config = logging_config("info", json=True)
    assert secret in config["handlers"]["shipyard"]["secrets"], "the parent's secrets go along"

    # What a worker process does with it (the registry is this process's, as a worker's starts).
    logging.config.dictConfig(json.loads(json.dumps(config)))
    logging.getLogger("shipyard.access").info("GET /x 200", extra={"status": 200})
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("shipyard.x").info("using %s", secret)

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["message"] for line in lines] == [
        "GET /x 200",
        "Application startup complete.",
        "using ***",
    ]


def test_an_uncaught_exception_is_a_masked_log_line(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    log_uncaught_exceptions()
    error = _raised("postgresql://app:pg-secret-1@db/x")
    sys.excepthook(type(error), error, error.__traceback__)
    thread = threading.Thread(target=lambda: _raise_in_thread("Bearer abcdefghijkl"), name="poller")
    thread.start()
    thread.join()

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("CRITICAL", "uncaught RuntimeError"),
        ("CRITICAL", "uncaught ValueError in thread poller"),
    ]
    assert lines[0]["exception"].endswith("RuntimeError: could not connect: postgresql://app:***@db/x")
    assert lines[1]["exception"].endswith("ValueError: Bearer ***")


def _raise_in_thread(text: str) -> None:
    raise ValueError(text)


def test_environment_variables_named_like_secrets_are_registered() -> None:
    value = "env-secret-" + os.urandom(8).hex()
    count = register_environment_secrets(
        {"SHOP_RESTIC_PASSWORD": value, "HOME": "/root/somewhere", "SHIPYARD_TOKEN": "tiny"}
    )

    assert count == 1
    assert redact(f"using {value}") == "using ***"
    assert redact("/root/somewhere") == "/root/somewhere"


def test_importing_shipyard_logs_loads_no_web_or_database_stack() -> None:
    heavy = ["fastapi", "starlette", "pydantic", "sqlalchemy", "uvicorn", "typer", "rich", "yaml"]
    code = f"import sys, shipyard.logs; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "[]"


def test_a_text_redacted_before_its_secret_was_registered_is_masked_after() -> None:
    # `redact` remembers the texts it masked; a secret added later must still be masked in them.
    registry = SecretRegistry()
    line = "GET /feature-flags/hunter2-but-longer 404"
    assert logs.redact(line, registry) == line
    assert logs.redact(line, registry) == line  # now from the cache
    registry.add("hunter2-but-longer")
    assert logs.redact(line, registry) == f"GET /feature-flags/{logs.MASK} 404"


@given(st.lists(st.text(min_size=0, max_size=40), max_size=20), st.text(min_size=8, max_size=20))
def test_cached_redaction_equals_masking_afresh(texts: list[str], secret: str) -> None:
    registry = SecretRegistry()
    for text in texts:
        logs.redact(text, registry)
    registry.add(secret)
    for text in [*texts, *texts]:
        fresh = logs._mask_shapes(registry.mask(text))
        assert logs.redact(text, registry) == fresh
