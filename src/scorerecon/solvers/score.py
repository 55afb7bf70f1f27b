"""Score-based reconstruction methods behind ``reconstruct(meas, method)``, for CT and MRI alike.

This module is the only one that knows where a measurement comes from: it turns a
``Measurement`` into an :class:`~scorerecon.solvers.conditioning.InverseProblem` (operator
A = P(Λ) T, unit-domain data, image layout) and hands it to a sampler of
:mod:`scorerecon.solvers.samplers`, which never learns the modality.

Methods (``--method``):

=========  ==================================================================  ===========
name       algorithm                                                           NFE
=========  ==================================================================  ===========
song       Song et al. 2022, Algorithm 2 (proximal step, λ, before each update)  2N + 1
chung      Chung & Ye 2022 (projection after each update; multi-coil hybrid)    2N + 1
langevin   Jalal et al. 2021, annealed Langevin with a likelihood gradient      N·inner + 1
guidance   score-SDE gradient guidance (likelihood gradient in the score)       2N + 1
dps        Chung et al. 2023, diffusion posterior sampling                      N + 1
fast       DDS (Chung, Lee & Ye 2024): Tweedie + CG + DDIM (+ DPS step ζ)       N
score      the recommended default: ``fast``
=========  ==================================================================  ===========

N (``steps``) defaults to the prior's own N for the 1000-step samplers and, for ``fast``, to the
task preset's steps (at most 50) or 20.
Settings come, in increasing priority, from :data:`DEFAULTS`, the task's tuned preset
(:func:`scorerecon.solvers.tuning.load_preset`, e.g. ``ct-sparse-view``) and the caller.

Data.  CT: the unit-window sinogram in pixel units; with metal, Λ removes the metal trace and the
metal is put back after reconstruction.  MRI: k-space divided by ``intensity_scale``; the image is
a real image times a smooth phase estimate (phase-constrained), or with ``phase="none"`` a
complex image whose real and imaginary parts the magnitude prior samples together in the batch
(:func:`mri_problem`); ``real=True`` assumes no phase at all.  Multi-coil data use
``coils="sense"`` (one combined image, SENSE operator; the default except for ``chung``),
``"ssos"`` (every coil image sampled, root-sum-of-squares) or ``"hybrid"`` (SSOS plus a SENSE
step every ``sense_every`` steps; the default for ``chung``).

K posterior samples (``samples``) run in one batch; the output is their mean with their
standard deviation as the uncertainty map, times the ``std_scale`` that a preset calibrated on
validation slices at its own K (``scorerecon tune --calibrate-std``: then |error| ≤ std on 68 %
of their pixels), 1 where none was calibrated or another K runs.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..priors.prior import chosen_layout, convolution_layout
from . import samplers
from .conditioning import InverseProblem, SenseData, cg_consistency
from .registry import MethodOutput, reconstruct, register
from .tuning import load_preset, task_of

METHODS = ("song", "chung", "langevin", "guidance", "dps", "fast")
DEFAULT_METHOD = "fast"
DEFAULT_ALIAS = "score"  # the registered name of DEFAULT_METHOD
REGISTERED_NAMES = (DEFAULT_ALIAS, *METHODS)  # every name that reconstruct() runs with a score prior
DEFAULTS: dict[str, dict[str, Any]] = {
    # Song et al. (2022) tuned λ = 0.841, snr = 0.246 for 23-view CT; presets override per task
    "song": {"lam": 1.0, "snr": 0.16, "corrector_steps": 1},
    "chung": {"snr": 0.16, "corrector_steps": 1, "sense_every": 10},
    "langevin": {"step_size": 0.05, "inner_steps": 3, "gamma": 0.0},
    "guidance": {"snr": 0.16, "corrector_steps": 1, "gamma": 0.0},
    "dps": {"zeta": 1.0},
    # warm start at σ = 0.1 from the classical reconstruction (README): the CPU-trained priors
    # are most accurate at low noise; 0.1 was picked by hand (0.05 / 0.1 / 0.3 on the demo slice).
    # Tuned presets (solvers/presets/) override it; start_sigma = 0 starts cold.  ``samples``:
    # K posterior samples by default (their mean is the image, their std the uncertainty map);
    # tuned presets choose both, steps within FAST_EVALUATIONS (solvers/tuning.py)
    "fast": {"steps": 20, "samples": 2, "cg_iterations": 5, "gamma": 0.0, "eta": 0.15, "zeta": 0.0,
             "start_sigma": 0.1},
}
WARM_START_INIT_ITERATIONS = 10  # MRI: CG iterations of the least-squares initial image
DEFAULT_PHASE = "cs-tv"  # MRI phase handling (mri_problem): the phase-constrained frame
PHASE_SMOOTHING = 2.0  # pixels: σ of the Gaussian blur that makes the phase estimate smooth
_SAMPLER = {"song": samplers.pc_sampler, "chung": samplers.pc_sampler, "guidance": samplers.pc_sampler,
            "langevin": samplers.annealed_langevin, "dps": samplers.dps_sampler, "fast": samplers.fast_sampler}
_PROBLEM_OPTIONS = ("coils", "real", "phase")
# settings every method takes: K, N, and the factor on the std map that a preset's calibration
# chose (``scorerecon tune --calibrate-std``; 1 = the samples' own standard deviation)
_COMMON_SETTINGS = ("steps", "samples", "std_scale")


# ------------------------------------------------------------------------------- prior
#: the shipped prior each modality reconstructs with unless told otherwise
DEFAULT_PRIOR = {"ct": "head-ct", "mri": "brain-mri"}


def _named(prior) -> bool:
    """Whether ``prior`` names a prior (a name, a path, or None for the default) rather than being one."""
    return prior is None or isinstance(prior, str) or hasattr(prior, "__fspath__")


def resolve_prior(prior, modality: str):
    """A prior object from a name, a path, or an object (default: the modality's shipped prior)."""
    if _named(prior):
        from ..priors.registry import load_prior
        name = prior if prior is not None else DEFAULT_PRIOR[modality]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return load_prior(name, device=device)
    return prior


def preset_prior_mismatch(method: str, task: str, prior, modality: str) -> str | None:
    """The prior the task's preset entry of ``method`` was tuned with, where ``prior`` (a name or
    path; None: the modality's default) is another one (compared by :func:`prior_digest`, so a
    path to a shipped prior's file is that prior); None where they agree, where the entry records
    no prior (e.g. settings from a paper), or where ``prior`` is an object rather than a name."""
    from ..priors.registry import prior_digest
    tuned = load_preset(task).get("tuned", {}).get(method, {})
    recorded = tuned.get("prior", tuned.get("settings_from", {}).get("tuned", {}).get("prior"))
    if recorded is None or not _named(prior):
        return None
    used = prior if prior is not None else DEFAULT_PRIOR[modality]
    try:
        same = prior_digest(recorded) == prior_digest(used)
    except UserError:  # the recorded prior is a file this machine does not have
        same = str(recorded) == str(used)
    return None if same else str(recorded)


def _device(prior) -> torch.device:
    tensors = list(prior.parameters()) + list(prior.buffers()) if isinstance(prior, torch.nn.Module) else []
    return tensors[0].device if tensors else torch.device("cpu")


def sampling_shape(prior, shape: tuple[int, int]) -> tuple[int, int]:
    """The size the prior samples for an operator image of ``shape``: the same, or padded to
    the U-Net's multiple 2^(levels − 1); UserError when the prior cannot model it."""
    try:
        prior.check_image_size(*shape)
        return tuple(shape)
    except UserError:
        factor = getattr(prior, "size_multiple", None)
        if factor is None:
            raise
        padded = tuple(-(-int(s) // factor) * factor for s in shape)
        prior.check_image_size(*padded)
        return padded


# ----------------------------------------------------------------------- the problem
def ct_problem(meas, prior, device) -> tuple[InverseProblem, Any, Any]:
    """CT: A = Λ T (Radon), unit-window sinogram; returns the problem, the metal put-back and
    the warm start (the default classical reconstruction, TV, clipped to the unit window)."""
    from .classical_ct import ct_problem as classical_problem
    ct = classical_problem(meas)
    shape = tuple(ct.operator.geometry.image_shape)
    problem = InverseProblem(ct.operator.to(device), ct.sinogram.to(device), sampling_shape(prior, shape),
                             grid_shape=shape)

    def finish(images: np.ndarray) -> np.ndarray:
        if ct.metal is not None and ct.metal_unit is not None:
            images[:, ct.metal] = ct.metal_unit
        return images

    def classical() -> torch.Tensor:
        unit = np.clip(reconstruct(meas).unit_image, 0.0, 1.0)
        return problem.pad(torch.from_numpy(unit.astype(np.float32))[None, None].to(device))
    return problem, finish, classical


def mri_problem(meas, prior, device, coils: str = "sense", real: bool = False,
                phase: str = DEFAULT_PHASE) -> tuple[InverseProblem, Any, Any]:
    """MRI: single-coil F, multi-coil SENSE or coil-by-coil (SSOS, hybrid) problems.

    ``phase="cs-tv"``: phase-constrained sampling.  The image is modelled as x = e^{iφ̂} r with r
    real and e^{iφ̂} a smooth phase estimate (:func:`smooth_phase` of the CS-TV image), and the
    sampler draws r through the operator A(e^{iφ̂} ·).  A prior trained on magnitudes has never
    seen the negative values the real and imaginary parts of an image with a phase take, and
    leaves noise there; r is close to the magnitude instead.  Coil by coil (SSOS, hybrid) each
    coil image S_c x gets its own phase, that of S_c times the CS-TV image
    (:class:`~scorerecon.operators.mri.CoilPhaseMRI`).  ``phase="none"`` samples the complex
    image(s) as measured, real and imaginary parts in the batch (Chung & Ye 2022); ``real=True``
    a real image without any phase.  The CS-TV image also serves as the fast sampler's warm start.
    """
    from ..operators.mri import (CoilPhaseMRI, SingleCoilMRI, center_crop, mri_operator_from_measurement,
                                 phase_rotated)
    if coils not in ("sense", "ssos", "hybrid"):
        raise UserError(f"unknown multi-coil flavour {coils!r}: use sense, ssos or hybrid")
    if phase not in ("cs-tv", "none"):
        raise UserError(f"unknown phase handling {phase!r}: use cs-tv or none")
    op, kspace = mri_operator_from_measurement(meas, device)
    shape = tuple(kspace.shape[-2:])
    sample_shape = sampling_shape(prior, shape)
    output_shape = meas.geometry.get("output_shape", shape)

    def finish(images: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(center_crop(images, output_shape))

    classical = functools.cache(functools.partial(classical_mri_image, meas, device))
    constrained = not real and phase == "cs-tv"
    if kspace.shape[1] > 1 and coils != "sense":
        maps = op.maps[0]
        rotation = smooth_phase(maps * classical()) if constrained else None
        per_coil = SingleCoilMRI(op.mask) if rotation is None else CoilPhaseMRI(op.mask, rotation)
        # coil images are e^{iφ_c} r_c: the SENSE step combines and splits them with maps e^{-iφ_c} S_c
        sense_maps = maps if rotation is None else maps * rotation.conj()
        sense = SenseData(op, kspace, sense_maps) if coils == "hybrid" else None
        problem = InverseProblem(per_coil.to(device), kspace.transpose(0, 1), sample_shape,
                                 complex_image=not real and rotation is None, sense=sense, grid_shape=shape)
        return problem, finish, lambda: least_squares_image(problem)
    rotation = smooth_phase(classical()) if constrained else None
    if rotation is not None:
        op = phase_rotated(op, rotation)
    problem = InverseProblem(op, kspace, sample_shape, complex_image=not real and rotation is None,
                             grid_shape=shape)

    def warm_start() -> torch.Tensor:
        if rotation is not None:
            image = (classical() * rotation.conj()).real
        else:
            image = classical().abs() if real else classical()
        return problem.pad(image)[None, None]
    return problem, finish, warm_start


def classical_mri_image(meas, device) -> torch.Tensor:
    """The complex CS-TV image (H, W) on the k-space grid, the best classical MRI method in
    ``benchmarks/results/mri_classical.md``."""
    from .classical_mri import cs_tv
    return torch.from_numpy(cs_tv(meas).complex_image).to(torch.complex64).to(device)


def smooth_phase(image: torch.Tensor, sigma: float = PHASE_SMOOTHING) -> torch.Tensor:
    """e^{iφ̂} with φ̂ the phase of ``image`` (…, H, W) after a Gaussian blur of ``sigma`` pixels
    over the last two axes (real and imaginary parts), the low-resolution phase of
    phase-constrained reconstruction (homodyne detection, Noll, Nishimura & Macovski 1991)."""
    from scipy.ndimage import gaussian_filter
    z = image.cpu().numpy()
    sigmas = (0.0,) * (z.ndim - 2) + (sigma, sigma)  # blur each image (coil) on its own
    smoothed = gaussian_filter(z.real, sigmas) + 1j * gaussian_filter(z.imag, sigmas)
    return torch.from_numpy(np.exp(1j * np.angle(smoothed)).astype(np.complex64)).to(image.device)


def least_squares_image(problem: InverseProblem) -> torch.Tensor:
    """A few conjugate-gradient steps on ‖y − A x‖² from zero, in the problem's layout."""
    zero = problem.to_image(torch.zeros(problem.state_shape(1), device=problem.device))
    return cg_consistency(problem, zero, 0.0, WARM_START_INIT_ITERATIONS)


def build_problem(meas, prior, device, **problem_options) -> tuple[InverseProblem, Any, Any]:
    """The :class:`InverseProblem` of a measurement, the function finishing its images, and a
    function returning the fast sampler's warm start (batch 1, in the problem's image layout)."""
    if meas.modality == "ct":
        if problem_options:
            raise UserError(f"option(s) {', '.join(problem_options)} apply to MRI only")
        return ct_problem(meas, prior, device)
    return mri_problem(meas, prior, device, **problem_options)


# ------------------------------------------------------------------------ the methods
def allowed_settings(method: str) -> set[str]:
    """The settings ``method`` takes: its :data:`DEFAULTS`, the settings common to every method
    (K, N, std_scale) and the MRI problem options (coils, real, phase)."""
    return set(DEFAULTS[method]) | set(_COMMON_SETTINGS) | set(_PROBLEM_OPTIONS)


def settings_for(method: str, task: str, options: dict, preset: dict | None = None) -> dict:
    """DEFAULTS < the task's preset of ``method`` (``preset``, else the one in effect) < explicit
    options; unknown options raise UserError."""
    allowed = allowed_settings(method)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to method {method!r}: "
                        f"use {', '.join(sorted(allowed))}")
    if preset is None:
        preset = load_preset(task).get("methods", {}).get(method, {})
    chosen = {**DEFAULTS[method], **{k: v for k, v in preset.items() if k in allowed}}
    chosen.update({k: v for k, v in options.items() if k in allowed and v is not None})
    if method == "chung" and task == "mri-multi":
        chosen.setdefault("coils", "hybrid")
        # recorded, so results (``info``, benchmark row keys) say the hybrid ran in each coil's phase frame
        chosen.setdefault("phase", DEFAULT_PHASE)
    return chosen


def posterior_sample_count(method: str, task: str, samples: int | None = None, preset: dict | None = None) -> int:
    """K, the posterior samples a score-based ``method`` (or its registered alias) draws for
    ``task``: ``samples`` where given, else the task's preset (``preset``, a preset entry, else the
    one in effect), else :data:`DEFAULTS` (1 where neither sets it).  Lets a caller know, before
    any work, whether a std map will be written, and which K a preset's ``std_scale`` was
    calibrated at (``samples`` None)."""
    method = DEFAULT_METHOD if method == DEFAULT_ALIAS else method
    return int(settings_for(method, task, {"samples": samples}, preset).get("samples", 1))


def std_map_scale(method: str, task: str, samples: int, chosen: float | None, given: float | None = None) -> float:
    """The factor on the std map: ``given`` (an explicit option) where set, else the preset's
    calibrated ``chosen``, fitted at the preset's own K and carried to the K that runs
    (:func:`~scorerecon.evaluation.metrics.std_scale_at_samples`), else 1 (no calibration)."""
    if chosen is None:
        return 1.0
    scale = float(chosen)
    if not (np.isfinite(scale) and scale > 0):
        raise UserError(f"std_scale must be positive, got {scale}: the factor on the std map (1 = none)")
    if given is None and samples > 1:
        from ..evaluation.metrics import std_scale_at_samples
        fitted = posterior_sample_count(method, task)
        if fitted < 2:
            raise UserError(f"the {task} preset of {method} has a std_scale but draws {fitted} sample, and a scale is "
                            f"calibrated at K >= 2: scorerecon tune {task} --method {method} --calibrate-std fits one")
        scale = std_scale_at_samples(scale, fitted, samples)
    return scale


def run_method(meas, method: str, *, prior=None, steps: int | None = None, samples: int | None = None,
               seed: int = 0, progress: bool = True, **options) -> MethodOutput:
    """Reconstruct ``meas`` with a score-based ``method``: K = ``samples`` posterior samples in
    one batch, their mean as the image and their standard deviation as the uncertainty map
    (default K: the method's setting, see :data:`DEFAULTS`, else 1)."""
    if method not in METHODS:
        raise UserError(f"unknown score-based method {method!r}: use one of {', '.join(METHODS)}")
    for name, value in (("samples", samples), ("steps", steps)):
        if value is not None and int(value) < 1:
            raise UserError(f"the number of {name} must be positive, got {value}")
    chosen_layout()  # a mistyped SCORERECON_LAYOUT is refused before any work
    task = task_of(meas)
    settings = settings_for(method, task, {**options, "steps": steps, "samples": samples})
    samples = int(settings.pop("samples", 1))
    std_scale = std_map_scale(method, task, samples, settings.pop("std_scale", None), options.get("std_scale"))
    tuned_with = preset_prior_mismatch(method, task, prior, meas.modality)
    prior = resolve_prior(prior, meas.modality)
    problem_options = {k: settings.pop(k) for k in _PROBLEM_OPTIONS if k in settings}
    if problem_options.get("coils") == "hybrid" and method != "chung":
        raise UserError(f"coils=hybrid (a SENSE step every m steps) is Chung & Ye's multi-coil sampler, which "
                        f"{method} does not run: use --method chung, or coils sense or ssos")
    problem, finish, warm_start = build_problem(meas, prior, _device(prior), **problem_options)
    # None: the prior's N; any other value reaches the sampler's own check (a preset's 0 too)
    settings["steps"] = prior.sde.N if settings.get("steps") is None else int(settings["steps"])
    if method in ("song", "chung", "guidance"):
        settings["consistency"] = method
    warm = {"init": warm_start()} if settings.get("start_sigma") else {}
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad(), convolution_layout(prior):
        out = _SAMPLER[method](problem, prior, samples=samples, generator=generator, progress=progress,
                               **settings, **warm)
    images = finish(out.images.cpu().numpy().astype(np.float32))
    info = {"method": method, "task": task, "nfe": out.nfe, "samples": samples, "seed": int(seed),
            **out.info, **problem_options, **({"std_scale": std_scale} if samples > 1 else {}),
            **({"preset_tuned_with": tuned_with} if tuned_with else {})}
    std = (std_scale * images.std(axis=0)).astype(np.float32) if samples > 1 else None
    return MethodOutput(unit_image=images.mean(axis=0).astype(np.float32), std=std, info=info, samples=images)


def _register(name: str, method: str) -> None:
    def fn(meas, **options) -> MethodOutput:
        return run_method(meas, method, **options)
    fn.__name__ = fn.__qualname__ = f"score_{name}"
    fn.__doc__ = f"Score-based reconstruction with the {method!r} sampler (see scorerecon.solvers.score)."
    for modality in ("ct", "mri"):
        register(modality, name)(fn)


for _name in METHODS:
    _register(_name, _name)
_register(DEFAULT_ALIAS, DEFAULT_METHOD)
