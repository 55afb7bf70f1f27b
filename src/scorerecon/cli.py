"""The command line: a thin layer over the library.

Every user mistake surfaces as one line on stderr and exit status 2 (``UserError``); outputs are
written atomically, so a failed command never leaves a partial file.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .allocator import retain_freed_memory
from .cli_types import positive_int, seed_int
from .errors import UserError

EXIT_USER_ERROR = 2


# ------------------------------------------------------------------------------ simulate
def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="simulate a measurement file from an image")
    kinds = p.add_subparsers(dest="modality", required=True)

    ct = kinds.add_parser("ct", help="CT: sparse view, limited angle, metal, Poisson noise")
    ct.add_argument("image", help="image in HU: DICOM file or series folder, NIfTI, NRRD, .npy or .png")
    ct.add_argument("-o", "--output", required=True, help="measurement file to write (.h5)")
    ct.add_argument("--views", type=int, default=None, help="number of views kept, evenly spaced (default: all); parallel beam keeps the first and "
                    "last of its 180° (Song et al.'s protocol), fan beam spreads them around 360°")
    ct.add_argument("--full-views", type=int, default=180, help="size of the full view set (default 180)")
    ct.add_argument("--geometry", choices=["parallel", "fan"], default="parallel")
    ct.add_argument("--detector", choices=["flat", "curved"], default="flat", help="fan-beam detector shape")
    ct.add_argument("--limited-angle", type=float, default=None, metavar="DEGREES",
                    help="keep only views within this angular range")
    ct.add_argument("--metal", default=None, metavar="auto|MASKFILE",
                    help="insert metal (auto: dental fillings) and simulate beam hardening")
    ct.add_argument("--flux", type=float, default=None, metavar="PHOTONS",
                    help="incident photons per detector bin (Poisson noise); omit for noise-free")
    ct.add_argument("--slice", type=int, default=None, help="slice index of a volume (default: middle)")
    ct.add_argument("--seed", type=seed_int, default=0)
    ct.set_defaults(handler=_run_simulate_ct)

    mri = kinds.add_parser("mri", help="MRI: under-sampled single- or multi-coil k-space")
    mri.add_argument("image", help="magnitude image: NIfTI, NRRD, DICOM, .npy or .png")
    mri.add_argument("-o", "--output", required=True,
                     help="measurement file to write: .h5 (fastMRI layout) or .cfl (BART k-space only)")
    mri.add_argument("--mask", default="equispaced",
                     choices=["equispaced", "random", "gaussian1d", "gaussian2d", "uniform2d", "poisson", "radial"])
    mri.add_argument("--acceleration", type=float, default=4.0)
    mri.add_argument("--center-fraction", type=float, default=0.08)
    mri.add_argument("--coils", type=positive_int, default=1)
    mri.add_argument("--noise", type=float, default=0.0, help="complex Gaussian noise std (image max = 1)")
    mri.add_argument("--real", action="store_true", help="keep the image real (no synthetic phase)")
    mri.add_argument("--slice", type=int, default=None, help="slice index of a volume (default: middle)")
    mri.add_argument("--seed", type=seed_int, default=0)
    mri.set_defaults(handler=_run_simulate_mri)


def _run_simulate_ct(args) -> None:
    from .simulate.ct import simulate_ct_file
    _refuse_overwriting_inputs({"the image": args.image}, {"-o": args.output})
    simulate_ct_file(args.image, args.output, views=args.views, full_views=args.full_views,
                     geometry=args.geometry, detector=args.detector, limited_angle=args.limited_angle,
                     metal=args.metal, flux=args.flux, seed=args.seed, slice_index=args.slice)
    print(f"wrote {args.output}")


def _run_simulate_mri(args) -> None:
    from .simulate.mri import simulate_mri_file
    _refuse_overwriting_inputs({"the image": args.image}, {"-o": args.output})
    simulate_mri_file(args.image, args.output, mask=args.mask, acceleration=args.acceleration,
                      center_fraction=args.center_fraction, coils=args.coils, noise=args.noise,
                      real=args.real, seed=args.seed, slice_index=args.slice)
    print(f"wrote {_file_names([args.output])}")


# --------------------------------------------------------------------------- reconstruct
def _add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="reconstruct an image from a measurement file")
    p.add_argument("measurement", help="file from 'scorerecon simulate', a fastMRI .h5 file, Siemens twix .dat "
                   "or BART k-space .cfl")
    p.add_argument("-o", "--output", required=True,
                   help="output: .npy, .nii.gz, .nrrd, .png, .cfl (BART), or a folder for a DICOM series")
    p.add_argument("--method", default=None,
                   help="fbp|sart|tv|li-mar (CT), zero-filled|sense|cs-wavelet|cs-tv (MRI), "
                        "score|song|chung|langevin|guidance|dps|fast (score-based, both); "
                        "default: the best classical method of the modality, tv (CT) or cs-tv (MRI)")
    p.add_argument("--prior", default=None, help="prior name (default head-ct / brain-mri; also NAME-edm, NAME-v1, NAME-low, brain-mri-coarse, "
                                                "ct-low, ct-full, mri-low) "
                                                "or file: .safetensors, experts .json, checkpoint.pt (score-based methods)")
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--samples", type=positive_int, default=None,
                   help="posterior samples K: mean image and, for K > 1, a std map beside it (times the preset's "
                        "calibrated std_scale at the preset's own K; default K: the method's preset, fast 2 or its "
                        "tuned K, others 1)")
    p.add_argument("--save-samples", action="store_true",
                   help="also write the K posterior samples as a stack beside the image (OUT_samples; "
                        "score-based methods, not to .png)")
    p.add_argument("--iterations", type=positive_int, default=None,
                   help="iterations of iterative classical methods (sart, tv, sense, cs-*)")
    p.add_argument("--weight", type=float, default=None, help="regularisation weight (tv, sense, cs-*)")
    p.add_argument("--filter", default=None, choices=["ramp", "shepp-logan", "cosine", "hann"],
                   help="FBP filter (fbp, li-mar; default ramp)")
    p.add_argument("--reference", default=None, help="DICOM series whose tags a DICOM output copies")
    p.add_argument("--slice", type=int, default=None,
                   help="slice of a multi-slice fastMRI or twix file (default: the middle one)")
    p.add_argument("--metrics", default=None, help="write PSNR/SSIM against the stored truth to this JSON")
    p.add_argument("--seed", type=seed_int, default=0)
    p.set_defaults(handler=_run_reconstruct)


def _run_reconstruct(args) -> None:
    from .atomic import check_output_file
    from .data.measurement import read_measurement
    from .solvers import reconstruct, write_reconstruction
    from .solvers.registry import check_reconstruction_outputs
    meas = read_measurement(args.measurement, args.slice)
    _check_score_options(args)
    # fail before any work or output
    std_path, samples_path = check_reconstruction_outputs(
        args.output, std=_writes_std_map(meas, args), samples=args.save_samples, reference=args.reference)
    _refuse_overwriting_inputs({"the measurement": args.measurement, "--reference": args.reference},
                               {"-o": args.output, "the std map": std_path, "the samples": samples_path,
                                "--metrics": args.metrics})
    if args.metrics:
        check_output_file(args.metrics)
        if meas.truth is None:
            raise UserError(f"{args.measurement} has no ground truth: --metrics needs a simulated file")
    options = {k: v for k, v in dict(iterations=args.iterations, weight=args.weight, filter=args.filter,
                                      prior=args.prior, steps=args.steps, samples=args.samples,
                                      seed=args.seed).items() if v is not None}
    result = reconstruct(meas, args.method, **options)
    metrics = result.metrics(meas) if args.metrics else None  # a shape mismatch fails before output
    written = write_reconstruction(result, meas, args.output, reference=args.reference, samples=args.save_samples)
    print(f"wrote {_file_names(written)}  ({result.method}, {result.seconds:.2f} s)")
    _note_preset_prior(result.info, args.prior, meas.modality)
    if metrics is not None:
        _write_json(args.metrics, metrics)


def _file_names(paths: list[str]) -> str:
    """The files behind ``paths``, a BART ``.cfl`` with its ``.hdr``, as one comma-separated list."""
    from .data.cfl import cfl_pair
    return ", ".join(str(name) for path in paths
                     for name in (cfl_pair(path)[::-1] if Path(path).suffix.lower() == ".cfl" else (path,)))


def _refuse_overwriting_inputs(inputs: dict[str, str | None], outputs: dict[str, str | None]) -> None:
    """Refuse, before any work, an output path that names an input or another output (both
    files of a BART pair, :func:`~scorerecon.data.cfl.cfl_pair`): ``inputs`` and ``outputs`` map
    what each path is (e.g. "--metrics") to the path, None where not given."""
    from .data.cfl import cfl_pair
    seen: dict[Path, str] = {}
    for role, path in [*inputs.items(), *outputs.items()]:
        if path is None:
            continue
        for name in cfl_pair(path) if Path(path).suffix.lower() == ".cfl" else (Path(path),):
            name = Path(os.path.abspath(name))
            if name in seen and role in outputs:
                raise UserError(f"{role} {path} would overwrite {seen[name]} ({name.name}): choose another path")
            seen.setdefault(name, role)


def _writes_std_map(meas, args) -> bool:
    """Whether reconstruct will write a std map beside the image: a score-based method with K > 1."""
    from .solvers.score import REGISTERED_NAMES, posterior_sample_count
    from .solvers.tuning import task_of
    return (args.method in REGISTERED_NAMES
            and posterior_sample_count(args.method, task_of(meas), args.samples) > 1)


def _note_preset_prior(info: dict, prior: str | None, modality: str) -> None:
    """One line on stderr where the task's preset was tuned with another prior than the one used."""
    from .solvers.score import DEFAULT_PRIOR
    tuned_with = info.get("preset_tuned_with")
    if tuned_with:
        prior = prior or DEFAULT_PRIOR[modality]
        print(f"scorerecon: note: the {info['task']} preset of {info['method']} was tuned with prior {tuned_with}, "
              f"not {prior}: `scorerecon tune {info['task']} --method {info['method']} --prior {prior}` tunes "
              "one for it", file=sys.stderr)


