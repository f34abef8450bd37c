"""Rules that need the whole stack: names that must exist, cycles, bounds, unique ports.

Each problem is returned with the field path it belongs to, so the loader can point at its line.
"""

from __future__ import annotations

from collections.abc import Iterator, Set

from pydantic import ValidationError

from ._model import Resources, Stack
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
