"""BART's .cfl/.hdr pairs: the array layout, images both ways, k-space as a measurement (against
the twix reader on the shipped real scan, through BART's own twixread), and bad pairs."""

import gzip
import subprocess

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from scorerecon.cli import main
from scorerecon.data.cfl import kspace_from_bart, kspace_to_bart, read_cfl, read_cfl_measurement, write_cfl
from scorerecon.data.io import read_image, write_image
from scorerecon.data.measurement import read_measurement
from scorerecon.data.samples import samples_dir
from scorerecon.errors import UserError
from scorerecon.evaluation.metrics import psnr
from scorerecon.operators import bart
from scorerecon.operators.coils import rss
from scorerecon.operators.mri import ifft2c
from scorerecon.simulate.mri import simulate_mri
from scorerecon.solvers.registry import reconstruct

TWIX_SAMPLE = samples_dir() / "twix-gre.dat.gz"


def test_a_pair_holds_complex64_in_column_major_order_with_sixteen_dimensions(tmp_path):
    array = (np.arange(24) + 1j * np.arange(24)[::-1]).reshape(2, 3, 1, 4).astype(np.complex64)
    write_cfl(tmp_path / "k.cfl", array)
    assert (tmp_path / "k.hdr").read_text().splitlines() == ["# Dimensions", "2 3 1 4" + " 1" * 12]
    raw = np.fromfile(tmp_path / "k.cfl", dtype=np.float32)
    assert raw[:4].tolist() == [array[0, 0, 0, 0].real, array[0, 0, 0, 0].imag,
                                array[1, 0, 0, 0].real, array[1, 0, 0, 0].imag]  # the first axis fastest
    np.testing.assert_array_equal(read_cfl(tmp_path / "k"), array)  # BART's bare name reads the same pair
    np.testing.assert_array_equal(read_cfl(tmp_path / "k.cfl"), array)


def test_kspace_axes_map_to_bart_read_phase_and_coil():
    kspace = np.random.default_rng(1).standard_normal((3, 5, 4)).astype(np.complex64)
    theirs = kspace_to_bart(kspace)
    assert theirs.shape == (5, 4, 1, 3) and theirs[2, 1, 0, 0] == kspace[0, 2, 1] and theirs[4, 3, 0, 2] == kspace[2, 4, 3]
    np.testing.assert_array_equal(kspace_from_bart(theirs), kspace)
    np.testing.assert_array_equal(kspace_from_bart(theirs[:, :, 0, :1].reshape(5, 4)), kspace[:1])  # one coil


def test_a_pair_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr("pathlib.Path.write_text", fails)
    with pytest.raises(OSError):
        write_cfl(tmp_path / "k.cfl", np.ones((4, 4), np.complex64))
    assert list(tmp_path.iterdir()) == []


def test_values_complex64_cannot_hold_are_refused_not_written_as_inf(tmp_path):
    with pytest.raises(UserError, match="complex64 cannot store"):
        write_cfl(tmp_path / "k.cfl", np.full((4, 4), 1e300))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(12, 10), (3, 12, 10)])
def test_images_round_trip_as_bart_pairs(tmp_path, shape):
    image = (np.random.default_rng(0).random(shape) * 3000 - 1000).astype(np.float32)  # HU: signs kept
    write_image(tmp_path / "img.cfl", image, modality="ct")
    back = read_image(tmp_path / "img.cfl")
    np.testing.assert_array_equal(back.array, image)
    assert back.spacing is None and back.modality is None
    # a volume's slices lie along BART's PHS2 axis, rows along READ
    assert read_cfl(tmp_path / "img").shape == ((12, 10, 3) if len(shape) == 3 else (12, 10))


@pytest.mark.skipif(not bart.available(), reason="BART is not installed")
def test_files_that_bart_writes_read_as_bart_means_them(tmp_path):
    for command in (["phantom", "-x", "32", "-k", "-s", "4", "k"], ["fft", "-u", "-i", "3", "k", "coils"],
                    ["rss", "8", "coils", "r"]):
        subprocess.run(["bart", *command], cwd=tmp_path, check=True, capture_output=True)
    meas = read_measurement(tmp_path / "k.cfl")
    assert meas.data.shape == (4, 32, 32) and meas.geometry["coils"] == 4 and meas.mask.all()
    # BART's centred inverse FFT and root-sum-of-squares of its k-space are ours of the measurement
    theirs = read_cfl(tmp_path / "r.cfl").real
    ours = rss(ifft2c(torch.from_numpy(meas.data)), dim=0).numpy().reshape(theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.max())


