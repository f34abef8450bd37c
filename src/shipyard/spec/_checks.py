"""Rules that need the whole stack: names that must exist, cycles, bounds, unique ports.

Each problem is returned with the field path it belongs to, so the loader can point at its line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Set

from pydantic import ValidationError

from ._image_policy import image_policy_problems
from ._model import INGRESS_COMPONENTS, PlainHost, Postgres, Resources, Stack
from ._units import byte_count, millicores
from .flags import FlagSet

Problem = tuple[tuple[str | int, ...], str]


def check_stack(stack: Stack, assumed: Set[str] = frozenset()) -> list[Problem]:
    """Every cross-field problem in one environment's stack.

    `assumed` names entities that exist in the file but failed schema validation: references to
    them are not reported again as unknown.
    """
    return [
        *_name_clashes(stack),
        *_replicas(stack),
        *_resources(stack),
        *_dependencies(stack, assumed),
        *_ports(stack),
        *_references(stack, assumed),
        *_flags(stack),
        *_high_availability(stack),
        *_datastore_modes(stack),
        *_shared_volumes(stack),
        *_writable_paths(stack),
        *_backup_schedules(stack, assumed),
        *_ingress_controller(stack),
        *image_policy_problems(stack),
    ]


def _ingress_controller(stack: Stack) -> Iterator[Problem]:
    """The platform runs one ingress controller: a component of the other one is a mistake
    (its namespace would not be the one NetworkPolicies admit)."""
    chosen = stack.platform.ingress_controller
    for controller, component in INGRESS_COMPONENTS.items():
        if controller != chosen and component in stack.platform.components:
            yield (
                ("platform", "components", component),
                f"{component!r} runs the {controller} ingress controller, but"
                f" platform.ingress_controller is {chosen!r}; set platform.ingress_controller:"
                f" {controller} or remove this component",
            )


_SINGLE_NODE_MODES = ("ReadWriteOnce", "ReadWriteOncePod")


def _shared_volumes(stack: Stack) -> Iterator[Problem]:
    """A Deployment's pods all mount the same claim of each volume. A ReadWriteOnce volume attaches
    to one node: the pods scheduled on another hang in ContainerCreating (Multi-Attach error); a
    ReadWriteOncePod volume admits one pod at all. Both are refused where a Deployment may run
    more than one pod: several replicas, or an autoscaler (which adds them under load). One replica
    is let through: its rolling update surges a second pod, which waits until the old one is gone
    if it lands on another node, and that is all.

    The message names the environment: an overlay that scales a service up makes the problem
    its own, while the line points at the volume."""
    where = f" in {stack.environment}" if stack.environment else ""
    for name, service in stack.services.items():
        if service.workload != "deployment":
            continue  # a StatefulSet gives each pod its own claim
        if service.autoscaling is not None:
            why = f"is autoscaled (up to {service.autoscaling.max} pods)"
        elif service.replicas >= 2:
            why = f"runs {service.replicas} replicas"
        else:
            continue
        for volume_name, volume in service.volumes.items():
            if volume.access_mode not in _SINGLE_NODE_MODES:
                continue
            yield (
                ("services", name, "volumes", volume_name, "access_mode"),
                f"{volume.access_mode} volume {volume_name!r} on a Deployment that {why}{where}:"
                " every pod mounts the same claim, and pods on another node cannot attach it; use"
                " access_mode: ReadWriteMany (a storage class that offers it, e.g. EFS or NFS), or"
                f" workload: statefulset (a claim per pod), or replicas: 1 without autoscaling",
            )


def _writable_paths(stack: Stack) -> Iterator[Problem]:
    """Each writable directory once, and never where a volume is mounted (two mounts at one path
    are refused by the API server)."""
    for name, service in stack.services.items():
        mounts = {volume.mount: volume_name for volume_name, volume in service.volumes.items()}
        seen: set[str] = set()
        for index, writable in enumerate(service.writable):
            path = ("services", name, "writable", index)
            if writable.path in seen:
                yield path, f"{writable.path} is listed twice"
            elif writable.path in mounts:
                yield (
                    path,
                    f"{writable.path} is where volume {mounts[writable.path]!r} is mounted: it is"
                    " writable already; remove it here",
                )
            seen.add(writable.path)


def _flags(stack: Stack) -> Iterator[Problem]:
    """The `flags:` section holds a flag set in the export format; it must load as one."""
    if not stack.flags:
        return
    try:
        FlagSet.from_data(stack.flags)
    except ValidationError as exc:
        # A bare list (or mapping) of flags is wrapped as {"flags": ...}: drop that extra key.
        bare = isinstance(stack.flags, list) or not {"version", "flags", "segments"} & set(stack.flags)
        for error in exc.errors():
            loc = tuple(error["loc"])
            if bare and loc[:1] == ("flags",):
                loc = loc[1:]
            yield ("flags", *loc), str(error["msg"]).removeprefix("Value error, ")


def _replicas(stack: Stack) -> Iterator[Problem]:
    for name, service in stack.services.items():
        scaling = service.autoscaling
        if (
            scaling
            and "replicas" in service.model_fields_set
            and not scaling.min <= service.replicas <= scaling.max
        ):
            yield (
                ("services", name, "replicas"),
                f"{service.replicas} replicas is outside autoscaling bounds {scaling.min}..{scaling.max}",
            )


def _resources(stack: Stack) -> Iterator[Problem]:
    owners: list[tuple[tuple[str | int, ...], Resources]] = []
    owners += [(("services", n), s.resources) for n, s in stack.services.items()]
    for name, store in stack.datastores.items():
        owners.append((("datastores", name), store.resources))
        replica = getattr(store, "replica_resources", None)
        if replica is not None:
            owners.append((("datastores", name, "replica_resources"), replica))
    owners += [(("platform", "components", n), c.resources) for n, c in stack.platform.components.items()]
    for path, resources in owners:
        base = path if path[-1] == "replica_resources" else (*path, "resources")
        for field, parse, unit in (("cpu", millicores, "CPU"), ("memory", byte_count, "memory")):
            request = getattr(resources.requests, field)
            limit = getattr(resources.limits, field)
            if request is not None and limit is not None and parse(request) > parse(limit):
                yield (*base, "requests", field), f"{unit} request {request} is above its limit {limit}"


def _name_clashes(stack: Stack) -> Iterator[Problem]:
    """Services and datastores share one namespace: depends_on, in-cluster host names and the
    Kubernetes objects rendered for each (a Service named after each) all use the bare name."""
    for name in sorted(set(stack.services) & set(stack.datastores)):
        yield (
            ("services", name),
            f"datastores.{name} has the same name: a service and a datastore cannot share one"
            f" (depends_on, host names and Kubernetes objects would mean both); rename one of them",
        )


def _dependencies(stack: Stack, assumed: Set[str]) -> Iterator[Problem]:
    known = set(stack.services) | set(stack.datastores) | assumed
    # A name that is both a service and a datastore means either: `_name_clashes` reports it,
    # and reading it as the service here would report self-dependencies and cycles that are not.
    ambiguous = set(stack.services) & set(stack.datastores)
    for name, service in stack.services.items():
        for index, dependency in enumerate(service.depends_on):
            if dependency in ambiguous:
                continue
            if dependency == name:
                yield ("services", name, "depends_on", index), f"{name!r} cannot depend on itself"
            elif dependency not in known:
                yield (
                    ("services", name, "depends_on", index),
                    f"no service or datastore named {dependency!r}; known: {', '.join(sorted(known))}",
                )
    cycle = _find_cycle(
        {
            n: [d for d in s.depends_on if d in stack.services and d not in ambiguous]
            for n, s in stack.services.items()
        }
    )
    if cycle:
        yield ("services", cycle[0], "depends_on"), "depends_on forms a cycle: " + " -> ".join(cycle)


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle in the graph as a closed walk (a -> b -> a), or None; deterministic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _ports(stack: Stack) -> Iterator[Problem]:
    # On a plain host every service and datastore listens on its own port, so ports must differ.
    owners: dict[int, str] = {}
    ports = [(("services", n, "port"), s.port, n) for n, s in stack.services.items()]
    ports += [(("datastores", n, "port"), d.port, n) for n, d in stack.datastores.items()]
    for path, port, name in ports:
        if port is None:
            continue
        if port in owners:
            yield path, f"port {port} is already used by {owners[port]!r}"
        else:
            owners[port] = name


def _references(stack: Stack, assumed: Set[str]) -> Iterator[Problem]:
    for index, slo in enumerate(stack.alerts.slos):
        if slo.service not in stack.services and slo.service not in assumed:
            yield ("alerts", "slos", index, "service"), f"no service named {slo.service!r}"
    if stack.backup:
        for index, name in enumerate(stack.backup.sources.datastores):
            if name not in stack.datastores and name not in assumed:
                yield ("backup", "sources", "datastores", index), f"no datastore named {name!r}"
        for index, volume in enumerate(stack.backup.sources.volumes):
            service, _, volume_name = volume.partition("/")
            if volume.startswith("/"):
                continue
            if service not in stack.services or volume_name not in stack.services[service].volumes:
                yield (
                    ("backup", "sources", "volumes", index),
                    f"{volume!r} is not `service/volume` of a declared volume, nor an absolute path",
                )


def _backup_schedules(stack: Stack, assumed: Set[str]) -> Iterator[Problem]:
    """A `backup.schedules` entry that would fail on every run (nothing of its kind to back up, an
    incremental with no pgBackRest setup), and volumes no backup pod can mount beside their service."""
    backup = stack.backup
    if backup is None:
        return
    kinds = {stack.datastores[n].kind for n in backup.sources.datastores if n in stack.datastores}
    if any(n in assumed for n in backup.sources.datastores):
        kinds |= {"postgresql", "redis"}  # broken, and reported already: do not report twice
    wanted = {
        "database": ("postgresql" in kinds, "a PostgreSQL datastore in backup.sources.datastores"),
        "redis": ("redis" in kinds, "a Redis datastore in backup.sources.datastores"),
        "files": (bool(backup.sources.volumes), "a volume in backup.sources.volumes"),
    }
    anything = bool(kinds or backup.sources.volumes)
    wanted |= {k: (anything, "a datastore or volume in backup.sources") for k in ("full", "verify")}
    postgres = {n: s for n, s in stack.datastores.items() if isinstance(s, Postgres)}
    for kind in backup.schedules:
        path = ("backup", "schedules", kind)
        if kind in wanted and not wanted[kind][0]:
            yield path, f"a `{kind}` backup needs {wanted[kind][1]}: it would fail on every run"
        if kind != "incremental":
            continue
        if backup.pitr is None:
            yield (
                path,
                "an incremental backup is pgBackRest's and needs backup.pitr (its repository); add"
                " backup.pitr, or remove the schedule (each run would fail)",
            )
        elif len(postgres) != 1:
            yield path, "a scheduled incremental backup needs exactly one PostgreSQL datastore to back up"
        elif next(iter(postgres.values())).local.data_dir is None:
            name = next(iter(postgres))
            yield (
                path,
                f"pgBackRest reads PostgreSQL's data directory: set datastores.{name}.local.data_dir,"
                " or remove the schedule (each run would fail)",
            )
    rwo_owner: str | None = None
    for index, volume in enumerate(backup.sources.volumes):
        service_name, _, volume_name = volume.partition("/")
        service = stack.services.get(service_name)
        if volume.startswith("/") or service is None or volume_name not in service.volumes:
            continue  # a plain-host path, or not a volume (reported by _references)
        mode = service.volumes[volume_name].access_mode
        field = ("backup", "sources", "volumes", index)
        if mode == "ReadWriteOncePod":
            yield field, f"{volume!r} is ReadWriteOncePod: no backup pod may mount it beside {service_name}"
        elif mode == "ReadWriteOnce":
            if rwo_owner is not None and rwo_owner != service_name:
                yield (
                    field,
                    f"{volume!r} and a volume of {rwo_owner!r} are ReadWriteOnce: each is attached to"
                    " its own service's node, so one backup pod cannot mount both; make one"
                    " ReadWriteMany, or back up one service's volumes",
                )
            rwo_owner = rwo_owner or service_name


CNPG_PORT = 5432
"""The port CloudNativePG's instances listen on; a Cluster cannot change it."""
CNPG_FIXED_PARAMETERS = frozenset(
    {
        "allow_system_table_mods",
        "archive_cleanup_command",
        "archive_command",
        "archive_mode",
        "config_file",
        "data_directory",
        "external_pid_file",
        "hba_file",
        "hot_standby",
        "ident_file",
        "listen_addresses",
        "log_destination",
        "log_directory",
        "log_file_mode",
        "log_filename",
        "log_rotation_age",
        "log_rotation_size",
        "log_truncate_on_rotation",
        "logging_collector",
        "port",
        "primary_conninfo",
        "primary_slot_name",
        "promote_trigger_file",
        "recovery_end_command",
        "recovery_min_apply_delay",
        "recovery_target",
        "recovery_target_action",
        "recovery_target_inclusive",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_timeline",
        "recovery_target_xid",
        "restore_command",
        "shared_preload_libraries",
        "ssl",
        "ssl_ca_file",
        "ssl_cert_file",
        "ssl_key_file",
        "synchronous_standby_names",
        "unix_socket_directories",
        "unix_socket_group",
        "unix_socket_permissions",
    }
)
"""postgresql.conf settings CloudNativePG owns (its documented fixed parameters): its admission
webhook refuses a Cluster that sets one, so `validate` refuses it first."""


