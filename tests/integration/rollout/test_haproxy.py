"""HAProxy for real: rendered configs checked by `haproxy -c`, dynamic servers against servers written
in the config, connection reuse under load, and the request-log sampler reading HAProxy's log
ring. (What needs neither is in tests/unit/rollout/test_haproxy.py.)"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shipyard.errors import TargetError
from shipyard.rollout.targets.haproxy import (
    LOG_RING,
    HAProxyClient,
    ProxyPaths,
    TrafficSampler,
    backend_name,
    check_config_text,
    parse_show_stat,
    readiness_probe,
    render_haproxy_config,
    server_options,
    start_haproxy,
    stop_haproxy,
)
from shipyard.spec import Stack, load_spec
from support.demo_app import running_demo_app
from support.haproxy import HAPROXY, demo_stack, get_versions, wait_until
from support.servers import free_port

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


# --- servers: written in the config, or added at run time ----------------------------------------

BACKEND = backend_name("web")


@contextlib.contextmanager
def _haproxy(
    stack: Stack, config_servers: dict[str, int] | None = None
) -> Iterator[tuple[HAProxyClient, int]]:
    """HAProxy on `stack`'s rendered config, plus `config_servers` (name → port) written in its web
    backend as an operator would: under the rendered `default-server` line. Its client and port."""
    if HAPROXY is None:
        raise RuntimeError("HAProxy is not installed; run `make install` (it installs Debian's haproxy)")
    directory = Path(tempfile.mkdtemp(prefix="sy-haproxy-"))
    paths = ProxyPaths(directory)
    port = free_port()
    text = render_haproxy_config(stack, directory, ports={"web": port})
    default_server = next(line for line in text.splitlines() if "default-server" in line)
    written = "".join(f"\n    server {name} 127.0.0.1:{p}" for name, p in (config_servers or {}).items())
    paths.config.write_text(text.replace(default_server, default_server + written))
    try:
        start_haproxy(paths, HAPROXY)
        yield HAProxyClient(paths.admin_socket), port
    finally:
        stop_haproxy(paths)
        shutil.rmtree(directory, ignore_errors=True)


def _add_dynamic_server(client: HAProxyClient, stack: Stack, name: str, port: int) -> None:
    """As the local target adds an instance: `add server` with server_options, then weighted."""
    client.add_server(BACKEND, name, "127.0.0.1", port, server_options(readiness_probe(stack, "web")))
    client.set_weight(BACKEND, name, 1)


def _healthy(client: HAProxyClient, *names: str) -> bool:
    states = {s.server: s for s in client.servers_state(BACKEND)}
    return all(name in states and states[name].healthy for name in names)


def _table(text: str, key: str) -> dict[str, dict[str, str]]:
    """A runtime API table headed by `# column column ...`: its rows keyed by their `key` column."""
    lines = [line for line in text.splitlines() if line.strip() and line != "1"]  # "1": a format version
    header = lines[0].lstrip("# ").split()
    rows = [dict(zip(header, line.split(), strict=False)) for line in lines[1:]]
    return {row[key]: row for row in rows}


def _stat_rows(client: HAProxyClient) -> dict[str, dict[str, str]]:
    """`show stat` of the web backend's servers, by server name."""
    rows = parse_show_stat(client.command(f"show stat {BACKEND} 4 -1"))
    return {row["svname"]: row for row in rows if row["type"] == "2"}


def _settings(row: dict[str, str], columns: tuple[str, ...]) -> dict[str, str]:
    return {column: row[column] for column in columns}


# What `show stat` shows of a server's settings (the rest are counters, names and addresses).
STAT_SETTINGS = (
    "status", "weight", "slim", "qlimit", "throttle", "tracked", "check_status", "check_code",
    "check_rise", "check_fall", "check_health", "agent_status", "mode",
)  # fmt: skip
# Not srv_iweight, the initial weight: a server is added at weight 0, to take traffic only once steered.
STATE_SETTINGS = (
    "srv_op_state", "srv_admin_state", "srv_uweight", "srv_check_result", "srv_check_state",
    "srv_agent_state", "srv_use_ssl", "srv_check_port", "srv_agent_port",
)  # fmt: skip
CONN_SETTINGS = ("purge_delay", "idle_lim")  # pool-purge-delay (ms) and pool-max-conn


@needs_haproxy
def test_a_server_added_at_run_time_has_the_options_of_one_written_in_the_config() -> None:
    stack = demo_stack(free_port())
    with (
        running_demo_app("v1") as written_app,
        running_demo_app("v1") as added_app,
        _haproxy(stack, {"written": written_app.port}) as (client, _),
    ):
        _add_dynamic_server(client, stack, "added", added_app.port)
        assert wait_until(lambda: _healthy(client, "written", "added"), 30), client.servers_state(BACKEND)
        stat = _stat_rows(client)
        state = _table(client.command(f"show servers state {BACKEND}"), "srv_name")
        pools = _table(client.command(f"show servers conn {BACKEND}"), "bkname/svname")
    written_pool, added_pool = pools[f"{BACKEND}/written"], pools[f"{BACKEND}/added"]
    assert written_pool["idle_lim"] == "-1"  # unbounded: a config server's default
    assert _settings(added_pool, CONN_SETTINGS) == _settings(written_pool, CONN_SETTINGS)
    assert _settings(stat["added"], STAT_SETTINGS) == _settings(stat["written"], STAT_SETTINGS)
    assert _settings(state["added"], STATE_SETTINGS) == _settings(state["written"], STATE_SETTINGS)


