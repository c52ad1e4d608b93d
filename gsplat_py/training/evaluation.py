"""Rendering a model from dataset views and scoring it against their photos (PSNR, SSIM, optional LPIPS).

The record written to ``metrics.json`` (by training and by ``gsplat-py eval``) is::

    {"step", "split", "psnr", "ssim", ["lpips",] "num_gaussians", "elapsed_s", "steps_per_s",
     "views": [{"name", "psnr", "ssim", ["lpips"]}, ...]}

with ``psnr``/``ssim`` the means over the views. LPIPS is reported only when the ``lpips`` package and its
AlexNet weights are already on this machine: nothing is ever downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image as PILImage
from torch import Tensor

from ..data import View
from ..io.atomic import atomic_open
from ..model import Params, render_colors
from ..rendering import rasterization
from .metrics import psnr, ssim

__all__ = ["render_view", "evaluate_views", "load_lpips", "image_to_float", "float_to_uint8"]


def image_to_float(image: Tensor) -> Tensor:
    """uint8 [H, W, 3] -> float32 [H, W, 3] in [0, 1]."""
    return image.float().div_(255.0)


def float_to_uint8(image: Tensor) -> np.ndarray:
    return (image.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def render_view(
    params: Params,
    view: View,
    sh_degree: int,
    viewmat: Optional[Tensor] = None,
    backgrounds: Optional[Tensor] = None,
    absgrad: bool = False,
) -> tuple[Tensor, Tensor, dict]:
    """Render ``params`` from ``view`` (its own pose unless ``viewmat`` [4, 4] is given).

    Returns ``rasterization``'s (colors [1, H, W, 3], alphas [1, H, W, 1], meta).
    """
    if viewmat is None:
        viewmat = view.world_to_camera
    return rasterization(
        params["means"],
        params["quats"],
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
        render_colors(params),
        viewmat[None],
        view.K[None],
        view.width,
        view.height,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        absgrad=absgrad,
    )


def load_lpips() -> Optional[Callable[[Tensor, Tensor], Tensor]]:
    """LPIPS (AlexNet) if the ``lpips`` package and its backbone weights are installed locally, else None."""
    try:
        import lpips  # optional; its AlexNet backbone comes from torchvision's weights file
        import torchvision  # noqa: F401
    except ImportError:
        return None
    weights = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not weights.exists():  # lpips would download it
        return None
    model = lpips.LPIPS(net="alex", verbose=False).eval()

    def score(render: Tensor, target: Tensor) -> Tensor:
        # [H, W, 3] in [0, 1] -> [1, 3, H, W] in [-1, 1], LPIPS's input convention
        to_input = lambda x: x.permute(2, 0, 1)[None] * 2.0 - 1.0  # noqa: E731
        with torch.no_grad():
            return model(to_input(render), to_input(target)).reshape(())

    return score


def _safe_name(name: str) -> str:
    return name.replace("/", "__").replace("\\", "__")


def evaluate_views(
    params: Params,
    views: Sequence[View],
    sh_degree: int,
    render_dir: Optional[Path] = None,
    lpips: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
) -> dict:
    """Mean and per-view PSNR/SSIM (and LPIPS when given) of renders of ``views`` against their photos.

    With ``render_dir``, each view is saved there as ``<name>.png``: ground truth (left) beside the render.
    """
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
    per_view = []
    with torch.no_grad():
        for view in views:
            colors, _, _ = render_view(params, view, sh_degree)
            render = colors[0].clamp(0.0, 1.0)
            target = image_to_float(view.image)
            record = {
                "name": view.name,
                "psnr": float(psnr(render, target)),
                "ssim": float(ssim(render, target)),
            }
            if lpips is not None:
                record["lpips"] = float(lpips(render, target))
            per_view.append(record)
            if render_dir is not None:
                side_by_side = np.concatenate([view.image.numpy(), float_to_uint8(render)], axis=1)
                with atomic_open(render_dir / f"{Path(_safe_name(view.name)).stem}.png") as file:
                    PILImage.fromarray(side_by_side).save(file, format="PNG")
    result = {key: _mean(per_view, key) for key in ("psnr", "ssim")}
    if lpips is not None:
        result["lpips"] = _mean(per_view, "lpips")
    result["views"] = per_view
    return result


def _mean(records: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in records])) if records else math.nan
