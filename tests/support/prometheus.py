"""A real Prometheus (Debian's `/usr/bin/prometheus`) scraping a tiny exporter, both on loopback.

    with metrics_exporter() as exporter, prometheus_server([exporter.address]) as prometheus:
        exporter.set("queue_depth", {"version": "v2"}, 250)
        prometheus.wait_for('queue_depth{version="v2"} == 250')
        ...                                     # prometheus.url for the HTTP API

Prometheus scrapes every second, in a temp dir on a free port, and is stopped (and its dir
removed) at the end. The exporter serves `/metrics` in the text format from values a test sets.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from support.servers import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


class MetricsExporter:
    """Gauges a test sets, served at `/metrics` on loopback (in the Prometheus text format)."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def set(self, name: str, labels: dict[str, str], value: float) -> None:
        with self._lock:
            self._values[(name, tuple(sorted(labels.items())))] = value

    def render(self) -> str:
        with self._lock:
            items = sorted(self._values.items())
        lines: list[str] = []
        for name in sorted({name for (name, _), _ in items}):
            lines.append(f"# TYPE {name} gauge")
            for (metric, labels), value in items:
                if metric == name:
                    selector = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{selector}}} {value!r}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def metrics_exporter() -> Iterator[MetricsExporter]:
    exporter = MetricsExporter()
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.stop()


@dataclass(frozen=True)
class Prometheus:
    url: str
    directory: Path

    def query(self, promql: str) -> list[dict[str, object]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        result: list[dict[str, object]] = response.json()["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout_s: float = 60) -> None:
        """Until `promql` returns a sample (e.g. once a scrape saw a value the test set)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.query(promql):
                return
            time.sleep(0.1)
        raise AssertionError(f"Prometheus never returned a sample for {promql} in {timeout_s:g} s")


@contextlib.contextmanager
def prometheus_server(targets: list[str]) -> Iterator[Prometheus]:
    """A throwaway Prometheus scraping `targets` (host:port) every second, on a free loopback port."""
    if not Path(PROMETHEUS).exists():
        raise RuntimeError(
            "Prometheus is not installed; run `make install` (it installs Debian's prometheus)"
        )
    directory = Path(tempfile.mkdtemp(prefix="shipyard-prometheus-"))
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: test\n    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (directory / "log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prometheus did not start: {(directory / 'log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield Prometheus(url, directory)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
