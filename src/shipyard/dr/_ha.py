"""A Patroni datastore's processes on this host, each under shipyard's Supervisor as app processes are.

    cluster = HaCluster(layout, state_dir, HaPasswords.from_environment(layout))
    cluster.up()          # etcd (authentication on), Patroni per node, HAProxy, the watcher
    cluster.status()      # each process, Patroni's view of each node, HAProxy's of each route
    cluster.kill_node("primary")    # a dead host: SIGKILL its supervisor, Patroni and PostgreSQL
    cluster.start_node("primary")   # it comes back; Patroni rewinds it and it follows the leader
    cluster.down()        # watcher, HAProxy, replicas, leader, etcd; data directories kept

Only the processes whose address is on this host are started here (`dr ha up` on each host of a
multi-host cluster). PostgreSQL refuses root, so when shipyard runs as root Patroni runs as the
`postgres` user (and etcd as Debian's `etcd` user when it exists) through `setpriv`, which execs
(a `runuser` would sit between the supervisor and the process and kill it two seconds after a
SIGTERM: Patroni needs longer to stop PostgreSQL cleanly).

Passwords reach Patroni in its environment (PATRONI_*), set on the supervised process and never
written to disk by shipyard: `patroni.yml` holds user names only. Patroni itself writes the
replication password to its pgpass file (`postgresql.pgpass`, mode 0600, in the node's runtime
directory owned by the postgres user), as every Patroni installation does.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import DrError, TargetError, UserError
from ..host import group_members, pid_alive, proc_stat, tail, write_atomic
from ..render import ETCD_USER as ETCD_PATRONI_USER
from ..render import (
    SECRET_ROLES,
    EtcdNode,
    HaLayout,
    HaNode,
    SecretRole,
    dynamic_config,
    etcd_argv,
    haproxy_config,
    listen_names,
    patroni_environment,
    patroni_yaml,
)
from ..rollout.targets import InstanceSpec, Supervisor
from ..rollout.targets.haproxy import HAProxyClient, ProxyPaths, check_config
from ..spec import ENV_REFERENCE, SecretRef
from . import _postgres as pg
from ._etcd import EtcdClient, ensure_auth
from ._patroni import ClusterView, Member, PatroniClient

ProcessKind = Literal["etcd", "patroni", "haproxy", "watcher"]
WATCH_MODULE = "shipyard.dr._ha_watch"
PATRONI_GRACE_S = 90.0
"""On stop Patroni shuts PostgreSQL down (fast) before it exits: a checkpoint can take a while."""
ETCD_GRACE_S = 15.0
START_TIMEOUT_S = 180.0
"""How long a node may take to be running: initdb or a base backup of the leader, then recovery."""
POLL_S = 0.2


# --- passwords -----------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class HaPasswords:
    """The cluster's passwords, resolved (never printed: repr shows none)."""

    values: Mapping[SecretRole, str]

    def __getitem__(self, role: SecretRole) -> str:
        return self.values[role]

    def __repr__(self) -> str:
        return f"HaPasswords({len(self.values)} passwords)"

    @classmethod
    def from_environment(
        cls,
        layout: HaLayout,
        environ: Mapping[str, str] | None = None,
        roles: tuple[SecretRole, ...] = SECRET_ROLES,
    ) -> HaPasswords:
        """The layout's secret references (those of `roles`) read from the environment; UserError
        naming every field and variable that is not set (at once), never a value."""
        environ = os.environ if environ is None else environ
        values: dict[SecretRole, str] = {}
        missing = []
        for secret in layout.secrets:
            if secret.role not in roles:
                continue
            variable = _variable(secret.reference)
            value = environ.get(variable, "")
            if not value:
                missing.append(f"{secret.field} (${variable})")
            values[secret.role] = value
        if missing:
            raise UserError(
                "ha: patroni needs its passwords in shipyard's environment; not set: "
                + ", ".join(missing)
                + ". Set each variable (the values are handed to Patroni and etcd, never written by shipyard)"
            )
        return cls(values)

    @classmethod
    def generated(cls) -> HaPasswords:
        """Random passwords, for a scratch cluster that lives as long as a drill."""
        return cls({role: secrets.token_urlsafe(24) for role in SECRET_ROLES})


