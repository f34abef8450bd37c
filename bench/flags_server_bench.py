#!/usr/bin/env python3
"""Benchmark per-user flag evaluation over HTTP: shipyard now, shipyard before issue 14, @unleash/proxy.

Three systems serve the same reference flag (on for role USER or ADMIN in a 30 % rollout by
userId), each loaded in turn by wrk (Debian's `wrk`) on loopback with the same connections,
threads and duration; every request is for a random userId, so every answer is a fresh
evaluation:

- `baseline`: shipyard at BASELINE_COMMIT (main before issue 14's faster server), cloned into a
  temporary directory and run from its sources with this venv (`PYTHONPATH`), `serve --workers 2`
  on a SQLite state store: `GET /feature-flags/{key}/value` and OFREP's single evaluation.
- `shipyard`: this tree, `shipyard serve --workers 2` on a SQLite state store: the same two
  routes, and the Unleash frontend API (`GET /api/frontend`) when this tree serves it.
- `unleash_proxy`: npm's `@unleash/proxy` (pinned by bench/unleash_proxy/package-lock.json; one
  Node process, as it ships) on its frontend API (`GET /proxy`, the API `/api/frontend` copies).
  It fetches its flags from shipyard's Unleash client API (`/api/client/features`) when this tree
  serves it, else from a static loopback server answering the equivalent client-API document
  (`UNLEASH_FEATURES`); the result says which.

The targets (issue 14): each shipyard route at least TARGET_RATIO times the baseline's figure for
the same route (the frontend API, which the baseline lacks, against the baseline's `/value`), at
least the proxy's throughput, p99 under P99_TARGET_MS, no errors and no non-2xx answers. wrk
shares the 2-core machine with the server under test, so the figures are floors for a server on
cores of its own; `--rounds N` measures every system N times, interleaved, and keeps each one's
median, so that a burst of other load on the machine does not decide a ratio.

Usage: .venv/bin/python bench/flags_server_bench.py [--seconds 10] [--rounds 1] [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "flags_server.json"
PYTHON = ROOT / ".venv" / "bin" / "python"
PROXY_DIR = ROOT / "bench" / "unleash_proxy"
PROXY_START = PROXY_DIR / "node_modules" / "@unleash" / "proxy" / "dist" / "start.js"

BASELINE_COMMIT = "3fe9629"
"""main before issue 14's faster server: the figure to multiply."""
TARGET_RATIO = 4.0
P99_TARGET_MS = 10.0
CONNECTIONS = 64
THREADS = 2
WORKERS = 2
FLAG_KEY = "new-checkout"
REFERENCE_FLAG = {
    "key": FLAG_KEY,
    "type": "boolean",
    "default_value": False,
    "environments": {
        "production": {
            "enabled": True,
            "rules": [
                {
                    "conditions": [{"attribute": "role", "op": "in", "value": ["USER", "ADMIN"]}],
                    "rollout": {"percent": 30},
                    "value": True,
                }
            ],
        }
    },
}
UNLEASH_FEATURES = {
    "version": 2,
    "features": [
        {
            "name": FLAG_KEY,
            "type": "release",
            "enabled": True,
            "project": "default",
            "stale": False,
            "impressionData": False,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "constraints": [
                        {
                            "contextName": "role",
                            "operator": "IN",
                            "values": ["USER", "ADMIN"],
                            "caseInsensitive": False,
                            "inverted": False,
                        }
                    ],
                    "parameters": {"rollout": "30", "stickiness": "userId", "groupId": FLAG_KEY},
                }
            ],
            "variants": [],
        }
    ],
    "segments": [],
}
"""REFERENCE_FLAG as Unleash's client API serves it (what the proxy reads without shipyard's)."""

# Made by the baseline's code for the baseline and by this tree's for this tree: each version
# opens a state store of its own schema.
PREPARE_STATE = f"""
import json, sys
from shipyard.flags._store import FlagStore
from shipyard.state import open_engine, session_factory
from shipyard.tokens import create_token
engine = open_engine(sys.argv[1])
with session_factory(engine)() as session:
    print(create_token(session, "bench", "client"))
FlagStore(session_factory(engine)).create(json.loads({json.dumps(json.dumps(REFERENCE_FLAG))}), "bench")
"""

SHIPYARD_CLI = "import sys; from shipyard.cli import main; sys.exit(main())"
"""The `shipyard` command, run from whichever sources PYTHONPATH names."""

