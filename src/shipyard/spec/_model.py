"""The pydantic model of `shipyard.yaml`: one validated description of the whole stack.

Field names are the spec's keys (snake_case, as written in the file). Every model forbids unknown
keys, so a typo is an error with a did-you-mean rather than a setting silently ignored.
Cross-field rules that need the whole stack (names that must exist, cycles, unique ports) live in
`_checks.py`, where each problem can name its own field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    class_name: str = "nginx"
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


class Service(Model):
    role: Literal["web", "api", "worker"]
    image: str | None = None
    """The container image, for Kubernetes."""
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


class Postgres(Model):
    kind: Literal["postgresql"]
    version: Annotated[str, Field(pattern=r"^1[0-9]$")] = "15"
    image: str | None = None
    replicas: Annotated[int, Field(ge=0, le=15)] = 0
    """Streaming replicas besides the primary."""
    resources: Resources = Resources()
    replica_resources: Resources | None = None
    """Resources of each replica; the primary's when not given."""
    storage: Storage
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
    ha: Literal["none", "patroni"] = "none"
    """`patroni`: Patroni fails over by itself (settings in `patroni`); `none`: `shipyard dr failover`
    is the only way the standby takes over."""
    patroni: Patroni | None = None


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


Datastore = Annotated[Postgres | Redis, Field(discriminator="kind")]


class PlatformComponent(Model):
    """Something the cluster runs besides the app (ingress controller, Prometheus, …)."""

    replicas: Annotated[int, Field(ge=1)] = 1
    resources: Resources = Resources()
    storage: ByteQuantity | None = None
    namespace: str | None = None
    description: str | None = None


class Reserve(Model):
    """Capacity held back for the system (kubelet, DaemonSets): requests only."""

    cpu: CpuQuantity = "0"
    memory: ByteQuantity = "0"


class Platform(Model):
    components: dict[Name, PlatformComponent] = {}
    reserve: Reserve = Reserve()


class CanaryStep(Model):
    """One step of a canary: exactly one of weight, pause or analysis."""

    weight: Annotated[int, Field(ge=0, le=100)] | None = None
    pause: Duration | Literal["until-promoted"] | None = None
    analysis: Duration | None = None
    """Analyse for this long before going on."""

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        given = [k for k in ("weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a step is one of {weight: N}, {pause: 30s | until-promoted}, {analysis: 30s}")
        return self


class PrometheusCheck(Model):
    name: Name
    query: str = Field(min_length=1)
    max: float


class Analysis(Model):
    interval: Duration = 2
    window: Duration = 10
    max_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.02
    max_p99_ms: Annotated[float, Field(gt=0)] | None = None
    max_p99_ratio: Annotated[float, Field(gt=1)] | None = 2.0
    """The new version's p99 may be at most this many times the stable version's."""
    min_requests: Annotated[int, Field(ge=1)] = 20
    failure_limit: Annotated[int, Field(ge=0)] = 0
    """Failed checks tolerated before rolling back."""
    prometheus: list[PrometheusCheck] = []
    prometheus_url: str | None = Field(None, pattern=r"^https?://")
    """Where the `prometheus` checks run; `$SHIPYARD_PROMETHEUS_URL` wins when set."""


def _default_steps() -> list[CanaryStep]:
    steps: list[CanaryStep] = []
    for weight in (5, 25, 50):
        steps += [CanaryStep(weight=weight), CanaryStep(analysis=10)]
    return [*steps, CanaryStep(weight=100)]


class Rollout(Model):
    strategy: Literal["blue-green", "canary"] = "canary"
    steps: list[CanaryStep] = Field(default_factory=_default_steps)
    analysis: Analysis = Analysis()
    health_timeout: Duration = 60
    rollback_window: Duration = 600
    """How long the previous version is kept warm for an instant rollback."""
    auto_promote: bool = True


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


class Backup(Model):
    repository: str = Field(min_length=1)
    """A local directory or an S3 URL (`s3:https://host/bucket/path`)."""
    password: SecretRef | Annotated[str, Field(pattern=r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")]
    schedules: dict[ScheduledBackup, CronSchedule] = {}
    retention: Retention = Retention()
    sources: BackupSources = BackupSources()
    checks: list[str] = []
    """SQL statements that must succeed on a restored database."""
    read_data_subsets: Annotated[int, Field(ge=1, le=1000)] = 10
    """Each verification reads back 1/N of the repository's packs, the next Nth each time: every
    pack is read within N verifications (N days with a daily `verify` schedule). `verify --full`
    reads them all at once."""
    pitr: Pitr | None = None
    image: str = "shipyard/shipyard:latest"
    """The image that runs scheduled backups as Kubernetes CronJobs."""


class DrTargets(Model):
    rto: Duration
    rpo: Duration
    mttr: Duration | None = None
    drills: dict[DrillMode, CronSchedule] = {}
    """Drills `shipyard serve` runs by itself (e.g. `restore: "0 4 * * 0"`), each reported like `dr test`."""


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
    """Where Prometheus scrapes `shipyard serve`'s /metrics (host:port)."""
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
    api_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    """Telegram: the Bot API's base URL (default https://api.telegram.org; a self-hosted Bot API server)."""
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
    compliance_actions: list[str] = ["restore", "failover", "failback", "token", "flag", "deploy", "rollback"]
    """Actions (by prefix, e.g. `flag` covers `flag.update`) kept for `compliance_retention`."""


class SecretStore(Model):
    kind: Literal["SecretStore", "ClusterSecretStore"] = "ClusterSecretStore"
    name: Name
    refresh: Duration = 3600


class Secrets(Model):
    store: SecretStore | None = None
    """An external-secrets store; when given, every secretRef is fetched from it."""


class Stack(Model):
    """One environment of the stack, overlay applied."""

    name: Name
    environment: str = ""
    """Set by the loader from `-e`; not written in the file."""
    namespace: Name | None = None
    """The Kubernetes namespace; `<name>-<environment>` when not given."""
    services: dict[Name, Service] = {}
    datastores: dict[Name, Datastore] = {}
    platform: Platform = Platform()
    secrets: Secrets = Secrets()
    rollout: Rollout = Rollout()
    backup: Backup | None = None
    dr: DrTargets | None = None
    alerts: Alerts = Alerts()
    notifications: dict[Name, Channel] = {}
    audit: Audit = Audit()
    flags: list[dict[str, Any]] | dict[str, Any] = []
    """Feature flags to import (modelled by the flags package)."""

    @property
    def k8s_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        return f"{self.name}-{self.environment}" if self.environment else self.name
