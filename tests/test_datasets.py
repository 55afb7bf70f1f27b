"""Dataset preparation from (fake or real) Debian packages: layout, splits, units, errors."""

from __future__ import annotations

import hashlib
import io
import json
import plistlib
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from scorerecon.cli import main
from scorerecon.data import datasets
from scorerecon.data.datasets import _write_splits, load_meta, load_split, prepare_dataset, read_inv3, unpack_deb
from scorerecon.errors import UserError

INV_DEB = Path("/tmp/invesalius-examples_3.1.99998-4_all.deb")
MRI_ROOT = Path("/tmp/mri")
SLICES = 12


def _tar_bytes(files: dict[str, bytes], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, content in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode()
        out += header + content + (b"\n" if len(content) % 2 else b"")
    return out


def _phantom_volume() -> np.ndarray:
    """Int16 HU head phantom (slices, 256, 256): air, skull ring, brain; a bone marker at the bottom rows."""
    y, x = np.mgrid[:256, :256]
    r = np.hypot((y - 128) / 100, (x - 128) / 80)
    slice_ = np.where(r < 0.9, 40, np.where(r < 1.0, 1200, -1024)).astype(np.int16)
    slice_[250:, 120:136] = 1500  # stored at the bottom: the reader flips it to the top
    return np.repeat(slice_[None], SLICES, axis=0)


def _fake_inv_deb(tmp_path: Path) -> Path:
    volume = _phantom_volume()
    plist = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(volume.shape)},
             "spacing": [0.9, 0.9, 2.0], "name": "phantom", "modality": "CT"}
    inv3 = _tar_bytes({"tmpdir/main.plist": plistlib.dumps(plist),
                       "tmpdir/matrix.dat": volume.astype("<i2").tobytes()}, "w:gz")
    data = _tar_bytes({"./usr/share/doc/invesalius-examples/examples/Cranium.inv3": inv3}, "w:xz")
    deb = tmp_path / "invesalius-examples_0_all.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar_bytes({}, "w:xz"),
                         "data.tar.xz": data}))
    return deb


@pytest.fixture
def fake_deb(tmp_path):
    pytest.importorskip("data_store", reason="pydicom-data (the CT evaluation source) not installed")
    return _fake_inv_deb(tmp_path)


def test_head_ct_from_fake_deb(tmp_path, fake_deb):
    out = prepare_dataset("head-ct", out=tmp_path / "head-ct", source=fake_deb)
    train, val, evaluation = (np.load(out / f"{s}.npy") for s in ("train", "val", "eval"))
    meta = json.loads((out / "meta.json").read_text())
    assert train.shape == (SLICES - 1, 256, 256) and val.shape == (1, 256, 256) and evaluation.shape[1:] == (256, 256)
    assert meta["counts"] == {"train": SLICES - 1, "val": 1, "eval": len(datasets.CT_EVAL_FILES)}
    for array in (train, val, evaluation):
        assert array.dtype == np.float32 and array.min() >= 0 and array.max() <= 1
    train_sources = {s["source"] for s in meta["slices"]["train"]}
    assert not train_sources & {s["source"] for s in meta["slices"]["val"]}
    assert all(s["source"].startswith("pydicom:") for s in meta["slices"]["eval"])
    assert train[0, 128, 128] == pytest.approx((40 + 1000) / 3000)
    assert train[0, :6, 128].max() > train[0, -6:, 128].max()  # marker flipped to the top
    assert meta["training_source"]["spacing_mm"] == pytest.approx([2.0, 0.9, 0.9])
    assert "GPL-2" in meta["training_source"]["licence"]


def test_head_ct_from_unpacked_folder_and_cli(tmp_path, fake_deb, capsys):
    root = unpack_deb(fake_deb, tmp_path / "unpacked")
    code = main(["data", "prepare", "head-ct", "--deb", str(root), "--out", str(tmp_path / "cli")])
    assert code == 0 and "prepared head-ct" in capsys.readouterr().out
    assert load_split("head-ct", "val", root=tmp_path / "cli").shape == (1, 256, 256)
    meta = load_meta("head-ct", root=tmp_path / "cli")
    assert meta["dataset"] == "head-ct" and meta["training_source"]["package"] == "invesalius-examples"


def test_unpack_deb_matches_dpkg(tmp_path):
    deb = _fake_inv_deb(tmp_path)
    ours = unpack_deb(deb, tmp_path / "ours")
    target = "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
    assert (ours / target).is_file()
    dpkg = pytest.importorskip("shutil").which("dpkg-deb")
    if dpkg:
        subprocess.run([dpkg, "-x", str(deb), str(tmp_path / "dpkg")], check=True, capture_output=True)
        assert (tmp_path / "dpkg" / target).read_bytes() == (ours / target).read_bytes()


