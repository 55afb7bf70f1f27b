"""Readers, writers and bundled samples: round trips, DICOM semantics, bad input."""

from __future__ import annotations

import nrrd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from scorerecon.cli import main
from scorerecon.data.intensity import hu_to_unit
from scorerecon.data.io import read_image, read_slice, write_image
from scorerecon.data.samples import list_samples, load_sample, sample_path
from scorerecon.errors import UserError


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 3000, size=(4, 24, 32)).astype(np.float32)


@pytest.fixture
def dicom_file():
    return sample_path("ct-spine-dicom")


# ------------------------------------------------------------------ simple formats
def test_npy_round_trip(tmp_path, volume):
    write_image(tmp_path / "v.npy", volume)
    assert np.array_equal(read_image(tmp_path / "v.npy").array, volume)
    write_image(tmp_path / "s.npy", volume[0])
    assert read_image(tmp_path / "s.npy").array.shape == (24, 32)


def test_npy_squeezes_leading_batch_axes_and_takes_magnitude(tmp_path):
    np.save(tmp_path / "b.npy", (3 + 4j) * np.ones((1, 1, 8, 8), dtype=np.complex64))
    image = read_image(tmp_path / "b.npy")
    assert image.array.shape == (8, 8) and np.allclose(image.array, 5.0)


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_round_trip_with_spacing(tmp_path, volume, name):
    write_image(tmp_path / name, volume, spacing=(2.5, 0.5, 0.75))
    image = read_image(tmp_path / name)
    assert np.array_equal(image.array, volume)
    assert image.spacing == pytest.approx((2.5, 0.5, 0.75))
    write_image(tmp_path / ("s" + name), volume[1], spacing=(0.5, 0.75))
    single = read_image(tmp_path / ("s" + name))
    assert np.array_equal(single.array, volume[1]) and single.spacing == pytest.approx((0.5, 0.75))


def test_nifti_records_the_modality_in_its_description(tmp_path, volume):
    import nibabel as nib
    write_image(tmp_path / "mr.nii.gz", volume, modality="mri")
    write_image(tmp_path / "ct.nii.gz", volume, modality="ct")
    write_image(tmp_path / "plain.nii.gz", volume)
    assert [read_image(tmp_path / f"{n}.nii.gz").modality for n in ("mr", "ct", "plain")] == ["mr", "ct", None]
    other = nib.Nifti1Image(np.zeros((4, 4, 1), np.float32), np.eye(4))
    other.header["descrip"] = b"FSL5.0"
    nib.save(other, tmp_path / "other.nii.gz")
    assert read_image(tmp_path / "other.nii.gz").modality is None


def test_nifti_orientation_is_canonical(tmp_path, volume):
    """A volume stored with x flipped (LAS affine) reads the same as its RAS twin."""
    import nibabel as nib
    write_image(tmp_path / "ras.nii.gz", volume, spacing=(2.0, 1.0, 1.0))
    ras = nib.load(tmp_path / "ras.nii.gz")
    data = np.asarray(ras.dataobj)
    assert data[32 - 1 - 3, 24 - 1 - 5, 2] == volume[2, 5, 3]  # v[s, r, c] = voxel (W-1-c, H-1-r, s)
    las_affine = ras.affine @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data[::-1].copy(), las_affine), tmp_path / "las.nii.gz")
    assert np.array_equal(read_image(tmp_path / "las.nii.gz").array, volume)


def test_nifti_and_nrrd_of_one_scan_read_alike_with_the_patient_right_at_column_0(tmp_path, volume):
    """One scan stored as NIfTI (RAS+ voxel axes) and as NRRD (LPS): same array, radiological columns."""
    import nibabel as nib
    lps = volume.copy()  # axes (z, y, x) of LPS: x grows towards the patient's left
    lps[:, :, 0] = 1000.0  # the patient's rightmost column
    _nrrd_lps(tmp_path / "scan.nrrd", lps, steps=(0.75, 0.5, 2.5))
    ras = np.ascontiguousarray(lps[:, ::-1, ::-1].transpose(2, 1, 0))  # i, j, k towards right, anterior, superior
    nib.save(nib.Nifti1Image(ras, np.diag([0.75, 0.5, 2.5, 1.0])), tmp_path / "scan.nii.gz")
    from_nrrd, from_nifti = read_image(tmp_path / "scan.nrrd"), read_image(tmp_path / "scan.nii.gz")
    assert np.array_equal(from_nifti.array, from_nrrd.array) and np.array_equal(from_nrrd.array, lps)
    assert np.all(from_nifti.array[:, :, 0] == 1000.0) and from_nifti.spacing == from_nrrd.spacing


