"""Conditional samplers: draw K posterior samples of x given y = A x + n in ONE batch.

Every sampler sees an :class:`~scorerecon.solvers.conditioning.InverseProblem` and a prior
(``sde``, ``score``, ``denoise``), never a modality.  Time runs on the grid
t_i = T − i (T − ε)/N, i = 0 … N (N = ``steps``); the SDE gives α(t), β(t) with
p_0t = N(α x₀, β² I).

* :func:`pc_sampler` — predictor–corrector (reverse-diffusion predictor + Langevin corrector with
  signal-to-noise ratio ``snr``; Song et al. 2021, Algorithms 2-4) with a
  data-consistency rule:
  - :class:`SongConsistency` — Song et al. 2022, Algorithm 2: the proximal step (eq. 8) with a
    fresh ŷ_t = α y + β A z before EACH corrector and EACH predictor update;
  - :class:`ChungConsistency` — Chung & Ye 2022: hard projection on the measured data AFTER each
    predictor and corrector update, plus (hybrid multi-coil) a SENSE step every m steps;
  - :class:`GuidedPrior` — score-SDE gradient guidance: the unconditional score plus the
    approximate likelihood gradient of :func:`annealed_langevin`.
  It ends with Tweedie's denoiser at t = ε and, but for guidance, the hard projection
  (:meth:`InverseProblem.project`).
* :func:`annealed_langevin` — Jalal et al. 2021: annealed Langevin dynamics on
  s(x, t) + ∇ log p(y | x_t), ∇ log p(y | x_t) ≈ A^H (y − A x_t/α) / (α (γ² + L β²/α²)).
* :func:`dps_sampler` — Chung et al. 2023 (DPS), Algorithm 1: reverse diffusion, then
  x ← x − ζ_i ∇_{x_t} ‖y − A x̂₀(x_t)‖² with ζ_i = ζ / (‖y − A x̂₀‖ √L), through the network.
* :func:`fast_sampler` — DDS (Chung, Lee & Ye 2024): Tweedie estimate, CG on the data term,
  DDIM re-noising with η, optionally DPS's gradient step (ζ); one network evaluation per step
  (≤ 50 by default).

L = ‖A^H A‖ (power iteration) makes the step sizes independent of the operator's scale
(L = 1 for the orthonormal MRI Fourier operators, ≈ views × image size for CT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..checks import finite_number
from ..errors import UserError
from ..priors.sampling import langevin_corrector, reverse_diffusion_predictor, time_grid
from ..priors.sde import SDE
from .conditioning import (PROJECTION_ITERATIONS, InverseProblem, cg_consistency, hard_consistency,
                           likelihood_gradient, noisy_measurement, randn, sense_schedule, sense_step,
                           song_consistency)
from .optim import power_iteration

Tensor = torch.Tensor


@dataclass
class SamplerOutput:
    """``images``: (samples, H, W) real unit-domain posterior samples (magnitude / coil
    combination for complex data); ``raw``: the final images (samples · groups, 1, H, W) as the
    operator sees them (complex for complex data); ``nfe``: network evaluations."""

    images: Tensor
    raw: Tensor
    nfe: int
    info: dict = field(default_factory=dict)


class CountingPrior:
    """Counts network evaluations (one per batched ``score`` or ``denoise`` call)."""

    def __init__(self, prior):
        self.prior, self.sde, self.nfe = prior, prior.sde, 0

    def score(self, x: Tensor, t) -> Tensor:
        self.nfe += 1
        return self.prior.score(x, t)

    def denoise(self, x: Tensor, t) -> Tensor:
        self.nfe += 1
        return self.prior.denoise(x, t)


# ------------------------------------------------------------------------ shared pieces
def _check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise UserError(f"the number of steps must be positive, got {steps}")
    return int(steps)


def operator_norm(problem: InverseProblem, generator: torch.Generator | None) -> float:
    """L = ‖A^H A‖ by power iteration (the scale of the data term)."""
    dtype = torch.complex64 if problem.complex_image else torch.float32
    shape = (problem.groups, 1, *problem.image_shape)
    return power_iteration(problem.normal, shape, iterations=30, generator=generator, dtype=dtype,
                           device=problem.device)


class _FixedScore:
    """A prior whose score is a given tensor: lets the shared predictor use DPS's score."""

    def __init__(self, sde: SDE, score: Tensor):
        self.sde, self._score = sde, score

    def score(self, x: Tensor, t) -> Tensor:
        return self._score


