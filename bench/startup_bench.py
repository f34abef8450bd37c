#!/usr/bin/env python3
"""Benchmark start-up: `shipyard --help`, `shipyard validate` and `import shipyard.flags`.

Each command runs as a fresh process (`--warmup` runs first, not counted, so that the OS file
cache is warm), then `--runs` times; the figure is the median wall time from spawning the process
to its exit, with the 90th percentile and the fastest run. `shipyard validate` runs in
examples/apricode (its spec, shipyard.yaml, is the default `--file`). Every run must exit 0.

The bounds are for a 2-core machine: `shipyard --help` within 0.3 s, `shipyard validate` within
0.6 s, `python -c "import shipyard.flags"` (the SDK) within 0.15 s.

Usage: .venv/bin/python bench/startup_bench.py [--runs 20] [--warmup 2] [--write]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "startup.json"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    cwd: Path
    bound_s: float

    @property
    def shell(self) -> str:
        """The command as typed, from the repository root (with the venv's executables)."""
        argv = [os.path.relpath(self.argv[0], self.cwd), *self.argv[1:]]
        command = shlex.join(argv)
        if self.cwd != ROOT:
            command = f"cd {shlex.quote(os.path.relpath(self.cwd, ROOT))} && {command}"
        return command


CASES = [
    Case("shipyard --help", [str(BIN / "shipyard"), "--help"], ROOT, 0.3),
    Case("shipyard validate", [str(BIN / "shipyard"), "validate"], ROOT / "examples" / "apricode", 0.6),
    Case("import shipyard.flags", [str(BIN / "python"), "-c", "import shipyard.flags"], ROOT, 0.15),
]


def one_run(case: Case) -> float:
    """Wall time of one fresh process running `case`, in seconds (it must exit 0)."""
    started = time.perf_counter()
    done = subprocess.run(case.argv, cwd=case.cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"{case.shell} exited {done.returncode}:\n{done.stderr.decode(errors='replace')[-2000:]}"
        )
    return elapsed


def p90(values: list[float]) -> float:
    """The 90th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def measure(case: Case, runs: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        one_run(case)
    times = [one_run(case) for _ in range(runs)]
    median = statistics.median(times)
    return {
        "command": case.shell,
        "median_s": round(median, 4),
        "p90_s": round(p90(times), 4),
        "min_s": round(min(times), 4),
        "bound_s": case.bound_s,
        "meets_bound": median <= case.bound_s,
        "runs_s": [round(t, 4) for t in times],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    for case in CASES:
        if not Path(case.argv[0]).exists():
            raise SystemExit(f"{case.argv[0]} not found: run this with the venv's python (.venv/bin/python)")
    load_before = os.getloadavg()
    cases = {case.name: measure(case, args.runs, args.warmup) for case in CASES}
    load_after = os.getloadavg()
    result = {
        "benchmark": "start-up: wall time of a fresh process, median of the runs after the warm-up",
        "runs": args.runs,
        "warmup": args.warmup,
        "cases": cases,
        "meets_bounds": all(c["meets_bound"] for c in cases.values()),
        "command": shlex.join(
            [os.path.relpath(sys.executable, ROOT), "bench/startup_bench.py", *sys.argv[1:]]
        ),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    for name, case in cases.items():
        verdict = "pass" if case["meets_bound"] else "FAIL"
        print(
            f"{name:<22} median {case['median_s']:.3f} s  p90 {case['p90_s']:.3f} s  "
            f"min {case['min_s']:.3f} s  bound {case['bound_s']:.2f} s  {verdict}",
            file=sys.stderr,
        )
    print(json.dumps(result, indent=2))
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not result["meets_bounds"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
