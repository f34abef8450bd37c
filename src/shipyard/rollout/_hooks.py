"""Release gates (`rollout.hooks`): the commands a release runs, and how they run on this host.

A release runs each hook as a step of its own (`RunHook`), recorded before it starts like every
other step:

    pre     before anything moves (before the migration and the candidate's start)
    smoke   once the candidate is healthy, against its own address, before any traffic moves
    test    a canary step `{test: NAME}`: an analysis decided by the command's exit code
    post    once the candidate takes all traffic, while the stable version is still warm

A hook passes by exiting 0 within its timeout; otherwise the release goes back (a `pre` that
fails fails the release before anything changed). Its output's last lines, with secrets masked,
are kept in the step's outcome (`HookRan`), and the last of them in the release's reason.

Each command runs by `/bin/sh -c` in a session of its own, with the service's environment (as
its candidate instances get it) and:

    SHIPYARD_SERVICE, SHIPYARD_ENVIRONMENT, SHIPYARD_HOOK
    SHIPYARD_CANDIDATE_VERSION, SHIPYARD_STABLE_VERSION (empty on a first deploy)
    SHIPYARD_CANDIDATE_URL     http://127.0.0.1:PORT of the candidate's first instance, not HAProxy
    SHIPYARD_CANDIDATE_URLS    every instance's, space-separated

A controller killed while a hook runs leaves it running (its own session): the step stays
`started`, with the hook's pid and start time recorded in its outcome (`HookStarted`). The
controller that resumes the release kills that run first (the pid is checked against its start
time), then runs the hook again from its start, with its whole timeout.

The values here are pure; `LocalHooks` starts processes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, Protocol

from ..errors import TargetError
from ..host import TAIL_LINES, group_members, kill_group, pid_alive, start_time
from ..logs import SecretRegistry, redact
from ..spec import ENV_REFERENCE, HookCommand, RolloutHooks

if TYPE_CHECKING:
    from .targets.local import LocalTarget

HookKind = Literal["pre", "smoke", "test", "post"]
HOOK_KINDS: tuple[HookKind, ...] = ("pre", "smoke", "test", "post")

# The environment every hook gets (README, "Release gates"); Argo's Job gets the same names.
SERVICE_VAR = "SHIPYARD_SERVICE"
ENVIRONMENT_VAR = "SHIPYARD_ENVIRONMENT"
HOOK_VAR = "SHIPYARD_HOOK"
CANDIDATE_VERSION_VAR = "SHIPYARD_CANDIDATE_VERSION"
STABLE_VERSION_VAR = "SHIPYARD_STABLE_VERSION"
CANDIDATE_URL_VAR = "SHIPYARD_CANDIDATE_URL"
CANDIDATE_URLS_VAR = "SHIPYARD_CANDIDATE_URLS"

_READ_BYTES = 64 * 1024
"""How much of the end of a hook's output is read for its tail."""


# --- the values a release records ------------------------------------------------------------------


@dataclass(frozen=True)
class RunHook:
    """Run the hook `kind` (for a test, the test `name`); it passes by exiting 0 within `timeout_s`."""

    kind: HookKind
    name: str
    timeout_s: float


@dataclass(frozen=True)
class HookStarted:
    """Recorded in a running hook's step (still `started`): which process runs it, so that a
    controller resuming the release can stop it before running the hook again."""

    pid: int
    started: int
    """The process's start time (/proc), which guards against a recycled pid."""


@dataclass(frozen=True)
class HookRan:
    """How a hook ended: passed (exit 0 in time) or not, and its output's last lines (masked)."""

    kind: HookKind
    name: str
    ok: bool
    exit_code: int
    timed_out: bool = False
    output_tail: str = ""

    def summary(self) -> str:
        """One line: what ran and how it ended, with its output's last line."""
        what = hook_title(self.kind, self.name)
        if self.ok:
            return f"{what} passed"
        if self.timed_out:
            how = "timed out and was killed"
        elif self.exit_code < 0:
            how = f"was killed by signal {-self.exit_code}"
        else:
            how = f"failed with exit code {self.exit_code}"
        lines = [line.strip() for line in self.output_tail.splitlines() if line.strip()]
        # The runner's own note on a timeout is the last line; the command's own is more telling.
        said = [line for line in lines if not line.startswith("[shipyard]")]
        last = f": {said[-1][:200]}" if said else ""
        return f"{what} {how}{last}"


def hook_title(kind: HookKind, name: str) -> str:
    """A hook in words: 'pre hook', 'smoke test', "test 'checkout'", 'post hook'."""
    match kind:
        case "smoke":
            return "smoke test"
        case "test":
            return f"test {name!r}"
        case _:
            return f"{kind} hook"


def hook_command(hooks: RolloutHooks, kind: HookKind, name: str) -> HookCommand | None:
    """The command of a hook in a release's policy; None when the policy has no such hook."""
    if kind == "test":
        return hooks.tests.get(name)
    found: HookCommand | None = getattr(hooks, kind)
    return found


def hook_environment(
    *,
    service: str,
    environment: str,
    kind: HookKind,
    candidate: str,
    stable: str | None,
    urls: list[str],
) -> dict[str, str]:
    """The SHIPYARD_* variables of a hook run."""
    return {
        SERVICE_VAR: service,
        ENVIRONMENT_VAR: environment,
        HOOK_VAR: kind,
        CANDIDATE_VERSION_VAR: candidate,
        STABLE_VERSION_VAR: stable or "",
        CANDIDATE_URL_VAR: urls[0] if urls else "",
        CANDIDATE_URLS_VAR: " ".join(urls),
    }


