"""Tuned presets per task, and ``scorerecon tune``: choose λ, snr, … by Bayesian optimisation.

Tasks.  :func:`task_of` names the task of a measurement: ``ct-sparse-view`` (fewer than
:data:`MANY_VIEWS` views), ``ct-many-view`` (at least that many), ``ct-limited-angle`` (attrs
``limited_angle``), ``ct-metal`` (extras ``metal_mask``), ``mri-single`` (one coil, a 1-D mask of
whole k-space lines), ``mri-single-2d`` (one coil, a 2-D mask: Poisson disc, radial, …),
``mri-multi`` (more than one coil).  :data:`TASKS` says how ``tune`` simulates validation cases of
each, and which task's preset a method falls back to where the task's own preset has no entry
for it (``ct-many-view`` falls back to ``ct-sparse-view``).

Presets.  ``<task>.json`` = ``{"task": ..., "methods": {"song": {"lam": 0.84, "snr": 0.25}, ...},
"tuned": {...provenance...}}``.  :func:`load_preset` merges, method by method, the files of
``$SCORERECON_PRESETS``, the user configuration folder (where ``tune`` writes by default) and the
presets shipped in the package (``scorerecon/solvers/presets``), earlier folders winning; a
method that no folder's ``<task>.json`` names takes the entry of the task's fallback, if any.
``reconstruct`` uses the result by default for the task.

Tuning (as Song et al. 2022 did for λ and snr: Bayesian optimisation, maximise SSIM).  Optuna's
TPE sampler (Bergstra et al. 2011; ``pip install scorerecon[tune]``) proposes settings in
:data:`SEARCH_SPACES`; each trial reconstructs validation cases and scores their mean SSIM
(``--objective psnr``: PSNR; the two can disagree, e.g. on multi-coil MRI).
Validation cases are simulated from ``val.npy`` of the task's prepared dataset, slices
spread over its stacks and away from their edges (:func:`validation_picks`; never the
evaluation slices): for CT, chest-ct, whose val is a patient that no shipped network saw
(presets tuned before 2026-12-04 used head-ct val, slices of the training patient); for MRI,
brain-mri, slices of the training template held out from training.  Or they are read from a
folder of measurement files with ground truth (``--cases``).

Resuming.  ``run_tune`` keeps every trial as it ends in a journal in the preset folder
(:func:`search_journal`, Optuna's JournalStorage), named by what the scores depend on; the same
search, stopped, continues from its finished trials and its stored baseline, and the journal is
removed when the search ends.

Calibration (``tune --calibrate-std``).  The standard deviation of K posterior samples is a
std map that can be too narrow (the fast sampler's samples, for one, all start from one warm
start); on the same validation cases :func:`calibrate_std` finds the factor that makes
|error| ≤ std hold on 68 % of the pixels, as for a Gaussian, and stores it in the preset as
``std_scale``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import check_output_folder, write_json
from ..cli_types import positive_int, seed_int
from ..errors import UserError
from ..operators.masks import keeps_whole_lines
from ..priors.experts import evenly_spaced

TASKS: dict[str, dict[str, Any]] = {
    "ct-sparse-view": {"dataset": "chest-ct", "simulate": {"views": 23, "full_views": 180}},
    "ct-many-view": {"dataset": "chest-ct", "simulate": {"views": 60, "full_views": 180},
                     "falls_back_to": "ct-sparse-view"},
    "ct-limited-angle": {"dataset": "chest-ct", "simulate": {"limited_angle": 120.0, "full_views": 180}},
    "ct-metal": {"dataset": "chest-ct", "simulate": {"metal": "auto", "full_views": 180}},
    "mri-single": {"dataset": "brain-mri", "simulate": {"mask": "equispaced", "acceleration": 8.0}},
    "mri-single-2d": {"dataset": "brain-mri", "simulate": {"mask": "poisson", "acceleration": 8.0}},
    "mri-multi": {"dataset": "brain-mri", "simulate": {"mask": "equispaced", "acceleration": 4.0, "coils": 8}},
}
#: the fewest acquired views of a ``ct-many-view`` measurement: above the geometric mean of the
#: two tasks' validation view counts (23 and 60), so a count takes the preset tuned nearer it in ratio
MANY_VIEWS = 38
#: what the validation slices of each tuning dataset are, for tables and provenance
VALIDATION_SOURCES = {"chest-ct": "chest-ct val: lung1, a CT patient no shipped network saw",
                      "brain-mri": "brain-mri val: held-out slices of the training template Colin27"}


def validation_source(task: str) -> str:
    """One line saying where ``task``'s validation cases come from."""
    return VALIDATION_SOURCES[TASKS[task]["dataset"]]


