"""A user's mistake gives one line naming the problem and the fix, exit status 2, no traceback
and no output left behind: argparse's own errors, outputs that cannot be written, configs of the
wrong types, datasets and presets that are not what they claim to be."""

import json
from pathlib import Path
import warnings

import numpy as np
import pytest
import torch
from conftest import shepp_logan_hu
from skimage.metrics import structural_similarity

from scorerecon.cli import main
from scorerecon.data.datasets import load_meta, load_split
from scorerecon.data.measurement import write_measurement
from scorerecon.errors import UserError
from scorerecon.evaluation.metrics import psnr, ssim
from scorerecon.priors.config import DEFAULTS, resolve_config
from scorerecon.priors.training import _configured_device
from scorerecon.simulate.ct import simulate_ct
from scorerecon.solvers.tuning import preset_file, read_cases, save_preset


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv", [["reconstruct", "m.h5", "-o", "r.npy", "--steps", "0"],
                                  ["sample", "--prior", "head-ct", "-o", "s.png", "--snr", "nan"],
                                  ["simulate", "ct", "x.npy", "-o", "m.h5", "--seed", "-1"],
                                  ["reconstruct", "m.h5", "-o", "r.npy", "--seed", "99999999999999999999"],
                                  ["no-such-command"], []])
def test_argparse_errors_are_one_line_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "--help" in _one_line(capsys)


def test_a_user_error_of_several_lines_is_printed_as_one(monkeypatch, capsys):
    import scorerecon.data.datasets as datasets

    def fails(*args, **kwargs):
        raise UserError("cannot unpack (first:\n- method zip: bad\n- method tar: bad): pass --source DIR")
    monkeypatch.setattr(datasets, "prepare_dataset", fails)
    assert main(["data", "prepare", "head-ct"]) == 2
    assert "method zip: bad - method tar: bad" in _one_line(capsys)


@pytest.fixture
def ct_files(tmp_path):
    np.save(tmp_path / "phantom.npy", shepp_logan_hu(32))
    assert main(["simulate", "ct", str(tmp_path / "phantom.npy"), "-o", str(tmp_path / "m.h5"),
                 "--views", "12", "--full-views", "24"]) == 0
    return tmp_path


def test_an_output_that_would_overwrite_an_input_is_refused_before_any_work(ct_files, capsys):
    """--metrics onto the measurement, --json onto the image it scores, -o onto a BART input pair:
    each refused in one line, the input left whole (each was overwritten before)."""
    m, before = ct_files / "m.h5", (ct_files / "m.h5").read_bytes()
    capsys.readouterr()
    assert main(["reconstruct", str(m), "-o", str(ct_files / "r.npy"), "--method", "fbp", "--metrics", str(m)]) == 2
    assert "--metrics" in _one_line(capsys) and m.read_bytes() == before
    assert main(["reconstruct", str(m), "-o", str(ct_files / "r.npy"), "--method", "fbp"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(ct_files / "r.npy"), str(ct_files / "phantom.npy"), "--json",
                 str(ct_files / "r.npy")]) == 2
    assert "--json" in _one_line(capsys) and np.load(ct_files / "r.npy").shape == (32, 32)
    assert main(["simulate", "mri", str(ct_files / "phantom.npy"), "-o", str(ct_files / "k.cfl")]) == 0
    pair = [(ct_files / name).read_bytes() for name in ("k.cfl", "k.hdr")]
    capsys.readouterr()
    assert main(["reconstruct", str(ct_files / "k.cfl"), "-o", str(ct_files / "k.cfl"), "--method", "zero-filled"]) == 2
    assert "would overwrite the measurement" in _one_line(capsys)
    assert [(ct_files / name).read_bytes() for name in ("k.cfl", "k.hdr")] == pair


@pytest.mark.parametrize("method, option, message", [
    ("fbp", ["--weight", "1"], "--weight does not apply to fbp (it takes --filter)"),
    ("sart", ["--filter", "hann"], "--filter does not apply to sart (it takes --iterations)"),
    ("fast", ["--weight", "3", "--iterations", "5"], "--iterations, --weight do not apply to fast (it takes none")])
def test_an_option_the_method_does_not_take_is_refused(ct_files, capsys, method, option, message):
    """Each ran before with the option dropped in silence (fbp's image the same with any --weight)."""
    capsys.readouterr()
    out = ct_files / "r.npy"
    assert main(["reconstruct", str(ct_files / "m.h5"), "-o", str(out), "--method", method, *option]) == 2
    assert message in _one_line(capsys) and not out.exists()


