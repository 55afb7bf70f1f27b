"""Shared test fixtures, phantoms and the loader of the benchmark scripts."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes
from skimage.data import shepp_logan_phantom
from skimage.transform import resize


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module, importable as when it is run: with ``benchmarks/`` on
    ``sys.path``, where the scripts import each other (``score_methods``, ``prior_cards``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.append(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session", autouse=True)
def isolated_matrix_cache(tmp_path_factory):
    """Keep the CT system-matrix cache of every test out of the user's cache folder."""
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
