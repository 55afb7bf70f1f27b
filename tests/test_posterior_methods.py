"""Score-based methods behind reconstruct(): data consistency, seeds, uncertainty, presets,
multi-coil flavours, bad input, the CLI (reconstruct and tune) with a tiny untrained prior."""

import json

import numpy as np
import pytest
import torch

from scorerecon.cli import main
from scorerecon.data.measurement import Measurement, write_measurement
from scorerecon.errors import UserError
from scorerecon.operators.mri import CoilPhaseMRI, SenseMRI, SingleCoilMRI, fft2c
from scorerecon.priors.analytic import GaussianPrior
from scorerecon.priors.checkpoint import export_prior
from scorerecon.priors.network import ScoreUNet
from scorerecon.priors.prior import ScorePrior
from scorerecon.priors.sde import VESDE, VPSDE
from scorerecon.solvers import reconstruct, samplers, score, tuning
from scorerecon.solvers.conditioning import (InverseProblem, SenseData, hard_consistency, inverse_step_gain,
                                             sense_step)

H = W = 4
_PRESET_FOLDERS = tuning.preset_dirs, tuning.user_presets_dir  # before the fixture below replaces them


@pytest.fixture(autouse=True)
def _isolated_presets(tmp_path, monkeypatch):
    """Presets from the user's folder or the repository must not change these tests."""
    monkeypatch.setenv(tuning.PRESETS_ENV, str(tmp_path / "presets"))
    monkeypatch.setattr(tuning, "preset_dirs", lambda: [tmp_path / "presets"])
    monkeypatch.setattr(tuning, "user_presets_dir", lambda: tmp_path / "presets")


