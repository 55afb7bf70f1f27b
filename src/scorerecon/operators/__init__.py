"""The physics: every operator is A = P(Λ) T (REFERENCE.md section 1)."""

from .base import MaskedOperator

__all__ = ["MaskedOperator"]
