"""Classical MRI baselines (zero-filled, CG-SENSE, L1-wavelet, TV) on held-out brain slices.

Evaluation: the bundled MNI152 slices ``mri-brain-0..2`` of ``scorerecon.data.samples`` (256²,
another brain than the Colin27 training templates), simulated by ``simulate_mri`` with complex
Gaussian noise of 1 % of the image peak (``--noise``; noise-free data would favour vanishing
weights) and its smooth synthetic phase, centre fraction 0.08, in the settings of :data:`CASES`.  Multi-coil data use ESPIRiT maps estimated from the centre (``--true-maps``: the
simulation's birdcage maps).  PSNR / SSIM of the magnitude scaled by the reference maximum (data
range 1, ``evaluation/metrics.py``), mean ± std over slices; seconds per reconstruction.
When Debian's ``bart`` is installed, ``bart pics`` (L1-wavelet ``-R W``, TV ``-R T``) runs on
the same k-space and maps, with weights tuned the same way.

``--tune`` instead sweeps the regularisation weights on the validation slices of the *training*
distribution (Colin27 slices held out by ``scorerecon data prepare brain-mri``: every 10th), never
on the evaluation slices, and writes the weight maximising the mean PSNR over all settings:
these are the defaults of ``solvers/classical_mri.py``.

    python benchmarks/mri_classical.py            # full table -> benchmarks/results/mri_classical.md
    python benchmarks/mri_classical.py --quick    # one slice, two settings (script check)
    python benchmarks/mri_classical.py --tune     # weights -> benchmarks/results/mri_weights.md
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from scorerecon.evaluation.metrics import image_metrics
from scorerecon.operators import bart
from scorerecon.operators.coils import measurement_maps
from scorerecon.operators.mri import measurement_tensors
from scorerecon.simulate.mri import simulate_mri
from scorerecon.solvers import classical_mri
from scorerecon.solvers.registry import reconstruct

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {  # name -> (mask, acceleration, coils)
    "1 coil, 4× equispaced": ("equispaced", 4, 1),
    "1 coil, 8× equispaced": ("equispaced", 8, 1),
    "1 coil, 8× Poisson disc": ("poisson", 8, 1),
    "8 coils, 4× equispaced": ("equispaced", 4, 8),
    "8 coils, 8× equispaced": ("equispaced", 8, 8),
    "8 coils, 8× Poisson disc": ("poisson", 8, 8),
}
QUICK_CASES = ("1 coil, 4× equispaced", "8 coils, 8× Poisson disc")
METHODS = ("zero-filled", "sense", "cs-wavelet", "cs-tv")
BART_METHODS = ("bart-l1", "bart-tv")
WEIGHTS = (0.0001, 0.0003, 0.001, 0.003, 0.01)
TUNE_GRID = {"sense": (0.0, 0.001, 0.01, 0.03, 0.1), "cs-wavelet": WEIGHTS, "cs-tv": WEIGHTS,
             "bart-l1": WEIGHTS, "bart-tv": WEIGHTS}
NOISE = 0.01
BART_ITERATIONS = 100
BART_DEFAULT_WEIGHTS = {"bart-l1": 0.003, "bart-tv": 0.003}  # from --tune, like classical_mri's


# ------------------------------------------------------------------------------ data
def evaluation_slices(size: int, limit: int | None) -> list[tuple[str, np.ndarray]]:
    """(name, magnitude) of the bundled MNI152 samples, resized to size² when needed."""
    from scorerecon.data.samples import list_samples, load_sample
    names = [n for n in list_samples() if n.startswith("mri-brain")][:limit]
    return [(n, _resized(load_sample(n).array, size)) for n in names]


def tuning_slices(size: int, count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` evenly spread validation slices of the prepared brain-mri (Colin27) dataset."""
    from scorerecon.data.datasets import load_split
    val = load_split("brain-mri", "val")
    picks = np.linspace(0, len(val) - 1, count).round().astype(int)
    return [(f"colin27-val-{i}", _resized(val[i], size)) for i in picks]


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    from skimage.transform import resize
    image = np.asarray(image, np.float32)
    return image if image.shape == (size, size) else \
        resize(image, (size, size), order=1, anti_aliasing=True).astype(np.float32)


