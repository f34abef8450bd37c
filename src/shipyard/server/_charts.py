"""Small charts as inline SVG, drawn on the server: no script, no front-end build, no CDN.

Two kinds: `line_chart` (values over time against a limit: analysis windows, backup sizes, drill
RTOs) and `timeline` (the steps of a release as bars). Each returns one `<svg role="img">` whose
`<title>` names it and whose `<desc>` says what it shows in words; every point is a `<circle>` with
its own `<title>` and `data-*` attributes carrying the exact numbers (`repr` of the float), so a
screen reader, a test or a curious operator can read them without reading pixels.

Any input gives well-formed XML: text is escaped and characters XML forbids are replaced; values
that are not finite (NaN, ±inf) are left out and counted in the description; huge, tiny and
negative values scale without overflowing. Colours come from classes (the dashboard's CSS: its
Content-Security-Policy allows no inline style), with presentation attributes as a fallback.

Pure: no I/O and no clock (a running step's end, `now`, is passed in).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from markupsafe import Markup, escape

__all__ = [
    "Limit",
    "Point",
    "Series",
    "Span",
    "byte_size",
    "line_chart",
    "millis",
    "number",
    "percent",
    "timeline",
]

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 300
"""The viewBox's width; CSS scales the chart to its box."""
PLOT_HEIGHT = 96
TITLE_HEIGHT = 14
LEGEND_LINE = 12
LEFT = 56
"""Room for the y axis' labels."""
RIGHT = 8
BOTTOM = 16
"""Room for the x axis' labels."""
CHAR_WIDTH = 5.6
"""About how wide one character of the 10px labels is."""
MAX_POINTS = 400
"""Points drawn per series at most (the newest): a page stays small whatever the store holds."""
MAX_SPANS = 60
ROW_HEIGHT = 16
LABEL_WIDTH = 132
SERIES_CLASSES = 6
"""Series colours (`s0` … `s5` in the CSS), reused in turn."""

XKind = Literal["time", "number"]

# Characters XML 1.0 allows (the Char production); anything else is replaced.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NOT_TOKEN = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True)
class Point:
    x: float
    """Seconds since the epoch (a time axis), or any number."""
    y: float
    note: str = ""
    """More words for the point's title (a version, a set id)."""
    mark: str = ""
    """A class for the point: `fail` (over its limit, a failed run), `warn`; empty: a plain one."""


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[Point]
    step: bool = False
    """Hold each value until the next point (a traffic split) instead of joining points straight."""
    gap: float | None = None
    """Points further apart on x than this are not joined: the data has a gap there, and so does
    the line (None: every point is joined to the next)."""


@dataclass(frozen=True)
class Limit:
    """The bar values are judged against: one `value`, or one per moment (`points`, held stepwise)."""

    label: str
    value: float | None = None
    points: Sequence[Point] = ()


@dataclass(frozen=True)
class Span:
    """One bar of a timeline: a step from `start` to `end` (None: still running, drawn to `now`);
    no `start`: not reached yet (a pending row without a bar)."""

    label: str
    start: float | None
    end: float | None
    status: str
    """done, failed, started (running) or pending; also the bar's class."""


# --- formats ---------------------------------------------------------------------------------------


def number(value: float) -> str:
    return f"{value:.4g}"


def percent(fraction: float) -> str:
    return f"{fraction * 100:.3g} %"


def millis(value: float) -> str:
    return f"{value:.4g} ms"


def byte_size(value: float) -> str:
    """1536 -> '1.5 KiB' (binary units, as restic and `du -h` count)."""
    if abs(value) < 1024:
        return f"{value:.0f} B"
    size, units = abs(value) / 1024, ["KiB", "MiB", "GiB", "TiB", "PiB"]
    while size >= 1024 and len(units) > 1:
        size, units = size / 1024, units[1:]
    return f"{math.copysign(size, value):.3g} {units[0]}"


def _seconds(value: float) -> str:
    return f"{number(value)} s"


