"""scorerecon: medical image reconstruction with score-based generative priors.

Data flows one way: images -> measurements -> solver -> image + uncertainty -> report.
See DESIGN in the repository for the map of the code.
"""

__version__ = "0.1.0"
