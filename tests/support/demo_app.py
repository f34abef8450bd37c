"""The demo app (examples/demo-app) in tests: its command, its specs, and a running copy.

    with running_demo_app("v2", error_rate=0.2) as app:    # a plain subprocess, no supervisor
        httpx.get(app.url)
    spec = demo_spec("api-v2-0", "v2", added_latency_ms=500)   # for Supervisor.start
    wait_http(f"http://127.0.0.1:{port}/healthz")

Behaviour keywords are the app's environment variables in lower case (error_rate, added_latency_ms,
fail_health, startup_delay_s, ignore_sigterm, error_seed, access_log).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shipyard.host import free_port
from shipyard.rollout.targets._processes import InstanceSpec

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "examples" / "demo-app"
APP = DEMO_DIR / "app.py"
MIGRATE = DEMO_DIR / "migrate.py"


def demo_command() -> str:
    """The demo app's `run` command, as a service in a spec would give it."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(APP))}"


def migrate_command() -> str:
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(MIGRATE))}"


def demo_env(version: str = "v1", **behaviour: object) -> dict[str, str]:
    """VERSION plus the behaviour keywords as the app's environment variables."""
    env = {"VERSION": version}
    for key, value in behaviour.items():
        env[key.upper()] = ("1" if value else "0") if isinstance(value, bool) else str(value)
    return env


def demo_spec(
    name: str,
    version: str = "v1",
    *,
    port: int | None = None,
    grace_s: float = 10.0,
    workdir: Path = DEMO_DIR,
    **behaviour: object,
) -> InstanceSpec:
    return InstanceSpec(
        name=name,
        command=demo_command(),
        port=port or free_port(),
        env=demo_env(version, **behaviour),
        workdir=workdir,
        grace_s=grace_s,
    )


def requests_waiting(pid: int) -> int:
    """How many requests the demo app (process `pid`, or a process under it) holds in its added
    latency: its threads in a timed sleep. Its other threads wait in sigwait, poll, recv or on a
    condition, never in one, so this tells a request in flight without timing anything."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree = {pid}
    while grown := {p for p, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    waiting = 0
    for member in tree:
        for wchan in Path(f"/proc/{member}/task").glob("*/wchan"):
            try:
                waiting += "nanosleep" in wchan.read_text()
            except OSError:
                continue
    return waiting


def wait_http(url: str, timeout_s: float = 30.0) -> httpx.Response:
    """Poll `url` until it answers at all (any status); the answer. Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError as e:
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g}s: {last!r}")


@dataclass(frozen=True)
class DemoApp:
    port: int
    process: subprocess.Popen[bytes]
    version: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (a graceful drain); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


@contextlib.contextmanager
def running_demo_app(
    version: str = "v1", *, port: int | None = None, wait: bool = True, **behaviour: object
) -> Iterator[DemoApp]:
    """The demo app as a plain child process, answering on a free port (unless `wait=False`)."""
    port = port or free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PORT": str(port),
        **demo_env(version, **behaviour),
    }
    process = subprocess.Popen([sys.executable, str(APP)], env=env, cwd=DEMO_DIR)
    app = DemoApp(port, process, version)
    try:
        if wait:
            wait_http(f"{app.url}healthz")
        yield app
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
