"""`render opentofu --provider aws`: a VPC over three zones, EKS with managed node groups, RDS for
PostgreSQL and ElastiCache for Redis, the S3 backup bucket and Route 53 records.

One customer-managed KMS key (rotated yearly) encrypts the cluster's Secrets, the databases, the
bucket and the log groups. The Kubernetes API is public only to `var.api_allowed_cidrs`. The
ingress controller's Network Load Balancer takes the Elastic IPs made here (annotation
`service.beta.kubernetes.io/aws-load-balancer-eip-allocations`, output `ingress_eip_allocations`),
so the DNS records can point at fixed addresses.
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
    template,
    variable,
)

if TYPE_CHECKING:
    from ._opentofu import InfraPlan, ManagedStore

AWS_PROVIDER = ("hashicorp/aws", "~> 5.80")
KUBERNETES_VERSION = "1.31"
ZONES = 3
_ELASTICACHE_VERSIONS = {"6": "6.2", "7": "7.1"}


def default_region(catalog_region: str) -> str:
    return catalog_region


def default_zones(region: str) -> tuple[str, ...]:
    return ()  # the first three of data.aws_availability_zones


def _tags(plan: InfraPlan, **more: str) -> dict[str, str]:
    return {**plan.labels, **more}


def _assume(service: str) -> Expr:
    return Expr(
        "jsonencode({\n"
        '    Version = "2012-10-17"\n'
        '    Statement = [{ Effect = "Allow", Action = "sts:AssumeRole",'
        f' Principal = {{ Service = "{service}" }} }}]\n'
        "  })"
    )


def _network(plan: InfraPlan) -> list[Block]:
    vpc = ref("aws_vpc.main", "id")
    blocks = [
        data("aws_availability_zones", "available", {"state": "available"}),
        resource(
            "aws_vpc",
            "main",
            {
                "cidr_block": "10.0.0.0/16",
                "enable_dns_support": True,
                "enable_dns_hostnames": True,
                "tags": _tags(plan, Name=plan.name),
            },
        ),
        resource(
            "aws_default_security_group",
            "main",
            {"vpc_id": vpc},
            comment="The VPC's default security group admits nothing: every rule is explicit.",
        ),
    ]
    for tier, offset, role in (("private", 0, "internal-elb"), ("public", 8, "elb")):
        blocks.append(
            resource(
                "aws_subnet",
                tier,
                {
                    "count": ZONES,
                    "vpc_id": vpc,
                    "availability_zone": Expr("data.aws_availability_zones.available.names[count.index]"),
                    "cidr_block": Expr(f"cidrsubnet(aws_vpc.main.cidr_block, 4, count.index + {offset})"),
                    "map_public_ip_on_launch": False,
                    "tags": _tags(
                        plan,
                        Name=f"{plan.name}-{tier}",
                        **{f"kubernetes.io/role/{role}": "1", f"kubernetes.io/cluster/{plan.name}": "shared"},
                    ),
                },
            )
        )
    blocks += [
        resource("aws_internet_gateway", "main", {"vpc_id": vpc, "tags": _tags(plan, Name=plan.name)}),
        resource("aws_eip", "nat", {"domain": "vpc", "tags": _tags(plan, Name=f"{plan.name}-nat")}),
        resource(
            "aws_nat_gateway",
            "main",
            {
                "allocation_id": ref("aws_eip.nat", "id"),
                "subnet_id": Expr("aws_subnet.public[0].id"),
                "tags": _tags(plan, Name=plan.name),
                "depends_on": [Expr("aws_internet_gateway.main")],
            },
            comment="One NAT gateway for the private subnets' way out (not in `shipyard cost`'s lines).",
        ),
        resource(
            "aws_route_table",
            "public",
            {
                "vpc_id": vpc,
                "route": Nested(
                    {"cidr_block": "0.0.0.0/0", "gateway_id": ref("aws_internet_gateway.main", "id")}
                ),
                "tags": _tags(plan, Name=f"{plan.name}-public"),
            },
        ),
        resource(
            "aws_route_table",
            "private",
            {
                "vpc_id": vpc,
                "route": Nested(
                    {"cidr_block": "0.0.0.0/0", "nat_gateway_id": ref("aws_nat_gateway.main", "id")}
                ),
                "tags": _tags(plan, Name=f"{plan.name}-private"),
            },
        ),
    ]
    for tier in ("public", "private"):
        blocks.append(
            resource(
                "aws_route_table_association",
                tier,
                {
                    "count": ZONES,
                    "subnet_id": Expr(f"aws_subnet.{tier}[count.index].id"),
                    "route_table_id": ref(f"aws_route_table.{tier}", "id"),
                },
            )
        )
    blocks += [
        resource(
            "aws_cloudwatch_log_group",
            "flow_logs",
            {
                "name": f"/aws/vpc/{plan.name}/flow-logs",
                "retention_in_days": 365,
                "kms_key_id": ref("aws_kms_key.main", "arn"),
            },
        ),
        resource(
            "aws_iam_role",
            "flow_logs",
            {"name": f"{plan.name}-flow-logs", "assume_role_policy": _assume("vpc-flow-logs.amazonaws.com")},
        ),
        resource(
            "aws_iam_role_policy",
            "flow_logs",
            {
                "name": "write-flow-logs",
                "role": ref("aws_iam_role.flow_logs", "id"),
                "policy": Expr(
                    "jsonencode({\n"
                    '    Version = "2012-10-17"\n'
                    "    Statement = [{\n"
                    '      Effect   = "Allow"\n'
                    '      Action   = ["logs:CreateLogStream", "logs:PutLogEvents",'
                    ' "logs:DescribeLogStreams"]\n'
                    '      Resource = "${aws_cloudwatch_log_group.flow_logs.arn}:*"\n'
                    "    }]\n"
                    "  })"
                ),
            },
        ),
        resource(
            "aws_flow_log",
            "main",
            {
                "vpc_id": vpc,
                "traffic_type": "ALL",
                "log_destination": ref("aws_cloudwatch_log_group.flow_logs", "arn"),
                "iam_role_arn": ref("aws_iam_role.flow_logs", "arn"),
            },
        ),
    ]
    return blocks


def _key(plan: InfraPlan) -> list[Block]:
    policy = Expr(
        "jsonencode({\n"
        '    Version = "2012-10-17"\n'
        "    Statement = [\n"
        "      {\n"
        '        Sid       = "AccountAdministers"\n'
        '        Effect    = "Allow"\n'
        '        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::'
        '${data.aws_caller_identity.current.account_id}:root" }\n'
        '        Action    = "kms:*"\n'
        '        Resource  = "*"\n'
        "      },\n"
        "      {\n"
        '        Sid       = "CloudWatchLogsEncrypt"\n'
        '        Effect    = "Allow"\n'
        '        Principal = { Service = "logs.${data.aws_region.current.name}.amazonaws.com" }\n'
        '        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*",'
        ' "kms:Describe*"]\n'
        '        Resource  = "*"\n'
        "      },\n"
        "    ]\n"
        "  })"
    )
    return [
        data("aws_caller_identity", "current", {}),
        data("aws_partition", "current", {}),
        data("aws_region", "current", {}),
        resource(
            "aws_kms_key",
            "main",
            {
                "description": f"{plan.name}: cluster Secrets, databases, backups and logs",
                "enable_key_rotation": True,
                "deletion_window_in_days": 30,
                "policy": policy,
            },
        ),
        resource(
            "aws_kms_alias",
            "main",
            {"name": f"alias/{plan.name}", "target_key_id": ref("aws_kms_key.main", "key_id")},
        ),
    ]


def _cluster(plan: InfraPlan) -> list[Block]:
    blocks = [
        resource(
            "aws_iam_role",
            "cluster",
            {"name": f"{plan.name}-eks", "assume_role_policy": _assume("eks.amazonaws.com")},
        ),
        resource(
            "aws_iam_role_policy_attachment",
            "cluster",
            {
                "role": ref("aws_iam_role.cluster", "name"),
                "policy_arn": template(
                    "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
                ),
            },
        ),
        resource(
            "aws_cloudwatch_log_group",
            "cluster",
            {
                "name": f"/aws/eks/{plan.name}/cluster",
                "retention_in_days": 365,
                "kms_key_id": ref("aws_kms_key.main", "arn"),
            },
        ),
        resource(
            "aws_eks_cluster",
            "main",
            {
                "name": plan.name,
                "version": ref("var.kubernetes_version"),
                "role_arn": ref("aws_iam_role.cluster", "arn"),
                "enabled_cluster_log_types": [
                    "api",
                    "audit",
                    "authenticator",
                    "controllerManager",
                    "scheduler",
                ],
                "vpc_config": Nested(
                    {
                        "subnet_ids": Expr("aws_subnet.private[*].id"),
                        "endpoint_private_access": True,
                        "endpoint_public_access": True,
                        "public_access_cidrs": ref("var.api_allowed_cidrs"),
                    }
                ),
                "encryption_config": Nested(
                    {
                        "resources": ["secrets"],
                        "provider": Nested({"key_arn": ref("aws_kms_key.main", "arn")}),
                    }
                ),
                "access_config": Nested({"authentication_mode": "API"}),
                "tags": _tags(plan),
                "depends_on": [
                    Expr("aws_iam_role_policy_attachment.cluster"),
                    Expr("aws_cloudwatch_log_group.cluster"),
                ],
            },
        ),
        resource(
            "aws_iam_role",
            "node",
            {"name": f"{plan.name}-node", "assume_role_policy": _assume("ec2.amazonaws.com")},
        ),
    ]
    for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"):
        blocks.append(
            resource(
                "aws_iam_role_policy_attachment",
                f"node_{policy.lower()}",
                {
                    "role": ref("aws_iam_role.node", "name"),
                    "policy_arn": template(
                        f"arn:${{data.aws_partition.current.partition}}:iam::aws:policy/{policy}"
                    ),
                },
            )
        )
    blocks.append(
        resource(
            "aws_launch_template",
            "node",
            {
                "name_prefix": f"{plan.name}-node-",
                "metadata_options": Nested(
                    {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}
                ),
                "block_device_mappings": Nested(
                    {
                        "device_name": "/dev/xvda",
                        "ebs": Nested(
                            {
                                "volume_size": 50,
                                "volume_type": "gp3",
                                "encrypted": True,
                                "kms_key_id": ref("aws_kms_key.main", "arn"),
                            }
                        ),
                    }
                ),
                "tag_specifications": Nested({"resource_type": "instance", "tags": _tags(plan)}),
            },
            comment="Nodes: IMDSv2 only, out of pods' reach (one hop: pods use IRSA); encrypted disks.",
        )
    )
    for pool in plan.pools:
        blocks.append(
            resource(
                "aws_eks_node_group",
                identifier(pool.name),
                {
                    "cluster_name": ref("aws_eks_cluster.main", "name"),
                    "node_group_name": f"{plan.name}-{pool.name}",
                    "node_role_arn": ref("aws_iam_role.node", "arn"),
                    "subnet_ids": Expr("aws_subnet.private[*].id"),
                    "instance_types": [pool.node_type],
                    "capacity_type": "ON_DEMAND",
                    "scaling_config": Nested(
                        {"desired_size": pool.nodes, "min_size": pool.nodes, "max_size": pool.max_nodes}
                    ),
                    "update_config": Nested({"max_unavailable": 1}),
                    "launch_template": Nested(
                        {
                            "id": ref("aws_launch_template.node", "id"),
                            "version": ref("aws_launch_template.node", "latest_version"),
                        }
                    ),
                    "labels": {"shipyard.dev/pool": pool.name},
                    "tags": _tags(
                        plan,
                        **{
                            "k8s.io/cluster-autoscaler/enabled": "true",
                            f"k8s.io/cluster-autoscaler/{plan.name}": "owned",
                        },
                    ),
                    "lifecycle": Nested({"ignore_changes": [Expr("scaling_config[0].desired_size")]}),
                    "depends_on": [
                        Expr(f"aws_iam_role_policy_attachment.node_{p.lower()}")
                        for p in (
                            "AmazonEKSWorkerNodePolicy",
                            "AmazonEKS_CNI_Policy",
                            "AmazonEC2ContainerRegistryReadOnly",
                        )
                    ],
                },
                comment=(
                    f"{pool.nodes} × {pool.node_type}, as `shipyard cost` prices it; up to {pool.max_nodes}"
                    " at maximum replicas (the cluster autoscaler's ceiling)."
                ),
            )
        )
    return blocks


def _database_network(plan: InfraPlan, store: ManagedStore) -> list[Block]:
    name = identifier(store.name)
    return [
        resource(
            "aws_security_group",
            name,
            {
                "name": f"{plan.name}-{store.name}",
                "description": f"{store.name}: {store.kind} from the cluster's nodes only",
                "vpc_id": ref("aws_vpc.main", "id"),
                "ingress": Nested(
                    {
                        "description": f"{store.kind} from the EKS cluster",
                        "from_port": store.port,
                        "to_port": store.port,
                        "protocol": "tcp",
                        "security_groups": [
                            Expr("aws_eks_cluster.main.vpc_config[0].cluster_security_group_id")
                        ],
                    }
                ),
                "tags": _tags(plan),
            },
        )
    ]


def _postgres(plan: InfraPlan, store: ManagedStore) -> list[Block]:
    name = identifier(store.name)
    instance_class = store.instance_class  # the class `cost` prices (capacity.managed_class)
    small = instance_class.endswith((".micro", ".small"))
    assert store.password_output is not None
    return [
        *_database_network(plan, store),
        resource(
            "aws_db_subnet_group",
            name,
            {
                "name": f"{plan.name}-{store.name}",
                "subnet_ids": Expr("aws_subnet.private[*].id"),
                "tags": _tags(plan),
            },
        ),
        resource(
            "aws_db_parameter_group",
            name,
            {
                "name": f"{plan.name}-{store.name}",
                "family": f"postgres{store.version}",
                "parameter": [
                    Nested({"name": "rds.force_ssl", "value": "1"}),
                    Nested({"name": "log_min_duration_statement", "value": "1000"}),
                    Nested({"name": "log_statement", "value": "ddl"}),
                ],
            },
        ),
        resource(
            "aws_db_instance",
            name,
            {
                "identifier": f"{plan.name}-{store.name}",
                "engine": "postgres",
                "engine_version": store.version,
                "instance_class": instance_class,
                "allocated_storage": store.storage_gib,
                "max_allocated_storage": store.storage_gib * 2,
                "storage_type": "gp3",
                "storage_encrypted": True,
                "kms_key_id": ref("aws_kms_key.main", "arn"),
                "multi_az": store.multi_az,
                "db_name": store.database,
                "username": store.user,
                "password": ref(f"var.{store.password_output}"),
                "port": store.port,
                "db_subnet_group_name": ref(f"aws_db_subnet_group.{name}", "name"),
                "vpc_security_group_ids": [ref(f"aws_security_group.{name}", "id")],
                "parameter_group_name": ref(f"aws_db_parameter_group.{name}", "name"),
                "publicly_accessible": False,
                "backup_retention_period": 7,
                "copy_tags_to_snapshot": True,
                "deletion_protection": True,
                "skip_final_snapshot": False,
                "final_snapshot_identifier": f"{plan.name}-{store.name}-final",
                "auto_minor_version_upgrade": True,
                "iam_database_authentication_enabled": True,
                "enabled_cloudwatch_logs_exports": ["postgresql", "upgrade"],
                "monitoring_interval": 60,
                "monitoring_role_arn": ref("aws_iam_role.rds_monitoring", "arn"),
                "performance_insights_enabled": not small,
                **({} if small else {"performance_insights_kms_key_id": ref("aws_kms_key.main", "arn")}),
                "tags": _tags(plan),
            },
            comment=(
                f"RDS for PostgreSQL: {instance_class}, {'Multi-AZ' if store.multi_az else 'Single-AZ'},"
                " as `shipyard cost` prices it."
            ),
        ),
    ]


def _redis(plan: InfraPlan, store: ManagedStore) -> list[Block]:
    name = identifier(store.name)
    instance_class = store.instance_class  # the class `cost` prices (capacity.managed_class)
    body: dict[str, object] = {
        "replication_group_id": f"{plan.name}-{store.name}"[:40],
        "description": f"{plan.name} {store.name}",
        "engine": "redis",
        "engine_version": _ELASTICACHE_VERSIONS.get(store.version, store.version),
        "node_type": instance_class,
        "num_cache_clusters": 2 if store.multi_az else 1,
        "automatic_failover_enabled": store.multi_az,
        "multi_az_enabled": store.multi_az,
        "port": store.port,
        "subnet_group_name": ref(f"aws_elasticache_subnet_group.{name}", "name"),
        "security_group_ids": [ref(f"aws_security_group.{name}", "id")],
        "at_rest_encryption_enabled": True,
        "kms_key_id": ref("aws_kms_key.main", "arn"),
        "transit_encryption_enabled": True,
    }
    if store.password_output is not None:
        body["auth_token"] = ref(f"var.{store.password_output}")
    body |= {"snapshot_retention_limit": 7, "auto_minor_version_upgrade": True, "tags": _tags(plan)}
    return [
        *_database_network(plan, store),
        resource(
            "aws_elasticache_subnet_group",
            name,
            {"name": f"{plan.name}-{store.name}", "subnet_ids": Expr("aws_subnet.private[*].id")},
        ),
        resource(
            "aws_elasticache_replication_group",
            name,
            body,  # type: ignore[arg-type]
            comment=f"ElastiCache for Redis: {instance_class}, as `shipyard cost` prices it.",
        ),
    ]


def _backup(plan: InfraPlan) -> list[Block]:
    bucket = plan.bucket
    if bucket is None:
        return []
    if not bucket.created_here:
        return [
            data(
                "aws_s3_bucket",
                "backup",
                {"bucket": bucket.name},
                comment=f"Made by the {bucket.owner} module.",
            )
        ]
    backup = ref("aws_s3_bucket.backup", "id")
    return [
        resource(
            "aws_s3_bucket",
            "backup",
            {"bucket": bucket.name, "tags": _tags(plan)},
            comment=f"The restic repository's bucket ({bucket.repository}).",
        ),
        resource(
            "aws_s3_bucket_ownership_controls",
            "backup",
            {"bucket": backup, "rule": Nested({"object_ownership": "BucketOwnerEnforced"})},
        ),
        resource(
            "aws_s3_bucket_public_access_block",
            "backup",
            {
                "bucket": backup,
                "block_public_acls": True,
                "block_public_policy": True,
                "ignore_public_acls": True,
                "restrict_public_buckets": True,
            },
        ),
        resource(
            "aws_s3_bucket_versioning",
            "backup",
            {"bucket": backup, "versioning_configuration": Nested({"status": "Enabled"})},
        ),
        resource(
            "aws_s3_bucket_server_side_encryption_configuration",
            "backup",
            {
                "bucket": backup,
                "rule": Nested(
                    {
                        "apply_server_side_encryption_by_default": Nested(
                            {"sse_algorithm": "aws:kms", "kms_master_key_id": ref("aws_kms_key.main", "arn")}
                        ),
                        "bucket_key_enabled": True,
                    }
                ),
            },
        ),
        resource(
            "aws_s3_bucket_lifecycle_configuration",
            "backup",
            {
                "bucket": backup,
                "rule": Nested(
                    {
                        "id": "tiering",
                        "status": "Enabled",
                        "filter": Nested({}),
                        "transition": [
                            Nested({"days": 30, "storage_class": "STANDARD_IA"}),
                            Nested({"days": 90, "storage_class": "GLACIER_IR"}),
                        ],
                        "noncurrent_version_expiration": Nested({"noncurrent_days": 90}),
                        "abort_incomplete_multipart_upload": Nested({"days_after_initiation": 7}),
                    }
                ),
                "depends_on": [Expr("aws_s3_bucket_versioning.backup")],
            },
            comment=(
                "restic reads its packs back (verify, prune): only tiers read at once (Standard-IA,"
                " Glacier Instant Retrieval), never Glacier Flexible or Deep Archive."
            ),
        ),
    ]


def _dns(plan: InfraPlan) -> list[Block]:
    if not plan.records:
        return []
    blocks = [
        resource(
            "aws_eip",
            "ingress",
            {"count": ZONES, "domain": "vpc", "tags": _tags(plan, Name=f"{plan.name}-ingress")},
            comment="The ingress controller's NLB takes these addresses (one per public subnet).",
        )
    ]
    for zone in plan.zone_names:
        blocks.append(data("aws_route53_zone", identifier(zone), {"name": zone, "private_zone": False}))
    for record in plan.records:
        blocks.append(
            resource(
                "aws_route53_record",
                identifier(record.host),
                {
                    "zone_id": ref(f"data.aws_route53_zone.{identifier(record.zone)}", "zone_id"),
                    "name": record.host,
                    "type": "A",
                    "ttl": 300,
                    "records": Expr("aws_eip.ingress[*].public_ip"),
                },
            )
        )
    return blocks


def _io(plan: InfraPlan) -> tuple[list[Block], list[Block]]:
    variables = [
        variable(
            "api_allowed_cidrs",
            "list(string)",
            "The addresses (CIDR blocks) that may reach the Kubernetes API from outside the VPC.",
        ),
        variable("kubernetes_version", "string", "The EKS Kubernetes version.", default=KUBERNETES_VERSION),
    ]
    outputs = [
        output(
            "cluster_name", ref("aws_eks_cluster.main", "name"), "aws eks update-kubeconfig --name <this>"
        ),
        output("cluster_endpoint", ref("aws_eks_cluster.main", "endpoint"), "The Kubernetes API."),
    ]
    for store in plan.stores:
        name = identifier(store.name)
        if store.kind == "postgresql":
            host = ref(f"aws_db_instance.{name}", "address")
        else:
            host = ref(f"aws_elasticache_replication_group.{name}", "primary_endpoint_address")
        outputs += [
            output(f"{name}_host", host, f"datastores.{store.name}.external.host"),
            output(f"{name}_port", Expr(str(store.port)), f"datastores.{store.name}.port"),
        ]
        if store.password is not None and store.password_output is not None:
            described = f"secretRef {store.password.secret_ref}: datastores.{store.name}'s password"
            variables.append(variable(store.password_output, "string", described, sensitive=True))
            outputs.append(
                output(store.password_output, ref(f"var.{store.password_output}"), described, sensitive=True)
            )
    if plan.bucket is not None:
        bucket = plan.bucket
        where = "aws_s3_bucket.backup" if bucket.created_here else "data.aws_s3_bucket.backup"
        prefix = f"/{bucket.prefix}" if bucket.prefix else ""
        outputs += [
            output("backup_bucket", ref(where, "id"), "The backup bucket."),
            output(
                "backup_repository",
                template(
                    f"s3:https://s3.${{data.aws_region.current.name}}.amazonaws.com/${{{where}.id}}{prefix}"
                ),
                "backup.repository for this bucket.",
            ),
        ]
    if plan.records:
        outputs += [
            output(
                "ingress_eip_allocations",
                Expr('join(",", aws_eip.ingress[*].id)'),
                "The ingress Service's service.beta.kubernetes.io/aws-load-balancer-eip-allocations",
            ),
            output(
                "ingress_addresses", Expr("aws_eip.ingress[*].public_ip"), "Where the ingress hosts point."
            ),
        ]
    return variables, outputs


def _rds_monitoring(plan: InfraPlan) -> list[Block]:
    return [
        resource(
            "aws_iam_role",
            "rds_monitoring",
            {
                "name": f"{plan.name}-rds-monitoring",
                "assume_role_policy": _assume("monitoring.rds.amazonaws.com"),
            },
            comment="RDS Enhanced Monitoring publishes OS metrics with this role.",
        ),
        resource(
            "aws_iam_role_policy_attachment",
            "rds_monitoring",
            {
                "role": ref("aws_iam_role.rds_monitoring", "name"),
                "policy_arn": template(
                    "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
                ),
            },
        ),
    ]


def module(plan: InfraPlan) -> ProviderModule:
    notes: list[str] = []
    databases: list[Block] = []
    if any(store.kind == "postgresql" for store in plan.stores):
        databases += _rds_monitoring(plan)
    for store in plan.stores:
        databases += _postgres(plan, store) if store.kind == "postgresql" else _redis(plan, store)
    variables, outputs = _io(plan)
    provider = Block(
        "provider",
        ("aws",),
        {"region": plan.region, "default_tags": Nested({"tags": dict(plan.labels)})},
    )
    backend = Nested(
        {
            "bucket": plan.state_bucket,
            "key": plan.state_key,
            "region": plan.region,
            "encrypt": True,
            "use_lockfile": True,
        },
        labels=("s3",),
    )
    return ProviderModule(
        providers={"aws": AWS_PROVIDER},
        backend=backend,
        files={
            "providers.tf": [provider],
            "kms.tf": _key(plan),
            "network.tf": _network(plan),
            "cluster.tf": _cluster(plan),
            "databases.tf": databases,
            "backup.tf": _backup(plan),
            "dns.tf": _dns(plan),
            "variables.tf": variables,
            "outputs.tf": outputs,
        },
        notes=tuple(notes),
    )
