"""Model-card numbers for a score prior: denoising PSNR, loss curve, unconditional samples.

The denoising table is a quality signal that needs no solver: for each noise level σ, the
held-out evaluation slices (never seen in training) get Gaussian noise x + σ z, and the prior's
one-network-evaluation Tweedie estimate D(x + σ z) = x + σ z + σ² s_θ (Song et al. 2021) is
scored against the clean slice beside the noisy input and scikit-image's TV denoiser with the
best of a grid of weights (an oracle choice, which favours the baseline).

    python benchmarks/prior_cards.py --prior runs/head-ct/head-ct.safetensors --dataset head-ct \
        --log runs/head-ct/log.csv --config configs/head-ct.toml --out docs/model_cards/head-ct

An experts prior (``scorerecon experts``, e.g. the shipped ``head-ct``) gets a card naming its
members, their noise ranges and the measurements that chose each switch, with the same denoising
table and samples.

writes ``denoising.md``, ``loss.png``, ``samples.png`` (whole slices), ``samples_crop.png`` (at
the training crop size, when it is smaller) and the card ``README.md`` (data and its licence,
crop, steps, wall time, hardware, the pieces above, and how much of each grid lies in the image
range) into ``--out``.  A prior fine-tuned from another (``[training] init``) is described with
its stage 1: give both logs and configs, stage 1 first (``--log A B --config A B``).

``--denoising-only`` measures the table again and swaps it into an existing card (e.g. after the
evaluation split changed), leaving its samples and text as they are.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.restoration import denoise_tv_chambolle

from score_methods import rerun_command, write_result
from scorerecon.cli_types import positive_int
from scorerecon.data.datasets import load_meta, load_split
from scorerecon.errors import UserError
from scorerecon.evaluation.metrics import psnr, ssim
from scorerecon.priors import load_prior, sample
from scorerecon.priors.experts import NoiseLevelExperts, read_experts_body, selection_table
from scorerecon.priors.registry import SHIPPED, shipped_path
from scorerecon.priors.sampling import write_samples
from scorerecon.priors.training import bf16_is_emulated

NOISE_LEVELS = (0.02, 0.05, 0.1, 0.2)
TV_WEIGHTS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
BORDER, BACKGROUND = 16, 0.05   # the layout signal of whole-slice samples (border_background)


@torch.no_grad()
def denoising_table(prior, images: np.ndarray, seed: int = 0) -> list[dict]:
    """Mean PSNR / SSIM of noisy input, best-weight TV and the prior's Tweedie denoiser."""
    generator = torch.Generator().manual_seed(seed)
    clean = torch.from_numpy(images[:, None].astype(np.float32))
    rows = []
    for sigma in NOISE_LEVELS:
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator)
        t = prior.sde.time_of_noise(sigma)
        alpha = float(prior.sde.alpha(torch.tensor(t)))
        denoised = torch.cat([prior.denoise(alpha * noisy[i:i + 4], t) for i in range(0, len(noisy), 4)])
        row = {"sigma": sigma}
        for name, batch in (("noisy", noisy), ("prior", denoised)):
            row[name] = _scores(batch[:, 0].numpy(), images)
        row["tv"] = max((_scores(np.stack([denoise_tv_chambolle(n, weight=w) for n in noisy[:, 0].numpy()]), images)
                         for w in TV_WEIGHTS), key=lambda s: s[0])
        rows.append(row)
    return rows


def _scores(recon: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    recon = np.clip(recon, 0, 1)
    return (float(np.mean([psnr(r, t) for r, t in zip(recon, truth)])),
            float(np.mean([ssim(r, t) for r, t in zip(recon, truth)])))


def markdown(rows: list[dict], n_slices: int, name: str) -> str:
    lines = [f"Denoising on {n_slices} held-out evaluation slices of `{name}` (PSNR dB / SSIM, mean):", "",
             "| σ (unit domain) | noisy input | TV, best weight (oracle) | prior, Tweedie (1 NFE) |",
             "|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[k][0]:.2f} / {r[k][1]:.3f}" for k in ("noisy", "tv", "prior")]
        lines.append(f"| {r['sigma']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def card_tables(card_folder: Path) -> tuple[str, str]:
    """(the card's ``denoising.md``, its ``README.md`` that holds that table); a folder without a
    card, or a README without the table, is a :class:`UserError` naming the fix."""
    files = [card_folder / "denoising.md", card_folder / "README.md"]
    if not all(f.is_file() for f in files):
        raise UserError(f"{card_folder} holds no card (README.md and denoising.md): write the whole "
                        "card first (without --denoising-only)")
    old, readme = (f.read_text() for f in files)
    if old not in readme:
        raise UserError(f"{files[1]} does not hold the table of its denoising.md: "
                        "write the whole card again (without --denoising-only)")
    return old, readme


def replace_denoising_table(card_folder: Path, table: str) -> None:
    """Write ``table`` as the card's ``denoising.md`` and in place of the old table in its README."""
    old, readme = card_tables(card_folder)
    write_result(str(card_folder / "README.md"), readme.replace(old, table))
    write_result(str(card_folder / "denoising.md"), table)


def plot_loss(logs: list[Path], out: Path) -> None:
    """The loss curves of the training stages, one after the other on a common step axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    offset = 0
    for stage, log in enumerate(logs, 1):
        with open(log, newline="") as handle:
            rows = list(csv.DictReader(handle))
        steps = [offset + int(r["step"]) for r in rows]
        ax.plot(steps, [float(r["loss"]) for r in rows], label=f"stage {stage}: {log.parent.name}")
        offset = steps[-1]
    if len(logs) > 1:
        ax.legend(fontsize=7)
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss, w(σ) = 1 / c_out²")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def hardware() -> str:
    """This machine in words (CPU count and model, torch build, GPU when there is one)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu_model()}), {gpu}, torch {torch.__version__}"