def test_an_output_through_a_symbolic_link_is_written_beside_the_link(tmp_path, monkeypatch):
    """The temporary file lands in the link's folder (the rename's), not the target's: no
    cross-device rename; the link is replaced by the file, its old target left as it was."""
    import tempfile

    from scorerecon.atomic import write_json
    folders, mkstemp = [], tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: folders.append(Path(kw["dir"])) or mkstemp(**kw))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "real.json").write_text("{}")
    link = tmp_path / "a" / "link.json"
    link.symlink_to(tmp_path / "b" / "real.json")
    write_json(link, {"psnr": 30.0})
    assert folders == [tmp_path / "a"]
    assert not link.is_symlink() and json.loads(link.read_text()) == {"psnr": 30.0}
    assert (tmp_path / "b" / "real.json").read_text() == "{}" and len(list((tmp_path / "b").iterdir())) == 1


def test_an_output_that_is_a_folder_is_refused_before_any_work(ct_files, capsys, monkeypatch):
    import scorerecon.simulate.ct as simulate_module
    import scorerecon.solvers as solvers
    capsys.readouterr()

    def no_work(*args, **kwargs):
        raise AssertionError("the work ran before the output was checked")
    monkeypatch.setattr(simulate_module, "simulate_ct", no_work)
    monkeypatch.setattr(solvers, "reconstruct", no_work)
    (ct_files / "taken.h5").mkdir()
    assert main(["simulate", "ct", str(ct_files / "phantom.npy"), "-o", str(ct_files / "taken.h5")]) == 2
    assert "is a folder" in _one_line(capsys)
    assert main(["simulate", "ct", str(ct_files / "phantom.npy"), "-o", str(ct_files / "m.png")]) == 2
    assert "extension .h5" in _one_line(capsys)
    (ct_files / "taken.json").mkdir()
    argv = ["reconstruct", str(ct_files / "m.h5"), "-o", str(ct_files / "r.npy"), "--method", "fbp"]
    assert main([*argv, "--metrics", str(ct_files / "taken.json")]) == 2
    assert "is a folder" in _one_line(capsys)
    assert main([*argv, "--metrics", str(ct_files / "no" / "m.json")]) == 2
    assert "does not exist" in _one_line(capsys)
    (ct_files / "r.npy").mkdir()
    assert main(argv) == 2
    assert "r.npy is a folder" in _one_line(capsys)
    assert sorted(p.name for p in ct_files.iterdir()) == ["m.h5", "phantom.npy", "r.npy", "taken.h5", "taken.json"]


def test_a_reference_that_cannot_serve_the_output_is_refused_before_any_work(ct_files, capsys, monkeypatch):
    """--reference is checked with the outputs: it must exist, be one slice for a 2-D image, and
    the output must be a DICOM folder."""
    import scorerecon.solvers as solvers
    monkeypatch.setattr(solvers, "reconstruct", lambda *a, **k: pytest.fail("the work ran"))
    from scorerecon.data.io import write_image
    write_image(ct_files / "series", np.zeros((3, 8, 8), np.float32), modality="ct")
    capsys.readouterr()
    argv = ["reconstruct", str(ct_files / "m.h5"), "--method", "fbp"]
    cases = [(["-o", str(ct_files / "r.npy"), "--reference", str(ct_files / "series")], "DICOM output only"),
             (["-o", str(ct_files / "out"), "--reference", str(ct_files / "none")], "does not exist"),
             (["-o", str(ct_files / "out"), "--reference", str(ct_files / "series")], "has 3 slices but the image has 1")]
    for extra, message in cases:
        assert main([*argv, *extra]) == 2
        assert message in _one_line(capsys)
    assert sorted(p.name for p in ct_files.iterdir()) == ["m.h5", "phantom.npy", "series"]


def test_a_slice_of_a_one_slice_measurement_file_is_refused_but_slice_0(ct_files, capsys):
    capsys.readouterr()
    argv = ["reconstruct", str(ct_files / "m.h5"), "--method", "fbp", "-o", str(ct_files / "r.npy")]
    assert main([*argv, "--slice", "1"]) == 2
    assert "holds one 2-D slice: drop --slice" in _one_line(capsys)
    assert not (ct_files / "r.npy").exists()
    assert main([*argv, "--slice", "0"]) == 0  # its one slice, as a one-slice fastMRI file's


def test_score_options_with_a_classical_method_are_refused(ct_files, capsys):
    capsys.readouterr()
    argv = ["reconstruct", str(ct_files / "m.h5"), "-o", str(ct_files / "r.npy")]
    assert main([*argv, "--method", "tv", "--prior", "head-ct", "--steps", "4"]) == 2
    assert "--prior, --steps apply to score-based methods, not to tv" in _one_line(capsys)
    assert main([*argv, "--samples", "2"]) == 2
    assert "not to the default classical method" in _one_line(capsys)
    assert main([*argv, "--method", "fbp", "--save-samples"]) == 2
    assert "--save-samples applies to score-based methods, not to fbp" in _one_line(capsys)
    assert not (ct_files / "r.npy").exists()


def test_samples_to_a_png_are_refused_before_any_work(ct_files, capsys, monkeypatch):
    import scorerecon.solvers
    monkeypatch.setattr(scorerecon.solvers, "reconstruct", lambda *a, **k: pytest.fail("reconstructed"))
    argv = ["reconstruct", str(ct_files / "m.h5"), "--method", "fast", "--save-samples"]
    assert main([*argv, "-o", str(ct_files / "r.png")]) == 2
    assert "a PNG holds one slice, not a stack of posterior samples" in _one_line(capsys)
    (ct_files / "r_samples.npy").mkdir()  # where the samples would go
    assert main([*argv, "-o", str(ct_files / "r.npy")]) == 2
    assert "r_samples.npy is a folder" in _one_line(capsys)
    assert not (ct_files / "r.png").exists() and not (ct_files / "r.npy").exists()


def test_a_std_map_path_is_refused_before_any_work_when_k_is_above_one(ct_files, capsys, monkeypatch):
    import scorerecon.solvers

    class Reconstructed(Exception):
        pass

    def reached(*args, **kwargs):
        raise Reconstructed
    monkeypatch.setattr(scorerecon.solvers, "reconstruct", reached)
    (ct_files / "r_std.npy").mkdir()  # where the std map would go
    argv = ["reconstruct", str(ct_files / "m.h5"), "-o", str(ct_files / "r.npy")]
    for method in ("fast", "score"):  # the preset's K > 1, no --samples given
        assert main([*argv, "--method", method]) == 2
        assert "r_std.npy is a folder" in _one_line(capsys)
    assert main([*argv, "--method", "song", "--samples", "2"]) == 2
    assert "r_std.npy is a folder" in _one_line(capsys)
    (ct_files / "r_std.npy").rmdir()  # else it would pass for the std map of a run that writes none
    for extra in (["--method", "song"], ["--method", "fast", "--samples", "1"], ["--method", "fbp"]):
        with pytest.raises(Reconstructed):  # one sample, or a classical method: no std map to write
            main([*argv, *extra])
    assert not (ct_files / "r.npy").exists()


def test_a_std_map_path_is_checked_before_the_image_is_written(ct_files):
    from scorerecon.data.measurement import read_measurement
    from scorerecon.solvers import Reconstruction, write_reconstruction
    meas = read_measurement(ct_files / "m.h5")
    image = np.zeros((32, 32), np.float32)
    with_std = Reconstruction(image, image, "fast", 0.0, std=image)
    (ct_files / "r_std.npy").mkdir()  # where the std map would go
    with pytest.raises(UserError, match="r_std.npy is a folder"):
        write_reconstruction(with_std, meas, str(ct_files / "r.npy"))
    assert not (ct_files / "r.npy").exists()
    (ct_files / "r_std.npy").rmdir()
    write_reconstruction(Reconstruction(image, image, "fbp", 0.0), meas, str(ct_files / "r.npy"))  # no std map
    write_reconstruction(with_std, meas, str(ct_files / "R.NPY"))  # the extension in any case
    assert (ct_files / "R.NPY").is_file() and (ct_files / "R_std.NPY").is_file()


