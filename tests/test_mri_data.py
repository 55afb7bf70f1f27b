"""MRI data: simulation, the fastMRI layout both ways, Siemens twix, and bad input."""

import json

import h5py
import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from scorerecon.cli import main
from scorerecon.data.fastmri import ISMRMRD_NS, ismrmrd_header, parse_ismrmrd_header, read_fastmri
from scorerecon.data.measurement import read_measurement
from scorerecon.data.samples import samples_dir
from scorerecon.errors import UserError
from scorerecon.operators.mri import fft2c, ifft2c
from scorerecon.simulate.mri import simulate_mri, write_simulated_mri
from scorerecon.solvers.registry import reconstruct

TWIX_SAMPLE = samples_dir() / "twix-gre.dat.gz"


def _image(size=48):
    return (resize(shepp_logan_phantom(), (size, size)) * 250).astype(np.float32)


# ------------------------------------------------------------------------ simulation
def test_simulation_is_seeded_and_scaled():
    a = simulate_mri(_image(), mask="random", coils=4, noise=0.01, seed=3)
    b = simulate_mri(_image(), mask="random", coils=4, noise=0.01, seed=3)
    c = simulate_mri(_image(), mask="random", coils=4, noise=0.01, seed=4)
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, c.data)
    assert a.data.shape == (4, 48, 48) and a.data.dtype == np.complex64
    assert np.all(a.data[:, a.mask == 0] == 0)
    assert a.attrs["intensity_scale"] == pytest.approx(float(_image().max()))
    assert a.attrs["effective_acceleration"] == pytest.approx(4.0, abs=0.1)
    np.testing.assert_allclose((np.abs(a.extras["sensitivity_maps"]) ** 2).sum(0), 1, rtol=1e-5)


def test_noise_has_the_requested_level():
    clean = simulate_mri(_image(64), mask="equispaced", acceleration=1, coils=2, noise=0.0, seed=1)
    noisy = simulate_mri(_image(64), mask="equispaced", acceleration=1, coils=2, noise=0.05, seed=1)
    noise = (noisy.data - clean.data) / clean.attrs["intensity_scale"]
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(0.05, rel=0.05)
    assert np.std(noise.real) == pytest.approx(np.std(noise.imag), rel=0.1)


def test_fully_sampled_real_single_coil_is_exact():
    meas = simulate_mri(_image(), mask="equispaced", acceleration=1, coils=1, real=True)
    image = ifft2c(torch.from_numpy(meas.data))[0].numpy()
    np.testing.assert_allclose(image.real, meas.truth, atol=1e-3 * meas.truth.max())
    assert np.abs(image.imag).max() < 1e-3 * meas.truth.max()


def test_simulation_bad_input():
    with pytest.raises(UserError, match="noise must be a finite number >= 0, got -1"):
        simulate_mri(_image(), noise=-1)
    with pytest.raises(UserError, match="no positive intensity"):
        simulate_mri(np.zeros((16, 16)))
    with pytest.raises(UserError, match="2-D image"):
        simulate_mri(np.ones((2, 16, 16)))


# ------------------------------------------------------------------- fastMRI layout
@pytest.mark.parametrize("coils, mask", [(1, "equispaced"), (4, "poisson")])
def test_fastmri_round_trip(tmp_path, coils, mask):
    meas = simulate_mri(_image(), mask=mask, coils=coils, noise=0.01, seed=2, pixel_size=(0.5, 0.75))
    write_simulated_mri(tmp_path / "m.h5", meas)
    back = read_measurement(tmp_path / "m.h5")
    np.testing.assert_array_equal(back.data, meas.data)
    np.testing.assert_array_equal(back.mask, meas.mask)
    np.testing.assert_array_equal(back.truth, meas.truth)
    assert back.geometry == meas.geometry and back.attrs == meas.attrs
    assert back.extras.keys() == meas.extras.keys()
    for key in meas.extras:
        np.testing.assert_array_equal(back.extras[key], meas.extras[key])
    with h5py.File(tmp_path / "m.h5") as f:  # what a fastMRI reader expects
        assert f["kspace"].shape == ((1, 48, 48) if coils == 1 else (1, coils, 48, 48))
        assert f["mask"].shape == ((48,) if mask == "equispaced" else (48, 48))
        reference = "reconstruction_esc" if coils == 1 else "reconstruction_rss"
        assert f[reference].shape == (1, 48, 48)
        assert {"acquisition", "max", "norm", "patient_id"} <= set(f.attrs)
        header = parse_ismrmrd_header(f["ismrmrd_header"][()])
    assert header["encoded_shape"] == [48, 48] and header["recon_fov_mm"] == [24.0, 36.0]