def _check_score_options(args) -> None:
    """--prior, --steps, --samples and --save-samples steer the score-based samplers only: with a
    classical method they would be ignored in silence, so they are refused."""
    from .solvers.score import REGISTERED_NAMES
    given = [f"--{name}" for name in ("prior", "steps", "samples") if getattr(args, name) is not None]
    given += ["--save-samples"] if args.save_samples else []
    if given and args.method not in REGISTERED_NAMES:
        raise UserError(f"{', '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to score-based methods, not to "
                        f"{args.method or 'the default classical method'}: drop them or choose "
                        f"--method {'|'.join(REGISTERED_NAMES)}")


# ------------------------------------------------------------------------------ evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="PSNR and SSIM of a reconstruction against a reference")
    p.add_argument("recon", help="reconstruction (any readable image)")
    p.add_argument("truth", help="reference image of the same size")
    p.add_argument("--modality", choices=["ct", "mri"], default=None,
                   help="ct: HU mapped by the fixed window; mri: both scaled by the reference's maximum "
                        "(default: the modality the files record, else ct)")
    p.add_argument("--body-mask", action="store_true", help="compute the metrics inside the body only")
    p.add_argument("--exclude", default=None,
                   help="image of the pixels to leave out (non-zero), or a measurement .h5 of a metal simulation "
                        "(its metal mask)")
    p.add_argument("--slice", type=int, default=None,
                   help="compare this slice of any volume among the two files (e.g. the slice a 2-D "
                        "reconstruction was simulated from)")
    p.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> None:
    from .atomic import check_output_file
    from .evaluation.metrics import evaluate_images
    if args.json:
        check_output_file(args.json)
        _refuse_overwriting_inputs({"the reconstruction": args.recon, "the reference": args.truth,
                                    "--exclude": args.exclude}, {"--json": args.json})
    recon, truth = (_evaluation_image(path, args.slice) for path in (args.recon, args.truth))
    if args.slice is not None and not any(image.meta.get("slice_index") is not None for image in (recon, truth)):
        raise UserError(f"--slice {args.slice} picks a slice of a volume, and neither {args.recon} nor {args.truth} "
                        "is one: drop --slice")
    exclude = _excluded_pixels(args.exclude, args.slice) if args.exclude else None
    metrics = evaluate_images(recon.array, truth.array, modality=_evaluation_modality(args, recon, truth),
                              body=args.body_mask, exclude=exclude)
    print("  ".join(f"{k.upper()} {v:.4f}" for k, v in metrics.items()))
    if args.json:
        _write_json(args.json, metrics)


