"""Tables for people, one rule for all of them: what is typed or copied next (an id, a key, a
version, a time) is printed whole, never cut or wrapped (in a `words` column, such as `v1 → v2`,
it may wrap between them); other columns wrap (long words folded,
never cut off with `…`), and when the terminal is still too narrow the columns a table marks as
optional are left out, least needed first, with a caption saying which (and that `-o json` has
them all). When even the columns left are too wide side by side (a 52-character flag key beside
a time, an actor and an action), each row is shown as a record instead: a line per field, the
field's name beside its value, so a value only needs the terminal's width less its name's.

Rich's own fitting shrinks every column at last, ids too (`20261…`): a whole column here has
`no_wrap` and a minimum width of its longest cell, which Rich never goes below.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ._app import console as stdout


@dataclass(frozen=True)
class Column:
    header: str
    whole: bool = False
    """An id, key, version or time: printed whole on one line, however narrow the terminal."""
    drop: int = 0
    """0: always shown; 1, 2, …: left out, in that order, while the table does not fit."""
    justify: JustifyMethod = "left"
    words: bool = False
    """Ids or versions with words between (`v1 → v2`, `flag KEY`): wrapped between the words only."""


def whole(header: str, *, drop: int = 0, justify: JustifyMethod = "left") -> Column:
    """A column of ids, keys, versions or times (never cut)."""
    return Column(header, whole=True, drop=drop, justify=justify)


def words(header: str, *, drop: int = 0) -> Column:
    """A column of ids or versions with words between them: it wraps there, never inside one."""
    return Column(header, drop=drop, words=True)


def wrapped(header: str, *, drop: int = 0, justify: JustifyMethod = "left") -> Column:
    """A column that wraps (and, with `drop`, may be left out)."""
    return Column(header, drop=drop, justify=justify)


def shown_time(moment: dt.datetime | str) -> str:
    """A time in a table: as `-o json` writes it (RFC 3339, UTC, `Z`), to the second. A string is
    such a time from `-o json` data (or the API)."""
    from ..state import as_utc, rfc3339  # noqa: PLC0415 - SQLAlchemy: only for a table that shows a time

    if isinstance(moment, str):
        moment = dt.datetime.fromisoformat(moment)
    return rfc3339(as_utc(moment).replace(microsecond=0))


def fitted(
    columns: Sequence[Column | str],
    rows: Iterable[Sequence[str]],
    *,
    title: str | None = None,
    console: Console | None = None,
) -> Table:
    """A table of `rows` (cells in Rich markup) that fits `console`'s width as the module says.

    A plain string is a wrapping column that is always shown.
    """
    width = (console or stdout).width
    specs = [Column(c) if isinstance(c, str) else c for c in columns]
    body = [list(row) for row in rows]
    shown = list(range(len(specs)))
    while True:
        least = {i: _least(specs[i], [row[i] for row in body]) for i in shown}
        droppable = [i for i in shown if specs[i].drop > 0]
        if not droppable or sum(least.values()) <= _room(width, len(shown)):
            break
        shown.remove(min(droppable, key=lambda i: (specs[i].drop, -i)))
    if sum(least.values()) > _room(width, len(shown)):
        return _records(specs, body, title=title, width=width)
    widths = _share(
        least, {i: _natural(specs[i], [row[i] for row in body]) for i in shown}, _room(width, len(shown))
    )
    # The table's own width, even past the terminal's when its whole columns alone do not fit: a
    # line too long for the terminal wraps there, where a narrower table would cut an id.
    table = Table(
        title=title, title_justify="left", width=sum(widths.values()) + width - _room(width, len(shown))
    )
    for i in shown:
        spec = specs[i]
        table.add_column(
            spec.header,
            justify=spec.justify,
            no_wrap=spec.whole,
            overflow="fold",
            width=widths[i],
            min_width=widths[i] if spec.whole else None,
        )
    for row in body:
        table.add_row(*(row[i] for i in shown))
    left_out = [specs[i].header for i in range(len(specs)) if i not in shown]
    if left_out:
        table.caption = f"too narrow for {', '.join(left_out)}: -o json shows every field"
        table.caption_justify = "left"
    return table


def _records(specs: Sequence[Column], body: list[list[str]], *, title: str | None, width: int) -> Table:
    """Each row as a record: a line per field (its name, then its value), a rule between rows.

    Every field is shown (there is room for all, one under another). The values share one column,
    as narrow as its widest whole value, or longest word in the others, and as the terminal
    allows; a line only passes the terminal's edge when a value alone is wider than it.
    """
    names = [escape(spec.header) for spec in specs]
    name_width = max((_width(name) for name in names), default=1)
    cells = [[row[i] for row in body] for i in range(len(specs))]
    least = max(_least(Column("", spec.whole, words=spec.words), cells[i]) for i, spec in enumerate(specs))
    natural = max(_natural(Column(""), cells[i]) for i in range(len(specs)))
    value_width = max(least, min(natural, _room(width, 2) - name_width))
    table = Table(
        title=title,
        title_justify="left",
        show_header=False,
        box=box.SQUARE,
        width=name_width + value_width + width - _room(width, 2),
    )
    table.add_column(style="bold", no_wrap=True, width=name_width)
    table.add_column(overflow="fold", width=value_width, min_width=value_width)
    for row in body:
        for i, name in enumerate(names):
            table.add_row(name, row[i], end_section=i == len(names) - 1)
    return table


FOLD_AT = 12
"""A wrapping column is not made narrower than its longest word, nor than this (a longer word is
folded there rather than cut)."""


def _room(width: int, columns: int) -> int:
    """What is left of the terminal for the cells: a border around and between the columns, and a
    space either side of each cell."""
    return width - (columns + 1) - 2 * columns


def _natural(spec: Column, cells: Sequence[str]) -> int:
    """The column's width with nothing wrapped."""
    return max((_width(line) for cell in [spec.header, *cells] for line in cell.splitlines()), default=1)


def _least(spec: Column, cells: Sequence[str]) -> int:
    """The narrowest the column may be: a whole column's natural width; a wrapping one's longest
    word (of its header whole; of its cells whole in a `words` column, else up to FOLD_AT), but no
    wider than its natural width."""
    if spec.whole:
        return _natural(spec, cells)
    longest = max(
        (_width(word) for cell in cells for word in Text.from_markup(cell).plain.split()), default=1
    )
    header = max((_width(word) for word in spec.header.split()), default=1)
    return min(max(header, longest if spec.words else min(longest, FOLD_AT)), _natural(spec, cells))


def _share(least: dict[int, int], natural: dict[int, int], room: int) -> dict[int, int]:
    """Each column's width: its least, then what room is left handed out a character at a time to
    the columns still short of their natural width."""
    widths = dict(least)
    spare = room - sum(widths.values())
    while spare > 0:
        short = [i for i in widths if widths[i] < natural[i]]
        if not short:
            break
        for i in short[:spare]:
            widths[i] += 1
        spare -= min(spare, len(short))
    return widths


def _width(cell: str) -> int:
    """The cell's width on screen (its markup not counted)."""
    return Text.from_markup(cell).cell_len