def _fastmri_file(path, kspace, reference=None, mask=None, recon=(32, 32), **attrs):
    """A file laid out like the public fastMRI data set (no scorerecon extras)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace)
        if reference is not None:
            name = "reconstruction_esc" if kspace.ndim == 3 else "reconstruction_rss"
            f.create_dataset(name, data=reference)
        if mask is not None:
            f.create_dataset("mask", data=mask)
        grid = kspace.shape[-2:]
        f.create_dataset("ismrmrd_header", data=ismrmrd_header(grid, recon, (2 * grid[0], 2 * grid[1]),
                                                                (2 * recon[0], 2 * recon[1]), 1))
        f.attrs.update({"acquisition": "CORPD_FBK", "patient_id": "abc", **attrs})


def test_reads_a_readout_oversampled_single_coil_file(tmp_path):
    rng = np.random.default_rng(0)
    images = np.zeros((3, 64, 40), np.complex64)
    images[:, 16:48, 4:36] = rng.random((3, 32, 32)) + 0.5  # object inside the 32x32 centre
    kspace = fft2c(torch.from_numpy(images)).numpy()
    reference = np.abs(images[:, 16:48, 4:36]).astype(np.float32)
    _fastmri_file(tmp_path / "knee.h5", kspace, reference, max=float(reference.max()), norm=1.0)
    meas = read_measurement(tmp_path / "knee.h5")
    assert meas.data.shape == (1, 64, 40) and meas.mask.all()
    assert meas.attrs["file_slice"] == 1 and meas.attrs["source"] == "fastmri"
    assert meas.geometry["output_shape"] == [32, 32] and meas.geometry["pixel_size"] == [2.0, 2.0]
    np.testing.assert_array_equal(meas.truth, reference[1])
    result = reconstruct(meas, "zero-filled")
    assert result.image.shape == (32, 32)
    np.testing.assert_allclose(result.image, reference[1], atol=1e-5)
    assert result.metrics(meas)["psnr"] > 80


@pytest.mark.parametrize("coil_axis", [False, True])
def test_the_reference_is_esc_for_single_coil_and_rss_for_multi_coil(tmp_path, coil_axis):
    """fastMRI's single-coil knee files hold both images; the ESC one belongs to their k-space."""
    kspace = np.ones((2, 3, 16, 16) if coil_axis else (2, 16, 16), np.complex64)
    with h5py.File(tmp_path / "both.h5", "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_esc", data=np.full((2, 16, 16), 1.0, np.float32))
        f.create_dataset("reconstruction_rss", data=np.full((2, 16, 16), 7.0, np.float32))
    assert np.all(read_fastmri(tmp_path / "both.h5").truth == (7.0 if coil_axis else 1.0))


def test_reads_a_test_file_with_a_column_mask_and_no_reference(tmp_path):
    kspace = fft2c(torch.from_numpy(np.ones((2, 3, 16, 20), np.complex64))).numpy()
    mask = np.zeros(20, bool)
    mask[8:12] = True
    _fastmri_file(tmp_path / "brain.h5", kspace, mask=mask, recon=(16, 20))
    meas = read_fastmri(tmp_path / "brain.h5", slice_index=0)
    assert meas.truth is None and meas.data.shape == (3, 16, 20)
    assert np.array_equal(meas.mask, np.broadcast_to(mask, (16, 20)))
    assert np.all(meas.data[:, :, ~mask] == 0) and meas.attrs["intensity_scale"] > 0


