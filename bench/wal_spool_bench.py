#!/usr/bin/env python3
"""Benchmark the pg_receivewal spool's size under steady writes with `archive_timeout: 1`.

issue 12, defect 7: the spool was never pruned (1.1 GB in 30 minutes against a 21 MB pgBackRest
repository). Every WAL segment pg_receivewal closes is a whole 16 MB file, and with
`archive_timeout: 1` PostgreSQL closes one a second while anything is written; pgBackRest stores
the same segment compressed (mostly empty, a few hundred KB). shipyard now prunes the spool of
what the archive holds after each pgBackRest backup and expire, and when the scheduler checks
the stream (`backup pitr stream start`, every minute under `shipyard serve`).

The run: a scratch PostgreSQL 15 with `backup.pitr` (archive_timeout 1, stream on), set up and
backed up with the `shipyard` CLI (`backup pitr init --restart`, `backup pitr full`), then a
writer committing one row every `--write-every` seconds for `--seconds`, while the scheduler's
minute is played by running `shipyard backup pitr stream start` every `--prune-every` seconds
(0: never, the behaviour before the fix). Every `--sample-every` seconds it records the spool's
size and files and the pgBackRest repository's size (bytes on disk under each directory).

Writes the samples, each prune run and a summary, with the command that made them, to
bench/results/wal_spool.json (`--out` to write elsewhere).

Usage: .venv/bin/python bench/wal_spool_bench.py [--seconds 3600] [--prune-every 60]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

import psycopg  # noqa: E402

from shipyard.backup import start_scratch_postgres  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "wal_spool.json"
SHIPYARD = str(ROOT / ".venv" / "bin" / "shipyard")
SPEC = """\
name: bench
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    user: {user}
    local: {{port: {port}, data_dir: {data_dir}}}
backup:
  repository: ./restic
  password: ${{env:BENCH_RESTIC_PASSWORD}}
  pitr: {{repository: ./pgbackrest, stanza: bench, archive_timeout: 1, stream: true}}
environments:
  bench: {{}}