@needs_haproxy
def test_haproxy_reuses_its_connections_to_a_server_added_at_run_time() -> None:
    clients, requests_each = 8, 100
    stack = demo_stack(free_port())
    with running_demo_app("v1") as app, _haproxy(stack) as (client, port):
        _add_dynamic_server(client, stack, "added", app.port)
        assert wait_until(lambda: _healthy(client, "added"), 30), client.servers_state(BACKEND)
        with ThreadPoolExecutor(clients) as pool:  # keep-alive clients, all at once
            batches = list(pool.map(lambda _: get_versions(port, requests_each), range(clients)))
        row = _stat_rows(client)["added"]
    assert [answer for batch in batches for answer in batch] == [(200, "v1")] * clients * requests_each
    requests = clients * requests_each
    # A server connection per request (no pool) makes `connect` = requests and `reuse` = 0; with the
    # pool, a connection serves many requests.
    assert int(row["reuse"]) >= requests // 2, row
    assert int(row["connect"]) <= requests // 2, row


# --- the request log -------------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(stack: Stack) -> Iterator[tuple[HAProxyClient, ProxyPaths, int]]:
    """HAProxy with the demo app as server v1_1 of the web backend, healthy: its client, paths, port."""
    with running_demo_app("v1") as app, _haproxy(stack) as (client, port):
        _add_dynamic_server(client, stack, "v1_1", app.port)
        assert wait_until(lambda: _healthy(client, "v1_1"), 30), client.servers_state(BACKEND)
        yield client, ProxyPaths(client.socket_path.parent), port


def _answered(client: HAProxyClient) -> int:
    row = _stat_rows(client)["v1_1"]
    return int(row["stot"]) - int(row["scur"])


@contextlib.contextmanager
def _sampling(paths: ProxyPaths) -> Iterator[TrafficSampler]:
    sampler = TrafficSampler(paths)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


@needs_haproxy
def test_a_sampler_that_pauses_reads_every_line_from_the_ring() -> None:
    # A datagram socket queued at most 512 lines (max_dgram_qlen) and HAProxy dropped the rest; the
    # ring keeps every line its reader has not read (16 MiB of them), so a pause loses none.
    requests = 3000
    with _serving(demo_stack(free_port())) as (client, paths, port), _sampling(paths) as sampler:
        with sampler.paused():
            answers = get_versions(port, requests)
        answered = _answered(client)
        logged = sampler.flush().sample_version(BACKEND, "v1")
    assert answers == [(200, "v1")] * requests
    assert logged.requests == answered == requests
    assert sampler.dropped == 0


@needs_haproxy
def test_every_sampler_reads_every_line_and_follows_haproxy_when_it_restarts() -> None:
    stack = demo_stack(free_port())
    with running_demo_app("v1") as app, _haproxy(stack) as (client, port):
        paths = ProxyPaths(client.socket_path.parent)
        with _sampling(paths) as first, _sampling(paths) as second:  # two controllers' readers
            for served in (50, 70):
                _add_dynamic_server(client, stack, "v1_1", app.port)
                assert wait_until(lambda: _healthy(client, "v1_1"), 30), client.servers_state(BACKEND)
                assert get_versions(port, served) == [(200, "v1")] * served
                assert _answered(client) == served
                if served == 50:  # a new HAProxy process, with a new ring and no servers
                    for sampler in (first, second):
                        # Lines a stopped HAProxy had not yet sent die with it (the analysis
                        # counts them as loss); this test is about following the new one.
                        assert sampler.flush().sample_version(BACKEND, "v1").requests == 50
                    stop_haproxy(paths)
                    start_haproxy(paths, HAPROXY or "haproxy")
                    for sampler in (first, second):
                        sampler.flush()  # as the local target does: the reader follows it at once
            counts = [sampler.flush().sample_version(BACKEND, "v1").requests for sampler in (first, second)]
    assert counts == [120, 120]


@needs_haproxy
def test_a_flush_that_gives_up_counts_no_line_that_comes_late() -> None:
    # A flush that cannot see its marker returns the counts it has; lines read after that may be
    # late ones, of requests answered before it, which would fill the next window's gaps: none
    # counts until a later marker is read, so what the log missed shows as loss, never less.
    with _serving(demo_stack(free_port())) as (client, paths, port), _sampling(paths) as sampler:
        get_versions(port, 50)
        assert sampler.flush().sample_version(BACKEND, "v1").requests == 50
        hidden = paths.marker_socket.with_name("hidden.sock")
        paths.marker_socket.rename(hidden)  # no marker can be logged
        get_versions(port, 50)
        given_up = sampler.flush(timeout_s=0.5).sample_version(BACKEND, "v1").requests
        get_versions(port, 50)
        hidden.rename(paths.marker_socket)
        synced = sampler.flush().sample_version(BACKEND, "v1").requests
        assert _answered(client) == 150
    assert 50 <= given_up <= 100
    assert synced == given_up


@needs_haproxy
def test_an_haproxy_without_the_request_log_ring_is_named_as_the_cause() -> None:
    # An HAProxy started by an older shipyard logs to another ring: the sampler can read no line,
    # and says so (how to fix it, where its pid is) instead of reporting every request as lost.
    directory = Path(tempfile.mkdtemp(prefix="sy-haproxy-"))
    paths = ProxyPaths(directory)
    text = render_haproxy_config(demo_stack(free_port()), directory, ports={"web": free_port()})
    paths.config.write_text(text.replace(LOG_RING, "older_log"))
    start_haproxy(paths, HAPROXY)
    sampler = TrafficSampler(paths)
    try:
        with pytest.raises(TargetError, match=r"has no request-log ring 'request_log'.*its pid is in"):
            sampler.start()
    finally:
        sampler.stop()
        stop_haproxy(paths)
        shutil.rmtree(directory, ignore_errors=True)
