"""Where a prior is accurate: its denoiser across noise levels, and sampling from pure noise.

A cold-started sampler begins at σ_max, so the prior must be right at high noise too.  Per prior:

1. Accuracy per noise level σ.  A held-out slice x (another patient / brain than the training
   data) gets noise x + σ z; the network's score s_θ is compared with the score of the noise
   given the clean slice, −z / σ: norm ratio ‖s_θ‖ / ‖z / σ‖, and the error left by one Tweedie
   step x̂ = D(x + σ z) = x + σ z + σ² s_θ, as its std (in the unit domain, where the image spans
   [0, 1]) and its PSNR.  At σ = 80 nothing of the slice survives: a flat mean leaves an error
   std of about the slice's own std, a prior that knows the layout of a slice less.
2. Unconditional sampling (``--size``: 64², the first priors' training crop, or the 256² of a
   whole slice) with the probability-flow ODE (Heun) in few and in many steps: the std of the
   samples beside the std of the held-out slice, and the fraction of pixels inside [−0.1, 1.1]
   (1 for real images).

``--baseline v1`` measures the shipped ``head-ct-v1`` / ``brain-mri-v1`` (the first releases:
Song's noise-prediction output, before EDM preconditioning) in the same run, beside the default
priors (experts by noise level); a baseline NAME that is shipped for one modality only (e.g.
``coarse``: ``brain-mri-coarse``) is skipped for the other; ``--baseline DIR`` measures DIR/head-ct.safetensors and DIR/brain-mri.safetensors; several
baselines may follow one ``--baseline``.

    python benchmarks/prior_noise_levels.py --baseline v1   # -> benchmarks/results/prior_noise_levels.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from score_methods import RESULTS, rerun_command, write_result
from scorerecon.data.intensity import hu_to_unit
from scorerecon.data.samples import load_sample
from scorerecon.evaluation.metrics import psnr
from scorerecon.priors import load_prior, sample
from scorerecon.priors.experts import NoiseLevelExperts
from scorerecon.priors.registry import SHIPPED

PRIORS = {"head-ct": "ct-head-1", "brain-mri": "mri-brain-0"}  # prior -> held-out bundled slice
SIGMAS = (0.1, 1.0, 5.0, 20.0, 80.0)


def held_out_unit(sample_name: str) -> np.ndarray:
    image = load_sample(sample_name).array.astype(np.float32)
    return np.clip(hu_to_unit(image), 0, 1) if sample_name.startswith("ct-") else image


@torch.no_grad()
def score_rows(prior, clean: np.ndarray, seed: int = 0) -> list[str]:
    x = torch.from_numpy(clean)[None, None]
    rows = []
    for sigma in SIGMAS:
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
        t = prior.sde.time_of_noise(sigma)
        noisy = x + sigma * z  # the state divided by α(t) (VP); for VE, α = 1
        denoised = prior.denoise(float(prior.sde.alpha(t)) * noisy, t)
        score = (denoised - noisy) / sigma ** 2   # Tweedie, of the state divided by α
        ratio = float(score.norm() / (z.norm() / sigma))
        denoised = denoised[0, 0].numpy()
        rows.append(f"| {sigma:g} | {ratio:.4f} | {float(np.std(denoised - clean)):.3f} | "
                    f"{psnr(np.clip(denoised, 0, 1), clean):.2f} |")
    return rows


def sampling_rows(prior, clean: np.ndarray, steps_list, n: int, size: int) -> list[str]:
    rows = []
    for steps in steps_list:
        out = sample(prior, n, (size, size), sampler="ode", steps=steps, seed=0).numpy()
        inside = float(np.mean((out > -0.1) & (out < 1.1)))
        rows.append(f"| {steps} | {float(out.std()):.3f} | {float(clean.std()):.3f} | {inside:.2f} |")
    return rows


def describe(prior) -> str:
    """What a prior is: its experts and switches, or its output scaling and training steps."""
    if isinstance(prior, NoiseLevelExperts):
        names = prior.metadata.get("experts") or [m.metadata.get("name", "?") for m in prior.members]
        bounds = [f"{names[0]}"] + [f"σ {s:.3g} {n}" for s, n in zip(prior.switch_sigmas, names[1:])]
        return "experts: " + " | ".join(bounds)
    return f"{prior.parameterization.kind} parameterization, {prior.metadata.get('steps', '?')} training steps"


def prior_section(label: str, prior, sample_name: str, steps_list, n: int, size: int) -> list[str]:
    clean = held_out_unit(sample_name)
    return [f"## {label} ({describe(prior)}; "
            f"held-out slice {sample_name}, 256², std {float(clean.std()):.3f})", "",
            "| σ | ‖s_θ‖ / ‖z/σ‖ | std of Tweedie error | Tweedie PSNR (dB) |", "|---|---|---|---|",
            *score_rows(prior, clean), "",
            f"Probability-flow ODE (Heun), {n} unconditional samples at {size}², from σ_max = "
            f"{prior.sde.to_dict().get('sigma_max', '—')}:", "",
            "| steps | sample std | held-out slice std | pixels in [−0.1, 1.1] |", "|---|---|---|---|",
            *sampling_rows(prior, clean, steps_list, n, size), ""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[50, 500], help="ODE steps for the sampling rows")
    p.add_argument("-n", type=int, default=4, help="unconditional samples per setting")
    p.add_argument("--size", type=int, default=64, help="side of the unconditional samples")
    p.add_argument("--baseline", nargs="*", default=[],
                   help="also measure NAME-BASELINE (e.g. v1), or the .safetensors files of a folder (several allowed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default=str(RESULTS / "prior_noise_levels.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["# Priors across noise levels", "",
             f"`{rerun_command(__file__, argv)}`", ""]
    for name, sample_name in PRIORS.items():
        candidates = [(f"{name}, shipped", name)]
        for baseline in args.baseline:
            folder = Path(baseline)
            source = str(folder / f"{name}.safetensors") if folder.is_dir() else f"{name}-{baseline}"
            if not folder.is_dir() and source not in SHIPPED:
                print(f"no shipped prior {source}: skipped", flush=True)
                continue
            candidates.append((f"{name}, baseline {source}", source))
        for label, source in candidates:
            lines += prior_section(label, load_prior(source).eval(), sample_name, args.steps, args.n, args.size)
            print("\n".join(lines[-16:]), flush=True)
    write_result(args.output, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
