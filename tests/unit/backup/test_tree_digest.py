"""The file-tree digest: equal for equal content wherever and whenever restored, different otherwise."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.backup import tree_digest

names = st.text(alphabet="abcxyz-_.", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))


def _build(root: Path, tree: dict[str, bytes]) -> None:
    for relative, content in tree.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


@settings(max_examples=15, deadline=None)
@given(
    tree=st.dictionaries(
        st.lists(names, min_size=1, max_size=3).map("/".join), st.binary(max_size=64), max_size=6
    )
)
def test_a_copy_has_the_same_digest_and_any_change_changes_it(tree: dict[str, bytes]) -> None:
    base = Path(tempfile.mkdtemp())
    try:
        # A path cannot be both a file and a directory: keep the first of each clash.
        kept: dict[str, bytes] = {}
        for relative, content in sorted(tree.items()):
            parts = relative.split("/")
            prefixes = {"/".join(parts[:i]) for i in range(1, len(parts))}
            if prefixes & set(kept) or any(k.startswith(relative + "/") for k in kept):
                continue
            kept[relative] = content
        original, copy = base / "a", base / "b"
        original.mkdir()
        _build(original, kept)
        shutil.copytree(original, copy)
        for path in copy.rglob("*"):
            os.utime(path, (0, 0))  # times are not content
        digest = tree_digest(original)
        assert tree_digest(copy) == digest
        assert digest.files == len(kept)
        assert digest.bytes == sum(len(c) for c in kept.values())
        if kept:
            first = sorted(kept)[0]
            (copy / first).write_bytes(kept[first] + b"!")
            assert tree_digest(copy).sha256 != digest.sha256
    finally:
        shutil.rmtree(base)


def test_renames_symlink_targets_and_empty_directories_count(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("x")
    (root / "link").symlink_to("d/f")
    digest = tree_digest(root)
    (root / "empty").mkdir()
    with_empty = tree_digest(root)
    assert with_empty.sha256 != digest.sha256
    (root / "link").unlink()
    (root / "link").symlink_to("d")
    assert tree_digest(root).sha256 != with_empty.sha256
    (root / "d" / "f").rename(root / "d" / "g")
    assert tree_digest(root).files == 1
    assert tree_digest(root / "d" / "g").files == 1  # a single file: its own checksum