def test_bart_kspace_reconstructs_like_the_simulated_file(tmp_path):
    image = (resize(shepp_logan_phantom(), (48, 48)) * 250).astype(np.float32)
    meas = simulate_mri(image, mask="equispaced", acceleration=4.0, seed=1)
    write_cfl(tmp_path / "k.cfl", kspace_to_bart(meas.data))
    from_bart = read_cfl_measurement(tmp_path / "k.cfl")
    np.testing.assert_array_equal(from_bart.data, meas.data)
    np.testing.assert_array_equal(from_bart.mask, np.broadcast_to(meas.mask, meas.data.shape[1:]))
    assert from_bart.truth is None and from_bart.attrs["source"] == "bart"
    ours = reconstruct(meas, "zero-filled").image
    np.testing.assert_allclose(reconstruct(from_bart, "zero-filled").image, ours, rtol=1e-4, atol=1e-3)


@pytest.mark.skipif(not (bart.available() and TWIX_SAMPLE.is_file()), reason="needs BART and the twix sample")
def test_bart_twixread_of_the_real_scan_equals_the_twix_reader_and_reconstructs(tmp_path):
    (tmp_path / "scan.dat").write_bytes(gzip.decompress(TWIX_SAMPLE.read_bytes()))
    # BART keeps the 2x read-out oversampling that our reader removes: crop it in image space
    for command in (["twixread", "-A", "scan.dat", "k"], ["fft", "-u", "-i", "1", "k", "i"],
                    ["resize", "-c", "0", "160", "i", "i160"], ["fft", "-u", "1", "i160", "k160"]):
        subprocess.run(["bart", *command], cwd=tmp_path, check=True, capture_output=True)
    twix = read_measurement(TWIX_SAMPLE)
    from_bart = read_measurement(tmp_path / "k160.cfl")
    # BART's unitary FFTs of 320 and then 160 read-out samples scale k-space by sqrt(320 / 160)
    # against twixtools' removal of the oversampling, which keeps the image's values
    np.testing.assert_allclose(from_bart.data / np.sqrt(2), twix.data, atol=1e-6 * np.abs(twix.data).max())
    np.testing.assert_array_equal(from_bart.mask, twix.mask)
    full = reconstruct(from_bart, "zero-filled").image
    lines = np.zeros(160, bool)
    lines[::4] = lines[72:88] = True
    write_cfl(tmp_path / "under.cfl", read_cfl(tmp_path / "k160") * lines[None, :, None, None])
    assert main(["reconstruct", str(tmp_path / "under.cfl"), "--method", "cs-tv", "-o", str(tmp_path / "r.cfl")]) == 0
    recon = read_image(tmp_path / "r.cfl").array
    subprocess.run(["bart", "scale", "2", "r", "r2"], cwd=tmp_path, check=True, capture_output=True)
    np.testing.assert_allclose(read_image(tmp_path / "r2.cfl").array, 2 * recon, rtol=1e-6)  # BART reads ours
    zero_filled = reconstruct(read_measurement(tmp_path / "under.cfl"), "zero-filled").image
    peak = float(full.max())
    assert psnr(recon / peak, full / peak) > psnr(zero_filled / peak, full / peak) + 1.5


