"""Speed of the MRI operators: forward + adjoint, single-coil and 15-coil SENSE, vs sigpy.

For each setting (coils ∈ {1, 15}, batch ∈ {1, 8}) at 320² (fastMRI's image size) the time of
one A^H A x (a forward and an adjoint, complex64) is the median of ``--repeats`` runs after one
warm-up.  scorerecon batches the images (and the coils, in the channel dimension) in one FFT call;
sigpy's ``sigpy.mri.linop.Sense`` (numpy, complex64) applies one image at a time, so its batch
time is a loop.  Both use a 4× equispaced mask and birdcage maps.  ``--device cuda`` times
scorerecon on a GPU (synchronised) beside sigpy on the CPU.

    python benchmarks/mri_operators.py            # -> benchmarks/results/mri_operators.md
    python benchmarks/mri_operators.py --quick    # 128², 3 repeats (script check)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from scorerecon.allocator import retain_freed_memory
from scorerecon.operators.coils import birdcage_maps
from scorerecon.operators.masks import make_mask
from scorerecon.operators.mri import SenseMRI, SingleCoilMRI

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def benchmark_operator(size: int, coils: int):
    """The benchmarked operator: 4× equispaced mask, birdcage maps for several coils."""
    mask = torch.from_numpy(make_mask("equispaced", (size, size), 4, 0.08))
    return SingleCoilMRI(mask) if coils == 1 else SenseMRI(torch.from_numpy(birdcage_maps(coils, (size, size))), mask)


def time_ours(size: int, coils: int, batch: int, repeats: int, device: str) -> float:
    op = benchmark_operator(size, coils).to(device)
    x = torch.randn(batch, 1, size, size, dtype=torch.complex64, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.no_grad():
        return median_seconds(lambda: op.normal(x), repeats, sync)


def time_sigpy(size: int, coils: int, batch: int, repeats: int) -> float:
    import sigpy.mri
    mask = make_mask("equispaced", (size, size), 4, 0.08).astype(np.float32)
    maps = birdcage_maps(coils, (size, size)) if coils > 1 else np.ones((1, size, size), np.complex64)
    op = sigpy.mri.linop.Sense(maps, weights=mask)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((batch, size, size)) + 1j * rng.standard_normal((batch, size, size))).astype(np.complex64)
    return median_seconds(lambda: [op.H * (op * image) for image in x], repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128², 3 repeats")
    parser.add_argument("--size", type=int, default=None, help="image size (default 320, quick 128)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per setting (default 10, quick 3)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--device", default="cpu", help="device for scorerecon (cpu or cuda)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as reconstruct() does; benchmarks/allocator.py compares glibc's defaults
    size = args.size or (128 if args.quick else 320)
    repeats = args.repeats or (3 if args.quick else 10)
    rows = []
    for coils in (1, 15):
        for batch in (1, 8):
            ours = time_ours(size, coils, batch, repeats, args.device)
            theirs = time_sigpy(size, coils, batch, repeats)
            rows.append(f"| {coils} | {batch} | {1e3 * ours:.2f} | {1e3 * theirs:.2f} | {theirs / ours:.1f}× |")
            print(rows[-1], flush=True)
    lines = [f"# MRI operator speed: one forward + adjoint (A^H A x) at {size}², complex64", "",
             (f"scorerecon on {args.device} (torch {torch.__version__}), sigpy on the CPU (numpy), "
              f"{args.threads} CPU thread(s), median of {repeats} runs."), "",
             "| coils | batch | scorerecon (ms) | sigpy (ms) | speed-up |", "|---|---|---|---|---|", *rows]
    path = RESULTS / f"mri_operators{'_quick' if args.quick else ''}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
