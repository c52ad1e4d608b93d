"""Watching a run: training that is not learning, and training views that do not fit the others.

A run on a broken scene (images that do not match their poses, a scale wrong by orders of magnitude)
otherwise runs to the end and leaves a smeared model without a word. `RunMonitor` keeps, from the losses
of the training steps:

- a check of progress at ``check_step`` (`stall_message`): the mean loss of the last `STALL_WINDOW` steps
  must be below `STALL_RATIO` times both the mean of the first `STALL_WINDOW` steps and the loss of flat
  images of each photo's mean colour (for the same views: what a model that learnt nothing but colours
  would score). Measured on the bundled scene at step 500 (`fast` preset; `mcmc`; random initialisation):
  0.26, 0.52 and 0.56 of the flat-image loss; with its images shuffled against the poses 0.89, with the
  scene scale 1e3 times too large 0.86;
- a running loss per training view (exponential average over its visits, `VIEW_LOSS_SMOOTHING`), whose
  outliers (`outlier_views`: above `robust_threshold` with `VIEW_OUTLIER_SPREADS` spreads, and at least
  `VIEW_OUTLIER_MIN_RATIO` times the median) are the views that fit far worse than the rest: likely
  mis-registered, or lit differently. With ``drop_outlier_views`` the trainer leaves them out from then on
  (never more than half of the views).

The state (`state_dict`) is plain lists and numbers, saved in the checkpoint so that a resume is exact.
The likely causes of each failure are worded here once (`STALL_CAUSES`, ...); the trainer raises or warns.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np
from torch import Tensor

from ..data.scene_check import robust_threshold
from .evaluation import image_to_float
from .metrics import l1_ssim_loss

__all__ = [
    "COLLAPSE_CAUSES",
    "DIVERGENCE_CAUSES",
    "EXPLOSION_CAUSES",
    "STALL_CAUSES",
    "STALL_RATIO",
    "STALL_WINDOW",
    "RunMonitor",
    "flat_image_loss",
]

STALL_WINDOW = 50
STALL_RATIO = 0.75
VIEW_LOSS_SMOOTHING = 0.5
VIEW_OUTLIER_SPREADS = 5.0
VIEW_OUTLIER_MIN_RATIO = 1.5
MIN_VISITS = 2
VIEW_EXAMPLES = 8

STALL_CAUSES = (
    "images that do not match their poses (shuffled or renamed images, another scene's images/ or sparse/), "
    "wrong camera intrinsics, or learning rates that do not suit the scene's scale"
)
COLLAPSE_CAUSES = (
    "a scene scale much smaller than the scene, so that every Gaussian counts as too large "
    "(strategy.default.prune_scale3d), opacities driven to zero, or images that do not match their poses"
)
EXPLOSION_CAUSES = (
    "a scene scale much smaller than the scene (far points or cameras kept?), a gradient threshold too low "
    "for these images (strategy.default.grow_grad2d), images that do not match their poses, or a limit below "
    "the size of the initialisation (SfM points)"
)
DIVERGENCE_CAUSES = (
    "learning rates too high for the scene's scale (outlier cameras kept, data.drop_outlier_cameras?), "
    "or optim.* learning rates raised too far"
)


def flat_image_loss(image: Tensor, ssim_weight: float) -> float:
    """The training loss of a flat image of the mean colour of ``image`` (uint8 [H, W, 3]) against it."""
    target = image_to_float(image)[None]
    flat = target.mean(dim=(1, 2), keepdim=True).expand_as(target)
    return float(l1_ssim_loss(flat, target, ssim_weight=ssim_weight))


class RunMonitor:
    """The losses of a run's steps, per view and over time (module docstring); ``num_views`` training
    views, progress checked after step ``check_step`` (0: never)."""

    def __init__(self, num_views: int, check_step: int):
        self.check_step = check_step
        self.view_losses: list[float] = [math.nan] * num_views
        self.visits: list[int] = [0] * num_views
        self.first_losses: list[float] = []
        self.recent: deque[tuple[int, float]] = deque(maxlen=STALL_WINDOW)  # (view, loss) of the last steps
        self.named_views: list[int] = []  # named as outliers at an evaluation so far
        self.dropped_views: list[int] = []
        self.warnings: list[str] = []

    def record(self, view: int, loss: float) -> None:
        """The loss of one step, on training view ``view``."""
        previous = self.view_losses[view]
        self.view_losses[view] = (
            loss if self.visits[view] == 0 else previous + VIEW_LOSS_SMOOTHING * (loss - previous)
        )
        self.visits[view] += 1
        if len(self.first_losses) < STALL_WINDOW:
            self.first_losses.append(loss)
        self.recent.append((view, loss))

    def stall_message(self, step: int, flat_loss: Callable[[int], float]) -> str | None:
        """At ``check_step``, the one-line warning of a run whose loss has not fallen (module docstring),
        else None; ``flat_loss(view)`` is `flat_image_loss` of a training view."""
        if step != self.check_step or len(self.recent) < STALL_WINDOW:
            return None
        recent = float(np.mean([loss for _, loss in self.recent]))
        flat_by_view = {view: flat_loss(view) for view in sorted({view for view, _ in self.recent})}
        references = {
            "for flat images of each photo's mean colour": float(
                np.mean([flat_by_view[view] for view, _ in self.recent])
            )
        }
        if len(self.first_losses) == STALL_WINDOW:  # a run resumed from an older checkpoint has no start
            references[f"over the first {STALL_WINDOW} steps"] = float(np.mean(self.first_losses))
        if recent <= STALL_RATIO * min(references.values()):
            return None
        compared = ", ".join(f"{value:.3f} {what}" for what, value in references.items())
        return (
            f"step {step}: the training loss has not fallen meaningfully ({recent:.3f} over the last "
            f"{STALL_WINDOW} steps; {compared}): the model is not learning this scene. Likely causes: "
            f"{STALL_CAUSES}"
        )

    def outlier_views(self) -> tuple[list[int], float, float]:
        """(the views whose running loss is an outlier, the median running loss, the threshold) over the
        views still trained on and seen at least `MIN_VISITS` times; nothing with fewer than 3 of them."""
        candidates = [
            view
            for view, visits in enumerate(self.visits)
            if visits >= MIN_VISITS and view not in self.dropped_views
        ]
        if len(candidates) < 3:
            return [], math.nan, math.nan
        losses = np.array([self.view_losses[view] for view in candidates])
        median = float(np.median(losses))
        threshold = max(robust_threshold(losses, VIEW_OUTLIER_SPREADS, 0.0), VIEW_OUTLIER_MIN_RATIO * median)
        return [view for view, loss in zip(candidates, losses) if loss > threshold], median, threshold

    def drop(self, views: list[int]) -> list[int]:
        """Leave ``views`` out of training from now on, as long as half of all views stay; returns the ones
        left out."""
        room = len(self.visits) // 2 - len(self.dropped_views)
        dropped = views[: max(room, 0)]
        self.dropped_views = sorted(self.dropped_views + dropped)
        return dropped

    def state_dict(self) -> dict:
        return {
            "view_losses": list(self.view_losses),
            "visits": list(self.visits),
            "first_losses": list(self.first_losses),
            "recent_views": [view for view, _ in self.recent],
            "recent_losses": [loss for _, loss in self.recent],
            "named_views": list(self.named_views),
            "dropped_views": list(self.dropped_views),
            "warnings": list(self.warnings),
        }

    def load_state_dict(self, state: dict) -> None:
        self.view_losses = [float(loss) for loss in state["view_losses"]]
        self.visits = [int(visits) for visits in state["visits"]]
        self.first_losses = [float(loss) for loss in state["first_losses"]]
        self.recent = deque(
            ((int(view), float(loss)) for view, loss in zip(state["recent_views"], state["recent_losses"])),
            maxlen=STALL_WINDOW,
        )
        self.named_views = [int(view) for view in state["named_views"]]
        self.dropped_views = [int(view) for view in state["dropped_views"]]
        self.warnings = [str(message) for message in state["warnings"]]
