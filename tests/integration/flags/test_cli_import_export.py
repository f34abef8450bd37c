"""`shipyard flags import --from …` and `flags export --to …`: the real CLI on a real state store
(a SQLite file per test), for every format: dry runs change nothing, a bad file is refused whole
with every problem named, warnings are shown, and export then import gives the same flags.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from unit.cli.test_flags_cli import run

SPEC = Path(__file__).resolve().parents[4] / "shared" / "unleash-client-specification"

SEED: dict[str, Any] = {
    "segments": [
        {"name": "staff", "conditions": [{"attribute": "email", "op": "ends_with", "value": "@corp.io"}]}
    ],
    "flags": [
        {
            "key": "new-checkout",
            "description": "The new checkout",
            "default_value": False,
            "owner": "payments",
            "tags": ["web"],
            "environments": {
                "production": {"enabled": True, "rules": [
                    {"name": "staff", "conditions": [{"op": "segment", "value": "staff"}], "value": True},
                    {"conditions": [{"attribute": "country", "op": "in", "value": ["NO", "SE"]},
                                    {"attribute": "appVersion", "op": "semver_gte", "value": "2.1.0"}],
                     "value": True},
                ]},
            },
        },
        {
            "key": "banner-color",
            "type": "string",
            "default_value": "grey",
            "environments": {"production": {"enabled": True, "rules": [
                {"conditions": [{"attribute": "plan", "op": "eq", "value": "pro"}],
                 "value": "gold", "variant": "gold"},
            ]}},
        },
    ],
}  # fmt: skip

FLAGD: dict[str, Any] = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "dark-mode": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"in": [{"var": "userId"}, ["1", "2"]]}, "on", None]},
            "metadata": {"description": "Dark UI", "team": "web"},
        },
    },
}


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_store(tmp_path / "state.db", monkeypatch)


def use_store(database: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHIPYARD_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("SHIPYARD_ACTOR", "alice")
    monkeypatch.setenv("COLUMNS", "200")
    return database


def ok(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code, out, err = run(argv, capsys)
    assert code == 0, err
    return out


def write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def rows(database: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table: what "nothing was written" is checked against."""
    if not database.exists():
        return {}
    with contextlib.closing(sqlite3.connect(database)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall() for t in sorted(tables)}


def flags_now(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(["flags", "list", "-o", "json"], capsys))
    data.pop("version")
    return data


def unleash_state() -> dict[str, Any]:
    spec = json.loads((SPEC / "09-strategy-constraints.json").read_text())
    return spec["state"]  # type: ignore[no-any-return]


def manifest() -> dict[str, Any]:
    return {
        "flags": {"checkout-limit": {"flagType": "integer", "defaultValue": 3, "description": "Max items"}}
    }


