"""`render opentofu --provider hetzner`: Hetzner Cloud has no managed Kubernetes and no managed
databases. The module makes a private network, a firewall, the servers `shipyard cost` prices,
with k3s installed by cloud-init (the first server starts the cluster; the next two join as
servers, so the control plane's embedded etcd has three members; the rest join as agents), a
load balancer in front of the ingress controller's node ports (30080, 30443), the backup bucket
in Hetzner Object Storage (through the AWS provider's S3 API) and Hetzner DNS records.

A `mode: external` datastore is not made here: there is nothing managed to make it with.
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
    string,
    template,
    variable,
)

if TYPE_CHECKING:
    from ._opentofu import InfraPlan, NodePool

HCLOUD_PROVIDER = ("hetznercloud/hcloud", "~> 1.49")
HETZNERDNS_PROVIDER = ("timohirt/hetznerdns", "~> 2.2")
AWS_PROVIDER = ("hashicorp/aws", "~> 5.80")
DEFAULT_LOCATION = "fsn1"
K3S_VERSION = "v1.31.4+k3s1"
IMAGE = "ubuntu-24.04"
SUBNET = "10.0.1.0/24"
FIRST_HOST = 10
"""The first server's private address is the subnet's 10th: the others join it there."""
CONTROL_PLANE_SERVERS = 3
INGRESS_PORTS = {80: 30080, 443: 30443}
_NETWORK_ZONES = {
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "ash": "us-east",
    "hil": "us-west",
    "sin": "ap-southeast",
}


def default_region(catalog_region: str) -> str:
    return DEFAULT_LOCATION


def default_zones(region: str) -> tuple[str, ...]:
    return ()


def server_type(node_type: str) -> str:
    """hcloud's name of a catalog node type: `CX32` is `cx32`."""
    return node_type.lower()


def _labels(plan: InfraPlan) -> dict[str, str]:
    return dict(plan.labels)


def _selector(plan: InfraPlan) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(plan.labels.items()))


def _cloud_init(role: str) -> Expr:
    """cloud-config that writes k3s's config (the token from var.k3s_token) and installs k3s."""
    first = f'https://${{cidrhost("{SUBNET}", {FIRST_HOST})}}:6443'
    settings = ["token = var.k3s_token"]
    if role == "init":
        settings.append('"cluster-init" = true')
    else:
        settings.append(f'server = "{first}"')
    if role != "agent":
        # The ingress controller runs as a NodePort Service behind the Hetzner load balancer.
        settings += [
            'disable = ["traefik", "servicelb"]',
            '"secrets-encryption" = true',
            '"write-kubeconfig-mode" = "0600"',
        ]
    command = "server" if role != "agent" else "agent"
    body = "\n".join(f"          {line}" for line in settings)
    return Expr(
        'join("\\n", ["#cloud-config", yamlencode({\n'
        "    write_files = [{\n"
        '      path        = "/etc/rancher/k3s/config.yaml"\n'
        '      permissions = "0600"\n'
        "      content = yamlencode({\n"
        f"{body}\n"
        "      })\n"
        "    }]\n"
        "    runcmd = [\n"
        f'      "curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION={K3S_VERSION} sh -s - {command}",\n'
        "    ]\n"
        "  })])"
    )


def _network(plan: InfraPlan) -> list[Block]:
    zone = _NETWORK_ZONES.get(plan.region, "eu-central")
    return [
        resource(
            "hcloud_network", "main", {"name": plan.name, "ip_range": "10.0.0.0/16", "labels": _labels(plan)}
        ),
        resource(
            "hcloud_network_subnet",
            "nodes",
            {
                "network_id": ref("hcloud_network.main", "id"),
                "type": "cloud",
                "network_zone": zone,
                "ip_range": SUBNET,
            },
        ),
        resource(
            "hcloud_firewall",
            "nodes",
            {
                "name": f"{plan.name}-nodes",
                "labels": _labels(plan),
                "rule": [
                    Nested(
                        {
                            "description": "the Kubernetes API, from the allowed addresses only",
                            "direction": "in",
                            "protocol": "tcp",
                            "port": "6443",
                            "source_ips": ref("var.api_allowed_cidrs"),
                        }
                    ),
                    Nested(
                        {
                            "description": "SSH, from the allowed addresses only",
                            "direction": "in",
                            "protocol": "tcp",
                            "port": "22",
                            "source_ips": ref("var.api_allowed_cidrs"),
                        }
                    ),
                ],
            },
            comment="Nothing else is open on the public side; the load balancer reaches the nodes privately.",
        ),
        resource(
            "hcloud_placement_group", "nodes", {"name": plan.name, "type": "spread", "labels": _labels(plan)}
        ),
        resource(
            "hcloud_ssh_key", "admin", {"name": f"{plan.name}-admin", "public_key": ref("var.ssh_public_key")}
        ),
    ]


def _role_expression(pool: NodePool, first_pool: bool) -> Expr:
    if not first_pool:
        return Expr("local.k3s_agent")
    servers = CONTROL_PLANE_SERVERS if pool.nodes >= CONTROL_PLANE_SERVERS else 1
    return Expr(
        f"count.index == 0 ? local.k3s_init : (count.index < {servers} ? local.k3s_server : local.k3s_agent)"
    )