def _nrrd_lps(path, data, steps=(0.57, 0.57, 5.0), space="left-posterior-superior", **fields):
    """Write ``data`` (C order: z, y, x) as pyradiomics / Slicer do: gzip, diagonal space directions."""
    directions = np.diag(steps)[: data.ndim]  # rows: the x, y[, z] file axes
    header = {"space": space, "space directions": directions, "kinds": ["domain"] * data.ndim,
              "encoding": "gzip", "space origin": [-120.0, -95.5, 30.0]} | fields
    nrrd.write(str(path), data, header, index_order="C")
    return path


@pytest.mark.parametrize("shape, spacing", [((4, 24, 32), (2.5, 0.5, 0.75)), ((24, 32), (0.6, 1.3))])
def test_nrrd_round_trip_with_spacing_and_modality(tmp_path, volume, shape, spacing):
    array = volume[0] if len(shape) == 2 else volume
    write_image(tmp_path / "v.nrrd", array, spacing=spacing, modality="ct")
    image = read_image(tmp_path / "v.nrrd")
    assert image.array.dtype == np.float32 and np.array_equal(image.array, array)
    assert image.spacing == spacing and image.modality == "ct" and image.meta["format"] == "nrrd"
    header = nrrd.read_header(str(tmp_path / "v.nrrd"))
    assert header["space"] == "left-posterior-superior" and header["encoding"] == "gzip"
    assert header["type"] == "float" and header["modality"] == "ct"
    assert np.array_equal(header["space directions"][:, :len(shape)], np.diag(spacing[::-1]))  # x first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nrrd"]  # atomic: no temporary left
    write_image(tmp_path / "plain.nrrd", array)
    plain = read_image(tmp_path / "plain.nrrd")
    assert np.array_equal(plain.array, array) and plain.spacing is None and plain.modality is None


def test_nrrd_lps_volume_reads_in_dicom_layout(tmp_path):
    """An int16 LPS volume as pyradiomics ships it: (z, y, x) with z inferior first, y anterior first."""
    stored = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5) - 1000
    stored[0, 0, 1] = 3000  # z = 0 (most inferior), y = 0 (most anterior), x = 1 (next to patient right)
    image = read_image(_nrrd_lps(tmp_path / "ct.nrrd", stored))
    assert image.array.shape == (4, 6, 5) and np.array_equal(image.array, stored)
    assert image.array[0, 0, 1] == 3000  # first slice, top row, second column
    assert image.spacing == pytest.approx((5.0, 0.57, 0.57)) and image.modality is None
    assert read_slice(tmp_path / "ct.nrrd").spacing == pytest.approx((0.57, 0.57))
    _nrrd_lps(tmp_path / "mr.nrrd", stored, modality="MR")
    assert read_image(tmp_path / "mr.nrrd").modality == "mr"
    _nrrd_lps(tmp_path / "slice.nrrd", stored[0], steps=(0.57, 0.6))
    single = read_image(tmp_path / "slice.nrrd")
    assert np.array_equal(single.array, stored[0]) and single.spacing == pytest.approx((0.6, 0.57))
    nrrd.write(str(tmp_path / "spacings.nrrd"), stored, {"spacings": [0.57, 0.6, 5.0]}, index_order="C")
    assert read_image(tmp_path / "spacings.nrrd").spacing == pytest.approx((5.0, 0.6, 0.57))


@pytest.mark.parametrize("case", ["ras", "ras-2d", "negative-lps", "ras-negative", "permuted"])
def test_nrrd_other_orientations_read_like_their_lps_twin(tmp_path, case):
    lps = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    if case == "ras":  # RAS x, y point to patient right, anterior: the stored x, y are reversed
        path = _nrrd_lps(tmp_path / "f.nrrd", lps[:, ::-1, ::-1].copy(), (0.6, 0.57, 5.0),
                         "right-anterior-superior")
    elif case == "ras-2d":
        path = _nrrd_lps(tmp_path / "f.nrrd", lps[0, ::-1, ::-1].copy(), (0.6, 0.57), "RAS")
    elif case == "negative-lps":  # x and z stored from patient left / superior
        path = _nrrd_lps(tmp_path / "f.nrrd", lps[::-1, :, ::-1].copy(), (-0.6, 0.57, -5.0))
    elif case == "ras-negative":  # RAS with negative x, y directions is LPS positive: nothing to flip
        path = _nrrd_lps(tmp_path / "f.nrrd", lps, (-0.6, -0.57, 5.0), "right-anterior-superior")
    else:  # file axes x, z, y (sagittal-like storage): C order (y, z, x)
        path = tmp_path / "f.nrrd"
        nrrd.write(str(path), lps.transpose(1, 0, 2).copy(), {"space": "left-posterior-superior",
                   "space directions": [[0.6, 0, 0], [0, 0, 5.0], [0, 0.57, 0]]}, index_order="C")
    image = read_image(path)
    expected = lps[0] if case == "ras-2d" else lps
    assert np.array_equal(image.array, expected)
    assert image.spacing == pytest.approx((5.0, 0.57, 0.6)[-expected.ndim:])


