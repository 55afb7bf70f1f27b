"""Command-line verbs of the priors layer: ``train``, ``sample`` and ``experts`` (registered in cli.py).

Only argparse is imported here; torch is imported when a command runs.
"""

from __future__ import annotations

from ..cli_types import positive_float, positive_int, seed_int


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a score prior (denoising score matching); "
                                     "multi-process: torchrun --nproc-per-node N -m scorerecon train ...")
    p.add_argument("--config", required=True, help="TOML training config (see configs/head-ct.toml)")
    p.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the CSV log is still written)")
    p.set_defaults(handler=_run_train)


def _run_train(args) -> None:
    from .config import load_config
    from .training import train
    cfg = load_config(args.config)
    path = train(cfg, resume=args.resume, progress=not args.no_progress)
    if path is not None:
        print(f"wrote {path}  (log and checkpoints in {cfg['output']['dir']})")


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="draw unconditional samples from a prior into a PNG grid or .npy")
    p.add_argument("--prior", required=True, help="prior name (head-ct, brain-mri, NAME-edm, NAME-v1, NAME-low, "
                   "brain-mri-coarse, ct-low, ct-full, mri-low) or file path")
    p.add_argument("-n", "--num", type=positive_int, default=16, help="number of samples (default 16)")
    p.add_argument("-o", "--output", required=True, help="output .png (grid) or .npy (N, H, W)")
    p.add_argument("--sampler", choices=["pc", "em", "ode"], default="pc",
                   help="predictor-corrector, Euler-Maruyama or probability-flow ODE (default pc)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="time steps (default: the SDE's N; far fewer leave noise in the samples)")
    p.add_argument("--snr", type=positive_float, default=None,
                   help="Langevin corrector signal-to-noise ratio (pc only; default 0.16)")
    p.add_argument("--size", type=positive_int, default=None,
                   help="image side in pixels (default: the prior's image size)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.set_defaults(handler=_run_sample)


def _run_sample(args) -> None:
    from .registry import load_prior
    from ..errors import UserError
    from .sampling import DEFAULT_SNR, check_samples_output, sample, write_samples
    if args.snr is not None and args.sampler != "pc":
        raise UserError(f"--snr sets the predictor-corrector's Langevin corrector, which --sampler {args.sampler} "
                        "does not run: drop --snr or use --sampler pc")
    check_samples_output(args.output)  # before the run, not after it
    prior = load_prior(args.prior)
    size = args.size or int(prior.metadata.get("image_size") or prior.metadata.get("crop", 64))
    try:
        images = sample(prior, args.num, (size, size), sampler=args.sampler, steps=args.steps,
                        snr=DEFAULT_SNR if args.snr is None else args.snr,
                        seed=args.seed, progress=True)
    except (MemoryError, RuntimeError) as err:  # torch's allocators raise RuntimeError subclasses
        if not isinstance(err, MemoryError) and "memory" not in str(err).lower():
            raise
        raise UserError(f"not enough memory for {args.num} samples of {size}x{size}: lower -n or --size") from None
    write_samples(images, args.output)
    print(f"wrote {args.output}")


def add_experts(sub) -> None:
    p = sub.add_parser("experts", help="combine two priors by noise level (one below a switch σ, one above), "
                                       "the switch chosen on validation slices")
    p.add_argument("--low", required=True, help="prior for σ ≤ the switch (name or file); an experts prior "
                                                "here is extended by --high above its top switch")
    p.add_argument("--high", required=True, help="prior for σ above the switch (name or file)")
    p.add_argument("--dataset", required=True, help="prepared dataset whose val split chooses the switch")
    p.add_argument("--slices", type=positive_int, default=8, help="validation slices (default 8)")
    p.add_argument("--sigmas", type=positive_int, default=25,
                   help="noise levels tried, log-spaced over the SDE's range (default 25)")
    p.add_argument("-o", "--output", required=True, help="experts file to write (.json)")
    p.set_defaults(handler=_run_experts)


def _run_experts(args) -> None:
    from .experts import build_experts_file
    path, table = build_experts_file(args.low, args.high, args.dataset, args.output,
                                     slices=args.slices, sigmas=args.sigmas)
    print(table)
    print(f"wrote {path}")


PRIOR_COMMANDS = [add_train, add_sample, add_experts]
