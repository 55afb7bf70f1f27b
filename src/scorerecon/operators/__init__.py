"""The physics: every operator is A = P(Λ) T (REFERENCE.md section 1)."""

from .base import MaskedOperator
from .coils import birdcage_maps, espirit_maps, rss, sense_combine, synthetic_phase
from .ct import (CTGeometry, CTOperator, combine_masks, ct_operator_from_measurement, fbp,
                 limited_angle_mask, metal_trace_mask, sinogram_to_physical, sinogram_to_unit, view_mask)
from .masks import PATTERNS as MASK_PATTERNS
from .masks import effective_acceleration, make_mask
from .mri import (CoilPhaseMRI, SenseMRI, SingleCoilMRI, batch_to_complex, channels_to_complex,
                  complex_to_batch, complex_to_channels, fft2c, ifft2c, mri_operator_from_measurement)

__all__ = ["MaskedOperator", "CTGeometry", "CTOperator", "fbp", "view_mask", "limited_angle_mask",
           "metal_trace_mask", "combine_masks", "ct_operator_from_measurement", "sinogram_to_unit",
           "sinogram_to_physical", "SingleCoilMRI", "SenseMRI", "CoilPhaseMRI", "fft2c", "ifft2c",
           "complex_to_channels",
           "channels_to_complex", "complex_to_batch", "batch_to_complex", "mri_operator_from_measurement",
           "make_mask", "MASK_PATTERNS", "effective_acceleration", "birdcage_maps", "synthetic_phase",
           "espirit_maps", "rss", "sense_combine"]