def _variable(reference: SecretRef | str) -> str:
    if isinstance(reference, SecretRef):
        return reference.env_name
    match = ENV_REFERENCE.fullmatch(reference.strip())
    if match is None:  # pragma: no cover - the spec's model admits only the two forms
        raise UserError(f"{reference!r} is not a secret reference")
    return match[1]


def reference_variables(references: list[object]) -> list[str]:
    """The environment variables the given secret references (None and plain values skipped) name."""
    names = []
    for reference in references:
        if isinstance(reference, SecretRef):
            names.append(reference.env_name)
        elif isinstance(reference, str) and (match := ENV_REFERENCE.fullmatch(reference.strip())):
            names.append(match[1])
    return names


# --- the host ------------------------------------------------------------------------------------


def is_here(host: str) -> bool:
    """Whether `host` is an address of this machine (loopback, or one a socket can bind)."""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


def service_user() -> str:
    """Who runs Patroni and PostgreSQL: `postgres` when we are root (PostgreSQL refuses root)."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise UserError(
                "shipyard runs as root and there is no `postgres` user to run Patroni and PostgreSQL as:"
                " install Debian's postgresql (it creates the user)"
            ) from None
        return "postgres"
    return pwd.getpwuid(os.geteuid()).pw_name


def etcd_service_user(fallback: str) -> str:
    """Debian's `etcd` user when we are root and it exists (etcd-server creates it), else `fallback`."""
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            pwd.getpwnam("etcd")
            return "etcd"
    return fallback


def as_user(user: str) -> list[str]:
    """The argv prefix that runs a command as `user` (nothing when we are that user already).

    `setpriv` execs the command, so the supervisor's signals reach the process itself."""
    if os.geteuid() != 0 or user == "root":
        return []
    entry = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]


def _own(path: Path, user: str) -> None:
    if os.geteuid() == 0 and user != "root":
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _make_private_dir(path: Path, user: str, field: str) -> None:
    """`path` exists, belongs to `user`, mode 0700, and `user` can reach it (UserError naming the
    spec's field when a parent directory keeps that user out)."""
    path.mkdir(parents=True, exist_ok=True)
    _own(path, user)
    path.chmod(0o700)
    prefix = as_user(user)
    if prefix:
        check = subprocess.run([*prefix, "test", "-w", str(path)], capture_output=True, check=False)
        if check.returncode != 0:
            raise UserError(
                f"{field}: {path} is not reachable by the {user} user, who runs it; every directory above"
                " it must be searchable by that user (e.g. not under /root)"
            )


def _binary(name: str, package: str, *extra: str) -> str:
    found = shutil.which(name) or next((p for p in extra if Path(p).exists()), None)
    if found is None:
        raise DrError(f"{name} is not installed: install Debian's {package} (`make install` does)")
    return found


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat is not None and stat.ppid == pid and stat.state not in ("Z", "X", "x"):
                found.append(stat.pid)
    return found


def postmaster_pid(data_dir: str) -> int | None:
    """The running postmaster of `data_dir` (from postmaster.pid, checked against /proc), or None."""
    try:
        pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return pid if data_dir.rstrip("/") in cmdline else None


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    """The supervised instance (`db-primary`, `db-etcd-0`, `db-haproxy`, `db-watch`)."""
    kind: ProcessKind
    address: str
    here: bool
    """Runs on this host (else `dr ha up` on its host runs it)."""
    alive: bool | None
    """None for a process of another host."""
    pid: int | None = None
    restarts: int = 0
    log: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "address": self.address,
            "here": self.here,
            "alive": self.alive,
            "pid": self.pid,
            "restarts": self.restarts,
            "log": self.log,
        }


@dataclass(frozen=True)
class HaStatus:
    datastore: str
    processes: tuple[ProcessStatus, ...]
    members: tuple[Member, ...]
    """Patroni's view (`/cluster`); empty when no node's REST API answers."""
    leader: str | None
    """The spec's name of the node holding the leader lock (`primary`, `standby`, …)."""
    synchronous: bool
    routes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """HAProxy's `listen` section → server → its state (UP, DOWN, …)."""
    actions: tuple[str, ...] = ()
    """What `up`/`down` did, in order."""

    @property
    def healthy(self) -> bool:
        """A leader, every node here running, every replica following it."""
        return (
            self.leader is not None
            and all(p.alive for p in self.processes if p.here)
            and all(m.is_leader or m.is_running_replica for m in self.members)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "datastore": self.datastore,
            "leader": self.leader,
            "synchronous": self.synchronous,
            "healthy": self.healthy,
            "members": [m.as_dict() for m in self.members],
            "processes": [p.as_dict() for p in self.processes],
            "routes": {name: dict(servers) for name, servers in self.routes.items()},
            "actions": list(self.actions),
        }


