"""Numbers as a reader wants them in a report: four significant digits (``0.8664``, ``2.130``, ``345.1``), whole
numbers without a decimal point (``1861``), never a 16-digit float; :func:`rounded` applies the same to every float
inside a JSON-like object (calibration, privacy and federation records, data cards)."""

from __future__ import annotations

import math
from typing import Any

DIGITS = 4


def format_number(v: float | int, digits: int = DIGITS) -> str:
    """``v`` with ``digits`` significant digits, trailing zeros kept (``0.5`` -> ``0.5000``: the precision shows);
    ints and integral floats of 10**digits or more as whole numbers; very small values in scientific notation."""
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    text = f"{v:#.{digits}g}"
    return text[:-1] if text.endswith(".") else text


def round_significant(v: float, digits: int = DIGITS) -> float:
    """``v`` rounded to ``digits`` significant digits (a float; non-finite values unchanged)."""
    if not math.isfinite(v) or v == 0:
        return v
    if abs(v) >= 10 ** digits:
        return float(round(v))
    return round(v, digits - 1 - math.floor(math.log10(abs(v))))


def rounded(obj: Any, digits: int = DIGITS) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, scalars) with every float rounded to ``digits`` significant digits."""
    if isinstance(obj, float):
        return round_significant(obj, digits)
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj
