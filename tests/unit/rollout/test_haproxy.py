"""HAProxy control without HAProxy: config rendering, parsing of the runtime API's answers and of
the request log (captured from a real HAProxy 2.6), names and weights. The configs checked by the
real `haproxy -c`, and the log sampler reading HAProxy's ring, are in
tests/integration/rollout/test_haproxy.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import TargetError
from shipyard.rollout._model import LATENCY_BUCKETS_MS, Sample, bucket_index
from shipyard.rollout.targets.haproxy import (
    LOG_FORMAT,
    LOG_RING,
    LOG_RING_BYTES,
    MARK_FORMAT,
    NO_SERVER,
    LogCounts,
    ProxyPaths,
    TrafficSampler,
    check_config_text,
    parse_log_line,
    parse_server_name,
    parse_servers_state,
    render_haproxy_config,
    server_name,
    server_options,
    server_stats,
    server_weights,
    version_percentages,
)
from shipyard.spec import Health, Probe, Service, Stack
from support.haproxy import demo_stack

# --- captured from HAProxy 2.6.12 (a v1 server in MAINT after traffic, a v2 failing its check) ---

SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,"
    "type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
    "hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,"
    "comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,"
    "agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,"
    "agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,"
    "dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,"
    "ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,"
    "h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,"
    "h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n"
    "be_web,v1_1,0,0,0,1,,3,225,582,,0,,0,0,0,0,MAINT,256,1,0,0,2,1,2,,1,3,1,,3,,2,3,,3,,,,0,3,0,0,0,"
    "0,,,,3,0,0,,,,,1,,,0,0,3,4,,,,,,,,,,,,127.0.0.1:36545,,http,,,,,,,,0,3,0,,,0,0,0,0,5,6,0,0,0,0,1,"
    "256,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "be_web,v2_1,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,256,1,0,0,1,2,2,,1,3,2,,0,,2,0,,0,L7STS,503,1,0,0,0,"
    "0,0,0,,,,0,0,0,,,,,-1,Service Unavailable,,0,0,0,0,,,,Layer7 wrong status,,1,1,0,,,,"
    "127.0.0.1:48553,,http,,,,,,,,0,0,0,,,0,0,0,0,0,0,0,0,0,0,1,256,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n\n"
)

SHOW_SERVERS_STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
    "srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 be_web 1 v1_1 127.0.0.1 0 1 256 0 1 15 3 0 14 0 0 0 - 36545 - 0 0 - - 0\n"
    "3 be_web 2 v2_1 127.0.0.1 0 0 256 0 2 17 2 0 6 0 0 0 - 48553 - 0 0 - - 0\n"
    "3 be_web 3 v3_1 127.0.0.1 2 0 0 0 0 1 0 1 6 0 0 0 - 40001 - 0 0 - - 0\n"
    "3 be_web 4 v3_2 127.0.0.1 2 8 0 0 4 15 3 2 6 0 0 0 - 40002 - 0 0 - - 0\n\n"
)

LOG_LINES = [
    b"shipyard be_web v1_1 200 0 0 0 0 ----\n",
    b"shipyard be_web v1_1 200 5 5 0 0 ----\n",
    b"shipyard be_web v2_1 500 4 38 0 0 ----\n",
    b"Server be_web/v1_1 is going DOWN for maintenance. 0 active and 0 backup servers left. "
    b"0 sessions active, 0 requeued, 0 remaining in queue.\n",
    b"backend be_web has no server available!\n",
    b"shipyard be_web <NOSRV> 503 -1 0 0 0 SC--\n",
]


def _stack(**service: object) -> Stack:
    defaults: dict[str, object] = {"role": "web", "run": "./serve", "port": 8080}
    return Stack(name="shop", services={"web": Service.model_validate({**defaults, **service})})


# --- rendering -------------------------------------------------------------------------------------


def test_the_demo_config_says_what_the_switch_needs() -> None:
    stack = demo_stack(18080)
    text = render_haproxy_config(stack, Path("/tmp/sy/proxy"), ports={"web": 19999})
    assert "stats socket /tmp/sy/proxy/admin.sock mode 600 level admin expose-fd listeners" in text
    # The request log goes to a ring read back over the admin socket, marked through a frontend
    # of its own (TrafficSampler); the ring's size is the renderer's (a test's small ring).
    assert f"    log ring@{LOG_RING} len 1024 format raw local0 info\n" in text
    assert f"\nring {LOG_RING}\n    format raw\n    maxlen 1024\n    size {LOG_RING_BYTES}\n" in text
    assert "    bind /tmp/sy/proxy/log-marker.sock mode 600\n" in text
    assert f'    log-format "{MARK_FORMAT}"\n' in text
    small = render_haproxy_config(stack, Path("/tmp/sy/proxy"), log_ring_bytes=65536)
    assert "    size 65536\n" in small
    assert f'log-format "{LOG_FORMAT}"' in text
    assert "%b %s %ST %Tr %Ta" in LOG_FORMAT
    assert "bind 127.0.0.1:19999" in text  # the chosen port, not the spec's
    for line in (
        "retry-on conn-failure empty-response",
        "option redispatch 1",
        "option http-keep-alive",
        "http-reuse safe",
        "balance roundrobin",
        "option httpchk",
        "http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host localhost",
        "timeout check 1s",
        "default-server check inter 1000 downinter 1000 fastinter 1000 rise 1 fall 1"
        " pool-max-conn -1 pool-purge-delay 1s",
    ):
        assert f"    {line}\n" in text, line
    assert "\n    server " not in text  # servers come at run time only


def test_probe_timings_come_from_the_spec() -> None:
    probe = Probe(path="/ready", period=5, timeout=2, failure_threshold=4, success_threshold=2)
    stack = _stack(health=Health(readiness=probe, liveness=Probe(path="/live")))
    text = render_haproxy_config(stack, Path("/tmp/x"))
    assert "uri /ready " in text
    assert "timeout check 2s" in text
    assert server_options(probe).startswith("check inter 5000 downinter 1000 fastinter 1000 rise 2 fall 4")
    # no readiness probe: the liveness probe, else the default one
    assert "uri /live " in render_haproxy_config(
        _stack(health=Health(liveness=Probe(path="/live"))), Path("/x")
    )
    assert "uri /healthz " in render_haproxy_config(_stack(), Path("/x"))


def test_no_secret_reaches_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2-s3cr3t@db/app")
    stack = _stack(env={"DATABASE_URL": "${env:DATABASE_URL}", "APP_MODE": "quick-mode"})
    text = render_haproxy_config(stack, Path("/tmp/x"))
    for word in ("DATABASE_URL", "hunter2", "APP_MODE", "quick-mode"):
        assert word not in text


def test_a_missing_haproxy_is_named() -> None:
    with pytest.raises(TargetError, match="not installed"):
        check_config_text("global\n", "/nonexistent/haproxy")


def test_a_deep_state_directory_gets_short_private_socket_paths(tmp_path: Path) -> None:
    # A UNIX socket path is limited (HAProxy: 97 bytes); pytest's and users' state directories
    # can be deeper, so the sockets move to a short private directory named after the state dir.
    deep = tmp_path / ("d" * 120)
    paths = ProxyPaths(deep)
    assert paths.admin_socket.parent == paths.marker_socket.parent != deep
    assert len(str(paths.admin_socket)) <= 97
    assert paths.admin_socket.parent.stat().st_mode & 0o777 == 0o700
    assert ProxyPaths(deep).admin_socket == paths.admin_socket  # stable across restarts
    assert ProxyPaths(tmp_path / "short").sockets == tmp_path / "short"
    text = render_haproxy_config(_stack(), deep)
    assert str(paths.admin_socket) in text


def test_a_config_value_with_spaces_is_refused() -> None:
    with pytest.raises(TargetError, match="unsupported character"):
        render_haproxy_config(_stack(health=Health(readiness=Probe(path="/a b"))), Path("/x"))


# --- runtime API answers ---------------------------------------------------------------------------


def test_show_stat_is_parsed() -> None:
    v1, v2 = server_stats(SHOW_STAT)
    assert (v1.backend, v1.server, v1.status, v1.weight, v1.scur, v1.stot, v1.up) == (
        "be_web", "v1_1", "MAINT", 256, 0, 3, False,
    )  # fmt: skip
    assert v1.addr == "127.0.0.1:36545"
    assert (v2.status, v2.check_status, v2.check_code, v2.check_desc) == (
        "DOWN", "L7STS", "503", "Layer7 wrong status",
    )  # fmt: skip


def test_show_stat_garbage_is_an_error() -> None:
    with pytest.raises(TargetError, match="unexpected"):
        server_stats("Unknown command\n")


def test_show_servers_state_is_parsed() -> None:
    v1, v2, v3a, v3b = parse_servers_state(SHOW_SERVERS_STATE)
    assert (v1.server, v1.port, v1.maintenance, v1.healthy, v1.weight) == ("v1_1", 36545, True, False, 256)
    assert (v2.maintenance, v2.check_result, v2.healthy) == (False, 2, False)  # its check failed
    assert (v3a.op_state, v3a.check_result, v3a.healthy) == (2, 0, False)  # not checked yet
    assert (v3b.draining, v3b.healthy) == (True, True)
    with pytest.raises(TargetError):
        parse_servers_state("No such backend.\n")


# --- the request log -------------------------------------------------------------------------------


def test_log_lines_are_parsed_and_other_messages_ignored() -> None:
    records = [parse_log_line(line) for line in LOG_LINES]
    assert records[3] is None
    assert records[4] is None
    first = records[0]
    assert first is not None
    assert (first.backend, first.server, first.status, first.active_ms) == ("be_web", "v1_1", 200, 0)
    nosrv = records[5]
    assert nosrv is not None
    assert (nosrv.server, nosrv.status, nosrv.response_ms, nosrv.termination) == (NO_SERVER, 503, -1, "SC--")
    syslog = parse_log_line("<134>Nov 22 03:50:01 haproxy[42]: shipyard be_api v2_3 204 1 2 0 0 ----")
    assert syslog is not None
    assert syslog.server == "v2_3"
    assert parse_log_line(b"shipyard be_web v1_1 abc 0 0 0 0 ----") is None


def test_the_sampler_counts_per_version_with_a_latency_histogram() -> None:
    sampler = TrafficSampler(ProxyPaths(Path("/nonexistent")))
    for line in LOG_LINES:
        sampler.feed(line)
    assert sampler.unparsed == 2
    counts = sampler.counts()
    v1 = counts.sample_version("be_web", "v1")
    assert (v1.requests, v1.errors) == (2, 0)
    assert v1.latency_buckets[bucket_index(0)] == 1
    assert v1.latency_buckets[bucket_index(5)] == 1
    v2 = counts.sample_version("be_web", "v2")
    assert (v2.requests, v2.errors, v2.quantile_ms(0.99)) == (1, 1, 50)
    assert len(v2.latency_buckets) == len(LATENCY_BUCKETS_MS)
    assert counts.sample("be_web").requests == 4  # the <NOSRV> one belongs to no version
    assert counts.sample("be_web", ["v2_1"]).requests == 1
    assert counts.sample_version("be_other", "v1").requests == 0
    assert counts.servers() == [("be_web", NO_SERVER), ("be_web", "v1_1"), ("be_web", "v2_1")]
    # cumulative: a later sample minus an earlier one is the traffic in between; and a copy
    sampler.feed(b"shipyard be_web v1_2 503 1 1200 0 0 ----")
    window = sampler.counts().sample_version("be_web", "v1") - v1
    assert (window.requests, window.errors, window.quantile_ms(0.5)) == (1, 1, 1500)
    assert counts.sample_version("be_web", "v1") == v1
    # A sampler that does not run (no HAProxy to read from) flushes to the counts it has.
    assert sampler.flush().sample("be_web").requests == 5


def test_the_sampler_reads_markers_and_drop_notices_without_counting_them() -> None:
    sampler = TrafficSampler(ProxyPaths(Path("/nonexistent")))
    sampler.feed(
        b"shipyard-mark /0123abcd/7",  # another sampler's marker
        b"1234 events dropped",  # HAProxy's notice after its ring was full
        b"shipyard be_web v1_1 200 0 0 0 0 ----",
        b"",
    )
    assert (sampler.dropped, sampler.unparsed) == (1234, 0)
    assert sampler.counts().sample("be_web").requests == 1


class _RecordingSampler(TrafficSampler):
    """Records the counts at each of its own markers, as a flush would see them."""

    def __init__(self, discard_until: int) -> None:
        super().__init__(ProxyPaths(Path("/nonexistent")))
        self._discard_until = discard_until
        self.marks: list[tuple[int, dict[tuple[str, str], Sample]]] = []

    def _read_mark(self, token: int) -> None:
        super()._read_mark(token)
        self.marks.append((token, _totals(self.counts())))


def _totals(counts: LogCounts) -> dict[tuple[str, str], Sample]:
    return {(backend, server): counts.sample(backend, [server]) for backend, server in counts.servers()}


_LOG_LINE = st.one_of(
    st.builds(
        "shipyard {} {} {} {} {} 0 {} ----".format,
        st.sampled_from(["be_web", "be_api"]),
        st.sampled_from(["v1_1", "v2_1", NO_SERVER]),
        st.sampled_from(["200", "503", "abc"]),
        st.sampled_from(["0", "-1"]),
        st.sampled_from(["0", "3", "+12", "1200"]),
        st.sampled_from(["0", "+1"]),
    ),
    st.builds("shipyard-mark /{}/{}".format, st.sampled_from(["0123abcd", "feedbeef"]), st.integers(0, 9)),
    st.builds("{} events dropped".format, st.integers(1, 999)),
    st.sampled_from(
        ["", "  ", "garbage", "shipyard too few", "<134>x haproxy: shipyard be_web v1_1 200 0 5 0 0 ----"]
    ),
)


@given(st.lists(_LOG_LINE, max_size=60), st.integers(0, 9))
def test_counting_a_block_at_once_agrees_with_parsing_each_line(lines: list[str], discard_until: int) -> None:
    # The reader classifies each distinct line once and counts it as often as it occurs; the
    # reference below is the plain per-line reading, with markers read in order.
    sampler = _RecordingSampler(discard_until)
    sampler._nonce = "feedbeef"
    sampler.feed(*lines)
    expected = LogCounts()
    marks: list[tuple[int, dict[tuple[str, str], Sample]]] = []
    dropped, unparsed, discarding = 0, 0, discard_until
    for line in lines:
        record = parse_log_line(line)
        mark = re.fullmatch(r"shipyard-mark /(\w+)/(\d+)", line.strip())
        if record is not None:
            if not discarding:
                expected.add([(record, 1)])
        elif mark:
            if mark[1] == "feedbeef" and int(mark[2]) != 0:
                if int(mark[2]) >= discarding:
                    discarding = 0
                marks.append((int(mark[2]), _totals(expected)))
        elif dropped_notice := re.fullmatch(r"(\d+) events dropped", line.strip()):
            dropped += int(dropped_notice[1])
        elif line.strip():
            unparsed += 1
    assert sampler.marks == marks
    assert (sampler.dropped, sampler.unparsed) == (dropped, unparsed)
    assert _totals(sampler.counts()) == _totals(expected)


# --- names and weights -----------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=30), st.integers(min_value=1, max_value=999))
def test_server_names_carry_their_version(version: str, index: int) -> None:
    name = server_name(version, index)
    assert parse_server_name(name) == (version, index)
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def test_server_names() -> None:
    assert server_name("v1.2.3", 2) == "v1.2.3_2"
    assert server_name("feature/x_y", 1) == "feature_2fx_5fy_1"
    assert parse_server_name("v1_1") == ("v1", 1)
    assert parse_server_name("web1") is None
    assert parse_server_name("_1") is None
    with pytest.raises(TargetError):
        server_name("", 1)


def test_weights_give_each_version_its_share() -> None:
    servers = {"v1": ["v1_1", "v1_2"], "v2": ["v2_1"]}
    weights = server_weights({"v1": 90, "v2": 10}, servers)
    assert weights == {"v1_1": 256, "v1_2": 256, "v2_1": 57}
    assert version_percentages(weights, servers) == {"v1": 90, "v2": 10}
    assert server_weights({"v1": 0, "v2": 100}, servers) == {"v1_1": 0, "v1_2": 0, "v2_1": 256}
    assert server_weights({"v2": 100}, servers) == {"v1_1": 0, "v1_2": 0, "v2_1": 256}  # unnamed: 0
    assert server_weights({"v1": 100}, {"v1": ["a"], "v2": []}) == {"a": 256}


@given(
    st.integers(min_value=0, max_value=100),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=8),
)
def test_weights_are_valid_and_close_to_the_shares(candidate: int, stable_n: int, candidate_n: int) -> None:
    servers = {"v1": [f"v1_{i}" for i in range(stable_n)], "v2": [f"v2_{i}" for i in range(candidate_n)]}
    weights = server_weights({"v1": 100 - candidate, "v2": candidate}, servers)
    assert all(0 <= w <= 256 for w in weights.values())
    assert all((weights[f"v2_{i}"] > 0) == (candidate > 0) for i in range(candidate_n))
    share = version_percentages(weights, servers)
    assert sum(share.values()) == 100
    if 5 <= candidate <= 95:
        assert abs(share["v2"] - candidate) <= 1


def test_weights_that_cannot_be_routed_are_refused() -> None:
    with pytest.raises(TargetError, match="no instances"):
        server_weights({"v1": 50, "v3": 50}, {"v1": ["v1_1"]})
    with pytest.raises(TargetError, match="sum to 100"):
        server_weights({"v1": 50}, {"v1": ["v1_1"]})
    with pytest.raises(TargetError, match="negative"):
        server_weights({"v1": 110, "v2": -10}, {"v1": ["v1_1"], "v2": ["v2_1"]})
    assert version_percentages({"a": 0}, {"v1": ["a"]}) == {"v1": 0}
