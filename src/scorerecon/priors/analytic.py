"""An exact prior for analytic tests: a Gaussian N(m, C) on small images.

Perturbed by a linear SDE with p_0t = N(α x0, β² I) the marginal stays Gaussian,

    p_t = N(α m, α² C + β² I),   ∇ log p_t(x) = −(α² C + β² I)^{-1} (x − α m),

which :class:`GaussianPrior` evaluates exactly through the eigendecomposition C = U diag(λ) Uᵀ.
For a linear measurement y = A x + n, n ~ N(0, s² I), the posterior is Gaussian too
(:meth:`GaussianPrior.posterior`, the Kalman / Gauss–Markov update), so a posterior sampler can
be checked against exact moments.  Images are flattened in row-major (C, H, W) order.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .prior import per_sample_time
from .sde import SDE, _bcast


class GaussianPrior(nn.Module):
    """Exact score of N(mean, cov) perturbed by ``sde``; same interface as ScorePrior."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, sde: SDE, image_shape=None):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        dim = mean.numel()
        if cov.shape != (dim, dim) or not torch.allclose(cov, cov.T):
            raise UserError(f"covariance must be a symmetric {dim}x{dim} matrix, got shape {tuple(cov.shape)}")
        eigval, eigvec = torch.linalg.eigh(cov)
        if eigval.min() < -1e-10 * max(float(eigval.max()), 1.0):
            raise UserError("covariance is not positive semi-definite: use a valid covariance matrix")
        self.image_shape = tuple(image_shape) if image_shape is not None else (1, 1, dim)
        if torch.Size(self.image_shape).numel() != dim:
            raise UserError(f"image_shape {self.image_shape} does not hold {dim} values")
        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)
        self.register_buffer("eigval", eigval.clamp(min=0.0))
        self.register_buffer("eigvec", eigvec)
        self.sde = sde
        self.metadata = {"kind": "gaussian", "channels": self.image_shape[0]}

    def check_image_size(self, height: int, width: int) -> None:
        if (height, width) != self.image_shape[1:]:
            raise UserError(f"this Gaussian prior models {self.image_shape[1]}x{self.image_shape[2]} images, "
                            f"not {height}x{width}")

    def score(self, x: torch.Tensor, t) -> torch.Tensor:
        """−(α² C + β² I)^{-1} (x − α m), exactly (float64 internally)."""
        self.check_image_size(x.shape[-2], x.shape[-1])
        t = per_sample_time(t, x).to(torch.float64)
        a, b = self.sde.alpha(t)[:, None], self.sde.beta(t)[:, None]
        centred = x.reshape(x.shape[0], -1).to(torch.float64) - a * self.mean
        inv_eig = 1.0 / (a ** 2 * self.eigval + b ** 2)
        score = -((centred @ self.eigvec) * inv_eig) @ self.eigvec.T
        return score.to(x.dtype).reshape(x.shape)

    def denoise(self, x: torch.Tensor, t) -> torch.Tensor:
        """Tweedie E[x0 | x_t] = (x + β² score) / α."""
        t = per_sample_time(t, x)
        a, b = self.sde.alpha(t), self.sde.beta(t)
        return (x + _bcast(b ** 2, x) * self.score(x, t)) / _bcast(a, x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n exact samples of N(mean, cov) as images (n, C, H, W), float32: x = m + C^{1/2} z.

        C^{1/2} = U diag(√λ) Uᵀ is the unique symmetric square root, so the samples depend only on
        C and the generator.  U diag(√λ) z alone would not: LAPACK may return any sign of each
        eigenvector, or any basis of a repeated eigenvalue's space, and does differ between CPUs.
        """
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        root = (self.eigvec * self.eigval.sqrt()) @ self.eigvec.T
        x = self.mean + z @ root
        return x.to(torch.float32).reshape((n,) + self.image_shape)

    def posterior(self, A: torch.Tensor, y: torch.Tensor, noise_std: float = 0.0):
        """Exact posterior mean and covariance of x given y = A x + N(0, s² I) (Kalman update).

        K = C Aᵀ (A C Aᵀ + s² I)^{-1},  mean = m + K (y − A m),  cov = C − K A C.
        ``A`` is (M, D) on flattened images; ``y`` is (M,).  Returns flattened (D,), (D, D).
        """
        A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        gram = A @ self.cov @ A.T + noise_std ** 2 * torch.eye(A.shape[0], dtype=torch.float64)
        gain = torch.linalg.solve(gram, A @ self.cov).T
        mean = self.mean + gain @ (y - A @ self.mean)
        cov = self.cov - gain @ A @ self.cov
        return mean, 0.5 * (cov + cov.T)
