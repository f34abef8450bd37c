"""The spec's `flags:` section is checked by the flag model, which lives in the spec layer: the
spec imports nothing above it (no `shipyard.flags`), and still points at a bad flag's line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from shipyard.errors import SpecError
from shipyard.spec import load_spec_text

SPEC = """\
name: shop
services:
  api: {role: api, image: shop/api:1, port: 8000}
flags:
  - key: new-checkout
    default_value: false
  - key: theme
    type: string
    default_value: light
    prerequisites: [{flag: missing}]
images: {environments: []}  # flags, not which images production may run
"""


def test_a_bad_flag_is_reported_at_its_line() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(SPEC, "s.yaml")
    issues = [str(issue) for issue in caught.value.issues]
    assert any("requires unknown flag 'missing'" in issue for issue in issues), issues
    assert all(issue.startswith("s.yaml:4:") for issue in issues), issues  # the `flags:` section


def test_a_good_flags_section_loads() -> None:
    text = SPEC.replace("    prerequisites: [{flag: missing}]\n", "")
    assert load_spec_text(text).stack("production").flags[1]["key"] == "theme"


def test_the_spec_imports_nothing_of_the_flags_package() -> None:
    code = textwrap.dedent("""
        import sys
        import shipyard.spec
        above = sorted(m for m in sys.modules if m.startswith("shipyard.") and
                       m.split(".")[1] not in ("spec", "errors"))
        print(above)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
