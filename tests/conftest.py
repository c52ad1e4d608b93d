"""Shared scene builders and comparison helpers for the gsplat_py tests.

Everything here is a plain function (import it with ``from conftest import make_scene``) so that any test
module can reuse it; nothing is a fixture with side effects.
"""

import functools
import math

import torch
from torch import Tensor

from gsplat_py.rendering import rasterization

# rasterization with the [C, N, ...] meta layout (gsplat's packed=False), for the tests that inspect the
# meta per (camera, Gaussian) or predate packed mode; tests/test_dropin.py compares the two layouts.
rasterization_unpacked = functools.partial(rasterization, packed=False)

# The three kinds of Gaussians `make_scene` mixes in (fractions of n).
BEHIND_FRACTION = 0.08
HUGE_FRACTION = 0.04
TINY_FRACTION = 0.10
BORDER_FRACTION = 0.08


def rotation_x(angle: float, dtype=torch.float64) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=dtype)


def rotation_y(angle: float, dtype=torch.float64) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=dtype)


def make_cameras(n_cameras: int, width: int, height: int, dtype=torch.float64, camera_model: str = "pinhole"):
    """C world->camera matrices with different rotations and translations, and C different intrinsics.

    Camera 0 is close to the identity; all of them look down +z at the region z in [2.5, 6] where
    `make_scene` puts its Gaussians. For "ortho" the focal lengths are divided by 4 (the typical depth) so
    that the scene covers about the same part of the image as in the pinhole case.
    """
    viewmats = torch.zeros(n_cameras, 4, 4, dtype=torch.float64)
    Ks = torch.zeros(n_cameras, 3, 3, dtype=torch.float64)
    for c in range(n_cameras):
        R = rotation_y(0.07 * c - 0.02) @ rotation_x(0.015 - 0.04 * c)
        t = torch.tensor([0.12 * c - 0.05, -0.08 * c + 0.03, 0.25 * c], dtype=torch.float64)
        viewmats[c, :3, :3] = R
        viewmats[c, :3, 3] = t
        viewmats[c, 3, 3] = 1.0
        fx = 42.0 + 9.0 * c
        fy = fx * (1.0 + 0.07 * (c - 1))
        if camera_model == "ortho":
            fx, fy = fx / 4.0, fy / 4.0
        Ks[c] = torch.tensor(
            [[fx, 0.0, width / 2 + 1.3 * c - 0.4], [0.0, fy, height / 2 - 0.9 * c + 0.2], [0.0, 0.0, 1.0]],
            dtype=torch.float64,
        )
    return viewmats.to(dtype), Ks.to(dtype)


