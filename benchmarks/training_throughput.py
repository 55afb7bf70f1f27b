"""Training throughput of a prior config: images/s for fp32, bf16 autocast and channels_last,
with one process using all threads or two DDP processes (gloo) sharing them.

    python benchmarks/training_throughput.py --config configs/head-ct.toml            # full
        # -> benchmarks/results/training_throughput.md (and --json FILE)
    python benchmarks/training_throughput.py --config configs/head-ct-slices.toml --steps 10 \
        -o benchmarks/results/training_throughput_slices.md    # the whole-slice stage (256²)
    python benchmarks/training_throughput.py --config configs/head-ct.toml --quick    # < 1 min
    python benchmarks/training_throughput.py --config configs/head-ct-full.toml --device cuda \
        --processes 1 -o benchmarks/results/training_throughput_gpu.md   # one GPU, whole slices
    python benchmarks/training_throughput.py --config configs/head-ct-full.toml --batch-only
        # the CPU's share of a step: preparing one batch (crops, flips, noise), no network

Synthetic images of the config's image size stand in for the dataset (throughput does not depend
on the content).  Each variant runs ``--warmup`` untimed steps then ``--steps`` timed ones; the
table goes to stdout and, with ``--json``, to a file (written atomically).  Each process applies
:func:`scorerecon.allocator.retain_freed_memory`, as ``scorerecon train`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from prior_cards import hardware
from scorerecon.allocator import retain_freed_memory
from scorerecon.atomic import atomic_path
from scorerecon.cli_types import positive_int
from scorerecon.priors.config import load_config
from scorerecon.priors.network import ScoreUNet, count_parameters
from scorerecon.priors.training import Trainer

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {"fp32": (False, False), "bf16": (True, False), "channels_last": (False, True),
            "bf16+channels_last": (True, True)}


def _variant_config(cfg: dict, bf16: bool, channels_last: bool) -> dict:
    return {**cfg, "training": {**cfg["training"], "bf16": bf16, "channels_last": channels_last}}


def _timed_steps(trainer: Trainer, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return time.perf_counter() - start


def _worker(rank, world, cfg, images, threads, warmup, steps, port, result_file, device):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    retain_freed_memory()  # as train() does
    torch.set_num_threads(threads)
    if world > 1:
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    seconds = _timed_steps(Trainer(cfg, images, rank=rank, world_size=world, device=device), warmup, steps)
    if rank == 0:
        with open(result_file, "w") as handle:
            json.dump({"seconds": seconds}, handle)
    if world > 1:
        torch.distributed.destroy_process_group()


def measure(cfg: dict, images: np.ndarray, processes: int, threads: int, warmup: int, steps: int,
            device: str = "cpu") -> float:
    """Images per second of ``steps`` optimiser steps on ``processes`` DDP processes (each step
    ends by reading its loss, so GPU work is finished when the clock stops)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        args = (processes, cfg, images, max(1, threads // processes), warmup, steps,
                29600 + os.getpid() % 300, result, device)
        if processes == 1:
            _worker(0, *args)
        else:
            mp.spawn(_worker, args=args, nprocs=processes, join=True)
        with open(result) as handle:
            seconds = json.load(handle)["seconds"]
    return cfg["training"]["batch_size"] * steps / seconds


def batch_milliseconds(cfg: dict, images: np.ndarray, warmup: int, steps: int) -> float:
    """Milliseconds per ``Trainer.batch``: the crops, flips, times and noise of one global batch,
    drawn on the CPU by each step's seeded generator (what every training step pays before the
    network runs)."""
    trainer = Trainer(cfg, images)
    for step in range(warmup):
        trainer.batch(step)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        trainer.batch(step)
    return 1000 * (time.perf_counter() - start) / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/head-ct.toml")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=positive_int, default=torch.get_num_threads(), help="threads in total")
    p.add_argument("--processes", type=positive_int, nargs="+", default=[1, 2])
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated subset of " + ", ".join(VARIANTS) + " (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 timed steps, crop 32, batch 4")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU: use --processes 1)")
    p.add_argument("--batch-only", action="store_true",
                   help="time only the batch preparation on the CPU (ms per step) and stop")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("-o", "--output", default=str(RESULTS / "training_throughput.md"), help="Markdown table")
    args = p.parse_args(argv)
    variants = args.variants.split(",")
    if "fp32" not in variants or not set(variants) <= set(VARIANTS):
        p.error(f"--variants {args.variants!r}: name fp32 (the reference) and others of " + ", ".join(VARIANTS))
    cfg = load_config(args.config)
    if args.device != "cpu" and max(args.processes) > 1:
        p.error("several processes share one device only on the CPU: pass --processes 1 with --device")
    if args.quick:
        cfg["data"]["crop"], cfg["training"]["batch_size"] = 32, 4
        args.steps, args.warmup = 2, 1
    crop = cfg["data"]["crop"]
    images = np.random.default_rng(0).uniform(0, 1, (32, 1, crop + 8, crop + 8)).astype(np.float32)
    if args.batch_only:
        torch.set_num_threads(args.threads)
        ms = batch_milliseconds(cfg, images, args.warmup, args.steps)
        print(f"{cfg['name']}: one batch of {cfg['training']['batch_size']} at {crop}², {args.threads} threads: "
              f"{ms:.1f} ms ({hardware()})")
        return 0
    params = count_parameters(ScoreUNet(**cfg["network"]))
    print(f"{cfg['name']}: {params / 1e6:.2f} M parameters, crop {crop}, batch {cfg['training']['batch_size']}, "
          f"{args.threads} threads in total")
    rows = []
    for processes in args.processes:
        for name in variants:
            bf16, channels_last = VARIANTS[name]
            rate = measure(_variant_config(cfg, bf16, channels_last), images, processes, args.threads,
                           args.warmup, args.steps, args.device)
            rows.append({"variant": name, "processes": processes, "images_per_s": round(rate, 2),
                         "steps_per_hour": round(3600 * rate / cfg["training"]["batch_size"])})
            print(f"  {name:20s} processes {processes}: {rate:8.2f} images/s  "
                  f"{rows[-1]['steps_per_hour']:7d} steps/h", flush=True)
    summary = {"config": args.config, "device": args.device, "parameters": params, "crop": crop, "batch": cfg["training"]["batch_size"],
               "threads": args.threads, "steps": args.steps, "hardware": hardware(), "results": rows}
    if args.json:
        with atomic_path(args.json, suffix=".json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if not args.quick:
        with atomic_path(args.output, suffix=".md") as tmp:
            tmp.write_text(markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    """The throughput table: images/s and steps/h per variant and process count, speed-up vs fp32."""
    base = {r["processes"]: r["images_per_s"] for r in summary["results"] if r["variant"] == "fp32"}
    lines = ["# Training throughput", "",
             f"`{summary['config']}`: {summary['parameters'] / 1e6:.2f} M parameters, crop {summary['crop']}², "
             f"global batch {summary.get('batch', 16)}, {summary['threads']} threads in total, "
             f"{summary.get('steps', 20)} timed steps per variant, {summary.get('hardware', f'torch {torch.__version__}')}.", "",
             "| variant | processes | images/s | steps/h | vs fp32, same processes |", "|---|---|---|---|---|"]
    for r in summary["results"]:
        ratio = r["images_per_s"] / base[r["processes"]] if r["processes"] in base else float("nan")
        lines.append(f"| {r['variant']} | {r['processes']} | {r['images_per_s']:.1f} | {r['steps_per_hour']} | "
                     f"{ratio:.2f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
