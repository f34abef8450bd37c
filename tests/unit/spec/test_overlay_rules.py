"""Environment overlays: an unknown service or datastore is named as such, and `backup.schedules`
is a set that an overlay replaces (so it can drop schedules), not a map it deep-merges."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shipyard.errors import SpecError
from shipyard.spec import load_spec, load_spec_text

ROOT = Path(__file__).resolve().parents[3]

BASE = """\
name: shop
services:
  api: {role: api, image: i, port: 8000}
  web: {role: web, image: i, port: 8001}
datastores:
  postgres: {kind: postgresql, storage: {size: 1Gi}}
backup:
  repository: /var/backups/shop
  password: {secretRef: backup/password}
  schedules: {full: "0 3 * * *", database: "0 * * * *", verify: "0 6 * * 1"}
  sources: {datastores: [postgres]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(textwrap.dedent(text), "s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_an_overlay_naming_an_unknown_service_names_it() -> None:
    found = problems(
        BASE
        + """\
environments:
  production: {}
  staging:
    services:
      apii: {replicas: 2}
images: {environments: []}
"""
    )
    assert found == [
        "s.yaml:16:7: environments.staging.services.apii: unknown service 'apii' in"
        " environments.staging.services (did you mean 'api'?; known: api, web); an overlay changes"
        " the services above, or adds one given whole (role, image, port)"
    ]
    assert not any("required" in f for f in found)


def test_an_overlay_naming_an_unknown_datastore_names_it() -> None:
    found = problems(
        BASE
        + """\
environments:
  production:
    datastores:
      redis: {maxmemory: 1Gi}
images: {environments: []}
"""
    )
    assert len(found) == 1, found
    assert found[0].startswith(
        "s.yaml:15:7: environments.production.datastores.redis: unknown datastore 'redis'"
    )
    assert "known: postgres" in found[0]


def test_an_overlay_may_still_add_a_whole_service() -> None:
    spec = load_spec_text(
        BASE
        + """\
environments:
  dev:
    services:
      mailhog: {role: web, image: mailhog/mailhog:v1.0.1, port: 8025}
  production: {}
images: {environments: []}
"""
    )
    assert "mailhog" in spec.stack("dev").services
    assert "mailhog" not in spec.stack("production").services


def test_overlay_schedules_replace_the_base_set() -> None:
    spec = load_spec_text(
        BASE
        + """\
environments:
  staging:
    backup:
      schedules: {full: "0 4 * * *"}
  quiet:
    backup:
      schedules: {}
  production: {}
images: {environments: []}
"""
    )

    def schedules(env: str) -> dict[str, str]:
        backup = spec.stack(env).backup
        assert backup is not None
        return {str(kind): cron for kind, cron in backup.schedules.items()}

    assert schedules("staging") == {"full": "0 4 * * *"}
    assert schedules("quiet") == {}
    assert schedules("production") == {"full": "0 3 * * *", "database": "0 * * * *", "verify": "0 6 * * 1"}
    # The rest of `backup` still merges: the repository and password come from the base.
    staging = spec.stack("staging").backup
    assert staging is not None
    assert staging.repository == "/var/backups/shop"


def test_a_null_schedule_in_an_overlay_says_how_to_drop_it() -> None:
    found = problems(
        BASE
        + """\
environments:
  staging:
    backup:
      schedules: {full: "0 4 * * *", database: ~}
"""
    )
    assert len(found) == 1, found
    assert found[0].startswith("s.yaml:15:38: environments.staging.backup.schedules.database:")
    assert "replaces" in found[0]
    assert "leave 'database' out" in found[0]


def test_the_normaldance_staging_overlay_backs_up_only_what_it_says() -> None:
    spec = load_spec(ROOT / "examples" / "normaldance" / "shipyard.yaml")
    staging, production = spec.stack("staging").backup, spec.stack("production").backup
    assert staging is not None
    assert production is not None
    # Staging: one daily full backup. The hourly database backup is production's only.
    assert dict(staging.schedules) == {"full": "0 3 * * *"}
    assert set(production.schedules) == {"database", "full", "verify"}
    assert spec.stack("dev").backup is None


@pytest.mark.parametrize("example", ["apricode", "salespot"])
def test_the_other_examples_overlays_keep_the_base_schedules(example: str) -> None:
    spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
    base = spec.stack("production").backup
    assert base is not None
    for stack in spec.stacks():
        if stack.backup is not None:
            assert stack.backup.schedules == base.schedules, stack.environment
