#!/usr/bin/env python3
"""Benchmark releases on this machine: throughput and latency of whole releases, and steering.

Closed-loop keep-alive load from wrk (Debian's; `--connections`, default 64) on the demo app
(examples/demo-app), two instances per version, on loopback. In one run:

1. per release kind (blue-green, canary), through shipyard: a stack deployed by the `shipyard`
   CLI (the local target: real HAProxy, real processes, the real controller), v1 live. First the
   app **direct** (wrk on v1's own two instances, the connections split between them), then wrk
   on HAProxy's frontend while `shipyard deploy web --version v2` runs the whole release.
2. the same for **seed 003's method**: nginx (Debian's) in front of v1's instances
   (bench/nginx_seed003.conf); v2's instances started and health-checked, the upstream file
   rewritten and `nginx -s reload` run (blue-green: once, to v2; canary: 10 %, 50 %, 100 %, held
   as long as the shipyard canary's steps), then v1 stopped, as seed 003's script does.
3. **promote to weight**: canary releases held in a long analysis step with the spec's default
   analysis cadence, under the same load; a promote is asked for, in turn, by `shipyard rollout
   promote web` (a new process) and by `POST /rollouts/web/promote` to a running `shipyard serve`
   (the dashboard's button), and HAProxy's weights are read over its runtime API until the
   candidate has them all.
4. a **bad canary** (v2 answers 20 % errors) under open-loop load, as before: time from its first
   failed request to full rollback, and whether every failure came from the canary.

The load runs as back-to-back wrk runs of `--chunk` seconds, so the request rate, errors and p99
are known per chunk: a throughput that decays during a release shows in `rps_series`.

The app's cost per request decides what a proxy's share can be: `--work-us N` makes every request
burn N µs of CPU in the app (the demo app's WORK_US). The null app (0, the default) answers tens of
thousands of requests a second, so HAProxy's own work per request is as large as the app's, and
wrk, the proxy, the controller and the apps share this machine's cores: no proxy reaches 85 % of the
direct rate there (nginx neither, measured in the same run). `make bench` runs 0, 100 and 200 µs;
results for N > 0 go to rollout_work_<N>us.json.

Usage: .venv/bin/python bench/rollout_bench.py [--work-us 0] [--before 5] [--after 5] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import httpx  # noqa: E402
from sqlalchemy import select  # noqa: E402

from shipyard.host import free_port  # noqa: E402
from shipyard.rollout._loadgen import LoadGenerator  # noqa: E402
from shipyard.rollout.targets._processes import InstanceSpec, Supervisor  # noqa: E402
from shipyard.rollout.targets.haproxy import (  # noqa: E402
    HAProxyClient,
    ServerState,
    backend_name,
    parse_server_name,
    parse_show_stat,
)
from shipyard.state import RolloutCommandRow  # noqa: E402
from shipyard.tokens import create_token  # noqa: E402
from support.demo_app import DEMO_DIR, demo_command  # noqa: E402
from support.releases import ReleaseStack, release_stack  # noqa: E402
from support.serve import serving  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "rollout.json"
NGINX_CONF = ROOT / "bench" / "nginx_seed003.conf"
BACKEND = backend_name("web")
REPLICAS = 2  # instances per version, as tests/support/releases.py deploys them
CANARY_STEPS = ((10, 3.0), (50, 2.0), (100, 0.0))
"""(candidate %, seconds held): the steps of release_stack's default canary, for nginx's canary."""
DEFAULT_CADENCE = "{interval: 2s, window: 10s,"
"""The spec's default analysis interval and window (release_stack's spec shortens them)."""

WRK_REPORT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d,'
    .. ' "timeout": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(99)))
end
"""


WRK_ERRORS = ("connect", "read", "write", "status", "timeout")


def _mono(moment: dt.datetime) -> float:
    """A time stored by the controller (wall clock, UTC) on this process's monotonic clock."""
    wall = moment.replace(tzinfo=moment.tzinfo or dt.UTC).timestamp()
    return time.monotonic() - (time.time() - wall)


# --- load ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One back-to-back wrk run (or several at once, one per URL)."""

    start: float
    end: float
    requests: int
    errors: dict[str, int]
    """wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx answers (status)."""
    p99_ms: float
    """The highest of the runs' p99s."""

    @property
    def rps(self) -> float:
        return self.requests / (self.end - self.start)


