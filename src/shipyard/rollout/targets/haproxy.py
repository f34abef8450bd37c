"""HAProxy 2.6 as the traffic switch of the local target: config, runtime API, stats and traffic.

HAProxy is configured once (one frontend and one backend per web/api service, no servers) and
then driven only through its runtime API on a UNIX socket: versions' instances are added as
*dynamic servers* (`add server`), weighted (`set server … weight`), drained and deleted. Nothing
here ever reloads HAProxy.

Why dynamic servers rather than `server-template` slots: HAProxy 2.6 supports health checks on
dynamic servers (`check` + `enable health`) and their removal (`del server`), so

- a server's name carries its version (`<version>_<n>`): health, traffic and rediscovery after a
  controller restart read the version straight from HAProxy, with no slot → version table kept
  beside it that could disagree;
- there is no fixed number of slots to size, and no parked placeholder servers in stats and logs;
- a slot reused by another version would carry its predecessor's counters.

What it costs, and how it is paid: a dynamic server inherits nothing from `default-server`, nor the
defaults of a server written in the config, so every option (checks, the idle-connection pool that
lets HAProxy reuse server connections) is spelled out in the `add server` line (`server_options`);
dynamic servers do not survive an HAProxy restart, so the local target re-adds them from the
process supervisor and its saved weights when it has to start HAProxy again.

Traffic is measured from HAProxy's request log. HAProxy writes it into a `ring` buffer in its
memory (LOG_RING, LOG_RING_BYTES), which a background thread of the controller reads back over the
admin socket (`show events <ring> -w -n`, a connection kept open; `TrafficSampler`): per (backend,
server) it keeps cumulative request, 5xx and latency-histogram counts. The counts live in the
controller's memory: a controller that restarts starts again from zero, which analysis tolerates
(its windows are differences of two samples taken by the same controller), and requests logged
while no controller reads are not counted.

The ring does not drop lines silently. HAProxy keeps every line a connected reader has not read
yet; only when the ring is full does it drop new lines, and it counts them and writes "<n> events
dropped" into the ring once it has room again. LOG_RING_BYTES holds 14 s of lines at 30k req/s, so
a reader that pauses a few seconds loses none (a UNIX datagram socket, the sink used before, queues
only `net.unix.max_dgram_qlen` lines for its reader, 10 without systemd, and lost 16-22 % of them at
9-13k req/s). Lines are still lost when the reader falls further behind or is disconnected (HAProxy
restarts, or closes a CLI connection that made no progress for its `stats timeout`): so the local
target takes request and 5xx *counts* from HAProxy's own per-server counters (`show stat`: exact),
only the latency histogram from the log, and the analysis compares the two in every window.

Which lines belong to the requests a `show stat` counted: after reading the counters, the sampler
has HAProxy log a marker (a request to a frontend of its own, on a UNIX socket) and takes the
counts at the marker's line. The ring keeps lines in the order they were written, so every line
written before the marker has been read by then.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import hashlib
import io
import itertools
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...errors import TargetError, UnavailableError
from ...spec import Probe, Stack
from .._model import LATENCY_BUCKETS_MS, Sample, bucket_index

LOG_TAG = "shipyard"
LOG_FORMAT = f"{LOG_TAG} %b %s %ST %Tr %Ta %TR %rc %tsc"
"""One line per request: backend, server, status, response time, active time, request time,
retries, termination state (all times in milliseconds)."""
MARK_TAG = f"{LOG_TAG}-mark"
MARK_FORMAT = f"{MARK_TAG} %HU"
"""The line of a marker request: the tag and the path, which carries the sampler's nonce and token."""
LOG_RING = "request_log"
LOG_RING_BYTES = 16 * 1024 * 1024
"""The request log's ring: a line takes its length + 2 bytes in it (39 for the demo's 37-character
lines, measured; longer names make longer lines), so 16 MiB hold about 430,000 lines, 14 s at
30k req/s. HAProxy allocates it at start."""

NO_SERVER = "<NOSRV>"
_NOT_INSTALLED = "HAProxy is not installed ({} not found): install Debian's haproxy (apt-get install haproxy)"
MAX_WEIGHT = 256
_UNIX_PATH_MAX = 107
_SERVER_NAME = re.compile(r"^(?P<version>[A-Za-z0-9.\-]*(?:_[0-9a-f]{2}[A-Za-z0-9.\-]*)*)_(?P<index>[0-9]+)$")


# --- names ---------------------------------------------------------------------------------------


def frontend_name(service: str) -> str:
    return f"fe_{service}"


def backend_name(service: str) -> str:
    return f"be_{service}"


def service_of_backend(backend: str) -> str | None:
    return backend[3:] if backend.startswith("be_") else None


def _encode_version(version: str) -> str:
    """A version as a server-name part: [A-Za-z0-9.-] kept, anything else (and `_`) as `_xx`."""
    if not version:
        raise TargetError("a version must not be empty")
    out = []
    for char in version:
        if char.isascii() and (char.isalnum() or char in ".-"):
            out.append(char)
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode())
    return "".join(out)