@pytest.mark.parametrize(
    ("source", "document", "key"),
    [
        ("flagd", FLAGD, "dark-mode"),
        ("unleash", None, "Feature.constraints.empty"),
        ("openfeature-json", None, "checkout-limit"),
        ("shipyard", SEED, "new-checkout"),
    ],
)
def test_import_each_format_dry_run_first(
    source: str, document: Any, key: str, tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = document or (unleash_state() if source == "unleash" else manifest())
    file = write(tmp_path / f"{source}.json", document)
    ok(["flags", "create", "untouched"], capsys)
    before = rows(state)
    for output in ("table", "json"):
        out = ok(["flags", "import", "--from", source, str(file), "--dry-run", "-o", output], capsys)
        assert rows(state) == before, output
        if output == "json":
            result = json.loads(out)
            assert (result["dry_run"], result["source"]) == (True, source)
            assert {(c["action"], c["key"]) for c in result["changes"]} >= {("create", key)}
        else:
            assert out.startswith("dry run: importing"), out
            assert f"  create flag {key}\n" in out
    out = ok(["flags", "import", "--from", source, str(file)], capsys)
    assert out.startswith(
        f"imported {len(document.get('flags', document.get('features', [])))} flags from {file}"
    )
    keys = [f["key"] for f in flags_now(capsys)["flags"]]
    assert {key, "untouched"} <= set(keys)


def test_a_bad_file_is_refused_whole_naming_every_problem(
    tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(["flags", "create", "untouched"], capsys)
    before = rows(state)
    document = {"flags": {
        **FLAGD["flags"],  # a good flag: not imported either
        "split": {"variants": {"a": "A", "b": "B"}, "defaultVariant": "a",
                  "targeting": {"fractional": [["a", 50], ["b", 50]]}},
        "versions": {"variants": {"on": True, "off": False}, "defaultVariant": "off",
                     "targeting": {"if": [{"sem_ver": [{"var": "version"}, "~", "1.2.0"]}, "on", None]}},
    }}  # fmt: skip
    file = write(tmp_path / "bad.flagd.json", document)
    for extra in ([], ["--dry-run"], ["-o", "json"]):
        code, out, err = run(["flags", "import", "--from", "flagd", str(file), *extra], capsys)
        assert (code, out) == (2, ""), extra
        assert str(file) in err
        for said in (
            "flags.split.targeting.fractional",
            "murmur3",
            "flags.versions.targeting.if[0].sem_ver",
            "'~'",
        ):
            assert said in err
        assert "Traceback" not in err
        assert rows(state) == before


@pytest.mark.parametrize(
    ("source", "text", "says"),
    [
        ("flagd", "{not json", "not valid YAML or JSON"),
        ("flagd", "[1, 2]", "not a flagd document"),
        (
            "flagd",
            '{"flags": {"f": {"state": "ON", "variants": {"on": true}, "defaultVariant": "on"}}}',
            "flags.f.state",
        ),
        ("unleash", '{"features": [{"name": "x", "strategies": "all"}]}', "strategies"),
        (
            "openfeature-json",
            '{"flags": {"x": {"flagType": "integer", "defaultValue": "3"}}}',
            "flags.x.defaultValue",
        ),
    ],
)
def test_bad_documents_name_the_file_and_field(
    source: str, text: str, says: str, tmp_path: Path, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "in.json"
    file.write_text(text)
    code, out, err = run(["flags", "import", "--from", source, str(file)], capsys)
    assert (code, out, str(file) in err, says in err) == (2, "", True, True), err
    assert "Traceback" not in err
    assert rows(state).get("flags", []) == []


def test_warnings_are_printed_and_in_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = write(tmp_path / "flagd.json", FLAGD)
    code, out, err = run(["flags", "import", "--from", "flagd", str(file)], capsys)
    assert code == 0
    assert "warning: flags.dark-mode.metadata: team not imported" in err
    code, out, err = run(["flags", "import", "--from", "flagd", str(file), "-o", "json"], capsys)
    assert json.loads(out)["warnings"] == [
        "flags.dark-mode.metadata: team not imported (shipyard has no place for it)"
    ]


def test_a_one_environment_import_keeps_the_other_environments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = {"flags": [{"key": "dark-mode", "default_value": False, "owner": "web",
                       "environments": {"staging": {"enabled": True, "value": True}}}]}  # fmt: skip
    ok(["flags", "import", str(write(tmp_path / "seed.json", seed))], capsys)
    ok(
        ["flags", "import", "--from", "flagd", "-e", "production", str(write(tmp_path / "f.json", FLAGD))],
        capsys,
    )
    (flag,) = flags_now(capsys)["flags"]
    assert flag["environments"]["staging"] == {"enabled": True, "value": True}
    assert flag["environments"]["production"]["enabled"] is True
    code, out, _ = run(
        ["flags", "eval", "dark-mode", "-e", "production", "-c", "userId=2", "-o", "json"], capsys
    )
    assert (code, json.loads(out)["value"]) == (0, True)


# --- round trips: export, import into an empty store, the same flags ------------------------------


@pytest.mark.parametrize("target", ["shipyard", "flagd", "unleash", "openfeature-json"])
def test_export_then_import_gives_the_same_flags(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = SEED
    if target == "unleash":  # what Unleash carries: boolean flags, rules serving true (its lists)
        segment = {
            "name": "staff",
            "conditions": [{"attribute": "email", "op": "ends_with", "value": ["@corp.io"]}],
        }
        flag = {k: v for k, v in SEED["flags"][0].items() if k != "owner"}  # no owner in Unleash
        rules = flag["environments"]["production"]["rules"]
        flag["environments"] = {"production": {"enabled": True, "rules": [
            {k: v for k, v in r.items() if k != "name"} for r in rules]}}  # fmt: skip
        seed = {"segments": [segment], "flags": [flag]}
    elif target == "openfeature-json":  # a manifest: type, default and description
        seed = {"flags": [{k: f[k] for k in ("key", "type", "default_value", "description") if k in f}
                          for f in SEED["flags"]]}  # fmt: skip
    ok(["flags", "import", str(write(tmp_path / "seed.json", seed))], capsys)
    original = flags_now(capsys)
    exported = tmp_path / f"export.{target}.json"
    ok(["flags", "export", "--to", target, str(exported)], capsys)
    use_store(tmp_path / "other.db", monkeypatch)
    ok(["flags", "import", "--from", target, str(exported)], capsys)
    again = flags_now(capsys)
    for flag in (*original["flags"], *again["flags"]):
        flag.pop("created_at", None)  # the store stamps it on create
    assert again == original


def test_export_to_stdout_without_to_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(["flags", "import", str(write(tmp_path / "seed.json", SEED))], capsys)
    out = ok(["flags", "export"], capsys)
    assert yaml.safe_load(out) == {"version": 1, **flags_now(capsys)}  # shipyard's YAML, as before


def test_an_export_that_cannot_carry_a_construct_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = {"flags": [{"key": "rollout", "default_value": False, "environments": {"production": {
        "enabled": True, "rules": [{"value": True, "rollout": {"percent": 20}}]}}}]}  # fmt: skip
    ok(["flags", "import", str(write(tmp_path / "seed.json", seed))], capsys)
    target = tmp_path / "out.json"
    code, out, err = run(["flags", "export", "--to", "flagd", str(target)], capsys)
    assert (code, out, target.exists()) == (2, "", False)
    assert "--to flagd: the flag set cannot be exported to flagd" in err
    assert "flags.rollout.environments.production.rules[0].rollout" in err
