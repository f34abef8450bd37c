"""Backups that never say "verified" wrongly (issue 12), with real PostgreSQL, Redis and restic:

- a set's record that lost an artefact fails verification (the repository's copy of the manifest,
  the set's sources, the spec and the repository's snapshots all say what it should hold);
- a one-byte flip in a pack header is found: at once by `verify --full`, and within N
  verifications by the rotating read-data subsets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.backup._cli import plain_restic, sessions_of, shipyard_json, take_full
from shipyard.state import BackupSetRow
from support.backup_stack import BackupStack, backup_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack() -> Iterator[BackupStack]:
    with backup_stack() as created:
        yield created


def _edit_manifest(stack: BackupStack, set_id: str, drop: str) -> None:
    """The state store's record loses one artefact, from its artefacts and from its sources."""
    with sessions_of(stack)() as session, session.begin():
        row = session.get(BackupSetRow, set_id)
        assert row is not None
        manifest = dict(row.manifest)
        manifest["artefacts"] = [a for a in manifest["artefacts"] if a["name"] != drop]
        manifest["sources"] = [s for s in manifest["sources"] if s != drop]
        row.manifest = manifest


def test_a_record_that_lost_an_artefact_is_not_verified(stack: BackupStack) -> None:
    """Defect 1: with the Redis artefact removed from the manifest, verify said "verified"."""
    taken = take_full(stack)
    _edit_manifest(stack, taken["id"], "redis:cache")
    failed = stack.run("backup", "verify", taken["id"], "-f", str(stack.spec), check=False)
    assert failed.returncode != 0, failed.stdout
    assert "redis:cache" in failed.stderr
    shown = shipyard_json(stack, "backup", "show", taken["id"])
    assert shown["state"] == "partial"
    assert shown["verification"]["ok"] is False
    manifest_checks = [c for c in shown["verification"]["checks"] if c["artefact"] == "manifest"]
    assert any(not c["ok"] and "redis:cache" in c["detail"] for c in manifest_checks)
    # The artefacts the record still holds were restored and matched: they stay restorable.
    listed = {s["id"]: s for s in shipyard_json(stack, "backup", "list")}
    assert listed[taken["id"]]["restorable"] is True


def _flip_a_pack_header(stack: BackupStack) -> Path:
    """Flip one byte inside the (encrypted, authenticated) header at the end of the largest pack.
    restic's restore reads blobs through the index and never sees it; only reading the pack does."""
    packs = sorted((stack.base / "repo" / "data").glob("*/*"), key=lambda p: p.stat().st_size)
    pack = packs[-1]
    data = bytearray(pack.read_bytes())
    header_length = int.from_bytes(data[-4:], "little")
    assert 0 < header_length < len(data)
    data[-4 - header_length // 2] ^= 0x01
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))
    return pack


def test_a_flipped_pack_header_fails_a_full_verification(stack: BackupStack) -> None:
    """Defect 3: with the default 10 % read subset, a one-byte flip in a pack header passed."""
    taken = take_full(stack)
    _flip_a_pack_header(stack)
    assert plain_restic(stack, "check", "--read-data").returncode != 0  # the damage is real
    failed = stack.run("backup", "verify", taken["id"], "--full", "-f", str(stack.spec), check=False)
    assert failed.returncode != 0, failed.stdout
    shown = shipyard_json(stack, "backup", "show", taken["id"])
    assert (shown["state"], shown["verification"]["read_data_subset"]) == ("failed", "100%")
    repository = [c for c in shown["verification"]["checks"] if c["artefact"] == "repository"]
    assert [c["ok"] for c in repository] == [False]


def test_rotating_subsets_read_every_pack_within_n_verifications(stack: BackupStack) -> None:
    """Scheduled verification reads the next 1/N each time: with N = 2, one of two verifications
    in a row reads the damaged pack, whichever it is."""
    stack.write_spec(extra="  read_data_subsets: 2\n")
    sets = [take_full(stack), take_full(stack)]
    _flip_a_pack_header(stack)
    outcomes = []
    for taken in sets:
        verified = stack.run("backup", "verify", taken["id"], "-f", str(stack.spec), check=False)
        shown = shipyard_json(stack, "backup", "show", taken["id"])
        outcomes.append((shown["verification"]["read_data_subset"], verified.returncode == 0))
    assert [subset for subset, _ in outcomes] == ["1/2", "2/2"]
    assert sorted(ok for _, ok in outcomes) == [False, True], outcomes
