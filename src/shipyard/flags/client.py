"""The Python SDK: evaluates flags locally, kept current by a background thread.

    from shipyard.flags.client import FlagsClient

    flags = FlagsClient("https://shipyard.internal", token, "production", bootstrap="flags.yaml")
    if flags.is_enabled("new-checkout", {"userId": user.id, "role": user.role}):
        ...
    colour = flags.get_value("button-colour", "blue", {"userId": user.id})

Evaluation is pure local work on the compiled flag set (`compile_flagset`): no request, lock,
copy or log per evaluation. A daemon thread follows the server's Server-Sent Events stream
(`GET /feature-flags/stream`), reconnecting with exponential backoff and jitter; while the
stream is down (or with `stream=False`) it polls `GET /feature-flags` with If-None-Match, so an
unchanged set costs a 304. Each new version is compiled off the request path and swapped in with
one attribute assignment, then the change listeners are called.

When the server cannot be reached the client keeps serving the last good set (or the bootstrap
file it started from). Construction never waits for the network; `wait_until_ready` does, when
asked.

The client survives forking servers (gunicorn `--preload`, uWSGI): a child process starts its
own worker thread and HTTP connection pool lazily, on its first evaluation after `fork()`.

The token is never written to a log, a repr or an exception message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import httpx
import yaml

from .. import __version__
from ..spec.flags import FlagSet, FlagType
from ._evaluator import Context, EnvironmentEvaluator, ErrorCode, Evaluation, Reason, compile_flagset

__all__ = [
    "ChangeListener",
    "ClientStats",
    "ConnectionState",
    "FlagsClient",
    "StateListener",
    "changed_flags",
    "load_bootstrap",
]

log = logging.getLogger("shipyard.flags.client")

EMPTY_CONTEXT: Final[Context] = MappingProxyType({})
STREAM_READ_TIMEOUT: Final = 45.0
"""Seconds without a byte on the stream before it is taken as dead (the server sends a comment
every 15 s when idle)."""

ChangeListener = Callable[[int | None, int], None]
"""Called as `listener(old_version, new_version)` after a new flag set is swapped in; old_version
is None when the client had no flag set before."""


class ConnectionState(StrEnum):
    """How the client stands with the server (evaluation works in every state)."""

    CONNECTING = "CONNECTING"
    """No answer from the server yet."""
    CONNECTED = "CONNECTED"
    """The last request succeeded, or the stream is open."""
    DISCONNECTED = "DISCONNECTED"
    """The server cannot be reached or refused us: the client serves the last good set."""
    CLOSED = "CLOSED"


StateListener = Callable[[ConnectionState, str | None], None]
"""Called as `listener(state, message)` when the connection state changes (message: why)."""


@dataclass
class ClientStats:
    """Counters of the client's traffic with the server (a snapshot; see `FlagsClient.stats`)."""

    polls: int = 0
    """GET /feature-flags requests answered (200 or 304)."""
    not_modified: int = 0
    """Of those, 304 Not Modified answers to If-None-Match."""
    stream_connects: int = 0
    """Times the event stream was opened."""
    stream_events: int = 0
    """Flag-set events received on the stream."""
    updates: int = 0
    """New flag-set versions swapped in."""
    errors: int = 0
    """Failed requests, broken streams and unusable payloads."""
    last_error: str | None = None


class FlagsError(Exception):
    """A request to the flag server failed (the message holds no secret)."""


class _Unauthorized(FlagsError):
    pass


@dataclass(frozen=True, slots=True)
class _State:
    flagset: FlagSet
    loaded: bool
    """False until a flag set came from a bootstrap or the server."""
    synced: bool
    """True once a flag set came from the server (then `etag` is its version)."""

    @property
    def etag(self) -> str | None:
        return f'"{self.flagset.version}"' if self.synced else None


_NOT_LOADED = Evaluation(
    None, None, Reason.ERROR, ErrorCode.GENERAL, "no flag set loaded yet (the client is not ready)"
)


def _kind_matches(value: object, default: object) -> bool:
    """Whether `value` has the kind of `default` (bool, str, number, mapping, list)."""
    kind = default.__class__
    if kind is bool:
        return value.__class__ is bool
    if kind is str:
        return value.__class__ is str
    if kind is int or kind is float:
        return value.__class__ is int or value.__class__ is float
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    if isinstance(default, list):
        return isinstance(value, list)
    return True


