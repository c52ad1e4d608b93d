"""Plain-PyTorch reference implementation of the four gsplat_py ops.

This module is the readable oracle the tests compare the compiled ops against, and the slow fallback used
when the C++ extension is not built. Every function follows the contracts in ``docs/architecture.md`` to
the letter and gets its gradients from autograd; nothing here is tuned beyond what it takes to render a
real scene (rasterization works tile by tile, in bounded chunks, with activation checkpointing).

Culled or skipped entries are always removed with ``torch.where``/masks *after* their inputs were made
harmless (e.g. depth replaced by 1 before dividing by it), so that no NaN or inf can reach a gradient.
"""

import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .results import PackedProjection, TileBins

__all__ = [
    "project_gaussians",
    "project_gaussians_packed",
    "spherical_harmonics",
    "bin_gaussians_to_tiles",
    "rasterize_to_pixels",
]

MAX_ALPHA = 0.999  # gsplat's alpha cap (Inria's rasterizer: 0.99); gsplat_math.h kMaxAlpha


# --------------------------------------------------------------------------------------------------------
# 1. Projection
# --------------------------------------------------------------------------------------------------------


def _quat_to_rotmat(quats: Tensor) -> tuple[Tensor, Tensor]:
    """[...,4] quaternions (w, x, y, z), any norm -> ([...,3,3] rotation matrices, [...] valid).

    A quaternion whose squared norm is 0 (or underflows) has no rotation: it is not valid (the compiled
    ops cull it, since its covariance is NaN), and gets the identity so that no NaN reaches a gradient."""
    valid = (quats * quats).sum(dim=-1) > 0
    quats = torch.where(valid[..., None], quats, quats.new_tensor([1.0, 0.0, 0.0, 0.0]))
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - w * z),
        2 * (x * z + w * y),
        2 * (x * y + w * z),
        1 - 2 * (x * x + z * z),
        2 * (y * z - w * x),
        2 * (x * z - w * y),
        2 * (y * z + w * x),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3)), valid


# Below this squared distance from the axis (on the normalised image plane) the fisheye scale and its
# derivative come from their Taylor series: their closed forms cancel there. Series error O(q^2) = 1e-12,
# closed-form cancellation above it eps / q = 1e-10 (relative).
_FISHEYE_SERIES_Q = 1e-6


def _fisheye_scale(q: Tensor, radial: Tensor | None) -> tuple[Tensor, Tensor]:
    """OpenCV's fisheye model on the normalised plane: a point at squared radius q moves by g(q) =
    theta_d / r, r = sqrt(q), theta = atan(r), theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8).
    Returns (g, u) with u = (dg/dr) / r; radial [..., 4] broadcast against q (None: equidistant)."""
    k1, k2, k3, k4 = (
        (q.new_zeros(()),) * 4 if radial is None else tuple(radial[..., i, None] for i in range(4))
    )
    small = q < _FISHEYE_SERIES_Q
    qs = torch.where(small, torch.ones_like(q), q)
    r = torch.sqrt(qs)
    theta = torch.atan(r)
    t2 = theta * theta
    poly = 1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
    dpoly = k1 + t2 * (2 * k2 + t2 * (3 * k3 + 4 * k4 * t2))  # d poly / d(theta^2)
    g_closed = theta * poly / r
    dtheta_d = poly + 2 * t2 * dpoly  # d theta_d / d theta
    u_closed = (dtheta_d / (1 + qs) - g_closed) / qs
    g_series = 1 + (k1 - 1 / 3) * q + (k2 - k1 + 0.2) * q * q
    u_series = 2 * (k1 - 1 / 3) + 4 * (k2 - k1 + 0.2) * q
    return torch.where(small, g_series, g_closed), torch.where(small, u_series, u_closed)


