"""The pydantic model of `shipyard.yaml`: one validated description of the whole stack.

Field names are the spec's keys (snake_case, as written in the file). Every model forbids unknown
keys, so a typo is an error with a did-you-mean rather than a setting silently ignored.
Cross-field rules that need the whole stack (names that must exist, cycles, unique ports) live in
`_checks.py`, where each problem can name its own field.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal, Protocol, Self, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .. import __version__
from ._audit_actions import COMPLIANCE_ACTIONS
from ._notification_urls import checked_url
from ._secrets import SECRET_REF
from ._units import ByteQuantity, CpuQuantity, CronSchedule, Duration

Name = Annotated[str, Field(pattern=r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")]
"""A component name: a DNS label of at most 40 characters, so derived names still fit in 63."""

Percent = Annotated[int, Field(ge=1, le=100)]

DrillMode = Literal["full", "partial", "backup", "restore", "failover"]
"""The DR drill modes (`shipyard dr test MODE`, `dr.drills` schedules, drill jobs). Defined here,
the lowest layer that names them, and imported by every other. `failover` kills the primary of a
scratch copy of the `ha: patroni` datastore under writes; the others restore backups."""
DRILL_MODES: tuple[DrillMode, ...] = get_args(DrillMode)

BackupWhat = Literal["full", "database", "files", "redis"]
"""What a backup set covers: every source, or the PostgreSQL datastores, the file volumes or the
Redis datastores (`shipyard backup WHAT`, `backup.schedules`, backup jobs). Defined here, the
lowest layer that names them, and imported by every other."""
BACKUP_WHATS: tuple[BackupWhat, ...] = get_args(BackupWhat)
ScheduledBackup = Literal[BackupWhat, "incremental", "verify"]
"""A `backup.schedules` key: a set to take, a pgBackRest incremental backup, or a verification."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SecretRef(Model):
    """A key of a Kubernetes Secret (`name/key`), or of the external store when one is named."""

    secret_ref: str = Field(alias="secretRef", pattern=SECRET_REF.pattern)
    store: str | None = None

    @property
    def name(self) -> str:
        return self.secret_ref.split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.secret_ref.split("/", 1)[1]

    @property
    def env_name(self) -> str:
        """The environment variable this reference is read from where shipyard runs on a plain
        host, and under which a backup CronJob gets it: `db-credentials/password` is
        DB_CREDENTIALS_PASSWORD (name and key upper-cased, every other character `_`), the
        variable a Kubernetes Secret mounted as environment would be."""
        return re.sub(r"[^A-Za-z0-9]", "_", f"{self.name}_{self.key}").upper()


EnvValue = str | int | float | bool | SecretRef


class Probe(Model):
    path: str = Field("/healthz", pattern=r"^/")
    period: Duration = 10
    timeout: Duration = 3
    failure_threshold: Annotated[int, Field(ge=1)] = 3
    success_threshold: Annotated[int, Field(ge=1)] = 1


class Health(Model):
    liveness: Probe | None = None
    readiness: Probe | None = None
    startup_delay: Duration = 0
    """How long the service may take to start; rendered as a startup probe."""


class Amounts(Model):
    cpu: CpuQuantity | None = None
    memory: ByteQuantity | None = None


class Resources(Model):
    requests: Amounts = Amounts()
    limits: Amounts = Amounts()


class ScalingBehaviour(Model):
    """One direction of HPA behaviour: how fast replicas may be added or removed."""

    stabilization: Duration = 0
    max_percent: Annotated[int, Field(ge=1)] | None = None
    max_pods: Annotated[int, Field(ge=1)] | None = None
    period: Annotated[int, Field(ge=1, le=1800)] = 60

    @model_validator(mode="after")
    def _one_policy(self) -> ScalingBehaviour:
        if self.max_percent is None and self.max_pods is None:
            raise ValueError("give max_percent or max_pods (or both): how much may change per period")
        return self


class Autoscaling(Model):
    min: Annotated[int, Field(ge=1)]
    max: Annotated[int, Field(ge=1)]
    cpu_percent: Percent | None = None
    memory_percent: Percent | None = None
    scale_up: ScalingBehaviour | None = None
    scale_down: ScalingBehaviour | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.cpu_percent is None and self.memory_percent is None:
            raise ValueError("give cpu_percent or memory_percent: the target that drives scaling")
        return self


class Ingress(Model):
    host: Annotated[
        str, Field(pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
    ]
    path: str = Field("/", pattern=r"^/")
    tls: bool = True
    cluster_issuer: str = "letsencrypt-prod"
    class_name: str | None = None
    """The IngressClass; default: the class of `platform.ingress_controller` (nginx or traefik)."""
    rate_limit_rps: Annotated[int, Field(ge=1)] | None = None
    rate_limit_rpm: Annotated[int, Field(ge=1)] | None = None
    body_size: ByteQuantity | None = None


class CronJob(Model):
    schedule: CronSchedule
    command: list[str] = Field(min_length=1)
    concurrency: Literal["Allow", "Forbid", "Replace"] = "Forbid"
    deadline: Duration | None = None


class Volume(Model):
    size: ByteQuantity
    mount: str = Field(pattern=r"^/")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"] = (
        "ReadWriteOnce"
    )
    storage_class: str | None = None


class ServiceMetrics(Model):
    """Where a service serves its Prometheus metrics: on its own port (the Service's `http`)."""

    path: str = Field("/metrics", pattern=r"^/")


class WritableDir(Model):
    """A directory the service writes to, as an `emptyDir` mounted there: with
    `readOnlyRootFilesystem` (always on) the image's own files cannot be written. Written as a
    path (`/app/.next/cache`) or `{path, size_limit}`."""

    path: str = Field(pattern=r"^(/[^/\x00]+)+$")
    """An absolute path, no trailing slash."""
    size_limit: ByteQuantity | None = None
    """The most it may hold; past it the kubelet evicts the pod. None: bounded by the node's disk."""

    @model_validator(mode="before")
    @classmethod
    def _from_path(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _plain(self) -> WritableDir:
        if any(part in (".", "..") for part in self.path.split("/")):
            raise ValueError(f"{self.path!r}: give the path without . or .. parts")
        return self


class ServiceAccount(Model):
    token: bool = False
    """Mount the ServiceAccount's API token into the pods: only for an app that calls the
    Kubernetes API itself. Off, a compromised pod holds no credentials for the API server."""


EgressHost = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$")
]


