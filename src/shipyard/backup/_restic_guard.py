"""The parent every restic runs under, so that a killed shipyard never leaves restic's lock behind.

Run as a script, never imported (`python -I -S _restic_guard.py CONTROL OUT ERR HELD GLOBAL --
restic ...`, started by `ResticRepository._spawn` in a session of its own): it needs nothing but
the standard library, and starts in a few milliseconds.

Why it exists. restic 0.14 removes its repository lock only when it ends by itself or on SIGINT
(its cleanup handler). A `shipyard backup` killed with its process group (SIGKILL, as a supervisor
or an operator does) used to take restic down with it, and the lock stayed until someone ran
`restic unlock`: a plain `restic check` failed meanwhile. Here restic is outside shipyard's
process group, and this guard turns shipyard's death into a SIGINT for restic:

- CONTROL is the read end of a pipe whose only write end shipyard holds. It reaches end of file
  when shipyard closes it or dies, however it dies: a signal-free, race-free death notice (unlike
  PR_SET_PDEATHSIG, which fires when the spawning *thread* ends and misses a parent that died
  before it was set). shipyard also writes single bytes on it: `i` interrupt restic (shipyard is
  alive and keeps reading restic's output), `e` the stream on restic's stdin is complete.
- OUT and ERR are read ends of restic's stdout and stderr pipes, which shipyard reads. The guard
  holds them so that those pipes are never broken: restic (Go) dies of SIGPIPE, without its
  cleanup, on its first write to a broken stdout or stderr, and it writes both when interrupted.
  Once shipyard is gone the guard drains them, so restic never blocks on a full pipe either.
- HELD (or -1) is a second write end of restic's stdin pipe, for a stream fed by shipyard
  (`backup_command`). restic takes the end of its input for the end of the stream and would store
  a snapshot of what it got; while the guard holds HELD, shipyard's death is no end of input.
  The guard lets go of it only on `e`, which shipyard sends once the stream is known complete.

restic itself gets PR_SET_PDEATHSIG=SIGINT against the guard (single-threaded, so the thread rule
cannot misfire; the parent's pid is checked after setting it, which closes the window between
fork and prctl), in case the guard itself is killed.

When restic was interrupted, or a signal ended it, the guard runs `restic unlock` once it has
reaped it (see the end of `main`: SIGINT alone misses a lock restic is still taking); GLOBAL is
how many leading words of the restic command line are the binary and its global options, which
that run reuses. The guard exits with restic's exit status (128 + N when a signal N ended it).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_NO_PARENT = 125
"""restic's exit status when the guard was gone before restic could start."""
_UNLOCK_TIMEOUT_S = 300


def _interrupt_with_parent() -> Callable[[], None]:
    """What restic's process runs before exec: SIGINT when the guard dies (see the module).
    libc is looked up here, before the fork, not in the child."""
    guard = os.getpid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the control pipe still covers shipyard's death
        prctl = None

    def in_child() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
        if os.getppid() != guard:  # the guard died between fork and prctl
            os._exit(_NO_PARENT)

    return in_child


def _exit_status(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _unlock(restic: list[str]) -> None:
    """Run `restic unlock` (its output is of no use to anyone now)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([*restic, "unlock"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=_UNLOCK_TIMEOUT_S, check=False)  # fmt: skip


def main(argv: list[str]) -> int:
    if len(argv) < 7 or argv[5] != "--" or not argv[4].isdigit():
        sys.stderr.write("usage: _restic_guard.py CONTROL OUT ERR HELD GLOBAL -- restic ARGS...\n")
        return 2
    control, out, err, held, global_count = (int(value) for value in argv[:5])
    command = argv[6:]
    try:
        # preexec_fn is safe here: the guard has no other thread.
        restic = subprocess.Popen(command, preexec_fn=_interrupt_with_parent())  # noqa: PLW1509
    except OSError as exc:  # reported on restic's stderr, which shipyard reads
        sys.stderr.write(f"cannot run {command[0]}: {exc.strerror or exc}\n")
        return 127
    # restic has its own copies of stdin, stdout and stderr. Drop the guard's: restic's end of
    # input and its death must reach shipyard as they would without a guard in between.
    devnull = os.open(os.devnull, os.O_RDWR)
    for descriptor in (0, 1, 2):
        os.dup2(devnull, descriptor)
    os.close(devnull)

    try:
        exited = os.pidfd_open(restic.pid)
    except (AttributeError, OSError):  # no pidfd (Linux < 5.3): look every 50 ms instead
        exited = -1
    poller = select.poll()
    poller.register(control, select.POLLIN)
    if exited >= 0:
        poller.register(exited, select.POLLIN)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        if not interrupted:  # restic is our child, not reaped yet: its pid is still its own
            interrupted = True
            with contextlib.suppress(ProcessLookupError):
                restic.send_signal(signal.SIGINT)

    while restic.poll() is None:
        for descriptor, _ in poller.poll(None if exited >= 0 else 50):
            if descriptor == exited:
                continue  # the loop's test reaps it
            if descriptor == control:
                message = os.read(control, 64)
                if not message:  # shipyard is gone, or gave restic up: stop it, drain its output
                    poller.unregister(control)
                    interrupt()
                    for stream in (out, err):
                        poller.register(stream, select.POLLIN)
                if b"e" in message and held >= 0:
                    os.close(held)
                    held = -1
                if b"i" in message:
                    interrupt()
            elif not os.read(descriptor, 1 << 16):
                poller.unregister(descriptor)
    returncode = restic.wait()
    if interrupted or returncode < 0:
        # restic's cleanup misses its lock when a signal it cannot handle ends it (SIGKILL, say by
        # the OOM killer), and when SIGINT comes between writing its lock file and registering
        # it for removal (restic waits ~200 ms there to see rival locks). Either way restic is
        # reaped now: its lock is provably stale (this host, its pid gone), which is exactly
        # what `restic unlock` removes, and live restics' locks are left alone.
        _unlock(command[:global_count])
    return _exit_status(returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