def _project_means_and_jacobians(
    mean_c: Tensor, Ks: Tensor, width: int, height: int, camera_model: str, radial_coeffs: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Image-plane means [..., C, N, 2] and the Jacobians [..., C, N, 2, 3] of the projection at the
    camera-space means [..., C, N, 3]; depth-culled entries must already have z replaced by 1."""
    x, y, z = mean_c.unbind(-1)
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [..., C, 1], broadcast over N
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    zero = torch.zeros_like(z)
    if camera_model == "pinhole":
        # Clamp the point used for the Jacobian to a frustum slightly wider than the image. The bounds are
        # tensors so that K receives gradient through them as well.
        lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
        lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
        lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
        lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
        tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
        ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
        rows = [[fx / z, zero, -fx * tx / (z * z)], [zero, fy / z, -fy * ty / (z * z)]]
        means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    elif camera_model == "fisheye":
        a, b = x / z, y / z
        q = a * a + b * b
        g, u = _fisheye_scale(q, radial_coeffs)
        # d(a g, b g)/d(a, b) = [[g + a^2 u, a b u], [a b u, g + b^2 u]], times d(a, b)/d(x, y, z)
        h = g + q * u
        rows = [
            [fx * (g + a * a * u) / z, fx * a * b * u / z, -fx * a * h / z],
            [fy * a * b * u / z, fy * (g + b * b * u) / z, -fy * b * h / z],
        ]
        means2d = torch.stack([fx * a * g + cx, fy * b * g + cy], dim=-1)
    else:  # ortho
        rows = [[fx + zero, zero, zero], [zero, fy + zero, zero]]
        means2d = torch.stack([fx * x + cx, fy * y + cy], dim=-1)
    J = torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)
    return means2d, J


def _world_covariances(quats: Tensor | None, scales: Tensor | None, covars: Tensor | None):
    """([..., N, 3, 3] world covariances, [..., N] valid): from covars (upper triangles xx, xy, xz, yy,
    yz, zz) when given, else R(q) diag(s)^2 R(q)^T."""
    if covars is not None:
        xx, xy, xz, yy, yz, zz = covars.unbind(-1)
        rows = [torch.stack(r, dim=-1) for r in ((xx, xy, xz), (xy, yy, yz), (xz, yz, zz))]
        return torch.stack(rows, dim=-2), torch.ones_like(xx, dtype=torch.bool)
    assert quats is not None and scales is not None
    rotations, quat_ok = _quat_to_rotmat(quats)
    M = rotations * scales[..., None, :]  # Rq @ diag(scales)
    return M @ M.transpose(-1, -2), quat_ok


def project_gaussians(
    means: Tensor,  # [...,N,3]
    quats: Tensor | None,  # [...,N,4] wxyz (None with covars)
    scales: Tensor | None,  # [...,N,3] (None with covars)
    viewmats: Tensor,  # [...,C,4,4] world -> camera
    Ks: Tensor,  # [...,C,3,3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    opacities: Tensor | None = None,  # [...,N]
    calc_compensations: bool = False,
    camera_model: str = "pinhole",
    covars: Tensor | None = None,  # [...,N,6] upper triangles, instead of quats and scales
    radial_coeffs: Tensor | None = None,  # [...,C,4] fisheye k1..k4
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Project 3D Gaussians into C cameras (per batch of leading dimensions).

    Returns ``(radii [...,C,N,2] int32, means2d [...,C,N,2], depths [...,C,N], conics [...,C,N,3],
    compensations [...,C,N] or None)``; culled entries have radii 0 and zeros elsewhere.
    """
    if camera_model not in ("pinhole", "ortho", "fisheye"):
        raise NotImplementedError(f"camera_model={camera_model!r} is not supported")

    # Camera-space means and covariances.
    R = viewmats[..., :3, :3]  # [...,C,3,3]
    t = viewmats[..., :3, 3]  # [...,C,3]
    mean_c = torch.einsum("...cij,...nj->...cni", R, means) + t[..., :, None, :]  # [...,C,N,3]
    covar, gauss_ok = _world_covariances(quats, scales, covars)  # [...,N,3,3]
    covar_c = torch.einsum("...cij,...njk,...clk->...cnil", R, covar, R)  # R Σ Rᵀ, [...,C,N,3,3]

    z = mean_c[..., 2]
    depth_ok = (z >= near_plane) & (z <= far_plane)
    # Entries culled by depth get z = 1 so the divisions stay finite (their gradient is masked).
    safe_mean_c = torch.where(depth_ok[..., None], mean_c, torch.ones_like(mean_c))
    means2d, J = _project_means_and_jacobians(safe_mean_c, Ks, width, height, camera_model, radial_coeffs)

    cov2d = J @ covar_c @ J.transpose(-1, -2)  # [...,C,N,2,2]
    # A 2D covariance that overflows (a focal length of 1e30...) is culled like a degenerate one, and replaced
    # before it is used, so that no inf reaches a gradient.
    cov_ok = torch.isfinite(cov2d).all(dim=-1).all(dim=-1)
    cov2d = torch.where(cov_ok[..., None, None], cov2d, torch.eye(2, dtype=cov2d.dtype, device=cov2d.device))
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    det_ok = cov_ok & (det > 0) & torch.isfinite(det)
    det = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    # sqrt(max(0, ratio)) with a safe argument: sqrt'(0) is infinite.
    ratio = det_orig / det
    ratio_pos = ratio > 0
    compensations = torch.where(
        ratio_pos, torch.sqrt(torch.where(ratio_pos, ratio, torch.ones_like(ratio))), torch.zeros_like(ratio)
    )

    # Radii and the remaining culling tests are discrete decisions: no gradient.
    with torch.no_grad():
        valid = depth_ok & det_ok & gauss_ok[..., None, :]
        extend = torch.full_like(det, 3.33)
        if opacities is not None:
            op = opacities[..., None, :] * compensations if calc_compensations else opacities[..., None, :]
            op = op.expand_as(det)
            valid &= op >= 1.0 / 255.0
            # Where a Gaussian's alpha stays above 1/255 (and 3.33 sigma caps it).
            opacity_extent = torch.sqrt(2.0 * torch.log(torch.clamp(op * 255.0, min=1.0)))
            extend = torch.clamp(opacity_extent, max=3.33)
        radius_x = torch.ceil(extend * torch.sqrt(torch.clamp(a, min=0)))
        radius_y = torch.ceil(extend * torch.sqrt(torch.clamp(c, min=0)))
        valid &= (radius_x > radius_clip) | (radius_y > radius_clip)
        mx, my = means2d[..., 0], means2d[..., 1]
        valid &= (
            (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        )
        radii = torch.where(valid[..., None], torch.stack([radius_x, radius_y], dim=-1), 0).to(torch.int32)

    means2d = torch.where(valid[..., None], means2d, 0.0)
    depths = torch.where(valid, mean_c[..., 2], 0.0)
    conics = torch.where(valid[..., None], conics, 0.0)
    culled_compensations = torch.where(valid, compensations, 0.0) if calc_compensations else None
    return radii, means2d, depths, conics, culled_compensations


def project_gaussians_packed(
    means: Tensor,
    quats: Tensor | None,
    scales: Tensor | None,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    opacities: Tensor | None = None,
    calc_compensations: bool = False,
    camera_model: str = "pinhole",
    covars: Tensor | None = None,
    radial_coeffs: Tensor | None = None,
    sparse_grad: bool = False,
) -> PackedProjection:
    """`project_gaussians` keeping only the visible pairs, in (batch, camera, Gaussian) order. The oracle
    computes every pair then keeps the visible ones; its gradients are dense (sparse_grad is not offered)."""
    if sparse_grad:
        raise NotImplementedError("sparse_grad=True: the reference backend computes dense gradients")
    radii, means2d, depths, conics, compensations = project_gaussians(
        means,
        quats,
        scales,
        viewmats,
        Ks,
        width,
        height,
        eps2d,
        near_plane,
        far_plane,
        radius_clip,
        opacities,
        calc_compensations,
        camera_model,
        covars,
        radial_coeffs,
    )
    C, N = depths.shape[-2:]
    flat_radii = radii.reshape(-1, 2)
    pairs = torch.nonzero((flat_radii != 0).any(dim=-1)).flatten()
    image = pairs // N
    return PackedProjection(
        image // C,
        image % C,
        pairs % N,
        flat_radii[pairs],
        means2d.reshape(-1, 2)[pairs],
        depths.reshape(-1)[pairs],
        conics.reshape(-1, 3)[pairs],
        None if compensations is None else compensations.reshape(-1)[pairs],
    )


# --------------------------------------------------------------------------------------------------------
# 2. Spherical harmonics
# --------------------------------------------------------------------------------------------------------

_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
_C4 = (
    2.5033429417967046,
    -1.7701307697799304,
    0.9461746957575601,
    -0.6690465435572892,
    0.10578554691520431,
    -0.6690465435572892,
    0.47308734787878004,
    -1.7701307697799304,
    0.6258357354491761,
)
MAX_DEGREE = 4


def spherical_harmonics(
    degree: int,
    dirs: Tensor,  # [...,3]
    coeffs: Tensor,  # [...,K,3]
    masks: Tensor | None = None,  # [...] bool
    coeff_rows: Tensor | None = None,  # [...] int: direction i uses coeffs.reshape(-1, K, 3)[coeff_rows[i]]
    coeffs_rest: Tensor | None = None,  # [..., K - 1, 3]: the bases after the first, coeffs then [..., 1, 3]
) -> Tensor:
    """Evaluate the real SH basis (Inria/gsplat convention, degree 0..4). Returns the raw value [...,3]."""
    if coeffs_rest is not None:
        coeffs = torch.cat([coeffs, coeffs_rest], dim=-2)
    if coeff_rows is not None:
        coeffs = coeffs.reshape(-1, *coeffs.shape[-2:])[coeff_rows.long()]
    if not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_DEGREE}, got {degree}")
    if coeffs.shape[-2] < (degree + 1) ** 2:
        raise ValueError(f"degree {degree} needs {(degree + 1) ** 2} coefficients, got {coeffs.shape[-2]}")
    if masks is not None:
        # Masked directions may be anything (even zero): replace them before normalising.
        dirs = torch.where(masks[..., None], dirs, torch.ones_like(dirs))
    x, y, z = (dirs / dirs.norm(dim=-1, keepdim=True)).unbind(-1)
    x, y, z = x[..., None], y[..., None], z[..., None]  # broadcast against the colour channel
    sh = coeffs.unbind(-2)

    result = _C0 * sh[0]
    if degree >= 1:
        result = result - _C1 * y * sh[1] + _C1 * z * sh[2] - _C1 * x * sh[3]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        result = (
            result
            + _C2[0] * xy * sh[4]
            + _C2[1] * yz * sh[5]
            + _C2[2] * (2 * zz - xx - yy) * sh[6]
            + _C2[3] * xz * sh[7]
            + _C2[4] * (xx - yy) * sh[8]
        )
    if degree >= 3:
        result = (
            result
            + _C3[0] * y * (3 * xx - yy) * sh[9]
            + _C3[1] * xy * z * sh[10]
            + _C3[2] * y * (4 * zz - xx - yy) * sh[11]
            + _C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[12]
            + _C3[4] * x * (4 * zz - xx - yy) * sh[13]
            + _C3[5] * z * (xx - yy) * sh[14]
            + _C3[6] * x * (xx - 3 * yy) * sh[15]
        )
    if degree >= 4:
        result = (
            result
            + _C4[0] * xy * (xx - yy) * sh[16]
            + _C4[1] * yz * (3 * xx - yy) * sh[17]
            + _C4[2] * xy * (7 * zz - 1) * sh[18]
            + _C4[3] * yz * (7 * zz - 3) * sh[19]
            + _C4[4] * (zz * (35 * zz - 30) + 3) * sh[20]
            + _C4[5] * xz * (7 * zz - 3) * sh[21]
            + _C4[6] * (xx - yy) * (7 * zz - 1) * sh[22]
            + _C4[7] * xz * (xx - 3 * yy) * sh[23]
            + _C4[8] * (xx * (xx - 3 * yy) - yy * (3 * xx - yy)) * sh[24]
        )
    if masks is not None:
        result = torch.where(masks[..., None], result, 0.0)
    return result


# --------------------------------------------------------------------------------------------------------
# 3. Tile binning
# --------------------------------------------------------------------------------------------------------


def isect_ids_of(image: Tensor, tile_in_image: Tensor, depth: Tensor, n_images: int, tiles_per_image: int):
    """gsplat's intersection ids, image | tile | float32 depth bits, or None when image and tile need more
    than 32 bits (gsplat's widths: floor(log2(n)) + 1 bits for n)."""
    tile_bits, image_bits = int(tiles_per_image).bit_length(), int(n_images).bit_length()
    if tile_bits + image_bits > 32:
        return None
    depth_bits = depth.float().view(torch.int32).long() & 0xFFFFFFFF
    return (image << (32 + tile_bits)) | (tile_in_image << 32) | depth_bits


@torch.no_grad()
def bin_gaussians_to_tiles(
    means2d: Tensor,  # [...,N,2] or [nnz,2]
    radii: Tensor,  # [...,N,2] int, or [nnz,2]
    depths: Tensor,  # [...,N] or [nnz]
    tile_size: int,
    tile_width: int,
    tile_height: int,
    image_ids: Tensor | None = None,  # [nnz] (packed entries), each entry's image
    n_images: int | None = None,  # with image_ids
) -> TileBins:
    """List, for every tile, the Gaussians whose screen-space rectangle touches it, front to back.

    Unpacked, one image per leading index; packed (image_ids given), the entries of n_images images.
    Returns ``(tiles_per_gauss [...,N] or [nnz] int32, isect_offsets [...,TH,TW] or [I,TH,TW] int32,
    flatten_ids [M] int32, isect_ids [M] int64 or None)``.
    """
    device = means2d.device
    if image_ids is None:
        batch = depths.shape[:-1]
        N = depths.shape[-1]
        n_img = int(batch.numel())
    else:
        assert n_images is not None
        batch = torch.Size([int(n_images)])
        n_img = int(n_images)
    means2d, radii, depths = means2d.reshape(-1, 2), radii.reshape(-1, 2), depths.reshape(-1)
    E = depths.numel()
    valid = (radii[..., 0] > 0) & (radii[..., 1] > 0)
    r = radii.to(means2d.dtype)
    lo = torch.floor((means2d - r) / tile_size)
    hi = torch.ceil((means2d + r) / tile_size)
    x_min, x_max = lo[..., 0].clamp(0, tile_width).long(), hi[..., 0].clamp(0, tile_width).long()
    y_min, y_max = lo[..., 1].clamp(0, tile_height).long(), hi[..., 1].clamp(0, tile_height).long()
    rect_w = x_max - x_min
    tiles_per_gauss = torch.where(valid, rect_w * (y_max - y_min), 0)  # [E]

    # One entry per (Gaussian, tile) intersection, Gaussians in flat order.
    flat_ids = torch.repeat_interleave(torch.arange(E, device=device), tiles_per_gauss)
    first = torch.cumsum(tiles_per_gauss, 0) - tiles_per_gauss  # first intersection of each Gaussian
    local = torch.arange(flat_ids.numel(), device=device) - first[flat_ids]  # index inside its rectangle
    w = rect_w[flat_ids]
    tile_x = x_min[flat_ids] + local % w
    tile_y = y_min[flat_ids] + local // w
    image = flat_ids // N if image_ids is None else image_ids.long()[flat_ids]
    tile_in_image = tile_y * tile_width + tile_x
    tile_ids = image * (tile_height * tile_width) + tile_in_image

    # Lexicographic (tile, depth, flat id): the entries already ascend in flat id, so two stable sorts
    # (minor key first) give the required order.
    order = torch.sort(depths[flat_ids], stable=True).indices
    order = order[torch.sort(tile_ids[order], stable=True).indices]
    flatten_ids = flat_ids[order]

    # Start of each tile's range: the number of intersections that belong to earlier tiles.
    all_tiles = torch.arange(n_img * tile_height * tile_width, device=device)
    isect_offsets = torch.searchsorted(tile_ids[order], all_tiles)
    isect_ids = isect_ids_of(
        image[order], tile_in_image[order], depths[flatten_ids], n_img, tile_height * tile_width
    )
    return TileBins(
        tiles_per_gauss.reshape(depths.shape if image_ids is not None else (*batch, N)).to(torch.int32),
        isect_offsets.reshape(*batch, tile_height, tile_width).to(torch.int32),
        flatten_ids.to(torch.int32),
        isect_ids,
    )


# --------------------------------------------------------------------------------------------------------
# 4. Rasterization
# --------------------------------------------------------------------------------------------------------

# Upper bound on (tiles x pixels per tile x Gaussians per tile) evaluated at once. About a dozen float
# tensors of this size live during a chunk's backward (~50 MB in float32 for 2**20). Much smaller chunks are
# slower, not faster: every chunk's backward produces full-size gradients for the gathered inputs.
CHUNK_ELEMENTS = 2**20


def _rasterize_tile_chunk(
    means2d: Tensor,  # [C*N,2]
    conics: Tensor,  # [C*N,3]
    colors: Tensor,  # [C*N,D]
    opacities: Tensor,  # [C*N]
    gauss_ids: Tensor,  # [B,K] long, padded with 0
    listed: Tensor,  # [B,K] bool, False for padding
    pix_x: Tensor,  # [B,P] pixel centres
    pix_y: Tensor,  # [B,P]
    absgrad: Tensor | None,  # [C*N,2] buffer or None
) -> tuple[Tensor, Tensor]:
    """Blend B tiles of P pixels, each over its own (depth-sorted) list of K Gaussians.

    Returns the accumulated colour [B,P,D] and the final transmittance [B,P].
    """
    dx, dy = blend_positions(means2d, gauss_ids, pix_x, pix_y, absgrad)
    a, b, c = conics[gauss_ids].unbind(-1)
    sigma = 0.5 * (a[:, None] * dx * dx + c[:, None] * dy * dy) + b[:, None] * dx * dy

    # Skipped entries get sigma = 0 so exp(-sigma) cannot overflow into a NaN gradient.
    sigma_ok = (sigma >= 0) & listed[:, None]
    sigma = torch.where(sigma_ok, sigma, 0.0)
    alpha = torch.clamp(opacities[gauss_ids][:, None] * torch.exp(-sigma), max=MAX_ALPHA)  # [B,P,K]
    weights, _, T_final = blended_weights(alpha, sigma_ok)
    color = torch.einsum("bpk,bkd->bpd", weights, colors[gauss_ids])
    return color, T_final


def composite_tile_lists(
    chunk: Callable[..., tuple[Tensor, ...]],
    inputs: Sequence[Tensor],  # per-entry tensors [E, ...], indexed by flatten_ids
    output_channels: Sequence[int],  # the channel count X of each of the chunk's per-pixel outputs
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,  # [...,TH,TW]: the images
    flatten_ids: Tensor,  # [M]
    chunk_elements: int,
    backgrounds: Tensor | None = None,  # [...,X] of the first output, one per image
) -> tuple[list[Tensor], Tensor]:
    """Run ``chunk`` over every tile's depth-ordered list of entries and assemble the images.

    ``chunk(*inputs, gauss_ids [B,K], listed [B,K], pix_x [B,P], pix_y [B,P])`` blends B tiles of P pixels,
    each over its own K entries, and returns its per-pixel outputs ``[B,P,X]`` (one per
    ``output_channels``) followed by the final transmittance ``[B,P]``. Returns the outputs as images
    ``[...,H,W,X]`` (0 where no entry reaches; the first plus T times ``backgrounds``) and the transmittance
    ``[...,H,W,1]`` (1 there).
    """
    images = isect_offsets.shape[:-2]
    TH, TW = isect_offsets.shape[-2:]
    C = int(torch.Size(images).numel())
    P = tile_size * tile_size
    num_tiles = C * TH * TW
    dtype, device = inputs[0].dtype, inputs[0].device

    # Each tile's range [start, end) in flatten_ids.
    starts = isect_offsets.reshape(-1).long()
    ends = torch.cat([starts[1:], torch.tensor([flatten_ids.numel()], device=device)])
    counts = ends - starts
    flatten_ids = flatten_ids.long()

    # Tiles are processed in chunks of similar list length (longest first) to limit padding; each chunk is
    # checkpointed so that only its outputs are kept for backward.
    tile_order = torch.argsort(counts, descending=True, stable=True)
    num_busy = int((counts > 0).sum())
    counts_sorted = counts[tile_order].tolist()

    # Pixel offsets inside a tile, row-major.
    local = torch.arange(P, device=device)
    local_x, local_y = local % tile_size, local // tile_size

    chunk_tiles: list[Tensor] = []
    chunk_outputs: list[tuple[Tensor, ...]] = []
    i = 0
    while i < num_busy:
        K = counts_sorted[i]
        tiles = tile_order[i : min(num_busy, i + max(1, chunk_elements // (P * K)))]
        i += tiles.numel()

        slot = torch.arange(K, device=device)
        listed = slot < counts[tiles, None]  # [B,K]
        # Padding slots point at entry 0; `listed` removes them from the blend.
        positions = (starts[tiles, None] + slot).clamp(max=flatten_ids.numel() - 1)
        gauss_ids = torch.where(listed, flatten_ids[positions], 0)
        tile_x, tile_y = tiles % TW, (tiles // TW) % TH
        pix_x = (tile_x[:, None] * tile_size + local_x).to(dtype) + 0.5
        pix_y = (tile_y[:, None] * tile_size + local_y).to(dtype) + 0.5
        outputs = checkpoint(chunk, *inputs, gauss_ids, listed, pix_x, pix_y, use_reentrant=False)
        chunk_tiles.append(tiles)
        chunk_outputs.append(outputs)

    def to_image(per_tile: Tensor) -> Tensor:
        """[I*TH*TW, P, X] -> [...,H,W,X], dropping pixels past the border."""
        X = per_tile.shape[-1]
        img = per_tile.reshape(C, TH, TW, tile_size, tile_size, X).permute(0, 1, 3, 2, 4, 5)
        return img.reshape(C, TH * tile_size, TW * tile_size, X)[:, :height, :width].reshape(
            *images, height, width, X
        )

    # Tiles without entries keep 0 and transmittance 1.
    busy = torch.cat(chunk_tiles) if chunk_tiles else None
    result = []
    for k, X in enumerate(output_channels):
        per_tile = torch.zeros(num_tiles, P, X, dtype=dtype, device=device)
        if busy is not None:
            per_tile = per_tile.index_copy(0, busy, torch.cat([out[k] for out in chunk_outputs]))
        result.append(to_image(per_tile))
    tile_T = torch.ones(num_tiles, P, dtype=dtype, device=device)
    if busy is not None:
        tile_T = tile_T.index_copy(0, busy, torch.cat([out[-1] for out in chunk_outputs]))
    T = to_image(tile_T[..., None])
    if backgrounds is not None:
        result[0] = result[0] + T * backgrounds.reshape(*images, 1, 1, output_channels[0])
    return result, T


def rasterize_to_pixels(
    means2d: Tensor,  # [...,N,2] or [nnz,2]
    conics: Tensor,  # [...,N,3] or [nnz,3]
    colors: Tensor,  # [...,N,D] or [nnz,D]
    opacities: Tensor,  # [...,N] or [nnz]
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,  # [...,TH,TW]: the images
    flatten_ids: Tensor,  # [M], into the flattened Gaussians
    backgrounds: Tensor | None = None,  # [...,D], one per image
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Alpha-composite the binned Gaussians front to back.

    Returns ``(render_colors [...,H,W,D], render_alphas [...,H,W,1])`` with the images of isect_offsets.
    With ``absgrad=True`` the tensor ``means2d.absgrad`` (its shape) holds, after backward, the sum over
    pixels of |d loss / d means2d|.
    """
    D = colors.shape[-1]
    absgrad_buffer = absgrad_accumulator(means2d) if absgrad else None
    # The absgrad buffer is bound rather than passed as an input: checkpoint would save it and then refuse
    # the in-place accumulation done by the other chunks' backward.
    (render_colors,), T = composite_tile_lists(
        functools.partial(_rasterize_tile_chunk, absgrad=absgrad_buffer),
        (means2d.reshape(-1, 2), conics.reshape(-1, 3), colors.reshape(-1, D), opacities.reshape(-1)),
        (D,),
        width,
        height,
        tile_size,
        isect_offsets,
        flatten_ids,
        CHUNK_ELEMENTS,
        backgrounds,
    )
    return render_colors, 1 - T


def absgrad_accumulator(means2d: Tensor) -> Tensor:
    """A zero buffer the rasterizer's backward adds |per-pixel gradient of means2d| to, also set as
    ``means2d.absgrad`` (gsplat's attribute)."""
    buffer = torch.zeros(means2d.numel() // 2, 2, dtype=means2d.dtype, device=means2d.device)
    means2d.absgrad = buffer.view(means2d.shape)  # type: ignore[attr-defined]
    return buffer


def blend_positions(
    means2d: Tensor, gauss_ids: Tensor, pix_x: Tensor, pix_y: Tensor, absgrad: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(dx, dy)`` [B,P,K]: each listed mean minus each pixel centre. With an absgrad buffer, each
    pixel gets its own copy of the mean, whose gradient magnitude the buffer accumulates."""
    B, P = pix_x.shape
    K = gauss_ids.shape[1]
    mean = means2d[gauss_ids]  # [B,K,2]
    if absgrad is None:
        return mean[:, None, :, 0] - pix_x[..., None], mean[:, None, :, 1] - pix_y[..., None]
    mean = mean[:, None].expand(B, P, K, 2)
    ids = gauss_ids[:, None].expand(B, P, K)

    def accumulate_abs(grad: Tensor) -> None:
        absgrad.index_put_((ids,), grad.abs(), accumulate=True)

    mean.register_hook(accumulate_abs)
    return mean[..., 0] - pix_x[..., None], mean[..., 1] - pix_y[..., None]


def blended_weights(alpha: Tensor, candidate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Front-to-back blending of [B,P,K] alphas where ``candidate`` (not skipped for its sigma or list).

    Returns ``(weights, T_before, T_final)``: each entry's weight alpha * T (0 for the entries the
    sequential loop would not blend), the transmittance before it, and the final transmittance [B,P].
    """
    # Which entries the sequential loop would blend: those not skipped, up to (excluding) the first whose
    # blending would bring the transmittance to <= 1e-4. Transmittance never increases, so every later one
    # is excluded too. (CPU cumprod accumulates float32 in double, so a product can differ from a float32
    # loop in the last bit; the decision can only differ when T lands within rounding of 1e-4.)
    with torch.no_grad():
        blendable = candidate & (alpha >= 1.0 / 255.0)
        T_if_blended = torch.cumprod(1 - alpha * blendable, dim=-1)
        blended = blendable & (T_if_blended > 1e-4)
    # weight_k = alpha_k * prod_{j<k} (1 - alpha_j); factors are >= 1 - MAX_ALPHA, so cumprod's backward is
    # well conditioned.
    alpha = torch.where(blended, alpha, 0.0)
    T = torch.cumprod(1 - alpha, dim=-1)
    T_before = torch.cat([torch.ones_like(T[..., :1]), T[..., :-1]], dim=-1)
    return alpha * T_before, T_before, T[..., -1]