def combine(problem: InverseProblem, image: Tensor, samples: int) -> Tensor:
    """Images (samples · groups, 1, H, W) → (samples, h, w) real on the operator's grid: real
    part, magnitude, SENSE combination (hybrid) or root-sum-of-squares over the groups (SSOS)."""
    image = problem.crop(image)
    if problem.sense is not None:
        return problem.sense.combine(image).abs()[:, 0]
    if problem.groups > 1:
        coils = image.reshape(samples, problem.groups, *problem.grid_shape)
        return torch.sqrt((coils.abs() ** 2).sum(1))
    return (image.abs() if image.is_complex() else image)[:, 0]


def _finish(problem: InverseProblem, prior: CountingPrior, state: Tensor, samples: int,
            project: bool, info: dict) -> SamplerOutput:
    """Tweedie's denoiser at t = ε, then (``project``) the hard projection on the data."""
    image = problem.to_image(prior.denoise(state, prior.sde.eps))
    if project:
        image = problem.project(image)
    return _output(problem, image, samples, prior.nfe, info)


def _output(problem, image, samples, nfe, info) -> SamplerOutput:
    image = image.detach()
    images = combine(problem, image, samples)
    if not bool(torch.isfinite(images).all()):
        raise UserError("the sampler produced NaN/Inf: the prior file may be corrupted or the settings "
                        "(step size, λ, snr) unstable; re-export the prior or use the task's preset")
    return SamplerOutput(images=images, raw=image, nfe=nfe, info=info)


def _progress(iterable, enabled: bool, label: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=label, unit="step", leave=False, disable=None)


def _start(problem: InverseProblem, prior, samples: int, generator) -> Tensor:
    return prior.sde.prior_sampling(problem.state_shape(samples), generator=generator).to(problem.device)


# ------------------------------------------------------------- data-consistency rules
class SongConsistency:
    """Song et al. 2022: proximal step with a fresh ŷ_t before every update (λ trades data vs prior)."""

    def __init__(self, problem: InverseProblem, lam: float, generator: torch.Generator | None):
        if not 0.0 <= lam <= 1.0:
            raise UserError(f"λ must lie in [0, 1], got {lam}")
        self.problem, self.lam, self.generator = problem, lam, generator

    def before(self, sde: SDE, x: Tensor, t: float, step: int) -> Tensor:
        samples = x.shape[0] // (self.problem.parts * self.problem.groups)
        y_hat = noisy_measurement(self.problem, sde.alpha(t), sde.beta(t), samples, self.generator)
        return song_consistency(self.problem, x, y_hat, self.lam)

    def after(self, sde: SDE, x: Tensor, t: float, step: int) -> Tensor:
        return x


class ChungConsistency:
    """Chung & Ye 2022: hard projection after every update; with SENSE data (hybrid flavour) a
    SENSE step every ``every`` steps with λ from 1.0 down to 0.2 over the N steps.  The SENSE
    step follows each update of such a step, the corrector's and the predictor's (their code
    takes one per step; the stored 8-coil rows were measured with this one)."""

    def __init__(self, problem: InverseProblem, steps: int, every: int = 0):
        self.problem, self.steps, self.every = problem, steps, every

    def before(self, sde, x, t, step):
        return x

    def after(self, sde, x, t, step):
        x = hard_consistency(self.problem, x)
        if self.every and self.problem.sense is not None and step % self.every == 0:
            x = sense_step(self.problem, x, sense_schedule(step, self.steps))
        return x


class NoConsistency:
    """No step between updates (score-SDE guidance puts the data in the score)."""

    def before(self, sde, x, t, step):
        return x

    after = before


