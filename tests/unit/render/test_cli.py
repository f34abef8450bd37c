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


@pytest.mark.parametrize("command", ["kustomize", "helm", "argocd"])
def test_a_tree_is_written_only_where_out_says(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 13: without -o, `render helm|kustomize` wrote into ./rendered/ unasked. One rule now:
    a stream goes to stdout, a tree of files only into the directory -o names."""
    monkeypatch.chdir(tmp_path)
    assert _run(["render", command, "-f", APRICODE]) == 2
    captured = capsys.readouterr()
    assert "name it with -o DIR" in captured.err
    assert "nothing was written" in captured.err
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["kubernetes", "prometheus", "alertmanager", "grafana"])
def test_a_stream_without_out_goes_to_stdout(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(["render", command, "-f", APRICODE, "-e", "production"]) == 0
    assert capsys.readouterr().out.strip()
    assert list(tmp_path.iterdir()) == []


def test_argocd_to_a_directory_says_what_to_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "deploy"
    assert _run(["render", "argocd", "-f", APRICODE, "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "Wrote " in captured.out
    assert "apricode-production" in captured.out
    assert "kubectl apply -n argocd -f" in captured.out
    assert "note: argo-rollouts: installed with its chart's defaults" in captured.err
    assert (out / "root.yaml").is_file()
    assert (out / "stack" / "overlays" / "production" / "kustomization.yaml").is_file()
    assert _run(["render", "argocd", "-f", APRICODE, "-o", str(out), "-e", "dev"]) == 0
    assert not (out / "apps" / "apricode-production.yaml").exists()
    assert (out / "apps" / "apricode-dev.yaml").is_file()


def test_unknown_environment_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "kubernetes", "-f", APRICODE, "-e", "prod"]) == 2
    assert "no environment 'prod'" in capsys.readouterr().err


def test_unsupported_kubernetes_version_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["render", "helm", "-f", APRICODE, "-o", str(tmp_path / "h"), "--kube-version", "1.99"]) == 2
    assert "no Kubernetes schemas for version 1.99" in capsys.readouterr().err
    assert not (tmp_path / "h").exists()