def _gaussian(size=H) -> GaussianPrior:
    idx = torch.arange(size * size)
    r, c = idx // size, idx % size
    cov = 0.04 * torch.exp(-((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).double() / 4)
    return GaussianPrior(torch.full((size * size,), 0.5), cov + 0.002 * torch.eye(size * size),
                         VESDE(0.01, 5.0, N=30), image_shape=(1, size, size))


def _mri_measurement(coils=1, size=H, seed=0) -> Measurement:
    g = torch.Generator().manual_seed(seed)
    image = 0.5 + 0.2 * torch.rand(size, size, generator=g)
    mask = torch.zeros(size, size)
    mask[:, ::2] = 1
    mask[:, size // 2] = 1
    if coils == 1:
        kspace = fft2c(image.to(torch.complex64))[None]
        maps = None
    else:
        maps = torch.randn(coils, size, size, 2, generator=g).mul(0.3).add(1.0)
        maps = torch.view_as_complex(maps.contiguous())
        maps = maps / (maps.abs() ** 2).sum(0).sqrt()
        kspace = fft2c(maps * image)
    extras = {} if maps is None else {"sensitivity_maps": maps.numpy().astype(np.complex64)}
    return Measurement("mri", (kspace * mask).numpy().astype(np.complex64), mask.numpy().astype(np.uint8),
                       {"image_shape": [size, size], "output_shape": [size, size]},
                       truth=image.numpy(), extras=extras, attrs={"intensity_scale": 1.0})


# ------------------------------------------------------------------------ MRI phase
def test_mri_problem_samples_a_real_image_in_the_frame_of_the_image_phase():
    """phase="cs-tv": the sampled image is real and its warm start positive inside the object,
    what a magnitude prior has seen, while the phased data are still explained; phase="none"
    samples the complex image, whose real part is negative in places."""
    from scorerecon.simulate.mri import simulate_mri
    size = 32
    rows, cols = np.mgrid[:size, :size]
    disc = ((rows - 16) ** 2 + (cols - 16) ** 2 < 120).astype(np.float32)
    meas = simulate_mri(disc, acceleration=2, center_fraction=0.25, seed=5)
    inside = torch.from_numpy(disc > 0)
    rotated, warm = score.mri_problem(meas, _gaussian(size), torch.device("cpu"))[::2]
    plain, warm_plain = score.mri_problem(meas, _gaussian(size), torch.device("cpu"), phase="none")[::2]
    x, x_plain = warm()[0, 0], warm_plain()[0, 0]
    assert not rotated.complex_image and not x.is_complex() and plain.complex_image
    assert bool((x[inside] > 0).all())
    assert bool((x_plain.real[inside] < 0).any())  # the measured phase crosses ±π/2
    assert float((x.abs() - x_plain.abs())[inside].abs().max()) < 0.05
    y_norm = float(torch.linalg.vector_norm(rotated.y))
    assert float(rotated.residual_norm(x[None, None])) < 0.05 * y_norm


@pytest.mark.parametrize("coils", ["ssos", "hybrid"])
def test_coil_by_coil_problem_samples_real_coil_images_in_their_own_phase(coils):
    """phase="cs-tv" coil by coil: each coil image S_c x is sampled as a real r_c in the frame of
    its own smooth phase, so the magnitudes |S_c| |x| explain the phased data of every coil, and
    the SENSE combination of those real images gives back |x|."""
    from scorerecon.simulate.mri import simulate_mri
    size = 32
    rows, cols = np.mgrid[:size, :size]
    disc = ((rows - 16) ** 2 + (cols - 16) ** 2 < 120).astype(np.float32)
    meas = simulate_mri(disc, acceleration=2, center_fraction=0.25, coils=4, seed=5)
    problem = score.mri_problem(meas, _gaussian(size), torch.device("cpu"), coils=coils)[0]
    plain = score.mri_problem(meas, _gaussian(size), torch.device("cpu"), coils=coils, phase="none")[0]
    assert not problem.complex_image and plain.complex_image and problem.groups == 4
    magnitudes = torch.from_numpy(np.abs(meas.extras["sensitivity_maps"]) * disc)[:, None].float()
    y_norm = float(torch.linalg.vector_norm(problem.y))
    assert float(torch.linalg.vector_norm(problem.residual_norm(magnitudes))) < 0.05 * y_norm
    assert float(torch.linalg.vector_norm(plain.residual_norm(magnitudes.to(torch.complex64)))) > 0.3 * y_norm
    if coils == "hybrid":
        combined = problem.sense.combine(magnitudes).abs()[0, 0].numpy()
        assert np.abs(combined - disc).max() < 0.05


def test_unknown_phase_handling_is_one_clear_error():
    with pytest.raises(UserError, match="phase handling"):
        reconstruct(_mri_measurement(), "fast", prior=_gaussian(), phase="homodyne", progress=False)


# --------------------------------------------------------------------- data consistency
@pytest.mark.parametrize("complex_image", [False, True])
def test_hard_projection_reproduces_the_measured_data(complex_image):
    """Real images too: the mask is Hermitian-symmetric and the data come from a real image."""
    meas = _mri_measurement()
    op = SingleCoilMRI(torch.from_numpy(meas.mask).float())
    problem = InverseProblem(op, torch.from_numpy(meas.data)[None], (H, W), complex_image=complex_image)
    state = torch.randn(problem.state_shape(3), generator=torch.Generator().manual_seed(0))
    projected = problem.to_image(hard_consistency(problem, state))
    torch.testing.assert_close(problem.forward(projected), problem.measured(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting", [dict(views=10), dict(limited_angle=120.0)])
def test_ct_hard_projection_converges_where_the_fbp_step_diverges(setting):
    """With fewer views than the image width asks for (45 for 64², all of them or a subset),
    FBP overshoots: T⁻¹ Λ T has an eigenvalue above 2, so the repeated step
    x + T⁻¹[Λ (y − T x)] grows without bound, while CT's CG projection reaches the data."""
    from scorerecon.simulate.ct import simulate_ct
    from scorerecon.solvers.classical_ct import ct_problem
    size = 64
    rows, cols = np.mgrid[:size, :size]
    disc = np.where((rows - 32) ** 2 + (cols - 30) ** 2 < 400, 40.0, -1000.0)
    ct = ct_problem(simulate_ct(disc, full_views=45, **setting))
    problem, op = InverseProblem(ct.operator, ct.sinogram, (size, size)), ct.operator
    assert not op.inverse_projects
    assert inverse_step_gain(op, (1, 1, size, size), torch.Generator().manual_seed(0)) > 2.0
    state = torch.randn(problem.state_shape(2), generator=torch.Generator().manual_seed(1))
    fbp_steps, projected = state, state
    for _ in range(60):
        fbp_steps = fbp_steps + op.transform_inverse(op.mask * (problem.measured(2) - op.transform(fbp_steps)))
    for _ in range(20):
        projected = hard_consistency(problem, projected)
    y_norm = float(torch.linalg.vector_norm(problem.y))
    assert float((problem.residual_norm(fbp_steps) / problem.residual_norm(state)).min()) > 10
    assert float(problem.residual_norm(projected).max()) < 0.02 * y_norm


def test_song_with_lambda_one_ends_on_the_data():
    meas = _mri_measurement()
    out = reconstruct(meas, "song", prior=_gaussian(), steps=10, samples=2, lam=1.0, real=True, progress=False)
    k = fft2c(torch.from_numpy(out.unit_image).to(torch.complex64))
    torch.testing.assert_close(k * torch.from_numpy(meas.mask), torch.from_numpy(meas.data[0]), atol=1e-4, rtol=0)


def test_padding_for_the_prior_never_reaches_the_operator():
    problem = InverseProblem(SingleCoilMRI(torch.ones(3, 3)), torch.ones(1, 1, 3, 3, dtype=torch.complex64),
                             (4, 4), complex_image=True, grid_shape=(3, 3))
    x = torch.randn(2, 1, 4, 4, dtype=torch.complex64)
    m = torch.randn(2, 1, 3, 3, dtype=torch.complex64)
    lhs = torch.vdot(problem.forward(x).flatten(), m.flatten())
    rhs = torch.vdot(x.flatten(), problem.adjoint(m).flatten())
    torch.testing.assert_close(lhs, rhs, atol=1e-5, rtol=1e-5)
    padded = problem.adjoint(m)
    assert padded[..., -1, :].abs().max() == 0 and padded[..., :, -1].abs().max() == 0  # the padding


# ------------------------------------------------------------------ seeds and samples
def test_same_seed_same_image_and_std_from_samples():
    meas, prior = _mri_measurement(), _gaussian()
    a = reconstruct(meas, "song", prior=prior, steps=8, samples=3, seed=1, progress=False)
    b = reconstruct(meas, "song", prior=prior, steps=8, samples=3, seed=1, progress=False)
    c = reconstruct(meas, "song", prior=prior, steps=8, samples=3, seed=2, progress=False)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    assert a.std is not None and a.std.shape == (H, W) and np.all(a.std >= 0)
    assert a.info["nfe"] == 2 * 8 + 1 and a.info["samples"] == 3


@pytest.mark.parametrize("method, nfe", [("chung", 2 * 6 + 1), ("langevin", 6 * 3 + 1), ("guidance", 2 * 6 + 1),
                                         ("dps", 6 + 1), ("fast", 6), ("score", 6)])
def test_every_method_runs_with_its_network_evaluation_count(method, nfe):
    out = reconstruct(_mri_measurement(), method, prior=_gaussian(), steps=6, samples=2, progress=False)
    assert out.info["nfe"] == nfe and np.all(np.isfinite(out.image))


def test_fast_is_the_default_with_at_most_50_evaluations():
    out = reconstruct(_mri_measurement(), "score", prior=_gaussian(), progress=False)
    assert out.info["method"] == "fast" and out.info["nfe"] <= 50


# -------------------------------------------------------------------------- multi-coil
@pytest.mark.parametrize("method, coils", [("chung", "sense"), ("chung", "ssos"), ("chung", "hybrid"),
                                           ("fast", "sense"), ("fast", "ssos")])
def test_multi_coil_flavours(method, coils):
    """K = 3 samples of every flavour, the fast sampler's warm start (one image per coil in the
    per-coil flavours) included; the samples differ, so the std map is not zero."""
    meas = _mri_measurement(coils=3)
    out = reconstruct(meas, method, prior=_gaussian(), steps=6, samples=3, coils=coils, progress=False,
                      **({"start_sigma": 0.1} if method == "fast" else {}))
    assert out.image.shape == (H, W) and out.info["coils"] == coils and out.info["task"] == "mri-multi"
    assert out.samples.shape == (3, H, W) and out.std.max() > 0


def test_hybrid_is_refused_by_the_methods_that_run_no_sense_step():
    with pytest.raises(UserError, match="coils=hybrid .* which song does not run"):
        reconstruct(_mri_measurement(coils=3), "song", prior=_gaussian(), steps=3, coils="hybrid", progress=False)


def test_sense_step_does_not_increase_the_data_misfit():
    """Chung & Ye, Prop. 1: with normalised maps I − λ A^H A is non-expansive for λ ∈ [0, 1]."""
    meas = _mri_measurement(coils=3)
    maps = torch.from_numpy(meas.extras["sensitivity_maps"])
    mask = torch.from_numpy(meas.mask).float()
    op, y = SenseMRI(maps, mask), torch.from_numpy(meas.data)[None]
    problem = InverseProblem(SingleCoilMRI(mask), y.transpose(0, 1), (H, W), complex_image=True,
                             sense=SenseData(op, y, maps))
    state = torch.randn(problem.state_shape(2), generator=torch.Generator().manual_seed(0))
    sense = problem.sense

    def misfit(s):
        return torch.linalg.norm(y - op(sense.combine(problem.to_image(s))))
    assert misfit(sense_step(problem, state, 1.0)) < misfit(state)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("options, message", [
    ({"steps": 0}, "number of steps must be positive"),
    ({"start_sigma": -0.1}, "start_sigma must be a finite number >= 0"),
    ({"start_sigma": float("nan")}, "start_sigma must be a finite number >= 0, got nan"),
    ({"cg_iterations": -1}, "cg_iterations must be a finite number >= 0"),
    ({"gamma": -0.01}, "gamma must be a finite number >= 0")])
def test_the_fast_sampler_refuses_negative_or_non_finite_settings(options, message):
    """steps = 0 was taken as 'the prior's N' (1000 evaluations); a negative start_sigma started
    at t = ε, where the prior does nothing."""
    with pytest.raises(UserError, match=message):
        reconstruct(_mri_measurement(), "fast", prior=_gaussian(), progress=False, **{"steps": 3, **options})


def test_a_preset_of_zero_steps_is_refused_not_taken_as_the_priors_n(tmp_path):
    tuning.save_preset(tuning.task_of(_mri_measurement()), "fast", {"steps": 0}, {}, tmp_path / "presets")
    with pytest.raises(UserError, match="number of steps must be positive, got 0"):
        reconstruct(_mri_measurement(), "fast", prior=_gaussian(), progress=False)


def test_prior_and_operator_size_mismatch_is_one_user_error():
    with pytest.raises(UserError, match="models 4x4 images"):
        reconstruct(_mri_measurement(size=8), "fast", prior=_gaussian(), steps=3, progress=False)


def test_corrupted_prior_file_is_one_user_error(tmp_path):
    bad = tmp_path / "prior.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError):
        reconstruct(_mri_measurement(), "fast", prior=str(bad), steps=3, progress=False)


def test_a_prior_that_produces_nan_is_one_user_error():
    class Broken(GaussianPrior):
        def score(self, x, t):
            return torch.full_like(x, float("nan"))
    prior = _gaussian()
    broken = Broken(prior.mean, prior.cov, prior.sde, image_shape=(1, H, W))
    with pytest.raises(UserError, match="NaN/Inf"):
        reconstruct(_mri_measurement(), "song", prior=broken, steps=3, progress=False)


@pytest.mark.parametrize("options, message", [
    (dict(lam=1.5), "λ must lie"), (dict(bogus=1), "do not apply"), (dict(samples=0), "samples must be positive"),
    (dict(coils="many"), "multi-coil flavour")])
def test_bad_options(options, message):
    with pytest.raises(UserError, match=message):
        reconstruct(_mri_measurement(), "song", prior=_gaussian(), steps=3, progress=False, **options)


# --------------------------------------------------------------------------- presets
def test_presets_are_used_by_task_and_explicit_options_win(tmp_path):
    tuning.save_preset("mri-single", "song", {"lam": 0.5, "snr": 0.2}, {"ssim": 0.9}, tmp_path / "presets")
    assert score.settings_for("song", "mri-single", {})["lam"] == 0.5
    assert score.settings_for("song", "mri-single", {"lam": 0.7})["lam"] == 0.7
    assert score.settings_for("song", "ct-sparse-view", {})["lam"] == score.DEFAULTS["song"]["lam"]
    out = reconstruct(_mri_measurement(), "song", prior=_gaussian(), steps=3, progress=False)
    assert out.info["lam"] == 0.5


def test_task_of_tells_line_masks_from_2d_masks_and_coils():
    from scorerecon.simulate.mri import simulate_mri
    image = np.zeros((32, 32), np.float32)
    image[8:24, 10:22] = 1.0
    task = {name: tuning.task_of(simulate_mri(image, mask=mask, acceleration=4.0, coils=coils, seed=0))
            for name, mask, coils in [("lines", "equispaced", 1), ("disc", "poisson", 1),
                                      ("coils", "poisson", 4)]}
    assert task == {"lines": "mri-single", "disc": "mri-single-2d", "coils": "mri-multi"}


def test_task_of_counts_acquired_ct_views():
    """A CT measurement's task follows the views it acquired, not the grid it lies on: 37 of 180
    is sparse, 38 is many; metal and a limited angle go to their own tasks whatever the views."""
    from scorerecon.simulate.ct import simulate_ct
    image = np.full((32, 32), -1000.0, np.float32)
    image[8:24, 10:22] = 40.0
    tasks = [tuning.task_of(simulate_ct(image, full_views=180, seed=0, **setting))
             for setting in (dict(views=37), dict(views=38), dict(views=180), dict(limited_angle=120.0))]
    assert tasks == ["ct-sparse-view", "ct-many-view", "ct-many-view", "ct-limited-angle"]
    assert tuning.MANY_VIEWS == 38


def test_a_task_falls_back_to_its_parent_preset_method_by_method(tmp_path, monkeypatch):
    """ct-many-view has its own fast entry; a method it does not name takes ct-sparse-view's,
    from whichever folder holds it, and the task's own entry wins in every folder."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    monkeypatch.setattr(tuning, "preset_dirs", lambda: [user, shipped])
    tuning.save_preset("ct-sparse-view", "song", {"lam": 0.3}, {"trials": 1}, shipped)
    tuning.save_preset("ct-sparse-view", "fast", {"eta": 4.0}, {}, user)
    tuning.save_preset("ct-many-view", "fast", {"eta": 0.5}, {"trials": 2}, shipped)
    preset = tuning.load_preset("ct-many-view")
    assert preset["methods"] == {"song": {"lam": 0.3}, "fast": {"eta": 0.5}}
    assert preset["tuned"] == {"song": {"trials": 1}, "fast": {"trials": 2}}
    assert preset["task"] == "ct-many-view"
    assert tuning.load_preset("ct-sparse-view")["methods"]["fast"] == {"eta": 4.0}
    assert [tuning.preset_task("ct-many-view", m) for m in ("fast", "song", "dps")] == [
        "ct-many-view", "ct-sparse-view", "ct-many-view"]  # DPS: no preset anywhere, the defaults
    tuning.save_preset("ct-many-view", "song", {"lam": 0.6}, {}, user)  # an entry without provenance
    tuned = tuning.load_preset("ct-many-view")["tuned"]
    assert "song" not in tuned or tuned["song"] == {}  # not the fallback's record of another entry


def test_calibrating_an_entry_taken_from_the_fallback_names_where_its_settings_came_from(tmp_path, monkeypatch):
    """--calibrate-std of ct-many-view's inherited fast entry saves it as ct-many-view's own, the
    23-view record nested under settings_from without the 23-view std calibration."""
    shipped = tmp_path / "shipped"
    monkeypatch.setattr(tuning, "preset_dirs", lambda: [shipped])
    tuning.save_preset("ct-sparse-view", "fast", {"eta": 4.0, "std_scale": 2.3},
                       {"trials": 5, "std_calibration": {"cases": 2}}, shipped)
    settings, provenance = tuning.preset_to_calibrate("ct-many-view", "fast", str(tmp_path / "empty"))
    assert settings == {"eta": 4.0, "std_scale": 2.3}
    assert provenance == {"settings_from": {"task": "ct-sparse-view", "tuned": {"trials": 5}}}
    assert tuning.preset_to_calibrate("ct-sparse-view", "fast", None)[1] == {"trials": 5, "std_calibration": {"cases": 2}}


def test_user_presets_override_shipped_ones_method_by_method(tmp_path, monkeypatch):
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    monkeypatch.setattr(tuning, "preset_dirs", lambda: [user, shipped])
    tuning.save_preset("ct-metal", "song", {"lam": 0.3}, {}, shipped)
    tuning.save_preset("ct-metal", "fast", {"eta": 0.5}, {}, shipped)
    tuning.save_preset("ct-metal", "fast", {"eta": 0.9}, {}, user)
    assert tuning.load_preset("ct-metal")["methods"] == {"song": {"lam": 0.3}, "fast": {"eta": 0.9}}


def test_an_entry_keeps_the_provenance_of_its_own_file(tmp_path, monkeypatch):
    """A higher folder's entry without a record does not show the record of the entry it hides."""
    user, shipped = tmp_path / "user", tmp_path / "shipped"
    monkeypatch.setattr(tuning, "preset_dirs", lambda: [user, shipped])
    tuning.save_preset("ct-metal", "fast", {"eta": 0.5}, {"trials": 20, "source": "head-ct val.npy"}, shipped)
    tuning.save_preset("ct-metal", "song", {"lam": 0.3}, {"trials": 9}, shipped)
    (user / "ct-metal.json").parent.mkdir()
    (user / "ct-metal.json").write_text(json.dumps({"methods": {"fast": {"eta": 0.5, "samples": 3}}}))
    preset = tuning.load_preset("ct-metal")
    assert preset["methods"]["fast"] == {"eta": 0.5, "samples": 3} and preset["tuned"] == {"song": {"trials": 9}}


def test_tune_writes_to_the_user_folder_and_says_when_another_folder_hides_it(tmp_path, monkeypatch):
    """With $SCORERECON_PRESETS set, tune (no -o) still writes to the user's folder, not into the
    folder the variable names (a benchmark's committed presets, say); a preset there with its own
    entry for the method, which reconstruct would use instead, is named."""
    monkeypatch.setattr(tuning, "preset_dirs", _PRESET_FOLDERS[0])
    monkeypatch.setattr(tuning, "user_presets_dir", _PRESET_FOLDERS[1])
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(tuning.PRESETS_ENV, str(tmp_path / "env"))
    path = tuning.save_preset("mri-single", "song", {"lam": 0.5}, {})
    assert path == tmp_path / "xdg" / "scorerecon" / "presets" / "mri-single.json"
    assert not (tmp_path / "env").exists() and tuning.hidden_by("mri-single", "song", path) is None
    tuning.save_preset("mri-single", "song", {"lam": 0.9}, {}, tmp_path / "env")
    assert tuning.hidden_by("mri-single", "song", path) == tmp_path / "env" / "mri-single.json"
    assert tuning.hidden_by("mri-single", "fast", path) is None
    elsewhere = tuning.save_preset("mri-single", "song", {"lam": 0.7}, {}, tmp_path / "elsewhere")
    assert tuning.hidden_by("mri-single", "song", elsewhere) is None  # not searched: nothing hides it


def test_malformed_preset_is_one_user_error(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "mri-single.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        tuning.load_preset("mri-single")


def test_shipped_presets_parse():
    from pathlib import Path
    paths = sorted((Path(tuning.__file__).resolve().parent / "presets").glob("*.json"))
    assert sorted(p.stem for p in paths) == sorted(tuning.TASKS)  # one shipped preset per task
    for path in paths:
        preset = json.loads(path.read_text())
        assert path.stem in tuning.TASKS and preset["task"] == path.stem
        for method, params in preset["methods"].items():
            assert set(params) <= score.allowed_settings(method), (path.name, method)
            assert params.get("std_scale", 1.0) > 0


# ------------------------------------------------------------- CT and the command line
@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    torch.manual_seed(0)
    net = ScoreUNet(channels=1, nf=8, ch_mult=(1, 2), num_res_blocks=1, attention_levels=())
    torch.nn.init.normal_(net.conv_out.weight, std=0.01)
    prior = ScorePrior(net, VESDE(0.01, 20.0, N=10), {"modality": "ct"})
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    return str(export_prior(net.state_dict(), prior.describe(), path))


@pytest.fixture(scope="module")
def ct_files(tmp_path_factory):
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    from scorerecon.simulate.ct import simulate_ct
    folder = tmp_path_factory.mktemp("ct")
    hu = resize(shepp_logan_phantom(), (30, 30), anti_aliasing=True).astype(np.float32) * 1500 - 1000
    metal = np.zeros((30, 30), bool)
    metal[14:17, 10:13] = True
    write_measurement(folder / "sparse.h5", simulate_ct(hu, views=8, full_views=24))
    write_measurement(folder / "metal.h5", simulate_ct(hu, full_views=24, metal=metal))
    return folder


def test_cli_reconstruct_writes_image_and_std(ct_files, tiny_prior, tmp_path):
    out = tmp_path / "recon.npy"
    code = main(["reconstruct", str(ct_files / "sparse.h5"), "--method", "dps", "--prior", tiny_prior,
                 "--steps", "2", "--samples", "2", "-o", str(out), "--metrics", str(tmp_path / "m.json")])
    assert code == 0 and json.loads((tmp_path / "m.json").read_text())["nfe"] == 3
    from scorerecon.data.measurement import read_measurement
    same = reconstruct(read_measurement(ct_files / "sparse.h5"), "dps", prior=tiny_prior, steps=2, samples=2,
                       progress=False)  # the command line's default seed, 0
    np.testing.assert_array_equal(np.load(out), same.image)
    np.testing.assert_array_equal(np.load(tmp_path / "recon_std.npy"), same.std)
    assert same.std.shape == (30, 30) and same.std.max() > 0  # two samples differ
    # a rerun to the same -o that writes no std map would leave the old one looking like its own
    assert main(["reconstruct", str(ct_files / "sparse.h5"), "--method", "fbp", "-o", str(out)]) == 2
    np.testing.assert_array_equal(np.load(out), same.image)


@pytest.mark.parametrize("layout", ["channels_last", "default", None])
def test_samplers_run_the_networks_in_the_layout_asked_for(ct_files, tiny_prior, layout, monkeypatch):
    """reconstruct (here DPS, which differentiates through the network) and unconditional sampling
    call the network with channels_last weights on the CPU under SCORERECON_LAYOUT=channels_last,
    else in PyTorch's default layout; the weights are the same tensors afterwards and the images
    agree with the default layout's."""
    from scorerecon.data.measurement import read_measurement
    from scorerecon.priors import load_prior, sample
    monkeypatch.delenv("SCORERECON_LAYOUT", raising=False)
    prior = load_prior(tiny_prior)
    meas = read_measurement(ct_files / "sparse.h5")
    nchw = reconstruct(meas, "dps", prior=prior, steps=2, samples=2, progress=False).image
    nchw_samples = sample(prior, 2, (16, 16), steps=2)
    if layout is not None:
        monkeypatch.setenv("SCORERECON_LAYOUT", layout)
    weight = prior.network.down[0].conv1.weight  # 8 → 8 channels: the two layouts differ in strides
    storage, seen = weight.data_ptr(), []
    prior.network.register_forward_pre_hook(lambda *_: seen.append(weight.is_contiguous()))
    image = reconstruct(meas, "dps", prior=prior, steps=2, samples=2, progress=False).image
    samples = sample(prior, 2, (16, 16), steps=2)
    assert len(seen) > 2 and set(seen) == {layout != "channels_last"}
    assert weight.data_ptr() == storage and weight.is_contiguous()
    np.testing.assert_allclose(image, nchw, rtol=1e-4, atol=1e-2)  # the same up to the order of the sums
    assert samples.is_contiguous()
    torch.testing.assert_close(samples, nchw_samples, atol=1e-4, rtol=0)


def test_cli_saves_the_posterior_samples_whose_mean_and_std_are_the_image_and_std_map(ct_files, tiny_prior,
                                                                                        tmp_path, capsys):
    """--save-samples writes the K samples (HU) as a stack beside the image, in the image's format;
    their mean over K is the image and their standard deviation the std map."""
    out = tmp_path / "recon.nii.gz"
    code = main(["reconstruct", str(ct_files / "sparse.h5"), "--method", "fast", "--prior", tiny_prior,
                 "--steps", "2", "--samples", "3", "--save-samples", "-o", str(out)])
    from scorerecon.data.io import read_image
    image = read_image(out).array
    samples, std = read_image(tmp_path / "recon_samples.nii.gz").array, read_image(tmp_path / "recon_std.nii.gz").array
    assert code == 0 and samples.shape == (3, 30, 30) and not np.array_equal(samples[0], samples[1])
    assert f"wrote {out}, {tmp_path / 'recon_std.nii.gz'}, {tmp_path / 'recon_samples.nii.gz'}" in capsys.readouterr().out
    np.testing.assert_allclose(samples.mean(axis=0), image, atol=1e-3)
    np.testing.assert_allclose(samples.std(axis=0), std, atol=1e-3)


def test_dicom_outputs_name_their_series_and_are_replaced_by_a_second_run(ct_files, tiny_prior, tmp_path):
    import pydicom
    argv = ["reconstruct", str(ct_files / "sparse.h5"), "--method", "fast", "--prior", tiny_prior, "--steps", "2",
            "--samples", "2", "--save-samples", "-o", str(tmp_path / "recon")]
    for _ in range(2):  # the second run replaces the three series the first one wrote
        assert main(argv) == 0
    described = {name: pydicom.dcmread(tmp_path / name / "IM00001.dcm").SeriesDescription
                 for name in ("recon", "recon_std", "recon_samples")}
    assert described == {"recon": "scorerecon reconstruction", "recon_std": "scorerecon posterior std",
                         "recon_samples": "scorerecon posterior samples"}


def test_reconstruct_notes_a_preset_tuned_with_another_prior(ct_files, tiny_prior, tmp_path, capsys):
    """A 23-view preset tuned with head-ct: another prior gets one note on stderr naming the
    tune command, and the same prior (by name, by its file's path or by default) none."""
    from scorerecon.priors.registry import shipped_path
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "ct-sparse-view.json").write_text(json.dumps(
        {"task": "ct-sparse-view", "methods": {"fast": {"eta": 0.5}}, "tuned": {"fast": {"prior": "head-ct"}}}))
    assert score.preset_prior_mismatch("fast", "ct-sparse-view", None, "ct") is None
    assert score.preset_prior_mismatch("fast", "ct-sparse-view", shipped_path("head-ct"), "ct") is None
    assert score.preset_prior_mismatch("fast", "ct-sparse-view", "head-ct-edm", "ct") == "head-ct"
    assert score.preset_prior_mismatch("fast", "ct-sparse-view", _gaussian(4), "ct") is None  # an object: unnamed
    assert score.preset_prior_mismatch("dps", "ct-sparse-view", "head-ct-edm", "ct") is None  # no preset entry
    code = main(["reconstruct", str(ct_files / "sparse.h5"), "--method", "fast", "--prior", tiny_prior,
                 "--steps", "2", "--samples", "1", "-o", str(tmp_path / "r.npy")])
    err = capsys.readouterr().err
    assert code == 0 and "note: the ct-sparse-view preset of fast was tuned with prior head-ct" in err
    assert f"scorerecon tune ct-sparse-view --method fast --prior {tiny_prior}" in err


def test_mri_samples_are_the_magnitudes_of_the_signed_samples_behind_the_image(tmp_path):
    """The unit-domain samples' mean and std are the image and std map; the native samples are
    their magnitudes in the data's units, written as a stack with the pixel spacing."""
    from scorerecon.data.io import read_image
    from scorerecon.simulate.mri import simulate_mri
    from scorerecon.solvers import write_reconstruction
    size = 8
    image = 0.5 + 0.2 * np.random.default_rng(0).random((size, size), dtype=np.float32)
    meas = simulate_mri(image, acceleration=2, center_fraction=0.25, pixel_size=(0.8, 0.8), seed=0)
    options = dict(prior=_gaussian(size), steps=4, samples=3, progress=False)
    unit = score.run_method(meas, "fast", **options)
    np.testing.assert_allclose(unit.samples.mean(axis=0), unit.unit_image, atol=1e-6)
    np.testing.assert_allclose(unit.samples.std(axis=0), unit.std, atol=1e-6)
    out = reconstruct(meas, "fast", **options)
    np.testing.assert_allclose(out.samples, np.abs(unit.samples) * meas.attrs["intensity_scale"], rtol=1e-6)
    write_reconstruction(out, meas, str(tmp_path / "r.nii.gz"), samples=True)
    stack = read_image(tmp_path / "r_samples.nii.gz")
    np.testing.assert_allclose(stack.array, out.samples, rtol=1e-6)
    assert stack.spacing == pytest.approx((1.0, 0.8, 0.8))
    with pytest.raises(UserError, match="cs-tv draws no posterior samples"):
        write_reconstruction(reconstruct(meas, "cs-tv"), meas, str(tmp_path / "c.npy"), samples=True)
    assert not (tmp_path / "c.npy").exists()


def test_metal_is_put_back(ct_files, tiny_prior):
    from scorerecon.data.measurement import read_measurement
    meas = read_measurement(ct_files / "metal.h5")
    out = reconstruct(meas, "fast", prior=tiny_prior, steps=2, samples=2, progress=False)
    metal = meas.extras["metal_mask"] != 0
    assert out.info["task"] == "ct-metal"
    np.testing.assert_allclose(out.image[metal], meas.attrs["metal_hu"], rtol=1e-5)
    assert np.all(out.std[metal] == 0)


def test_cli_bad_prior_exits_2_without_output(ct_files, tmp_path, capsys):
    code = main(["reconstruct", str(ct_files / "sparse.h5"), "--method", "song", "--prior",
                 str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "x.npy")])
    assert code == 2 and not (tmp_path / "x.npy").exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_tune_finds_settings_in_the_search_space_and_saves_a_preset(ct_files, tiny_prior, tmp_path):
    pytest.importorskip("optuna")
    from scorerecon.data.measurement import read_measurement
    cases = [read_measurement(ct_files / "sparse.h5")]
    best, value = tuning.tune(cases, "fast", score.resolve_prior(tiny_prior, "ct"), trials=3, steps=2)
    assert set(best) == set(tuning.SEARCH_SPACES["fast"]) and best["steps"] == 2
    for name, (_, low, high) in tuning.SEARCH_SPACES["fast"].items():
        assert name == "steps" or low <= best[name] <= high, name
    assert value == pytest.approx(tuning.score_settings(cases, "fast", best, score.resolve_prior(tiny_prior, "ct"), 0))
    path = tuning.save_preset("ct-sparse-view", "fast", best, {"ssim": value}, tmp_path / "presets")
    assert tuning.load_preset("ct-sparse-view")["methods"]["fast"] == best and path.is_file()


def _tune_with_mock_scores(monkeypatch, ct_files, tiny_prior, tmp_path, steps, objective="ssim",
                           task="ct-sparse-view", method="fast", case="sparse.h5"):
    """run_tune on one case where the current settings score 0.5 and every trial 0.9; returns
    the saved entry and the settings each trial ran."""
    pytest.importorskip("optuna")
    runs = []
    searched = set(tuning.SEARCH_SPACES[method]) - {"steps"}

    def score_settings(cases, method, settings, prior, seed, objective="ssim"):
        runs.append(dict(settings))
        return 0.9 if searched & set(settings) else 0.5
    monkeypatch.setattr(tuning, "score_settings", score_settings)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / case).write_bytes((ct_files / case).read_bytes())
    path = tuning.run_tune(task, method, prior=tiny_prior, steps=steps, trials=2,
                           cases_dir=str(cases), output=str(tmp_path / "presets"), objective=objective,
                           log=lambda *_: None)
    return json.loads(path.read_text())["methods"][method], runs[1:]


def test_tune_keeps_the_settings_it_does_not_search(ct_files, tiny_prior, tmp_path, monkeypatch):
    """The trials of Song's method for metal run the preset's corrector_steps = 0 (snr idle):
    the saved entry keeps it beside the tuned λ and snr, instead of switching the corrector on."""
    tuning.save_preset("ct-metal", "song", {"lam": 0.3, "corrector_steps": 0, "steps": 5}, {}, tmp_path / "presets")
    saved, trials = _tune_with_mock_scores(monkeypatch, ct_files, tiny_prior, tmp_path, steps=None,
                                           task="ct-metal", method="song", case="metal.h5")
    assert saved["corrector_steps"] == 0 and saved["steps"] == 5 and saved["lam"] != 0.3
    assert all(score.settings_for("song", "ct-metal", t)["corrector_steps"] == 0 for t in trials)
    tuned = json.loads((tmp_path / "presets" / "ct-metal.json").read_text())["tuned"]["song"]
    assert tuned["steps"] == 5


def test_a_stopped_tune_continues_from_its_finished_trials(ct_files, tiny_prior, tmp_path, monkeypatch):
    """Stopped after the baseline and two of four trials, the same command scores neither again:
    it runs the two trials left, saves the preset and removes its journal."""
    pytest.importorskip("optuna")
    calls, stopped = [], []

    def score_settings(cases, method, settings, prior, seed, objective="ssim"):
        calls.append(dict(settings))
        if len(calls) == 4 and not stopped:
            stopped.append(True)
            raise KeyboardInterrupt
        return 0.9 if "eta" in settings else 0.5
    monkeypatch.setattr(tuning, "score_settings", score_settings)
    monkeypatch.setattr(tuning, "_inside", lambda settings, space: {})  # every trial a draw of TPE's
    cases, presets = tmp_path / "cases", tmp_path / "presets"
    cases.mkdir()
    (cases / "sparse.h5").write_bytes((ct_files / "sparse.h5").read_bytes())
    run = dict(prior=tiny_prior, steps=3, trials=4, cases_dir=str(cases), output=str(presets), log=lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        tuning.run_tune("ct-sparse-view", "fast", **run)
    assert len(list(presets.glob(".tune-ct-sparse-view-fast-*.journal"))) == 1
    assert not (presets / "ct-sparse-view.json").exists()
    first = [c for c in calls[1:3]]
    calls.clear()
    path = tuning.run_tune("ct-sparse-view", "fast", **run)
    assert len(calls) == 2 and all("eta" in c for c in calls)  # no baseline, two trials
    assert all(c not in first for c in calls)  # new draws, not the first two again
    assert json.loads(path.read_text())["tuned"]["fast"]["ssim_before"] == 0.5
    assert not list(presets.glob(".tune-*"))
    calls.clear()
    tuning.run_tune("ct-sparse-view", "fast", **{**run, "seed": 1})  # another search: from its start
    assert len(calls) == 5


def test_tune_refuses_before_any_reconstruction_without_optuna(ct_files, tiny_prior, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.setattr(tuning, "score_settings", lambda *a, **k: pytest.fail("reconstructed before the check"))
    with pytest.raises(UserError, match="tuning needs Optuna"):
        tuning.run_tune("ct-sparse-view", "fast", prior=tiny_prior, cases_dir=str(ct_files), log=lambda *_: None)


def test_tune_maximises_psnr_on_request_and_records_it(ct_files, tiny_prior, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from scorerecon.data.measurement import read_measurement
    cases = [read_measurement(ct_files / "sparse.h5")]
    prior = score.resolve_prior(tiny_prior, "ct")
    settings = tuning.trial_settings({}, 2)
    psnr = tuning.score_settings(cases, "fast", settings, prior, 0, "psnr")
    assert psnr == pytest.approx(reconstruct(cases[0], "fast", prior=prior, seed=0, progress=False,
                                             **settings).metrics(cases[0])["psnr"])
    _tune_with_mock_scores(monkeypatch, ct_files, tiny_prior, tmp_path, steps=3, objective="psnr")
    tuned = json.loads((tmp_path / "presets" / "ct-sparse-view.json").read_text())["tuned"]["fast"]
    assert (tuned["objective"], tuned["psnr"], tuned["psnr_before"]) == ("psnr", 0.9, 0.5)
    with pytest.raises(UserError, match="unknown objective 'mse'"):
        tuning.tune(cases, "fast", prior, trials=1, objective="mse")


def test_tune_at_a_step_count_saves_it_with_the_settings(ct_files, tiny_prior, tmp_path, monkeypatch):
    """A preset tuned at N steps makes reconstruct use N steps by default (the tuned setting); the
    calibrated std_scale of the preset before, fitted to the settings replaced, is not carried over."""
    tuning.save_preset("ct-sparse-view", "fast", {"start_sigma": 0.05, "std_scale": 1.6}, {"std_calibration": {}},
                       tmp_path / "presets")
    saved, trials = _tune_with_mock_scores(monkeypatch, ct_files, tiny_prior, tmp_path, steps=3)
    assert saved["steps"] == 3 and all(t["steps"] == 3 for t in trials) and "std_scale" not in saved
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    assert score.settings_for("fast", "ct-sparse-view", {"steps": None})["steps"] == 3


def test_tune_of_the_fast_sampler_searches_its_steps_within_the_evaluation_budget(
        ct_files, tiny_prior, tmp_path, monkeypatch):
    """Without --steps every fast trial draws its steps (at most 50 network evaluations) beside
    its K samples; the preset stores both, and reconstruct then uses them by default."""
    saved, trials = _tune_with_mock_scores(monkeypatch, ct_files, tiny_prior, tmp_path, steps=None)
    assert trials and all(4 <= t["steps"] <= tuning.FAST_EVALUATIONS for t in trials)
    monkeypatch.setenv("SCORERECON_PRESETS", str(tmp_path / "presets"))
    chosen = score.settings_for("fast", "ct-sparse-view", {"samples": None})
    assert (chosen["samples"], chosen["steps"]) == (saved["samples"], saved["steps"])
    assert score.settings_for("fast", "ct-sparse-view", {"samples": 1})["samples"] == 1


def test_calibrate_std_saves_the_scale_that_covers_68_percent_beside_the_preset(
        ct_files, tiny_prior, tmp_path, monkeypatch):
    """--calibrate-std keeps the preset's settings and its provenance, adds std_scale; reconstruct
    then multiplies the samples' std by it (the image unchanged), and on the calibration case
    |error| ≤ std holds on 68 % of the pixels."""
    from scorerecon.data.measurement import read_measurement
    cases, presets = tmp_path / "cases", tmp_path / "presets"
    cases.mkdir()
    (cases / "sparse.h5").write_bytes((ct_files / "sparse.h5").read_bytes())
    settings = {"steps": 3, "samples": 3, "start_sigma": 0.1}
    tuning.save_preset("ct-sparse-view", "fast", settings, {"trials": 5}, presets)
    monkeypatch.setenv("SCORERECON_PRESETS", str(presets))
    path = tuning.run_calibrate_std("ct-sparse-view", "fast", prior=tiny_prior, cases_dir=str(cases),
                                    output=str(presets), log=lambda *_: None)
    preset = json.loads(path.read_text())
    fast, tuned = preset["methods"]["fast"], preset["tuned"]["fast"]
    assert {k: fast[k] for k in settings} == settings and fast["std_scale"] > 0 and tuned["trials"] == 5
    assert tuned["std_calibration"]["after"]["within_1std"] == pytest.approx(0.6827, abs=0.002)
    meas = read_measurement(cases / "sparse.h5")
    raw = reconstruct(meas, "fast", prior=tiny_prior, progress=False, std_scale=1.0)
    scaled = reconstruct(meas, "fast", prior=tiny_prior, progress=False)
    np.testing.assert_array_equal(scaled.image, raw.image)
    np.testing.assert_allclose(scaled.std, fast["std_scale"] * raw.std, rtol=1e-5)
    assert scaled.info["std_scale"] == fast["std_scale"]
    covered = np.mean(np.abs(scaled.image - meas.truth) <= scaled.std)
    assert covered == pytest.approx(0.6827, abs=0.01)
    other_k = reconstruct(meas, "fast", prior=tiny_prior, progress=False, samples=2)
    # fitted at the preset's K = 3, carried to 2 (the spread of 2 samples is narrower)
    from scorerecon.evaluation.metrics import std_scale_at_samples
    assert other_k.info["std_scale"] == pytest.approx(std_scale_at_samples(fast["std_scale"], 3, 2))
    unscaled = reconstruct(meas, "fast", prior=tiny_prior, progress=False, samples=2, std_scale=1.0).std
    np.testing.assert_allclose(other_k.std, other_k.info["std_scale"] * unscaled, rtol=1e-5)
    explicit = reconstruct(meas, "fast", prior=tiny_prior, progress=False, samples=2, std_scale=2.0)
    np.testing.assert_allclose(explicit.std, 2.0 * unscaled, rtol=1e-5)
    with pytest.raises(UserError, match="song's preset for ct-sparse-view draws one posterior sample"):
        tuning.calibrate_std([meas], "song", score.resolve_prior(tiny_prior, "ct"))
    with pytest.raises(UserError, match="std_scale must be positive"):
        reconstruct(meas, "fast", prior=tiny_prior, progress=False, std_scale=0.0)


def test_calibrate_std_into_a_folder_fits_the_settings_stored_there(ct_files, tiny_prior, tmp_path, monkeypatch):
    """With -o naming a folder whose preset has the method, --calibrate-std fits the scale to that
    preset's settings and keeps them, though another preset is in effect: the same scale as when
    that folder's preset is the one in effect (a setting it lacks takes the method's default, not
    the other preset's), and the in-effect preset left as it was."""
    cases, folder, in_effect = tmp_path / "cases", tmp_path / "experiment", tmp_path / "presets"
    cases.mkdir()
    (cases / "sparse.h5").write_bytes((ct_files / "sparse.h5").read_bytes())
    experiment = {"steps": 3, "samples": 3, "start_sigma": 0.1}
    tuning.save_preset("ct-sparse-view", "fast", experiment, {"trials": 7}, folder)
    tuning.save_preset("ct-sparse-view", "fast", {"steps": 2, "samples": 2, "start_sigma": 0.3, "zeta": 3.0}, {},
                       in_effect)
    path = tuning.run_calibrate_std("ct-sparse-view", "fast", prior=tiny_prior, cases_dir=str(cases),
                                    output=str(folder), log=lambda *_: None)
    saved = json.loads(path.read_text())
    fast = saved["methods"]["fast"]
    assert {k: fast[k] for k in experiment} == experiment and "zeta" not in fast
    assert saved["tuned"]["fast"]["trials"] == 7
    assert json.loads((in_effect / "ct-sparse-view.json").read_text())["methods"]["fast"]["steps"] == 2
    monkeypatch.setattr(tuning, "preset_dirs", lambda: [folder])
    fitted_in_effect = tuning.calibrate_std(tuning.read_cases(cases), "fast", score.resolve_prior(tiny_prior, "ct"))
    assert fast["std_scale"] == round(fitted_in_effect["std_scale"], 4)


def test_tune_starts_from_the_given_settings(ct_files, tiny_prior, monkeypatch):
    """The first trial runs ``start`` (the current preset in run_tune); settings outside the
    search space are drawn by TPE instead."""
    pytest.importorskip("optuna")
    runs = []

    def score_settings(cases, method, settings, prior, seed, objective="ssim"):
        runs.append(settings)
        return 0.5
    monkeypatch.setattr(tuning, "score_settings", score_settings)
    start = {"eta": 0.3, "cg_iterations": 4, "gamma": 0.01, "start_sigma": 5.0, "samples": 2, "steps": 7}
    tuning.tune([], "fast", tiny_prior, trials=2, start=start)
    first = runs[0]
    assert {k: first[k] for k in ("eta", "cg_iterations", "gamma", "samples")} == {
        "eta": 0.3, "cg_iterations": 4, "gamma": 0.01, "samples": 2}
    assert first["start_sigma"] <= 1.0 and first["steps"] == 7


def test_tune_does_not_rerun_the_current_preset(ct_files, tiny_prior, tmp_path, monkeypatch):
    """A preset inside the search space, scored as the baseline, enters the search as a finished
    trial: every one of the requested trials runs a new setting."""
    preset = {"eta": 0.5, "cg_iterations": 3, "gamma": 0.01, "start_sigma": 0.2, "samples": 2, "steps": 25}
    tuning.save_preset("ct-sparse-view", "fast", preset, {}, tmp_path / "presets")  # the tests' preset folder
    _, trials = _tune_with_mock_scores(monkeypatch, ct_files, tiny_prior, tmp_path, steps=None)
    assert len(trials) == 2
    # each trial also carries the settings the preset leaves out (zeta): compare on the preset's own
    assert all({k: trial[k] for k in preset} != preset for trial in trials)


def test_cli_tune_refuses_cases_of_another_task(ct_files, tiny_prior, tmp_path):
    code = main(["tune", "mri-single", "--cases", str(ct_files), "--prior", tiny_prior, "--trials", "1"])
    assert code == 2


def _gaussian_ct_case():
    """16² Gaussian prior (smooth covariance), CT with 6 of 60 parallel views, noise-free: the
    measurement, the prior, the truth, the exact posterior mean and the bound 2.2 × its mean std.

    A is read off the CT operator column by column, so the exact posterior is known."""
    from scorerecon.data.intensity import unit_to_hu
    from scorerecon.simulate.ct import simulate_ct
    n = 16
    idx = torch.arange(n * n)
    r, c = idx // n, idx % n
    cov = 0.01 * torch.exp(-((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).double() / 8.0)
    prior = GaussianPrior(torch.full((n * n,), 0.35), cov + 1e-4 * torch.eye(n * n), VESDE(0.01, 10.0, N=100),
                          image_shape=(1, n, n))
    truth = prior.sample(1, torch.Generator().manual_seed(3))[0, 0].numpy()
    meas = simulate_ct(unit_to_hu(truth), views=6, full_views=60)
    problem, _, _ = score.ct_problem(meas, prior, torch.device("cpu"))
    a = problem.forward(torch.eye(n * n).reshape(-1, 1, n, n)).reshape(n * n, -1).T.double()
    keep = problem.operator.mask.reshape(-1).bool()
    post_mean, post_cov = prior.posterior(a[keep], problem.y.reshape(-1).double()[keep], 1e-3)
    return meas, prior, truth, post_mean.reshape(n, n).numpy(), 2.2 * float(post_cov.diagonal().sqrt().mean())


def test_ct_samplers_approach_the_exact_posterior_mean_through_the_real_ct_operator():
    """The means of 32 samples land within ~2 posterior std of the exact posterior mean (measured
    RMS distance at the default N = 100: fast 0.026, chung 0.018, song (λ = 0.841) 0.017; mean
    posterior std 0.015; FBP 0.12, 3.4 times the bound)."""
    from scorerecon.data.intensity import hu_to_unit
    meas, prior, truth, post_mean, limit = _gaussian_ct_case()
    fbp = reconstruct(meas, "fbp").unit_image
    assert np.sqrt(np.mean((fbp - post_mean) ** 2)) > 3 * limit
    for method in ("fast", "chung", "song"):
        out = reconstruct(meas, method, prior=prior, samples=32, progress=False)
        distance = float(np.sqrt(np.mean((out.unit_image - post_mean) ** 2)))
        assert distance < limit, (method, distance, limit)
    assert np.allclose(hu_to_unit(meas.truth), truth, atol=1e-3)


def test_langevin_on_ct_follows_the_exact_likelihood_of_the_denoised_estimate():
    """Annealed Langevin (Jalal et al.) through the CT operator, 1000 levels.  Its likelihood
    gradient solves with the covariance γ² I + s² A A^H by CG (``likelihood_score``); the single
    variance γ² + L s² it had used before barely fits the weak directions of CT's A A^H (here its
    eigenvalues span 2.5e-7 to 93), and its mean missed the bound (RMS distance 0.041 against
    0.034); with the CG solve 0.021 (measured)."""
    meas, prior, _, post_mean, limit = _gaussian_ct_case()
    out = reconstruct(meas, "langevin", prior=prior, samples=32, steps=1000, progress=False)
    distance = float(np.sqrt(np.mean((out.unit_image - post_mean) ** 2)))
    assert distance < limit, (distance, limit)


@pytest.mark.parametrize("operator", ["single-coil", "sense", "coil-phase, real images"])
def test_likelihood_score_is_the_gradient_of_the_whole_gaussian_likelihood(operator, monkeypatch):
    """``likelihood_score`` against the dense (1/α)(γ² I + s² G)⁻¹ A^H (y − A x̂) of Jalal et al.,
    G = A^H A on complex images, Re(A^H A) (and Re A^H) on real ones: single-coil MRI by its one
    variance (A A^H is the mask), SENSE and a phase-rotated operator on real images by CG, given
    CG steps enough to converge on 16 unknowns."""
    monkeypatch.setattr(samplers, "PROJECTION_ITERATIONS", 64)
    meas = _mri_measurement(coils=3 if operator == "sense" else 1)
    mask = torch.from_numpy(meas.mask).float()
    rotation = torch.exp(1j * torch.rand(H, W, generator=torch.Generator().manual_seed(2)))
    op = {"single-coil": lambda: SingleCoilMRI(mask),
          "sense": lambda: SenseMRI(torch.from_numpy(meas.extras["sensitivity_maps"]), mask),
          "coil-phase, real images": lambda: CoilPhaseMRI(mask, rotation.to(torch.complex64)[None])}[operator]()
    complex_image = operator != "coil-phase, real images"
    problem = InverseProblem(op, torch.from_numpy(meas.data)[None], (H, W), complex_image=complex_image)
    sde, t, gamma = VPSDE(), 0.3, 0.05
    state = torch.randn(problem.state_shape(1), generator=torch.Generator().manual_seed(1))
    norm = 1.0  # ‖A^H A‖ for unitary F, normalised maps and a unit-modulus rotation
    got = problem.to_image(samplers.likelihood_score(problem, sde, state, t, gamma, norm)).reshape(-1)

    a, s2 = float(sde.alpha(t)), float(sde.beta(t) / sde.alpha(t)) ** 2
    dense = op(torch.eye(H * W, dtype=torch.complex64).reshape(-1, 1, H, W)).reshape(H * W, -1).T
    dense, y = dense.to(torch.complex128), problem.y.reshape(-1).to(torch.complex128)
    estimate = (problem.to_image(state) / a).reshape(-1).to(torch.complex128)
    gram, data_term = dense.conj().T @ dense, dense.conj().T @ (y - dense @ estimate)
    if not complex_image:
        gram, data_term = gram.real, data_term.real
    exact = torch.linalg.solve(gamma ** 2 * torch.eye(H * W, dtype=gram.dtype) + s2 * gram, data_term) / a
    got = got.to(exact.dtype)
    assert torch.allclose(got, exact, rtol=1e-3, atol=1e-3 * float(exact.abs().max()))


def test_on_a_scaled_mask_the_cg_likelihood_gradient_is_the_one_variance_one(monkeypatch):
    """Single-coil MRI on complex images: the CG solve of ``likelihood_score``, forced on with its
    default iterations, lands on the one-variance shortcut A^H (y − A x̂)/(α (γ² + L s²)): its first
    residual lies in one eigenspace of A^H A, so one CG step is exact."""
    meas = _mri_measurement()
    problem = InverseProblem(SingleCoilMRI(torch.from_numpy(meas.mask).float()), torch.from_numpy(meas.data)[None],
                             (H, W), complex_image=True)
    state = torch.randn(problem.state_shape(2), generator=torch.Generator().manual_seed(1))
    shortcut = samplers.likelihood_score(problem, VPSDE(), state, 0.3, 0.05, 1.0)
    monkeypatch.setattr(SingleCoilMRI, "gram_is_scaled_mask", False)
    solved = samplers.likelihood_score(problem, VPSDE(), state, 0.3, 0.05, 1.0)
    assert torch.allclose(solved, shortcut, rtol=1e-5, atol=1e-5 * float(shortcut.abs().max()))


def test_validation_picks_share_slices_over_stacks_and_skip_their_edges():
    """Two stacks of five slices: one pick each at the stack's centre; an odd count gives the
    extra pick to the first stack; never a stack's first or last slice; never more than a stack holds."""
    sources = [f"vol.nii:{plane}:{k}" for plane in ("axial", "sagittal") for k in range(0, 10, 2)]
    assert tuning.validation_picks(sources, 1) == [2]
    assert tuning.validation_picks(sources, 2) == [2, 7]
    assert tuning.validation_picks(sources, 3) == [1, 3, 7]
    assert tuning.validation_picks(sources, 4) == [1, 3, 6, 8]
    assert tuning.validation_picks(sources, 20) == list(range(10))
    one_stack = [f"ct:axial:{k}" for k in range(48)]
    assert tuning.validation_picks(one_stack, 2) == [12, 36]


def test_validation_cases_record_their_slice(tmp_path):
    """Simulated validation cases say which val slice they are (the preset's provenance lists them)."""
    import numpy as np
    folder = tmp_path / "brain-mri"
    folder.mkdir()
    np.save(folder / "val.npy", np.random.default_rng(0).random((4, 32, 32), dtype=np.float32))
    slices = [{"source": f"t.nii:{p}:{k}", "spacing_mm": [1.0, 1.0]} for p in ("axial", "coronal") for k in (0, 2)]
    (folder / "meta.json").write_text(json.dumps({"slices": {"val": slices}}))
    cases = tuning.validation_cases("mri-single", 2, dataset_dir=folder)
    assert [c.attrs["validation_slice"] for c in cases] == ["t.nii:axial:2", "t.nii:coronal:2"]
    assert all(c.truth.shape == (32, 32) for c in cases)


def test_cases_read_from_a_folder_are_named_by_their_file(ct_files, tmp_path):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "sparse.h5").write_bytes((ct_files / "sparse.h5").read_bytes())
    assert [c.attrs["validation_slice"] for c in tuning.read_cases(cases)] == ["sparse.h5"]
