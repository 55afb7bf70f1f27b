"""The fast sampler's number of steps, chosen on validation slices.

``scorerecon tune`` runs the fast sampler for ⌊50 / K⌋ steps with K samples, so that at most 50
images pass through the network.  The issue's budget is 50 network evaluations, counted as in
every table here: sequential calls on the batch of K.  This script scores each task's preset at
its own number of steps and at the candidates (default 48) on the tuner's validation cases,
slices of the training sources held out from training and never the evaluation slices.
With ``--write-presets DIR`` it keeps, in each task's preset, the step count of highest mean
validation PSNR (the issue's metric) and records the measurements in the preset's provenance.

    python benchmarks/fast_steps.py --slices 2 --write-presets src/scorerecon/solvers/presets
    python benchmarks/fast_steps.py --quick          # 1 slice at 64², checks the script
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from score_methods import RESULTS, write_result
from scorerecon.solvers import tuning
from scorerecon.solvers.score import resolve_prior


def timed_fast_metrics(cases: list, settings: dict, prior, seed: int) -> dict[str, float]:
    """Mean PSNR and SSIM of the fast sampler over ``cases`` (the task's preset, ``settings`` over
    it), and its seconds per slice."""
    start = time.perf_counter()
    result = tuning.mean_metrics(cases, "fast", settings, prior, seed)
    return {**result, "seconds": (time.perf_counter() - start) / len(cases)}


def tuning_tasks(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma-separated tuning tasks of ``text``; an unknown one is a parser error naming them all."""
    tasks = text.split(",")
    unknown = sorted(set(tasks) - set(tuning.TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}: use {', '.join(tuning.TASKS)}")
    return tasks


def measure(task: str, candidates: list[int], args) -> tuple[dict, dict[int, dict]]:
    """(the task's fast preset, {steps: mean PSNR, SSIM and seconds per slice on validation})."""
    preset = tuning.load_preset(task).get("methods", {}).get("fast", {})
    cases = tuning.validation_cases(task, args.slices, size=args.size)
    prior = resolve_prior(None, cases[0].modality)
    own = preset.get("steps")
    results = {}
    for steps in sorted({*candidates, *([own] if own else [])}):
        results[steps] = timed_fast_metrics(cases, {"steps": steps}, prior, args.seed)
        print(f"{task}: {steps} steps, K = {preset.get('samples', 1)}: {results[steps]}", flush=True)
    return preset, results


def keep_best_steps(task: str, preset: dict, results: dict[int, dict], folder: str, command: str,
                    cases: int) -> int:
    """Write the step count of highest validation PSNR into ``folder``/<task>.json (other
    settings and the tuner's provenance kept); returns it."""
    best = max(results, key=lambda steps: results[steps]["psnr"])
    provenance = dict(tuning.load_preset(task).get("tuned", {}).get("fast", {}))
    provenance["steps_choice"] = {
        "psnr": {str(k): round(v["psnr"], 4) for k, v in results.items()},
        "ssim": {str(k): round(v["ssim"], 4) for k, v in results.items()},
        "cases": cases, "command": command, "date": time.strftime("%Y-%m-%d")}
    tuning.save_preset(task, "fast", {**preset, "steps": best}, provenance, folder)
    return best


def table(measured: dict[str, tuple[dict, dict[int, dict]]], args) -> str:
    lines = ["# Fast sampler: steps per task on validation slices", "",
             f"{args.slices} validation slices per task (val.npy of the task's dataset, seed {args.seed}) at "
             f"{args.size or 256}²; each task's preset with only the number of steps changed; NFE = steps "
             "(sequential network calls on the batch of K); 2 threads.", "",
             "| task | K | steps (NFE) | images through the network | PSNR (dB) | SSIM | s / slice |",
             "|---|---|---|---|---|---|---|"]
    for task, (preset, results) in measured.items():
        samples = int(preset.get("samples", 1))
        for steps, r in results.items():
            mark = " (preset)" if steps == preset.get("steps") else ""
            lines.append(f"| {task} | {samples} | {steps}{mark} | {samples * steps} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(tuning.TASKS), help="comma-separated subset of the tuning tasks")
    p.add_argument("--steps", default="48", help="comma-separated candidate step counts (≤ 50)")
    p.add_argument("--slices", type=int, default=2, help="validation slices per task (the presets' tuning used 2)")
    p.add_argument("--size", type=int, default=None, help="downsample the validation slices (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1 slice at 64², 3 steps: checks the script")
    p.add_argument("--write-presets", default=None, help="preset folder to write the chosen steps into")
    p.add_argument("-o", "--output", default=str(RESULTS / "fast_steps.md"))
    args = p.parse_args(argv)
    if args.quick:
        args.slices, args.size, args.steps = 1, 64, "3"
    tasks, candidates = tuning_tasks(p, args.tasks), [int(s) for s in args.steps.split(",")]
    if any(not 1 <= s <= tuning.FAST_EVALUATIONS for s in candidates):
        p.error(f"--steps {args.steps}: each count must lie between 1 and {tuning.FAST_EVALUATIONS} (the budget)")
    torch.set_num_threads(2)
    measured = {task: measure(task, candidates, args) for task in tasks}
    text = table(measured, args)
    if args.write_presets:
        command = "python benchmarks/fast_steps.py " + " ".join(argv if argv is not None else sys.argv[1:])
        chosen = {task: keep_best_steps(task, *measured[task], args.write_presets, command, args.slices)
                  for task in tasks}
        text += "\nSteps kept (highest validation PSNR): " + ", ".join(f"{t} {s}" for t, s in chosen.items()) + ".\n"
    write_result(args.output, text)


if __name__ == "__main__":
    main()