FULL_TIME = "%Y-%m-%d %H:%M:%S UTC"
AXIS_TIME = "%m-%d %H:%M"
CLOCK_TIME = "%H:%M:%S"


def _moment(value: float, form: str = FULL_TIME) -> str:
    """A time in UTC (a number when it is no date Python knows)."""
    try:
        moment = dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return number(value)
    return moment.strftime(form)


def _x_label(value: float, kind: XKind, form: str = FULL_TIME) -> str:
    return _moment(value, form) if kind == "time" else number(value)


# --- pieces ----------------------------------------------------------------------------------------


def _text(value: object) -> str:
    """Text for an element or an attribute: XML-safe characters, escaped."""
    return str(escape(_NOT_XML.sub("\ufffd", str(value))))


def _token(value: str, default: str = "chart") -> str:
    """A class name or a `data-chart` key from free text."""
    return _NOT_TOKEN.sub("-", value.lower()).strip("-")[:40] or default


def _exact(value: float) -> str:
    """A number as an attribute: exact (`float(repr(x)) == x`)."""
    return repr(float(value))


def _coordinate(value: float) -> str:
    return f"{value:.1f}"


def _ratio(value: float, low: float, high: float) -> float:
    """Where `value` lies between `low` and `high`, from 0 to 1 (0.5 when they are equal); safe for
    any finite floats, where `high - low` itself may overflow."""
    if not high > low:
        return 0.5
    span = high - low
    ratio = (value / 2 - low / 2) / (high / 2 - low / 2) if math.isinf(span) else (value - low) / span
    return min(max(ratio, 0.0), 1.0)


def _middle(low: float, high: float) -> float:
    return low / 2 + high / 2


def _finite(points: Iterable[Point]) -> tuple[list[Point], int]:
    """The points with finite coordinates, by x (stable: equal x keep their order); and how many
    were left out."""
    kept, dropped = [], 0
    for point in points:
        if math.isfinite(point.x) and math.isfinite(point.y):
            kept.append(point)
        else:
            dropped += 1
    kept.sort(key=lambda point: point.x)
    return kept, dropped


def _legend(entries: list[tuple[str, str]], top: float) -> tuple[list[str], float]:
    """Legend entries (class, name) laid out in lines under the title; the elements and the height."""
    parts: list[str] = []
    x, line = 4.0, 0
    for css, name in entries:
        shown = name if len(name) <= 28 else name[:27] + "…"
        width = 16 + CHAR_WIDTH * len(shown) + 10
        if x > 4 and x + width > WIDTH:
            x, line = 4.0, line + 1
        y = top + line * LEGEND_LINE + 9
        parts.append(
            f'<g class="key {css}"><line x1="{_coordinate(x)}" y1="{_coordinate(y - 3)}"'
            f' x2="{_coordinate(x + 12)}" y2="{_coordinate(y - 3)}" stroke="currentColor"/>'
            f'<text x="{_coordinate(x + 16)}" y="{_coordinate(y)}">{_text(shown)}</text></g>'
        )
        x += width
    return parts, ((line + 1) * LEGEND_LINE if entries else 0)


def _open(key: str, title: str, height: float, kind: str) -> str:
    return (
        f'<svg xmlns="{SVG_NS}" class="chart chart-{kind}" data-chart="{_token(key)}"'
        f' viewBox="0 0 {WIDTH} {_coordinate(height)}" role="img" aria-label="{_text(title)}">'
        f"<title>{_text(title)}</title>"
    )


HEADING_CHARS = int((WIDTH - 8) / 6.2)
"""Characters of the bold 11px heading that fit; a longer one is cut (the <title> has it all)."""


def _heading(title: str) -> str:
    shown = title if len(title) <= HEADING_CHARS else title[: HEADING_CHARS - 1] + "…"
    return f'<text class="heading" x="4" y="11">{_text(shown)}</text>'


