"""Tests of gsplat_py.cameras: COLMAP's distortion models, their inverse, undistorting images, resizing."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gsplat_py.data.undistort import (
    DISTORTION_PARAMS,
    Intrinsics,
    _distort,
    _split_coefficients,
    distort_points,
    plan_undistortion,
    undistort_points,
)

WIDTH, HEIGHT = 160, 120
FX, FY, CX, CY = 100.0, 104.0, 81.3, 58.7


def assert_near(actual, expected, atol: float) -> None:
    """|actual - expected| <= atol element-wise (numpy's check: torch.testing's imports sympy, about 1 s)."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64), rtol=0, atol=atol
    )


# Strong enough to move the image corners by 10-25 px, weak enough that every source pixel has an inverse.
DISTORTED = {
    "SIMPLE_RADIAL": ("SIMPLE_RADIAL", (-0.08,)),
    "RADIAL": ("RADIAL", (-0.12, 0.03)),
    "OPENCV": ("OPENCV", (-0.15, 0.04, 0.004, -0.003)),
    "FULL_OPENCV": ("FULL_OPENCV", (-0.12, 0.03, 0.003, -0.002, 0.01, 0.05, 0.01, 0.002)),
    "OPENCV_FISHEYE": ("OPENCV_FISHEYE", (0.05, -0.01, 0.003, -0.001)),
    "OPENCV_pincushion": ("OPENCV", (0.12, 0.02, 0.002, 0.001)),
}


def camera(case: str) -> Intrinsics:
    model, coefficients = DISTORTED[case]
    return Intrinsics(model, WIDTH, HEIGHT, FX, FY, CX, CY, coefficients)


def pixel_centres(width: int, height: int) -> torch.Tensor:
    """[height, width, 2] (x, y) of every pixel centre, COLMAP's convention."""
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)


def pinhole_unproject(intrinsics: Intrinsics, pixels: torch.Tensor) -> torch.Tensor:
    principal_point = torch.tensor([intrinsics.cx, intrinsics.cy], dtype=torch.float64)
    return (pixels - principal_point) / torch.tensor([intrinsics.fx, intrinsics.fy], dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- points


def colmap_distortion(model: str, c: tuple, u: float, v: float) -> tuple[float, float]:
    """COLMAP's formulas (src/colmap/sensor/models.h), written out one model at a time."""
    r2 = u * u + v * v
    if model == "SIMPLE_RADIAL":
        return u + u * c[0] * r2, v + v * c[0] * r2
    if model == "RADIAL":
        radial = c[0] * r2 + c[1] * r2 * r2
        return u + u * radial, v + v * radial
    if model == "OPENCV":
        k1, k2, p1, p2 = c
        radial = k1 * r2 + k2 * r2 * r2
        return (
            u + u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u),
            v + v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v),
        )
    if model == "FULL_OPENCV":
        k1, k2, p1, p2, k3, k4, k5, k6 = c
        radial = (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3) / (1 + k4 * r2 + k5 * r2**2 + k6 * r2**3)
        return (
            u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u),
            v * radial + 2 * p2 * u * v + p1 * (r2 + 2 * v * v),
        )
    assert model == "OPENCV_FISHEYE"
    r = math.sqrt(r2)
    theta = math.atan(r)
    theta_d = theta * (1 + c[0] * theta**2 + c[1] * theta**4 + c[2] * theta**6 + c[3] * theta**8)
    return u * theta_d / r, v * theta_d / r


@pytest.mark.parametrize("case", DISTORTED)
def test_distortion_is_colmaps(case):
    model, coefficients = DISTORTED[case]
    points = [(0.31, -0.22), (-0.7, 0.45), (0.05, 0.6)]
    actual = distort_points(model, coefficients, points)
    expected = [colmap_distortion(model, coefficients, u, v) for u, v in points]
    np.testing.assert_allclose(actual.numpy(), np.array(expected), atol=1e-15)


