"""How to sample the posterior, and the classical baselines behind the same call.

``reconstruct(measurement, method, **options)`` looks the method up in the registry of
:mod:`scorerecon.solvers.registry`; modules register their methods on import.
"""

from .registry import Reconstruction, available_methods, reconstruct, register, write_reconstruction

__all__ = ["Reconstruction", "available_methods", "reconstruct", "register", "write_reconstruction"]
