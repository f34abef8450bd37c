"""`shipyard apply -e ENV --dry-run -o json` and `shipyard status` through the real CLI, with a
kubeconfig pointing at a loopback server that replays the Kubernetes API's recorded answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.render import build_manifests
from shipyard.spec import load_spec
from support.kube_api import RecordedAPI, answer_stack_apply, recorded_api, write_kubeconfig

ROOT = Path(__file__).resolve().parents[3]
APRICODE = ROOT / "examples" / "apricode" / "shipyard.yaml"


@pytest.fixture
def api() -> Iterator[RecordedAPI]:
    with recorded_api() as recorded:
        yield recorded


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_apply_dry_run_json(api: RecordedAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
    objects = list(build_manifests(load_spec(APRICODE).stack("production"), argo=True).objects)
    paths = answer_stack_apply(api, objects)
    database = tmp_path / "state.db"
    code, out, err = _run(
        capsys, "apply", "-f", str(APRICODE), "-e", "production", "--dry-run", "-o", "json",
        "--kubeconfig", str(kubeconfig), "--database-url", f"sqlite:///{database}",
    )  # fmt: skip
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["dry_run"] is True
    assert result["api_server"] == api.url
    assert [a["path"] for a in result["applied"]] == paths
    assert result["would_wait"] == [
        "StatefulSet production/postgres",
        "StatefulSet production/postgres-replica",
        "StatefulSet production/redis",
    ]
    assert [(r.method, r.path) for r in api.requests] == [
        ("PATCH", f"{path}?fieldManager=shipyard&force=true&dryRun=All") for path in paths
    ]
    assert not database.exists()  # a dry run records nothing, not even an audit entry


def test_apply_failure_is_one_line_and_exit_1(
    api: RecordedAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
    # Nothing queued: the API server answers the first request (the Namespace) with a 500.
    code, _, err = _run(
        capsys, "apply", "-f", str(APRICODE), "-e", "production", "--dry-run",
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    assert code == 1
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"error: cannot apply Namespace production (dry run): the Kubernetes API at {api.url} answered"
        " HTTP 500 Internal Server Error: no recording"
    ]


def test_status_without_a_kubeconfig_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope"
    code, _, err = _run(
        capsys, "status", "-f", str(APRICODE), "-e", "production", "--kubeconfig", str(missing)
    )
    assert code != 0
    assert str(missing) in err


def test_apply_dry_run_table(api: RecordedAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"recorded": api.url}, current="recorded")
    objects = list(build_manifests(load_spec(APRICODE).stack("production"), argo=True).objects)
    answer_stack_apply(api, objects)
    code, out, _ = _run(
        capsys, "apply", "-f", str(APRICODE), "-e", "production", "--dry-run",
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    assert code == 0
    assert "StatefulSet" in out
    assert out.rstrip().splitlines()[-1] == (
        f"dry run: the Kubernetes API at {api.url} accepted {len(objects)} objects for production"
        " (namespace production); nothing changed"
    )
