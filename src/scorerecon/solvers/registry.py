"""Method registry: one call, ``reconstruct(measurement, method)``, for every modality.

A method is a function ``fn(measurement, **options) -> MethodOutput`` registered with
``@register(modality, name)``.  It returns the image in the *unit* domain ([0, 1] window for CT,
magnitude scaled so the data's reference peaks near 1 for MRI) plus optional std map, posterior
samples and info; this module converts back to native units (HU for CT, input units for MRI).
"""

from __future__ import annotations

import importlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..allocator import retain_freed_memory
from ..errors import UserError

_METHODS: dict[tuple[str, str], Callable] = {}
# the best classical method of each modality: benchmarks/results/ct_classical.md, mri_classical.md
# (CS-TV 2-5 dB above CS-wavelet on every MRI setting; the default before session 58 was cs-wavelet)
_DEFAULT_METHOD = {"ct": "tv", "mri": "cs-tv"}
# modules that register methods when imported
_METHOD_MODULES = ("scorerecon.solvers.classical_ct", "scorerecon.solvers.classical_mri",
                   "scorerecon.solvers.score")


@dataclass
class MethodOutput:
    """What a registered method returns: unit-domain image, optional std map, extra info, and for
    MRI the complex unit-domain image on the full k-space grid before magnitude and crop."""

    unit_image: np.ndarray
    std: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    complex_image: np.ndarray | None = None
    samples: np.ndarray | None = None  # score-based methods: the K posterior samples (K, H, W)


@dataclass
class Reconstruction:
    """A reconstruction in native units, with its unit-domain image and timing.  Score-based
    methods keep their K posterior ``samples`` (K, H, W) too: ``image`` is their mean and ``std``
    their standard deviation.  For MRI the samples are magnitudes of the sampled (phase-frame)
    images, while the image and std come from the signed ones: the two agree wherever no sample
    changes sign at a pixel."""

    image: np.ndarray
    unit_image: np.ndarray
    method: str
    seconds: float
    std: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    samples: np.ndarray | None = None

    def metrics(self, meas) -> dict[str, float]:
        """PSNR / SSIM against the measurement's stored truth (UserError when there is none)."""
        from ..evaluation.metrics import evaluate_images
        if meas.truth is None:
            raise UserError("the measurement has no ground truth: --metrics needs a simulated file")
        # metal is put back after reconstruction but absent from the truth: score the rest
        out = evaluate_images(self.image, meas.truth, modality=meas.modality,
                              exclude=meas.extras.get("metal_mask"))
        out["seconds"] = self.seconds
        out.update({k: v for k, v in self.info.items() if isinstance(v, (int, float))})
        return out


def iteration_count(value, default: int) -> int:
    """``--iterations`` of an iterative classical method: ``value`` (``default`` when None) as a
    whole number ≥ 1; 0, a negative or a fractional count is a UserError."""
    from ..checks import whole_number
    return whole_number("--iterations", default if value is None else value, minimum=1)


def register(modality: str, name: str):
    """Decorator: make ``fn`` available as ``reconstruct(..., method=name)`` for ``modality``."""
    def wrap(fn):
        _METHODS[(modality, name)] = fn
        return fn
    return wrap


def _load_methods() -> None:
    for module in _METHOD_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def available_methods(modality: str) -> list[str]:
    _load_methods()
    return sorted(name for (mod, name) in _METHODS if mod == modality)


#: options of the classical methods, each refused by a method that does not take it
CLASSICAL_OPTIONS = ("iterations", "weight", "filter")


def _options_taken(fn, method: str, options: dict) -> dict:
    """The options ``method``'s function is called with.  A classical method names every option it
    takes and gets only those: any other given option (not None) is refused, a classical one of
    :data:`CLASSICAL_OPTIONS` as not applying, a misspelt or score-based one by name; ``seed`` and
    ``progress``, which every method accepts, are dropped.  A score-based method's function takes
    ``**options`` and checks its own settings; it names no classical option."""
    parameters = inspect.signature(fn).parameters
    named = [name for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD][1:]
    given = {name: value for name, value in options.items() if value is not None}
    misplaced = [name for name in CLASSICAL_OPTIONS if name in given and name not in named]
    if misplaced:
        taken = [name for name in CLASSICAL_OPTIONS if name in named]
        takes = f"it takes {', '.join('--' + name for name in taken)}" if taken else "it takes none of them"
        raise UserError(f"{', '.join('--' + name for name in misplaced)} do{'es' * (len(misplaced) == 1)} not apply "
                        f"to {method} ({takes}): drop {'it' if len(misplaced) == 1 else 'them'}")
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return options
    unknown = sorted(set(given) - set(named) - {"seed", "progress"})
    if unknown:
        from . import score
        score_only = set(unknown) & {"prior"}.union(*(score.allowed_settings(name) for name in score.METHODS))
        fix = (f"{', '.join(sorted(score_only))} belong{'s' * (len(score_only) == 1)} to the score-based methods"
               if score_only else f"check the spelling (it takes {', '.join(named) or 'none'})")
        raise UserError(f"{method} has no option {', '.join(map(repr, unknown))}: {fix}")
    return {name: value for name, value in options.items() if name in named}


