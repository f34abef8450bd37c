from __future__ import annotations

from pathlib import Path

from shipyard.render import dump_all, render_kubernetes
from shipyard.spec import load_spec


def test_manifests_have_no_yaml_aliases(apricode_spec: Path) -> None:
    # The init container shares the app container's env list; it must be written out twice.
    text = dump_all(render_kubernetes(load_spec(apricode_spec).stack("production")))
    assert "&id" not in text
    assert "*id" not in text
    assert text.count("name: NEXTAUTH_SECRET") == 2
