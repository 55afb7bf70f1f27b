"""Does a std map's calibrated scale carry to another number of posterior samples K? (session 58)

``scorerecon tune --calibrate-std`` fits the factor c on the fast sampler's std map at the
preset's own K.  The spread of K samples (ddof 0) shrinks with K even for a perfect sampler, so
at another K ``reconstruct`` carries c over with the Gaussian model of
:func:`scorerecon.evaluation.metrics.std_scale_at_samples` (until session 58 it used 1).  This
script reconstructs the evaluation slices of a task at several K with the unscaled map and, on
the same pixels, reports the fraction with |error| ≤ 1 and 2 std for three factors: 1, the
preset's c unchanged, and c carried to K, beside the factor these pixels themselves need
(68.27 % within 1 std) and the model's factor for a calibrated sampler.  One run per K serves
all three: they differ only in the factor on the map.

    python benchmarks/std_scale_across_samples.py --task ct-sparse-view --samples 2,4,8
    # -> benchmarks/results/std_scale_across_samples_ct_sparse_view.md
"""

from __future__ import annotations

import argparse

import numpy as np

from score_methods import RESULTS, TASKS, evaluation_images, rerun_command, simulate, write_result
from scorerecon.cli_types import positive_int
from scorerecon.evaluation.metrics import (GAUSSIAN_WITHIN_1STD, gaussian_std_scale, std_coverage, std_scale_at_samples,
                                           std_scale_for_coverage)
from scorerecon.solvers.score import DEFAULT_PRIOR, settings_for
from scorerecon.solvers.tuning import task_of, unscaled_error_and_std

METHOD = "fast"


def row(samples: int, fitted: float, fitted_samples: int, error: np.ndarray, std: np.ndarray) -> str:
    """One table row: the factors and the coverage each gives on these pixels."""
    carried = std_scale_at_samples(fitted, fitted_samples, samples)
    cells = [str(samples), f"{carried:.2f}", f"{std_scale_for_coverage(error, std):.2f}",
             f"{gaussian_std_scale(samples):.2f}"]
    for factor in (1.0, fitted, carried):
        cover = std_coverage(error, factor * std)
        cells.append(f"{cover['within_1std']:.3f} / {cover['within_2std']:.3f}")
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="ct-sparse-view", choices=list(TASKS))
    p.add_argument("--samples", default="2,4,8", help="comma-separated K, each at least 2")
    p.add_argument("--slices", type=positive_int, default=None, help="evaluation slices (default: all bundled)")
    p.add_argument("--size", type=positive_int, default=256)
    p.add_argument("--steps", type=positive_int, default=None, help="fast sampler steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default=None)
    args = p.parse_args(argv)
    try:
        counts = [int(k) for k in args.samples.split(",")]
    except ValueError:
        p.error(f"--samples {args.samples}: give comma-separated whole numbers")
    if min(counts) < 2:
        p.error("--samples: a std map needs K >= 2")
    modality, settings = TASKS[args.task]
    cases = [simulate(modality, image, pixel, settings, seed=args.seed)
             for _, image, pixel in evaluation_images(modality, args.size, args.slices)]
    preset_task = task_of(cases[0])
    preset = settings_for(METHOD, preset_task, {})
    if "std_scale" not in preset:
        p.error(f"the {preset_task} preset of {METHOD} has no calibrated std_scale: nothing to carry")
    fitted, fitted_samples = float(preset["std_scale"]), int(preset["samples"])
    prior = DEFAULT_PRIOR[modality]
    rows = [row(k, fitted, fitted_samples,
                *unscaled_error_and_std(cases, METHOD, prior, args.seed, samples=k, steps=args.steps))
            for k in counts]
    output = args.output or str(RESULTS / f"std_scale_across_samples_{args.task.replace('-', '_')}.md")
    text = "\n".join([
        f"# The std map's calibrated scale at other K: {args.task}", "",
        f"The {preset_task} preset of `{METHOD}` (prior {prior}, {preset['steps']} steps unless `--steps`) was "
        f"calibrated at K = {fitted_samples}: c = {fitted}.  {len(cases)} evaluation slice(s) at {args.size}², "
        f"seed {args.seed}; coverage pooled over their pixels (outside any metal).  A calibrated Gaussian "
        f"posterior puts {100 * GAUSSIAN_WITHIN_1STD:.1f} % within 1 std and 95.4 % within 2.", "",
        "| K | c carried to K | factor these pixels need | calibrated sampler's factor | "
        "within 1 / 2 std: × 1 | × c | × c carried |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"Command: `{rerun_command(__file__, argv)}`", ""])
    write_result(output, text)


if __name__ == "__main__":
    main()
