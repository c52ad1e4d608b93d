"""Camera models: COLMAP's lens distortion, its inverse, and undistortion of images to pinhole cameras.

Pixel convention (COLMAP's, and the rasterizer's): continuous pixel coordinates with the image's top-left
corner at (0, 0); pixel (i, j) (column i, row j) covers [i, i + 1) x [j, j + 1), so its centre is at
(i + 0.5, j + 0.5). A point (x, y, z) in the camera frame (OpenCV axes: x right, y down, z forward) has
normalised coordinates (u, v) = (x / z, y / z); a camera distorts them to (u', v') and the pinhole part
maps those to the pixel (fx u' + cx, fy v' + cy). In this convention, resizing an image by (sx, sy) scales
every pixel coordinate by (sx, sy), so fx and cx scale by sx and fy and cy by sy, with no half-pixel shift
(see `Intrinsics.resized`).

The distortions are COLMAP's (src/colmap/sensor/models.h), with r^2 = u^2 + v^2:

- SIMPLE_PINHOLE (f, cx, cy), PINHOLE (fx, fy, cx, cy): none.
- SIMPLE_RADIAL (f, cx, cy, k): (u, v) (1 + k r^2).
- RADIAL (f, cx, cy, k1, k2): (u, v) (1 + k1 r^2 + k2 r^4).
- OPENCV (fx, fy, cx, cy, k1, k2, p1, p2): (u, v) (1 + k1 r^2 + k2 r^4) + tangential, where
  tangential = (2 p1 u v + p2 (r^2 + 2 u^2), 2 p2 u v + p1 (r^2 + 2 v^2)).
- FULL_OPENCV (fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6): (u, v) (1 + k1 r^2 + k2 r^4 + k3 r^6) /
  (1 + k4 r^2 + k5 r^4 + k6 r^6) + the same tangential term.
- OPENCV_FISHEYE (fx, fy, cx, cy, k1, k2, k3, k4), equidistant: theta = atan(r), and the point moves to
  radius theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8) in the direction of (u, v).

The inverse (`undistort_points`) is COLMAP's: Newton's method on the distortion, with COLMAP's trust region
on the step (fisheye models solve in the "fisheye plane", where the distance from the centre is theta, and
map back with tan(theta)); the Jacobians are analytic.

`plan_undistortion` turns a distorted camera into a pinhole camera with the same focal lengths in pixels,
cropped to a rectangle whose every pixel samples the source image between its pixel centres: no blank or
extrapolated border (the equivalent of OpenCV's getOptimalNewCameraMatrix with alpha=0 followed by the
ROI crop, except that the focal length is kept, and with it the resolution at the image centre, instead of
zooming the crop back to the source's size). `Undistortion.apply` resamples images with bilinear
interpolation (``grid_sample``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DISTORTION_PARAMS",
    "PINHOLE_MODELS",
    "SUPPORTED_MODELS",
    "Intrinsics",
    "Undistortion",
    "distort_points",
    "plan_undistortion",
    "undistort_points",
]

# The distortion coefficients of each supported model, in COLMAP's parameter order (after f or fx, fy,
# and cx, cy).
DISTORTION_PARAMS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": (),
    "PINHOLE": (),
    "SIMPLE_RADIAL": ("k",),
    "RADIAL": ("k1", "k2"),
    "OPENCV": ("k1", "k2", "p1", "p2"),
    "FULL_OPENCV": ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
    "OPENCV_FISHEYE": ("k1", "k2", "k3", "k4"),
}
SUPPORTED_MODELS: tuple[str, ...] = tuple(DISTORTION_PARAMS)
PINHOLE_MODELS = frozenset(("SIMPLE_PINHOLE", "PINHOLE"))
FISHEYE_MODELS = frozenset(("OPENCV_FISHEYE",))

# Newton's method (COLMAP's settings, except that the stopping step is tighter: COLMAP stops at a step of
# 1e-5, which after Newton's quadratic convergence still leaves errors of ~1e-10; we iterate to round-off).
NEWTON_MAX_ITERATIONS = 100
NEWTON_MIN_STEP = 1e-12
NEWTON_TRUST_RADIUS = 0.1  # a step is at most max(0.1 |x|, 0.1) long
# A point counts as undistorted when the distortion of the result is this close to the target (in
# normalised units, i.e. 1e-8 px for a 1000 px focal length).
UNDISTORT_TOLERANCE = 1e-11
# Rounding slack when checking that undistorted-rectangle samples lie inside the source (in pixels).
INSIDE_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------------------
# Distortion. Every supported model has the form (u', v') = (u, v) R(r^2) + tangential(u, v), with R the
# ratio of two polynomials in r^2 (on the fisheye plane for fisheye models, where r = theta).


@dataclass(frozen=True)
class _RadialTangential:
    """R(r^2) = (1 + sum_i numerator[i] r^(2i+2)) / (1 + sum_i denominator[i] r^(2i+2)), and p1, p2."""

    numerator: tuple[float, ...] = ()
    denominator: tuple[float, ...] = ()
    p1: float = 0.0
    p2: float = 0.0


def _split_coefficients(model: str, c: tuple[float, ...]) -> _RadialTangential:
    if model in PINHOLE_MODELS:
        return _RadialTangential()
    if model in ("SIMPLE_RADIAL", "RADIAL", "OPENCV_FISHEYE"):
        return _RadialTangential(numerator=c)
    if model == "OPENCV":
        return _RadialTangential(numerator=c[:2], p1=c[2], p2=c[3])
    return _RadialTangential(numerator=(c[0], c[1], c[4]), denominator=c[5:], p1=c[2], p2=c[3])  # FULL_OPENCV


def _polynomial(coefficients: tuple[float, ...], r2: Tensor) -> tuple[Tensor, Tensor]:
    """1 + c0 r2 + c1 r2^2 + ... and its derivative with respect to r2."""
    value, derivative, power = torch.ones_like(r2), torch.zeros_like(r2), torch.ones_like(r2)
    for exponent, coefficient in enumerate(coefficients, 1):
        derivative = derivative + exponent * coefficient * power
        power = power * r2
        value = value + coefficient * power
    return value, derivative


def _distort(terms: _RadialTangential, u: Tensor, v: Tensor) -> tuple[Tensor, ...]:
    """(u', v', du'/du, du'/dv, dv'/du, dv'/dv)."""
    r2 = u * u + v * v
    numerator, numerator_derivative = _polynomial(terms.numerator, r2)
    denominator, denominator_derivative = _polynomial(terms.denominator, r2)
    radial = numerator / denominator
    radial_derivative = (numerator_derivative - radial * denominator_derivative) / denominator
    p1, p2 = terms.p1, terms.p2
    distorted_u = u * radial + 2.0 * p1 * u * v + p2 * (r2 + 2.0 * u * u)
    distorted_v = v * radial + 2.0 * p2 * u * v + p1 * (r2 + 2.0 * v * v)
    cross = 2.0 * u * v * radial_derivative + 2.0 * p1 * u + 2.0 * p2 * v
    return (
        distorted_u,
        distorted_v,
        radial + 2.0 * u * u * radial_derivative + 2.0 * p1 * v + 6.0 * p2 * u,
        cross,
        cross,
        radial + 2.0 * v * v * radial_derivative + 2.0 * p2 * u + 6.0 * p1 * v,
    )


def _fisheye_from_normalized(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The equidistant projection: same direction, at distance theta = atan(r) from the centre."""
    r = torch.hypot(u, v)
    scale = torch.where(r > 1e-15, torch.atan(r) / r.clamp_min(1e-15), torch.ones_like(r))
    return u * scale, v * scale


