"""CT operator: adjointness, agreement with scikit-image, FBP, masks, caching, bad input."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.data import shepp_logan_phantom
from skimage.transform import iradon, radon, resize

from scorerecon.data.intensity import ct_line_integral_scale
from scorerecon.data.measurement import Measurement, read_measurement, write_measurement
from scorerecon.errors import UserError
from scorerecon.operators import ct
from scorerecon.operators import ct_projector as proj
from scorerecon.operators.ct import (
    FILTERS,
    CTGeometry,
    CTOperator,
    combine_masks,
    ct_operator_from_measurement,
    fbp,
    limited_angle_mask,
    metal_trace_mask,
    sinogram_to_physical,
    sinogram_to_unit,
    view_mask,
)


def phantom(n: int, sigma: float = 0.0) -> np.ndarray:
    img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
    return gaussian_filter(img, sigma) if sigma else img


def as_batch(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None]


GEOMETRIES = {
    "parallel": lambda n: CTGeometry.parallel((n, n + 4), n_views=30),
    "fan-flat": lambda n: CTGeometry.fan((n, n + 4), n_views=40),
    "fan-curved": lambda n: CTGeometry.fan((n, n + 4), n_views=40, detector_shape="curved"),
}


# ------------------------------------------------------------------------------ adjoint
@pytest.mark.parametrize("name", GEOMETRIES)
def test_adjoint_identity(name):
    """<A x, y> = <x, A^T y> for random x, y, with a sparse-view and metal mask."""
    g = GEOMETRIES[name](32)
    metal = np.zeros(g.image_shape, bool)
    metal[10:13, 20:22] = True
    op = CTOperator(g, combine_masks(g, view_mask(g.n_views, k=9), metal_trace_mask(g, metal)))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, *g.image_shape, generator=gen)
    y = torch.randn(2, 1, *g.sinogram_shape, generator=gen)
    lhs = (op(x).double() * y.double()).sum()
    rhs = (x.double() * op.adjoint(y).double()).sum()
    assert float(abs(lhs - rhs) / abs(lhs)) < 1e-5
    assert op.measured_fraction < 9 / g.n_views


def test_operators_return_the_input_floating_dtype():
    g = GEOMETRIES["parallel"](16)
    op = CTOperator(g, view_mask(g.n_views, k=9))
    x = torch.rand(1, 1, *g.image_shape, dtype=torch.float64)
    y = torch.rand(1, 1, *g.sinogram_shape, dtype=torch.float64)
    for result, single in ((op(x), op(x.float())), (op.adjoint(y), op.adjoint(y.float())),
                           (op.fbp(y), op.fbp(y.float())), (op.transform_adjoint(y), op.transform_adjoint(y.float()))):
        assert result.dtype == torch.float64 and single.dtype == torch.float32
        torch.testing.assert_close(result.float(), single)
    assert op.transform(torch.ones(1, 1, *g.image_shape, dtype=torch.int64)).dtype == torch.float32


def test_transpose_is_exact_and_batched():
    g = GEOMETRIES["fan-curved"](24)
    op = CTOperator(g)
    dense = op.matrix.to_dense()
    assert torch.equal(op.matrix_t.to_dense(), dense.T)
    x = torch.rand(3, 2, *g.image_shape)
    batched = op.transform(x)
    single = op.transform(x[1:2, 1:2])
    assert torch.allclose(batched[1:2, 1:2], single, atol=1e-5)
    assert torch.allclose(batched[1, 1].reshape(-1), dense @ x[1, 1].reshape(-1), atol=1e-4)


def test_constant_image_projects_to_chord_lengths():
    """Joseph's method is exact for a constant image: the projection is the chord length."""
    n = 40
    g = CTGeometry.parallel((n, n), n_views=12, n_detectors=21)
    sino = CTOperator(g).transform(torch.ones(1, 1, n, n))[0, 0].numpy()
    # rays through the middle cross the square over a length n / max(|cos|, |sin|)
    expected = n / np.maximum(np.abs(np.cos(g.angles)), np.abs(np.sin(g.angles)))
    assert np.allclose(sino[:, 10], expected, rtol=1e-4)


