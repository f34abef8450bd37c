#!/usr/bin/env python3
"""Benchmark backups on this machine: shipyard (pg_dump -Fd -j + restic) against the seeds' method.

The data: a PostgreSQL database made by `pgbench -i -s SCALE` (scale 70 is about 1 GB) and a tree
of uploaded files (`--files-mb`, default 1024, incompressible like photos). Both methods, in the
same run, on the same data:

* seeds 000/004: `pg_dump | gzip > db.sql.gz` and `tar czf files.tar.gz`; every backup is full;
  restore with `gunzip | psql` into a new database and `tar xzf`.
* shipyard: `shipyard backup full` (pg_dump directory format with parallel jobs, no compression
  of its own, into restic: deduplicated and zstd-compressed), and the restore of that second set:
  `shipyard restore database --into scratch` (restic restore, a new scratch PostgreSQL tuned for
  bulk loading, pg_restore -j) and `shipyard restore files`, run at the same time (they are
  independent artefacts).
* shipyard, physical (reported apart, never as the logical figure): after the logical restores,
  `shipyard backup pitr init --restart` and `backup pitr full` (pgBackRest), then
  `shipyard restore database --lsn <that backup's stop LSN> --into scratch` (pgBackRest restore,
  start, WAL replay to the end of the backup, promote) at the same time as `restore files`.

Each restore span is wall-clock time from the first command's start to the last one's end,
CLI start-up included. The seeds' span: `gunzip | psql` into a database created beforehand on the
already-running server, then `tar xzf`. shipyard's spans also include creating and starting
the server the database is restored into, and checking each artefact's checksum.

Measured: the time and size of a first backup, of a second backup after 1 % of the rows and 1 %
of the files changed (for restic the size is the data the second snapshot added), and of a
restore. Targets (issue 5): backup >= 2x faster, second backup >= 10x smaller, restore >= 2x faster.

Usage: .venv/bin/python bench/backup_bench.py [--scale 70] [--files-mb 1024] [--no-physical] [--write]
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from support.servers import Postgres, pg_bin, postgres_server  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "backup.json"
SHIPYARD = str(ROOT / ".venv" / "bin" / "shipyard")
FILE_MB = 2


@contextmanager
def timed(into: dict[str, float], key: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    into[key] = round(time.monotonic() - start, 2)


def sh(command: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-c", command], check=True, env=env)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_files(root: Path, megabytes: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(megabytes // FILE_MB):
        path = root / f"{i // 100:03d}" / f"upload-{i:05d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(FILE_MB << 20))
        files.append(path)
    return files


def change_one_percent(pg: Postgres, database: str, files: list[Path]) -> None:
    pg.psql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0", database)
    for path in files[:: max(1, len(files) // max(1, len(files) // 100))][: max(1, len(files) // 100)]:
        path.write_bytes(os.urandom(FILE_MB << 20))


def pg_env(pg: Postgres) -> dict[str, str]:
    return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(pg.port), "PGUSER": pg.user}


def seeds_method(pg: Postgres, database: str, files_dir: Path, work: Path, label: str) -> dict[str, Any]:
    """One full backup the seeds' way; returns times and sizes."""
    out = work / f"seeds-{label}"
    out.mkdir()
    env = pg_env(pg)
    result: dict[str, Any] = {}
    with timed(result, "backup_s"):
        sh(f"{pg_bin('pg_dump')} {database} | gzip > {out}/db.sql.gz", env)
        sh(f"tar -C {files_dir} -czf {out}/files.tar.gz .")
    result["size_bytes"] = size_of(out)
    result["dir"] = str(out)
    return result


