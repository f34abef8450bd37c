"""A thin adapter over the `restic` binary (0.14): a local directory or S3 repository.

Everything goes through restic's own commands: shipyard never reads or writes repository data
itself (it only lists a local repository's snapshot file names, to learn a new snapshot's full
id without another restic run). The password reaches restic through the child's
`RESTIC_PASSWORD` only, and the repository URL through `RESTIC_REPOSITORY`, so neither appears
on a command line; every message that quotes restic is passed through `_redact` first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal

from shipyard.errors import BackupError, RepositoryError, RepositoryUnreachable
from shipyard.host import proc_stat, state_dir

RESTIC_MISSING = "restic is not installed: `apt-get install restic` (or run `make install`)"

# restic 0.14 exit codes: 0 ok, 1 fatal (nothing done), 3 snapshot written but some files unreadable.
EXIT_PARTIAL = 3

Compression = Literal["auto", "max", "off"]

# Inherited RESTIC_* variables could name another repository or password source; ours win.
_INHERITED_BLOCKLIST_PREFIX = "RESTIC_"
_SECRET_KEY_HINTS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL")
_SNAPSHOT_ID = re.compile(r"^(latest|[0-9a-f]{1,64})$")
_STDERR_TAIL_LINES = 20
_STDERR_MAX_LINES = 5000  # restic check prints a line per damaged blob; keep a bounded amount
_PIPE_CHUNK = 1 << 20
_REAP_WAIT_S = 20.0
"""How long `unlock` waits for init to reap the restics killed with their parent (see there)."""
_STOP_WAIT_S = 60.0
"""How long an interrupted restic may take to remove its lock (one request to S3) and exit."""
_GUARD = Path(__file__).with_name("_restic_guard.py")
"""The script every restic runs under (see `_spawn`)."""


@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot, as `restic snapshots --json` lists it."""

    id: str
    short_id: str
    time: datetime  # aware, UTC
    paths: tuple[str, ...]
    tags: tuple[str, ...]
    hostname: str


@dataclass(frozen=True)
class BackupProgress:
    """One `status` message of `restic backup --json`."""

    fraction: float  # 0.0 .. 1.0
    bytes_done: int
    total_bytes: int
    files_done: int
    total_files: int
    seconds: float


@dataclass(frozen=True)
class BackupSummary:
    """The `summary` message of `restic backup --json` (with the snapshot's full id)."""

    snapshot_id: str
    files_new: int
    files_changed: int
    files_unmodified: int
    data_added: int  # bytes added to the repository (restic 0.14: before compression)
    total_bytes_processed: int
    total_files_processed: int
    seconds: float


@dataclass(frozen=True)
class CheckResult:
    """The outcome of `restic check`: `errors` holds restic's own messages, one per line."""

    ok: bool
    errors: tuple[str, ...]


ProgressCallback = Callable[[BackupProgress], None]


# --- pure parsing (unit-tested without restic) ------------------------------------------------


def parse_restic_time(text: str) -> datetime:
    """Parse Go's RFC 3339 with nanoseconds (`2026-12-01T02:02:28.048115628Z`, or with an
    offset) into an aware UTC datetime; Python keeps microseconds, so extra digits are cut."""
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})", text.strip()
    )
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    seconds, fraction, zone = match.groups()
    micro = (fraction or "").ljust(6, "0")[:6]
    parsed = datetime.fromisoformat(f"{seconds}.{micro}{'+00:00' if zone == 'Z' else zone}")
    return parsed.astimezone(UTC)


def parse_snapshots(text: str) -> list[Snapshot]:
    """Parse `restic snapshots --json` (a JSON array; `null` when there are none), oldest first."""
    raw = json.loads(text or "[]") or []
    if not isinstance(raw, list):
        raise ValueError("restic snapshots --json did not print a list")
    snapshots = [
        Snapshot(
            id=str(item["id"]),
            short_id=str(item.get("short_id") or str(item["id"])[:8]),
            time=parse_restic_time(str(item["time"])),
            paths=tuple(str(p) for p in item.get("paths") or ()),
            tags=tuple(str(t) for t in item.get("tags") or ()),
            hostname=str(item.get("hostname", "")),
        )
        for item in raw
    ]
    return sorted(snapshots, key=lambda s: (s.time, s.id))


def parse_backup_message(line: str) -> BackupProgress | BackupSummary | None:
    """Parse one line of `restic backup --json`; None for lines that are not status/summary.

    restic omits zero-valued fields, so every field has a default. The summary's snapshot id is
    restic 0.14's short id; the repository resolves it to the full id.
    """
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        message: Any = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(message, dict):
        return None
    try:
        return _backup_message(message)
    except (TypeError, ValueError, OverflowError):
        return None  # a field of an unexpected type: not a message we understand


