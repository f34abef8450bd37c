"""`dr failover|failback --proxy-socket` with nothing answering at HAProxy's admin socket is a
component that is down: one line naming the socket and what to check, exit 3, no traceback, and
nothing changed (it was a "problem" among the plan's, exit 1). A real HAProxy is started with its
admin socket, answers, and is stopped: the socket it leaves behind, or none, is what is tried."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.rollout.targets.haproxy import HAProxyClient, ProxyPaths, start_haproxy, stop_haproxy
from support.cli import run_cli
from support.servers import free_port

HAPROXY_CFG = """global
    stats socket {socket} mode 600 level admin
    pidfile {pid}
defaults
    mode tcp
    timeout connect 1s
    timeout client 10s
    timeout server 10s
frontend fe_db
    bind 127.0.0.1:{port}
    default_backend db
backend db
    server primary 127.0.0.1:{primary}
    server standby 127.0.0.1:{standby}
"""
SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    local: {{host: 127.0.0.1, port: {primary}, data_dir: {base}/primary}}
    standby: {{host: 127.0.0.1, port: {standby}, data_dir: {base}/standby}}
dr: {{rto: 30s, rpo: 0}}
environments:
  production: {{}}
"""


@pytest.fixture
def stopped_haproxy(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """(the admin socket of an HAProxy that ran and was stopped, its database frontend's port),
    with a spec naming a primary and a standby in `tmp_path`."""
    primary, standby, port = free_port(), free_port(), free_port()
    (tmp_path / "shipyard.yaml").write_text(SPEC.format(primary=primary, standby=standby, base=tmp_path))
    paths = ProxyPaths(tmp_path / "proxy")
    paths.directory.mkdir()
    paths.config.write_text(
        HAPROXY_CFG.format(
            socket=paths.admin_socket, pid=paths.pid_file, port=port, primary=primary, standby=standby
        )
    )
    start_haproxy(paths)
    try:
        assert HAProxyClient(paths.admin_socket).reachable()  # it answered while it ran
    finally:
        stop_haproxy(paths)
    yield paths.admin_socket, port
    with contextlib.suppress(FileNotFoundError):
        paths.admin_socket.unlink()


@pytest.mark.parametrize("socket_left", [True, False], ids=["stale-socket", "no-socket"])
@pytest.mark.parametrize("action", ["failover", "failback"])
def test_a_proxy_socket_nobody_answers_is_one_line_exit_3(
    tmp_path: Path,
    stopped_haproxy: tuple[Path, int],
    action: str,
    socket_left: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI in this process (`shipyard.cli.main`: errors become messages as for a user)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    socket, port = stopped_haproxy
    if not socket_left:
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()
    proxy = ["--proxy-socket", str(socket), "--proxy-address", f"127.0.0.1:{port}"]

    for dry_run in ([], ["--dry-run"]):
        done = run_cli(capsys, "dr", action, *proxy, *dry_run)

        assert done.code == 3, done
        assert "Traceback" not in done.out + done.err
        lines = [line for line in done.err.splitlines() if line.strip()]
        assert len(lines) == 1, done.err
        assert lines[0].startswith(f"error: {action} of db refused, nothing was changed: HAProxy unreachable")
        assert f"at its admin socket {socket}" in lines[0]
        assert "check" in lines[0]
