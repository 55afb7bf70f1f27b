"""Write outputs atomically: to a temporary file beside the target, then rename.

A crash, a full disk or a bad input therefore never leaves a half-written output.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UserError


def _folder_of(path: Path) -> Path:
    """The folder that holds ``path`` itself (for a symbolic link, the link's folder, where the
    rename onto it lands), as an absolute path."""
    return Path(os.path.abspath(path)).parent


def check_writable_parent(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking that its folder exists and is writable."""
    path = Path(path)
    parent = _folder_of(path)
    if parent.is_file():
        raise UserError(f"{parent} is a file, not a folder: choose another path")
    if not parent.is_dir():
        raise UserError(f"output folder {parent} does not exist: create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise UserError(f"output folder {parent} is not writable: choose another path")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """:func:`check_writable_parent`, and ``path`` must not be a folder (a file goes there)."""
    path = check_writable_parent(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder: give the output a file name, in that folder or another")
    return path


def check_output_folder(path: str | os.PathLike) -> Path:
    """``path`` as a Path once a folder can be written there: no file in the way, and its nearest
    existing ancestor a writable folder (the folder itself may be made later)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file: give a folder for this output")
    existing = next(p for p in (path.resolve(), *path.resolve().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"cannot make a folder in {existing}: choose another output folder")
    return path


def _temporary(make, path: Path, **names):
    """What ``make`` (mkstemp or mkdtemp) returns, made beside ``path``; an OS refusal becomes a
    UserError."""
    try:
        return make(prefix=f".{path.name}.", dir=_folder_of(path), **names)
    except OSError as err:
        raise UserError(f"cannot write in {_folder_of(path)} ({err.strerror}): "
                        "choose another output path") from None


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path`` (a symbolic link there is replaced, not followed); an OS
    refusal becomes a UserError."""
    try:
        if path.is_symlink() and tmp.is_dir():
            path.unlink()
        elif path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"cannot put the output in place at {path} ({err.strerror}): "
                        "choose another output path") from None


def _default_mode(full: int) -> int:
    """Permissions a plain ``open``/``mkdir`` would give (mkstemp/mkdtemp make 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary file path; on success rename it onto ``path``, on error delete it.

    ``suffix`` is appended to the temporary name so that writers that dispatch on the
    extension (``.nii.gz``, ``.png``) still see the right one.
    """
    path = check_output_file(path)
    fd, tmp = _temporary(tempfile.mkstemp, path, suffix=f".tmp{suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _default_mode(0o666))
        _replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` (which must not hold other data)."""
    path = check_output_folder(check_writable_parent(path))
    tmp = Path(_temporary(tempfile.mkdtemp, path, suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, _default_mode(0o777))
        _replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as strict JSON (RFC 8259) atomically: a non-finite number (the PSNR of
    identical images, a correlation of a constant map) becomes null, which every parser reads."""
    import json
    import math

    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [finite(item) for item in value]
        return value
    with atomic_path(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(finite(payload), indent=2, allow_nan=False) + "\n")
    return Path(path)
