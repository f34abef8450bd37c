from __future__ import annotations

from pathlib import Path

from shipyard.render import dump_all, render_kubernetes
from shipyard.spec import load_spec


def test_manifests_have_no_yaml_aliases(apricode_spec: Path) -> None:
    # The init container shares the app container's env list; it must be written out twice.
    objects = render_kubernetes(load_spec(apricode_spec).stack("production"))
    text = dump_all(objects)
    assert "&id" not in text
    assert "*id" not in text
    deployment = dump_all([o for o in objects if o["kind"] == "Deployment"])
    assert deployment.count("name: NEXTAUTH_SECRET") == 2
