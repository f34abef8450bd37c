"""`shipyard serve` as the tests run it: a real server process in its own session, its log in a
file, ready once `/readyz` answers 200, and stopped as an operator would (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from shipyard.host import free_port
from support.backup_stack import SHIPYARD

READY_S = 90.0


def start_serve(
    args: Sequence[str],
    *,
    port: int,
    log: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start `shipyard serve --port PORT ARGS` (after `prefix`, a command that execs it, such as
    `unshare`). Its output goes to `log`: a pipe nobody reads would stall the server once full
    (every request writes an access line)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*prefix, SHIPYARD, "serve", "--port", str(port), *args],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float = READY_S) -> None:
    """Return once `url`/readyz answers 200; fail with the server's log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise AssertionError(f"shipyard serve exited {server.returncode}: {log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"shipyard serve did not become ready: {log.read_text()[-4000:]}")
        time.sleep(0.1)


def stop_serve(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's session (a graceful stop), SIGKILL if it has not ended in 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(5)


@contextlib.contextmanager
def serving(
    args: Sequence[str], *, log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`shipyard serve ARGS` on a free loopback port, ready; its URL. Stopped afterwards."""
    port = free_port()
    server = start_serve(args, port=port, log=log, cwd=cwd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, server, log)
        yield url
    finally:
        stop_serve(server)
