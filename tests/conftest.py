"""Shared test fixtures and phantoms."""

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes
from skimage.data import shepp_logan_phantom
from skimage.transform import resize


@pytest.fixture(scope="module")
def isolated_matrix_cache(tmp_path_factory):
    """Keep the CT system-matrix cache of a test module out of the user's cache folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCORERECON_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def shepp_logan_hu(n: int = 64, smooth: bool = False) -> np.ndarray:
    """Shepp–Logan in HU: air -1000, skull 1000, soft tissue (p - 0.2) * 500 (about -50..100).

    ``smooth`` resizes with anti-aliasing (soft edges), otherwise nearest neighbour (sharp edges).
    """
    p = resize(shepp_logan_phantom(), (n, n), order=1 if smooth else 0, anti_aliasing=smooth)
    inside = binary_fill_holes(p > (0.05 if smooth else 0))
    return np.where(~inside, -1000.0, np.where(p >= 0.9, 1000.0, (p - 0.2) * 500.0)).astype(np.float32)
