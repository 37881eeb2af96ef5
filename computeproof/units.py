"""The units events carry (integers: GPU-ms, mJ, bytes) and their display forms, in one
place for the CLI, reports and the dashboard."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

MS_PER_HOUR = 3_600_000
MJ_PER_KWH = 3_600_000_000

_CTX = Context(prec=60)


def rounded(value: Fraction | int, places: int) -> float:
    """``value`` rounded half-even to ``places`` decimals, as a JSON number."""
    f = Fraction(value)
    d = _CTX.divide(Decimal(f.numerator), Decimal(f.denominator))
    return float(d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN, context=_CTX))


def gpu_hours(gpu_ms: int) -> float:
    """GPU-milliseconds as GPU-hours (6 decimals)."""
    return rounded(Fraction(gpu_ms, MS_PER_HOUR), 6)


def kwh(millijoules: int) -> float:
    """Millijoules as kWh (9 decimals)."""
    return rounded(Fraction(millijoules, MJ_PER_KWH), 9)
