"""Two priors side by side on validation slices: does a new prior reconstruct better?

The question to answer before a new prior (or experts file) replaces a shipped one.  Each task's
fast preset runs unchanged with the baseline prior and with the candidate on the tuner's
validation cases (slices of ``val.npy``, never the evaluation slices), same seed, same run; the
table gives mean PSNR / SSIM and seconds per slice of each.  For CT the validation slices are a
patient no shipped network saw (chest-ct val); for MRI they come from the training template, so a
gain there can be a better fit to that one subject: see the model card's denoising on other
subjects, and ``benchmarks/results/head_ct_low_expert.md`` (+0.88 dB on the training patient's
held-out slices, the CT validation before 2026-12-04; +0.26 on other patients).

    python benchmarks/compare_priors.py --baseline head-ct --candidate NEW.json \
        --tasks ct-sparse-view,ct-limited-angle,ct-metal -o benchmarks/results/NAME.md
    python benchmarks/compare_priors.py --baseline head-ct --candidate head-ct-v1 --quick
"""

from __future__ import annotations

import argparse
import sys

import torch

from fast_settings import timed_metrics, tuning_tasks
from score_methods import signed_db, write_result
from scorerecon.cli_types import positive_int
from scorerecon.errors import UserError
from scorerecon.solvers import tuning
from scorerecon.solvers.score import resolve_prior, settings_for


def measure(task: str, priors: dict[str, str], args) -> dict[str, dict]:
    """{prior label: mean PSNR, SSIM and seconds per slice of the task's fast preset}."""
    cases = tuning.validation_cases(task, args.slices, size=args.size)
    settings = {"steps": args.steps} if args.steps else {}
    results = {}
    for label, name in priors.items():
        prior = resolve_prior(name, cases[0].modality)
        results[label] = timed_metrics(cases, "fast", settings, prior, args.seed)
        print(f"{task}, {label} {name}: {results[label]}", flush=True)
    return results


def table(measured: dict[str, dict[str, dict]], priors: dict[str, str], args) -> str:
    """Markdown: one row per task, both priors and the candidate's gain in PSNR."""
    lines = [f"# Priors compared on validation slices: {priors['baseline']} against {priors['candidate']}", "",
             f"{args.slices} validation slices per task ("
             f"{'; '.join(sorted({tuning.validation_source(t) for t in measured}))}; seed {args.seed}) at "
             f"{args.size or 256}²; each task's fast preset"
             + (f" at {args.steps} steps" if args.steps else "") + "; 2 threads.", "",
             "| task | K | steps | baseline PSNR / SSIM | candidate PSNR / SSIM | Δ PSNR (dB) | s / slice (baseline, candidate) |",
             "|---|---|---|---|---|---|---|"]
    for task, results in measured.items():
        ran = settings_for("fast", task, {"steps": args.steps})  # the preset over the sampler's defaults, as run
        base, cand = results["baseline"], results["candidate"]
        lines.append(f"| {task} | {ran['samples']} | {ran['steps']} | "
                     f"{base['psnr']:.2f} / {base['ssim']:.4f} | {cand['psnr']:.2f} / {cand['ssim']:.4f} | "
                     f"{signed_db(cand['psnr'] - base['psnr'])} | {base['seconds']:.1f}, {cand['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="prior name or file (usually the shipped default)")
    p.add_argument("--candidate", required=True, help="prior name or file to compare with it")
    p.add_argument("--tasks", required=True, help="comma-separated tuning tasks of the priors' modality")
    p.add_argument("--slices", type=positive_int, default=2, help="validation slices per task (the presets' tuning used 2)")
    p.add_argument("--size", type=positive_int, default=None, help="downsample the validation slices (quick runs)")
    p.add_argument("--steps", type=positive_int, default=None, help="override the presets' steps (default: theirs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1 slice at 64², 3 steps: checks the script")
    p.add_argument("-o", "--output", default=None, help="Markdown file (default: print only)")
    args = p.parse_args(argv)
    if args.quick:
        args.slices, args.size, args.steps = 1, 64, 3
    tasks = tuning_tasks(p, args.tasks)
    torch.set_num_threads(2)
    priors = {"baseline": args.baseline, "candidate": args.candidate}
    try:
        text = table({task: measure(task, priors, args) for task in tasks}, priors, args)
    except UserError as err:
        sys.exit(f"compare_priors: {err}")
    if args.output:
        write_result(args.output, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
