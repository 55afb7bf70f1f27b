"""Training a score prior by denoising score matching (Vincent 2011; Song et al. 2021, eq. 7).

For x0 from the data, t ~ U(t_lo, t_hi), z ~ N(0, I) and x_t = α(t) x0 + β(t) z, the loss is

    L(θ) = E w(σ) ‖D_θ(x_t, t) − x0‖²,   σ = β/α,  w = 1 / c_out(σ)²    (mean over pixels),

with [t_lo, t_hi] = [eps, T], or with ``[training] sigma_range = [σ_lo, σ_hi]`` the times whose
noise level σ(t) lies in that range (log-uniform σ for VE): an expert for part of the noise range
(:mod:`.experts`) spends all its steps there (eDiff-I, Balaji et al. 2022).  The denoiser D_θ
and c_out are those of the prior's parameterization (:mod:`.parameterization`):
for ``edm`` (Karras et al. 2022, eq. 8 with their Table 1 preconditioning) the network's target
has unit variance at every σ; for ``noise`` it is Song's E ‖β s_θ(x_t, t) + z‖².

minimised with Adam (linear warm-up), gradient-norm clipping and an exponential moving average
of the weights, its decay warmed up as min(ema, (1 + k) / (10 + k)) (the EMA is what gets
exported).  Batches are random crops (and optional left-right flips) of the prepared dataset,
an ``.npy`` array (N, H, W) of float32 images in [0, 1]; with ``[data] downsample = f`` the
images are first averaged over f × f pixel blocks, which trains a coarse-scale prior (applied
to full-size images through the same block means, :mod:`.prior`).

Reproducibility and resuming.  Everything random in step k (which images, crop offsets, flips,
t and z of the whole *global* batch) comes from a generator seeded by (seed, k), and every rank
takes its slice of that global batch.  Hence a run resumed from a checkpoint (model, EMA,
optimizer, step, global RNG states, data position) gives exactly the losses of an uninterrupted
run, and a DDP run on W processes takes the same step as one process on the whole batch.

Fine-tuning: ``[training] init`` names a prior (shipped name, ``.safetensors`` or
``checkpoint.pt``) whose weights a new run starts from, model and EMA alike, e.g. to continue
a prior trained on small crops on whole slices (a larger ``[data] crop``).  Its network, SDE and
parameterization must equal the config's; optimiser, step and warm-up start afresh.

Distributed: launched with ``torchrun --nproc-per-node W -m scorerecon train --config ...``
(gloo on CPU, nccl on GPU); only rank 0 writes logs, checkpoints and the exported prior.
"""

from __future__ import annotations

import copy
import csv
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..allocator import retain_freed_memory
from ..atomic import atomic_path, check_output_file, check_output_folder
from ..errors import UserError
from .checkpoint import (CHECKPOINT, FORMAT, PREVIOUS, export_prior, latest_checkpoint,
                         remove_leftover_temporaries, save_checkpoint, set_aside_unreadable)
from .config import dataset_paths, training_data_name
from .network import ScoreUNet, count_parameters
from .parameterization import LEGACY, Parameterization
from .prior import ScorePrior
from .sde import _bcast, sde_from_dict

LOG_FIELDS = ("step", "loss", "lr", "images_per_s", "seconds")
# config tables that must not change when resuming
FROZEN_TABLES = ("data", "sde", "network", "parameterization")
# what checkpoints written before a table existed meant by its absence
LEGACY_TABLES = {"parameterization": LEGACY}
# keys added to a frozen table (or to FROZEN_TRAINING) later, with the value their absence meant
LATER_DEFAULTS = {"data": {"downsample": 1, "repeat": []}, "training": {"sigma_range": []}}
FROZEN_TRAINING = ("batch_size", "lr", "warmup", "grad_clip", "ema", "seed", "bf16", "channels_last", "sigma_range")


