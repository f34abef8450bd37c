#!/usr/bin/env python3
"""The long Schemathesis run: every check, the coverage, fuzzing and stateful phases, many examples.

The same run as tests/integration/server/test_schemathesis.py (tests/support/schemathesis_run.py:
a real `shipyard serve` on a seeded SQLite store, no stack, an admin token and then a client
token), with `--max-examples` per operation instead of the test's 10, and its own seed. Each
token's run is summed up: operations tested, cases generated, time, the phases' outcomes, and
every failure Schemathesis reported (code, title, operations). The answers the API keeps on
purpose, and their reasons, are written next to them (schemathesis_run.REASONS).

Usage: .venv/bin/python bench/schemathesis_full.py [--max-examples 200] [--seed N] [--write]
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "schemathesis.json"
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from support.schemathesis_run import CONFIG, REASONS, SEED, failures, run, seeded_server  # noqa: E402


def _summary(result: Any) -> dict[str, Any]:
    report = result.report
    return {
        "command": shlex.join(result.command),
        "running_time_s": round(report["running_time"], 1),
        "operations": report["operations"],
        "test_cases": report["test_cases"],
        "phases": {name: phase["status"] for name, phase in report["phases"].items()},
        "failures": failures(result),
        "warnings": {name: found for name, found in report.get("warnings", {}).items() if found},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=200, help="cases per operation (fuzzing)")
    parser.add_argument("--seed", type=int, default=SEED + 1, help="another seed than the test's")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    runs: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="schemathesis-") as tmp,
        seeded_server(Path(tmp)) as (url, tokens),
    ):
        for scope in ("admin", "client"):
            done = run(url, getattr(tokens, scope), Path(tmp) / scope, max_examples=args.max_examples,
                       seed=args.seed)  # fmt: skip
            runs[scope] = _summary(done)
            print(f"{scope}: {json.dumps(runs[scope], indent=2)}", flush=True)
    result = {
        "benchmark": "Schemathesis: every check, coverage + fuzzing + stateful phases, `shipyard serve`",
        "made_by": f".venv/bin/python bench/schemathesis_full.py --max-examples {args.max_examples}"
        f" --seed {args.seed} --write",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "system": platform.platform()},
        "max_examples": args.max_examples,
        "seed": args.seed,
        "config": CONFIG.strip().splitlines(),
        "accepted_on_purpose": REASONS,
        "runs": runs,
        "conforms": all(not summary["failures"] for summary in runs.values()),
    }
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({scope: summary["failures"] for scope, summary in runs.items()}, indent=2))
    sys.exit(0 if result["conforms"] else 1)


if __name__ == "__main__":
    main()
