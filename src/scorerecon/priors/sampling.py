"""Unconditional sampling of a prior by reversing its SDE (Song et al. 2021, section 4).

Time runs down the grid t_i = T − i (T − eps)/N, i = 0 … N (:func:`time_grid`), from
x ~ p_T (``sde.prior_sampling``) to t = eps, then Tweedie's denoiser gives the final image.

Step functions (each returns ``(x, x_mean)``, the new state and its noise-free part, as in the
score_sde code), reusable by conditional samplers that interleave data-consistency steps::

    x = prior.sde.prior_sampling(shape, generator)
    for t, dt in step_times(prior.sde, N):
        x = consistency(x, t)                                  # e.g. Song 2022 eq. 8
        x, _ = langevin_corrector(prior, x, t, snr, generator)
        x = consistency(x, t)
        x, _ = reverse_diffusion_predictor(prior, x, t, dt, generator)
    x0 = prior.denoise(x, prior.sde.eps)

* :func:`reverse_diffusion_predictor` — x_s = x_t − f_i(x_t) + G_i² s(x_t, t) + G_i z with the
  discrete forward step (f_i, G_i) of ``sde.discretize`` (Song 2021, eq. 46);
* :func:`euler_maruyama_predictor` — x ← x − [f − g² s] dt + g √dt z (reverse SDE, eq. 6);
* :func:`langevin_corrector` — x ← x + ε s + √(2ε) z with ε = 2 a (snr ‖z‖ / ‖s‖)²,
  a = α(t)²/α(t−1/N)² (1 for VE) (Song 2021, Algorithm 4).  As in the score_sde code the norms
  are batch means of per-sample norms: with per-sample norms, low-dimensional (or nearly
  noise-free) samples get heavy-tailed step sizes, and the stationary variance is inflated;
* :func:`ode_euler_step`, :func:`ode_heun_step` — probability-flow ODE dx/dt = f − ½ g² s (eq. 13).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UserError
from .prior import convolution_layout
from .sde import SDE, _bcast

SAMPLERS = ("pc", "em", "ode")


def time_grid(sde: SDE, steps: int) -> torch.Tensor:
    """t_0 = T > t_1 > … > t_N = eps (N + 1 points)."""
    return torch.linspace(sde.T, sde.eps, steps + 1)


def step_times(sde: SDE, n: int):
    """Yield (t_i, dt_i) of the N steps of :func:`time_grid` (dt_i = t_i − t_{i+1} > 0)."""
    grid = time_grid(sde, n)
    for i in range(n):
        yield float(grid[i]), float(grid[i] - grid[i + 1])


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def _mean_norm(v: torch.Tensor) -> torch.Tensor:
    """Batch mean of the per-sample norms (score_sde's LangevinCorrector)."""
    return v.reshape(v.shape[0], -1).norm(dim=-1).mean()


def reverse_diffusion_predictor(prior, x, t: float, dt: float, generator=None):
    """Reverse-diffusion predictor from t to t − dt (Song 2021, eq. 46)."""
    f, g = prior.sde.discretize(x, t, dt)
    x_mean = x - f + _bcast(g ** 2, x) * prior.score(x, t)
    return x_mean + _bcast(g, x) * _noise(x, generator), x_mean


def euler_maruyama_predictor(prior, x, t: float, dt: float, generator=None):
    """Euler–Maruyama step of the reverse SDE dx = [f − g² s] dt + g dw̄ from t to t − dt."""
    drift, g = prior.sde.sde(x, t)
    x_mean = x - (drift - _bcast(g ** 2, x) * prior.score(x, t)) * dt
    return x_mean + _bcast(g, x) * math.sqrt(dt) * _noise(x, generator), x_mean


def langevin_corrector(prior, x, t: float, snr: float, generator=None):
    """One Langevin step at fixed t with step 2 a (snr ‖z‖/‖s‖)² (Song 2021, Algorithm 4)."""
    score = prior.score(x, t)
    z = _noise(x, generator)
    a, _ = prior.sde.transition(t, prior.sde.default_dt())
    step = 2.0 * a ** 2 * (snr * _mean_norm(z) / _mean_norm(score).clamp(min=1e-12)) ** 2
    x_mean = x + step * score
    return x_mean + math.sqrt(2.0 * float(step)) * z, x_mean


def ode_drift(prior, x, t: float) -> torch.Tensor:
    """Probability-flow ODE velocity f(x, t) − ½ g(t)² s(x, t)."""
    drift, g = prior.sde.sde(x, t)
    return drift - 0.5 * _bcast(g ** 2, x) * prior.score(x, t)


def ode_euler_step(prior, x, t: float, dt: float, generator=None):
    """Euler step of the probability-flow ODE from t to t − dt (deterministic)."""
    x = x - dt * ode_drift(prior, x, t)
    return x, x


def ode_heun_step(prior, x, t: float, dt: float, generator=None):
    """Heun (trapezoidal) step of the probability-flow ODE from t to t − dt."""
    d1 = ode_drift(prior, x, t)
    d2 = ode_drift(prior, x - dt * d1, t - dt)
    x = x - 0.5 * dt * (d1 + d2)
    return x, x


#: the Langevin corrector's signal-to-noise ratio of Song et al.'s unconditional samples
DEFAULT_SNR = 0.16


@torch.no_grad()
def sample(prior, n: int, size: tuple[int, int], sampler: str = "pc", steps: int | None = None,
           snr: float = DEFAULT_SNR, seed: int = 0, corrector_steps: int = 1, heun: bool = True,
           progress: bool = False, device=None) -> torch.Tensor:
    """n unconditional samples (n, C, H, W) in the unit domain, ending with Tweedie's denoiser.

    ``sampler``: 'pc' (reverse diffusion + ``corrector_steps`` Langevin steps with ``snr``),
    'em' (Euler–Maruyama) or 'ode' (probability flow, Heun or Euler); ``steps`` defaults to N.
    """
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
    prior.check_image_size(*size)
    sde, generator = prior.sde, torch.Generator().manual_seed(seed)
    n_steps = steps or sde.N
    channels = int(prior.metadata.get("channels", 1))
    device = device or next(prior.buffers()).device
    x = sde.prior_sampling((n, channels) + tuple(size), generator).to(device)
    predictor = {"pc": reverse_diffusion_predictor, "em": euler_maruyama_predictor,
                 "ode": ode_heun_step if heun else ode_euler_step}[sampler]
    with convolution_layout(prior):
        for t, dt in _progress(step_times(sde, n_steps), n_steps, progress):
            for _ in range(corrector_steps if sampler == "pc" else 0):
                x, _ = langevin_corrector(prior, x, t, snr, generator)
            x, _ = predictor(prior, x, t, dt, generator)
        return prior.denoise(x, sde.eps).contiguous()


def _progress(iterable, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, unit="step", dynamic_ncols=True)


def image_grid(images: torch.Tensor) -> np.ndarray:
    """Tile (N, 1, H, W) images, clipped to [0, 1], into a near-square uint8 grid."""
    images = images[:, 0].clamp(0, 1).cpu().numpy()
    n, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w), dtype=np.float32)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = img
    return np.round(grid * 255).astype(np.uint8)


def check_samples_output(output: str) -> None:
    """:func:`write_samples` can write ``output``: a .png or .npy file in a writable folder."""
    from ..atomic import check_output_file
    if not output.endswith((".npy", ".png")):
        raise UserError(f"output {output} must end in .png (grid) or .npy (array)")
    check_output_file(output)


def write_samples(images: torch.Tensor, output: str) -> None:
    """Write samples atomically: ``.npy`` (N, H, W) float32 ((N, C, H, W) for a prior of C > 1
    channels) or ``.png`` grid (of the first channel)."""
    from ..atomic import atomic_path
    check_samples_output(output)
    if output.endswith(".npy"):
        array = images.cpu().numpy().astype(np.float32)
        with atomic_path(output, suffix=".npy") as tmp:
            np.save(tmp, array[:, 0] if array.shape[1] == 1 else array)
    else:
        from PIL import Image
        with atomic_path(output, suffix=".png") as tmp:
            Image.fromarray(image_grid(images)).save(tmp, format="PNG")
