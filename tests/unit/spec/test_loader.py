from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shipyard.errors import SpecError, UnknownEnvironmentError
from shipyard.spec import DEFAULT_ENVIRONMENTS, load_spec, load_spec_text

MINIMAL = """\
name: shop
services:
  api:
    role: api
    image: shop/api:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    port: 8000
"""
"""The least a spec says, valid in every default environment (production runs images by digest)."""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(textwrap.dedent(text), "s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_minimal_spec_gets_the_default_environments() -> None:
    spec = load_spec_text(MINIMAL)
    assert spec.environments == DEFAULT_ENVIRONMENTS
    stack = spec.stack("production")
    assert stack.environment == "production"
    assert stack.k8s_namespace == "shop-production"
    assert stack.services["api"].replicas == 1


def test_overlay_overrides_fields_and_null_removes_them() -> None:
    spec = load_spec_text(
        MINIMAL
        + """\
    replicas: 2
    ingress: {host: shop.example.com, body_size: 10Mi}
environments:
  dev:
    services:
      api: {replicas: 1, ingress: ~}
  production:
    namespace: shop
    services:
      api:
        ingress: {host: www.shop.example.com}
"""
    )
    assert spec.environments == ("dev", "production")
    dev, prod = spec.stack("dev"), spec.stack("production")
    assert dev.services["api"].replicas == 1
    assert dev.services["api"].ingress is None
    assert prod.services["api"].replicas == 2
    assert prod.k8s_namespace == "shop"
    ingress = prod.services["api"].ingress
    assert ingress is not None
    assert (ingress.host, ingress.body_size) == ("www.shop.example.com", "10Mi")


def test_every_error_is_reported_at_once_with_its_position() -> None:
    found = problems(
        """\
        name: shop
        services:
          api:
            role: api
            image: shop/api:1
            port: 8000
            replcas: 3
            resources:
              requests: {cpu: "2"}
              limits: {cpu: "1"}
          web:
            role: web
            image: shop/web:1
            port: 8000
            depends_on: [api, missing]
        datastores:
          db: {kind: mongodb}
        images: {environments: []}
        """
    )
    # api has a schema error, so it is left out of the cross-field checks: web's port 8000 is
    # then not reported as a clash, but web's unknown dependency still is.
    assert found == [
        "s.yaml:7:5: services.api.replcas: unknown key 'replcas' (did you mean 'replicas'?)",
        "s.yaml:15:23: services.web.depends_on[1]: no service or datastore named 'missing';"
        " known: api, db, web",
        "s.yaml:17:3: datastores.db: unknown kind 'mongodb'; expected one of 'postgresql', 'redis'",
    ]


def test_cross_field_rules() -> None:
    found = problems(
        """\
        name: shop
        services:
          api:
            role: api
            image: i
            port: 8000
            replicas: 9
            autoscaling: {min: 2, max: 4, cpu_percent: 70}
            resources:
              requests: {memory: 2Gi}
              limits: {memory: 1Gi}
            depends_on: [web]
          web:
            role: web
            image: i
            port: 8001
            depends_on: [api]
        """
    )
    text = "\n".join(found)
    assert "s.yaml:7:5: services.api.replicas: 9 replicas is outside autoscaling bounds 2..4" in text
    assert "services.api.resources.requests.memory: memory request 2Gi is above its limit 1Gi" in text
    assert "depends_on forms a cycle: api -> web -> api" in text


def test_an_error_in_an_overlay_points_at_the_overlay() -> None:
    found = problems(
        """\
        name: shop
        services:
          api: {role: api, image: i, port: 8000}
        environments:
          production:
            services:
              api: {replicas: many}
        """
    )
    assert found == [
        "s.yaml:7:13: services.api.replicas:"
        " input should be a valid integer, unable to parse string as an integer"
    ]


def test_secret_values_are_refused_without_echoing_them() -> None:
    found = problems(
        """\
        name: shop
        services:
          api:
            role: api
            image: i
            port: 8000
            env:
              STRIPE_API_KEY: sk_live_abcdef
              DATABASE_URL: postgres://shop:s3cr3t-pw@db/shop
        images: {environments: []}
        """
    )
    assert len(found) == 2
    assert all("reference" in f for f in found)
    assert not any("sk_live_abcdef" in f or "s3cr3t-pw" in f for f in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "s.yaml:2:1: not valid YAML"),
        ("name: a\nname: b\n", "s.yaml:2:1: the key 'name' appears twice"),
        ("name: a\nx: &x [*x]\n", "an alias refers to the node that contains it"),
        ("- just\n- a list\n", "the spec must be a mapping"),
        ("name: shop\nenvironments: [dev]\n", "environments: expected a mapping"),
        ("name: Shop_1\n", "name: 'Shop_1' does not match"),
        ("name: shop\nenvironment: prod\n", "chosen with `-e`"),
    ],
)
def test_malformed_documents(text: str, expected: str) -> None:
    assert any(expected in f for f in problems(text)), problems(text)


def test_yaml_1_2_scalars_and_merge_keys() -> None:
    text = textwrap.dedent(
        """\
        name: shop
        services:
          api: &api
            role: api
            image: i
            port: 8000
            env: {COUNTRY: NO, FEATURE: on, RELEASE: 2024-01-01, RATIO: 0.5, HEX: 0x1F, QUOTED: "true", N: 3}
          worker:
            <<: *api
            role: worker
            port: 8001
        images: {environments: []}
        """
    )
    stack = load_spec_text(text).stack("production")
    env = stack.services["api"].env
    assert env == {
        "COUNTRY": "NO",
        "FEATURE": "on",
        "RELEASE": "2024-01-01",
        "RATIO": 0.5,
        "HEX": 31,
        "QUOTED": "true",
        "N": 3,
    }
    worker = stack.services["worker"]
    assert (worker.role, worker.port, worker.image, worker.env) == ("worker", 8001, "i", env)


def test_unknown_environment_suggests_the_closest() -> None:
    spec = load_spec_text(MINIMAL)
    with pytest.raises(UnknownEnvironmentError, match="did you mean 'production'"):
        spec.stack("prod")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")


@pytest.mark.parametrize("example", sorted(Path(__file__).parents[3].glob("examples/*/shipyard.yaml")))
def test_examples_are_valid(example: Path) -> None:
    spec = load_spec(example)
    assert spec.environments
    for stack in spec.stacks():
        assert stack.services
