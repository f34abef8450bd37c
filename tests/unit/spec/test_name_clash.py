"""A service and a datastore share one namespace of names: `validate` refuses the same name in
both, naming both fields, and reports that instead of what the ambiguity makes of depends_on."""

from __future__ import annotations

import textwrap

import pytest

from shipyard.errors import SpecError
from shipyard.spec import load_spec_text


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(textwrap.dedent(text), "s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_service_and_a_datastore_with_the_same_name_are_refused() -> None:
    found = problems(
        """\
        name: shop
        services:
          api: {role: api, image: i, port: 8000}
          cache: {role: worker, image: i}
        datastores:
          cache: {kind: redis}
        images: {environments: []}
        """
    )
    assert len(found) == 1, found
    (issue,) = found
    assert issue.startswith("s.yaml:4:3: services.cache:"), issue
    assert "datastores.cache" in issue
    assert "rename" in issue


def test_the_postgres_case_reports_the_clash_not_a_cycle_or_a_self_dependency() -> None:
    # The service `postgres` (say, a proxy in front of the database) waits for the datastore
    # `postgres`; `api` waits for "postgres", meaning the datastore. Read as services only, that
    # is `postgres` depending on itself and a cycle api -> postgres -> api: neither is the fault.
    found = problems(
        """\
        name: shop
        services:
          api: {role: api, image: i, port: 8000, depends_on: [postgres]}
          postgres: {role: api, image: i, port: 6432, depends_on: [postgres, api]}
        datastores:
          postgres: {kind: postgresql, storage: {size: 1Gi}}
        images: {environments: []}
        """
    )
    assert len(found) == 1, found
    assert found[0].startswith("s.yaml:4:3: services.postgres:")
    assert "datastores.postgres" in found[0]
    assert not any("cycle" in f or "itself" in f for f in found)


def test_the_clash_is_reported_in_each_environment_that_has_it_once() -> None:
    # Only production adds the datastore: the other environments are fine.
    found = problems(
        """\
        name: shop
        services:
          queue: {role: worker, image: i}
        environments:
          dev: {}
          production:
            datastores:
              queue: {kind: redis}
        images: {environments: []}
        """
    )
    assert len(found) == 1, found
    assert "services.queue" in found[0]
    assert "datastores.queue" in found[0]
