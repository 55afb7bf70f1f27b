"""Checks of the library's numeric arguments: a Python caller's mistake is one :class:`UserError`
naming the argument, as the command line's argparse types (:mod:`scorerecon.cli_types`) do."""

from __future__ import annotations

import math
from numbers import Integral, Real

from .cli_types import SEED_LIMIT
from .errors import UserError


def whole_number(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int ≥ ``minimum``; a fraction (23.5 views), text or bool is refused, not truncated."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def finite_number(name: str, value) -> float:
    """``value`` as a finite float; text, bool, NaN and infinity are refused."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def seed_number(value) -> int:
    """A random seed, 0 ≤ seed < 2³², which NumPy's and torch's generators both take."""
    value = whole_number("seed", value)
    if value >= SEED_LIMIT:
        raise UserError(f"seed must lie in 0 .. {SEED_LIMIT - 1}, got {value}")
    return value