def make_scene(
    n: int = 300,
    n_cameras: int = 3,
    width: int = 45,
    height: int = 37,
    dtype=torch.float64,
    seed: int = 0,
    channels: int = 3,
    sh_degree: int | None = None,
    backgrounds: bool = False,
    camera_model: str = "pinhole",
    tile_size: int = 16,
    max_opacity: float = 1.0,
) -> dict:
    """A random scene that exercises the awkward cases, as keyword arguments of ``rasterization``.

    Mixes regular anisotropic Gaussians (random unnormalised quaternions, log-uniform per-axis scales) with
    Gaussians behind every camera, huge (and fairly transparent) ones that cover the whole image, tiny
    (sub-pixel) ones, and ones whose centre projects (in camera 0) within 0.3 px of a tile border (tile_size
    only sets where those borders are). Opacities span [0.002, max_opacity] (a few are below 1/255, a few
    equal max_opacity so that the 0.999 alpha cap is reached when max_opacity >= 0.999).

    Returns a dict with means, quats, scales, opacities, colors ([N, channels], or [N, 16, 3] SH
    coefficients when sh_degree is given), viewmats, Ks, width, height, sh_degree, camera_model and, if
    requested, backgrounds ([C, channels]).
    """
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=f64)

    viewmats, Ks = make_cameras(n_cameras, width, height, f64, camera_model)

    n_behind = int(round(BEHIND_FRACTION * n))
    n_huge = int(round(HUGE_FRACTION * n))
    n_tiny = int(round(TINY_FRACTION * n))
    n_border = int(round(BORDER_FRACTION * n))
    n_regular = n - n_behind - n_huge - n_tiny - n_border
    assert n_regular >= 0, "n too small for the mix of special Gaussians"

    # Regular: spread over (a bit more than) the view frustum.
    z = 2.5 + 3.5 * rand(n_regular)
    xy = (rand(n_regular, 2) - 0.5) * 2.6 * torch.stack([z * width / 100.0, z * height / 100.0], -1)
    means_regular = torch.cat([xy, z[:, None]], -1)
    scales_regular = torch.exp(math.log(0.02) + (math.log(0.25) - math.log(0.02)) * rand(n_regular, 3))

    # Behind every camera (cameras sit within |t| < 0.6 of the origin and look down +z).
    means_behind = torch.cat([(rand(n_behind, 2) - 0.5) * 2.0, -4.0 + 3.0 * rand(n_behind, 1)], -1)
    scales_behind = 0.05 + 0.3 * rand(n_behind, 3)

    # Huge: several times the image.
    means_huge = torch.cat([(rand(n_huge, 2) - 0.5) * 1.0, 3.0 + 3.0 * rand(n_huge, 1)], -1)
    scales_huge = 1.5 + 2.5 * rand(n_huge, 3)

    # Tiny: far below a pixel (eps2d dilates them; antialiasing makes most of them transparent).
    z = 2.5 + 3.5 * rand(n_tiny)
    xy = (rand(n_tiny, 2) - 0.5) * 2.0 * torch.stack([z * width / 100.0, z * height / 100.0], -1)
    means_tiny = torch.cat([xy, z[:, None]], -1)
    scales_tiny = 0.0005 + 0.004 * rand(n_tiny, 3)

    # On tile borders of camera 0 (multiples of tile_size/2, i.e. borders for tile sizes 8 and 16), within
    # +-0.3 px, back-projected through camera 0.
    step = max(1, tile_size // 2)
    bx = (torch.randint(0, width // step + 1, (n_border,), generator=g) * step).to(f64)
    by = (torch.randint(0, height // step + 1, (n_border,), generator=g) * step).to(f64)
    u = bx + (rand(n_border) - 0.5) * 0.6
    v = by + (rand(n_border) - 0.5) * 0.6
    z = 2.5 + 3.0 * rand(n_border)
    K0 = Ks[0]
    if camera_model == "ortho":
        cam_pts = torch.stack([(u - K0[0, 2]) / K0[0, 0], (v - K0[1, 2]) / K0[1, 1], z], -1)
    else:
        cam_pts = torch.stack([(u - K0[0, 2]) / K0[0, 0] * z, (v - K0[1, 2]) / K0[1, 1] * z, z], -1)
    R0, t0 = viewmats[0, :3, :3], viewmats[0, :3, 3]
    means_border = (cam_pts - t0) @ R0  # R0^T (p - t0)
    scales_border = torch.exp(math.log(0.01) + (math.log(0.1) - math.log(0.01)) * rand(n_border, 3))

    means = torch.cat([means_regular, means_behind, means_huge, means_tiny, means_border])
    scales = torch.cat([scales_regular, scales_behind, scales_huge, scales_tiny, scales_border])
    # Interleave the kinds so that none of them is special because of its index.
    perm = torch.randperm(n, generator=g)
    means, scales = means[perm], scales[perm]
    quats = torch.randn(n, 4, generator=g, dtype=f64) * (0.5 + rand(n, 1))  # any norm
    opacities = 0.002 + (max_opacity - 0.002) * rand(n)
    is_huge = torch.zeros(n, dtype=torch.bool)
    is_huge[n_regular + n_behind : n_regular + n_behind + n_huge] = True
    is_huge = is_huge[perm]
    opacities[is_huge] = 0.02 + 0.2 * rand(int(is_huge.sum()))  # see-through, or nothing else would show
    if n >= 20:
        opacities[perm[:5]] = max_opacity  # the alpha cap is reached near their centres
    if sh_degree is None:
        colors = rand(n, channels)
    else:
        colors = torch.randn(n, 16, 3, generator=g, dtype=f64) * 0.4
        colors[:, 0] += 0.6
    scene = dict(
        means=means.to(dtype),
        quats=quats.to(dtype),
        scales=scales.to(dtype),
        opacities=opacities.to(dtype),
        colors=colors.to(dtype),
        viewmats=viewmats.to(dtype),
        Ks=Ks.to(dtype),
        width=width,
        height=height,
        sh_degree=sh_degree,
        camera_model=camera_model,
    )
    if backgrounds:
        scene["backgrounds"] = rand(n_cameras, channels).to(dtype)
    return scene


DIFFERENTIABLE_KEYS = ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks", "backgrounds")


def requires_grad_copy(scene: dict) -> dict:
    """A copy of the scene whose differentiable tensors are fresh leaves with requires_grad=True."""
    out = dict(scene)
    for key in DIFFERENTIABLE_KEYS:
        if out.get(key) is not None:
            out[key] = out[key].detach().clone().requires_grad_(True)
    return out


def random_like(t: Tensor, seed: int) -> Tensor:
    """A reproducible random cotangent with the shape, dtype and device of t (drawn on the CPU, so the
    same values on every device)."""
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(
        device=t.device, dtype=t.dtype
    )


def relative_error(actual: Tensor, expected: Tensor) -> float:
    """||actual - expected|| / ||expected|| (0 when both are zero, inf when only expected is)."""
    diff = (actual.double() - expected.double()).norm().item()
    scale = expected.double().norm().item()
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def tile_grid(width: int, height: int, tile_size: int):
    """(tile_width, tile_height) of an image."""
    return math.ceil(width / tile_size), math.ceil(height / tile_size)
