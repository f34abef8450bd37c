"""Automatic failover with `ha: patroni`: real etcd, Patroni, PostgreSQL 15 and HAProxy on loopback,
started by `shipyard dr ha up` as an operator would, with Patroni's fast test timings (ttl 10 s,
loop_wait 2 s, retry_timeout 4 s) and RPO 0 (Patroni's synchronous mode).

The primary's host dies (SIGKILL to its supervisor, Patroni and every PostgreSQL process) under a
writer committing every 5 ms through HAProxy: writes succeed again with nobody acting, no
acknowledged commit is lost, the old primary comes back as a replica through pg_rewind, and a real
webhook receives `dr.failover`. A switchover goes through `shipyard dr failover`, recorded step by
step. Times are printed, never asserted (`pytest -s` shows them).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from shipyard.dr import HaCluster, HaPasswords, measure_automatic_failover
from shipyard.host import free_port
from shipyard.render import ha_layout
from shipyard.spec import load_spec
from shipyard.state import AuditRow, open_engine, session_factory
from support.webhook import Webhook, webhook_receiver

pytestmark = pytest.mark.integration

PASSWORDS = {
    "DB_PATRONI_SUPERUSER_PASSWORD": "su-9f2c4e1a7b",
    "DB_PATRONI_REPLICATION_PASSWORD": "repl-3d8b6a0c5e",
    "DB_PATRONI_RESTAPI_PASSWORD": "rest-7a1e9c3f2d",
    "DB_PATRONI_ETCD_PASSWORD": "etcd-5c0d8f4b1a",
    "DB_PATRONI_ETCD_ROOT_PASSWORD": "root-2b7f6e3d9c",
}


@dataclass
class Ha:
    """A spec for a Patroni datastore on free loopback ports, and how to run shipyard on it."""

    base: Path
    """The nodes' and etcd's directories (reachable by the postgres and etcd users)."""
    spec: Path
    env: dict[str, str]
    state_db: Path
    state_dir: Path
    ports: dict[str, int]
    webhook: Webhook

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from shipyard.cli import main; main()", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=240,
            check=False,
        )

    def audit(self, action: str) -> list[AuditRow]:
        sessions = session_factory(open_engine(f"sqlite:///{self.state_db}"))
        with sessions() as session:
            return list(
                session.scalars(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))
            )

    def cluster(self) -> HaCluster:
        layout = ha_layout(load_spec(self.spec).stack("production"), "db")
        passwords = HaPasswords.from_environment(layout, environ=self.env)
        return HaCluster(layout, self.state_dir / "ha" / "shop-production" / "db", passwords)


def _ports() -> dict[str, int]:
    names = ("pg1", "rest1", "pg2", "rest2", "etcd", "peer", "write", "read")
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


@pytest.fixture
def ha(tmp_path: Path) -> Iterator[Ha]:
    base = Path(tempfile.mkdtemp(prefix="sy-ha-"))
    base.chmod(0o755)
    p = _ports()
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(
        f"""name: shop
datastores:
  db:
    kind: postgresql
    storage: {{size: 1Gi}}
    ha: patroni
    local: {{host: 127.0.0.1, port: {p["pg1"]}, rest_port: {p["rest1"]}, data_dir: {base}/primary}}
    standby: {{host: 127.0.0.1, port: {p["pg2"]}, rest_port: {p["rest2"]}, data_dir: {base}/standby}}
    patroni:
      ttl: 10
      loop_wait: 2
      retry_timeout: 4
      etcd: [{{host: 127.0.0.1, client_port: {p["etcd"]}, peer_port: {p["peer"]}, data_dir: {base}/etcd}}]
      proxy: {{port: {p["write"]}, read_port: {p["read"]}}}
dr: {{rto: 15m, rpo: 0}}
notifications:
  oncall: {{kind: webhook, url: '${{env:HA_HOOK_URL}}', events: [dr.failover]}}
"""
    )
    with webhook_receiver() as webhook:
        env = {
            **os.environ,
            **PASSWORDS,
            "HA_HOOK_URL": webhook.url,
            "SHIPYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "SHIPYARD_STATE_DIR": str(tmp_path / "state"),
            "SHIPYARD_ACTOR": "drill",
        }
        created = Ha(base, spec, env, tmp_path / "state.db", tmp_path / "state", p, webhook)
        try:
            yield created
        finally:
            down = created.run("dr", "ha", "down", "-f", str(spec))
            shutil.rmtree(base, ignore_errors=True)
            assert down.returncode == 0, down.stderr


def _listening(pids: list[int]) -> list[str]:
    """The local addresses the given processes listen on (from `ss`)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if owners & set(pids):
            found.append(line.split()[3])
    return found


def _steps(rows: list[AuditRow]) -> list[tuple[str, str]]:
    return [((row.before or {})["step"], row.outcome) for row in rows]


