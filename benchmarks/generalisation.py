"""Generalisation: one prior, many measurement processes (the claim of Song et al. 2022).

The same prior reconstructs sparse-view CT with 8 to 90 of 180 views and single-coil MRI with
2× to 12× equispaced under-sampling, beside the best classical method of each setting (highest
mean PSNR over the slices among the classical methods of ``score_methods.py``).  Slices: the
bundled evaluation samples.  Each measurement runs the preset of its task (``task_of``: CT with
38 or more views is ``ct-many-view``), or of the task's fallback where only that one names the
method; the table names it.  Writes a Markdown table and a figure
(PSNR against the number of measurements).

    python benchmarks/generalisation.py                 # -> benchmarks/results/generalisation.{md,png}
    python benchmarks/generalisation.py --rows benchmarks/results/rows_generalisation   # resumable
    python benchmarks/generalisation.py --quick --prior-ct P --prior-mri P

``--rows DIR`` keeps each score-based row (one slice at one setting, named e.g.
``ct-23-views__ct-head-0__fast.json``) as a JSON file under the reuse key of ``score_methods.py
--rows``: the setting and slice, the prior's weights by digest, size, threads, steps, K, seed and
the method's resolved settings, preset included.  A rerun after one preset changed measures again
only the settings that preset runs, and a stopped run resumes; the table names the commit and date
of each reused row.  The classical baselines are always measured again.  Give the sweep a folder
of its own (``mri-8x-equispaced`` is also a task name of ``score_methods.py``), and delete it after
changing a sampler's code (the key cannot see code).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from scorerecon.cli_types import positive_int
from score_methods import (RESULTS, best_over_slices, check_methods, classical_rows, evaluation_images, measured_row,
                           row_key, sampler, signed_db, simulate, split_k_suffix, write_result)
from scorerecon.atomic import atomic_path
from scorerecon.solvers.tuning import preset_task, task_of

CT_VIEWS = (8, 15, 23, 45, 90)
MRI_ACCELERATIONS = (2.0, 4.0, 6.0, 8.0, 12.0)


def settings(modality: str, value: float) -> dict:
    """The simulation settings of a number of views or an acceleration."""
    if modality == "ct":
        return dict(views=int(value), full_views=180)
    return dict(mask="equispaced", acceleration=float(value))


def setting_name(modality: str, value: float) -> str:
    """The name of one measurement setting in the stored rows: ``ct-23-views``, ``mri-4x-equispaced``."""
    return f"ct-{value:g}-views" if modality == "ct" else f"mri-{value:g}x-equispaced"


def score_row(meas, name: str, setting: str, prior: str, args) -> tuple[dict, str | None]:
    """The score-based row of one slice at one setting, and where it was reused from (None when
    measured now, and then stored in ``args.rows``)."""
    options = dict(prior=prior, steps=args.steps, samples=split_k_suffix(args.method)[1], seed=0)
    key = row_key(args, meas, setting, name, args.method, options)
    row, stored = measured_row(Path(args.rows) if args.rows else None, key, meas, options)
    return row, stored and f"{setting} {name} ({stored['commit']}, {stored['date']})"


def sweep(modality: str, values, args) -> dict[float, dict]:
    """{value: {"score": (PSNR, method), "classical": (PSNR, best method), "preset": the task whose
    preset entry ran (:func:`preset_task` of the measurement's task), "reused": the stored rows
    reused}}, means over slices."""
    prior = args.prior_ct if modality == "ct" else args.prior_mri
    images = evaluation_images(modality, args.size, args.slices)
    out = {}
    for value in values:
        options = settings(modality, value)
        score_psnr, classical, presets, reused = [], [], set(), []
        for name, image, pixel in images:
            meas = simulate(modality, image, pixel, options)
            task = task_of(meas)
            presets.add(preset_task(task, sampler(args.method)))
            classical.append(classical_rows(meas, task))
            row, source = score_row(meas, name, setting_name(modality, value), prior, args)
            score_psnr.append(row["psnr"])
            reused += [source] if source else []
        best, rows = best_over_slices(classical)
        out[value] = {"score": (float(np.mean(score_psnr)), args.method),
                      "classical": (float(np.mean([r["psnr"] for r in rows])), best),
                      "preset": ", ".join(sorted(presets)), "reused": reused}
        note = f" ({len(reused)} rows reused)" if reused else ""
        print(f"{modality} {value:g} ({out[value]['preset']}): {args.method} {out[value]['score'][0]:.2f} dB{note}, "
              f"best classical ({best}) {out[value]['classical'][0]:.2f} dB", flush=True)
    return out


def table(ct: dict, mri: dict, args) -> str:
    lines = ["# Generalisation of one prior across measurement processes", "",
             f"Method {args.method} (steps: {args.steps or 'default'}), priors CT {args.prior_ct} and MRI "
             f"{args.prior_mri}; {args.slices or 'all'} bundled evaluation slices at {args.size}²; "
             "PSNR (dB) mean over slices; noise-free data.", "",
             "| setting | measurements | preset | score-based | best classical | gain (dB) |",
             "|---|---|---|---|---|---|"]
    for label, rows, unit in (("CT, parallel beam", ct, "views of 180"), ("MRI, single coil", mri, "× equispaced")):
        for value, row in rows.items():
            gain = row["score"][0] - row["classical"][0]
            lines.append(f"| {label} | {value:g} {unit} | {row['preset']} | {row['score'][0]:.2f} | "
                         f"{row['classical'][0]:.2f} ({row['classical'][1]}) | {signed_db(gain)} |")
    reused = [source for rows in (ct, mri) for row in rows.values() for source in row["reused"]]
    if reused:
        lines += ["", f"Score-based rows reused from {args.rows} (commit, date measured): " + "; ".join(reused) + "."]
    return "\n".join(lines) + "\n"


def figure(ct: dict, mri: dict, path: Path, method: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, rows, xlabel in ((axes[0], ct, "CT views (of 180)"), (axes[1], mri, "MRI acceleration (equispaced)")):
        xs = list(rows)
        ax.plot(xs, [rows[x]["score"][0] for x in xs], "o-", label=f"score-based ({method})")
        ax.plot(xs, [rows[x]["classical"][0] for x in xs], "s--", label="best classical")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("One prior, many measurement processes", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 slice at 64², 2 settings per modality, 3 steps")
    p.add_argument("--method", default="fast", help="score-based method (default fast)")
    p.add_argument("--prior-ct", default="head-ct")
    p.add_argument("--prior-mri", default="brain-mri")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--slices", type=positive_int, default=None)
    p.add_argument("--size", type=positive_int, default=256)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--rows", default=None,
                   help="folder keeping each measured score-based row; a rerun reuses rows whose settings match")
    p.add_argument("-o", "--output", default=str(RESULTS / "generalisation.md"),
                   help="Markdown table; the figure goes beside it (.png)")
    args = p.parse_args(argv)
    check_methods(p, [args.method])
    views, accelerations = CT_VIEWS, MRI_ACCELERATIONS
    if args.quick:
        args.slices, args.size, args.steps = 1, 64, 3
        views, accelerations = (8, 23), (4.0, 8.0)
    torch.set_num_threads(args.threads)
    ct, mri = sweep("ct", views, args), sweep("mri", accelerations, args)
    output = Path(args.output)
    write_result(str(output), table(ct, mri, args))
    figure(ct, mri, output.with_suffix(".png"), args.method)
    print(f"wrote {output.with_suffix('.png')}")


if __name__ == "__main__":
    main()
