"""No secret value ever reaches an output: references only, whatever the environment holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.errors import RenderError
from shipyard.render import dump_all, helm_tree, kustomize_tree, render_kubernetes
from unit.render.render_helpers import by_kind, spec_from

SENTINEL = "s3ntinel-Value-that-must-never-appear"

SPEC = """
name: vaulted
secrets:
  store: {kind: SecretStore, name: team-vault, refresh: 15m}
services:
  api:
    role: api
    image: vaulted/api:2
    port: 8000
    env:
      SESSION_KEY: ${env:SESSION_KEY}
      BROKER: "amqp://app:${env:BROKER_PASSWORD}@broker:5672/"
      LEGACY_TOKEN: {secretRef: legacy/token, store: old-vault}
    depends_on: [cache]
datastores:
  cache: {kind: redis, password: {secretRef: cache-auth/password}}
environments:
  dev: {}
  production: {services: {api: {replicas: 3}}}
"""


def test_the_sentinel_never_appears(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("SESSION_KEY", "BROKER_PASSWORD", "LEGACY_TOKEN"):
        monkeypatch.setenv(variable, SENTINEL)
    spec = spec_from(SPEC)
    texts = [dump_all(render_kubernetes(spec.stack(env))) for env in spec.environments]
    texts += kustomize_tree(spec).files.values()
    texts += helm_tree(spec).files.values()
    assert texts
    for text in texts:
        assert SENTINEL not in text


def test_every_referenced_secret_is_fetched_from_its_store() -> None:
    objects = render_kubernetes(spec_from(SPEC).stack("dev"))
    secrets = by_kind(objects, "ExternalSecret")
    assert set(secrets) == {"vaulted-runtime", "legacy", "cache-auth"}
    runtime = secrets["vaulted-runtime"]["spec"]
    assert runtime["secretStoreRef"] == {"kind": "SecretStore", "name": "team-vault"}
    assert runtime["refreshInterval"] == "900s"
    assert [d["secretKey"] for d in runtime["data"]] == ["BROKER_PASSWORD", "SESSION_KEY"]
    # a reference that names its own store is fetched from that store
    assert secrets["legacy"]["spec"]["secretStoreRef"]["name"] == "old-vault"
    redis = by_kind(objects, "StatefulSet")["cache"]["spec"]["template"]["spec"]["containers"][0]
    assert "$(REDIS_PASSWORD)" in redis["args"]
    assert {
        "name": "REDISCLI_AUTH",
        "valueFrom": {"secretKeyRef": {"name": "cache-auth", "key": "password"}},
    } in redis["env"]
    env = {
        e["name"]: e
        for e in by_kind(objects, "Deployment")["api"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@$(REDIS_HOST):$(REDIS_PORT)/0"
    assert env["BROKER"]["value"] == "amqp://app:$(BROKER_PASSWORD)@broker:5672/"


def test_one_secret_from_two_stores_is_refused() -> None:
    spec = spec_from(
        """
        name: split
        secrets: {store: {name: a}}
        services:
          web:
            role: worker
            image: split/web:1
            env:
              ONE: {secretRef: shared/one}
              TWO: {secretRef: shared/two, store: b}
        environments: {dev: {}}
        """
    )
    with pytest.raises(RenderError, match="Secret 'shared' is referenced from two external stores"):
        render_kubernetes(spec.stack("dev"))