def cpu_model() -> str:
    """The CPU's model name, whether it has AMX bf16 tiles and whether oneDNN has native bf16 on
    it at all, which decide whether bf16 autocast speeds training up or slows it down 24-fold
    (benchmarks/results/training_throughput*.md); the architecture elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = fields.get("flags", "").split()
    emulated = ", bf16 emulated" if bf16_is_emulated(torch.device("cpu")) else ""
    return f"{fields.get('model name', platform.machine())}, {'AMX' if 'amx_bf16' in flags else 'no AMX'}{emulated}"


def _files(source: dict) -> str:
    """The training files of a dataset's ``training_source`` (one file, a list of templates, or
    the training split's volumes)."""
    files = ([source["file"]] if "file" in source else [t["file"] for t in source.get("templates", [])]
             + [v["file"] for v in source.get("volumes", []) if v.get("split") == "train"])
    name = f" ({source['name']})" if source.get("name") else ""
    return ", ".join(f"`{f}`" for f in files) + name


def training_sources(meta: dict, dataset: str) -> list[dict]:
    """The ``training_source`` of each prepared dataset the prior was trained on (metadata
    ``dataset`` "a+b" for a list in the config), else that of ``dataset``."""
    try:
        return [load_meta(name)["training_source"] for name in str(meta.get("dataset") or dataset).split("+")]
    except UserError:   # trained from a [data] path, not a prepared dataset
        return [load_meta(dataset)["training_source"]]


def _package(source: dict) -> str:
    package = str(source.get("package"))
    return package if package.startswith("PyPI") else f"Debian `{package}`"


def border_background(images: np.ndarray, width: int = BORDER, level: float = BACKGROUND) -> float:
    """Fraction of the pixels within ``width`` of the image edge below ``level``: a whole-slice
    layout signal (a head or brain in the middle, air or background around it)."""
    images = np.asarray(images)
    inner = np.zeros(images.shape[-2:], dtype=bool)
    inner[width:-width, width:-width] = True
    return float(np.mean(images[..., ~inner] < level))


def sample_grid(prior, n: int, size: int, args, path: Path, held_out: np.ndarray | None = None) -> str:
    """Draw n samples at size², write the clipped grid, return a sentence on how they were made
    and how much of them lies in the image range (real slices: all of it); with the held-out
    slices, also how much of their border is background beside theirs."""
    start = time.perf_counter()
    grid = sample(prior, n, (size, size), sampler=args.sampler, steps=args.steps, seed=0, progress=True)
    write_samples(grid, str(path))
    inside = float(((grid > -0.1) & (grid < 1.1)).float().mean())
    note = (f"{n} samples at {size}², {args.sampler} sampler, {args.steps} steps, seed 0 "
            f"({time.perf_counter() - start:.0f} s on {torch.get_num_threads()} threads): {inside:.1%} of "
            f"pixels inside [−0.1, 1.1], sample std {float(grid.std()):.3f} (the grid clips to [0, 1]).")
    if held_out is not None:
        note += (f"  Background (< {BACKGROUND}) in the outer {BORDER} pixels: {border_background(grid.numpy()):.1%} "
                 f"of the samples' border, {border_background(held_out):.1%} of the held-out slices'.")
    return note


def stages(prior) -> list[dict]:
    """The metadata of the prior's training stages, first to last (following ``init`` while its
    file is here: the card of a stage-2 prior needs stage 1's export; a shipped prior as ``init``
    ends the chain, its own card lists its stages)."""
    chain = [prior.metadata]
    while chain[0].get("init") and chain[0]["init"] not in SHIPPED:
        try:
            chain.insert(0, load_prior(chain[0]["init"]).metadata)
        except UserError as err:
            raise UserError(f"the card needs every training stage: {err}") from None
    return chain


