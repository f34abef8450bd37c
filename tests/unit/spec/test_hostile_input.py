"""Hostile spec files: an alias bomb and a huge file are refused with exit 2 and a place, never
with a traceback, an out-of-memory kill or an hour of work."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shipyard.errors import SpecError
from shipyard.spec import load_spec, load_spec_text

SHIPYARD = Path(sys.executable).with_name("shipyard")
MEMORY_CAP = 1 << 30
"""The address space the CLI gets: a bounded loader needs far less, an unbounded one fails."""


def _capped() -> None:
    # Without the cap, the unbounded expansion of a billion laughs eats every byte of the
    # machine (23.5 GB before the kernel's OOM killer ended it).
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def billion_laughs(levels: int = 9) -> str:
    """The classic: each level a list of nine aliases of the one before, 9**levels leaves."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ",".join([f"*l{level - 1}"] * 9) + "]")
    lines.append(f"name: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec_text(textwrap.dedent(text), "s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_billion_laughs_is_refused_with_exit_2_and_the_line_of_the_alias(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 500  # a few hundred bytes
    result = subprocess.run(
        [str(SHIPYARD), "validate", "-f", str(bomb)],
        preexec_fn=_capped,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    assert "MemoryError" not in output
    found = re.search(rf"{re.escape(str(bomb))}:(\d+):\d+:", output)
    assert found, output
    line = bomb.read_text().splitlines()[int(found.group(1)) - 1]
    assert "*l" in line, f"the error points at line {found.group(1)}, which holds no alias: {line}"
    assert "alias" in output


def test_an_alias_of_a_long_string_is_bounded_by_the_bytes_it_expands_to() -> None:
    # Few nodes, many bytes: 300 copies of 100 kB is 30 MB once expanded.
    found = problems(
        f"name: shop\nblob: &blob {'x' * 100_000}\ncopies:\n" + "".join("  - *blob\n" for _ in range(300))
    )
    assert len(found) == 1, found
    line = int(found[0].split(":")[1])
    assert 3 < line <= 303, found  # one of the aliases, not the anchor
    assert "alias" in found[0]
    assert "MiB" in found[0]


def test_merge_keys_are_counted_like_any_alias() -> None:
    lines = ["name: shop", "m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    for level in range(1, 6):  # about a million nodes expanded
        keys = ", ".join(f"k{i}: *m{level - 1}" for i in range(8))
        lines.append(f"m{level}: &m{level} {{<<: *m{level - 1}, {keys}}}")
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 1, found
    assert "alias" in found[0], found


def test_aliases_a_spec_really_uses_still_load() -> None:
    text = textwrap.dedent(
        """\
        name: shop
        services:
          api:
            role: api
            image: i
            port: 8000
            resources: &small
              requests: {cpu: 100m, memory: 128Mi}
              limits: {cpu: 500m, memory: 512Mi}
          web: {role: web, image: i, port: 8001, resources: *small}
        images: {environments: []}
        """
    )
    stack = load_spec_text(text).stack("production")
    assert stack.services["web"].resources == stack.services["api"].resources


def test_a_spec_file_over_10_mib_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    # A 50 MB spec rendered a 46 MB ConfigMap with exit 0; the file itself is the first bound.
    big = tmp_path / "shipyard.yaml"
    filler = "x" * (11 * 1024 * 1024)
    big.write_text(
        f"name: shop\nservices:\n  api: {{role: api, image: i, port: 8000, env: {{BIG: {filler}}}}}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_spec(big)
    (issue,) = caught.value.issues
    assert issue.file == str(big)
    assert "11.0 MiB" in issue.message
    assert "10 MiB" in issue.message
    with pytest.raises(SpecError) as caught:
        load_spec_text(big.read_text(), "given.yaml")
    assert "10 MiB" in str(caught.value)
