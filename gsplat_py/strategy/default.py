"""The adaptive density control of 3D Gaussian Splatting (Kerbl et al. 2023), as gsplat's DefaultStrategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import Strategy
from .ops import Optimizers, Params, duplicate, remove, reset_opa, split

__all__ = ["DefaultStrategy"]


@dataclass
class DefaultStrategy(Strategy):
    """Clone, split, prune and periodically reset Gaussians as 3DGS does (gsplat 1.5 ``DefaultStrategy``).

    Every step before ``refine_stop_iter`` it accumulates, per Gaussian, the norm of the screen-space
    gradient of its 2D mean (``info[key_for_gradient].grad``, or ``.absgrad`` with ``absgrad=True``),
    expressed in normalised device coordinates (times ``width / 2`` and ``height / 2``) and multiplied by
    the number of cameras C (the loss is usually a mean over the C images), over the cameras where it is
    visible (``radii > 0``), and counts those views. Every ``refine_every`` steps after
    ``refine_start_iter`` it then

    - clones the Gaussians whose mean gradient (sum / count) exceeds ``grow_grad2d`` and whose largest
      scale is at most ``grow_scale3d * scene_scale``;
    - splits the other high-gradient ones (see ``ops.split``), and, before
      ``refine_scale2d_stop_iter``, also those whose largest screen radius exceeded ``grow_scale2d``
      (fraction of max(width, height));
    - prunes those with opacity below ``prune_opa`` and, once past the first opacity reset, those larger
      than ``prune_scale3d * scene_scale`` or (before ``refine_scale2d_stop_iter``) whose screen radius
      exceeded ``prune_scale2d``;
    - zeroes the accumulated statistics.

    Every ``reset_every`` steps it clamps all opacities to ``2 * prune_opa``. A refinement is skipped
    while ``step % reset_every < pause_refine_after_reset``.

    Args:
        prune_opa: opacity below which Gaussians are pruned (3DGS: 0.005).
        grow_grad2d: mean NDC gradient norm above which Gaussians grow (3DGS: 0.0002; with AbsGS's
            ``absgrad=True`` use a larger value such as 0.0008).
        grow_scale3d: largest scale, as a fraction of the scene scale, up to which a growing Gaussian is
            cloned rather than split (3DGS ``percent_dense``: 0.01).
        grow_scale2d: screen radius (fraction of the image) above which Gaussians split, only before
            ``refine_scale2d_stop_iter``.
        prune_scale3d: largest scale, as a fraction of the scene scale, above which Gaussians are pruned
            after the first opacity reset (3DGS: 0.1).
        prune_scale2d: screen radius (fraction of the image) above which Gaussians are pruned, only
            before ``refine_scale2d_stop_iter``.
        refine_scale2d_stop_iter: the screen-size rules apply before this step; 0 disables them, as in
            gsplat, because Inria's screen-size pruning never fires (graphdeco-inria/gaussian-splatting#123).
        refine_start_iter: refinements happen only after this step (3DGS ``densify_from_iter``: 500).
        refine_stop_iter: statistics, refinements and opacity resets stop at this step (3DGS: 15000).
        reset_every: opacity reset period in steps (3DGS ``opacity_reset_interval``: 3000).
        refine_every: refinement period in steps (3DGS ``densification_interval``: 100).
        pause_refine_after_reset: number of steps after each opacity reset without refinement (gsplat's
            option; e.g. the number of training images).
        absgrad: use the absolute-gradient accumulation of AbsGS (Ye et al. 2024, arXiv:2404.10484);
            rasterization must then be called with ``absgrad=True``.
        revised_opacity: split children get opacity 1 - sqrt(1 - o) (arXiv:2404.06109).
        verbose: print what each refinement did.
        key_for_gradient: the ``info`` entry whose gradient drives growth ("means2d"; gsplat's 2DGS uses
            "gradient_2dgs").

    ``initialize_state(scene_scale)`` takes the scene extent that the 3D thresholds are relative to.
    ``step_post_backward`` returns ``{"n_clone", "n_split", "n_prune"}`` counts on refinement steps and
    ``{"opacity_reset": True}`` on reset steps (both on a step that does both), ``{}`` otherwise.

    Differences from gsplat 1.5: the opacity resets are Inria's, every ``reset_every`` steps from step
    ``reset_every`` on. gsplat 1.5.0-1.5.2 also reset at step 0, which throws away the initial opacities
    (Inria counts steps from 1 so never does; gsplat PR #735); gsplat 1.5.3 never resets, because its
    test ``step % self.reset_every == 0 & step > 0`` is always false (``&`` binds first; gsplat PR #776,
    fixed after 1.5.3). Visibility, accumulation and the screen-radius maximum are computed densely and
    exactly (gsplat writes the maximum radius with a racy scatter). Otherwise a step gives gsplat 1.5.3's
    parameters, moments and statistics to float rounding (the split's sample offsets round differently;
    ``scripts/compare_gsplat_strategy.py`` runs the two side by side).

    Packed meta (``gaussian_ids`` set: one row per visible (camera, Gaussian) pair) is read from ``info``
    itself; the ``packed`` argument of ``step_post_backward`` is accepted for gsplat's signature.
    """

    PER_GAUSSIAN_STATE: ClassVar[tuple[str, ...]] = ("grad2d", "count", "radii")

    prune_opa: float = 0.005
    grow_grad2d: float = 0.0002
    grow_scale3d: float = 0.01
    grow_scale2d: float = 0.05
    prune_scale3d: float = 0.1
    prune_scale2d: float = 0.15
    refine_scale2d_stop_iter: int = 0
    refine_start_iter: int = 500
    refine_stop_iter: int = 15_000
    reset_every: int = 3000
    refine_every: int = 100
    pause_refine_after_reset: int = 0
    absgrad: bool = False
    revised_opacity: bool = False
    verbose: bool = False
    key_for_gradient: str = "means2d"

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """``{"grad2d", "count", "scene_scale"}`` (and ``"radii"`` when the screen-size rules are on).

        The per-Gaussian tensors are created at the first ``step_post_backward``, on the device and
        with the dtype of the gradients: grad2d [N] sums NDC gradient norms, count [N] the views in
        which each Gaussian was visible, radii [N] its largest screen radius as a fraction of
        max(width, height).
        """
        state: dict[str, Any] = {"grad2d": None, "count": None, "scene_scale": scene_scale}
        if self.refine_scale2d_stop_iter > 0:
            state["radii"] = None
        return state

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        """Make sure the gradient of ``info[key_for_gradient]`` is kept by ``backward``."""
        if self.key_for_gradient not in info:
            raise KeyError(
                f"info: no entry {self.key_for_gradient!r} (key_for_gradient); pass the meta of rasterization"
            )
        info[self.key_for_gradient].retain_grad()

    def step_post_backward(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        packed: bool = False,
        *,
        lr: float | None = None,
    ) -> dict[str, Any]:
        """Accumulate this step's gradient statistics, then refine and reset opacities when due (``lr`` is
        not used; whether ``info`` is packed is read from it)."""
        if packed and info.get("gaussian_ids") is None:
            raise ValueError("packed=True: info has no gaussian_ids (rasterize with packed=True)")
        if step >= self.refine_stop_iter:
            return {}
        self._update_state(params, state, info)

        report: dict[str, Any] = {}
        if (
            step > self.refine_start_iter
            and step % self.refine_every == 0
            and step % self.reset_every >= self.pause_refine_after_reset
        ):
            n_clone, n_split = self._grow_gs(params, optimizers, state, step)
            n_prune = self._prune_gs(params, optimizers, state, step)
            report.update(n_clone=n_clone, n_split=n_split, n_prune=n_prune)
            if self.verbose:
                print(
                    f"Step {step}: {n_clone} GSs duplicated, {n_split} GSs split, {n_prune} GSs pruned. "
                    f"Now having {len(params['means'])} GSs."
                )
            state["grad2d"].zero_()
            state["count"].zero_()
            if self.refine_scale2d_stop_iter > 0:
                state["radii"].zero_()

        if step > 0 and step % self.reset_every == 0:
            reset_opa(params, optimizers, state, value=self.prune_opa * 2.0)
            report["opacity_reset"] = True
        return report

    @torch.no_grad()
    def _update_state(self, params: Params, state: dict[str, Any], info: dict[str, Any]) -> None:
        # On the hot path of a CPU trainer, so dense in-place ops over [C, N]: at N = 100k, C = 1 they take
        # ~0.4 ms against ~2-3 ms for gsplat's boolean selection + index_add_ (50-100% visible).
        for key in ("width", "height", "n_cameras", "radii", self.key_for_gradient):
            if key not in info:
                raise KeyError(f"info: no entry {key!r}; pass the meta dict returned by rasterization")
        source = info[self.key_for_gradient]
        grads = getattr(source, "absgrad", None) if self.absgrad else source.grad
        if grads is None:
            hint = (
                "absgrad: call rasterization(..., absgrad=True)"
                if self.absgrad
                else "grad: call backward first"
            )
            raise ValueError(f"info[{self.key_for_gradient!r}] has no {hint}")
        n_gaussians = len(params["means"])
        gaussian_ids = info.get("gaussian_ids")
        n_cameras = info["n_cameras"]
        if gaussian_ids is None and grads.shape[1] != n_gaussians:
            raise ValueError(
                f"info[{self.key_for_gradient!r}]: gradient for {grads.shape[1]} Gaussians, but params has "
                f"{n_gaussians}; rasterize the current params after every refinement"
            )
        tracked = self.PER_GAUSSIAN_STATE if self.refine_scale2d_stop_iter > 0 else ("grad2d", "count")
        for key in tracked:
            if state[key] is None:
                state[key] = grads.new_zeros(n_gaussians)
            elif len(state[key]) != n_gaussians:
                raise ValueError(
                    f"state[{key!r}] has {len(state[key])} entries but params has {n_gaussians} Gaussians; "
                    "Gaussians were added or removed without passing this state to the op"
                )

        width, height = info["width"], info["height"]
        ndc_scale_sq = grads.new_tensor([(width / 2.0 * n_cameras) ** 2, (height / 2.0 * n_cameras) ** 2])
        radii = info["radii"]  # [C, N, 2], or packed [nnz, 2]
        visible = (torch.minimum(radii[..., 0], radii[..., 1]) > 0).to(grads.dtype)  # [C, N], 1 = visible
        norms = torch.matmul(grads * grads, ndc_scale_sq).sqrt_().mul_(visible)  # [C, N]
        if self.refine_scale2d_stop_iter > 0:
            screen_fraction = radii.amax(dim=-1).to(grads.dtype).mul_(visible).div_(float(max(width, height)))
        if gaussian_ids is not None:  # packed: a row per visible pair, scattered to its Gaussian
            state["grad2d"].index_add_(0, gaussian_ids, norms)
            state["count"].index_add_(0, gaussian_ids, visible)
            if self.refine_scale2d_stop_iter > 0:
                state["radii"].scatter_reduce_(0, gaussian_ids, screen_fraction, "amax")
            return
        for camera in range(n_cameras):
            state["grad2d"].add_(norms[camera])
            state["count"].add_(visible[camera])
        if self.refine_scale2d_stop_iter > 0:
            for camera in range(n_cameras):
                torch.maximum(state["radii"], screen_fraction[camera], out=state["radii"])

    @torch.no_grad()
    def _grow_gs(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int
    ) -> tuple[int, int]:
        mean_grads = state["grad2d"] / state["count"].clamp_min(1)
        is_grad_high = mean_grads > self.grow_grad2d
        is_small = self._max_scale(params) <= self.grow_scale3d * state["scene_scale"]
        is_clone = is_grad_high & is_small
        is_split = is_grad_high & ~is_small
        if step < self.refine_scale2d_stop_iter:
            is_split |= state["radii"] > self.grow_scale2d
        n_clone = int(is_clone.sum())
        n_split = int(is_split.sum())

        if n_clone > 0:
            duplicate(params, optimizers, state, is_clone)
            # the clones are appended after the originals and are not split this round
            is_split = torch.cat([is_split, is_split.new_zeros(n_clone)])
        if n_split > 0:
            split(params, optimizers, state, is_split, revised_opacity=self.revised_opacity)
        return n_clone, n_split

    @torch.no_grad()
    def _prune_gs(self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int) -> int:
        is_prune = torch.sigmoid(params["opacities"].flatten()) < self.prune_opa
        if step > self.reset_every:
            is_prune |= self._max_scale(params) > self.prune_scale3d * state["scene_scale"]
            if step < self.refine_scale2d_stop_iter:
                is_prune |= state["radii"] > self.prune_scale2d
        n_prune = int(is_prune.sum())
        if n_prune > 0:
            remove(params, optimizers, state, is_prune)
        return n_prune

    @staticmethod
    def _max_scale(params: Params) -> Tensor:
        """[N] largest per-axis scale (linear) of each Gaussian."""
        return torch.exp(params["scales"].amax(dim=-1))
