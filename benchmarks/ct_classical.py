"""Classical CT baselines (FBP, SART, TV, LI-MAR) on the held-out CT slices.

Evaluation: every bundled CT sample of ``scorerecon.data.samples`` (other patients than the
training head CT), resampled to 256² when needed, simulated noise-free with 180 full views
(parallel over [0, π), fan over [0, 2π)) in four sparse / limited settings, plus metal-artefact
reduction (``metal="auto"``: two iron objects, polychromatic 120 kVp, 10⁵ photons per bin).
PSNR / SSIM on the unit window [0, 1] (data range 1, ``evaluation/metrics.py``); for metal the
metal pixels are excluded (every method puts the same metal back).  Mean ± std over slices.

``--sweep`` instead tunes the TV weight on the validation split of the prepared head-ct dataset
(slices of the *training* volume, ``scorerecon data prepare head-ct``), never on evaluation
slices; the rule chosen from it is ``classical_ct.default_tv_weight``.

    python benchmarks/ct_classical.py            # full table -> benchmarks/results/ct_classical.md
    python benchmarks/ct_classical.py --quick    # one slice at 128², to check the script
    python benchmarks/ct_classical.py --sweep
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from scorerecon.atomic import atomic_path
from scorerecon.data.intensity import hu_to_unit
from scorerecon.evaluation.metrics import image_metrics
from scorerecon.simulate.ct import simulate_ct
from scorerecon.solvers.classical_ct import ct_problem, tv
from scorerecon.solvers.registry import reconstruct

RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 256
CONFIGS = {
    "parallel, 23 views": dict(views=23),
    "parallel, 60 views": dict(views=60),
    "fan (flat), 23 views": dict(views=23, geometry="fan"),
    "parallel, 120° limited angle": dict(limited_angle=120.0),
    "metal (parallel, 180 views)": dict(metal="auto"),
}
METHODS = ("fbp", "sart", "tv")
METAL_METHODS = ("fbp", "li-mar", "sart", "tv")
SWEEP_WEIGHTS = (0.01, 0.03, 0.1, 0.3, 1.0)


def resize(hu: np.ndarray, spacing: tuple[float, float], size: int) -> tuple[np.ndarray, float]:
    """Resample a slice to size² over the same field of view (``datasets.resample_ct``)."""
    from scorerecon.data.datasets import resample_ct
    if hu.shape == (size, size):
        return hu, float(spacing[-1])
    out, new_spacing = resample_ct(hu, spacing, size)
    return out, float(new_spacing[-1])


def evaluation_slices(size: int, limit: int | None) -> list[tuple[str, np.ndarray, float]]:
    """(name, HU image, pixel size mm) of the bundled CT samples."""
    from scorerecon.data.samples import list_samples, load_sample
    out = []
    for name in [n for n in list_samples() if n.startswith("ct-")][:limit]:
        image = load_sample(name)
        hu, pixel = resize(image.array, image.spacing or (1.0, 1.0), size)
        out.append((name, hu, pixel))
    return out


def validation_slices(size: int, limit: int | None) -> list[tuple[str, np.ndarray, float]]:
    """The validation split of the prepared head-ct dataset (slices of the training volume, every
    10th kept slice; ``scorerecon data prepare head-ct``), in HU, resized to ``size``."""
    from scorerecon.data.datasets import load_meta, load_split
    from scorerecon.data.intensity import unit_to_hu
    spacing = load_meta("head-ct")["training_source"]["spacing_mm"]
    val = load_split("head-ct", "val")[:limit]
    return [(f"head-ct val {k}", *resize(unit_to_hu(u), spacing[1:], size)) for k, u in enumerate(val)]


def score(unit: np.ndarray, meas) -> dict[str, float]:
    """PSNR / SSIM in the unit window, outside the metal when there is metal."""
    truth = hu_to_unit(meas.truth)
    metal = meas.extras.get("metal_mask")
    mask = None if metal is None else ~metal.astype(bool)
    return image_metrics(unit, truth, mask)


def run_table(slices, configs: dict) -> dict:
    """{config: {method: [(psnr, ssim, seconds), ...]}} over the slices."""
    results: dict = {c: {} for c in configs}
    for seed, (name, hu, pixel) in enumerate(slices):
        for config, options in configs.items():
            meas = simulate_ct(hu, pixel_size=pixel, seed=seed, **options)
            for method in METAL_METHODS if "metal" in options else METHODS:
                rec = reconstruct(meas, method)
                m = score(rec.unit_image, meas)
                results[config].setdefault(method, []).append((m["psnr"], m["ssim"], rec.seconds))
                print(f"{name:16s} {config:30s} {method:7s} PSNR {m['psnr']:6.2f}  SSIM {m['ssim']:.4f}  "
                      f"{rec.seconds:6.2f} s", flush=True)
    return results


def markdown(results: dict, title: str, notes: list[str]) -> str:
    lines = [f"# {title}", "", "| setting | method | PSNR (dB) | SSIM | time (s) |", "|---|---|---|---|---|"]
    for config, methods in results.items():
        for method, rows in methods.items():
            a = np.asarray(rows)
            mean, std = a.mean(0), a.std(0)
            lines.append(f"| {config} | {method} | {mean[0]:.2f} ± {std[0]:.2f} | {mean[1]:.3f} ± {std[1]:.3f} "
                         f"| {mean[2]:.2f} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def run_sweep(slices, configs: dict, weights) -> dict:
    """{config: {weight: [psnr, ...]}} of the TV solver on training slices."""
    results: dict = {c: {} for c in configs}
    for seed, (name, hu, pixel) in enumerate(slices):
        for config, options in configs.items():
            meas = simulate_ct(hu, pixel_size=pixel, seed=seed, **options)
            problem = ct_problem(meas)
            for w in weights:
                m = score(problem.finish(tv(problem, w)), meas)
                results[config].setdefault(f"w = {w:g}", []).append((m["psnr"], m["ssim"], 0.0))
                print(f"{name:16s} {config:30s} w {w:<6g} PSNR {m['psnr']:6.2f}  SSIM {m['ssim']:.4f}", flush=True)
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one slice at 128² (checks the script in < 2 min)")
    p.add_argument("--sweep", action="store_true", help="tune the TV weight on training slices instead")
    p.add_argument("--configs", nargs="*", default=None, help="subset of settings (substring match)")
    p.add_argument("--slices", type=int, default=None, help="use only the first N slices")
    p.add_argument("--weights", nargs="*", type=float, default=list(SWEEP_WEIGHTS))
    p.add_argument("--output", default=None, help="Markdown file (default: benchmarks/results/...)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    size, limit = (128, 1) if args.quick else (SIZE, args.slices)
    configs = {k: v for k, v in CONFIGS.items() if not args.configs or any(s in k for s in args.configs)}
    start = time.perf_counter()
    if args.sweep:
        slices = validation_slices(size, limit)
        results = run_sweep(slices, configs, args.weights)
        title, default = f"TV weight sweep on {len(slices)} training slices ({size}²)", "ct_tv_sweep"
    else:
        slices = evaluation_slices(size, limit)
        results = run_table(slices, configs)
        title, default = f"Classical CT reconstructions, {len(slices)} held-out slices ({size}²)", "ct_classical"
    notes = [f"slices: {', '.join(s[0] for s in slices)}",
             "noise-free except metal (10⁵ photons per bin, polychromatic, water pre-corrected); 180 full views",
             "metrics in the unit window u = (HU + 1000) / 3000 clipped to [0, 1]; metal pixels excluded",
             ("time: seconds per reconstruction, including a one-off system-matrix build on the first use "
              "of a geometry in a fresh cache folder (cached on disk afterwards)"),
             f"torch threads 2; total {time.perf_counter() - start:.0f} s"]
    text = markdown(results, title + (" — quick check" if args.quick else ""), notes)
    out = Path(args.output) if args.output else RESULTS / f"{default}{'_quick' if args.quick else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".md") as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