def likelihood_score(problem: InverseProblem, sde: SDE, state: Tensor, t: float, gamma: float,
                     norm: float) -> Tensor:
    """∇_{x_t} log p(y | x_t) ≈ ∇ log N(y; A x̂, γ² I + s² A A^H), x̂ = x_t/α, s = β/α (Jalal et al. 2021).

    x̂ estimates x₀ with error variance s² per pixel, which A maps to covariance s² A A^H; γ² is
    the measurement noise variance (a tuning parameter in Jalal et al.).  Where A A^H = L Λ
    (``gram_is_scaled_mask``: single-coil and coil-by-coil MRI on complex images) the gradient is
    A^H (y − A x̂) / (α v) with one variance v = γ² + L s², exact.  Elsewhere the Gram operator G
    has eigenvalues between 0 and L (SENSE; Re(A^H A) on real images, such as the phase frame of
    :func:`~scorerecon.solvers.score.mri_problem`) or spread over decades (CT), and one v would
    shrink the step along an eigenvalue μ by μ / L; there the gradient is
    (1/α) (γ² I + s² G)⁻¹ A^H (y − A x̂) (push-through identity) = (x* − x̂) / (α s²), with
    x* = argmin ½‖y − A x‖² + ½ (γ/s)² ‖x − x̂‖² by :data:`PROJECTION_ITERATIONS` CG steps from x̂
    (:func:`cg_consistency`).  On a scaled mask that CG solve ends in one step on the same answer
    (its first residual A^H (y − A x̂) lies in one eigenspace), so the one-variance form is a
    shortcut, not a different model.
    """
    a, b = sde.alpha(t), sde.beta(t)
    image = problem.to_image(state) / a
    if not (problem.operator.gram_is_scaled_mask and problem.complex_image):
        s2 = float(b / a) ** 2
        fitted = cg_consistency(problem, image, gamma ** 2 / s2, PROJECTION_ITERATIONS)
        return problem.to_state((fitted - image) / (a * s2))
    variance = gamma ** 2 + norm * (b / a) ** 2
    return problem.to_state(likelihood_gradient(problem, image, variance) / a)


class GuidedPrior:
    """The prior's score plus :func:`likelihood_score`: the posterior score used by annealed
    Langevin (Jalal et al. 2021) and score-SDE gradient guidance (Song et al. 2021, App. I, controllable generation)."""

    def __init__(self, prior, problem: InverseProblem, gamma: float, norm: float):
        self.prior, self.sde, self.problem = prior, prior.sde, problem
        self.gamma, self.norm = gamma, norm

    def score(self, x: Tensor, t) -> Tensor:
        t0 = float(t.reshape(-1)[0]) if isinstance(t, Tensor) else float(t)
        return self.prior.score(x, t) + likelihood_score(self.problem, self.sde, x, t0, self.gamma, self.norm)


# ---------------------------------------------------------------------------- samplers
def pc_sampler(problem: InverseProblem, prior, *, steps: int, samples: int = 1,
               generator: torch.Generator | None = None, consistency: str = "song", lam: float = 1.0,
               snr: float = 0.16, corrector_steps: int = 1, sense_every: int = 0, gamma: float = 0.0,
               progress: bool = False) -> SamplerOutput:
    """Predictor–corrector posterior sampling (Song et al. 2022, Algorithm 2; Chung & Ye 2022).

    ``consistency``: "song" (proximal step with λ before each update), "chung" (hard projection
    after each update; ``sense_every`` = m for the hybrid multi-coil SENSE step) or "guidance"
    (the likelihood gradient, variance floor γ², added to the score; no projection).
    ``corrector_steps`` = 0 turns the Langevin corrector off.
    """
    steps = _check_steps(steps)
    counted = CountingPrior(prior)
    model, rule = counted, NoConsistency()
    if consistency == "song":
        rule = SongConsistency(problem, lam, generator)
    elif consistency == "chung":
        rule = ChungConsistency(problem, steps, sense_every)
    elif consistency == "guidance":
        model = GuidedPrior(counted, problem, gamma, operator_norm(problem, generator))
    else:
        raise UserError(f"unknown consistency {consistency!r}: use song, chung or guidance")
    sde, grid = prior.sde, time_grid(prior.sde, steps)
    x = _start(problem, prior, samples, generator)
    for i in _progress(range(steps), progress, consistency):
        t, dt = float(grid[i]), float(grid[i] - grid[i + 1])
        for _ in range(corrector_steps):
            x = rule.before(sde, x, t, i)
            x, _ = langevin_corrector(model, x, t, snr, generator)
            x = rule.after(sde, x, t, i)
        x = rule.before(sde, x, t, i)
        x, _ = reverse_diffusion_predictor(model, x, t, dt, generator)
        x = rule.after(sde, x, t, i)
    info = {"steps": steps, "snr": snr, "corrector_steps": corrector_steps}
    info.update({"lam": lam} if consistency == "song" else {})
    return _finish(problem, counted, x, samples, consistency != "guidance", info)


