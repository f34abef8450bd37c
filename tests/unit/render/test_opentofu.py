"""`render opentofu`: every file parses (PyPI python-hcl2), the node pools read back from the
parsed HCL equal `shipyard cost`'s line items (its JSON, through the CLI), managed datastores,
secrets and the backup bucket are what the spec says, and the output is deterministic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shipyard.capacity import capacity_totals, catalogs, estimate_cost, load_catalog
from shipyard.cli import main
from shipyard.errors import UnknownProviderError
from shipyard.render import OPENTOFU_PROVIDERS, OpenTofuTree, opentofu_tree
from shipyard.render._opentofu_hcl import string
from shipyard.spec import load_spec, load_spec_text
from unit.render.render_helpers import ROOT

EXAMPLES = ("normaldance", "salespot", "apricode")
_PARSE = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def _spec(example: str) -> Any:
    return load_spec(ROOT / "examples" / example / "shipyard.yaml")


def tofu(spec: Any, provider: str, environments: list[str] | None = None) -> OpenTofuTree:
    """`render opentofu` as the CLI composes it: each environment's cost estimate, as `cost`'s."""
    catalog = load_catalog(provider)
    estimates = {
        env: estimate_cost(capacity_totals(spec.stack(env)), catalog)
        for env in (spec.environments if environments is None else environments)
    }
    return opentofu_tree(spec, catalog.provider, estimates, catalogs())


def parse(text: str) -> dict[str, Any]:
    return dict(hcl2.loads(text, serialization_options=_PARSE))


def resources(files: dict[str, str], kind: str) -> dict[str, dict[str, Any]]:
    """Every `resource "<kind>" "<name>"` of a module, by name, from the parsed files."""
    found: dict[str, dict[str, Any]] = {}
    for text in files.values():
        for entry in parse(text).get("resource", []):
            for name, body in entry.get(kind, {}).items():
                found[name] = body
    return found


def _one(block: Any) -> dict[str, Any]:
    return block[0] if isinstance(block, list) else block


def pools_in_hcl(provider: str, files: dict[str, str]) -> list[tuple[str, int, int | None]]:
    """(node type, nodes, maximum) of every node pool, read from the module's parsed HCL."""
    if provider == "aws":
        return [
            (
                group["instance_types"][0],
                _one(group["scaling_config"])["desired_size"],
                _one(group["scaling_config"])["max_size"],
            )
            for group in resources(files, "aws_eks_node_group").values()
        ]
    if provider == "gcp":
        pools = []
        for pool in resources(files, "google_container_node_pool").values():
            nodes = pool["initial_node_count"] * len(pool["node_locations"])
            scaling = _one(pool["autoscaling"])
            assert scaling["total_min_node_count"] == nodes
            pools.append((_one(pool["node_config"])["machine_type"], nodes, scaling["total_max_node_count"]))
        return pools
    if provider == "digitalocean":
        bodies = [_one(c["node_pool"]) for c in resources(files, "digitalocean_kubernetes_cluster").values()]
        bodies += list(resources(files, "digitalocean_kubernetes_node_pool").values())
        for body in bodies:
            assert body["min_nodes"] == body["node_count"]
        return [(body["size"], body["node_count"], body["max_nodes"]) for body in bodies]
    # hcloud names server types in lower case (`cx32`); the catalog as Hetzner's pages do (`CX32`).
    return [
        (server["server_type"].upper(), server["count"], None)
        for server in resources(files, "hcloud_server").values()
    ]


