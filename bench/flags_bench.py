#!/usr/bin/env python3
"""Benchmark shipyard's flag evaluator against peer SDKs on the reference flag; write JSON results.

The reference flag: on for contexts whose `role` is USER or ADMIN and whose sticky id falls in a
30 % rollout, off otherwise. The peers (GrowthBook, Unleash, flagd through OpenFeature) are
measured by ../shared/bench/flag_peers.py, run as a subprocess inside a separate venv,
bench/.peers-venv, created here on first use. shipyard is measured in this process on exactly the
same ids ("0".."N-1"), contexts (role USER) and warm-up rule (the first 2000 ids), SDK-style: a
compiled evaluator, a plain dict context per call. Both processes are pinned to the same core.

It also checks Unleash compatibility: the on/off decision for every id must equal Unleash's.

Usage: .venv/bin/python bench/flags_bench.py [--n 100000] [--repeat 5] [--out bench/results/flags.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from openfeature import api as openfeature_api  # noqa: E402
from openfeature.evaluation_context import EvaluationContext  # noqa: E402

from shipyard.flags import FlagSet, compile_flagset  # noqa: E402
from shipyard.flags.client import FlagsClient  # noqa: E402
from shipyard.flags.openfeature import ShipyardProvider  # noqa: E402

PEERS_VENV = ROOT / "bench" / ".peers-venv"
PEER_PACKAGES = ["UnleashClient", "growthbook", "openfeature-sdk", "openfeature-provider-flagd"]
DEFAULT_PEERS_SCRIPT = ROOT.parent / "shared" / "bench" / "flag_peers.py"
MIN_EVALS_PER_S = 1_000_000
MIN_RATIO = 5.0
MIN_OPENFEATURE_RATIO = 2.0

REFERENCE_FLAG = """
version: 1
flags:
  - key: new-checkout
    type: boolean
    default_value: false
    kind: release
    environments:
      production:
        enabled: true
        rules:
          - name: users and admins, 30 %
            conditions:
              - {attribute: role, op: in, value: [USER, ADMIN]}
            rollout: {percent: 30, stickiness: userId}
            value: true
"""

# Unleash's decision for every id, printed as a string of 0/1 (run inside the peers venv).
UNLEASH_DECISIONS = """
import sys, tempfile
from UnleashClient import UnleashClient
from UnleashClient.cache import FileCache
n = int(sys.argv[1])
features = {"version": 1, "features": [{"name": "new-checkout", "enabled": True, "strategies": [
    {"name": "flexibleRollout",
     "parameters": {"rollout": "30", "stickiness": "userId", "groupId": "new-checkout"},
     "constraints": [{"contextName": "role", "operator": "IN", "values": ["USER", "ADMIN"]}]}]}]}
cache = FileCache("decisions", directory=tempfile.mkdtemp())
cache.bootstrap_from_dict(features)
client = UnleashClient(url="http://127.0.0.1:9", app_name="decisions", disable_metrics=True,
                       disable_registration=True, cache=cache, refresh_interval=3600)
client.initialize_client(fetch_toggles=False)
try:
    for role in ("USER", "GUEST"):
        context = lambda i: {"userId": str(i), "properties": {"role": role}}
        print("".join("1" if client.is_enabled("new-checkout", context(i)) else "0" for i in range(n)))
finally:
    client.destroy()