def _backup_message(message: dict[str, Any]) -> BackupProgress | BackupSummary | None:
    kind = message.get("message_type")
    if kind == "status":
        fraction = float(message.get("percent_done") or 0.0)
        return BackupProgress(
            fraction=min(1.0, max(0.0, fraction)),  # NaN falls to 0.0
            bytes_done=int(message.get("bytes_done") or 0),
            total_bytes=int(message.get("total_bytes") or 0),
            files_done=int(message.get("files_done") or 0),
            total_files=int(message.get("total_files") or 0),
            seconds=float(message.get("seconds_elapsed") or 0.0),
        )
    if kind == "summary":
        return BackupSummary(
            snapshot_id=str(message.get("snapshot_id") or ""),
            files_new=int(message.get("files_new") or 0),
            files_changed=int(message.get("files_changed") or 0),
            files_unmodified=int(message.get("files_unmodified") or 0),
            # restic 0.17+ reports the packed (compressed) size; 0.14 only the plaintext size.
            data_added=int(message.get("data_added_packed") or message.get("data_added") or 0),
            total_bytes_processed=int(message.get("total_bytes_processed") or 0),
            total_files_processed=int(message.get("total_files_processed") or 0),
            seconds=float(message.get("total_duration") or 0.0),
        )
    return None


def check_errors(stdout: str, stderr: str) -> tuple[str, ...]:
    """The problems `restic check` reported: its stderr lines, and stdout lines that name an
    error, without the closing `Fatal: repository contains errors` (it only repeats the verdict)."""
    noted = [line.strip() for line in stderr.splitlines()]
    noted += [
        line.strip() for line in stdout.splitlines() if re.match(r"\s*(error|pack [0-9a-f]+)", line, re.I)
    ]
    return tuple(line for line in noted if line and line != "Fatal: repository contains errors")


def redact_url(url: str) -> str:
    """A repository URL without a `user:password@` part (a `rest:` URL may carry one)."""
    return re.sub(r"(://)[^/@\s]*@", r"\1***@", url)


def failure_kind(
    stderr: str,
) -> Literal["password", "missing", "locked", "unreachable", "denied", "other"]:
    """What a failed restic command's stderr says went wrong.

    An unreachable S3 endpoint also prints "Is there a repository at the following location?",
    so network failures are recognised before a missing repository.
    """
    text = stderr.lower()
    if "wrong password or no key found" in text:
        return "password"
    if _says_unreachable(text):
        return "unreachable"
    if any(hint in text for hint in _DENIED_HINTS):
        return "denied"
    if (
        "is there a repository at the following location" in text
        or "repository does not exist" in text
        or "unable to open config file" in text
    ):
        return "missing"
    if "repository is already locked" in text or "unable to create lock" in text:
        return "locked"
    return "other"


_UNREACHABLE_HINTS = (
    "connection refused",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "connection reset",
    "context deadline exceeded",
    "tls handshake",
    "server misbehaving",
)


def _says_unreachable(text: str) -> bool:
    return any(hint in text.lower() for hint in _UNREACHABLE_HINTS)


_DENIED_HINTS = (
    "access denied",
    "signaturedoesnotmatch",
    "the aws access key id you provided does not exist",
    "invalidaccesskeyid",
    "403 forbidden",
)


# --- the repository ---------------------------------------------------------------------------


def _default_cache_dir() -> Path:
    return state_dir() / "restic-cache"


