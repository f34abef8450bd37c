"""Write `src/shipyard/render/crds/` from the CRDs under `../shared/crds/` (or a given folder).

    .venv/bin/python scripts/vendor_crds.py [../shared/crds]

Each CRD becomes `<group>_<plural>.json`: its names, scope and served versions' schemas without
descriptions (`shipyard.render._crds.packaged_form`). Update `render/crds/README.md`'s table of
sources and commits when the shared files change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from shipyard.render._crds import packaged_form

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "src" / "shipyard" / "render" / "crds"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "crds"
    TARGET.mkdir(exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        form = packaged_form(yaml.safe_load(path.read_text()), path.name)
        out = TARGET / f"{form['group']}_{form['plural']}.json"
        out.write_text(json.dumps(form, sort_keys=True, separators=(",", ":")) + "\n")
        print(f"{path.name} -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
