"""Timings of the CT operators: scorerecon's sparse Joseph matrices against scikit-image and ASTRA.

For a parallel-beam geometry of SIZE² pixels with 180 and 23 views (one detector bin per pixel,
covering the diagonal) and batches of 1 and 8 images, this measures the median wall time of

* forward projection  T x,
* adjoint             T^T y (scikit-image and ASTRA: their unfiltered back-projection),
* FBP                 (ramp filter),

for scorerecon (int32 CSR, torch), a matrix-free torch projector (bilinear rotation with
``grid_sample`` and a column sum, the algorithm of scikit-image's ``radon``, batched), scikit-image
(``radon`` / ``iradon``, one image at a time) and ASTRA's CPU projector ``linear`` (Joseph's
method; ``create_sino`` / ``create_backprojection`` / ``FBP``), all with 2 threads.  It also
reports scorerecon's one-off matrix build time, the time to load the matrices from the disk
cache, and the largest eigenvalue of the FBP data step T⁻¹ Λ T on 180 views (all, 23, 120°).
The Markdown table goes to ``benchmarks/results/ct_operators.md`` and to stdout.

    python benchmarks/ct_operators.py                       # the full table (a few minutes)
    python benchmarks/ct_operators.py --size 64 --repeats 2 # a quick check
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage.transform import iradon, radon

from scorerecon.allocator import retain_freed_memory
from scorerecon.atomic import atomic_path
from scorerecon.operators import ct
from scorerecon.operators.ct import CTGeometry, CTOperator
from scorerecon.solvers.conditioning import inverse_step_gain

THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "ct_operators.md"


def median_ms(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def images(size: int, batch: int) -> torch.Tensor:
    """Random images that vanish outside the inscribed circle (what scikit-image's circle=True assumes)."""
    gen = torch.Generator().manual_seed(0)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    disk = torch.from_numpy((xx ** 2 + yy ** 2 <= (size / 2 - 1) ** 2).astype(np.float32))
    return torch.rand(batch, 1, size, size, generator=gen) * disk


# ----------------------------------------------------------------------------- methods
def time_scorerecon(g: CTGeometry, x: torch.Tensor, repeats: int) -> dict[str, float]:
    op = CTOperator(g)
    y = op.transform(x)
    return {"forward": median_ms(lambda: op.transform(x), repeats),
            "adjoint": median_ms(lambda: op.transform_adjoint(y), repeats),
            "fbp": median_ms(lambda: op.fbp(y), repeats)}


def rotation_grids(g: CTGeometry) -> torch.Tensor:
    """Sampling grids (V, H, W, 2) of the image rotated by each view angle (for ``grid_sample``)."""
    h, w = g.image_shape
    theta = torch.from_numpy(g.angles).float()
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    affine = torch.stack([torch.stack([cos, sin, zero], -1), torch.stack([-sin, cos, zero], -1)], 1)
    return torch.nn.functional.affine_grid(affine, (g.n_views, 1, h, w), align_corners=False)


def time_matrix_free(g: CTGeometry, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Forward projection by rotating the whole batch to every view and summing columns."""
    grids = rotation_grids(g)

    def forward():
        rotated = torch.nn.functional.grid_sample(
            x.reshape(1, -1, *g.image_shape).expand(g.n_views, -1, -1, -1), grids, align_corners=False)
        return rotated.sum(-2)
    return {"forward": median_ms(forward, repeats)}


def time_skimage(g: CTGeometry, x: torch.Tensor, repeats: int) -> dict[str, float]:
    imgs = [a[0] for a in x.numpy().astype(np.float64)]
    deg = np.degrees(g.angles)
    sinos = [radon(a, deg, circle=True) for a in imgs]
    return {"forward": median_ms(lambda: [radon(a, deg, circle=True) for a in imgs], repeats),
            "adjoint": median_ms(lambda: [iradon(s, deg, circle=True, filter_name=None) for s in sinos], repeats),
            "fbp": median_ms(lambda: [iradon(s, deg, circle=True, filter_name="ramp") for s in sinos], repeats)}


def time_astra(g: CTGeometry, x: torch.Tensor, repeats: int) -> dict[str, float]:
    import astra
    vol = astra.create_vol_geom(*g.image_shape)
    proj_geom = astra.create_proj_geom("parallel", 1.0, g.n_detectors, g.angles)
    projector = astra.create_projector("linear", proj_geom, vol)
    imgs = [a[0] for a in x.numpy()]
    sinos = [astra.create_sino(a, projector)[1] for a in imgs]
    astra.data2d.clear()

    def forward():
        for a in imgs:
            astra.data2d.delete(astra.create_sino(a, projector)[0])

    def adjoint():
        for s in sinos:
            astra.data2d.delete(astra.create_backprojection(s, projector)[0])

    def fbp():
        for s in sinos:
            sino_id = astra.data2d.create("-sino", proj_geom, s)
            rec_id = astra.data2d.create("-vol", vol)
            cfg = astra.astra_dict("FBP")
            cfg.update(ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id)
            alg = astra.algorithm.create(cfg)
            astra.algorithm.run(alg)
            astra.algorithm.delete(alg)
            astra.data2d.delete([sino_id, rec_id])
    try:
        return {"forward": median_ms(forward, repeats), "adjoint": median_ms(adjoint, repeats),
                "fbp": median_ms(fbp, repeats)}
    finally:
        astra.projector.delete(projector)


METHODS = {
    "scorerecon (int32 CSR)": time_scorerecon,
    "torch grid_sample (matrix-free)": time_matrix_free,
    "scikit-image": time_skimage,
    "ASTRA CPU (linear)": time_astra,
}


# ------------------------------------------------------------------------------ driver
def build_times(g: CTGeometry) -> tuple[float, float]:
    """(cold build, load from disk) seconds for forward, adjoint and FBP matrices."""
    def make():
        ct.system_matrices.cache_clear()
        ct.backprojection_matrix.cache_clear()
        start = time.perf_counter()
        ct.system_matrices(g)
        ct.backprojection_matrix(g)
        return time.perf_counter() - start
    return make(), make()


def fbp_step_notes(size: int, full_views: int = 180) -> list[str]:
    """The FBP step's gain (:func:`inverse_step_gain`) for all views, 23 of them and 120° (the
    benchmark tasks)."""
    g = CTGeometry.parallel((size, size), n_views=full_views)
    masks = {"all": None, "23 evenly spaced": ct.view_mask(full_views, 23),
             "120° (limited angle)": ct.limited_angle_mask(g, 120.0)}
    def gain(mask) -> float:
        return inverse_step_gain(CTOperator(g, mask), (1, 1, size, size), torch.Generator().manual_seed(0))
    gains = ", ".join(f"{name} {gain(mask):.2f}" for name, mask in masks.items())
    return [f"- Largest eigenvalue of T⁻¹ Λ T (FBP after projection; above 2 the step "
            f"x + T⁻¹[Λ (y − T x)] diverges when repeated) on {full_views} views: {gains}."]


def astra_available() -> str | None:
    """None when ASTRA imports, else the reason."""
    try:
        import astra  # noqa: F401
    except Exception as err:  # missing wheel or a broken CUDA dependency
        return f"{type(err).__name__}: {err}"
    return None


def run(size: int, views: list[int], batches: list[int], repeats: int) -> str:
    torch.set_num_threads(THREADS)
    retain_freed_memory()  # as reconstruct() does; benchmarks/allocator.py compares glibc's defaults
    missing_astra = astra_available()
    rows, notes = [], []
    for n_views in views:
        g = CTGeometry.parallel((size, size), n_views=n_views)
        build, load = build_times(g)
        notes.append(f"- {n_views} views: matrices built in {build:.2f} s (cold), loaded from the disk "
                     f"cache in {load:.2f} s; {ct.system_matrices(g)[0]._nnz() / 1e6:.1f} M non-zeros per "
                     "projection matrix.")
        for batch in batches:
            x = images(size, batch)
            for name, method in METHODS.items():
                if name.startswith("ASTRA") and missing_astra:
                    continue
                t = method(g, x, repeats)
                rows.append(f"| {name} | {n_views} | {batch} | " + " | ".join(
                    f"{t[k]:.1f}" if k in t else "–" for k in ("forward", "adjoint", "fbp")) + " |")
                print(rows[-1], flush=True)
    notes += fbp_step_notes(size)
    if missing_astra:
        notes.append(f"- ASTRA skipped: it does not import here ({missing_astra}).")
    return table(size, repeats, rows, notes)


def table(size: int, repeats: int, rows: list[str], notes: list[str]) -> str:
    header = (f"# CT operator timings, {size}² parallel beam\n\n"
              f"Median of {repeats} runs (after one warm-up), milliseconds, {THREADS} threads, "
              f"torch {torch.__version__}.  `python benchmarks/ct_operators.py --size {size}`\n\n"
              "| method | views | batch | forward | adjoint | FBP |\n|---|---|---|---|---|---|\n")
    foot = ("\n\nNotes\n\n"
            "- scikit-image and ASTRA take one image at a time (batch = a loop); their 'adjoint' is the "
            "unfiltered back-projection (scikit-image's is pixel-driven, so not the exact transpose).\n"
            "- The matrix-free torch projector is timed for the forward projection only.\n"
            "- deepinv is left out: `pip install --dry-run deepinv` (0.5.0) would replace torch 2.13.0 CPU "
            "by torch 2.14.1 with CUDA 13 libraries and add torchvision (DESIGN.md: breaks beside a CPU torch).\n"
            "- A sparse-view operator (e.g. 23 of 180 views) keeps the full 180-view grid with a mask "
            "and costs what the 180-view row costs.\n")
    return header + "\n".join(rows) + foot + "\n".join(notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, nargs="+", default=[180, 23])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:  # cold builds, without touching the user's cache
        os.environ["SCORERECON_CACHE"] = cache
        text = run(args.size, args.views, args.batch, args.repeats)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output, suffix=".md") as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
