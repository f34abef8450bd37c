"""Every component shipyard cannot reach is one line from the real CLI, naming the component, its
address and what to check, with exit code 3 (`UnavailableError`): never a traceback, never a secret.

The CLI runs in this process (`shipyard.cli.main`, errors turned into messages exactly as for a
user), except for the release: a local target's log reader would outlive the command here, so that
one is a `shipyard` process.

Each component is real and down: a port on loopback that nothing listens on (the restic REST and
S3 backends, PostgreSQL, Redis, the Kubernetes API server), a local repository's directory that is
not there, and a running HAProxy whose admin socket is gone (a cleaner of /tmp removed it).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.rollout.targets.haproxy import ProxyPaths, render_haproxy_config, start_haproxy, stop_haproxy
from shipyard.spec import load_spec
from support.backup_stack import SHIPYARD
from support.kube_api import TOKEN, write_kubeconfig
from support.servers import free_port

RESTIC_PASSWORD = "restic-secret-horse-battery"
PG_PASSWORD = "pg-secret-staple-42"
REDIS_PASSWORD = "redis-secret-correct-7"
S3_SECRET = "s3-secret-access-key-0123456789"
SECRETS = (RESTIC_PASSWORD, PG_PASSWORD, REDIS_PASSWORD, S3_SECRET, TOKEN)

BACKUP_SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    database: app
    user: app
    local: {{port: {pg_port}}}
  cache:
    kind: redis
    password: {{secretRef: cache-credentials/password}}
    local: {{port: {redis_port}}}
backup:
  repository: {repository}
  password: ${{env:RESTIC_PASSWORD}}
  credentials:
    access_key_id: ${{env:S3_KEY_ID}}
    secret_access_key: ${{env:S3_SECRET}}
  sources:
    datastores: [db, cache]
    volumes: [{files}]
environments:
  test: {{}}
"""

SERVICES_SPEC = """\
name: shop
services:
  web: {{role: web, {how}, port: {port}}}
environments:
  test: {{}}
"""


