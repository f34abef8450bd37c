"""`render opentofu --provider digitalocean`: a VPC, DOKS with autoscaling node pools, DigitalOcean
Managed Databases (PostgreSQL; Valkey, DigitalOcean's successor to its managed Redis) in the VPC,
the Spaces backup bucket, a load balancer the ingress controller adopts, and DNS records.

Managed Databases pick their own port (25060 for PostgreSQL, 25061 for Valkey) and generate the
users' passwords: the outputs named after the spec's secretRefs carry them. Spaces has no storage
classes, so its lifecycle only expires old versions (no tiering); Spaces encrypts at rest itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._opentofu_hcl import (
    Block,
    Expr,
    Nested,
    ProviderModule,
    data,
    identifier,
    output,
    ref,
    resource,
    variable,
)

if TYPE_CHECKING:
    from ._opentofu import InfraPlan, ManagedStore

DIGITALOCEAN_PROVIDER = ("digitalocean/digitalocean", "~> 2.44")
DEFAULT_REGION = "fra1"
KUBERNETES_PREFIX = "1.31."
_ENGINES = {"postgresql": ("pg", None), "redis": ("valkey", "8")}


def default_region(catalog_region: str) -> str:
    return DEFAULT_REGION  # the catalog's prices are the same in every region


def default_zones(region: str) -> tuple[str, ...]:
    return ()


def _tags(plan: InfraPlan) -> list[str]:
    return [f"{key}:{value}" for key, value in sorted(plan.labels.items())]


def _cluster(plan: InfraPlan) -> list[Block]:
    first, *more = plan.pools

    def pool_body(pool_name: str, size: str, nodes: int, max_nodes: int) -> dict[str, object]:
        return {
            "name": pool_name,
            "size": size,
            "node_count": nodes,
            "auto_scale": True,
            "min_nodes": nodes,
            "max_nodes": max_nodes,
            "labels": {"shipyard.dev/pool": pool_name},
        }

    blocks = [
        resource(
            "digitalocean_vpc", "main", {"name": plan.name, "region": plan.region, "ip_range": "10.10.0.0/16"}
        ),
        data("digitalocean_kubernetes_versions", "current", {"version_prefix": KUBERNETES_PREFIX}),
        resource(
            "digitalocean_kubernetes_cluster",
            "main",
            {
                "name": plan.name,
                "region": plan.region,
                "version": ref("data.digitalocean_kubernetes_versions.current", "latest_version"),
                "vpc_uuid": ref("digitalocean_vpc.main", "id"),
                "auto_upgrade": True,
                "surge_upgrade": True,
                "ha": False,
                "tags": _tags(plan),
                "maintenance_policy": Nested({"day": "sunday", "start_time": "03:00"}),
                "node_pool": Nested(pool_body(first.name, first.node_type, first.nodes, first.max_nodes)),  # type: ignore[arg-type]
                "lifecycle": Nested({"ignore_changes": [Expr("node_pool[0].node_count")]}),
            },
            comment=(
                f"{first.nodes} × {first.node_type}, as `shipyard cost` prices it; up to {first.max_nodes}"
                " at maximum replicas. The HA control plane ($40/month) is off, as `cost` counts it."
            ),
        ),
    ]
    for pool in more:
        blocks.append(
            resource(
                "digitalocean_kubernetes_node_pool",
                identifier(pool.name),
                {
                    "cluster_id": ref("digitalocean_kubernetes_cluster.main", "id"),
                    **pool_body(pool.name, pool.node_type, pool.nodes, pool.max_nodes),  # type: ignore[dict-item]
                    "lifecycle": Nested({"ignore_changes": [Expr("node_count")]}),
                },
                comment=f"{pool.nodes} × {pool.node_type}, as `shipyard cost` prices it.",
            )
        )
    return blocks


def _database(plan: InfraPlan, store: ManagedStore) -> list[Block]:
    name = identifier(store.name)
    engine, version = _ENGINES[store.kind]
    cluster = ref(f"digitalocean_database_cluster.{name}", "id")
    blocks = [
        resource(
            "digitalocean_database_cluster",
            name,
            {
                "name": f"{plan.name}-{store.name}",
                "engine": engine,
                "version": version or store.version,
                "size": store.instance_class,  # the size `cost` prices
                "region": plan.region,
                "node_count": 2 if store.multi_az else 1,
                "private_network_uuid": ref("digitalocean_vpc.main", "id"),
                "tags": _tags(plan),
            },
            comment=(
                f"A Managed Database of size {store.instance_class}, as `shipyard cost` prices it"
                f"{', with a standby node' if store.multi_az else ''}."
            ),
        ),
        resource(
            "digitalocean_database_firewall",
            name,
            {
                "cluster_id": cluster,
                "rule": Nested({"type": "k8s", "value": ref("digitalocean_kubernetes_cluster.main", "id")}),
            },
            comment="Only the cluster's nodes may connect.",
        ),
    ]
    if store.kind == "postgresql":
        blocks += [
            resource("digitalocean_database_db", name, {"cluster_id": cluster, "name": store.database}),
            resource("digitalocean_database_user", name, {"cluster_id": cluster, "name": store.user}),
        ]
    return blocks


def _backup(plan: InfraPlan) -> list[Block]:
    bucket = plan.bucket
    if bucket is None:
        return []
    if not bucket.created_here:
        return [
            data(
                "digitalocean_spaces_bucket",
                "backup",
                {"name": bucket.name, "region": plan.region},
                comment=f"Made by the {bucket.owner} module.",
            )
        ]
    return [
        resource(
            "digitalocean_spaces_bucket",
            "backup",
            {
                "name": bucket.name,
                "region": plan.region,
                "acl": "private",
                "versioning": Nested({"enabled": True}),
                "lifecycle_rule": Nested(
                    {
                        "id": "old-versions",
                        "enabled": True,
                        "abort_incomplete_multipart_upload_days": 7,
                        "noncurrent_version_expiration": Nested({"days": 90}),
                    }
                ),
            },
            comment=(
                f"The restic repository's bucket ({bucket.repository}). Spaces has one storage class:"
                " no tiering; it encrypts at rest itself, and restic encrypts every pack before upload."
            ),
        )
    ]


def _dns(plan: InfraPlan) -> list[Block]:
    if not plan.records:
        return []
    blocks = [
        resource(
            "digitalocean_loadbalancer",
            "ingress",
            {
                "name": f"{plan.name}-ingress",
                "region": plan.region,
                "vpc_uuid": ref("digitalocean_vpc.main", "id"),
                "size_unit": 1,
                "redirect_http_to_https": True,
                "forwarding_rule": [
                    Nested(
                        {
                            "entry_port": 80,
                            "entry_protocol": "tcp",
                            "target_port": 30080,
                            "target_protocol": "tcp",
                        }
                    ),
                    Nested(
                        {
                            "entry_port": 443,
                            "entry_protocol": "tcp",
                            "target_port": 30443,
                            "target_protocol": "tcp",
                        }
                    ),
                ],
                "healthcheck": Nested({"protocol": "tcp", "port": 30080}),
                "lifecycle": Nested(
                    {
                        "ignore_changes": [
                            Expr("forwarding_rule"),
                            Expr("healthcheck"),
                            Expr("droplet_ids"),
                            Expr("droplet_tag"),
                        ]
                    }
                ),
            },
            comment=(
                "The ingress controller's Service adopts it (annotation"
                " kubernetes.digitalocean.com/load-balancer-id = output ingress_load_balancer_id)."
            ),
        )
    ]
    for zone in plan.zone_names:
        blocks.append(data("digitalocean_domain", identifier(zone), {"name": zone}))
    for record in plan.records:
        blocks.append(
            resource(
                "digitalocean_record",
                identifier(record.host),
                {
                    "domain": ref(f"data.digitalocean_domain.{identifier(record.zone)}", "id"),
                    "type": "A",
                    "name": record.name,
                    "value": ref("digitalocean_loadbalancer.ingress", "ip"),
                    "ttl": 300,
                },
            )
        )
    return blocks


def _io(plan: InfraPlan) -> tuple[list[Block], list[Block]]:
    variables = [
        variable("digitalocean_token", "string", "A DigitalOcean API token.", sensitive=True),
        variable("spaces_access_id", "string", "A Spaces access key id (the backup bucket).", sensitive=True),
        variable("spaces_secret_key", "string", "The Spaces secret key.", sensitive=True),
    ]
    outputs = [
        output(
            "cluster_id",
            ref("digitalocean_kubernetes_cluster.main", "id"),
            "doctl kubernetes cluster kubeconfig save <this>",
        ),
        output(
            "cluster_endpoint", ref("digitalocean_kubernetes_cluster.main", "endpoint"), "The Kubernetes API."
        ),
    ]
    for store in plan.stores:
        name = identifier(store.name)
        cluster = f"digitalocean_database_cluster.{name}"
        outputs += [
            output(f"{name}_host", ref(cluster, "private_host"), f"datastores.{store.name}.external.host"),
            output(
                f"{name}_port",
                ref(cluster, "port"),
                f"datastores.{store.name}.port (DigitalOcean's, not 5432/6379)",
            ),
        ]
        secret = (
            ref(f"digitalocean_database_user.{name}", "password")
            if store.kind == "postgresql"
            else ref(cluster, "password")
        )
        output_name = store.password_output or f"{name}_password"
        where = f"secretRef {store.password.secret_ref}" if store.password else "the password"
        outputs.append(output(output_name, secret, f"{where} (generated by DigitalOcean)", sensitive=True))
    if plan.bucket is not None:
        bucket = plan.bucket
        where = (
            "digitalocean_spaces_bucket.backup"
            if bucket.created_here
            else "data.digitalocean_spaces_bucket.backup"
        )
        prefix = f"/{bucket.prefix}" if bucket.prefix else ""
        outputs += [
            output("backup_bucket", ref(where, "name"), "The backup bucket."),
            output(
                "backup_repository",
                Expr(f'"s3:https://{plan.region}.digitaloceanspaces.com/${{{where}.name}}{prefix}"'),
                "backup.repository for this bucket.",
            ),
        ]
    if plan.records:
        outputs += [
            output(
                "ingress_load_balancer_id",
                ref("digitalocean_loadbalancer.ingress", "id"),
                "kubernetes.digitalocean.com/load-balancer-id",
            ),
            output(
                "ingress_address",
                ref("digitalocean_loadbalancer.ingress", "ip"),
                "Where the ingress hosts point.",
            ),
        ]
    return variables, outputs


def module(plan: InfraPlan) -> ProviderModule:
    databases: list[Block] = []
    notes = []
    for store in plan.stores:
        databases += _database(plan, store)
        engine = "Valkey" if store.kind == "redis" else "PostgreSQL"
        notes.append(
            f"datastores.{store.name}: a {engine} Managed Database {store.instance_class};"
            f" its port is DigitalOcean's (output {identifier(store.name)}_port), not {store.port}"
        )
    variables, outputs = _io(plan)
    provider = Block(
        "provider",
        ("digitalocean",),
        {
            "token": ref("var.digitalocean_token"),
            "spaces_access_id": ref("var.spaces_access_id"),
            "spaces_secret_key": ref("var.spaces_secret_key"),
        },
    )
    backend = Nested(
        {
            "bucket": plan.state_bucket,
            "key": plan.state_key,
            "region": "us-east-1",
            "endpoints": {"s3": f"https://{plan.region}.digitaloceanspaces.com"},
            "skip_credentials_validation": True,
            "skip_requesting_account_id": True,
            "skip_metadata_api_check": True,
            "skip_region_validation": True,
            "skip_s3_checksum": True,
        },
        labels=("s3",),
    )
    return ProviderModule(
        providers={"digitalocean": DIGITALOCEAN_PROVIDER},
        backend=backend,
        files={
            "providers.tf": [provider],
            "cluster.tf": _cluster(plan),
            "databases.tf": databases,
            "backup.tf": _backup(plan),
            "dns.tf": _dns(plan),
            "variables.tf": variables,
            "outputs.tf": outputs,
        },
        notes=(
            *notes,
            "the state backend is Spaces (S3-compatible) without a lock: run one `tofu apply` at a time",
        ),
    )