def annealed_langevin(problem: InverseProblem, prior, *, steps: int, samples: int = 1,
                      generator: torch.Generator | None = None, step_size: float = 0.05,
                      inner_steps: int = 3, gamma: float = 0.0, progress: bool = False) -> SamplerOutput:
    """Jalal et al. 2021: annealed Langevin dynamics on the posterior score.

    At each of the N noise levels t_i, ``inner_steps`` updates
    x ← x + η (s(x, t) + ∇ log p(y | x_t)) + √(2η) z with η = ``step_size`` · β(t)²
    (Jalal's η_i = ε σ_i²/σ_L² for VE, so ``step_size`` = ε/σ_L²; β² bounds the curvature of
    both terms for VE and VP); then Tweedie's denoiser at ε.
    ``gamma`` floors the likelihood variance (their γ, the assumed measurement noise).
    """
    steps = _check_steps(steps)
    counted = CountingPrior(prior)
    guided = GuidedPrior(counted, problem, gamma, operator_norm(problem, generator))
    x = _start(problem, prior, samples, generator)
    for t in _progress(time_grid(prior.sde, steps)[:-1].tolist(), progress, "langevin"):
        eta = step_size * float(prior.sde.beta(t)) ** 2
        for _ in range(inner_steps):
            x = x + eta * guided.score(x, t) + math.sqrt(2.0 * eta) * randn(x.shape, generator, x.device)
    info = {"steps": steps, "inner_steps": inner_steps, "step_size": step_size, "gamma": gamma}
    return _finish(problem, counted, x, samples, False, info)


def dps_sampler(problem: InverseProblem, prior, *, steps: int, samples: int = 1,
                generator: torch.Generator | None = None, zeta: float = 1.0,
                progress: bool = False) -> SamplerOutput:
    """Diffusion posterior sampling (Chung et al. 2023, Algorithm 1, generic SDE form).

    Per step: x̂₀ = Tweedie(x_t) with autograd on; s = (α x̂₀ − x_t)/β²; reverse diffusion with s;
    then x ← x − ζ_i ∇_{x_t} ‖y − A x̂₀‖², ζ_i = ζ / (‖y − A x̂₀‖ √L) per image.  Noisy data are
    fitted only as far as the prior allows (no projection); Tweedie's denoiser at ε ends the run.
    """
    steps = _check_steps(steps)
    counted = CountingPrior(prior)
    scaled = _guidance_scale(zeta, operator_norm(problem, generator))
    grid = time_grid(prior.sde, steps)
    x = _start(problem, prior, samples, generator)
    for i in _progress(range(steps), progress, "dps"):
        x = _dps_step(problem, counted, x, float(grid[i]), float(grid[i] - grid[i + 1]), scaled, generator)
    return _finish(problem, counted, x, samples, False, {"steps": steps, "zeta": zeta})


def _dps_step(problem: InverseProblem, prior, x: Tensor, t: float, dt: float, zeta: float,
              generator) -> Tensor:
    x0, guidance = _denoise_with_guidance(problem, prior, x, t, zeta)
    a, b = prior.sde.alpha(t), prior.sde.beta(t)
    score = (a * x0 - x) / b ** 2
    x_next, _ = reverse_diffusion_predictor(_FixedScore(prior.sde, score), x, t, dt, generator)
    return x_next - guidance


def _guidance_scale(zeta: float, norm: float) -> float:
    """ζ / √L: DPS's step size independent of the operator's scale L = ‖A^H A‖."""
    return zeta / math.sqrt(max(norm, 1e-12))


