"""Figures: a row of panels (measurement, baselines, ours, truth, error, std) saved atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path


def save_panels(path: Path, panels: list[tuple[str, np.ndarray, dict]], title: str | None = None) -> Path:
    """Save ``panels`` = [(caption, image, imshow kwargs), ...] side by side as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4), squeeze=False)
    for ax, (caption, image, style) in zip(axes[0], panels):
        ax.imshow(image, cmap=style.pop("cmap", "gray"), **style)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
