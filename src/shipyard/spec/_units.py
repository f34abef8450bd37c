"""Kubernetes quantities, durations and cron expressions: parsed once, kept exact.

CPU is counted in millicores and memory/storage in bytes, both as integers, so totals are exact
(seed 004's 7.35 cores is 7350 millicores, never 7.3500000001).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from croniter import croniter
from pydantic import AfterValidator, BeforeValidator

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")

GIB = 2**30


def _number_and_suffix(value: object, what: str) -> tuple[Decimal, str]:
    text = str(value).strip() if isinstance(value, int | float | str) else None
    if text is None or isinstance(value, bool):
        raise ValueError(f"expected a {what} such as '500m', '2' or '1Gi'")
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a {what}; write it as Kubernetes does, e.g. '500m' or '1Gi'")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"{text!r} is not a {what}") from exc
    return number, match["suffix"] or ""


def millicores(value: object) -> int:
    """'500m' -> 500, '2' -> 2000, 0.25 -> 250."""
    number, suffix = _number_and_suffix(value, "CPU quantity")
    if suffix == "m":
        result = number
    elif suffix == "":
        result = number * 1000
    else:
        raise ValueError(f"{value!r}: CPU is counted in cores ('2', '0.5') or millicores ('500m')")
    if result != result.to_integral_value():
        raise ValueError(f"{value!r} is finer than a millicore")
    return int(result)


def byte_count(value: object) -> int:
    """'1Gi' -> 1073741824, '512Mi' -> 536870912, '1G' -> 10**9."""
    number, suffix = _number_and_suffix(value, "memory or storage quantity")
    if suffix == "m":
        raise ValueError(f"{value!r}: 'm' means milli; for mebibytes write 'Mi'")
    scale = _BINARY.get(suffix) or _DECIMAL[suffix]
    return int(number * scale)


def format_cpu(millis: int) -> str:
    """The shortest Kubernetes spelling: 2000 -> '2', 500 -> '500m'."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def seconds(value: object) -> int:
    """'90s', '5m', '1h30m', '2d' or a plain number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', '5m' or '4h'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match and any(match.groupdict().values()):
            parts = {k: int(v or 0) for k, v in match.groupdict().items()}
            return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '5m', '4h' or '1h30m'")


def _cpu_text(value: object) -> str:
    millicores(value)
    return str(value)


def _bytes_text(value: object) -> str:
    byte_count(value)
    return str(value)


def _cron(value: str) -> str:
    if not croniter.is_valid(value) or len(value.split()) != 5:
        raise ValueError(
            f"{value!r} is not a cron schedule; use five fields: minute hour day month weekday,"
            " e.g. '0 2 * * *' for 02:00 daily"
        )
    return value


CpuQuantity = Annotated[str, BeforeValidator(_cpu_text)]
"""A CPU amount as written in the spec; `millicores()` gives its value."""

ByteQuantity = Annotated[str, BeforeValidator(_bytes_text)]
"""A memory or storage amount as written in the spec; `byte_count()` gives its value."""

Duration = Annotated[int, BeforeValidator(seconds)]
"""A duration in whole seconds, written as '30s', '5m', '4h' or a number of seconds."""

CronSchedule = Annotated[str, AfterValidator(_cron)]
"""A five-field cron schedule."""
