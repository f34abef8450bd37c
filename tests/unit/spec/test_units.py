from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.spec import byte_count, format_cpu, millicores, seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500m", 500), ("2", 2000), ("0.25", 250), (1, 1000), (0.5, 500), ("2000m", 2000), ("1.5", 1500)],
)
def test_millicores(text: object, expected: int) -> None:
    assert millicores(text) == expected


@pytest.mark.parametrize("text", ["1Gi", "abc", "-1", "0.0001", True, None, "1.5m"])
def test_millicores_rejects(text: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        millicores(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1Gi", 2**30), ("512Mi", 2**29), ("1G", 10**9), ("100", 100), ("1.5Gi", 3 * 2**29), ("10Ki", 10240)],
)
def test_byte_count(text: str, expected: int) -> None:
    assert byte_count(text) == expected


def test_byte_count_rejects_milli() -> None:
    with pytest.raises(ValueError, match="Mi"):
        byte_count("512m")


@pytest.mark.parametrize(
    ("text", "expected"), [("30s", 30), ("5m", 300), ("4h", 14400), ("1h30m", 5400), ("2d", 172800), (45, 45)]
)
def test_seconds(text: object, expected: int) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("text", ["", "5 minutes", "-3", -3, True, "1h1d"])
def test_seconds_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        seconds(text)


@given(st.integers(min_value=0, max_value=10**7))
def test_cpu_round_trip(millis: int) -> None:
    assert millicores(format_cpu(millis)) == millis