# Each request a random user (wrk's `request` is called for every request).
_RANDOM_USER = "math.random(1, 1000000)"
ROUTES: dict[str, dict[str, str]] = {
    "value": {
        "probe": f"/feature-flags/{FLAG_KEY}/value?role=USER&userId=1",
        "lua": f"""
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  return wrk.format(nil, "/feature-flags/{FLAG_KEY}/value?role=USER&userId=" .. {_RANDOM_USER})
end
""",
    },
    "ofrep": {
        "probe": f"/ofrep/v1/evaluate/flags/{FLAG_KEY}",
        "lua": f"""
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "application/json"
request = function()
  return wrk.format(nil, "/ofrep/v1/evaluate/flags/{FLAG_KEY}", nil,
    '{{"context":{{"role":"USER","targetingKey":"' .. {_RANDOM_USER} .. '"}}}}')
end
""",
    },
    # As Unleash's browser SDK asks: the token bare in Authorization, properties as `properties[x]`.
    "frontend": {
        "probe": "/api/frontend?userId=1&properties%5Brole%5D=USER",
        "lua": f"""
wrk.headers["Authorization"] = "%(token)s"
request = function()
  return wrk.format(nil, "%(path)s?properties%%5Brole%%5D=USER&userId=" .. {_RANDOM_USER})
end
""",
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ms(value: str, unit: str) -> float:
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 3)


def parse_wrk(text: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    percentiles = {
        p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    return {
        "rps": round(rps, 1),
        "p50_ms": percentiles.get("50"),
        "p99_ms": percentiles.get("99"),
        "requests": int(total.group(1)) if total else None,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def _get(url: str, headers: dict[str, str], data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_ready(url: str, process: subprocess.Popen[bytes], headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        with contextlib.suppress(OSError):
            if _get(url, headers or {}) == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within 60 s")


@contextlib.contextmanager
def _running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    except Exception:
        sys.stderr.write(f"--- {shlex.join(argv[:3])}: the last lines of its output\n")
        sys.stderr.write("\n".join(log.read_text(errors="replace").splitlines()[-20:]) + "\n")
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Target:
    """A running server and what wrk sends it."""

    base: str
    token: str
    routes: dict[str, str] = field(default_factory=dict)
    """Route name → the path it is served on (a route the system lacks is absent)."""


def wrk(target: Target, route: str, seconds: int, tmp: Path) -> dict[str, Any]:
    script = tmp / f"{route}.lua"
    script.write_text(ROUTES[route]["lua"] % {"token": target.token, "path": target.routes[route]})
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script)]
    subprocess.run([*argv[:3], "-d2s", "-s", str(script), target.base], capture_output=True, check=True)
    out = subprocess.run([*argv, target.base], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def _prepare_state(src: Path, url: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [str(PYTHON), "-c", PREPARE_STATE, url], env=env, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise SystemExit(f"preparing the state store {url} from {src} failed:\n{out.stderr}")
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def shipyard(src: Path, tmp: Path, name: str) -> Iterator[Target]:
    """`shipyard serve --workers 2` from the sources in `src`, on a new SQLite store."""
    url = f"sqlite:///{tmp}/{name}.db"
    token = _prepare_state(src, url)
    port = free_port()
    argv = [str(PYTHON), "-c", SHIPYARD_CLI, "serve", "--port", str(port), "--database-url", url]
    env = {**os.environ, "PYTHONPATH": str(src)}
    with _running([*argv, "--workers", str(WORKERS)], env, tmp / f"{name}.log") as process:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(f"{base}/healthz", process)
        target = Target(base, token)
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if _get(base + ROUTES["value"]["probe"], auth) == 200:
            target.routes["value"] = ""
        if _get(base + ROUTES["ofrep"]["probe"], auth, b'{"context":{"role":"USER"}}') == 200:
            target.routes["ofrep"] = ""
        if _get(base + ROUTES["frontend"]["probe"], {"Authorization": token}) == 200:
            target.routes["frontend"] = "/api/frontend"
        yield target


@contextlib.contextmanager
def static_client_api() -> Iterator[str]:
    """A loopback server answering Unleash's client API with UNLEASH_FEATURES; yields its API URL."""
    body = json.dumps(UNLEASH_FEATURES).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # metrics and registration: accepted, ignored
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()


@contextlib.contextmanager
def unleash_proxy(upstream: str, upstream_token: str, tmp: Path) -> Iterator[Target]:
    """@unleash/proxy on a free port, fetching its flags from `upstream` (an Unleash API URL)."""
    port = free_port()
    key = "bench-proxy-client-key"
    env = {
        **os.environ,
        "PORT": str(port),
        "UNLEASH_URL": upstream,
        "UNLEASH_API_TOKEN": upstream_token,
        "UNLEASH_PROXY_CLIENT_KEYS": key,
        "UNLEASH_APP_NAME": "shipyard-bench",
        "LOG_LEVEL": "warn",
    }
    with _running(["node", str(PROXY_START)], env, tmp / "unleash-proxy.log") as process:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(
            f"{base}{ROUTES['frontend']['probe'].replace('/api/frontend', '/proxy')}",
            process,
            {"Authorization": key},
        )
        yield Target(base, key, {"frontend": "/proxy"})


def _install_proxy() -> None:
    if not PROXY_START.exists():
        subprocess.run(
            ["npm", "ci", "--prefix", str(PROXY_DIR), "--no-audit", "--no-fund", "--loglevel=error"],
            check=True,
        )


def _baseline_sources(tmp: Path) -> Path:
    clone = tmp / "baseline"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", BASELINE_COMMIT], check=True)
    return clone / "src"


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    middle = sorted(runs, key=lambda r: r["rps"])[(len(runs) - 1) // 2]
    return {**middle, "rounds_rps": [r["rps"] for r in runs]} if len(runs) > 1 else middle


def measure(seconds: int, rounds: int, sources: Path) -> dict[str, Any]:
    """Every system's routes, `rounds` times each, interleaved; each route's median round."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {"baseline": {}, "shipyard": {}, "unleash_proxy": {}}
    upstream = "static loopback server (UNLEASH_FEATURES)"
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as name:
        tmp = Path(name)
        baseline_src = _baseline_sources(tmp)
        for round_ in range(rounds):
            with shipyard(baseline_src, tmp, f"baseline-{round_}") as target:
                for route in target.routes:
                    runs["baseline"].setdefault(route, []).append(wrk(target, route, seconds, tmp))
            with shipyard(sources, tmp, f"shipyard-{round_}") as target:
                for route in target.routes:
                    runs["shipyard"].setdefault(route, []).append(wrk(target, route, seconds, tmp))
                # The proxy reads the very flags shipyard serves when shipyard has Unleash's client API.
                own_api = _get(f"{target.base}/api/client/features", {"Authorization": target.token}) == 200
                with contextlib.ExitStack() as stack:
                    if own_api:
                        api, api_token = f"{target.base}/api", target.token
                        upstream = "shipyard's /api/client/features (the server measured above)"
                    else:
                        api, api_token = stack.enter_context(static_client_api()), "unused"
                    proxy = stack.enter_context(unleash_proxy(api, api_token, tmp))
                    runs["unleash_proxy"].setdefault("frontend", []).append(
                        wrk(proxy, "frontend", seconds, tmp)
                    )
    systems = {
        system: {route: _median(r) for route, r in by_route.items()} for system, by_route in runs.items()
    }
    return {"systems": systems, "unleash_proxy_upstream": upstream}


def verdict(systems: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each shipyard route's ratios and whether it meets every target."""
    baseline, proxy = systems["baseline"], systems["unleash_proxy"].get("frontend")
    out: dict[str, Any] = {}
    for route, result in systems["shipyard"].items():
        reference = baseline.get(route) or baseline.get("value")
        vs_baseline = round(result["rps"] / reference["rps"], 2) if reference else None
        vs_proxy = round(result["rps"] / proxy["rps"], 2) if proxy else None
        out[route] = {
            "rps": result["rps"],
            "p99_ms": result["p99_ms"],
            "vs_baseline": vs_baseline,
            "baseline_route": route if route in baseline else "value",
            "vs_unleash_proxy": vs_proxy,
            "meets_targets": bool(
                vs_baseline is not None
                and vs_baseline >= TARGET_RATIO
                and vs_proxy is not None
                and vs_proxy >= 1.0
                and result["p99_ms"] is not None
                and result["p99_ms"] < P99_TARGET_MS
                and not result["socket_errors"]
                and not result["non_2xx"]
            ),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--write", action="store_true")
    parser.add_argument(
        "--sources",
        type=Path,
        default=ROOT / "src",
        help="shipyard's sources to measure (default: this tree's)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(
                f"{tool} is not installed (make bench installs wrk; Node 20 and npm come with the machine)"
            )
    _install_proxy()
    load_before = os.getloadavg()
    measured = measure(args.seconds, args.rounds, args.sources.resolve())
    result = {
        "benchmark": "per-user flag evaluation over HTTP under wrk on loopback: shipyard now, "
        f"shipyard at {BASELINE_COMMIT} and @unleash/proxy, in one run",
        "settings": {
            "connections": CONNECTIONS,
            "wrk_threads": THREADS,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "shipyard_workers": WORKERS,
            "shipyard_store": "SQLite",
            "baseline_commit": BASELINE_COMMIT,
            "unleash_proxy": json.loads((PROXY_DIR / "package.json").read_text())["dependencies"],
            "unleash_proxy_upstream": measured["unleash_proxy_upstream"],
        },
        "targets": {
            "vs_baseline_at_least": TARGET_RATIO,
            "vs_unleash_proxy_at_least": 1.0,
            "p99_ms_under": P99_TARGET_MS,
        },
        "verdict": verdict(measured["systems"]),
        "systems": measured["systems"],
        "command": "python bench/flags_server_bench.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "node": subprocess.run(
                ["node", "--version"], check=True, capture_output=True, text=True
            ).stdout.strip(),
            "platform": platform.platform(),
            # Other work on the machine takes cores from every system measured; ratios suffer less.
            "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "note": "wrk runs on the same 2-core machine as the server under test",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