def test_evaluate_checks_its_json_before_printing_metrics(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((8, 8), np.float32))
    (tmp_path / "m.json").mkdir()
    assert main(["evaluate", str(tmp_path / "a.npy"), str(tmp_path / "a.npy"), "--json", str(tmp_path / "m.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "m.json is a folder" in captured.err


def test_evaluate_refuses_pngs_mixed_modalities_and_an_empty_mask(tmp_path, capsys):
    """A PNG holds a display window, not HU; an MR file is not scored in the CT window; a body
    mask with no body leaves nothing to compare.  Each: one line, exit 2."""
    from scorerecon.data.io import write_image
    from scorerecon.evaluation.metrics import evaluate_images
    hu = shepp_logan_hu(32)
    write_image(tmp_path / "a.png", hu, modality="ct")
    write_image(tmp_path / "ct.nrrd", hu, modality="ct")
    write_image(tmp_path / "mr.nrrd", np.abs(hu) / 1000, modality="mr")
    np.save(tmp_path / "air.npy", np.full((32, 32), -1000.0, np.float32))
    capsys.readouterr()
    for argv, message in [(["a.png", "ct.nrrd"], "a.png is a PNG, an 8-bit display window"),
                          (["mr.nrrd", "ct.nrrd"], "the files record different modalities (ct and mri)"),
                          (["mr.nrrd", "mr.nrrd", "--modality", "ct"], "the files record mri but --modality ct was given"),
                          (["air.npy", "air.npy", "--body-mask"], "no pixel is left to compare")]:
        assert main(["evaluate", *(str(tmp_path / a) if a.endswith(("png", "nrrd", "npy")) else a for a in argv)]) == 2
        assert message in _one_line(capsys)
    np.save(tmp_path / "small.npy", np.ones((8, 8)))
    assert main(["evaluate", str(tmp_path / "ct.nrrd"), str(tmp_path / "ct.nrrd"), "--exclude", str(tmp_path / "small.npy")]) == 2
    assert "the mask of pixels to leave out has shape (8, 8)" in _one_line(capsys)
    write_image(tmp_path / "mr2.nrrd", np.abs(hu) / 1000 * 1.1, modality="mr")
    assert main(["evaluate", str(tmp_path / "mr2.nrrd"), str(tmp_path / "mr.nrrd")]) == 0
    as_mri = evaluate_images(np.abs(hu) / 1000 * 1.1, np.abs(hu) / 1000, modality="mri")
    assert f"PSNR {as_mri['psnr']:.4f}" in capsys.readouterr().out  # the MRI window: the files say mr
    assert main(["evaluate", str(tmp_path / "mr.nrrd"), str(tmp_path / "mr.nrrd"), "--json", str(tmp_path / "m.json")]) == 0
    assert "PSNR inf  SSIM 1.0000" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text()) == {"psnr": None, "ssim": 1.0}  # strict JSON: no Infinity


def test_evaluate_a_slice_of_a_volume_and_leave_pixels_out(tmp_path, capsys):
    """--slice compares a 2-D reconstruction with its slice of the reference volume; --exclude
    leaves the masked pixels (the metal) out, as reconstruct --metrics does."""
    from scorerecon.data.io import write_image
    from scorerecon.evaluation.metrics import evaluate_images
    volume = np.stack([shepp_logan_hu(32) + 10 * k for k in range(3)])
    write_image(tmp_path / "volume.nrrd", volume, modality="ct")
    recon = volume[1].copy()
    recon[10:14, 10:14] += 500  # a wrong patch, as put-back metal would be
    np.save(tmp_path / "recon.npy", recon)
    patch = np.zeros((32, 32), np.uint8)
    patch[10:14, 10:14] = 1
    np.save(tmp_path / "patch.npy", patch)
    capsys.readouterr()
    argv = ["evaluate", str(tmp_path / "recon.npy"), str(tmp_path / "volume.nrrd"), "--slice", "1"]
    assert main(argv) == 0
    expected = evaluate_images(recon, volume[1])
    assert f"PSNR {expected['psnr']:.4f}" in capsys.readouterr().out
    assert main([*argv, "--exclude", str(tmp_path / "patch.npy")]) == 0
    assert "PSNR inf  SSIM" in capsys.readouterr().out  # everything but the patch is exact
    assert main([*argv[:-1], "3"]) == 2
    assert "out of range: the volume has 3 slices" in _one_line(capsys)
    np.save(tmp_path / "patches.npy", np.stack([0 * patch, patch, 0 * patch]))  # a mask volume, sliced alike
    assert main([*argv, "--exclude", str(tmp_path / "patches.npy")]) == 0
    assert "PSNR inf  SSIM" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "recon.npy"), str(tmp_path / "recon.npy"), "--slice", "1"]) == 2
    assert "--slice 1 picks a slice of a volume, and neither" in _one_line(capsys)


