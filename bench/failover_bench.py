#!/usr/bin/env python3
"""Benchmark automatic failover (`ha: patroni`): how long writes stop when the primary's host dies.

Each run starts a scratch Patroni cluster on loopback (etcd, a primary and a synchronous standby,
HAProxy; RPO 0), exactly as the `failover` drill does, puts a writer committing every 5 ms and a
probe connecting afresh every 0.1 s through HAProxy, SIGKILLs every process of the primary's node
(supervisor, Patroni, PostgreSQL) and measures, from the kill:

- writer RTO: the first commit acknowledged (of one sent after the kill);
- probe RTO: the first new connection through HAProxy that could write;
- promoted: when Patroni's REST API named the new leader;
- lost: acknowledged commits the new primary does not hold (must be 0: synchronous mode);
- rejoin: the old node restarted → streaming as a replica (rewound by pg_rewind or not).

Two profiles of Patroni timings: `fast` (ttl 10 s, loop_wait 2 s, retry_timeout 4 s: the test
suite's) and `defaults` (Patroni's own: ttl 30 s, loop_wait 10 s, retry_timeout 10 s). Each RTO is
compared with seed 003's target, 15 minutes.

Usage: .venv/bin/python bench/failover_bench.py [--profile fast|defaults|both] [--runs 3] [--write]
(as root, or as a user who may run PostgreSQL; needs Debian's patroni, etcd-server, haproxy and
postgresql-15: `make install`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard.dr import FailoverExperiment, ScratchCluster
from shipyard.render import ha_layout
from shipyard.spec import load_spec_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "failover.json"
SEED_RTO_S = 15 * 60
PROFILES = {
    "fast": {"ttl": 10, "loop_wait": 2, "retry_timeout": 4},
    "defaults": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10},
}
SPEC = """\
name: bench
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    ha: patroni
    local: {{host: 127.0.0.1, port: 15432, rest_port: 18008, data_dir: /nonexistent/primary}}
    standby: {{host: 127.0.0.1, port: 15433, rest_port: 18009, data_dir: /nonexistent/standby}}
    patroni:
      ttl: {ttl}
      loop_wait: {loop_wait}
      retry_timeout: {retry_timeout}
      etcd: [{{host: 127.0.0.1, client_port: 12379, peer_port: 12380, data_dir: /nonexistent/etcd}}]
dr: {{rto: 15m, rpo: 0}}
"""
"""The cluster the scratch copy is made of (its addresses and directories are replaced by free
loopback ports and a temp directory)."""


def one_run(profile: str) -> dict[str, Any]:
    layout = ha_layout(load_spec_text(SPEC.format(**PROFILES[profile])).stack("production"), "db")
    scratch = ScratchCluster(layout)
    try:
        began = time.monotonic()
        scratch.up()
        started_s = time.monotonic() - began
        measured = FailoverExperiment(scratch.cluster).run(
            on_step=lambda step: print(f"    {step}", flush=True)
        )
    finally:
        scratch.close()
    return {"cluster_up_s": round(started_s, 3), **measured.as_dict()}


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run[key] is not None]
    return round(statistics.median(values), 3) if values else None


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    writer = [run["writer_rto_s"] for run in runs]
    return {
        "runs": len(runs),
        "writer_rto_s": {
            "median": _median(runs, "writer_rto_s"),
            "max": max((w for w in writer if w), default=None),
        },
        "probe_rto_s_median": _median(runs, "probe_rto_s"),
        "promoted_s_median": _median(runs, "promoted_s"),
        "rejoin_s_median": _median(runs, "rejoin_s"),
        "lost_total": sum(run["lost"] for run in runs),
        "all_rejoined": all(run["rejoined"] for run in runs),
        "all_rewound": all(run["rewound"] for run in runs),
        "meets_seed_rto": all(w is not None and w <= SEED_RTO_S for w in writer),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--profile", choices=[*PROFILES, "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    chosen = list(PROFILES) if args.profile == "both" else [args.profile]
    load_before = os.getloadavg()[0]
    profiles: dict[str, Any] = {}
    for profile in chosen:
        runs = []
        for index in range(args.runs):
            print(f"{profile} ({PROFILES[profile]}), run {index + 1}/{args.runs}", flush=True)
            runs.append(one_run(profile))
            print(f"  writer RTO {runs[-1]['writer_rto_s']} s, lost {runs[-1]['lost']}", flush=True)
        profiles[profile] = {"patroni": PROFILES[profile], "summary": summary(runs), "runs": runs}
    result = {
        "benchmark": "automatic failover (ha: patroni): a dead primary host under a writer committing every"
        " 5 ms through HAProxy; seconds from the kill",
        "seed_rto_s": SEED_RTO_S,
        "profiles": profiles,
        "command": shlex.join([".venv/bin/python", "bench/failover_bench.py", *sys.argv[1:]]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(result, indent=2) + "\n"
    print(json.dumps({name: p["summary"] for name, p in profiles.items()}, indent=2))
    if args.write:
        RESULTS.write_text(text, encoding="utf-8")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    ok = all(p["summary"]["lost_total"] == 0 and p["summary"]["meets_seed_rto"] for p in profiles.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
