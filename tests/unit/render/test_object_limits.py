"""Sizes the API server refuses that no schema states: a ConfigMap's data over 1 MiB, and any
object over etcd's 1.5 MiB. Render refuses them, naming the object and the spec field."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.errors import RenderError
from shipyard.render import build_manifests
from unit.render.render_helpers import NO_IMAGE_POLICY, by_kind, spec_from

MIB = 1024 * 1024


def _spec(env_value: str = "small", migration: str = "true") -> str:
    return f"""\
        name: shop
        services:
          api:
            role: api
            image: shop/api:1.0.0
            port: 8000
            migration: "{migration}"
            env: {{LOG_LEVEL: info, BIG: "{env_value}"}}
        environments:
          production: {{}}
        """


def test_a_configmap_over_1_mib_of_data_is_refused_naming_its_spec_field() -> None:
    stack = spec_from(_spec(env_value="x" * (2 * MIB))).stack("production")
    with pytest.raises(RenderError) as caught:
        build_manifests(stack)
    message = str(caught.value)
    assert "ConfigMap/api-env" in message
    assert "services.api.env.BIG" in message
    assert "2.0 MiB" in message
    assert "1 MiB" in message


def test_a_configmap_just_under_the_limit_renders() -> None:
    stack = spec_from(_spec(env_value="x" * (MIB - 1024))).stack("production")
    config = by_kind(list(build_manifests(stack).objects), "ConfigMap")["api-env"]
    assert len(config["data"]["BIG"]) == MIB - 1024


def test_any_object_over_etcds_limit_is_refused_naming_its_largest_value() -> None:
    # The migration command is written into the Deployment's init container, not a ConfigMap.
    stack = spec_from(_spec(migration="echo " + "x" * (MIB + MIB // 2))).stack("production")
    with pytest.raises(RenderError) as caught:
        build_manifests(stack)
    message = str(caught.value)
    assert "Deployment/api" in message
    assert "services.api" in message
    assert "1.5 MiB" in message
    assert "initContainers[0]" in message  # where in the object its bulk is


def test_the_cli_ends_with_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a 50 MB spec did (a 46 MB ConfigMap, exit 0), at a size the spec file may have.
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(_spec(env_value="x" * (3 * MIB)).replace("\n        ", "\n").lstrip() + NO_IMAGE_POLICY)
    out = tmp_path / "k8s"
    with pytest.raises(SystemExit) as ended:
        main(["render", "kubernetes", "-f", str(spec), "-e", "production", "-o", str(out)])
    assert ended.value.code == 2
    assert "ConfigMap/api-env" in capsys.readouterr().err
    assert not out.exists()
