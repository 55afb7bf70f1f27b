"""Prior files and training checkpoints, both written atomically.

Inference file (``.safetensors``): the EMA weights plus JSON metadata in the safetensors header::

    format   = "scorerecon-prior"      version = "1"
    network  = ScoreUNet config (JSON)  sde = SDE.to_dict() (JSON)
    metadata = modality, crop size, channels, training information (JSON)

Training checkpoint (``checkpoint.pt``, torch pickle of tensors and plain types only): model,
EMA, optimizer, step, RNG states and data position (see :mod:`scorerecon.priors.training`).
Saving keeps the previous checkpoint as ``checkpoint.prev.pt``: the new file is written to a
temporary name first, so at every instant at least one complete checkpoint exists.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..atomic import atomic_path
from ..errors import UserError
from .network import ScoreUNet
from .parameterization import Parameterization
from .prior import ScorePrior
from .sde import sde_from_dict

FORMAT = "scorerecon-prior"
DESCRIPTION_KEYS = ("network", "sde", "parameterization", "metadata")
VERSION = "1"
CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
UNREADABLE = "checkpoint.unreadable.pt"


def export_prior(network_state: dict, prior_description: dict, path: str | os.PathLike) -> Path:
    """Write EMA weights + description (:meth:`ScorePrior.describe`) to a safetensors file."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network_state.items()}
    header = {"format": FORMAT, "version": VERSION,
              **{key: json.dumps(prior_description[key]) for key in DESCRIPTION_KEYS}}
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata=header)
    path.chmod(0o644)  # a file to ship, not a private temporary
    return path


def build_prior(description: dict, network_state: dict, source: str) -> ScorePrior:
    """Rebuild a ScorePrior; UserError if the stored description is not one this version builds
    (another version's network options, a malformed SDE or parameterisation) or if the weights do
    not fit the stored network config."""
    try:
        for key in ("network", "sde", "metadata"):
            if not isinstance(description.get(key, {}), dict):
                raise TypeError(f"its {key} is not a table")
        network = ScoreUNet(**description["network"])
        sde = sde_from_dict(description["sde"])
        parameterization = Parameterization.from_dict(description.get("parameterization"))
        metadata = _checked_metadata(description.get("metadata", {}), network.config["channels"])
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise UserError(f"{source} describes a prior this scorerecon cannot build ({type(err).__name__}: {err}): "
                        "upgrade scorerecon or re-export the prior from its training checkpoint") from None
    try:
        network.load_state_dict(network_state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise UserError(f"weights in {source} do not match the network config stored with them ({first}): "
                        "re-export the prior from its training checkpoint") from None
    prior = ScorePrior(network, sde, metadata, parameterization)
    return prior.eval().requires_grad_(False)


def _checked_metadata(metadata: dict, channels: int) -> dict:
    """A prior's metadata, once the values the samplers compute with agree with its network: the
    block size ``downsample`` a whole number ≥ 1, ``channels`` those of the network."""
    downsample = metadata.get("downsample", 1)
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise ValueError(f"metadata downsample {downsample!r} is not a whole number >= 1")
    if metadata.get("channels", channels) != channels:
        raise ValueError(f"metadata channels {metadata['channels']!r} differ from the network's {channels}")
    return metadata


def read_prior_file(path: str | os.PathLike) -> ScorePrior:
    """Load a ``.safetensors`` prior file or a training ``checkpoint.pt`` (its EMA weights)."""
    path = Path(path)
    if path.suffix == ".pt":
        state = read_checkpoint(path, fix="pass a prior's .safetensors file or a training folder's checkpoint.pt")
        return build_prior(state["prior"], state["ema"], str(path))
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
        if header.get("format") != FORMAT:
            raise ValueError("missing scorerecon header")
        if header.get("version") != VERSION:
            raise UserError(f"{path} is a prior file of layout version {header.get('version')!r}, and this "
                            f"scorerecon reads version {VERSION}: upgrade scorerecon")
        optional = {"parameterization": "null"}  # files written before it existed: Song's output scaling
        description = {key: json.loads(header.get(key) or optional[key]) for key in DESCRIPTION_KEYS}
    except UserError:
        raise  # its own fix, not the one below
    except (SafetensorError, ValueError, KeyError, OSError) as err:
        raise UserError(f"{path} is not a readable scorerecon prior file ({err}): "
                        "re-download or re-export it") from None
    return build_prior(description, tensors, str(path))


# ------------------------------------------------------------------------ training checkpoints
def save_checkpoint(state: dict, folder: str | os.PathLike) -> Path:
    """Write ``state`` to folder/checkpoint.pt, keeping the former one as checkpoint.prev.pt.

    At every instant of the rotation a readable checkpoint is in place: the new state is written
    and synced to a temporary file; the current checkpoint becomes the previous one through a
    second name (a hard link, else a copy) while checkpoint.pt still exists; only then does the
    temporary file replace checkpoint.pt.  A kill anywhere leaves the old pair or the new one."""
    folder = Path(folder)
    latest = folder / CHECKPOINT
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if latest.exists():
            _keep_as_previous(latest, folder / PREVIOUS)
        os.replace(tmp, latest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return latest


def _keep_as_previous(latest: Path, previous: Path) -> None:
    """Make ``previous`` a second name of ``latest`` (a copy where hard links are not allowed),
    through a temporary name, so neither file is ever missing; one fixed temporary name, so a
    kill's leftover is removed by the next save (only rank 0 saves)."""
    second = previous.with_name(f".{previous.name}.tmp")
    second.unlink(missing_ok=True)
    try:
        os.link(latest, second)
    except OSError:
        shutil.copyfile(latest, second)
    os.replace(second, previous)


def read_checkpoint(path: str | os.PathLike, fix: str = f"resume from {PREVIOUS} or start again") -> dict:
    """Load one training checkpoint; UserError if it is missing or corrupted (``fix`` says what
    to do about a corrupted one)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist: check the path or train without --resume") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise UserError(f"checkpoint {path} is corrupted or not a scorerecon checkpoint ({type(err).__name__}): "
                        f"{fix}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT + "-checkpoint":
        raise UserError(f"{path} is not a scorerecon training checkpoint: {fix}")
    return state


def latest_checkpoint(folder: str | os.PathLike) -> tuple[dict, Path]:
    """The newest readable checkpoint in ``folder`` and its path (the previous one when
    checkpoint.pt cannot be read)."""
    folder = Path(folder)
    candidates = [folder / name for name in (CHECKPOINT, PREVIOUS) if (folder / name).exists()]
    if not candidates:
        raise UserError(f"no checkpoint in {folder}: run 'scorerecon train' without --resume first")
    errors = []
    for path in candidates:
        try:
            return read_checkpoint(path), path
        except UserError as err:
            errors.append(str(err))
    if len(errors) == 1:
        raise UserError(errors[0])
    raise UserError(f"no checkpoint in {folder} can be read ({CHECKPOINT} and {PREVIOUS} are both damaged): "
                    "start again in a new [output] dir")


def remove_leftover_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files of saves that a kill interrupted (``.checkpoint.*.tmp``, each
    as large as a checkpoint); call it before the run saves again."""
    for path in Path(folder).glob(".checkpoint.*.tmp"):
        path.unlink(missing_ok=True)


def set_aside_unreadable(folder: str | os.PathLike) -> Path:
    """Rename an unreadable checkpoint.pt to checkpoint.unreadable.pt, so that the next save
    keeps the readable previous checkpoint instead of rotating the damaged file over it."""
    folder = Path(folder)
    aside = folder / UNREADABLE
    os.replace(folder / CHECKPOINT, aside)
    return aside
