"""`render opentofu --provider gcp`: a VPC-native network, a regional GKE cluster with private
nodes and node pools over the configured zones, Cloud SQL for PostgreSQL and Memorystore for
Redis on private services access, the GCS backup bucket and Cloud DNS records.

A node pool of N nodes spreads over the largest number of zones (at most three) that divides N,
with N / zones nodes in each, so the total is exactly the count `shipyard cost` prices.
Cloud DNS zones are looked up by name: the DNS name with dots as dashes (`example-com`).
"""

from __future__ import annotations

import math
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
    template,
    variable,
)

if TYPE_CHECKING:
    from ._opentofu import InfraPlan, ManagedStore, NodePool

GOOGLE_PROVIDER = ("hashicorp/google", "~> 6.14")
_NETWORK = "google_compute_network.main"


def default_region(catalog_region: str) -> str:
    return catalog_region


def default_zones(region: str) -> tuple[str, ...]:
    return tuple(f"{region}-{letter}" for letter in "abc")


def pool_zones(pool: NodePool, zones: tuple[str, ...]) -> tuple[str, ...]:
    """The zones a pool spreads over: the most (of the first three) that divide its node count."""
    for count in range(min(3, len(zones)), 0, -1):
        if pool.nodes % count == 0:
            return zones[:count]
    return zones[:1]


def _labels(plan: InfraPlan) -> dict[str, str]:
    return dict(plan.labels)


def _network(plan: InfraPlan) -> list[Block]:
    blocks = [
        resource(
            "google_compute_network",
            "main",
            {"name": plan.name, "auto_create_subnetworks": False, "routing_mode": "REGIONAL"},
        ),
        resource(
            "google_compute_subnetwork",
            "nodes",
            {
                "name": f"{plan.name}-nodes",
                "region": plan.region,
                "network": ref(_NETWORK, "id"),
                "ip_cidr_range": "10.0.0.0/20",
                "private_ip_google_access": True,
                "secondary_ip_range": [
                    Nested({"range_name": "pods", "ip_cidr_range": "10.4.0.0/14"}),
                    Nested({"range_name": "services", "ip_cidr_range": "10.8.0.0/20"}),
                ],
                "log_config": Nested(
                    {
                        "aggregation_interval": "INTERVAL_5_SEC",
                        "flow_sampling": Expr("0.5"),
                        "metadata": "INCLUDE_ALL_METADATA",
                    }
                ),
            },
        ),
        resource(
            "google_compute_firewall",
            "deny_ingress",
            {
                "name": f"{plan.name}-deny-ingress",
                "network": ref(_NETWORK, "id"),
                "direction": "INGRESS",
                "priority": 65534,
                "source_ranges": ["0.0.0.0/0"],
                "deny": Nested({"protocol": "all"}),
                "log_config": Nested({"metadata": "INCLUDE_ALL_METADATA"}),
            },
            comment="Nothing comes in but what GKE's own rules (priority 1000) admit.",
        ),
        resource(
            "google_compute_router",
            "main",
            {"name": plan.name, "region": plan.region, "network": ref(_NETWORK, "id")},
        ),
        resource(
            "google_compute_router_nat",
            "main",
            {
                "name": plan.name,
                "router": ref("google_compute_router.main", "name"),
                "region": plan.region,
                "nat_ip_allocate_option": "AUTO_ONLY",
                "source_subnetwork_ip_ranges_to_nat": "ALL_SUBNETWORKS_ALL_IP_RANGES",
                "log_config": Nested({"enable": True, "filter": "ERRORS_ONLY"}),
            },
            comment="Private nodes reach the internet through Cloud NAT (not in `shipyard cost`'s lines).",
        ),
    ]
    if plan.stores:
        blocks += [
            resource(
                "google_compute_global_address",
                "private_services",
                {
                    "name": f"{plan.name}-private-services",
                    "purpose": "VPC_PEERING",
                    "address_type": "INTERNAL",
                    "prefix_length": 16,
                    "network": ref(_NETWORK, "id"),
                },
            ),
            resource(
                "google_service_networking_connection",
                "private_services",
                {
                    "network": ref(_NETWORK, "id"),
                    "service": "servicenetworking.googleapis.com",
                    "reserved_peering_ranges": [
                        ref("google_compute_global_address.private_services", "name")
                    ],
                },
                comment="Cloud SQL and Memorystore reach the network on private addresses only.",
            ),
        ]
    return blocks


def _account_id(plan: InfraPlan) -> str:
    # 6 to 30 characters: a letter first, no dash last.
    return f"{plan.name[:24].rstrip('-')}-nodes"