@pytest.mark.parametrize("build, message", [
    (lambda f: f.create_dataset("ismrmrd_header", data=b"<x/>"), "no 'kspace' dataset"),
    (lambda f: (f.create_dataset("kspace", data=np.ones((1, 8, 8), np.complex64)),
                f.create_dataset("mask", data=np.ones(7))), "does not match the k-space grid"),
    (lambda f: f.create_dataset("kspace", data=np.full((1, 8, 8), np.nan, np.complex64)), "NaN"),
    (lambda f: f.create_dataset("kspace", data=np.ones((1, 8, 8), np.float32)), "must be complex"),
    (lambda f: (f.create_dataset("kspace", data=np.ones((1, 8, 8), np.complex64)),
                f.create_dataset("ismrmrd_header", data=f'<ismrmrdHeader xmlns="{ISMRMRD_NS}"><encoding>'
                                 "<encodedSpace><matrixSize><x>8</x></matrixSize></encodedSpace>"
                                 "</encoding></ismrmrdHeader>".encode())),
     "encodedSpace/matrixSize lacks a numeric x or y"),
    (lambda f: (f.create_dataset("kspace", data=np.ones((1, 4, 8, 8), np.complex64)),
                f.create_group("scorerecon").create_dataset("sensitivity_maps", data=np.ones((3, 8, 8), np.complex64))),
     "3 coils but the k-space has 4"),
])
def test_bad_fastmri_files(tmp_path, build, message):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        build(f)
    with pytest.raises(UserError, match=message):
        read_measurement(tmp_path / "bad.h5")


def test_slice_index_out_of_range(tmp_path):
    _fastmri_file(tmp_path / "x.h5", np.ones((2, 8, 8), np.complex64), recon=(8, 8))
    with pytest.raises(UserError, match="outside the file's 2 slices"):
        read_fastmri(tmp_path / "x.h5", slice_index=5)


# ------------------------------------------------------------------------ the CLI
def test_cli_simulate_and_reconstruct(tmp_path):
    np.save(tmp_path / "image.npy", _image(40))
    meas = tmp_path / "meas.h5"
    assert main(["simulate", "mri", str(tmp_path / "image.npy"), "-o", str(meas), "--mask", "gaussian2d",
                 "--acceleration", "3", "--coils", "3", "--noise", "0.01", "--seed", "1"]) == 0
    assert main(["reconstruct", str(meas), "-o", str(tmp_path / "r.npy"), "--method", "zero-filled",
                 "--metrics", str(tmp_path / "m.json")]) == 0
    stored = read_measurement(meas)
    assert stored.data.shape == (3, 40, 40) and stored.truth is not None
    expected = reconstruct(stored, "zero-filled")
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), expected.image, rtol=1e-6)
    written = json.loads((tmp_path / "m.json").read_text())
    assert written["psnr"] == pytest.approx(expected.metrics(stored)["psnr"])


