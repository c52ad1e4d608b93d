"""Watching and pausing a running `gsplat_py.training.trainer.Trainer` from outside the training layer.

    class Printer(TrainingHook):
        def after_step(self, trainer, report):
            if report.step % 100 == 0:
                print(report.step, report.loss)

    Trainer(config, hooks=[Printer()]).train()

Every method runs in the training thread between two steps, so a hook may read ``trainer.params``
consistently (the parameters are replaced by densification and updated in place by the optimizer while a step
runs: copy what another thread will read). ``after_step`` and ``after_evaluation`` count as training time
and must return quickly; the time a hook spends in ``wait_while_paused`` is not training time (it is left
out of ``elapsed_s`` and of steps/s). The live viewer (`gsplat_py.tools.viewer`) is such a hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["StepReport", "TrainingHook"]


@dataclass(frozen=True)
class StepReport:
    """The state of a run after a step: ``step`` of ``steps`` done, that step's ``loss``, the model's size and
    SH degree, and ``steps_per_s``, a running average over the last steps of training time."""

    step: int
    steps: int
    loss: float
    num_gaussians: int
    sh_degree: int
    steps_per_s: float


class TrainingHook:
    """Does nothing; subclasses override the methods they need (module docstring)."""

    def after_step(self, trainer: Trainer, report: StepReport) -> None:
        """After every step (and before any evaluation or checkpoint due at that step)."""

    def after_evaluation(self, trainer: Trainer, record: dict) -> None:
        """After each evaluation, with its metrics.json record."""

    def wait_while_paused(self) -> None:
        """After every step: returns when training may go on (at once, unless the hook pauses training)."""