class ResticRepository:
    """One restic repository: a local directory or `s3:http(s)://host:port/bucket/prefix`."""

    def __init__(
        self,
        url: str,
        password: str,
        *,
        env: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        binary: str = "restic",
        compression: Compression = "auto",
        progress_fps: float = 2.0,
    ) -> None:
        if not url:
            raise RepositoryError("the restic repository URL is empty: set the backup repository")
        if not password:
            raise RepositoryError(
                f"the password of the restic repository at {redact_url(url)} is empty: set it"
            )
        # A relative local path would move with restic's working directory (backup_path runs
        # restic inside the backed-up directory), so a local repository is made absolute.
        self.url = url if _is_remote(url) else str(Path(url.removeprefix("local:")).resolve())
        self._password = password
        self._extra_env = dict(env or {})
        # Resolved now: backup_path runs restic inside the backed-up directory.
        self.cache_dir = (cache_dir or _default_cache_dir()).resolve()
        self._binary = binary
        self._compression = compression
        self._progress_fps = progress_fps

    def __repr__(self) -> str:
        return f"ResticRepository({redact_url(self.url)!r})"

    # -- public API --------------------------------------------------------------------------

    def exists(self) -> bool:
        """Whether a repository is initialised at the URL (raises on a wrong password)."""
        result = self._run(["cat", "config"], check=False)
        if result.returncode == 0:
            return True
        if failure_kind(result.stderr) == "missing":
            return False
        raise self._error("cat config", result.returncode, result.stderr)

    def init(self) -> None:
        """Create the repository (format v2, so compression works); nothing if it exists.

        restic refuses to init over an existing config before it derives any key, so trying
        first is cheaper than asking; an existing repository is then opened once, which proves
        the password is right. Two `restic init` at once both succeed (0.14) and leave two
        master keys, so a local repository's init holds a lock on its parent directory; for a
        remote one the caller must serialise (shipyard holds a lease in the state store).
        """
        with self._local_init_lock():
            result = self._run(["init", "--repository-version", "2"], check=False)
        if result.returncode == 0:
            return
        if "config file already exists" in result.stderr and self.exists():
            return
        raise self._error("init", result.returncode, result.stderr)

    @contextlib.contextmanager
    def _local_init_lock(self) -> Iterator[None]:
        if _is_remote(self.url):
            yield
            return
        parent = Path(self.url).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(parent, os.O_RDONLY)
        except OSError as exc:
            raise RepositoryError(
                f"cannot create the restic repository at {self.url}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

    def backup_path(
        self,
        path: Path,
        *,
        tags: Sequence[str] = (),
        host: str | None = None,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> BackupSummary:
        """Back up the contents of directory `path` (or the single file `path`).

        Setting `cancel` (from another thread) kills restic, removes its lock and raises
        BackupError; nothing is stored."""
        path = Path(path).resolve()
        if path.is_dir():
            cwd, target = path, "."
        elif path.exists():
            cwd, target = path.parent, path.name
        else:
            raise BackupError(f"cannot back up {path}: no such file or directory")
        if cancel is not None and cancel.is_set():
            raise BackupError(f"the backup of {path} was cancelled before restic started")
        args = ["backup", "--json", *self._backup_options(tags, host), "--", target]
        ended = threading.Event()
        cancelled = threading.Event()
        with self._spawn(args, cwd=cwd, stdin=subprocess.DEVNULL, progress=on_progress is not None) as proc:
            watcher = None
            if cancel is not None:
                watcher = threading.Thread(
                    target=_stop_when_cancelled, args=(proc, cancel, ended, cancelled),
                    name="restic-cancel", daemon=True,
                )  # fmt: skip
                watcher.start()
            try:
                summary = self._read_backup_output(proc, on_progress)
                returncode = proc.wait()
            finally:
                ended.set()
                if watcher is not None:
                    watcher.join()
        stderr = proc.stderr_text()
        if cancelled.is_set():
            self._clear_stale_locks()  # the killed restic's lock (live restics keep theirs)
            stored = summary is not None and bool(summary.snapshot_id)  # it ended as it was killed
            if stored and summary is not None and not self._forget_quietly(summary.snapshot_id):
                raise BackupError(f"the backup of {path} was cancelled; prune removes its snapshot")
            raise BackupError(f"the backup of {path} was cancelled; nothing was stored")
        if returncode == EXIT_PARTIAL:
            # restic wrote a snapshot that lacks some files: never leave it looking restorable.
            removed = summary is None or not summary.snapshot_id or self._forget_quietly(summary.snapshot_id)
            raise BackupError(
                f"restic could not read some files under {path}; the incomplete snapshot was "
                + ("removed" if removed else "not removed yet (the repository is in use): prune removes it")
                + f": {self._tail(stderr)}"
            )
        if returncode != 0 or summary is None:
            raise self._error("backup", returncode, stderr)
        return self._with_full_id(summary)

    def backup_command(
        self,
        argv: Sequence[str],
        filename: str,
        *,
        tags: Sequence[str] = (),
        host: str | None = None,
        env: Mapping[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> BackupSummary:
        """Stream the stdout of `argv` into the repository as the file `filename`.

        The bytes go through this process rather than straight from the command to restic: when
        the command fails, restic is interrupted while its stdin is still open, so it never sees
        an end of input and never writes a snapshot of a truncated stream. restic's guard holds
        its stdin open too (`hold_input`), so that this process dying mid-stream (even by
        SIGKILL) is no end of input either: restic is interrupted and removes its lock.
        """
        if not argv:
            raise BackupError("backup_command needs a command to run")
        _check_filename(filename)
        args = [
            "backup",
            "--json",
            "--stdin",
            "--stdin-filename",
            filename,
            *self._backup_options(tags, host),
        ]
        command_env = {**os.environ, **(env or {})}
        secrets = [*self._secrets(), *_secret_values(env or {})]
        try:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=command_env,
                start_new_session=True,  # so a shell's own children die with it
            )
        except OSError as exc:
            raise BackupError(f"cannot run `{argv[0]}`: {exc.strerror or exc}") from None
        assert child.stdout is not None
        assert child.stderr is not None
        child_stderr = _TailReader(child.stderr)
        outcome: dict[str, str] = {}
        restic_ended = threading.Event()
        try:
            progress = on_progress is not None
            with self._spawn(args, stdin=subprocess.PIPE, progress=progress, hold_input=True) as proc:
                pump = threading.Thread(
                    target=_pump,
                    args=(child, proc, outcome, restic_ended),
                    name="restic-stdin-pump",
                    daemon=True,
                )
                pump.start()
                try:
                    summary = self._read_backup_output(proc, on_progress)
                    returncode = proc.wait()
                finally:
                    if proc.popen.poll() is None:  # on_progress raised: its input is still held
                        proc.stop(abandon=True)
                    proc.popen.wait()
                    if pump.is_alive():
                        # restic ended first (an error, or on_progress raised): the command
                        # may be idle, so the pump would wait on it forever; stop it.
                        restic_ended.set()
                        _kill_group(child)
                    pump.join()
        finally:
            _kill_group(child)
            child.wait()
            child_stderr.join()
        stderr = proc.stderr_text()
        if "command" in outcome:
            self._clear_stale_locks()
            detail = _redact(child_stderr.tail(), secrets)
            raise BackupError(
                f"`{argv[0]}` exited with status {child.returncode}; nothing was stored"
                + (f": {detail}" if detail else "")
            )
        if returncode != 0 or summary is None:
            self._clear_stale_locks()
            raise self._error("backup --stdin", returncode, stderr)
        return self._with_full_id(summary)

    def store_bytes(
        self, data: bytes, filename: str, *, tags: Sequence[str] = (), host: str | None = None
    ) -> BackupSummary:
        """Store `data` as the one file `filename` of a snapshot of its own (a small document,
        such as a set's manifest); read it back with `dump`."""
        _check_filename(filename)
        options = self._backup_options(tags, host)
        args = ["backup", "--json", "--stdin", "--stdin-filename", filename, *options]
        # Its input held by the guard until all of it is written: if this process dies mid-feed,
        # restic is interrupted rather than storing a truncated document.
        with self._spawn(args, stdin=subprocess.PIPE, progress=False, hold_input=True) as proc:
            # Fed from a thread: restic may write to stdout before it has read all its input.
            feeder = threading.Thread(target=_feed, args=(proc, data), name="restic-stdin", daemon=True)
            feeder.start()
            summary = self._read_backup_output(proc, None)
            returncode = proc.wait()
            feeder.join()
        if returncode != 0 or summary is None:
            raise self._error("backup --stdin", returncode, proc.stderr_text())
        return self._with_full_id(summary)

    def read_bytes(self, snapshot_id: str, filename: str) -> bytes:
        """The one file `filename` of a snapshot (see `store_bytes`)."""
        out = io.BytesIO()
        self.dump(snapshot_id, filename, out)
        return out.getvalue()

    def snapshots(self, *, tags: Sequence[str] = ()) -> list[Snapshot]:
        """The snapshots (oldest first); with `tags`, only those carrying every one of them."""
        args = ["snapshots", "--json"]
        if tags:
            args += ["--tag", ",".join(_check_tags(tags))]
        result = self._run(args)
        try:
            return parse_snapshots(result.stdout)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"cannot read the output of `restic snapshots --json`: {exc}") from None

    def restore(self, snapshot_id: str, target: Path, *, include: Sequence[str] = ()) -> None:
        """Restore a snapshot into `target` (a path backup's files land directly in it)."""
        args = ["restore", _check_snapshot_id(snapshot_id), "--target", str(Path(target).resolve())]
        for pattern in include:
            args += ["--include", pattern]
        self._run(args)

    def dump(self, snapshot_id: str, filename: str, out: BinaryIO) -> None:
        """Write one file of a snapshot (e.g. a `backup_command` stream) to `out`."""
        name = filename if filename.startswith("/") else "/" + filename
        args = ["dump", _check_snapshot_id(snapshot_id), name]
        with self._spawn(args, stdin=subprocess.DEVNULL, progress=False) as proc:
            stdout = proc.popen.stdout
            assert stdout is not None
            while chunk := stdout.read(_PIPE_CHUNK):
                out.write(chunk)
            returncode = proc.wait()
        if returncode != 0:
            raise self._error("dump", returncode, proc.stderr_text())

    def forget(self, snapshot_ids: Sequence[str], *, prune: bool = True) -> None:
        """Remove snapshots (ids restic does not know are ignored); prune frees their data."""
        if not snapshot_ids:
            return
        ids = [_check_snapshot_id(s) for s in snapshot_ids]
        self._run(["forget", *(["--prune"] if prune else []), *ids])

    def check(self, *, read_data_subset: str | None = None) -> CheckResult:
        """Check the repository's structure and, with `read_data_subset` ("100%", "1/5", "50M"),
        read that much pack data back and verify it."""
        args = ["check"]
        if read_data_subset is not None:
            if not re.fullmatch(r"\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?", read_data_subset):
                raise BackupError(
                    f"read_data_subset {read_data_subset!r} is not like '100%', '1/5' or '500M'"
                )
            args += ["--read-data-subset", read_data_subset]
        result = self._run(args, check=False)
        if result.returncode == 0:
            return CheckResult(ok=True, errors=())
        if "repository contains errors" in result.stderr or failure_kind(result.stderr) == "other":
            errors = check_errors(result.stdout, result.stderr)
            return CheckResult(ok=False, errors=errors or (f"restic check exited {result.returncode}",))
        raise self._error("check", result.returncode, result.stderr)

    def unlock(self) -> None:
        """Remove stale locks (left by a killed restic); live processes keep theirs.

        restic calls a lock of this host live while its pid still takes a signal, and a zombie
        does. A restic killed together with its parent (`shipyard backup` killed with its process
        group) is handed to init and stays a zombie until init reaps it, which some inits do
        seconds later (more on a busy host): its lock outlived an unlock run in between. So
        while such orphans exist (dead or dying) and the repository holds locks, they are
        waited for first, for a while."""
        orphans = _orphans(Path(self._binary).name)
        if orphans and self._has_locks():
            _wait_until_gone(orphans, _REAP_WAIT_S)
        self._run(["unlock"])

    # -- internals ---------------------------------------------------------------------------

    def _backup_options(self, tags: Sequence[str], host: str | None) -> list[str]:
        options = ["--compression", self._compression]
        for tag in _check_tags(tags):
            options += ["--tag", tag]
        if host is not None:
            if not host or host.startswith("-"):
                raise BackupError(f"backup host {host!r} is not a host name")
            options += ["--host", host]
        return options

    def _child_env(self, *, progress: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_BLOCKLIST_PREFIX)}
        env.update(self._extra_env)
        env["RESTIC_REPOSITORY"] = self.url
        env["RESTIC_PASSWORD"] = self._password
        # Without a terminal restic reports progress once a minute; callers want it live.
        if progress and "RESTIC_PROGRESS_FPS" not in self._extra_env:
            env["RESTIC_PROGRESS_FPS"] = str(self._progress_fps)
        return env

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [self._binary, "--cache-dir", str(self.cache_dir), *args]

    def _make_cache_dir(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackupError(
                f"cannot create the restic cache directory {self.cache_dir}: {exc.strerror or exc}; "
                "choose a writable one (cache_dir, or $SHIPYARD_STATE_DIR)"
            ) from None

    def _run(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        # Through `_spawn` like every restic run: killed mid-way (a `forget` or `check` takes an
        # exclusive lock), shipyard must not leave its lock behind either.
        with self._spawn(args, stdin=subprocess.DEVNULL, progress=False) as proc:
            stdout = proc.popen.stdout
            assert stdout is not None
            output = stdout.read()
            returncode = proc.wait()
        result = subprocess.CompletedProcess(
            self._argv(args),
            returncode,
            output.decode("utf-8", "replace"),  # file names need not be UTF-8
            proc.stderr_text(),
        )
        if check and result.returncode != 0:
            raise self._error(args[0], result.returncode, result.stderr)
        return result

    @contextlib.contextmanager
    def _spawn(
        self,
        args: Sequence[str],
        *,
        stdin: int,
        progress: bool,
        cwd: Path | None = None,
        hold_input: bool = False,
    ) -> Iterator[_Process]:
        """Run restic under its guard (`_restic_guard`, which says why), in a session of its own.

        A kill of shipyard's process group then does not reach restic: the guard sees shipyard
        gone and interrupts restic, which removes its lock itself (restic 0.14 does on SIGINT,
        never on SIGKILL). `proc.popen` is the guard's Popen, its `stdout` restic's stdout and,
        with stdin=PIPE, its `stdin` restic's stdin (closing it ends restic's input).
        hold_input: the guard also holds restic's stdin open until `end_input()`, so that
        shipyard's death is not taken for the end of a stream (see `backup_command`).
        """
        self._make_cache_dir()
        env = self._child_env(progress=progress)
        argv = [self._executable(env), *self._argv(args)[1:]]
        control_r, control_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if stdin == subprocess.PIPE else (stdin, -1)
        held = os.dup(in_w) if hold_input and in_w >= 0 else -1
        handed = [control_r, out_r, err_r, *([held] if held >= 0 else [])]
        global_count = len(self._argv(()))  # the binary and its global options (for `unlock`)
        numbers = [str(number) for number in (control_r, out_r, err_r, held, global_count)]
        try:
            popen = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_GUARD), *numbers, "--", *argv],
                env=env,
                cwd=cwd,
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                pass_fds=handed,
                start_new_session=True,  # out of shipyard's process group (see above)
            )
        except OSError as exc:
            for descriptor in (control_w, out_r, err_r, in_w):
                if descriptor >= 0:
                    os.close(descriptor)
            raise RepositoryError(f"cannot start restic's guard ({sys.executable}): {exc}") from None
        finally:
            # The guard and restic hold their own copies now: without ours, their ends (and
            # restic's end of input) reach us as they would without a guard in between.
            for descriptor in (control_r, out_w, err_w, held, in_r if in_w >= 0 else -1):
                if descriptor >= 0:
                    os.close(descriptor)
        popen.stdout = open(out_r, "rb")  # noqa: SIM115 - closed by _Process.close
        popen.stdin = open(in_w, "wb") if in_w >= 0 else None  # noqa: SIM115 - likewise
        process = _Process(popen, open(err_r, "rb"), control_w)  # noqa: SIM115 - likewise
        try:
            yield process
        finally:
            if popen.poll() is None:  # the caller gave up early (e.g. on_progress raised)
                process.stop(abandon=True)
            popen.wait()
            process.close()
            if process.killed:  # killed without its cleanup: its lock is stale now it is gone
                self._clear_stale_locks()

    def _executable(self, env: Mapping[str, str]) -> str:
        """restic's absolute path, looked up as the guard would (RepositoryError when missing)."""
        found = shutil.which(self._binary, path=env.get("PATH", os.defpath))
        if found is not None:
            return found
        if os.sep in self._binary and Path(self._binary).exists():
            raise self._cannot_start(PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
        raise self._cannot_start(FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT)))

    def _read_backup_output(
        self, proc: _Process, on_progress: ProgressCallback | None
    ) -> BackupSummary | None:
        stdout = proc.popen.stdout
        assert stdout is not None
        summary: BackupSummary | None = None
        for raw in stdout:
            message = parse_backup_message(raw.decode("utf-8", "replace"))
            if isinstance(message, BackupSummary):
                summary = message
            elif isinstance(message, BackupProgress) and on_progress is not None:
                on_progress(message)
        return summary

    def _with_full_id(self, summary: BackupSummary) -> BackupSummary:
        """restic 0.14's summary names the short id; callers keep the full one."""
        short = summary.snapshot_id
        if len(short) == 64:
            return summary
        full = self._local_snapshot_file(short)
        if full is None:
            found = self._run(["snapshots", "--json", _check_snapshot_id(short)])
            matches = [s.id for s in parse_snapshots(found.stdout) if s.id.startswith(short)]
            if len(matches) != 1:
                raise BackupError(f"restic wrote snapshot {short} but cannot list it")
            full = matches[0]
        return dataclasses.replace(summary, snapshot_id=full)

    def _local_snapshot_file(self, short_id: str) -> str | None:
        """For a local repository, the full id from the name of its snapshot file (a directory
        listing, where asking restic would cost a key derivation of ~0.5 s)."""
        directory = Path(self.url) / "snapshots"
        if _is_remote(self.url) or not short_id or not directory.is_dir():
            return None
        # A restic killed while saving leaves `<id>-tmp-<n>` files: only 64-hex names are snapshots.
        names = [p.name for p in directory.iterdir() if len(p.name) == 64 and p.name.startswith(short_id)]
        return names[0] if len(names) == 1 else None

    def _cannot_start(self, exc: OSError) -> RepositoryError:
        if isinstance(exc, FileNotFoundError):
            return RepositoryError(RESTIC_MISSING)
        return RepositoryError(f"cannot run restic ({self._binary}): {exc.strerror or exc}")

    def _forget_quietly(self, snapshot_id: str) -> bool:
        """Forget one snapshot; False if restic could not (forget needs an exclusive lock, which
        another backup into the repository, e.g. a sibling source's, prevents)."""
        try:
            self.forget([snapshot_id], prune=False)
        except BackupError:
            return False
        return True

    def _has_locks(self) -> bool:
        if not _is_remote(self.url):
            locks = Path(self.url) / "locks"
            return locks.is_dir() and any(locks.iterdir())
        listed = self._run(["list", "locks", "--no-lock"], check=False)
        return listed.returncode != 0 or bool(listed.stdout.strip())

    def _clear_stale_locks(self) -> None:
        # A restic that ended without its cleanup (SIGKILL) leaves its lock behind; it is stale
        # once its process is gone, and `unlock` removes exactly those. An interrupted restic
        # removed its own: a local repository without locks needs no `restic unlock` run.
        if not _is_remote(self.url) and not self._has_locks():
            return
        with contextlib.suppress(BackupError):
            self.unlock()

    def _secrets(self) -> list[str]:
        userinfo = re.search(r"://[^/@\s:]*:([^/@\s]+)@", self.url)
        return [self._password, *_secret_values(self._extra_env), *(userinfo.groups() if userinfo else ())]

    def _tail(self, stderr: str) -> str:
        return _redact(_last_lines(stderr), self._secrets())

    def _error(self, command: str, returncode: int, stderr: str) -> BackupError:
        where = redact_url(self.url)
        kind = failure_kind(stderr)
        if kind == "password":
            return RepositoryError(
                f"wrong password for the restic repository at {where}: "
                "check the repository password in the backup settings"
            )
        if kind == "missing" and not _is_remote(self.url) and not Path(self.url).exists():
            return RepositoryUnreachable(
                f"cannot reach the restic repository at {where}: there is no such directory; check"
                " backup.repository, and that the volume holding it is mounted (a backup creates a"
                " repository that was never made)"
            )
        if kind == "missing":
            return RepositoryError(
                f"no restic repository at {where}: initialise it first (init), or fix the repository URL"
            )
        if kind == "locked":
            return RepositoryError(
                f"the restic repository at {where} is locked by another restic: wait for it, or "
                f"if it was killed, unlock the repository ({self._tail(stderr)})"
            )
        if kind == "denied":
            return RepositoryError(
                f"the storage behind the restic repository at {where} refused the credentials: "
                f"check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ({self._tail(stderr)})"
            )
        if kind == "unreachable":
            # The line that says why: restic goes on to ask "Is there a repository…?", which misleads.
            said = [line for line in stderr.splitlines() if _says_unreachable(line)]
            reason = _redact(said[0].strip(), self._secrets()) if said else self._tail(stderr)
            return RepositoryUnreachable(
                f"cannot reach the restic repository at {where}: {reason}; check that its server"
                " (S3, rest-server) runs and answers there, the network, and backup.repository"
            )
        return BackupError(f"restic {command} failed (exit {returncode}) at {where}: {self._tail(stderr)}")