def _cluster(plan: InfraPlan) -> list[Block]:
    blocks = [
        Block(
            "locals",
            (),
            {
                "k3s_init": _cloud_init("init"),
                "k3s_server": _cloud_init("server"),
                "k3s_agent": _cloud_init("agent"),
            },
            comment=f"k3s {K3S_VERSION}, installed at first boot; the token is var.k3s_token.",
        )
    ]
    offset = 0
    for index, pool in enumerate(plan.pools):
        blocks.append(
            resource(
                "hcloud_server",
                identifier(pool.name),
                {
                    "count": pool.nodes,
                    "name": template(f"{plan.name}-{pool.name}-${{count.index + 1}}"),
                    "server_type": server_type(pool.node_type),
                    "image": IMAGE,
                    "location": plan.region,
                    "placement_group_id": ref("hcloud_placement_group.nodes", "id"),
                    "firewall_ids": [ref("hcloud_firewall.nodes", "id")],
                    "ssh_keys": [ref("hcloud_ssh_key.admin", "id")],
                    "labels": {**_labels(plan), "pool": pool.name},
                    "user_data": _role_expression(pool, index == 0),
                    "public_net": Nested({"ipv4_enabled": True, "ipv6_enabled": True}),
                    "network": Nested(
                        {
                            "network_id": ref("hcloud_network.main", "id"),
                            "ip": Expr(f'cidrhost("{SUBNET}", {FIRST_HOST + offset} + count.index)'),
                        }
                    ),
                    "depends_on": [Expr("hcloud_network_subnet.nodes")],
                    "lifecycle": Nested({"ignore_changes": [Expr("user_data"), Expr("image")]}),
                },
                comment=(
                    f"{pool.nodes} × {pool.node_type}, as `shipyard cost` prices it. No autoscaler is made:"
                    f" at maximum replicas the stack needs {pool.max_nodes}; raise `count` to add nodes."
                ),
            )
        )
        offset += pool.max_nodes
    return blocks


def _ingress(plan: InfraPlan) -> list[Block]:
    if not plan.records:
        return []
    lb = ref("hcloud_load_balancer.ingress", "id")
    blocks = [
        resource(
            "hcloud_load_balancer",
            "ingress",
            {
                "name": f"{plan.name}-ingress",
                "load_balancer_type": "lb11",
                "location": plan.region,
                "labels": _labels(plan),
            },
            comment="In front of the ingress controller's node ports (a NodePort Service: 30080, 30443).",
        ),
        resource(
            "hcloud_load_balancer_network",
            "ingress",
            {"load_balancer_id": lb, "subnet_id": ref("hcloud_network_subnet.nodes", "id")},
        ),
        resource(
            "hcloud_load_balancer_target",
            "nodes",
            {
                "type": "label_selector",
                "load_balancer_id": lb,
                "label_selector": _selector(plan),
                "use_private_ip": True,
                "depends_on": [Expr("hcloud_load_balancer_network.ingress")],
            },
        ),
    ]
    for port, node_port in sorted(INGRESS_PORTS.items()):
        blocks.append(
            resource(
                "hcloud_load_balancer_service",
                f"port_{port}",
                {
                    "load_balancer_id": lb,
                    "protocol": "tcp",
                    "listen_port": port,
                    "destination_port": node_port,
                },
            )
        )
    for zone in plan.zone_names:
        blocks.append(data("hetznerdns_zone", identifier(zone), {"name": zone}))
    for record in plan.records:
        blocks.append(
            resource(
                "hetznerdns_record",
                identifier(record.host),
                {
                    "zone_id": ref(f"data.hetznerdns_zone.{identifier(record.zone)}", "id"),
                    "name": record.name,
                    "type": "A",
                    "value": ref("hcloud_load_balancer.ingress", "ipv4"),
                    "ttl": 300,
                },
            )
        )
    return blocks


def _endpoint(plan: InfraPlan) -> str:
    return f"https://{plan.region}.your-objectstorage.com"


def _backup(plan: InfraPlan) -> list[Block]:
    bucket = plan.bucket
    if bucket is None:
        return []
    if not bucket.created_here:
        return []  # made by the owner's module; the outputs below name it
    backup = ref("aws_s3_bucket.backup", "id")
    return [
        resource(
            "aws_s3_bucket",
            "backup",
            {"provider": Expr("aws.objectstorage"), "bucket": bucket.name},
            comment=(
                f"The restic repository's bucket ({bucket.repository}) in Hetzner Object Storage. It has"
                " one storage class (no tiering) and no bucket encryption setting:"
                " restic encrypts every pack."
            ),
        ),
        resource(
            "aws_s3_bucket_versioning",
            "backup",
            {
                "provider": Expr("aws.objectstorage"),
                "bucket": backup,
                "versioning_configuration": Nested({"status": "Enabled"}),
            },
        ),
        resource(
            "aws_s3_bucket_lifecycle_configuration",
            "backup",
            {
                "provider": Expr("aws.objectstorage"),
                "bucket": backup,
                "rule": Nested(
                    {
                        "id": "old-versions",
                        "status": "Enabled",
                        "filter": Nested({}),
                        "noncurrent_version_expiration": Nested({"noncurrent_days": 90}),
                        "abort_incomplete_multipart_upload": Nested({"days_after_initiation": 7}),
                    }
                ),
                "depends_on": [Expr("aws_s3_bucket_versioning.backup")],
            },
        ),
    ]


