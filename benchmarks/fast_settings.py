"""One setting of a sampler (the fast one unless ``--method``), swept on validation slices with
the rest of the preset kept.

A line search beside ``scorerecon tune``'s joint Bayesian search: this script scores each task's
preset at its own value of ``--setting`` (default ``steps``; where the preset has no value, the
method's default) and at the candidate ``--values`` on the tuner's validation cases (``val.npy``
of the task's dataset, never the evaluation slices).  With ``--write-presets DIR`` it keeps, in
each task's preset, the value of highest mean validation PSNR (the issue's metric) and records
the measurements in the preset's provenance (``<setting>_choice``).  The fast sampler's steps are
capped by the issue's budget of 50 network evaluations, counted as in every table here:
sequential calls on the batch of K (``--beyond-budget`` measures more steps, never kept in a
preset); the other samplers run the prior's N steps unless the preset says otherwise.

    python benchmarks/fast_settings.py --slices 2 --write-presets src/scorerecon/solvers/presets
    python benchmarks/fast_settings.py --tasks ct-sparse-view --setting start_sigma --values 0.1,0.2,0.4
    python benchmarks/fast_settings.py --method dps --tasks ct-limited-angle --setting zeta --values 0.3,3
    python benchmarks/fast_settings.py --tasks ct-many-view --views 90 --setting eta --values 0.5,2
    python benchmarks/fast_settings.py --tasks ct-sparse-view --values 100,200 --beyond-budget -o runs/steps.md
    python benchmarks/fast_settings.py --quick          # 1 slice at 64², checks the script
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from score_methods import RESULTS, best_over_slices, classical_rows, mean_rows, rerun_command, write_result
from scorerecon.cli_types import positive_int
from scorerecon.errors import UserError
from scorerecon.solvers import tuning
from scorerecon.solvers.score import posterior_sample_count, resolve_prior, settings_for


#: table titles of the samplers (others by their method name)
METHOD_TITLES = {"fast": "Fast sampler", "dps": "DPS", "song": "Song et al.", "chung": "Chung & Ye",
                 "langevin": "Langevin", "guidance": "Score-SDE guidance"}


def timed_metrics(cases: list, method: str, settings: dict, prior, seed: int) -> dict[str, float]:
    """Mean PSNR and SSIM of ``method`` over ``cases`` (the task's preset, ``settings`` over it),
    and its seconds per slice."""
    start = time.perf_counter()
    result = tuning.mean_metrics(cases, method, settings, prior, seed)
    return {**result, "seconds": (time.perf_counter() - start) / len(cases)}


def tuning_tasks(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The comma-separated tuning tasks of ``text``; an unknown one is a parser error naming them all."""
    tasks = text.split(",")
    unknown = sorted(set(tasks) - set(tuning.TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}: use {', '.join(tuning.TASKS)}")
    return tasks


#: the steps of a --quick run (any sampler), so that it checks the script in seconds
QUICK_STEPS = 4


def base_settings(args) -> dict:
    """The settings every run of the sweep shares beside the preset: 4 steps under --quick."""
    return {"steps": QUICK_STEPS} if args.quick else {}


def current_settings(args, task: str) -> dict:
    """What ``reconstruct`` would run for ``task`` now: the method's defaults, the task's preset
    over them, and the sweep's shared settings over both."""
    return settings_for(args.method, task, base_settings(args))


def measure(task: str, setting: str, candidates: list, args) -> tuple[dict, dict, dict]:
    """(the task's preset of ``args.method``, {value of ``setting``: mean PSNR, SSIM and seconds
    per slice on validation}, the best classical method on the same cases)."""
    preset = tuning.load_preset(task).get("methods", {}).get(args.method, {})
    cases = tuning.validation_cases(task, args.slices, size=args.size, views=args.views)
    prior = resolve_prior(None, cases[0].modality)
    own = current_settings(args, task).get(setting)
    classical = best_classical(task, cases)  # first: it loads the CT geometry's matrices, which every value then reuses
    results = {}
    for value in sorted({*candidates, *([own] if own is not None else [])}):
        settings = {**base_settings(args), setting: value}
        results[value] = timed_metrics(cases, args.method, settings, prior, args.seed)
        samples = posterior_sample_count(args.method, task, value if setting == "samples" else None)
        print(f"{task}: {setting} = {value}, K = {samples}: {results[value]}", flush=True)
    return preset, results, classical


def best_classical(task: str, cases: list) -> dict:
    """The classical method of highest mean PSNR over ``cases`` (as in score_methods), its mean
    PSNR and SSIM, and the validation slices the cases were simulated from."""
    name, rows = best_over_slices([classical_rows(meas, task) for meas in cases])
    mean = mean_rows(rows)
    return {"method": name, "psnr": mean["psnr"][0], "ssim": mean["ssim"][0],
            "slices": [meas.attrs["validation_slice"] for meas in cases]}


def keep_best(task: str, setting: str, preset: dict, results: dict, folder: str, command: str,
              cases: int, method: str = "fast", provenance: dict | None = None):
    """Write the value of ``setting`` of highest validation PSNR into ``method``'s entry of
    ``folder``/<task>.json (other settings and the tuner's provenance kept); returns it.  A
    changed value drops the entry's calibrated ``std_scale``, fitted to the old settings
    (``scorerecon tune --calibrate-std`` fits it again).  An entry the task takes from its
    fallback's preset becomes its own, the fallback's provenance nested under ``settings_from``.
    ``preset`` and ``provenance`` (default: read now) are the entry's as measured: a sweep of
    several tasks reads them all before it writes any, so a task that borrows its fallback's
    entry does not see the value just written there."""
    best = max(results, key=lambda value: results[value]["psnr"])
    provenance = dict(tuning.entry_provenance(task, method) if provenance is None else provenance)
    entry = {**preset, setting: best}
    if best != settings_for(method, task, {}, preset).get(setting) and "std_scale" in entry:
        del entry["std_scale"]
        provenance.pop("std_calibration", None)
        print(tuning.std_calibration_dropped(task, method, folder), flush=True)
    provenance[f"{setting}_choice"] = {
        "psnr": {str(k): round(v["psnr"], 4) for k, v in results.items()},
        "ssim": {str(k): round(v["ssim"], 4) for k, v in results.items()},
        "cases": cases, "source": tuning.validation_source(task), "command": command,
        "date": time.strftime("%Y-%m-%d")}
    tuning.save_preset(task, method, entry, provenance, folder)
    return best


def candidate_values(parser: argparse.ArgumentParser, method: str, setting: str, text: str,
                     beyond_budget: bool = False) -> list:
    """The comma-separated ``--values`` of ``method``'s ``setting``, typed and checked against its
    search space (``beyond_budget``: steps, the fast sampler's only, with no upper bound)."""
    if setting not in tuning.SEARCH_SPACES[method]:
        parser.error(f"--setting {setting}: {method} has {', '.join(sorted(tuning.SEARCH_SPACES[method]))}")
    kind, low, high = tuning.SEARCH_SPACES[method][setting]
    if beyond_budget and setting == "steps":
        high = float("inf")
    cast = int if kind in ("int", "log-int") else float
    try:
        values = [cast(v) for v in text.split(",")]
    except ValueError:
        parser.error(f"--values {text}: {setting} takes comma-separated {cast.__name__} values")
    if any(not low <= v <= high for v in values):
        bounds = f"be at least {low}" if high == float("inf") else f"lie between {low} and {high}"
        parser.error(f"--values {text}: each {setting} must {bounds}")
    return values


def views_note(args) -> str:
    """How the table's CT cases differ from the tasks' own: the ``--views`` they were simulated with."""
    return f", simulated with {args.views} views of 180 (not the task's own)" if args.views else ""


def table(measured: dict[str, tuple[dict, dict, dict]], args) -> str:
    lines = [f"# {METHOD_TITLES.get(args.method, args.method)}: {args.setting} per task on validation slices", "",
             f"{args.slices} validation slices per task ("
             f"{'; '.join(sorted({tuning.validation_source(t) for t in measured}))}; seed {args.seed}) at "
             f"{args.size or 256}²{views_note(args)}; each task's preset with only {args.setting} changed; steps: the "
             "preset's (— : the prior's N), sequential network calls on the batch of K; 2 threads.", "",
             f"| task | {args.setting} | K | steps (NFE) | images through the network | PSNR (dB) | SSIM | s / slice |",
             "|---|---|---|---|---|---|---|---|"]
    for task, (preset, results, classical) in measured.items():
        lines.append(f"| {task} | best classical ({classical['method']}) | — | — | — | "
                     f"{classical['psnr']:.2f} | {classical['ssim']:.4f} | — |")
        current = current_settings(args, task)
        for value, r in results.items():
            settings = {**current, args.setting: value}
            samples, steps = int(settings.get("samples", 1)), settings.get("steps")
            mark = " (preset)" if value == preset.get(args.setting) else (
                " (default)" if value == current.get(args.setting) else "")
            images = samples * steps if steps else "—"
            lines.append(f"| {task} | {value}{mark} | {samples} | {steps or '—'} | {images} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} | {r['seconds']:.1f} |")
    lines += ["", "Validation slices: " + "; ".join(
        f"{task}: {', '.join(classical['slices'])}" for task, (_, _, classical) in measured.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default=",".join(tuning.TASKS), help="comma-separated subset of the tuning tasks")
    p.add_argument("--method", default="fast", choices=sorted(tuning.SEARCH_SPACES),
                   help="the sampler whose preset setting is swept (default fast)")
    p.add_argument("--setting", default="steps", help="the preset setting to sweep (default steps)")
    p.add_argument("--values", default=None,
                   help="comma-separated candidate values (required but for --setting steps: default 48)")
    p.add_argument("--slices", type=positive_int, default=2, help="validation slices per task (the presets' tuning used 2)")
    p.add_argument("--size", type=positive_int, default=None, help="downsample the validation slices (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="1 slice at 64², 4 steps, written to the temporary folder: checks the script")
    p.add_argument("--write-presets", default=None, help="preset folder to write the chosen values into")
    p.add_argument("--views", type=positive_int, default=None,
                   help="simulate the CT cases with this many views of 180 instead of the task's own (each "
                        "of --tasks must be the task of that count: ct-sparse-view or ct-many-view; "
                        "not with --write-presets)")
    p.add_argument("--beyond-budget", action="store_true",
                   help="let --setting steps of the fast sampler exceed the budget of 50 network "
                        "evaluations (measured only: not with --write-presets)")
    p.add_argument("-o", "--output", default=None,
                   help="results file (default benchmarks/results/<method>_<setting>.md)")
    args = p.parse_args(argv)
    if args.beyond_budget and (args.method, args.setting) != ("fast", "steps"):
        p.error("--beyond-budget applies to the fast sampler's --setting steps only")
    if args.beyond_budget and args.write_presets:
        p.error("--beyond-budget measures steps no preset may take: leave out --write-presets")
    if args.views and args.write_presets:
        p.error("--views measures a task away from its own validation cases: leave out --write-presets")
    if (args.quick or args.size) and args.write_presets:
        p.error("--quick and --size measure other images (and --quick other steps) than the preset runs on: "
                "leave out --write-presets")
    if args.values is None and args.setting != "steps":
        p.error(f"--setting {args.setting} needs --values: the candidate values to measure")
    if args.quick:
        args.slices, args.size = 1, 64
        args.values = str(QUICK_STEPS) if args.setting == "steps" else args.values
        args.output = args.output or str(Path(tempfile.gettempdir()) / "fast_settings_quick.md")
    args.values = args.values or "48"
    tasks = tuning_tasks(p, args.tasks)
    candidates = candidate_values(p, args.method, args.setting, args.values, args.beyond_budget)
    try:
        for task in tasks:  # before any sweep: a count that leaves a task, or a preset folder
            tuning.simulation_settings(task, args.views)  # that cannot be written, is an error up front
            if args.write_presets:
                tuning.preset_file(task, args.write_presets)
    except UserError as err:
        sys.exit(f"fast_settings: {err}")
    torch.set_num_threads(2)
    try:
        measured = {task: measure(task, args.setting, candidates, args) for task in tasks}
    except UserError as err:
        sys.exit(f"fast_settings: {err}")
    command = rerun_command(__file__, argv)
    text = table(measured, args)
    output = args.output or str(RESULTS / f"{args.method}_{args.setting}.md")
    write_result(output, f"{text}\n    {command}\n")  # first: a failure writing presets loses no measurement
    if args.write_presets:
        records = {task: tuning.entry_provenance(task, args.method) for task in tasks}  # all before any write
        chosen = {task: keep_best(task, args.setting, *measured[task][:2], args.write_presets, command,
                                  args.slices, args.method, records[task]) for task in tasks}
        text += (f"\n{args.setting} kept (highest validation PSNR): "
                 + ", ".join(f"{t} {v}" for t, v in chosen.items()) + ".\n")
        write_result(output, f"{text}\n    {command}\n")


if __name__ == "__main__":
    main()