def test_an_unreadable_twix_file_gives_one_line_and_prints_nothing_else(tmp_path, capsys):
    (tmp_path / "scan.dat").write_bytes(np.random.default_rng(0).bytes(300))
    assert main(["reconstruct", str(tmp_path / "scan.dat"), "-o", str(tmp_path / "r.npy")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "not a readable Siemens twix" in captured.err


def test_a_measurement_must_be_written_as_hdf5(tmp_path):
    meas = simulate_ct(shepp_logan_hu(32), pixel_size=1.0, views=8, full_views=16)
    with pytest.raises(UserError, match="extension .h5"):
        write_measurement(tmp_path / "m.png", meas)
    assert list(tmp_path.iterdir()) == []


def test_a_measurement_of_a_later_layout_version_is_refused(ct_files):
    import h5py

    from scorerecon.data.measurement import read_measurement
    with h5py.File(ct_files / "m.h5", "a") as f:
        f.attrs["version"] = 99
    with pytest.raises(UserError, match="layout version 99.*upgrade scorerecon"):
        read_measurement(ct_files / "m.h5")


def test_sample_checks_its_output_before_loading_the_prior(tmp_path, capsys):
    assert main(["sample", "--prior", "no-such-prior", "-o", str(tmp_path / "grid.jpg")]) == 2
    assert "must end in .png" in _one_line(capsys)
    assert main(["sample", "--prior", "no-such-prior", "-o", str(tmp_path / "no" / "grid.png")]) == 2
    assert "does not exist" in _one_line(capsys)
    assert main(["sample", "--prior", "no-such-prior", "-o", str(tmp_path / "g.png"), "--sampler", "ode",
                 "--snr", "0.2"]) == 2  # was ignored
    assert "--snr sets the predictor-corrector's Langevin corrector, which --sampler ode" in _one_line(capsys)


def test_sample_turns_running_out_of_memory_into_one_line(tmp_path, capsys, monkeypatch):
    import scorerecon.priors.sampling as sampling

    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 40000000000 bytes")
    monkeypatch.setattr(sampling, "sample", exhausted)
    out = tmp_path / "s.npy"
    assert main(["sample", "--prior", "ct-low", "-n", "1", "--size", "100000", "-o", str(out)]) == 2
    assert "not enough memory for 1 samples of 100000x100000: lower -n or --size" in _one_line(capsys)
    assert not out.exists()


def test_demo_refuses_a_file_as_its_folder(tmp_path, capsys):
    (tmp_path / "out").write_text("mine")
    assert main(["demo", "-o", str(tmp_path / "out")]) == 2
    assert "is a file" in _one_line(capsys)
    assert main(["demo", "-o", str(tmp_path / "out" / "sub")]) == 2
    assert "cannot make a folder in" in _one_line(capsys)
    assert (tmp_path / "out").read_text() == "mine"


@pytest.mark.parametrize("table, key, value, kind", [
    ("training", "ema", "x", "a number"), ("training", "steps", 2.5, "a whole number"),
    ("training", "seed", "a", "a whole number"), ("training", "bf16", 1, "true or false"),
    ("network", "nf", "x", "a whole number"), ("network", "ch_mult", 5, "a list like"),
    ("network", "attention_levels", ["3"], "a list like"), ("data", "image_size", "a", "a whole number"),
    ("data", "path", 3, "text"), ("parameterization", "sigma_data", "x", "a number")])
def test_config_values_of_the_wrong_kind_are_named(table, key, value, kind):
    with pytest.raises(UserError, match=rf"\[{table}\] {key} must be {kind}"):
        resolve_config({table: {key: value}})


def test_config_numbers_accept_integers_and_the_sde_table_keeps_its_defaults():
    cfg = resolve_config({"training": {"lr": 1, "grad_clip": 2}, "sde": {"sigma_max": 40}})
    assert cfg["training"]["lr"] == 1 and cfg["sde"] == {**DEFAULTS["sde"], "sigma_max": 40}
    vp = resolve_config({"sde": {"type": "vp", "beta_min": 0.1, "beta_max": 20.0, "N": 1000}})["sde"]
    assert vp["type"] == "vp" and "sigma_max" not in vp
    with pytest.raises(UserError, match=r"\[sde\] sigma_max must be a number"):
        resolve_config({"sde": {"sigma_max": "x"}})
    with pytest.raises(UserError, match=r"\[sde\] N must be a whole number"):
        resolve_config({"sde": {"N": 1000.5}})
    with pytest.raises(UserError, match="bad parameters for the ve SDE"):
        resolve_config({"sde": {"foo": 1}})
    with pytest.raises(UserError, match="'name' must be text"):
        resolve_config({"name": 3})


def test_a_partial_sde_table_resumes_a_run_saved_before_the_defaults_were_filled_in():
    from scorerecon.priors.training import check_resumable
    cfg = resolve_config({"sde": {"type": "ve", "sigma_max": 80.0}})
    saved = {**cfg, "sde": {"type": "ve", "sigma_max": 80.0}}
    check_resumable(cfg, saved)
    with pytest.raises(UserError, match=r"\[sde\] differs"):
        check_resumable(cfg, {**cfg, "sde": {"type": "ve", "sigma_max": 40.0}})


def test_a_device_torch_does_not_know_is_named_and_cuda_means_this_process_gpu(monkeypatch):
    with pytest.raises(UserError, match="is not a device"):
        _configured_device("tpu")
    assert _configured_device("cuda", local_rank=1) == torch.device("cuda:1")  # each torchrun rank its own GPU
    assert _configured_device("cuda:0", local_rank=1) == torch.device("cuda:0")  # as given
    assert _configured_device("cpu", local_rank=1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _configured_device("auto", local_rank=1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _configured_device("auto", local_rank=1) == torch.device("cuda:1")


def test_unreadable_config_files_are_user_errors(tmp_path):
    from scorerecon.priors.config import load_config
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(UserError, match="cannot be read as text"):
        load_config(tmp_path / "binary.toml")
    with pytest.raises(UserError, match="cannot be read as text"):
        load_config(tmp_path)


def test_broken_prepared_datasets_are_user_errors(tmp_path):
    (tmp_path / "meta.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON.*data prepare head-ct"):
        load_meta("head-ct", tmp_path)
    (tmp_path / "val.npy").write_text("not an array")
    with pytest.raises(UserError, match="not a readable array"):
        load_split("head-ct", "val", tmp_path)
    np.save(tmp_path / "val.npy", np.zeros(5, np.float32))
    with pytest.raises(UserError, match=r"not \(slices, H, W\)"):
        load_split("head-ct", "val", tmp_path)


def test_calibrating_the_std_map_refuses_the_search_options_and_one_sample_before_any_work(capsys, monkeypatch):
    from scorerecon.solvers import tuning
    monkeypatch.setattr(tuning, "validation_cases", lambda *a, **k: pytest.fail("validation cases built"))
    assert main(["tune", "ct-sparse-view", "--method", "fast", "--calibrate-std", "--trials", "3"]) == 2
    assert "--trials steer the search, which --calibrate-std does not run" in _one_line(capsys)
    assert main(["tune", "ct-sparse-view", "--calibrate-std"]) == 2  # --method song: K = 1
    assert "song's preset for ct-sparse-view draws one posterior sample" in _one_line(capsys)


def test_tune_refuses_the_options_of_simulated_cases_beside_its_own_cases(capsys, monkeypatch):
    from scorerecon.solvers import tuning
    monkeypatch.setattr(tuning, "read_cases", lambda *a, **k: pytest.fail("cases read"))
    assert main(["tune", "ct-sparse-view", "--cases", ".", "--size", "32", "--slices", "2"]) == 2
    assert "--slices, --size choose the simulated validation slices, which --cases replaces" in _one_line(capsys)


def test_tune_checks_its_preset_folder_before_the_trials(tmp_path, monkeypatch):
    import scorerecon.solvers.tuning as tuning

    def no_cases(*args, **kwargs):
        raise AssertionError("the cases were built before the preset folder was checked")
    monkeypatch.setattr(tuning, "validation_cases", no_cases)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        tuning.run_tune("ct-sparse-view", "fast", prior="head-ct", output=str(tmp_path / "file"))
    (tmp_path / "ct-sparse-view.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        tuning.run_tune("ct-sparse-view", "fast", prior="head-ct", output=str(tmp_path))
    assert preset_file("ct-metal", tmp_path / "new" / "deep") == (tmp_path / "new" / "deep" / "ct-metal.json", None)
    assert not (tmp_path / "new").exists()  # checking makes nothing
    path = save_preset("ct-metal", "fast", {"steps": 4}, {"trials": 1}, tmp_path / "new" / "deep")
    assert json.loads(path.read_text())["methods"] == {"fast": {"steps": 4}}
    with pytest.raises(UserError, match="is not a folder"):
        read_cases(tmp_path / "file")


def test_ssim_compares_volumes_slice_by_slice_and_refuses_tiny_images():
    rng = np.random.default_rng(0)
    truth = rng.random((3, 24, 24))
    recon = np.clip(truth + 0.1 * rng.standard_normal(truth.shape), 0, 1)
    per_slice = [structural_similarity(t, r, data_range=1.0) for t, r in zip(truth, recon)]
    assert ssim(recon, truth) == pytest.approx(np.mean(per_slice))
    with pytest.raises(UserError, match="too small for SSIM"):
        ssim(recon[:, :5, :5], truth[:, :5, :5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(truth, truth) == float("inf")


def test_a_mistyped_layout_is_refused_before_any_work(ct_files, capsys, monkeypatch):
    from scorerecon.solvers import score
    monkeypatch.setattr(score, "build_problem", lambda *a, **k: pytest.fail("the problem was built"))
    monkeypatch.setenv("SCORERECON_LAYOUT", "channel_last")
    capsys.readouterr()
    argv = ["reconstruct", str(ct_files / "m.h5"), "--method", "fast", "-o", str(ct_files / "r.npy")]
    assert main(argv) == 2
    assert "SCORERECON_LAYOUT='channel_last' is not a layout: set it to channels_last" in _one_line(capsys)
    assert not (ct_files / "r.npy").exists()


def _reconstruct_one_line(path, tmp_path, capsys) -> str:
    out = tmp_path / "r.npy"
    method = {"ct": "fbp", "mri": "zero-filled"}[path.name.split("_")[0]]
    assert main(["reconstruct", str(path), "-o", str(out), "--method", method]) == 2
    assert not out.exists()
    return _one_line(capsys)


def _edited_copy(source: Path, name: str, edit) -> Path:
    import h5py
    import shutil
    target = source.with_name(name)
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        edit(f)
    return target


@pytest.fixture
def mri_file(tmp_path):
    np.save(tmp_path / "brain.npy", np.clip(shepp_logan_hu(32) / 1000 + 1, 0, None))
    assert main(["simulate", "mri", str(tmp_path / "brain.npy"), "-o", str(tmp_path / "mri.h5"),
                 "--acceleration", "2"]) == 0
    return tmp_path / "mri.h5"


def _replace(name, value):
    def edit(f):
        del f[name]
        f[name] = value
    return edit


def _as_group(name):
    def edit(f):
        del f[name]
        f.create_group(name)
    return edit


def _set_attr(group, name, value):
    def edit(f):
        f[group].attrs[name] = value
    return edit


@pytest.mark.parametrize("name, edit, message", [
    ("ct_extras_array.h5", _replace("extras", [0, 0, 0]), "'/extras' should be a group of arrays"),
    ("ct_geometry_array.h5", _replace("geometry", [0, 0]), "'/geometry' should be a group of arrays"),
    ("ct_measurement_group.h5", _as_group("measurement"), "'/measurement' should be an array"),
    ("ct_text_data.h5", _replace("measurement", np.array([[b"a"] * 24] * 12)), "data holds |S1 values"),
    ("ct_text_mask.h5", _replace("mask", np.array([b"x"] * 24)), "mask holds |S1 values"),
    ("ct_complex_truth.h5", _replace("truth", np.ones((32, 32), np.complex64)), "must be a real image"),
    ("ct_mask_3d.h5", _replace("mask", np.ones((2, 24, 1), np.uint8)), "a CT mask is (views, detectors)"),
])
def test_a_measurement_file_of_the_wrong_layout_is_one_line(ct_files, capsys, name, edit, message):
    path = _edited_copy(ct_files / "m.h5", name, edit)
    assert message in _reconstruct_one_line(path, ct_files, capsys)


@pytest.mark.parametrize("name, edit, message", [
    ("mri_kspace_group.h5", _as_group("kspace"), "'/kspace' should be an array"),
    ("mri_extras_array.h5", _replace("scorerecon", [1]), "'/scorerecon' should be a group of arrays"),
    ("mri_scale_text.h5", _set_attr("scorerecon", "intensity_scale", "big"), "intensity_scale = 'big' is not a number"),
    ("mri_max_text.h5", _set_attr("/", "max", "big"), "max = 'big' is not a number"),
    ("mri_esc_text.h5", _replace("reconstruction_esc", np.array([[[b"a"]]])), "not a real image"),
    ("mri_no_slices.h5", _replace("kspace", np.zeros((0, 32, 32), np.complex64)), "holds no slices"),
])
def test_a_fastmri_file_of_the_wrong_layout_is_one_line(mri_file, tmp_path, capsys, name, edit, message):
    path = _edited_copy(mri_file, name, edit)
    assert message in _reconstruct_one_line(path, tmp_path, capsys)


@pytest.mark.parametrize("which", ["ct", "mri"])
def test_a_damaged_hdf5_file_is_one_line(ct_files, mri_file, tmp_path, capsys, which):
    import h5py
    import shutil
    source, name = (ct_files / "m.h5", "measurement") if which == "ct" else (mri_file, "kspace")
    path = tmp_path / f"{which}_damaged.h5"
    shutil.copy(source, path)
    with h5py.File(path, "r") as f:
        chunk = f[name].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(chunk.byte_offset + chunk.size // 2)
        raw.write(b"\0" * 64)
    assert "is damaged" in _reconstruct_one_line(path, tmp_path, capsys)


def test_simulate_refuses_an_output_that_would_overwrite_its_image(tmp_path, capsys):
    from scorerecon.data.io import write_image
    write_image(tmp_path / "mr.cfl", np.clip(shepp_logan_hu(32) / 1000 + 1, 0, None))
    before = (tmp_path / "mr.cfl").read_bytes()
    assert main(["simulate", "mri", str(tmp_path / "mr.cfl"), "-o", str(tmp_path / "mr.cfl")]) == 2
    assert "would overwrite the image" in _one_line(capsys)
    assert (tmp_path / "mr.cfl").read_bytes() == before


def test_reconstruct_takes_a_measurement_and_refuses_settings_that_blow_up(ct_files, mri_file, tmp_path, capsys):
    from scorerecon.data.measurement import read_measurement
    from scorerecon.solvers import reconstruct
    with pytest.raises(UserError, match="reconstruct takes a Measurement, got str"):
        reconstruct(str(ct_files / "m.h5"), "fbp")
    meas = read_measurement(ct_files / "m.h5")
    meas.modality = "pet"
    with pytest.raises(UserError, match="unknown modality 'pet'"):
        reconstruct(meas, "fbp")
    out = tmp_path / "w.npy"
    assert main(["reconstruct", str(mri_file), "-o", str(out), "--method", "cs-tv", "--weight", "1e300",
                 "--iterations", "3"]) == 2
    assert "cs-tv produced NaN/Inf values" in _one_line(capsys) and not out.exists()


def test_messages_name_the_problem_the_user_made(ct_files, tmp_path, capsys):
    measurement = str(ct_files / "m.h5")
    np.save(tmp_path / "ref.npy", np.zeros((32, 32)))
    (tmp_path / "not-a-prior.pt").write_bytes(b"random bytes")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    cases = [
        (["-o", str(tmp_path / "d"), "--reference", str(tmp_path / "ref.npy")], "a --reference is a DICOM file"),
        (["-o", str(tmp_path / "ref.npy" / "x.npy")], "ref.npy is a file, not a folder"),
        (["-o", str(tmp_path / "p.npy"), "--method", "fast", "--prior", str(tmp_path / "not-a-prior.pt")],
         "pass a prior's .safetensors file"),
        (["-o", str(tmp_path / "p.npy"), "--method", "fast", "--prior", str(tmp_path / "other.pt")],
         "is not a scorerecon training checkpoint: pass a prior's .safetensors file"),
    ]
    for options, message in cases:
        assert main(["reconstruct", measurement, "--method", "fbp", *options]) == 2
        assert message in _one_line(capsys)
    assert main(["reconstruct", str(tmp_path), "-o", str(tmp_path / "r.npy")]) == 2
    assert "is a folder: pass a measurement file" in _one_line(capsys)


def test_simulate_refuses_an_image_that_records_the_other_modality(tmp_path, capsys):
    from scorerecon.data.io import write_image
    write_image(tmp_path / "ct.nrrd", shepp_logan_hu(32), modality="ct")
    write_image(tmp_path / "mr.nii.gz", np.clip(shepp_logan_hu(32) / 1000 + 1, 0, None), modality="mri")
    assert main(["simulate", "mri", str(tmp_path / "ct.nrrd"), "-o", str(tmp_path / "m.h5")]) == 2
    assert "is a CT image: use 'scorerecon simulate ct'" in _one_line(capsys)
    assert main(["simulate", "ct", str(tmp_path / "mr.nii.gz"), "-o", str(tmp_path / "c.h5")]) == 2
    assert "is an MR image: use 'scorerecon simulate mri'" in _one_line(capsys)
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "c.h5").exists()


def test_a_mistyped_option_of_a_classical_method_is_refused(ct_files):
    from scorerecon.data.measurement import read_measurement
    from scorerecon.solvers import reconstruct
    meas = read_measurement(ct_files / "m.h5")
    with pytest.raises(UserError, match="tv has no option 'wieght': check the spelling .*iterations, weight"):
        reconstruct(meas, "tv", iterations=2, wieght=0.1)
    with pytest.raises(UserError, match="tv has no option 'prior': prior belongs to the score-based methods"):
        reconstruct(meas, "tv", prior="head-ct")
    assert reconstruct(meas, "tv", iterations=2.0).image.shape == (32, 32)  # a whole float counts
    assert reconstruct(meas, "fbp", seed=3, progress=False).image.shape == (32, 32)


def test_evaluate_leaves_out_the_metal_mask_of_a_measurement_file(tmp_path, capsys):
    np.save(tmp_path / "phantom.npy", shepp_logan_hu(64))
    meas, recon, truth = (str(tmp_path / name) for name in ("metal.h5", "mar.npy", "truth.npy"))
    assert main(["simulate", "ct", str(tmp_path / "phantom.npy"), "-o", meas, "--metal", "auto",
                 "--full-views", "48"]) == 0
    assert main(["reconstruct", meas, "-o", recon, "--method", "li-mar", "--metrics", str(tmp_path / "m.json")]) == 0
    np.save(truth, shepp_logan_hu(64))
    capsys.readouterr()
    assert main(["evaluate", recon, truth, "--exclude", meas]) == 0
    expected = json.loads((tmp_path / "m.json").read_text())
    assert f"PSNR {expected['psnr']:.4f}" in capsys.readouterr().out
    assert main(["evaluate", recon, truth, "--exclude", str(tmp_path / "none.h5")]) == 2
    assert "none.h5 does not exist" in _one_line(capsys)
    np.save(tmp_path / "plain.npy", shepp_logan_hu(64))
    assert main(["simulate", "ct", str(tmp_path / "plain.npy"), "-o", str(tmp_path / "plain.h5")]) == 0
    capsys.readouterr()
    assert main(["evaluate", recon, truth, "--exclude", str(tmp_path / "plain.h5")]) == 2
    assert "holds no metal mask" in _one_line(capsys)


@pytest.mark.parametrize("simulate, options, message", [
    ("ct", dict(views=23.5), "views must be a whole number"),
    ("ct", dict(flux="1e5"), "flux must be a finite number"),
    ("ct", dict(seed=-1), "seed must be a whole number >= 0"),
    ("ct", dict(pixel_size="1"), "pixel_size must be a finite number"),
    ("mri", dict(coils=2.5), "coils must be a whole number"),
    ("mri", dict(seed=2 ** 40), "seed must lie in 0 .. "),
    ("mri", dict(noise=float("nan")), "noise must be a finite number"),
    ("mri", dict(pixel_size=(1.0, 2.0, 3.0)), "pixel_size must be one positive number or a (row, column) pair"),
    ("mri", dict(coils=np.array(2.0), pixel_size=np.float32(0.5), noise=np.array(0.0)), None),  # numbers of any kind
])
def test_the_python_simulations_name_an_argument_of_the_wrong_kind(simulate, options, message):
    from scorerecon.simulate.ct import simulate_ct
    from scorerecon.simulate.mri import simulate_mri
    image = shepp_logan_hu(32) if simulate == "ct" else np.clip(shepp_logan_hu(32) / 1000 + 1, 0, None)
    run = simulate_ct if simulate == "ct" else simulate_mri
    if message is None:
        assert run(image, **options).attrs["coils"] == 2
        return
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(image, **options)


def test_a_one_number_pixel_size_serves_both_mri_axes():
    from scorerecon.simulate.mri import simulate_mri
    meas = simulate_mri(np.clip(shepp_logan_hu(32) / 1000 + 1, 0, None), pixel_size=0.5)
    assert meas.geometry["pixel_size"] == [0.5, 0.5]
