#!/usr/bin/env python3
"""Benchmark `render kubernetes` on a generated 200-service stack with 3 environments.

Each service has probes, resources, autoscaling, an ingress, env with secretRefs and an
`${env:…}` reference, and depends on a PostgreSQL (with a replica) and a Redis. One round is:
load and validate the spec text (`load_spec_text`), then render every environment and validate
every object against the Kubernetes 1.33 schemas (`build_manifests`). Each round runs in a fresh
process so that every cache (schema loading, compiled validators) starts cold, as for one CLI
call; the figure is the best of `--repeat` rounds, with the split between loading and rendering.

Usage: .venv/bin/python bench/render_bench.py [--services 200] [--repeat 5] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from shipyard.render import build_manifests  # noqa: E402
from shipyard.spec import load_spec_text  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "render.json"
TARGET_SECONDS = 2.0
ENVIRONMENTS = ("dev", "staging", "production")


def generate_spec(services: int) -> str:
    """The spec text of a stack with `services` services and three environments."""
    names = [f"svc-{i:03d}" for i in range(services)]
    body: dict[str, Any] = {
        "name": "bench",
        "secrets": {"store": {"kind": "ClusterSecretStore", "name": "vault"}},
        "services": {},
        "datastores": {
            "postgres": {
                "kind": "postgresql",
                "replicas": 1,
                "storage": {"size": "100Gi", "storage_class": "fast-ssd"},
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
                "settings": {"max_connections": 500, "shared_buffers": "2GB"},
            },
            "redis": {"kind": "redis", "maxmemory": "1Gi", "storage": {"size": "5Gi"}},
        },
        "environments": {
            "dev": {"services": {n: {"replicas": 1, "autoscaling": None} for n in names}},
            "staging": {},
            "production": {"services": {n: {"replicas": 3, "autoscaling": {"min": 3}} for n in names}},
        },
    }
    for index, name in enumerate(names):
        body["services"][name] = {
            "role": "api",
            "image": f"registry.example.com/{name}:1.0.{index}",
            "port": 8000 + index,
            "health": {
                "liveness": {"path": "/healthz"},
                "readiness": {"path": "/ready", "period": "5s"},
                "startup_delay": "20s",
            },
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"},
            },
            "replicas": 2,
            "autoscaling": {
                "min": 2,
                "max": 6,
                "cpu_percent": 70,
                "scale_up": {"max_pods": 2, "period": 30},
                "scale_down": {"stabilization": "5m", "max_percent": 50},
            },
            "ingress": {"host": f"{name}.example.com", "rate_limit_rps": 20, "body_size": "10Mi"},
            "env": {
                "LOG_LEVEL": "info",
                "FEATURE_X": True,
                "API_TOKEN": {"secretRef": f"{name}/api-token"},
                "SESSION_KEY": "${env:SESSION_KEY}",
            },
            "depends_on": ["postgres", "redis"],
        }
    return yaml.safe_dump(body, sort_keys=False)


def one_round(services: int) -> dict[str, Any]:
    """Load, render and validate once, in this (fresh) process; timings in seconds."""
    text = generate_spec(services)
    started = time.perf_counter()
    spec = load_spec_text(text, "bench.yaml")
    loaded = time.perf_counter()
    manifests = [build_manifests(spec.stack(env)) for env in spec.environments]
    rendered = time.perf_counter()
    return {
        "total_s": rendered - started,
        "load_s": loaded - started,
        "render_and_validate_s": rendered - loaded,
        "objects": sum(len(m.objects) for m in manifests),
        "spec_lines": len(text.splitlines()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.round:
        print(json.dumps(one_round(args.services)))
        return
    rounds = []
    for _ in range(args.repeat):
        child = subprocess.run(
            [sys.executable, __file__, "--round", "--services", str(args.services)],
            capture_output=True,
            text=True,
            check=True,
        )
        rounds.append(json.loads(child.stdout))
    best = min(rounds, key=lambda r: r["total_s"])
    result = {
        "benchmark": "render kubernetes: load + validate spec, render + schema-validate every environment",
        "services": args.services,
        "environments": list(ENVIRONMENTS),
        "objects": best["objects"],
        "spec_lines": best["spec_lines"],
        "best_total_s": round(best["total_s"], 3),
        "best_load_s": round(min(r["load_s"] for r in rounds), 3),
        "best_render_and_validate_s": round(min(r["render_and_validate_s"] for r in rounds), 3),
        "rounds_total_s": [round(r["total_s"], 3) for r in rounds],
        "target_s": TARGET_SECONDS,
        "meets_target": best["total_s"] < TARGET_SECONDS,
        "command": shlex.join([Path(sys.executable).name, "bench/render_bench.py", *sys.argv[1:]]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=2))
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