def load_bootstrap(source: str | os.PathLike[str] | FlagSet | Mapping[str, Any]) -> FlagSet:
    """A flag set from a file in the export format (YAML or JSON), a dict, or a FlagSet."""
    if isinstance(source, FlagSet):
        return source
    if isinstance(source, Mapping):
        return FlagSet.from_data(dict(source))
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return FlagSet.from_data(data or {})


def _segment_refs(conditions: Iterable[Any]) -> set[str]:
    return {str(c.value) for c in conditions if c.op == "segment"}


def changed_flags(old: FlagSet | None, new: FlagSet) -> list[str]:
    """Keys of the flags whose evaluation may differ between `old` and `new`, sorted.

    A flag changed when it was added, removed or edited, or when a segment it uses (directly or
    through another segment) or a prerequisite flag changed.
    """
    old_flags = {f.key: f for f in old.flags} if old else {}
    new_flags = {f.key: f for f in new.flags}
    old_segs = {s.name: s for s in old.segments} if old else {}
    new_segs = {s.name: s for s in new.segments}
    changed = {k for k in old_flags.keys() | new_flags.keys() if old_flags.get(k) != new_flags.get(k)}
    segs = {n for n in old_segs.keys() | new_segs.keys() if old_segs.get(n) != new_segs.get(n)}
    seg_uses = {s.name: _segment_refs(s.conditions) for s in new.segments}
    while True:
        more = {n for n, uses in seg_uses.items() if n not in segs and uses & segs}
        if not more:
            break
        segs |= more
    flag_uses = {
        f.key: (
            {
                seg
                for env in f.environments.values()
                for rule in env.rules
                for seg in _segment_refs(rule.conditions)
            },
            {p.flag for p in f.prerequisites},
        )
        for f in new.flags
    }
    while True:
        more = {
            key
            for key, (uses, prerequisites) in flag_uses.items()
            if key not in changed and (uses & segs or prerequisites & changed)
        }
        if not more:
            break
        changed |= more
    return sorted(changed)


@dataclass(slots=True)
class _Event:
    type: str = "message"
    data: str = ""
    id: str | None = None


def _sse_events(lines: Iterable[str]) -> Iterator[_Event]:
    """Server-Sent Events from the lines of a stream (WHATWG HTML's event-stream rules)."""
    event, has_data = "", False
    data: list[str] = []
    last_id: str | None = None
    for line in lines:
        if not line:
            if has_data:
                yield _Event(event or "message", "\n".join(data), last_id)
            event, data, has_data = "", [], False
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
            has_data = True
        elif name == "event":
            event = value
        elif name == "id" and "\0" not in value:
            last_id = value


class _ResumeAfterFork:
    """Stands in for the evaluator in a forked child until its first use starts the worker there.

    This keeps the post-fork check off the hot path: the client's `_env` is this object only
    until the first evaluation in the child, which puts the real evaluator back.
    """

    __slots__ = ("client", "inner")

    def __init__(self, client: FlagsClient, inner: EnvironmentEvaluator) -> None:
        self.client = client
        self.inner = inner

    @property
    def evaluator(self) -> Any:
        return self.inner.evaluator

    def is_enabled(self, key: str, context: Context, default: bool = False) -> bool:
        self.client._resume_after_fork()
        return self.inner.is_enabled(key, context, default)

    def evaluate(self, key: str, context: Context, expected_type: FlagType | None = None) -> Evaluation:
        self.client._resume_after_fork()
        return self.inner.evaluate(key, context, expected_type)

    def evaluate_all(self, context: Context) -> dict[str, Evaluation]:
        self.client._resume_after_fork()
        return self.inner.evaluate_all(context)


_live_clients: weakref.WeakSet[FlagsClient] = weakref.WeakSet()
_inherited: list[httpx.Client] = []


