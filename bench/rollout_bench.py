#!/usr/bin/env python3
"""Benchmark releases on this machine: a bad canary, a blue-green switch, and seed 003's method.

All three run the demo app (examples/demo-app) on loopback under the same open-loop keep-alive
load (`--rate`, default 250 req/s):

1. bad canary: v2 answers 20 % errors; canary steps start at 10 % with the spec's default
   analysis (2 s interval). Measured: time from the first failed request to full rollback (the
   step that puts the stable back at 100 % is done), failed requests, and whether every failure
   came from the canary.
2. blue-green through HAProxy: time from "green healthy" to every new request on green, and p99
   latency in the second around the switch against the p99 before it.
3. seed 003's script: nginx in front of v1; the upstream is rewritten to v2 and `nginx -s
   reload` run. Measured the same way (failed requests, p99 around the switch).

Usage: .venv/bin/python bench/rollout_bench.py [--rate 250] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from shipyard.host import free_port  # noqa: E402
from shipyard.rollout._loadgen import LoadGenerator, LoadReport  # noqa: E402
from shipyard.rollout.targets._processes import InstanceSpec, Supervisor  # noqa: E402
from support.demo_app import demo_command  # noqa: E402
from support.releases import release_stack  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "rollout.json"


def _mono(moment: dt.datetime) -> float:
    wall = moment.replace(tzinfo=moment.tzinfo or dt.UTC).timestamp()
    return time.monotonic() - (time.time() - wall)


def _p99(report: LoadReport, t0: float, t1: float) -> float | None:
    latencies = sorted(
        (r.end - r.scheduled) * 1000 for r in report.records if t0 <= r.scheduled < t1 and r.end
    )
    return round(latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else None


def bad_canary(rate: int) -> dict[str, Any]:
    steps = (
        "[{weight: 10}, {analysis: 10s}, {weight: 25}, {analysis: 10s},"
        " {weight: 50}, {analysis: 10s}, {weight: 100}]"
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp,
        release_stack(Path(tmp), "canary", steps=steps) as stack,
    ):
        spec = stack.spec.read_text().replace("{interval: 1s, window: 2s,", "{interval: 2s, window: 10s,")
        stack.spec.write_text(spec)  # the spec's default analysis cadence
        with LoadGenerator(stack.url, rate, connections=16) as load:
            time.sleep(2)
            result = stack.cli("deploy", "web", "--version", "bad")
            time.sleep(1)
        report = load.report
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
            "failed_share_of_all": round(report.failed / report.total, 5),
            "canary_requests": canary_requests.count if canary_requests else 0,
            "failures_by_version": sorted({str(f.version) for f in report.failures}),
            "every_failure_from_the_canary": {f.version for f in report.failures} == {"bad"},
            "deploy_exit_code": result.returncode,
        }


def blue_green(rate: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-bg-") as tmp,
        release_stack(Path(tmp), "blue-green") as stack,
    ):
        with LoadGenerator(stack.url, rate, connections=16) as load:
            time.sleep(3)
            stack.cli("deploy", "web", "--version", "v2")
            time.sleep(1)
        report = load.report
        steps = stack.steps(stack.latest().id)
        healthy = _mono(next(s for s in steps if s.action["type"] == "WaitHealthy").finished_at)
        switch = next(s for s in steps if s.action["type"] == "SetWeights")
        switch_start, switch_end = _mono(switch.started_at), _mono(switch.finished_at)
        last_old = max((r.start for r in report.records if r.version == "v1"), default=healthy)
        return {
            "seconds_green_healthy_to_all_new_requests_on_green": round(
                max(last_old, switch_end) - healthy, 3
            ),
            "seconds_switch_step": round(switch_end - switch_start, 3),
            "failed_requests": report.failed,
            "total_requests": report.total,
            "p99_ms_before_switch": _p99(report, healthy - 2, switch_start),
            "p99_ms_during_switch": _p99(report, switch_start - 0.5, switch_end + 0.5),
        }


NGINX_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    include {dir}/upstream.conf;
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""


def nginx_reload(rate: int) -> dict[str, Any]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        return {"error": "nginx is not installed (apt-get install nginx-light)"}
    with tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp:
        directory, port = Path(tmp), free_port()
        supervisor = Supervisor(directory / "processes")
        ports = {}
        for version in ("v1", "v2"):
            ports[version] = free_port()
            supervisor.start(
                InstanceSpec(
                    f"web-{version}", demo_command(), ports[version], {"VERSION": version}, directory, 2.0
                )
            )
        time.sleep(1)
        upstream = directory / "upstream.conf"
        upstream.write_text(f"upstream app {{ server 127.0.0.1:{ports['v1']}; keepalive 16; }}\n")
        (directory / "nginx.conf").write_text(NGINX_CONF.format(dir=directory, port=port))
        subprocess.run([nginx, "-p", str(directory), "-c", str(directory / "nginx.conf")], check=True)
        try:
            time.sleep(1)
            with LoadGenerator(f"http://127.0.0.1:{port}/", rate, connections=16) as load:
                time.sleep(3)
                started = time.monotonic()
                upstream.write_text(f"upstream app {{ server 127.0.0.1:{ports['v2']}; keepalive 16; }}\n")
                subprocess.run(
                    [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-s", "reload"],
                    check=True,
                )
                reloaded = time.monotonic()
                time.sleep(3)
            report = load.report
            last_old = max((r.start for r in report.records if r.version == "v1"), default=started)
            return {
                "seconds_reload_to_all_new_requests_on_v2": round(max(last_old, reloaded) - started, 3),
                "failed_requests": report.failed,
                "total_requests": report.total,
                "p99_ms_before_switch": _p99(report, started - 2, started),
                "p99_ms_during_switch": _p99(report, started - 0.5, reloaded + 0.5),
            }
        finally:
            subprocess.run(
                [nginx, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-s", "stop"], check=False
            )
            for version in ("v1", "v2"):
                supervisor.stop(f"web-{version}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    canary = [bad_canary(args.rate) for _ in range(args.repeat)]
    switch = [blue_green(args.rate) for _ in range(args.repeat)]
    nginx = [nginx_reload(args.rate) for _ in range(args.repeat)]
    times = [
        c["seconds_first_bad_request_to_full_rollback"]
        for c in canary
        if c["seconds_first_bad_request_to_full_rollback"]
    ]
    result = {
        "benchmark": "releases on loopback: bad canary, blue-green via HAProxy, seed 003's nginx reload",
        "rate_per_s": args.rate,
        "bad_canary": canary,
        "bad_canary_median_seconds_to_rollback": statistics.median(times) if times else None,
        "blue_green": switch,
        "nginx_reload": nginx,
        "targets": {"rollback_s": 10, "switch_s": 1, "p99_during_switch_x_before": 2},
        "command": "python bench/rollout_bench.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "note": "the load generator, HAProxy/nginx and the apps share this 2-core machine",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
