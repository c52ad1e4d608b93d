"""Autograd wrappers around the compiled ops (torch.ops.gsplat_py.*), with the same signatures as
gsplat_py.reference. Backward passes are the hand-written C++ ones."""

import torch
from torch import Tensor

from ._backend import require_extension

CAMERA_MODELS = {"pinhole": 0, "ortho": 1}


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


class _ProjectGaussians(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        means,
        quats,
        scales,
        viewmats,
        Ks,
        opacities,
        width,
        height,
        eps2d,
        near_plane,
        far_plane,
        radius_clip,
        calc_compensations,
        camera_model,
    ):
        radii, means2d, depths, conics, compensations = _ops().project_gaussians_forward(
            means,
            quats,
            scales,
            opacities,
            viewmats,
            Ks,
            width,
            height,
            eps2d,
            near_plane,
            far_plane,
            radius_clip,
            calc_compensations,
            camera_model,
        )
        ctx.save_for_backward(means, quats, scales, viewmats, Ks, radii)
        ctx.settings = (width, height, eps2d, camera_model, calc_compensations)
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics, compensations

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics, v_compensations):
        means, quats, scales, viewmats, Ks, radii = ctx.saved_tensors
        width, height, eps2d, camera_model, calc_compensations = ctx.settings
        # Camera gradients sum over every Gaussian: skipped unless a camera input needs them.
        camera_grads = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        v_means, v_quats, v_scales, v_viewmats, v_Ks = _ops().project_gaussians_backward(
            means,
            quats,
            scales,
            viewmats,
            Ks,
            width,
            height,
            eps2d,
            camera_model,
            radii,
            v_means2d,
            v_depths,
            v_conics,
            v_compensations if calc_compensations else None,
            camera_grads,
        )
        if not camera_grads:
            v_viewmats = v_Ks = None
        return (v_means, v_quats, v_scales, v_viewmats, v_Ks) + (None,) * 9


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
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
):
    """EWA projection of N Gaussians into C cameras; see docs/architecture.md.

    Returns (radii [C,N,2] int32, means2d [C,N,2], depths [C,N], conics [C,N,3], compensations [C,N] or None).
    """
    model = _camera_model_id(camera_model)
    contiguous = [t.contiguous() for t in (means, quats, scales, viewmats, Ks)]
    opacities = opacities.detach().contiguous() if opacities is not None else None
    radii, means2d, depths, conics, compensations = _ProjectGaussians.apply(
        *contiguous,
        opacities,
        int(width),
        int(height),
        float(eps2d),
        float(near_plane),
        float(far_plane),
        float(radius_clip),
        bool(calc_compensations),
        model,
    )
    return radii, means2d, depths, conics, (compensations if calc_compensations else None)


class _SphericalHarmonics(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dirs, coeffs, degree, masks):
        colors = _ops().spherical_harmonics_forward(degree, dirs, coeffs, masks)
        ctx.save_for_backward(dirs, coeffs, masks if masks is not None else dirs.new_empty(0))
        ctx.degree = degree
        ctx.has_masks = masks is not None
        return colors

    @staticmethod
    def backward(ctx, v_colors):
        dirs, coeffs, masks = ctx.saved_tensors
        v_dirs, v_coeffs = _ops().spherical_harmonics_backward(
            ctx.degree, dirs, coeffs, masks if ctx.has_masks else None, v_colors
        )
        return v_dirs, v_coeffs, None, None


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor, masks: Tensor | None = None) -> Tensor:
    """Raw SH colour (no +0.5, no clamp) of directions dirs [...,3] with coefficients [...,K,3]."""
    batch = dirs.shape[:-1]
    K = coeffs.shape[-2]
    flat_dirs = dirs.reshape(-1, 3).contiguous()
    flat_coeffs = coeffs.reshape(-1, K, 3).contiguous()
    flat_masks = masks.reshape(-1).contiguous().bool() if masks is not None else None
    colors = _SphericalHarmonics.apply(flat_dirs, flat_coeffs, int(degree), flat_masks)
    return colors.reshape(*batch, 3)


def bin_gaussians_to_tiles(
    means2d: Tensor, radii: Tensor, depths: Tensor, tile_size: int, tile_width: int, tile_height: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(tiles_per_gauss [C,N], isect_offsets [C,TH,TW], flatten_ids [M]); not differentiable."""
    return tuple(
        _ops().bin_gaussians_to_tiles(
            means2d.detach().contiguous(),
            radii.contiguous(),
            depths.detach().contiguous(),
            int(tile_size),
            int(tile_width),
            int(tile_height),
        )
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
            ctx.absgrad_holder[0].absgrad = v_means2d_abs
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
    """Tile-based front-to-back alpha blending; (render_colors [C,H,W,D], render_alphas [C,H,W,1]).

    With absgrad=True, backward sets means2d.absgrad (sum over pixels of |d loss / d means2d|).
    """
    inputs = [t.contiguous() for t in (means2d, conics, colors, opacities)]
    bg = backgrounds.contiguous() if backgrounds is not None else None
    # The caller's means2d (not its contiguous copy) receives .absgrad; a list keeps it out of the graph.
    return _RasterizeToPixels.apply(
        *inputs,
        bg,
        int(width),
        int(height),
        int(tile_size),
        isect_offsets.contiguous(),
        flatten_ids.contiguous(),
        bool(absgrad),
        [means2d],
    )


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
