"""Notification URLs are refused when the spec is loaded or validated, not when a message is sent:
another scheme than http(s), a link-local address or a cloud metadata service, in any spelling a
resolver accepts. The error names the file and the field, never the URL's secret parts."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import SpecError
from shipyard.monitor import DeliveryFailed, Event, deliver
from shipyard.spec import Channel, load_spec_text, url_problem
from support.cli import run_cli

REFUSED = [
    "file:///etc/passwd",
    "gopher://hooks.example.com/x",
    "ftp://hooks.example.com/x",
    "hooks.example.com/no-scheme",
    "http:///no-host",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "https://[fe80::1]/hook",
    "http://[fe80::1%25eth0]/hook",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/latest",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://2852039166/",  # 169.254.169.254 as one number
    "http://0xa9fea9fe/",
    "http://0251.0376.0251.0376/",  # octal
    "http://169.254.43518/",  # a.b.c shorthand
]
ALLOWED = [
    "https://hooks.slack.com/services/T0/B0/XXXX",
    "http://127.0.0.1:9000/hook",
    "https://[2001:db8::1]/hook",
    "https://10.0.0.5/alerts",
    "https://api.telegram.org",
    "https://169.254.example.com/hook",  # a name, not the address
]


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url: str) -> None:
    problem = url_problem(url)
    assert problem is not None, url
    assert "/latest" not in problem
    assert "computeMetadata" not in problem  # the path (a webhook's secret) is never quoted


@pytest.mark.parametrize("url", ALLOWED)
def test_allowed(url: str) -> None:
    assert url_problem(url) is None


@given(st.integers(0, 2**16 - 1), st.sampled_from(["dotted", "number", "hex", "mapped"]))
def test_every_link_local_ipv4_address_is_refused_however_written(low: int, form: str) -> None:
    address = ipaddress.IPv4Address((169 << 24) | (254 << 16) | low)
    host = {
        "dotted": str(address),
        "number": str(int(address)),
        "hex": hex(int(address)),
        "mapped": f"[::ffff:{address}]",
    }[form]
    assert url_problem(f"http://{host}/hook") is not None, host


@given(st.integers(0, 2**118 - 1))
def test_every_ipv6_link_local_address_is_refused(low: int) -> None:
    address = ipaddress.IPv6Address((0xFE80 << 112) | low)
    assert url_problem(f"https://[{address}]/hook") is not None


TELEGRAM = """\
name: shop
services:
  web: {{role: web, image: "example/web:1", port: 8080}}
notifications:
  ops:
    kind: telegram
    token: ${{env:TG_TOKEN}}
    chat_id: "1"
    api_url: {api_url}
images: {{environments: []}}  # notification URLs, not which images production may run
"""


@pytest.mark.parametrize("api_url", ["http://169.254.169.254/latest", "https://metadata.google.internal"])
def test_a_literal_url_is_refused_when_the_spec_loads_naming_file_and_field(api_url: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(TELEGRAM.format(api_url=api_url), "shop.yaml")
    (issue,) = caught.value.issues
    assert issue.file == "shop.yaml"
    assert issue.path == "notifications.ops.api_url"
    assert issue.line == 9
    assert "metadata" in issue.message
    assert "/latest" not in str(caught.value)


def test_a_good_literal_url_loads() -> None:
    spec = load_spec_text(TELEGRAM.format(api_url="https://bots.example.com"), "shop.yaml")
    assert spec.stack("production").notifications["ops"].api_url == "https://bots.example.com"


WEBHOOK = """\
name: shop
services:
  web: {role: web, image: "example/web:1", port: 8080}
notifications:
  ops: {kind: webhook, url: "${env:SHOP_HOOK_URL}"}
  chat: {kind: slack, url: {secretRef: alerts/slack}}
images: {environments: []}  # notification URLs, not which images production may run
"""


def test_validate_resolves_references_and_names_the_field_and_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(WEBHOOK)
    monkeypatch.setenv("SHOP_HOOK_URL", "https://hooks.example.com/T0/secret-path")
    monkeypatch.setenv("ALERTS_SLACK", "https://hooks.slack.com/services/T0/B0/XXXX")
    assert run_cli(capsys, "validate", "-f", str(spec)).code == 0

    monkeypatch.setenv("SHOP_HOOK_URL", "http://169.254.169.254/latest/meta-data/iam")
    monkeypatch.setenv("ALERTS_SLACK", "gopher://hooks.example.com/secret-path")
    result = run_cli(capsys, "validate", "-f", str(spec), "-o", "json")
    assert result.code == 2
    issues = {issue["path"]: issue for issue in result.json()["issues"]}
    assert set(issues) == {"notifications.ops.url", "notifications.chat.url"}
    assert all(issue["file"] == str(spec) for issue in issues.values())
    assert "$SHOP_HOOK_URL" in issues["notifications.ops.url"]["message"]
    assert "$ALERTS_SLACK" in issues["notifications.chat.url"]["message"]
    assert "secret-path" not in result.out
    assert "meta-data" not in result.out


def test_validate_leaves_references_that_are_not_set_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server that delivers may have them; delivery checks them there.
    spec = tmp_path / "shipyard.yaml"
    spec.write_text(WEBHOOK)
    monkeypatch.delenv("SHOP_HOOK_URL", raising=False)
    monkeypatch.delenv("ALERTS_SLACK", raising=False)
    assert run_cli(capsys, "validate", "-f", str(spec)).code == 0


def test_delivery_refuses_a_reference_changed_since_validation_without_sending() -> None:
    channel = Channel(kind="webhook", url="${env:SHOP_HOOK_URL}")
    event = Event(kind="deploy.failed", summary="web failed", severity="page")
    with pytest.raises(DeliveryFailed) as caught:
        deliver(channel, event, environ={"SHOP_HOOK_URL": "http://[fd00:ec2::254]/latest"})
    assert caught.value.retryable is False
    assert "url" in caught.value.message