#: the fast sampler's budget of network evaluations per image (the issue's bound of 50): its
#: number of steps, each one network call on the batch of its K samples
FAST_EVALUATIONS = 50
#: name -> (kind, low, high): "float" uniform, "log" log-uniform, "int" integer, "log-int"
#: integer drawn log-uniformly (fine resolution at few steps, coarse at many)
SEARCH_SPACES: dict[str, dict[str, tuple]] = {
    "song": {"lam": ("float", 0.0, 1.0), "snr": ("float", 0.02, 0.5)},
    "chung": {"snr": ("float", 0.02, 0.5)},
    "guidance": {"snr": ("float", 0.02, 0.5), "gamma": ("log", 1e-3, 1.0)},
    "langevin": {"step_size": ("log", 1e-3, 0.5), "gamma": ("log", 1e-3, 1.0)},
    "dps": {"zeta": ("log", 0.01, 10.0)},
    "fast": {"eta": ("float", 0.0, 4.0), "cg_iterations": ("int", 1, 10), "gamma": ("log", 1e-4, 1.0),
             "start_sigma": ("log", 0.02, 1.0), "samples": ("int", 1, 8), "zeta": ("float", 0.0, 5.0),
             "steps": ("log-int", 4, FAST_EVALUATIONS)},
}
#: what a trial maximises: the mean over the validation cases of one of these metrics
OBJECTIVES = ("ssim", "psnr")
PRESETS_ENV = "SCORERECON_PRESETS"


# ------------------------------------------------------------------------------ tasks
def task_of(meas) -> str:
    """The task name of a measurement (see the module docstring)."""
    if meas.modality == "ct":
        if "metal_mask" in meas.extras:
            return "ct-metal"
        if meas.attrs.get("limited_angle"):
            return "ct-limited-angle"
        return views_task(acquired_views(meas))
    coils = meas.data.shape[0] if np.ndim(meas.data) == 3 else 1
    if coils > 1:
        return "mri-multi"
    return "mri-single" if keeps_whole_lines(meas.mask) else "mri-single-2d"


def views_task(views: int) -> str:
    """The task of a full-angle CT measurement of ``views`` acquired views, without metal."""
    return "ct-many-view" if views >= MANY_VIEWS else "ct-sparse-view"


def acquired_views(meas) -> int:
    """The number of views of a CT measurement with at least one measured bin (the rows of its
    mask, broadcast to the sinogram's shape)."""
    mask = np.broadcast_to(np.asarray(meas.mask), np.shape(meas.data))
    return int(mask.reshape(mask.shape[0], -1).any(axis=1).sum())


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")


# ---------------------------------------------------------------------------- presets
def user_presets_dir() -> Path:
    """The user's preset folder, where ``tune`` writes unless told otherwise (-o)."""
    from platformdirs import user_config_dir
    return Path(user_config_dir("scorerecon")) / "presets"


def preset_dirs() -> list[Path]:
    """Folders searched for presets, first match wins."""
    dirs = [Path(os.environ[PRESETS_ENV]).expanduser()] if os.environ.get(PRESETS_ENV) else []
    dirs.append(user_presets_dir())
    dirs.append(Path(__file__).resolve().parent / "presets")  # shipped with the package
    return dirs


def load_preset(task: str, fallback: bool = True) -> dict:
    """The preset of ``task`` ({} when there is none), merged method by method over
    :func:`preset_dirs` (earlier folders win) and, unless ``fallback`` is False, over the preset
    of the task's fallback (a method the task's own files name wins); an entry's provenance comes
    from the file its settings come from.  A malformed file raises UserError."""
    parent = TASKS.get(task, {}).get("falls_back_to") if fallback else None
    own: dict = {"methods": {}, "tuned": {}}
    for folder in reversed(preset_dirs()):
        preset = _read_preset(folder / f"{task}.json")
        if preset is None:
            continue
        for method, entry in preset.get("methods", {}).items():
            own["methods"][method] = entry
            own["tuned"].pop(method, None)
            if method in preset.get("tuned", {}):
                own["tuned"][method] = preset["tuned"][method]
    merged = load_preset(parent) if parent else {}
    named = own.get("methods", {})
    for key in ("methods", "tuned"):  # an entry of the task's own replaces the fallback's, provenance too
        table = {m: v for m, v in merged.get(key, {}).items() if m not in named}
        table.update(own.get(key, {}))
        if table:
            merged[key] = table
    if merged:
        merged["task"] = task
    return merged


def preset_task(task: str, method: str) -> str:
    """The task whose preset entry ``method`` runs for a measurement of ``task``: ``task`` itself,
    or its fallback where only the fallback's preset names ``method``."""
    parent = TASKS.get(task, {}).get("falls_back_to")
    if (parent and method not in load_preset(task, fallback=False).get("methods", {})
            and method in load_preset(parent).get("methods", {})):
        return preset_task(parent, method)
    return task


