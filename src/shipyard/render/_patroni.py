"""A Patroni datastore (`ha: patroni`) as files and command lines: `patroni.yml` per node, etcd's
arguments per member, and HAProxy's `listen` sections. Pure: no clock, no process, no network.

    layout = ha_layout(stack, "db")               # nodes, etcd members, proxy, Patroni timings
    patroni_yaml(layout, layout.nodes[0])         # that node's patroni.yml (no password in it)
    patroni_environment(layout, secrets)          # the PATRONI_* variables that carry the passwords
    etcd_argv(layout, layout.etcd[0])             # `etcd --name … --listen-client-urls http://…`
    haproxy_config(layout, admin_socket=…)        # writes to /primary, reads to /replica

Every address is the spec's (checked to be loopback or private by `spec`'s checks); nothing listens
on a wildcard. Passwords never reach a rendered file: Patroni reads them from its environment
(`PATRONI_SUPERUSER_PASSWORD`, …), which the runtime fills from the spec's secret references.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import UserError
from ..spec import PATRONI_REST_PORT, EtcdMember, PlainHost, Postgres, SecretRef, Stack
from ._yaml import dump

SecretRole = Literal["superuser", "replication", "restapi", "etcd", "etcd_root"]
SECRET_ROLES: tuple[SecretRole, ...] = ("superuser", "replication", "restapi", "etcd", "etcd_root")
_SECRET_FIELD: dict[SecretRole, str] = {
    "superuser": "superuser_password",
    "replication": "replication_password",
    "restapi": "restapi_password",
    "etcd": "etcd_password",
    "etcd_root": "etcd_root_password",
}
PATRONI_PASSWORD_ENV: dict[SecretRole, str] = {
    "superuser": "PATRONI_SUPERUSER_PASSWORD",
    "replication": "PATRONI_REPLICATION_PASSWORD",
    "restapi": "PATRONI_RESTAPI_PASSWORD",
    "etcd": "PATRONI_ETCD3_PASSWORD",
}
"""Where Patroni reads each password from (Patroni's environment configuration); etcd's root
password is shipyard's alone."""
ETCD_USER = "patroni"
"""etcd's user for Patroni: read and write under the datastore's keys, nothing else."""

REQUIRED_PARAMETERS: dict[str, str] = {"wal_log_hints": "on"}
"""What pg_rewind needs, whatever the spec's `settings` say (the spec's checks refuse `off`)."""
DEFAULT_PARAMETERS: dict[str, str | int] = {
    "wal_level": "replica",
    "hot_standby": "on",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "128MB",
    "password_encryption": "scram-sha-256",
}
MAX_LAG_ON_FAILOVER = 1024 * 1024
"""Patroni's default: an asynchronous replica further behind than this is not promoted."""
_UNIX_SOCKET_MAX = 100
"""A PostgreSQL socket path (`<dir>/.s.PGSQL.<port>`) must stay under sockaddr_un's 108 bytes."""


@dataclass(frozen=True)
class HaNode:
    """One PostgreSQL server run by Patroni, named by its place in the spec."""

    role: str
    """`primary` (the spec's `local`), `standby`, `standby-2`, … — the names reports use."""
    member: str
    """Patroni's member name (`<datastore>-<role>`): its REST API, the DCS and
    `application_name` call the node this."""
    host: str
    port: int
    rest_port: int
    data_dir: str
    field: str
    """The spec's field for this node, e.g. `datastores.db.standby`, for messages."""

    @property
    def address(self) -> str:
        return f"{_url_host(self.host)}:{self.port}"

    @property
    def rest_address(self) -> str:
        return f"{_url_host(self.host)}:{self.rest_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.rest_address}"

    @property
    def runtime_dir(self) -> str:
        """Beside the data directory, owned by the same OS user: patroni.yml, Patroni's pgpass and
        PostgreSQL's socket (a place that user can reach, which a root-owned state directory is not)."""
        return f"{self.data_dir.rstrip('/')}.patroni"

    @property
    def config_path(self) -> str:
        return f"{self.runtime_dir}/patroni.yml"


@dataclass(frozen=True)
class EtcdNode:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: str
    field: str

    @property
    def client_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.peer_port}"

    @property
    def client_address(self) -> str:
        return f"{_url_host(self.host)}:{self.client_port}"


