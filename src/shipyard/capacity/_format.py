"""Human figures: cores and GiB with at most two decimals, money to the cent."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from ..spec import GIB


def _short(value: Decimal, places: int = 2) -> str:
    """Rounded to at most `places` decimals, without trailing zeros: 7.350 -> '7.35'."""
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = f"{rounded:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_cores(millicores: int) -> str:
    """7350 -> '7.35', 6000 -> '6', 250 -> '0.25'."""
    return _short(Decimal(millicores) / 1000)


def format_gib(count: int) -> str:
    """Bytes as GiB: 16642998272 -> '15.5', 536870912 -> '0.5'."""
    return _short(Decimal(count) / GIB)


def format_money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def limits_note(rows_without_limit: int) -> str:
    """What a limits total says of the rows it cannot count: '' when every row has its limits."""
    if not rows_without_limit:
        return ""
    return f"({rows_without_limit} {'row' if rows_without_limit == 1 else 'rows'} without a limit)"


def second_total_label(exporters: bool, control_plane: bool) -> str:
    """The second total's label: what it adds to seed 004's TOTAL."""
    added = " and ".join(
        part for part, given in (("exporters", exporters), ("shipyard", control_plane)) if given
    )
    return f"TOTAL + {added}"