def _datastore_modes(stack: Stack) -> Iterator[Problem]:
    """`mode` against the rest of a datastore: a section for another mode, plain-host HA under an
    operator or a provider, and what CloudNativePG cannot do. Plain hosts ignore `mode` (they run
    `local`), so nothing here concerns them."""
    for name, store in stack.datastores.items():
        base: tuple[str | int, ...] = ("datastores", name)
        if store.external is not None and store.mode != "external":
            yield (
                (*base, "external"),
                f"external is set but mode is {store.mode}: set mode: external, or remove external",
            )
        if store.mode == "external" and store.replicas > 0:
            yield (
                (*base, "replicas"),
                "an external datastore's replicas are the provider's (RDS read replicas, ElastiCache"
                " nodes), not rendered: set replicas: 0",
            )
        if not isinstance(store, Postgres):
            continue
        if store.cloudnative_pg is not None and store.mode != "cloudnative-pg":
            yield (
                (*base, "cloudnative_pg"),
                f"cloudnative_pg is set but mode is {store.mode}: set mode: cloudnative-pg, or remove"
                " cloudnative_pg (an overlay removes it with cloudnative_pg: ~)",
            )
        if store.mode != "statefulset" and store.ha == "patroni":
            who = (
                "the CloudNativePG operator fails over by itself"
                if store.mode == "cloudnative-pg"
                else "an external database fails over as its provider does"
            )
            yield (
                (*base, "ha"),
                f"ha: patroni with mode: {store.mode}: {who}; Patroni would run a second, competing"
                " primary on plain hosts. Remove ha: patroni, or use mode: statefulset",
            )
        if store.mode != "cloudnative-pg":
            continue
        if store.port != CNPG_PORT:
            yield (
                (*base, "port"),
                f"mode: cloudnative-pg listens on {CNPG_PORT} only; set port: {CNPG_PORT} (a plain"
                " host's own port goes in local.port)",
            )
        if store.replica_resources is not None:
            yield (
                (*base, "replica_resources"),
                "mode: cloudnative-pg gives every instance the same resources (any may become the"
                " primary): remove replica_resources and size `resources` for the primary",
            )
        for setting in sorted(store.settings):
            if setting in CNPG_FIXED_PARAMETERS:
                yield (
                    (*base, "settings", setting),
                    f"{setting} is set by the CloudNativePG operator and cannot be changed in a"
                    " Cluster: remove it",
                )
        if store.password is not None and store.password.key != "password":
            yield (
                (*base, "password"),
                f"mode: cloudnative-pg reads the owner's password from key `password` of a"
                f" basic-auth Secret: use {{secretRef: {store.password.name}/password}} (the Secret"
                f" also holds `username: {store.user}`)",
            )