def _denoise_with_guidance(problem: InverseProblem, prior, x: Tensor, t: float,
                           zeta: float) -> tuple[Tensor, Tensor]:
    """Tweedie's x̂₀(x_t) and DPS's step ζ_i ∇_{x_t} ‖y − A x̂₀(x_t)‖² with ζ_i = ζ / ‖y − A x̂₀‖
    per image (Chung et al. 2023, Algorithm 1; ``zeta`` from :func:`_guidance_scale`), through the
    network by autograd."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = prior.denoise(x, t)
        residual = problem.residual_norm(problem.to_image(x0))
        grad, = torch.autograd.grad((residual ** 2).sum(), x)
    weight = (zeta / residual.detach().clamp_min(1e-12)).reshape(-1, 1, 1, 1)
    return x0.detach(), problem.to_state(_like_image(problem, weight)) * grad


def _like_image(problem: InverseProblem, weight: Tensor) -> Tensor:
    """A per-image weight (B, 1, 1, 1) in the image layout, so to_state puts it on both parts."""
    return torch.complex(weight, weight) if problem.complex_image else weight


def fast_sampler(problem: InverseProblem, prior, *, steps: int = 50, samples: int = 1,
                 generator: torch.Generator | None = None, cg_iterations: int = 5, gamma: float = 0.0,
                 eta: float = 0.15, zeta: float = 0.0, start_sigma: float | None = None,
                 init: Tensor | None = None, progress: bool = False) -> SamplerOutput:
    """DDS-style sampler (Chung, Lee & Ye 2024, Algorithm 1), one network evaluation per step.

    On the N times t_0 > … > t_{N−1} = ε, for t = t_i, s = t_{i+1}:
    x̂₀ = Tweedie(x_t);  x̂₀' = CG_M(x̂₀) on ½‖y − A x‖² + ½ γL ‖x − x̂₀‖²;
    ε̂ = (x_t − α_t x̂₀)/β_t;  x_s = α_s x̂₀' + √(β_s² − c²) ε̂ + c z with the DDIM noise
    c = min(η β_s √(1 − (α_t β_s / (α_s β_t))²), β_s).  The last step returns x̂₀'.
    η = 1 is DDPM's posterior noise; η > 1 adds more, up to c = β_s, where the step forgets ε̂
    and re-noises x̂₀' afresh.

    ``zeta`` > 0 adds DPS's correction (Chung et al. 2023) to each re-noised state,
    x_s ← x_s − ζ_i ∇_{x_t} ‖y − A x̂₀(x_t)‖² with ζ_i = ζ / (‖y − A x̂₀‖ √L): CG fits the data in
    the estimate, the gradient through the network moves the state so that the NEXT estimate
    fits them too (one backward pass per step, no extra network evaluation).

    Cold start: t_0 = T, x from the SDE's prior.  Warm start ("come closer, diffuse faster",
    Chung, Sim & Ye 2022): ``init`` (one sample's image in the problem's layout, e.g. a classical
    reconstruction) diffused to the noise level ``start_sigma``, x = α(t_0) init + β(t_0) z with
    β(t_0)/α(t_0) = ``start_sigma``; the prior then only removes what that noise hides.
    """
    steps = _check_steps(steps)
    for name, value in (("start_sigma", start_sigma or 0.0), ("gamma", gamma), ("eta", eta), ("zeta", zeta),
                        ("cg_iterations", cg_iterations)):
        finite_number(f"the fast sampler's {name}", value, minimum=0)
    counted = CountingPrior(prior)
    norm = operator_norm(problem, generator) if gamma or zeta else 0.0
    damping, scaled = gamma * norm, _guidance_scale(zeta, norm)
    sde = prior.sde
    if start_sigma:
        if init is None:
            raise UserError("a warm start (start_sigma) needs an initial image")
        t0 = sde.time_of_noise(start_sigma)
        # init holds one image per group (coil): every sample starts from all of them
        start = problem.to_state(init.to(problem.device).repeat(samples, 1, 1, 1))
        x = float(sde.alpha(t0)) * start + float(sde.beta(t0)) * randn(start.shape, generator, start.device)
    else:
        t0 = sde.T
        x = _start(problem, prior, samples, generator)
    grid = torch.linspace(t0, sde.eps, steps).tolist()
    for i in _progress(range(steps), progress, "fast"):
        if zeta and i < steps - 1:  # the last step re-noises nothing: no gradient needed
            x0, guidance = _denoise_with_guidance(problem, counted, x, grid[i], scaled)
        else:
            x0, guidance = counted.denoise(x, grid[i]), 0.0
        image = cg_consistency(problem, problem.to_image(x0), damping, cg_iterations)
        if i < steps - 1:
            x = _ddim(sde, x, x0, problem.to_state(image), grid[i], grid[i + 1], eta, generator) - guidance
    info = {"steps": steps, "cg_iterations": cg_iterations, "gamma": gamma, "eta": eta, "zeta": zeta,
            "start_sigma": start_sigma or 0.0}
    return _output(problem, image, samples, counted.nfe, info)


def _ddim(sde: SDE, x: Tensor, x0: Tensor, x0_fixed: Tensor, t: float, s: float, eta: float,
          generator) -> Tensor:
    """Generalised DDIM step from t to s < t (Song, Meng & Ermon 2021, eq. 12, any α, β); the
    noise c grows with ``eta`` up to β_s, the whole of the noise at s (η > 1 reaches it sooner)."""
    a_t, b_t, a_s, b_s = (float(v) for v in (sde.alpha(t), sde.beta(t), sde.alpha(s), sde.beta(s)))
    eps_hat = (x - a_t * x0) / b_t
    c = min(eta * b_s * math.sqrt(max(1.0 - (a_t * b_s / (a_s * b_t)) ** 2, 0.0)), b_s)
    return a_s * x0_fixed + math.sqrt(b_s ** 2 - c ** 2) * eps_hat + c * randn(x.shape, generator, x.device)
