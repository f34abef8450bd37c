"""Writing is all or nothing, and never over a directory shipyard did not write."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.errors import RenderError, UserError
from shipyard.render import render_helm, render_kustomize, write_kubernetes, write_tree
from shipyard.spec import Spec


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
    }


def test_write_replaces_a_previous_render(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree({"a.yaml": "a: 1\n", "sub/b.yaml": "b: 2\n"}, out)
    write_tree({"c.yaml": "c: 3\n"}, out)
    assert set(_snapshot(out)) == {"c.yaml", ".shipyard-rendered"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging left behind


def test_a_failed_write_leaves_the_old_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree({"a.yaml": "a: 1\n"}, out)
    before = _snapshot(out)
    # `x` as a file and as a directory: the second write fails halfway through.
    with pytest.raises(FileExistsError):
        write_tree({"x": "file\n", "x/y.yaml": "y: 1\n"}, out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_invalid_render_writes_nothing(apricode: Spec, tmp_path: Path) -> None:
    out = tmp_path / "out"
    render_helm(apricode, out)
    before = _snapshot(out)
    with pytest.raises(RenderError):
        render_kustomize(apricode, out, kube_version="1.99")
    assert _snapshot(out) == before
    with pytest.raises(RenderError):
        render_kustomize(apricode, tmp_path / "new", kube_version="1.99")
    assert not (tmp_path / "new").exists()


def test_a_foreign_directory_is_never_replaced(apricode: Spec, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(UserError, match="was not written by shipyard"):
        write_kubernetes(apricode, tmp_path, "dev")
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_paths_must_stay_inside_the_output(tmp_path: Path) -> None:
    for bad in ("../escape.yaml", "/abs.yaml", ".shipyard-rendered"):
        with pytest.raises(ValueError, match="not a file name inside the output"):
            write_tree({bad: "x\n"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_kubernetes_files_per_object_and_per_environment(apricode: Spec, tmp_path: Path) -> None:
    one = write_kubernetes(apricode, tmp_path / "one", "staging")
    files = set(_snapshot(one.directory))
    assert "deployment-app.yaml" in files
    assert "namespace-apricode-staging.yaml" in files
    assert one.files == sum(one.environments[0].counts.values())
    every = write_kubernetes(apricode, tmp_path / "every")
    assert {p.split("/")[0] for p in _snapshot(every.directory) if "/" in p} == set(apricode.environments)