PATRONI_REST_PORT = 8008
"""Patroni's REST API port on a node whose `rest_port` is not given (Patroni's own default)."""
_HA_REQUIRED_ON = ("wal_log_hints",)
"""PostgreSQL settings `ha: patroni` needs on: pg_rewind turns a failed primary into a replica."""


def _high_availability(stack: Stack) -> Iterator[Problem]:
    """`ha: patroni`: its settings, a standby, each node's data directory, and every address on
    loopback or a private network, none used twice (across every HA datastore of the stack)."""
    seen: dict[tuple[str, int], str] = {}
    for name, store in stack.datastores.items():
        if not isinstance(store, Postgres):
            continue
        base: tuple[str | int, ...] = ("datastores", name)
        if store.ha == "none":
            if store.patroni is not None:
                yield (*base, "ha"), "patroni is set but ha is none: set ha: patroni, or remove patroni"
            if store.standbys:
                yield (
                    (*base, "standbys"),
                    "more standbys need ha: patroni (Patroni runs a node on each); without it"
                    " `shipyard dr failover` uses `standby` only",
                )
            continue
        if store.patroni is None:
            yield (
                (*base, "patroni"),
                "ha: patroni needs patroni.etcd, the etcd member(s) that hold the leader lock, e.g."
                " patroni: {etcd: [{host: 127.0.0.1, data_dir: /var/lib/shipyard/etcd}]}",
            )
        if store.standby is None:
            yield (*base, "standby"), "ha: patroni needs a standby (host, port, data_dir) to fail over to"
        for setting in _HA_REQUIRED_ON:
            value = store.settings.get(setting)
            if value is not None and str(value).lower() not in ("on", "true", "1", "yes"):
                yield (
                    (*base, "settings", setting),
                    f"ha: patroni needs {setting} on: pg_rewind makes a failed primary a replica with it",
                )
        nodes: list[tuple[tuple[str | int, ...], PlainHost]] = [(("local",), store.local)]
        if store.standby is not None:
            nodes.append((("standby",), store.standby))
        nodes += [(("standbys", index), host) for index, host in enumerate(store.standbys)]
        # (the field of the port, host, port, what listens there), for the address checks.
        listeners: list[tuple[tuple[str | int, ...], str, int, str]] = []
        for path, node in nodes:
            if node.data_dir is None:
                yield (*base, *path, "data_dir"), "ha: patroni needs each node's data directory"
            elif not node.data_dir.startswith("/"):
                yield (*base, *path, "data_dir"), f"{node.data_dir!r}: give an absolute path"
            listeners.append(((*base, *path, "port"), node.host, node.port or store.port, "PostgreSQL"))
            rest = node.rest_port or PATRONI_REST_PORT
            listeners.append(((*base, *path, "rest_port"), node.host, rest, "Patroni's REST API"))
        if store.patroni is not None:
            for index, member in enumerate(store.patroni.etcd):
                path = (*base, "patroni", "etcd", index)
                listeners.append(((*path, "client_port"), member.host, member.client_port, "etcd (clients)"))
                listeners.append(((*path, "peer_port"), member.host, member.peer_port, "etcd (peers)"))
            proxy = store.patroni.proxy
            if proxy is not None:
                path = (*base, "patroni", "proxy")
                listeners.append(((*path, "port"), proxy.host, proxy.port, "HAProxy (writes)"))
                if proxy.read_port is not None:
                    listeners.append(((*path, "read_port"), proxy.host, proxy.read_port, "HAProxy (reads)"))
        reported: set[tuple[str | int, ...]] = set()
        for port_path, host, port, what in listeners:
            host_path = (*port_path[:-1], "host")
            problem = listen_address_problem(host)
            if problem is not None:
                if host_path not in reported:
                    reported.add(host_path)
                    yield host_path, problem
                continue
            key = (ipaddress.ip_address(host).compressed, port)
            owner = ".".join(str(part) for part in port_path)
            if key in seen:
                yield port_path, f"{host}:{port} ({what}) is already taken by {seen[key]}: give each its own"
            else:
                seen[key] = owner


def listen_address_problem(host: str) -> str | None:
    """Why `host` must not be where an HA process listens (None when it may): Patroni's REST API,
    etcd and HAProxy listen on one loopback or private IP address only."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (
            f"{host!r} is not an IP address: ha: patroni listens on one loopback or private address"
            " (a name could resolve to a public one)"
        )
    if address.is_unspecified:
        return f"{host} listens on every interface: give the loopback or a private address"
    if not (address.is_loopback or address.is_private):
        return (
            f"{host} is a public address: Patroni's REST API, etcd and HAProxy listen only on loopback"
            " or private addresses (10/8, 172.16/12, 192.168/16, fc00::/7)"
        )
    return None