def test_nrrd_oblique_directions_give_their_norms_as_spacing(tmp_path):
    stored = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    c, s = np.cos(0.3), np.sin(0.3)  # rotated 17 degrees about z
    nrrd.write(str(tmp_path / "o.nrrd"), stored, {"space": "left-posterior-superior", "space directions":
               [[0.6 * c, 0.6 * s, 0], [-0.5 * s, 0.5 * c, 0], [0, 0, 2.0]]}, index_order="C")
    image = read_image(tmp_path / "o.nrrd")
    assert np.array_equal(image.array, stored) and image.spacing == pytest.approx((2.0, 0.5, 0.6))


def test_nrrd_bad_files_raise_one_line_user_errors_naming_the_file(tmp_path):
    (tmp_path / "random.nrrd").write_bytes(np.random.default_rng(0).bytes(400))
    write_image(tmp_path / "good.nrrd", np.ones((8, 8, 8), np.float32), spacing=(1, 1, 1))
    data = (tmp_path / "good.nrrd").read_bytes()
    (tmp_path / "truncated.nrrd").write_bytes(data[: len(data) // 2 + 30])
    (tmp_path / "empty.nrrd").write_bytes(b"")
    nrrd.write(str(tmp_path / "four.nrrd"), np.zeros((2, 3, 4, 5), np.float32), index_order="C")
    nrrd.write(str(tmp_path / "vector.nrrd"), np.zeros((3, 4, 5, 3), np.float32),
               {"kinds": ["vector", "domain", "domain", "domain"]})
    cases = {"random": "not a readable NRRD", "truncated": "not a readable NRRD", "empty": "not a readable NRRD",
             "four": "4-D NRRD", "vector": "'vector' axis"}
    for name, match in cases.items():
        path = tmp_path / f"{name}.nrrd"
        with pytest.raises(UserError, match=match) as info:
            read_image(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name


def test_cli_simulate_from_nrrd_reconstruct_and_evaluate_nrrd(tmp_path, capsys):
    from scorerecon.solvers.registry import _sibling
    y, x = np.mgrid[:32, :32]
    truth = np.where(np.hypot(y - 15.5, x - 15.5) < 12, 40.0, -1000.0).astype(np.float32)
    write_image(tmp_path / "truth.nrrd", np.stack([truth - 100, truth, truth + 100]),
                spacing=(3.0, 0.8, 0.8), modality="ct")
    assert main(["simulate", "ct", str(tmp_path / "truth.nrrd"), "-o", str(tmp_path / "m.h5"), "--slice", "1",
                 "--full-views", "60"]) == 0
    out = tmp_path / "fbp.nrrd"
    assert main(["reconstruct", str(tmp_path / "m.h5"), "-o", str(out), "--method", "fbp"]) == 0
    recon = read_image(out)
    assert recon.array.shape == (32, 32) and recon.modality == "ct" and recon.spacing == pytest.approx((0.8, 0.8))
    assert np.abs(recon.array - truth).mean() < 150  # HU
    write_image(tmp_path / "slice.nrrd", truth, modality="ct")
    assert main(["evaluate", str(out), str(tmp_path / "slice.nrrd")]) == 0
    assert "PSNR" in capsys.readouterr().out
    assert _sibling(str(out), "_std") == str(tmp_path / "fbp_std.nrrd")
    assert _sibling("r.NII.GZ", "_std") == "r_std.NII.GZ" and _sibling("r.npy/", "_std") == "r_std.npy"
    assert _sibling("dicom_out/", "_std") == "dicom_out_std"  # a DICOM folder: the tag after its name


def test_png_ct_window_within_8bit_quantisation(tmp_path):
    hu = np.linspace(-1500, 2500, 64 * 64, dtype=np.float32).reshape(64, 64)
    write_image(tmp_path / "ct.png", hu, modality="ct")
    grey = read_image(tmp_path / "ct.png").array
    assert np.abs(grey / 255 - np.clip(hu_to_unit(hu), 0, 1)).max() <= 0.5 / 255 + 1e-6


def test_png_min_max_and_16bit_read(tmp_path):
    from PIL import Image as PILImage
    image = np.linspace(3.0, 7.0, 100, dtype=np.float32).reshape(10, 10)
    write_image(tmp_path / "mr.png", image)
    grey = read_image(tmp_path / "mr.png").array
    assert grey.min() == 0 and grey.max() == 255
    assert np.abs(grey / 255 - (image - 3) / 4).max() <= 0.5 / 255 + 1e-6
    stored = np.arange(0, 60000, 600, dtype=np.uint16).reshape(10, 10)
    PILImage.fromarray(stored).save(tmp_path / "grey16.png")
    assert np.array_equal(read_image(tmp_path / "grey16.png").array, stored)


# ------------------------------------------------------------------------- DICOM
def test_dicom_rescale_slope_and_intercept_are_applied(tmp_path, dicom_file):
    ds = pydicom.dcmread(dicom_file)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.save_as(tmp_path / "scaled.dcm")
    image = read_image(tmp_path / "scaled.dcm")
    expected = ds.pixel_array.astype(np.float64) * 2 - 1000  # the rescale, written out
    assert np.array_equal(image.array, expected.astype(np.float32)) and image.array.min() < -500
    assert image.modality == "ct" and image.spacing == pytest.approx((0.661468, 0.661468))
    assert image.dicom_reference == tmp_path / "scaled.dcm"


def test_dicom_series_without_reference_round_trip(tmp_path, volume):
    write_image(tmp_path / "series", volume, spacing=(3.0, 0.8, 0.9), modality="ct")
    files = sorted((tmp_path / "series").iterdir())
    assert len(files) == 4
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4 and len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert all(ds.pixel_array.dtype == np.int16 and float(ds.RescaleIntercept) == -1024 for ds in datasets)
    image = read_image(tmp_path / "series")
    assert np.abs(image.array - volume).max() <= 0.5
    assert image.spacing == pytest.approx((3.0, 0.8, 0.9)) and image.modality == "ct"


def test_a_dicom_folder_of_one_slice_keeps_its_pixel_spacing(tmp_path, volume):
    write_image(tmp_path / "one", volume[1], spacing=(0.7, 0.6), modality="ct")
    image = read_image(tmp_path / "one")
    assert image.array.shape == volume[1].shape and np.abs(image.array - volume[1]).max() <= 0.5
    assert image.spacing == pytest.approx((0.7, 0.6)) and image.modality == "ct"


def test_ct_values_beyond_int16_are_kept_by_a_larger_rescale_slope(tmp_path):
    hu = np.full((8, 8), -1000.0, np.float32)
    hu[2:4, 2:4] = 40000.0  # metal, put back after reconstruction
    write_image(tmp_path / "metal", hu, spacing=(0.5, 0.5), modality="ct")
    back = read_image(tmp_path / "metal")
    slope = float(pydicom.dcmread(next((tmp_path / "metal").iterdir())).RescaleSlope)
    assert 1.0 < slope < 1.3 and np.abs(back.array - hu).max() <= slope / 2 + 1e-3
    write_image(tmp_path / "soft", np.clip(hu, None, 3000), modality="ct")
    assert float(pydicom.dcmread(next((tmp_path / "soft").iterdir())).RescaleSlope) == 1.0


def test_dicom_mr_series_round_trip_within_quantisation(tmp_path):
    image = np.random.default_rng(1).random((2, 16, 16)).astype(np.float32)
    write_image(tmp_path / "mr", image, modality="mri")
    back = read_image(tmp_path / "mr")
    assert back.modality == "mr" and np.abs(back.array - image).max() <= 0.5 / 65535 * 1.01


def test_dicom_with_reference_copies_tags_and_makes_new_uids(tmp_path, dicom_file):
    ref = pydicom.dcmread(dicom_file)
    hu = read_image(dicom_file).array + 7.0
    write_image(tmp_path / "out", hu, reference=dicom_file)
    (written,) = (tmp_path / "out").iterdir()
    ds = pydicom.dcmread(written)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality",
                    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SOPClassUID"):
        assert ds[keyword].value == ref[keyword].value, keyword
    assert ds.SeriesInstanceUID != ref.SeriesInstanceUID and ds.SOPInstanceUID != ref.SOPInstanceUID
    assert not any(elem.tag.is_private for elem in ds)
    assert np.abs(read_image(written).array - hu).max() <= 0.5


def test_dicom_reference_of_other_size_keeps_field_of_view(tmp_path, dicom_file):
    ref = pydicom.dcmread(dicom_file)
    write_image(tmp_path / "up", np.zeros((256, 256), np.float32), reference=dicom_file, modality="ct")
    ds = pydicom.dcmread(next((tmp_path / "up").iterdir()))
    assert float(ds.PixelSpacing[0]) * 256 == pytest.approx(float(ref.PixelSpacing[0]) * 128)
    first_edge = float(ref.ImagePositionPatient[0]) - float(ref.PixelSpacing[1]) / 2
    assert float(ds.ImagePositionPatient[0]) - float(ds.PixelSpacing[1]) / 2 == pytest.approx(first_edge)


def test_dicom_reference_series_slice_count_must_match(tmp_path, volume):
    write_image(tmp_path / "ref", volume, spacing=(2.0, 1.0, 1.0), modality="ct")
    write_image(tmp_path / "same", volume + 1, reference=tmp_path / "ref")
    assert np.abs(read_image(tmp_path / "same").array - volume - 1).max() <= 0.5
    with pytest.raises(UserError, match="slices"):
        write_image(tmp_path / "bad", volume[:2], reference=tmp_path / "ref")


def _series_file(folder, k, position, series_uid, value, orientation=(1, 0, 0, 0, 1, 0), spacing=(1, 1)):
    """Slice ``k`` of a CT series: pixels ``value`` (a number, or an int16 array), ImagePositionPatient
    ``position`` (a z, or x, y, z)."""
    pixels = np.full((4, 4), value, np.int16) if np.isscalar(value) else np.asarray(value, np.int16)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.SeriesInstanceUID, ds.Modality, ds.InstanceNumber = series_uid, "CT", 10 - k
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [0, 0, position] if np.isscalar(position) else list(position)
    ds.PixelSpacing, (ds.Rows, ds.Columns) = list(spacing), pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(folder / f"f{k}.dcm", enforce_file_format=True)


def test_series_sorted_by_position_and_single_series_enforced(tmp_path):
    uid = generate_uid()
    for k, position in enumerate([2.5, -2.5, 0.0]):
        _series_file(tmp_path, k, position, uid, int(position * 10))
    (tmp_path / "notes.txt").write_text("not DICOM")
    image = read_image(tmp_path)
    assert image.array[:, 0, 0].tolist() == [-25, 0, 25] and image.spacing == pytest.approx((2.5, 1, 1))
    middle = read_slice(tmp_path)
    assert middle.dicom_reference == tmp_path / "f2.dcm" and middle.array[0, 0] == 0
    other = generate_uid()
    _series_file(tmp_path, 3, 9.0, other, 0)
    with pytest.raises(UserError, match=other):
        read_image(tmp_path)


@pytest.mark.parametrize("case, match", [
    ("echoes", "3 slices at only 2 positions"), ("localizer", "1 of the 3 slices .* lie in another orientation")])
def test_a_series_that_is_not_one_volume_is_refused_in_one_line(tmp_path, case, match):
    """Two echoes at one position, or a localizer of another orientation, in one series folder."""
    uid = generate_uid()
    _series_file(tmp_path, 0, 0.0, uid, 1)
    _series_file(tmp_path, 1, 3.0, uid, 2)
    if case == "echoes":
        _series_file(tmp_path, 2, 3.0, uid, 3)
    else:
        _series_file(tmp_path, 2, [0, 0, 6.0], uid, 3, orientation=(0, 1, 0, 0, 0, -1))
    with pytest.raises(UserError, match=match) as info:
        read_image(tmp_path)
    assert "\n" not in str(info.value)


def test_a_series_with_a_missing_slice_is_refused_and_its_slices_still_read(tmp_path):
    """Positions 0, 3, 9: no one slice spacing describes the stack, so the volume is refused in one
    line naming the gap rather than written with a median spacing; one file still reads."""
    uid = generate_uid()
    for k, position in enumerate([0.0, 3.0, 9.0]):
        _series_file(tmp_path, k, position, uid, k)
    with pytest.raises(UserError, match="6 mm between slices 2 and 3 .* 3 mm elsewhere") as info:
        read_image(tmp_path)
    assert "\n" not in str(info.value)
    assert read_slice(tmp_path / "f2.dcm").array[0, 0] == 2
    (tmp_path / "f2.dcm").unlink()
    _series_file(tmp_path, 2, 6.004, uid, 2)  # rounding in the stored positions is no gap
    assert read_image(tmp_path).spacing == pytest.approx((3.002, 1, 1))


def test_slices_whose_positions_are_rounded_to_hundredths_are_evenly_spaced(tmp_path):
    """0.625 mm slices stored to 0.01 mm have gaps of 0.62 and 0.63 mm: one series, not a gap."""
    uid = generate_uid()
    for k in range(8):
        _series_file(tmp_path, k, round(-100 + k * 0.625, 2), uid, k)
    assert read_image(tmp_path).spacing[0] == pytest.approx(0.625, abs=0.006)


def _sagittal_series(folder, volume, steps=(2.0, 0.5, 0.8)):
    """The sagittal DICOM series of an LPS volume (z, y, x): ImageOrientationPatient 0,1,0,0,0,-1
    (along a row +y, down the rows -z, so the normal is -x), one file per x, superior row first."""
    folder.mkdir()
    uid = generate_uid()
    dz, dy, dx = steps
    for i in range(volume.shape[2]):
        corner = [i * dx, 0.0, (volume.shape[0] - 1) * dz]
        _series_file(folder, i, corner, uid, volume[::-1, :, i], orientation=(0, 1, 0, 0, 0, -1), spacing=(dz, dy))
    return folder


def test_sagittal_dicom_series_reads_like_its_lps_nrrd_twin(tmp_path):
    """Every reader gives the same array for the same scan: a sagittal series is turned into the
    axial (+z, +y, +x) layout, as NRRD and NIfTI volumes are."""
    lps = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    image = read_image(_sagittal_series(tmp_path / "sag", lps))
    twin = read_image(_nrrd_lps(tmp_path / "twin.nrrd", lps, (0.8, 0.5, 2.0)))
    assert np.array_equal(image.array, lps) and np.array_equal(twin.array, lps)
    assert read_slice(tmp_path / "sag", 1).dicom_reference is None  # an axial slice has no file of its own
    assert image.spacing == pytest.approx((2.0, 0.5, 0.8)) == twin.spacing


def test_writing_with_a_sagittal_reference_stores_the_reference_layout(tmp_path):
    lps = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    reference = _sagittal_series(tmp_path / "ref", lps)
    write_image(tmp_path / "out", lps.astype(np.float32) + 7, reference=reference)
    written = [pydicom.dcmread(f) for f in (tmp_path / "out").iterdir()]
    refs = {round(float(pydicom.dcmread(f).ImagePositionPatient[0]), 3): pydicom.dcmread(f) for f in reference.iterdir()}
    for ds in written:
        ref = refs[round(float(ds.ImagePositionPatient[0]), 3)]
        assert ds.ImageOrientationPatient == ref.ImageOrientationPatient and ds.PixelSpacing == ref.PixelSpacing
        assert np.array_equal(apply_modality_lut(ds.pixel_array, ds), ref.pixel_array + 7)
    back = read_image(tmp_path / "out")
    assert np.array_equal(back.array, lps + 7) and back.spacing == pytest.approx((2.0, 0.5, 0.8))
    with pytest.raises(UserError, match="in the reference's orientation"):
        write_image(tmp_path / "bad", lps[:, :, :4].astype(np.float32), reference=reference)


def test_a_slice_stored_posterior_first_reads_anterior_up_and_writes_back(tmp_path):
    """ImageOrientationPatient 1,0,0,0,-1,0 (rows run posterior → anterior, as in pydicom's
    explicit_VR-UN.dcm): read with the rows flipped, and a write with it as reference flips back."""
    stored = np.arange(16, dtype=np.int16).reshape(4, 4)
    _series_file(tmp_path, 0, [0, 3, 0], generate_uid(), stored, orientation=(1, 0, 0, 0, -1, 0))
    image = read_image(tmp_path / "f0.dcm")
    assert np.array_equal(image.array, stored[::-1])
    write_image(tmp_path / "out", image.array + 1, reference=tmp_path / "f0.dcm")
    (written,) = (tmp_path / "out").iterdir()
    assert np.array_equal(apply_modality_lut(pydicom.dcmread(written).pixel_array, pydicom.dcmread(written)), stored + 1)
    assert np.array_equal(read_image(written).array, stored[::-1] + 1)


@pytest.mark.parametrize("orientation", [(1, 0, 0, 0, -1, 0), (-1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0)])
def test_a_series_with_flipped_in_plane_axes_reads_like_its_slices_and_writes_back(tmp_path, orientation):
    """A series whose rows or columns run along −x or −y (prone, feet first) is flipped in plane
    once, as each of its files read alone is; written with itself as reference, the values go
    back to where they were stored."""
    stored = np.arange(3 * 4 * 4, dtype=np.int16).reshape(3, 4, 4)
    series, uid = tmp_path / "series", generate_uid()
    series.mkdir()
    normal = np.cross(orientation[:3], orientation[3:])
    for k in range(3):
        _series_file(series, k, list(normal * k), uid, stored[k], orientation=orientation)
    volume = read_image(series).array
    superior_last = range(3) if normal[2] > 0 else range(2, -1, -1)  # the io layout runs along +z
    assert np.array_equal(volume, np.stack([read_image(series / f"f{k}.dcm").array for k in superior_last]))
    assert not np.array_equal(volume, stored)
    for k, file in enumerate(superior_last):  # each slice names its own file, for a --reference
        assert read_slice(series, k).dicom_reference == series / f"f{file}.dcm"
    write_image(tmp_path / "out", volume + 1, reference=series)
    written = {int(ds.InstanceNumber): ds for ds in map(pydicom.dcmread, (tmp_path / "out").iterdir())}
    for k in range(3):
        ds = written[k + 1]
        assert np.array_equal(apply_modality_lut(ds.pixel_array, ds), stored[k] + 1)
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(list(normal * k))


def test_enhanced_multiframe_uses_per_frame_rescale_and_positions(tmp_path):
    stored = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2.1", generate_uid()
    ds.Modality, ds.NumberOfFrames, ds.Rows, ds.Columns = "CT", 3, 8, 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [0.5, 0.6], 2.0
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    frames = []
    for k in range(3):
        transform, position, frame = Dataset(), Dataset(), Dataset()
        transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = k + 1, -1000 + 100 * k, "HU"
        position.ImagePositionPatient = [0, 0, 10.0 - 3 * k]  # stored top-down: read back reversed
        frame.PixelValueTransformationSequence = Sequence([transform])
        frame.PlanePositionSequence = Sequence([position])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = stored.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "mf.dcm")
    expected = np.stack([stored[k] * (k + 1) - 1000 + 100 * k for k in range(3)])[::-1]
    assert np.array_equal(image.array, expected) and image.spacing == pytest.approx((3.0, 0.5, 0.6))
    assert read_slice(tmp_path / "mf.dcm", 2).array.shape == (8, 8)
    frames[2].PlanePositionSequence[0].ImagePositionPatient = [0, 0, 10.0]  # a second phase at frame 0's place
    ds.save_as(tmp_path / "phases.dcm", enforce_file_format=True)
    with pytest.raises(UserError, match="3 slices at only 2 positions"):
        read_image(tmp_path / "phases.dcm")


def test_pydicom_enhanced_ct_sample_reads_as_volume():
    pytest.importorskip("data_store", reason="pydicom-data not installed")
    from scorerecon.data.datasets import testdata_file
    image = read_image(testdata_file("eCT_Supplemental.dcm"))
    assert image.array.shape == (2, 512, 512) and image.modality == "ct" and image.array.min() >= -1024


# --------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, match", [
    (lambda p: p / "missing.npy", "does not exist"),
    (lambda p: (p / "bad.dcm").write_text("hello") and p / "bad.dcm", "not a readable DICOM"),
    (lambda p: (p / "x.txt").write_text("hello") and p / "x.txt", "unsupported image format"),
    (lambda p: np.save(p / "nan.npy", np.array([[0.0, np.nan]])) or p / "nan.npy", "NaN or Inf"),
    (lambda p: np.save(p / "inf.npy", np.array([[0.0, np.inf]])) or p / "inf.npy", "NaN or Inf"),
    (lambda p: np.save(p / "e.npy", np.zeros((0, 4))) or p / "e.npy", "empty"),
    (lambda p: np.save(p / "d4.npy", np.zeros((2, 2, 4, 4))) or p / "d4.npy", "expected a 2-D image"),
    (lambda p: np.save(p / "d1.npy", np.zeros(5)) or p / "d1.npy", "expected a 2-D image"),
    (lambda p: p, "no DICOM image"),
    (lambda p: np.savez(p / "s.npz", image=np.ones((4, 4)), scale=[1.0, 2.0]) or p / "s.npz", "'scale' holds 2 values"),
    (lambda p: np.savez(p / "t.npz", image=np.ones((4, 4)), spacing=["a", "b"]) or p / "t.npz", "'spacing' holds <U1"),
    (lambda p: np.savez(p / "u.npz", image=np.ones((4, 4)), spacing=[1, 1, 1]) or p / "u.npz", "of 2 dimensions"),
])
def test_bad_inputs_raise_one_line_user_errors(tmp_path, make, match):
    with pytest.raises(UserError, match=match) as info:
        read_image(make(tmp_path))
    assert "\n" not in str(info.value)