# ----------------------------------------------------------------------------------- data
def load_training_images(cfg: dict) -> np.ndarray:
    """The training array (N, C, H, W) float32 named by the config's [data] table (the datasets of
    a list concatenated in order, each ``[data] repeat`` times: a small dataset oversampled)."""
    crop = cfg["data"]["crop"]
    paths = dataset_paths(cfg)
    parts = [_load_array(path, cfg) for path in paths]
    parts = [np.concatenate([part] * times) if times > 1 else part
             for part, times in zip(parts, cfg["data"]["repeat"] or [1] * len(paths))]
    if len({part.shape[1:] for part in parts}) > 1:
        raise UserError(f"the datasets {training_data_name(cfg)} hold images of different sizes "
                        f"{sorted({part.shape[1:] for part in parts})}: list datasets of one size")
    images = np.concatenate(parts) if len(parts) > 1 else parts[0]
    images = average_pool(images, cfg["data"]["downsample"], training_data_name(cfg))
    if min(images.shape[-2:]) < crop:
        raise UserError(f"crop {crop} is larger than the training images {images.shape[-2:]}: lower [data] crop")
    return np.ascontiguousarray(images, dtype=np.float32)


def _load_array(path: Path, cfg: dict) -> np.ndarray:
    """One training array as (N, C, H, W) float32, checked against the network's channels."""
    if not path.is_file():
        dataset = "DATASET" if cfg["data"]["path"] else path.parent.name
        raise UserError(f"training data {path} not found: run 'scorerecon data prepare {dataset}' "
                        "or set [data] path in the config")
    try:
        images = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read training data {path} ({err}): regenerate it with 'scorerecon data prepare'")
    if images.ndim == 3:
        images = images[:, None]
    channels = cfg["network"]["channels"]
    if images.ndim != 4 or images.shape[1] != channels:
        raise UserError(f"training data {path} has shape {images.shape}: expected (N, H, W) images "
                        f"with {channels} channel(s)")
    if not _all_finite(images):
        raise UserError(f"training data {path} holds NaN or infinite values: clean it (e.g. replace them "
                        "by valid intensities) or prepare the dataset again")
    return np.asarray(images, dtype=np.float32)


def _all_finite(images: np.ndarray, chunk: int = 256) -> bool:
    """Whether every value is finite, read ``chunk`` images at a time (a large memory map whole
    would need a mask as large)."""
    return all(np.isfinite(images[i:i + chunk]).all() for i in range(0, len(images), chunk))


def average_pool(images: np.ndarray, factor: int, source: str = "the images") -> np.ndarray:
    """Means over factor × factor pixel blocks of (N, C, H, W) images (the ``[data] downsample``
    of a coarse-scale prior): the same ``avg_pool2d`` the prior applies to x_t
    (:func:`scorerecon.priors.prior.denoise_through_block_means`)."""
    if factor == 1:
        return images
    height, width = images.shape[-2:]
    if height % factor or width % factor:
        raise UserError(f"{source}: images of {height}×{width} cannot be downsampled by {factor}: "
                        "choose a [data] downsample that divides both sides")
    return torch.nn.functional.avg_pool2d(torch.tensor(images), factor).numpy()  # a copy: images may be a read-only memory map


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of all randomness of step ``step`` (independent of rank and of resuming)."""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batch_indices(step: int, batch: int, n: int, seed: int) -> np.ndarray:
    """Image indices of global batch ``step``: a stream of epochs, each a fresh permutation."""
    positions = np.arange(step * batch, (step + 1) * batch)
    epochs, offsets = np.divmod(positions, n)
    perms = {e: np.random.default_rng([seed, int(e)]).permutation(n) for e in np.unique(epochs)}
    return np.array([perms[e][o] for e, o in zip(epochs, offsets)])


def random_crops(images: np.ndarray, indices: np.ndarray, crop: int, flip: bool,
                 generator: torch.Generator) -> torch.Tensor:
    """Crops (B, C, crop, crop) at uniform offsets, each left-right flipped with probability ½."""
    height, width = images.shape[-2:]
    ys = torch.randint(0, height - crop + 1, (len(indices),), generator=generator)
    xs = torch.randint(0, width - crop + 1, (len(indices),), generator=generator)
    flips = torch.rand(len(indices), generator=generator) < 0.5
    out = np.stack([images[i, :, y:y + crop, x:x + crop] for i, y, x in zip(indices, ys.tolist(), xs.tolist())])
    batch = torch.from_numpy(out)
    if flip:
        batch[flips] = batch[flips].flip(-1)
    return batch


def max_pairwise_distance(images: np.ndarray, limit: int = 512) -> float:
    """max_ij ‖x_i − x_j‖₂ over (up to ``limit``) images: Song & Ermon 2020's σ_max (Technique 1)."""
    flat = torch.from_numpy(np.asarray(images[:limit], dtype=np.float64).reshape(min(limit, len(images)), -1))
    return float(torch.cdist(flat, flat).max())


