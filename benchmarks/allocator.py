"""glibc's default malloc against :func:`scorerecon.allocator.retain_freed_memory`, side by side.

Each workload runs twice in fresh processes, once with ``SCORERECON_MALLOC=default`` (glibc's
own settings) and once with the library's settings, and reports wall, user and system seconds,
minor page faults and peak memory of the workload (the child's own ``getrusage``; simulation
and model loading included).  Workloads:

* ``song-mri``: Song et al. on single-coil 8× equispaced MRI (mri-brain-0, 256², brain-mri);
* ``song-ct``:  Song et al. on 23-view CT (ct-head-0, 256², head-ct);
* ``fast-mri``: the fast sampler on the same MRI data (its preset's steps);
* ``sense-15x8``: 50 A^H A x of a 15-coil SENSE operator on a batch of 8 images of 320².

    python benchmarks/allocator.py                      # -> benchmarks/results/allocator.md
    python benchmarks/allocator.py --steps 3 --workloads song-mri   # script check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
WORKLOADS = ("song-mri", "song-ct", "fast-mri", "sense-15x8")
SETTINGS = {"glibc defaults": {"SCORERECON_MALLOC": "default"}, "retain_freed_memory": {}}


# ------------------------------------------------------------------- the child process
def run_workload(name: str, steps: int) -> None:
    """Run one workload in this process (the child) and print its own usage as a JSON line."""
    start = time.perf_counter()
    _workload(name, steps)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall": time.perf_counter() - start, "user": usage.ru_utime, "sys": usage.ru_stime,
                      "faults": usage.ru_minflt, "peak_mb": usage.ru_maxrss / 1024}))


def _workload(name: str, steps: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if name == "sense-15x8":
        return _sense_normals(size=320, coils=15, batch=8, repeats=50)
    import score_methods as sm
    from scorerecon.solvers.registry import reconstruct
    task, modality, prior = {"song-mri": ("mri-8x-equispaced", "mri", "brain-mri"),
                             "fast-mri": ("mri-8x-equispaced", "mri", "brain-mri"),
                             "song-ct": ("ct-sparse-view", "ct", "head-ct")}[name]
    _, settings = sm.TASKS[task]
    _, image, pixel = sm.evaluation_images(modality, 256, 1)[0]
    meas = sm.simulate(modality, image, pixel, settings)
    method = name.split("-")[0]
    reconstruct(meas, method, prior=prior, steps=None if method == "fast" else steps, samples=1,
                seed=0, progress=False)


def _sense_normals(size: int, coils: int, batch: int, repeats: int) -> None:
    import torch
    from mri_operators import benchmark_operator
    from scorerecon.allocator import retain_freed_memory
    retain_freed_memory()  # as reconstruct() does
    op = benchmark_operator(size, coils)
    x = torch.randn(batch, 1, size, size, dtype=torch.complex64)
    with torch.no_grad():
        for _ in range(repeats):
            op.normal(x)


# ------------------------------------------------------------------ the parent process
def measure(name: str, steps: int, threads: int, env: dict[str, str]) -> dict[str, float]:
    """Wall (from imports on), user, system seconds, minor faults and peak RSS (MB) of one child run."""
    child_env = {k: v for k, v in os.environ.items() if k != "SCORERECON_MALLOC"}
    child_env.update(env, OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(steps)], env=child_env,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_table(rows: list[tuple[str, str, dict]], args, command: str) -> str:
    lines = ["| workload | malloc | wall s | user s | system s | minor faults | peak MB |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, setting, r in rows:
        lines.append(f"| {name} | {setting} | {r['wall']:.1f} | {r['user']:.1f} | {r['sys']:.1f} | "
                     f"{r['faults'] / 1e6:.2f} M | {r['peak_mb']:.0f} |")
    lines += ["", f"Song steps: {args.steps}; {args.threads} threads; one run each, in this order; "
              "each child's own getrusage, wall time from its workload's start (imports and model "
              "loading included, interpreter start-up not).",
              "", "    " + command, ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of " + ", ".join(WORKLOADS))
    p.add_argument("--steps", type=int, default=50, help="steps of the Song workloads")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("-o", "--output", default=str(RESULTS / "allocator.md"))
    args = p.parse_args(argv)
    if args.child:
        return run_workload(args.child, args.steps)
    from score_methods import rerun_command, write_result  # the parent only: the children time their imports
    rows = []
    for name in args.workloads.split(","):
        for setting, env in SETTINGS.items():
            rows.append((name, setting, measure(name, args.steps, args.threads, env)))
            print(name, setting, {k: round(v, 2) for k, v in rows[-1][2].items()}, flush=True)
    write_result(args.output, format_table(rows, args, rerun_command(__file__, argv)))


if __name__ == "__main__":
    main()
