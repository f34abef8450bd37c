"""What a process loads is part of what it costs: an instance's supervisor (one per app process,
alive as long as it) imports the host helpers it uses, not the controller, the spec or the
database layer its package also holds. The package exports are loaded on first use
(shipyard._lazy); an eager import in `shipyard.rollout` or `shipyard.ops` fails this."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sqlalchemy", "pydantic", "shipyard.spec", "shipyard.rollout._controller", "shipyard.state")


def _loaded_by(module: str, then: str = "") -> set[str]:
    """The modules a fresh interpreter holds after importing `module` and running `then`."""
    code = f"import json, sys, {module}\n{then}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_the_supervisor_loads_none_of_the_controller() -> None:
    loaded = _loaded_by("shipyard.rollout.targets._supervise")
    assert [name for name in HEAVY if name in loaded] == []


def test_a_lazy_export_is_loaded_when_first_used() -> None:
    loaded = _loaded_by("shipyard.rollout")
    assert "shipyard.rollout._controller" not in loaded
    used = _loaded_by("shipyard.rollout", then="shipyard.rollout.Controller")
    assert "shipyard.rollout._controller" in used


def test_a_cli_run_recorded_as_a_job_loads_no_backup_or_drill_module() -> None:
    """`shipyard deploy` is recorded as a job: it needs the jobs layer's recording, not the union
    of every request a job may run (which loads `shipyard.backup` and `shipyard.dr`)."""
    loaded = _loaded_by("shipyard.jobs", then="shipyard.jobs.run_recorded_here")
    assert [name for name in ("shipyard.backup", "shipyard.dr") if name in loaded] == []
