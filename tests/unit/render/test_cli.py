"""`shipyard render …` end to end through the CLI's entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shipyard.cli import main
from unit.render.render_helpers import ROOT

APRICODE = str(ROOT / "examples" / "apricode" / "shipyard.yaml")


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as ended:
        main(argv)
    code = ended.value.code
    return code if isinstance(code, int) else 1


def test_kubernetes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "kubernetes", "-f", APRICODE, "-e", "dev"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents[0]["kind"] == "Namespace"
    assert documents[0]["metadata"]["name"] == "apricode-dev"


def test_kubernetes_to_a_directory_with_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "kubernetes", "-f", APRICODE, "-o", str(tmp_path / "k8s")]) == 0
    out = capsys.readouterr().out
    assert "Deployment" in out
    assert "production" in out
    assert (tmp_path / "k8s" / "production" / "deployment-app.yaml").is_file()


@pytest.mark.parametrize("command", ["kustomize", "helm"])
def test_kustomize_and_helm(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / command
    assert _run(["render", command, "-f", APRICODE, "-o", str(out), "--kube-version", "1.32"]) == 0
    assert "base: production" in capsys.readouterr().out
    assert any(out.iterdir())


def test_default_output_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(["render", "helm", "-f", APRICODE]) == 0
    assert (tmp_path / "rendered" / "helm" / "Chart.yaml").is_file()


def test_unknown_environment_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "kubernetes", "-f", APRICODE, "-e", "prod"]) == 2
    assert "no environment 'prod'" in capsys.readouterr().err


def test_unsupported_kubernetes_version_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "helm", "-f", APRICODE, "-o", str(tmp_path / "h"), "--kube-version", "1.99"]) == 2
    assert "no Kubernetes schemas for version 1.99" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
