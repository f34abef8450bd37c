"""`backup freshness` reads the backups a state store holds: in a directory without a store it
fails naming where it looked and creates none (it made one, and then paged "stale" for every
source of backups recorded elsewhere). With a store, it still judges and pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.state import open_engine
from support.cli import run_cli
from support.webhook import webhook_receiver

SPEC = """\
name: shop
notifications:
  ops: {{kind: webhook, url: '${{env:HOOK}}'}}
backup:
  repository: ./repo
  password: ${{env:RESTIC_PASSWORD}}
  sources:
    volumes: [{files}]
dr: {{rto: 15m, rpo: 10m}}
environments:
  production: {{}}
"""


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory: a spec, and no store in it nor named by the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("SHIPYARD_DATABASE_URL", "SHIPYARD_STATE_DIR", "SHIPYARD_SPEC", "SHIPYARD_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESTIC_PASSWORD", "correct horse battery staple")
    (tmp_path / "files").mkdir()
    (tmp_path / "shipyard.yaml").write_text(SPEC.format(files=tmp_path / "files"))
    return tmp_path


def test_freshness_without_a_store_names_where_it_looked_and_pages_nobody(
    empty_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with webhook_receiver() as webhook:
        monkeypatch.setenv("HOOK", webhook.url)
        result = run_cli(capsys, "backup", "freshness", "-f", "shipyard.yaml")

        assert result.code == 2, result
        assert f"no state store at {empty_dir / '.shipyard' / 'state.db'}" in result.err, result.err
        assert "Traceback" not in result.out + result.err
        assert sorted(p.name for p in empty_dir.iterdir()) == ["files", "shipyard.yaml"]
        assert webhook.received == []


def test_freshness_with_a_store_judges_and_pages(
    empty_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = empty_dir / "state.db"
    open_engine(f"sqlite:///{store}").dispose()  # as `serve` or a first backup makes it
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", f"sqlite:///{store}")
    with webhook_receiver() as webhook:
        monkeypatch.setenv("HOOK", webhook.url)
        result = run_cli(capsys, "backup", "freshness", "-f", "shipyard.yaml", "-o", "json")

        assert result.code == 1, result  # no copy of the files yet: stale
        assert [source["stale"] for source in result.json()] == [True]
        assert [event["event"] for event in webhook.received] == ["backup.stale"]