def test_default_folder_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORERECON_DATA", str(tmp_path / "cache"))
    assert datasets.data_root() == tmp_path / "cache"
    with pytest.raises(UserError, match="scorerecon data prepare head-ct"):
        load_split("head-ct", "train")
    with pytest.raises(UserError, match="scorerecon data prepare brain-mri"):
        load_meta("brain-mri")


@pytest.mark.parametrize("which, returncode", [(None, 0), ("/usr/bin/apt-get", 100)])
def test_missing_apt_get_says_how_to_pass_deb(tmp_path, monkeypatch, which, returncode):
    monkeypatch.setattr(datasets.shutil, "which", lambda name: which)
    monkeypatch.setattr(datasets.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, returncode, "", "E: Unable to locate package invesalius-examples"))
    with pytest.raises(UserError, match="--source PATH") as info:
        prepare_dataset("head-ct", out=tmp_path / "x")
    assert "packages.debian.org" in str(info.value) and not (tmp_path / "x").exists()


def test_bad_deb_arguments(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        prepare_dataset("head-ct", out=tmp_path / "x", source=tmp_path / "nothing.deb")
    (tmp_path / "fake.deb").write_text("not an archive")
    with pytest.raises(UserError, match="not a Debian package"):
        prepare_dataset("head-ct", out=tmp_path / "x", source=tmp_path / "fake.deb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="Cranium.inv3 not found"):
        prepare_dataset("head-ct", out=tmp_path / "x", source=tmp_path / "empty")
    with pytest.raises(UserError, match="unknown dataset"):
        prepare_dataset("knee-mri")
    assert not (tmp_path / "x").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(UserError, match="holds other files"):
        prepare_dataset("head-ct", out=tmp_path / "mine", source=tmp_path / "empty")
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_a_damaged_download_is_one_line(tmp_path):
    """A .deb cut short inside its data.tar member, a damaged ar header, a truncated Cranium.inv3
    inside a whole .deb: each a UserError, not EOFError or ValueError from the unpacking."""
    data = _tar_bytes({"./a.bin": bytes(range(256)) * 400}, "w:gz")
    cut = tmp_path / "cut.deb"
    cut.write_bytes(_ar({"debian-binary": b"2.0\n", "data.tar.gz": data[:len(data) // 2]}))
    with pytest.raises(UserError, match="cannot unpack data.tar.gz"):
        unpack_deb(cut, tmp_path / "out1")
    bad_header = bytearray(_ar({"data.tar.gz": data}))
    bad_header[8 + 48:8 + 58] = b"12x4      "
    (tmp_path / "header.deb").write_bytes(bytes(bad_header))
    with pytest.raises(UserError, match="ar header of member 'data.tar.gz' is damaged"):
        unpack_deb(tmp_path / "header.deb", tmp_path / "out2")
    whole = _fake_inv_deb(tmp_path)
    inv3 = unpack_deb(whole, tmp_path / "unpacked") / "usr/share/doc/invesalius-examples/examples/Cranium.inv3"
    inv3.write_bytes(inv3.read_bytes()[:4000])
    with pytest.raises(UserError, match="is not an InVesalius project"):
        read_inv3(inv3)


def test_a_full_disk_while_unpacking_is_named_as_such(tmp_path, monkeypatch):
    """Not 'download it again': the archive is whole, the disk is full."""
    import errno
    data = _tar_bytes({"./a.bin": b"x" * 100}, "w:gz")
    (tmp_path / "whole.deb").write_bytes(_ar({"data.tar.gz": data}))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "a.bin"))
    monkeypatch.setattr(tarfile.TarFile, "extractall", full)
    with pytest.raises(UserError, match="cannot write .*a.bin while unpacking .*No space left on device"):
        unpack_deb(tmp_path / "whole.deb", tmp_path / "out")


def test_a_split_left_empty_by_the_filters_is_one_line(tmp_path):
    with pytest.raises(UserError, match="no slice of the head-ct source is left for val and eval"):
        _write_splits(tmp_path, "head-ct", {"train": [object()], "val": [], "eval": []}, {})
    assert not list(tmp_path.iterdir())


def _fake_pyradiomics(tmp_path: Path) -> tuple[Path, Path]:
    """(unpacked folder, .tar.gz) holding two small int16 chest and two brain 'patients' as pyradiomics
    stores them."""
    import nrrd
    folder = tmp_path / "pyradiomics-3.1.0" / "data"
    folder.mkdir(parents=True)
    y, x = np.mgrid[:128, :128]
    for name, slices, pixel in (("lung2_image.nrrd", 5, 2.5), ("lung1_image.nrrd", 3, 2.25)):
        body = np.where(np.hypot((y - 64) / 50, (x - 64) / 60) < 1, 30, -1024)
        body[10:14, 60:68] = 900                     # an anterior marker (row 10 = anterior in LPS)
        volume = np.repeat(body[None], slices, axis=0).astype(np.int16)
        volume[0] = -1024                            # an all-air slice: dropped by the tissue filter
        nrrd.write(str(folder / name), volume, {"space": "left-posterior-superior", "encoding": "gzip",
                                                 "space directions": np.diag([pixel, pixel, 5.0])},
                   index_order="C")
    for name, slices in (("brain1_image.nrrd", 4), ("brain2_image.nrrd", 3)):
        head = np.where(np.hypot((y - 64) / 50, (x - 64) / 40) < 1, 400, 0)
        head[10:14, 60:68] = 1000                    # an anterior marker
        volume = np.repeat(head[None], slices, axis=0).astype(np.int16)
        volume[-1] = 0                               # an empty slice: dropped by the foreground filter
        nrrd.write(str(folder / name), volume, {"space": "left-posterior-superior", "encoding": "gzip",
                                                 "space directions": np.diag([1.5, 1.5, 6.5])},
                   index_order="C")
    archive = tmp_path / "pyradiomics-3.1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "pyradiomics-3.1.0", arcname="pyradiomics-3.1.0")
    return tmp_path / "pyradiomics-3.1.0", archive


def test_chest_ct_trains_on_one_patient_and_validates_on_another(tmp_path, monkeypatch):
    pytest.importorskip("data_store", reason="pydicom-data (the CT evaluation source) not installed")
    folder, archive = _fake_pyradiomics(tmp_path)
    out = prepare_dataset("chest-ct", out=tmp_path / "from-folder", source=folder)
    meta = load_meta("chest-ct", out)
    assert meta["counts"] == {"train": 4, "val": 2, "eval": len(datasets.CT_EVAL_FILES)}
    assert {s["source"].split(":")[1] for s in meta["slices"]["train"]} == {"lung2_image.nrrd"}
    assert {s["source"].split(":")[1] for s in meta["slices"]["val"]} == {"lung1_image.nrrd"}
    assert meta["slices"]["val"][0]["spacing_mm"] == pytest.approx([2.25 * 128 / 256] * 2)
    train = load_split("chest-ct", "train", out)
    assert train.shape == (4, 256, 256) and 0 <= train.min() and train.max() <= 1
    assert train[0, 21:27, 122:134].mean() > datasets.hu_to_unit(800) > train[0, 229:235, 122:134].max()  # anterior up
    # the archive itself: refused unless it is the pinned one; fetched and checked like the real one
    with pytest.raises(UserError, match="is not pyradiomics-3.1.0.tar.gz"):
        prepare_dataset("chest-ct", out=tmp_path / "x", source=archive)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(datasets._BUILDERS, "chest-ct", (datasets.PackageSource(
        "pyradiomics", archive.as_uri(), digest), datasets._build_chest_ct))
    fetched = prepare_dataset("chest-ct", out=tmp_path / "fetched")
    np.testing.assert_array_equal(load_split("chest-ct", "val", fetched), load_split("chest-ct", "val", out))
    monkeypatch.setitem(datasets._BUILDERS, "chest-ct", (datasets.PackageSource(
        "pyradiomics", (tmp_path / "absent.tar.gz").as_uri(), digest), datasets._build_chest_ct))
    with pytest.raises(UserError, match="cannot download .* pass it with --source FILE"):
        prepare_dataset("chest-ct", out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_clinical_brain_mri_trains_on_one_patient_and_validates_on_another(tmp_path):
    pytest.importorskip("nilearn", reason="nilearn (the MRI evaluation source) not installed")
    folder, _ = _fake_pyradiomics(tmp_path)
    out = prepare_dataset("clinical-brain-mri", out=tmp_path / "brain", source=folder)
    meta = load_meta("clinical-brain-mri", out)
    assert meta["counts"]["train"] == 3 and meta["counts"]["val"] == 2 and meta["counts"]["eval"] > 20
    assert {s["source"].rsplit(":", 2)[0] for s in meta["slices"]["train"]} == {"pyradiomics:brain1_image.nrrd"}
    assert {s["source"].rsplit(":", 2)[0] for s in meta["slices"]["val"]} == {"pyradiomics:brain2_image.nrrd"}
    assert all(":axial:" in s["source"] for s in meta["slices"]["train"] + meta["slices"]["val"])
    assert meta["slices"]["val"][0]["spacing_mm"] == pytest.approx([1.5 * 128 / 256] * 2)
    val = load_split("clinical-brain-mri", "val", out)
    assert val.shape == (2, 256, 256) and np.allclose(val.max(axis=(1, 2)), 1.0) and val.min() >= 0
    assert val[0, 21:27, 122:134].mean() > 0.9 > 0.5 > val[0, 229:235, 122:134].max()  # anterior up
    assert meta["training_source"]["volumes"][1]["split"] == "val" and meta["modality"] == "mr"
    (folder / "data" / "brain2_image.nrrd").unlink()
    with pytest.raises(UserError, match="brain2_image.nrrd not found"):
        prepare_dataset("clinical-brain-mri", out=tmp_path / "x", source=folder)
    assert not (tmp_path / "x").exists()


def _ellipsoid(shape, spacing) -> np.ndarray:
    grids = np.meshgrid(*[(np.arange(n) - n / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    r = np.sqrt(sum((g / (0.4 * n * s)) ** 2 for g, n, s in zip(grids, shape, spacing)))
    return np.where(r < 1, 100 + 50 * np.cos(8 * r), 0).astype(np.uint8)


def test_brain_mri_from_fake_templates(tmp_path):
    pytest.importorskip("nilearn", reason="nilearn (the MRI evaluation source) not installed")
    import nibabel as nib
    root = tmp_path / "usr/share/mricron/templates"
    root.mkdir(parents=True)
    for name, shape, step in (("ch2.nii.gz", (40, 48, 40), 4.0), ("ch2better.nii.gz", (60, 72, 60), 2.0)):
        nib.save(nib.Nifti1Image(_ellipsoid(shape, (step,) * 3), np.diag([step, step, step, 1.0])), root / name)
    out = prepare_dataset("brain-mri", out=tmp_path / "brain", source=tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    train, val, evaluation = (np.load(out / f"{s}.npy") for s in ("train", "val", "eval"))
    assert train.shape[1:] == (256, 256) and len(val) == meta["counts"]["val"] > 0
    assert np.allclose(train.max(axis=(1, 2)), 1.0) and train.min() >= 0
    assert {s["source"].split(":")[1] for s in meta["slices"]["train"]} == {"axial", "coronal", "sagittal"}
    assert all(s["source"].startswith("MNI152:") for s in meta["slices"]["eval"]) and len(evaluation) > 20
    ch2 = [s for s in meta["slices"]["train"] + meta["slices"]["val"] if s["source"].startswith("ch2.nii.gz:axial")]
    assert ch2 and ch2[0]["spacing_mm"] == pytest.approx([192 / 256] * 2)  # 48 rows of 4 mm span 256 px


def test_fit_slice_keeps_aspect_and_scale():
    image = np.ones((50, 100), np.float32)
    fitted, spacing = datasets.fit_slice(image, (1.0, 2.0))
    assert spacing == pytest.approx((200 / 256, 200 / 256))
    rows = np.flatnonzero(fitted[:, 128] > 0.5)
    assert len(rows) == pytest.approx(50 / (200 / 256), abs=1)


@pytest.mark.skipif(not INV_DEB.is_file(), reason="no local copy of invesalius-examples")
def test_head_ct_from_real_package(tmp_path):
    pytest.importorskip("data_store", reason="pydicom-data not installed")
    out = prepare_dataset("head-ct", out=tmp_path / "real", source=INV_DEB)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["training_source"]["shape"] == [108, 256, 256]
    assert meta["training_source"]["hu_range"] == [-1024.0, 2986.0]
    assert meta["counts"]["train"] + meta["counts"]["val"] > 90


@pytest.mark.slow
@pytest.mark.skipif(not MRI_ROOT.is_dir(), reason="no local copy of mricron-data")
def test_brain_mri_from_real_package(tmp_path):
    out = prepare_dataset("brain-mri", out=tmp_path / "real", source=MRI_ROOT)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"]["train"] > 300 and meta["counts"]["eval"] > 30


def test_the_bundled_samples_are_what_build_samples_writes(tmp_path):
    """The shipped .npz samples can be regenerated from pip packages, array for array."""
    pytest.importorskip("nilearn", reason="nilearn (the MRI sample source) not installed")
    pytest.importorskip("data_store", reason="pydicom-data (the CT sample source) not installed")
    from scorerecon.data.samples import build_samples, samples_dir
    written = [p for p in build_samples(tmp_path) if p.suffix == ".npz"]
    assert {p.name for p in written} == {p.name for p in samples_dir().glob("*.npz")}
    for path in written:
        with np.load(path) as new, np.load(samples_dir() / path.name) as shipped:
            np.testing.assert_array_equal(new["image"], shipped["image"], err_msg=path.name)
            np.testing.assert_allclose(new["spacing"], shipped["spacing"])