def simulate(image: np.ndarray, case: str, noise: float, true_maps: bool, seed: int):
    mask, acceleration, coils = CASES[case]
    meas = simulate_mri(image, mask=mask, acceleration=acceleration, coils=coils, noise=noise, seed=seed)
    if coils > 1 and not true_maps:
        del meas.extras["sensitivity_maps"]
        measurement_maps(meas)  # ESPIRiT, once, outside the timings
    return meas


# ------------------------------------------------------------------------- methods
def run_method(meas, method: str, weight: float | None) -> tuple[np.ndarray, float]:
    """(unit-domain magnitude, seconds) of one method on one measurement."""
    start = time.perf_counter()
    if method in BART_METHODS:
        image = bart_pics(meas, method, weight if weight is not None else BART_DEFAULT_WEIGHTS[method])
    else:
        image = reconstruct(meas, method, weight=weight).unit_image
    return image, time.perf_counter() - start


def bart_pics(meas, method: str, weight: float) -> np.ndarray:
    """``bart pics`` with L1-wavelet (``-R W:3:0:λ``) or TV (``-R T:3:0:λ``), no data scaling."""
    kspace, _, _ = measurement_tensors(meas)
    coils = kspace.shape[1]
    maps = measurement_maps(meas) if coils > 1 else np.ones((1, *kspace.shape[-2:]), np.complex64)
    regulariser = {"bart-l1": "W", "bart-tv": "T"}[method]
    out = bart.run(["pics", "-w", "1", "-i", str(BART_ITERATIONS), "-R", f"{regulariser}:3:0:{weight}",
                    "kspace", "maps", "image"],
                   {"kspace": bart.kspace_to_bart(kspace[0].numpy()), "maps": bart.kspace_to_bart(maps)}, "image")
    return np.abs(np.asarray(out).reshape(kspace.shape[-2:])).astype(np.float32)


def score(image: np.ndarray, meas) -> dict[str, float]:
    truth = meas.truth / float(meas.attrs["intensity_scale"])
    return image_metrics(image, truth)


# --------------------------------------------------------------------------- tables
def evaluate(slices, cases, methods, noise: float, true_maps: bool) -> dict:
    results: dict = {}
    for case in cases:
        for index, (name, image) in enumerate(slices):
            meas = simulate(image, case, noise, true_maps, seed=index)
            for method in methods:
                recon, seconds = run_method(meas, method, None)
                results.setdefault((case, method), []).append({**score(recon, meas), "seconds": seconds})
                print(f"{case:26s} {name:12s} {method:12s} {results[(case, method)][-1]}", flush=True)
    return results


def cell(rows: list[dict]) -> str:
    psnr = np.array([r["psnr"] for r in rows])
    ssim = np.array([r["ssim"] for r in rows])
    return f"{psnr.mean():.2f} ± {psnr.std():.2f} / {ssim.mean():.3f}"