@dataclass(frozen=True)
class WatcherSpec:
    """How the failover watcher reaches the spec and the state store (see `_ha_watch`)."""

    spec_path: Path
    environment: str
    database_url: str
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Variables the spec's notification channels read their secrets from."""
    interval_s: float = 0.5


# --- the cluster ---------------------------------------------------------------------------------


class HaCluster:
    """Starts, watches and stops one Patroni datastore's processes on this host."""

    def __init__(
        self,
        layout: HaLayout,
        state_dir: Path,
        passwords: HaPasswords,
        *,
        watcher: WatcherSpec | None = None,
        on_action: Callable[[str], None] | None = None,
    ) -> None:
        self.layout = layout
        self.state_dir = Path(state_dir)
        self.passwords = passwords
        self.watcher = watcher
        self.on_action = on_action
        self.user = service_user()
        self.etcd_user = etcd_service_user(self.user)
        self.actions: list[str] = []
        self._supervisor: Supervisor | None = None

    # -- plumbing

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.state_dir.chmod(0o700)  # supervisor records and logs: root's (or ours) only
            self._supervisor = Supervisor(self.state_dir, check_s=0.3)
        return self._supervisor

    @property
    def proxy_paths(self) -> ProxyPaths:
        return ProxyPaths(self.state_dir / "haproxy")

    @property
    def watch_name(self) -> str:
        return f"{self.layout.datastore}-watch"

    @property
    def haproxy_name(self) -> str:
        return f"{self.layout.datastore}-haproxy"

    def client(self, *, timeout_s: float = 3.0) -> PatroniClient:
        password = self.passwords.values.get("restapi")
        return PatroniClient(
            [node.rest_url for node in self.layout.nodes],
            auth=(self.layout.restapi_user, password) if password else None,
            timeout_s=timeout_s,
            loop_wait=self.layout.loop_wait,
        )

    def _act(self, message: str) -> None:
        self.actions.append(message)
        if self.on_action is not None:
            self.on_action(message)

    def _spec(
        self,
        name: str,
        command: list[str],
        port: int,
        env: Mapping[str, str],
        grace_s: float,
        workdir: Path | None = None,
    ) -> InstanceSpec:
        """`workdir`: a directory the process's user can enter (Patroni's multiprocessing children
        chdir back into it); the state directory, root's, by default."""
        return InstanceSpec(
            name=name,
            command="exec " + shlex.join(command),
            port=port,
            env=dict(env),
            workdir=workdir or self.state_dir,
            grace_s=grace_s,
        )

    def _home(self, user: str) -> str:
        try:
            return pwd.getpwnam(user).pw_dir
        except KeyError:
            return "/"

    def _start(self, spec: InstanceSpec, what: str) -> None:
        running = self.supervisor.get(spec.name)
        try:
            instance = self.supervisor.start(spec)
        except TargetError as error:
            raise DrError(f"{what} did not start: {error.message}") from error
        if running is None or not running.alive:
            self._act(f"started {what} (pid {instance.app_pid})")

    # -- etcd

    def etcd_spec(self, member: EtcdNode) -> InstanceSpec:
        argv = [*as_user(self.etcd_user), *etcd_argv(self.layout, member, _binary("etcd", "etcd-server"))]
        env = {"HOME": self._home(self.etcd_user), "ETCD_UNSUPPORTED_ARCH": ""}
        return self._spec(member.name, argv, member.client_port, env, ETCD_GRACE_S, Path(member.data_dir))

    def _up_etcd(self) -> None:
        local = [m for m in self.layout.etcd if is_here(m.host)]
        for member in local:
            _make_private_dir(Path(member.data_dir), self.etcd_user, f"{member.field}.data_dir")
            self._start(self.etcd_spec(member), f"etcd {member.name} on {member.client_address}")
        if not local:
            return
        client = EtcdClient(local[0].client_url)
        try:
            client.wait_healthy(60)
        except DrError as error:
            others = [m.name for m in self.layout.etcd if m not in local]
            hint = f"; start the other members ({', '.join(others)}) on their hosts" if others else ""
            raise DrError(error.message + hint + self._log_hint(local[0].name)) from error
        running = [n.member for n in self.layout.nodes if (i := self.supervisor.get(n.member)) and i.alive]
        done = ensure_auth(
            client,
            root_password=self.passwords["etcd_root"],
            user=ETCD_PATRONI_USER,
            password=self.passwords["etcd"],
            prefix=self.layout.key_prefix,
            may_change_password=not running,
        )
        self._act(f"etcd: {done}")

    # -- Patroni

    def node_spec(self, node: HaNode) -> InstanceSpec:
        argv = [*as_user(self.user), _binary("patroni", "patroni"), node.config_path]
        env = {
            "HOME": self._home(self.user),
            "LANG": "C.UTF-8",
            **patroni_environment(self.layout, self.passwords.values),
        }
        return self._spec(node.member, argv, node.rest_port, env, PATRONI_GRACE_S, Path(node.runtime_dir))

    def _prepare_node(self, node: HaNode) -> bool:
        """The node's runtime directory and patroni.yml (0600, the service user's); True when the
        file changed (a running Patroni must then reload it)."""
        if not Path(self.layout.bin_dir, "postgres").exists():
            raise DrError(
                f"PostgreSQL {self.layout.version} is not installed ({self.layout.bin_dir}/postgres):"
                f" install Debian's postgresql-{self.layout.version}"
            )
        runtime = Path(node.runtime_dir)
        _make_private_dir(runtime, self.user, f"{node.field}.data_dir")
        data = Path(node.data_dir)
        if not data.exists():
            _make_private_dir(data, self.user, f"{node.field}.data_dir")
        config = Path(node.config_path)
        text = patroni_yaml(self.layout, node)
        old = config.read_text() if config.exists() else None
        if old == text:
            return False
        write_atomic(config, text)
        config.chmod(0o600)
        _own(config, self.user)
        return old is not None

    def start_node(self, role: str) -> None:
        """Start (or keep) one node's Patroni; it adopts or creates its data directory."""
        node = self.layout.node(role)
        changed = self._prepare_node(node)
        running = self.supervisor.get(node.member)
        self._start(self.node_spec(node), f"Patroni {node.member} ({node.role}) on {node.rest_address}")
        if changed and running is not None and running.alive:
            with contextlib.suppress(DrError):
                self.client().reload(node.rest_url)
                self._act(f"{node.member}: patroni.yml changed, reloaded")

    def _up_nodes(self) -> None:
        local = [node for node in self.layout.nodes if is_here(node.host)]
        if not local:
            return
        first, rest = local[0], local[1:]
        fresh = not any(Path(node.data_dir, "PG_VERSION").exists() for node in local)
        self.start_node(first.role)
        if fresh:
            # A new cluster: the spec's primary alone first, so that it takes the initialize key
            # and runs initdb, and the others copy it rather than race it to bootstrap.
            self.wait(lambda v: v.leader is not None, START_TIMEOUT_S, "a leader", first)
        # An existing cluster's leader may be any node (after a failover, the spec's standby; in
        # synchronous mode only the last synchronous standby may take over): start them all.
        for node in rest:
            self.start_node(node.role)
        view = self.wait(lambda v: v.leader is not None, START_TIMEOUT_S, "a leader", first)
        leader = view.leader
        assert leader is not None
        self._act(f"leader: {self.layout.member_role(leader.name)} ({leader.name})")
        for node in local:
            self.wait(
                functools.partial(_running, member=node.member),
                START_TIMEOUT_S,
                f"{node.member} running",
                node,
            )
        self._apply_dynamic_config()

    def _wait_synchronous(self) -> None:
        """RPO 0 holds once the leader names a synchronous standby (a few of its HA loops after the
        replica streams)."""
        if (
            self.layout.synchronous
            and len(self.layout.nodes) > 1
            and any(is_here(n.host) for n in self.layout.nodes)
        ):
            timeout = 3 * self.layout.loop_wait + 30
            self.wait(lambda v: bool(v.sync_standbys), timeout, "synchronous standby", self.layout.nodes[0])

    def _apply_dynamic_config(self) -> None:
        """Bring the cluster's DCS configuration to the spec (bootstrap wrote it once; the spec's
        RPO or timings may have changed since)."""
        wanted = dynamic_config(self.layout)
        # Right after a bootstrap a node's cached view of the DCS may not hold the configuration
        # yet (Patroni answers 502 then): ask again for a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                current = self.client().config()
                break
            except DrError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S)
        changes: dict[str, Any] = {
            key: value for key, value in wanted.items() if key != "postgresql" and current.get(key) != value
        }
        have = (current.get("postgresql") or {}).get("parameters") or {}
        params = {k: v for k, v in wanted["postgresql"]["parameters"].items() if str(have.get(k)) != str(v)}
        if params:
            changes["postgresql"] = {"parameters": params}
        if changes:
            self.client().patch_config(changes)
            self._act("Patroni's DCS configuration set to the spec: " + ", ".join(sorted(changes)))

    # -- HAProxy and the watcher

    def _up_proxy(self) -> None:
        proxy = self.layout.proxy
        if proxy is None or not is_here(proxy.host):
            return
        paths = self.proxy_paths
        paths.directory.mkdir(parents=True, exist_ok=True)
        haproxy = _binary("haproxy", "haproxy", "/usr/sbin/haproxy")
        write_atomic(paths.config, haproxy_config(self.layout, admin_socket=str(paths.admin_socket)))
        check_config(paths.config, haproxy)
        spec = self._spec(self.haproxy_name, [haproxy, "-db", "-f", str(paths.config)], proxy.port, {}, 10.0)
        self._start(spec, f"HAProxy on {proxy.address} (writes → /primary)")

    def _up_watcher(self) -> None:
        watch = self.watcher
        if watch is None:
            return
        argv = [
            sys.executable,
            "-m",
            WATCH_MODULE,
            "--spec",
            str(watch.spec_path.resolve()),
            "--env",
            watch.environment,
            "--datastore",
            self.layout.datastore,
            "--interval",
            str(watch.interval_s),
            "--state-file",
            str(self.state_dir / f"{self.watch_name}.leader.json"),
        ]
        env = {**watch.environ, "SHIPYARD_DATABASE_URL": watch.database_url}
        spec = self._spec(self.watch_name, argv, 0, env, 10.0)
        self._start(spec, "the failover watcher (notifies dr.failover)")

    # -- verbs

    def up(self) -> HaStatus:
        """Start every process of this host (those running are kept), in order, waiting for each."""
        self._up_etcd()
        self._up_nodes()
        self._up_proxy()
        self._up_watcher()
        self._wait_synchronous()
        return self.status()

    def down(self) -> HaStatus:
        """Stop this host's processes: the watcher and HAProxy, the replicas, the leader (so that no
        replica takes over on the way), etcd. Data directories stay."""
        sup = self.supervisor
        for name in (self.watch_name, self.haproxy_name):
            if sup.get(name) is not None:
                sup.stop(name)
                self._act(f"stopped {name}")
        paths = self.proxy_paths
        if paths.directory.exists() and paths.sockets != paths.directory:
            shutil.rmtree(paths.sockets, ignore_errors=True)  # the short socket directory in /tmp
        view = self.client(timeout_s=1.0).try_cluster()
        leader = view.leader.name if view is not None and view.leader is not None else None
        nodes = sorted(self.layout.nodes, key=lambda n: n.member == leader)
        for node in nodes:
            if not is_here(node.host):
                continue
            if sup.get(node.member) is not None:
                sup.stop(node.member)
                self._act(f"stopped Patroni {node.member}")
            self._stop_orphan_postgres(node)
        for member in self.layout.etcd:
            if is_here(member.host) and sup.get(member.name) is not None:
                sup.stop(member.name)
                self._act(f"stopped etcd {member.name}")
        return self.status()

    def _stop_orphan_postgres(self, node: HaNode) -> None:
        """PostgreSQL outlives a Patroni that was killed (it runs in a session of its own): stop it."""
        if postmaster_pid(node.data_dir) is None:
            return
        data = node.data_dir
        pg.run_tool(
            [pg.pg_tool("pg_ctl", self.layout.version), "-D", data, "-m", "fast", "-w", "stop"], data, 120
        )
        self._act(f"stopped PostgreSQL of {node.member} (its Patroni was gone)")

    def status(self) -> HaStatus:
        processes = [self._process(m.name, "etcd", m.client_address, m.host) for m in self.layout.etcd]
        processes += [self._process(n.member, "patroni", n.rest_address, n.host) for n in self.layout.nodes]
        if self.layout.proxy is not None:
            proxy = self.layout.proxy
            processes.append(self._process(self.haproxy_name, "haproxy", proxy.address, proxy.host))
        if self.watcher is not None or self.supervisor.get(self.watch_name) is not None:
            processes.append(self._process(self.watch_name, "watcher", "-", "127.0.0.1"))
        view = self.client(timeout_s=1.0).try_cluster()
        members = view.members if view is not None else ()
        leader = view.leader if view is not None else None
        return HaStatus(
            datastore=self.layout.datastore,
            processes=tuple(processes),
            members=members,
            leader=self.layout.member_role(leader.name) if leader is not None else None,
            synchronous=self.layout.synchronous,
            routes=self._routes(),
            actions=tuple(self.actions),
        )

    def _process(self, name: str, kind: ProcessKind, address: str, host: str) -> ProcessStatus:
        if not is_here(host):
            return ProcessStatus(name, kind, address, here=False, alive=None)
        instance = self.supervisor.get(name)
        if instance is None:
            return ProcessStatus(name, kind, address, here=True, alive=False)
        return ProcessStatus(
            name,
            kind,
            address,
            here=True,
            alive=instance.alive,
            pid=instance.app_pid,
            restarts=instance.restarts,
            log=str(instance.log),
        )

    def _routes(self) -> dict[str, dict[str, str]]:
        if self.layout.proxy is None or self.supervisor.get(self.haproxy_name) is None:
            return {}
        client = HAProxyClient(self.proxy_paths.admin_socket, timeout_s=2.0)
        routes: dict[str, dict[str, str]] = {}
        for name in listen_names(self.layout):
            with contextlib.suppress(TargetError):
                routes[name] = {s.server: s.status for s in client.show_stat(name)}
        return routes

    # -- waiting

    def wait(
        self, ready: Callable[[ClusterView], bool], timeout_s: float, what: str, node: HaNode | None = None
    ) -> ClusterView:
        """Poll `/cluster` until `ready`; DrError (with the node's log's end) after `timeout_s`."""
        client = self.client(timeout_s=1.0)
        deadline = time.monotonic() + timeout_s
        while True:
            view = client.try_cluster()
            if view is not None and ready(view):
                return view
            if time.monotonic() > deadline:
                seen = (
                    ", ".join(f"{m.name} {m.role}/{m.state}" for m in view.members) if view else "no answer"
                )
                hint = self._log_hint(node.member) if node is not None else ""
                raise DrError(f"no {what} within {timeout_s:g} s (Patroni: {seen}){hint}")
            time.sleep(POLL_S)

    def _log_hint(self, name: str) -> str:
        instance = self.supervisor.get(name)
        if instance is None:
            return ""
        lines = tail(instance.log, 8)
        return f"; the end of {instance.log}:\n{lines}" if lines else ""

    def log_path(self, role: str) -> Path:
        node = self.layout.node(role)
        return self.state_dir / f"{node.member}.log"

    # -- a dead host

    def kill_node(self, role: str) -> list[int]:
        """SIGKILL every process of one node at once, as a host dying would: its supervisor (so
        nothing restarts it), its Patroni and PostgreSQL's postmaster and every child. The pids."""
        pids = self.node_processes(role)
        sigkill(pids)
        return pids

    def node_processes(self, role: str) -> list[int]:
        """Every process of one node: supervisor, Patroni (and its children), postmaster, backends."""
        node = self.layout.node(role)
        pids: list[int] = []
        instance = self.supervisor.get(node.member)
        if instance is not None:
            if instance.supervisor_pid:
                pids.append(instance.supervisor_pid)
            if instance.app_pid:
                pids += [instance.app_pid, *group_members(instance.app_pid)]
        postmaster = postmaster_pid(node.data_dir)
        if postmaster is not None:
            pids += [postmaster, *_children(postmaster)]
        return list(dict.fromkeys(pids))


def sigkill(pids: list[int]) -> None:
    """SIGKILL each of `pids`, one right after the other (those gone already are skipped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(view: ClusterView, member: str) -> bool:
    found = view.member(member)
    return found is not None and (found.is_leader or found.is_running_replica)
