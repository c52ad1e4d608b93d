"""The 2DGS regularisers (Huang et al., "2D Gaussian Splatting for Geometrically Accurate Radiance Fields"),
as gsplat's examples/simple_trainer_2dgs.py applies them, and their schedule.

- Normal consistency: the rendered surfel normals should agree with the normals of the rendered depth,
  ``mean(1 - <n_rendered, alpha.detach() * n_surface>)`` over the pixels (a pixel nothing covers adds 1, a
  constant). Weight ``normal_lambda`` from after step ``normal_start_iter``.
- Depth distortion: the renderer's per-pixel distortion (how far apart along the ray the surfels that a
  pixel blends are), averaged over the pixels. Weight ``dist_lambda`` from after step ``dist_start_iter``.

Both are added to the photometric loss of a ``model.type = "2dgs"`` run; a weight of 0 turns one off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import SceneData

__all__ = [
    "SurfelConfig",
    "surfel_scene_problem",
    "normal_consistency_loss",
    "distortion_loss",
    "strategy_for_model",
    "surfel_regularisation",
]


@dataclass
class SurfelConfig:
    """The 2DGS losses' weights and the steps after which they apply (gsplat's simple_trainer_2dgs.py
    values: normal_lambda 5e-2 from step 7000, dist_lambda 1e-2 from step 3000)."""

    normal_lambda: float = 5e-2
    normal_start_iter: int = 7_000
    dist_lambda: float = 1e-2
    dist_start_iter: int = 3_000

    def normal_weight(self, step: int) -> float:
        """The normal-consistency weight at 0-based ``step`` (0 until after ``normal_start_iter``)."""
        return self.normal_lambda if step > self.normal_start_iter else 0.0

    def distortion_weight(self, step: int) -> float:
        """The depth-distortion weight at 0-based ``step`` (0 until after ``dist_start_iter``)."""
        return self.dist_lambda if step > self.dist_start_iter else 0.0


def normal_consistency_loss(render_normals: Tensor, surf_normals: Tensor, alphas: Tensor) -> Tensor:
    """Mean over pixels of ``1 - <render_normals, alphas * surf_normals>`` (all [..., H, W, 3], alphas
    [..., H, W, 1]); the alphas only weight the depth normals, no gradient flows to them through this loss."""
    agreement = (render_normals * (surf_normals * alphas.detach())).sum(dim=-1)
    return (1.0 - agreement).mean()


def distortion_loss(render_distort: Tensor) -> Tensor:
    """Mean of the rendered per-pixel depth distortion ([..., H, W, 1])."""
    return render_distort.mean()


def surfel_scene_problem(model_type: str, scene: SceneData) -> str | None:
    """What makes ``scene`` untrainable as ``model_type`` (a 2DGS run's fisheye views: rasterization_2dgs
    projects pinhole cameras only), naming ``model.type``; None when nothing does."""
    if model_type != "2dgs":
        return None
    for view in scene.train_views + scene.test_views:
        if view.camera_model != "pinhole":
            return (
                f"model.type: 2dgs renders pinhole cameras only; {scene.root} has {view.camera_model} views "
                f"({view.name}): train it as 3dgs"
            )
    return None


def strategy_for_model(strategy, model_type: str):
    """The densification ``strategy`` as a ``model_type`` run uses it: a 2DGS run's gradient-driven growth
    reads the renderer's ``gradient_2dgs`` (the loss's gradient by the projected centre through the ray
    transform, gsplat's 2DGS signal) where a 3DGS run reads ``means2d``'s, as gsplat's 2DGS trainer does.
    With ``absgrad`` it keeps reading ``means2d.absgrad``, which only the centres carry."""
    if (
        model_type == "2dgs"
        and getattr(strategy, "key_for_gradient", None) == "means2d"
        and not getattr(strategy, "absgrad", False)
    ):
        return dataclasses.replace(strategy, key_for_gradient="gradient_2dgs")
    return strategy


def surfel_regularisation(config: SurfelConfig, step: int, alphas: Tensor, meta: dict) -> Tensor | None:
    """The weighted 2DGS losses of one step from a 2DGS render's outputs (``meta`` holds ``render_normals``,
    ``surf_normals`` and ``render_distort``), None while both weights are 0."""
    terms = []
    normal_weight = config.normal_weight(step)
    if normal_weight > 0.0:
        terms.append(
            normal_weight * normal_consistency_loss(meta["render_normals"], meta["surf_normals"], alphas)
        )
    distortion_weight = config.distortion_weight(step)
    if distortion_weight > 0.0:
        terms.append(distortion_weight * distortion_loss(meta["render_distort"]))
    return torch.stack(terms).sum() if terms else None