# ------------------------------------------------------------------------ vs skimage
def test_forward_agrees_with_skimage_radon():
    n = 65  # odd: scikit-image's centre n // 2 equals the geometric centre (n - 1) / 2
    img = phantom(n)
    g = CTGeometry.parallel((n, n), n_views=60, n_detectors=n)
    ours = CTOperator(g).transform(as_batch(img))[0, 0].numpy()
    ref = radon(img, np.degrees(g.angles), circle=True).T
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 0.01


@pytest.mark.parametrize("name", FILTERS)
def test_fbp_agrees_with_skimage_iradon(name):
    n = 65
    g = CTGeometry.parallel((n, n), n_views=60, n_detectors=n)
    sino = radon(phantom(n), np.degrees(g.angles), circle=True)
    ours = fbp(g, as_batch(sino.T), filter=name)[0, 0].numpy()
    ref = iradon(sino, np.degrees(g.angles), circle=True, filter_name=name)
    yy, xx = np.mgrid[:n, :n] - n // 2
    inside = xx ** 2 + yy ** 2 <= (n // 2) ** 2
    assert np.linalg.norm((ours - ref)[inside]) / np.linalg.norm(ref[inside]) < 1e-5


@pytest.mark.parametrize("geometry", [
    lambda n: CTGeometry.parallel((n, n), 180),
    lambda n: CTGeometry.parallel((n, n), 360, angular_range=2 * np.pi),
    lambda n: CTGeometry.fan((n, n), 360),
    lambda n: CTGeometry.fan((n, n), 360, detector_shape="curved"),
    lambda n: CTGeometry.fan((n, n), 360, source_origin=60.0, source_detector=150.0, detector_shape="curved"),
], ids=["parallel", "parallel-2pi", "fan-flat", "fan-curved", "fan-wide"])
def test_fbp_recovers_smooth_phantom(geometry):
    """FBP of the full sinogram recovers the image (fan beam as well as parallel beam)."""
    n = 64
    img = phantom(n, sigma=1.5)
    op = CTOperator(geometry(n))
    recon = op.transform_inverse(op.transform(as_batch(img)))[0, 0].numpy()
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    inside = xx ** 2 + yy ** 2 <= (n / 2 - 2) ** 2
    assert np.linalg.norm((recon - img)[inside]) / np.linalg.norm(img[inside]) < 0.03


def test_fbp_rejects_short_fan_scan():
    g = CTGeometry.fan((16, 16), 40)
    short = CTGeometry.from_dict({**g.to_dict(), "angles": g.angles[:20]})
    with pytest.raises(UserError, match="full 2π"):
        fbp(short, torch.zeros(1, 1, *short.sinogram_shape))


# --------------------------------------------------------------------------- autograd
def test_backward_is_the_adjoint():
    g = GEOMETRIES["fan-flat"](20)
    op = CTOperator(g, view_mask(g.n_views, k=7))
    x = torch.rand(2, 1, *g.image_shape, requires_grad=True)
    y = torch.randn(2, 1, *g.sinogram_shape)
    (op(x) * y).sum().backward()
    assert torch.allclose(x.grad, op.adjoint(y), atol=1e-5)
    y.requires_grad_(True)
    (op.adjoint(y) * x.detach()).sum().backward()
    assert torch.allclose(y.grad, op(x.detach()), atol=1e-5)


def test_second_derivative_through_normal_operator():
    """d/dx of ||A^T A x||² / 2 = (A^T A)² x: the backward is itself differentiable."""
    op = CTOperator(GEOMETRIES["parallel"](16))
    x = torch.rand(1, 1, *op.geometry.image_shape, requires_grad=True)
    (grad,) = torch.autograd.grad(0.5 * (op.normal(x) ** 2).sum(), x, create_graph=True)
    assert torch.allclose(grad, op.normal(op.normal(x)), rtol=1e-4, atol=1e-3)


def test_module_to_moves_the_matrices():
    op = CTOperator(GEOMETRIES["parallel"](16)).to(torch.device("cpu"))
    assert op.matrix.layout == torch.sparse_csr and op.matrix.crow_indices().dtype == torch.int32
    if torch.cuda.is_available():
        gpu = op.to("cuda")
        x = torch.rand(1, 1, *op.geometry.image_shape, device="cuda")
        assert gpu(x).device.type == "cuda" and gpu.fbp(gpu(x)).device.type == "cuda"


# ------------------------------------------------------------------------------ masks
def test_view_mask():
    assert view_mask(320, k=23).sum() == 23
    assert np.flatnonzero(view_mask(10, k=4)).tolist() == [0, 3, 6, 9]
    assert np.flatnonzero(view_mask(10, k=1)).tolist() == [0]
    assert view_mask(10, k=10).all()
    assert np.flatnonzero(view_mask(10, indices=[2, 5])).tolist() == [2, 5]
    assert view_mask(5, k=2).dtype == np.float32
    for bad in (dict(k=0), dict(k=11), dict(indices=[]), dict(indices=[10]), dict(), dict(k=2, indices=[1])):
        with pytest.raises(UserError):
            view_mask(10, **bad)


def test_view_mask_on_a_full_circle_spaces_the_views_around_it():
    # 0° and 359° are one step apart on a circle: a half-turn spacing would waste a view there
    half_turn, circle = (np.flatnonzero(view_mask(360, k=23, full_circle=c)) for c in (False, True))
    assert half_turn[0] == 0 and half_turn[-1] == 359
    circular_gaps = np.diff(np.append(circle, circle[0] + 360))
    assert len(circle) == 23 and circular_gaps.min() >= 15 and circular_gaps.max() <= 16
    assert np.flatnonzero(view_mask(12, k=4, full_circle=True)).tolist() == [0, 3, 6, 9]
    assert view_mask(10, k=10, full_circle=True).all()


def test_limited_angle_mask():
    g = CTGeometry.parallel((16, 16), n_views=180)
    mask = limited_angle_mask(g, 90)
    assert mask.sum() == 90 and mask.shape == (180,)
    kept = np.degrees(g.angles[mask > 0])
    assert kept.min() == 0 and kept.max() < 90
    shifted = np.degrees(g.angles[limited_angle_mask(g, 60, start_degrees=150) > 0])
    assert len(shifted) == 60 and set(np.round(shifted)) == set(range(150, 180)) | set(range(0, 30))
    for bad in (0, -5, 180, 400):
        with pytest.raises(UserError):
            limited_angle_mask(g, bad)
    # a start angle that degrees() computes a hair low (30° as 29.999…) keeps its own view
    for start in (0, 30, 60, 90, 110):
        kept = np.nonzero(limited_angle_mask(g, 120, start_degrees=start))[0]
        assert len(kept) == 120 and start in kept and (start - 1) % 180 not in kept


def test_a_mask_of_detector_bins_that_broadcasts_over_the_views_is_a_ct_problem():
    """A (1, D) mask (dead detector bins in every view) is a valid measurement mask."""
    from scorerecon.solvers.classical_ct import ct_problem
    g = CTGeometry.parallel((16, 16), n_views=20)
    op = CTOperator(g)
    sinogram = op.transform(torch.ones(1, 1, 16, 16)).numpy()[0, 0]
    dead = np.ones((1, g.n_detectors), np.float32)
    dead[0, 5] = 0
    meas = Measurement(modality="ct", data=sinogram, mask=dead, geometry=g.to_dict(), attrs={"units": "unit"})
    assert ct_problem(meas.validate()).acquired.all()


def test_metal_trace_hits_exactly_the_bins_through_the_metal():
    n = 48
    g = CTGeometry.parallel((n, n), n_views=36, n_detectors=69)
    centre, radius = np.array([8.0, -5.0]), 3.0  # (x, y) in pixels, y up
    xs, ys = proj.pixel_centres(g.image_shape)
    metal = (xs[None, :] - centre[0]) ** 2 + (ys[:, None] - centre[1]) ** 2 <= radius ** 2
    keep = metal_trace_mask(g, metal)
    s = g.detector_positions()[None, :]
    s0 = centre[0] * np.cos(g.angles)[:, None] + centre[1] * np.sin(g.angles)[:, None]
    assert np.all(keep[np.abs(s - s0) <= radius - 0.5] == 0)   # rays through the metal: removed
    assert np.all(keep[np.abs(s - s0) >= radius + 1.5] == 1)   # rays clear of it: kept
    assert keep.shape == g.sinogram_shape and keep.dtype == np.float32


def test_metal_trace_of_one_pixel_matches_the_projector_footprint():
    g = CTGeometry.fan((20, 20), n_views=24)
    metal = np.zeros(g.image_shape, bool)
    metal[7, 12] = True
    column = CTOperator(g).matrix.to_dense()[:, 7 * 20 + 12].reshape(g.sinogram_shape).numpy()
    assert np.array_equal(metal_trace_mask(g, metal) == 0, column > 0)


def test_metal_trace_bad_input():
    g = CTGeometry.parallel((16, 16), 10)
    with pytest.raises(UserError, match="empty"):
        metal_trace_mask(g, np.zeros((16, 16), bool))
    with pytest.raises(UserError, match="does not match"):
        metal_trace_mask(g, np.ones((8, 8), bool))
    narrow = CTGeometry.parallel((16, 16), 10, n_detectors=12)  # every ray crosses the image
    with pytest.raises(UserError, match="whole sinogram"):
        metal_trace_mask(narrow, np.ones((16, 16), bool))


def test_combine_masks():
    g = CTGeometry.parallel((16, 16), n_views=20)
    metal = np.zeros(g.image_shape, bool)
    metal[3, 4] = True
    views, trace = view_mask(20, k=5), metal_trace_mask(g, metal)
    both = combine_masks(g, views, trace)
    assert both.shape == g.sinogram_shape
    assert np.array_equal(both, views[:, None] * trace)
    assert combine_masks(g).all()
    with pytest.raises(UserError, match="fits neither"):
        combine_masks(g, np.ones(7))
    with pytest.raises(UserError, match="keeps no measurement"):
        combine_masks(g, view_mask(20, indices=[0]), view_mask(20, indices=[1]))


# ---------------------------------------------------------------------- geometry, cache
def test_geometry_round_trip_and_key():
    for g in (CTGeometry.parallel((30, 20), 17, pixel_size=0.7), CTGeometry.fan((30, 30), 36, detector_shape="curved")):
        back = CTGeometry.from_dict(g.to_dict())
        assert back == g and back.cache_key() == g.cache_key()
        assert back.angles.dtype == np.float64 and back.image_shape == g.image_shape
    a, b = CTGeometry.parallel((16, 16), 10), CTGeometry.parallel((16, 16), 11)
    assert a.cache_key() != b.cache_key()
    assert a.cache_key() == CTGeometry.parallel((16, 16), 10).cache_key()


def test_fan_defaults_cover_the_image():
    g = CTGeometry.fan((64, 64))
    assert g.n_views == 360 and np.isclose(g.angles[-1] + g.angles[1], 2 * np.pi)
    sino = CTOperator(g).transform(torch.ones(1, 1, 64, 64))[0, 0]
    assert torch.all(sino[:, 0] == 0) and torch.all(sino[:, -1] == 0)  # outermost bins miss the image


@pytest.mark.parametrize("field", ["kind", "angles", "n_detectors", "pixel_size", "source_origin"])
def test_geometry_missing_field(field):
    d = CTGeometry.fan((16, 16), 8).to_dict()
    del d[field]
    with pytest.raises(UserError, match="lacks" if field != "kind" else "lacks|unknown"):
        CTGeometry.from_dict(d)


def test_constructors_refuse_what_they_compute_with_and_matrices_past_int32():
    """A zero or infinite pixel size and a 3-D shape were numpy errors inside the constructors;
    matrices past 2^31 entries would have wrapped their int32 indices (refused before building)."""
    for kwargs, message in ((dict(pixel_size=0), "pixel size"), (dict(pixel_size=np.inf), "pixel size")):
        for make in (CTGeometry.parallel, CTGeometry.fan):
            with pytest.raises(UserError, match=message):
                make((16, 16), 8, **kwargs)
    with pytest.raises(UserError, match=r"image shape \(4, 16, 16\) is invalid"):
        CTGeometry.parallel((4, 16, 16), 8)
    with pytest.raises(UserError, match="1024x1024 image with 1100 views needs CT system matrices of about 2.3e"):
        CTGeometry.parallel((1024, 1024), 1100)  # refused as a geometry, before any matrix is built


@pytest.mark.parametrize("change", [
    {"kind": "cone"}, {"n_detectors": "many"}, {"pixel_size": -1.0}, {"image_shape": [16]},
    {"detector_shape": "round"}, {"source_origin": 5.0}, {"source_detector": 20.0}, {"angles": []},
])
def test_geometry_invalid_field(change):
    d = {**CTGeometry.fan((16, 16), 8).to_dict(), **change}
    with pytest.raises(UserError):
        CTGeometry.from_dict(d)


def test_disk_cache_round_trip_and_corruption(tmp_path, monkeypatch):
    monkeypatch.setenv("SCORERECON_CACHE", str(tmp_path))
    g = CTGeometry.fan((18, 18), 12)
    ct.system_matrices.cache_clear()
    first = ct.system_matrices(g)[0].to_dense()
    files = sorted(p.name for p in (tmp_path / "ct").iterdir())
    assert files == [f"{g.cache_key()}-adjoint.pt", f"{g.cache_key()}-forward.pt"]
    assert ct.system_matrices(g)[0] is ct.system_matrices(g)[0]  # in-process LRU
    ct.system_matrices.cache_clear()
    assert torch.equal(ct.system_matrices(g)[0].to_dense(), first)  # loaded from disk
    (tmp_path / "ct" / f"{g.cache_key()}-forward.pt").write_bytes(b"garbage")
    ct.system_matrices.cache_clear()
    assert torch.equal(ct.system_matrices(g)[0].to_dense(), first)  # rebuilt
    assert proj._load(tmp_path / "ct" / f"{g.cache_key()}-forward.pt", tuple(first.shape)) is not None
    ct.system_matrices.cache_clear()


# ------------------------------------------------------------------- shapes, measurement
def test_shape_mismatch_raises_user_error():
    op = CTOperator(CTGeometry.parallel((16, 16), 10))
    with pytest.raises(UserError, match="image of shape"):
        op(torch.zeros(1, 1, 16, 17))
    with pytest.raises(UserError, match="sinogram of shape"):
        op.adjoint(torch.zeros(1, 1, 10, 3))
    with pytest.raises(UserError, match="unknown FBP filter"):
        CTOperator(op.geometry, filter="butterworth")
    with pytest.raises(UserError, match="a complex image .* CT operator, which is real"):
        op(torch.zeros(1, 1, 16, 16, dtype=torch.complex64))
    with pytest.raises(UserError, match="a complex sinogram"):
        op.fbp(torch.zeros(1, 1, 10, op.geometry.n_detectors, dtype=torch.complex64))


def test_measurement_round_trip(tmp_path):
    g = CTGeometry.fan((24, 24), 30, pixel_size=0.8, detector_shape="curved")
    img = phantom(24)
    mask = combine_masks(g, view_mask(30, k=10))
    unit_sino = CTOperator(g).transform(as_batch(img))
    data = sinogram_to_physical(unit_sino[0, 0], g) * mask
    assert np.allclose(data, unit_sino[0, 0].numpy() * mask * ct_line_integral_scale(0.8), rtol=1e-6)
    path = tmp_path / "m.h5"
    write_measurement(path, Measurement("ct", data, mask.astype(np.uint8), g.to_dict(), truth=img))
    meas = read_measurement(path)
    op = ct_operator_from_measurement(meas)
    assert op.geometry == g and torch.equal(op.mask, torch.from_numpy(mask))
    y = sinogram_to_unit(meas)
    assert torch.allclose(y, op(as_batch(img)), rtol=1e-5, atol=1e-5)
    meas.data = meas.data[:, :-1]
    with pytest.raises(UserError, match="does not match its geometry"):
        ct_operator_from_measurement(meas)


def test_a_mask_of_0_and_255_and_a_view_mask_with_as_many_detectors_read_as_lambda():
    """A mask stored as 0/255 by another tool scaled the data it keeps 255-fold (FBP 87 for 0.34);
    a (V,) mask with V = D marks views, as CTOperator reads it, not detectors."""
    from scorerecon.solvers import reconstruct
    g = CTGeometry.parallel((16, 16), 24, n_detectors=24)
    views = view_mask(24, k=6)
    data = sinogram_to_physical(CTOperator(g).transform(as_batch(phantom(16)))[0, 0], g)
    binary = Measurement("ct", data * views[:, None], np.broadcast_to(views[:, None], data.shape).astype(np.uint8),
                         g.to_dict()).validate()
    scaled = Measurement("ct", binary.data, binary.mask * 255, g.to_dict()).validate()
    assert scaled.mask.max() == 1
    np.testing.assert_array_equal(reconstruct(scaled, "fbp").image, reconstruct(binary, "fbp").image)
    per_view = Measurement("ct", binary.data, views.astype(np.uint8), g.to_dict()).validate()
    assert torch.equal(ct_operator_from_measurement(per_view).mask, ct_operator_from_measurement(binary).mask)