def _decode_version(encoded: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(encoded):
        if encoded[i] == "_":
            raw.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(encoded[i].encode())
            i += 1
    return raw.decode()


def server_name(version: str, index: int) -> str:
    """The HAProxy server name of instance `index` (1-based) of `version`: `<version>_<index>`."""
    return f"{_encode_version(version)}_{index}"


def parse_server_name(name: str) -> tuple[str, int] | None:
    """(version, index) of a server named by `server_name`, or None for any other name."""
    match = _SERVER_NAME.match(name)
    if not match or not match["version"]:
        return None
    try:
        return _decode_version(match["version"]), int(match["index"])
    except (ValueError, UnicodeDecodeError):
        return None


# --- configuration -------------------------------------------------------------------------------


_MAX_SOCKET_PATH = 90


@dataclass(frozen=True)
class ProxyPaths:
    """Where one HAProxy keeps its files (all under one directory of the target's state)."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "haproxy.cfg"

    @property
    def sockets(self) -> Path:
        """Where the UNIX sockets live: the directory itself, unless its path is too long.

        A UNIX socket path is limited (108 bytes; HAProxy takes at most 97), and state
        directories can be deep, so long ones get a short private directory in the system's
        temp dir, named after the state directory (the same one on every call and restart).
        """
        if len(str(self.directory / "admin.sock")) <= _MAX_SOCKET_PATH:
            return self.directory
        digest = hashlib.sha256(str(self.directory.resolve()).encode()).hexdigest()[:16]
        short = Path(tempfile.gettempdir()) / f"shipyard-{os.getuid()}-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        if short.stat().st_uid != os.getuid() or short.stat().st_mode & 0o077:
            raise TargetError(f"{short} (HAProxy's socket directory) is not private to this user; remove it")
        return short

    @property
    def admin_socket(self) -> Path:
        return self.sockets / "admin.sock"

    @property
    def marker_socket(self) -> Path:
        """The marker frontend's socket: a request there logs a marker line (TrafficSampler.flush)."""
        return self.sockets / "log-marker.sock"

    @property
    def pid_file(self) -> Path:
        return self.directory / "haproxy.pid"

    @property
    def output(self) -> Path:
        return self.directory / "haproxy.out"


def routed_services(stack: Stack) -> list[str]:
    """The services HAProxy routes (web and api services; workers take no traffic)."""
    return [name for name, service in stack.services.items() if service.role != "worker"]


def readiness_probe(stack: Stack, service: str) -> Probe:
    health = stack.services[service].health
    return health.readiness or health.liveness or Probe()


THREADS = 1
"""HAProxy's threads (`nbthread`; its default is one per core). On the one host it shares with the
apps it fronts, a second thread bought contention, not throughput: in front of two demo apps doing
200 µs of work per request under wrk on 2 cores, 1 thread served 7,220–7,250 req/s against 6,665–6,893
with 2 (86 % of the apps' direct rate against 80–82 %), and 41.9k against 36.8–39.2k for a null app.
One thread carries tens of thousands of requests a second, more than one host's apps answer."""
POOL_MAX_CONN = -1
"""Idle server connections HAProxy may keep per server for reuse: -1, no bound (what a server written
in the config gets by default). HAProxy still closes idle ones beyond its fd ratios
(`tune.pool-high-fd-ratio`), and the frontend's `maxconn` bounds how many can be open at all."""
POOL_PURGE_DELAY = "1s"
"""Every second, idle connections beyond the last second's need are closed: a server being removed
(`del server` waits for its idle connections to go) is free soon after its traffic stops."""


def server_options(probe: Probe) -> str:
    """The options of every server of a backend: the config's `default-server` line and each
    `add server` line are this same string (render_haproxy_config, HAProxyClient.add_server).

    A dynamic server (HAProxy 2.6) gets neither `default-server` nor the defaults a server written
    in the config gets: its idle-connection pool is off (`pool-max-conn` 0, `pool-purge-delay` 0),
    so without them every proxied request opened a new connection (839 req/s, 0 reuses, against
    9,946 for the same servers written in the config). So every option whose config default
    differs is spelled out here. The timeouts (`timeout connect/server/check`, `http-reuse`) are the
    proxy's, which dynamic servers do share.

    `downinter` (interval while the server is DOWN) is at most 1 s, so a starting instance is seen
    ready soon after it is, whatever the probe's period.
    """
    down_ms = min(probe.period, 1) * 1000
    return (
        f"check inter {probe.period * 1000} downinter {down_ms} fastinter {down_ms} "
        f"rise {probe.success_threshold} fall {probe.failure_threshold} "
        f"pool-max-conn {POOL_MAX_CONN} pool-purge-delay {POOL_PURGE_DELAY}"
    )


def _quote(value: str) -> str:
    if re.search(r"[\s\"'\\#]", value):
        raise TargetError(f"unsupported character in an HAProxy config value: {value!r}")
    return value


def render_haproxy_config(
    stack: Stack,
    directory: Path,
    *,
    ports: Mapping[str, int] | None = None,
    bind_address: str = "127.0.0.1",
    maxconn: int = 4096,
    log_ring_bytes: int = LOG_RING_BYTES,
) -> str:
    """The HAProxy configuration of `stack`'s web and api services; servers are added at run time.

    With the spec's `alerts.haproxy_target`, HAProxy's built-in Prometheus exporter answers there
    on `/metrics` (per-server request, 5xx and time counters that Prometheus's rules read).

    `ports` chooses a service's frontend port instead of the spec's; `log_ring_bytes` is the request
    log ring's size (what a reader may fall behind by before lines are lost). Nothing secret is rendered:
    the config holds names, paths, ports and timings only.
    """
    paths = ProxyPaths(directory)
    for path in (paths.admin_socket, paths.marker_socket):
        if len(str(path)) > _UNIX_PATH_MAX:
            raise TargetError(f"the state directory's path is too long for a UNIX socket: {path}")
    ports = dict(ports or {})
    lines = [
        f"# Rendered by shipyard for stack {stack.name!r}"
        + (f" ({stack.environment})." if stack.environment else "."),
        "# Servers are added, weighted and removed at run time through the admin socket:",
        "# do not add any here.",
        "global",
        f"    nbthread {THREADS}",
        f"    log ring@{LOG_RING} len 1024 format raw local0 info",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    pidfile {paths.pid_file}",
        f"    maxconn {maxconn}",
        "",
        "# the request log, read back over the admin socket (`show events`)",
        f"ring {LOG_RING}",
        "    format raw",
        "    maxlen 1024",
        f"    size {log_ring_bytes}",
        "",
        "defaults",
        "    mode http",
        "    log global",
        f'    log-format "{LOG_FORMAT}"',
        "    option http-keep-alive",
        "    http-reuse safe",
        "    # a request to a server that is going away (connection refused or closed before",
        "    # any response) is retried, on another server: no request is lost in a switch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    option redispatch 1",
        "    timeout connect 2s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 10s",
        "",
        "# a request here logs a marker line: the log reader has read every line before it",
        "frontend log_marker",
        f"    bind {paths.marker_socket} mode 600",
        f'    log-format "{MARK_FORMAT}"',
        "    http-request return status 204",
    ]
    if stack.alerts.haproxy_target:
        lines += [
            "",
            "frontend prometheus",
            f"    bind {stack.alerts.haproxy_target}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    no log",
        ]
    for name in routed_services(stack):
        service = stack.services[name]
        port = ports.get(name, service.port)
        if port is None:  # pragma: no cover - the spec requires a port on web and api services
            raise TargetError(f"service {name} has no port to listen on")
        probe = readiness_probe(stack, name)
        lines += [
            "",
            f"frontend {frontend_name(name)}",
            f"    bind {_quote(bind_address)}:{port}",
            f"    default_backend {backend_name(name)}",
            "",
            f"backend {backend_name(name)}",
            "    balance roundrobin",
            "    option httpchk",
            f"    http-check send meth GET uri {_quote(probe.path)} ver HTTP/1.1 hdr Host localhost",
            f"    timeout check {probe.timeout}s",
            "    # the options every server of this backend is added with (dynamic servers inherit none)",
            f"    default-server {server_options(probe)}",
        ]
    return "\n".join(lines) + "\n"


def check_config(config: Path, haproxy_bin: str = "haproxy") -> None:
    """Validate a config with `haproxy -c`; a refusal raises TargetError with HAProxy's message."""
    try:
        result = subprocess.run(
            [haproxy_bin, "-c", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError as error:
        raise TargetError(
            f"HAProxy is not installed ({haproxy_bin} not found); install Debian's haproxy"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise TargetError(f"`{haproxy_bin} -c` did not finish in 30 s") from error
    if result.returncode != 0:
        raise TargetError(
            f"HAProxy refuses the configuration {config}:\n{_messages(result.stdout + result.stderr)}"
        )


def _messages(output: str) -> str:
    """HAProxy's output without its version banner."""
    lines = [line for line in output.splitlines() if line.strip() and "[NOTICE]" not in line]
    return "\n".join(lines) or output.strip()


def check_config_text(text: str, haproxy_bin: str = "haproxy") -> None:
    with tempfile.TemporaryDirectory(prefix="shipyard-haproxy-") as directory:
        path = Path(directory) / "haproxy.cfg"
        path.write_text(text)
        check_config(path, haproxy_bin)


# --- the HAProxy process -------------------------------------------------------------------------


def read_pid(paths: ProxyPaths) -> int | None:
    """HAProxy's pid from its pid file, when that process is alive and is HAProxy."""
    try:
        pid = int(paths.pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm.startswith("haproxy") else None


def start_haproxy(paths: ProxyPaths, haproxy_bin: str = "haproxy", timeout_s: float = 10.0) -> int:
    """Start HAProxy detached (daemon mode: it outlives the caller) on `paths.config`; its pid."""
    with contextlib.suppress(FileNotFoundError):
        paths.admin_socket.unlink()  # a stale socket of a dead HAProxy
    with paths.output.open("wb") as output:
        try:
            result = subprocess.run(
                [haproxy_bin, "-D", "-f", str(paths.config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                timeout=timeout_s,
                start_new_session=True,
                check=False,
            )
        except FileNotFoundError as error:
            raise TargetError(_NOT_INSTALLED.format(haproxy_bin)) from error
        except subprocess.TimeoutExpired as error:
            raise TargetError(f"HAProxy did not start within {timeout_s:g} s") from error
    message = _messages(paths.output.read_text(errors="replace"))
    if result.returncode != 0:
        raise TargetError(f"HAProxy failed to start (exit {result.returncode}):\n{message}")
    client = HAProxyClient(paths.admin_socket)
    deadline = time.monotonic() + timeout_s
    while True:
        pid = read_pid(paths)
        if pid is not None and client.reachable():
            return pid
        if time.monotonic() > deadline:
            raise TargetError(f"HAProxy started but does not answer on {paths.admin_socket}:\n{message}")
        time.sleep(0.02)


def stop_haproxy(paths: ProxyPaths, timeout_s: float = 10.0) -> None:
    """Stop the HAProxy of `paths` (hard stop: SIGTERM), if it runs."""
    pid = read_pid(paths)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while read_pid(paths) == pid and time.monotonic() < deadline:
        time.sleep(0.02)
    if read_pid(paths) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the runtime API -----------------------------------------------------------------------------


class HAProxyUnreachable(TargetError, UnavailableError):
    """Nothing answers on HAProxy's admin socket: unavailable (exit 3), and a TargetError still, so
    that whoever handles a target's failure (a release, a failover's checks) handles it too."""

    exit_code = 3
    http_status = 503


@dataclass(frozen=True)
class ServerStat:
    """One server's line of `show stat`."""

    backend: str
    server: str
    status: str
    """UP, DOWN, MAINT, DRAIN, NOLB, "UP 1/3" (going down), "DOWN 1/2" (going up), "no check"…"""
    weight: int
    scur: int
    """Current sessions: requests in flight on this server."""
    qcur: int
    """Requests queued for this server."""
    stot: int
    hrsp_5xx: int
    check_status: str
    check_desc: str
    check_code: str
    """The HTTP status of the last health check's answer ("" when none)."""
    addr: str

    @property
    def up(self) -> bool:
        return self.status.startswith(("UP", "DRAIN", "NOLB"))


@dataclass(frozen=True)
class ServerState:
    """One server's line of `show servers state`."""

    backend: str
    server: str
    server_id: int
    address: str
    port: int
    op_state: int
    """0 stopped (down), 1 starting, 2 running, 3 stopping."""
    admin_state: int
    """Bit mask: 0x01 forced maintenance, 0x08 forced drain, … (0 = ready)."""
    weight: int
    check_result: int
    """0 unknown (no check yet), 1 neutral, 2 failed, 3 passed, 4 conditionally passed."""
    check_state: int

    @property
    def maintenance(self) -> bool:
        # Forced, inherited and resolver maintenance. Not 0x04 (CMAINT, "disabled" in the config):
        # HAProxy 2.6 keeps that bit after `set server ... state ready` while the server serves.
        return bool(self.admin_state & 0x23)

    @property
    def draining(self) -> bool:
        return bool(self.admin_state & 0x18)

    @property
    def healthy(self) -> bool:
        """Up in HAProxy's eyes, having passed a health check (a fresh server has passed none)."""
        return not self.maintenance and self.op_state in (1, 2) and self.check_result in (3, 4)


def parse_show_stat(text: str) -> list[dict[str, str]]:
    """The rows of `show stat` (CSV with a `# ` header) as dicts."""
    text = text.lstrip()
    if not text.startswith("# pxname,"):
        raise TargetError(f"unexpected `show stat` output: {text[:200]!r}")
    return list(csv.DictReader(io.StringIO(text[2:])))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def server_stats(text: str) -> list[ServerStat]:
    """The servers (not frontends or backends) in `show stat` output."""
    stats = []
    for row in parse_show_stat(text):
        if row.get("svname") in ("FRONTEND", "BACKEND") or row.get("type") not in (None, "2"):
            continue
        stats.append(
            ServerStat(
                backend=row["pxname"],
                server=row["svname"],
                status=row.get("status", ""),
                weight=_int(row.get("weight")),
                scur=_int(row.get("scur")),
                qcur=_int(row.get("qcur")),
                stot=_int(row.get("stot")),
                hrsp_5xx=_int(row.get("hrsp_5xx")),
                check_status=row.get("check_status", ""),
                check_desc=row.get("check_desc", ""),
                check_code=row.get("check_code", ""),
                addr=row.get("addr", ""),
            )
        )
    return stats


def parse_servers_state(text: str) -> list[ServerState]:
    """The rows of `show servers state` (format version 1)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise TargetError(f"unexpected `show servers state` output: {text[:200]!r}")
    header: list[str] = []
    states = []
    for line in lines[1:]:
        if line.startswith("#"):
            header = line.lstrip("# ").split()
            continue
        row = dict(zip(header, line.split(), strict=False))
        states.append(
            ServerState(
                backend=row["be_name"],
                server=row["srv_name"],
                server_id=_int(row.get("srv_id")),
                address=row.get("srv_addr", ""),
                port=_int(row.get("srv_port")),
                op_state=_int(row.get("srv_op_state")),
                admin_state=_int(row.get("srv_admin_state")),
                weight=_int(row.get("srv_uweight")),
                check_result=_int(row.get("srv_check_result")),
                check_state=_int(row.get("srv_check_state")),
            )
        )
    return states


class HAProxyClient:
    """HAProxy's runtime API on its UNIX socket: one connection per command (HAProxy closes it
    after answering), so there is no session state to lose or to resynchronise."""

    def __init__(self, socket_path: Path | str, timeout_s: float = 5.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def command(self, command: str) -> str:
        """Send one command; its whole answer. An unreachable HAProxy raises HAProxyUnreachable."""
        if "\n" in command or ";" in command:
            raise TargetError(f"one command at a time: {command!r}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(str(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as error:
                raise HAProxyUnreachable(
                    f"HAProxy unreachable at its admin socket {self.socket_path}: "
                    f"{error.strerror or error}; check that HAProxy runs and its `stats socket` is that path"
                ) from error
            except OSError as error:
                raise HAProxyUnreachable(
                    f"HAProxy unreachable at its admin socket {self.socket_path}: "
                    f"{error.strerror or error}; check the socket's path and permissions"
                ) from error
            try:
                sock.sendall(command.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except OSError as error:  # includes socket.timeout
                raise TargetError(
                    f"HAProxy's admin socket {self.socket_path} failed during "
                    f"{command.split(maxsplit=1)[0]!r}: {error}"
                ) from error
        return b"".join(chunks).decode(errors="replace")

    def _expect(self, command: str, *accepted: str) -> str:
        """Run a command whose answer must be empty or one of `accepted`; anything else is an error."""
        answer = self.command(command).strip()
        if answer and answer not in accepted:
            raise TargetError(f"HAProxy refused `{command}`: {answer}")
        return answer

    def reachable(self) -> bool:
        try:
            return "Name:" in self.command("show info")
        except TargetError:
            return False

    def show_stat(self, backend: str | None = None) -> list[ServerStat]:
        """Servers' stats, of one backend or of all."""
        answer = self.command(f"show stat {backend or '-1'} 4 -1")
        if answer.strip().startswith("No such"):
            raise TargetError(f"HAProxy has no backend {backend}: {answer.strip()}")
        return server_stats(answer)

    def servers_state(self, backend: str | None = None) -> list[ServerState]:
        answer = self.command(f"show servers state {backend or ''}".strip())
        if "Can't find backend" in answer or answer.strip().startswith("No such"):
            raise TargetError(f"HAProxy has no backend {backend}: {answer.strip()}")
        return parse_servers_state(answer)

    def backends(self) -> list[str]:
        answer = self.command("show backend")
        return [line.strip() for line in answer.splitlines() if line.strip() and not line.startswith("#")]

    def add_server(self, backend: str, server: str, address: str, port: int, options: str) -> None:
        """Add a server in maintenance with weight 0, its health check enabled and starting DOWN,
        then make it ready: it is checked, and takes no traffic until weighted and seen healthy."""
        self._expect(
            f"add server {backend}/{server} {address}:{port} weight 0 {options}",
            "New server registered.",
        )
        self._expect(f"enable health {backend}/{server}")
        self.set_state(backend, server, "ready")
        self.set_health(backend, server, "down")

    def set_address(self, backend: str, server: str, address: str, port: int) -> None:
        answer = self.command(f"set server {backend}/{server} addr {address} port {port}").strip()
        if answer and not answer.startswith(("IP changed", "no need to change", "port changed")):
            raise TargetError(f"HAProxy refused to move {backend}/{server} to {address}:{port}: {answer}")

    def set_weight(self, backend: str, server: str, weight: int) -> None:
        if not 0 <= weight <= MAX_WEIGHT:
            raise TargetError(f"an HAProxy weight is between 0 and {MAX_WEIGHT}, not {weight}")
        self._expect(f"set server {backend}/{server} weight {weight}")

    def set_state(self, backend: str, server: str, state: str) -> None:
        if state not in ("ready", "drain", "maint"):
            raise TargetError(f"unknown server state {state!r}")
        self._expect(f"set server {backend}/{server} state {state}")

    def set_health(self, backend: str, server: str, health: str) -> None:
        """Force a server's health state (`down`: it must pass `rise` checks to take traffic)."""
        if health not in ("up", "stopping", "down"):
            raise TargetError(f"unknown server health {health!r}")
        self._expect(f"set server {backend}/{server} health {health}")

    def del_server(self, backend: str, server: str) -> None:
        self._expect(f"del server {backend}/{server}", "Server deleted.")


# --- traffic -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRecord:
    """One request as HAProxy logged it with LOG_FORMAT."""

    backend: str
    server: str
    status: int
    response_ms: int
    """Tr: time for the server to send its response headers (-1 when it sent none)."""
    active_ms: int
    """Ta: the request's active time, first request byte to last response byte."""
    request_ms: int
    retries: int
    termination: str


def parse_log_line(line: str | bytes) -> LogRecord | None:
    """A LOG_FORMAT line (raw, or behind a syslog header) as a record; None for anything else."""
    if isinstance(line, bytes):
        line = line.decode(errors="replace")
    at = 0 if line.startswith(LOG_TAG + " ") else line.find(" " + LOG_TAG + " ") + 1
    if at <= 0 and not line.startswith(LOG_TAG + " "):
        return None
    fields = line[at:].split()
    if len(fields) < 9:
        return None
    try:
        return LogRecord(
            backend=fields[1],
            server=fields[2],
            status=int(fields[3]),
            response_ms=int(fields[4]),
            active_ms=int(fields[5].lstrip("+")),
            request_ms=int(fields[6]),
            retries=int(fields[7].lstrip("+")),
            termination=fields[8],
        )
    except ValueError:
        return None


class _Counter:
    __slots__ = ("buckets", "errors", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.buckets = [0] * len(LATENCY_BUCKETS_MS)

    def add(self, record: LogRecord, times: int = 1) -> None:
        self.requests += times
        if record.status >= 500:
            self.errors += times
        self.buckets[bucket_index(max(record.active_ms, 0))] += times

    def copy(self) -> _Counter:
        twin = _Counter()
        twin.requests, twin.errors, twin.buckets = self.requests, self.errors, list(self.buckets)
        return twin


class LogCounts:
    """Cumulative request, 5xx and latency-histogram counts per (backend, server), as read from the
    request log up to one point of it."""

    def __init__(self, counters: dict[tuple[str, str], _Counter] | None = None) -> None:
        self._counters = counters if counters is not None else {}

    def add(self, records: Iterable[tuple[LogRecord, int]]) -> None:
        """Count each record as many times as it says."""
        for record, times in records:
            counter = self._counters.get((record.backend, record.server))
            if counter is None:
                counter = self._counters[(record.backend, record.server)] = _Counter()
            counter.add(record, times)

    def copy(self) -> LogCounts:
        return LogCounts({key: counter.copy() for key, counter in self._counters.items()})

    def sample(self, backend: str, servers: Sequence[str] | None = None) -> Sample:
        """The counts of `servers` of `backend` (of all its servers when None)."""
        return _sum(
            counter
            for (be, server), counter in self._counters.items()
            if be == backend and (servers is None or server in servers)
        )

    def sample_version(self, backend: str, version: str) -> Sample:
        """The counts of every server of `version` in `backend`, removed ones included."""
        return _sum(
            counter
            for (be, server), counter in self._counters.items()
            if be == backend and (parse_server_name(server) or ("", 0))[0] == version
        )

    def servers(self) -> list[tuple[str, str]]:
        return sorted(self._counters)


def _sum(counters: Iterable[_Counter]) -> Sample:
    requests = errors = 0
    buckets = [0] * len(LATENCY_BUCKETS_MS)
    for counter in counters:
        requests += counter.requests
        errors += counter.errors
        for i, count in enumerate(counter.buckets):
            buckets[i] += count
    return Sample(requests, errors, tuple(buckets))


_DROPPED = re.compile(r"(\d+) events dropped")
"""What HAProxy writes into a ring, once it has room again, after dropping lines for want of it."""
_MARK = re.compile(rf"{MARK_TAG} /(?P<nonce>[0-9a-f]+)/(?P<token>[0-9]+)")
_HEARTBEAT_TOKEN = 0
_RECONNECT_S = 0.05
_HEARTBEAT_S = 10.0
"""A marker is logged after this long without a line: HAProxy closes a CLI connection that has
made no progress for its `stats timeout` (30 s), and a reconnection could miss lines."""
_MARK_RETRY_S = 0.2
_READ_EVERY_S = 0.05
"""The reader takes what the ring holds at most this often. Woken for every line, a Python reader
spends more on wake-ups than on counting: under 7k req/s it took a tenth of a core from the apps it
measures. The ring holds seconds of lines, and a flush waits for one more read at most."""
FLUSH_TIMEOUT_S = 5.0


class TrafficSampler:
    """Follows HAProxy's request log in a background thread and keeps cumulative counts per
    (backend, server) (`LogCounts`, in memory only).

    The thread reads the log ring over the admin socket (`show events <ring> -w -n`: the lines
    written from then on, as they are written) and connects again when the connection ends, as it
    does when HAProxy restarts. Every sampler connected gets every line: a new controller's reader
    takes nothing from an old one's.

    `flush` logs a marker (a request to the marker frontend, `paths.marker_socket`, whose line
    carries this sampler's nonce and a token) and waits for its line: the ring keeps lines in the
    order they were written, so every line written before the marker has been read then, and the
    counts are taken at the marker's line. A flush that cannot see its marker (the reader fell too
    far behind, HAProxy is restarting) gives up after `FLUSH_TIMEOUT_S`, and the reader counts no
    more lines until it reads a later marker: lines that arrive late must not count in the next
    window, where they would hide lines lost from it. Giving up only ever costs lines, which the
    analysis sees as loss.
    """

    def __init__(self, paths: ProxyPaths) -> None:
        self.paths = paths
        self._counts = LogCounts()
        self._lock = threading.Lock()
        """Guards `_counts`."""
        self._reading = threading.Lock()
        """Held while a chunk of the log is received and counted."""
        self._marks = threading.Condition()
        """Guards the marker state below; notified when an awaited marker is read."""
        self._nonce = secrets.token_hex(8)
        self._tokens = itertools.count(1)
        self._awaited: int | None = None
        self._reached: LogCounts | None = None
        self._discard_until = 0
        self._flushing = threading.Lock()
        self._tried = threading.Event()
        self._attached = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.unparsed = 0
        self.dropped = 0
        """Lines HAProxy said it dropped (its ring was full: this reader fell behind)."""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Follow the log. When HAProxy runs, returns once every line it writes from now on will be
        counted; when it does not, the reader attaches when it starts (`flush` then to be sure)."""
        if self.running:
            return
        self._stop.clear()
        self._tried.clear()
        self._thread = threading.Thread(target=self._run, name="shipyard-haproxy-log", daemon=True)
        self._thread.start()
        if self._tried.wait(FLUSH_TIMEOUT_S) and self._attached:
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            sock = self._attach()
            self._attached = sock is not None
            self._tried.set()
            if sock is None:
                self._stop.wait(_RECONNECT_S)
                continue
            with sock:
                self._follow(sock)
            self._attached = False

    def _attach(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.paths.admin_socket))
            sock.sendall(f"show events {LOG_RING} -w -n\n".encode())
        except OSError:
            sock.close()
            return None
        return sock

    def _follow(self, sock: socket.socket) -> None:
        """Count the lines of one connection until it ends (or the sampler stops)."""
        partial = b""
        last = time.monotonic()
        while not self._stop.is_set():
            if not select.select([sock], [], [], 0.2)[0]:
                if time.monotonic() - last > _HEARTBEAT_S:
                    self._mark(_HEARTBEAT_TOKEN)
                    last = time.monotonic()
                continue
            last = time.monotonic()
            with self._reading:
                try:
                    data = sock.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                complete, newline, partial = (partial + data).rpartition(b"\n")
                if newline:
                    self._feed_block(complete)
            if len(data) < 1 << 20:  # caught up: let lines gather before the next read
                self._stop.wait(max(0.0, last + _READ_EVERY_S - time.monotonic()))

    def _mark(self, token: int) -> bool:
        """Have HAProxy log this sampler's marker `token`; whether it answered."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.paths.marker_socket))
                sock.sendall(f"GET /{self._nonce}/{token} HTTP/1.0\r\n\r\n".encode())
                while sock.recv(4096):
                    pass
        except OSError:
            return False
        return True

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> LogCounts:
        """The counts with every line HAProxy wrote before this call: a request whose end a `show
        stat` read before the call counted has its line counted in them. See the class."""
        if not self.running:
            return self.counts()
        with self._flushing:
            token = next(self._tokens)
            with self._marks:  # any marker from this one on was logged after the call
                self._awaited, self._reached = token, None
            deadline = time.monotonic() + timeout_s
            while True:
                self._mark(token)
                with self._marks:
                    wait_s = min(_MARK_RETRY_S, max(0.0, deadline - time.monotonic()))
                    if self._marks.wait_for(lambda: self._reached is not None, wait_s):
                        reached, self._awaited, self._reached = self._reached, None, None
                        assert reached is not None
                        return reached
                if time.monotonic() >= deadline:
                    break
                token = next(self._tokens)  # another: a marker logged while the ring was full is lost
            with self._reading, self._marks:  # no chunk is being counted meanwhile
                self._awaited = None
                self._discard_until = token
                counts = self.counts()
        self._check_ring()
        return counts

    def _check_ring(self) -> None:
        """Name the cause when HAProxy runs without the log ring (started by an older shipyard)."""
        # Only the question is allowed to fail (an HAProxy that cannot say has other troubles,
        # reported where they happen); the answer "no ring" must reach the caller.
        try:
            sinks = HAProxyClient(self.paths.admin_socket).command("show events")
        except TargetError:
            return
        if f" {LOG_RING} :" not in sinks:
            raise TargetError(
                f"HAProxy on {self.paths.admin_socket} has no request-log ring {LOG_RING!r}: it was "
                "started with an older configuration. Stop it (its pid is in "
                f"{self.paths.pid_file}); the next shipyard command starts it again with the "
                "current configuration and adds the running instances back"
            )

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Stop reading the log while inside: what a controller that falls behind looks like
        (HAProxy keeps the unread lines in its ring and drops new ones once it is full)."""
        with self._reading:
            yield

    def feed(self, *lines: str | bytes) -> None:
        """Count logged requests (one per line) and read markers, in the log's order."""
        self._feed_block(b"\n".join(line.encode() if isinstance(line, str) else line for line in lines))

    def _feed_block(self, block: bytes) -> None:
        """`feed` for lines joined by newlines: split at this sampler's markers, which are read in
        the log's order, each after the lines before it are counted."""
        needle = f"{MARK_TAG} /{self._nonce}/".encode()
        start = 0
        at = block.find(needle)
        while at >= 0:
            line_start = block.rfind(b"\n", 0, at) + 1
            line_end = block.find(b"\n", at)
            line_end = len(block) if line_end < 0 else line_end
            token = self._own_mark(block[line_start:line_end])
            if token is not None:
                self._count_lines(block[start:line_start])
                self._read_mark(token)
                start = line_end + 1
            at = block.find(needle, line_end)
        self._count_lines(block[start:])

    def _own_mark(self, raw: bytes) -> int | None:
        """The token of this sampler's marker line `raw` (None: another line, or a heartbeat)."""
        mark = _MARK.fullmatch(raw.decode(errors="replace").strip())
        if mark is None or mark["nonce"] != self._nonce or int(mark["token"]) == _HEARTBEAT_TOKEN:
            return None
        return int(mark["token"])

    def _count_lines(self, block: bytes) -> None:
        """Count the requests, drop notices and unparsed lines of `block` (no marker of ours in it).

        A busy log repeats the same few lines (same backend, server, status and times) thousands
        of times a second, so each distinct line is parsed once and counted as often as it occurs:
        parsing every line took 10-20 us each, most of a core at 40k requests a second, taken
        from the HAProxy and the apps being measured."""
        if not block:
            return
        records: list[tuple[LogRecord, int]] = []
        for raw, times in collections.Counter(block.split(b"\n")).items():
            line = raw.decode(errors="replace")
            record = parse_log_line(line)
            if record is not None:
                if self._discard_until == 0:
                    records.append((record, times))
            elif _MARK.fullmatch(line.strip()):
                pass  # another sampler's marker, or a heartbeat
            elif dropped := _DROPPED.fullmatch(line.strip()):
                self.dropped += int(dropped[1]) * times
            elif line.strip():
                self.unparsed += times
        if records:
            with self._lock:
                self._counts.add(records)

    def _read_mark(self, token: int) -> None:
        with self._marks:
            if token >= self._discard_until:
                self._discard_until = 0
            if self._awaited is not None and token >= self._awaited and self._reached is None:
                self._reached = self.counts()
                self._marks.notify_all()

    def counts(self) -> LogCounts:
        """The counts now (a copy)."""
        with self._lock:
            return self._counts.copy()


# --- weights -------------------------------------------------------------------------------------


def server_weights(shares: Mapping[str, int], servers: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """HAProxy weights (0-256 per server) that give each version its share of requests.

    A version's percentage is divided evenly among its servers, and every weight is scaled so the
    largest per-server share gets MAX_WEIGHT (the finest resolution HAProxy allows). A version with
    a positive share always gets at least weight 1 per server; a version at 0 % gets 0 (no new
    requests; in-flight ones finish). Versions in `servers` but not in `shares` get 0.
    """
    for version, share in shares.items():
        if share < 0:
            raise TargetError(f"a weight cannot be negative ({version}: {share})")
        if share > 0 and not servers.get(version):
            raise TargetError(f"version {version} has no instances to send {share}% of the traffic to")
    if shares and sum(shares.values()) != 100:
        raise TargetError(f"weights must sum to 100, not {sum(shares.values())}: {dict(shares)}")
    per_server = {v: shares.get(v, 0) / len(names) for v, names in servers.items() if names}
    top = max(per_server.values(), default=0)
    weights: dict[str, int] = {}
    for version, names in servers.items():
        each = per_server.get(version, 0.0)
        weight = 0 if each == 0 else max(1, round(each * MAX_WEIGHT / top))
        for name in names:
            weights[name] = weight
    return weights


def version_percentages(weights: Mapping[str, int], servers: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """The inverse of server_weights: each version's share of the total weight, in whole percent
    (largest remainders, so the shares sum to 100 when any server has weight)."""
    totals = {v: sum(weights.get(name, 0) for name in names) for v, names in servers.items()}
    grand = sum(totals.values())
    if grand == 0:
        return dict.fromkeys(servers, 0)
    exact = {v: total * 100 / grand for v, total in totals.items()}
    result = {v: int(share) for v, share in exact.items()}
    missing = 100 - sum(result.values())
    for version in sorted(exact, key=lambda v: exact[v] - result[v], reverse=True)[:missing]:
        result[version] += 1
    return result