@pytest.mark.parametrize("case", DISTORTED)
def test_points_round_trip(case):
    intrinsics = camera(case)
    # Every pixel of the image (with a margin around it) -> normalised -> pixel.
    pixels = pixel_centres(WIDTH + 20, HEIGHT + 20) - 10.0
    normalized, converged = intrinsics.camera_from_image(pixels)
    assert bool(converged.all())
    assert (intrinsics.image_from_camera(normalized) - pixels).abs().max() < 1e-6
    # And normalised -> distorted -> normalised, over the image's field of view.
    points = torch.rand(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.4 - 0.7
    model, coefficients = DISTORTED[case]
    back, converged = undistort_points(model, coefficients, distort_points(model, coefficients, points))
    assert bool(converged.all())
    assert (back - points).abs().max() * FX < 1e-6


@pytest.mark.parametrize("case", DISTORTED)
def test_jacobian_matches_finite_differences(case):
    # Newton's method and the fold check use the analytic Jacobian of the distortion.
    model, coefficients = DISTORTED[case]
    terms = _split_coefficients(model, coefficients)
    u = torch.tensor([0.31, -0.7, 0.05, 0.9], dtype=torch.float64)
    v = torch.tensor([-0.22, 0.45, 0.6, -0.8], dtype=torch.float64)
    _, _, du_du, du_dv, dv_du, dv_dv = _distort(terms, u, v)
    step = 1e-6
    plus_u, minus_u = _distort(terms, u + step, v), _distort(terms, u - step, v)
    plus_v, minus_v = _distort(terms, u, v + step), _distort(terms, u, v - step)
    assert_near(du_du, (plus_u[0] - minus_u[0]) / (2 * step), atol=1e-8)
    assert_near(dv_du, (plus_u[1] - minus_u[1]) / (2 * step), atol=1e-8)
    assert_near(du_dv, (plus_v[0] - minus_v[0]) / (2 * step), atol=1e-8)
    assert_near(dv_dv, (plus_v[1] - minus_v[1]) / (2 * step), atol=1e-8)


def test_points_without_inverse_are_reported():
    # u (1 - 0.3 u^2) peaks at about 0.703: a distorted radius of 0.8 has no undistorted point.
    points, converged = undistort_points("SIMPLE_RADIAL", (-0.3,), [[0.8, 0.0], [0.5, 0.0]])
    assert converged.tolist() == [False, True]
    assert abs(colmap_distortion("SIMPLE_RADIAL", (-0.3,), points[1, 0].item(), 0.0)[0] - 0.5) < 1e-12
    # Without distortion a fisheye maps angle theta to radius theta: radius 2 > pi / 2 is behind the camera.
    points, converged = undistort_points("OPENCV_FISHEYE", (0.0, 0.0, 0.0, 0.0), [[2.0, 0.0], [1.0, 0.0]])
    assert converged.tolist() == [False, True]
    assert points[1].tolist() == pytest.approx([math.tan(1.0), 0.0], abs=1e-12)


@pytest.mark.parametrize("model", ["PINHOLE", "SIMPLE_PINHOLE"])
def test_pinhole_models_do_not_distort(model):
    intrinsics = Intrinsics(model, WIDTH, HEIGHT, FX, FY if model == "PINHOLE" else FX, CX, CY)
    points = torch.tensor([[0.3, -0.2], [-0.61, 0.43]], dtype=torch.float64)
    assert torch.equal(distort_points(model, (), points), points)
    normalized, converged = undistort_points(model, (), points)
    assert torch.equal(normalized, points) and bool(converged.all())
    pixels = intrinsics.image_from_camera(points)
    expected = points * torch.tensor([intrinsics.fx, intrinsics.fy], dtype=torch.float64) + torch.tensor(
        [CX, CY], dtype=torch.float64
    )
    assert_near(pixels, expected, atol=1e-12)
    with pytest.raises(ValueError, match="already a pinhole camera"):
        plan_undistortion(intrinsics)


def test_unsupported_models_and_wrong_coefficients_are_rejected():
    with pytest.raises(
        ValueError, match=r"unsupported camera model 'FOV'; supported: SIMPLE_PINHOLE, PINHOLE"
    ):
        Intrinsics("FOV", WIDTH, HEIGHT, FX, FY, CX, CY, (0.1,))
    with pytest.raises(ValueError, match=r"OPENCV has 4 distortion coefficients \(k1, k2, p1, p2\), got 2"):
        Intrinsics("OPENCV", WIDTH, HEIGHT, FX, FY, CX, CY, (0.1, 0.2))
    assert set(DISTORTION_PARAMS) == {
        "SIMPLE_PINHOLE",
        "PINHOLE",
        "SIMPLE_RADIAL",
        "RADIAL",
        "OPENCV",
        "FULL_OPENCV",
        "OPENCV_FISHEYE",
    }


# ----------------------------------------------------------------------------------------------- images

GRATING_PERIOD = 20.0  # pixels at the focal length


def grating(normalized: torch.Tensor) -> torch.Tensor:
    """A pattern of straight lines: sinusoids along x and y of the normalised plane (values in [7, 248])."""
    x, y = normalized.unbind(-1)
    return (
        127.5
        + 60 * torch.sin(2 * math.pi * x * FX / GRATING_PERIOD)
        + 60 * torch.sin(2 * math.pi * y * FY / GRATING_PERIOD)
    )


def to_rgb8(values: torch.Tensor) -> torch.Tensor:
    return values.round().clamp(0, 255).to(torch.uint8)[..., None].expand(-1, -1, 3).contiguous()


@pytest.mark.parametrize("case", DISTORTED)
def test_undistorted_image_shows_straight_lines(case):
    source = camera(case)
    # The distorted photo of the grating: each pixel shows the pattern at its undistorted position.
    normalized, converged = source.camera_from_image(pixel_centres(WIDTH, HEIGHT))
    assert bool(converged.all())
    photo = to_rgb8(grating(normalized))
    as_if_pinhole = grating(pinhole_unproject(source, pixel_centres(WIDTH, HEIGHT)))
    assert (photo[..., 0] - as_if_pinhole).abs().max() > 40  # the distortion is visible

    undistortion = plan_undistortion(source)
    target = undistortion.target
    result = undistortion.apply(photo)
    assert result.shape == (target.height, target.width, 3) and result.dtype == torch.uint8
    ideal = grating(pinhole_unproject(target, pixel_centres(target.width, target.height)))
    error = (result[..., 0].double() - ideal).abs()
    # Bilinear interpolation of the sinusoids (squeezed to ~12 px periods in the corners) and two roundings.
    assert error.max() < 6.0 and error.mean() < 1.0


def outside_source(source: Intrinsics, pixels: torch.Tensor) -> torch.Tensor:
    x, y = pixels.unbind(-1)
    return (x < 0.5) | (x > source.width - 0.5) | (y < 0.5) | (y > source.height - 0.5)


@pytest.mark.parametrize("case", DISTORTED)
def test_crop_samples_only_inside_the_source_and_is_tight(case):
    source = camera(case)
    undistortion = plan_undistortion(source)
    target = undistortion.target
    assert (target.model, target.fx, target.fy, target.distortion) == ("PINHOLE", FX, FY, ())
    samples = undistortion.source_pixels
    assert samples.shape == (target.height, target.width, 2) and samples.dtype == torch.float32
    # Bilinear sampling at these points reads only real pixels: no padding, no blank border.
    assert not bool(outside_source(source, samples.double()).any())
    # The map is the target's pinhole unprojection followed by the source's projection: K matches the pixels.
    centres = pixel_centres(target.width, target.height)
    expected = source.image_from_camera(pinhole_unproject(target, centres))
    assert (samples.double() - expected).abs().max() < 1e-4
    # One more row or column on any side would sample outside the source.
    xs, ys = centres[0, :, 0], centres[:, 0, 1]
    beyond = {
        "left": torch.stack(torch.meshgrid(xs[:1] - 1, ys, indexing="xy"), -1),
        "right": torch.stack(torch.meshgrid(xs[-1:] + 1, ys, indexing="xy"), -1),
        "top": torch.stack(torch.meshgrid(xs, ys[:1] - 1, indexing="xy"), -1),
        "bottom": torch.stack(torch.meshgrid(xs, ys[-1:] + 1, indexing="xy"), -1),
    }
    for side, pixels in beyond.items():
        samples = source.image_from_camera(pinhole_unproject(target, pixels))
        assert bool(outside_source(source, samples).any()), side


def test_crop_stops_where_the_distortion_folds():
    # u (1 - 0.25 u^2) only grows up to u = 1 / sqrt(0.75): the source's left and right edges lie beyond,
    # where no undistorted point maps, and pixels further out would map back inside the image.
    source = Intrinsics("SIMPLE_RADIAL", WIDTH, HEIGHT, FX, FX, CX, CY, (-0.25,))
    _, converged = source.camera_from_image([[0.5, CY], [WIDTH - 0.5, CY]])
    assert not bool(converged.any())
    undistortion = plan_undistortion(source)
    target = undistortion.target
    assert not bool(outside_source(source, undistortion.source_pixels.double()).any())
    radii = pinhole_unproject(target, pixel_centres(target.width, target.height)).norm(dim=-1)
    assert radii.max() < 1 / math.sqrt(0.75)
    assert target.width > WIDTH  # barrel distortion: the undistorted image is wider than the source


def test_wide_fisheye_is_bounded_and_valid():
    # At this focal length the image corners are more than 90 degrees off axis: no pinhole image holds
    # them, so the output stops at max_scale times the source's half-extent from the principal point.
    source = Intrinsics("OPENCV_FISHEYE", WIDTH, HEIGHT, 40.0, 40.0, CX, CY, (0.0, 0.0, 0.0, 0.0))
    undistortion = plan_undistortion(source, max_scale=2.0)
    assert undistortion.target.width <= 2 * WIDTH + 1 and undistortion.target.height <= 2 * HEIGHT + 1
    assert not bool(outside_source(source, undistortion.source_pixels.double()).any())


def test_apply_checks_the_image_size_and_keeps_float_images_float():
    undistortion = plan_undistortion(camera("OPENCV"))
    with pytest.raises(ValueError, match=r"expected an image of shape \[120, 160, C\], got \(160, 120, 3\)"):
        undistortion.apply(torch.zeros(WIDTH, HEIGHT, 3, dtype=torch.uint8))
    constant = torch.full((HEIGHT, WIDTH, 2), 0.25, dtype=torch.float64)
    result = undistortion.apply(constant)
    assert result.dtype == torch.float64 and result.shape[-1] == 2
    assert_near(result, torch.full_like(result, 0.25), atol=1e-6)


# ----------------------------------------------------------------------------------------------- resizing


def test_resized_scales_each_axis():
    original = camera("OPENCV")
    resized = original.resized(40, 24)
    assert (resized.width, resized.height) == (40, 24)
    assert (resized.fx, resized.cx, resized.fy, resized.cy) == pytest.approx((FX / 4, CX / 4, FY / 5, CY / 5))
    assert resized.distortion == original.distortion
    # Every projected pixel coordinate scales by (1/4, 1/5), distortion included.
    points = torch.tensor([[0.3, -0.2], [-0.5, 0.4]], dtype=torch.float64)
    expected = original.image_from_camera(points) / torch.tensor([4.0, 5.0], dtype=torch.float64)
    assert_near(resized.image_from_camera(points), expected, atol=1e-12)


def test_resized_intrinsics_match_a_downscaled_image():
    # A smooth blob centred at a known point of a 400x300 image (COLMAP pixel coordinates), downscaled 4x
    # with PIL as the loader does: its centre moves to exactly a quarter of its coordinates (with OpenCV's
    # centre-of-pixel convention it would be off by 0.375 px).
    centre = torch.tensor([151.3, 97.8], dtype=torch.float64)
    offsets = pixel_centres(400, 300) - centre
    blob = 255.0 * torch.exp(-(offsets**2).sum(-1) / (2 * 12.0**2))
    image = Image.fromarray(blob.round().to(torch.uint8).numpy()).resize((100, 75), Image.Resampling.LANCZOS)
    small = torch.from_numpy(np.array(image, dtype=np.float64))
    weights = small / small.sum()
    centroid = (pixel_centres(100, 75) * weights[..., None]).sum((0, 1))
    intrinsics = Intrinsics("PINHOLE", 400, 300, 300.0, 300.0, 200.0, 150.0).resized(100, 75)
    normalized = pinhole_unproject(Intrinsics("PINHOLE", 400, 300, 300.0, 300.0, 200.0, 150.0), centre)
    assert_near(intrinsics.image_from_camera(normalized), centroid, atol=0.02)
