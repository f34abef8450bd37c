"""Releases run by a process of their own: started in a new session, logging to a file.

`shipyard deploy --detach` starts the ordinary `deploy` in the background and returns once that
process has recorded the release. The background process is a plain controller run: stopped or
killed, `shipyard rollout resume` carries the release on as after any other stop.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ..errors import RolloutError, ShipyardError, UserError
from ..state import RolloutRow


@dataclass
class Detached:
    """A release's process running on its own, and the file it writes its output to."""

    process: subprocess.Popen[bytes]
    log: Path


def spawn(argv: Sequence[str], log_dir: Path, env: Mapping[str, str]) -> Detached:
    """Start `argv` in a new session (a Ctrl-C or hang-up of this terminal does not reach it)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"starting-{os.getpid()}-{time.time_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            close_fds=True,
        )
    return Detached(process, log)


def last_release_id(sessions: sessionmaker[Session]) -> int:
    """The newest release's id (0 when there is none): a detached one will have a larger one."""
    with sessions() as session:
        return session.scalar(select(RolloutRow.id).order_by(RolloutRow.id.desc()).limit(1)) or 0


def wait_recorded(
    sessions: sessionmaker[Session],
    detached: Detached,
    service: str,
    version: str,
    after_id: int,
    timeout_s: float = 60.0,
) -> int:
    """The id of the release `detached` recorded; its log is then renamed `<id>.log`.

    If the process ends without recording one (a refused request), its error is raised again
    here with its exit code; if it neither records one nor ends in `timeout_s`, RolloutError.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            rollout_id = session.scalar(
                select(RolloutRow.id)
                .where(
                    RolloutRow.id > after_id, RolloutRow.service == service, RolloutRow.candidate == version
                )
                .order_by(RolloutRow.id)
                .limit(1)
            )
        if rollout_id is not None:
            named = detached.log.with_name(f"{rollout_id}.log")
            detached.log.rename(named)  # the process keeps writing to the same file
            detached.log = named
            return rollout_id
        code = detached.process.poll()
        if code is not None:
            raise _failure(detached, code)
        if time.monotonic() > deadline:
            raise RolloutError(
                f"the background release of {service} {version} (pid {detached.process.pid}) has not"
                f" recorded itself after {timeout_s:.0f} s; see {detached.log}"
            )
        time.sleep(0.1)


def _failure(detached: Detached, code: int) -> ShipyardError:
    """The error the background process ended with, from its log."""
    lines = [line.rstrip() for line in detached.log.read_text(errors="replace").splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("error:")]
    if starts:  # the CLI's message, with the lines that follow it (a spec's problems)
        message = "\n".join(lines[starts[-1] :]).removeprefix("error:").strip()
    else:
        message = lines[-1] if lines else f"it ended with exit code {code}"
    error: ShipyardError = (
        UserError(message) if code == UserError.exit_code else RolloutError(f"{message} (see {detached.log})")
    )
    error.exit_code = code or 1
    return error
