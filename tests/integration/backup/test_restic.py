"""ResticRepository against the real restic 0.14 binary: local repositories in temp dirs and an
S3 repository on moto's server. Every restic command costs ~0.5 s of key derivation, so tests
share one repository where they only add snapshots, and copy it where they damage it."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipyard.backup._restic import RESTIC_MISSING, BackupProgress, BackupSummary, ResticRepository
from shipyard.errors import BackupError, RepositoryError, RepositoryUnreachable
from support.restic import (
    PASSWORD,
    flip_byte,
    has_finished_lock,
    kill_restic_child,
    local_repository,
    pack_files,
    random_bytes,
    restic_binary,
    tree_digest,
    write_tree,
)
from support.s3 import S3Server, s3_server
from support.servers import free_port

pytestmark = pytest.mark.integration

TREE = {
    "app/settings.toml": b"debug = false\n",
    "uploads/2026/photo.bin": random_bytes(300_000, seed=1),
    "uploads/2026/empty": b"",
    "docs/readme.txt": b"hello\n" * 1000,
}


@dataclass(frozen=True)
class Shared:
    base: Path
    repo: ResticRepository
    tree: Path
    first: BackupSummary
    taken: tuple[datetime, datetime]
    """When the first backup began and ended."""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Shared:
    """One initialised repository holding one backup of TREE (tag `tree`)."""
    base = tmp_path_factory.mktemp("restic")
    repo = local_repository(base)
    repo.init()
    tree = write_tree(base / "tree", TREE)
    (tree / "empty-dir").mkdir()
    began = datetime.now(UTC)
    first = repo.backup_path(tree, tags=["tree"], host="web-1")
    return Shared(base=base, repo=repo, tree=tree, first=first, taken=(began, datetime.now(UTC)))


def copy_of(shared: Shared, tmp_path: Path) -> tuple[ResticRepository, Path]:
    """A private copy of the shared repository (own cache: the copy has the same repository id)."""
    directory = tmp_path / "repo-copy"
    shutil.copytree(Path(shared.repo.url), directory)
    return ResticRepository(str(directory), PASSWORD, cache_dir=tmp_path / "cache"), directory


def test_init_is_idempotent_and_a_relative_url_stays_put(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    repo = ResticRepository("repo", PASSWORD, cache_dir=Path("restic-cache"))
    assert repo.url == str(tmp_path / "repo")
    assert repo.exists() is False
    # Two inits at once: restic 0.14 alone would let both write a master key.
    twin = ResticRepository("repo", PASSWORD, cache_dir=Path("twin-cache"))
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ResticRepository.init, [repo, twin]))
    assert len(list((tmp_path / "repo" / "keys").iterdir())) == 1
    assert repo.exists() is True
    config = (tmp_path / "repo" / "config").read_bytes()
    repo.init()  # a second init changes nothing
    assert (tmp_path / "repo" / "config").read_bytes() == config
    assert any((tmp_path / "restic-cache").iterdir()), "restic used the chosen cache dir"
    # restic runs inside the backed-up directory; the relative URL must not follow it there.
    summary = repo.backup_path(write_tree(tmp_path / "small", {"a.txt": b"a"}))
    assert not (tmp_path / "small" / "repo").exists()
    assert (tmp_path / "repo" / "snapshots" / summary.snapshot_id).is_file()


def test_backup_path_then_restore_gives_identical_bytes(shared: Shared, tmp_path: Path) -> None:
    summary = shared.first
    assert len(summary.snapshot_id) == 64
    assert summary.files_new == len(TREE)
    assert summary.total_files_processed == len(TREE)
    assert summary.total_bytes_processed == sum(len(v) for v in TREE.values())

    [snapshot] = [s for s in shared.repo.snapshots(tags=["tree"]) if s.id == summary.snapshot_id]
    assert snapshot.tags == ("tree",)
    assert snapshot.hostname == "web-1"
    assert snapshot.paths == (str(shared.tree),)
    assert snapshot.time.tzinfo == UTC
    began, ended = shared.taken  # the snapshot's time is when it was taken, read in UTC
    assert began - timedelta(seconds=1) <= snapshot.time <= ended + timedelta(seconds=1)

    target = tmp_path / "restored"
    shared.repo.restore(summary.snapshot_id, target)
    assert tree_digest(target) == tree_digest(shared.tree)
    assert (
        tree_digest(target)["uploads/2026/photo.bin"]
        == hashlib.sha256(TREE["uploads/2026/photo.bin"]).hexdigest()
    )


def test_restore_include_restores_only_matching_files(shared: Shared, tmp_path: Path) -> None:
    target = tmp_path / "partial"
    shared.repo.restore(shared.first.snapshot_id, target, include=["/app/settings.toml"])
    assert (target / "app" / "settings.toml").read_bytes() == TREE["app/settings.toml"]
    assert not (target / "uploads").exists()


def test_second_backup_of_unchanged_tree_adds_almost_nothing(shared: Shared) -> None:
    again = shared.repo.backup_path(shared.tree, tags=["tree"], host="web-1")
    assert again.snapshot_id != shared.first.snapshot_id
    assert again.files_unmodified == len(TREE)
    assert again.files_new == again.files_changed == 0
    assert again.data_added < 1024 < shared.first.data_added


def test_backup_single_file(shared: Shared, tmp_path: Path) -> None:
    single = tmp_path / "one.bin"
    single.write_bytes(random_bytes(10_000, seed=5))
    summary = shared.repo.backup_path(single, tags=["single"])
    out = io.BytesIO()
    shared.repo.dump(summary.snapshot_id, "one.bin", out)
    assert out.getvalue() == single.read_bytes()


def test_backup_command_streams_output_and_dump_returns_it(shared: Shared) -> None:
    size = 5 * 1024 * 1024
    program = (
        "import random, sys\n"
        f"data = random.Random(9).randbytes({size})\n"
        "for i in range(0, len(data), 65536): sys.stdout.buffer.write(data[i:i + 65536])\n"
    )
    summary = shared.repo.backup_command([sys.executable, "-c", program], "app.dump", tags=["stream"])
    assert summary.total_bytes_processed == size
    assert summary.data_added >= size  # random bytes do not compress

    [snapshot] = shared.repo.snapshots(tags=["stream"])
    assert snapshot.id == summary.snapshot_id
    assert snapshot.paths == ("/app.dump",)

    out = io.BytesIO()
    shared.repo.dump(summary.snapshot_id, "app.dump", out)
    expected = random_bytes(size, seed=9)
    assert hashlib.sha256(out.getvalue()).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_backup_command_passes_env_to_the_command_not_restic_secrets(shared: Shared) -> None:
    program = (
        "import os, sys\n"
        "sys.stdout.write(os.environ.get('GREETING', '') + os.environ.get('RESTIC_PASSWORD', '-'))\n"
    )
    summary = shared.repo.backup_command(
        [sys.executable, "-c", program], "env.txt", tags=["env"], env={"GREETING": "hi"}
    )
    out = io.BytesIO()
    shared.repo.dump(summary.snapshot_id, "env.txt", out)
    assert out.getvalue() == b"hi-"  # the command never sees the repository password


def test_failing_command_raises_and_leaves_no_snapshot(shared: Shared) -> None:
    script = "head -c 2000000 /dev/urandom; echo 'pg_dump: connection refused' >&2; exit 3"
    with pytest.raises(BackupError, match="exited with status 3") as caught:
        shared.repo.backup_command(["sh", "-c", script], "broken.dump", tags=["broken"])
    assert "connection refused" in str(caught.value)
    assert shared.repo.snapshots(tags=["broken"]) == []
    # (a lock killed half-written is ignored by restic, so only finished ones count)
    assert not has_finished_lock(Path(shared.repo.url)), "the killed restic's lock was removed"


def test_command_is_stopped_when_restic_dies(shared: Shared, tmp_path: Path) -> None:
    marker = tmp_path / "still-running"
    # Writes forever, so only a kill ends it; `marker` shows it is running.
    program = (
        "import sys, pathlib\n"
        f"marker = pathlib.Path({str(marker)!r})\n"
        "while True:\n"
        "    sys.stdout.buffer.write(b'x' * 65536); marker.touch()\n"
    )
    killed: list[int] = []
    killer = threading.Thread(
        target=lambda: killed.append(kill_restic_child(when=marker.exists)), daemon=True
    )
    killer.start()
    with pytest.raises(BackupError, match="backup --stdin failed"):
        shared.repo.backup_command([sys.executable, "-c", program], "endless.bin", tags=["endless"])
    killer.join()
    assert killed, "the test never killed restic"
    children = subprocess.run(
        ["ps", "-o", "args=", "--ppid", str(os.getpid())], capture_output=True, text=True, check=True
    ).stdout
    assert "marker.touch" not in children, "the command outlived restic"
    assert shared.repo.snapshots(tags=["endless"]) == []


def test_progress_is_reported_for_a_larger_tree(tmp_path: Path, shared: Shared) -> None:
    tree = write_tree(tmp_path / "big", {f"f{i}.bin": random_bytes(4_000_000, seed=10 + i) for i in range(5)})
    repo = ResticRepository(
        shared.repo.url, PASSWORD, cache_dir=shared.base / "restic-cache", progress_fps=50
    )
    seen: list[BackupProgress] = []
    summary = repo.backup_path(tree, tags=["big"], on_progress=seen.append)
    assert summary.total_bytes_processed == 20_000_000
    assert seen, "on_progress was never called"
    assert all(0.0 <= p.fraction <= 1.0 for p in seen)
    assert any(p.bytes_done > 0 for p in seen)
    assert max(p.total_bytes for p in seen) == 20_000_000


def test_files_vanishing_mid_backup_fail_it_and_leave_no_snapshot(tmp_path: Path, shared: Shared) -> None:
    # As root nothing is unreadable, but a file deleted after restic listed its directory is:
    # restic 0.14 then writes a snapshot without it and exits 3. Its two file readers are busy
    # with a1/a2 and it has opened m.txt, so it reaches z.txt only after they finish.
    files = {"a1.bin": random_bytes(15_000_000, seed=3), "a2.bin": random_bytes(15_000_000, seed=4)}
    tree = write_tree(tmp_path / "t", {**files, "m.txt": b"middle", "z.txt": b"late"})
    repo = ResticRepository(
        shared.repo.url, PASSWORD, cache_dir=shared.base / "restic-cache", progress_fps=50
    )

    def delete_late_file(progress: BackupProgress) -> None:
        if progress.bytes_done > 0:  # restic is reading a1/a2: it listed the directory
            (tree / "z.txt").unlink(missing_ok=True)

    with pytest.raises(BackupError, match="could not read some files") as caught:
        repo.backup_path(tree, tags=["vanishing"], on_progress=delete_late_file)
    assert "z.txt" in str(caught.value)
    assert repo.snapshots(tags=["vanishing"]) == []


def test_a_raising_progress_callback_stops_restic_and_leaves_no_lock(shared: Shared, tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def cancel(progress: BackupProgress) -> None:
        raise Cancelled

    # Big enough that restic is still reading when its first status line arrives.
    tree = write_tree(tmp_path / "t", {"big.bin": random_bytes(20_000_000, seed=8)})
    with pytest.raises(Cancelled):
        shared.repo.backup_path(tree, tags=["cancelled"], on_progress=cancel)
    assert not has_finished_lock(Path(shared.repo.url))
    assert shared.repo.snapshots(tags=["cancelled"]) == []


def test_wrong_password_is_a_repository_error_without_the_password(shared: Shared) -> None:
    wrong = "not-the-Password-42"
    repo = ResticRepository(shared.repo.url, wrong, cache_dir=shared.base / "restic-cache")
    with pytest.raises(RepositoryError, match="password") as caught:
        repo.snapshots()
    assert wrong not in str(caught.value)
    assert PASSWORD not in str(caught.value)
    with pytest.raises(RepositoryError, match="password"):
        repo.init()  # init must not paper over a wrong password


def test_missing_repository_is_a_repository_error(tmp_path: Path) -> None:
    repo = local_repository(tmp_path, name="never-created")
    assert repo.exists() is False
    # No directory at all: out of reach (an unmounted volume?) rather than "not initialised".
    with pytest.raises(RepositoryUnreachable, match="there is no such directory"):
        repo.snapshots()
    (tmp_path / "never-created").mkdir()  # a directory without a repository in it
    with pytest.raises(RepositoryError, match="no restic repository at"):
        repo.snapshots()


def test_restic_not_installed(tmp_path: Path) -> None:
    repo = ResticRepository(str(tmp_path / "r"), PASSWORD, binary=str(tmp_path / "no-restic-here"))
    with pytest.raises(RepositoryError) as caught:
        repo.exists()
    assert str(caught.value) == RESTIC_MISSING


def test_check_detects_a_corrupted_pack(shared: Shared, tmp_path: Path) -> None:
    repo, directory = copy_of(shared, tmp_path)
    assert repo.check(read_data_subset="100%").ok is True
    pack = pack_files(directory)[0]
    flip_byte(pack)
    result = repo.check(read_data_subset="100%")
    assert result.ok is False
    assert any(pack.name in error for error in result.errors), result.errors


def test_forget_removes_a_snapshot(shared: Shared, tmp_path: Path) -> None:
    repo, directory = copy_of(shared, tmp_path)
    # (a restic killed while saving leaves `<id>-tmp-<n>` files, which are not snapshots)
    before = sorted(p.name for p in (directory / "snapshots").iterdir() if len(p.name) == 64)
    assert shared.first.snapshot_id in before
    repo.forget([shared.first.snapshot_id, "0123abcd"], prune=True)  # an unknown id is ignored
    after = [s.id for s in repo.snapshots()]
    assert sorted(after) == [s for s in before if s != shared.first.snapshot_id]


def test_unlock_clears_the_lock_of_a_killed_backup(shared: Shared, tmp_path: Path) -> None:
    repo, directory = copy_of(shared, tmp_path)
    env = {**os.environ, "RESTIC_REPOSITORY": str(directory), "RESTIC_PASSWORD": PASSWORD}
    program = "import sys, time; sys.stdout.write('x' * 100000); sys.stdout.flush(); time.sleep(60)"
    slow = [sys.executable, "-c", program]
    with subprocess.Popen(slow, stdout=subprocess.PIPE) as feeder:
        restic = subprocess.Popen(
            [restic_binary(), "--cache-dir", str(tmp_path / "cache"), "backup", "--stdin"],
            stdin=feeder.stdout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert kill_restic_child(when=lambda: has_finished_lock(directory)) == restic.pid
        assert restic.wait() == -9
        feeder.kill()
    assert has_finished_lock(directory), "the killed restic left its lock"

    with pytest.raises(RepositoryError, match="locked"):
        repo.check()  # check wants an exclusive lock: the stale one blocks it
    repo.unlock()
    assert not any((directory / "locks").iterdir())  # the stale lock is gone
    summary = repo.backup_path(shared.tree, tags=["after-unlock"])
    assert (directory / "snapshots" / summary.snapshot_id).is_file()


def test_unlock_clears_the_lock_of_a_restic_killed_with_its_parent(shared: Shared, tmp_path: Path) -> None:
    # As when `shipyard backup` is killed with its process group: restic dies with its parent, so
    # init adopts it and it stays a zombie until init reaps it (seconds later with some inits).
    # restic's own staleness test (does the pid take a signal?) calls a zombie alive.
    repo, directory = copy_of(shared, tmp_path)
    env = {**os.environ, "RESTIC_REPOSITORY": str(directory), "RESTIC_PASSWORD": PASSWORD}
    script = 'sleep 60 | "$0" --cache-dir "$1" backup --stdin'
    parent = subprocess.Popen(
        ["sh", "-c", script, restic_binary(), str(tmp_path / "cache")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not has_finished_lock(directory):  # restic waits on its stdin, its lock taken
        assert parent.poll() is None, "restic ended before it took its lock"
        assert time.monotonic() < deadline, "restic took no lock in 60 s"
        time.sleep(0.02)
    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()

    repo.unlock()
    assert not any((directory / "locks").iterdir())  # the dead restic's lock is gone


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


def test_s3_repository_round_trip(s3: S3Server, tmp_path: Path) -> None:
    url = s3.restic_url("shipyard/restic")
    repo = ResticRepository(url, PASSWORD, env=s3.env, cache_dir=tmp_path / "cache")
    repo.init()
    assert any(key.startswith("shipyard/restic/keys/") for key in s3.list_keys("shipyard/restic/"))

    tree = write_tree(tmp_path / "tree", TREE)
    summary = repo.backup_path(tree, tags=["s3"])
    assert [s.id for s in repo.snapshots(tags=["s3"])] == [summary.snapshot_id]
    target = tmp_path / "restored"
    repo.restore(summary.snapshot_id, target)
    assert tree_digest(target) == tree_digest(tree)
    assert repo.check(read_data_subset="100%").ok is True


def test_unreachable_s3_is_a_repository_error(tmp_path: Path) -> None:
    secret = "unreachable-secret-key"
    url = f"s3:http://127.0.0.1:{free_port()}/bucket/repo"
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": secret}
    repo = ResticRepository(url, PASSWORD, env=env, cache_dir=tmp_path / "cache")
    with pytest.raises(RepositoryError, match="cannot reach") as caught:
        repo.exists()
    assert secret not in str(caught.value)
    assert PASSWORD not in str(caught.value)
