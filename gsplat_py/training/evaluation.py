"""Rendering a model from dataset views and scoring it against their photos (PSNR, SSIM, optional LPIPS).

The record written to ``metrics.json`` (by training, ``gsplat-py eval`` and ``gsplat-py render``) is::

    {"step", "split", "psnr", "ssim", ["lpips",] "num_gaussians", "elapsed_s", "steps_per_s",
     "views": [{"name", "psnr", "ssim", ["lpips"]}, ...]}

with ``psnr``/``ssim`` the means over the views (training's ``metrics.json`` is a list of them, one per
evaluation; ``eval.json`` and a render's ``metrics.json`` hold one, the latter with ``model`` added). LPIPS
is reported only when the ``lpips`` package and its AlexNet weights are already on this machine: nothing is
ever downloaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from torch import Tensor

from ..data import View
from ..io.atomic import atomic_open
from ..model import Params, rasterize_model
from .metrics import psnr, ssim

__all__ = [
    "render_view",
    "render_views",
    "evaluate_views",
    "score_render",
    "summarize_scores",
    "evaluation_record",
    "load_lpips",
    "image_to_float",
    "float_to_uint8",
]


def image_to_float(image: Tensor) -> Tensor:
    """uint8 [H, W, 3] -> float32 [H, W, 3] in [0, 1]."""
    return image.float().div_(255.0)


def float_to_uint8(image: Tensor) -> np.ndarray:
    return (image.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


def render_view(
    params: Params,
    view: View,
    sh_degree: int,
    viewmat: Tensor | None = None,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
    packed: bool = False,
    model_type: str = "3dgs",
) -> tuple[Tensor, Tensor, dict]:
    """Render ``params`` (Gaussians of ``model_type``) from ``view`` (its own pose unless ``viewmat``
    [4, 4] is given); ``packed`` is rasterization's layout of the meta.

    Returns ``rasterization``'s (colors [1, H, W, 3], alphas [1, H, W, 1], meta), a 2DGS meta with the
    surfel outputs (`gsplat_py.model.rasterize_model`). Renders on the device of ``params``; the view's
    camera is moved there.
    """
    viewmats = None if viewmat is None else viewmat[None]
    return render_views(
        params, [view], sh_degree, viewmats, backgrounds, absgrad, packed, model_type=model_type
    )


def render_views(
    params: Params,
    views: Sequence[View],
    sh_degree: int,
    viewmats: Tensor | None = None,
    backgrounds: Tensor | None = None,
    absgrad: bool = False,
    packed: bool = False,
    distributed: bool = False,
    model_type: str = "3dgs",
) -> tuple[Tensor, Tensor, dict]:
    """Render ``params`` (Gaussians of ``model_type``) from ``views`` in one call (they share one image size
    and camera model), from their own poses unless ``viewmats`` [V, 4, 4] are given; ``distributed``:
    ``params`` is this process's shard and ``views`` its cameras (rasterization's ``distributed``). Returns
    rasterization's (colors [V, H, W, 3], alphas [V, H, W, 1], meta; a 2DGS meta with the surfel outputs:
    `gsplat_py.model.rasterize_model`), on the device of ``params``."""
    device = params["means"].device
    first = views[0]
    if viewmats is None:
        viewmats = torch.stack([view.world_to_camera for view in views])
    radial = None
    if first.radial_coeffs is not None:
        radial = torch.stack([view.radial_coeffs for view in views if view.radial_coeffs is not None]).to(
            device
        )
    return rasterize_model(
        model_type,
        params["means"],
        params["quats"],
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
        params["sh0"],
        viewmats.to(device),
        torch.stack([view.K for view in views]).to(device),
        first.width,
        first.height,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        absgrad=absgrad,
        packed=packed,
        camera_model=first.camera_model,
        radial_coeffs=radial,
        distributed=distributed,
        sh_rest=params["shN"],  # read in place: no [N, K, 3] concatenation, no split of its gradient
    )


def load_lpips() -> Callable[[Tensor, Tensor], Tensor] | None:
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
    render_dir: Path | None = None,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    model_type: str = "3dgs",
) -> dict:
    """Mean and per-view PSNR/SSIM (and LPIPS when given) of renders of ``views`` against their photos.

    With ``render_dir``, each view is saved there as ``<name>.png``: ground truth (left) beside the render.
    """
    if render_dir is not None:
        render_dir.mkdir(parents=True, exist_ok=True)
    per_view = []
    with torch.no_grad():
        for view in views:
            colors, _, _ = render_view(params, view, sh_degree, model_type=model_type)
            render = colors[0].clamp(0.0, 1.0)
            per_view.append(score_render(render, view, lpips))
            if render_dir is not None:
                side_by_side = np.concatenate([view.image.numpy(), float_to_uint8(render)], axis=1)
                with atomic_open(render_dir / f"{Path(_safe_name(view.name)).stem}.png") as file:
                    PILImage.fromarray(side_by_side).save(file, format="PNG")
    return summarize_scores(per_view, lpips is not None)


def score_render(render: Tensor, view: View, lpips: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict:
    """The per-view record ``{"name", "psnr", "ssim"[, "lpips"]}`` of ``render`` [H, W, 3] (in [0, 1])
    against the photo of ``view``."""
    target = image_to_float(view.image.to(render.device))
    record = {
        "name": view.name,
        "psnr": float(psnr(render, target)),
        "ssim": float(ssim(render, target)),
    }
    if lpips is not None:
        record["lpips"] = float(lpips(render, target))
    return record


def summarize_scores(per_view: list[dict], with_lpips: bool) -> dict:
    """The means over the per-view records, and the records under ``views`` (what evaluate_views returns)."""
    result: dict = {key: _mean(per_view, key) for key in ("psnr", "ssim")}
    if with_lpips:
        result["lpips"] = _mean(per_view, "lpips")
    result["views"] = per_view
    return result


def evaluation_record(
    result: dict, split: str, num_gaussians: int, step: int | None, elapsed_s: float | None
) -> dict:
    """The metrics record (module docstring) of an evaluate_views/summarize_scores ``result``; ``step`` and
    ``elapsed_s`` (training time) are None for a model that was not trained here."""
    return {
        "step": step,
        "split": split,
        **{k: v for k, v in result.items() if k != "views"},
        "num_gaussians": num_gaussians,
        "elapsed_s": round(elapsed_s, 3) if elapsed_s is not None else None,
        "steps_per_s": round(step / elapsed_s, 3) if step is not None and elapsed_s else None,
        "views": result["views"],
    }


def _mean(records: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in records])) if records else math.nan
