"""The local target: each version runs as real processes on loopback ports, behind HAProxy.

    target = LocalTarget(stack, Path("/var/lib/shipyard/local"))
    target.prepare("web", "v2", 2)            # two supervised processes, added to HAProxy at weight 0
    target.health("web", "v2")                # HAProxy's health checks, and the processes' liveness
    target.set_weights("web", {"v1": 90, "v2": 10})
    target.sample("web", "v2")                # from HAProxy's request log
    target.retire("web", "v1")                # drain, wait for in-flight requests, remove, stop

Everything lives under `state_dir`:

    proxy/          haproxy.cfg, admin.sock (runtime API, and the request log's ring read back),
                    log-marker.sock (marks read positions in the log), haproxy.pid
    processes/      the process supervisor's state (one record per instance)
    weights.json    the traffic split last asked for, per service

HAProxy and the instances are detached: they outlive the controller, and a new LocalTarget over
the same `state_dir` finds them again (servers from `show servers state`, instances from the
supervisor; a server's name says its version). If HAProxy itself is gone, the next call starts it
again and re-adds every running instance with the saved split (dynamic servers die with HAProxy).

Naming: instance `n` (1-based) of `version` is HAProxy server `<version>_<n>` in backend
`be_<service>`, and supervisor instance `<service>.<version>_<n>`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import TargetError
from ...host import free_port, write_atomic
from ...spec import ENV_REFERENCE, Probe, SecretRef, Service, Stack
from .._model import Health, MigrationResult, Sample, TargetStatus
from ._processes import Instance, InstanceSpec, Supervisor, run_command
from .haproxy import (
    LOG_RING_BYTES,
    HAProxyClient,
    HAProxyUnreachable,
    ProxyPaths,
    ServerStat,
    ServerState,
    TrafficSampler,
    backend_name,
    check_config,
    parse_server_name,
    read_pid,
    readiness_probe,
    render_haproxy_config,
    routed_services,
    server_name,
    server_options,
    server_weights,
    start_haproxy,
    stop_haproxy,
    version_percentages,
)

LOOPBACK = "127.0.0.1"
_POLL_S = 0.05


class LocalTarget:
    """The `Target` of plain hosts: processes from the supervisor, traffic through HAProxy."""

    name = "local"

    def __init__(
        self,
        stack: Stack,
        state_dir: Path,
        haproxy_bin: str = "haproxy",
        *,
        workdir: Path | None = None,
        ports: Mapping[str, int] | None = None,
        bind_address: str = LOOPBACK,
        environ: Mapping[str, str] | None = None,
        migration_timeout_s: float = 600.0,
        delete_timeout_s: float = 10.0,
        log_ring_bytes: int = LOG_RING_BYTES,
    ) -> None:
        """
        `workdir`: where services' `run` and migration commands run (default: the current directory).
        `ports`: a frontend port per service instead of the spec's `port`.
        `environ`: where `${env:NAME}` references are resolved (default: this process's environment).
        `log_ring_bytes`: how far, in bytes of log lines, the log reader may fall behind before
        HAProxy drops lines (the ring is allocated when HAProxy starts).
        """
        self.stack = stack
        self.state_dir = Path(state_dir)
        self.haproxy_bin = haproxy_bin
        self.workdir = (workdir or Path.cwd()).resolve()
        self.ports = dict(ports or {})
        self.bind_address = bind_address
        self.environ = environ if environ is not None else os.environ
        self.migration_timeout_s = migration_timeout_s
        self.delete_timeout_s = delete_timeout_s
        self.log_ring_bytes = log_ring_bytes
        self.paths = ProxyPaths(self.state_dir / "proxy")
        self.paths.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.paths.directory, 0o700)
        self.supervisor = Supervisor(self.state_dir / "processes")
        self.client = HAProxyClient(self.paths.admin_socket)
        self.sampler = TrafficSampler(self.paths)
        self._weights_file = self.state_dir / "weights.json"
        self._lock = threading.RLock()
        # (backend, server) -> (requests, 5xx): cumulative, last raw counters, offset (see _observe)
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        self._base: dict[tuple[str, str], tuple[int, int]] = {}

    # --- the proxy -------------------------------------------------------------------------------

    def render_config(self) -> str:
        return render_haproxy_config(
            self.stack,
            self.paths.directory,
            ports=self.ports,
            bind_address=self.bind_address,
            log_ring_bytes=self.log_ring_bytes,
        )

    def ensure_proxy(self) -> None:
        """Make sure HAProxy runs and the traffic sampler listens (idempotent, cheap when they do).

        Starts HAProxy (detached, validated config) when it does not run, then re-adds the running
        instances with the saved split. Raises TargetError if HAProxy cannot be started or runs but
        does not answer on its admin socket.
        """
        if not routed_services(self.stack):
            return
        with self._lock:
            self.sampler.start()  # first: requests served from now on are counted
            if self.client.reachable():
                return
            with self._proxy_lock():
                if self.client.reachable():  # another controller started it meanwhile
                    return
                pid = read_pid(self.paths)
                if pid is not None:
                    deadline = time.monotonic() + 3
                    while time.monotonic() < deadline:
                        if self.client.reachable():
                            return
                        time.sleep(_POLL_S)
                    raise HAProxyUnreachable(
                        f"HAProxy unreachable at its admin socket {self.paths.admin_socket}: pid {pid}"
                        " runs but nothing answers there; check the socket (a cleaner of temporary"
                        f" files may have removed it), or stop pid {pid} and shipyard starts HAProxy again"
                    )
                write_atomic(self.paths.config, self.render_config())
                check_config(self.paths.config, self.haproxy_bin)
                start_haproxy(self.paths, self.haproxy_bin)
            self.sampler.flush()  # the log reader follows the new HAProxy before a server is back
            self._restore()

    def stop_proxy(self) -> None:
        """Stop HAProxy (traffic stops: for tests, and for tearing a stack down)."""
        with self._lock, self._proxy_lock():
            stop_haproxy(self.paths)

    def close(self) -> None:
        """Stop listening for HAProxy's log. HAProxy and the instances keep running."""
        self.sampler.stop()

    def destroy(self) -> None:
        """Stop every instance and HAProxy, and forget the saved split."""
        self.close()
        names = [instance.name for instance in self.supervisor.list()]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
            list(pool.map(self.supervisor.stop, names))
        self.stop_proxy()
        self._weights_file.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _proxy_lock(self) -> Iterator[None]:
        with (self.paths.directory / "haproxy.lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _restore(self) -> None:
        """After HAProxy (re)started: add every running instance back, then the saved split."""
        saved = self._saved_weights()
        for service in routed_services(self.stack):
            backend = backend_name(service)
            present = {state.server for state in self.client.servers_state(backend)}
            options = server_options(readiness_probe(self.stack, service))
            for instance in self._instances(service):
                server = instance.name.split(".", 1)[1]
                if server not in present and instance.port:
                    self.client.add_server(backend, server, LOOPBACK, instance.port, options)
            if saved.get(service):
                with contextlib.suppress(TargetError):  # a version may be gone: then leave it at 0
                    self._apply_weights(service, saved[service], require_healthy=False)

    # --- the Target interface --------------------------------------------------------------------

    def status(self, service: str) -> TargetStatus:
        svc = self._service(service)
        with self._lock:
            versions = self._versions(service)
            if svc.role == "worker":
                saved = self._saved_weights().get(service, {})
                return TargetStatus(
                    service,
                    {v: saved.get(v, 0) for v in versions},
                    {v: self._health(service, v, None, None) for v in versions},
                )
            self.ensure_proxy()
            backend = backend_name(service)
            states = self._server_states(service)
            stats = self.client.show_stat(backend)
            live = [s for s in states if not s.maintenance]
            by_version = _group(live)
            for version in by_version:
                versions.setdefault(version, [])
            weights = {s.server: s.weight for s in live}
            percent = version_percentages(weights, {v: by_version.get(v, []) for v in versions})
            asked = self._saved_weights().get(service)
            with contextlib.suppress(TargetError):
                if asked and server_weights(_complete(asked, by_version), by_version) == weights:
                    percent = {v: asked.get(v, 0) for v in versions}  # exactly what was asked for
            return TargetStatus(
                service,
                percent,
                {v: self._health(service, v, states, stats) for v in versions},
            )

    def prepare(self, service: str, version: str, instances: int) -> None:
        svc = self._service(service)
        if svc.run is None:
            raise TargetError(f"service {service} has no `run` command: the local target cannot start it")
        if instances < 1:
            raise TargetError(f"prepare needs at least one instance, not {instances}")
        env = self._environment(service, version)
        with self._lock:
            routed = svc.role != "worker"
            if routed:
                self.ensure_proxy()
            specs: list[InstanceSpec] = []
            for index in range(1, instances + 1):
                name = f"{service}.{server_name(version, index)}"
                existing = self.supervisor.get(name)
                port = existing.port if existing is not None and existing.supervisor_pid else free_port()
                specs.append(
                    InstanceSpec(name, svc.run, port, {**env, "VERSION": version}, self.workdir, svc.drain)
                )
            with ThreadPoolExecutor(max_workers=min(8, len(specs))) as pool:  # each start waits ~0.5 s
                started = [
                    (spec.name.split(".", 1)[1], instance)
                    for spec, instance in zip(specs, pool.map(self.supervisor.start, specs), strict=True)
                ]
            self._write_scrape_targets(service)
            if not routed:
                return
            backend = backend_name(service)
            states = {s.server: s for s in self._server_states(service)}
            options = server_options(readiness_probe(self.stack, service))
            for server, instance in started:
                state = states.get(server)
                if state is None:
                    self.client.add_server(backend, server, LOOPBACK, instance.port, options)
                    continue
                if state.port != instance.port or state.address != LOOPBACK:
                    self.client.set_address(backend, server, LOOPBACK, instance.port)
                if state.maintenance or state.draining:  # left over from an unfinished retire
                    self.client.set_weight(backend, server, 0)
                    self.client.set_state(backend, server, "ready")
                    self.client.set_health(backend, server, "down")
            saved = self._saved_weights().get(service, {})
            if saved.get(version, 0) > 0:  # more instances of a version taking traffic: share it
                self._apply_weights(service, saved, require_healthy=False)

    def health(self, service: str, version: str) -> Health:
        svc = self._service(service)
        with self._lock:
            if svc.role == "worker":
                return self._health(service, version, None, None)
            self.ensure_proxy()
            states = self._server_states(service)
            stats = self.client.show_stat(backend_name(service))
            return self._health(service, version, states, stats)

    def migrate(self, service: str, version: str) -> MigrationResult:
        svc = self._service(service)
        if not svc.migration:
            return MigrationResult(ok=True, exit_code=0, output_tail=f"service {service} has no migration")
        env = {**self._environment(service, version), "VERSION": version}
        return run_command(shlex.join(svc.migration), env, self.workdir, self.migration_timeout_s)

    def set_weights(self, service: str, weights: Mapping[str, int]) -> None:
        svc = self._service(service)
        shares = {version: int(share) for version, share in weights.items()}
        if any(share < 0 for share in shares.values()) or sum(shares.values()) != 100:
            raise TargetError(f"weights must be non-negative percentages summing to 100: {shares}")
        with self._lock:
            if svc.role == "worker":
                self._save_weights(service, shares)
                return
            self.ensure_proxy()
            self._apply_weights(service, shares, require_healthy=True)
            self._save_weights(service, shares)

    def crashed(self, service: str, version: str) -> str | None:
        """The crashes of `version`'s instances as their supervisors recorded them (exit code, and
        the log's end at the time), or None. Reads the supervisor's records only, not HAProxy."""
        crashes = [
            crash
            for instance in self._instances(service)
            if _version_of(instance.name) == version and (crash := instance.crash())
        ]
        return "; ".join(crashes) or None

    def sample(self, service: str, version: str) -> Sample:
        """Requests answered and 5xx from HAProxy's own per-server counters (exact); the latency
        histogram from its request log (a line HAProxy dropped is missing from the histogram only,
        which the analysis sees by comparing the two).

        The counters are read first and the log after, up to a marker logged then: every request
        the counters count as answered has had its line written before the marker, so a line
        missing is a lost one.
        """
        svc = self._service(service)
        if svc.role == "worker":
            return Sample()
        with self._lock:
            self.ensure_proxy()
            backend = backend_name(service)
            self._observe(backend, self.client.show_stat(backend))
            logged = self.sampler.flush()
            requests = errors = 0
            for (be, server), (reqs, errs) in self._counts.items():
                if be == backend and _server_version(server) == version:
                    requests += reqs
                    errors += errs
            latency = logged.sample_version(backend, version).latency_buckets
            return Sample(requests, errors, latency)

    def _observe(self, backend: str, stats: list[ServerStat]) -> None:
        """Fold HAProxy's per-server counters into cumulative counts that never go down: a server
        deleted keeps its last counts, and one whose counters restarted (HAProxy restarted, or the
        server was deleted and added again) continues from them.

        A request counts once answered (`stot - scur`: sessions opened less those in flight), as
        its log line is sent then: a request still in flight has no line yet, and is not missing.
        """
        for stat in stats:
            key = (backend, stat.server)
            answered = max(0, stat.stot - stat.scur)
            seen = self._seen.get(key, (0, 0))
            base = self._base.get(key, (0, 0))
            if answered < seen[0] or stat.hrsp_5xx < seen[1]:
                base = self._base[key] = (base[0] + seen[0], base[1] + seen[1])
            self._seen[key] = (answered, stat.hrsp_5xx)
            self._counts[key] = (base[0] + answered, base[1] + stat.hrsp_5xx)

    def retire(self, service: str, version: str) -> None:
        svc = self._service(service)
        with self._lock:
            if svc.role != "worker":
                self.ensure_proxy()
                self._remove_servers(service, version, svc)
            names = [i.name for i in self._instances(service) if _version_of(i.name) == version]
            if names:
                with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
                    list(pool.map(self.supervisor.stop, names))
            if svc.role != "worker":
                self._delete_servers(service, version, deadline=time.monotonic() + self.delete_timeout_s)
            saved = self._saved_weights().get(service, {})
            if version in saved:
                self._save_weights(service, {v: w for v, w in saved.items() if v != version})
            self._write_scrape_targets(service)

    def _write_scrape_targets(self, service: str) -> None:
        """Prometheus's file-based discovery list of the service's running instances, by version.

        `render prometheus` points its service jobs at `targets/<service>.json`: render it into
        `<state_dir>/prometheus` and Prometheus follows every release without a reload.
        """
        groups: dict[str, list[str]] = {}
        for instance in self._instances(service):
            version = _version_of(instance.name)
            if instance.alive and version:
                groups.setdefault(version, []).append(f"{LOOPBACK}:{instance.port}")
        listed = [
            {"targets": sorted(targets), "labels": {"version": version}}
            for version, targets in sorted(groups.items())
        ]
        path = self.state_dir / "prometheus" / "targets" / f"{service}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(listed, indent=2) + "\n")

    # --- helpers ---------------------------------------------------------------------------------

    def _service(self, service: str) -> Service:
        svc = self.stack.services.get(service)
        if svc is None:
            known = ", ".join(sorted(self.stack.services)) or "none"
            raise TargetError(f"stack {self.stack.name} has no service {service!r} (services: {known})")
        return svc

    def _environment(self, service: str, version: str) -> dict[str, str]:
        """The service's env with `${env:NAME}` resolved from the controller's environment."""
        env: dict[str, str] = {}
        for key, value in self._service(service).env.items():
            if isinstance(value, SecretRef):
                raise TargetError(
                    f"service {service}: env {key} is a secretRef, which only Kubernetes resolves; "
                    "on plain hosts write '${env:NAME}' and set NAME where shipyard runs"
                )
            if isinstance(value, bool):
                env[key] = "true" if value else "false"
                continue
            text = str(value)
            missing = [m[1] for m in ENV_REFERENCE.finditer(text) if m[1] not in self.environ]
            if missing:
                raise TargetError(
                    f"service {service}: env {key} refers to ${{env:{missing[0]}}}, "
                    "which is not set in shipyard's environment"
                )
            env[key] = ENV_REFERENCE.sub(lambda m: self.environ[m[1]], text)
        return env

    def _instances(self, service: str) -> list[Instance]:
        prefix = f"{service}."
        return [i for i in self.supervisor.list() if i.name.startswith(prefix) and _version_of(i.name)]

    def _server_states(self, service: str) -> list[ServerState]:
        backend = backend_name(service)
        try:
            states = self.client.servers_state(backend)
        except TargetError as error:
            if "no backend" in error.message:
                raise TargetError(
                    f"HAProxy has no backend for service {service}: it runs an older configuration; "
                    "stop it (it is restarted with the current one)"
                ) from error
            raise
        return [s for s in states if parse_server_name(s.server)]

    def _versions(self, service: str) -> dict[str, list[str]]:
        versions: dict[str, list[str]] = {}
        for instance in self._instances(service):
            version = _version_of(instance.name)
            if version:
                versions.setdefault(version, []).append(instance.name)
        return versions

    def _health(
        self,
        service: str,
        version: str,
        states: list[ServerState] | None,
        stats: list[ServerStat] | None,
    ) -> Health:
        instances = {
            i.name.split(".", 1)[1]: i for i in self._instances(service) if _version_of(i.name) == version
        }
        if states is None:  # a worker: alive is healthy
            alive = sum(1 for i in instances.values() if i.alive)
            dead = sorted(n for n, i in instances.items() if not i.alive)
            return Health(alive, len(instances), f"not running: {', '.join(dead)}" if dead else "")
        mine = {s.server: s for s in states if (parse_server_name(s.server) or ("",))[0] == version}
        stat_of = {s.server: s for s in stats or []}
        names = sorted(set(mine) | set(instances), key=lambda n: (parse_server_name(n) or ("", 0))[1])
        healthy = 0
        problems = []
        for name in names:
            state, instance = mine.get(name), instances.get(name)
            if instance is None or not instance.alive:
                problems.append(f"{name}: process not running")
            elif state is None:
                problems.append(f"{name}: not in HAProxy")
            elif state.healthy:
                healthy += 1
            else:
                stat = stat_of.get(name)
                why = stat.status if stat else "down"
                if stat and stat.check_desc:
                    code = f", HTTP {stat.check_code}" if stat.check_code else ""
                    why += f" ({stat.check_status.lstrip('* ')}: {stat.check_desc}{code})"
                elif state.check_result == 0:
                    why += " (not checked yet)"
                problems.append(f"{name}: {why}")
        return Health(healthy, len(names), "; ".join(problems))

    def _apply_weights(self, service: str, shares: Mapping[str, int], *, require_healthy: bool) -> None:
        """Set every server's weight so the versions get `shares`; raised weights first, so that no
        moment has every server at 0 (which would answer 503)."""
        backend = backend_name(service)
        recheck: tuple[float, float] | None = None  # (seconds to wait for a check, until when)
        while True:
            states = [s for s in self._server_states(service) if not s.maintenance]
            by_version = _group(states)
            target = server_weights(_complete(shares, by_version), by_version)
            if not require_healthy or not target or any(target[s.server] > 0 and s.healthy for s in states):
                break
            if recheck is None:
                # Refused only when it would make things worse than when asked: healthy servers
                # took traffic then (read once: one of them missing a check while we wait changes
                # nothing).
                if not any(s.weight > 0 and s.healthy for s in states):
                    break
                # An instance that missed one check (a stall on a loaded host) is DOWN until its
                # next one passes: wait for that round of checks before refusing, so a release does
                # not fail on one late answer. One that stays down is refused after it.
                seconds = _recheck_seconds(readiness_probe(self.stack, service))
                recheck = (seconds, time.monotonic() + seconds)
            elif time.monotonic() >= recheck[1]:
                asked = ", ".join(f"{v} {p}%" for v, p in shares.items() if p)
                raise TargetError(
                    f"refusing to route {service} to {asked}: no healthy instance would take traffic "
                    f"(none passed a health check in the {recheck[0]:g} s waited for one)"
                )
            time.sleep(_POLL_S)
        current = {s.server: s for s in states}
        order = sorted(target, key=lambda name: target[name] <= current[name].weight)
        for name in order:
            state = current[name]
            if target[name] > 0 and state.draining:
                self.client.set_state(backend, name, "ready")
            if target[name] != state.weight:
                self.client.set_weight(backend, name, target[name])

    def _remove_servers(self, service: str, version: str, svc: Service) -> None:
        """Drain `version`'s servers, wait for their requests in flight (at most the service's
        drain time), then put them in maintenance."""
        backend = backend_name(service)
        states = self._server_states(service)
        mine = [s for s in states if _server_version(s.server) == version]
        if not mine:
            return
        others = [s for s in states if _server_version(s.server) != version and not s.maintenance]
        if any(s.weight > 0 and not s.maintenance for s in mine) and not any(
            s.weight > 0 and s.healthy for s in others
        ):
            raise TargetError(
                f"refusing to retire {version} of {service}: it takes traffic and no other version "
                "with healthy instances does (set the weights first)"
            )
        for state in mine:
            if not state.maintenance:
                self.client.set_weight(backend, state.server, 0)
                self.client.set_state(backend, state.server, "drain")
        names = {s.server for s in mine}
        deadline = time.monotonic() + svc.drain
        while True:
            busy = [s for s in self.client.show_stat(backend) if s.server in names and s.scur + s.qcur > 0]
            if not busy or time.monotonic() >= deadline:
                break
            time.sleep(_POLL_S)
        for state in mine:
            self.client.set_state(backend, state.server, "maint")
        self._observe(backend, self.client.show_stat(backend))  # their final counts
        # Deleting fails while HAProxy holds an idle connection to the server; those close when the
        # process stops, so a server not deleted now is deleted after that (_delete_servers).
        for state in mine:
            with contextlib.suppress(TargetError):
                self.client.del_server(backend, state.server)

    def _delete_servers(self, service: str, version: str, deadline: float) -> None:
        backend = backend_name(service)
        while True:
            left = [s for s in self._server_states(service) if _server_version(s.server) == version]
            if not left:
                return
            self._observe(backend, self.client.show_stat(backend))
            error: TargetError | None = None
            for state in left:
                try:
                    if not state.maintenance:
                        self.client.set_state(backend, state.server, "maint")
                    self.client.del_server(backend, state.server)
                except TargetError as e:
                    error = e
            if error is None:
                return
            if time.monotonic() >= deadline:
                raise TargetError(f"could not remove {version}'s servers from HAProxy: {error.message}")
            time.sleep(_POLL_S)

    def _saved_weights(self) -> dict[str, dict[str, int]]:
        try:
            data = json.loads(self._weights_file.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {
            str(service): {str(v): int(w) for v, w in split.items()}
            for service, split in data.items()
            if isinstance(split, dict)
        }

    def _save_weights(self, service: str, shares: Mapping[str, int]) -> None:
        data = self._saved_weights()
        data[service] = dict(shares)
        write_atomic(self._weights_file, json.dumps(data, indent=2, sort_keys=True) + "\n")


if TYPE_CHECKING:
    from ._base import Target

    def _implements_target(target: LocalTarget) -> Target:
        return target  # mypy checks LocalTarget against the Target protocol here


def _version_of(instance_name: str) -> str | None:
    """The version of a supervisor instance named `<service>.<server>`."""
    _, _, server = instance_name.partition(".")
    parsed = parse_server_name(server)
    return parsed[0] if parsed else None


def _server_version(server: str) -> str | None:
    parsed = parse_server_name(server)
    return parsed[0] if parsed else None


def _recheck_seconds(probe: Probe) -> float:
    """How long a DOWN server takes to be seen UP again when it answers: `rise` checks, each at the
    down interval (at most 1 s, see server_options) and up to its timeout, twice over for a check
    already under way, plus a second for a loaded host."""
    return 2 * probe.success_threshold * (min(probe.period, 1) + probe.timeout) + 1


def _group(states: list[ServerState]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for state in states:
        version = _server_version(state.server)
        if version is not None:
            grouped.setdefault(version, []).append(state.server)
    return grouped


def _complete(shares: Mapping[str, int], by_version: Mapping[str, list[str]]) -> dict[str, int]:
    """`shares` for the versions that have servers (others at 0); a version with a share but no
    server keeps it, so that server_weights refuses it."""
    result = dict.fromkeys(by_version, 0)
    result.update({v: s for v, s in shares.items() if s or v in by_version})
    return result