def test_patroni_fails_over_by_itself_under_writes_and_the_old_primary_rejoins(ha: Ha) -> None:
    up = ha.run("dr", "ha", "up", "-f", str(ha.spec), "-o", "json")
    assert up.returncode == 0, up.stderr
    status = json.loads(up.stdout)["clusters"][0]
    assert status["leader"] == "primary"
    assert status["healthy"] is True
    assert {m["name"]: m["role"] for m in status["members"]} == {
        "db-primary": "leader",
        "db-standby": "sync_standby",
    }

    # Patroni's REST API, etcd, HAProxy and PostgreSQL listen on loopback only.
    pids = [p["pid"] for p in status["processes"] if p["kind"] in ("etcd", "patroni", "haproxy")]
    pids += [int((ha.base / n / "postmaster.pid").read_text().split()[0]) for n in ("primary", "standby")]
    addresses = _listening(pids)
    assert len(addresses) >= 8  # etcd x2, REST API x2, HAProxy x2, PostgreSQL x2
    assert all(address.startswith("127.0.0.1:") for address in addresses), addresses
    # Unsafe REST endpoints need the password; etcd answers nobody without a user.
    refused = httpx.post(
        f"http://127.0.0.1:{ha.ports['rest1']}/switchover",
        json={"leader": "db-primary", "candidate": "db-standby"},
        timeout=5,
    )
    assert refused.status_code == 401
    key = base64.b64encode(b"/shipyard/").decode()
    anonymous = httpx.post(f"http://127.0.0.1:{ha.ports['etcd']}/v3/kv/range", json={"key": key}, timeout=5)
    assert anonymous.status_code != 200
    assert "user name is empty" in anonymous.text
    # patroni.yml is the postgres user's alone and holds no password.
    for node in ("primary", "standby"):
        config = ha.base / f"{node}.patroni" / "patroni.yml"
        assert config.stat().st_mode & 0o777 == 0o600
        assert not [v for v in PASSWORDS.values() if v in config.read_text()]

    # A switchover through `shipyard dr failover`: Patroni's REST API, recorded step by step.
    switched = ha.run("dr", "failover", "-f", str(ha.spec), "-o", "json")
    assert switched.returncode == 0, switched.stderr
    report = json.loads(switched.stdout)
    assert report["primary"] == "standby"
    assert report["rto_s"] > 0
    print(f"\nswitchover through `shipyard dr failover`: RTO {report['rto_s']} s")
    rows = [row for row in ha.audit("dr.failover") if row.actor == "cli:drill"]
    kinds = ["check", "switchover", "wait-leader", "health", "wait-streaming"]
    assert _steps(rows) == [(kind, outcome) for kind in kinds for outcome in ("started", "ok")]
    assert not [v for v in PASSWORDS.values() if v in switched.stdout + switched.stderr]

    # The host of the primary (now the spec's standby) dies under writes.
    measured = measure_automatic_failover(ha.cluster(), on_step=lambda step: print(f"  {step}"))
    print("automatic failover:", json.dumps(measured.as_dict()))
    assert measured.killed == "standby"
    assert measured.killed_processes >= 5  # supervisor, Patroni, postmaster and its children
    assert measured.new_primary == "primary"
    assert measured.writer_rto_s is not None  # writes succeeded again, nobody acting
    assert measured.probe_rto_s is not None
    assert measured.acknowledged > 100
    assert measured.lost == 0  # synchronous mode: every acknowledged commit is on the new primary
    assert measured.rejoined is True
    assert measured.rewound is True  # the old primary rejoined through pg_rewind
    assert measured.rejoined_as in ("replica", "sync_standby")

    # On-call heard of it: the watcher's dr.failover, paged, and the audit log says Patroni did it.
    deadline = time.monotonic() + 30
    while not [e for e in ha.webhook.events("dr.failover") if e["details"]["automatic"]]:
        assert time.monotonic() < deadline, ha.webhook.received
        time.sleep(0.2)
    events = ha.webhook.events("dr.failover")
    automatic = [e for e in events if e["details"]["automatic"]][-1]
    assert automatic["severity"] == "page"
    assert automatic["details"]["primary"] == "primary"
    assert automatic["details"]["previous"] == "standby"
    requested = [e for e in events if not e["details"]["automatic"]]
    assert requested
    assert requested[0]["severity"] == "info"  # the switchover shipyard was asked for
    by_patroni = [row for row in ha.audit("dr.failover") if row.actor == "patroni"]
    assert [(row.outcome, (row.after or {}).get("primary")) for row in by_patroni] == [
        ("automatic", "primary")
    ]

    after = json.loads(ha.run("dr", "ha", "status", "-f", str(ha.spec), "-o", "json").stdout)["clusters"][0]
    assert after["leader"] == "primary"
    assert after["healthy"] is True


def test_the_failover_drill_kills_a_scratch_copy_and_reports(ha: Ha, tmp_path: Path) -> None:
    planned = ha.run("dr", "test", "failover", "-f", str(ha.spec), "--dry-run", "-o", "json")
    assert planned.returncode == 0, planned.stderr
    assert [p["kind"] for p in json.loads(planned.stdout)["phases"]] == [
        "setup",
        "setup",
        "kill",
        "failover",
        "health",
        "rejoin",
    ]

    ran = ha.run(
        "dr", "test", "failover", "-f", str(ha.spec), "-o", "json", "--report-dir", str(tmp_path / "r")
    )
    assert ran.returncode == 0, ran.stderr + ran.stdout
    data: dict[str, Any] = json.loads(ran.stdout)
    assert data["passed"] is True
    assert [p["status"] for p in data["phases"]] == ["passed"] * 6
    writes = next(p for p in data["phases"] if p["kind"] == "failover")
    lost = next(p for p in data["phases"] if p["kind"] == "health")
    rejoin = next(p for p in data["phases"] if p["kind"] == "rejoin")
    assert ", 0 missing on the new primary (synchronous replication)" in lost["detail"]
    assert "rewound by pg_rewind" in rejoin["detail"]
    assert data["achieved"]["rpo_seconds"] == 0
    assert data["achieved"]["rto_seconds"] > 0
    print(
        f"\nfailover drill: RTO {data['achieved']['rto_seconds']} s; {writes['detail']}; {rejoin['detail']}"
    )
    # A drill never touches the live stack: nothing of the spec's own cluster was started.
    assert not (ha.base / "primary").exists()
    assert not ha.webhook.events("dr.failover")
