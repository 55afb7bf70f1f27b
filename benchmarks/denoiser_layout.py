"""One network evaluation of a shipped prior, NCHW (PyTorch's default) against channels_last.

Every sampler spends nearly all of its time in the prior's denoiser, on a batch of K images.  This
times ``prior.denoise`` on a (K, 1, size, size) batch at several noise levels (each prior routes
them to its experts) with the networks and input in the default layout and with both in
``torch.channels_last``, alternating in one process, and reports the largest difference of the
two outputs (the layout changes the order of the sums, not the arithmetic).  glibc's malloc is
set as ``reconstruct`` sets it (``retain_freed_memory``).  Measurement only: the samplers still
run in the default layout.

    python benchmarks/denoiser_layout.py                   # -> benchmarks/results/denoiser_layout.md
    python benchmarks/denoiser_layout.py --repeats 1 --size 64 -o /tmp/layout.md   # script check
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from score_methods import RESULTS, write_result
from scorerecon.allocator import retain_freed_memory
from scorerecon.priors.registry import load_prior

LAYOUTS = {"NCHW (default)": torch.contiguous_format, "channels_last": torch.channels_last}


def set_layout(prior, layout: torch.memory_format) -> None:
    """Put the weights of every network of ``prior`` (each expert's) in ``layout``."""
    for member in getattr(prior, "members", [prior]):
        member.network.to(memory_format=layout)


def denoise_seconds(prior, x: torch.Tensor, t: float, layout: torch.memory_format) -> tuple[float, torch.Tensor]:
    """Wall time of one ``prior.denoise(x, t)`` with the networks and ``x`` in ``layout``, and its output."""
    set_layout(prior, layout)
    x = x.contiguous(memory_format=layout)
    with torch.no_grad():
        start = time.perf_counter()
        out = prior.denoise(x, t)
    return time.perf_counter() - start, out


def measure(name: str, batch: int, size: int, times: list[float], repeats: int) -> list[tuple]:
    """[(t, {layout: the fastest of ``repeats`` calls}, largest |difference| of the outputs)] for
    one prior; each layout is called once to warm up, then the two alternate (which goes first
    swaps every round), so that a slow spell of the host falls on both."""
    prior = load_prior(name)
    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
    rows = []
    for t in times:
        outputs = {label: denoise_seconds(prior, x, t, layout)[1] for label, layout in LAYOUTS.items()}
        seconds = {label: float("inf") for label in LAYOUTS}
        for round_ in range(repeats):
            order = list(LAYOUTS.items())[:: 1 if round_ % 2 == 0 else -1]
            for label, layout in order:
                seconds[label] = min(seconds[label], denoise_seconds(prior, x, t, layout)[0])
        first, second = outputs.values()
        rows.append((t, seconds, float((first - second).abs().max())))
        print(name, t, {k: round(v, 3) for k, v in seconds.items()}, flush=True)
    set_layout(prior, torch.contiguous_format)
    return rows


def table(results: dict, args, command: str) -> str:
    lines = ["# Denoiser speed: NCHW against channels_last", "",
             f"`prior.denoise` on a batch of {args.batch} images of {args.size}², {args.threads} threads, "
             f"fastest of {args.repeats} calls per layout, the layouts alternating, after one warm-up each; CPU capability {torch.backends.cpu.get_cpu_capability()}, "
             f"torch {torch.__version__}.", "",
             "| prior | t | NCHW s / call | channels_last s / call | speed-up | largest output difference |",
             "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for t, seconds, difference in rows:
            default, last = seconds.values()
            lines.append(f"| {name} | {t:g} | {default:.3f} | {last:.3f} | {default / last:.2f}× | {difference:.1e} |")
    return "\n".join(lines + ["", "    " + command, ""])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--priors", default="head-ct,brain-mri", help="comma-separated shipped priors or files")
    p.add_argument("--times", default="0.1,0.3,0.6", help="comma-separated diffusion times t")
    p.add_argument("--batch", type=int, default=4, help="images per call (the preset's K; 4 for 23-view CT)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed calls per layout (the fastest is kept)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default=str(RESULTS / "denoiser_layout.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as reconstruct() does
    times = [float(t) for t in args.times.split(",")]
    results = {name: measure(name, args.batch, args.size, times, args.repeats) for name in args.priors.split(",")}
    command = " ".join(["python benchmarks/denoiser_layout.py", *(sys.argv[1:] if argv is None else argv)])
    write_result(args.output, table(results, args, command))


if __name__ == "__main__":
    main()