# --- the line chart --------------------------------------------------------------------------------


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    key: str,
    limit: Limit | None = None,
    y_format: Callable[[float], str] = number,
    x_kind: XKind = "time",
    y_range: tuple[float, float] | None = None,
    zero: bool = True,
    empty: str = "no data yet",
) -> Markup:
    """Values over x (time, by default) as lines with a point per value, against `limit`.

    `key` names the chart in its `data-chart` attribute; `y_range` fixes the y axis (values outside
    are drawn at its edge, their data-* still exact); `zero` keeps 0 on the y axis.
    """
    drawn: list[tuple[Series, list[Point]]] = []
    dropped = 0
    for one in series:
        points, left_out = _finite(one.points)
        dropped += left_out
        drawn.append((one, points[-MAX_POINTS:]))
    limit_points, limit_dropped = _finite(limit.points) if limit is not None else ([], 0)
    limit_value = limit.value if limit is not None and limit.value is not None else None
    if limit_value is not None and not math.isfinite(limit_value):
        limit_value, limit_dropped = None, limit_dropped + 1
    limit_points = limit_points[-MAX_POINTS:]

    entries = [(f"series s{i % SERIES_CLASSES}", one.name) for i, (one, _) in enumerate(drawn)]
    if limit is not None and (limit_value is not None or limit_points):
        entries.append(("limit", limit.label))
    legend, legend_height = _legend(entries, TITLE_HEIGHT)
    top = TITLE_HEIGHT + legend_height + 6
    bottom = top + PLOT_HEIGHT
    height = bottom + BOTTOM
    right = WIDTH - RIGHT

    xs = [p.x for _, points in drawn for p in points] + [p.x for p in limit_points]
    ys = [p.y for _, points in drawn for p in points] + [p.y for p in limit_points]
    if limit_value is not None:
        ys.append(limit_value)
    data_points = sum(len(points) for _, points in drawn)
    parts = [_open(key, title, height, "line")]
    # No point: the empty state is what the chart says (not "no values" per series).
    words = _describe(drawn, limit, limit_value, limit_points, y_format, x_kind) if data_points else ""
    words = (words or f"{empty}.") + _left_out(dropped + limit_dropped)
    parts.append(f"<desc>{_text(words)}</desc>")
    parts.append(_heading(title))
    parts += legend
    parts.append(
        f'<rect class="frame" x="{LEFT}" y="{_coordinate(top)}" width="{right - LEFT}"'
        f' height="{PLOT_HEIGHT}" fill="none" stroke="currentColor"/>'
    )
    if data_points == 0:
        parts.append(
            f'<text class="empty" x="{_coordinate((LEFT + right) / 2)}"'
            f' y="{_coordinate(top + PLOT_HEIGHT / 2)}" text-anchor="middle">{_text(empty)}</text></svg>'
        )
        return Markup("".join(parts))

    x_low, x_high = min(xs), max(xs)
    if y_range is not None and math.isfinite(y_range[0]) and math.isfinite(y_range[1]):
        y_low, y_high = min(y_range), max(y_range)
    else:
        y_low, y_high = min(ys), max(ys)
        if zero:
            y_low, y_high = min(y_low, 0.0), max(y_high, 0.0)

    def at_x(value: float) -> float:
        return LEFT + 4 + _ratio(value, x_low, x_high) * (right - LEFT - 8)

    def at_y(value: float) -> float:
        return bottom - 4 - _ratio(value, y_low, y_high) * (PLOT_HEIGHT - 8)

    grid = [(y_low, bottom - 4), (_middle(y_low, y_high), top + PLOT_HEIGHT / 2), (y_high, top + 4)]
    for value, at in grid if y_high > y_low else [(y_low, top + PLOT_HEIGHT / 2)]:
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{_coordinate(at)}" x2="{right}" y2="{_coordinate(at)}"'
            f' stroke="currentColor"/><text class="tick" x="{LEFT - 3}" y="{_coordinate(at + 3)}"'
            f' text-anchor="end">{_text(y_format(value))}</text>'
        )
    ticks = [(x_low, "start"), (x_high, "end")] if x_high > x_low else [(x_low, "middle")]
    for value, anchor in ticks:
        place = {"start": LEFT, "end": right, "middle": (LEFT + right) / 2}[anchor]
        parts.append(
            f'<text class="tick" x="{_coordinate(place)}" y="{_coordinate(height - 4)}"'
            f' text-anchor="{anchor}">{_text(_x_label(value, x_kind, AXIS_TIME))}</text>'
        )

    if limit is not None and limit_value is not None:
        y = _coordinate(at_y(limit_value))
        parts.append(
            f'<g class="limit" data-limit="{_exact(limit_value)}"><title>{_text(limit.label)}:'
            f' {_text(y_format(limit_value))}</title><line x1="{LEFT}" y1="{y}" x2="{right}" y2="{y}"'
            f' stroke="currentColor" stroke-dasharray="4 3"/></g>'
        )
    if limit is not None and limit_points:
        values = " ".join(f"{_exact(p.x)}:{_exact(p.y)}" for p in limit_points)
        parts.append(
            f'<g class="limit" data-limits="{values}"><title>{_text(limit.label)}</title>'
            f'<path d="{_path(limit_points, at_x, at_y, step=True, right=right)}" fill="none"'
            f' stroke="currentColor" stroke-dasharray="4 3"/></g>'
        )
    for index, (one, points) in enumerate(drawn):
        css = f"series s{index % SERIES_CLASSES}"
        parts.append(f'<g class="{css}" data-series="{_text(one.name)}">')
        if len(points) > 1:
            path = _path(points, at_x, at_y, step=one.step, right=right, gap=one.gap)
            parts.append(f'<path class="line" d="{path}" fill="none" stroke="currentColor"/>')
        for point in points:
            words = f"{one.name}: {y_format(point.y)} at {_x_label(point.x, x_kind)}"
            if point.note:
                words += f" · {point.note}"
            mark = f" {_token(point.mark, 'mark')}" if point.mark else ""
            parts.append(
                f'<circle class="point{mark}" cx="{_coordinate(at_x(point.x))}"'
                f' cy="{_coordinate(at_y(point.y))}" r="2.5" data-x="{_exact(point.x)}"'
                f' data-y="{_exact(point.y)}"><title>{_text(words)}</title></circle>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _path(
    points: list[Point],
    at_x: Callable[[float], float],
    at_y: Callable[[float], float],
    *,
    step: bool,
    right: float,
    gap: float | None = None,
) -> str:
    commands = []
    for index, point in enumerate(points):
        x, y = _coordinate(at_x(point.x)), _coordinate(at_y(point.y))
        if index == 0 or (gap is not None and point.x - points[index - 1].x > gap):
            commands.append(f"M{x} {y}")
        elif step:
            commands.append(f"H{x} V{y}")
        else:
            commands.append(f"L{x} {y}")
    if step and len(points) == 1:
        commands.append(f"H{_coordinate(right - 4)}")  # one value: held across the chart
    return " ".join(commands)