def _io(plan: InfraPlan) -> tuple[list[Block], list[Block]]:
    variables = [
        variable("hcloud_token", "string", "A Hetzner Cloud API token.", sensitive=True),
        variable(
            "k3s_token",
            "string",
            "The k3s cluster's shared secret (servers and agents join with it).",
            sensitive=True,
        ),
        variable("ssh_public_key", "string", "The administrators' SSH public key."),
        variable(
            "api_allowed_cidrs",
            "list(string)",
            "The addresses (CIDR blocks) that may reach the Kubernetes API and SSH.",
        ),
    ]
    if plan.records:
        variables.append(variable("hetznerdns_token", "string", "A Hetzner DNS API token.", sensitive=True))
    if plan.bucket is not None:
        variables += [
            variable(
                "object_storage_access_key", "string", "A Hetzner Object Storage access key.", sensitive=True
            ),
            variable("object_storage_secret_key", "string", "Its secret key.", sensitive=True),
        ]
    first = identifier(plan.pools[0].name)
    outputs = [
        output(
            "kubernetes_api",
            template(f"https://${{hcloud_server.{first}[0].ipv4_address}}:6443"),
            "The k3s API (kubeconfig: /etc/rancher/k3s/k3s.yaml on the first server).",
        ),
        output(
            "server_addresses",
            Expr(f"hcloud_server.{first}[*].ipv4_address"),
            "The servers' public addresses.",
        ),
    ]
    if plan.bucket is not None:
        prefix = f"/{plan.bucket.prefix}" if plan.bucket.prefix else ""
        outputs += [
            output("backup_bucket", Expr(string(plan.bucket.name)), "The backup bucket."),
            output(
                "backup_repository",
                Expr(string(f"s3:{_endpoint(plan)}/{plan.bucket.name}{prefix}")),
                "backup.repository for this bucket.",
            ),
        ]
    if plan.records:
        outputs.append(
            output(
                "ingress_address",
                ref("hcloud_load_balancer.ingress", "ipv4"),
                "Where the ingress hosts point.",
            )
        )
    return variables, outputs


def _providers(plan: InfraPlan) -> tuple[dict[str, tuple[str, str]], list[Block]]:
    pins = {"hcloud": HCLOUD_PROVIDER}
    blocks = [Block("provider", ("hcloud",), {"token": ref("var.hcloud_token")})]
    if plan.records:
        pins["hetznerdns"] = HETZNERDNS_PROVIDER
        blocks.append(Block("provider", ("hetznerdns",), {"apitoken": ref("var.hetznerdns_token")}))
    if plan.bucket is not None:
        pins["aws"] = AWS_PROVIDER
        blocks.append(
            Block(
                "provider",
                ("aws",),
                {
                    "alias": "objectstorage",
                    "region": plan.region,
                    "access_key": ref("var.object_storage_access_key"),
                    "secret_key": ref("var.object_storage_secret_key"),
                    "skip_credentials_validation": True,
                    "skip_region_validation": True,
                    "skip_requesting_account_id": True,
                    "skip_metadata_api_check": True,
                    "endpoints": Nested({"s3": _endpoint(plan)}),
                },
                comment="Hetzner Object Storage speaks S3: the AWS provider, pointed at it.",
            )
        )
    return pins, blocks


def module(plan: InfraPlan) -> ProviderModule:
    notes = [
        "Hetzner has no managed Kubernetes: the servers run k3s (installed by cloud-init);"
        " its upkeep is yours",
        "the servers have no autoscaler: `count` is the node count at minimum replicas",
    ]
    if plan.bucket is not None and not plan.bucket.created_here:
        notes.append(f"the backup bucket {plan.bucket.name!r} is made by the {plan.bucket.owner} module")
    pins, providers = _providers(plan)
    variables, outputs = _io(plan)
    backend = Nested(
        {
            "bucket": plan.state_bucket,
            "key": plan.state_key,
            "region": plan.region,
            "endpoints": {"s3": _endpoint(plan)},
            "skip_credentials_validation": True,
            "skip_requesting_account_id": True,
            "skip_metadata_api_check": True,
            "skip_region_validation": True,
            "skip_s3_checksum": True,
            "use_path_style": True,
        },
        labels=("s3",),
    )
    return ProviderModule(
        providers=pins,
        backend=backend,
        files={
            "providers.tf": providers,
            "network.tf": _network(plan),
            "cluster.tf": _cluster(plan),
            "backup.tf": _backup(plan),
            "dns.tf": _ingress(plan),
            "variables.tf": variables,
            "outputs.tf": outputs,
        },
        notes=(
            *notes,
            "the state backend is Object Storage (S3-compatible) without a lock:"
            " run one `tofu apply` at a time",
        ),
    )
