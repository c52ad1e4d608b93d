"""Plain-PyTorch reference of the two 2D Gaussian splatting (2DGS, surfel) ops: the oracle the compiled
ops are tested against and the fallback without the extension. Gradients come from autograd.

A surfel is a flat Gaussian disc: centre ``mean``, tangent axes ``R(q)[:, 0] * s0`` and
``R(q)[:, 1] * s1`` (the third scale is unused), normal ``R(q)[:, 2]``. The projection gives each
(camera, surfel) pair its ray transform ``T = K [s0 Rc u, s1 Rc v, mean_c]`` (3x3, rows ``Tu, Tv, Tw``), which
maps a point (a, b, 1) of the surfel's plane, in units of its scales, to homogeneous pixel coordinates.
The rasterizer intersects the ray of pixel (x, y) with the plane exactly: the point (a, b) satisfies
``(x Tw - Tu) . (a, b, 1) = 0`` and ``(y Tw - Tv) . (a, b, 1) = 0``, so it is the cross product of the
two plane vectors, dehomogenised. The Gaussian is evaluated there, ``g3 = a^2 + b^2``, and, as a
low-pass filter for surfels seen edge-on or smaller than a pixel, at the screen distance from the
projected centre, ``g2 = 2 |mean2d - pixel|^2``; the kernel is ``exp(-min(g3, g2) / 2)`` (gsplat's
2DGS kernel; Huang et al. 2024, eq. 11-13).
"""

import functools

import torch
from torch import Tensor

from .reference import (
    MAX_ALPHA,
    _quat_to_rotmat,
    absgrad_accumulator,
    blend_positions,
    blended_weights,
    composite_tile_lists,
)

__all__ = ["project_gaussians_2dgs", "rasterize_to_pixels_2dgs"]

EXTENT_SIGMAS = 3.33  # a surfel's screen rectangle spans this many standard deviations (gsplat's)
FILTER_INV_SQUARE = 2.0  # the low-pass filter's kernel is exp(-FILTER_INV_SQUARE |d|^2 / 2) (gsplat's)
MIN_HALF_EXTENT_SQUARED = 1e-4  # floor of the squared screen half-extent (pixels^2), as gsplat