def _describe(
    drawn: list[tuple[Series, list[Point]]],
    limit: Limit | None,
    limit_value: float | None,
    limit_points: list[Point],
    y_format: Callable[[float], str],
    x_kind: XKind,
) -> str:
    sentences = []
    for one, points in drawn:
        if not points:
            sentences.append(f"{one.name}: no values.")
            continue
        low = min(points, key=lambda p: p.y)
        high = max(points, key=lambda p: p.y)
        last = points[-1]
        sentences.append(
            f"{one.name}: {len(points)} value{'s' if len(points) != 1 else ''}, latest"
            f" {y_format(last.y)} at {_x_label(last.x, x_kind)}, lowest {y_format(low.y)},"
            f" highest {y_format(high.y)}."
        )
    if limit is not None and limit_value is not None:
        sentences.append(f"{limit.label}: {y_format(limit_value)}.")
    elif limit is not None and limit_points:
        sentences.append(
            f"{limit.label}: from {y_format(limit_points[0].y)} to {y_format(limit_points[-1].y)}."
        )
    return " ".join(sentences)


def _left_out(count: int) -> str:
    return f" {count} value{'s' if count != 1 else ''} left out (not a finite number)." if count else ""


# --- the timeline ----------------------------------------------------------------------------------


def timeline(
    spans: Sequence[Span],
    *,
    title: str,
    key: str,
    now: float,
    duration_format: Callable[[float], str] = _seconds,
    empty: str = "no steps yet",
) -> Markup:
    """Steps as bars on one time axis, a row each, in order: done, failed, running (to `now`) and
    pending (not reached: no bar). The newest MAX_SPANS rows are shown."""
    rows = list(spans)[-MAX_SPANS:]
    hidden = len(spans) - len(rows)
    top = TITLE_HEIGHT + 4
    height = top + max(len(rows), 1) * ROW_HEIGHT + BOTTOM
    right = WIDTH - RIGHT
    now = now if math.isfinite(now) else 0.0

    def ends(span: Span) -> tuple[float, float] | None:
        if span.start is None or not math.isfinite(span.start):
            return None
        end = span.end if span.end is not None and math.isfinite(span.end) else now
        return span.start, max(end, span.start)

    known = [e for e in map(ends, rows) if e is not None]
    x_low = min((start for start, _ in known), default=0.0)
    x_high = max((end for _, end in known), default=0.0)

    def at_x(value: float) -> float:
        return LABEL_WIDTH + _ratio(value, x_low, x_high) * (right - LABEL_WIDTH)

    done = sum(1 for span in rows if span.status == "done")
    summary = f"{len(rows)} step{'s' if len(rows) != 1 else ''}, {done} done"
    if known:
        summary += f", from {_moment(x_low)} to {_moment(x_high)}"
    if hidden:
        summary += f"; the {hidden} oldest not shown"
    parts = [_open(key, title, height, "timeline"), f"<desc>{_text(summary + '.')}</desc>", _heading(title)]
    if not rows:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{_coordinate(top + ROW_HEIGHT / 2 + 3)}"'
            f' text-anchor="middle">{_text(empty)}</text></svg>'
        )
        return Markup("".join(parts))
    for index, span in enumerate(rows):
        y = top + index * ROW_HEIGHT
        status = _token(span.status, "unknown")
        label = span.label if len(span.label) <= 24 else span.label[:23] + "…"
        parts.append(f'<g class="step step-{status}" data-status="{_text(span.status)}">')
        parts.append(f'<text class="label" x="4" y="{_coordinate(y + 11)}">{_text(label)}</text>')
        bounds = ends(span)
        if bounds is None:
            parts.append(
                f'<text class="pending" x="{LABEL_WIDTH}" y="{_coordinate(y + 11)}">'
                f"<title>{_text(f'{span.label}: {span.status}')}</title>{_text(span.status)}</text></g>"
            )
            continue
        start, end = bounds
        seconds = end - start if math.isfinite(end - start) else math.inf
        x0, x1 = at_x(start), at_x(end)
        took = duration_format(seconds) if math.isfinite(seconds) else "too long to say"
        until = " (still running)" if span.end is None else f" to {_moment(end)}"
        words = f"{span.label}: {span.status}, {took} from {_moment(start)}{until}"
        parts.append(
            f'<rect class="bar" x="{_coordinate(x0)}" y="{_coordinate(y + 3)}"'
            f' width="{_coordinate(max(x1 - x0, 2.0))}" height="{ROW_HEIGHT - 6}" fill="currentColor"'
            f' data-start="{_exact(start)}" data-end="{_exact(end) if span.end is not None else ""}"'
            f' data-seconds="{_exact(seconds)}"><title>{_text(words)}</title></rect></g>'
        )
    ticks = [(x_low, "start"), (x_high, "end")] if x_high > x_low else [(x_low, "middle")]
    for value, anchor in ticks if known else []:
        place = {"start": LABEL_WIDTH, "end": right, "middle": (LABEL_WIDTH + right) / 2}[anchor]
        parts.append(
            f'<text class="tick" x="{_coordinate(place)}" y="{_coordinate(height - 4)}"'
            f' text-anchor="{anchor}">{_text(_moment(value, CLOCK_TIME))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
