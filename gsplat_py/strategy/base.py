"""The interface every densification strategy implements (gsplat's ``gsplat.strategy.Strategy``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .ops import Optimizers, Params

__all__ = ["Strategy", "REQUIRED_PARAMS"]

REQUIRED_PARAMS = ("means", "scales", "quats", "opacities")


@dataclass
class Strategy:
    """Base class of the densification strategies.

    A training loop drives a strategy with the same four calls as in gsplat::

        strategy.check_sanity(params, optimizers)
        state = strategy.initialize_state(scene_scale)
        for step in range(max_steps):
            renders, alphas, info = gsplat_py.rasterization(...)
            strategy.step_pre_backward(params, optimizers, state, step, info)
            loss.backward()
            # optimizer steps
            strategy.step_post_backward(params, optimizers, state, step, info, ...)

    ``step_post_backward`` may replace the entries of ``params`` and the parameters held by
    ``optimizers`` (see ``gsplat_py.strategy.ops``); it returns a small dict describing what it did
    that step, for logging (empty when it did nothing worth reporting).
    """

    # The entries of the state with one row per Gaussian (None until first filled): what a training run on
    # several processes splits and gathers with the Gaussians.
    PER_GAUSSIAN_STATE: ClassVar[tuple[str, ...]] = ()

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """The running state to pass to the ``step_*`` calls; ``scene_scale`` is the scene extent."""
        return {}

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        """Check the conventions the ops rely on; raise ``ValueError`` naming what is wrong.

        - params holds means, scales, quats and opacities, and every entry has the same first
          dimension N (one row per Gaussian);
        - the keys of the optimizers are exactly the trainable (``requires_grad``) params;
        - each optimizer has exactly one param group, holding exactly that parameter.

        (gsplat checks the same with ``assert``.)
        """
        missing = [key for key in REQUIRED_PARAMS if key not in params]
        if missing:
            raise ValueError(f"params: missing required entries {missing} (has {list(params.keys())})")
        n_gaussians = params["means"].shape[0]
        for name, param in params.items():
            if param.dim() == 0 or param.shape[0] != n_gaussians:
                raise ValueError(
                    f"params[{name!r}]: expected one row per Gaussian (first dimension {n_gaussians}, as "
                    f"means), got shape {list(param.shape)}"
                )
        trainable = {name for name, param in params.items() if param.requires_grad}
        if trainable != set(optimizers.keys()):
            raise ValueError(
                "optimizers: expected exactly one optimizer per trainable parameter, "
                f"got optimizers for {sorted(optimizers.keys())} and trainable params {sorted(trainable)}"
            )
        for name, optimizer in optimizers.items():
            groups = optimizer.param_groups
            if (
                len(groups) != 1
                or len(groups[0]["params"]) != 1
                or groups[0]["params"][0] is not params[name]
            ):
                raise ValueError(
                    f"optimizers[{name!r}]: expected exactly one param group holding exactly "
                    f"params[{name!r}], "
                    f"got {len(groups)} group(s) with {[len(g['params']) for g in groups]} parameter(s)"
                )

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        """Called after rasterization, before ``loss.backward()``."""

    def step_post_backward(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        *,
        packed: bool = False,
        lr: float | None = None,
    ) -> dict[str, Any]:
        """Called after ``loss.backward()`` (and the optimizer steps); returns what it did, for logging.

        ``packed`` says whether ``info`` comes from packed rasterization, ``lr`` is the current learning
        rate of the means; each strategy reads what it needs (gsplat's ``DefaultStrategy`` takes ``packed``
        as its sixth positional argument, its ``MCMCStrategy`` ``lr``, and so do these)."""
        return {}