"""

PEER_VERSIONS = f"""
import json, importlib.metadata as m
print(json.dumps({{p: m.version(p) for p in {PEER_PACKAGES!r}}}))
"""


def ensure_peers_venv() -> Path:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEERS_VENV.relative_to(ROOT)} with {' '.join(PEER_PACKAGES)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run_json(cmd: list[str]) -> object:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out[out.index("{") :])


def timed(fn: Callable[[list[str]], int], ids: list[str]) -> dict[str, float]:
    """The peers' rule (flag_peers.py's `timed`): warm up on the first 2000 ids, then time all."""
    fn(ids[: min(2000, len(ids))])
    t = time.perf_counter()
    on = fn(ids)
    dt = time.perf_counter() - t
    return {"evals_per_s": round(len(ids) / dt), "on_share": round(on / len(ids), 4)}


def measure(fn: Callable[[list[str]], int], ids: list[str], repeat: int) -> dict[str, object]:
    runs = [timed(fn, ids) for _ in range(repeat)]
    rates = [r["evals_per_s"] for r in runs]
    return {
        "evals_per_s": round(statistics.median(rates)),
        "on_share": runs[0]["on_share"],
        "runs_evals_per_s": rates,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="contexts per measurement (peers' N)")
    parser.add_argument("--repeat", type=int, default=7, help="shipyard measurements; the median is reported")
    parser.add_argument("--peers-script", type=Path, default=DEFAULT_PEERS_SCRIPT)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "flags.json")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first allowed)")
    args = parser.parse_args()

    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # this process and the peers' subprocess share one core

    peers_python = ensure_peers_venv()
    print("measuring peers …", file=sys.stderr)
    peers = run_json([str(peers_python), str(args.peers_script), str(args.n)])
    assert isinstance(peers, dict)
    versions = run_json([str(peers_python), "-c", PEER_VERSIONS])

    flagset = FlagSet.from_yaml(REFERENCE_FLAG)
    evaluator = compile_flagset(flagset)
    production = evaluator.for_environment("production")
    ids = [str(i) for i in range(args.n)]
    key = "new-checkout"

    def sdk_is_enabled(batch: list[str]) -> int:
        is_enabled = evaluator.is_enabled
        return sum(is_enabled(key, {"userId": i, "role": "USER"}, "production") for i in batch)

    def bound_is_enabled(batch: list[str]) -> int:
        is_enabled = production.is_enabled
        return sum(is_enabled(key, {"userId": i, "role": "USER"}) for i in batch)

    def full_evaluate(batch: list[str]) -> int:
        evaluate = evaluator.evaluate
        return sum(evaluate(key, {"userId": i, "role": "USER"}, "production", "boolean").value for i in batch)

    # Through the official OpenFeature SDK, as flagd is measured: shipyard's provider over an
    # SDK client started from the same flag set (no server: evaluation is local either way).
    of_client = FlagsClient("http://127.0.0.1:9", "unused", "production", bootstrap=flagset, start=False)
    openfeature_api.set_provider(ShipyardProvider(of_client))
    of = openfeature_api.get_client()

    def through_openfeature(batch: list[str]) -> int:
        get = of.get_boolean_value
        return sum(
            get(key, False, EvaluationContext(targeting_key=i, attributes={"role": "USER"})) for i in batch
        )

    print("measuring shipyard …", file=sys.stderr)
    shipyard = {
        "is_enabled": measure(sdk_is_enabled, ids, args.repeat),
        "environment_bound_is_enabled": measure(bound_is_enabled, ids, args.repeat),
        "evaluate_with_report": measure(full_evaluate, ids, args.repeat),
        "through_openfeature": measure(through_openfeature, ids, args.repeat),
    }
    openfeature_api.shutdown()

    print("comparing decisions with Unleash …", file=sys.stderr)
    lines = subprocess.run(
        [str(peers_python), "-c", UNLEASH_DECISIONS, str(args.n)], check=True, capture_output=True, text=True
    ).stdout.split()
    mismatches = {}
    for role, unleash_bits in zip(("USER", "GUEST"), lines[-2:], strict=True):
        ours = "".join("1" if evaluator.is_enabled(key, {"userId": i, "role": role}, "production") else "0"
                       for i in ids)  # fmt: skip
        mismatches[role] = sum(a != b for a, b in zip(ours, unleash_bits, strict=True))

    headline = shipyard["is_enabled"]["evals_per_s"]
    assert isinstance(headline, int)
    measured = {name: r for name, r in peers.items() if isinstance(r, dict) and "evals_per_s" in r}
    fastest = max(measured, key=lambda n: measured[n]["evals_per_s"]) if measured else None
    ratios = {name: round(headline / r["evals_per_s"], 2) for name, r in measured.items()}
    ratio = ratios[fastest] if fastest else None
    flagd = measured.get("flagd_openfeature")
    of_rate = shipyard["through_openfeature"]["evals_per_s"]
    assert isinstance(of_rate, int)
    of_ratio = round(of_rate / flagd["evals_per_s"], 2) if flagd else None
    result = {
        "benchmark": "reference flag: role in [USER, ADMIN] and userId in a 30 % rollout; "
        "ids 0..N-1, role USER",
        "command": shlex.join([os.path.relpath(sys.executable), *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": args.n,
        "nproc": os.cpu_count(),
        "pinned_cpu": cpu,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "shipyard": shipyard,
        "peers": peers,
        "peer_versions": versions,
        "fastest_peer": fastest,
        "ratio_vs_fastest_peer": ratio,
        "ratios": ratios,
        "openfeature_ratio_vs_flagd_openfeature": of_ratio,
        "unleash_decision_mismatches": {"ids_compared_per_role": args.n, **mismatches},
        "bars": {
            "min_evals_per_s": MIN_EVALS_PER_S,
            "min_ratio_vs_fastest_peer": MIN_RATIO,
            "evals_per_s_met": headline >= MIN_EVALS_PER_S,
            "ratio_met": ratio is not None and ratio >= MIN_RATIO,
            "min_openfeature_ratio_vs_flagd": MIN_OPENFEATURE_RATIO,
            "openfeature_ratio_met": of_ratio is not None and of_ratio >= MIN_OPENFEATURE_RATIO,
            "unleash_compatible": not any(mismatches.values()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    bars = result["bars"]
    assert isinstance(bars, dict)
    met = ("evals_per_s_met", "ratio_met", "openfeature_ratio_met", "unleash_compatible")
    return 0 if all(bars[name] for name in met) else 1


if __name__ == "__main__":
    sys.exit(main())