def _cluster(plan: InfraPlan) -> list[Block]:
    blocks = [
        resource(
            "google_service_account",
            "nodes",
            {"account_id": _account_id(plan), "display_name": f"{plan.name} GKE nodes"},
            comment="The nodes' own least-privilege account, not the Compute Engine default.",
        )
    ]
    for role in (
        "roles/logging.logWriter",
        "roles/monitoring.metricWriter",
        "roles/monitoring.viewer",
        "roles/artifactregistry.reader",
    ):
        blocks.append(
            resource(
                "google_project_iam_member",
                f"nodes_{identifier(role.split('/')[1])}",
                {
                    "project": ref("var.project"),
                    "role": role,
                    "member": template("serviceAccount:${google_service_account.nodes.email}"),
                },
            )
        )
    blocks.append(
        resource(
            "google_container_cluster",
            "main",
            {
                "name": plan.name,
                "location": plan.region,
                "network": ref(_NETWORK, "id"),
                "subnetwork": ref("google_compute_subnetwork.nodes", "id"),
                "remove_default_node_pool": True,
                "initial_node_count": 1,
                "deletion_protection": True,
                "datapath_provider": "ADVANCED_DATAPATH",
                "enable_shielded_nodes": True,
                "enable_intranode_visibility": True,
                "resource_labels": _labels(plan),
                "release_channel": Nested({"channel": "REGULAR"}),
                "ip_allocation_policy": Nested(
                    {"cluster_secondary_range_name": "pods", "services_secondary_range_name": "services"}
                ),
                "private_cluster_config": Nested(
                    {
                        "enable_private_nodes": True,
                        "enable_private_endpoint": False,
                        "master_ipv4_cidr_block": "172.16.0.0/28",
                    }
                ),
                "master_authorized_networks_config": Nested(
                    {
                        "dynamic": Nested(
                            {
                                "for_each": ref("var.api_allowed_cidrs"),
                                "content": Nested({"cidr_block": ref("cidr_blocks", "value")}),
                            },
                            labels=("cidr_blocks",),
                        )
                    }
                ),
                "binary_authorization": Nested({"evaluation_mode": "PROJECT_SINGLETON_POLICY_ENFORCE"}),
                "master_auth": Nested(
                    {"client_certificate_config": Nested({"issue_client_certificate": False})}
                ),
                "workload_identity_config": Nested({"workload_pool": template("${var.project}.svc.id.goog")}),
                "node_config": Nested(
                    {
                        "service_account": ref("google_service_account.nodes", "email"),
                        "shielded_instance_config": Nested(
                            {"enable_secure_boot": True, "enable_integrity_monitoring": True}
                        ),
                        "workload_metadata_config": Nested({"mode": "GKE_METADATA"}),
                        "metadata": {"disable-legacy-endpoints": "true"},
                    }
                ),
                "lifecycle": Nested({"ignore_changes": [Expr("node_config")]}),
            },
            comment="The default pool is removed at once; the pools below are those `shipyard cost` prices.",
        )
    )
    for pool in plan.pools:
        zones = pool_zones(pool, plan.zones)
        blocks.append(
            resource(
                "google_container_node_pool",
                identifier(pool.name),
                {
                    "name": pool.name,
                    "cluster": ref("google_container_cluster.main", "id"),
                    "location": plan.region,
                    "node_locations": list(zones),
                    "initial_node_count": pool.nodes // len(zones),
                    "autoscaling": Nested(
                        {
                            "total_min_node_count": pool.nodes,
                            "total_max_node_count": pool.max_nodes,
                            "location_policy": "BALANCED",
                        }
                    ),
                    "management": Nested({"auto_repair": True, "auto_upgrade": True}),
                    "node_config": Nested(
                        {
                            "machine_type": pool.node_type,
                            "disk_size_gb": 50,
                            "disk_type": "pd-balanced",
                            "image_type": "COS_CONTAINERD",
                            "service_account": ref("google_service_account.nodes", "email"),
                            "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                            "labels": {"shipyard-dev-pool": pool.name},
                            "metadata": {"disable-legacy-endpoints": "true"},
                            "shielded_instance_config": Nested(
                                {"enable_secure_boot": True, "enable_integrity_monitoring": True}
                            ),
                            "workload_metadata_config": Nested({"mode": "GKE_METADATA"}),
                        }
                    ),
                    "lifecycle": Nested({"ignore_changes": [Expr("initial_node_count")]}),
                },
                comment=(
                    f"{pool.nodes} × {pool.node_type} ({len(zones)} zones × {pool.nodes // len(zones)}), as"
                    f" `shipyard cost` prices it; up to {pool.max_nodes} at maximum replicas."
                ),
            )
        )
    return blocks