def seeds_restore(pg: Postgres, dump_dir: Path, work: Path) -> dict[str, Any]:
    env = pg_env(pg)
    target = work / "seeds-restored-files"
    target.mkdir()
    result: dict[str, Any] = {}
    pg.psql("CREATE DATABASE seeds_restore")
    with timed(result, "restore_s"):
        sh(f"gunzip -c {dump_dir}/db.sql.gz | {pg_bin('psql')} -q -v ON_ERROR_STOP=1 seeds_restore", env)
        sh(f"tar -C {target} -xzf {dump_dir}/files.tar.gz")
    rows = pg.psql("SELECT count(*) FROM pgbench_accounts", "seeds_restore")
    result["accounts_rows"] = int(rows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70)
    parser.add_argument("--files-mb", type=int, default=1024)
    parser.add_argument("--no-physical", action="store_true", help="skip the pgBackRest restore")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shipyard-backup-bench-"))
    work.chmod(0o755)  # the scratch PostgreSQL runs as `postgres` under it
    try:
        with postgres_server() as pg:
            load_before = os.getloadavg()
            result = run(pg, work, args.scale, args.files_mb, physical=not args.no_physical)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result |= {
        "command": "python bench/backup_bench.py " + shlex.join(sys.argv[1:]),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine slows both methods, not always equally: say how busy it was.
            "load_average_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if result.get("shipyard_physical") is None:
        result = _keep_physical(result)
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        RESULTS.write_text(text + "\n")


def _keep_physical(result: dict[str, Any]) -> dict[str, Any]:
    """A run with --no-physical keeps the last written physical figures, marked with their date."""
    if not RESULTS.exists():
        return result
    previous = json.loads(RESULTS.read_text())
    physical = previous.get("shipyard_physical")
    if not physical:
        return result
    kept = {**physical, "from_run": physical.get("from_run") or previous.get("date")}
    ratios = dict(result["ratios"])
    if "physical_restore_speedup" in previous.get("ratios", {}):
        ratios["physical_restore_speedup"] = previous["ratios"]["physical_restore_speedup"]
    return {**result, "shipyard_physical": kept, "ratios": ratios}


def run(pg: Postgres, work: Path, scale: int, files_mb: int, *, physical: bool = True) -> dict[str, Any]:
    database = "bench"
    pg.psql(f"CREATE DATABASE {database}")
    setup: dict[str, float] = {}
    with timed(setup, "pgbench_init_s"):
        sh(f"{pg_bin('pgbench')} -i -q -s {scale} {database}", pg_env(pg))
    files_dir = work / "uploads"
    with timed(setup, "files_s"):
        files = make_files(files_dir, files_mb)
    db_bytes = int(pg.psql(f"SELECT pg_database_size('{database}')"))
    seeds_first = seeds_method(pg, database, files_dir, work, "first")
    shipyard_first = shipyard_backup(pg, database, files_dir, work)
    change_one_percent(pg, database, files)
    seeds_second = seeds_method(pg, database, files_dir, work, "second")
    shipyard_second = shipyard_backup(pg, database, files_dir, work)
    seeds_back = seeds_restore(pg, Path(seeds_second["dir"]), work)
    shipyard_back = shipyard_restore(pg, work, shipyard_second)
    # Last: archiving (pgBackRest's archive_command) would have slowed the restores above. The
    # seeds' restored copy goes first: a physical backup copies the whole cluster, and that copy
    # would double what the physical restore has to move.
    pg.psql("DROP DATABASE seeds_restore")
    shipyard_physical = shipyard_physical_restore(pg, work, shipyard_second) if physical else None
    ratios = {
        "first_backup_speedup": round(seeds_first["backup_s"] / shipyard_first["backup_s"], 2),
        "second_backup_size_ratio": round(seeds_second["size_bytes"] / shipyard_second["size_bytes"], 1),
        "restore_speedup": round(seeds_back["restore_s"] / shipyard_back["restore_s"], 2),
    }
    if shipyard_physical is not None:
        ratios["physical_restore_speedup"] = round(
            seeds_back["restore_s"] / shipyard_physical["restore_s"], 2
        )
    return {
        "benchmark": "backup and restore: shipyard vs pg_dump|gzip + tar|gzip (seeds 000/004)",
        "data": {"database_bytes": db_bytes, "files_bytes": files_mb << 20, "pgbench_scale": scale, **setup},
        "seeds": {"first": seeds_first, "second": seeds_second, "restore": seeds_back},
        "shipyard": {"first": shipyard_first, "second": shipyard_second, "restore": shipyard_back},
        "shipyard_physical": shipyard_physical,
        "ratios": ratios,
        "targets": {"first_backup_speedup": 2, "second_backup_size_ratio": 10, "restore_speedup": 2},
        "spans": {
            "seeds.restore": "gunzip | psql into a database created beforehand on the running server,"
            " then tar xzf",
            "shipyard.restore": "logical: `restore database --into scratch` (restic restore, start a new"
            " bulk-load-tuned scratch PostgreSQL, pg_restore -j, checksum) and `restore files` (restic"
            " restore, checksum) run at the same time; wall time of both, CLI start-up included",
            "shipyard_physical.restore": "physical: `restore database --lsn <stop LSN of the pgBackRest full"
            " backup>` (pgbackrest restore, start, WAL replay, promote) and `restore files` at the same"
            " time; wall time of both, CLI start-up included",
        },
    }


SPEC = """\
name: bench
datastores:
  db:
    kind: postgresql
    storage: {{size: 2Gi}}
    database: bench
    user: {user}
    local: {{port: {port}, data_dir: {data_dir}}}
backup:
  repository: {repo}
  password: ${{env:BENCH_RESTIC_PASSWORD}}
  sources:
    datastores: [db]
    volumes: [{files}]
  pitr: {{repository: {pitr_repo}, stanza: bench}}
environments:
  bench: {{}}
"""


def _cli_argv_env(work: Path, args: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "BENCH_RESTIC_PASSWORD": "bench-password-not-secret",
        "SHIPYARD_DATABASE_URL": f"sqlite:///{work / 'state.db'}",
        "SHIPYARD_STATE_DIR": str(work / ".shipyard"),
    }
    return [SHIPYARD, *args, "-f", str(work / "shipyard.yaml"), "-e", "bench", "-o", "json"], env


def shipyard_cli(work: Path, *args: str) -> dict[str, Any]:
    argv, env = _cli_argv_env(work, args)
    done = subprocess.run(argv, env=env, cwd=work, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"shipyard {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def shipyard_cli_together(work: Path, *commands: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[float]]:
    """Run several shipyard commands at once (as an operator would with `&`); their JSON outputs
    and each one's own wall time."""
    start = time.monotonic()
    running = []
    for args in commands:
        argv, env = _cli_argv_env(work, args)
        running.append(
            subprocess.Popen(
                argv, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    ends: dict[int, float] = {}
    results: dict[int, tuple[str, str]] = {}

    def finish(index: int) -> None:
        results[index] = running[index].communicate()
        ends[index] = round(time.monotonic() - start, 2)

    waiters = [threading.Thread(target=finish, args=(i,)) for i in range(len(running))]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join()
    outputs = []
    for index, args in enumerate(commands):
        if running[index].returncode != 0:
            raise SystemExit(
                f"shipyard {' '.join(args)} failed ({running[index].returncode}):\n{results[index][1]}"
            )
        outputs.append(json.loads(results[index][0]))
    return outputs, [ends[i] for i in range(len(running))]


def shipyard_backup(pg: Postgres, database: str, files_dir: Path, work: Path) -> dict[str, Any]:
    """`shipyard backup full`; its size is what the repository grew by (after compression)."""
    repo = work / "repo"
    spec = work / "shipyard.yaml"
    if not spec.exists():
        spec.write_text(
            SPEC.format(
                user=pg.user, port=pg.port, data_dir=pg.datadir, repo=repo, files=files_dir,
                pitr_repo=work / "pgbackrest",
            )
        )  # fmt: skip
    before = size_of(repo) if repo.exists() else 0
    result: dict[str, Any] = {}
    with timed(result, "backup_s"):
        done = shipyard_cli(work, "backup", "full", "--jobs", str(os.cpu_count() or 2))
    result["size_bytes"] = size_of(repo) - before
    result["set"] = done.get("id") or done.get("set", {}).get("id")
    return result


def shipyard_restore(pg: Postgres, work: Path, backup: dict[str, Any]) -> dict[str, Any]:
    """Logical: `shipyard restore database --into scratch` and `restore files`, at the same time."""
    result: dict[str, Any] = {}
    target = work / "shipyard-restored"
    jobs = str(os.cpu_count() or 2)
    with timed(result, "restore_s"):
        (database, files), spans = shipyard_cli_together(
            work,
            (
                "restore",
                "database",
                "--set",
                backup["set"],
                "--jobs",
                jobs,
                "--target-dir",
                str(target / "pg"),
            ),
            ("restore", "files", "--set", backup["set"], "--target-dir", str(target / "files")),
        )
    result["database_s"], result["files_s"] = spans
    rows = _count_accounts(
        database["location"]["port"], database["location"]["user"], database["location"]["database"]
    )
    subprocess.run(database["stop_command"], check=False, capture_output=True)
    result["accounts_rows"] = rows
    result["files"] = files["location"]["files"]
    result["restored"] = {k: database.get(k) for k in ("set", "artefact", "into")}
    return result


def _count_accounts(port: int, user: str, database: str) -> int:
    psql = pg_bin("psql") or "psql"
    out = subprocess.run(
        [psql, "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", database, "-Atc",
         "SELECT count(*) FROM pgbench_accounts"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(out.stdout.strip())


def shipyard_physical_restore(pg: Postgres, work: Path, backup: dict[str, Any]) -> dict[str, Any]:
    """Physical: a pgBackRest full backup, then `restore database --lsn <its stop LSN>` (and
    `restore files`, at the same time). Not the logical figure: reported apart."""
    if os.geteuid() == 0:  # pgBackRest runs as postgres: it writes its log, lock and spool there
        for path in (work / ".shipyard", work / ".shipyard" / "pgbackrest"):
            path.mkdir(exist_ok=True)
            shutil.chown(path, "postgres", "postgres")
    result: dict[str, Any] = {}
    with timed(result, "pitr_init_s"):
        shipyard_cli(work, "backup", "pitr", "init", "--restart")
    with timed(result, "pitr_full_backup_s"):
        full = shipyard_cli(work, "backup", "pitr", "full")
    result["pitr_backup"] = {k: full.get(k) for k in ("label", "stop_lsn", "backup_size", "repository_delta")}
    target = work / "shipyard-physical"
    with timed(result, "restore_s"):
        (database, files), spans = shipyard_cli_together(
            work,
            ("restore", "database", "--lsn", full["stop_lsn"], "--target-dir", str(target / "pg")),
            ("restore", "files", "--set", backup["set"], "--target-dir", str(target / "files")),
        )
    result["database_s"], result["files_s"] = spans
    result["accounts_rows"] = _count_accounts(database["port"], database["user"], "bench")
    subprocess.run(database["stop_command"], check=False, capture_output=True)
    result["files"] = files["location"]["files"]
    return result


if __name__ == "__main__":
    main()