@dataclass(frozen=True)
class Said:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one line the CLI printed on stderr (asserting there is exactly one)."""
        lines = [line for line in self.err.splitlines() if line.strip()]
        assert len(lines) == 1, self.err
        return lines[0]


def _environ(workdir: Path) -> dict[str, str]:
    return {
        "SHIPYARD_STATE_DIR": str(workdir / ".shipyard"),
        "SHIPYARD_DATABASE_URL": f"sqlite:///{workdir / 'state.db'}",
        "RESTIC_PASSWORD": RESTIC_PASSWORD,
        "DB_CREDENTIALS_PASSWORD": PG_PASSWORD,
        "CACHE_CREDENTIALS_PASSWORD": REDIS_PASSWORD,
        "S3_KEY_ID": "shipyard-test-key",
        "S3_SECRET": S3_SECRET,
    }


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("alpha\n")
    return tmp_path


@pytest.fixture
def shipyard(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Said]:
    """`shipyard ARGS` in this process, in `workdir`, with what it printed."""
    monkeypatch.chdir(workdir)
    for name, value in _environ(workdir).items():
        monkeypatch.setenv(name, value)

    def run(*args: str) -> Said:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Said(code, out, err)

    return run


def _shipyard_process(workdir: Path, *args: str) -> Said:
    done = subprocess.run(
        [SHIPYARD, *args],
        cwd=workdir,
        env={**os.environ, **_environ(workdir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Said(done.returncode, done.stdout, done.stderr)


def _assert_unavailable(said: Said, *named: str) -> str:
    assert said.code == 3, said
    assert "Traceback" not in said.out + said.err
    for secret in SECRETS:
        assert secret not in said.out + said.err
    line = said.error
    assert line.startswith("error: "), line
    for part in named:
        assert part in line, line
    assert "check" in line, line  # and what to check
    return line


def _backup_spec(workdir: Path, *, repository: str, pg_port: int = 0, redis_port: int = 0) -> Path:
    spec = workdir / "shipyard.yaml"
    spec.write_text(
        BACKUP_SPEC.format(
            repository=repository,
            pg_port=pg_port or free_port(),
            redis_port=redis_port or free_port(),
            files=workdir / "files",
        )
    )
    return spec


# --- the backup repository ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["rest", "s3"])
def test_a_repository_server_that_is_down(workdir: Path, shipyard: Callable[..., Said], backend: str) -> None:
    port = free_port()
    repository = (
        f"rest:http://127.0.0.1:{port}/" if backend == "rest" else f"s3:http://127.0.0.1:{port}/bucket/repo"
    )
    _backup_spec(workdir, repository=repository)
    line = _assert_unavailable(
        shipyard("backup", "files"), f"cannot reach the restic repository at {repository}"
    )
    assert "connection refused" in line
    assert "Is there a repository" not in line  # restic's question would send people the wrong way


def test_a_local_repository_whose_directory_is_not_there(
    workdir: Path, shipyard: Callable[..., Said]
) -> None:
    repository = workdir / "unmounted" / "repo"
    _backup_spec(workdir, repository=str(repository))
    line = _assert_unavailable(
        shipyard("backup", "list", "--from-repository"), f"restic repository at {repository}"
    )
    assert "mounted" in line


# --- the datastores a backup reads ------------------------------------------------------------


def test_a_postgresql_datastore_that_is_down(workdir: Path, shipyard: Callable[..., Said]) -> None:
    port = free_port()
    _backup_spec(workdir, repository="./repo", pg_port=port)
    line = _assert_unavailable(
        shipyard("backup", "database"), f"PostgreSQL at 127.0.0.1:{port}/app", "datastores.db.local"
    )
    assert "Connection refused" in line


def test_a_redis_datastore_that_is_down(workdir: Path, shipyard: Callable[..., Said]) -> None:
    port = free_port()
    _backup_spec(workdir, repository="./repo", redis_port=port)
    line = _assert_unavailable(
        shipyard("backup", "redis"), f"Redis at 127.0.0.1:{port}", "datastores.cache.local"
    )
    assert "Connection refused" in line


# --- the Kubernetes API -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        'image: "example/web:1"',
        # No workload to read back: this printed an empty table "at" the dead server, and exit 0.
        'run: "exec python3 -m http.server 8080"',
    ],
    ids=["workloads", "no-workloads"],
)
def test_a_kubernetes_api_server_that_is_down(workdir: Path, shipyard: Callable[..., Said], how: str) -> None:
    (workdir / "shipyard.yaml").write_text(SERVICES_SPEC.format(how=how, port=8080))
    server = f"http://127.0.0.1:{free_port()}"
    kubeconfig = write_kubeconfig(workdir / "kubeconfig", {"down": server}, current="down")
    said = shipyard("status", "-e", "test", "--kubeconfig", str(kubeconfig))
    assert said.out == ""  # no table
    _assert_unavailable(said, f"the Kubernetes API at {server} is unreachable", "--kubeconfig")


# --- HAProxy's admin socket --------------------------------------------------------------------


@pytest.fixture
def haproxy_without_its_socket(workdir: Path) -> Iterator[Path]:
    """HAProxy started as the local target starts it, then its admin socket removed: it runs, and
    nothing answers at the socket's path. The path, while HAProxy runs."""
    spec = workdir / "shipyard.yaml"
    spec.write_text(SERVICES_SPEC.format(how='run: "exec python3 -m http.server $PORT"', port=free_port()))
    stack = load_spec(spec).stack("test")
    paths = ProxyPaths(workdir / ".shipyard" / "local" / "shop-test" / "proxy")  # Workspace.local_state
    paths.directory.mkdir(parents=True)
    paths.config.write_text(render_haproxy_config(stack, paths.directory))
    start_haproxy(paths)
    try:
        paths.admin_socket.unlink()
        yield paths.admin_socket
    finally:
        stop_haproxy(paths)


def test_haproxy_whose_admin_socket_does_not_answer(workdir: Path, haproxy_without_its_socket: Path) -> None:
    said = _shipyard_process(workdir, "deploy", "web", "--version", "v2", "-e", "test")
    _assert_unavailable(said, f"HAProxy unreachable at its admin socket {haproxy_without_its_socket}")
