"""Score-based methods against the best classical method on held-out slices.

Tasks (REFERENCE.md's table and the issue's targets): sparse-view CT (23 of 180 views), limited
angle (120°), metal-artefact reduction (180 views, ``metal="auto"``), single-coil MRI 8×
equispaced and 8× Poisson disc, 8-coil MRI 4× equispaced.  Slices: the bundled evaluation
samples (``scorerecon.data.samples``: other patients / the MNI152 template, never training data)
of what the priors learned: head CT (``ct-head-*``; the abdomen slice is left to the classical
benchmark) and brain MRI.

Per task and method: PSNR / SSIM on the unit window (data range 1; CT metal pixels excluded,
every method puts the same metal back), network evaluations (NFE: sequential calls of the network
on the batch of K posterior samples, so K · NFE images pass through it), K (``--samples``,
default: each method's preset), seconds per slice on 2 threads, and with K ≥ 2 how well the
posterior std predicts the error: Pearson r between std and |mean − truth| and the fraction of
pixels with |error| ≤ 1 and 2 std (the std map as ``reconstruct`` writes it: times the preset's
``std_scale`` where ``scorerecon tune --calibrate-std`` set one, carried to the K that runs).  "best classical" is the
method with the highest PSNR among fbp / sart / tv (/ li-mar) for CT and zero-filled / sense /
cs-wavelet / cs-tv for MRI, chosen per task by its mean PSNR over the slices (every classical
method's PSNR on each slice is printed).

    python benchmarks/score_methods.py                       # -> benchmarks/results/score_methods.md
    python benchmarks/score_methods.py --quick --prior-ct P --prior-mri P   # tiny check
    python benchmarks/score_methods.py --steps 200 --methods song,fast --tasks ct-sparse-view
    python benchmarks/score_methods.py --slices 1 --rows benchmarks/results/rows_1000_steps  # resumable
    python benchmarks/score_methods.py --methods fast --dataset-slices clinical-brain-mri:val --slices 2
    python benchmarks/score_methods.py --methods song,song-k4 --tasks ct-sparse-view   # K = 1 and 4

``--dataset-slices NAME:SPLIT`` takes the slices of the tasks of that dataset's modality from a
prepared dataset instead (evenly spaced, named ``NAME-SPLIT-INDEX``), e.g. the clinical brain
MR patients that no network saw and no preset was tuned on.

``--rows DIR`` keeps every score-based row as a JSON file in DIR, written when it is measured,
and reuses it while what it depends on (task, slice, prior, size, steps, K, threads and the
method's resolved settings, preset included, and the digest of the prior's weights,
``prior_digest``) is unchanged: a run of hours that is stopped
resumes where it was, and the table's notes name the commit and date each reused row was
measured at; ``--stored-only`` tables the stored rows alone and lists those still missing (a
method stored for only some of the slices is left out of the table and named, so that every mean
is over the classical row's slices).  The classical baselines are always measured again.  A row
also records its measurement's fingerprint (:func:`measurement_fingerprint`) and is reused only
on that measurement, so a changed simulation re-measures it (rows stored before session 57 carry
none and are reused on the key alone).  After changing a sampler's code, delete the folder (the
key cannot see code).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from scorerecon.atomic import atomic_path
from scorerecon.cli_types import positive_int
from scorerecon.data.intensity import hu_to_unit
from scorerecon.evaluation.metrics import error_and_std, image_metrics, std_coverage
from scorerecon.priors.registry import prior_digest
from scorerecon.solvers.registry import reconstruct
from scorerecon.solvers.score import DEFAULT_ALIAS, DEFAULT_METHOD, REGISTERED_NAMES, settings_for, std_map_scale
from scorerecon.solvers.tuning import task_of

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = {
    "ct-sparse-view": ("ct", dict(views=23, full_views=180)),
    "ct-limited-angle": ("ct", dict(limited_angle=120.0, full_views=180)),
    "ct-metal": ("ct", dict(metal="auto", full_views=180)),
    "mri-8x-equispaced": ("mri", dict(mask="equispaced", acceleration=8.0)),
    "mri-8x-poisson": ("mri", dict(mask="poisson", acceleration=8.0)),
    "mri-8coil-4x": ("mri", dict(mask="equispaced", acceleration=4.0, coils=8)),
}
CLASSICAL = {"ct": ("fbp", "sart", "tv"), "ct-metal": ("fbp", "li-mar", "sart", "tv"),
             "mri": ("zero-filled", "sense", "cs-wavelet", "cs-tv")}
SCORE_METHODS = ("langevin", "song", "chung", "dps", "fast")
PRESET_NOTE = "the task's preset where one was tuned (src/scorerecon/solvers/presets), else the default 0.1"


# -------------------------------------------------------------------------------- data
def evaluation_images(modality: str, size: int, limit: int | None,
                      dataset: str | None = None) -> list[tuple[str, np.ndarray, float]]:
    """(name, image, pixel size mm) of the bundled samples, or of ``dataset`` = ``NAME:SPLIT`` of a
    prepared dataset of this modality (``limit`` evenly spaced slices): CT in HU, MRI magnitude in [0, 1]."""
    from skimage.transform import resize
    out = []
    for name, array, pixel in (_dataset_images(dataset, limit) if dataset else _sample_images(modality, limit)):
        if array.shape != (size, size):
            pixel *= array.shape[-1] / size
            array = resize(array, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float32)
        out.append((name, array, pixel))
    return out


def _sample_images(modality: str, limit: int | None) -> list[tuple[str, np.ndarray, float]]:
    from scorerecon.data.samples import list_samples, load_sample
    prefix = "ct-head" if modality == "ct" else "mri-brain"
    images = [(name, load_sample(name)) for name in list_samples() if name.startswith(prefix)][:limit]
    return [(name, im.array.astype(np.float32), float((im.spacing or (1.0, 1.0))[-1])) for name, im in images]


def _dataset_images(dataset: str, limit: int | None) -> list[tuple[str, np.ndarray, float]]:
    from scorerecon.data.datasets import load_meta, load_split
    from scorerecon.data.intensity import unit_to_hu
    from scorerecon.priors.experts import evenly_spaced
    name, split = dataset.split(":")
    meta, images = load_meta(name), load_split(name, split)
    picks = evenly_spaced(np.arange(len(images)), limit or len(images))
    ct = meta.get("modality") == "ct"
    return [(f"{name}-{split}-{k}", unit_to_hu(images[k]) if ct else images[k],
             float(meta["slices"][split][k]["spacing_mm"][-1])) for k in picks]


def dataset_modality(parser: argparse.ArgumentParser, dataset: str) -> str:
    """The modality of ``--dataset-slices NAME:SPLIT``; a malformed or unprepared one is a parser error."""
    from scorerecon.data.datasets import load_meta
    from scorerecon.errors import UserError
    name, _, split = dataset.partition(":")
    if split not in ("train", "val", "eval"):
        parser.error(f"--dataset-slices {dataset}: write NAME:SPLIT with SPLIT train, val or eval")
    try:
        return "ct" if load_meta(name).get("modality") == "ct" else "mri"
    except UserError as err:
        parser.error(f"--dataset-slices {dataset}: {err}")


def simulate(modality: str, image: np.ndarray, pixel: float, settings: dict, seed: int = 0):
    """A noise-free measurement of ``image`` with the task's ``settings``."""
    if modality == "ct":
        from scorerecon.simulate.ct import simulate_ct
        return simulate_ct(image, pixel_size=pixel, seed=seed, **settings)
    from scorerecon.simulate.mri import simulate_mri
    return simulate_mri(image, seed=seed, pixel_size=(pixel, pixel), **settings)