def _postgres(plan: InfraPlan, store: ManagedStore) -> list[Block]:
    name = identifier(store.name)
    # CIS Cloud SQL PostgreSQL flags: connections, locks and DDL logged, pgAudit on, errors and
    # worse in the log, statement durations not (-1: they would carry the statements' data).
    flags = {
        "cloudsql.enable_pgaudit": "on",
        "log_checkpoints": "on",
        "log_connections": "on",
        "log_disconnections": "on",
        "log_duration": "on",
        "log_hostname": "on",
        "log_lock_waits": "on",
        "log_min_duration_statement": "-1",
        "log_min_messages": "error",
        "log_statement": "ddl",
    }
    assert store.password_output is not None
    return [
        resource(
            "google_sql_database_instance",
            name,
            {
                "name": f"{plan.name}-{store.name}",
                "database_version": f"POSTGRES_{store.version}",
                "region": plan.region,
                "deletion_protection": True,
                "settings": Nested(
                    {
                        "tier": store.instance_class,  # the tier `cost` prices
                        "availability_type": "REGIONAL" if store.multi_az else "ZONAL",
                        "disk_type": "PD_SSD",
                        "disk_size": store.storage_gib,
                        "disk_autoresize": True,
                        "user_labels": _labels(plan),
                        "ip_configuration": Nested(
                            {
                                "ipv4_enabled": False,
                                "private_network": ref(_NETWORK, "id"),
                                "ssl_mode": "ENCRYPTED_ONLY",
                            }
                        ),
                        "backup_configuration": Nested(
                            {"enabled": True, "point_in_time_recovery_enabled": True, "start_time": "03:00"}
                        ),
                        "database_flags": [
                            Nested({"name": flag, "value": value}) for flag, value in flags.items()
                        ],
                    }
                ),
                "depends_on": [Expr("google_service_networking_connection.private_services")],
            },
            comment=(
                f"Cloud SQL for PostgreSQL {store.instance_class} ({store.vcpu} vCPU,"
                f" {store.memory_gib} GiB), as `shipyard cost` prices it."
            ),
        ),
        resource(
            "google_sql_database",
            name,
            {"name": store.database, "instance": ref(f"google_sql_database_instance.{name}", "name")},
        ),
        resource(
            "google_sql_user",
            name,
            {
                "name": store.user,
                "instance": ref(f"google_sql_database_instance.{name}", "name"),
                "password": ref(f"var.{store.password_output}"),
            },
        ),
    ]


def memorystore_gib(store: ManagedStore) -> int:
    return max(1, math.ceil(float(store.memory_gib or 1)))


def _redis(plan: InfraPlan, store: ManagedStore) -> list[Block]:
    major = store.version.split(".")[0]
    return [
        resource(
            "google_redis_instance",
            identifier(store.name),
            {
                "name": f"{plan.name}-{store.name}",
                "region": plan.region,
                "tier": "STANDARD_HA" if store.multi_az else "BASIC",
                "memory_size_gb": memorystore_gib(store),
                "redis_version": f"REDIS_{major}_0",
                "authorized_network": ref(_NETWORK, "id"),
                "connect_mode": "PRIVATE_SERVICE_ACCESS",
                "auth_enabled": True,
                "transit_encryption_mode": "SERVER_AUTHENTICATION",
                "labels": _labels(plan),
                "depends_on": [Expr("google_service_networking_connection.private_services")],
            },
            comment=f"Memorystore for Redis {store.instance_class}, as `shipyard cost` prices it.",
        )
    ]


def _backup(plan: InfraPlan) -> list[Block]:
    bucket = plan.bucket
    if bucket is None:
        return []
    if not bucket.created_here:
        return [
            data(
                "google_storage_bucket",
                "backup",
                {"name": bucket.name},
                comment=f"Made by the {bucket.owner} module.",
            )
        ]

    def tier(age: int, source: str, target: str) -> Nested:
        return Nested(
            {
                "condition": Nested({"age": age, "matches_storage_class": [source]}),
                "action": Nested({"type": "SetStorageClass", "storage_class": target}),
            }
        )

    return [
        resource(
            "google_storage_bucket",
            "backup",
            {
                "name": bucket.name,
                "location": plan.region.upper(),
                "storage_class": "STANDARD",
                "uniform_bucket_level_access": True,
                "public_access_prevention": "enforced",
                "labels": _labels(plan),
                "versioning": Nested({"enabled": True}),
                "lifecycle_rule": [
                    tier(30, "STANDARD", "NEARLINE"),
                    tier(90, "NEARLINE", "COLDLINE"),
                    Nested(
                        {
                            "condition": Nested({"days_since_noncurrent_time": 90}),
                            "action": Nested({"type": "Delete"}),
                        }
                    ),
                    Nested(
                        {
                            "condition": Nested({"age": 7}),
                            "action": Nested({"type": "AbortIncompleteMultipartUpload"}),
                        }
                    ),
                ],
            },
            comment=(
                f"The restic repository's bucket ({bucket.repository}). Nearline and Coldline are read"
                " at once (restic reads packs back); objects are encrypted at rest with Google-managed keys."
            ),
        )
    ]