@dataclass(frozen=True)
class ProxyListen:
    host: str
    port: int
    read_port: int | None
    check_interval: int
    """Seconds between health checks of a node in a steady state."""

    @property
    def address(self) -> str:
        return f"{_url_host(self.host)}:{self.port}"


@dataclass(frozen=True)
class HaSecret:
    """Where one password of the cluster comes from (the value is the runtime's business)."""

    role: SecretRole
    field: str
    """The spec's field, e.g. `datastores.db.patroni.superuser_password`, for messages."""
    reference: SecretRef | str
    """A secretRef, or `${env:NAME}`."""


@dataclass(frozen=True)
class HaLayout:
    """A Patroni datastore as the spec describes it: every process, address and setting."""

    stack: str
    environment: str
    datastore: str
    version: str
    nodes: tuple[HaNode, ...]
    """The spec's primary first, then `standby`, then `standbys`."""
    etcd: tuple[EtcdNode, ...]
    proxy: ProxyListen | None
    ttl: int
    loop_wait: int
    retry_timeout: int
    synchronous: bool
    """The spec's RPO is 0: Patroni's `synchronous_mode`, a commit waits for a replica."""
    superuser: str
    replication_user: str
    restapi_user: str
    secrets: tuple[HaSecret, ...]
    parameters: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    """PostgreSQL settings for every node (Patroni keeps them in the DCS)."""
    rto_target_s: int | None = None

    @property
    def scope(self) -> str:
        """Patroni's cluster name."""
        return self.datastore

    @property
    def namespace(self) -> str:
        """etcd's key prefix for this stack and environment; the cluster's keys are under
        `<namespace><scope>/`."""
        name = f"{self.stack}-{self.environment}" if self.environment else self.stack
        return f"/shipyard/{name}/"

    @property
    def key_prefix(self) -> str:
        """Every key Patroni writes for this datastore (etcd's `patroni` user may touch only these)."""
        return f"{self.namespace}{self.scope}/"

    @property
    def bin_dir(self) -> str:
        return f"/usr/lib/postgresql/{self.version}/bin"

    def node(self, name: str) -> HaNode:
        """A node by its role (`primary`, `standby`) or Patroni member name."""
        for node in self.nodes:
            if name in (node.role, node.member):
                return node
        known = ", ".join(node.role for node in self.nodes)
        raise UserError(f"datastores.{self.datastore} has no node {name!r} (its nodes: {known})")

    def member_role(self, member: str) -> str:
        """The spec's name of a Patroni member (the member name itself when unknown)."""
        return next((node.role for node in self.nodes if node.member == member), member)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _cidr(host: str) -> str:
    address = ipaddress.ip_address(host)
    return f"{address.compressed}/{address.max_prefixlen}"


# --- from the spec -------------------------------------------------------------------------------


