"""How much of each brain-mri validation slice the prior saw in training (session 57).

brain-mri cuts axial, coronal and sagittal slices every 2 mm out of the Colin27 templates and
holds out every tenth slice of each template's list as validation (``_split_every``).  A held-out
axial slice at z = k still crosses every training coronal and sagittal slice: its row j is a line
of coronal slice j, its column i a line of sagittal slice i.  Its voxel (j, i) was in training
when either of those slices was, so the share of its grid seen in training is
1 − (1 − r)(1 − c), r and c the shares of its rows and columns that lie in training slices
(likewise for coronal and sagittal slices).  Counted on the template's voxel grid before fitting,
from the provenance in ``meta.json`` alone.  Both templates are also the same brain (ch2 at 1 mm,
ch2better at 0.5 mm), so a validation slice of one has training slices of the other within 1 mm.

This is why settings chosen on these validation slices need not carry over to the MNI152
evaluation slices (docs/results.md, "What the brain-mri validation slices share with training").

    python benchmarks/validation_overlap.py   # -> benchmarks/results/validation_overlap.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from score_methods import RESULTS, rerun_command, write_result
from scorerecon.data.datasets import load_meta
from scorerecon.solvers.tuning import validation_picks

#: the axes of the (z, y, x) template that a slice of each plane keeps, and the plane crossing each
CROSSING = {"axial": (("coronal", 1), ("sagittal", 2)),
            "coronal": (("axial", 0), ("sagittal", 2)),
            "sagittal": (("axial", 0), ("coronal", 1))}


def seen_share(plane: str, shape: tuple[int, ...], training: set[tuple[str, int]]) -> float:
    """The share of a ``plane`` slice's voxels that lie in a training slice of another plane."""
    rows, cols = ([index in {k for p, k in training if p == other} for index in range(shape[axis])]
                  for other, axis in CROSSING[plane])
    return 1.0 - (1.0 - float(np.mean(rows))) * (1.0 - float(np.mean(cols)))


def table(meta: dict, picks: list[int]) -> str:
    """Per template and plane: validation slices, and the share of their grid seen in training."""
    shapes = {Path(t["file"]).name: tuple(t["shape"]) for t in meta["training_source"]["templates"]}
    training: dict[str, set[tuple[str, int]]] = {}
    for entry in meta["slices"]["train"]:
        template, plane, index = entry["source"].split(":")
        training.setdefault(template, set()).add((plane, int(index)))
    shares: dict[tuple[str, str], list[float]] = {}
    picked = []
    for k, entry in enumerate(meta["slices"]["val"]):
        template, plane, index = entry["source"].split(":")
        share = seen_share(plane, shapes[template], training[template])
        shares.setdefault((template, plane), []).append(share)
        if k in picks:
            picked.append(f"{entry['source']} {share:.0%}")
    lines = ["| template | plane | validation slices | grid seen in training: mean | min | max |",
             "|---|---|---|---|---|---|"]
    for (template, plane), values in shares.items():
        lines.append(f"| {template} | {plane} | {len(values)} | {np.mean(values):.0%} | {min(values):.0%} | "
                     f"{max(values):.0%} |")
    every = [v for values in shares.values() for v in values]
    lines.append(f"| all | | {len(every)} | {np.mean(every):.0%} | {min(every):.0%} | {max(every):.0%} |")
    return "\n".join(lines) + f"\n\nThe {len(picks)} slices `tune --slices {len(picks)}` picks: " + ", ".join(picked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="prepared datasets folder (default: the user cache)")
    parser.add_argument("--slices", type=int, default=2, help="validation slices, picked as tune picks them (default 2, as the presets "
                        "were tuned; tune's own default is 4)")
    parser.add_argument("-o", "--output", default=str(RESULTS / "validation_overlap.md"))
    args = parser.parse_args(argv)
    meta = load_meta("brain-mri", Path(args.data) / "brain-mri" if args.data else None)
    picks = validation_picks([e["source"] for e in meta["slices"]["val"]], args.slices)
    text = (f"# What the brain-mri validation slices share with training\n\n{table(meta, picks)}\n\n"
            "Share of a validation slice's voxel grid (in the template, before fitting to 256²) that lies in a "
            "training slice of another plane of the same template.  Command:\n\n"
            f"    {rerun_command(__file__, argv)}\n")
    write_result(args.output, text)


if __name__ == "__main__":
    main()