def project_gaussians_2dgs(
    means: Tensor,  # [...,N,3]
    quats: Tensor,  # [...,N,4] wxyz, any norm
    scales: Tensor,  # [...,N,3] (the third is unused)
    viewmats: Tensor,  # [...,C,4,4] world -> camera
    Ks: Tensor,  # [...,C,3,3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Project surfels into C cameras (per batch of leading dimensions).

    Returns ``(radii [...,C,N,2] int32, means2d [...,C,N,2], depths [...,C,N], ray_transforms [...,C,N,3,3],
    normals [...,C,N,3])``; normals are in camera space, turned towards the camera. Culled entries (depth not
    strictly between the planes, a degenerate transform, radii both <= radius_clip, outside the image) have
    radii 0 and zeros elsewhere.
    """
    R = viewmats[..., :3, :3]  # [...,C,3,3]
    t = viewmats[..., :3, 3]  # [...,C,3]
    mean_c = torch.einsum("...cij,...nj->...cni", R, means) + t[..., :, None, :]  # [...,C,N,3]
    rot, quat_ok = _quat_to_rotmat(quats)  # [...,N,3,3]
    rot_c = torch.einsum("...cij,...njk->...cnik", R, rot)  # [...,C,N,3,3] world rotation seen by the camera
    tangent_u = rot_c[..., 0] * scales[..., None, :, 0:1]
    tangent_v = rot_c[..., 1] * scales[..., None, :, 1:2]
    # K @ [tangent_u, tangent_v, mean_c], from the pinhole's four intrinsics (only they get gradients).
    columns = torch.stack([tangent_u, tangent_v, mean_c], dim=-1)  # [...,C,N,3,3]
    fx, fy = Ks[..., 0, 0, None, None], Ks[..., 1, 1, None, None]
    cx, cy = Ks[..., 0, 2, None, None], Ks[..., 1, 2, None, None]
    x, y, z_row = columns.unbind(-2)
    ray_transforms = torch.stack([fx * x + cx * z_row, fy * y + cy * z_row, z_row], dim=-2)

    normal = rot_c[..., 2]
    facing = (-normal * mean_c).sum(dim=-1, keepdim=True) > 0
    normals = torch.where(facing, normal, -normal)

    # The screen rectangle: centre and half extents of the surfel's 1-sigma ellipse, from its transform
    # (the AABB of a projected conic, diff-surfel-rasterization#8).
    Tu, Tv, Tw = ray_transforms.unbind(-2)
    signs = Tu.new_tensor([1.0, 1.0, -1.0])
    distance = (Tw * Tw * signs).sum(-1)
    z = mean_c[..., 2]
    with torch.no_grad():
        valid = (z > near_plane) & (z < far_plane) & (distance != 0) & quat_ok[..., None, :]
    safe_distance = torch.where(valid, distance, 1.0)
    mean_x = (Tu * Tw * signs).sum(-1) / safe_distance
    mean_y = (Tv * Tw * signs).sum(-1) / safe_distance
    means2d = torch.stack([mean_x, mean_y], dim=-1)
    with torch.no_grad():
        half_x = mean_x * mean_x - (Tu * Tu * signs).sum(-1) / safe_distance
        half_y = mean_y * mean_y - (Tv * Tv * signs).sum(-1) / safe_distance
        radius_x = torch.ceil(EXTENT_SIGMAS * torch.sqrt(half_x.clamp(min=MIN_HALF_EXTENT_SQUARED)))
        radius_y = torch.ceil(EXTENT_SIGMAS * torch.sqrt(half_y.clamp(min=MIN_HALF_EXTENT_SQUARED)))
        inside = (mean_x + radius_x > 0) & (mean_x - radius_x < width)
        inside &= (mean_y + radius_y > 0) & (mean_y - radius_y < height)
        valid = valid & inside & ((radius_x > radius_clip) | (radius_y > radius_clip))
        radii = torch.where(valid[..., None], torch.stack([radius_x, radius_y], dim=-1), 0).to(torch.int32)

    return (
        radii,
        torch.where(valid[..., None], means2d, 0.0),
        torch.where(valid, z, 0.0),
        torch.where(valid[..., None, None], ray_transforms, 0.0),
        torch.where(valid[..., None], normals, 0.0),
    )


# Elements (tiles x pixels x surfels) evaluated at once: each holds about three times the floats of a 3DGS
# element (the plane vectors and their cross product).
CHUNK_ELEMENTS = 2**18


def _rasterize_surfel_chunk(
    means2d: Tensor,  # [E,2]
    ray_transforms: Tensor,  # [E,3,3]
    colors: Tensor,  # [E,D]
    opacities: Tensor,  # [E]
    normals: Tensor,  # [E,3]
    depths: Tensor,  # [E]
    gauss_ids: Tensor,  # [B,K] long, padded with 0
    listed: Tensor,  # [B,K] bool
    pix_x: Tensor,  # [B,P] pixel centres
    pix_y: Tensor,  # [B,P]
    absgrad: Tensor | None,  # [E,2] buffer or None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Blend B tiles of P pixels over their K surfels: colour [B,P,D], normal [B,P,3], distortion [B,P,1],
    median depth [B,P,1] and the final transmittance [B,P]."""
    dx, dy = blend_positions(means2d, gauss_ids, pix_x, pix_y, absgrad)
    Tu, Tv, Tw = ray_transforms[gauss_ids][:, None].unbind(-2)  # [B,1,K,3] each
    h_u = pix_x[..., None, None] * Tw - Tu  # [B,P,K,3]
    h_v = pix_y[..., None, None] * Tw - Tv
    cross = torch.linalg.cross(h_u, h_v)
    hits = cross[..., 2] != 0  # a ray parallel to the plane does not meet it
    cz = torch.where(hits, cross[..., 2], 1.0)
    a, b = cross[..., 0] / cz, cross[..., 1] / cz
    surface = a * a + b * b
    screen = FILTER_INV_SQUARE * (dx * dx + dy * dy)
    sigma = 0.5 * torch.where(surface <= screen, surface, screen)

    # Skipped entries get sigma = 0 so exp(-sigma) cannot overflow into a NaN gradient.
    sigma_ok = hits & (sigma >= 0) & listed[:, None]
    sigma = torch.where(sigma_ok, sigma, 0.0)
    alpha = torch.clamp(opacities[gauss_ids][:, None] * torch.exp(-sigma), max=MAX_ALPHA)  # [B,P,K]
    weights, T_before, T_final = blended_weights(alpha, sigma_ok)

    color = torch.einsum("bpk,bkd->bpd", weights, colors[gauss_ids])
    normal = torch.einsum("bpk,bkd->bpd", weights, normals[gauss_ids])
    # Distortion sum_ij w_i w_j |d_i - d_j| over the depth-sorted list: 2 sum_i w_i sum_{j<i} w_j (d_i - d_j)
    # (gsplat's L1 form; the weight in front of i is 1 - T_before).
    depth = depths[gauss_ids][:, None]  # [B,1,K]
    weighted_depth_before = torch.cumsum(weights * depth, dim=-1) - weights * depth
    distortion = 2 * (weights * (depth * (1 - T_before) - weighted_depth_before)).sum(-1, keepdim=True)
    # Median depth: the depth of the last blended surfel in front of which the transmittance was above 0.5.
    with torch.no_grad():
        slot = torch.arange(1, gauss_ids.shape[1] + 1, device=gauss_ids.device)
        before_half = (weights > 0) & (T_before > 0.5)
        last = (before_half * slot).amax(dim=-1, keepdim=True)  # 1-based; 0 when none
    median = torch.where(last > 0, torch.gather(depth.expand_as(weights), -1, (last - 1).clamp(min=0)), 0.0)
    return color, normal, distortion, median, T_final


def rasterize_to_pixels_2dgs(
    means2d: Tensor,  # [...,N,2] or [nnz,2]
    ray_transforms: Tensor,  # [...,N,3,3] or [nnz,3,3]
    colors: Tensor,  # [...,N,D] or [nnz,D]
    opacities: Tensor,  # [...,N] or [nnz]
    normals: Tensor,  # [...,N,3] or [nnz,3]
    depths: Tensor,  # [...,N] or [nnz]
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,  # [...,TH,TW]: the images
    flatten_ids: Tensor,  # [M], into the flattened entries
    backgrounds: Tensor | None = None,  # [...,D], one per image
    absgrad: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Alpha-composite the binned surfels front to back.

    Returns ``(render_colors [...,H,W,D], render_alphas [...,H,W,1], render_normals [...,H,W,3] (the
    camera-space normals blended), render_distort [...,H,W,1], render_median [...,H,W,1])``. Distortion and
    median use ``depths`` (gsplat reads them from the last colour channel, which holds the depth in its
    depth render modes). With ``absgrad=True``, ``means2d.absgrad`` holds after backward the sum over pixels
    of |d loss / d means2d| (the screen-space filter's part, as gsplat).
    """
    D = colors.shape[-1]
    absgrad_buffer = absgrad_accumulator(means2d) if absgrad else None
    inputs = (
        means2d.reshape(-1, 2),
        ray_transforms.reshape(-1, 3, 3),
        colors.reshape(-1, D),
        opacities.reshape(-1),
        normals.reshape(-1, 3),
        depths.reshape(-1),
    )
    (render_colors, render_normals, render_distort, render_median), T = composite_tile_lists(
        functools.partial(_rasterize_surfel_chunk, absgrad=absgrad_buffer),
        inputs,
        (D, 3, 1, 1),
        width,
        height,
        tile_size,
        isect_offsets,
        flatten_ids,
        CHUNK_ELEMENTS,
        backgrounds,
    )
    return render_colors, 1 - T, render_normals, render_distort, render_median