def _dns(plan: InfraPlan) -> list[Block]:
    if not plan.records:
        return []
    blocks = [
        resource(
            "google_compute_address",
            "ingress",
            {"name": f"{plan.name}-ingress", "region": plan.region, "address_type": "EXTERNAL"},
            comment="The ingress controller's Service takes this address (spec.loadBalancerIP).",
        )
    ]
    for zone in plan.zone_names:
        blocks.append(data("google_dns_managed_zone", identifier(zone), {"name": zone.replace(".", "-")}))
    for record in plan.records:
        blocks.append(
            resource(
                "google_dns_record_set",
                identifier(record.host),
                {
                    "managed_zone": ref(f"data.google_dns_managed_zone.{identifier(record.zone)}", "name"),
                    "name": f"{record.host}.",
                    "type": "A",
                    "ttl": 300,
                    "rrdatas": [ref("google_compute_address.ingress", "address")],
                },
            )
        )
    return blocks


def _io(plan: InfraPlan) -> tuple[list[Block], list[Block]]:
    variables = [
        variable("project", "string", "The Google Cloud project."),
        variable(
            "api_allowed_cidrs",
            "list(string)",
            "The addresses (CIDR blocks) that may reach the Kubernetes API.",
        ),
    ]
    outputs = [
        output(
            "cluster_name",
            ref("google_container_cluster.main", "name"),
            "gcloud container clusters get-credentials <this>",
        ),
        output("cluster_endpoint", ref("google_container_cluster.main", "endpoint"), "The Kubernetes API."),
    ]
    for store in plan.stores:
        name = identifier(store.name)
        if store.kind == "postgresql":
            assert store.password is not None
            assert store.password_output is not None
            host = ref(f"google_sql_database_instance.{name}", "private_ip_address")
            described = f"secretRef {store.password.secret_ref}: datastores.{store.name}'s password"
            variables.append(variable(store.password_output, "string", described, sensitive=True))
            outputs.append(
                output(store.password_output, ref(f"var.{store.password_output}"), described, sensitive=True)
            )
        else:
            host = ref(f"google_redis_instance.{name}", "host")
            auth = store.password_output or f"{name}_auth_string"
            where = f"secretRef {store.password.secret_ref}" if store.password else "the Redis AUTH string"
            outputs.append(
                output(
                    auth,
                    ref(f"google_redis_instance.{name}", "auth_string"),
                    f"{where} (generated by Memorystore)",
                    sensitive=True,
                )
            )
        outputs += [
            output(f"{name}_host", host, f"datastores.{store.name}.external.host"),
            output(f"{name}_port", Expr(str(store.port)), f"datastores.{store.name}.port"),
        ]
    if plan.bucket is not None:
        bucket = plan.bucket
        where = "google_storage_bucket.backup" if bucket.created_here else "data.google_storage_bucket.backup"
        outputs += [
            output("backup_bucket", ref(where, "name"), "The backup bucket."),
            output(
                "backup_repository",
                template(f"gs:${{{where}.name}}:/{bucket.prefix}"),
                "backup.repository for this bucket (restic's GCS backend).",
            ),
        ]
    if plan.records:
        outputs.append(
            output(
                "ingress_address",
                ref("google_compute_address.ingress", "address"),
                "The ingress controller's loadBalancerIP.",
            )
        )
    return variables, outputs


def module(plan: InfraPlan) -> ProviderModule:
    databases: list[Block] = []
    for store in plan.stores:
        databases += _postgres(plan, store) if store.kind == "postgresql" else _redis(plan, store)
    variables, outputs = _io(plan)
    provider = Block(
        "provider",
        ("google",),
        {"project": ref("var.project"), "region": plan.region, "default_labels": _labels(plan)},
    )
    return ProviderModule(
        providers={"google": GOOGLE_PROVIDER},
        backend=Nested(
            {"bucket": plan.state_bucket, "prefix": plan.state_key.rsplit("/", 1)[0]}, labels=("gcs",)
        ),
        files={
            "providers.tf": [provider],
            "network.tf": _network(plan),
            "cluster.tf": _cluster(plan),
            "databases.tf": databases,
            "backup.tf": _backup(plan),
            "dns.tf": _dns(plan),
            "variables.tf": variables,
            "outputs.tf": outputs,
        },
    )
