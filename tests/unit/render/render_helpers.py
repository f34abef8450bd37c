"""Helpers for the render tests: small specs written inline, objects by kind.

Imported as `unit.render.render_helpers` (tests/ is on the path).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from shipyard.spec import Spec, load_spec_text

ROOT = Path(__file__).resolve().parents[3]


NO_IMAGE_POLICY = "images: {environments: []}\n"
"""The image policy applied to no environment: what these specs render is not about which images
production may run (tests/unit/spec/test_image_policy.py is), so their tags need no digests."""


def spec_from(text: str) -> Spec:
    """A spec from YAML written in a test (dedented), with NO_IMAGE_POLICY appended (last, so
    the lines a test's expected problems name do not move)."""
    dedented = textwrap.dedent(text)
    return load_spec_text(dedented.rstrip("\n") + "\n" + NO_IMAGE_POLICY, "test.yaml")


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
