"""Schemathesis's CLI (`st run`) against a real `shipyard serve`: every check, and the coverage,
fuzzing and stateful phases. Shared by tests/integration/server/test_schemathesis.py (a few
examples per operation, a fixed seed) and bench/schemathesis_full.py (many).

The server runs on SQLite with no stack (`-f`), seeded with a little of everything the reads show,
so that they answer 200 as well as 404; the routes that start jobs answer 409 naming `serve -f
SPEC` rather than start a backup or a deploy per generated case (test_ops_api.py runs them).

`CONFIG` is what the run is told beyond the schema, each entry with its reason: these are the
failures the API keeps on purpose, and nothing else is accepted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.flags import FlagStore
from shipyard.state import (
    AuditRow,
    BackupSetRow,
    DrillRow,
    JobRow,
    RolloutRow,
    RolloutStepRow,
    open_engine,
    session_factory,
)
from shipyard.tokens import create_token
from support.serve import serving

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
PHASES = "examples,coverage,fuzzing,stateful"
SEED = 20261206
NEVER_ENDS = "/feature-flags/stream"
"""Server-Sent Events: the answer never ends by design (the SDK tests read it)."""

_POSITIVE = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]  # schemathesis's defaults …
_NEGATIVE = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]
FLAG_BODIES = ["POST /feature-flags", "PUT /feature-flags/{key}", "PATCH /feature-flags/{key}",
               "POST /feature-flags/import", "PUT /feature-segments/{name}"]  # fmt: skip
SHADOWED_BY_KEY = ["POST /feature-flags/evaluate", "POST /feature-flags/import"]

# TOML, written next to the report. Each exception is also listed, with its reason, in REASONS.
CONFIG = f"""
[checks.positive_data_acceptance]
expected-statuses = {json.dumps([*_POSITIVE, "412"])}

[checks.negative_data_rejection]
expected-statuses = {json.dumps([*_NEGATIVE, "412"])}

[phases.stateful.inference]
algorithms = ["location-headers"]

[[operations]]
include-name = {json.dumps(FLAG_BODIES)}
checks.positive_data_acceptance.enabled = false