def _normalized_from_fisheye(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(u, v, valid): only angles below 90 degrees off the optical axis have a point on the normalised
    plane."""
    theta = torch.hypot(u, v)
    valid = theta < math.pi / 2
    scale = torch.where(theta > 1e-15, torch.tan(theta) / theta.clamp_min(1e-15), torch.ones_like(theta))
    scale = torch.where(valid, scale, torch.full_like(scale, math.nan))
    return u * scale, v * scale, valid


def _check_model(model: str, coefficients: tuple[float, ...]) -> None:
    names = DISTORTION_PARAMS.get(model)
    if names is None:
        raise ValueError(f"unsupported camera model {model!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    if len(coefficients) != len(names):
        listed = ", ".join(names) or "none"
        raise ValueError(
            f"{model} has {len(names)} distortion coefficients ({listed}), got {len(coefficients)}"
        )


def _as_points(points) -> Tensor:
    points = torch.as_tensor(points, dtype=torch.float64)
    if points.shape[-1:] != (2,):
        raise ValueError(f"expected points of shape [..., 2], got {tuple(points.shape)}")
    return points


def distort_points(model: str, coefficients, points) -> Tensor:
    """Distort normalised coordinates ``points`` [..., 2] (x/z, y/z) as camera ``model`` does (float64).

    ``coefficients`` are the model's distortion parameters in COLMAP's order (`DISTORTION_PARAMS`). The
    result is in the same normalised units: the pixel is (fx u' + cx, fy v' + cy).
    """
    coefficients = tuple(float(c) for c in coefficients)
    _check_model(model, coefficients)
    points = _as_points(points)
    u, v = points.unbind(-1)
    if model in FISHEYE_MODELS:
        u, v = _fisheye_from_normalized(u, v)
    distorted_u, distorted_v, *_ = _distort(_split_coefficients(model, coefficients), u, v)
    return torch.stack((distorted_u, distorted_v), -1)


def undistort_points(model: str, coefficients, points) -> tuple[Tensor, Tensor]:
    """The inverse of `distort_points`: (normalised coordinates [..., 2] float64, converged [...] bool).

    Solved by Newton's method from the distorted point, as COLMAP does. Points with no (or no found)
    inverse, e.g. beyond the radius where a strong radial distortion folds back, or fisheye points 90
    degrees or more off axis, have converged False (and may be NaN).
    """
    coefficients = tuple(float(c) for c in coefficients)
    _check_model(model, coefficients)
    target_u, target_v = _as_points(points).unbind(-1)
    terms = _split_coefficients(model, coefficients)
    u, v = target_u.clone(), target_v.clone()
    if model not in PINHOLE_MODELS:
        for _ in range(NEWTON_MAX_ITERATIONS):
            distorted_u, distorted_v, j_uu, j_uv, j_vu, j_vv = _distort(terms, u, v)
            residual_u, residual_v = distorted_u - target_u, distorted_v - target_v
            determinant = j_uu * j_vv - j_uv * j_vu
            step_u = (j_vv * residual_u - j_uv * residual_v) / determinant
            step_v = (j_uu * residual_v - j_vu * residual_u) / determinant
            step2 = step_u * step_u + step_v * step_v
            radius2 = torch.clamp_min((u * u + v * v) * NEWTON_TRUST_RADIUS**2, NEWTON_TRUST_RADIUS**2)
            shrink = torch.where(step2 > radius2, torch.sqrt(radius2 / step2), torch.ones_like(step2))
            u, v = u - step_u * shrink, v - step_v * shrink
            if not bool((step2 > NEWTON_MIN_STEP**2).any()):  # NaN steps compare False: they stop too
                break
    final_u, final_v, *_ = _distort(terms, u, v)
    error2 = (final_u - target_u) ** 2 + (final_v - target_v) ** 2
    converged = error2 < UNDISTORT_TOLERANCE**2  # False for NaN
    if model in FISHEYE_MODELS:
        u, v, in_front = _normalized_from_fisheye(u, v)
        converged &= in_front
    return torch.stack((u, v), -1), converged


# --------------------------------------------------------------------------------------------------------
# Cameras


@dataclass(frozen=True)
class Intrinsics:
    """A camera's intrinsics: its model, image size, pinhole part and distortion coefficients.

    ``distortion`` holds the model's coefficients in COLMAP's order (`DISTORTION_PARAMS`); the models with a
    single focal length f have fx = fy = f here. All pixel quantities use COLMAP's convention (module
    docstring).
    """

    model: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: tuple[float, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "distortion", tuple(float(c) for c in self.distortion))
        _check_model(self.model, self.distortion)

    @classmethod
    def from_colmap(cls, camera) -> Intrinsics:
        """The intrinsics of a `gsplat_py.io.colmap.Camera` (ValueError for an unsupported model)."""
        return cls(
            camera.model,
            int(camera.width),
            int(camera.height),
            camera.fx,
            camera.fy,
            camera.cx,
            camera.cy,
            tuple(camera.distortion.values()),
        )

    @property
    def is_pinhole(self) -> bool:
        return self.model in PINHOLE_MODELS

    def K(self) -> Tensor:
        """The 3x3 pinhole matrix (float64); the distortion is not part of it."""
        return torch.tensor(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=torch.float64
        )

    def resized(self, width: int, height: int) -> Intrinsics:
        """The same camera for the image resized to ``width`` x ``height`` (each axis scaled on its own)."""
        scale_x, scale_y = width / self.width, height / self.height
        return Intrinsics(
            self.model,
            width,
            height,
            self.fx * scale_x,
            self.fy * scale_y,
            self.cx * scale_x,
            self.cy * scale_y,
            self.distortion,
        )

    def image_from_camera(self, points) -> Tensor:
        """Pixels [..., 2] of the normalised coordinates ``points`` [..., 2] (distortion, then K)."""
        distorted = distort_points(self.model, self.distortion, points)
        return torch.stack((self.fx * distorted[..., 0] + self.cx, self.fy * distorted[..., 1] + self.cy), -1)

    def camera_from_image(self, pixels) -> tuple[Tensor, Tensor]:
        """(normalised coordinates [..., 2], converged [...]) of ``pixels`` [..., 2]; see
        `undistort_points`."""
        pixels = _as_points(pixels)
        x, y = pixels.unbind(-1)
        distorted = torch.stack(((x - self.cx) / self.fx, (y - self.cy) / self.fy), -1)
        return undistort_points(self.model, self.distortion, distorted)


# --------------------------------------------------------------------------------------------------------
# Undistortion of images


@dataclass(frozen=True, eq=False)
class Undistortion:
    """How to resample an image of the distorted camera ``source`` into the pinhole camera ``target``.

    ``source_pixels`` (float32 [target.height, target.width, 2]) is, for each output pixel, the source pixel
    coordinate its centre samples; every one lies between the source's outermost pixel centres, i.e. in
    [0.5, width - 0.5] x [0.5, height - 0.5], so bilinear sampling never reads outside the source image.
    """

    source: Intrinsics
    target: Intrinsics
    source_pixels: Tensor

    def apply(self, image: Tensor) -> Tensor:
        """The undistorted image [target.height, target.width, C] of ``image``
        [source.height, source.width, C].

        Bilinear interpolation; uint8 images are rounded back to uint8, float images keep their dtype.
        """
        if image.dim() != 3 or tuple(image.shape[:2]) != (self.source.height, self.source.width):
            raise ValueError(
                f"expected an image of shape [{self.source.height}, {self.source.width}, C], "
                f"got {tuple(image.shape)}"
            )
        # grid_sample with align_corners=False maps -1 and +1 to the outer edges of the border pixels,
        # i.e. COLMAP's pixel coordinates 0 and width: normalised = 2 x / width - 1.
        size = torch.tensor([self.source.width, self.source.height], dtype=torch.float32)
        grid = (2.0 * self.source_pixels / size - 1.0)[None]
        source = image.permute(2, 0, 1)[None].to(torch.float32)
        sampled = F.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=False)
        result = sampled[0].permute(1, 2, 0)
        if image.dtype == torch.uint8:
            return result.round_().clamp_(0, 255).to(torch.uint8).contiguous()
        return result.to(image.dtype).contiguous()


def _undistorted_bounds(source: Intrinsics, max_scale: float) -> tuple[float, float, float, float]:
    """(left, right, top, bottom), in normalised coordinates, of the inner rectangle of the undistorted image.

    The source's valid area is the rectangle through its outermost pixel centres; its border, undistorted,
    is a closed curve. Each side of the inner rectangle goes through the innermost point of the matching
    border side, so no border point lies strictly inside the rectangle (for barrel and pincushion
    distortions it is the largest rectangle inside the curve). Border points with no inverse (beyond a
    fold of the distortion, or 90 degrees or more off a fisheye's axis) do not bound it; instead no side
    is more than ``max_scale`` times as far from the principal point as the source's matching edge.
    """
    xs = np.linspace(0.5, source.width - 0.5, max(2, 2 * source.width))
    ys = np.linspace(0.5, source.height - 0.5, max(2, 2 * source.height))
    sides = {
        "left": np.stack([np.full_like(ys, 0.5), ys], -1),
        "right": np.stack([np.full_like(ys, source.width - 0.5), ys], -1),
        "top": np.stack([xs, np.full_like(xs, 0.5)], -1),
        "bottom": np.stack([xs, np.full_like(xs, source.height - 0.5)], -1),
    }
    caps = {
        "left": -max_scale * source.cx / source.fx,
        "right": max_scale * (source.width - source.cx) / source.fx,
        "top": -max_scale * source.cy / source.fy,
        "bottom": max_scale * (source.height - source.cy) / source.fy,
    }
    bounds = {}
    for side, pixels in sides.items():
        points, converged = source.camera_from_image(torch.from_numpy(pixels))
        coordinate = points[converged, 0 if side in ("left", "right") else 1]
        if side in ("left", "top"):
            bounds[side] = max([caps[side], *coordinate.tolist()])
        else:
            bounds[side] = min([caps[side], *coordinate.tolist()])
    return bounds["left"], bounds["right"], bounds["top"], bounds["bottom"]


def _pixel_grid(low: float, high: float) -> tuple[int, float]:
    """(count, principal point) of the most pixels whose centres fit in [low, high], centred in it.

    ``low`` and ``high`` are in pixels from the principal point (focal length times normalised coordinate);
    pixel i's centre, i + 0.5, lies at i + 0.5 - principal point.
    """
    count = math.floor(high - low + 1e-9) + 1
    slack = (high - low) - (count - 1)
    return count, 0.5 - (low + slack / 2)


def _valid_samples(source: Intrinsics, normalized: Tensor) -> tuple[Tensor, Tensor]:
    """(source pixels [..., 2], valid [...]) of normalised points: inside the source and not folded over."""
    u, v = normalized.unbind(-1)
    if source.model in FISHEYE_MODELS:
        u, v = _fisheye_from_normalized(u, v)
    terms = _split_coefficients(source.model, source.distortion)
    distorted_u, distorted_v, j_uu, j_uv, j_vu, j_vv = _distort(terms, u, v)
    pixels = torch.stack((source.fx * distorted_u + source.cx, source.fy * distorted_v + source.cy), -1)
    low = 0.5 - INSIDE_TOLERANCE
    inside = (
        (pixels[..., 0] >= low)
        & (pixels[..., 0] <= source.width - low)
        & (pixels[..., 1] >= low)
        & (pixels[..., 1] <= source.height - low)
    )
    # Where the distortion folds back (its Jacobian changes sign), points further out land inside the
    # image again; those samples would show the wrong part of the scene.
    unfolded = j_uu * j_vv - j_uv * j_vu > 0
    return pixels, inside & unfolded


def _peel_invalid_border(valid: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): the rows and columns of ``valid`` to keep so that the kept block is
    all True.

    Repeatedly drops the border row or column with the largest fraction of invalid pixels. Needed where
    the distortion folds back before the source's border (the border there has no undistorted point) and
    to absorb the sampling of the border curve; for ordinary distortions it drops nothing.
    """
    top, bottom, left, right = 0, valid.shape[0], 0, valid.shape[1]
    while top < bottom and left < right and not valid[top:bottom, left:right].all():
        block = valid[top:bottom, left:right]
        invalid_fractions = [1.0 - line.mean() for line in (block[0], block[-1], block[:, 0], block[:, -1])]
        side = int(np.argmax(invalid_fractions))
        if side == 0:
            top += 1
        elif side == 1:
            bottom -= 1
        elif side == 2:
            left += 1
        else:
            right -= 1
    return top, bottom, left, right


def plan_undistortion(source: Intrinsics, max_scale: float = 2.0) -> Undistortion:
    """The pinhole camera and resampling map that undistort images of the distorted camera ``source``.

    The target keeps the source's focal lengths in pixels (so the image centre keeps its resolution). Its
    image is the inner rectangle of the undistorted source (`_undistorted_bounds`), shrunk symmetrically
    to whole pixels, minus any border rows or columns that would still sample outside the source or where
    the distortion folds over; so every pixel samples the source between its outermost pixel centres. The
    principal point follows from the crop. With barrel distortion the result is larger than the source;
    no side extends more than ``max_scale`` times the source's own extent from the principal point (as
    COLMAP's undistorter bounds its output). ValueError for a pinhole ``source`` or when no pixel is valid.
    """
    if source.is_pinhole:
        raise ValueError(f"{source.model} is already a pinhole camera: there is nothing to undistort")
    no_valid_pixel = ValueError(f"no pixel of the {source.model} camera {source} can be undistorted")
    left, right, top, bottom = _undistorted_bounds(source, max_scale)
    if right <= left or bottom <= top:
        raise no_valid_pixel
    width, cx = _pixel_grid(left * source.fx, right * source.fx)
    height, cy = _pixel_grid(top * source.fy, bottom * source.fy)
    columns = (torch.arange(width, dtype=torch.float64) + 0.5 - cx) / source.fx
    rows = (torch.arange(height, dtype=torch.float64) + 0.5 - cy) / source.fy
    grid = torch.stack(torch.meshgrid(columns, rows, indexing="xy"), -1)
    pixels, valid = _valid_samples(source, grid)
    row_start, row_end, column_start, column_end = _peel_invalid_border(valid.numpy())
    if row_start >= row_end or column_start >= column_end:
        raise no_valid_pixel
    # Clamping only removes the rounding slack (INSIDE_TOLERANCE) at the rectangle's edges.
    pixels = pixels[row_start:row_end, column_start:column_end]
    pixels = torch.stack(
        (pixels[..., 0].clamp(0.5, source.width - 0.5), pixels[..., 1].clamp(0.5, source.height - 0.5)), -1
    )
    target = Intrinsics(
        "PINHOLE",
        column_end - column_start,
        row_end - row_start,
        source.fx,
        source.fy,
        cx - column_start,
        cy - row_start,
    )
    # float32, as grid_sample takes it; rounding cannot leave [0.5, size - 0.5], whose ends are exact.
    return Undistortion(source, target, pixels.to(torch.float32).contiguous())
