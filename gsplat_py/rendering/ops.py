"""Autograd wrappers around the compiled ops (torch.ops.gsplat_py.*), with the same signatures as
gsplat_py.reference. Backward passes are the hand-written C++ ones.

Leading batch dimensions are flattened to one before the ops are called (means [..., N, 3] becomes
[B, N, 3], viewmats [..., C, 4, 4] becomes [B, C, 4, 4]) and restored on the outputs and gradients.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ._backend import require_extension
from .results import PackedProjection, TileBins

CAMERA_MODELS = {"pinhole": 0, "ortho": 1, "fisheye": 2}


def _ops():
    require_extension()
    return torch.ops.gsplat_py


def simd_level() -> str:
    """Instruction-set level of the rasterizer kernels in use: "x86-64-v4" (AVX-512), "x86-64-v3"
    (AVX2+FMA) or "baseline" (SSE2), or "neon" on aarch64; chosen at load time, or lowered with
    GSPLAT_PY_SIMD=<level>."""
    return _ops().simd_level()


def _camera_model_id(camera_model: str) -> int:
    if camera_model not in CAMERA_MODELS:
        raise NotImplementedError(
            f"camera_model={camera_model!r} is not implemented; supported: {sorted(CAMERA_MODELS)}"
        )
    return CAMERA_MODELS[camera_model]


class _Inputs(NamedTuple):
    """The projection's tensors with one batch dimension: means [B, N, 3], quats [B, N, 4] and scales
    [B, N, 3] or covars [B, N, 6], viewmats [B, C, 4, 4], Ks [B, C, 3, 3], radial_coeffs [B, C, 4]."""

    means: Tensor
    quats: Tensor | None
    scales: Tensor | None
    covars: Tensor | None
    viewmats: Tensor
    Ks: Tensor
    radial_coeffs: Tensor | None


def _flatten(means, quats, scales, covars, viewmats, Ks, radial_coeffs) -> _Inputs:
    B, N, C = math.prod(means.shape[:-2]), means.shape[-2], viewmats.shape[-3]

    def flat(t: Tensor, *tail: int) -> Tensor:
        return t.reshape(B, *tail).contiguous()

    def flat_optional(t: Tensor | None, *tail: int) -> Tensor | None:
        return None if t is None else flat(t, *tail)

    if covars is not None:
        quats = scales = None
    return _Inputs(
        flat(means, N, 3),
        flat_optional(quats, N, 4),
        flat_optional(scales, N, 3),
        flat_optional(covars, N, 6),
        flat(viewmats, C, 4, 4),
        flat(Ks, C, 3, 3),
        None if radial_coeffs is None else flat(radial_coeffs.detach(), C, 4),
    )


def _flat_opacities(opacities: Tensor | None, means: Tensor) -> Tensor | None:
    return None if opacities is None else opacities.detach().reshape(means.shape[:-1]).contiguous()


class _Settings(NamedTuple):
    width: int
    height: int
    eps2d: float
    near_plane: float
    far_plane: float
    radius_clip: float
    calc_compensations: bool
    camera_model: int


def _camera_gradients(ctx, grads, shapes, camera_grads: bool) -> tuple:
    """The gradients of (viewmats, Ks) in the shapes of those inputs; None where not needed."""
    return tuple(
        grad.reshape(shape) if camera_grads and needed else None
        for grad, shape, needed in zip(grads[4:6], shapes[4:6], ctx.needs_input_grad[4:6])
    )


def _input_gradients(ctx, grads, shapes, camera_grads: bool) -> tuple:
    """The gradients of (means, quats, scales, covars, viewmats, Ks) in the shapes of those inputs; None
    where an input is absent or needs none."""
    v_gaussians = tuple(
        grad.reshape(shape) if shape is not None and needed else None
        for grad, shape, needed in zip(grads[:4], shapes[:4], ctx.needs_input_grad[:4])
    )
    return v_gaussians + _camera_gradients(ctx, grads, shapes, camera_grads)


class _ProjectGaussians(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, covars, viewmats, Ks, opacities, radial_coeffs, settings):
        flat = _flatten(means, quats, scales, covars, viewmats, Ks, radial_coeffs)
        radii, means2d, depths, conics, compensations = _ops().project_gaussians_forward(
            flat.means,
            flat.quats,
            flat.scales,
            flat.covars,
            _flat_opacities(opacities, flat.means),
            flat.viewmats,
            flat.Ks,
            flat.radial_coeffs,
            *settings,
        )
        ctx.save_for_backward(*flat, radii)
        ctx.settings = settings
        ctx.shapes = [None if t is None else t.shape for t in (means, quats, scales, covars, viewmats, Ks)]
        ctx.mark_non_differentiable(radii)
        shape = viewmats.shape[:-2] + means.shape[-2:-1]  # [..., C, N]
        return (
            radii.reshape(*shape, 2),
            means2d.reshape(*shape, 2),
            depths.reshape(shape),
            conics.reshape(*shape, 3),
            compensations.reshape(shape),
        )

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics, v_compensations):
        *inputs, radii = ctx.saved_tensors
        s: _Settings = ctx.settings
        # Camera gradients sum over every Gaussian: skipped unless a camera input needs them.
        camera_grads = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        grads = _ops().project_gaussians_backward(
            *inputs,
            s.width,
            s.height,
            s.eps2d,
            s.camera_model,
            radii,
            v_means2d,
            v_depths,
            v_conics,
            v_compensations if s.calc_compensations else None,
            camera_grads,
        )
        return _input_gradients(ctx, grads, ctx.shapes, camera_grads) + (None, None, None)


def _settings(width, height, eps2d, near_plane, far_plane, radius_clip, calc_compensations, camera_model):
    return _Settings(
        int(width),
        int(height),
        float(eps2d),
        float(near_plane),
        float(far_plane),
        float(radius_clip),
        bool(calc_compensations),
        _camera_model_id(camera_model),
    )


def project_gaussians(
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
):
    """EWA projection of Gaussians into cameras, every (camera, Gaussian) pair; see docs/architecture.md.

    means [..., N, 3]; quats [..., N, 4] and scales [..., N, 3], or covars [..., N, 6] (upper triangle
    xx, xy, xz, yy, yz, zz); viewmats [..., C, 4, 4], Ks [..., C, 3, 3]; radial_coeffs [..., C, 4] (fisheye
    k1..k4). Returns (radii [..., C, N, 2] int32, means2d [..., C, N, 2], depths [..., C, N],
    conics [..., C, N, 3], compensations [..., C, N] or None).
    """
    settings = _settings(
        width, height, eps2d, near_plane, far_plane, radius_clip, calc_compensations, camera_model
    )
    radii, means2d, depths, conics, compensations = _ProjectGaussians.apply(
        means, quats, scales, covars, viewmats, Ks, opacities, radial_coeffs, settings
    )
    return radii, means2d, depths, conics, (compensations if calc_compensations else None)


def _sparse_rows(
    values: Tensor, batch_ids: Tensor, gaussian_ids: Tensor, shape: torch.Size, coalesced: bool
) -> Tensor:
    """A COO tensor of `shape` ([..., N, X]) holding one row of `values` per packed entry."""
    batch = shape[:-2]
    indices = list(torch.unravel_index(batch_ids, batch)) if batch else []
    indices.append(gaussian_ids)
    return torch.sparse_coo_tensor(
        torch.stack(indices), values, shape, is_coalesced=coalesced, check_invariants=False
    )


class _ProjectGaussiansPacked(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, means, quats, scales, covars, viewmats, Ks, opacities, radial_coeffs, settings, sparse_grad
    ):
        flat = _flatten(means, quats, scales, covars, viewmats, Ks, radial_coeffs)
        outputs = _ops().project_gaussians_packed_forward(
            flat.means,
            flat.quats,
            flat.scales,
            flat.covars,
            _flat_opacities(opacities, flat.means),
            flat.viewmats,
            flat.Ks,
            flat.radial_coeffs,
            *settings,
        )
        ctx.save_for_backward(*flat, *outputs[:3])
        ctx.settings = settings
        ctx.sparse_grad = sparse_grad
        ctx.shapes = [None if t is None else t.shape for t in (means, quats, scales, covars, viewmats, Ks)]
        ctx.mark_non_differentiable(*outputs[:4])
        return tuple(outputs)

    @staticmethod
    def backward(ctx, _v_b, _v_c, _v_g, _v_radii, v_means2d, v_depths, v_conics, v_compensations):
        *inputs, batch_ids, camera_ids, gaussian_ids = ctx.saved_tensors
        s: _Settings = ctx.settings
        camera_grads = ctx.needs_input_grad[4] or ctx.needs_input_grad[5]
        grads = list(
            _ops().project_gaussians_packed_backward(
                *inputs,
                s.width,
                s.height,
                s.eps2d,
                s.camera_model,
                batch_ids,
                camera_ids,
                gaussian_ids,
                v_means2d,
                v_depths,
                v_conics,
                v_compensations if s.calc_compensations else None,
                camera_grads,
                ctx.sparse_grad,
            )
        )
        if ctx.sparse_grad:
            coalesced = inputs[4].shape[1] == 1  # one camera per batch: each Gaussian at most once, in order
            sparse = [
                None
                if shape is None or not needed
                else _sparse_rows(grad, batch_ids, gaussian_ids, shape, coalesced)
                for grad, shape, needed in zip(grads[:4], ctx.shapes[:4], ctx.needs_input_grad[:4])
            ]
            cameras = _camera_gradients(ctx, grads, ctx.shapes, camera_grads)
            return tuple(sparse) + cameras + (None, None, None, None)
        return _input_gradients(ctx, grads, ctx.shapes, camera_grads) + (None, None, None, None)


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
    """`project_gaussians` keeping only the visible pairs: the dense [..., C, N] outputs never exist.

    With sparse_grad, the gradients of means, quats, scales and covars are sparse COO tensors with a row
    per visible pair (uncoalesced when a Gaussian is seen by several cameras).
    """
    settings = _settings(
        width, height, eps2d, near_plane, far_plane, radius_clip, calc_compensations, camera_model
    )
    outputs = _ProjectGaussiansPacked.apply(
        means, quats, scales, covars, viewmats, Ks, opacities, radial_coeffs, settings, bool(sparse_grad)
    )
    batch_ids, camera_ids, gaussian_ids, radii, means2d, depths, conics, compensations = outputs
    return PackedProjection(
        batch_ids,
        camera_ids,
        gaussian_ids,
        radii,
        means2d,
        depths,
        conics,
        compensations if calc_compensations else None,
    )


class _SphericalHarmonics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dirs, coeffs, coeffs_rest, degree, coeff_rows, masks):
        colors = _ops().spherical_harmonics_forward(degree, dirs, coeffs, coeff_rows, masks, coeffs_rest)
        ctx.save_for_backward(dirs, coeffs, coeffs_rest)
        ctx.degree = degree
        ctx.coeff_rows, ctx.masks = coeff_rows, masks  # not differentiable: kept as they are
        return colors

    @staticmethod
    def backward(ctx, v_colors):
        dirs, coeffs, coeffs_rest = ctx.saved_tensors
        v_dirs, v_coeffs, *v_rest = _ops().spherical_harmonics_backward(
            ctx.degree, dirs, coeffs, ctx.coeff_rows, ctx.masks, v_colors, coeffs_rest
        )
        return v_dirs, v_coeffs, (v_rest[0] if v_rest else None), None, None, None


def spherical_harmonics(
    degree: int,
    dirs: Tensor,
    coeffs: Tensor,
    masks: Tensor | None = None,
    coeff_rows: Tensor | None = None,
    coeffs_rest: Tensor | None = None,
) -> Tensor:
    """Raw SH colour (no +0.5, no clamp) of directions dirs [...,3] with coefficients [...,K,3].

    With coeff_rows [...] (distinct integers), direction i uses coeffs.reshape(-1, K, 3)[coeff_rows[i]]
    instead: coefficients shared by many directions are read in place rather than gathered.
    With coeffs_rest [..., K - 1, 3], coeffs holds only the first basis [..., 1, 3]: the same as passing
    ``torch.cat([coeffs, coeffs_rest], -2)``, without that copy and the split of its gradient.
    """
    batch = dirs.shape[:-1]
    flat_dirs = dirs.reshape(-1, 3).contiguous()
    flat_coeffs = coeffs.reshape(-1, coeffs.shape[-2], 3).contiguous()
    flat_rest = None
    if coeffs_rest is not None:  # rows as coeffs (-1 cannot size an empty [R, 0, 3])
        flat_rest = coeffs_rest.reshape(flat_coeffs.shape[0], coeffs_rest.shape[-2], 3).contiguous()
    flat_masks = masks.reshape(-1).contiguous().bool() if masks is not None else None
    rows = coeff_rows.reshape(-1).contiguous().long() if coeff_rows is not None else None
    colors = _SphericalHarmonics.apply(flat_dirs, flat_coeffs, flat_rest, int(degree), rows, flat_masks)
    return colors.reshape(*batch, 3)


def bin_gaussians_to_tiles(
    means2d: Tensor,
    radii: Tensor,
    depths: Tensor,
    tile_size: int,
    tile_width: int,
    tile_height: int,
    image_ids: Tensor | None = None,
    n_images: int | None = None,
) -> TileBins:
    """The tiles each projected Gaussian touches, each tile's list sorted by depth; not differentiable.

    Unpacked: means2d [..., N, 2], radii [..., N, 2], depths [..., N], one image per leading index.
    Packed: means2d [nnz, 2], radii [nnz, 2], depths [nnz], image_ids [nnz] (in 0..n_images-1).
    """
    if image_ids is None:
        batch = depths.shape[:-1]
        n_images = math.prod(batch)
        image_ids_arg = None
    else:
        batch = torch.Size([int(n_images)])  # type: ignore[arg-type]
        image_ids_arg = image_ids.contiguous().long()
    tiles_per_gauss, isect_offsets, flatten_ids, isect_ids = _ops().bin_gaussians_to_tiles(
        means2d.detach().contiguous(),
        radii.contiguous(),
        depths.detach().contiguous(),
        image_ids_arg,
        int(n_images),  # type: ignore[arg-type]
        int(tile_size),
        int(tile_width),
        int(tile_height),
    )
    encoded = isect_ids.numel() == flatten_ids.numel()  # empty when the ids do not fit in 64 bits
    return TileBins(
        tiles_per_gauss,
        isect_offsets.reshape(*batch, int(tile_height), int(tile_width)),
        flatten_ids,
        isect_ids if encoded else None,
    )


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        means2d,
        conics,
        colors,
        opacities,
        backgrounds,
        width,
        height,
        tile_size,
        isect_offsets,
        flatten_ids,
        absgrad,
        absgrad_holder,
    ):
        render_colors, render_alphas, transmittance, last_ids = _ops().rasterize_forward(
            means2d,
            conics,
            colors,
            opacities,
            backgrounds,
            width,
            height,
            tile_size,
            isect_offsets,
            flatten_ids,
        )
        ctx.save_for_backward(
            means2d,
            conics,
            colors,
            opacities,
            isect_offsets,
            flatten_ids,
            transmittance,
            last_ids,
            backgrounds if backgrounds is not None else means2d.new_empty(0),
        )
        ctx.has_backgrounds = backgrounds is not None
        ctx.settings = (width, height, tile_size, absgrad)
        ctx.absgrad_holder = absgrad_holder
        return render_colors, render_alphas

    @staticmethod
    def backward(ctx, v_render_colors, v_render_alphas):
        (
            means2d,
            conics,
            colors,
            opacities,
            isect_offsets,
            flatten_ids,
            transmittance,
            last_ids,
            backgrounds,
        ) = ctx.saved_tensors
        width, height, tile_size, absgrad = ctx.settings
        backgrounds = backgrounds if ctx.has_backgrounds else None
        (v_means2d, v_means2d_abs, v_conics, v_colors, v_opacities, v_backgrounds) = (
            _ops().rasterize_backward(
                means2d,
                conics,
                colors,
                opacities,
                backgrounds,
                width,
                height,
                tile_size,
                isect_offsets,
                flatten_ids,
                transmittance,
                last_ids,
                v_render_colors,
                v_render_alphas[..., 0],
                absgrad,
            )
        )
        if absgrad:
            holder = ctx.absgrad_holder[0]
            holder.absgrad = v_means2d_abs.reshape(holder.shape)
        return (
            v_means2d,
            v_conics,
            v_colors,
            v_opacities,
            v_backgrounds if backgrounds is not None else None,
        ) + (None,) * 7


def rasterize_to_pixels(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
) -> tuple[Tensor, Tensor]:
    """Tile-based front-to-back alpha blending of the binned Gaussians into the images of isect_offsets
    [..., TH, TW]; (render_colors [..., H, W, D], render_alphas [..., H, W, 1]).

    The Gaussians are rows: means2d [..., N, 2] (or packed [nnz, 2]), conics [..., 3], colors [..., D],
    opacities [...], in the layout flatten_ids indexes; backgrounds [..., D], one per image.
    With absgrad=True, backward sets means2d.absgrad (sum over pixels of |d loss / d means2d|).
    """
    images = isect_offsets.shape[:-2]
    D = colors.shape[-1]
    inputs = [
        means2d.reshape(-1, 2).contiguous(),
        conics.reshape(-1, 3).contiguous(),
        colors.reshape(-1, D).contiguous(),
        opacities.reshape(-1).contiguous(),
    ]
    bg = backgrounds.reshape(-1, D).contiguous() if backgrounds is not None else None
    offsets = isect_offsets.reshape(-1, *isect_offsets.shape[-2:]).contiguous()
    # The caller's means2d (not its reshaped copy) receives .absgrad; a list keeps it out of the graph.
    render_colors, render_alphas = _RasterizeToPixels.apply(
        *inputs,
        bg,
        int(width),
        int(height),
        int(tile_size),
        offsets,
        flatten_ids.contiguous(),
        bool(absgrad),
        [means2d],
    )
    return render_colors.reshape(*images, height, width, D), render_alphas.reshape(*images, height, width, 1)


class _SsimSame(torch.autograd.Function):
    @staticmethod
    def forward(ctx, img1, img2):
        # The blurred maps are kept for the backward, which then does not blur the images again.
        result, maps = _ops().ssim_forward(img1, img2, ctx.needs_input_grad[0])
        ctx.save_for_backward(img1, img2, maps)
        return result

    @staticmethod
    def backward(ctx, v_result):
        img1, img2, maps = ctx.saved_tensors
        return _ops().ssim_backward(img1, img2, maps, v_result), None


def ssim_same(img1: Tensor, img2: Tensor) -> Tensor:
    """SSIM [B] of images [B, H, W, C] (11x11 Gaussian window, sigma 1.5, data range 1, zero "same"
    padding: the 3DGS training loss's), fused in C++; differentiable with respect to img1 only."""
    return _SsimSame.apply(img1.contiguous(), img2.detach().contiguous())