def _wrk(urls: Sequence[str], connections: int, threads: int, seconds: int, script: Path) -> Chunk:
    """wrk on every URL at once, the connections split between them."""
    each = max(1, connections // len(urls))
    start = time.monotonic()
    runs = [
        subprocess.Popen(
            [
                "wrk",
                f"-t{max(1, threads // len(urls))}",
                f"-c{each}",
                f"-d{seconds}s",
                "-s",
                str(script),
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url in urls
    ]
    reports = []
    for run in runs:
        out, _ = run.communicate(timeout=seconds + 60)
        line = next((line for line in out.splitlines() if line.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no report:\n{out}")
        reports.append(json.loads(line))
    end = time.monotonic()
    return Chunk(
        start=start,
        end=end,
        requests=sum(r["requests"] for r in reports),
        errors={kind: sum(r[kind] for r in reports) for kind in WRK_ERRORS},
        p99_ms=max(r["p99_us"] for r in reports) / 1000,
    )


@dataclass
class Load:
    """wrk runs back to back on `urls` in a thread, from `start()` until `stop()`."""

    urls: Sequence[str]
    connections: int
    threads: int
    chunk_s: int
    script: Path
    chunks: list[Chunk] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _failure: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.chunks.append(_wrk(self.urls, self.connections, self.threads, self.chunk_s, self.script))
        except BaseException as e:  # reported by stop(), in the caller's thread
            self._failure = e

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="wrk", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Chunk]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._failure is not None:
            raise RuntimeError("the load failed") from self._failure
        return self.chunks

    def wait_chunks(self, count: int) -> None:
        """Until `count` chunks are done (so a phase is measured whole, not cut mid-chunk)."""
        while len(self.chunks) < count and self._failure is None:
            time.sleep(0.05)


@contextlib.contextmanager
def loaded(args: argparse.Namespace, urls: Sequence[str]) -> Iterator[Load]:
    load = Load(urls, args.connections, args.threads, args.chunk, args.script).start()
    try:
        yield load
    finally:
        load.stop()


def _app_env(args: argparse.Namespace) -> dict[str, str]:
    """The demo app's CPU per request (WORK_US): 0 is an app that does nothing, where a proxy's own
    cost is as large as the app's."""
    return {"WORK_US": str(args.work_us)}


def direct_rps(args: argparse.Namespace, ports: Sequence[int]) -> float:
    """The app's own rate: wrk straight on `ports` (the instances a proxy would balance over)."""
    urls = [f"http://127.0.0.1:{port}/" for port in ports]
    _wrk(urls, args.connections, args.threads, 1, args.script)  # warm-up
    chunks = [_wrk(urls, args.connections, args.threads, args.chunk, args.script) for _ in range(args.direct)]
    return _rate(chunks)


def _rate(chunks: Sequence[Chunk]) -> float:
    busy = sum(c.end - c.start for c in chunks)
    return round(sum(c.requests for c in chunks) / busy, 1) if busy else 0.0


# --- one release, measured -----------------------------------------------------------------------


def summarize(
    chunks: Sequence[Chunk],
    began: float,
    ended: float,
    switches: Sequence[tuple[float, float]],
    direct: float,
    proxy: str,
) -> dict[str, Any]:
    """Rates, errors and p99 before, during and after a release ([began, ended]); `switches` are
    the (start, end) of each weight change."""
    before = [c for c in chunks if c.end <= began]
    during = [c for c in chunks if c.end > began and c.start < ended]
    after = [c for c in chunks if c.start >= ended]
    at_switch = [c for c in chunks if any(c.end > s and c.start < e for s, e in switches)]
    p99_before = statistics.median(c.p99_ms for c in before) if before else None
    p99_switch = max((c.p99_ms for c in at_switch), default=None)
    rate_before, rate_after = _rate(before), _rate(after)
    return {
        "direct_rps": direct,
        "rps_before": rate_before,
        "rps_during": _rate(during),
        "rps_after": rate_after,
        f"{proxy}_over_direct": round(_rate(chunks) / direct, 3) if direct else None,
        f"{proxy}_over_direct_before": round(rate_before / direct, 3) if direct else None,
        "after_over_before": round(rate_after / rate_before, 3) if rate_before else None,
        "failed_requests": sum(sum(c.errors.values()) for c in chunks),
        "failures_by_kind": {kind: sum(c.errors[kind] for c in chunks) for kind in WRK_ERRORS},
        "total_requests": sum(c.requests for c in chunks),
        "p99_ms_before": round(p99_before, 2) if p99_before is not None else None,
        "p99_ms_during_switch": round(p99_switch, 2) if p99_switch is not None else None,
        "p99_during_switch_over_before": round(p99_switch / p99_before, 2)
        if p99_switch is not None and p99_before
        else None,
        "release_seconds": round(ended - began, 2),
        "switch_offsets_s": [round(s - began, 2) for s, _ in switches],
        "rps_series": [[round(c.start - began, 1), round(c.rps)] for c in chunks],
        "p99_ms_series": [round(c.p99_ms, 2) for c in chunks],
    }


def _servers(client: HAProxyClient) -> dict[str, list[ServerState]]:
    """The web backend's servers by version."""
    by_version: dict[str, list[ServerState]] = {}
    for state in client.servers_state(BACKEND):
        named = parse_server_name(state.server)
        if named is not None:
            by_version.setdefault(named[0], []).append(state)
    return by_version


def shipyard_release(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp,
        release_stack(Path(tmp), kind, env=_app_env(args)) as stack,
    ):
        client = stack.target().client
        direct = direct_rps(args, [s.port for s in _servers(client)["v1"]])
        with loaded(args, [stack.url]) as load:
            load.wait_chunks(1)  # the first one warms HAProxy's connection pool up
            pool_before = _connections(client)
            load.wait_chunks(args.before + 1)
            began = time.monotonic()
            result = stack.cli("deploy", "web", "--version", "v2", timeout=300)
            ended = time.monotonic()
            load.wait_chunks(len(load.chunks) + args.after + 1)
            opened, reused = (now - then for now, then in zip(_connections(client), pool_before, strict=True))
        steps = stack.steps(stack.latest().id)
        switches = [
            (_mono(s.started_at), _mono(s.finished_at))
            for s in steps
            if s.action["type"] == "SetWeights" and s.started_at and s.finished_at
        ]
        summary = summarize(load.chunks[1:], began, ended, switches, direct, "haproxy")
        return {
            "outcome": stack.latest().outcome,
            "deploy_exit_code": result.returncode,
            "weights_after": _percentages(_servers(client)),
            **summary,
            "server_connections_opened": opened,
            "server_connections_reused": reused,
            "reuse_share": round(reused / (opened + reused), 4) if opened + reused else None,
        }


def _connections(client: HAProxyClient) -> tuple[int, int]:
    """The web backend's server connections so far: (opened, reused), from `show stat`."""
    row = next(
        r for r in parse_show_stat(client.command(f"show stat {BACKEND} 2 -1")) if r["svname"] == "BACKEND"
    )
    return int(row["connect"] or 0), int(row["reuse"] or 0)


def _percentages(servers: Mapping[str, list[ServerState]]) -> dict[str, int]:
    total = sum(s.weight for states in servers.values() for s in states)
    return (
        {v: round(100 * sum(s.weight for s in states) / total) for v, states in servers.items()}
        if total
        else {}
    )


# --- seed 003: nginx in front, its upstream rewritten and reloaded ---------------------------------


@dataclass
class Nginx:
    binary: str
    directory: Path
    port: int

    def _signal(self, *extra: str) -> None:
        conf = self.directory / "nginx.conf"
        subprocess.run([self.binary, "-p", str(self.directory), "-c", str(conf), *extra], check=True)

    def route(self, shares: Mapping[int, int]) -> None:
        """Send each port its share (percent) of the requests: rewrite the upstream, reload."""
        servers = "".join(
            f"    server 127.0.0.1:{port} weight={share};\n" for port, share in shares.items() if share
        )
        (self.directory / "upstream.conf").write_text(f"upstream app {{\n{servers}    keepalive 64;\n}}\n")

    def start(self) -> None:
        text = NGINX_CONF.read_text().replace("@DIR@", str(self.directory)).replace("@PORT@", str(self.port))
        (self.directory / "nginx.conf").write_text(text)
        self._signal()

    def reload(self) -> None:
        self._signal("-s", "reload")

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._signal("-s", "stop")


def _wait_healthy(port: int, timeout_s: float = 30.0) -> None:
    """What seed 003's script does before switching: the new instance's health check answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} never answered /healthz with 200")


def nginx_release(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        return {"error": "nginx is not installed (apt-get install nginx; `make bench` does)"}
    with tempfile.TemporaryDirectory(prefix=f"bench-nginx-{kind}-") as tmp:
        directory = Path(tmp)
        supervisor = Supervisor(directory / "processes")
        ports: dict[str, list[int]] = {"v1": [], "v2": []}

        def start(version: str) -> None:
            for n in range(REPLICAS):
                port = free_port()
                spec = InstanceSpec(
                    f"web-{version}-{n}",
                    demo_command(),
                    port,
                    {"VERSION": version, **_app_env(args)},
                    DEMO_DIR,
                    2.0,
                )
                supervisor.start(spec)
                ports[version].append(port)
            for port in ports[version]:
                _wait_healthy(port)

        def share(v1: int) -> dict[int, int]:
            return {**dict.fromkeys(ports["v1"], v1), **dict.fromkeys(ports["v2"], 100 - v1)}

        nginx = Nginx(binary, directory, free_port())
        try:
            start("v1")
            nginx.route(share(100))
            nginx.start()
            direct = direct_rps(args, ports["v1"])
            with loaded(args, [f"http://127.0.0.1:{nginx.port}/"]) as load:
                load.wait_chunks(args.before + 1)
                began = time.monotonic()
                start("v2")
                switches = []
                for weight, hold_s in ((100, 0.0),) if kind == "blue-green" else CANARY_STEPS:
                    switched = time.monotonic()
                    nginx.route(share(100 - weight))
                    nginx.reload()
                    switches.append((switched, time.monotonic()))
                    time.sleep(hold_s)
                for n in range(REPLICAS):
                    supervisor.stop(f"web-v1-{n}")
                ended = time.monotonic()
                load.wait_chunks(len(load.chunks) + args.after + 1)
            return summarize(load.chunks[1:], began, ended, switches, direct, "nginx")
        finally:
            nginx.stop()
            for instance in supervisor.list():
                supervisor.stop(instance.name)


# --- steering under load -------------------------------------------------------------------------


def _candidate_has_all(client: HAProxyClient, stable: str, candidate: str) -> bool:
    servers = _servers(client)
    return all(s.weight == 0 for s in servers.get(stable, [])) and any(
        s.weight > 0 for s in servers.get(candidate, [])
    )


def _wait(predicate: Any, timeout_s: float, interval_s: float = 0.002) -> float | None:
    """The monotonic time at which `predicate()` first held, or None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval_s)
    return None


Promote = Callable[[], tuple[int, str]]
"""One way to ask for a promote: (its exit code or HTTP status, its output)."""


def _promote_once(
    args: argparse.Namespace, stack: ReleaseStack, stable: str, candidate: str, via: str, promote: Promote
) -> dict[str, Any]:
    """Deploy `candidate` as a canary; once it has its first share, `promote` it; time the weights."""
    client = stack.target().client
    controller = stack.start_cli("deploy", "web", "--version", candidate)
    if _wait(lambda: any(s.weight > 0 for s in _servers(client).get(candidate, [])), 120) is None:
        controller.kill()
        raise RuntimeError(f"{candidate} never took its first share:\n{controller.communicate()[0]}")
    # Into the analysis step, so an analysis that happens to begin now does not wake it.
    time.sleep(args.promote_after)
    # HAProxy is watched from before the promote: the CLI returns only once the command is applied.
    with ThreadPoolExecutor(1) as watcher:
        watched = watcher.submit(_wait, lambda: _candidate_has_all(client, stable, candidate), 300)
        asked = time.monotonic()
        code, output = promote()
        answered = time.monotonic()
        weighted = watched.result()
    controller.communicate(timeout=300)
    # When the command was recorded: what the controller can act on. Before that, the time is the
    # CLI's own start (importing it takes seconds on this loaded machine) or the API's answer.
    with stack.sessions()() as session:
        recorded = session.scalars(
            select(RolloutCommandRow.created_at)
            .where(RolloutCommandRow.command == "promote")
            .order_by(RolloutCommandRow.id.desc())
            .limit(1)
        ).first()
    ok = code in (0, 200, 202)
    return {
        "via": via,
        "seconds_promote_to_weight": round(weighted - asked, 3) if weighted else None,
        "seconds_command_recorded_to_weight": round(weighted - _mono(recorded), 3)
        if weighted and recorded
        else None,
        "seconds_asked_to_command_recorded": round(_mono(recorded) - asked, 3) if recorded else None,
        "seconds_answered_to_weight": round(weighted - answered, 3) if weighted else None,
        "seconds_to_answer": round(answered - asked, 3),
        "promote_exit_code_or_status": code,
        "deploy_exit_code": controller.returncode,
        "outcome": stack.latest().outcome,
        "reason": stack.latest().reason,
        "promote_output": None if ok else output[-500:],
    }


def _admin_token(stack: ReleaseStack) -> str:
    with stack.sessions()() as session:
        token = create_token(session, "bench", "admin")
        session.commit()
    return token


def promote_to_weight(args: argparse.Namespace) -> dict[str, Any]:
    """A promote during a long analysis step, asked for in turn by `shipyard rollout promote` (a
    new process: Python's start and imports) and by `POST /rollouts/web/promote` to a running
    `shipyard serve` (the dashboard's button); when HAProxy's weights follow."""
    steps = "[{weight: 10}, {analysis: 120s}, {weight: 100}]"
    with (
        tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp,
        release_stack(Path(tmp), "canary", steps=steps, env=_app_env(args)) as stack,
    ):
        stack.spec.write_text(stack.spec.read_text().replace("{interval: 1s, window: 2s,", DEFAULT_CADENCE))
        serve_args = [
            "-f",
            str(stack.spec),
            "-e",
            "test",
            "--database-url",
            stack.env["SHIPYARD_DATABASE_URL"],
        ]
        with serving(serve_args, log=Path(tmp) / "serve.log", cwd=Path(tmp), env=stack.env) as api:
            headers = {"Authorization": f"Bearer {_admin_token(stack)}"}

            def by_cli() -> tuple[int, str]:
                done = stack.cli("rollout", "promote", "web")
                return done.returncode, done.stdout + done.stderr

            def by_api() -> tuple[int, str]:
                answer = httpx.post(f"{api}/rollouts/web/promote", headers=headers, json={}, timeout=60)
                return answer.status_code, answer.text

            ways = itertools.cycle((("cli", by_cli), ("api", by_api)))
            versions = ["v1", *(f"p{n + 1}" for n in range(args.promotes))]
            with loaded(args, [stack.url]):
                samples = [
                    _promote_once(args, stack, stable, new, *way)
                    for (stable, new), way in zip(itertools.pairwise(versions), ways, strict=False)
                ]
    result: dict[str, Any] = {
        "analysis": f"{DEFAULT_CADENCE.strip('{,')} (the spec's defaults), step {{analysis: 120s}}",
        "promote_seconds_into_the_step": args.promote_after,
    }
    for via in ("cli", "api"):
        mine = [s for s in samples if s["via"] == via]
        times = [s["seconds_promote_to_weight"] for s in mine if s["seconds_promote_to_weight"] is not None]
        applied = [
            s["seconds_command_recorded_to_weight"]
            for s in mine
            if s["seconds_command_recorded_to_weight"] is not None
        ]
        result[via] = {
            "median_seconds_promote_to_weight": statistics.median(times) if times else None,
            "max_seconds_promote_to_weight": max(times) if times else None,
            "median_seconds_command_recorded_to_weight": statistics.median(applied) if applied else None,
            "max_seconds_command_recorded_to_weight": max(applied) if applied else None,
        }
    result["samples"] = samples
    return result


# --- a bad canary ----------------------------------------------------------------------------------


def bad_canary(rate: int) -> dict[str, Any]:
    steps = (
        "[{weight: 10}, {analysis: 10s}, {weight: 25}, {analysis: 10s},"
        " {weight: 50}, {analysis: 10s}, {weight: 100}]"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp,
        release_stack(Path(tmp), "canary", steps=steps) as stack,
    ):
        stack.spec.write_text(stack.spec.read_text().replace("{interval: 1s, window: 2s,", DEFAULT_CADENCE))
        with LoadGenerator(stack.url, rate, connections=16) as load:
            time.sleep(2)
            result = stack.cli("deploy", "web", "--version", "bad")
            time.sleep(1)
        report = load.report
        assert report is not None
        steps_done = stack.steps(stack.latest().id)
        reset = [
            s
            for s in steps_done
            if s.action["type"] == "SetWeights" and s.action["weights"]["candidate"] == 0
        ]
        first_bad = report.first_failure_time
        rolled_back = _mono(reset[-1].finished_at) if reset and reset[-1].finished_at else None
        weights = [s.action["weights"]["candidate"] for s in steps_done if s.action["type"] == "SetWeights"]
        canary_requests = report.by_version.get("bad")
        return {
            "outcome": stack.latest().outcome,
            "reason": stack.latest().reason,
            "candidate_weights_set": weights,
            "seconds_first_bad_request_to_full_rollback": round(rolled_back - first_bad, 2)
            if rolled_back and first_bad
            else None,
            "failed_requests": report.failed,
            "total_requests": report.total,
            "canary_requests": canary_requests.count if canary_requests else 0,
            "every_failure_from_the_canary": {f.version for f in report.failures} == {"bad"},
            "deploy_exit_code": result.returncode,
        }


# --- the run -------------------------------------------------------------------------------------


GOALS = {
    "proxy_over_direct_min": 0.85,
    "failed_requests": 0,
    "p99_during_switch_over_before_max": 2.0,
    "promote_to_weight_max_s": 1.0,
}


def verdict(release: Mapping[str, Any]) -> dict[str, bool]:
    after_over_before = release.get("after_over_before")
    p99_ratio = release.get("p99_during_switch_over_before")
    return {
        "haproxy_at_least_85_percent_of_direct": (release.get("haproxy_over_direct") or 0)
        >= GOALS["proxy_over_direct_min"],
        "no_failed_request": release.get("failed_requests") == 0,
        "p99_during_switch_at_most_2x_before": p99_ratio is not None and p99_ratio <= 2.0,
        "no_decay": after_over_before is not None and after_over_before >= 0.9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--chunk", type=int, default=1, help="seconds per wrk run")
    parser.add_argument("--direct", type=int, default=5, help="chunks measured direct")
    parser.add_argument("--before", type=int, default=5, help="chunks before a release")
    parser.add_argument("--after", type=int, default=5, help="chunks after a release")
    parser.add_argument("--promotes", type=int, default=6, help="alternately by the CLI and the API")
    parser.add_argument("--promote-after", type=float, default=1.0, help="seconds into the analysis step")
    parser.add_argument("--bad-canary-rate", type=int, default=250, help="0: skip the bad canary")
    parser.add_argument("--work-us", type=int, default=0, help="CPU each app request burns (demo WORK_US)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk; `make bench` does)")
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as scripts:
        args.script = Path(scripts) / "report.lua"
        args.script.write_text(WRK_REPORT)
        releases = {kind: shipyard_release(args, kind) for kind in ("blue-green", "canary")}
        nginx = {kind: nginx_release(args, kind) for kind in ("blue-green", "canary")}
        promote = promote_to_weight(args) if args.promotes else None
    canary = bad_canary(args.bad_canary_rate) if args.bad_canary_rate else None
    result = {
        "benchmark": "whole releases under closed-loop keep-alive load on loopback: shipyard's HAProxy"
        " against the app direct and seed 003's nginx reload; promote to weight; a bad canary",
        "load": f"wrk -t{args.threads} -c{args.connections}, back-to-back runs of {args.chunk} s",
        "app": f"examples/demo-app, {REPLICAS} instances per version, WORK_US={args.work_us}",
        "app_work_us": args.work_us,
        "haproxy_over_direct": {kind: r.get("haproxy_over_direct") for kind, r in releases.items()},
        "nginx_over_direct": {kind: r.get("nginx_over_direct") for kind, r in nginx.items()},
        "goals": GOALS,
        "verdict": {
            **{kind: verdict(r) for kind, r in releases.items()},
            "promote_to_weight_under_1s": {
                via: (promote[via]["max_seconds_promote_to_weight"] or 99) < GOALS["promote_to_weight_max_s"]
                for via in ("cli", "api")
            }
            if promote
            else None,
        },
        "releases": {"shipyard": releases, "nginx_seed003": nginx},
        "promote_to_weight": promote,
        "bad_canary": canary,
        "command": "python bench/rollout_bench.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "haproxy": _version(["haproxy", "-v"]),
            "nginx": _version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
            "wrk": _version(["wrk", "-v"]),
            # other work on the machine skews every rate: a load average above the core count is a
            # busy machine, and the ratios then say less
            "load_average_1m_at_start_and_end": [round(load_at_start[0], 2), round(os.getloadavg()[0], 2)],
        },
        "note": "wrk, the proxy, the controller and the apps share this machine's cores",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        results = RESULTS if not args.work_us else RESULTS.with_name(f"rollout_work_{args.work_us}us.json")
        results.write_text(text + "\n")


def _version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else None


if __name__ == "__main__":
    main()