class EgressTarget(Model):
    """Somewhere outside the stack a service may connect to: a host name or a CIDR, on ports.

    Written as `host:port` (`api.mainnet-beta.solana.com:443`) or `{host | cidr, ports, protocol}`.
    A NetworkPolicy cannot name a host: a `host` is allowed as every public address on its ports
    (never the private ranges, where the cluster and the cloud's metadata service are), and kept by
    name in the policy's annotation. A `cidr` is exactly that block, less `except`.
    """

    host: EgressHost | None = None
    cidr: str | None = None
    except_: list[str] = Field([], alias="except")
    """Blocks inside `cidr` still refused."""
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(min_length=1)
    protocol: Literal["TCP", "UDP"] = "TCP"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            host, colon, port = data.rpartition(":")
            if not colon or not port.isdigit():
                raise ValueError(f"{data!r}: write host:port (e.g. api.example.com:443)")
            return {"host": host, "ports": [int(port)]}
        return data

    @model_validator(mode="after")
    def _one_destination(self) -> EgressTarget:
        if (self.host is None) == (self.cidr is None):
            raise ValueError("give host or cidr (one of them)")
        if self.except_ and self.cidr is None:
            raise ValueError("except narrows a cidr: give cidr")
        for block in [self.cidr, *self.except_]:
            if block is not None:
                try:
                    ipaddress.ip_network(block)
                except ValueError:
                    raise ValueError(f"{block!r} is not a CIDR block (e.g. 10.0.0.0/16)") from None
        return self


def _inside(path: str) -> str:
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"{path!r}: give a path relative to shipyard.yaml's directory, without ..")
    return path


RepoPath = Annotated[str, Field(min_length=1, pattern=r"^[^\x00\\]+$"), AfterValidator(_inside)]
"""A path relative to the directory that holds shipyard.yaml, never leaving it (no `..`)."""
BuildPlatform = Annotated[str, Field(pattern=r"^linux/(amd64|arm64|arm/v[67]|386|ppc64le|s390x|riscv64)$")]


class Build(Model):
    """How CI tests and builds the service's image (`shipyard render ci`, `shipyard check images`).
    Paths are relative to the directory that holds shipyard.yaml."""

    context: RepoPath = "."
    dockerfile: RepoPath | None = None
    """Default: `<context>/Dockerfile`."""
    test: str = Field(min_length=1)
    """The service's own tests: a shell command run in `context` before the image is built."""
    smoke: str | None = Field(None, min_length=1)
    """After a deploy, a shell command run in `context` against the environment
    (`$SMOKE_URL`: https:// and the service's ingress host there)."""
    platforms: list[BuildPlatform] = Field(["linux/amd64"], min_length=1)

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile, relative to the spec's directory."""
        if self.dockerfile is not None:
            return self.dockerfile
        return "Dockerfile" if self.context in (".", "./") else f"{self.context.rstrip('/')}/Dockerfile"


class Service(Model):
    role: Literal["web", "api", "worker"]
    image: str | None = None
    """The container image, for Kubernetes."""
    build: Build | None = None
    """How CI builds `image` (tests, Buildx, scan, signature); none: the image is built elsewhere."""
    run: str | None = None
    """The command that starts the service on a plain host (local target)."""
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    health: Health = Health()
    resources: Resources = Resources()
    replicas: Annotated[int, Field(ge=0)] = 1
    autoscaling: Autoscaling | None = None
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], EnvValue] = {}
    ingress: Ingress | None = None
    migration: list[str] | None = None
    """Run before the new version takes traffic (an init container on Kubernetes)."""
    cron: dict[Name, CronJob] = {}
    volumes: dict[Name, Volume] = {}
    depends_on: list[Name] = []
    drain: Duration = 20
    """How long a stopping instance keeps serving in-flight requests (preStop sleep)."""
    workload: Literal["deployment", "statefulset"] = "deployment"
    """`statefulset`: one claim per pod from each volume (volumeClaimTemplates) and stable pod names,
    for a service that keeps its own state (an IPFS node). A Deployment's pods all mount the same
    claim of each volume."""
    run_as_user: Annotated[int, Field(ge=1)] | None = None
    """The uid the containers run as (pod `runAsUser`; 0 is what `runAsNonRoot` refuses). Give it
    when the image's Dockerfile names its user (`USER nextjs`): the kubelet cannot tell that a name
    is not root and refuses the container ("image has non-numeric user ... cannot verify user is
    non-root"); the uid makes it start (seed 000's `nextjs` is 1001). Give it also when the image
    has no USER at all: it would run as root, which is refused too."""
    run_as_group: Annotated[int, Field(ge=1)] | None = None
    """The gid the containers run as (pod `runAsGroup`); the image's when not given."""
    fs_group: Annotated[int, Field(ge=1)] | None = None
    """The group that owns the volumes (pod `fsGroup`): how a non-root user gets to write them."""
    writable: list[WritableDir] = []
    """Directories the app writes to, each an emptyDir (`/tmp` always is one, listed or not), e.g.
    `[/app/.next/cache]` for Next.js."""
    service_account: ServiceAccount = ServiceAccount()
    """The service's own ServiceAccount (named like the service), with no API token unless asked."""
    egress: list[EgressTarget] = []
    """What outside the stack the pods may connect to, on Kubernetes. DNS and what `depends_on`
    names are always allowed; anything else is refused."""
    metrics: ServiceMetrics | None = ServiceMetrics()
    """Scraped by Prometheus (a scrape job, a ServiceMonitor) when it has a port; null: it serves
    no metrics, and nothing scrapes it."""

    @model_validator(mode="before")
    @classmethod
    def _command_as_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("migration"), str):
            data = {**data, "migration": ["/bin/sh", "-c", data["migration"]]}
        return data

    @model_validator(mode="after")
    def _shape(self) -> Service:
        if self.image is None and self.run is None:
            raise ValueError("give image (Kubernetes) or run (plain hosts), or both")
        if self.role != "worker" and self.port is None:
            raise ValueError(f"a {self.role} service needs a port")
        if self.ingress is not None and self.port is None:
            raise ValueError("ingress needs a port to route to")
        return self


class Storage(Model):
    size: ByteQuantity
    storage_class: str | None = None


