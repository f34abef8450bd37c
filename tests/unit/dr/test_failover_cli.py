"""`shipyard dr failover|failback`: input mistakes are refused before anything is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from shipyard.cli import main
from shipyard.state import AuditRow, open_engine, session_factory

SPEC = """\
name: shop
datastores:
  db:
    kind: postgresql
    storage: {size: 1Gi}
    local: {port: 1, data_dir: /nonexistent/a}
    standby: {port: 2, data_dir: /nonexistent/b}
dr: {rto: 1m, rpo: 0}
"""


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str, spec: str = SPEC) -> tuple[int, str]:
    path = tmp_path / "shipyard.yaml"
    path.write_text(spec)
    with pytest.raises(SystemExit) as exited:
        main([*argv, "-f", str(path), "--database-url", f"sqlite:///{tmp_path / 'state.db'}"])
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("verb", ["failover", "failback"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--proxy-socket", "/tmp/x.sock"], "--proxy-socket needs --proxy-address HOST:PORT"),
        (["--proxy-address", "127.0.0.1:6432"], "--proxy-address needs --proxy-socket"),
        (["--proxy-socket", "/tmp/x.sock", "--proxy-address", "nohost"], "give HOST:PORT"),
        (["--proxy-socket", "/tmp/x.sock", "--proxy-address", "h:99999"], "give HOST:PORT"),
        (
            ["--proxy-socket", "/tmp/x.sock", "--proxy-address", "h:1", "--proxy-servers", "a"],
            "give two different names, PRIMARY,STANDBY",
        ),
        (["cache"], "datastores.cache: no such PostgreSQL datastore"),
    ],
)
def test_bad_options_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, verb: str, options: list[str], message: str
) -> None:
    code, err = run(capsys, tmp_path, "dr", verb, *options)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_a_spec_without_a_standby_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = SPEC.replace("    standby: {port: 2, data_dir: /nonexistent/b}\n", "")
    code, err = run(capsys, tmp_path, "dr", "failover", spec=spec)
    assert code == 2
    assert "datastores.db.standby is not set" in err


def test_unreachable_nodes_are_refused_and_nothing_is_recorded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, err = run(capsys, tmp_path, "dr", "failover")
    assert code == 1
    assert "the standby 127.0.0.1:2 is not reachable" in err
    assert "nothing was changed" in err
    with session_factory(open_engine(f"sqlite:///{tmp_path / 'state.db'}"))() as session:
        assert session.scalars(select(AuditRow)).all() == []
