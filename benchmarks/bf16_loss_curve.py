"""Does bf16 autocast keep the loss curve?  Twin runs of one config, fp32 against bf16.

Both runs start from the same initial weights and see the same batches (the trainer's data
stream depends only on the seed and the step).  Every ``--every`` steps each network is scored
in fp32 on the same fixed probe set: crops, noise levels and noise drawn once from the held-out
evaluation split of the config's dataset.  Only the arithmetic of the training steps differs.

    python benchmarks/bf16_loss_curve.py --config configs/head-ct.toml --steps 400
        # -> benchmarks/results/bf16_loss_curve.md
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from scorerecon.atomic import atomic_path
from scorerecon.data.datasets import load_split
from scorerecon.priors.config import dataset_names, load_config
from scorerecon.priors.training import Trainer, load_training_images

RESULTS = Path(__file__).resolve().parent / "results"


@torch.no_grad()
def probe_loss(trainer: Trainer, probe: list) -> float:
    """The weighted DSM loss of the current (non-EMA) network on the probe batches, in fp32."""
    return float(np.mean([float(trainer.loss(*batch, bf16=False)) for batch in probe]))


def twin_curves(cfg: dict, steps: int, every: int, probe_batches: int) -> dict:
    """Probe losses and training seconds of fp32 and bf16 runs of ``cfg``, side by side."""
    images = load_training_images(cfg)
    probe_source = Trainer(cfg, load_split(dataset_names(cfg)[0], "eval")[:, None])   # CT datasets share eval
    probe = [probe_source.batch(1_000_000 + k) for k in range(probe_batches)]
    curves = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        run_cfg = copy.deepcopy(cfg)
        run_cfg["training"]["bf16"] = bf16
        trainer, seconds = Trainer(run_cfg, images), 0.0
        curve = [(0, probe_loss(trainer, probe), 0.0)]
        while trainer.step < steps:
            start = time.perf_counter()
            for _ in range(every):
                trainer.train_step()
            seconds += time.perf_counter() - start
            curve.append((trainer.step, probe_loss(trainer, probe), seconds))
            print(f"{name} step {trainer.step}: probe loss {curve[-1][1]:.4f} ({seconds:.0f} s)", flush=True)
        curves[name] = curve
    return curves


def markdown(config: str, curves: dict, probe_batches: int, batch: int) -> str:
    lines = ["# bf16 autocast against fp32: the loss curve", "",
             f"`python benchmarks/bf16_loss_curve.py --config {config} --steps {curves['fp32'][-1][0]}`: "
             f"twin runs from the same weights on the same batches; loss of each network scored in fp32 on "
             f"{probe_batches} fixed probe batches of {batch} held-out crops; {torch.get_num_threads()} threads.", "",
             "| step | fp32 probe loss | bf16 probe loss | bf16 / fp32 | fp32 s | bf16 s |", "|---|---|---|---|---|---|"]
    for (step, a, ta), (_, b, tb) in zip(curves["fp32"], curves["bf16"]):
        lines.append(f"| {step} | {a:.4f} | {b:.4f} | {b / a:.3f} | {ta:.0f} | {tb:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/head-ct.toml")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--probe-batches", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", default=str(RESULTS / "bf16_loss_curve.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    curves = twin_curves(cfg, args.steps, args.every, args.probe_batches)
    with atomic_path(args.output, suffix=".md") as tmp:
        tmp.write_text(markdown(args.config, curves, args.probe_batches, cfg["training"]["batch_size"]))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
