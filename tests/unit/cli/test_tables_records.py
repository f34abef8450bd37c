"""A table whose columns do not fit side by side, even with its optional ones left out, shows each
row as a record (a line per field): within the terminal whenever a value alone fits beside its
field's name, every whole value on one line, nothing cut with `…`, no field left out. (Any table,
by hypothesis: `test_cli_conventions.test_a_fitted_table_never_cuts_a_whole_cell`.)"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console

from shipyard.cli._tables import Column, fitted, shown_time, whole, words, wrapped

KEY = "checkout-copy-experiment-for-the-new-onboarding-page"  # 52 characters
AUDIT = (whole("time"), wrapped("actor"), wrapped("action"), words("target"), wrapped("outcome", drop=1))


def _printed(columns: Sequence[Column], rows: list[tuple[str, ...]], width: int) -> list[str]:
    console = Console(width=width, record=True, soft_wrap=True, color_system=None)
    console.print(fitted(columns, rows, title="audit log", console=console))
    return console.export_text().splitlines()


def test_the_audit_log_with_a_52_character_key_fits_80_columns() -> None:
    rows = [
        (shown_time("2026-12-06T22:44:44+00:00"), "cli:ops", "flag.create", f"flag {KEY}", "ok"),
        (
            shown_time("2026-12-06T22:45:00+00:00"),
            "token:ops",
            "backup.files",
            "backup 20261206-195141-49cf",
            "ok",
        ),
    ]
    lines = _printed(AUDIT, rows, 80)

    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    for value in (KEY, "2026-12-06T22:44:44Z", "20261206-195141-49cf", "token:ops"):
        assert any(f" {value} " in line for line in lines), value
    assert sum("outcome" in line for line in lines) == 2  # no field left out, once per entry
    assert "…" not in "\n".join(lines)


def test_a_table_that_fits_is_still_a_table() -> None:
    rows = [(shown_time("2026-12-06T22:44:44+00:00"), "cli:ops", "flag.create", "flag checkout", "ok")]
    lines = _printed(AUDIT, rows, 80)
    assert any(line.startswith("┃ time") for line in lines), lines  # the header row