def training_time_range(sde, sigma_range) -> tuple[float, float]:
    """[t_lo, t_hi] that training draws t from uniformly: [eps, T], or the times whose noise level
    lies in ``sigma_range`` = [σ_lo, σ_hi] (UserError when that range misses the SDE's)."""
    if not sigma_range:
        return sde.eps, sde.T
    low, high = sde.noise_range()
    if sigma_range[0] >= high or sigma_range[1] <= low:
        raise UserError(f"[training] sigma_range {list(sigma_range)} lies outside the SDE's noise levels "
                        f"[{low:.3g}, {high:.3g}]: choose a range inside them")
    return sde.time_of_noise(float(sigma_range[0])), sde.time_of_noise(float(sigma_range[1]))


# -------------------------------------------------------------------------------- trainer
class Trainer:
    """One training process: model (DDP-wrapped when world_size > 1), EMA, Adam, data stream."""

    def __init__(self, cfg: dict, images: np.ndarray, rank: int = 0, world_size: int = 1,
                 device: str | torch.device = "cpu"):
        self.cfg, self.images, self.rank, self.world = cfg, images, rank, world_size
        self.opt = cfg["training"]
        if self.opt["batch_size"] % world_size:
            raise UserError(f"batch_size {self.opt['batch_size']} is not divisible by the {world_size} "
                            "processes: choose a multiple")
        self.device = torch.device(device)
        torch.manual_seed(self.opt["seed"])
        network = ScoreUNet(**cfg["network"])
        network.check_image_size(cfg["data"]["crop"], cfg["data"]["crop"])
        self.memory_format = torch.channels_last if self.opt["channels_last"] else torch.contiguous_format
        self.network = network.to(self.device, memory_format=self.memory_format)
        self.sde = sde_from_dict(cfg["sde"])
        self.parameterization = Parameterization.from_dict(cfg["parameterization"])
        self.time_range = training_time_range(self.sde, self.opt["sigma_range"])
        self.ema = copy.deepcopy(self.network).requires_grad_(False)
        self.model = self._wrap(self.network)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=self.opt["lr"],
                                          betas=(0.9, 0.999), eps=1e-8)
        self.step = 0
        self.elapsed = 0.0
        self.last_loss: float | None = None   # mean loss of the last log window
        self.log_window: list[float] = []     # losses since the last log row (kept in checkpoints)

    def _wrap(self, network: nn.Module) -> nn.Module:
        if self.world == 1:
            return network
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(network, device_ids=ids)

    @property
    def local_batch(self) -> int:
        return self.opt["batch_size"] // self.world

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to lr over ``warmup`` steps, then constant."""
        return self.opt["lr"] * min(1.0, (step + 1) / max(1, self.opt["warmup"]))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's slice (x0, t, z) of global batch ``step``."""
        gen = step_generator(self.opt["seed"], step)
        size, data = self.opt["batch_size"], self.cfg["data"]
        idx = batch_indices(step, size, len(self.images), self.opt["seed"])
        x0 = random_crops(self.images, idx, data["crop"], data["flip"], gen)
        t_lo, t_hi = self.time_range
        t = t_lo + (t_hi - t_lo) * torch.rand(size, generator=gen)
        z = torch.randn(x0.shape, generator=gen)
        part = slice(self.rank * self.local_batch, (self.rank + 1) * self.local_batch)
        return tuple(v[part].to(self.device) for v in (x0, t, z))

    def loss(self, x0: torch.Tensor, t: torch.Tensor, z: torch.Tensor, bf16: bool | None = None) -> torch.Tensor:
        """Mean over pixels and batch of w(σ) ‖D_θ(x_t, t) − x0‖², with D − x0 = σ z + (D − x_t/α).

        ``bf16`` overrides the config's autocast (e.g. to score bf16 and fp32 runs alike in fp32)."""
        alpha, beta = self.sde.alpha(t), self.sde.beta(t)
        xt = _bcast(alpha, x0) * x0 + _bcast(beta, x0) * z
        xt = xt.contiguous(memory_format=self.memory_format)
        autocast = self.opt["bf16"] if bf16 is None else bf16
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            residual = self.parameterization.residual(self.model, xt, t, self.sde)
        sigma = beta / alpha
        error = _bcast(sigma, z) * z + residual.float()
        return (_bcast(self.parameterization.loss_weight(alpha, sigma), z) * error.pow(2)).mean()

    def train_step(self) -> float:
        """One optimiser step; returns the loss averaged over all processes."""
        lr = self.learning_rate(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.loss(*self.batch(self.step))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.network.parameters(), self.opt["grad_clip"])
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        value = loss.detach().clone()
        if self.world > 1:
            dist.all_reduce(value)
            value /= self.world
        return float(value)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """θ_ema ← d θ_ema + (1 − d) θ with d = min(ema, (1 + k) / (10 + k)) at step k of this run:
        the warm-up lets the average forget its start (random, or the ``init`` prior) early on."""
        decay = min(self.opt["ema"], (1 + self.step) / (10 + self.step))
        for ema_p, p in zip(self.ema.parameters(), self.network.parameters()):
            ema_p.lerp_(p, 1.0 - decay)

    # -- checkpoints ------------------------------------------------------------------------
    def describe(self) -> dict:
        """Network config, SDE and metadata, as stored in checkpoints and the exported file; its
        ``final_loss`` is the last log window's mean, so a file exported from a checkpoint has it."""
        data = self.cfg["data"]
        metadata = {"name": self.cfg["name"], "modality": data["modality"], "crop": data["crop"],
                    "image_size": data["image_size"], "channels": self.cfg["network"]["channels"],
                    "dataset": training_data_name(self.cfg), "steps": self.step,
                    "images_seen": self.step * self.opt["batch_size"], "parameters": count_parameters(self.network),
                    "training_seconds": round(self.elapsed, 1), "final_loss": self.last_loss,
                    "bf16": self.opt["bf16"], "intensity": data["intensity"], "init": self.opt["init"],
                    "downsample": data["downsample"], "sigma_range": list(self.opt["sigma_range"])}
        return ScorePrior(self.ema, self.sde, metadata, self.parameterization).describe()

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, EMA, Adam, step, RNGs, data position."""
        return {"format": FORMAT + "-checkpoint", "step": self.step, "elapsed": self.elapsed,
                "data_position": self.step * self.opt["batch_size"], "data_shape": list(self.images.shape),
                "log_window": list(self.log_window),
                "config": self.cfg,
                "model": self.network.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": _rng_states(), "prior": self.describe()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (the config compatibility is checked by the caller); the
        training images must have the shape they had, or the batches drawn from (seed, step)
        would silently be others."""
        shape = state.get("data_shape")  # checkpoints written before session 56 lack it
        if shape is not None and list(shape) != list(self.images.shape):
            raise UserError(f"the training data changed since the checkpoint ({shape[0]} images of {shape[1:]} then, "
                            f"{self.images.shape[0]} of {list(self.images.shape[1:])} now): resume with the data "
                            "it was trained on, or start a new run in a new [output] dir")
        self.network.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.last_loss = state["prior"]["metadata"].get("final_loss")
        self.log_window = [float(v) for v in state.get("log_window", [])]  # absent before session 56
        _set_rng_states(state["rng"])


