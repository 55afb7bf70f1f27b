"""The physics: every operator is A = P(Λ) T (REFERENCE.md section 1)."""

from .base import MaskedOperator
from .ct import (CTGeometry, CTOperator, combine_masks, ct_operator_from_measurement, fbp,
                 limited_angle_mask, metal_trace_mask, sinogram_to_physical, sinogram_to_unit, view_mask)

__all__ = ["MaskedOperator", "CTGeometry", "CTOperator", "fbp", "view_mask", "limited_angle_mask",
           "metal_trace_mask", "combine_masks", "ct_operator_from_measurement", "sinogram_to_unit",
           "sinogram_to_physical"]
