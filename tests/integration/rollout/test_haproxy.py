"""HAProxy for real: rendered configs checked by `haproxy -c`, and the request-log sampler reading
datagrams from its socket. (What needs neither is in tests/unit/rollout/test_haproxy.py.)"""

from __future__ import annotations

import socket
import tempfile
import time
from pathlib import Path

import pytest

from shipyard.errors import TargetError
from shipyard.rollout.targets.haproxy import (
    NO_SERVER,
    TrafficSampler,
    check_config_text,
    render_haproxy_config,
)
from shipyard.spec import load_spec
from support.haproxy import HAPROXY, demo_stack
from unit.rollout.test_haproxy import LOG_LINES

ROOT = Path(__file__).resolve().parents[3]
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="HAProxy is not installed (Debian's haproxy)")

# --- rendering -------------------------------------------------------------------------------------


@needs_haproxy
@pytest.mark.parametrize("example", ["apricode", "normaldance", "salespot"])
def test_every_example_renders_a_config_haproxy_accepts(example: str) -> None:
    spec = load_spec(ROOT / "examples" / example / "shipyard.yaml")
    for stack in spec.stacks():
        text = render_haproxy_config(stack, Path("/run/shipyard/proxy"))
        check_config_text(text, HAPROXY or "haproxy")
        for name, service in stack.services.items():
            assert (f"backend be_{name}\n" in text) == (service.role != "worker")


@needs_haproxy
def test_the_demo_config_is_valid() -> None:
    text = render_haproxy_config(demo_stack(18080), Path("/tmp/sy/proxy"), ports={"web": 19999})
    check_config_text(text, HAPROXY or "haproxy")


@needs_haproxy
def test_a_config_haproxy_refuses_raises_its_message() -> None:
    text = render_haproxy_config(demo_stack(8080), Path("/tmp/x")).replace(
        "balance roundrobin", "balance sideways"
    )
    with pytest.raises(TargetError, match="HAProxy refuses the configuration") as caught:
        check_config_text(text, HAPROXY or "haproxy")
    assert "balance only supports" in caught.value.message
    assert "[NOTICE]" not in caught.value.message


# --- the request log -------------------------------------------------------------------------------


def test_the_sampler_reads_datagrams_from_its_socket() -> None:
    directory = Path(tempfile.mkdtemp(prefix="sy-log-"))
    path = directory / "log.sock"
    path.write_text("stale")  # a previous controller's socket file is replaced
    sampler = TrafficSampler(path)
    sampler.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            for line in LOG_LINES:
                sender.sendto(line, str(path))
        deadline = time.monotonic() + 30
        while sampler.sample("be_web").requests < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sampler.sample_version("be_web", "v1").requests == 2
        assert sampler.servers() == [("be_web", NO_SERVER), ("be_web", "v1_1"), ("be_web", "v2_1")]
    finally:
        sampler.stop()
    assert not path.exists()
    directory.rmdir()


# --- names and weights -----------------------------------------------------------------------------


def test_a_stopping_sampler_leaves_a_newer_readers_socket_alone() -> None:
    directory = Path(tempfile.mkdtemp(prefix="sy-log-"))
    path = directory / "log.sock"
    old, new = TrafficSampler(path), TrafficSampler(path)
    old.start()
    new.start()  # a new controller takes the log over
    old.stop()
    try:
        assert path.exists()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(LOG_LINES[0], str(path))
        deadline = time.monotonic() + 30
        while new.sample("be_web").requests < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert new.sample("be_web").requests == 1
    finally:
        new.stop()
    directory.rmdir()