def _rng_states() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    random.setstate(_as_tuple(states["python"]))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _with_later_defaults(table: str, saved):
    """A checkpoint's config table with keys added to the defaults since it was written filled in
    (``[data] downsample``, ``[training] sigma_range``): a key absent then meant what its default
    means now."""
    if table not in LATER_DEFAULTS or not isinstance(saved, dict):
        return saved
    return {**LATER_DEFAULTS[table], **saved}


def _comparable(table: str, value):
    """A config table as resuming compares it: [sde] as the SDE it builds, so a table written
    before the config filled in [sde]'s defaults still matches the same SDE spelt out."""
    return sde_from_dict(value).to_dict() if table == "sde" and isinstance(value, dict) else value


def check_resumable(cfg: dict, saved: dict) -> None:
    """UserError when the config differs from the checkpoint's in anything but the run length."""
    for table in FROZEN_TABLES:
        was = _with_later_defaults(table, saved.get(table, LEGACY_TABLES.get(table)))
        if _comparable(table, cfg[table]) != _comparable(table, was):
            raise UserError(f"the config's [{table}] differs from the checkpoint's: resume with the original "
                            "config or train into a new output folder")
    saved_training = _with_later_defaults("training", saved["training"])
    for key in FROZEN_TRAINING:
        was = saved_training[key]
        if cfg["training"][key] != was:
            raise UserError(f"[training] {key} differs from the checkpoint's ({was}): "
                            "resume with the original value")


