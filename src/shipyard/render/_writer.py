"""The one writer of rendered trees: all of it or none of it, and never over someone's files.

Files are written into a temporary directory next to the target and swapped in only when every
file is on disk, so a failure leaves an existing output exactly as it was. A directory is only
ever replaced if it is empty or was written here (it holds the marker file), so `-o .` cannot wipe
a working tree.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from ..errors import UserError

MARKER = ".shipyard-rendered"
_MARKER_TEXT = "Written by `shipyard render`; the whole directory is replaced on every render.\n"


def _check_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or name == MARKER:
        raise ValueError(f"not a file name inside the output: {name!r}")
    return path


def write_tree(files: Mapping[str, str], out_dir: str | Path) -> Path:
    """Replace `out_dir` with exactly `files` (relative POSIX path -> text); return its path."""
    target = Path(out_dir).absolute()
    relative = {name: _check_relative(name) for name in files}
    if target.exists():
        if not target.is_dir():
            raise UserError(f"{target} exists and is not a directory; choose another output")
        if any(target.iterdir()) and not (target / MARKER).is_file():
            raise UserError(
                f"{target} is not empty and was not written by shipyard; refusing to replace it."
                " Choose an empty or new directory"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        for name, path in sorted(relative.items()):
            destination = staging.joinpath(*path.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(files[name], encoding="utf-8")
        (staging / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the output is an ordinary directory
        _swap(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _swap(staging: Path, target: Path) -> None:
    """Move `staging` to `target`, the old `target` aside first and removed only at the end."""
    if not target.exists():
        os.replace(staging, target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(retired)  # only its unique name is wanted: rename needs the place free
    os.replace(target, retired)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(retired, target)
        raise
    shutil.rmtree(retired, ignore_errors=True)