def _excluded_pixels(path: str, slice_index: int | None):
    """--exclude: the non-zero pixels of an image, or the metal mask a metal simulation's
    measurement file stores (what ``reconstruct --metrics`` leaves out)."""
    import numpy as np

    from .data.io import read_image
    from .data.measurement import read_measurement
    if Path(path).suffix.lower() != ".h5":
        return _slice_of(read_image(path), slice_index).array != 0
    metal = read_measurement(path).extras.get("metal_mask")
    if metal is None:
        raise UserError(f"{path} holds no metal mask: pass a metal simulation's file or an image of the pixels")
    return np.asarray(metal) != 0


def _evaluation_image(path: str, slice_index: int | None):
    """An image to score, :func:`_slice_of` it; a PNG, an 8-bit display window rather than the
    values, is a UserError."""
    from .data.io import read_image
    image = read_image(path)
    if image.meta.get("format") == "png":
        raise UserError(f"{path} is a PNG, an 8-bit display window of the image, not its values: "
                        "evaluate the .npy, .nii.gz, .nrrd or DICOM output")
    return _slice_of(image, slice_index)


def _slice_of(image, slice_index: int | None):
    """Slice ``slice_index`` of a volume; a 2-D image (or no index) as it is."""
    from .data.io import take_slice
    return take_slice(image, slice_index) if slice_index is not None and image.array.ndim == 3 else image


