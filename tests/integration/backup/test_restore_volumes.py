"""`shipyard restore volumes`: every file volume of a set at once (issue 5, deliverable 3), with a real
restic repository: into scratch under one directory, or over the live directories after one
safety backup of them all."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipyard.backup import ResticRepository, tree_digest
from support.cli import CliResult, run_cli

pytestmark = pytest.mark.integration

SPEC = """\
name: shop
backup:
  repository: ./repo
  password: ${{env:VOLUMES_RESTIC_PASSWORD}}
  sources: {{volumes: [{volumes}]}}
environments:
  test: {{}}
"""


@dataclass
class Rig:
    base: Path
    volumes: tuple[Path, Path]

    def write_spec(self, *volumes: Path) -> None:
        (self.base / "shipyard.yaml").write_text(SPEC.format(volumes=", ".join(str(v) for v in volumes)))


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    base = Path(tempfile.mkdtemp(prefix="shipyard-restore-volumes-test-"))
    try:
        uploads, media = base / "live" / "uploads", base / "live" / "media"
        (uploads / "2026").mkdir(parents=True)
        (uploads / "2026" / "a.txt").write_text("alpha\n")
        media.mkdir()
        (media / "logo.bin").write_bytes(bytes(range(256)) * 64)
        (media / "link").symlink_to("logo.bin")
        rig = Rig(base, (uploads, media))
        rig.write_spec(uploads, media)
        ResticRepository(str(base / "repo"), "volumes test password", cache_dir=base / "cache").init()
        for key, value in {
            "VOLUMES_RESTIC_PASSWORD": "volumes test password",
            "SHIPYARD_DATABASE_URL": f"sqlite:///{base / 'state.db'}",
            "SHIPYARD_STATE_DIR": str(base / "state"),
            "SHIPYARD_ACTOR": "tester",
            "XDG_CACHE_HOME": str(base / "cache"),
        }.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(base)
        yield rig
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    return run_cli(capsys, *args, "-e", "test", "-o", "json")


def _sets(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [s["id"] for s in _cli(capsys, "backup", "list").json()]


def test_every_volume_comes_back_into_scratch_and_over_live_data(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    uploads, media = rig.volumes
    backed_up = {path: tree_digest(path) for path in rig.volumes}
    taken = _cli(capsys, "backup", "files")
    assert taken.code == 0, taken.err
    set_id = taken.json()["id"]
    (uploads / "2026" / "a.txt").write_text("changed\n")
    (media / "logo.bin").unlink()
    (media / "new.txt").write_text("new\n")
    changed = {path: tree_digest(path) for path in rig.volumes}

    scratch = rig.base / "scratch"
    restored = _cli(capsys, "restore", "volumes", "--target-dir", str(scratch))
    assert restored.code == 0, restored.err
    assert [r["artefact"] for r in restored.json()["restored"]] == [f"files:{uploads}", f"files:{media}"]
    for path in rig.volumes:
        assert tree_digest(scratch / str(path).lstrip("/")) == backed_up[path]
    assert {path: tree_digest(path) for path in rig.volumes} == changed  # scratch touched nothing live

    refused = _cli(capsys, "restore", "volumes", "--into", "live")
    assert refused.code == 2
    assert "--yes" in refused.err
    planned = _cli(capsys, "restore", "volumes", "--into", "live", "--yes", "--dry-run")
    assert planned.code == 0, planned.err
    assert [v["path"] for v in planned.json()["volumes"]] == [str(uploads), str(media)]
    assert planned.json()["safety_backup"] == "files"
    assert {path: tree_digest(path) for path in rig.volumes} == changed
    assert _sets(capsys) == [set_id]

    live = _cli(capsys, "restore", "volumes", "--set", set_id, "--into", "live", "--yes")
    assert live.code == 0, live.err
    assert {path: tree_digest(path) for path in rig.volumes} == backed_up
    # One safety backup of both volumes, taken before either was replaced, holding what was there.
    safety = {r["safety_set"] for r in live.json()["restored"]}
    assert len(safety) == 1
    (safety_id,) = safety
    assert sorted(_sets(capsys)) == sorted([set_id, safety_id])
    shown = run_cli(capsys, "backup", "show", safety_id, "-o", "json").json()
    assert {a["name"]: a["sha256"] for a in shown["manifest"]["artefacts"]} == {
        f"files:{path}": changed[path].sha256 for path in rig.volumes
    }


def test_a_volume_the_spec_no_longer_backs_up_stops_the_live_restore_before_anything(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    uploads, media = rig.volumes
    taken = _cli(capsys, "backup", "files")
    assert taken.code == 0, taken.err
    (uploads / "2026" / "a.txt").write_text("changed\n")
    before = {path: tree_digest(path) for path in rig.volumes}
    rig.write_spec(uploads)  # media was dropped from the spec since the set was taken

    refused = _cli(capsys, "restore", "volumes", "--into", "live", "--yes")
    assert refused.code == 2
    assert f"{media} is not among backup.sources.volumes" in refused.err
    assert {path: tree_digest(path) for path in rig.volumes} == before
    assert _sets(capsys) == [taken.json()["id"]]  # no safety backup was taken