def reconstruct(meas, method: str | None = None, **options) -> Reconstruction:
    """Reconstruct ``meas`` with ``method`` (default: the best classical method of the modality, TV for CT
    and CS-TV for MRI)."""
    from ..data.measurement import Measurement
    if not isinstance(meas, Measurement):
        raise UserError(f"reconstruct takes a Measurement, got {type(meas).__name__}: read a file with "
                        "scorerecon.data.measurement.read_measurement(path)")
    meas.validate()
    _load_methods()
    method = method or _DEFAULT_METHOD[meas.modality]
    fn = _METHODS.get((meas.modality, method))
    if fn is None:
        raise UserError(f"method {method!r} does not apply to {meas.modality.upper()} data: "
                        f"choose one of {', '.join(available_methods(meas.modality))}")
    options = _options_taken(fn, method, options)
    retain_freed_memory()
    start = time.perf_counter()
    out: MethodOutput = fn(meas, **options)
    seconds = time.perf_counter() - start
    if not np.all(np.isfinite(out.unit_image)):
        raise UserError(f"{method} produced NaN/Inf values: its settings are unstable here; use its defaults "
                        "(or a smaller --weight / step)")
    std = None if out.std is None else _to_native(out.std, meas, offset=False)
    samples = None if out.samples is None else _to_native(out.samples, meas)
    return Reconstruction(image=_to_native(out.unit_image, meas), unit_image=out.unit_image,
                          method=method, seconds=seconds, std=std, info=out.info, samples=samples)


def _to_native(unit: np.ndarray, meas, offset: bool = True) -> np.ndarray:
    """Unit domain -> native units (HU for CT; input magnitude units for MRI)."""
    from ..data.intensity import HU_HIGH, HU_LOW, unit_to_hu
    if meas.modality == "ct":
        return (unit_to_hu(unit) if offset else unit * (HU_HIGH - HU_LOW)).astype(np.float32)
    return (np.abs(unit) * float(meas.attrs.get("intensity_scale", 1.0))).astype(np.float32)


def write_reconstruction(result: Reconstruction, meas, output: str, reference: str | None = None,
                         samples: bool = False) -> list[str]:
    """Write the image by output extension and, beside it, the std map when there is one
    (``OUT_std``) and, with ``samples``, the stack of posterior samples (``OUT_samples``); every
    path is checked before any is written.  Returns the paths written, the image's first."""
    from ..data.io import spacing_per_axis, write_image
    if samples and result.samples is None:
        raise UserError(f"{result.method} draws no posterior samples: saving samples needs a "
                        "score-based method")
    std_path, samples_path = check_reconstruction_outputs(output, std=result.std is not None,
                                                          samples=samples, reference=reference)
    spacing = meas.geometry.get("pixel_size")
    # the samples' axis has no physical spacing: 1 (mm), the pixel spacing along the other two
    stack_spacing = None if spacing is None else (1.0, *spacing_per_axis(spacing, 2))
    write_image(output, result.image, spacing=spacing, reference=reference, modality=meas.modality)
    if std_path is not None:
        # no modality: a std map is not an image in HU, so a PNG of it is min-max scaled
        write_image(std_path, result.std, spacing=spacing, reference=None, modality=None,
                    description="posterior std")
    if samples_path is not None:
        write_image(samples_path, result.samples, spacing=stack_spacing, reference=None, modality=meas.modality,
                    description="posterior samples")
    return [str(path) for path in (output, std_path, samples_path) if path is not None]


def check_reconstruction_outputs(output: str, *, std: bool, samples: bool,
                                 reference: str | None = None) -> tuple[str | None, str | None]:
    """Check, before any work, that the image, its std map and (``samples``) the stack of samples
    can be written, and that a DICOM ``reference`` can serve the image; return the std map's and
    the samples' paths (None where not written)."""
    from ..data.dicom import check_slice_reference
    from ..data.io import check_image_output, image_suffix
    check_image_output(output)
    if reference is not None:
        if image_suffix(Path(output)) != "":
            raise UserError(f"a DICOM reference lends its tags to a DICOM output only: write {output} as a "
                            "folder without extension, or drop the reference")
        check_slice_reference(Path(reference))
    siblings = {}
    for tag, written, what in (("_std", std, "std map"), ("_samples", samples, "posterior samples")):
        siblings[tag] = _sibling(output, tag)
        if not written and Path(siblings[tag]).exists():  # it would pass for this run's
            raise UserError(f"{siblings[tag]} beside {output} holds the {what} of an earlier reconstruction, and "
                            "this run writes none: delete it or choose another -o")
    std_path = siblings["_std"] if std else None
    samples_path = siblings["_samples"] if samples else None
    if samples_path is not None and image_suffix(Path(output)) == ".png":
        raise UserError(f"a PNG holds one slice, not a stack of posterior samples: write {output} "
                        "as .npy, .nii.gz, .nrrd or a DICOM folder to save the samples")
    for path in (std_path, samples_path):
        if path is not None:
            check_image_output(path)
    return std_path, samples_path


def _sibling(output: str, tag: str) -> str:
    """``output`` with ``tag`` before its extension (as :func:`~scorerecon.data.io.image_suffix`
    reads it, case kept), or after a DICOM folder's name."""
    from ..data.io import image_suffix
    output = output.rstrip("/")
    cut = len(output) - len(image_suffix(Path(output)))
    return output[:cut] + tag + output[cut:]