def _after_fork_in_child() -> None:
    for client in list(_live_clients):
        with contextlib.suppress(Exception):  # never break a fork over a flag client
            client._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FlagsClient:
    """Evaluates one environment's flags locally; a background thread keeps the set current.

    `url` is the shipyard server, `token` an API token (client scope is enough), `environment`
    the environment to evaluate. `bootstrap` (a YAML/JSON file in the export format, a dict or a
    FlagSet) is served until the first download. `stream=False` polls every `poll_interval`
    seconds instead of following the event stream (the stream falls back to polling by itself
    while it is broken). `on_change(old_version, new_version)` is called from the worker thread
    after each new version is swapped in. Retries wait between `min_retry_delay` and
    `max_retry_delay` seconds (exponential backoff with jitter).
    """

    def __init__(
        self,
        url: str,
        token: str,
        environment: str,
        *,
        bootstrap: str | os.PathLike[str] | FlagSet | Mapping[str, Any] | None = None,
        stream: bool = True,
        poll_interval: float = 30.0,
        request_timeout: float = 5.0,
        on_change: ChangeListener | None = None,
        min_retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        start: bool = True,
    ) -> None:
        if poll_interval <= 0 or request_timeout <= 0 or min_retry_delay <= 0:
            raise ValueError("poll_interval, request_timeout and min_retry_delay must be positive")
        self.url = url.rstrip("/")
        self.__token = token
        self.environment = environment
        self.stream = stream
        self.poll_interval = poll_interval
        self.request_timeout = request_timeout
        self.min_retry_delay = min_retry_delay
        self.max_retry_delay = max(max_retry_delay, min_retry_delay)
        self._change_listeners: tuple[ChangeListener, ...] = (on_change,) if on_change else ()
        self._state_listeners: tuple[StateListener, ...] = ()
        self._stats = ClientStats()
        self._connection = ConnectionState.CONNECTING
        self._closed = False
        self._init_process_state()
        if bootstrap is not None:
            flagset = load_bootstrap(bootstrap)
            self._state = _State(flagset, loaded=True, synced=False)
        else:
            self._state = _State(FlagSet(), loaded=False, synced=False)
        self._env: EnvironmentEvaluator | _ResumeAfterFork = compile_flagset(
            self._state.flagset
        ).for_environment(environment)
        _live_clients.add(self)
        if start:
            self.start()

    def _init_process_state(self) -> None:
        """Threads, locks, events and the HTTP client: what must be made again after fork()."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._http: httpx.Client | None = None
        self._socket: socket.socket | None = None
        self._stream_delivered = False
        self._pid = os.getpid()

    # --- evaluation (the hot path: no lock, no copy, no log) ------------------------------------

    def is_enabled(self, key: str, context: Context = EMPTY_CONTEXT, default: bool = False) -> bool:
        """The value of boolean flag `key` for `context`; `default` when it is missing or fails."""
        return self._env.is_enabled(key, context, default)

    def evaluate(
        self, key: str, context: Context = EMPTY_CONTEXT, expected_type: FlagType | None = None
    ) -> Evaluation:
        """The full result (value, variant, reason, error); never raises.

        `expected_type` names the flag type the caller wants: another is a TYPE_MISMATCH error.
        """
        try:
            result = self._env.evaluate(key, context, expected_type)
        except Exception as exc:  # e.g. an unhashable key
            return Evaluation(None, None, Reason.ERROR, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")
        if result.error_code is ErrorCode.FLAG_NOT_FOUND and not self._state.loaded:
            return _NOT_LOADED
        return result

    def get_value(self, key: str, default: Any, context: Context = EMPTY_CONTEXT) -> Any:
        """The value of flag `key` for `context`, or `default` on any error.

        The value must be of the kind of `default` (a bool, a str, a number, a mapping or a
        list; a None default accepts anything): a flag of another type serves `default`.
        """
        result = self.evaluate(key, context)
        if result.error_code is not None or not _kind_matches(result.value, default):
            return default
        return result.value

    def evaluate_all(self, context: Context = EMPTY_CONTEXT) -> dict[str, Evaluation]:
        """Every flag evaluated for `context` (e.g. to bootstrap a browser), in definition order."""
        try:
            return self._env.evaluate_all(context)
        except Exception:
            return {}

    # --- state ----------------------------------------------------------------------------------

    @property
    def version(self) -> int | None:
        """The version of the flag set being served; None before any was loaded."""
        state = self._state
        return state.flagset.version if state.loaded else None

    @property
    def flagset(self) -> FlagSet:
        """The flag set being served (empty before any was loaded)."""
        return self._state.flagset

    @property
    def loaded(self) -> bool:
        """Whether a flag set (from the bootstrap or the server) is being served."""
        return self._state.loaded

    @property
    def ready(self) -> threading.Event:
        """Set once a flag set has been downloaded from the server."""
        return self._ready

    @property
    def connection(self) -> ConnectionState:
        return self._connection

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the traffic counters."""
        return dataclasses.replace(self._stats)

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a flag set came from the server (True) or `timeout` seconds pass (False)."""
        self._resume_after_fork()
        return self._ready.wait(timeout)

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._change_listeners = (*self._change_listeners, listener)

    def remove_change_listener(self, listener: ChangeListener) -> None:
        self._change_listeners = tuple(x for x in self._change_listeners if x != listener)

    def add_state_listener(self, listener: StateListener) -> None:
        self._state_listeners = (*self._state_listeners, listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        self._state_listeners = tuple(x for x in self._state_listeners if x != listener)

    def __repr__(self) -> str:
        return (
            f"FlagsClient(url={_without_userinfo(self.url)!r}, environment={self.environment!r}, "
            f"version={self.version}, connection={self._connection.value})"
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (done by the constructor unless `start=False`)."""
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"shipyard-flags[{self.environment}]", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker and close connections; evaluation keeps serving the last set."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping.set()
            sock, thread = self._socket, self._thread
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a worker blocked reading the stream
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.request_timeout if timeout is None else timeout)
        http, self._http = self._http, None
        if http is not None:
            with contextlib.suppress(Exception):
                http.close()
        _live_clients.discard(self)
        self._set_connection(ConnectionState.CLOSED, None)

    def __enter__(self) -> FlagsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- fork safety ----------------------------------------------------------------------------

    def _after_fork(self) -> None:
        """In a forked child: the worker thread did not survive; start one on first use."""
        was_ready, was_running = self._ready.is_set(), self._thread is not None
        # The parent's connections are the parent's: never close them from here, nor let them be
        # collected (a TLS socket would say goodbye on the parent's behalf).
        if self._http is not None:
            _inherited.append(self._http)
        self._init_process_state()
        if was_ready:
            self._ready.set()
        if self._closed or not was_running:
            return
        env = self._env
        if isinstance(env, EnvironmentEvaluator):
            self._env = _ResumeAfterFork(self, env)

    def _resume_after_fork(self) -> None:
        env = self._env
        if not isinstance(env, _ResumeAfterFork):
            return
        with self._lock:
            if self._env is env:
                self._env = env.inner
        self.start()

    # --- the worker -----------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.url,
                headers={
                    "Authorization": f"Bearer {self.__token}",
                    "User-Agent": f"shipyard-flags-python/{__version__}",
                },
                timeout=httpx.Timeout(self.request_timeout),
                follow_redirects=False,
            )
        return self._http

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self.stream:
                self._stream_delivered = False
                try:
                    self._follow_stream()
                except Exception as exc:
                    if self._stopping.is_set():
                        break
                    self._failed("the event stream", exc)
                if self._stream_delivered:  # it worked, then ended (a server restart, a proxy timeout)
                    failures = 0
                    self._stopping.wait(self._delay(0))
                    continue
            try:
                self._poll()
            except Exception as exc:
                self._failed("polling", exc)
            else:
                if not self.stream:
                    failures = 0
                    self._stopping.wait(self.poll_interval)
                    continue
            failures += 1
            self._stopping.wait(self._delay(failures))

    def _delay(self, failures: int) -> float:
        """Exponential backoff with equal jitter, at most `max_retry_delay` and `poll_interval`."""
        cap = min(self.max_retry_delay, self.poll_interval)
        delay = min(cap, self.min_retry_delay * 2.0 ** min(failures, 30))
        return delay / 2 + random.uniform(0, delay / 2)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            return
        response.read()
        detail = ""
        with contextlib.suppress(Exception):
            body = response.json()
            detail = str(body.get("detail") or body.get("title") or "")[:200]
        message = f"HTTP {status} from {response.request.method} {response.request.url.path}"
        if detail:
            message += f": {detail}"
        if status in (401, 403):
            raise _Unauthorized(f"{message} (the server refused the token)")
        raise FlagsError(message)

    def _follow_stream(self) -> None:
        """Follow the event stream until it ends; `_stream_delivered` tells whether it worked."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self._state.synced:
            headers["Last-Event-ID"] = str(self._state.flagset.version)
        timeout = httpx.Timeout(self.request_timeout, read=STREAM_READ_TIMEOUT)
        with self._client().stream(
            "GET", "/feature-flags/stream", headers=headers, timeout=timeout
        ) as response:
            self._socket = _socket_of(response)
            try:
                self._check(response)
                media_type = response.headers.get("content-type", "").split(";")[0].strip()
                if media_type != "text/event-stream":
                    raise FlagsError(f"the stream answered {media_type or 'no content type'}")
                self._stats.stream_connects += 1
                for event in _sse_events(response.iter_lines()):
                    if self._stopping.is_set():
                        return
                    if event.type != "flagset":
                        continue
                    self._stats.stream_events += 1
                    self._install(FlagSet.from_data(json.loads(event.data)))
                    self._stream_delivered = True
            finally:
                self._socket = None

    def _poll(self) -> None:
        headers = {}
        etag = self._state.etag
        if etag is not None:
            headers["If-None-Match"] = etag
        response = self._client().get("/feature-flags", headers=headers)
        if response.status_code == 304:
            self._stats.polls += 1
            self._stats.not_modified += 1
            self._set_connection(ConnectionState.CONNECTED, None)
            return
        self._check(response)
        self._stats.polls += 1
        self._install(FlagSet.from_data(response.json()))

    def _install(self, flagset: FlagSet) -> None:
        """Swap in a flag set from the server (compiled here, off the request path)."""
        old = self._state
        if old.synced and old.flagset.version == flagset.version:
            self._set_connection(ConnectionState.CONNECTED, None)
            return
        unchanged = old.loaded and old.flagset == flagset  # the server serves the bootstrap set
        if unchanged:
            self._state = _State(flagset, loaded=True, synced=True)
        else:
            env = compile_flagset(flagset).for_environment(self.environment)
            self._state = _State(flagset, loaded=True, synced=True)
            self._env = env  # the swap: one assignment, readers never lock
        self._ready.set()
        self._set_connection(ConnectionState.CONNECTED, None)
        if unchanged:
            return
        old_version = old.flagset.version if old.loaded else None
        self._stats.updates += 1
        log.info("flag set version %s (was %s)", flagset.version, old_version)
        for listener in self._change_listeners:
            try:
                listener(old_version, flagset.version)
            except Exception:
                log.exception("a flag change listener failed")

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count and report a failure; polling failures mean the server is unreachable."""
        self._stats.errors += 1
        message = self._redact(
            f"{what}: {exc}" if isinstance(exc, FlagsError) else f"{what}: {_describe(exc)}"
        )
        self._stats.last_error = message
        if not isinstance(exc, FlagsError | httpx.HTTPError):  # an unusable payload
            log.warning("%s", message)
        elif what != "polling":
            log.debug("%s; polling meanwhile", message)  # the poll right after decides
        if what == "polling":
            self._set_connection(ConnectionState.DISCONNECTED, message)

    def _redact(self, text: str) -> str:
        return text.replace(self.__token, "***") if self.__token else text

    def _set_connection(self, state: ConnectionState, message: str | None) -> None:
        if state == self._connection or (self._closed and state != ConnectionState.CLOSED):
            return
        self._connection = state
        if state == ConnectionState.DISCONNECTED:
            log.warning("flag server unreachable, serving flag set version %s: %s", self.version, message)
        elif state == ConnectionState.CONNECTED:
            log.info("connected to the flag server")
        for listener in self._state_listeners:
            try:
                listener(state, message)
            except Exception:
                log.exception("a flag connection listener failed")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _socket_of(response: httpx.Response) -> socket.socket | None:
    """The socket under a streaming response (to wake a blocked reader on close), if reachable."""
    try:
        stream = response.extensions["network_stream"]
        sock = stream.get_extra_info("socket")
    except Exception:
        return None
    return sock if isinstance(sock, socket.socket) else None


def _without_userinfo(url: str) -> str:
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None))
    except Exception:
        return "<url>"