def ha_layout(stack: Stack, datastore: str) -> HaLayout:
    """The Patroni datastore `datastore` of `stack`; UserError naming the field when it is not one."""
    store = stack.datastores.get(datastore)
    if not isinstance(store, Postgres):
        known = ", ".join(n for n, d in stack.datastores.items() if isinstance(d, Postgres)) or "none"
        raise UserError(f"datastores.{datastore}: no such PostgreSQL datastore (these are: {known})")
    base = f"datastores.{datastore}"
    if store.ha != "patroni" or store.patroni is None:
        raise UserError(
            f"{base}.ha is {store.ha!r}: set ha: patroni and patroni.etcd for automatic failover"
            if store.ha != "patroni"
            else f"{base}.patroni is not set: ha: patroni needs patroni.etcd"
        )
    if store.standby is None:
        raise UserError(f"{base}.standby is not set: ha: patroni needs a replica to fail over to")
    patroni = store.patroni
    hosts: list[tuple[str, str, PlainHost]] = [("primary", f"{base}.local", store.local)]
    hosts.append(("standby", f"{base}.standby", store.standby))
    hosts += [(f"standby-{i + 2}", f"{base}.standbys[{i}]", h) for i, h in enumerate(store.standbys)]
    nodes = []
    for role, where, host in hosts:
        if host.data_dir is None:
            raise UserError(f"{where}.data_dir is not set: ha: patroni needs each node's data directory")
        nodes.append(
            HaNode(
                role=role,
                member=f"{datastore}-{role}",
                host=host.host,
                port=host.port or store.port,
                rest_port=host.rest_port or PATRONI_REST_PORT,
                data_dir=host.data_dir,
                field=where,
            )
        )
    etcd = tuple(_etcd_node(datastore, index, member, base) for index, member in enumerate(patroni.etcd))
    proxy = patroni.proxy
    secrets = []
    for role in SECRET_ROLES:
        name = _SECRET_FIELD[role]
        given: SecretRef | str | None = getattr(patroni, name)
        reference = given or SecretRef.model_validate(
            {"secretRef": f"{datastore}-patroni/{name.replace('_', '-')}"}
        )
        secrets.append(HaSecret(role, f"{base}.patroni.{name}", reference))
    return HaLayout(
        stack=stack.name,
        environment=stack.environment,
        datastore=datastore,
        version=store.version,
        nodes=tuple(nodes),
        etcd=etcd,
        proxy=None
        if proxy is None
        else ProxyListen(proxy.host, proxy.port, proxy.read_port, proxy.check_interval),
        ttl=patroni.ttl,
        loop_wait=patroni.loop_wait,
        retry_timeout=patroni.retry_timeout,
        synchronous=stack.dr is not None and stack.dr.rpo == 0,
        superuser=patroni.superuser,
        replication_user=patroni.replication_user,
        restapi_user=patroni.restapi_user,
        secrets=tuple(secrets),
        parameters={**DEFAULT_PARAMETERS, **store.settings, **REQUIRED_PARAMETERS},
        rto_target_s=stack.dr.rto if stack.dr is not None else None,
    )


def _etcd_node(datastore: str, index: int, member: EtcdMember, base: str) -> EtcdNode:
    return EtcdNode(
        name=f"{datastore}-etcd-{index}",
        host=member.host,
        client_port=member.client_port,
        peer_port=member.peer_port,
        data_dir=member.data_dir,
        field=f"{base}.patroni.etcd[{index}]",
    )


def ha_datastores(stack: Stack) -> list[str]:
    """The stack's `ha: patroni` datastores, in the spec's order."""
    return [n for n, d in stack.datastores.items() if isinstance(d, Postgres) and d.ha == "patroni"]


def scratch_layout(layout: HaLayout, base_dir: str, ports: Iterator[int]) -> HaLayout:
    """The same cluster (nodes, timings, synchronous mode, settings) on loopback, on the given
    free ports, with every directory under `base_dir`: what a drill fails over instead of the
    live one. `ports` must yield enough distinct ports (two per node and etcd member, two for
    the proxy)."""
    base = base_dir.rstrip("/")
    nodes = tuple(
        replace(
            node,
            host="127.0.0.1",
            port=next(ports),
            rest_port=next(ports),
            data_dir=f"{base}/{node.role}",
            field=f"(scratch) {node.field}",
        )
        for node in layout.nodes
    )
    etcd = tuple(
        replace(
            member,
            host="127.0.0.1",
            client_port=next(ports),
            peer_port=next(ports),
            data_dir=f"{base}/etcd-{index}",
            field=f"(scratch) {member.field}",
        )
        for index, member in enumerate(layout.etcd)
    )
    check = layout.proxy.check_interval if layout.proxy is not None else 1
    proxy = ProxyListen("127.0.0.1", next(ports), next(ports), check)
    return replace(layout, nodes=nodes, etcd=etcd, proxy=proxy)