def _orphans(name: str) -> dict[int, int]:
    """This host's `name` processes whose parent died first (init, pid 1, adopted them), pid to
    start time: killed ones not reaped yet (zombies), or still dying."""
    comm = name[:15]  # the kernel keeps 15 bytes of a command name
    found: dict[int, int] = {}
    if os.getpid() == 1:  # we are init (a container's only process): its children are our own
        return found
    try:
        entries = list(os.scandir("/proc"))
    except OSError:  # pragma: no cover - Linux has /proc
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
        # "pid (comm) state ppid ... starttime ...": comm may hold spaces and parentheses.
        fields = text[text.rfind(")") + 2 :].split()
        if text[text.find("(") + 1 : text.rfind(")")] == comm and len(fields) > 19 and fields[1] == "1":
            found[int(entry.name)] = int(fields[19])
    return found


def _wait_until_gone(processes: dict[int, int], timeout_s: float) -> None:
    """Wait until each (pid, start time) has been reaped (a reused pid is another process)."""
    deadline = time.monotonic() + timeout_s
    while processes and time.monotonic() < deadline:
        time.sleep(0.05)
        processes = {
            pid: started
            for pid, started in processes.items()
            if (stat := proc_stat(pid)) is not None and stat.start_time == started
        }


def _stop_when_cancelled(
    proc: _Process, cancel: threading.Event, ended: threading.Event, cancelled: threading.Event
) -> None:
    while not ended.is_set():
        if cancel.wait(0.05):
            if proc.popen.poll() is None:
                cancelled.set()
                proc.interrupt()  # the caller goes on reading restic's output until it ends
            return


