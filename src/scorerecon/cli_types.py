"""Argument types shared by every command-line verb (argparse turns their errors into one line)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer ≥ 1, e.g. ``--steps``, ``--samples``, ``--coils``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0, e.g. ``--snr``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


#: seeds are whole numbers 0 ≤ seed < 2³², which every generator here (NumPy, torch) takes
SEED_LIMIT = 2 ** 32


def seed_int(text: str) -> int:
    """A random seed, 0 ≤ seed < 2³² (``--seed``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in 0 .. {SEED_LIMIT - 1}, got {text}")
    return value