def _whole(meta: dict) -> bool:
    """Whether the prior was trained on whole slices (crop × block size = the size it is applied to)."""
    return int(meta.get("crop", 0)) * int(meta.get("downsample", 1)) >= int(meta.get("image_size", 0))


def _crops(meta: dict) -> str:
    size, f = meta.get("image_size"), int(meta.get("downsample", 1))
    if f > 1:
        return f"{meta.get('crop')}² means of {f} × {f} pixel blocks of {size}² slices"
    return f"whole {size}² slices" if _whole(meta) else f"{meta.get('crop')}² crops of {size}² slices"


def _final_loss(meta: dict) -> str:
    """The exported loss; files exported from checkpoints written before it was stored carry none."""
    loss = meta.get("final_loss")
    return "n/a (not recorded: see the log)" if loss is None else f"{float(loss):.4f}"


def _hours(meta: dict) -> float:
    return float(meta.get("training_seconds", 0.0)) / 3600


def _stage_rows(chain: list[dict]) -> list[str]:
    """Crop, steps and wall time per stage (one stage: its own rows), and their totals."""
    if len(chain) == 1:
        m = chain[0]
        start = f", starting from `{m['init']}` ([card](../{m['init']}/README.md))" if m.get("init") else ""
        return [f"| crop / image size | {_crops(m)} |",
                f"| steps / images seen | {m.get('steps')} / {m.get('images_seen')} |",
                f"| wall time | {_hours(m):.2f} h of training steps{start} |"]
    rows = [f"| stage {k}: {_crops(m)} | {m.get('steps')} steps, {m.get('images_seen')} images, {_hours(m):.2f} h"
            + (f", from `{m['init']}`" if m.get("init") else "") + " |" for k, m in enumerate(chain, 1)]
    return rows + [f"| wall time | {sum(map(_hours, chain)):.2f} h of training steps in all |"]


def card(prior, name: str, dataset: str, configs: list[str], table: str, sample_notes: list[str],
         machine: str) -> str:
    """The model card's Markdown: provenance, training facts, the denoising table and figures."""
    meta = prior.metadata
    sources = training_sources(meta, dataset)
    sde = prior.sde.to_dict()
    commands = "; ".join(f"`scorerecon train --config {c}`" for c in configs) or "`scorerecon train --config CONFIG`"
    whole = _whole(meta)
    lines = [f"# Model card: `{name}` score prior", "",
             f"Load it with `load_prior(\"{name}\")` or `--prior {name}`.", "",
             "| | |", "|---|---|",
             f"| training data | {'; '.join(f'{_package(s)}: {_files(s)}' for s in sources)} |",
             f"| data licence | {'; '.join(str(s.get('licence')) for s in sources)} |",
             f"| intensity | {meta.get('intensity')} |",
             f"| network | NCSN++-class U-Net, {meta.get('parameters', 0) / 1e6:.2f} M parameters, "
             f"{meta.get('channels')} channel |",
             f"| SDE | {', '.join(f'{k} {v}' for k, v in sde.items())} |",
             f"| output scaling | {', '.join(f'{k} {v}' for k, v in prior.parameterization.to_dict().items())} "
             "(`scorerecon.priors.parameterization`) |",
             *_stage_rows(stages(prior)),
             f"| final loss (weighted DSM, mean of the last log window) | {_final_loss(meta)} |",
             f"| bf16 autocast | {meta.get('bf16')} |",
             f"| hardware | {machine} |",
             f"| config | {', '.join(f'`{c}`' for c in configs) or 'n/a'} ({commands}) |", "",
             "## Denoising on held-out slices", "", table, "",
             "## Loss curve", "", "![loss](loss.png)", "",
             "## Unconditional samples", "",
             "Whole slices, at the size the prior reconstructs"
             + (":" if whole else " (it saw only crops, so whole-slice layout is not something it learned):"),
             "", sample_notes[0], "", "![samples](samples.png)", ""]
    if not whole:
        lines += ["At the training crop size:", "", sample_notes[1], "",
                  "![samples at the crop size](samples_crop.png)", ""]
    lines += ["How accurate the prior is at each noise level: `benchmarks/results/prior_noise_levels.md`.", "",
              f"This card: `{rerun_command(__file__)}`.", ""]
    return "\n".join(lines)


