"""2D Gaussian splatting, a drop-in replacement for ``gsplat.rasterization_2dgs`` (gsplat 1.5.3).

The pipeline of ``rasterization`` with surfels: ``project_gaussians_2dgs`` (ray transforms and normals
instead of conics), the SH and binning ops shared with 3DGS, and ``rasterize_to_pixels_2dgs`` (exact
ray-surfel intersection; also normals, distortion and median depth). Each 2DGS op exists in
``reference_2dgs`` (plain PyTorch) and ``ops_2dgs`` (compiled, hand-written backward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .limits import MAX_SH_DEGREE, MAX_TILE_SIZE
from .pipeline import (
    BACKENDS,
    HALF_DTYPES,
    RENDER_MODES,
    _batch_dims,
    _camera_positions,
    _check_choice,
    _check_color_shapes,
    _check_dtype_device,
    _check_finite,
    _check_int,
    _check_real,
    _check_shape,
    _Dims,
    _select_backend,
    _zero_link,
)

__all__ = ["DEPTH_MODES", "depth_to_normal", "depth_to_points", "rasterization_2dgs"]

DEPTH_MODES = ("expected", "median")


def depth_to_points(depths: Tensor, camtoworlds: Tensor, Ks: Tensor) -> Tensor:
    """World points [..., H, W, 3] of z-depth maps [..., H, W, 1] seen by cameras camtoworlds [..., 4, 4] with
    intrinsics Ks [..., 3, 3] (through the pixel centres), as gsplat's ``depth_to_points``."""
    height, width = depths.shape[-3:-1]
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=depths.dtype, device=depths.device) + 0.5,
        torch.arange(width, dtype=depths.dtype, device=depths.device) + 0.5,
        indexing="ij",
    )
    fx, fy = Ks[..., 0, 0, None, None], Ks[..., 1, 1, None, None]
    cx, cy = Ks[..., 0, 2, None, None], Ks[..., 1, 2, None, None]
    camera_dirs = torch.stack([(xs - cx) / fx, (ys - cy) / fy, torch.ones_like((xs - cx) / fx)], dim=-1)
    directions = torch.einsum("...ij,...hwj->...hwi", camtoworlds[..., :3, :3], camera_dirs)
    return camtoworlds[..., None, None, :3, 3] + depths * directions


def depth_to_normal(depths: Tensor, camtoworlds: Tensor, Ks: Tensor) -> Tensor:
    """World-space unit normals [..., H, W, 3] of z-depth maps [..., H, W, 1], from central differences of
    their points (0 on the one-pixel border), as gsplat's ``depth_to_normal``."""
    points = depth_to_points(depths, camtoworlds, Ks)
    down = points[..., 2:, 1:-1, :] - points[..., :-2, 1:-1, :]
    right = points[..., 1:-1, 2:, :] - points[..., 1:-1, :-2, :]
    normals = F.normalize(torch.linalg.cross(down, right), dim=-1)
    return F.pad(normals, (0, 0, 1, 1, 1, 1), value=0.0)


