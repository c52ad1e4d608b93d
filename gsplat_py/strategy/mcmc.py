"""3D Gaussian Splatting as Markov Chain Monte Carlo (Kheradmand et al. 2024), as gsplat's MCMCStrategy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import Strategy
from .ops import Optimizers, Params, binomial_table, inject_noise_to_position, relocate, sample_add

__all__ = ["MCMCStrategy"]

# 3DGS-MCMC grows the number of Gaussians by this factor per refinement, up to cap_max.
GROWTH_FACTOR = 1.05


@dataclass
class MCMCStrategy(Strategy):
    """Relocate dead Gaussians, grow up to a cap, and perturb positions (gsplat 1.5 ``MCMCStrategy``).

    Every ``refine_every`` steps strictly between ``refine_start_iter`` and ``refine_stop_iter`` it

    - relocates the Gaussians with opacity <= ``min_opacity`` onto live ones drawn in proportion to
      opacity (``ops.relocate``);
    - adds ``min(cap_max, int(1.05 * N)) - N`` Gaussians drawn the same way (``ops.sample_add``);

    and every step it moves each mean by noise shaped by its covariance, scaled by
    ``lr * noise_lr`` and gated to (nearly) transparent Gaussians (``ops.inject_noise_to_position``).

    The paper's regularisers (gsplat's ``opacity_reg`` and ``scale_reg``, 0.01 each: the loss gets
    ``opacity_reg * sigmoid(opacities).mean() + scale_reg * exp(scales).mean()``) belong to the trainer's
    loss; this class does not compute them.

    Args:
        cap_max: maximum number of Gaussians (1_000_000).
        noise_lr: multiplier of the means learning rate for the position noise (5e5).
        refine_start_iter: relocation and growth happen only after this step (500).
        refine_stop_iter: ... and before this one (25_000). The noise never stops.
        refine_every: relocation and growth period in steps (100).
        min_opacity: opacity at or below which a Gaussian is dead (0.005); also the floor of
            relocated opacities.
        verbose: print what each refinement did.

    ``step_post_backward(params, optimizers, state, step, info, lr)`` takes the current learning rate
    of the means and returns ``{"n_relocate", "n_add"}`` on refinement steps, ``{}`` otherwise.
    Relocation and growth sample with ``torch.multinomial``, which allows at most 2^24 Gaussians.
    """

    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100
    min_opacity: float = 0.005
    verbose: bool = False

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """``{"binoms": [51, 51] binomial table}``; ``scene_scale`` is accepted for a signature common to
        all strategies and not used (the noise scale comes from the means learning rate)."""
        return {"binoms": binomial_table(51)}

    def step_post_backward(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        lr: float | None = None,
        *,
        packed: bool = False,
    ) -> dict[str, Any]:
        """Relocate and grow when due, then add the position noise (``lr``: current means learning rate,
        required; ``packed`` is not used)."""
        if lr is None:
            raise ValueError(
                "lr: MCMCStrategy.step_post_backward needs the current learning rate of the means"
            )
        binoms = state["binoms"] = state["binoms"].to(params["means"].device)
        report: dict[str, Any] = {}
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            n_relocate = self._relocate_gs(params, optimizers, binoms)
            n_add = self._add_new_gs(params, optimizers, binoms)
            report.update(n_relocate=n_relocate, n_add=n_add)
            if self.verbose:
                print(
                    f"Step {step}: Relocated {n_relocate} GSs, added {n_add} GSs. "
                    f"Now having {len(params['means'])} GSs."
                )
        # The state holds no per-Gaussian tensor (binoms must not be mistaken for one when N == 51),
        # so the ops get an empty one.
        inject_noise_to_position(params, optimizers, {}, scaler=lr * self.noise_lr)
        return report

    @torch.no_grad()
    def _relocate_gs(self, params: Params, optimizers: Optimizers, binoms: torch.Tensor) -> int:
        is_dead = torch.sigmoid(params["opacities"].flatten()) <= self.min_opacity
        n_dead = int(is_dead.sum())
        # with nothing alive there is nothing to move the dead to; growth and noise still run
        if 0 < n_dead < len(is_dead):
            relocate(params, optimizers, {}, is_dead, binoms, self.min_opacity)
            return n_dead
        return 0

    @torch.no_grad()
    def _add_new_gs(self, params: Params, optimizers: Optimizers, binoms: torch.Tensor) -> int:
        n_current = len(params["means"])
        n_add = max(0, min(self.cap_max, int(GROWTH_FACTOR * n_current)) - n_current)
        sample_add(params, optimizers, {}, n_add, binoms, self.min_opacity)
        return n_add
