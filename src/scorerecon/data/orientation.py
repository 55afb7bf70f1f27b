"""Array axes brought to the layout of :mod:`scorerecon.data.io` (each axis along +z, +y, +x of LPS).

A volume's C-order axes run along known directions in patient space (DICOM: the slice normal and
the row and column cosines of ImageOrientationPatient; NRRD: its space directions).  A 3-D volume
is flipped and permuted to the closest LPS axes with nibabel's ``io_orientation`` (what
``as_closest_canonical`` does for NIfTI), never resampled: an oblique volume keeps its own voxel
grid, snapped to the nearest axes.  A 2-D image keeps its axes in place and only flips one whose
direction points mostly along −x or −y, so a sagittal or coronal slice keeps superior at the top.
Each move has its inverse here, so a writer can put an array back into a reference's own layout.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserError


def _orientation(directions: np.ndarray, name: str) -> np.ndarray:
    """nibabel orientation of the file axes (Fortran order) whose C-order axes run along the rows
    of ``directions`` (LPS): for each file axis, the LPS axis it goes to and ±1."""
    from nibabel.orientations import io_orientation
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(directions, dtype=float)[::-1].T  # columns: the x, y, z file axes
    ornt = io_orientation(affine)
    if not np.all(np.isfinite(ornt)):
        raise UserError(f"{name} has axis directions that do not span 3-D space: "
                        "fix its orientation fields")
    return ornt


def _moved_steps(steps, ornt: np.ndarray, inverse: bool) -> tuple[float, ...] | None:
    """Per-axis steps (C order) permuted as the axes are (None stays None)."""
    if steps is None:
        return None
    fortran = np.asarray(steps, dtype=float)[::-1]
    axes = ornt[:, 0].astype(int)
    if inverse:
        moved = fortran[axes]
    else:
        moved = np.empty(3)
        moved[axes] = fortran
    return tuple(float(v) for v in moved[::-1])


def closest_lps(volume: np.ndarray, directions: np.ndarray, steps, name: str = "the volume"
                ) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """``volume`` (C order, axis k along ``directions[k]``) flipped and permuted to (+z, +y, +x),
    with its per-axis ``steps`` (spacing, or None) permuted alike."""
    from nibabel.orientations import apply_orientation
    ornt = _orientation(directions, name)
    fortran = apply_orientation(volume.T, ornt)  # axis i of the result runs along +LPS axis i
    return np.ascontiguousarray(fortran.T), _moved_steps(steps, ornt, inverse=False)


def from_closest_lps(volume: np.ndarray, directions: np.ndarray, steps, name: str = "the reference"
                     ) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """The inverse of :func:`closest_lps`: a (+z, +y, +x) volume and its steps put back on axes
    along ``directions``."""
    from nibabel.orientations import apply_orientation
    ornt = _orientation(directions, name)
    inverse = np.empty_like(ornt)
    inverse[ornt[:, 0].astype(int)] = np.stack([np.arange(3), ornt[:, 1]], axis=1)
    return (np.ascontiguousarray(apply_orientation(np.asarray(volume).T, inverse).T),
            _moved_steps(steps, ornt, inverse=True))


def flip_in_plane(image: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """Flip each of the last axes of ``image`` whose direction (row of ``directions``, LPS) points
    mostly along −x or −y; axes mostly along z stay as stored.  Its own inverse."""
    first = image.ndim - len(directions)
    for k, vector in enumerate(np.asarray(directions, dtype=float)):
        axis = int(np.argmax(np.abs(vector[:3])))
        if axis < 2 and vector[axis] < 0:
            image = np.flip(image, axis=first + k)
    return image
