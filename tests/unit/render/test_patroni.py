"""`ha: patroni` rendered: each node's patroni.yml, etcd's command line, HAProxy's listen sections."""

from __future__ import annotations

import textwrap

import yaml

from shipyard.render import (
    PATRONI_PASSWORD_ENV,
    etcd_argv,
    ha_layout,
    haproxy_listen_sections,
    patroni_config,
    patroni_environment,
    patroni_yaml,
    scratch_layout,
)
from shipyard.spec import Stack, load_spec_text

SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    ha: patroni
    settings: {max_connections: 200}
    local: {host: 10.0.0.11, port: 5432, rest_port: 8008, data_dir: /srv/pg/primary}
    standby: {host: 10.0.0.12, port: 5432, rest_port: 8008, data_dir: /srv/pg/standby}
    patroni:
      etcd:
        - {host: 10.0.0.11, data_dir: /srv/etcd}
        - {host: 10.0.0.12, data_dir: /srv/etcd}
        - {host: 10.0.0.13, data_dir: /srv/etcd}
      proxy: {host: 10.0.0.10, port: 5000, read_port: 5001}
dr: {rto: 15m, rpo: RPO}
"""


def stack(rpo: str = "0", spec: str = SPEC) -> Stack:
    return load_spec_text(spec.replace("RPO", rpo)).stack("production")


def _keys(tree: object) -> set[str]:
    """Every mapping key anywhere in a parsed YAML tree."""
    if isinstance(tree, dict):
        return set(tree) | {k for value in tree.values() for k in _keys(value)}
    if isinstance(tree, list):
        return {k for item in tree for k in _keys(item)}
    return set()


def test_synchronous_mode_follows_the_rpo() -> None:
    for rpo, synchronous in (("0", True), ("5m", False)):
        layout = ha_layout(stack(rpo), "db")
        dcs = patroni_config(layout, layout.nodes[0])["bootstrap"]["dcs"]
        assert layout.synchronous is synchronous
        assert dcs["synchronous_mode"] is synchronous
        assert dcs["synchronous_mode_strict"] is False  # a lone primary keeps taking writes


def test_patronis_defaults_and_what_pg_rewind_needs() -> None:
    layout = ha_layout(stack(), "db")
    dcs = patroni_config(layout, layout.nodes[0])["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (30, 10, 10)
    assert dcs["postgresql"]["use_pg_rewind"] is True
    parameters = dcs["postgresql"]["parameters"]
    assert parameters["wal_log_hints"] == "on"
    assert parameters["max_connections"] == 200  # the spec's settings go to every node


def test_every_listener_is_the_nodes_own_address() -> None:
    layout = ha_layout(stack(), "db")
    standby = layout.node("standby")
    config = patroni_config(layout, standby)
    assert config["name"] == "db-standby"
    assert config["restapi"]["listen"] == config["restapi"]["connect_address"] == "10.0.0.12:8008"
    assert config["postgresql"]["listen"] == config["postgresql"]["connect_address"] == "10.0.0.12:5432"
    assert config["etcd3"]["hosts"] == ["10.0.0.11:2379", "10.0.0.12:2379", "10.0.0.13:2379"]
    assert config["restapi"]["allowlist"] == ["10.0.0.10", "10.0.0.11", "10.0.0.12", "127.0.0.1"]
    hba = config["postgresql"]["pg_hba"]
    assert "host replication replicator 10.0.0.12/32 scram-sha-256" in hba
    assert "host all all 10.0.0.10/32 scram-sha-256" in hba  # the proxy: the app's way in
    assert not any("0.0.0.0" in line or " all all all" in line or "trust" in line for line in hba)


def test_authentication_is_on_with_no_password_in_the_file() -> None:
    layout = ha_layout(stack(), "db")
    text = patroni_yaml(layout, layout.nodes[0])
    config = yaml.safe_load(text)
    assert config["restapi"]["authentication"] == {"username": "shipyard"}
    assert config["etcd3"]["username"] == "patroni"
    assert config["postgresql"]["authentication"] == {
        "superuser": {"username": "postgres"},
        "replication": {"username": "replicator"},
    }
    assert _keys(config) & {"password", "passwd"} == set()
    passwords = {
        role: f"secret-{role}" for role in ("superuser", "replication", "restapi", "etcd", "etcd_root")
    }
    env = patroni_environment(layout, passwords)  # type: ignore[arg-type]
    assert env["PATRONI_SUPERUSER_PASSWORD"] == "secret-superuser"
    assert env["PATRONI_ETCD3_PASSWORD"] == "secret-etcd"
    # Patroni reads PATRONI_ETCD3_PASSWORD only beside another PATRONI_ETCD3_* variable.
    assert env["PATRONI_ETCD3_PROTOCOL"] == "http"
    assert "secret-etcd_root" not in env.values()  # etcd's root password is shipyard's alone
    assert set(PATRONI_PASSWORD_ENV.values()) <= set(env)


def test_secret_references_default_per_datastore() -> None:
    layout = ha_layout(stack(), "db")
    fields = {secret.role: (secret.field, secret.reference) for secret in layout.secrets}
    field, reference = fields["superuser"]
    assert field == "datastores.db.patroni.superuser_password"
    assert getattr(reference, "env_name", None) == "DB_PATRONI_SUPERUSER_PASSWORD"
    assert getattr(fields["etcd_root"][1], "env_name", None) == "DB_PATRONI_ETCD_ROOT_PASSWORD"


def test_etcd_listens_on_its_member_address_only() -> None:
    layout = ha_layout(stack(), "db")
    argv = etcd_argv(layout, layout.etcd[1])
    assert "--listen-client-urls=http://10.0.0.12:2379" in argv
    assert "--listen-peer-urls=http://10.0.0.12:2380" in argv
    assert "--enable-v2=false" in argv
    cluster = next(a for a in argv if a.startswith("--initial-cluster="))
    assert cluster.count("http://") == 3
    assert not [a for a in argv if "0.0.0.0" in a or "localhost" in a]


def test_haproxy_routes_writes_to_primary_and_reads_to_replicas() -> None:
    layout = ha_layout(stack(), "db")
    text = haproxy_listen_sections(layout)
    write, read = text.split("\n\n")
    assert write.startswith("listen db_primary\n    bind 10.0.0.10:5000")
    assert "http-check send meth OPTIONS uri /primary" in write
    assert read.startswith("listen db_replicas\n    bind 10.0.0.10:5001")
    assert "http-check send meth OPTIONS uri /replica" in read
    for section in (write, read):
        assert "option httpchk" in section
        assert "http-check expect status 200" in section
        assert "on-marked-down shutdown-sessions" in section
        assert "inter 1s fastinter 500ms downinter 500ms fall 2 rise 1" in section
        assert "server db-primary 10.0.0.11:5432 check port 8008" in section
        assert "server db-standby 10.0.0.12:5432 check port 8008" in section


def test_more_standbys_and_ipv6() -> None:
    spec = textwrap.dedent(
        """\
        name: shop
        datastores:
          db:
            kind: postgresql
            storage: {size: 1Gi}
            ha: patroni
            local: {host: "fd00::1", data_dir: /a}
            standby: {host: "fd00::2", data_dir: /b}
            standbys: [{host: "fd00::3", data_dir: /c, rest_port: 8010}]
            patroni:
              etcd: [{host: "fd00::1", data_dir: /e}]
              proxy: null
        """
    )
    layout = ha_layout(load_spec_text(spec).stack("production"), "db")
    assert [(n.role, n.member) for n in layout.nodes] == [
        ("primary", "db-primary"),
        ("standby", "db-standby"),
        ("standby-2", "db-standby-2"),
    ]
    assert layout.node("standby-2").rest_address == "[fd00::3]:8010"
    assert "--listen-client-urls=http://[fd00::1]:2379" in etcd_argv(layout, layout.etcd[0])
    assert layout.synchronous is False  # no dr: section, no RPO 0
    assert (
        "host all all fd00::3/128 scram-sha-256"
        in patroni_config(layout, layout.nodes[0])["postgresql"]["pg_hba"]
    )


def test_a_scratch_copy_keeps_the_timings_on_loopback() -> None:
    layout = ha_layout(stack(), "db")
    ports = iter(range(40000, 40100))
    copy = scratch_layout(layout, "/tmp/drill", ports)
    assert (copy.ttl, copy.loop_wait, copy.synchronous, copy.parameters) == (
        layout.ttl,
        layout.loop_wait,
        True,
        layout.parameters,
    )
    hosts = (
        {n.host for n in copy.nodes} | {m.host for m in copy.etcd} | {copy.proxy.host if copy.proxy else ""}
    )
    assert hosts == {"127.0.0.1"}
    used = [p for n in copy.nodes for p in (n.port, n.rest_port)] + [
        p for m in copy.etcd for p in (m.client_port, m.peer_port)
    ]
    assert len(set(used)) == len(used)
    assert [n.data_dir for n in copy.nodes] == ["/tmp/drill/primary", "/tmp/drill/standby"]
    assert copy.nodes[0].runtime_dir == "/tmp/drill/primary.patroni"
    # A short runtime directory holds PostgreSQL's socket; a long one would not fit sockaddr_un.
    assert patroni_config(copy, copy.nodes[0])["postgresql"]["parameters"]["unix_socket_directories"] == (
        "/tmp/drill/primary.patroni"
    )
    long = scratch_layout(layout, "/tmp/" + "x" * 90, iter(range(41000, 41100)))
    assert patroni_config(long, long.nodes[0])["postgresql"]["parameters"]["unix_socket_directories"] == ""
