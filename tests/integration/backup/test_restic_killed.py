"""A process streaming a command's output into restic (`backup_command`, as a pg_dump would be)
SIGKILLed with its whole process group mid-stream: restic must neither keep its lock (a plain
`restic check`, which wants an exclusive lock, passes once the killed process's restics are
gone) nor store a snapshot of the truncated stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.restic import PASSWORD, has_finished_lock, local_repository, restic_binary, working_on

pytestmark = pytest.mark.integration

# The killed process: streams an endless producer (it writes until its reader is gone, as pg_dump
# does) into the repository; `marker` appears once restic has been fed a few megabytes.
STREAMER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from shipyard.backup._restic import ResticRepository

    url, cache, marker = sys.argv[1:4]
    producer = (
        "import pathlib, sys, time\\n"
        "out, fed = sys.stdout.buffer, 0\\n"
        "while True:\\n"
        "    out.write(os.urandom(1 << 16)); out.flush(); fed += 1\\n"
        "    if fed == 64: pathlib.Path(sys.argv[1]).touch()\\n"
        "    time.sleep(0.002)\\n"
    ).replace("os.urandom", "__import__('os').urandom")
    repository = ResticRepository(url, os.environ["TEST_RESTIC_PASSWORD"], cache_dir=Path(cache))
    repository.backup_command([sys.executable, "-c", producer, marker], "stream.bin", tags=["killed"])
    """
)


def _plain_env(repository: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    return env | {"RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": PASSWORD}


def test_a_stream_killed_midway_leaves_no_lock_and_no_snapshot(tmp_path: Path) -> None:
    repository = local_repository(tmp_path)
    repository.init()
    directory = Path(repository.url)
    marker = tmp_path / "fed"
    streamer = subprocess.Popen(
        [sys.executable, "-c", STREAMER, str(directory), str(tmp_path / "cache"), str(marker)],
        env={**os.environ, "TEST_RESTIC_PASSWORD": PASSWORD},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "streamer.err").open("w"),
        start_new_session=True,  # its own process group: the kill takes everything in it
    )
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and has_finished_lock(directory)):
            assert streamer.poll() is None, (tmp_path / "streamer.err").read_text()
            assert time.monotonic() < deadline, "restic was not fed in 60 s"
            time.sleep(0.02)
    finally:
        os.killpg(streamer.pid, signal.SIGKILL)
        streamer.wait()

    deadline = time.monotonic() + 60
    while processes := working_on(directory):
        assert time.monotonic() < deadline, f"the killed stream's restic did not end: {processes}"
        time.sleep(0.05)
    env = _plain_env(directory)
    listed = subprocess.run(
        [restic_binary(), "snapshots", "--json", "--no-lock"], env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(listed.stdout) in (None, []), "a snapshot of the truncated stream was stored"
    check = subprocess.run(
        [restic_binary(), "check"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert check.returncode == 0, f"restic check failed:\n{check.stdout}\n{check.stderr}"
    assert not has_finished_lock(directory)  # (restic ignores a lock killed half-written)