# ------------------------------------------------------------------------------ the run
class CsvLog:
    """CSV log (step, loss, lr, images_per_s, seconds); on resume rows after the checkpoint go."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows = self._rows_until(resume_step) if resume_step is not None and path.exists() else []
        with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:  # a kill keeps the old log
            writer = csv.writer(handle)
            writer.writerow(LOG_FIELDS)
            writer.writerows(rows)

    def _rows_until(self, step: int) -> list[list[str]]:
        with open(self.path, newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        return [row for row in rows if row and int(row[0]) <= step]

    def write(self, **values) -> None:
        with open(self.path, "a", newline="") as handle:
            csv.writer(handle).writerow([values[k] for k in LOG_FIELDS])


def _configured_device(name: str, local_rank: int = 0) -> torch.device:
    """``[training] device`` as this process's torch device: auto = this process's GPU (its
    LOCAL_RANK) where CUDA is available, else the CPU; cuda = this process's GPU; cpu or cuda:N
    as given.  A name torch does not know is a UserError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"[training] device {name!r} is not a device: use auto, cpu or cuda (or cuda:N)") from None


def _check_available(device: torch.device) -> None:
    """UserError when ``device`` is a GPU this machine lacks: no CUDA, or fewer GPUs than cuda:N needs."""
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise UserError(f"[training] device {device} needs CUDA, which is not available here: "
                        'set device = "cpu" (or "auto")')
    count = torch.cuda.device_count()
    if (device.index or 0) >= count:
        raise UserError(f"[training] device {device} does not exist: this machine has {count} GPU(s): use "
                        f"cuda:N with N < {count} (with torchrun, at most {count} processes per machine)")


