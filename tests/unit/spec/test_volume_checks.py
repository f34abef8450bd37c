"""A ReadWriteOnce volume on a Deployment that runs several pods: refused by `validate`.

Every pod of a Deployment mounts the same PersistentVolumeClaim. A ReadWriteOnce volume attaches
to one node: the pods scheduled elsewhere hang in ContainerCreating (Multi-Attach error), and a
ReadWriteOncePod volume admits only one pod at all.
"""

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
  api:
    role: api
    image: shop/api:1
    port: 8000
    volumes:
      data: {size: 1Gi, mount: /data%s}
%s
images: {environments: []}  # volumes, not which images production may run
"""


def problems(volume: str = "", service: str = "") -> list[str]:
    text = textwrap.dedent(BASE % (volume, service))
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_read_write_once_volume_on_several_replicas_is_refused_naming_the_field_and_line() -> None:
    found = problems(service="    replicas: 2")
    # One per environment (each runs 2 replicas), each naming its own.
    assert len(found) == 3
    (problem,) = [p for p in found if "in production:" in p]
    # Line 8 is the volume (access_mode is not written: its default is the one refused).
    assert problem.startswith("s.yaml:8:")
    assert "services.api.volumes.data.access_mode:" in problem
    assert "ReadWriteOnce" in problem
    assert "runs 2 replicas" in problem
    for fix in ("ReadWriteMany", "workload: statefulset", "replicas: 1"):
        assert fix in problem


def test_an_explicit_access_mode_is_pointed_at_by_its_own_line() -> None:
    problem = problems(", access_mode: ReadWriteOncePod", "    replicas: 3")[0]
    assert problem.startswith("s.yaml:8:")
    assert "services.api.volumes.data.access_mode:" in problem
    assert "ReadWriteOncePod" in problem


def test_an_autoscaled_deployment_is_refused_even_at_one_replica() -> None:
    problem = problems(service="    autoscaling: {min: 1, max: 4, cpu_percent: 70}")[0]
    assert "services.api.volumes.data.access_mode:" in problem
    assert "autoscal" in problem


def test_only_the_environment_that_scales_is_refused() -> None:
    text = BASE % ("", "") + textwrap.dedent(
        """\
        environments:
          dev: {}
          production:
            services:
              api: {replicas: 2}
        """
    )
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "s.yaml")
    (issue,) = caught.value.issues
    assert issue.path == "services.api.volumes.data.access_mode"
    assert "runs 2 replicas in production:" in issue.message


@pytest.mark.parametrize(
    ("volume", "service"),
    [
        ("", ""),  # one replica
        ("", "    replicas: 0"),
        (", access_mode: ReadWriteMany", "    replicas: 3"),
        (", access_mode: ReadOnlyMany", "    autoscaling: {min: 2, max: 4, cpu_percent: 70}"),
        ("", "    replicas: 3\n    workload: statefulset"),  # one claim per pod
    ],
)
def test_what_can_run_is_accepted(volume: str, service: str) -> None:
    load_spec_text(textwrap.dedent(BASE % (volume, service)), "s.yaml")


@pytest.mark.parametrize("example", ["apricode", "normaldance", "salespot", "demo"])
def test_the_examples_still_validate(example: str) -> None:
    load_spec(ROOT / "examples" / example / "shipyard.yaml")
