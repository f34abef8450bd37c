"""Rules that need the whole stack: names that must exist, cycles, bounds, unique ports.

Each problem is returned with the field path it belongs to, so the loader can point at its line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Set

from pydantic import ValidationError

from ._model import PlainHost, Postgres, Resources, Stack
from ._units import byte_count, millicores
from .flags import FlagSet

Problem = tuple[tuple[str | int, ...], str]


def check_stack(stack: Stack, assumed: Set[str] = frozenset()) -> list[Problem]:
    """Every cross-field problem in one environment's stack.

    `assumed` names entities that exist in the file but failed schema validation: references to
    them are not reported again as unknown.
    """
    return [
        *_replicas(stack),
        *_resources(stack),
        *_dependencies(stack, assumed),
        *_ports(stack),
        *_references(stack, assumed),
        *_flags(stack),
        *_high_availability(stack),
    ]


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


def _dependencies(stack: Stack, assumed: Set[str]) -> Iterator[Problem]:
    known = set(stack.services) | set(stack.datastores) | assumed
    for name, service in stack.services.items():
        for index, dependency in enumerate(service.depends_on):
            if dependency == name:
                yield ("services", name, "depends_on", index), f"{name!r} cannot depend on itself"
            elif dependency not in known:
                yield (
                    ("services", name, "depends_on", index),
                    f"no service or datastore named {dependency!r}; known: {', '.join(sorted(known))}",
                )
    cycle = _find_cycle(
        {n: [d for d in s.depends_on if d in stack.services] for n, s in stack.services.items()}
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