def _evaluation_modality(args, *images) -> str:
    """--modality, else the modality the files record ("mr" → "mri"), else ct; a file that records
    another modality than --modality, or two files that disagree, is a UserError."""
    recorded = {{"mr": "mri"}.get(image.modality, image.modality) for image in images if image.modality}
    if len(recorded) > 1:
        raise UserError(f"the files record different modalities ({' and '.join(sorted(recorded))}): "
                        "compare a reconstruction with a reference of its own modality")
    if args.modality and recorded and recorded != {args.modality}:
        raise UserError(f"the files record {next(iter(recorded))} but --modality {args.modality} was given: "
                        "drop --modality (the files' own is used)")
    return args.modality or next(iter(recorded), "ct")


# ---------------------------------------------------------------------------------- data
def _add_data(sub) -> None:
    p = sub.add_parser("data", help="build training and evaluation sets from packaged sources")
    verbs = p.add_subparsers(dest="verb", required=True)
    prep = verbs.add_parser("prepare", help="prepare a dataset into the cache directory")
    from .data.datasets import DATASET_NAMES
    prep.add_argument("dataset", choices=DATASET_NAMES)
    prep.add_argument("--out", default=None, help="the dataset's folder (default: $SCORERECON_DATA/NAME, else "
                      "~/.cache/scorerecon/datasets/NAME)")
    prep.add_argument("--source", "--deb", dest="source", default=None,
                      help="the source package file (.deb for head-ct and brain-mri, pyradiomics-3.1.0.tar.gz "
                           "for chest-ct and clinical-brain-mri) or its unpacked folder, instead of fetching it")
    prep.set_defaults(handler=_run_data_prepare)


def _run_data_prepare(args) -> None:
    from .data.datasets import prepare_dataset
    folder = prepare_dataset(args.dataset, out=args.out, source=args.source)
    print(f"prepared {args.dataset} in {folder}")


# ---------------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="reconstruct a bundled held-out slice and write a figure and metrics")
    p.add_argument("-o", "--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of the fast sampler (default: the ct-sparse-view preset's)")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="posterior samples (default: the ct-sparse-view preset's)")
    p.set_defaults(handler=_run_demo)


def _run_demo(args) -> None:
    from .evaluation import demo
    outputs = demo.run_demo(Path(args.output), steps=args.steps, samples=args.samples)
    for name, path in outputs.items():
        print(f"{name}: {path}")


def _write_json(path: str, payload: dict) -> None:
    from .atomic import write_json
    write_json(path, payload)
    print(f"wrote {path}")


# ---------------------------------------------------------------------------------- main
class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose mistakes are one line, like every other user error (its sub-commands'
    parsers are of the same class): the problem, and where the options are listed."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (options: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="scorerecon", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_data, _add_simulate, _add_reconstruct, _add_evaluate):
        add(sub)
    for add in _EXTRA_COMMANDS:
        add(sub)
    return parser


# Later layers (train, sample, tune, benchmark) register their parsers here.
_EXTRA_COMMANDS: list = []

from .priors.cli_commands import PRIOR_COMMANDS  # noqa: E402  (train, sample, experts)

_EXTRA_COMMANDS.extend(PRIOR_COMMANDS)

from .solvers.tuning import add_tune_command  # noqa: E402  (tune)

_EXTRA_COMMANDS.append(add_tune_command)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    retain_freed_memory()
    try:
        args.handler(args)
    except UserError as err:
        one_line = " ".join(part.strip() for part in str(err).splitlines())
        print(f"scorerecon: error: {one_line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("scorerecon: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