Port = Annotated[int, Field(ge=1, le=65535)]
RoleName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
"""A PostgreSQL role (or etcd/REST user) name that needs no quoting anywhere it is written."""
EnvReference = Annotated[str, Field(pattern=r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")]
"""`${env:NAME}`: a secret read from shipyard's environment."""


class EtcdMember(Model):
    """One member of the etcd cluster that holds a Patroni datastore's leader lock (its DCS).

    shipyard runs it on its host (`shipyard dr ha up` there), listening on `host` only.
    """

    host: str = "127.0.0.1"
    """The loopback or private address clients and peers reach it on; never a wildcard."""
    client_port: Port = 2379
    peer_port: Port = 2380
    data_dir: str = Field(pattern=r"^/")


class PatroniProxy(Model):
    """The HAProxy shipyard runs in front of a Patroni datastore: writes go to the node that
    answers Patroni's `/primary` health check, reads to the nodes that answer `/replica`."""

    host: str = "127.0.0.1"
    """Where the app connects (loopback or a private address)."""
    port: Port = 5000
    """Writes (and reads that must see them): the primary."""
    read_port: Port | None = 5001
    """Reads the replicas may serve; null: no read route."""
    check_interval: Annotated[Duration, Field(ge=1, le=60)] = 1
    """How often HAProxy asks each node's REST API (twice as often while a node changes state):
    a dead primary is cut off after two failed checks, a new one taken after one passed."""


class Patroni(Model):
    """Automatic failover on plain hosts (`ha: patroni`): Patroni runs the primary and each replica,
    with etcd as its DCS; shipyard supervises every process (`shipyard dr ha up`).

    Secrets are references, read from shipyard's environment and handed to Patroni in its own
    environment, never written into `patroni.yml`. When not given they are
    `{secretRef: <datastore>-patroni/<key>}` (e.g. DB_PATRONI_SUPERUSER_PASSWORD).
    """

    ttl: Duration = 30
    """The leader lock's lifetime: a primary that stops renewing it is replaced after about this long."""
    loop_wait: Duration = 10
    """Seconds between Patroni's HA loops."""
    retry_timeout: Duration = 10
    """How long Patroni retries etcd and PostgreSQL before it demotes a primary it cannot confirm."""
    etcd: list[EtcdMember] = Field(min_length=1)
    proxy: PatroniProxy | None = PatroniProxy()
    """null: shipyard runs no HAProxy (route to Patroni's health checks yourself)."""
    superuser: RoleName = "postgres"
    replication_user: RoleName = "replicator"
    restapi_user: RoleName = "shipyard"
    """The user of Patroni's REST API's unsafe endpoints (switchover, failover, config)."""
    superuser_password: SecretRef | EnvReference | None = None
    """Default `<datastore>-patroni/superuser-password`."""
    replication_password: SecretRef | EnvReference | None = None
    """Default `<datastore>-patroni/replication-password`."""
    restapi_password: SecretRef | EnvReference | None = None
    """Default `<datastore>-patroni/restapi-password`."""
    etcd_password: SecretRef | EnvReference | None = None
    """etcd's `patroni` user, allowed only the stack's keys. Default `<datastore>-patroni/etcd-password`."""
    etcd_root_password: SecretRef | EnvReference | None = None
    """etcd's `root` user, with which shipyard turns etcd's authentication on and manages its users.
    Default `<datastore>-patroni/etcd-root-password`."""

    @model_validator(mode="after")
    def _timings(self) -> Patroni:
        if self.loop_wait < 1 or self.retry_timeout < 1:
            raise ValueError("loop_wait and retry_timeout must be at least 1s")
        if self.ttl < self.loop_wait + 2 * self.retry_timeout:
            raise ValueError(
                f"ttl ({self.ttl}s) must be at least loop_wait + 2 x retry_timeout"
                f" ({self.loop_wait + 2 * self.retry_timeout}s), or a healthy primary can lose its"
                " leader lock while it retries"
            )
        return self


class PlainHost(Model):
    """Where a datastore runs on a plain host (ignored on Kubernetes, where its Service is used)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """The datastore's own `port` when not given."""
    data_dir: str | None = None
    """The server's data directory: needed by PITR (pgBackRest), failover and restores over live data."""
    rest_port: Port | None = None
    """Patroni's REST API on this node (`ha: patroni`), on `host`; 8008 when not given."""


def _exporter_resources() -> Resources:
    return Resources(requests=Amounts(cpu="50m", memory="64Mi"), limits=Amounts(cpu="200m", memory="128Mi"))


class Exporter(Model):
    """The Prometheus exporter rendered beside a datastore on Kubernetes (postgres_exporter,
    redis_exporter): its own Deployment and Service, counted by `capacity` as a row of its own."""

    image: str | None = None
    """Default: the exporter image shipyard pins (render/_exporters.py)."""
    resources: Resources = Field(default_factory=_exporter_resources)


DatastoreMode = Literal["statefulset", "cloudnative-pg", "external"]
"""How a datastore runs on Kubernetes: a StatefulSet shipyard renders, a CloudNativePG `Cluster`
(PostgreSQL only) the operator runs, or a managed service outside the cluster (RDS, Aurora,
ElastiCache) that shipyard only connects to. Plain hosts (the local target) use `local` whatever
the mode."""

RetentionPolicy = Annotated[str, Field(pattern=r"^[1-9][0-9]*[dwm]$")]
"""Barman's retention window: a count of days, weeks or months (`30d`, `4w`, `6m`)."""


class BarmanBackup(Model):
    """CloudNativePG's own backups: continuous WAL archiving and scheduled base backups to S3
    (barman-cloud), which restore a new Cluster to any point in the retention window.

    Credentials are references to a Secret's keys (read by the operator's pods, never rendered),
    or `iam_role: true` when the pods' ServiceAccount has an IAM role (IRSA) that may write the bucket.
    """

    destination: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?$")
    """`s3://bucket/path`: where base backups and WAL go (the Cluster's name is added below it)."""
    endpoint_url: str | None = Field(None, pattern=r"^https?://\S+$")
    """An S3-compatible endpoint (MinIO, R2, …); AWS's own when not given."""
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None
    region: SecretRef | None = None
    iam_role: bool = False
    schedule: CronSchedule = "0 3 * * *"
    """When a base backup is taken (UTC, five fields; rendered with CloudNativePG's seconds field)."""
    retention: RetentionPolicy = "30d"
    target: Literal["primary", "prefer-standby"] = "prefer-standby"
    """Which instance takes the base backup: a standby spares the primary the I/O."""
    compression: Literal["gzip", "bzip2", "snappy"] | None = "gzip"

    @model_validator(mode="after")
    def _credentials(self) -> BarmanBackup:
        keys = (self.access_key_id is not None, self.secret_access_key is not None)
        if keys[0] != keys[1]:
            raise ValueError("give access_key_id and secret_access_key together")
        if keys[0] == self.iam_role:
            raise ValueError(
                "give the S3 credentials as access_key_id and secret_access_key (secretRef), or"
                " iam_role: true when the pods' ServiceAccount has an IAM role; one of the two"
            )
        return self


class PgBouncer(Model):
    """A CloudNativePG `Pooler`: PgBouncer pods in front of the primary (`<name>-pooler-rw`), which
    services then connect to instead of the Cluster's `<name>-rw` Service."""

    instances: Annotated[int, Field(ge=1, le=20)] = 2
    pool_mode: Literal["session", "transaction"] = "session"
    """`transaction` multiplexes far more clients, but breaks session state (SET, advisory locks,
    prepared statements on old drivers); `session` is CloudNativePG's default."""
    max_client_conn: Annotated[int, Field(ge=1)] | None = None
    default_pool_size: Annotated[int, Field(ge=1)] | None = None
    resources: Resources = Resources()


class CloudNativePg(Model):
    """`mode: cloudnative-pg`: the CloudNativePG operator (installed in the cluster) runs
    1 + `replicas` instances with automatic failover, from a `Cluster` shipyard renders."""

    backup: BarmanBackup | None = None
    pooler: PgBouncer | None = None
    anti_affinity: Literal["preferred", "required"] = "preferred"
    """Instances on different nodes: `required` leaves an instance pending rather than share a node."""
    operator_namespace: Name = "cnpg-system"
    """Where the operator runs: its pods must reach the instances' status port (8000) and 5432."""


HostName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$")
]


class ExternalDatastore(Model):
    """`mode: external`: a managed database outside the cluster (RDS, Aurora, ElastiCache). Nothing
    is rendered to run it; services connect to `host` on the datastore's `port`, with the
    datastore's credentials (references, as for every mode)."""

    host: HostName
    cidr: str | None = None
    """The addresses `host` resolves to (e.g. the database subnets, `10.0.16.0/20`): egress
    NetworkPolicies admit connections there. When not given, egress is allowed to the port on any
    address (a NetworkPolicy cannot name a host)."""
    instance_class: str | None = Field(None, min_length=1)
    """The provider's instance class (`db.r6g.large`, `cache.t4g.small`): `cost` prices it from the
    catalog that lists it. Not given: not priced (said in the estimate's notes)."""
    multi_az: bool = False
    """A standby in a second zone, billed as a second instance."""

    @model_validator(mode="after")
    def _network(self) -> ExternalDatastore:
        if self.cidr is not None:
            try:
                ipaddress.ip_network(self.cidr)
            except ValueError as exc:
                raise ValueError(f"cidr {self.cidr!r} is not a network address: {exc}") from None
        return self


class ExternalPostgres(ExternalDatastore):
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "require"
    """libpq's `sslmode` (PGSSLMODE, and `?sslmode=` in DATABASE_URL): RDS and Aurora accept TLS."""


class ExternalRedis(ExternalDatastore):
    tls: bool = True
    """Connect with TLS (`rediss://`): ElastiCache with in-transit encryption needs it."""


class Postgres(Model):
    kind: Literal["postgresql"]
    version: Annotated[str, Field(pattern=r"^1[0-9]$")] = "15"
    image: str | None = None
    replicas: Annotated[int, Field(ge=0, le=15)] = 0
    """Streaming replicas besides the primary."""
    resources: Resources = Resources()
    replica_resources: Resources | None = None
    """Resources of each replica; the primary's when not given."""
    storage: Storage | None = None
    """Each instance's volume (required but for `mode: external`, where it is the managed
    database's allocated storage, priced by `cost` when given)."""
    settings: dict[Annotated[str, Field(pattern=r"^[a-z_.]+$")], str | int | float | bool] = {}
    database: Name = "app"
    user: Name = "app"
    password: SecretRef | None = None
    """Where the password lives; `<name>-credentials/password` when not given."""
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    local: PlainHost = PlainHost()
    """The primary on a plain host."""
    standby: PlainHost | None = None
    """A streaming replica on a plain host, the target of `shipyard dr failover`."""
    standbys: list[PlainHost] = []
    """More replicas on plain hosts (`ha: patroni` only: Patroni runs a node on each)."""
    exporter: Exporter | None = Exporter()
    """postgres_exporter on Kubernetes; null: none (e.g. a managed database watched otherwise)."""
    ha: Literal["none", "patroni"] = "none"
    """`patroni`: Patroni fails over by itself (settings in `patroni`); `none`: `shipyard dr failover`
    is the only way the standby takes over."""
    patroni: Patroni | None = None
    mode: DatastoreMode = "statefulset"
    """How it runs on Kubernetes (see DatastoreMode); plain hosts use `local` in every mode."""
    cloudnative_pg: CloudNativePg | None = None
    """`mode: cloudnative-pg`'s settings (defaults when not given)."""
    external: ExternalPostgres | None = None
    """`mode: external`: where the managed database is."""

    @property
    def kubernetes_exporter(self) -> Exporter | None:
        """The exporter rendered beside it on Kubernetes (and counted by `capacity`): none when
        `exporter` is null or under CloudNativePG, whose instances export their own metrics."""
        return None if self.mode == "cloudnative-pg" else self.exporter

    @model_validator(mode="after")
    def _mode_needs(self) -> Postgres:
        if self.mode == "external" and self.external is None:
            raise ValueError("mode: external needs external: {host: ...}, the managed database's address")
        if self.mode != "external" and self.storage is None:
            raise ValueError(f"mode: {self.mode} needs storage: {{size: ...}}, each instance's volume")
        return self


class RedisPersistence(Model):
    rdb: list[Annotated[str, Field(pattern=r"^\d+ \d+$")]] = ["900 1", "300 10", "60 10000"]
    aof: Literal["no", "everysec", "always"] = "everysec"


class Redis(Model):
    kind: Literal["redis"]
    version: Annotated[str, Field(pattern=r"^[5-9](\.\d+)?$")] = "7"
    image: str | None = None
    maxmemory: ByteQuantity | None = None
    eviction_policy: Literal[
        "noeviction",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] = "noeviction"
    persistence: RedisPersistence = RedisPersistence()
    resources: Resources = Resources()
    storage: Storage | None = None
    password: SecretRef | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 6379
    local: PlainHost = PlainHost()
    exporter: Exporter | None = Exporter()
    """redis_exporter on Kubernetes; null: none."""
    replicas: Annotated[int, Field(ge=0, le=5)] = 0
    """Read replicas on Kubernetes (`<name>-replica`, `redis-server --replicaof` the primary, with
    `masterauth` from `password`); plain hosts run the primary only."""
    mode: Literal["statefulset", "external"] = "statefulset"
    """`external`: a managed Redis (ElastiCache) at `external.host`; nothing is rendered to run it."""
    external: ExternalRedis | None = None

    @property
    def kubernetes_exporter(self) -> Exporter | None:
        """The exporter rendered beside it on Kubernetes (and counted by `capacity`)."""
        return self.exporter

    @model_validator(mode="after")
    def _mode_needs(self) -> Redis:
        if self.mode == "external" and self.external is None:
            raise ValueError("mode: external needs external: {host: ...}, the managed Redis's address")
        return self


Datastore = Annotated[Postgres | Redis, Field(discriminator="kind")]


class PlatformComponent(Model):
    """Something the cluster runs besides the app (ingress controller, Prometheus, …)."""

    replicas: Annotated[int, Field(ge=1)] = 1
    resources: Resources = Resources()
    storage: ByteQuantity | None = None
    namespace: str | None = None
    description: str | None = None
    retention: Duration | None = None
    """How long Prometheus or Loki keeps data (`render argocd` sizes their charts with it)."""


class Reserve(Model):
    """Capacity held back for the system (kubelet, DaemonSets): requests only."""

    cpu: CpuQuantity = "0"
    memory: ByteQuantity = "0"


class PrometheusOperator(Model):
    """The cluster's Prometheus is run by the Prometheus Operator: `render kubernetes` adds
    ServiceMonitors, PodMonitors and a PrometheusRule (`prometheus_operator: true` for defaults)."""

    namespace: Name | None = None
    """Where Prometheus runs; default: the `kube-prometheus-stack` or `prometheus` component's
    namespace, else `monitoring`. NetworkPolicies admit scrapes from it."""
    labels: dict[str, str] = {}
    """Labels the Prometheus resource's monitor and rule selectors match (kube-prometheus-stack
    selects `release: <its release name>` unless told otherwise)."""


INGRESS_COMPONENTS = {"nginx": "ingress-nginx", "traefik": "traefik"}
"""Each ingress controller and the platform component that runs it."""


class Platform(Model):
    ingress_controller: Literal["nginx", "traefik"] = "nginx"
    """The controller that carries outside traffic; its namespace is that of the component named
    after it (`ingress-nginx` or `traefik`), by default the component's name."""
    components: dict[Name, PlatformComponent] = {}
    reserve: Reserve = Reserve()
    database_pool: bool = False
    """Run the datastores' pods on a node pool of their own (`cost` sizes and prices it apart)."""
    prometheus_operator: PrometheusOperator | None = None
    """null (default): Prometheus reads the rendered prometheus.yml; the operator's objects are
    rendered only when this is given."""

    @property
    def ingress_component(self) -> str:
        """The component that is the ingress controller: `ingress-nginx` or `traefik`."""
        return INGRESS_COMPONENTS[self.ingress_controller]

    @model_validator(mode="before")
    @classmethod
    def _operator_switch(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("prometheus_operator"), bool):
            data = {**data, "prometheus_operator": {} if data["prometheus_operator"] else None}
        return data


class CanaryStep(Model):
    """One step of a canary: exactly one of weight, pause or analysis."""

    weight: Annotated[int, Field(ge=0, le=100)] | None = None
    pause: Duration | Literal["until-promoted"] | None = None
    analysis: Duration | None = None
    """Analyse for this long before going on."""
    test: Name | None = None
    """Run the test command `rollout.hooks.tests.<name>`: it passes by exiting 0 in its time."""

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        given = [k for k in ("weight", "pause", "analysis", "test") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a step is one of {weight: N}, {pause: 30s | until-promoted}, {analysis: 30s}, {test: NAME}"
            )
        return self


class PrometheusCheck(Model):
    name: Name
    query: str = Field(min_length=1)
    max: float


BASELINE_FACTOR = 2.0
"""How many times the stable's p99 before the release the default `max_p99_ms` is, when the
policy has no `max_p99_ratio` to use instead."""


class Latency(Protocol):
    """What the latency rule scales: a latency, or an expression of one (a PromQL query)."""

    def __rmul__(self, factor: float, /) -> Self: ...

    def __add__(self, term: float, /) -> Self: ...


LatencyT = TypeVar("LatencyT", bound=Latency)


class Analysis(Model):
    interval: Duration = 2
    window: Duration = 10
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.02
    max_p99_ms: Annotated[float, Field(gt=0)] | None = None
    """Unset: derived from the stable version's p99 before the release (its traffic while the
    candidate starts) as `max_p99_ratio` x that p99 + `p99_margin_ms`."""
    max_p99_ratio: Annotated[float, Field(gt=1)] | None = 2.0
    """The new version's p99 may be at most this many times the stable version's."""
    min_requests: Annotated[int, Field(ge=1)] = 20
    p99_margin_ms: Annotated[float, Field(ge=0)] = 25
    """Added to every derived p99 limit (`max_p99_ratio` x the stable's p99, and the default
    `max_p99_ms`), so a stable version answering in 2 ms does not fail a candidate at 5 ms."""
    max_log_loss: Annotated[float, Field(ge=0, le=1)] = 0.05
    """The largest share of a window's requests whose log line may be missing: above it the
    latency of the window is unknown, and the window is inconclusive (never passed)."""
    max_inconclusive: Annotated[int, Field(ge=1)] = 3
    """Inconclusive windows in a row (each observed afresh) before a release pauses for an operator."""
    failure_limit: Annotated[int, Field(ge=0)] = 0
    """Failed checks tolerated before rolling back."""
    prometheus: list[PrometheusCheck] = []
    prometheus_url: str | None = Field(None, pattern=r"^https?://")
    """Where the `prometheus` checks run; `$SHIPYARD_PROMETHEUS_URL` wins when set."""

    def p99_limit(self, reference: LatencyT, *, per_ms: float = 1.0) -> LatencyT:
        """The latency rule of a release, the one definition the local engine (a number of ms)
        and Argo's analysis (a PromQL query, in seconds: `per_ms` 0.001) both apply: a candidate's
        p99 may be at most `max_p99_ratio` x a reference p99 + `p99_margin_ms`.

        The reference is the stable version's p99 in the same window (`max_p99_ratio` set), or
        before the release for the default `max_p99_ms` (BASELINE_FACTOR x it without a ratio).
        """
        factor = self.max_p99_ratio if self.max_p99_ratio is not None else BASELINE_FACTOR
        return factor * reference + self.p99_margin_ms * per_ms


def _default_steps() -> list[CanaryStep]:
    steps: list[CanaryStep] = []
    for weight in (5, 25, 50):
        steps += [CanaryStep(weight=weight), CanaryStep(analysis=10)]
    return [*steps, CanaryStep(weight=100)]


class HookCommand(Model):
    """A command a release runs (`rollout.hooks`), by `/bin/sh -c`; it passes by exiting 0 within
    `timeout`. A plain string is the command with the default timeout."""

    command: str = Field(min_length=1)
    timeout: Annotated[Duration, Field(ge=1)] = 60
    """Killed (with everything it started) and failed when it runs longer."""
    image: str | None = Field(None, min_length=1)
    """Kubernetes: the image of the Job that runs it; default: the service's own image."""

    @model_validator(mode="before")
    @classmethod
    def _command_only(cls, data: Any) -> Any:
        return {"command": data} if isinstance(data, str) else data


class RolloutHooks(Model):
    """Release gates: commands run at fixed points of every release (README, "Release gates")."""

    pre: HookCommand | None = None
    """Before the release moves anything (before the migration and the new version's start)."""
    smoke: HookCommand | None = None
    """Against the new version's own address once it is healthy, before any traffic moves to it
    ($SHIPYARD_CANDIDATE_URL); failing, the release rolls back before any user request reaches it."""
    tests: dict[Name, HookCommand] = {}
    """Test commands that canary steps run: `{test: NAME}` (an analysis by exit code)."""
    post: HookCommand | None = None
    """Once the new version takes all traffic, while the old one is still warm: failing, it rolls back."""


class Rollout(Model):
    strategy: Literal["blue-green", "canary"] = "canary"
    steps: list[CanaryStep] = Field(default_factory=_default_steps)
    analysis: Analysis = Analysis()
    health_timeout: Duration = 60
    rollback_window: Duration = 600
    """How long the previous version is kept warm for an instant rollback."""
    auto_promote: bool = True
    hooks: RolloutHooks = RolloutHooks()

    @model_validator(mode="after")
    def _tests_named(self) -> Rollout:
        for index, step in enumerate(self.steps):
            if step.test is not None and step.test not in self.hooks.tests:
                known = ", ".join(sorted(self.hooks.tests)) or "none"
                raise ValueError(
                    f"steps[{index}].test: no test {step.test!r} in rollout.hooks.tests (defined: {known});"
                    f" add `hooks: {{tests: {{{step.test}: {{command: ..., timeout: 60s}}}}}}`"
                )
        return self


class Retention(Model):
    keep_last: Annotated[int, Field(ge=0)] = 3
    hourly: Annotated[int, Field(ge=0)] = 0
    daily: Annotated[int, Field(ge=0)] = 7
    weekly: Annotated[int, Field(ge=0)] = 4
    monthly: Annotated[int, Field(ge=0)] = 6
    min_verified: Annotated[int, Field(ge=1)] = 1


class BackupSources(Model):
    datastores: list[Name] = []
    volumes: list[str] = []
    """Service volumes as `service/volume`, or absolute paths on plain hosts."""


class Pitr(Model):
    """Point-in-time recovery of the PostgreSQL datastores through pgBackRest."""

    repository: str = Field(min_length=1)
    """pgBackRest's repository: a local directory (`repo1-path`)."""
    stanza: Name = "main"
    archive_timeout: Duration = 60
    """Longest a WAL segment waits before it is archived: the RPO bound when writes are rare."""
    stream: bool = False
    """Also stream WAL with pg_receivewal through a replication slot into
    `<repository>.walstream/<stanza>`; restores then replay up to the last streamed commit, not the
    last archived segment (under a second lost). shipyard never makes the receiver a synchronous
    standby: a dead receiver would then block every commit."""
    stream_max_wal: ByteQuantity | None = "8Gi"
    """The most WAL the stream's replication slot may hold back on the primary while pg_receivewal
    is behind or down (PostgreSQL's `max_slot_wal_keep_size`, which applies to every slot of the
    server). Past it PostgreSQL gives the slot up rather than fill the primary's disk; the stream
    then restarts from the current WAL and the archive covers the gap. null: no limit."""


def default_shipyard_image() -> str:
    """shipyard's own image at the running version (built from the repository's Dockerfile): the
    default of `backup.image` and `control_plane.image` alike."""
    return f"shipyard/shipyard:{__version__}"


default_backup_image = default_shipyard_image
"""The name tests/integration/render/test_dockerfile.py knows it by."""


def _pinned_image(image: str) -> str:
    # CKV_K8S_14: an unpinned image changes under a running schedule; a digest pins it too.
    if "@sha256:" in image:
        return image
    name, colon, tag = image.rpartition(":")
    if not colon or "/" in tag:
        raise ValueError(f"{image!r} has no tag, so it means `latest`: pin it, e.g. {image}:{__version__}")
    if tag == "latest":
        raise ValueError(
            f"{image!r}: `latest` changes under a running schedule; pin a version, e.g. {name}:{__version__}"
        )
    return image


PinnedImage = Annotated[str, Field(min_length=1), AfterValidator(_pinned_image)]
"""An image pinned by a tag or a digest, never `latest` (shipyard's own image, wherever it runs)."""


def default_backup_resources() -> Resources:
    # pg_dump and restic stream; restic's index for a large repository is what needs the memory.
    return Resources(requests=Amounts(cpu="100m", memory="256Mi"), limits=Amounts(cpu="1", memory="1Gi"))


class RepositoryCredentials(Model):
    """S3 keys for the restic repository, as references (restic's AWS_* variables are set from them)."""

    access_key_id: SecretRef | EnvReference
    secret_access_key: SecretRef | EnvReference
    region: str | None = None
    """AWS_DEFAULT_REGION, when the endpoint needs one."""


class Backup(Model):
    repository: str = Field(min_length=1)
    """A local directory or an S3 URL (`s3:https://host/bucket/path`)."""
    password: SecretRef | Annotated[str, Field(pattern=r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")]
    schedules: dict[ScheduledBackup, CronSchedule] = {}
    """What runs when. An environment's overlay replaces this set whole, never merges into it:
    `schedules: {full: "0 3 * * *"}` there runs only that, `schedules: {}` runs none."""
    retention: Retention = Retention()
    sources: BackupSources = BackupSources()
    checks: list[str] = []
    """SQL statements that must succeed on a restored database."""
    read_data_subsets: Annotated[int, Field(ge=1, le=1000)] = 10
    """Each verification reads back 1/N of the repository's packs, the next Nth each time: every
    pack is read within N verifications (N days with a daily `verify` schedule). `verify --full`
    reads them all at once."""
    pitr: Pitr | None = None
    image: PinnedImage = Field(default_factory=default_shipyard_image)
    """The image that runs scheduled backups as Kubernetes CronJobs: shipyard's own (the repository's
    Dockerfile) at this shipyard's version unless given; pinned by a tag or a digest, never `latest`."""
    resources: Resources = Field(default_factory=default_backup_resources)
    """The backup container's requests and limits; an amount not given is the default's."""
    credentials: RepositoryCredentials | None = None
    """The S3 keys restic signs requests with, by reference. None: restic reads AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY from shipyard's environment, or the pod's cloud identity in a cluster."""
    state_store: SecretRef | EnvReference | None = None
    """Where scheduled backups in a cluster record their sets: a reference to the state store's
    URL (`postgresql://…`, the one `shipyard serve` uses). Not given: `control_plane.state_store`,
    the server's own (`Stack.backup_state_store`). Neither: each run records in a throwaway SQLite
    file; its set is still listed from the repository (`backup list --from-repository`)."""


def default_control_plane_resources() -> Resources:
    # The server runs the drills itself (a restore into a scratch PostgreSQL, pg_dump and restic
    # streaming), so it is sized as a backup job is.
    return default_backup_resources()


class ControlPlane(Model):
    """shipyard's own server (`shipyard serve`) in the stack's namespace on Kubernetes: the flag
    API, the dashboard, /metrics (what Prometheus scrapes as job `shipyard`), drills and Argo
    Rollouts steering. Rendered by render/_control_plane.py."""

    image: PinnedImage = Field(default_factory=default_shipyard_image)
    """shipyard's own image, as `backup.image`: this shipyard's version unless given, never `latest`."""
    replicas: Annotated[int, Field(ge=1, le=10)] = 1
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    """The port `shipyard serve` listens on and its Service serves (named `http`)."""
    resources: Resources = Field(default_factory=default_control_plane_resources)
    """The server container's requests and limits; an amount not given is the default's."""
    state_store: SecretRef | None = None
    """The server's state store: a reference to a PostgreSQL URL (`postgresql://…`), read as
    `$SHIPYARD_DATABASE_URL`. Also where scheduled backups record their sets when
    `backup.state_store` is not given (one state store for both). None: a SQLite file in the pod's
    `/tmp`, lost when the pod goes (one replica only)."""
    state_store_port: Annotated[int, Field(ge=1, le=65535)] = 5432
    """The state store's port, which the server's egress NetworkPolicy opens (the URL itself is a
    secret, never read at render time)."""
    ingress: Ingress | None = None
    """Outside access to the dashboard and API, through the stack's ingress controller."""

    @property
    def filled_resources(self) -> Resources:
        """`resources`, each amount not given the default's: what the pods request (render) and
        what `capacity` counts."""
        given, default = self.resources, default_control_plane_resources()

        def filled(mine: Amounts, fallback: Amounts) -> Amounts:
            return Amounts(cpu=mine.cpu or fallback.cpu, memory=mine.memory or fallback.memory)

        return Resources(
            requests=filled(given.requests, default.requests), limits=filled(given.limits, default.limits)
        )

    @model_validator(mode="after")
    def _leases_need_postgres(self) -> ControlPlane:
        # Two servers share their scheduler's leases (shipyard.locks) and fires only through one
        # PostgreSQL state store; with a SQLite file each would run every schedule.
        if self.replicas > 1 and self.state_store is None:
            raise ValueError(
                f"replicas: {self.replicas} needs a PostgreSQL state_store (`state_store: {{secretRef:"
                " name/key}}`): replicas coordinate their schedules through its leases"
            )
        return self


class DrTargets(Model):
    rto: Duration
    rpo: Duration
    mttr: Duration | None = None
    drills: dict[DrillMode, CronSchedule] = {}
    """Drills `shipyard serve` runs by itself (e.g. `restore: "0 4 * * 0"`), each reported like `dr test`.
    Like `backup.schedules`, an overlay replaces this set whole."""


class Slo(Model):
    service: Name
    objective: Annotated[float, Field(gt=0, lt=100)] = 99.9
    indicator: Literal["availability", "latency"] = "availability"
    threshold_ms: Annotated[float, Field(gt=0)] | None = None
    """Latency SLOs: a request slower than this is a bad one (the histogram needs a bucket here)."""
    window: Duration = 30 * 86400

    @model_validator(mode="after")
    def _threshold(self) -> Slo:
        if self.indicator == "latency" and self.threshold_ms is None:
            raise ValueError("a latency SLO needs threshold_ms: how slow a request may be")
        return self


class AlertRule(Model):
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    expr: str = Field(min_length=1)
    for_: Duration = Field(0, alias="for")
    severity: Literal["page", "ticket", "info"] = "page"
    summary: str
    runbook: str | None = None


HostPort = Annotated[str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")]


class Alerts(Model):
    slos: list[Slo] = []
    rules: list[AlertRule] = []
    """The stack's own rules; one named like a built-in alert (e.g. HighErrorRate) replaces it."""
    runbook_base: Annotated[str, Field(pattern=r"^https?://")] = "https://runbooks.example.com/shipyard"
    """Where built-in alerts' runbooks live: `<runbook_base>/<AlertName>`."""
    backup_max_age: Duration = 26 * 3600
    """BackupFailure also fires when the newest backup of a source is older than this."""
    scrape_interval: Duration = 15
    shipyard_target: HostPort = "127.0.0.1:8080"
    """Where Prometheus scrapes `shipyard serve`'s /metrics (host:port) on plain hosts."""
    shipyard_service: HostPort | None = None
    """Where it scrapes shipyard in the cluster (`render prometheus --target kubernetes`) when shipyard
    runs outside the stack's `control_plane` (whose Service is scraped when it is set)."""
    haproxy_target: HostPort | None = None
    """Where the local target's HAProxy serves its Prometheus exporter (host:port, e.g. 127.0.0.1:8405),
    scraped for per-version RED metrics; none when not given (one fixed port per host)."""


ChannelRef = SecretRef | Annotated[str, Field(pattern=r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")]


class Channel(Model):
    kind: Literal["webhook", "slack", "telegram", "email"]
    url: ChannelRef | None = None
    token: ChannelRef | None = None
    chat_id: str | None = None
    to: list[str] = []
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: ChannelRef | None = None
    events: list[str] = ["*"]
    min_severity: Literal["page", "ticket", "info"] = "info"
    api_url: Annotated[str, Field(pattern=r"^https?://"), AfterValidator(checked_url)] | None = None
    """Telegram: the Bot API's base URL (default https://api.telegram.org; a self-hosted Bot API server);
    never a link-local or metadata address (`_notification_urls`)."""
    sender: str | None = None
    """Email: the From address (default shipyard@<smtp_host>)."""
    starttls: bool = True
    """Email: STARTTLS before authenticating (refused if the server cannot)."""

    @model_validator(mode="after")
    def _complete(self) -> Channel:
        needs = {
            "webhook": ["url"],
            "slack": ["url"],
            "telegram": ["token", "chat_id"],
            "email": ["to", "smtp_host"],
        }[self.kind]
        missing = [field for field in needs if not getattr(self, field)]
        if missing:
            raise ValueError(f"a {self.kind} channel needs {', '.join(missing)}")
        return self


class Audit(Model):
    """How long the audit log keeps entries (seed 001: 30/90 days, 7 years for compliance)."""

    retention: Duration = 90 * 86400
    compliance_retention: Duration = 7 * 365 * 86400
    compliance_actions: list[str] = list(COMPLIANCE_ACTIONS)
    """Actions (by prefix, e.g. `rollout.` covers `rollout.promote`) kept for `compliance_retention`;
    by default every action that changes the world (`_audit_actions.AUDIT_ACTIONS`)."""


class SecretStore(Model):
    kind: Literal["SecretStore", "ClusterSecretStore"] = "ClusterSecretStore"
    name: Name
    refresh: Duration = 3600
    provider: dict[str, Any] | None = None
    """The store's `spec.provider` (e.g. `{vault: {...}}`): given, `render argocd` renders the
    store itself, checked against External Secrets' CRD; absent, the store must already exist."""


class Secrets(Model):
    store: SecretStore | None = None
    """An external-secrets store; when given, every secretRef is fetched from it."""


class GitOpsSync(Model):
    """Argo CD's automated sync of an environment (`enabled: false`: synced by hand)."""

    enabled: bool = True
    prune: bool = True
    """Delete from the cluster what Git no longer has."""
    self_heal: bool = True
    """Undo changes made to the cluster outside Git."""


class AcmeIssuer(Model):
    """A cert-manager ClusterIssuer on an ACME server, solving HTTP-01 through the ingress."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    server: str = Field("https://acme-v02.api.letsencrypt.org/directory", pattern=r"^https://")


class GitOps(Model):
    """Where Argo CD finds the stack (`shipyard render argocd`); set, `deploy --target
    kubernetes` refuses the environment: a release is a commit."""

    repo: str = Field(pattern=r"^(https://|ssh://|git@)\S+$")
    revision: str = Field("HEAD", min_length=1)
    path: str = Field(".", pattern=r"^(\.|[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*)$")
    """The directory of the repository that holds the `render argocd` tree."""
    source: Literal["kustomize", "helm"] = "kustomize"
    automated: GitOpsSync = GitOpsSync()
    project: Name | None = None
    """The AppProject of the stack's Applications; the stack's name when not given."""
    destination: str = Field("https://kubernetes.default.svc", pattern=r"^https://")
    namespace: Name = "argocd"
    """Where Argo CD runs: its Applications and AppProjects live there."""
    argo_rollouts: bool = True
    """Workloads as Argo Rollouts run by the rollout policy (else Deployments)."""
    platform: bool = True
    """Also install the platform add-ons (ingress controller, cert-manager, …) as Applications."""
    issuers: dict[Name, AcmeIssuer] = {}
    """ClusterIssuers to create, by the name ingresses give as `cluster_issuer`."""


MUTABLE_TAGS = ("latest", "main", "master", "develop", "dev", "edge", "nightly", "stable")
"""Tags that name whatever was pushed last: the default of `images.mutable_tags`."""


class ImagePolicy(Model):
    """What images an environment may run, checked by `shipyard validate` (spec/_image_policy.py):
    in `environments` (production unless said otherwise), each image the spec names is pinned by
    digest (`repo:tag@sha256:…`), and none has a tag that moves. An overlay may relax it for one
    environment (`images: {require_digest: false}`).

    "Names" is meant: an image shipyard picks when the spec names none (a datastore's
    `postgres:15`, an exporter's, `backup.image` and `control_plane.image` at shipyard's own
    release tag) is a release tag, not checked; name it in the spec to have it pinned."""

    environments: list[Annotated[str, Field(pattern=r"^[a-z][-a-z0-9]{0,20}$")]] = ["production"]
    require_digest: bool = True
    mutable_tags: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]] = list(
        MUTABLE_TAGS
    )
    """Refused tags (a missing tag is `latest`); [] refuses none."""


_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(-(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
    r"(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?"
)


def _semver(value: str) -> str:
    if not _SEMVER.fullmatch(value):
        raise ValueError(f"{value!r} is not a SemVer 2.0 version: write MAJOR.MINOR.PATCH, e.g. 1.4.0")
    return value


SemVer = Annotated[str, AfterValidator(_semver)]
"""A SemVer 2.0 version (Helm refuses a chart whose `version` is not one)."""


class Infrastructure(Model):
    """Where `shipyard render opentofu` puts the environment's cloud resources; every field has a
    default, so the section is only needed to change one (render/_opentofu.py)."""

    region: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]*[0-9a-z]$")
    """The provider's region (`eu-central-1`, `europe-west3`, `fra1`, `fsn1`). Default: the
    region its price catalog lists (aws, gcp), `fra1` (digitalocean), `fsn1` (hetzner)."""
    zones: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*[0-9a-z]$")]] = []
    """The zones GKE node pools spread over; default `<region>-a`, `-b`, `-c`."""
    dns_zone: HostName | None = None
    """The existing DNS zone that holds the ingress hosts; default: each host's last two labels."""
    state_bucket: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None = None
    """The existing bucket that keeps OpenTofu's state; default `<stack>-tofu-state`."""


class Stack(Model):
    """One environment of the stack, overlay applied."""

    name: Name
    version: SemVer = "0.1.0"
    """The stack's release version: the Helm chart's `version` and `appVersion`."""
    environment: str = ""
    """Set by the loader from `-e`; not written in the file."""
    namespace: Name | None = None
    """The Kubernetes namespace; `<name>-<environment>` when not given."""
    services: dict[Name, Service] = {}
    datastores: dict[Name, Datastore] = {}
    platform: Platform = Platform()
    secrets: Secrets = Secrets()
    gitops: GitOps | None = None
    images: ImagePolicy = ImagePolicy()
    """Which images the environment may run (digests, no moving tags): production by default."""
    rollout: Rollout = Rollout()
    backup: Backup | None = None
    control_plane: ControlPlane | None = None
    """shipyard's own server in the cluster (render/_control_plane.py); none when not given."""
    dr: DrTargets | None = None
    alerts: Alerts = Alerts()
    notifications: dict[Name, Channel] = {}
    audit: Audit = Audit()
    infrastructure: Infrastructure | None = None
    """Region, zones, DNS zone and state bucket of `render opentofu`; defaults when not given."""
    flags: list[dict[str, Any]] | dict[str, Any] = []
    """Feature flags to import (modelled by the flags package)."""

    @property
    def backup_state_store(self) -> SecretRef | str | None:
        """Where scheduled backups record their sets: `backup.state_store`, else the control
        plane's state store (one store for the server and the jobs), else None."""
        if self.backup is not None and self.backup.state_store is not None:
            return self.backup.state_store
        return self.control_plane.state_store if self.control_plane is not None else None

    @property
    def k8s_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        return f"{self.name}-{self.environment}" if self.environment else self.name
