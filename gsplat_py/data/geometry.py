"""Rigid transforms and similarities (4x4 matrices acting on column vectors), shared by the dataset, the
world frames and the camera tools."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["camera_extent", "rigid_inverse", "split_similarity", "invert_similarity", "fit_similarity"]

_RIGID_TOLERANCE = 1e-6


def camera_extent(centres: Tensor) -> float:
    """The scene scale of cameras at ``centres`` [N, 3]: 1.1 times the largest distance of a centre from
    their mean (gsplat's and Inria's ``scene_scale`` / camera extent radius)."""
    centres = centres.double()
    return 1.1 * float((centres - centres.mean(dim=0)).norm(dim=-1).max())


def rigid_inverse(transforms: Tensor) -> Tensor:
    """Inverses [R^T, -R^T t] of rigid transforms [..., 4, 4], computed in float64, in their dtype."""
    matrices = transforms.double()
    rotation_t = matrices[..., :3, :3].transpose(-1, -2)
    inverse = torch.zeros_like(matrices)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -(rotation_t @ matrices[..., :3, 3:4])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse.to(transforms.dtype)


def split_similarity(transform: Tensor) -> tuple[float, Tensor, Tensor]:
    """(s, R, t) of a similarity [[s R, t], [0, 1]]; ValueError if ``transform`` is not one."""
    transform = transform.double()
    if transform.shape != (4, 4) or not torch.equal(
        transform[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    ):
        raise ValueError(f"expected a 4x4 similarity with last row [0, 0, 0, 1], got {transform.tolist()}")
    linear = transform[:3, :3]
    determinant = float(torch.linalg.det(linear))
    if not determinant > 0.0:
        raise ValueError(
            f"the similarity has determinant {determinant}; expected a positive scale times a rotation"
        )
    scale = determinant ** (1.0 / 3.0)
    rotation = linear / scale
    error = float((rotation @ rotation.T - torch.eye(3, dtype=torch.float64)).abs().max())
    if error > _RIGID_TOLERANCE:
        raise ValueError(f"the 3x3 part is not a scaled rotation (|R Rᵀ - I| = {error:.2g})")
    return scale, rotation, transform[:3, 3].clone()


def invert_similarity(transform: Tensor) -> Tensor:
    """The inverse of a similarity (float64)."""
    scale, rotation, translation = split_similarity(transform)
    inverse = torch.eye(4, dtype=torch.float64)
    inverse[:3, :3] = rotation.T / scale
    inverse[:3, 3] = -(rotation.T @ translation) / scale
    return inverse


def fit_similarity(source: Tensor, target: Tensor) -> Tensor:
    """The similarity T = [[s R, t], [0, 1]] (float64 4x4) that best maps the points ``source`` [N, 3] onto
    ``target`` [N, 3] in the least-squares sense, sum |s R x + t - y|^2 (Umeyama 1991: R from the SVD of the
    cross-covariance, with its reflection removed). Needs N >= 3 points not all on one line."""
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or source.shape[0] < 3:
        raise ValueError(
            f"expected two [N, 3] point sets with N >= 3, got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    source, target = source.double(), target.double()
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = torch.linalg.svd(covariance)
    signs = torch.ones(3, dtype=torch.float64)
    if torch.linalg.det(u) * torch.linalg.det(vt) < 0:
        signs[2] = -1.0
    rotation = u @ torch.diag(signs) @ vt
    variance = source_centred.square().sum(1).mean()
    scale = float((singular * signs).sum() / variance)
    transform = torch.eye(4, dtype=torch.float64)
    transform[:3, :3] = scale * rotation
    transform[:3, 3] = target_mean - scale * rotation @ source_mean
    return transform