class _Process:
    """A restic running under its guard (see `_spawn`), its stderr drained by a thread (so its
    pipe never fills). `control` is the write end of the guard's control pipe."""

    def __init__(self, popen: subprocess.Popen[bytes], stderr: IO[bytes], control: int) -> None:
        self.popen = popen
        self._stderr_stream = stderr
        self._stderr = _TailReader(stderr, keep_all=True)
        self._control = control
        self._control_lock = threading.Lock()  # the pump thread and the caller both tell the guard
        self.killed = False
        """restic had to be SIGKILLed (`stop`): its lock is left behind."""

    def wait(self) -> int:
        return self.popen.wait()

    def interrupt(self) -> None:
        """SIGINT to restic, through its guard: restic removes its lock and exits (130)."""
        self._tell(b"i")

    def end_input(self) -> None:
        """The stream fed to restic's stdin is complete: the guard lets go of the end it holds
        (`hold_input`) and ours is closed, so restic sees the end of its input."""
        self._tell(b"e")
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()

    def stop(self, *, abandon: bool = False) -> None:
        """Interrupt restic and wait for it; past `_STOP_WAIT_S` SIGKILL it with its guard
        (`killed`). abandon: nothing more of its output is read here, so the guard drains it
        (restic must not block on a full pipe)."""
        if abandon:
            self._abandon()
        else:
            self.interrupt()
        try:
            self.popen.wait(timeout=_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            self.popen.wait()

    def kill(self) -> None:
        """SIGKILL the guard and restic (its process group): the last resort, which leaves the
        lock behind (it is stale once restic is gone: `unlock` removes it)."""
        self.killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def stderr_text(self) -> str:
        self._stderr.join()
        return self._stderr.text()

    def close(self) -> None:
        self._stderr.join()
        for stream in (self.popen.stdout, self.popen.stdin, self._stderr_stream):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._abandon()

    def _tell(self, message: bytes) -> None:
        with self._control_lock:
            if self._control >= 0:
                with contextlib.suppress(OSError):  # the guard is gone: restic has ended
                    os.write(self._control, message)

    def _abandon(self) -> None:
        """Close the control pipe: to the guard, as if shipyard had died (it interrupts restic if
        it still runs, and drains its output)."""
        with self._control_lock:
            if self._control >= 0:
                os.close(self._control)
                self._control = -1


class _TailReader:
    """Reads a stream on a thread, keeping its last lines (or all of it)."""

    def __init__(self, stream: IO[bytes], *, keep_all: bool = False) -> None:
        self._lines: deque[str] = deque(maxlen=_STDERR_MAX_LINES if keep_all else _STDERR_TAIL_LINES)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                self._lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def join(self) -> None:
        self._thread.join()

    def text(self) -> str:
        return "\n".join(self._lines)

    def tail(self) -> str:
        return _last_lines(self.text())


def _feed(proc: _Process, data: bytes) -> None:
    """Write all of `data` to restic's stdin, then end its input (`hold_input`)."""
    stdin = proc.popen.stdin
    assert stdin is not None
    try:
        stdin.write(data)
        stdin.flush()
    except OSError:  # restic ended early: its exit status says why
        return
    proc.end_input()


def _pump(
    child: subprocess.Popen[bytes],
    restic: _Process,
    outcome: dict[str, str],
    restic_ended: threading.Event,
) -> None:
    """Copy the command's stdout into restic's stdin; end restic's input only if the command
    succeeded, otherwise interrupt restic with its input still open (its guard holds it: see
    `backup_command`), so that no snapshot of a partial stream is written.

    `outcome["command"]` is set only when the command itself failed, not when it was stopped
    because restic had already ended (`restic_ended`), so the caller blames the right process.
    """
    assert child.stdout is not None
    sink = restic.popen.stdin
    assert sink is not None
    try:
        _copy_pipe(child.stdout.fileno(), sink.fileno())
    except OSError:  # BrokenPipeError: restic died; the caller reports restic's error
        _kill_group(child)
        return
    if child.wait() != 0:
        if not restic_ended.is_set():
            outcome["command"] = "failed"
        restic.stop()
        return
    restic.end_input()


def _copy_pipe(source: int, sink: int) -> None:
    """Copy until end of input; Linux moves pipe-to-pipe bytes in the kernel (splice)."""
    splice = getattr(os, "splice", None)
    if splice is not None:
        while splice(source, sink, _PIPE_CHUNK):
            pass
        return
    while chunk := os.read(source, _PIPE_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(sink, view) :]


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)