def write_table(path: Path, results: dict, cases, methods, header: str) -> None:
    lines = [header, "", "| setting | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for case in cases:
        lines.append(f"| {case} | " + " | ".join(cell(results[(case, m)]) for m in methods) + " |")
    lines += ["", "Seconds per reconstruction (mean over slices and settings, 1 CPU thread):", "",
              "| " + " | ".join(methods) + " |", "|---" * len(methods) + "|",
              "| " + " | ".join(f"{np.mean([r['seconds'] for c in cases for r in results[(c, m)]]):.2f}"
                                for m in methods) + " |"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def tune(slices, cases, methods, noise: float, true_maps: bool) -> tuple[dict, dict]:
    """PSNRs per (method, weight) over slices and cases, and the best (weight, mean PSNR) per method."""
    table: dict = {}
    for case in cases:
        for index, (name, image) in enumerate(slices):
            meas = simulate(image, case, noise, true_maps, seed=100 + index)
            for method in methods:
                for weight in TUNE_GRID[method]:
                    recon, _ = run_method(meas, method, weight)
                    table.setdefault((method, weight), []).append(score(recon, meas)["psnr"])
                    print(f"{case:26s} {name:14s} {method:12s} {weight:<8g} {table[(method, weight)][-1]:.2f}",
                          flush=True)
    best = {m: max(((w, float(np.mean(table[(m, w)]))) for w in TUNE_GRID[m]), key=lambda t: t[1])
            for m in methods}
    return table, best


def write_weights(path: Path, table: dict, best: dict, methods, header: str) -> None:
    lines = [header, "", "| method | weight | mean PSNR (dB) |", "|---|---|---|"]
    for method in methods:
        for weight in TUNE_GRID[method]:
            mark = " **(chosen)**" if weight == best[method][0] else ""
            lines.append(f"| {method} | {weight:g}{mark} | {np.mean(table[(method, weight)]):.2f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one slice, two settings")
    parser.add_argument("--tune", action="store_true", help="sweep the weights on Colin27 validation slices")
    parser.add_argument("--size", type=int, default=None, help="image size (default 256)")
    parser.add_argument("--slices", type=int, default=None, help="number of slices (default: all / 4 tuning)")
    parser.add_argument("--noise", type=float, default=NOISE, help=f"complex noise std relative to the image "
                        f"peak (default {NOISE})")
    parser.add_argument("--true-maps", action="store_true", help="use the simulated maps instead of ESPIRiT")
    parser.add_argument("--cases", nargs="*", default=None, help=f"subset of {list(CASES)}")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of the methods")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = args.size or 256
    cases = args.cases or (list(QUICK_CASES) if args.quick else list(CASES))
    methods = list(METHODS) + (list(BART_METHODS) if bart.available() else [])
    methods = [m for m in methods if args.methods is None or m in args.methods]
    suffix = "_quick" if args.quick else ""
    settings = (f"{size}², noise {args.noise:g}, centre fraction 0.08, "
                f"{'simulated' if args.true_maps else 'ESPIRiT'} maps, torch {torch.__version__}, "
                f"BART {'installed' if bart.available() else 'not installed'}")
    if args.tune:
        slices = tuning_slices(size, args.slices or (1 if args.quick else 4))
        tuned = [m for m in methods if m in TUNE_GRID]
        table, best = tune(slices, cases, tuned, args.noise, args.true_maps)
        write_weights(RESULTS / f"mri_weights{suffix}.md", table, best, tuned,
                      f"# MRI regularisation weights, tuned on {len(slices)} Colin27 validation slices\n\n"
                      f"Settings: {', '.join(cases)}; {settings}.  Defaults in use: SENSE damping "
                      f"{classical_mri.SENSE_DAMPING}, wavelet {classical_mri.WAVELET_WEIGHT}, "
                      f"TV {classical_mri.TV_WEIGHT}, BART {BART_DEFAULT_WEIGHTS}.")
        return
    slices = evaluation_slices(size, args.slices or (1 if args.quick else None))
    results = evaluate(slices, cases, methods, args.noise, args.true_maps)
    write_table(RESULTS / f"mri_classical{suffix}.md", results, cases, methods,
                f"# Classical MRI reconstructions on {len(slices)} held-out MNI152 slices\n\n"
                f"PSNR (dB) mean ± std / SSIM; {settings}; default weights "
                f"(wavelet {classical_mri.WAVELET_WEIGHT}, TV {classical_mri.TV_WEIGHT}, "
                f"BART {BART_DEFAULT_WEIGHTS}).")


if __name__ == "__main__":
    main()
