"""Egress NetworkPolicies: each service may reach DNS, what it depends on and the outside hosts
its spec names, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from shipyard.errors import SpecError
from shipyard.render import render_kubernetes
from shipyard.spec import load_spec
from unit.render.render_helpers import ROOT, by_kind, spec_from

SHOP = """
name: shop
services:
  web:
    role: web
    image: shop/web:1
    port: 3000
    depends_on: [api]
  api:
    role: api
    image: shop/api:1
    port: 8000
    depends_on: [db, cache, queue, worker]
    egress:
      - api.stripe.com:443
      - {host: smtp.example.com, ports: [587, 465]}
      - {cidr: 10.20.0.0/16, except: [10.20.9.0/24], ports: [9000]}
      - {cidr: 192.0.2.10/32, ports: [514], protocol: UDP}
    cron:
      nightly: {schedule: "0 3 * * *", command: [./nightly]}
  worker:
    role: worker
    image: shop/api:1
    depends_on: [db]
datastores:
  db: {kind: postgresql, replicas: 2, port: 5433, storage: {size: 1Gi}}
  cache: {kind: redis}
  queue: {kind: redis, port: 6380, mode: external, external: {host: queue.abc.cache.amazonaws.com}}
environments:
  prod: {}
"""

DNS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


def pods(name: str, stack: str = "shop") -> dict[str, Any]:
    return {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": stack}}
    }


def tcp(port: int) -> list[dict[str, Any]]:
    return [{"port": port, "protocol": "TCP"}]


@pytest.fixture(scope="module")
def shop() -> list[dict[str, Any]]:
    return render_kubernetes(spec_from(SHOP).stack("prod"))


def _egress(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    policy: dict[str, Any] = by_kind(objects, "NetworkPolicy")[f"egress-{name}"]
    return policy


def test_one_egress_policy_per_service_selecting_its_pods_and_cron_jobs(shop: list[dict[str, Any]]) -> None:
    names = sorted(n for n in by_kind(shop, "NetworkPolicy") if n.startswith("egress-"))
    assert names == ["egress-api", "egress-web", "egress-worker"]
    policy = _egress(shop, "api")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/name": "api", "app.kubernetes.io/part-of": "shop"}
    for obj in (by_kind(shop, "Deployment")["api"], by_kind(shop, "CronJob")["api-nightly"]):
        template = (
            obj["spec"]["template"]
            if obj["kind"] != "CronJob"
            else obj["spec"]["jobTemplate"]["spec"]["template"]
        )
        labels = template["metadata"]["labels"]
        assert selector.items() <= labels.items()
    # No other service's pods.
    web_labels = by_kind(shop, "Deployment")["web"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= web_labels.items()


def test_a_web_service_reaches_dns_itself_and_the_service_it_depends_on(shop: list[dict[str, Any]]) -> None:
    assert _egress(shop, "web")["spec"]["egress"] == [
        DNS,
        {"to": [pods("web")], "ports": tcp(3000)},
        {"to": [pods("api")], "ports": tcp(8000)},
    ]


def test_datastores_by_mode_services_and_named_outside_hosts(shop: list[dict[str, Any]]) -> None:
    policy = _egress(shop, "api")
    rules = policy["spec"]["egress"]
    public = [
        {
            "ipBlock": {
                "cidr": "0.0.0.0/0",
                "except": [
                    "10.0.0.0/8",
                    "100.64.0.0/10",
                    "127.0.0.0/8",
                    "169.254.0.0/16",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                ],
            }
        },
        {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}},
    ]
    assert rules == [
        DNS,
        {"to": [pods("api")], "ports": tcp(8000)},  # its cron job calls it
        # Redis in the cluster
        {"to": [pods("cache")], "ports": tcp(6379)},
        # PostgreSQL: the primary and the replicas' StatefulSet
        {"to": [pods("db"), pods("db-replica")], "ports": tcp(5433)},
        # a managed Redis without a cidr: its port on any address
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}], "ports": tcp(6380)},
        # `worker` has no port: nothing to connect to
        {"to": public, "ports": tcp(443)},
        {"to": public, "ports": tcp(587) + tcp(465)},
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.9.0/24"]}}], "ports": tcp(9000)},
        {"to": [{"ipBlock": {"cidr": "192.0.2.10/32"}}], "ports": [{"port": 514, "protocol": "UDP"}]},
    ]
    # A NetworkPolicy cannot name hosts: the names are kept for the reader (and FQDN-aware CNIs).
    assert policy["metadata"]["annotations"] == {
        "shipyard.dev/egress-hosts": "api.stripe.com:443 smtp.example.com:587,465"
    }
    assert "annotations" not in _egress(shop, "web")["metadata"]


def test_an_external_database_with_a_cidr_is_reached_there_only() -> None:
    spec = spec_from(
        """
        name: shop
        services:
          api: {role: api, image: "shop/api:1", port: 8000, depends_on: [db]}
        datastores:
          db:
            kind: postgresql
            mode: external
            external: {host: db.cluster-abc.eu-west-1.rds.amazonaws.com, cidr: 10.0.16.0/20}
        environments: {prod: {}}
        """
    )
    rules = _egress(render_kubernetes(spec.stack("prod")), "api")["spec"]["egress"]
    assert rules[-1] == {"to": [{"ipBlock": {"cidr": "10.0.16.0/20"}}], "ports": tcp(5432)}


def test_cloudnative_pg_instances_and_pooler_are_reached_by_the_operators_labels() -> None:
    normaldance = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    rules = _egress(render_kubernetes(normaldance.stack("production")), "api")["spec"]["egress"]
    assert {
        "to": [
            {"podSelector": {"matchLabels": {"cnpg.io/cluster": "postgres"}}},
            {"podSelector": {"matchLabels": {"cnpg.io/poolerName": "postgres-pooler-rw"}}},
        ],
        "ports": tcp(5432),
    } in rules


def test_the_seeds_outside_apis_are_named() -> None:
    normaldance = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    policy = _egress(render_kubernetes(normaldance.stack("production")), "solana-rpc-proxy")
    assert policy["metadata"]["annotations"]["shipyard.dev/egress-hosts"] == "api.mainnet-beta.solana.com:443"


@pytest.mark.parametrize(
    ("egress", "message"),
    [
        ('["api.example.com"]', "write host:port"),
        ('["api.example.com:https"]', "write host:port"),
        ("[{host: a.example.com, cidr: 10.0.0.0/8, ports: [1]}]", "give host or cidr"),
        ("[{ports: [1]}]", "give host or cidr"),
        ("[{cidr: 10.0.0.300/8, ports: [1]}]", "is not a CIDR block"),
        ("[{host: a.example.com, except: [10.0.0.0/8], ports: [1]}]", "except narrows a cidr"),
        ("[{host: a.example.com, ports: []}]", "at least 1 item"),
        ('["bad_host!:443"]', "does not match the expected form"),
    ],
)
def test_bad_egress_entries_are_refused_naming_the_field(egress: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        spec_from(
            f"""
            name: shop
            services:
              api: {{role: api, image: "shop/api:1", port: 8000, egress: {egress}}}
            """
        )
    assert any(
        issue.path.startswith("services.api.egress[0]") and message in issue.message
        for issue in caught.value.issues
    ), caught.value


@pytest.mark.parametrize("example", ["apricode", "normaldance", "salespot"])
def test_every_environment_of_the_examples_renders_with_its_egress(example: str) -> None:
    spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
    for env in spec.environments:
        stack = spec.stack(env)
        objects = render_kubernetes(stack)  # validated against the strict schemas
        rendered = {name for name, service in stack.services.items() if service.image is not None}
        policies = {
            n.removeprefix("egress-") for n in by_kind(objects, "NetworkPolicy") if n.startswith("egress-")
        }
        assert policies == rendered