def masked_tail(text: str, secrets: list[str]) -> str:
    """The last TAIL_LINES lines of `text`, with `secrets`, the process's known secrets and every
    known secret shape masked."""
    lines = text.splitlines()[-TAIL_LINES:]
    registry = SecretRegistry(secrets)
    return "\n".join(redact(registry.redact(line)) for line in lines)


# --- running hooks ------------------------------------------------------------------------------------


class HookProcess(Protocol):
    """A hook under way: polled by the controller, which may stop it."""

    @property
    def started(self) -> HookStarted: ...

    def poll(self) -> HookRan | None:
        """How it ended, once it has (killed at its deadline); None while it runs."""
        ...

    def stop(self, why: str) -> HookRan:
        """Kill it (and everything it started) now; how it ended, saying `why`."""
        ...


class Hooks(Protocol):
    """Starts a release's hooks where the target runs the service."""

    def start(
        self,
        hook: RunHook,
        command: HookCommand,
        *,
        service: str,
        environment: str,
        candidate: str,
        stable: str | None,
    ) -> HookProcess: ...


def stop_earlier_run(started: HookStarted) -> bool:
    """Kill an earlier run of a hook (a controller ended while it ran) if it still runs; whether it did."""
    if not pid_alive(started.pid, started.started):
        return False
    kill_group(started.pid)
    return True


class _ShellHook:
    """One hook command under `/bin/sh -c`, in a session (and process group) of its own."""

    def __init__(
        self, hook: RunHook, command: str, env: Mapping[str, str], workdir: Path, secrets: list[str]
    ) -> None:
        from .targets._processes import app_environment  # noqa: PLC0415 - the local target's rule

        if not workdir.is_dir():
            raise TargetError(f"cannot run the {hook_title(hook.kind, hook.name)}: {workdir} does not exist")
        self.hook = hook
        self.secrets = secrets
        self.deadline = time.monotonic() + hook.timeout_s
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call: closed in _finish
        try:
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=app_environment(env),
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            self._out.close()
            raise TargetError(f"cannot run the {hook_title(hook.kind, hook.name)}: {e}") from e
        self._started = HookStarted(self._process.pid, start_time(self._process.pid))
        self._result: HookRan | None = None

    @property
    def started(self) -> HookStarted:
        return self._started

    def poll(self) -> HookRan | None:
        if self._result is not None:
            return self._result
        code = self._process.poll()
        if code is None:
            if time.monotonic() < self.deadline:
                return None
            return self.stop(f"timed out after {self.hook.timeout_s:g}s and was killed", timed_out=True)
        return self._finish(code, None, timed_out=False)

    def stop(self, why: str, *, timed_out: bool = False) -> HookRan:
        if self._result is not None:
            return self._result
        kill_group(self._process.pid)
        code = self._process.wait()
        return self._finish(code, why, timed_out=timed_out)

    def _finish(self, code: int, note: str | None, *, timed_out: bool) -> HookRan:
        # Children that outlived the shell must not go on (a hook is over when its shell is).
        if group_members(self._process.pid):
            kill_group(self._process.pid)
        with self._out:
            self._out.seek(0, os.SEEK_END)
            self._out.seek(max(0, self._out.tell() - _READ_BYTES))
            text = self._out.read().decode("utf-8", "replace")
        if note:
            text += f"\n[shipyard] the {hook_title(self.hook.kind, self.hook.name)} {note}"
        self._result = HookRan(
            kind=self.hook.kind,
            name=self.hook.name,
            ok=code == 0 and not timed_out,
            exit_code=code,
            timed_out=timed_out,
            output_tail=masked_tail(text, self.secrets),
        )
        return self._result

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()


class LocalHooks:
    """Hooks of releases on this host: run in the target's working directory, with the service's
    environment as its instances get it, the candidate's instances addressed directly."""

    def __init__(self, target: LocalTarget) -> None:
        self.target = target

    def candidate_urls(self, service: str, version: str) -> list[str]:
        """`http://127.0.0.1:PORT` of each running instance of `version`, in instance order."""
        from .targets.haproxy import parse_server_name  # noqa: PLC0415
        from .targets.local import LOOPBACK  # noqa: PLC0415

        found: list[tuple[int, str]] = []
        for instance in self.target.supervisor.list():
            name, _, server = instance.name.partition(".")
            parsed = parse_server_name(server)
            if name == service and parsed and parsed[0] == version and instance.alive and instance.port:
                found.append((parsed[1], f"http://{LOOPBACK}:{instance.port}"))
        return [url for _, url in sorted(found)]

    def start(
        self,
        hook: RunHook,
        command: HookCommand,
        *,
        service: str,
        environment: str,
        candidate: str,
        stable: str | None,
    ) -> HookProcess:
        # The service's environment with `${env:NAME}` resolved, as its instances get it (the
        # target's one rule); the values it resolved are secrets to mask in the output.
        env = {**self.target._environment(service, candidate), "VERSION": candidate}
        spec = self.target.stack.services[service]
        secrets = [
            env[key]
            for key, value in spec.env.items()
            if isinstance(value, str) and ENV_REFERENCE.search(value) and key in env
        ]
        urls = self.candidate_urls(service, candidate) if hook.kind != "pre" else []
        env |= hook_environment(
            service=service,
            environment=environment,
            kind=hook.kind,
            candidate=candidate,
            stable=stable,
            urls=urls,
        )
        return _ShellHook(hook, command.command, env, self.target.workdir, secrets)