def test_a_bare_dicom_data_set_without_preamble_or_file_meta_is_read(tmp_path):
    """Older and exported files hold the data set alone (no DICM preamble, no transfer syntax)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.2", generate_uid(), "CT"
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.arange(16, dtype=np.int16).tobytes()
    ds.save_as(tmp_path / "bare", implicit_vr=True, little_endian=True)
    assert (tmp_path / "bare").read_bytes()[128:132] != b"DICM"
    image = read_image(tmp_path)  # a folder: the file has no .dcm name either
    assert image.modality == "ct" and np.array_equal(image.array, np.arange(16).reshape(4, 4) - 1024)
    assert np.array_equal(read_image(tmp_path / "bare").array, image.array)


def test_dicom_without_pixel_data(tmp_path, dicom_file):
    ds = pydicom.dcmread(dicom_file)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(UserError, match="without pixel data"):
        read_image(tmp_path / "nopix.dcm")


def test_colour_png_and_slice_index_errors(tmp_path, volume):
    from PIL import Image as PILImage
    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(UserError, match="colour"):
        read_image(tmp_path / "rgb.png")
    np.save(tmp_path / "v.npy", volume)
    assert np.array_equal(read_slice(tmp_path / "v.npy").array, volume[2])
    with pytest.raises(UserError, match="out of range"):
        read_slice(tmp_path / "v.npy", 4)
    np.save(tmp_path / "s.npy", volume[0])
    with pytest.raises(UserError, match="single 2-D image"):
        read_slice(tmp_path / "s.npy", 1)


def test_writer_errors_leave_nothing_behind(tmp_path, volume):
    with pytest.raises(UserError, match="does not exist"):
        write_image(tmp_path / "nofolder" / "x.npy", volume)
    with pytest.raises(UserError, match="unsupported extension"):
        write_image(tmp_path / "x.tiff", volume)
    with pytest.raises(UserError, match="one 2-D slice"):
        write_image(tmp_path / "x.png", volume)
    with pytest.raises(UserError, match="spacing"):
        write_image(tmp_path / "x.nii.gz", volume, spacing=(1.0, 1.0))
    with pytest.raises(UserError, match="NaN"):
        write_image(tmp_path / "x.npy", np.full((4, 4), np.nan))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user data")
    with pytest.raises(UserError, match="holds files scorerecon did not write"):
        write_image(tmp_path / "busy", volume, modality="ct")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    assert (tmp_path / "busy" / "keep.txt").exists()


def test_a_dicom_output_replaces_only_a_series_scorerecon_wrote(tmp_path, volume):
    """Writing a series again into its folder replaces it; a folder of the user's own DICOM,
    even named like ours (Horos: IM-0001-0001.dcm; or IM00001.dcm from another program), is
    refused and left whole."""
    write_image(tmp_path / "ours", volume, modality="ct")
    write_image(tmp_path / "ours", volume + 10, modality="ct")
    assert np.abs(read_image(tmp_path / "ours").array - volume - 10).max() <= 0.5
    for name in ("IM-0001-0001.dcm", "IM00001.dcm"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        _series_file(folder, 0, 0.0, generate_uid(), 7)
        (folder / "f0.dcm").rename(folder / name)
        with pytest.raises(UserError, match="scorerecon did not write"):
            write_image(folder, volume, modality="ct")
        assert [p.name for p in folder.iterdir()] == [name]


def test_cli_evaluate_missing_file_exits_2_with_one_line(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((4, 4)))
    code = main(["evaluate", str(tmp_path / "missing.npy"), str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "missing.npy" in err


# ------------------------------------------------------------------------ samples
def test_samples_load_with_expected_units():
    names = list_samples()
    assert {"ct-head-0", "ct-head-1", "ct-abdomen-0", "mri-brain-0", "ct-spine-dicom"} <= set(names)
    ct = load_sample("ct-head-0")
    assert ct.array.shape == (256, 256) and ct.modality == "ct" and ct.array.min() >= -1024
    assert 0 < np.median(ct.array[100:150, 100:150]) < 80  # brain tissue, HU
    mri = load_sample("mri-brain-0")
    assert mri.modality == "mr" and mri.array.max() == pytest.approx(1.0) and mri.array.min() >= 0
    with pytest.raises(UserError, match="ct-head-0"):
        load_sample("nope")


def test_a_missing_pydicom_test_file_is_named_and_never_downloaded(monkeypatch):
    import pydicom.data
    from scorerecon.data.datasets import testdata_file
    calls = []
    monkeypatch.setattr(pydicom.data, "get_testdata_file", lambda name, **kw: calls.append(kw))
    with pytest.raises(UserError, match="CT_nope.dcm is missing: pip install pydicom-data"):
        testdata_file("CT_nope.dcm")
    assert calls == [{"download": False}]


def test_bundled_ct_samples_match_their_source():
    pytest.importorskip("data_store", reason="pydicom-data not installed")
    from scorerecon.data.datasets import resample_ct, testdata_file
    from scorerecon.data.samples import CT_SAMPLES
    for name, file in CT_SAMPLES.items():
        source = read_image(testdata_file(file))
        hu, spacing = resample_ct(source.array, source.spacing)
        sample = load_sample(name)
        assert np.abs(sample.array - hu).max() <= 0.5 and sample.spacing == pytest.approx(spacing)


def test_written_dicom_passes_dciodvfy(tmp_path, dicom_file):
    import shutil
    import subprocess
    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip("dciodvfy (Debian dicom3tools) not installed")
    write_image(tmp_path / "sc", np.zeros((2, 8, 8)), spacing=(2, 1, 1), modality="ct")
    write_image(tmp_path / "ref", read_image(dicom_file).array, reference=dicom_file)
    for folder in ("sc", "ref"):
        report = subprocess.run([validator, str(next((tmp_path / folder).iterdir()))],
                                capture_output=True, text=True).stderr
        assert "Error" not in report, report


def test_truncated_pixel_data(tmp_path, dicom_file):
    ds = pydicom.dcmread(dicom_file)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(tmp_path / "short.dcm")
    with pytest.raises(UserError, match="damaged"):
        read_image(tmp_path / "short.dcm")


def test_bundled_mri_samples_match_the_mni_template():
    pytest.importorskip("nilearn", reason="nilearn not installed")
    from scorerecon.data.datasets import fit_slice, mni152_volume, template_planes
    from scorerecon.data.samples import MRI_SAMPLES
    volume, spacing = mni152_volume()
    planes = {(plane, index): (image, pixel) for plane, index, image, pixel, _ in template_planes(volume, spacing)}
    for name, key in MRI_SAMPLES.items():
        fitted, pixel = fit_slice(*planes[key])
        sample = load_sample(name)
        assert np.abs(sample.array - fitted / fitted.max()).max() <= 0.5 / 65535 + 1e-6
        assert sample.spacing == pytest.approx(pixel)
