"""Training configuration: a TOML file with tables [data], [sde], [parameterization], [network],
[training], [output].

Every key has a default (:data:`DEFAULTS`); an unknown key is a UserError, so a typo never passes
silently.  Relative paths are taken from the current directory.  ``[data] path`` empty means the
dataset prepared by ``scorerecon data prepare NAME``: ``<data root>/NAME/train.npy``; ``dataset``
may also be a list of names, whose training arrays are concatenated (e.g. ``["head-ct", "chest-ct"]``).
See ``configs/head-ct.toml`` for a commented example.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from ..errors import UserError
from .parameterization import Parameterization
from .sde import sde_from_dict

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULTS = {
    "name": "prior",
    "data": {"dataset": "", "path": "", "modality": "ct", "intensity": "", "crop": 64, "flip": True,
             "image_size": 256, "downsample": 1, "repeat": []},
    "sde": {"type": "ve", "sigma_min": 0.01, "sigma_max": 50.0, "N": 1000, "eps": 1e-5},
    "parameterization": Parameterization().to_dict(),
    "network": {"channels": 1, "nf": 32, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2, "attention_levels": [3],
                "dropout": 0.0, "embedding": "fourier", "fourier_scale": 16.0},
    "training": {"steps": 3000, "batch_size": 16, "lr": 2e-4, "warmup": 500, "grad_clip": 1.0, "ema": 0.999,
                 "seed": 0, "bf16": False, "channels_last": False, "checkpoint_every": 250, "log_every": 10,
                 "device": "auto", "init": "", "sigma_range": []},
    "output": {"dir": "", "export": ""},
}
_POSITIVE = {"training": ("steps", "batch_size", "checkpoint_every", "log_every", "lr", "grad_clip"),
             "data": ("crop", "image_size"), "network": ("channels",)}


def data_root() -> Path:
    """Folder of prepared datasets: ``$SCORERECON_DATA``, else ``<user cache>/datasets``.

    The same rule as :func:`scorerecon.data.datasets.data_root` (priors must not import data/).
    """
    if os.environ.get("SCORERECON_DATA"):
        return Path(os.environ["SCORERECON_DATA"]).expanduser()
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("scorerecon")) / "datasets"


def dataset_names(cfg: dict) -> list[str]:
    """The prepared datasets named by ``[data] dataset`` (one name or a list of names)."""
    dataset = cfg["data"]["dataset"]
    return [dataset] if isinstance(dataset, str) and dataset else list(dataset or [])


def dataset_paths(cfg: dict) -> list[Path]:
    """The training arrays named by [data]: ``path`` if given, else each prepared dataset's."""
    data = cfg["data"]
    if data["path"]:
        return [Path(data["path"]).expanduser()]
    if not dataset_names(cfg):
        raise UserError("the config names no training data: set [data] dataset or [data] path")
    return [data_root() / name / "train.npy" for name in dataset_names(cfg)]


def training_data_name(cfg: dict) -> str:
    """How checkpoints name the training data: the dataset names joined by '+', else the path."""
    return "+".join(dataset_names(cfg)) or str(dataset_paths(cfg)[0])


