"""What the water pre-correction of noisy air rays does to the metal task (session 56).

``simulate.ct.water_precorrection`` maps polychromatic post-log values to water line integrals.
Until session 56 it clamped values below 0 (air rays whose noisy count exceeded I₀) to 0, a bias
upwards; now it continues along the water curve's slope at 0.  This measures both on the
evaluation slices of the ``ct-metal`` task of ``score_methods.py`` (same simulation, same seed):
the largest and mean change of the sinogram, and the PSNR of each classical method.  The stored
score-based metal rows (``benchmarks/results/rows_1000_steps``) were measured with the clamp.

    python benchmarks/metal_air_correction.py   # -> benchmarks/results/metal_air_correction.md
"""

from __future__ import annotations

import argparse

import numpy as np

import scorerecon.simulate.ct as ct_simulation
from score_methods import RESULTS, TASKS, classical_rows, evaluation_images, rerun_command, simulate, write_result


def clamped_precorrection(post_log: np.ndarray) -> np.ndarray:
    """The inversion before session 56: values below the water curve's start clamp to 0."""
    thickness, poly = ct_simulation.water_curve()
    return np.interp(post_log, poly, thickness).astype(np.float32)


def metal_case(image: np.ndarray, pixel: float, precorrection):
    """The ct-metal measurement of ``image`` with ``precorrection`` in place of the package's."""
    shipped = ct_simulation.water_precorrection
    ct_simulation.water_precorrection = precorrection
    try:
        return simulate("ct", image, pixel, TASKS["ct-metal"][1])
    finally:
        ct_simulation.water_precorrection = shipped


def table(size: int, slices: int | None) -> str:
    lines = ["| slice | max / mean abs change of the sinogram | method | PSNR clamped (dB) | PSNR now | change |",
             "|---|---|---|---|---|---|"]
    for name, image, pixel in evaluation_images("ct", size, slices, None):
        clamped = metal_case(image, pixel, clamped_precorrection)
        now = metal_case(image, pixel, ct_simulation.water_precorrection)
        change = np.abs(now.data - clamped.data)
        before, after = classical_rows(clamped, "ct-metal"), classical_rows(now, "ct-metal")
        for k, method in enumerate(after):
            shift = f"{change.max():.4f} / {change.mean():.5f}" if k == 0 else ""
            lines.append(f"| {name if k == 0 else ''} | {shift} | {method} | {before[method]['psnr']:.4f} | "
                         f"{after[method]['psnr']:.4f} | {after[method]['psnr'] - before[method]['psnr']:+.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=None, help="first N evaluation slices (default: all)")
    parser.add_argument("-o", "--output", default=str(RESULTS / "metal_air_correction.md"))
    args = parser.parse_args(argv)
    text = (f"# Water pre-correction of noisy air rays on the metal task\n\n{table(args.size, args.slices)}\n\n"
            f"Sinogram values are post-log line integrals (the largest is about 4).  Command:\n\n"
            f"    {rerun_command(__file__, argv)}\n")
    write_result(args.output, text)


if __name__ == "__main__":
    main()
