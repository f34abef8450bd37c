"""`shipyard flags … --url` against a real server speaks the API's camelCase (issue 14, part 6).

The CLI and `RemoteBackend` send camelCase bodies (`defaultValue`) and read camelCase back, while
what the CLI prints stays the snake_case of the flag files. A stale `--if-match` is the server's
412, raised as a PreconditionFailedError (a ConflictError still, exit code 2).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shipyard.cli import main
from shipyard.errors import ConflictError, PreconditionFailedError
from shipyard.flags import RemoteBackend
from support.flag_server import FlagServer


def run(server: FlagServer, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--url", server.url, "--token", server.admin_token])
    out, err = capsys.readouterr()
    return int(caught.value.code or 0), out, err


def test_the_cli_writes_camel_case_and_prints_snake_case(
    flag_server: FlagServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPYARD_ACTOR", "alice")
    code, _, err = run(flag_server, ["flags", "create", "beta", "--default", "true", "-o", "json"], capsys)
    assert (code, err) == (0, "")
    stored = flag_server.request("GET", "/feature-flags/beta").json()["flag"]
    assert stored["defaultValue"] is True

    code, out, err = run(flag_server, ["flags", "get", "beta", "-o", "json"], capsys)
    assert (code, err) == (0, "")
    assert "default_value" in out
    assert "defaultValue" not in out

    code, _, err = run(
        flag_server, ["flags", "set", "beta", "-e", "production", "--on", "--if-match", "7"], capsys
    )
    assert code == 2
    assert "version 1, not 7" in err


def test_the_remote_backend_sends_camel_case(flag_server: FlagServer) -> None:
    sent: list[dict[str, Any]] = []

    def record(request: httpx.Request) -> None:
        if request.content:
            sent.append(json.loads(request.content))

    backend = RemoteBackend(flag_server.url, flag_server.admin_token)
    backend.http.event_hooks["request"].append(record)
    created = backend.create({"key": "sticky", "default_value": 1, "type": "number", "lifetime_days": 5})
    assert sent[-1] == {"key": "sticky", "defaultValue": 1, "type": "number", "lifetimeDays": 5}
    # The ops verbs get snake_case back, as from the local store.
    assert created.data == {"key": "sticky", "default_value": 1, "type": "number", "lifetime_days": 5}

    rollout = {"percent": 20, "group_id": "g"}
    patch = {"environments": {"production": {"enabled": True, "rules": [{"rollout": rollout, "value": 2}]}}}
    patched = backend.patch("sticky", patch, if_match=1)
    assert sent[-1]["environments"]["production"]["rules"][0]["rollout"] == {"percent": 20, "groupId": "g"}
    assert patched.data["environments"]["production"]["rules"][0]["rollout"] == rollout
    assert patched.version == 2

    with pytest.raises(PreconditionFailedError, match="version 2, not 1") as stale:
        backend.patch("sticky", {"default_value": 3}, if_match=1)
    assert isinstance(stale.value, ConflictError)  # callers catching a stale write still catch it
    with pytest.raises(ConflictError, match="exists") as clash:
        backend.create({"key": "sticky", "default_value": 1, "type": "number"})
    assert not isinstance(clash.value, PreconditionFailedError)

    audit = backend.audit("sticky")
    assert audit[0]["after"]["environments"]["production"]["rules"][0]["rollout"] == rollout
    assert audit[-1]["after"]["default_value"] == 1