# ----------------------------------------------------------------------------- metrics
def quality(result, meas) -> dict[str, float]:
    """PSNR / SSIM in the unit window (outside the metal for CT metal data)."""
    if meas.modality == "mri":
        return result.metrics(meas)
    metal = meas.extras.get("metal_mask")
    mask = None if metal is None else ~(np.asarray(metal) != 0)
    return image_metrics(result.unit_image, hu_to_unit(meas.truth), mask)


def uncertainty_calibration(result, meas) -> dict[str, float]:
    """Pearson r(std, |error|) and the fraction of pixels with |error| ≤ k std (k = 1, 2)."""
    if result.std is None:
        return {}
    return std_coverage(*error_and_std(result.image, result.std, meas.truth, meas.extras.get("metal_mask")))


def run(meas, method: str, **options) -> dict[str, float]:
    start = time.perf_counter()
    result = reconstruct(meas, method, **options)
    seconds = time.perf_counter() - start  # the reconstruction, not the metrics below
    row = {**quality(result, meas), "seconds": seconds,
           "nfe": float(result.info.get("nfe", 0)), "samples": float(result.info.get("samples", 0))}
    row.update(uncertainty_calibration(result, meas))
    return row


def classical_rows(meas, task: str) -> dict[str, dict[str, float]]:
    """{classical method: its row on ``meas``} for every classical method of the task."""
    key = "ct-metal" if task == "ct-metal" else meas.modality
    return {m: run(meas, m) for m in CLASSICAL[key]}


