"""The prior's networks in NCHW (PyTorch's default) against channels_last, per call and per reconstruction.

Every sampler spends nearly all of its time in the prior's denoiser, on a batch of K images.
``SCORERECON_LAYOUT=channels_last`` runs the networks in ``torch.channels_last`` on the CPU
(:func:`scorerecon.priors.prior.convolution_layout`; NCHW by default).  This measures both
layouts side by side in one process, to tell whether the switch pays on the host at hand:

* per call: ``prior.denoise`` on a (K, 1, size, size) batch at several noise levels (each prior
  routes them to its experts), the fastest of ``--repeats`` calls per layout with the layouts
  alternating, and the largest difference of the two outputs (the layout changes the order of
  the sums, not the arithmetic);
* per reconstruction (``--reconstruct TASKS``): ``reconstruct(..., "fast")`` with the task's
  preset on the first bundled slice of its modality, the layouts in the order A B B A (a slow
  spell of the host falls on both), with each layout's PSNR and the largest difference of the
  two images.

glibc's malloc is set as ``reconstruct`` sets it (``retain_freed_memory``).

    python benchmarks/denoiser_layout.py --reconstruct ct-sparse-view,mri-8x-equispaced
                                                           # -> benchmarks/results/denoiser_layout.md
    python benchmarks/denoiser_layout.py --repeats 1 --size 64 -o /tmp/layout.md   # script check
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager

import numpy as np
import torch

from score_methods import RESULTS, TASKS, evaluation_images, quality, rerun_command, simulate, write_result
from scorerecon.allocator import retain_freed_memory
from scorerecon.priors.prior import convolution_layout
from scorerecon.priors.registry import load_prior
from scorerecon.solvers.registry import reconstruct
from scorerecon.solvers.score import DEFAULT_PRIOR

#: the table's name of each layout -> the SCORERECON_LAYOUT that gives it
LAYOUTS = {"NCHW": "default", "channels_last": "channels_last"}
LABELS = tuple(LAYOUTS)


@contextmanager
def layout(name: str):
    """Inside: the samplers (and :func:`denoise_seconds`) run the networks in ``name``, through
    ``SCORERECON_LAYOUT`` as a user would choose it."""
    before = os.environ.get("SCORERECON_LAYOUT")
    os.environ["SCORERECON_LAYOUT"] = LAYOUTS[name]
    try:
        yield
    finally:
        os.environ.pop("SCORERECON_LAYOUT", None)
        if before is not None:
            os.environ["SCORERECON_LAYOUT"] = before


def check_switchable(prior, name: str) -> None:
    """Exit with one line unless the switch really puts ``prior`` in channels_last (a network on
    the CPU), so that the channels_last column is never NCHW timed twice."""
    with layout("channels_last"), convolution_layout(prior) as switched:
        if not switched:
            raise SystemExit(f"denoiser_layout: {name} has no network on the CPU to put in channels_last")


def denoise_seconds(prior, x: torch.Tensor, t: float, name: str) -> tuple[float, torch.Tensor]:
    """Wall time of one ``prior.denoise(x, t)`` with the networks in layout ``name``, and its output."""
    with layout(name), torch.no_grad(), convolution_layout(prior):
        start = time.perf_counter()
        out = prior.denoise(x, t)
        seconds = time.perf_counter() - start  # not the weights' return to NCHW on leaving
    return seconds, out


def measure(name: str, batch: int, size: int, times: list[float], repeats: int) -> list[tuple]:
    """[(t, {layout: the fastest of ``repeats`` calls}, largest |difference| of the outputs)] for
    one prior; each layout is called once to warm up, then the two alternate (which goes first
    swaps every round), so that a slow spell of the host falls on both."""
    prior = load_prior(name)
    check_switchable(prior, name)
    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for t in times:
        outputs = {label: denoise_seconds(prior, x, t, label)[1] for label in LABELS}
        seconds = {label: float("inf") for label in LABELS}
        for round_ in range(repeats):
            for label in LABELS[:: 1 if round_ % 2 == 0 else -1]:
                seconds[label] = min(seconds[label], denoise_seconds(prior, x, t, label)[0])
        first, second = outputs.values()
        rows.append((t, seconds, float((first - second).abs().max())))
        print(name, t, {k: round(v, 3) for k, v in seconds.items()}, flush=True)
    return rows


def reconstruction_rows(task: str, size: int, steps: int | None = None) -> dict:
    """The fast sampler with the task's preset on the first bundled slice, once per layout in the
    order A B B A: {slice, nfe, samples, seconds: {layout: [s, s]}, psnr: {layout}, difference}."""
    modality, settings = TASKS[task]
    slice_name, image, pixel = evaluation_images(modality, size, 1)[0]
    meas = simulate(modality, image, pixel, settings)
    prior = load_prior(DEFAULT_PRIOR[modality], device="cpu")  # what reconstruct would load, on the CPU
    check_switchable(prior, DEFAULT_PRIOR[modality])
    seconds, psnr, images = {label: [] for label in LABELS}, {}, {}
    for label in (*LABELS, *LABELS[::-1]):
        with layout(label):
            result = reconstruct(meas, "fast", prior=prior, steps=steps, seed=0, progress=False)
        seconds[label].append(result.seconds)
        psnr[label], images[label] = quality(result, meas)["psnr"], result.unit_image
        print(task, label, round(result.seconds, 1), round(psnr[label], 3), flush=True)
    difference = float(np.abs(images["NCHW"] - images["channels_last"]).max())
    return {"slice": slice_name, "nfe": int(result.info["nfe"]), "samples": int(result.info["samples"]),
            "seconds": seconds, "psnr": psnr, "difference": difference}


def table(results: dict, args) -> str:
    """The per-call table."""
    lines = ["# The prior's networks: NCHW against channels_last", "",
             f"`prior.denoise` on a batch of {args.batch} images of {args.size}², {args.threads} threads, "
             f"fastest of {args.repeats} calls per layout, the layouts alternating, after one warm-up each; "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}.", "",
             "| prior | t | NCHW s / call | channels_last s / call | speed-up | largest output difference |",
             "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for t, seconds, difference in rows:
            default, last = seconds.values()
            lines.append(f"| {name} | {t:g} | {default:.3f} | {last:.3f} | {default / last:.2f}× | {difference:.1e} |")
    return "\n".join(lines)


def reconstruction_table(rows: dict, args) -> str:
    """The per-reconstruction table: each run's seconds, their mean per layout and the speed-up."""
    lines = ["## Whole reconstructions", "",
             "`reconstruct(..., \"fast\")` with the task's preset"
             + (f" but {args.steps} steps" if args.steps else "")
             + f" on the first bundled slice at {args.size}², {args.threads} threads, seed 0; the layouts "
             "in the order NCHW, channels_last, channels_last, NCHW.", "",
             "| task | slice | NFE × K | NCHW s (runs) | channels_last s (runs) | speed-up of the means "
             "| PSNR NCHW / channels_last | largest image difference |",
             "|---|---|---|---|---|---|---|---|"]
    for task, row in rows.items():
        runs = {label: ", ".join(f"{s:.1f}" for s in row["seconds"][label]) for label in LABELS}
        means = [float(np.mean(row["seconds"][label])) for label in LABELS]
        lines.append(f"| {task} | {row['slice']} | {row['nfe']} × {row['samples']} | {means[0]:.1f} ({runs['NCHW']}) "
                     f"| {means[1]:.1f} ({runs['channels_last']}) | {means[0] / means[1]:.2f}× "
                     f"| {row['psnr']['NCHW']:.3f} / {row['psnr']['channels_last']:.3f} | {row['difference']:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--priors", default="head-ct,brain-mri", help="comma-separated shipped priors or files")
    p.add_argument("--times", default="0.1,0.3,0.6", help="comma-separated diffusion times t")
    p.add_argument("--batch", type=int, default=4, help="images per call (the preset's K; 4 for 23-view CT)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per layout (the fastest is kept)")
    p.add_argument("--reconstruct", default="", help="comma-separated tasks of benchmarks/score_methods.py "
                   "to also time whole fast reconstructions of (e.g. ct-sparse-view,mri-8x-equispaced)")
    p.add_argument("--steps", type=int, help="steps of those reconstructions (default: the preset's; script checks)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default=str(RESULTS / "denoiser_layout.md"))
    args = p.parse_args(argv)
    tasks = [task for task in args.reconstruct.split(",") if task]
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        p.error(f"--reconstruct: unknown task {unknown[0]!r}: use some of {', '.join(TASKS)}")
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as reconstruct() does
    times = [float(t) for t in args.times.split(",")]
    results = {name: measure(name, args.batch, args.size, times, args.repeats) for name in args.priors.split(",")}
    parts = [table(results, args)]
    if tasks:
        rows = {task: reconstruction_rows(task, args.size, args.steps) for task in tasks}
        parts.append(reconstruction_table(rows, args))
    write_result(args.output, "\n\n".join(parts) + f"\n\n    {rerun_command(__file__, argv)}\n")


if __name__ == "__main__":
    main()
