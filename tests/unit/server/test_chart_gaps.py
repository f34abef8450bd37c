"""A series with a `gap`: points further apart than it are not joined by the line (the traffic
charts' minutes nobody recorded), and every point is still drawn with its exact numbers."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from hypothesis import given
from hypothesis import strategies as st

from shipyard.server._charts import Point, Series, line_chart

SVG = "{http://www.w3.org/2000/svg}"


@given(
    st.lists(st.integers(0, 10_000), min_size=2, max_size=30, unique=True),
    st.integers(1, 500),
    st.booleans(),
)
def test_the_line_breaks_wherever_points_are_further_apart_than_the_gap(
    xs: list[int], gap: int, step: bool
) -> None:
    xs = sorted(xs)
    points = [Point(float(x), float(i)) for i, x in enumerate(xs)]
    root = ET.fromstring(str(line_chart([Series("s", points, step=step, gap=gap)], title="t", key="k")))
    (line,) = [p for p in root.iter(f"{SVG}path") if p.get("class") == "line"]
    breaks = sum(1 for a, b in itertools.pairwise(xs) if b - a > gap)
    assert (line.get("d") or "").count("M") == 1 + breaks
    circles = list(root.iter(f"{SVG}circle"))
    assert [float(c.get("data-x") or "") for c in circles] == [float(x) for x in xs]


def test_without_a_gap_every_point_is_joined() -> None:
    points = [Point(0, 1), Point(1000, 2), Point(10**6, 3)]
    root = ET.fromstring(str(line_chart([Series("s", points)], title="t", key="k")))
    (line,) = [p for p in root.iter(f"{SVG}path") if p.get("class") == "line"]
    assert (line.get("d") or "").count("M") == 1
