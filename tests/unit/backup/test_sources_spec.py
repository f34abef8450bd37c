"""Which sources a backup covers and how they are reached, from the spec; secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.backup import FilesSource, PostgresSource, RedisSource, secret_env_name, sources_of
from shipyard.backup._connect import repository_location, repository_password, resolve_secret
from shipyard.errors import UserError
from shipyard.spec import SecretRef, Stack, load_spec_text

SPEC = """
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    database: shop
    user: shopper
    port: 5433
    password: {secretRef: db-credentials/password}
    local: {host: 10.0.0.5}
  cache:
    kind: redis
    local: {port: 7000}
backup:
  repository: ./repo
  password: ${env:RESTIC_PW}
  sources:
    datastores: [db, cache]
    volumes: [/srv/uploads]
environments:
  production: {}
"""


def _stack(text: str = SPEC) -> Stack:
    return load_spec_text(text).stack("production")


def test_each_kind_covers_its_sources_with_ports_falling_back_to_the_datastores() -> None:
    environ = {"DB_CREDENTIALS_PASSWORD": "s3cret"}
    full = sources_of(_stack(), "full", environ)
    assert [s.artefact for s in full] == ["postgres:db", "redis:cache", "files:/srv/uploads"]
    postgres, redis, files = full
    assert isinstance(postgres, PostgresSource)
    assert (postgres.host, postgres.port, postgres.database, postgres.user) == (
        "10.0.0.5",
        5433,
        "shop",
        "shopper",
    )
    assert postgres.env["PGPASSWORD"] == "s3cret"
    assert "s3cret" not in repr(postgres)
    assert isinstance(redis, RedisSource)
    assert (redis.host, redis.port) == ("127.0.0.1", 7000)
    assert files == FilesSource(Path("/srv/uploads"))
    assert [s.artefact for s in sources_of(_stack(), "database", environ)] == ["postgres:db"]
    assert [s.artefact for s in sources_of(_stack(), "redis", environ)] == ["redis:cache"]
    assert [s.artefact for s in sources_of(_stack(), "files", environ)] == ["files:/srv/uploads"]


def test_an_unset_password_variable_is_named_and_its_value_never_shown() -> None:
    with pytest.raises(UserError, match="DB_CREDENTIALS_PASSWORD") as caught:
        sources_of(_stack(), "database", {})
    assert "datastores.db.password" in caught.value.message
    with pytest.raises(UserError, match="RESTIC_PW"):
        repository_password(_stack(), {})
    assert repository_password(_stack(), {"RESTIC_PW": "pw"}) == "pw"


def test_secret_references_map_to_environment_variables() -> None:
    reference = SecretRef.model_validate({"secretRef": "app-db.v2/pass-word"})
    assert secret_env_name(reference) == "APP_DB_V2_PASS_WORD"
    assert resolve_secret("${env:X}", field_name="f", environ={"X": "1"}, required=True) == "1"
    assert resolve_secret(None, field_name="f", environ={}, required=True) is None
    assert resolve_secret(reference, field_name="f", environ={}, required=False) is None


def test_unknown_kinds_kinds_without_sources_and_specs_without_backup_are_refused() -> None:
    only_files = SPEC.replace("datastores: [db, cache]", "datastores: []")
    with pytest.raises(UserError, match="names no PostgreSQL datastore"):
        sources_of(_stack(only_files), "database", {})
    with pytest.raises(UserError, match="unknown backup kind"):
        sources_of(_stack(), "everything", {})
    no_backup = SPEC.split("backup:", maxsplit=1)[0] + "environments:\n  production: {}\n"
    with pytest.raises(UserError, match="no `backup:` section"):
        sources_of(_stack(no_backup), "full", {})


def test_a_local_repository_is_relative_to_the_spec_and_an_s3_url_is_kept() -> None:
    assert repository_location(_stack(), Path("/etc/shop")) == "/etc/shop/repo"
    s3 = _stack(SPEC.replace("./repo", "s3:https://s3.example.com/bucket/shop"))
    assert repository_location(s3, Path("/etc/shop")) == "s3:https://s3.example.com/bucket/shop"