def entry_provenance(task: str, method: str) -> dict:
    """The provenance to save with ``method``'s entry as ``task``'s own: the entry's record, or,
    where the entry is the fallback's (:func:`preset_task`), that record nested under
    ``settings_from``, less its std calibration (fitted on the fallback's cases)."""
    owner = preset_task(task, method)
    tuned = dict(load_preset(owner).get("tuned", {}).get(method, {}))
    if owner == task:
        return tuned
    tuned.pop("std_calibration", None)
    return {"settings_from": {"task": owner, "tuned": tuned}}


def _read_preset(path: Path) -> dict | None:
    """The preset stored at ``path`` (None when there is none); a malformed one is a UserError."""
    if not path.is_file():
        return None
    try:
        preset = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"preset {path} is not valid JSON ({err}): fix or delete it") from None
    if not isinstance(preset, dict) or not isinstance(preset.get("methods", {}), dict):
        raise UserError(f"preset {path} has no 'methods' table: fix or delete it")
    return preset


def preset_file(task: str, folder: str | os.PathLike | None = None) -> tuple[Path, dict | None]:
    """``folder``/<task>.json (default: :func:`user_presets_dir`) and the preset already
    there (None), checked before tuning without making anything: the folder can be made or
    written, and that preset is readable."""
    folder = check_output_folder(folder if folder is not None else user_presets_dir())
    path = folder / f"{task}.json"
    if path.is_dir():
        raise UserError(f"{path} is a folder: move it, or give tune another -o")
    return path, _read_preset(path)