def _one_line_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_bad_pairs_are_one_line_errors_and_leave_no_output(tmp_path, capsys):
    out = str(tmp_path / "r.npy")
    write_cfl(tmp_path / "vol.cfl", np.ones((8, 8, 2, 2), np.complex64))
    err = _one_line_error(["reconstruct", str(tmp_path / "vol.cfl"), "-o", out], capsys)
    assert "PHS2" in err and "bart slice" in err and "bart fft -u -i 4" in err
    write_cfl(tmp_path / "echoes.cfl", np.ones((8, 8, 1, 2, 1, 3), np.complex64))
    err = _one_line_error(["reconstruct", str(tmp_path / "echoes.cfl"), "-o", out], capsys)
    assert "of TE first" in err and "fft" not in err
    write_cfl(tmp_path / "line.cfl", np.ones(8, np.complex64))
    assert "one BART dimension" in _one_line_error(["reconstruct", str(tmp_path / "line.cfl"), "-o", out], capsys)
    write_cfl(tmp_path / "short.cfl", np.ones((8, 8), np.complex64))
    (tmp_path / "short.cfl").write_bytes((tmp_path / "short.cfl").read_bytes()[:-8])
    assert "truncated" in _one_line_error(["reconstruct", str(tmp_path / "short.cfl"), "-o", out], capsys)
    (tmp_path / "nohdr.cfl").write_bytes(b"\0" * 64)
    assert "nohdr.hdr does not exist" in _one_line_error(["reconstruct", str(tmp_path / "nohdr.cfl"), "-o", out], capsys)
    write_cfl(tmp_path / "nocfl.cfl", np.ones((8, 8), np.complex64))
    (tmp_path / "nocfl.cfl").unlink()
    assert "does not exist" in _one_line_error(["reconstruct", str(tmp_path / "nocfl.cfl"), "-o", out], capsys)
    (tmp_path / "bad.cfl").write_bytes(b"\0" * 64)
    (tmp_path / "bad.hdr").write_text("# Dims\n8 1\n")
    assert "Dimensions" in _one_line_error(["reconstruct", str(tmp_path / "bad.cfl"), "-o", out], capsys)
    (tmp_path / "zero.hdr").write_text("# Dimensions\n8 0\n")
    (tmp_path / "zero.cfl").write_bytes(b"")
    assert "positive" in _one_line_error(["reconstruct", str(tmp_path / "zero.cfl"), "-o", out], capsys)
    write_cfl(tmp_path / "maps.cfl", np.ones((8, 8, 1, 2, 2), np.complex64))
    with pytest.raises(UserError, match="one entry of COIL, MAPS"):
        read_image(tmp_path / "maps.cfl")
    assert not (tmp_path / "r.npy").exists()
    # an output pair whose header cannot be written is refused before the reconstruction
    write_cfl(tmp_path / "k.cfl", np.ones((8, 8), np.complex64))
    (tmp_path / "r.hdr").mkdir()
    assert "is a folder" in _one_line_error(["reconstruct", str(tmp_path / "k.cfl"), "-o", str(tmp_path / "r.cfl")],
                                            capsys)
    assert not (tmp_path / "r.cfl").exists()


def test_simulate_writes_bart_kspace_that_reconstructs_like_its_hdf5_twin(tmp_path, capsys):
    image = (resize(shepp_logan_phantom(), (48, 48)) * 250).astype(np.float32)
    np.save(tmp_path / "phantom.npy", image)
    common = ["--mask", "equispaced", "--acceleration", "4", "--coils", "3", "--seed", "2"]
    for output in ("m.h5", "m.cfl"):
        assert main(["simulate", "mri", str(tmp_path / "phantom.npy"), "-o", str(tmp_path / output), *common]) == 0
    assert (tmp_path / "m.hdr").is_file()
    assert f"wrote {tmp_path / 'm.cfl'}, {tmp_path / 'm.hdr'}" in capsys.readouterr().out
    from_h5, from_bart = read_measurement(tmp_path / "m.h5"), read_measurement(tmp_path / "m.cfl")
    np.testing.assert_array_equal(from_bart.data, from_h5.data)
    np.testing.assert_array_equal(from_bart.mask, np.broadcast_to(from_h5.mask, from_h5.data.shape[1:]))
    np.testing.assert_allclose(reconstruct(from_bart, "zero-filled").image, reconstruct(from_h5, "zero-filled").image,
                               rtol=1e-4, atol=1e-3)
    err = _one_line_error(["simulate", "mri", str(tmp_path / "phantom.npy"), "-o", str(tmp_path / "m.mat")], capsys)
    assert ".h5 (fastMRI layout) or .cfl" in err and not (tmp_path / "m.mat").exists()