_REMOTE_BACKENDS = ("s3:", "sftp:", "rest:", "b2:", "azure:", "gs:", "swift:", "rclone:")


def _is_remote(url: str) -> bool:
    return url.startswith(_REMOTE_BACKENDS)


def _secret_values(env: Mapping[str, str]) -> list[str]:
    return [v for k, v in env.items() if v and any(h in k.upper() for h in _SECRET_KEY_HINTS)]


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _last_lines(text: str, count: int = 5) -> str:
    lines = [readable_stderr_line(line) for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or "(restic printed nothing)"


def readable_stderr_line(line: str) -> str:
    """restic 0.14 `backup --json` reports unreadable files on stderr as JSON whose `error` is
    `{}` (restic#4945, fixed in 0.17); say which item failed, and why when restic says."""
    text = line.strip()
    if not text.startswith("{"):
        return text
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return text
    if not isinstance(message, dict) or message.get("message_type") != "error":
        return text
    error = message.get("error")
    why = error.get("message") if isinstance(error, dict) else error
    item = message.get("item") or "?"
    during = message.get("during") or "backup"
    return f"{item}: {why or 'unreadable'} (during {during})"


def _check_snapshot_id(snapshot_id: str) -> str:
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise BackupError(f"{snapshot_id!r} is not a restic snapshot id (hex digits, or 'latest')")
    return snapshot_id


def _check_tags(tags: Sequence[str]) -> list[str]:
    for tag in tags:
        if not tag or "," in tag or tag.startswith("-") or tag != tag.strip():
            raise BackupError(f"backup tag {tag!r} is invalid: use a non-empty word without commas")
    return list(tags)


def _check_filename(filename: str) -> None:
    if (
        not filename
        or "/" in filename
        or "\0" in filename
        or filename in (".", "..")
        or filename.startswith("-")
    ):
        raise BackupError(
            f"stream file name {filename!r} is invalid: use a plain file name such as 'app.dump'"
        )
