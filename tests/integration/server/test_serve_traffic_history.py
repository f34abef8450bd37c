"""`shipyard serve -f spec` records its web services' traffic from HAProxy; with HAProxy not there
it says so once, in one log line naming HAProxy and its admin socket, with no traceback, serves as
usual, and stops at once on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from shipyard.rollout.targets.haproxy import ProxyPaths
from support.serve import start_serve, stop_serve, wait_ready
from support.servers import free_port

SPEC = """\
name: shop
services:
  web: {role: web, run: "exec python3 -m http.server 8080", port: 8080}
environments:
  test: {}
"""


def test_serve_with_haproxy_down_says_so_once_and_stops_cleanly(tmp_path: Path) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(SPEC)
    state = tmp_path / "state"
    log = tmp_path / "serve.log"
    port = free_port()
    env = {
        **os.environ,
        "SHIPYARD_STATE_DIR": str(state),
        "SHIPYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "SHIPYARD_LOG_FORMAT": "json",
    }
    server = start_serve(["-f", str(spec), "-e", "test"], port=port, log=log, cwd=tmp_path, env=env)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, log)
        socket = ProxyPaths(
            state / "local" / "shop-test" / "proxy"
        ).admin_socket  # where the local target has it
        deadline = time.monotonic() + 30
        while str(socket) not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop_serve(server)
    assert server.returncode == -signal.SIGTERM  # uvicorn ends as the signal asked, after its shutdown
    text = log.read_text()
    assert "Traceback" not in text
    assert "Application shutdown complete" in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    about = [r for r in records if "traffic history" in r.get("message", "")]
    assert len(about) == 1, about
    (line,) = about
    assert line["level"] in ("WARNING", "warning")
    assert "HAProxy" in line["message"]
    assert str(socket) in line["message"]