def rasterization_2dgs(
    means: Tensor,  # [..., N, 3]
    quats: Tensor,  # [..., N, 4] wxyz, any norm
    scales: Tensor,  # [..., N, 3] (the third is unused)
    opacities: Tensor,  # [..., N]
    colors: Tensor,  # [..., (C,) N, D] or [..., (C,) N, K, 3] SH coefficients
    viewmats: Tensor,  # [..., C, 4, 4] world-to-camera
    Ks: Tensor,  # [..., C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = False,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [..., C, D]
    render_mode: str = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    distloss: bool = False,
    depth_mode: str = "expected",
    *,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor, Tensor, dict]:
    """Rasterize N surfels (2D Gaussians) into C images, with the signature, outputs and meta keys of
    ``gsplat.rasterization_2dgs`` 1.5.3.

    Returns ``(render_colors [..., C, H, W, X], render_alphas [..., C, H, W, 1], render_normals
    [..., C, H, W, 3] (world space, weighted by the blending weights), surf_normals, render_distort
    [..., C, H, W, 1], render_median [..., C, H, W, 1], meta)``. ``surf_normals`` are the world normals of
    the rendered depth (``depth_mode``: the expected or D depth channel, or the median depth), in the
    "RGB+D" and "RGB+ED" modes only (None otherwise), shaped as gsplat returns them: ``[..., C, H, W, 3]``
    with a leading dimension of size 1 removed. ``render_distort`` is the depth distortion
    sum_ij w_i w_j |d_i - d_j| per pixel (computed in every mode; ``distloss`` only checks that the mode
    renders depth, as gsplat). ``eps2d`` is unused (surfels have their own low-pass filter), as in gsplat.
    ``packed=True`` gives gsplat's packed meta (a row per visible pair) from the dense projection;
    ``sparse_grad`` is not implemented. Unlike gsplat, the intrinsics ``Ks`` get gradients too.
    ``backend`` is "auto" (compiled when built), "cpp" or "reference".
    """
    # ---- scalar / mode arguments --------------------------------------------------------------
    render_mode = _check_choice("render_mode", render_mode, RENDER_MODES)
    depth_mode = _check_choice("depth_mode", depth_mode, DEPTH_MODES)
    backend = _check_choice("backend", backend, BACKENDS)
    width = _check_int("width", width, 1, integral_float=True)
    height = _check_int("height", height, 1, integral_float=True)
    tile_size = _check_int("tile_size", tile_size, 1, MAX_TILE_SIZE)
    if sh_degree is not None:
        sh_degree = _check_int("sh_degree", sh_degree, 0, MAX_SH_DEGREE)
    near_plane = _check_real("near_plane", near_plane)
    far_plane = _check_real("far_plane", far_plane, allow_inf=True)
    radius_clip = _check_real("radius_clip", radius_clip)
    _check_real("eps2d", eps2d)
    if bool(distloss) and render_mode not in ("D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(
            f"distloss: the distortion loss needs a depth render mode (D, ED, RGB+D or RGB+ED), got "
            f"render_mode={render_mode!r}"
        )
    if sparse_grad:
        raise NotImplementedError("sparse_grad: sparse gradients are not implemented for rasterization_2dgs")
    absgrad, packed = bool(absgrad), bool(packed)

    # ---- tensor shapes ------------------------------------------------------------------------
    batch = _batch_dims(means)
    dims = _Dims()
    dims.mins["C"] = (1, "at least one camera")
    dims.mins["D"] = (1, "at least one channel")
    _check_shape("means", means, [(*batch, "N", 3)], dims)
    _check_shape("quats", quats, [(*batch, "N", 4)], dims)
    _check_shape("scales", scales, [(*batch, "N", 3)], dims)
    _check_shape("opacities", opacities, [(*batch, "N")], dims)
    _check_shape("viewmats", viewmats, [(*batch, "C", 4, 4)], dims)
    _check_shape("Ks", Ks, [(*batch, "C", 3, 3)], dims)
    per_camera_colors = _check_color_shapes(colors, None, backgrounds, sh_degree, render_mode, batch, dims)
    N = dims.sizes["N"][0]
    C = dims.sizes["C"][0]
    B = math.prod(batch)

    # ---- dtypes, devices, values --------------------------------------------------------------
    float_inputs = {
        "means": means,
        "quats": quats,
        "scales": scales,
        "opacities": opacities,
        "colors": colors,
        "viewmats": viewmats,
        "Ks": Ks,
        "backgrounds": backgrounds,
    }
    _check_dtype_device(float_inputs)
    _check_finite(float_inputs)
    if any(x is not None and x.dtype in HALF_DTYPES for x in float_inputs.values()):
        means, quats, scales, opacities, colors, viewmats, Ks = (
            x.float() for x in (means, quats, scales, opacities, colors, viewmats, Ks)
        )
        backgrounds = None if backgrounds is None else backgrounds.float()
    if render_mode in ("D", "ED"):
        backgrounds = None  # depth on a zero background, as rasterization

    # The camera-to-world matrices turn the normals to world space and give the SH view directions;
    # _camera_positions names a singular viewmat in its ValueError.
    _camera_positions(viewmats)
    camtoworlds = torch.linalg.inv(viewmats)

    impl, backend_used = _select_backend(backend, means.device)
    ops2d = _ops_2dgs(backend_used)
    tile_width = math.ceil(width / tile_size)
    tile_height = math.ceil(height / tile_size)
    device = means.device

    # ---- 1. projection -------------------------------------------------------------------------
    if N > 0:
        radii, means2d, depths, ray_transforms, normals = ops2d.project_gaussians_2dgs(
            means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane, radius_clip
        )
    else:
        radii = torch.zeros((*batch, C, 0, 2), dtype=torch.int32, device=device)
        means2d = means.new_zeros((*batch, C, 0, 2))
        depths = means.new_zeros((*batch, C, 0))
        ray_transforms = means.new_zeros((*batch, C, 0, 3, 3))
        normals = means.new_zeros((*batch, C, 0, 3))
    opacities_used = opacities[..., None, :].expand(*batch, C, N)

    # ---- 2. colours --------------------------------------------------------------------------------
    visible = (radii > 0).all(dim=-1)  # [..., C, N]
    if sh_degree is None:
        colors_used = colors if per_camera_colors else colors[..., None, :, :].expand(*batch, C, N, -1)
    elif N > 0:
        dirs = means[..., None, :, :] - camtoworlds[..., :, None, :3, 3]
        coeffs = (
            colors if per_camera_colors else colors[..., None, :, :, :].expand(*batch, C, *colors.shape[-3:])
        )
        colors_used = impl.spherical_harmonics(
            sh_degree, dirs.contiguous(), coeffs.contiguous(), masks=visible
        )
        colors_used = torch.clamp_min(colors_used + 0.5, 0.0)
    else:
        colors_used = means.new_zeros((*batch, C, 0, 3))
    if render_mode in ("RGB+D", "RGB+ED"):
        colors_used = torch.cat([colors_used, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros((*batch, C, 1))], dim=-1)
    elif render_mode in ("D", "ED"):
        colors_used = depths[..., None]
    n_channels = colors_used.shape[-1]

    # ---- packed: the visible pairs only ------------------------------------------------------------
    batch_ids = camera_ids = gaussian_ids = image_ids = None
    entries: tuple[Tensor, ...] = (
        radii,
        means2d,
        depths,
        ray_transforms,
        normals,
        opacities_used,
        colors_used,
    )
    if packed:
        pair = torch.nonzero(visible.reshape(-1)).flatten()  # (batch, camera, Gaussian) order
        batch_ids, camera_ids, gaussian_ids = pair // (C * N), (pair // max(N, 1)) % C, pair % max(N, 1)
        image_ids = batch_ids * C + camera_ids
        entries = tuple(
            x.reshape(B * C * N, *x.shape[len(batch) + 2 :]).index_select(0, pair) for x in entries
        )
    radii, means2d, depths, ray_transforms, normals, opacities_used, colors_used = (
        x.contiguous() for x in entries
    )

    # gsplat's densification signal (meta["gradient_2dgs"]): d loss / d (projected centre) in pixels. A zero
    # tensor whose gradient is that of the centre through the ray transform's third column, whose first two
    # entries are centre * depth.
    densify = torch.zeros_like(means2d, requires_grad=means.requires_grad)
    if means.requires_grad:
        shift = densify * depths.detach()[..., None]
        column = torch.cat([shift, torch.zeros_like(depths)[..., None]], dim=-1)[..., None]
        ray_transforms = ray_transforms + F.pad(column, (2, 0))

    # ---- 3. tile binning -------------------------------------------------------------------------
    if depths.numel() > 0:
        tiles_per_gauss, isect_offsets, flatten_ids, isect_ids = impl.bin_gaussians_to_tiles(
            means2d, radii, depths, tile_size, tile_width, tile_height, image_ids=image_ids, n_images=B * C
        )
        isect_offsets = isect_offsets.reshape(*batch, C, tile_height, tile_width)
    else:
        tiles_per_gauss = torch.zeros(depths.shape, dtype=torch.int32, device=device)
        isect_offsets = torch.zeros((*batch, C, tile_height, tile_width), dtype=torch.int32, device=device)
        flatten_ids = torch.zeros((0,), dtype=torch.int32, device=device)
        isect_ids = torch.zeros((0,), dtype=torch.int64, device=device)
    n_isects = int(flatten_ids.numel())
    if means2d.requires_grad:
        means2d.retain_grad()

    # ---- 4. rasterization ------------------------------------------------------------------------
    if n_isects > 0:
        render_colors, render_alphas, camera_normals, render_distort, render_median = (
            ops2d.rasterize_to_pixels_2dgs(
                means2d,
                ray_transforms,
                colors_used,
                opacities_used,
                normals,
                depths,
                width,
                height,
                tile_size,
                isect_offsets,
                flatten_ids,
                backgrounds=backgrounds,
                absgrad=absgrad,
            )
        )
    else:
        image_shape = (*batch, C, height, width)
        if backgrounds is not None:
            render_colors = backgrounds[..., None, None, :].expand(*image_shape, n_channels).contiguous()
        else:
            render_colors = means.new_zeros((*image_shape, n_channels))
        render_alphas = means.new_zeros((*image_shape, 1))
        camera_normals = means.new_zeros((*image_shape, 3))
        render_distort = means.new_zeros((*image_shape, 1))
        render_median = means.new_zeros((*image_shape, 1))
        link = _zero_link(
            (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds, densify)
            + (means2d, depths, ray_transforms, normals, colors_used)
        )
        if link is not None:
            render_colors, render_alphas, camera_normals = (
                x + link for x in (render_colors, render_alphas, camera_normals)
            )
            render_distort, render_median = render_distort + link, render_median + link
        if absgrad:
            means2d.absgrad = torch.zeros_like(means2d.detach())  # type: ignore[attr-defined]

    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    surf_normals = None
    if render_mode in ("RGB+D", "RGB+ED"):
        depth_for_normal = render_colors[..., -1:] if depth_mode == "expected" else render_median
        # gsplat squeezes a leading dimension of size 1 (one camera, no batch: [H, W, 3]).
        surf_normals = depth_to_normal(depth_for_normal, camtoworlds, Ks).squeeze(0)
    render_normals = torch.einsum("...ij,...hwj->...hwi", camtoworlds[..., :3, :3], camera_normals)

    meta = {
        "batch_ids": batch_ids,
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "ray_transforms": ray_transforms,
        "opacities": opacities_used,
        "normals": normals,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": isect_ids,
        "flatten_ids": flatten_ids,
        "isect_offsets": isect_offsets,
        "n_isects": n_isects,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_batches": B,
        "n_cameras": C,
        "render_distort": render_distort,
        "gradient_2dgs": densify,
        "render_mode": render_mode,
        "backend": backend_used,
    }
    return render_colors, render_alphas, render_normals, surf_normals, render_distort, render_median, meta


def _ops_2dgs(backend_used: str):
    """The module providing the two 2DGS ops for the backend ``_select_backend`` chose."""
    if backend_used == "reference":
        from . import reference_2dgs

        return reference_2dgs
    from . import ops_2dgs

    return ops_2dgs