def load_config(path: str | os.PathLike) -> dict:
    """Read a TOML training config, fill in defaults, validate keys and values."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config {path} not found: give the path of a .toml file (see configs/)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"config {path} cannot be read as text ({err}): give a .toml file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config {path} is not valid TOML ({err}): fix the syntax") from None
    raw.setdefault("name", path.stem)
    return resolve_config(raw)


def resolve_config(raw: dict) -> dict:
    """Defaults merged with ``raw`` (a parsed config), checked; output paths filled in."""
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in cfg:
            raise UserError(f"unknown config entry {key!r}: use the tables {', '.join(k for k in cfg if k != 'name')}")
        if key == "sde" and isinstance(value, dict):
            cfg["sde"] = _sde_table(value)
        elif isinstance(cfg[key], dict):
            cfg[key].update(_checked_table(key, value, cfg[key]))
        elif not _is_kind(cfg[key], value):
            raise UserError(f"config entry {key!r} must be {_kind_name(cfg[key])}, got {value!r}")
        else:
            cfg[key] = value
    _check_values(cfg)
    out = cfg["output"]
    out["dir"] = out["dir"] or str(Path("runs") / cfg["name"])
    out["export"] = out["export"] or str(Path(out["dir"]) / f"{cfg['name']}.safetensors")
    return cfg


def _sde_table(table: dict) -> dict:
    """[sde]: its parameters depend on the type, so a table of another type than the default's
    replaces the defaults and one without a type updates them; every parameter is a number (N a
    whole one).  Unknown parameters are left to sde_from_dict (:func:`_check_values`)."""
    for key, value in table.items():
        default = DEFAULTS["sde"].get(key, 0.0)  # a parameter of another SDE type: a number
        if key != "type" and not _is_kind(default, value):
            raise UserError(f"[sde] {key} must be {_kind_name(default)}, got {value!r}")
    if str(table.get("type", DEFAULTS["sde"]["type"])).lower() == DEFAULTS["sde"]["type"]:
        return {**DEFAULTS["sde"], **table}
    return dict(table)


_CHECKED_ELSEWHERE = ("dataset",)  # a name or a list of names: _check_values


def _checked_table(name: str, table, defaults: dict) -> dict:
    if not isinstance(table, dict):
        raise UserError(f"config entry {name!r} must be a table [{name}]")
    for key, value in table.items():
        if key not in defaults:
            raise UserError(f"unknown key {key!r} in [{name}]: valid keys are {', '.join(defaults)}")
        if key not in _CHECKED_ELSEWHERE and not _is_kind(defaults[key], value):
            raise UserError(f"[{name}] {key} must be {_kind_name(defaults[key])}, got {value!r}")
    return table


def _is_kind(default, value) -> bool:
    """Whether ``value`` is of the kind of ``default``: true/false, a whole number, a number (an
    integer will do), text, or a list (of the kind of the default's items, when it has any)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        return isinstance(value, list) and (not default or all(_is_kind(default[0], v) for v in value))
    return isinstance(value, type(default))


def _kind_name(default) -> str:
    if isinstance(default, list):
        return f"a list like {default!r}" if default else "a list"
    if isinstance(default, bool):
        return "true or false"
    return {int: "a whole number", float: "a number", str: "text"}[type(default)]


def _check_values(cfg: dict) -> None:
    for table, keys in _POSITIVE.items():
        for key in keys:
            value = cfg[table][key]
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):  # NaN fails too
                raise UserError(f"[{table}] {key} must be a positive finite number, got {value!r}")
    if not 0.0 <= cfg["training"]["ema"] < 1.0:
        raise UserError(f"[training] ema must lie in [0, 1), got {cfg['training']['ema']}")
    if not 0.0 <= cfg["network"]["dropout"] < 1.0:
        raise UserError(f"[network] dropout must lie in [0, 1), got {cfg['network']['dropout']}")
    if cfg["training"]["seed"] < 0:
        raise UserError(f"[training] seed must be a whole number ≥ 0, got {cfg['training']['seed']}")
    Parameterization.from_dict(cfg["parameterization"])  # UserError for an unknown type or σ_d ≤ 0
    sde_from_dict(cfg["sde"])  # UserError for an unknown type or parameter, before any run folder
    downsample = cfg["data"]["downsample"]
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise UserError(f"[data] downsample must be a whole number ≥ 1 (1 = full resolution), got {downsample!r}")
    _check_sizes(cfg["network"]["ch_mult"], cfg["data"])
    _check_sigma_range(cfg["training"]["sigma_range"])
    dataset = cfg["data"]["dataset"]
    if not isinstance(dataset, str) and not (isinstance(dataset, list) and dataset
                                             and all(isinstance(n, str) and n for n in dataset)):
        raise UserError(f"[data] dataset must be a dataset name or a list of names, got {dataset!r}")
    if cfg["data"]["path"] and dataset_names(cfg):
        raise UserError("[data] path and [data] dataset both name the training data: keep one "
                        "(path, an explicit .npy; or dataset, prepared datasets by name)")
    _check_repeat(cfg["data"]["repeat"], dataset_names(cfg))
    if cfg["data"]["modality"] not in ("ct", "mri"):
        raise UserError(f"[data] modality must be 'ct' or 'mri', got {cfg['data']['modality']!r}")


def _check_sizes(ch_mult: list, data: dict) -> None:
    """``[network] ch_mult``: one whole number ≥ 1 per level; ``[data] crop``, cut from the block
    means, a multiple of 2^(levels − 1); ``[data] image_size``, the prior's input, a multiple of
    ``downsample`` · 2^(levels − 1) (:meth:`ScorePrior.check_image_size`)."""
    if not ch_mult or not all(mult >= 1 for mult in ch_mult):
        raise UserError(f"[network] ch_mult must list one whole number ≥ 1 per level, e.g. [1, 2, 2, 2], "
                        f"got {ch_mult!r}")
    levels = 2 ** (len(ch_mult) - 1)
    # the crop is cut from the block means, the image size is the prior's input before them
    for key, multiple, what in (("crop", levels, "2^(levels - 1) of [network] ch_mult"),
                                ("image_size", data["downsample"] * levels,
                                 "[data] downsample times 2^(levels - 1) of [network] ch_mult")):
        if data[key] % multiple:
            raise UserError(f"[data] {key} {data[key]} is not a multiple of {multiple} ({what}): "
                            f"choose a multiple of {multiple}")


def _check_repeat(repeat, names: list[str]) -> None:
    """``[data] repeat``: empty (each image once per epoch) or one whole number ≥ 1 per dataset."""
    if repeat == []:
        return
    if (not isinstance(repeat, list) or len(repeat) != len(names)
            or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in repeat)):
        raise UserError(f"[data] repeat must be [] or one whole number ≥ 1 per dataset of [data] dataset "
                        f"({len(names)}), got {repeat!r}")


def _check_sigma_range(sigma_range) -> None:
    """``[training] sigma_range``: empty (the SDE's whole range) or [low, high], 0 < low < high."""
    if sigma_range == []:
        return
    if (not isinstance(sigma_range, list) or len(sigma_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sigma_range)
            or not 0 < sigma_range[0] < sigma_range[1]):
        raise UserError(f"[training] sigma_range must be [] (all noise levels) or [low, high] with "
                        f"0 < low < high, got {sigma_range!r}")