"""


def size_of(directory: Path) -> tuple[int, int]:
    """(bytes, files) under a directory, counting files that vanish meanwhile as gone."""
    total = files = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
                files += 1
        except OSError:
            continue
    return total, files


def shipyard(work: Path, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_RESTIC_PASSWORD": "bench-password-not-secret",
        "SHIPYARD_DATABASE_URL": f"sqlite:///{work / 'state.db'}",
        "SHIPYARD_STATE_DIR": str(work / "state"),
    }
    argv = [SHIPYARD, *args, "-f", str(work / "shipyard.yaml"), "-e", "bench", "-o", "json"]
    done = subprocess.run(argv, env=env, cwd=work, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"shipyard {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


class Writer:
    """One autocommitted INSERT every `every` seconds, on a thread."""

    def __init__(self, url: str, every: float) -> None:
        self.url, self.every, self.rows = url, every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.wait(self.every):
                conn.execute("INSERT INTO rows (at) VALUES (clock_timestamp())")
                self.rows += 1


def run(
    work: Path, seconds: float, prune_every: float, sample_every: float, write_every: float
) -> dict[str, Any]:
    server = start_scratch_postgres()
    url = f"postgresql://{server.user}@127.0.0.1:{server.port}/postgres"
    spool = work / "pgbackrest.walstream" / "bench" / "wal"
    repository = work / "pgbackrest"
    try:
        spec = SPEC.format(user=server.user, port=server.port, data_dir=server.data_dir)
        (work / "shipyard.yaml").write_text(spec)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE rows (n bigserial PRIMARY KEY, at timestamptz)")
        shipyard(work, "backup", "pitr", "init", "--restart")
        shipyard(work, "backup", "pitr", "full")
        writer = Writer(url, write_every)
        samples: list[dict[str, Any]] = []
        prunes: list[dict[str, Any]] = []
        start = time.monotonic()
        next_sample, next_prune = start, start + prune_every if prune_every > 0 else float("inf")
        writer.thread.start()
        try:
            while (now := time.monotonic()) < start + seconds:
                if now >= next_prune:
                    before = size_of(spool)[0]
                    began = time.monotonic()
                    shipyard(work, "backup", "pitr", "stream", "start")
                    prunes.append({
                        "t_s": round(began - start, 1),
                        "took_s": round(time.monotonic() - began, 2),
                        "spool_bytes_before": before,
                        "spool_bytes_after": size_of(spool)[0],
                    })  # fmt: skip
                    next_prune += prune_every
                if now >= next_sample:
                    spool_bytes, spool_files = size_of(spool)
                    samples.append({
                        "t_s": round(now - start, 1),
                        "spool_bytes": spool_bytes,
                        "spool_files": spool_files,
                        "repository_bytes": size_of(repository)[0],
                        "rows": writer.rows,
                    })  # fmt: skip
                    next_sample += sample_every
                time.sleep(max(0.0, min(next_sample, next_prune, start + seconds) - time.monotonic()))
        finally:
            writer.stop.set()
            writer.thread.join(timeout=30)
        status = shipyard(work, "backup", "pitr", "list")
    finally:
        subprocess.run([SHIPYARD, "backup", "pitr", "stream", "stop", "-f", str(work / "shipyard.yaml"),
                        "-e", "bench"], check=False, capture_output=True, cwd=work,
                       env={**os.environ, "BENCH_RESTIC_PASSWORD": "x",
                            "SHIPYARD_DATABASE_URL": f"sqlite:///{work / 'state.db'}",
                            "SHIPYARD_STATE_DIR": str(work / "state")})  # fmt: skip
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)
    spool_sizes = [s["spool_bytes"] for s in samples]
    window = status.get("window", {})
    return {
        "settings": {
            "seconds": seconds,
            "archive_timeout_s": 1,
            "write_every_s": write_every,
            "prune_every_s": prune_every,
            "sample_every_s": sample_every,
        },
        "summary": {
            "rows_written": writer.rows,
            "segments_archived": _segments(window.get("archive_min"), window.get("archive_max")),
            "spool_bytes_end": spool_sizes[-1] if spool_sizes else None,
            "spool_bytes_max": max(spool_sizes, default=None),
            "spool_bytes_mean": round(sum(spool_sizes) / len(spool_sizes)) if spool_sizes else None,
            "repository_bytes_end": samples[-1]["repository_bytes"] if samples else None,
            "prune_runs": len(prunes),
            "prune_took_s_max": max((p["took_s"] for p in prunes), default=None),
        },
        "samples": samples,
        "prunes": prunes,
    }


def _segments(first: str | None, last: str | None) -> int | None:
    """How many WAL segments from `first` to `last` (names end in log and segment numbers; a log
    holds 256 segments of 16 MB)."""
    if not first or not last:
        return None
    return sum((int(last[a:b], 16) - int(first[a:b], 16)) * k for a, b, k in ((8, 16, 256), (16, 24, 1))) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3600, help="how long to write (default an hour)")
    parser.add_argument(
        "--prune-every",
        type=float,
        default=60,
        help="seconds between `backup pitr stream start` runs (the scheduler's minute); 0: never",
    )
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument("--write-every", type=float, default=0.1, help="seconds between committed rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shipyard-wal-spool-bench-"))
    if os.geteuid() == 0:  # pgBackRest, archive_command and pg_receivewal run as postgres
        shutil.chown(work, "postgres", "postgres")
    load_before = os.getloadavg()
    try:
        result = run(work, args.seconds, args.prune_every, args.sample_every, args.write_every)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "pg_receivewal spool and pgBackRest repository sizes under writes, archive_timeout 1",
        "command": ".venv/bin/python bench/wal_spool_bench.py " + shlex.join(sys.argv[1:]),
        **result,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
