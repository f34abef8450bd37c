#!/usr/bin/env python3
"""`make demo`: all of shipyard at work on this machine, in under three minutes.

    .venv/bin/python scripts/demo.py [OUT]          # OUT defaults to out/demo
    DEMO_EXIT=1 .venv/bin/python scripts/demo.py    # exit after the summary (tests, CI)

It starts a PostgreSQL and a Redis for the example stack (examples/demo/shipyard.yaml), writes
the spec's runtime values to OUT/shipyard.yaml, starts `shipyard serve`, and then drives the
`shipyard` command line — the product's public surface — through every step: deploy v1, a canary
of v2 under load that is promoted by hand, a faulty v3 rolled back by itself, a full backup
verified by a real restore, a DR drill, and the Apricode render (its Argo CD tree included),
capacity and cost. Everything it started is stopped on exit, on Ctrl-C and on a failure.

The driver itself only starts the datastores, seeds them, generates load and reads results;
a step that changes the world is a `shipyard` command.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from shipyard.backup import ScratchPostgres, start_scratch_postgres
from shipyard.host import free_port
from shipyard.rollout import LoadGenerator, LoadReport
from shipyard.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "demo" / "shipyard.yaml"
DEMO_APP = ROOT / "examples" / "demo-app"
APRICODE = ROOT / "examples" / "apricode" / "shipyard.yaml"
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))
ENV = "local"
SERVICE = "web"
PASSWORD_ENV = "SHIPYARD_DEMO_RESTIC_PASSWORD"
LOAD_RATE = 120.0
"""Requests per second sent through HAProxy during each release (the brief: at least 100)."""
RENDERS = ("kubernetes", "kustomize", "helm", "argocd")
"""`render KIND -o OUT/KIND` for Apricode; argocd: the GitOps tree (Applications, add-ons, stack)."""
OPENTOFU_PROVIDERS = ("hetzner", "gcp")
"""Seed 004's cheapest and its GKE option: Apricode's production as OpenTofu on each."""
RUNTIME_DIRS = (
    "postgres",
    "redis",
    "state",
    "backups",
    "uploads",
    "drills",
    "logs",
    "ci",
    "opentofu",
    *RENDERS,
)
"""What a run creates under OUT and the next run removes first (nothing else there is touched)."""


class DemoError(Exception):
    """A step did not do what it should; the message says what happened."""


@dataclass
class StepResult:
    title: str
    outcome: str = "not run"
    seconds: float = 0.0
    ok: bool = False


@dataclass
class Demo:
    out: Path
    exit_after: bool
    steps: list[StepResult] = field(default_factory=list)
    cleanups: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    spec: Path = Path()
    web_port: int = 0
    serve_port: int = 0
    token_file: Path = Path()
    started: float = field(default_factory=time.monotonic)
    postgres: ScratchPostgres | None = None
    serve: subprocess.Popen[bytes] | None = None
    background: list[tuple[Sequence[str], subprocess.Popen[bytes], Path]] = field(default_factory=list)
    """The Apricode commands, started early (see `start_apricode`)."""

    # --- output --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[StepResult]:
        result = StepResult(title)
        self.steps.append(result)
        number = len(self.steps)
        say(f"\n\033[1m== {number}. {title}\033[0m" if _colour() else f"\n== {number}. {title}")
        began = time.monotonic()
        try:
            yield result
        except DemoError as exc:
            result.outcome = f"FAILED: {exc}"
            raise DemoError(f"step {number} ({title}) failed: {exc}") from None
        except Exception as exc:  # a bug or an unexpected state: still say which step
            traceback.print_exc()
            result.outcome = f"FAILED: {type(exc).__name__}: {exc}"
            raise DemoError(f"step {number} ({title}) failed: {type(exc).__name__}: {exc}") from None
        finally:
            result.seconds = time.monotonic() - began
        result.ok = True
        say(f"   -> {result.outcome} ({result.seconds:.1f}s)")

    def cli(
        self, *args: str, check: bool = True, show: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run `shipyard ARGS`, its output shown as it comes and kept; `show=False`: kept only
        (and never quoted in an error: it may hold a secret)."""
        say(f"$ shipyard {' '.join(args)}")
        began = time.monotonic()
        with subprocess.Popen(
            [SHIPYARD, *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as process:
            assert process.stdout is not None
            lines: list[str] = []
            watchdog = threading.Timer(timeout, process.kill)
            watchdog.start()
            try:
                for line in process.stdout:
                    lines.append(line)
                    if show:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                code = process.wait()
            except BaseException:  # interrupted: leaving the block would wait for the command
                process.kill()
                raise
            finally:
                watchdog.cancel()
        text = "".join(lines)
        say(f"   [{time.monotonic() - began:.1f}s, exit {code}]")
        if check and code != 0:
            raise DemoError(f"`shipyard {' '.join(args)}` exited {code}")
        return subprocess.CompletedProcess([SHIPYARD, *args], code, text, "")

    def start_in_background(self, *commands: Sequence[str]) -> None:
        """Start `shipyard` commands now; `show_background` shows their output later, in order."""
        for command in commands:
            say(f"$ shipyard {' '.join(command)} &   (in the background)")
            # To a file, not a pipe: nobody reads it until later, and a full pipe would block.
            log = self.out / "logs" / f"{len(self.background)}-{'-'.join(command[:2])}.log"
            with log.open("w") as output:
                process = subprocess.Popen(
                    [SHIPYARD, *command], cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT
                )
            self.background.append((command, process, log))
        processes = [process for _, process, _ in self.background]

        def stop() -> None:
            for process in processes:
                _terminate(process, 2)

        self.on_exit("the background `shipyard` commands", stop)

    def show_background(self) -> None:
        """Wait for the background commands; show each one's output in turn; fail if one failed."""
        failed: list[str] = []
        for command, process, log in self.background:
            process.wait(timeout=300)
            say(f"$ shipyard {' '.join(command)}")
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
            if process.returncode != 0:
                failed.append(f"`shipyard {' '.join(command)}` exited {process.returncode}")
        self.background.clear()
        if failed:
            raise DemoError("; ".join(failed))

    def on_exit(self, what: str, action: Callable[[], None]) -> None:
        self.cleanups.append((what, action))

    def stop_everything(self) -> None:
        """Run every cleanup, newest first; one that fails does not stop the others."""
        if not self.cleanups:
            return
        say("\n== stopping everything the demo started")
        while self.cleanups:
            what, action = self.cleanups.pop()
            try:
                action()
                say(f"   stopped {what}")
            except Exception as exc:
                say(f"   could not stop {what}: {exc}")

    # --- the steps -----------------------------------------------------------------------------

    def run(self) -> None:
        self.prepare_out()
        self.start_datastores()
        self.start_apricode()
        self.start_server()
        self.deploy_v1()
        self.canary_v2()
        self.faulty_v3()
        self.backup()
        self.drill()
        self.apricode()
        self.summary()

    def prepare_out(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for name in RUNTIME_DIRS:
            shutil.rmtree(self.out / name, ignore_errors=True)
        state_files = ("state.db", "state.db-wal", "state.db-shm", "state.db-journal")
        for name in (*state_files, "admin-token", "restic-password", "shipyard.yaml"):
            (self.out / name).unlink(missing_ok=True)
        (self.out / "logs").mkdir()
        # PostgreSQL runs as the `postgres` user when we are root: it must reach its directory.
        if os.geteuid() == 0:
            for directory in (self.out, *self.out.parents):
                if directory.stat().st_mode & 0o001 == 0:
                    raise DemoError(
                        f"{directory} is not searchable by other users, so PostgreSQL (run as the"
                        f" `postgres` user) cannot reach {self.out}; choose another output directory"
                    )
        self.env = {
            **os.environ,
            "SHIPYARD_DATABASE_URL": f"sqlite:///{self.out / 'state.db'}",
            "SHIPYARD_STATE_DIR": str(self.out / "state"),
            "SHIPYARD_ACTOR": "demo",
            PASSWORD_ENV: secrets.token_urlsafe(24),
        }
        self.env.setdefault("COLUMNS", "120")
        # Kept (never printed) so that the repository can be used with the CLI after the demo.
        _write_private(self.out / "restic-password", self.env[PASSWORD_ENV])

    def start_datastores(self) -> None:
        title = "write the example's runtime spec, start PostgreSQL, Redis and `shipyard serve`"
        with self.step(title) as result:
            pg_port, redis_port = free_port(), free_port()
            self.web_port, self.serve_port = free_port(), free_port()
            uploads = self._write_uploads()
            self.spec = self._write_spec(pg_port, redis_port, uploads)
            say(f"spec: {self.spec} (from {EXAMPLE.relative_to(ROOT)}; valid)")
            self._start_serve()  # it takes seconds to load: meanwhile the datastores start
            self._start_postgres(pg_port)
            self._start_redis(redis_port)
            result.outcome = (
                f"PostgreSQL 127.0.0.1:{pg_port} (3 tables, {self._orders()} orders),"
                f" Redis 127.0.0.1:{redis_port}, uploads in {uploads}"
            )

    def _start_postgres(self, port: int) -> None:
        base = self.out / "postgres"
        try:
            server = start_scratch_postgres(base, port)
        except Exception as exc:
            raise DemoError(f"PostgreSQL did not start: {exc}") from None
        self.on_exit(f"PostgreSQL on port {server.port}", server.stop)
        self.postgres = server
        say(f"PostgreSQL {self._pg('SHOW server_version')} on 127.0.0.1:{server.port}, data in {base}")
        self._pg("CREATE DATABASE demo")
        self._pg(
            "CREATE TABLE customers (id serial PRIMARY KEY, email text UNIQUE NOT NULL);"
            "INSERT INTO customers (email) SELECT 'customer' || g || '@example.com'"
            " FROM generate_series(1, 500) g;"
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),"
            " total numeric(10, 2) NOT NULL, placed_at timestamptz NOT NULL);"
            "INSERT INTO orders (customer_id, total, placed_at) SELECT 1 + g % 500, 5 + g % 97,"
            " now() - g * interval '1 minute' FROM generate_series(1, 5000) g;"
            "CREATE TABLE uploads (id serial PRIMARY KEY, path text NOT NULL);"
            "INSERT INTO uploads (path) VALUES ('avatars/ada.svg'), ('invoices/2026-11.txt');",
            database="demo",
        )

    def _pg(self, sql: str, database: str = "postgres") -> str:
        assert self.postgres is not None
        server = ["-h", "127.0.0.1", "-p", str(self.postgres.port), "-U", self.postgres.user]
        result = subprocess.run(
            [_pg_tool("psql"), *server, "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise DemoError(f"psql: {result.stderr.strip()}")
        return result.stdout.strip()

    def _orders(self) -> str:
        return self._pg("SELECT count(*) FROM orders", database="demo")

    def _start_redis(self, port: int) -> None:
        if shutil.which("redis-server") is None:
            raise DemoError("redis-server is not installed; `make install` installs it")
        directory = self.out / "redis"
        directory.mkdir()
        argv = [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(directory / "log"),
            # Redis otherwise waits 5 s before each RDB transfer, which every backup asks for.
            "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.on_exit(f"Redis on port {port}", lambda: _terminate(process))
        deadline = time.monotonic() + 20
        while _redis(port, "PING") != "PONG":
            if time.monotonic() > deadline or process.poll() is not None:
                raise DemoError(f"redis-server did not start; see {directory / 'log'}")
            time.sleep(0.05)
        commands = [f"SET session:{i} user-{i} EX 86400" for i in range(200)]
        commands += ["HSET cart:42 apples 3 pears 4", "RPUSH jobs:email welcome invoice reminder"]
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(port)],
            input="\n".join(commands) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
        version = _redis(port, "INFO", "server").split("redis_version:")[1].split()[0]
        say(f"Redis {version} on 127.0.0.1:{port}, 202 keys")

    def _write_uploads(self) -> Path:
        uploads = self.out / "uploads"
        (uploads / "avatars").mkdir(parents=True)
        (uploads / "invoices").mkdir()
        (uploads / "avatars" / "ada.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>\n')
        (uploads / "invoices" / "2026-11.txt").write_text("invoice 2026-11: 42.00 EUR\n")
        (uploads / "blob.bin").write_bytes(bytes(range(256)) * 64)
        return uploads

    def _write_spec(self, pg_port: int, redis_port: int, uploads: Path) -> Path:
        """The example with this run's values: ports, directories, absolute paths to the app."""
        data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
        web = data["services"][SERVICE]
        web["port"] = self.web_port
        web["run"] = f"exec {sys.executable} {DEMO_APP / 'app.py'}"
        web["migration"] = [sys.executable, str(DEMO_APP / "migrate.py")]
        # start_scratch_postgres's layout: the server runs as `postgres` when we are root.
        data["datastores"]["db"]["local"] = {"port": pg_port, "data_dir": str(self.out / "postgres" / "data")}
        data["datastores"]["db"]["user"] = (
            "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        )
        data["datastores"]["cache"]["local"] = {"port": redis_port}
        data["backup"]["repository"] = str(self.out / "backups")
        data["backup"]["sources"]["volumes"] = [str(uploads)]
        spec = self.out / "shipyard.yaml"
        header = (
            f"# Written by scripts/demo.py from {EXAMPLE.relative_to(ROOT)} with this run's ports and\n"
            f"# directories. The restic password is read from ${PASSWORD_ENV}.\n"
        )
        spec.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        load_spec(spec).stack(ENV)  # a mistake here is the driver's: say so before anything runs
        return spec

    def _start_serve(self) -> None:
        log = (self.out / "logs" / "serve.log").open("ab")
        say(f"$ shipyard serve --port {self.serve_port} -f {self.spec} -e {ENV}   (output: {log.name})")
        process = subprocess.Popen(
            [SHIPYARD, "serve", "--port", str(self.serve_port), "-f", str(self.spec), "-e", ENV],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.serve = process
        self.on_exit(f"shipyard serve (port {self.serve_port})", lambda: _terminate(process, 15))

    def start_server(self) -> None:
        title = "wait for `shipyard serve` (SQLite state store, local target) to be ready; an admin token"
        with self.step(title) as result:
            assert self.serve is not None
            process = self.serve
            ready = self._wait_ready(process)
            say(f"/readyz: {ready}")
            created = self.cli("flags", "token", "create", "demo-admin", "--scope", "admin", show=False)
            token = created.stdout.strip().splitlines()[-1].strip()
            self.token_file = self.out / "admin-token"
            _write_private(self.token_file, token)
            say(f"admin token 'demo-admin' written to {self.token_file} (mode 0600; not shown)")
            result.outcome = f"serving on http://127.0.0.1:{self.serve_port}, ready"

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> str:
        url = f"http://127.0.0.1:{self.serve_port}/readyz"
        deadline = time.monotonic() + 60
        last = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise DemoError(
                    f"shipyard serve exited {process.returncode}; see {self.out / 'logs' / 'serve.log'}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return f"{response.status} {response.read().decode()[:200]}"
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read().decode()[:200]}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise DemoError(f"{url} did not answer 200 within 60s (last: {last})")

    def deploy_v1(self) -> None:
        title = f"deploy v1 of {SERVICE}: two processes behind HAProxy on 127.0.0.1:{self.web_port}"
        with self.step(title) as result:
            self.on_exit("the web service's processes and HAProxy", self._destroy_target)
            run = self.cli("deploy", SERVICE, "--version", "v1", "-f", str(self.spec), "-e", ENV)
            release, outcome, _ = _ended(run.stdout)
            say(f"GET http://127.0.0.1:{self.web_port}/ -> {_get(f'http://127.0.0.1:{self.web_port}/')}")
            result.outcome = f"v1 live (release {release}, {outcome})"

    def canary_v2(self) -> None:
        title = f"release v2 as a canary under {LOAD_RATE:g} req/s through HAProxy, promote it at the pause"
        with self.step(title) as result, self._load() as load:
            spec = ("-f", str(self.spec), "-e", ENV)
            # `deploy` runs the release here and prints each change of phase; at the pause, a
            # second command promotes it, as an operator would from another terminal.
            say(f"$ shipyard deploy {SERVICE} --version v2 {' '.join(spec)}")
            lines: list[str] = []
            promoted = False
            with subprocess.Popen(
                [SHIPYARD, "deploy", SERVICE, "--version", "v2", *spec],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ) as deploy:
                assert deploy.stdout is not None
                try:
                    for line in deploy.stdout:
                        lines.append(line)
                        sys.stdout.write(line)
                        sys.stdout.flush()
                        if not promoted and line.strip().startswith("paused:"):
                            promoted = True
                            say(f"   the canary waits at `pause: until-promoted`; {_split(load.snapshot())}")
                            self.cli("rollout", "promote", SERVICE, *spec)
                    code = deploy.wait()
                except BaseException:  # interrupted: stop the release where it is (it is recorded)
                    deploy.terminate()
                    raise
            report = load.stop()
            say(f"load during the release: {_load_line(report)}")
            if not promoted:
                raise DemoError("the release never paused for promotion")
            release, outcome, reason = _ended("".join(lines))
            if code != 0 or outcome != "succeeded":
                raise DemoError(f"release {release} ended {outcome}: {reason}")
            answer = _get(f"http://127.0.0.1:{self.web_port}/")
            if '"v2"' not in answer:
                raise DemoError(f"after the promotion the service answers {answer}")
            result.outcome = (
                f"v2 promoted and live (release {release}); load {report.total} requests at"
                f" {report.rate_achieved:.0f} req/s, {report.failed} failed"
            )

    def faulty_v3(self) -> None:
        title = "release a faulty v3 (20 % errors): the canary analysis rolls it back by itself"
        with self.step(title) as result, self._load() as load:
            run = self.cli("deploy", SERVICE, "--version", "v3", "-f", str(self.spec), "-e", ENV, check=False)
            report = load.stop()
            say(f"load during the release: {_load_line(report)}")
            release, outcome, reason = _ended(run.stdout)
            if outcome != "rolled_back":
                raise DemoError(f"v3's release {release} ended {outcome}, not rolled_back: {reason}")
            self.cli("rollout", "history", SERVICE)
            answer = _get(f"http://127.0.0.1:{self.web_port}/")
            say(f"GET http://127.0.0.1:{self.web_port}/ -> {answer}")
            if '"v2"' not in answer:
                raise DemoError(f"after the rollback the service answers {answer}")
            result.outcome = f"v3 rolled back by itself (release {release}): {reason}"

    def backup(self) -> None:
        title = "full backup (PostgreSQL, Redis, uploads) to restic, verified by a real restore"
        with self.step(title) as result:
            self.cli("backup", "full", "-f", str(self.spec), "-e", ENV)
            run = self.cli("backup", "verify", "--latest", "-f", str(self.spec), "-e", ENV)
            verified = re.search(r"^set (\S+): verified.*$", run.stdout, re.MULTILINE)
            if verified is None:
                raise DemoError("`backup verify` did not report the set verified")
            result.outcome = verified.group(0)

    def drill(self) -> None:
        reports = self.out / "drills"
        title = "DR drill `dr test full`: back up, restore every source into scratch, measure RTO/RPO"
        with self.step(title) as result:
            spec = ("-f", str(self.spec), "-e", ENV)
            run = self.cli("dr", "test", "full", *spec, "--report-dir", str(reports), check=False)
            found = sorted(reports.glob("*.json"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise DemoError(f"the drill wrote no report (exit {run.returncode})")
            report = json.loads(found[-1].read_text(encoding="utf-8"))
            verdicts = ", ".join(
                f"{t['name'].upper()} {_seconds(t['achieved_seconds'])} vs target"
                f" {_seconds(t['target_seconds'])}: {t['verdict'].upper()}"
                for t in report.get("targets", [])
                if t["verdict"] != "not set"
            )
            if run.returncode != 0 or not report.get("passed"):
                raise DemoError(f"the drill did not pass: {verdicts or report.get('failed_phase')}")
            result.outcome = f"drill passed: {verdicts}; report {found[-1].with_suffix('.md')}"

    def start_apricode(self) -> None:
        """The Apricode commands need only the CPU, and each spends seconds loading: they run while
        the server starts and v1 is deployed (mostly waits), and show in their own step. Not
        during the canaries, whose analysis compares latencies."""
        spec = ("-f", str(APRICODE))
        self.start_in_background(
            *(("render", kind, *spec, "-o", str(self.out / kind)) for kind in RENDERS),
            ("render", "ci", "--provider", "github", *spec, "-o", str(self.out / "ci")),
            *(
                (
                    "render",
                    "opentofu",
                    "--provider",
                    p,
                    *spec,
                    "-e",
                    "production",
                    "-o",
                    str(self.out / "opentofu" / p),
                )
                for p in OPENTOFU_PROVIDERS
            ),
            ("capacity", *spec, "-e", "production"),
            ("cost", *spec, "-e", "production"),
        )

    def apricode(self) -> None:
        title = (
            "the Apricode example (seed 004): render (Argo CD, CI, OpenTofu too), capacity, cost"
            " (alongside steps 2-3)"
        )
        with self.step(title) as result:
            say("(`render` validates the spec first: nothing is written unless all of it is valid)")
            self.show_background()
            for kind in RENDERS:
                rendered = sorted((self.out / kind).rglob("*.yaml"))
                if not rendered:
                    raise DemoError(f"`render {kind}` wrote no YAML under {self.out / kind}")
                say(f"   {kind}: {len(rendered)} files under {self.out / kind}/")
            apps = sorted((self.out / "argocd" / "apps").glob("*.yaml"))
            workflow = self.out / "ci" / ".github" / "workflows" / "shipyard.yml"
            if not workflow.is_file():
                raise DemoError(f"`render ci` wrote no workflow at {workflow}")
            say(f"   ci: {workflow}")
            for provider in OPENTOFU_PROVIDERS:
                modules = sorted((self.out / "opentofu" / provider).rglob("*.tf"))
                if not modules:
                    raise DemoError(f"`render opentofu --provider {provider}` wrote no .tf file")
                say(f"   opentofu ({provider}): {len(modules)} files under {modules[0].parent.parent}/")
            result.outcome = (
                f"manifests, Kustomize tree, Helm chart and Argo CD tree ({len(apps)} Applications and"
                f" projects, {self.out / 'argocd'}/), the CI workflow and OpenTofu for"
                f" {' and '.join(OPENTOFU_PROVIDERS)} under {self.out}/; production priced"
            )

    def print_steps(self) -> None:
        """One line per step run so far: ok or FAIL, its time, its outcome."""
        say("\n== summary")
        width = max((len(s.title) for s in self.steps), default=0)
        for number, step in enumerate(self.steps, start=1):
            mark = "ok  " if step.ok else "FAIL"
            say(f"{mark} {number}. {step.title:<{width}}  {step.seconds:5.1f}s  {step.outcome}")
        say(f"all steps in {time.monotonic() - self.started:.0f}s")

    def summary(self) -> None:
        self.print_steps()
        say(f"dashboard:   http://127.0.0.1:{self.serve_port}/ui")
        say(f"admin token: in {self.token_file} (mode 0600): log in to the dashboard with it")
        say(f"API:         http://127.0.0.1:{self.serve_port}/docs   metrics: /metrics")
        say(f"web service: http://127.0.0.1:{self.web_port}/")
        say(f"spec:        {self.spec}   state store: {self.out / 'state.db'}")
        say(
            f"try:         export SHIPYARD_DATABASE_URL=sqlite:///{self.out / 'state.db'}"
            f" SHIPYARD_STATE_DIR={self.out / 'state'}"
            f' {PASSWORD_ENV}="$(cat {self.out / "restic-password"})"'
        )
        say(f"             .venv/bin/shipyard rollout history {SERVICE}; .venv/bin/shipyard backup list")

    # --- helpers -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _load(self) -> Iterator[LoadGenerator]:
        load = LoadGenerator(f"http://127.0.0.1:{self.web_port}/", LOAD_RATE, connections=8)
        load.start()
        try:
            yield load
        finally:
            load.stop()

    def _destroy_target(self) -> None:
        # --force: a release interrupted by Ctrl-C still holds its lease for a few seconds.
        self.cli("down", "--force", "-f", str(self.spec), "-e", ENV, check=False, timeout=60)


# --- small helpers ---------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def _write_private(path: Path, secret: str) -> None:
    """`secret` in a file only its owner can read (created so: never readable by others)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as f:
        f.write(secret + "\n")


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def _pg_tool(name: str) -> str:
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name) or name


def _redis(port: int, *command: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *command],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


def _terminate(process: subprocess.Popen[Any], grace_s: float = 10) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return f"{response.status} {response.read().decode().strip()}"
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode().strip()}"
    except OSError as exc:
        raise DemoError(f"GET {url}: {exc}") from None


def _ended(output: str) -> tuple[str, str, str]:
    """(release id, outcome, reason) from the line `release N: OUTCOME (REASON)` a release ends with."""
    found = re.findall(r"^release (\d+): (\w+)(?: \((.*)\))?$", output, re.MULTILINE)
    if not found:
        raise DemoError("the release printed no outcome")
    release, outcome, reason = found[-1]
    return str(release), str(outcome), str(reason)


def _split(report: LoadReport) -> str:
    versions = ", ".join(f"{v}: {s.count}" for v, s in report.by_version.items() if v)
    return f"requests so far by version: {versions}"


def _load_line(report: LoadReport) -> str:
    versions = ", ".join(
        f"{v or 'no answer'} {s.count} ({s.failed} failed)" for v, s in report.by_version.items()
    )
    p99 = "-" if report.p99_ms is None else f"{report.p99_ms:.0f} ms"
    return (
        f"{report.total} requests in {report.duration_s:.1f}s = {report.rate_achieved:.0f} req/s,"
        f" {report.failed} failed ({report.error_rate:.2%}), p99 {p99}; by version: {versions}"
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    return f"{value / 60:.0f}m"


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    out = Path(argv[0] if argv else "out/demo")
    out = (out if out.is_absolute() else ROOT / out).resolve()
    demo = Demo(out=out, exit_after=os.environ.get("DEMO_EXIT", "") not in ("", "0"))
    # Ctrl-C and SIGTERM stop the demo cleanly (SIGINT too when started where it was ignored,
    # e.g. in the background of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    code = 0
    done = False
    try:
        demo.run()
        done = True
        if demo.exit_after:
            say("DEMO_EXIT is set: stopping now")
        else:
            say("\nserving until Ctrl-C")
            while True:
                signal.pause()
    except KeyboardInterrupt:
        say("\nCtrl-C: stopping" if done else "\ninterrupted")
        code = 0 if done else 130  # after the summary, Ctrl-C is how the demo ends
    except DemoError as exc:
        if demo.steps:
            demo.print_steps()
        print(f"\ndemo FAILED: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop_everything()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
