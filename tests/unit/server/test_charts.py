"""The dashboard's SVG charts (`server/_charts.py`): well-formed XML for any input, and the exact
numbers in each point's data-* attributes.

Every chart is parsed with xml.etree: text from anywhere (names, notes, marks, titles) may hold
markup or characters XML forbids; values may be NaN, ±inf, huge, tiny or negative.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.server._charts import (
    LEFT,
    MAX_POINTS,
    MAX_SPANS,
    RIGHT,
    WIDTH,
    Limit,
    Point,
    Series,
    Span,
    byte_size,
    line_chart,
    millis,
    number,
    percent,
    timeline,
)

SVG = "{http://www.w3.org/2000/svg}"
anything = st.floats(allow_nan=True, allow_infinity=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
words = st.text(max_size=40)
points = st.builds(Point, x=anything, y=anything, note=words, mark=words)
series = st.builds(Series, name=words, points=st.lists(points, max_size=12), step=st.booleans())
limits = st.one_of(
    st.none(),
    st.builds(Limit, label=words, value=anything),
    st.builds(Limit, label=words, points=st.lists(points, max_size=6)),
)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title") is not None
    return root


def in_view(root: ET.Element) -> None:
    """Every coordinate is a finite number inside the viewBox."""
    _, _, width, height = (float(v) for v in (root.get("viewBox") or "").split())
    for element in root.iter():
        for name in ("x", "x1", "x2", "cx"):
            if element.get(name) is not None:
                assert 0 <= float(element.get(name) or "") <= width, (name, element.attrib)
        for name in ("y", "y1", "y2", "cy"):
            if element.get(name) is not None:
                assert 0 <= float(element.get(name) or "") <= height, (name, element.attrib)
        if element.get("width") is not None and element.tag == f"{SVG}rect":
            assert 0 <= float(element.get("width") or "") <= width


def finite_points(ps: list[Point]) -> list[Point]:
    return [p for p in ps if math.isfinite(p.x) and math.isfinite(p.y)]


@settings(max_examples=300, deadline=None)
@given(st.lists(series, max_size=4), limits, words, st.sampled_from(["time", "number"]), st.booleans())
def test_any_line_chart_is_valid_svg_with_exact_numbers(
    given_series: list[Series], limit: Limit | None, title: str, x_kind: str, zero: bool
) -> None:
    svg = line_chart(given_series, title=title, key=title, limit=limit, x_kind=x_kind, zero=zero)  # type: ignore[arg-type]
    root = parse(str(svg))
    in_view(root)
    groups = root.findall(f"{SVG}g[@data-series]")
    drawn = [s for s in given_series if finite_points(list(s.points))]
    if not drawn:
        assert root.find(f"{SVG}text[@class='empty']") is not None
        assert groups == []
        return
    assert len(groups) == len(given_series)
    for group, one in zip(groups, given_series, strict=True):
        expected = finite_points(list(one.points))[-MAX_POINTS:]
        circles = group.findall(f"{SVG}circle")
        seen = Counter((float(c.get("data-x") or ""), float(c.get("data-y") or "")) for c in circles)
        assert seen == Counter((p.x, p.y) for p in expected)
        for circle in circles:
            title_element = circle.find(f"{SVG}title")
            assert title_element is not None
            assert title_element.text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(Span, label=words, start=st.none() | anything, end=st.none() | anything, status=words),
        max_size=8,
    ),
    words,
    anything,
)
def test_any_timeline_is_valid_svg(spans: list[Span], title: str, now: float) -> None:
    root = parse(str(timeline(spans, title=title, key="steps", now=now)))
    in_view(root)
    bars = root.findall(f".//{SVG}rect[@class='bar']")
    started = [s for s in spans[-MAX_SPANS:] if s.start is not None and math.isfinite(s.start)]
    assert [float(b.get("data-start") or "") for b in bars] == [s.start for s in started]
    for bar in bars:
        assert float(bar.get("data-seconds") or "") >= 0


def test_no_series_and_no_steps_say_so() -> None:
    empty = parse(str(line_chart([], title="RTO per drill", key="dr-rto", empty="no drill has run yet")))
    assert empty.find(f"{SVG}text[@class='empty']").text == "no drill has run yet"  # type: ignore[union-attr]
    assert "no drill has run yet" in (empty.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]
    steps = parse(str(timeline([], title="steps", key="s", now=0.0)))
    assert steps.findall(f".//{SVG}rect[@class='bar']") == []


def test_a_single_point_sits_in_the_middle_and_its_limit_is_exact() -> None:
    root = parse(
        str(
            line_chart(
                [Series("restore", [Point(1.8e9, 42.5)])],
                title="RTO",
                key="dr-rto",
                limit=Limit("RTO target", value=900.0),
            )
        )
    )
    (circle,) = root.iter(f"{SVG}circle")
    assert (circle.get("data-x"), circle.get("data-y")) == ("1800000000.0", "42.5")
    assert float(circle.get("cx") or "") == (LEFT + WIDTH - RIGHT) / 2
    limit = root.find(f"{SVG}g[@class='limit']")
    assert limit is not None
    assert limit.get("data-limit") == "900.0"


def test_text_is_escaped_and_characters_xml_forbids_are_replaced() -> None:
    name = '<script>alert("x")</script>\x00\x1b\ud800'
    svg = str(line_chart([Series(name, [Point(0, 1, note="</title>&")])], title=name, key=name))
    assert "<script>" not in svg
    root = parse(svg)
    (group,) = root.findall(f"{SVG}g[@data-series]")
    assert group.get("data-series") == '<script>alert("x")</script>\ufffd\ufffd\ufffd'
    assert root.get("data-chart") == "script-alert-x-script"


def test_values_that_are_not_finite_are_left_out_and_counted() -> None:
    root = parse(
        str(
            line_chart(
                [Series("p99", [Point(0, math.nan), Point(1, 5.0), Point(math.inf, 1.0)])],
                title="p99",
                key="p99",
            )
        )
    )
    assert [c.get("data-y") for c in root.iter(f"{SVG}circle")] == ["5.0"]
    assert "2 values left out" in (root.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]


def test_extreme_values_scale_without_overflowing() -> None:
    huge = [Point(-1.7e308, -1.7e308), Point(0.0, 0.0), Point(1.7e308, 1.7e308)]
    root = parse(str(line_chart([Series("huge", huge)], title="t", key="k", x_kind="number")))
    in_view(root)
    ys = [float(c.get("cy") or "") for c in root.iter(f"{SVG}circle")]
    assert ys[0] > ys[1] > ys[2]  # lower values further down, even across the whole float range


def test_a_fixed_range_clamps_drawing_but_keeps_the_numbers() -> None:
    root = parse(
        str(
            line_chart(
                [Series("v2", [Point(0, 150.0), Point(1, -5.0)], step=True)],
                title="traffic",
                key="t",
                y_range=(0.0, 100.0),
            )
        )
    )
    in_view(root)
    assert [c.get("data-y") for c in root.iter(f"{SVG}circle")] == ["150.0", "-5.0"]


def test_points_past_the_cap_keep_the_newest() -> None:
    many = [Point(float(i), float(i)) for i in range(MAX_POINTS + 50)]
    root = parse(str(line_chart([Series("s", many)], title="t", key="k")))
    xs = [float(c.get("data-x") or "") for c in root.iter(f"{SVG}circle")]
    assert xs == [float(i) for i in range(50, MAX_POINTS + 50)]


def test_timeline_rows_running_and_pending() -> None:
    root = parse(
        str(
            timeline(
                [
                    Span("1. prepare v2", 100.0, 103.0, "done"),
                    Span("2. analyse 60 s", 103.0, None, "started"),
                    Span("next: retire stable", None, None, "pending"),
                ],
                title="Release #3 of web: steps",
                key="release-steps-web",
                now=130.0,
            )
        )
    )
    done, running = root.findall(f".//{SVG}rect[@class='bar']")
    assert (done.get("data-seconds"), done.get("data-end")) == ("3.0", "103.0")
    assert (running.get("data-seconds"), running.get("data-end")) == ("27.0", "")
    assert "still running" in (running.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
    statuses = [g.get("data-status") for g in root.findall(f"{SVG}g")]
    assert statuses == ["done", "started", "pending"]


@given(anything)
def test_formats_take_any_number(value: float) -> None:
    for form in (number, percent, millis, byte_size):
        assert isinstance(form(value), str)


def test_formats_read_as_people_write() -> None:
    assert (percent(0.0125), millis(12.0), byte_size(1536), byte_size(512)) == (
        "1.25 %",
        "12 ms",
        "1.5 KiB",
        "512 B",
    )
    assert byte_size(3 * 1024**3) == "3 GiB"
