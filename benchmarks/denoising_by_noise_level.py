"""One-step (Tweedie) denoising PSNR of several priors across noise levels, on any split.

``scorerecon experts`` measures two priors this way on validation slices to choose a switch;
this script measures any number of priors on the evaluation slices (other patients / the
MNI152 template), to check a choice afterwards without making it there:

    python benchmarks/denoising_by_noise_level.py --dataset head-ct \
        --priors head-ct-edm runs/head-ct-full/head-ct-full.safetensors head-ct-low head-ct-v1
        # the check in benchmarks/results/gpu_full_priors.md (the file: configs/head-ct-full.toml)

Same noise for every prior and σ (seed), σ log-spaced over the first prior's SDE range, PSNR
= −10 log10(MSE) with images in [0, 1] (:func:`scorerecon.priors.experts.tweedie_errors`).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from score_methods import rerun_command, write_result
from scorerecon.cli_types import positive_int
from scorerecon.data.datasets import load_split
from scorerecon.errors import UserError
from scorerecon.priors import load_prior
from scorerecon.priors.experts import evenly_spaced, tweedie_errors


def table(names: list[str], sigmas: np.ndarray, errors: list[list[float]]) -> str:
    """Markdown: one row per σ, one PSNR column per prior, the best in bold."""
    lines = ["| σ | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, sigma in enumerate(sigmas):
        psnrs = [-10 * math.log10(e[i]) for e in errors]
        best = max(psnrs)
        cells = [f"**{p:.2f}**" if p == best and len(names) > 1 else f"{p:.2f}" for p in psnrs]
        lines.append(f"| {sigma:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="prepared dataset (head-ct, chest-ct, brain-mri)")
    p.add_argument("--split", default="eval", choices=["val", "eval"])
    p.add_argument("--priors", nargs="+", required=True, help="prior names or files")
    p.add_argument("--slices", type=int, default=0, help="evenly spaced slices of the split (default: all)")
    p.add_argument("--sigmas", type=positive_int, default=25, help="log-spaced noise levels (default 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("-o", "--output", default=None, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        images = load_split(args.dataset, args.split)
        priors = [load_prior(name) for name in args.priors]
    except UserError as err:
        sys.exit(f"denoising_by_noise_level: {err}")
    images = evenly_spaced(images, args.slices) if args.slices > 0 else images
    low, high = priors[0].sde.noise_range()
    sigmas = np.geomspace(low, high, args.sigmas)
    errors = [tweedie_errors(prior, images, sigmas, args.seed) for prior in priors]
    text = (f"One-step denoising PSNR (dB) on the {len(images)} {args.split} slices of `{args.dataset}`, "
            f"seed {args.seed}.\n\n{table(args.priors, sigmas, errors)}\n\n"
            f"`{rerun_command(__file__, argv)}`\n")
    if args.output:
        write_result(args.output, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