def best_over_slices(per_slice: list[dict[str, dict]]) -> tuple[str, list[dict]]:
    """The classical method of highest mean PSNR over the slices, and its row on each slice (one
    method per task, so the row is a mean over all the slices)."""
    name = max(per_slice[0], key=lambda m: np.mean([rows[m]["psnr"] for rows in per_slice]))
    return name, [rows[name] for rows in per_slice]


# ----------------------------------------------------------------------- resumable rows
def _commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), or "unknown"."""
    def git(*cmd) -> str:
        return subprocess.run(["git", *cmd], cwd=RESULTS, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        dirty = git("status", "--porcelain", "--", "../../src", __file__)
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def split_k_suffix(method: str) -> tuple[str, int | None]:
    """``NAME-kK`` (e.g. ``song-k4``): the method NAME with K posterior samples, a column of its
    own (after the README's columns) beside NAME at its preset K; any other name: (it, None)."""
    name, sep, samples = method.rpartition("-k")
    return (name, int(samples)) if sep and name and samples.isdigit() and int(samples) > 0 else (method, None)


def sampler(method: str) -> str:
    """The sampler a method name runs: ``score`` is the alias of the default (fast) sampler, and
    ``NAME-kK`` runs NAME."""
    name = split_k_suffix(method)[0]
    return DEFAULT_METHOD if name == DEFAULT_ALIAS else name


def row_key(args, meas, task: str, slice_name: str, method: str, options: dict) -> dict:
    """Everything a score-based row depends on but the code: the reuse key of ``--rows``.  The
    prior's weights are in it by digest, not by name, so a shipped prior retrained under the same
    name is measured again (with ``--dataset-slices``, the slice itself is in it by digest too)."""
    settings = settings_for(sampler(method), task_of(meas), {})
    key = {"task": task, "slice": slice_name, "method": method, "size": args.size,
           "threads": args.threads, "options": options, "prior_sha256": prior_digest(options["prior"]),
           "settings": settings}
    samples = options.get("samples")
    if "std_scale" in settings and samples not in (None, settings.get("samples")):
        # a calibrated scale carried to another K (until session 58 such rows ran with 1)
        key["std_scale_at_samples"] = round(std_map_scale(sampler(method), task_of(meas), samples,
                                                          settings["std_scale"]), 6)
    if getattr(args, "dataset_slices", None) and meas.modality == getattr(args, "dataset_modality", None):
        # a dataset prepared again may hold other images under the same index
        key["truth_sha256"] = hashlib.sha256(np.ascontiguousarray(meas.truth, np.float32).tobytes()).hexdigest()[:16]
    return json.loads(json.dumps(key))


def _row_path(folder: Path, key: dict) -> Path:
    """The file of one row: ``FOLDER/TASK__SLICE__METHOD.json``."""
    return folder / f"{key['task']}__{key['slice']}__{key['method']}.json"


def cached_row(folder: Path | None, key: dict) -> dict | None:
    """The stored row of ``key`` in ``folder`` (None when absent or measured under another key)."""
    if folder is None:
        return None
    try:
        stored = json.loads(_row_path(folder, key).read_text())
    except (OSError, ValueError):
        return None
    return stored if stored.get("key") == key else None


def measurement_fingerprint(meas) -> list[float]:
    """Float64 sums of the measurement a row was measured on (data, mask, truth): for each, its
    size N, Σx, Σx² and Σx·w with fixed Gaussian weights w (real and imaginary parts as values).
    Unlike a hash of the bytes they agree across hosts up to rounding; they move with a change to
    the simulation beyond about 1e-6 of √(N·Σx²) (:func:`same_measurement`), as session 56's
    water pre-correction of the metal task did (tested), not with a change to a handful of values."""
    sums = []
    for array in (meas.data, meas.mask, meas.truth):
        values = np.asarray(array)
        values = (np.concatenate([values.real.ravel(), values.imag.ravel()]) if np.iscomplexobj(values)
                  else values.ravel()).astype(np.float64)
        weights = np.random.default_rng(0).standard_normal(values.size)
        sums += [float(values.size), float(values.sum()), float(values @ values), float(values @ weights)]
    return sums


def same_measurement(stored: list[float], current: list[float], rtol: float = 1e-6) -> bool:
    """Whether two :func:`measurement_fingerprint` s are of one measurement: the same sizes, Σx²
    within ``rtol`` of itself, Σx and Σx·w within ``rtol`` of √(N·Σx²), the most they can reach
    (rounding on another host moves them far less; a changed simulation far more)."""
    if len(stored) != len(current):
        return False
    for (n, total, square, projected), (n0, total0, square0, projected0) in zip(
            np.reshape(stored, (-1, 4)), np.reshape(current, (-1, 4))):
        reach = rtol * np.sqrt(n0 * square0)
        if (n != n0 or abs(square - square0) > rtol * square0 or abs(total - total0) > reach
                or abs(projected - projected0) > reach):
            return False
    return True


def store_row(folder: Path | None, key: dict, row: dict, fingerprint: list[float] | None = None) -> None:
    """Write the row of ``key`` atomically, with the commit and date it was measured at and the
    fingerprint of its measurement."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    stored = {"key": key, "row": row, "commit": _commit(), "date": datetime.date.today().isoformat(),
              **({"measurement": fingerprint} if fingerprint is not None else {})}
    with atomic_path(_row_path(folder, key), suffix=".json") as tmp:
        tmp.write_text(json.dumps(stored, indent=1) + "\n")


def measured_row(folder: Path | None, key: dict, meas, options: dict,
                 measure: bool = True) -> tuple[dict | None, dict | None]:
    """The row of ``key``: read back from ``folder`` when stored under that key (with the stored
    record, which names the commit and date), else measured now by the sampler of ``key["method"]``
    with ``options`` and stored (with None); (None, None) when it is not stored and ``measure`` is
    False (``--stored-only``)."""
    fingerprint = measurement_fingerprint(meas) if folder is not None else None
    stored = cached_row(folder, key)
    # a row stored with its measurement's fingerprint is reused only on that measurement (rows
    # stored before session 57 carry none and are reused on the key alone)
    if stored and same_measurement(stored.get("measurement", fingerprint), fingerprint):
        return stored["row"], stored
    if not measure:
        return None, None
    row = run(meas, split_k_suffix(key["method"])[0], progress=False, **options)
    store_row(folder, key, row, fingerprint)
    return row, None


def check_methods(parser: argparse.ArgumentParser, methods: list[str]) -> None:
    """Exit with one line naming the methods that are neither a registered sampler nor NAME-kK."""
    unknown = sorted(m for m in methods if split_k_suffix(m)[0] not in REGISTERED_NAMES)
    if unknown:
        parser.error(f"unknown score-based method(s) {', '.join(unknown)}: use {', '.join(REGISTERED_NAMES)}, "
                     "or NAME-kK for K > 0 posterior samples")


# ------------------------------------------------------------------------------- table
def mean_rows(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    keys = rows[0].keys()
    return {k: (float(np.nanmean([r[k] for r in rows])), float(np.nanstd([r[k] for r in rows]))) for k in keys}


def _count(value: float) -> str:
    return f"{value:.0f}" if value else "—"


#: the README's names of the tasks and order of the methods in the side-by-side table
TASK_LABELS = {"ct-sparse-view": "23-view CT", "ct-limited-angle": "120° limited angle",
               "ct-metal": "metal-artifact removal", "mri-8x-equispaced": "MRI 8× equispaced",
               "mri-8x-poisson": "MRI 8× Poisson disc", "mri-8coil-4x": "8-coil MRI 4×"}
SIDE_BY_SIDE_METHODS = ("fast", "song", "chung", "dps", "langevin")
#: the row of each task's best classical method is named "best classical (METHOD)"
BEST_CLASSICAL = "best classical"


def classical_row(row: dict) -> tuple[str, str]:
    """(the name of ``row``'s best-classical entry, the classical method it names)."""
    name = next(name for name in row if name.startswith(BEST_CLASSICAL))
    return name, name[len(BEST_CLASSICAL) + 2:-1]


def method_columns(results: dict) -> list[str]:
    """The score-based methods measured in ``results``: the README's order, then any other, then
    the ``NAME-kK`` columns (each sorted by name)."""
    measured = {m for row in results.values() for m in row if not m.startswith(BEST_CLASSICAL)}
    others = sorted(measured - set(SIDE_BY_SIDE_METHODS), key=lambda m: (split_k_suffix(m)[1] is not None, m))
    return [m for m in SIDE_BY_SIDE_METHODS if m in measured] + others


def side_by_side_table(results: dict) -> str:
    """One line per task, one column per method (the README's order, then any other method
    measured): mean PSNR / SSIM (NFE × K, seconds per slice), the highest PSNR of the line in
    bold, "—" where a method was not measured."""
    methods = method_columns(results)
    lines = ["| task | best classical | " + " | ".join(methods) + " |", "|---|---" + "|---" * len(methods) + "|"]
    for task, row in results.items():
        best = max(stats["psnr"][0] for stats in row.values())
        classical, label = classical_row(row)

        def cell(name: str, label: str = "") -> str:
            stats = row.get(name)
            if stats is None:
                return "—"
            text = f"{stats['psnr'][0]:.2f} / {stats['ssim'][0]:.3f}"
            text = f"**{text}**" if stats["psnr"][0] == best else text
            if label:
                return f"{text} ({label})"
            samples = f" × {stats['samples'][0]:.0f}" if stats["samples"][0] > 1 else ""
            return f"{text} ({stats['nfe'][0]:.0f}{samples}, {stats['seconds'][0]:.0f})"

        cells = [cell(classical, label)] + [cell(m) for m in methods]
        lines.append(f"| {TASK_LABELS.get(task, task)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def signed_db(difference: float) -> str:
    """A PSNR difference in dB with its sign: two decimals, or three where two would print a
    nonzero difference as ±0.00."""
    return f"{difference:+.3f}" if 0 < abs(difference) < 0.005 else f"{difference:+.2f}"


def gains_table(results: dict) -> str:
    """Each method's mean PSNR minus the best classical method's, per task, from the unrounded
    means (the differences the README quotes; rounding both means first can move one by 0.01)."""
    methods = method_columns(results)
    lines = ["| task | " + " | ".join(methods) + " |", "|---" + "|---" * len(methods) + "|"]
    for task, row in results.items():
        classical = row[classical_row(row)[0]]["psnr"][0]
        cells = [signed_db(row[m]['psnr'][0] - classical) if m in row else "—" for m in methods]
        lines.append(f"| {TASK_LABELS.get(task, task)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fast_table(results: dict) -> str:
    """Per task where the fast sampler and another score-based method were measured: the fast
    sampler's mean PSNR minus the best other method's (by mean, named), from the unrounded means,
    and the same difference on each slice (the issue's bound: within 0.5 dB)."""
    lines = ["| task | fast against the best other sampler | per slice |", "|---|---|---|"]
    for task, row in results.items():
        # the fast sampler at its preset K, where a fast-kK column is measured beside it
        fast = min((m for m in row if sampler(m) == "fast"), key=lambda m: split_k_suffix(m)[1] is not None,
                   default=None)
        others = [m for m in row if sampler(m) != "fast" and not m.startswith(BEST_CLASSICAL)]
        if fast is None or not others:
            continue
        best = max(others, key=lambda m: row[m]["psnr"][0])
        per_slice = [f - b for f, b in zip(row[fast]["psnr_slices"], row[best]["psnr_slices"])]
        lines.append(f"| {TASK_LABELS.get(task, task)} | {signed_db(row[fast]['psnr'][0] - row[best]['psnr'][0])} "
                     f"({best}) | " + ", ".join(signed_db(d) for d in per_slice) + " |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def format_table(results: dict, notes: list[str]) -> str:
    """The long table (a line per task and method), below it the side-by-side one, the gains over
    the best classical method and the fast sampler against the best other sampler."""
    lines = ["# Score-based methods vs the best classical method", "", *notes, "",
             "| task | method | PSNR (dB) | SSIM | NFE | K | s / slice | r(std, abs err) | abs err ≤ 1 std | "
             "abs err ≤ 2 std |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, methods in results.items():
        for method, stats in methods.items():
            std_columns = [stats.get(name) for name in ("r_std_err", "within_1std", "within_2std")]
            lines.append(
                f"| {task} | {method} | {stats['psnr'][0]:.2f} ± {stats['psnr'][1]:.2f} | "
                f"{stats['ssim'][0]:.3f} ± {stats['ssim'][1]:.3f} | {stats['nfe'][0]:.0f} | "
                f"{_count(stats['samples'][0])} | {stats['seconds'][0]:.1f} | "
                + " | ".join("—" if value is None else f"{value[0]:.2f}" for value in std_columns) + " |")
    lines += ["", "Side by side: PSNR dB / SSIM (NFE × K, s / slice); the best PSNR of each task in bold.", ""]
    gains = ["", "PSNR gain over the best classical method of the task (dB, from the unrounded means):", ""]
    text = "\n".join(lines) + "\n" + side_by_side_table(results) + "\n".join(gains) + "\n" + gains_table(results)
    fast = fast_table(results)
    if fast:
        text += ("\nThe fast sampler's mean PSNR minus the best other sampler's (dB, from the unrounded "
                 "means; that sampler chosen by its mean), and on each slice:\n\n" + fast)
    return text


def benchmark(args) -> str:
    torch.set_num_threads(args.threads)
    priors = {"ct": args.prior_ct, "mri": args.prior_mri}
    results: dict[str, dict] = {}
    folder = Path(args.rows) if args.rows else None
    reused: list[str] = []
    missing: list[str] = []
    notes_partial: list[str] = []
    for task in args.tasks:
        modality, settings = TASKS[task]
        per_method: dict[str, list] = {}
        classical: list[dict[str, dict]] = []
        source = args.dataset_slices if modality == args.dataset_modality else None
        for name, image, pixel in evaluation_images(modality, args.size, args.slices, source):
            meas = simulate(modality, image, pixel, settings)
            classical.append(classical_rows(meas, task))
            print(f"{task} {name} classical PSNR: "
                  + ", ".join(f"{m} {r['psnr']:.2f}" for m, r in classical[-1].items()), flush=True)
            for method in args.methods:
                samples = split_k_suffix(method)[1]
                fast = sampler(method) == "fast"
                extra = {"start_sigma": args.start_sigma} if fast and args.start_sigma is not None else {}
                options = dict(prior=priors[modality], steps=args.fast_steps if fast else args.steps,
                               samples=samples or args.samples, seed=0, **extra)
                key = row_key(args, meas, task, name, method, options)
                row, stored = measured_row(folder, key, meas, options, measure=not args.stored_only)
                if row is None:
                    missing.append(f"{task} {name} {method}")
                    continue
                if stored:
                    reused.append(f"{task} {name} {method} ({stored['commit']}, {stored['date']})")
                per_method.setdefault(method, []).append(row)
                print(f"{task} {name} {method}: PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f} "
                      f"NFE {row['nfe']:.0f} {row['seconds']:.1f} s{' (reused)' if stored else ''}", flush=True)
        label, rows = best_over_slices(classical)
        partial = sorted(m for m, measured in per_method.items() if len(measured) < len(classical))
        if partial:  # a mean over fewer slices than the classical row's would not compare
            notes_partial.append(f"{task}: {', '.join(partial)} (stored for some of the slices only)")
        per_method = {f"{BEST_CLASSICAL} ({label})": rows,
                      **{m: measured for m, measured in per_method.items() if m not in partial}}
        results[task] = {m: {**mean_rows(rows), "psnr_slices": [r["psnr"] for r in rows]}
                         for m, rows in per_method.items()}
    where = ("bundled evaluation samples per modality" if not args.dataset_slices else
             f"evenly spaced slices of {args.dataset_slices} for {args.dataset_modality.upper()}, "
             "bundled evaluation samples otherwise")
    notes = [f"Slices: {args.slices or 'all'} {where} at {args.size}²; "
             f"priors: CT {args.prior_ct}, MRI {args.prior_mri}; steps: {args.steps or 'the prior N'} "
             f"(fast: {args.fast_steps or 'the preset of the task, else 20'}, warm start σ = "
             f"{PRESET_NOTE if args.start_sigma is None else args.start_sigma or 'none (cold)'}); "
             f"K = {args.samples or 'the preset'} posterior samples per slice (a NAME-kK column: K), their std "
             "times the preset's calibrated std_scale where it has one (carried to the K that runs); "
             f"{args.threads} threads; mean ± std over slices.  Noise-free simulations "
             "(metal: polychromatic, 10⁵ photons)."]
    if reused:
        notes.append(f"Rows reused from {args.rows} (commit, date measured): " + "; ".join(reused) + ".")
    if missing:
        notes.append("Not measured yet (left out, `--stored-only`): " + "; ".join(missing) + ".")
    if notes_partial:
        notes.append("Left out of the table, so that every mean is over the same slices: "
                     + "; ".join(notes_partial) + ".")
    return format_table(results, notes)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 slice (unless --slices says) at 64², 3 steps, 2 samples: checks the script")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ", ".join(TASKS))
    p.add_argument("--methods", default=",".join(SCORE_METHODS), help="comma-separated score-based methods; NAME-kK (e.g. song-k4) runs NAME with K "
                        "posterior samples, a column of its own")
    p.add_argument("--prior-ct", default="head-ct")
    p.add_argument("--prior-mri", default="brain-mri")
    p.add_argument("--steps", type=int, default=None, help="steps of the 1000-step samplers (default: prior N)")
    p.add_argument("--fast-steps", type=int, default=None,
                   help="steps of the fast sampler (default: the preset of the task, else 20)")
    p.add_argument("--start-sigma", type=float, default=None,
                   help="warm-start noise level of the fast sampler (default: " + PRESET_NOTE + "; 0 = cold start)")
    p.add_argument("--samples", type=int, default=None,
                   help="posterior samples K per slice (default: each method's preset; K > 1 fills the uncertainty columns)")
    p.add_argument("--slices", type=positive_int, default=None, help="slices per modality (default: all)")
    p.add_argument("--dataset-slices", default=None, metavar="NAME:SPLIT",
                   help="slices of a prepared dataset (e.g. clinical-brain-mri:val) instead of the bundled "
                        "samples, for the tasks of its modality")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", default=None,
                   help="folder keeping each measured score-based row; a rerun reuses rows whose settings match")
    p.add_argument("--stored-only", action="store_true",
                   help="with --rows: table only the stored score-based rows, list the missing ones, measure no "
                        "score-based row (the classical baselines are recomputed)")
    p.add_argument("-o", "--output", default=str(RESULTS / "score_methods.md"))
    args = p.parse_args(argv)
    args.tasks, args.methods = args.tasks.split(","), args.methods.split(",")
    if args.quick:
        args.slices, args.size, args.steps, args.fast_steps, args.samples = args.slices or 1, 64, 3, 3, 2
    if args.stored_only and not args.rows:
        p.error("--stored-only needs --rows DIR, the folder of stored rows")
    args.dataset_modality = dataset_modality(p, args.dataset_slices) if args.dataset_slices else None
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        p.error(f"unknown task(s) {', '.join(unknown)}")
    check_methods(p, args.methods)
    write_result(args.output, benchmark(args))


def rerun_command(script: str, argv: list[str] | None = None) -> str:
    """The shell line that reruns a benchmark, for its results file: ``python benchmarks/SCRIPT``
    and the arguments it was given (``argv`` as passed to its ``main``, else the command line's)."""
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


def write_result(path: str, text: str) -> None:
    """Write a Markdown result atomically (its folder made), print it and say where."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".md") as tmp:
        tmp.write_text(text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