def test_cli_reconstructs_the_slice_asked_for_of_a_fastmri_volume(tmp_path, capsys):
    """--slice picks a slice of a multi-slice file; out of range it is one line and exit 2 with
    no output."""
    rng = np.random.default_rng(1)
    images = rng.random((3, 16, 16)).astype(np.complex64) + np.arange(3)[:, None, None]
    _fastmri_file(tmp_path / "vol.h5", fft2c(torch.from_numpy(images)).numpy(),
                  np.abs(images).astype(np.float32), recon=(16, 16))
    for index in (0, 2):
        out = tmp_path / f"r{index}.npy"
        assert main(["reconstruct", str(tmp_path / "vol.h5"), "--slice", str(index), "--method", "zero-filled",
                     "-o", str(out)]) == 0
        np.testing.assert_allclose(np.load(out), np.abs(images[index]), atol=1e-4)
    write_simulated_mri(tmp_path / "one.h5", simulate_mri(_image(16), mask="equispaced", seed=0))
    capsys.readouterr()
    for name, index, message in [("vol.h5", "3", "outside the file's 3 slices"), ("one.h5", "1", "outside the file's 1 slices")]:
        assert main(["reconstruct", str(tmp_path / name), "--slice", index, "-o", str(tmp_path / "x.npy")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("options, message", [
    (["--acceleration", "0.5"], "below 1"),
    (["--acceleration", "100"], "exceeds"),
    (["--mask", "radial", "--center-fraction", "0.9", "--acceleration", "4"], "centre fraction alone"),
])
def test_cli_bad_simulation_requests_exit_2_without_output(tmp_path, capsys, options, message):
    np.save(tmp_path / "image.npy", _image(40))
    out = tmp_path / "meas.h5"
    assert main(["simulate", "mri", str(tmp_path / "image.npy"), "-o", str(out), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["image.npy"]


def test_cli_bad_measurement_exit_2_without_output(tmp_path, capsys):
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("kspace", data=np.full((1, 8, 8), np.nan, np.complex64))
    assert main(["reconstruct", str(tmp_path / "bad.h5"), "-o", str(tmp_path / "r.npy")]) == 2
    assert "NaN" in capsys.readouterr().err and not (tmp_path / "r.npy").exists()


# ----------------------------------------------------------------------- Siemens twix
@pytest.mark.skipif(not TWIX_SAMPLE.is_file(), reason="the twix sample is not shipped")
def test_twix_reader_on_the_real_example_file():
    import twixtools

    meas = read_measurement(TWIX_SAMPLE)
    assert meas.data.shape == (2, 160, 160) and meas.mask.all() and meas.truth is None
    assert meas.geometry["pixel_size"] == [1.25, 1.25] and meas.attrs["protocol"] == "gre"
    # the same samples twixtools gives, in (coils, read-out, phase) order
    import gzip
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".dat") as plain:
        plain.write(gzip.decompress(TWIX_SAMPLE.read_bytes()))
        plain.flush()
        image = twixtools.map_twix(plain.name, verbose=False)[-1]["image"]
        image.flags["remove_os"] = True
        direct = np.squeeze(image[:])
    np.testing.assert_array_equal(meas.data, np.transpose(direct, (1, 2, 0)))
    # a phantom: SENSE with ESPIRiT maps agrees with root-sum-of-squares inside it
    rss_image = reconstruct(meas, "zero-filled").unit_image
    sense_image = reconstruct(meas, "sense", weight=0.0).unit_image
    inside = rss_image > 0.3
    assert 0.3 < inside.mean() < 0.8
    assert np.abs(sense_image - rss_image)[inside].mean() < 0.01


def test_twix_reader_refuses_other_files(tmp_path):
    (tmp_path / "scan.dat").write_bytes(b"\0" * 4096)
    with pytest.raises(UserError, match="not a readable Siemens twix file"):
        read_measurement(tmp_path / "scan.dat")
    (tmp_path / "notgz.dat.gz").write_bytes(b"garbage")
    with pytest.raises(UserError, match="notgz.dat.gz cannot be decompressed"):
        read_measurement(tmp_path / "notgz.dat.gz")


@pytest.mark.skipif(not TWIX_SAMPLE.is_file(), reason="the twix sample is not shipped")
def test_a_truncated_twix_file_is_one_line(tmp_path, capsys):
    """A raw file cut short parses (twixtools maps its headers) but fails when the k-space is
    read; a .dat.gz cut short fails while decompressing: both one line, exit 2."""
    import gzip
    plain = gzip.decompress(TWIX_SAMPLE.read_bytes())
    (tmp_path / "cut.dat").write_bytes(plain[:1_000_000])
    with pytest.raises(UserError, match="probably truncated"):
        read_measurement(tmp_path / "cut.dat")
    (tmp_path / "cut.dat.gz").write_bytes(TWIX_SAMPLE.read_bytes()[:100])
    assert main(["reconstruct", str(tmp_path / "cut.dat.gz"), "-o", str(tmp_path / "r.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cut.dat.gz cannot be decompressed" in err and len(err.splitlines()) == 1
