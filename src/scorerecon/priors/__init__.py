"""Score-based priors: SDEs, the score network, training, sampling and shipped weights.

Public entry points: :func:`load_prior` (a shipped name or a file), :class:`ScorePrior`,
:class:`NoiseLevelExperts` (two priors split by noise level; the shipped defaults),
:class:`GaussianPrior` (exact, for tests), the SDEs and :func:`sample`.
"""

from .analytic import GaussianPrior
from .experts import NoiseLevelExperts
from .prior import ScorePrior
from .registry import load_prior
from .sampling import sample
from .sde import SDE, SubVPSDE, VESDE, VPSDE, sde_from_dict

__all__ = ["GaussianPrior", "NoiseLevelExperts", "ScorePrior", "load_prior", "sample", "SDE", "VESDE", "VPSDE", "SubVPSDE",
           "sde_from_dict"]