[[operations]]
include-name = {json.dumps(SHADOWED_BY_KEY)}
checks.allow_header_conformance.enabled = false
"""

REASONS = {
    "412 is an expected answer": (
        "PUT/PATCH/DELETE of a flag or segment with an If-Match naming another version (or an"
        " entity tag this server never issued) is 412 Precondition Failed, as RFC 9110 §13.1.1"
        " says, whatever the body: preconditions are evaluated before the content (§13.2.1). The"
        " If-Match header is any string in the schema; a stale version is schema-valid and refused."
    ),
    "no dependency-analysis links": (
        "Schemathesis's dependency analysis guessed that `POST /backups` (202 + a job) creates the"
        " backup set `GET /backups/{set_id}` reads, and fed a job's id as a set id; the document"
        " declares its links itself (server/_openapi.LINKS), and Location headers are still followed."
    ),
    "flag bodies: positive_data_acceptance off": (
        "The flag and segment models also check what JSON Schema cannot state (the schema lists"
        " them in its descriptions): a `matches` pattern must be safe, numeric strings for number"
        " operators, CIDRs, date-times, unique variant names, json payloads that parse, and"
        " references to segments and prerequisite flags. A schema-valid body that breaks one is"
        " 422 naming the field. Every other check (no 5xx, documented statuses and shapes,"
        " negative data refused) still runs on these operations."
    ),
    "Allow of /feature-flags/evaluate and /import": (
        "Their 405 (e.g. to OPTIONS) says `Allow: DELETE, GET, PATCH, POST, PUT`, the document"
        " POST only: `/feature-flags/{key}` serves those paths too, for a flag whose key is"
        " `evaluate` or `import` (a key a new flag may take, and an imported one keeps). The Allow"
        " header tells what the server does; the fix is to reserve those keys (a convertor on"
        " `{key}` and new_key_problem), which would make such an existing flag unreadable by key."
    ),
}


@dataclass(frozen=True)
class Tokens:
    admin: str
    client: str


def seed_store(database_url: str) -> Tokens:
    """Tokens, two flags and a segment, and one of each ops row the reads show."""
    engine = open_engine(database_url)
    sessions = session_factory(engine)
    with sessions() as session:
        tokens = Tokens(create_token(session, "fuzz", "admin"), create_token(session, "web", "client"))
    store = FlagStore(sessions)
    store.create({"key": "new-checkout", "default_value": False,
                  "environments": {"production": {"enabled": True}}}, "seed")  # fmt: skip
    store.create({"key": "banner", "type": "string", "default_value": "hello"}, "seed")
    now = dt.datetime.now(dt.UTC)
    with sessions() as session, session.begin():
        release = RolloutRow(
            service="web", environment="production", target="local", strategy="canary", stable="v1",
            candidate="v2", phase="finished", outcome="succeeded", actor="cli:ops", stack={}, state={},
            finished_at=now,
        )  # fmt: skip
        session.add(release)
        session.flush()
        session.add(RolloutStepRow(rollout_id=release.id, seq=1, action={"type": "Prepare"}, status="done",
                                   started_at=now, finished_at=now))  # fmt: skip
        session.add(BackupSetRow(id="20261201-030000-abcd", stack="shop", environment="production",
                                 kind="full", state="complete", owner="h:1", actor="cli:ops", finished_at=now,
                                 manifest=MANIFEST))  # fmt: skip
        session.add(JobRow(kind="backup", request={"kind": "backup", "what": "full"}, actor="token:ops",
                           state="succeeded", owner="h:1", exit_code=0, summary="done",
                           finished_at=now))  # fmt: skip
        session.add(AuditRow(actor="cli:ops", action="dr.drill", target_kind="stack", target="shop/prod",
                             outcome="passed", after={"mode": "full"}))  # fmt: skip
        session.add(DrillRow(stack="shop", environment="production", mode="full", passed=True,
                             actor="cli:ops", finished_at=now, rto_seconds=2.5, rpo_seconds=0.0))  # fmt: skip
    engine.dispose()
    return tokens


MANIFEST = {
    # As `shipyard backup files` writes it (a set's manifest is read as a typed model).
    "id": "20261201-030000-abcd", "spec": "shop", "environment": "production", "kind": "full",
    "repository": "/srv/backups", "restic_host": "shop-production", "sources": ["files:/srv"],
    "tools": {"restic": "restic 0.14.0"}, "started_at": "2026-12-01T03:00:00+00:00",
    "finished_at": "2026-12-01T03:00:05+00:00",
    "artefacts": [{"name": "files:/srv", "type": "files", "path": "/srv", "snapshot_id": "0" * 64,
                   "sha256": "1" * 64, "files": 1, "raw_bytes": 10, "data_added": 10, "seconds": 0.1}],
}  # fmt: skip


@contextlib.contextmanager
def seeded_server(base: Path) -> Iterator[tuple[str, Tokens]]:
    """`shipyard serve` on a seeded SQLite store in `base`, with no stack: its URL and tokens."""
    database_url = f"sqlite:///{base / 'state.db'}"
    tokens = seed_store(database_url)
    env = {**os.environ, "SHIPYARD_STATE_DIR": str(base / "state")}
    args = ["--database-url", database_url, "--env", "production", "--log-level", "warning"]
    with serving(args, log=base / "serve.log", cwd=base, env=env) as url:
        yield url, tokens


@dataclass(frozen=True)
class Run:
    command: list[str]
    """As run, the token replaced by `$TOKEN`."""
    report: dict[str, Any]
    """Schemathesis's JSON report (`--report json`)."""
    output: str


def run(
    url: str, token: str, out: Path, *, max_examples: int, seed: int = SEED, extra: Sequence[str] = ()
) -> Run:
    """`st run` over every operation but the stream, with every check and phase; its report.

    Every check runs: Schemathesis enables them all by default. `--checks all` says the same but,
    given on the command line, it would also override CONFIG's one per-operation exception."""
    out.mkdir(parents=True, exist_ok=True)
    config = out / "schemathesis.toml"
    config.write_text(CONFIG)
    report = out / "report.json"
    args = [
        "--config-file", str(config), "run", f"{url}/openapi.json",
        "--phases", PHASES, "--max-examples", str(max_examples), "--seed", str(seed),
        "--exclude-path", NEVER_ENDS, "--workers", "1", "--request-timeout", "10",
        "--generation-database", "none", "--report", "json", "--report-json-path", str(report),
        "--no-color", *extra,
    ]  # fmt: skip
    header = ["-H", "Authorization: Bearer {}"]
    completed = subprocess.run(
        [SCHEMATHESIS, *args, header[0], header[1].format(token)],
        capture_output=True, text=True, timeout=3600, check=False, cwd=out,
    )  # fmt: skip
    output = completed.stdout + completed.stderr
    if not report.exists():
        raise AssertionError(f"schemathesis wrote no report (exit {completed.returncode}):\n{output[-4000:]}")
    return Run(["st", *args, header[0], header[1].format("$TOKEN")], json.loads(report.read_text()), output)


def failures(run: Run) -> list[str]:
    """One line per kind of failure in the run's report (code, title, count, operations), and
    one per error (an operation Schemathesis could not test)."""
    lines = [
        f"{f['code']} {f['title']} ×{f['count']}: {', '.join(f['operations'])}"
        for f in run.report.get("failures", [])
    ]
    return lines + [
        "error: " + json.dumps(error, sort_keys=True)[:600] for error in run.report.get("errors", [])
    ]