def save_preset(task: str, method: str, params: dict, provenance: dict,
                folder: str | os.PathLike | None = None) -> Path:
    """Merge ``params`` for ``method`` into ``folder``/<task>.json (atomically); returns the path."""
    path, preset = preset_file(task, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    preset = preset or {"task": task, "methods": {}}
    preset.setdefault("methods", {})[method] = params
    preset.setdefault("tuned", {})[method] = provenance
    return write_json(path, preset)


def _searched(folder: Path) -> bool:
    """Whether ``reconstruct`` reads presets from ``folder`` (:func:`preset_dirs`)."""
    return folder.resolve() in [searched.resolve() for searched in preset_dirs()]


def hidden_by(task: str, method: str, path: Path) -> Path | None:
    """The preset file of a folder searched before ``path``'s (:func:`preset_dirs`) that has its
    own ``method`` entry for ``task``, so that ``reconstruct`` uses that one instead (None: none,
    or ``path``'s folder is not searched at all)."""
    folders, here = [folder.resolve() for folder in preset_dirs()], path.parent.resolve()
    for folder in folders[:folders.index(here)] if here in folders else []:
        preset = _read_preset(folder / f"{task}.json")
        if preset and method in preset.get("methods", {}):
            return folder / f"{task}.json"
    return None


# ------------------------------------------------------------------- validation cases
def validation_cases(task: str, slices: int = 4, dataset_dir: str | os.PathLike | None = None,
                     seed: int = 0, size: int | None = None, views: int | None = None) -> list:
    """Measurements with ground truth simulated from ``val.npy`` of the task's dataset, at each
    slice's pixel size (``meta.json``).

    ``slices`` validation slices chosen by :func:`validation_picks`; ``size`` optionally
    downsamples them (quick runs); ``views`` replaces the task's number of CT views (one that
    :func:`task_of` gives to another task is a UserError naming it).
    """
    from ..data.datasets import load_meta, load_split, prepare_again
    _check_task(task)
    simulate = simulation_settings(task, views)
    name = TASKS[task]["dataset"]
    images = load_split(name, "val", dataset_dir)
    meta = load_meta(name, dataset_dir).get("slices")
    meta = meta.get("val") if isinstance(meta, dict) else None
    try:
        spacings = [float(s["spacing_mm"][-1]) for s in meta]
    except (TypeError, KeyError, IndexError, ValueError):
        spacings = []
    if len(spacings) != len(images) or not len(images):
        raise UserError(f"the {name} dataset's val split holds {len(images)} slices and its meta.json "
                        f"describes {len(spacings)} with a spacing: {prepare_again(name)}")
    # a slice without provenance (a dataset prepared by hand) counts as one stack, val.npy in order
    sources = [s.get("source", f"{name}:val:{i}") for i, s in enumerate(meta)]
    cases = []
    for k, i in enumerate(validation_picks(sources, slices)):
        image = _resize(images[i], size)
        cases.append(_simulate(task, image, spacings[i] * images[i].shape[-1] / image.shape[-1], seed + k, simulate))
        cases[-1].attrs["validation_slice"] = sources[i]
    return cases


def validation_picks(sources: list[str], count: int) -> list[int]:
    """Indices of ``count`` (at most) representative validation slices, given each slice's
    provenance ``"volume:plane:index"`` in stack order (``meta.json``).

    The picks are shared out over the stacks (one volume in one plane), the remainder to stacks
    evenly spaced over the list, and inside a stack they sit at the centres of equal parts of it.
    So a stack's first and last slices, the edges of the anatomy (a skull base, a sliver of
    cortex), are never picked unless a stack has only one or two slices.  Until 2026-12-05
    ``tune`` took slices evenly spaced from the first to the last, and with ``--slices 2`` those
    were exactly the two edges.
    """
    stacks: dict[str, list[int]] = {}
    for index, source in enumerate(sources):
        stacks.setdefault(source.rsplit(":", 1)[0], []).append(index)
    members = list(stacks.values())
    shares = [count // len(members)] * len(members)
    for stack in evenly_spaced(np.arange(len(members)), count % len(members)):
        shares[stack] += 1
    picks = []
    for stack, share in zip(members, shares):
        share = min(share, len(stack))
        picks += [stack[int((k + 0.5) * len(stack) / share)] for k in range(share)]
    return picks


def _resize(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or size == image.shape[0]:
        return image
    from skimage.transform import resize
    return resize(image, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float32)


def simulation_settings(task: str, views: int | None = None) -> dict:
    """The simulation settings of ``task``'s validation cases, with ``views`` CT views if given."""
    settings = dict(TASKS[task]["simulate"])
    if views is None:
        return settings
    if "views" not in settings:
        raise UserError(f"{task} has no number of views: one applies to "
                        f"{', '.join(t for t in TASKS if 'views' in TASKS[t]['simulate'])}")
    owner = views_task(views)
    if owner != task:
        raise UserError(f"{views} views is a {owner} measurement: use that task with this number of views")
    return {**settings, "views": int(views)}


def _simulate(task: str, unit_image: np.ndarray, pixel_mm: float, seed: int, settings: dict):
    if task.startswith("ct"):
        from ..data.intensity import unit_to_hu
        from ..simulate.ct import simulate_ct
        return simulate_ct(unit_to_hu(unit_image), pixel_size=pixel_mm, seed=seed, **settings)
    from ..simulate.mri import simulate_mri
    return simulate_mri(unit_image, pixel_size=(pixel_mm, pixel_mm), seed=seed, **settings)


def read_cases(folder: str | os.PathLike) -> list:
    """Measurement files (*.h5) with ground truth from ``folder``, each named in its
    ``attrs["validation_slice"]`` as the simulated cases are."""
    from ..data.measurement import read_measurement
    if not Path(folder).is_dir():
        raise UserError(f"--cases {folder} is not a folder: give the folder that holds the .h5 cases")
    paths = sorted(Path(folder).glob("*.h5"))
    if not paths:
        raise UserError(f"{folder} holds no .h5 measurement files: simulate some with 'scorerecon simulate'")
    cases = [read_measurement(p) for p in paths]
    if any(c.truth is None for c in cases):
        raise UserError(f"every case in {folder} needs a ground truth: use simulated measurements")
    for case, path in zip(cases, paths):
        case.attrs["validation_slice"] = path.name
    return cases


# ------------------------------------------------------------------------------ tuning
def search_space(method: str, steps: int | None) -> dict[str, tuple]:
    """The settings a search of ``method`` draws: :data:`SEARCH_SPACES`, less the steps when
    they are fixed (``--steps``)."""
    space = dict(SEARCH_SPACES[method])
    if steps is not None:
        space.pop("steps", None)
    return space


def _distributions(space: dict[str, tuple]) -> dict:
    """Optuna distributions of a search space (name -> (kind, low, high))."""
    from optuna.distributions import FloatDistribution, IntDistribution
    return {name: IntDistribution(low, high, log=kind == "log-int") if kind.endswith("int")
            else FloatDistribution(low, high, log=kind == "log")
            for name, (kind, low, high) in space.items()}


def _suggest(trial, space: dict[str, tuple]) -> dict:
    params = {}
    for name, (kind, low, high) in space.items():
        if kind.endswith("int"):
            params[name] = trial.suggest_int(name, low, high, log=kind == "log-int")
        else:
            params[name] = trial.suggest_float(name, low, high, log=kind == "log")
    return params


def trial_settings(params: dict, steps: int | None) -> dict:
    """The settings a trial runs: ``params`` with the fixed ``steps``, if any (otherwise the
    steps are among ``params`` or the method's default applies)."""
    return {**params, "steps": steps} if steps else dict(params)


def mean_metrics(cases: list, method: str, settings: dict, prior, seed: int) -> dict[str, float]:
    """Each metric of :data:`OBJECTIVES`, averaged over ``cases``, of ``method`` with
    ``settings`` (as :func:`trial_settings` returns)."""
    from .registry import reconstruct
    values = [reconstruct(meas, method, prior=prior, seed=seed, progress=False, **settings).metrics(meas)
              for meas in cases]
    return {name: float(np.mean([v[name] for v in values])) for name in OBJECTIVES}


def score_settings(cases: list, method: str, settings: dict, prior, seed: int, objective: str = "ssim") -> float:
    """Mean ``objective`` (:data:`OBJECTIVES`) of ``method`` with ``settings`` over ``cases``."""
    return mean_metrics(cases, method, settings, prior, seed)[objective]


def _inside(settings: dict, space: dict[str, tuple]) -> dict:
    """The numeric ``settings`` that lie in ``space`` (name -> (kind, low, high))."""
    return {k: v for k, v in settings.items()
            if k in space and isinstance(v, (int, float)) and space[k][1] <= v <= space[k][2]}


def _optuna():
    """The optuna module, or a UserError saying how to install it."""
    try:
        import optuna
    except ModuleNotFoundError:
        raise UserError("tuning needs Optuna: pip install 'scorerecon[tune]'") from None
    return optuna


def open_study(journal: Path | None, seed: int):
    """The Optuna study of a search (TPE, maximising): in memory, or kept in the file ``journal``
    (Optuna's JournalStorage), where a search that was stopped is found again.  The sampler is
    seeded with ``seed`` plus the trials the study holds, so a search found again draws new
    settings instead of replaying its first draws."""
    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = None
    if journal is not None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="tune", storage=storage, load_if_exists=True, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    if study.trials:
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _finished_trials(study) -> int:
    """The search's trials that ran to the end (not the current settings recorded unrun)."""
    from optuna.trial import TrialState
    return sum(t.state == TrialState.COMPLETE and not t.user_attrs.get("start") for t in study.trials)


def tune(cases: list, method: str, prior, *, trials: int = 20, steps: int | None = None, seed: int = 0,
         start: dict | None = None, start_value: float | None = None, callback=None,
         objective: str = "ssim", study=None) -> tuple[dict, float]:
    """Bayesian optimisation (Optuna TPE, seeded) of ``method``'s settings; returns (the best
    trial's settings, steps included when fixed or searched, and its mean ``objective``: SSIM as
    Song et al. tuned, or PSNR).  The fast sampler searches its steps (up to
    :data:`FAST_EVALUATIONS`) beside its other settings unless ``steps`` fixes them.

    ``start`` (e.g. the current preset) is the first trial (Optuna's ``enqueue_trial``), so the
    search knows a good setting before its random start-up trials; settings of it outside the
    search space are drawn instead.  With ``start_value`` (its SSIM, already measured) it is
    recorded as a finished trial instead of being run again.  Settings that make the sampler
    diverge score -inf (below any finite trial) instead of stopping the search.

    ``study`` (:func:`open_study`; default: a new one in memory) kept in a journal keeps every
    trial there as it ends, and a search stopped part way continues from its finished trials up
    to ``trials`` (new draws, though not those an unstopped run would have made).
    """
    optuna = _optuna()
    if method not in SEARCH_SPACES:
        raise UserError(f"method {method!r} has nothing to tune: choose one of {', '.join(SEARCH_SPACES)}")
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    study = open_study(None, seed) if study is None else study
    space = search_space(method, steps)
    known = _inside(start or {}, space)
    if known and not study.trials:  # a search found again holds its first trial already
        if start_value is not None:
            study.add_trial(optuna.trial.create_trial(params=known, value=start_value, user_attrs={"start": True},
                                                      distributions=_distributions(space)))
        else:
            study.enqueue_trial(known)

    def trial_value(trial) -> float:
        params = trial_settings(_suggest(trial, space), steps)
        try:
            return score_settings(cases, method, params, prior, seed, objective)
        except UserError as err:
            if "NaN/Inf" not in str(err):
                raise
            return float("-inf")

    callbacks = [lambda study, trial: callback(trial.number, trial.params, trial.value)] if callback else []
    study.optimize(trial_value, n_trials=max(trials - _finished_trials(study), 0), callbacks=callbacks)
    return trial_settings(dict(study.best_params), steps), float(study.best_value)


def run_tune(task: str, method: str, *, prior: str, trials: int = 20, steps: int | None = None,
             slices: int = 4, cases_dir: str | None = None, dataset_dir: str | None = None,
             size: int | None = None, output: str | None = None, seed: int = 0, objective: str = "ssim",
             log=print) -> Path | None:
    """The ``scorerecon tune`` command: build cases, tune, save the preset; returns its path
    (None when no trial beat the current settings).  The saved entry is the one the trials ran
    on, the searched settings replaced by the best trial's: settings outside the search (e.g.
    ``corrector_steps``) keep their value, a ``std_scale`` fitted to the old settings is dropped."""
    from ..priors.registry import prior_digest
    from .score import DEFAULT_PRIOR, resolve_prior, settings_for
    _optuna()  # before any reconstruction
    cases = _tuning_cases(task, output, slices, cases_dir, dataset_dir, seed, size)
    loaded = resolve_prior(prior, cases[0].modality)
    current_run = trial_settings({}, steps)
    name = objective.upper()
    journal = search_journal(task, method, prior_digest(prior or DEFAULT_PRIOR[cases[0].modality]),
                             settings_for(method, task, {}), steps, seed, objective, cases,
                             preset_file(task, output)[0].parent)
    journal.parent.mkdir(parents=True, exist_ok=True)
    study = open_study(journal, seed)
    if "baseline" in study.user_attrs:
        baseline = float(study.user_attrs["baseline"])
        log(f"{task} {method}: found the search stopped in {journal} ({_finished_trials(study)} of {trials} "
            "trials ran): continuing it")
    else:
        baseline = score_settings(cases, method, current_run, loaded, seed, objective)
        study.set_user_attr("baseline", baseline)
    log(f"{task} {method}: {len(cases)} validation cases, current settings {name} {baseline:.4f}")
    # the current settings start the search; when a trial of them is the run just scored, it is not run again
    current = settings_for(method, task, {})
    space = search_space(method, steps)
    known = _inside(current, space)
    rerun = trial_settings(known, steps)
    same = set(known) == set(space) and (
        settings_for(method, task, rerun) == settings_for(method, task, current_run))
    start = time.perf_counter()
    best, value = tune(cases, method, loaded, trials=trials, steps=steps, seed=seed, start=current,
                       start_value=baseline if same else None, objective=objective, study=study,
                       callback=lambda k, p, v: log(f"  trial {k}: {name} {v:.4f}  {p}"))
    entry = load_preset(task).get("methods", {}).get(method, {})
    saved = {**{k: v for k, v in entry.items() if k != "std_scale"}, **best}
    provenance = {objective: value, f"{objective}_before": baseline, "objective": objective,
                  "trials": trials, "cases": len(cases),
                  "source": cases_dir or validation_source(task),
                  "slices": [c.attrs["validation_slice"] for c in cases],
                  "prior": str(prior or loaded.metadata.get("name")),
                  "steps": saved.get("steps"), "seconds": round(time.perf_counter() - start, 1),
                  "date": time.strftime("%Y-%m-%d")}
    if value <= baseline:
        log(f"no trial beat the current settings ({value:.4f} <= {baseline:.4f}): preset unchanged")
        _remove_journal(journal)
        return None
    path = save_preset(task, method, saved, provenance, output)  # steps stored: it reproduces the run
    _remove_journal(journal)
    log(f"best {name} {value:.4f} with {best}: wrote {path}")
    hiding = hidden_by(task, method, path)
    if not _searched(path.parent):
        log(f"note: reconstruct reads presets from ${PRESETS_ENV}, the user folder and the shipped ones: "
            f"{PRESETS_ENV}={path.parent} makes it use this one")
    elif hiding is not None:
        log(f"note: {hiding} has its own {method} entry for {task}, which reconstruct uses instead")
    if "std_scale" in current:  # fitted to the settings just replaced
        log(std_calibration_dropped(task, method, output))
    return path


def search_journal(task: str, method: str, prior: str, settings: dict, steps: int | None, seed: int,
                   objective: str, cases: list, folder: Path) -> Path:
    """Where ``run_tune`` keeps the trials of one search as they end (:func:`open_study`): a hidden
    file in the preset folder named by everything the trials' scores depend on (the prior's
    weights, the settings in effect, the cases' data and truths), so that only the same search is
    continued."""
    def digest(array) -> str:
        return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]
    identity = {"task": task, "method": method, "prior": prior, "settings": settings, "steps": steps, "seed": seed,
                "objective": objective,
                "cases": [[digest(c.data), digest(c.mask), digest(np.asarray(c.truth, np.float32))] for c in cases]}
    name = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return folder / f".tune-{task}-{method}-{name}.journal"


def _remove_journal(journal: Path) -> None:
    """Remove a finished search's journal and the lock file Optuna may leave beside it."""
    for path in (journal, journal.with_name(journal.name + ".lock")):
        path.unlink(missing_ok=True)


def _tuning_cases(task: str, output: str | None, slices: int, cases_dir: str | None,
                  dataset_dir: str | None, seed: int, size: int | None) -> list:
    """The validation cases of ``tune`` (read from ``cases_dir``, else simulated), once the preset
    folder ``output`` is known to be writable (a bad -o fails before the work)."""
    _check_task(task)
    preset_file(task, output)
    cases = read_cases(cases_dir) if cases_dir else validation_cases(task, slices, dataset_dir, seed, size)
    wrong = [task_of(c) for c in cases if task_of(c) != task]
    if wrong:
        raise UserError(f"the cases are {wrong[0]} measurements, not {task}: "
                        f"tune {wrong[0]} (the first argument) or pass {task} cases")
    return cases


def _check_draws_samples(method: str, task: str, preset: dict | None = None) -> None:
    """A std map to calibrate needs K > 1 posterior samples in ``preset`` (an entry of ``method``
    for ``task``; default: the preset in effect)."""
    from .score import posterior_sample_count
    if posterior_sample_count(method, task, preset=preset) < 2:
        raise UserError(f"{method}'s preset for {task} draws one posterior sample, so there is no std map to "
                        "calibrate: calibrate a method whose preset draws K > 1 (--method fast)")


def std_calibration_dropped(task: str, method: str, folder) -> str:
    """What to say when a preset's settings changed under its calibrated ``std_scale``."""
    where = f" -o {folder}" if folder is not None else ""
    return (f"{task}: the std map's calibration was dropped with the settings it was fitted to: "
            f"scorerecon tune {task} --method {method} --calibrate-std{where} fits it again")


def calibrate_std(cases: list, method: str, prior, seed: int = 0, settings: dict | None = None) -> dict:
    """Calibrate the scale of ``method``'s std map on validation ``cases``
    (:func:`~scorerecon.evaluation.metrics.std_scale_for_coverage`): reconstruct each with
    ``settings`` (a preset's entry for ``method``, the method's defaults under it; default: the
    task's preset in effect) and no scale, pool |error| and std over all their
    pixels (outside any metal), and return the factor c that puts |error| ≤ c·std on 68.27 % of
    them, with the coverage before and after (:func:`~scorerecon.evaluation.metrics.std_coverage`;
    after: 68 % within 1 std by construction, on the same pixels)."""
    from ..evaluation.metrics import std_coverage, std_scale_for_coverage
    from .score import settings_for
    task = task_of(cases[0])
    given = {} if settings is None else settings_for(method, task, {}, settings)
    options = {k: v for k, v in given.items() if k != "std_scale"}
    _check_draws_samples(method, task, settings)
    error, std = unscaled_error_and_std(cases, method, prior, seed, **options)
    scale = std_scale_for_coverage(error, std)
    return {"std_scale": scale, "before": std_coverage(error, std), "after": std_coverage(error, scale * std)}


def unscaled_error_and_std(cases: list, method: str, prior, seed: int = 0,
                           **options) -> tuple[np.ndarray, np.ndarray]:
    """|error| and the samples' own std map (``std_scale`` 1) of ``method`` with ``options`` on
    every case, pooled over their pixels outside any metal (what a std scale is fitted on)."""
    from ..evaluation.metrics import error_and_std
    from .registry import reconstruct
    pairs = []
    for meas in cases:
        result = reconstruct(meas, method, prior=prior, seed=seed, progress=False, **options, std_scale=1.0)
        pairs.append(error_and_std(result.image, result.std, meas.truth, meas.extras.get("metal_mask")))
    error, std = (np.concatenate(parts) for parts in zip(*pairs))
    return error, std


def preset_to_calibrate(task: str, method: str, output: str | None) -> tuple[dict, dict]:
    """The settings and provenance of ``method``'s preset for ``task`` that ``--calibrate-std``
    fits and writes back: those of the preset in ``output`` where it has the method (the scale
    must fit the settings stored beside it), else those in effect (:func:`load_preset`; an entry
    taken from the task's fallback keeps its record as :func:`entry_provenance` nests it)."""
    there = preset_file(task, output)[1] if output is not None else None
    if there and method in there.get("methods", {}):
        return dict(there["methods"][method]), dict(there.get("tuned", {}).get(method, {}))
    return dict(load_preset(task).get("methods", {}).get(method, {})), entry_provenance(task, method)


def run_calibrate_std(task: str, method: str, *, prior: str | None, slices: int = 4, cases_dir: str | None = None,
                      dataset_dir: str | None = None, size: int | None = None, output: str | None = None,
                      seed: int = 0, log=print) -> Path:
    """``scorerecon tune TASK --calibrate-std``: calibrate the std map of ``method``'s preset
    (:func:`preset_to_calibrate`: the one in ``output`` where that folder has it, else the one in
    effect; :func:`calibrate_std`) and save that preset again with its ``std_scale``.  A later
    ``tune`` of the method replaces the whole entry, the scale with it (it fits the old settings)."""
    from ..evaluation.metrics import GAUSSIAN_WITHIN_1STD
    from .score import resolve_prior
    _check_task(task)
    settings, tuned = preset_to_calibrate(task, method, output)
    _check_draws_samples(method, task, settings)  # before any work
    cases = _tuning_cases(task, output, slices, cases_dir, dataset_dir, seed, size)
    loaded = resolve_prior(prior, cases[0].modality)
    start = time.perf_counter()
    fit = calibrate_std(cases, method, loaded, seed, settings)
    params = {**settings, "std_scale": round(fit["std_scale"], 4)}
    rounded = {when: {k: round(v, 4) for k, v in fit[when].items()} for when in ("before", "after")}
    calibration = {"coverage": GAUSSIAN_WITHIN_1STD, **rounded, "cases": len(cases),
                   "source": cases_dir or validation_source(task),
                   "slices": [c.attrs.get("validation_slice") for c in cases], "size": size,
                   "prior": str(prior or loaded.metadata.get("name")),
                   "seconds": round(time.perf_counter() - start, 1), "date": time.strftime("%Y-%m-%d")}
    provenance = {**tuned, "std_calibration": calibration}
    path = save_preset(task, method, params, provenance, output)
    log(f"{task} {method}: std × {params['std_scale']} (fitted so that |error| ≤ std on 68 % of the pixels of "
        f"{len(cases)} validation case{'s' * (len(cases) > 1)}, where {rounded['before']['within_1std']:.0%} were "
        f"before); within 2 std: {rounded['after']['within_2std']:.0%} (before {rounded['before']['within_2std']:.0%}): "
        f"wrote {path}")
    return path


# ------------------------------------------------------------------------ command line
def add_tune_command(sub) -> None:
    """``scorerecon tune TASK``: registered in cli._EXTRA_COMMANDS."""
    p = sub.add_parser("tune", help="tune a score-based method's settings on validation cases "
                                    "(Bayesian optimisation of SSIM or PSNR) and save them as the task's preset")
    p.add_argument("task", choices=list(TASKS), help="the task whose preset is tuned")
    p.add_argument("--method", default="song", choices=list(SEARCH_SPACES), help="method to tune (default song)")
    p.add_argument("--prior", default=None, help="prior name or file (default: the modality's shipped prior)")
    p.add_argument("--trials", type=positive_int, default=None, help="optimisation trials (default 20)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampler steps N (default: the method's; "
                   "the fast sampler searches them up to the budget of 50 network evaluations)")
    p.add_argument("--slices", type=positive_int, default=None, help="validation slices from val.npy (default 4)")
    p.add_argument("--cases", default=None, help="folder of measurement .h5 files with ground truth to use "
                                                  "instead of simulated validation slices")
    p.add_argument("--data", default=None, help="prepared dataset folder (default: the user cache)")
    p.add_argument("--size", type=positive_int, default=None, help="downsample validation slices (quick runs)")
    p.add_argument("-o", "--output", default=None, help="preset folder (default: the user presets folder)")
    p.add_argument("--objective", default=None, choices=OBJECTIVES,
                   help="mean metric over the cases to maximise (default ssim, as Song et al.)")
    p.add_argument("--calibrate-std", action="store_true",
                   help="instead of tuning: scale the std map of the method's preset (the one in -o where "
                        "that folder has it, else the one in effect) so that |error| <= std on 68%% of the "
                        "validation pixels, and save that factor in the preset")
    p.add_argument("--seed", type=seed_int, default=0)
    p.set_defaults(handler=_run_tune_command)


def _run_tune_command(args) -> None:
    if args.cases is not None:
        simulated = [f"--{name}" for name in ("slices", "data", "size") if getattr(args, name) is not None]
        if simulated:
            raise UserError(f"{', '.join(simulated)} choose the simulated validation slices, which --cases "
                            "replaces: drop them, or drop --cases")
    args.slices = args.slices or 4
    if args.calibrate_std:
        searched = [f"--{name}" for name in ("trials", "steps", "objective") if getattr(args, name) is not None]
        if searched:
            raise UserError(f"{', '.join(searched)} steer the search, which --calibrate-std does not run: "
                            "drop them, or tune first and calibrate after")
        run_calibrate_std(args.task, args.method, prior=args.prior, slices=args.slices, cases_dir=args.cases,
                          dataset_dir=args.data, size=args.size, output=args.output, seed=args.seed)
        return
    run_tune(args.task, args.method, prior=args.prior, trials=args.trials or 20, steps=args.steps,
             slices=args.slices, cases_dir=args.cases, dataset_dir=args.data, size=args.size,
             output=args.output, seed=args.seed, objective=args.objective or "ssim")