def experts_card(prior: NoiseLevelExperts, source: str, table: str, sample_note: str) -> str:
    """The card of an experts prior: its members (each with its own card) and their noise ranges,
    the measurements that chose each switch, then the same denoising table and samples as a
    single network's."""
    path = shipped_path(source) if source in SHIPPED else Path(source)
    body = read_experts_body(path)
    name = prior.metadata.get("name", path.stem)
    members, switches = body["members"], body["switch_sigmas"]
    bounds = ["0", *(f"{s:.3g}" for s in switches), "∞"]
    lines = [f"# Model card: `{name}` score prior ({len(members)} experts by noise level)", "",
             f"Load it with `load_prior(\"{name}\")` or `--prior {name}`: `scorerecon.priors.experts` evaluates "
             "each member on its own range of σ (eDiff-I's expert denoisers, Balaji et al. 2022), each trained "
             "by `scorerecon train` (its card names its data).", "",
             "| expert | σ range | card |", "|---|---|---|"]
    lines += [f"| `{m}` | {bounds[i]} < σ ≤ {bounds[i + 1]} | [card](../{m}/README.md) |" for i, m in enumerate(members)]
    lines += ["", f"File `{path.name}` (JSON; the members' weights are their own files).", ""]
    for switch, chosen in zip(switches, body["selections"]):
        if not chosen:
            continue
        lines += [f"## The switch at σ = {switch:.3g}: one Tweedie step of each side on the validation slices", "",
                  f"{chosen['rule']}; {chosen['slices']} evenly spaced slices of {chosen['dataset']} (never the "
                  f"evaluation slices), {len(chosen['sigmas'])} noise levels, seed {chosen['seed']}.  Written by "
                  f"`scorerecon experts --low {chosen['low']} --high {chosen['high']} "
                  f"--dataset {chosen['dataset'].split()[0]} "
                  f"-o {path.name}`.", "",
                  selection_table(chosen["sigmas"], chosen["low_mse"], chosen["high_mse"], switch,
                                  [chosen["low"], chosen["high"]]), ""]
    lines += ["## Denoising on held-out slices", "", table, "",
              "## Unconditional samples", "", "Whole slices, at the size the prior reconstructs:", "",
              sample_note, "", "![samples](samples.png)", "",
              f"This card: `{rerun_command(__file__)}`.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", required=True, help="prior name or file")
    parser.add_argument("--dataset", required=True, help="prepared dataset whose eval split is scored")
    parser.add_argument("--log", nargs="+", default=[], help="training log.csv of each stage, for the loss curve")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--slices", type=positive_int, default=None, help="use only the first N eval slices")
    parser.add_argument("--samples", type=positive_int, default=4, help="whole-slice samples")
    parser.add_argument("--crop-samples", type=positive_int, default=16, help="samples at the training crop size")
    parser.add_argument("--sampler", default="pc", choices=["pc", "em", "ode"])
    parser.add_argument("--steps", type=positive_int, default=200)
    parser.add_argument("--size", type=positive_int, default=256)
    parser.add_argument("--config", nargs="+", default=[], help="the training config of each stage, named in the card")
    parser.add_argument("--hardware", default=None, help="where the prior was trained (default: this machine)")
    parser.add_argument("--denoising-only", action="store_true",
                        help="measure the denoising table again and put it in place of the card's old one "
                             "(after the evaluation split changed); samples and the rest of the card stay")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    try:
        write_card(args)
    except UserError as err:
        sys.exit(f"prior_cards: {err}")


def write_card(args: argparse.Namespace) -> None:
    """The card (or, with ``--denoising-only``, its denoising table) in ``args.out``."""
    out = Path(args.out)
    if args.denoising_only:
        card_tables(out)  # a missing card fails before minutes of measuring, not after
    prior = load_prior(args.prior).eval()
    images = load_split(args.dataset, "eval")[: args.slices]
    table = markdown(denoising_table(prior, images), len(images), args.dataset)
    if args.denoising_only:
        replace_denoising_table(out, table)
        return
    write_result(str(out / "denoising.md"), table)
    if args.log:
        plot_loss([Path(log) for log in args.log], out / "loss.png")
    notes = [sample_grid(prior, args.samples, args.size, args, out / "samples.png", held_out=images)]
    if isinstance(prior, NoiseLevelExperts):
        write_result(str(out / "README.md"), experts_card(prior, args.prior, table, notes[0]))
        return
    if not _whole(prior.metadata):
        notes.append(sample_grid(prior, args.crop_samples, int(prior.metadata["crop"]), args, out / "samples_crop.png"))
    else:
        (out / "samples_crop.png").unlink(missing_ok=True)
    print("\n".join(notes))
    name = args.prior if args.prior in SHIPPED else prior.metadata.get("name", args.dataset)
    write_result(str(out / "README.md"), card(prior, name, args.dataset, args.config, table, notes,
                                              args.hardware or hardware()))


if __name__ == "__main__":
    main()
