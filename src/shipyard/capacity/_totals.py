"""Requests and limits totals of one environment: per component and in all, at min and max replicas.

Every figure is an exact integer (millicores, bytes), so 7.35 cores is 7350 and sums never drift.
A component that gives a limit but no request is counted as Kubernetes admits it: the request
defaults to the limit. A component without a limit may use whatever its node has: it adds 0 to
the limits total, and `limits_missing` names it, so a total that leaves some out says so. Cron jobs
and migration init containers run now and then; they are listed as transient workloads and never
added to the steady totals.

The datastores' exporters (rendered beside each datastore on Kubernetes) are rows of their own,
outside the first totals, which stay the components' own (seed 004's table); so are shipyard's own
server's pods (`control_plane`, rendered by render/_control_plane.py). The second total,
`second_at_min`/`_at_max`, adds both (`with_exporters_at_*` the exporters alone), and the node pool
holds their pods too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..spec import Postgres, Redis, Resources, Stack, byte_count, millicores

ComponentKind = Literal["service", "datastore", "platform", "reserve", "exporter", "control-plane"]
At = Literal["min", "max"]
PoolRole = Literal["all", "app", "database", "stateful", "stateless"]
"""Which pods a node pool holds: `all` (one pool); `app` and `database` (the datastores' pods
apart); `stateful` and `stateless` (services without volumes apart, e.g. on spot nodes)."""


@dataclass(frozen=True)
class Amounts:
    """CPU in millicores, memory and storage in bytes."""

    cpu_request: int = 0
    cpu_limit: int = 0
    memory_request: int = 0
    memory_limit: int = 0
    storage: int = 0

    def __add__(self, other: Amounts) -> Amounts:
        return Amounts(
            self.cpu_request + other.cpu_request,
            self.cpu_limit + other.cpu_limit,
            self.memory_request + other.memory_request,
            self.memory_limit + other.memory_limit,
            self.storage + other.storage,
        )

    def pods(self, count: int) -> Amounts:
        """`count` instances of a pod (storage is not a pod's; it is kept as is)."""
        return Amounts(
            self.cpu_request * count,
            self.cpu_limit * count,
            self.memory_request * count,
            self.memory_limit * count,
            self.storage,
        )


@dataclass(frozen=True)
class Pod:
    """What one instance asks of a node (requests) and may use at most (limits)."""

    cpu_request: int
    cpu_limit: int
    memory_request: int
    memory_limit: int
    limits_missing: tuple[Literal["cpu", "memory"], ...] = ()
    """The limits the spec does not give (counted 0 above): the pod may use what its node has."""

    @classmethod
    def of(cls, resources: Resources) -> Pod:
        req, lim = resources.requests, resources.limits
        cpu_lim = millicores(lim.cpu) if lim.cpu is not None else 0
        mem_lim = byte_count(lim.memory) if lim.memory is not None else 0
        # Kubernetes defaults a missing request to the limit, so the scheduler sees the limit.
        cpu_req = millicores(req.cpu) if req.cpu is not None else cpu_lim
        mem_req = byte_count(req.memory) if req.memory is not None else mem_lim
        missing: tuple[Literal["cpu", "memory"], ...] = (
            *(("cpu",) if lim.cpu is None else ()),
            *(("memory",) if lim.memory is None else ()),
        )
        return cls(cpu_req, cpu_lim, mem_req, mem_lim, missing)

    @property
    def amounts(self) -> Amounts:
        return Amounts(self.cpu_request, self.cpu_limit, self.memory_request, self.memory_limit)


@dataclass(frozen=True)
class ComponentRow:
    """One line of the totals table: a group of identical pods plus the storage it claims."""

    name: str
    component: str
    """The spec's name of the component; a PostgreSQL primary and its replicas share it."""
    kind: ComponentKind
    replicas_min: int
    replicas_max: int
    pod: Pod | None
    """None for the system reserve, which is capacity held back rather than pods."""
    storage: int
    """Bytes of storage the whole row claims (the same at min and max)."""
    at_min: Amounts
    at_max: Amounts


@dataclass(frozen=True)
class Transient:
    """A workload that runs now and then (a cron job, a migration) and is not in the totals."""

    name: str
    kind: Literal["cron", "migration"]
    service: str
    pod: Pod
    schedule: str | None
    note: str


@dataclass(frozen=True)
class PodGroup:
    """`count` identical pods that the scheduler has to place, each asking `cpu`/`memory`."""

    name: str
    count: int
    cpu: int
    memory: int
    spread: str = ""
    """Pods with the same key are spread over different nodes where they fit."""


@dataclass(frozen=True)
class Demand:
    """What a node pool must hold: the pods' requests and the cluster-wide system reserve."""

    pods: tuple[PodGroup, ...]
    reserve_cpu: int
    reserve_memory: int

    @property
    def cpu(self) -> int:
        return self.reserve_cpu + sum(group.count * group.cpu for group in self.pods)

    @property
    def memory(self) -> int:
        return self.reserve_memory + sum(group.count * group.memory for group in self.pods)


@dataclass(frozen=True)
class CapacityTotals:
    """The totals of one environment of a stack."""

    stack: str
    environment: str
    rows: tuple[ComponentRow, ...]
    transient: tuple[Transient, ...]
    at_min: Amounts
    at_max: Amounts
    """The rows' totals; the exporters are not in them."""
    has_ingress: bool
    exporters: tuple[ComponentRow, ...] = ()
    """One row per datastore exporter rendered on Kubernetes."""
    control_plane: tuple[ComponentRow, ...] = ()
    """shipyard's own server (`control_plane`), a row when the spec has one."""
    managed: tuple[ManagedDatastore, ...] = ()
    """Datastores outside the cluster (`mode: external`), priced by `cost`, not counted here."""
    shared_storage: int = 0
    """Bytes of the storage (in `at_min.storage`) that is ReadWriteMany or ReadOnlyMany: file
    storage (EFS, Filestore), not block volumes."""
    database_pool: bool = False
    """The spec asks for the datastores' pods on a node pool of their own."""

    @property
    def with_exporters_at_min(self) -> Amounts:
        return sum((row.at_min for row in self.exporters), self.at_min)

    @property
    def with_exporters_at_max(self) -> Amounts:
        return sum((row.at_max for row in self.exporters), self.at_max)

    @property
    def second_rows(self) -> tuple[ComponentRow, ...]:
        """The rows outside seed 004's table: the exporters, then shipyard's server."""
        return (*self.exporters, *self.control_plane)

    @property
    def second_at_min(self) -> Amounts:
        """The second total: the rows' totals with the exporters and shipyard's server."""
        return sum((row.at_min for row in self.second_rows), self.at_min)

    @property
    def second_at_max(self) -> Amounts:
        return sum((row.at_max for row in self.second_rows), self.at_max)

    @property
    def limits_missing(self) -> tuple[ComponentRow, ...]:
        """The rows (exporters included) with pods that have no CPU or no memory limit: the limits
        totals leave out whatever those pods may use."""
        return tuple(
            row
            for row in (*self.rows, *self.second_rows)
            if row.pod is not None and row.pod.limits_missing and row.replicas_max > 0
        )

    def demand(self, at: At = "min", role: PoolRole = "all") -> Demand:
        """The pods to place (the exporters' too) and the reserve, at minimum or maximum replicas,
        of the pool that holds `role`'s pods (the system reserve goes with the app's pods)."""
        groups: list[PodGroup] = []
        reserve_cpu = reserve_memory = 0
        for row in (*self.rows, *self.second_rows):
            if pool_role(row, role) != role:
                continue
            count = row.replicas_min if at == "min" else row.replicas_max
            if row.pod is None:
                reserve_cpu += row.at_min.cpu_request
                reserve_memory += row.at_min.memory_request
            elif count:
                pod = row.pod
                groups.append(PodGroup(row.name, count, pod.cpu_request, pod.memory_request, row.component))
        return Demand(tuple(groups), reserve_cpu, reserve_memory)


def pool_role(row: ComponentRow, layout: PoolRole) -> PoolRole:
    """The pool of a layout (named by any of its roles) that holds `row`."""
    if layout == "all":
        return "all"
    if layout in ("app", "database"):
        return "database" if row.kind == "datastore" else "app"
    stateless = row.kind == "service" and row.storage == 0
    return "stateless" if stateless else "stateful"


def _row(
    name: str,
    kind: ComponentKind,
    pod: Pod,
    replicas: tuple[int, int],
    *,
    storage: int,
    component: str | None = None,
) -> ComponentRow:
    low, high = replicas
    return ComponentRow(
        name=name,
        component=component or name,
        kind=kind,
        replicas_min=low,
        replicas_max=high,
        pod=pod,
        storage=storage,
        at_min=pod.amounts.pods(low) + Amounts(storage=storage),
        at_max=pod.amounts.pods(high) + Amounts(storage=storage),
    )


@dataclass(frozen=True)
class ManagedDatastore:
    """A datastore outside the cluster (`mode: external`: RDS, Aurora, ElastiCache): no pods and
    no volumes here; `cost` prices its instance class from the catalogs as a line item."""

    name: str
    kind: Literal["postgresql", "redis"]
    host: str
    instance_class: str | None
    multi_az: bool
    storage: int
    """Allocated storage in bytes (PostgreSQL's `storage.size`), 0 when not given."""


def _managed(name: str, store: Postgres | Redis) -> ManagedDatastore | None:
    if store.mode != "external" or store.external is None:
        return None
    storage = byte_count(store.storage.size) if store.storage is not None else 0
    return ManagedDatastore(
        name=name,
        kind=store.kind,
        host=store.external.host,
        instance_class=store.external.instance_class,
        multi_az=store.external.multi_az,
        storage=storage if isinstance(store, Postgres) else 0,
    )


def _postgres_rows(name: str, store: Postgres) -> list[ComponentRow]:
    """The primary and the replicas, in either in-cluster mode (a CloudNativePG Cluster's
    1 + `replicas` instances are counted alike, each with its own volume), and a Pooler's
    PgBouncer pods; nothing for an external database (`ManagedDatastore`)."""
    if store.mode == "external" or store.storage is None:
        return []
    per_instance = byte_count(store.storage.size)
    primary = Pod.of(store.resources)
    rows = [_row(f"{name} (primary)", "datastore", primary, (1, 1), storage=per_instance, component=name)]
    if store.replicas:
        pod = Pod.of(store.replica_resources or store.resources)
        storage = per_instance * store.replicas  # each streaming replica holds a full copy
        rows.append(
            _row(
                f"{name} (replica)",
                "datastore",
                pod,
                (store.replicas, store.replicas),
                storage=storage,
                component=name,
            )
        )
    settings = store.cloudnative_pg if store.mode == "cloudnative-pg" else None
    if settings is not None and settings.pooler is not None:
        count = settings.pooler.instances
        rows.append(
            _row(
                f"{name} (pooler)",
                "datastore",
                Pod.of(settings.pooler.resources),
                (count, count),
                storage=0,
                component=f"{name}-pooler",
            )
        )
    return rows


def _redis_rows(name: str, store: Redis) -> list[ComponentRow]:
    """The primary (named as the datastore) and its read replicas, each replica with its own
    volume; nothing for an external Redis."""
    if store.mode == "external":
        return []
    per_instance = byte_count(store.storage.size) if store.storage else 0
    pod = Pod.of(store.resources)
    rows = [_row(name, "datastore", pod, (1, 1), storage=per_instance)]
    if store.replicas:
        rows.append(
            _row(
                f"{name} (replica)",
                "datastore",
                pod,
                (store.replicas, store.replicas),
                storage=per_instance * store.replicas,
                component=name,
            )
        )
    return rows


def capacity_totals(stack: Stack) -> CapacityTotals:
    """Sum the stack's requests, limits and storage per component and in all."""
    rows: list[ComponentRow] = []
    transient: list[Transient] = []
    shared = 0
    for name, service in stack.services.items():
        pod = Pod.of(service.resources)
        low = high = service.replicas
        if service.autoscaling is not None:
            low, high = service.autoscaling.min, service.autoscaling.max
        storage = sum(byte_count(volume.size) for volume in service.volumes.values())
        # A ReadWriteMany/ReadOnlyMany volume is one claim the pods share (file storage).
        files = sum(
            byte_count(volume.size)
            for volume in service.volumes.values()
            if volume.access_mode in ("ReadWriteMany", "ReadOnlyMany")
        )
        if service.workload == "statefulset":
            # A claim per pod of each volume, kept when the StatefulSet scales down: as many as
            # the most pods it runs.
            storage *= high
            files *= high
        shared += files
        rows.append(_row(name, "service", pod, (low, high), storage=storage))
        for job_name, job in service.cron.items():
            transient.append(
                Transient(
                    name=f"{name}/{job_name}",
                    kind="cron",
                    service=name,
                    pod=pod,
                    schedule=job.schedule,
                    note="one pod per run with the service's resources, gone when it ends",
                )
            )
        if service.migration:
            transient.append(
                Transient(
                    name=f"{name}/migration",
                    kind="migration",
                    service=name,
                    pod=pod,
                    schedule=None,
                    note=(
                        "init container with the service's resources; a pod's request is the"
                        " larger of its init and app containers, so the totals do not change"
                    ),
                )
            )
    for name, store in stack.datastores.items():
        if isinstance(store, Postgres):
            rows += _postgres_rows(name, store)
        else:
            rows += _redis_rows(name, store)
    # An exporter is a component of its own (its own pod, named like its Deployment): the node
    # pool need not spread it away from its datastore's pods.
    exporters = [
        _row(f"{name}-exporter", "exporter", Pod.of(exporter.resources), (1, 1), storage=0)
        for name, store in stack.datastores.items()
        if (exporter := store.kubernetes_exporter) is not None
    ]
    control_plane = []
    if (plane := stack.control_plane) is not None:
        # Its Deployment's pods (render/_control_plane.py): a component of its own.
        pod = Pod.of(plane.filled_resources)
        control_plane.append(_row("shipyard", "control-plane", pod, (plane.replicas,) * 2, storage=0))
    for name, component in stack.platform.components.items():
        # Each replica of a platform component has its own volume (a StatefulSet's claim), as
        # each PostgreSQL replica holds its own copy.
        storage = byte_count(component.storage) * component.replicas if component.storage else 0
        pod = Pod.of(component.resources)
        rows.append(_row(name, "platform", pod, (component.replicas,) * 2, storage=storage))
    reserve = stack.platform.reserve
    held = Amounts(cpu_request=millicores(reserve.cpu), memory_request=byte_count(reserve.memory))
    if held != Amounts():
        rows.append(ComponentRow("system reserve", "", "reserve", 0, 0, None, 0, held, held))
    at_min = sum((row.at_min for row in rows), Amounts())
    at_max = sum((row.at_max for row in rows), Amounts())
    return CapacityTotals(
        stack=stack.name,
        environment=stack.environment,
        rows=tuple(rows),
        transient=tuple(transient),
        at_min=at_min,
        at_max=at_max,
        has_ingress=any(service.ingress is not None for service in stack.services.values()),
        exporters=tuple(exporters),
        control_plane=tuple(control_plane),
        managed=tuple(m for name, store in stack.datastores.items() if (m := _managed(name, store))),
        shared_storage=shared,
        database_pool=stack.platform.database_pool,
    )