# --- patroni.yml ---------------------------------------------------------------------------------


def _client_addresses(layout: HaLayout) -> list[str]:
    """Where connections to PostgreSQL and Patroni's unsafe endpoints may come from: loopback,
    the nodes (replication, pg_rewind, Patroni itself) and the proxy (the app)."""
    hosts = ["127.0.0.1", *(node.host for node in layout.nodes)]
    if layout.proxy is not None:
        hosts.append(layout.proxy.host)
    return sorted({ipaddress.ip_address(host).compressed for host in hosts})


def pg_hba(layout: HaLayout) -> list[str]:
    """Password (SCRAM) authentication from the cluster's own addresses only; peer on the socket."""
    lines = ["local all all peer"]
    node_hosts = sorted({ipaddress.ip_address(node.host).compressed for node in layout.nodes})
    lines += [f"host replication {layout.replication_user} {_cidr(h)} scram-sha-256" for h in node_hosts]
    lines += [f"host all all {_cidr(h)} scram-sha-256" for h in _client_addresses(layout)]
    return lines


def patroni_config(layout: HaLayout, node: HaNode) -> dict[str, Any]:
    """One node's Patroni configuration (its `patroni.yml`), without a password."""
    socket_dir = node.runtime_dir if len(node.runtime_dir) + 16 <= _UNIX_SOCKET_MAX else ""
    return {
        "scope": layout.scope,
        "namespace": layout.namespace,
        "name": node.member,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": node.rest_address,
            "connect_address": node.rest_address,
            # Unsafe endpoints (switchover, failover, config) need the password (from
            # PATRONI_RESTAPI_PASSWORD) and come from the cluster's own addresses.
            "authentication": {"username": layout.restapi_user},
            "allowlist": _client_addresses(layout),
            "allowlist_include_members": True,
        },
        "etcd3": {
            "hosts": [member.client_address for member in layout.etcd],
            "protocol": "http",
            "username": ETCD_USER,
        },
        "bootstrap": {
            "dcs": dynamic_config(layout),
            "initdb": [{"encoding": "UTF8"}, {"auth-local": "peer"}, {"auth-host": "scram-sha-256"}],
        },
        "postgresql": {
            "listen": node.address,
            "connect_address": node.address,
            "data_dir": node.data_dir,
            "bin_dir": layout.bin_dir,
            "pgpass": f"{node.runtime_dir}/pgpass",
            "authentication": {
                "superuser": {"username": layout.superuser},
                "replication": {"username": layout.replication_user},
            },
            "parameters": {"unix_socket_directories": socket_dir},
            "pg_hba": pg_hba(layout),
            "use_unix_socket": False,
            "basebackup": {"checkpoint": "fast"},
            "remove_data_directory_on_rewind_failure": False,
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
    }


def dynamic_config(layout: HaLayout) -> dict[str, Any]:
    """What Patroni keeps in the DCS for the whole cluster: written at bootstrap, and what
    `PATCH /config` brings an existing cluster back to when the spec changed."""
    return {
        "ttl": layout.ttl,
        "loop_wait": layout.loop_wait,
        "retry_timeout": layout.retry_timeout,
        "maximum_lag_on_failover": MAX_LAG_ON_FAILOVER,
        # RPO 0: a commit returns once a replica has it, and only such a replica is promoted.
        # Not strict: a primary left alone keeps accepting writes rather than stop the app.
        "synchronous_mode": layout.synchronous,
        "synchronous_mode_strict": False,
        "synchronous_node_count": 1,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": dict(sorted(layout.parameters.items())),
        },
    }


def patroni_yaml(layout: HaLayout, node: HaNode) -> str:
    return "# Rendered by shipyard (`shipyard dr ha up`); passwords come from the environment.\n" + dump(
        patroni_config(layout, node)
    )


