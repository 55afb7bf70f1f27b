"""Checks of the library's numeric arguments: a Python caller's mistake is one :class:`UserError`
naming the argument, as the command line's argparse types (:mod:`scorerecon.cli_types`) do."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from .cli_types import SEED_LIMIT
from .errors import UserError


def _real(value):
    """A plain number from ``value`` (a 0-d array gives its item), None for text, bools and others."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value if isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) else None


def whole_number(name: str, value, minimum: int = 0) -> int:
    """``value`` as an int ≥ ``minimum``: 23 and 23.0 pass, a fraction (23.5 views) is refused,
    not truncated, as are text and bools."""
    number = _real(value)
    whole = isinstance(number, Integral) or (number is not None and math.isfinite(number) and number.is_integer())
    if not whole or number < minimum:
        raise UserError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(number)


def finite_number(name: str, value, minimum: float | None = None) -> float:
    """``value`` as a finite float (≥ ``minimum`` where given); text, bools, NaN and infinity are refused."""
    number = _real(value)
    if number is None or not math.isfinite(number) or (minimum is not None and number < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise UserError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(number)


def seed_number(value) -> int:
    """A random seed, 0 ≤ seed < 2³², which NumPy's and torch's generators both take."""
    value = whole_number("seed", value)
    if value >= SEED_LIMIT:
        raise UserError(f"seed must lie in 0 .. {SEED_LIMIT - 1}, got {value}")
    return value
