"""A real HAProxy and the demo app for the local target's tests, on free loopback ports.

    with running_haproxy(stack) as proxy:        # rendered config, validated, started, stopped
        proxy.client.show_stat()

    with local_target(environ) as (target, port):   # a LocalTarget over a temp state dir
        target.prepare("web", "v1", 2)
        ...                                          # every instance and HAProxy stopped at the end

The demo stack's env reads ${env:DEMO_*} from `environ`, so a test gives one version a slow or
failing behaviour by changing `environ` before preparing it.
"""

from __future__ import annotations

import contextlib
import http.client
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from shipyard.rollout.targets.haproxy import (
    LOG_RING_BYTES,
    HAProxyClient,
    ProxyPaths,
    check_config,
    render_haproxy_config,
    start_haproxy,
    stop_haproxy,
)
from shipyard.rollout.targets.local import LocalTarget
from shipyard.spec import Health, Probe, Service, Stack
from support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "examples" / "demo-app"
DEMO_APP = DEMO_DIR / "app.py"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


def demo_environ(**overrides: str) -> dict[str, str]:
    """What the demo stack's ${env:…} references resolve from (no behaviour injected by default)."""
    return {"DEMO_FAIL_HEALTH": "", "DEMO_LATENCY_MS": "0", "DEMO_ERROR_RATE": "0", **overrides}


def demo_stack(port: int, *, drain_s: int = 10, name: str = "demo") -> Stack:
    """One web service running the demo app, health-checked every second."""
    return Stack(
        name=name,
        services={
            "web": Service(
                role="web",
                run=f"exec {shlex.quote(sys.executable)} {shlex.quote(str(DEMO_APP))}",
                port=port,
                health=Health(readiness=Probe(path="/healthz", period=1, timeout=1, failure_threshold=1)),
                env={
                    "FAIL_HEALTH": "${env:DEMO_FAIL_HEALTH}",
                    "ADDED_LATENCY_MS": "${env:DEMO_LATENCY_MS}",
                    "ERROR_RATE": "${env:DEMO_ERROR_RATE}",
                },
                migration=[sys.executable, str(DEMO_DIR / "migrate.py")],
                drain=drain_s,
            )
        },
    )


@dataclass(frozen=True)
class RunningProxy:
    paths: ProxyPaths
    client: HAProxyClient
    ports: dict[str, int]


@contextlib.contextmanager
def running_haproxy(stack: Stack) -> Iterator[RunningProxy]:
    """HAProxy with `stack`'s rendered config, each frontend on a free port, in a temp dir."""
    if HAPROXY is None:
        raise RuntimeError("HAProxy is not installed; run `make install` (it installs Debian's haproxy)")
    directory = Path(tempfile.mkdtemp(prefix="sy-haproxy-"))
    paths = ProxyPaths(directory)
    ports = {name: free_port() for name, svc in stack.services.items() if svc.role != "worker"}
    try:
        paths.config.write_text(render_haproxy_config(stack, directory, ports=ports))
        check_config(paths.config, HAPROXY)
        start_haproxy(paths, HAPROXY)
        yield RunningProxy(paths, HAProxyClient(paths.admin_socket), ports)
    finally:
        stop_haproxy(paths)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def local_target(
    environ: MutableMapping[str, str], *, drain_s: int = 10, log_ring_bytes: int = LOG_RING_BYTES
) -> Iterator[tuple[LocalTarget, int, Path]]:
    """A LocalTarget over a fresh state dir (short path: UNIX sockets live there), torn down after;
    `log_ring_bytes` smaller than the default makes a reader that pauses lose lines soon."""
    if HAPROXY is None:
        raise RuntimeError("HAProxy is not installed; run `make install` (it installs Debian's haproxy)")
    state = Path(tempfile.mkdtemp(prefix="sy-local-"))
    port = free_port()
    target = LocalTarget(
        demo_stack(port, drain_s=drain_s),
        state,
        HAPROXY,
        workdir=DEMO_DIR,
        environ=environ,
        log_ring_bytes=log_ring_bytes,
    )
    try:
        yield target, port, state
    finally:
        target.destroy()
        shutil.rmtree(state, ignore_errors=True)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def get_versions(port: int, count: int, path: str = "/") -> list[tuple[int, str | None]]:
    """`count` sequential GETs over one keep-alive connection: (status, X-Version) of each."""
    results = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(count):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            results.append((response.status, response.getheader("X-Version")))
    finally:
        conn.close()
    return results