def patroni_environment(layout: HaLayout, passwords: Mapping[SecretRole, str]) -> dict[str, str]:
    """The PATRONI_* variables that hand Patroni its passwords (given, resolved, by the caller).

    PATRONI_ETCD3_PROTOCOL is there because Patroni reads PATRONI_ETCD3_PASSWORD only when
    another PATRONI_ETCD3_* variable is set; a PATRONI_<X>_PASSWORD it does not read would
    otherwise become a database user named X at bootstrap.
    """
    env = {"PATRONI_ETCD3_PROTOCOL": "http", "PATRONI_ETCD3_USERNAME": ETCD_USER}
    for role, variable in PATRONI_PASSWORD_ENV.items():
        env[variable] = passwords[role]
    return env


# --- etcd ----------------------------------------------------------------------------------------


def etcd_argv(layout: HaLayout, member: EtcdNode, binary: str = "etcd") -> list[str]:
    """etcd's command line for one member: every URL on the member's own address."""
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in layout.etcd)
    return [
        binary,
        f"--name={member.name}",
        f"--data-dir={member.data_dir}",
        f"--listen-client-urls={member.client_url}",
        f"--advertise-client-urls={member.client_url}",
        f"--listen-peer-urls={member.peer_url}",
        f"--initial-advertise-peer-urls={member.peer_url}",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={layout.stack}-{layout.environment or 'default'}-{layout.datastore}",
        "--enable-v2=false",
        "--logger=zap",
        "--log-outputs=stderr",
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
    ]


# --- HAProxy -------------------------------------------------------------------------------------


def listen_names(layout: HaLayout) -> tuple[str, str]:
    """HAProxy's `listen` sections: writes, reads."""
    return f"{layout.datastore}_primary", f"{layout.datastore}_replicas"


def haproxy_listen_sections(layout: HaLayout) -> str:
    """Writes to the node whose Patroni answers 200 on `/primary`, reads to those answering 200
    on `/replica`; a node marked down has its sessions cut at once (a client of a dead primary
    must not wait for its TCP timeout). The checks use OPTIONS, which Patroni answers with a
    status line only: HAProxy closes the connection once it has the status, and a JSON body
    still being written would make Patroni log a traceback every check."""
    if layout.proxy is None:
        raise UserError(f"datastores.{layout.datastore}.patroni.proxy is null: there is no HAProxy to render")
    proxy = layout.proxy
    fast_ms = proxy.check_interval * 500
    default_server = (
        f"    default-server inter {proxy.check_interval}s fastinter {fast_ms}ms downinter {fast_ms}ms"
        " fall 2 rise 1 on-marked-down shutdown-sessions"
    )
    write, read = listen_names(layout)
    routes = [(write, proxy.port, "/primary")]
    if proxy.read_port is not None:
        routes.append((read, proxy.read_port, "/replica"))
    sections = []
    for name, port, check in routes:
        lines = [
            f"listen {name}",
            f"    bind {_url_host(proxy.host)}:{port}",
            "    mode tcp",
            *(["    balance roundrobin"] if check == "/replica" else []),
            "    option httpchk",
            f"    http-check send meth OPTIONS uri {check}",
            "    http-check expect status 200",
            default_server,
        ]
        lines += [
            f"    server {node.member} {node.address} check port {node.rest_port}" for node in layout.nodes
        ]
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections)


def haproxy_config(layout: HaLayout, *, admin_socket: str) -> str:
    """A whole HAProxy configuration for the datastore: its admin socket (for `shipyard dr ha
    status`), TCP defaults and the `listen` sections."""
    head = f"""# Rendered by shipyard (`shipyard dr ha up`) for datastores.{layout.datastore}.
global
    stats socket {admin_socket} mode 600 level admin
    stats timeout 30s

defaults
    mode tcp
    retries 2
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s

"""
    return head + haproxy_listen_sections(layout)
