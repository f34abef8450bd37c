"""The notifier without a channel to reach: queuing never raises. Delivery to a real HTTP server
is tested in tests/integration/monitor/test_notify.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.monitor import Event, Notifier
from shipyard.spec import Channel
from shipyard.state import open_engine, session_factory


def test_send_never_raises_when_the_state_store_is_gone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'gone.db'}", migrate=False)  # no tables
    notifier = Notifier({"hook": Channel(kind="webhook", url="${env:HOOK_URL}")}, session_factory(engine))
    assert notifier.send(Event("test.lost", "x")) == []
    assert "could not queue test.lost for hook" in caplog.text