def init_distributed(requested: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment (one process without it), the
    device from ``[training] device`` (:func:`_configured_device`) and the process group's
    backend from that device: nccl for CUDA, gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _configured_device(requested, int(os.environ.get("LOCAL_RANK", "0")))
    _check_available(device)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


def bf16_is_emulated(device: torch.device) -> bool:
    """Whether bf16 autocast on ``device`` lacks native kernels: a CPU without the AVX-512 (BF16)
    or AMX units oneDNN needs, where it emulates bf16 (measured on an AVX2 EPYC: 24x slower than
    float32, ``benchmarks/results/training_throughput_avx2.md``)."""
    if device.type != "cpu":
        return False
    try:
        return not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a PyTorch build without oneDNN: no fast bf16 either
        return True


def train(cfg: dict, resume: bool = False, progress: bool = True) -> Path | None:
    """Run (or resume) the training described by ``cfg``; return the exported prior's path."""
    retain_freed_memory()
    check_outputs(cfg["output"])
    rank, world, device = init_distributed(cfg["training"]["device"])
    trainer = Trainer(cfg, load_training_images(cfg), rank, world, device)
    if rank == 0 and trainer.opt["bf16"] and bf16_is_emulated(device):
        print(f"warning: [training] bf16 = true, but this CPU ({torch.backends.cpu.get_cpu_capability()}) has "
              "no native bf16 and emulates it, 24x slower than float32 on an AVX2 CPU: set "
              "[training] bf16 = false in a new run (a resumed run must keep it)", file=sys.stderr)
    out = Path(cfg["output"]["dir"])
    _prepare_output(trainer, out, resume)
    log = CsvLog(out / "log.csv", trainer.step if resume else None) if rank == 0 else None
    _loop(trainer, out, log, progress and rank == 0)
    path = None
    if rank == 0:
        path = export_prior(trainer.ema.state_dict(), trainer.describe(), cfg["output"]["export"])
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return path


def check_outputs(output: dict) -> None:
    """UserError, before any work, unless ``[output] dir`` can be a folder and ``[output] export``
    a ``.safetensors`` file that can be written, in a folder that exists or that the run makes
    (dir or one above it)."""
    out = Path(os.path.abspath(output["dir"]))
    _checked_entry("[output] dir", check_output_folder, out)
    export = Path(os.path.abspath(output["export"]))
    if export.suffix != ".safetensors":
        raise UserError(f"[output] export {output['export']} is not a .safetensors file name: "
                        "set it to a file name ending in .safetensors")
    if export.parent in (out, *out.parents) and not export.parent.exists():
        _checked_entry("[output] export", check_output_folder, export.parent)  # made with the run folder
    else:
        _checked_entry("[output] export", check_output_file, export)


def _checked_entry(entry: str, check, path: Path) -> None:
    """``check(path)`` (:mod:`scorerecon.atomic`), its UserError prefixed by the config entry."""
    try:
        check(path)
    except UserError as err:
        raise UserError(f"{entry}: {err}") from None


def _prepare_output(trainer: Trainer, out: Path, resume: bool) -> None:
    if resume:
        state, path = latest_checkpoint(out)
        check_resumable(trainer.cfg, state["config"])
        trainer.load_state_dict(state)
        if trainer.rank == 0:  # only rank 0 writes in the run folder
            remove_leftover_temporaries(out)
            if path.name == PREVIOUS and (out / CHECKPOINT).exists():
                aside = set_aside_unreadable(out)
                print(f"warning: {CHECKPOINT} could not be read (kept as {aside.name}); resuming from {PREVIOUS} "
                      f"at step {trainer.step}", file=sys.stderr)
    elif any((out / name).exists() for name in (CHECKPOINT, PREVIOUS)):
        raise UserError(f"{out} already holds a training run: pass --resume to continue it, "
                        "or set [output] dir to a new folder")
    else:
        if trainer.opt["init"]:
            start_from_prior(trainer, trainer.opt["init"])
        if trainer.rank == 0:
            out.mkdir(parents=True, exist_ok=True)


def start_from_prior(trainer: Trainer, source: str) -> None:
    """Load the weights of the prior ``source`` into the trainer's network and EMA (fine-tuning)."""
    from .registry import load_prior
    prior = load_prior(source)
    if not isinstance(prior, ScorePrior):
        raise UserError(f"[training] init {source!r} is an experts prior (two networks): name one of its "
                        "networks instead, e.g. head-ct-edm or head-ct-v1")
    theirs, own = prior.describe(), trainer.describe()
    for table in ("network", "sde", "parameterization"):
        if theirs[table] != own[table]:
            raise UserError(f"[training] init {source!r} has another [{table}] than the config: "
                            f"copy that prior's [{table}] into the config or start without init")
    weights = prior.network.state_dict()
    trainer.network.load_state_dict(weights)
    trainer.ema.load_state_dict(weights)


def _loop(trainer: Trainer, out: Path, log: CsvLog | None, progress: bool) -> None:
    from tqdm import tqdm
    opt = trainer.opt
    bar = tqdm(total=opt["steps"], initial=trainer.step, disable=not progress, unit="step", dynamic_ncols=True)
    images, seconds = 0, 0.0  # throughput since the last log row (or since this process started)
    while trainer.step < opt["steps"]:
        start = time.perf_counter()
        trainer.log_window.append(trainer.train_step())
        took = time.perf_counter() - start
        trainer.elapsed += took
        images, seconds = images + opt["batch_size"], seconds + took
        bar.update(1)
        bar.set_postfix(loss=f"{trainer.log_window[-1]:.4f}", img_s=f"{opt['batch_size'] / took:.1f}")
        done = trainer.step == opt["steps"]
        if trainer.step % opt["log_every"] == 0 or done:
            trainer.last_loss = float(np.mean(trainer.log_window))
            if log is not None:
                log.write(step=trainer.step, loss=f"{trainer.last_loss:.6f}", lr=f"{trainer.learning_rate(trainer.step - 1):.3e}",
                          images_per_s=f"{images / seconds:.2f}", seconds=f"{trainer.elapsed:.1f}")
            trainer.log_window, images, seconds = [], 0, 0.0
        if (trainer.step % opt["checkpoint_every"] == 0 or done) and trainer.rank == 0:
            save_checkpoint(trainer.state_dict(), out)
    bar.close()
