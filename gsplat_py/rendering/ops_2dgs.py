"""Autograd wrappers around the compiled 2DGS (surfel) ops (torch.ops.gsplat_py.*_surfels_*), with the
signatures of ``reference_2dgs``; the backward passes are the hand-written C++/CUDA ones.

Leading batch dimensions are flattened to one before the ops are called and restored after, as in ``ops``.
"""

import math

import torch
from torch import Tensor

from .ops import _ops

__all__ = ["project_gaussians_2dgs", "rasterize_to_pixels_2dgs"]


class _ProjectSurfels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, settings):
        B, N, C = math.prod(means.shape[:-2]), means.shape[-2], viewmats.shape[-3]
        flat = (
            means.reshape(B, N, 3).contiguous(),
            quats.reshape(B, N, 4).contiguous(),
            scales.reshape(B, N, 3).contiguous(),
            viewmats.reshape(B, C, 4, 4).contiguous(),
            Ks.reshape(B, C, 3, 3).contiguous(),
        )
        radii, means2d, depths, transforms, normals = _ops().project_surfels_forward(*flat, *settings)
        ctx.save_for_backward(*flat, radii)
        ctx.shapes = [t.shape for t in (means, quats, scales, viewmats, Ks)]
        ctx.mark_non_differentiable(radii)
        shape = viewmats.shape[:-2] + means.shape[-2:-1]  # [..., C, N]
        return (
            radii.reshape(*shape, 2),
            means2d.reshape(*shape, 2),
            depths.reshape(shape),
            transforms.reshape(*shape, 3, 3),
            normals.reshape(*shape, 3),
        )

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_transforms, v_normals):
        *inputs, radii = ctx.saved_tensors
        # Camera gradients sum over every surfel: skipped unless a camera input needs them.
        camera_grads = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        grads = _ops().project_surfels_backward(
            *inputs, radii, v_means2d, v_depths, v_transforms, v_normals, camera_grads
        )
        needed = list(ctx.needs_input_grad[:3]) + [camera_grads and n for n in ctx.needs_input_grad[3:5]]
        return tuple(
            grad.reshape(shape) if need else None for grad, shape, need in zip(grads, ctx.shapes, needed)
        ) + (None,)


def project_gaussians_2dgs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Project surfels into cameras (``reference_2dgs.project_gaussians_2dgs``'s contract): (radii
    [..., C, N, 2] int32, means2d [..., C, N, 2], depths [..., C, N], ray_transforms [..., C, N, 3, 3],
    normals [..., C, N, 3])."""
    settings = (int(width), int(height), float(near_plane), float(far_plane), float(radius_clip))
    return _ProjectSurfels.apply(means, quats, scales, viewmats, Ks, settings)


class _RasterizeSurfels(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        means2d,
        transforms,
        colors,
        opacities,
        normals,
        depths,
        settings,
        isect_offsets,
        flatten_ids,
        holder,
    ):
        (
            render_colors,
            render_alphas,
            render_normals,
            distortions,
            medians,
            transmittance,
            depth_sums,
            last_ids,
            median_ids,
        ) = _ops().rasterize_surfels_forward(
            means2d, transforms, colors, opacities, normals, depths, *settings[:3], isect_offsets, flatten_ids
        )
        ctx.save_for_backward(
            means2d,
            transforms,
            colors,
            opacities,
            normals,
            depths,
            isect_offsets,
            flatten_ids,
            transmittance,
            depth_sums,
            last_ids,
            median_ids,
        )
        ctx.settings = settings
        ctx.holder = holder
        return render_colors, render_alphas, render_normals, distortions, medians

    @staticmethod
    def backward(ctx, v_colors, v_alphas, v_normals, v_distortions, v_medians):
        *inputs, isect_offsets, flatten_ids, transmittance, depth_sums, last_ids, median_ids = (
            ctx.saved_tensors
        )
        width, height, tile_size, absgrad = ctx.settings
        v_means2d, v_abs, v_transforms, v_colors_in, v_opacities, v_normals_in, v_depths = (
            _ops().rasterize_surfels_backward(
                *inputs,
                width,
                height,
                tile_size,
                isect_offsets,
                flatten_ids,
                transmittance,
                depth_sums,
                last_ids,
                median_ids,
                v_colors,
                v_alphas[..., 0],
                v_normals,
                v_distortions[..., 0],
                v_medians[..., 0],
                absgrad,
            )
        )
        if absgrad:
            ctx.holder[0].absgrad = v_abs.reshape(ctx.holder[0].shape)
        return (v_means2d, v_transforms, v_colors_in, v_opacities, v_normals_in, v_depths) + (None,) * 4


def rasterize_to_pixels_2dgs(
    means2d: Tensor,
    ray_transforms: Tensor,
    colors: Tensor,
    opacities: Tensor,
    normals: Tensor,
    depths: Tensor,
    width: int,
    height: int,
    tile_size: int,
    isect_offsets: Tensor,
    flatten_ids: Tensor,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Blend the binned surfels (``reference_2dgs.rasterize_to_pixels_2dgs``'s contract): (render_colors
    [..., H, W, D], render_alphas [..., H, W, 1], render_normals [..., H, W, 3], render_distort
    [..., H, W, 1], render_median [..., H, W, 1]). With absgrad=True, backward sets means2d.absgrad."""
    images = isect_offsets.shape[:-2]
    D = colors.shape[-1]
    render_colors, render_alphas, render_normals, distort, median = _RasterizeSurfels.apply(
        means2d.reshape(-1, 2).contiguous(),
        ray_transforms.reshape(-1, 3, 3).contiguous(),
        colors.reshape(-1, D).contiguous(),
        opacities.reshape(-1).contiguous(),
        normals.reshape(-1, 3).contiguous(),
        depths.reshape(-1).contiguous(),
        (int(width), int(height), int(tile_size), bool(absgrad)),
        isect_offsets.reshape(-1, *isect_offsets.shape[-2:]).contiguous(),
        flatten_ids.contiguous(),
        [means2d],  # the caller's means2d receives .absgrad; a list keeps it out of the graph
    )

    def image(x: Tensor) -> Tensor:
        return x.reshape(*images, height, width, x.shape[-1])

    render_colors, render_alphas = image(render_colors), image(render_alphas)
    if backgrounds is not None:
        # Through autograd: the background's gradient, and the alpha gradient it implies.
        render_colors = render_colors + (1 - render_alphas) * backgrounds.reshape(*images, 1, 1, D)
    return render_colors, render_alphas, image(render_normals), image(distort), image(median)