def cost_json(
    example: str, environment: str, provider: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    spec = str(ROOT / "examples" / example / "shipyard.yaml")
    with pytest.raises(SystemExit) as ended:
        main(["cost", "-f", spec, "-e", environment, "-p", provider, "-o", "json"])
    assert ended.value.code in (0, None)
    estimate: dict[str, Any] = json.loads(capsys.readouterr().out)["environments"][0]["estimates"][0]
    return estimate


def databases_in_hcl(provider: str, files: dict[str, str]) -> dict[str, str]:
    """Datastore -> the managed class (instance class, node type, tier or size) the module makes."""
    found: dict[str, str] = {}
    if provider == "aws":
        found |= {n: b["instance_class"] for n, b in resources(files, "aws_db_instance").items()}
        found |= {n: b["node_type"] for n, b in resources(files, "aws_elasticache_replication_group").items()}
    elif provider == "gcp":
        found |= {
            n: _one(b["settings"])["tier"]
            for n, b in resources(files, "google_sql_database_instance").items()
        }
        found |= {n: b["memory_size_gb"] for n, b in resources(files, "google_redis_instance").items()}
    elif provider == "digitalocean":
        found |= {n: b["size"] for n, b in resources(files, "digitalocean_database_cluster").items()}
    return found


_DATABASE_LINE = re.compile(
    r"^.+ '([^']+)': (\S+), (?:Single|Multi)-AZ$"
)  # "RDS for PostgreSQL 'pg': db.x, …"
_NODE_LINE = re.compile(r"^(?:[a-z]+ pool: )?(\d+) × (\S+) \(")  # "app pool: 3 × t3.large (…"


@pytest.mark.parametrize("provider", OPENTOFU_PROVIDERS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_node_pools_equal_the_cost_lines(
    example: str, provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(example)
    tree = tofu(spec, provider)
    assert [module.environment for module in tree.modules] == list(spec.environments)
    for module in tree.modules:
        estimate = cost_json(example, module.environment, provider, capsys)
        lines = [
            (match.group(2), item["quantity"])
            for item in estimate["items"]
            if item["unit"] == "node" and (match := _NODE_LINE.match(item["description"]))
        ]
        assert lines, estimate["items"]
        in_hcl = pools_in_hcl(provider, dict(module.files))
        assert sorted((kind, nodes) for kind, nodes, _ in in_hcl) == sorted(lines), (
            module.environment,
            in_hcl,
        )
        ceiling = estimate["node_pool"]["chosen"]["at_max"]["nodes"]
        for _, nodes, maximum in in_hcl:
            assert maximum is None or maximum == max(ceiling, nodes)


@pytest.mark.parametrize("provider", OPENTOFU_PROVIDERS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_managed_databases_equal_the_cost_lines(
    example: str, provider: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The class each module makes is the class on `cost`'s line: one answer for both."""
    for module in tofu(_spec(example), provider).modules:
        estimate = cost_json(example, module.environment, provider, capsys)
        lines = {
            match.group(1): match.group(2)
            for item in estimate["items"]
            if item["kind"] == "managed-database" and (match := _DATABASE_LINE.match(item["description"]))
        }
        assert databases_in_hcl(provider, dict(module.files)) == lines, (module.environment, lines)
    if example == "salespot":  # production and staging name RDS classes: made on every provider but Hetzner
        production = cost_json("salespot", "production", provider, capsys)
        assert any(item["kind"] == "managed-database" for item in production["items"]) is (
            provider != "hetzner"
        )


@pytest.mark.parametrize("provider", OPENTOFU_PROVIDERS)
@pytest.mark.parametrize("example", [*EXAMPLES, "demo"])
def test_every_file_parses_and_pins_its_providers(example: str, provider: str) -> None:
    tree = tofu(_spec(example), provider)
    for module in tree.modules:
        assert {"versions.tf", "variables.tf", "outputs.tf", "cluster.tf"} <= set(module.files)
        parsed = {name: parse(text) for name, text in module.files.items()}
        terraform = _one(parsed["versions.tf"]["terraform"])
        assert terraform["required_version"].startswith(">= 1.")
        pins = _one(terraform["required_providers"])
        assert pins
        assert all(re.match(r"^~> \d+\.\d+$", pin["version"]) for pin in pins.values())
        assert terraform["backend"], "a remote state backend"
        for entry in parsed["variables.tf"]["variable"]:
            for name, body in entry.items():
                if re.search(r"token|password|secret|key$", name) and name != "ssh_public_key":
                    assert body.get("sensitive") is True, name


def test_salespot_on_aws_makes_its_rds_with_the_cost_lines_class(capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec("salespot")
    for environment, multi_az in (("production", True), ("staging", False)):
        module = tofu(spec, "aws", [environment]).modules[0]
        files = dict(module.files)
        databases = resources(files, "aws_db_instance")
        estimate = cost_json("salespot", environment, "aws", capsys)
        classes = [
            item["description"] for item in estimate["items"] if "RDS for PostgreSQL" in item["description"]
        ]
        assert [db["instance_class"] for db in databases.values()] == [
            re.search(r": (\S+),", classes[0]).group(1)  # type: ignore[union-attr]
        ]
        assert databases["postgres"]["multi_az"] is multi_az
        assert databases["postgres"]["storage_encrypted"] is True
        assert databases["postgres"]["password"] == "${var.salespot_db_password}"
        variables = {
            name: body for entry in parse(files["variables.tf"])["variable"] for name, body in entry.items()
        }
        outputs = {
            name: body for entry in parse(files["outputs.tf"])["output"] for name, body in entry.items()
        }
        # Named after the spec's `password: {secretRef: salespot-db/password}`.
        assert variables["salespot_db_password"]["sensitive"] is True
        assert outputs["salespot_db_password"]["sensitive"] is True
        assert outputs["postgres_host"]["value"] == "${aws_db_instance.postgres.address}"
    dev = tofu(spec, "aws", ["dev"]).modules[0]
    assert resources(dict(dev.files), "aws_db_instance") == {}  # dev runs PostgreSQL in the cluster


def test_salespot_on_digitalocean_makes_a_managed_database_and_outputs_its_password() -> None:
    module = tofu(_spec("salespot"), "digitalocean", ["production"]).modules[0]
    files = dict(module.files)
    cluster = resources(files, "digitalocean_database_cluster")["postgres"]
    assert (cluster["engine"], cluster["node_count"]) == ("pg", 2)  # multi_az: a standby node
    assert cluster["size"] == "db-s-6vcpu-16gb"  # db.r6g.large (2 vCPU, 16 GiB): the cheapest as large
    outputs = {name: body for entry in parse(files["outputs.tf"])["output"] for name, body in entry.items()}
    assert outputs["salespot_db_password"]["value"] == "${digitalocean_database_user.postgres.password}"
    assert any("db.r6g.large" in note for note in module.notes)


def test_hetzner_says_what_it_cannot_make() -> None:
    module = tofu(_spec("salespot"), "hetzner", ["production"]).modules[0]
    assert not any("database" in name for name in module.files)
    assert any("no managed databases" in note for note in module.notes)
    assert any("no managed Kubernetes" in note for note in module.notes)


def test_backup_bucket_versioned_encrypted_tiered_and_made_once() -> None:
    spec = _spec("normaldance")  # staging and production share normaldance-backups
    made = {}
    for module in tofu(spec, "aws", ["staging", "production"]).modules:
        made[module.environment] = resources(dict(module.files), "aws_s3_bucket")
    assert made == {"staging": {}, "production": {"backup": made["production"]["backup"]}}
    files = dict(tofu(spec, "aws", ["production"]).modules[0].files)
    assert (
        _one(resources(files, "aws_s3_bucket_versioning")["backup"]["versioning_configuration"])["status"]
        == "Enabled"
    )
    encryption = _one(
        resources(files, "aws_s3_bucket_server_side_encryption_configuration")["backup"]["rule"]
    )
    assert _one(encryption["apply_server_side_encryption_by_default"])["sse_algorithm"] == "aws:kms"
    rule = _one(resources(files, "aws_s3_bucket_lifecycle_configuration")["backup"]["rule"])
    assert [t["storage_class"] for t in rule["transition"]] == ["STANDARD_IA", "GLACIER_IR"]
    gcs = resources(dict(tofu(spec, "gcp", ["production"]).modules[0].files), "google_storage_bucket")
    actions = [_one(r["action"]) for r in gcs["backup"]["lifecycle_rule"]]
    assert [a.get("storage_class") for a in actions if a["type"] == "SetStorageClass"] == [
        "NEARLINE",
        "COLDLINE",
    ]


@pytest.mark.parametrize("provider", OPENTOFU_PROVIDERS)
def test_dns_records_for_every_ingress_host(provider: str) -> None:
    spec = _spec("normaldance")
    module = tofu(spec, provider, ["production"]).modules[0]
    hosts = {s.ingress.host for s in spec.stack("production").services.values() if s.ingress is not None}
    assert set(module.records) == hosts
    kind = {
        "aws": "aws_route53_record",
        "gcp": "google_dns_record_set",
        "digitalocean": "digitalocean_record",
        "hetzner": "hetznerdns_record",
    }[provider]
    assert len(resources(dict(module.files), kind)) == len(hosts)


def test_output_is_deterministic() -> None:
    spec = _spec("apricode")
    for provider in OPENTOFU_PROVIDERS:
        assert tofu(spec, provider).files == tofu(spec, provider).files


def test_region_and_state_bucket_from_the_spec() -> None:
    text = (ROOT / "examples" / "apricode" / "shipyard.yaml").read_text() + (
        "\ninfrastructure:\n  region: europe-west3\n  state_bucket: apricode-state\n"
        "  dns_zone: apricode.exchange\n"
    )
    module = tofu(load_spec_text(text, "shipyard.yaml"), "gcp", ["production"]).modules[0]
    files = dict(module.files)
    backend = _one(_one(parse(files["versions.tf"])["terraform"])["backend"])
    assert backend["gcs"]["bucket"] == "apricode-state"
    pool = resources(files, "google_container_node_pool")["general"]
    assert pool["location"] == "europe-west3"
    assert all(zone.startswith("europe-west3-") for zone in pool["node_locations"])


def test_unknown_provider_is_refused() -> None:
    with pytest.raises(UnknownProviderError, match="known providers"):
        tofu(_spec("apricode"), "azure")  # no price catalog
    with pytest.raises(UnknownProviderError, match="render opentofu` knows"):
        opentofu_tree(_spec("apricode"), "azure", {}, catalogs())


def test_cli_writes_a_module_per_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(ROOT / "examples" / "apricode" / "shipyard.yaml")
    with pytest.raises(SystemExit) as ended:
        main(["render", "opentofu", "-f", spec, "-p", "hetzner"])
    assert ended.value.code == 2  # a tree goes only where -o says
    assert "-o DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:
        main(["render", "opentofu", "-f", spec, "-p", "gke", "-o", str(tmp_path / "tofu")])
    assert ended.value.code in (0, None)
    captured = capsys.readouterr()
    assert "e2-standard-4" in captured.out
    assert sorted(p.name for p in (tmp_path / "tofu").iterdir() if p.is_dir()) == [
        "dev",
        "production",
        "staging",
    ]
    assert (tmp_path / "tofu" / "production" / "cluster.tf").is_file()


# --- the HCL writer ------------------------------------------------------------------------------


def _unescape_templates(text: str) -> str:
    # HCL reads `\u007b` as `{`; python-hcl2 leaves it as written.
    return text.replace("\\u007b", "{")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=5)
        | st.sampled_from(["${", "%{", "$${", "\n", "\t", '"', "\\", "$", "{", "}"])
    ).map("".join)
)
def test_any_string_is_written_as_that_literal(text: str) -> None:
    assume("\\u" not in text)  # python-hcl2 leaves \u escapes undecoded: it would read this back as one
    parsed = parse(f"x = {string(text)}\n")
    assert _unescape_templates(parsed["x"]) == text


_CLASSES = {
    "postgresql": ["db.t4g.micro", "db.t4g.medium", "db.r6g.large", "db.r6g.xlarge"],
    "redis": ["cache.t4g.micro", "cache.t4g.medium", "cache.r6g.large"],
}


@settings(max_examples=25, deadline=None)
@given(
    kind=st.sampled_from(["postgresql", "redis"]),
    class_index=st.integers(0, 2),
    multi_az=st.booleans(),
    replicas=st.integers(1, 12),
    provider=st.sampled_from(OPENTOFU_PROVIDERS),
)
def test_any_external_datastore_renders_and_parses(
    kind: str, class_index: int, multi_az: bool, replicas: int, provider: str
) -> None:
    instance_class = _CLASSES[kind][class_index]
    password = "\n    password: {secretRef: cache-auth/token}" if kind == "redis" else ""
    text = f"""
name: shop
services:
  web:
    role: web
    image: shop/web:1.0.0@sha256:{"0" * 64}
    port: 8080
    replicas: {replicas}
    resources: {{requests: {{cpu: 500m, memory: 1Gi}}, limits: {{cpu: "1", memory: 2Gi}}}}
    ingress: {{host: shop.example.org}}
datastores:
  store:
    kind: {kind}
    mode: external
    external:
      {{host: store.internal, instance_class: {instance_class}, multi_az: {str(multi_az).lower()}}}{password}
environments:
  production: {{}}
"""
    module = tofu(load_spec_text(text, "shipyard.yaml"), provider).modules[0]
    files = dict(module.files)
    for body in files.values():
        parse(body)
    made = databases_in_hcl(provider, files)
    if provider == "aws":
        assert made == {"store": instance_class}
    # The class made is the one `cost` prices (or none, and a note, where it prices none).
    ran = estimate_cost(
        capacity_totals(load_spec_text(text, "shipyard.yaml").stack("production")), load_catalog(provider)
    )
    chosen = ran.managed[0]
    assert made == ({"store": chosen.database.name} if chosen.database is not None else {})
    if chosen.database is None:
        assert chosen.note is not None
        assert chosen.note in module.notes
    if "store" in made and kind == "redis":
        outputs = {
            name: body for entry in parse(files["outputs.tf"])["output"] for name, body in entry.items()
        }
        assert outputs["cache_auth_token"]["sensitive"] is True


@pytest.mark.parametrize("provider", OPENTOFU_PROVIDERS)
def test_a_database_pool_is_a_node_pool_of_its_own_as_cost_prices_it(
    provider: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "examples" / "apricode" / "shipyard.yaml").read_text()
    assert "\n  reserve: " in text
    spec_path = tmp_path / "shipyard.yaml"
    spec_path.write_text(text.replace("\n  reserve: ", "\n  database_pool: true\n  reserve: ", 1))
    tree = tofu(load_spec(spec_path), provider, ["production"])
    with pytest.raises(SystemExit) as ended:
        main(["cost", "-f", str(spec_path), "-e", "production", "-p", provider, "-o", "json"])
    assert ended.value.code in (0, None)
    estimate = json.loads(capsys.readouterr().out)["environments"][0]["estimates"][0]
    lines = sorted(
        (match.group(2), item["quantity"])
        for item in estimate["items"]
        if item["unit"] == "node" and (match := _NODE_LINE.match(item["description"]))
    )
    assert len(lines) == 2, estimate["items"]  # the app pool and the database pool
    in_hcl = pools_in_hcl(provider, dict(tree.modules[0].files))
    assert sorted((kind, nodes) for kind, nodes, _ in in_hcl) == lines
