"""``scorerecon demo``: score-based sparse-view CT of a bundled held-out head slice, end to end.

Simulates a 23-of-180-view parallel-beam measurement of a real CT slice that no prior was trained
on (another patient than the head-ct prior's training volume), reconstructs it with FBP, the best
classical method (TV) and the fast score-based sampler with the shipped ``head-ct`` prior
(K posterior samples in one batch: their mean and standard deviation), and writes a figure
(measurement, reconstructions, truth, error, posterior std) and a metrics JSON.  Everything it
needs, weights included, ships inside the package.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import check_output_folder, write_json
from ..data.intensity import HU_HIGH, HU_LOW, hu_to_unit
from ..data.samples import load_sample
from ..solvers import reconstruct
from .figures import save_panels
from .metrics import error_and_std, std_coverage

DEMO_SAMPLE = "ct-head-0"
DEMO_VIEWS, DEMO_FULL_VIEWS = 23, 180
DEMO_PRIOR = "head-ct"


def demo_methods(steps: int | None = None, samples: int | None = None) -> list[tuple[str, dict]]:
    """(method, options) in the order shown; the last one is the headline reconstruction
    (``steps`` and ``samples`` None: the ct-sparse-view preset's)."""
    return [("fbp", {}), ("tv", {}),
            ("fast", {"prior": DEMO_PRIOR, "steps": steps, "samples": samples, "progress": False})]


def error_and_std_panels(name: str, result, meas, truth: np.ndarray, metrics: dict) -> list:
    """The |error| of ``result`` against ``truth`` (``meas.truth`` in the unit window) and, with
    K > 1, its std map, on one colour scale so that they compare; how well the std map predicts
    the error goes into the std panel's caption and ``metrics``
    (:func:`~scorerecon.evaluation.metrics.std_coverage` of the unclipped image in HU, as
    ``tune --calibrate-std`` and the benchmarks count it)."""
    error = np.abs(np.clip(result.unit_image, 0, 1) - truth)
    if result.std is None:
        return [(f"|error| of {name}", error, {"cmap": "magma", "vmin": 0, "vmax": 0.2})]
    metrics.update(std_coverage(*error_and_std(result.image, result.std, meas.truth)))
    std = result.std / (HU_HIGH - HU_LOW)  # HU -> the unit window, as the error shown
    style = {"cmap": "magma", "vmin": 0, "vmax": float(np.percentile(np.concatenate([error, std]), 99.5))}
    return [(f"|error| of {name}", error, style),
            (f"posterior std, same scale (|error| ≤ std: {metrics['within_1std']:.0%})", std, dict(style))]


def run_demo(out_dir: Path, steps: int | None = None, samples: int | None = None) -> dict[str, Path]:
    """Run the demo into ``out_dir`` (the fast sampler's ``steps`` and ``samples``, by default
    its preset's); return the paths written."""
    methods = demo_methods(steps, samples)
    from ..simulate.ct import simulate_ct

    check_output_folder(out_dir)
    sample = load_sample(DEMO_SAMPLE)
    meas = simulate_ct(sample.array, pixel_size=(sample.spacing or (1.0,))[0],
                       views=DEMO_VIEWS, full_views=DEMO_FULL_VIEWS, geometry="parallel", seed=0)
    truth = np.clip(hu_to_unit(meas.truth), 0, 1)
    results = {name: reconstruct(meas, name, **options) for name, options in methods}

    metrics = {"sample": DEMO_SAMPLE, "views": DEMO_VIEWS, "full_views": DEMO_FULL_VIEWS, "methods": {}}
    for name, result in results.items():
        metrics["methods"][name] = result.metrics(meas)
    headline = methods[-1][0]
    best = results[headline]
    panels = [("measured sinogram (%d views)" % DEMO_VIEWS, meas.data[meas.mask.any(axis=1)], {"aspect": "auto"})]
    for name, result in results.items():
        m = metrics["methods"][name]
        panels.append((f"{name}: {m['psnr']:.2f} dB / {m['ssim']:.3f}",
                       np.clip(result.unit_image, 0, 1), {"vmin": 0, "vmax": 1}))
    panels.append(("truth (held out)", truth, {"vmin": 0, "vmax": 1}))
    panels += error_and_std_panels(headline, best, meas, truth, metrics["methods"][headline])
    out_dir.mkdir(parents=True, exist_ok=True)  # after the work: a failed run leaves no folder
    figure = save_panels(out_dir / "demo.png", panels,
                         title=f"sparse-view CT, {DEMO_VIEWS}/{DEMO_FULL_VIEWS} views, held-out slice {DEMO_SAMPLE}")
    metrics_path = out_dir / "metrics.json"
    write_json(metrics_path, metrics)
    return {"figure": figure, "metrics": metrics_path}
