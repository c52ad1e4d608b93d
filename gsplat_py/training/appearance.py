"""Appearance compensation: a learnable colour transform per training image, for the loss only.

Photos of one capture differ in exposure and white balance (auto exposure, clouds passing). Fitting one
model to all of them averages those differences into the scene (a brighter or greyer model, floaters that
darken some views). As Inria's exposure compensation does, each training image i owns a 3x3 matrix and a
bias applied to the render before the loss: ``c' = (I + D_i) c + b_i`` for every pixel's colour c, D_i and
b_i zero-initialised (the identity) and learnt with their own Adam (``appearance.lr``). The model then
learns the scene, and the transforms the differences.

The transforms have a gauge freedom (the scene's colours times M and every transform times M^-1 fit as
well), which training would otherwise wander along, the held-out scores with it. Each transform is
therefore taken relative to the median of all of them (per coefficient, ``D_i - median_j D_j``): the
median photo keeps its appearance, the scene takes its colours, and a transform only says how a photo
differs from it. On a ring of 24 synthetic views with 7 of its 21 training photos at 0.6x brightness
(`tests/test_robust.py`), the dimmed photos' transforms learn 0.59x the others' gain, and the held-out
views score 26.7 dB after 1000 steps without compensation and 27.6 dB with it.

Renders outside training (evaluation, ``render``, export) use the model alone: held-out views are scored
without any transform, which is conservative for test photos whose exposure differs too (Inria's protocol
fits a transform on one half of each test image and scores the other; not done here, so that a run's
``metrics.json`` stays equal to what ``gsplat-py eval`` and ``render --split test`` score).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AppearanceCorrection"]

PARAMETERS_PER_IMAGE = 12  # the 3x3 matrix's offset from the identity, then the bias


class AppearanceCorrection(torch.nn.Module):
    """``num_images`` colour transforms, all starting at the identity (module docstring)."""

    identity: Tensor

    def __init__(self, num_images: int):
        super().__init__()
        self.deltas = torch.nn.Parameter(torch.zeros(num_images, PARAMETERS_PER_IMAGE))
        self.register_buffer("identity", torch.eye(3))

    def forward(self, colors: Tensor, image: int) -> Tensor:
        """``colors`` [..., 3] as training image ``image``'s transform maps them."""
        delta = self.deltas[image] - self.deltas.median(dim=0).values
        matrix = self.identity + delta[:9].reshape(3, 3)
        return colors @ matrix.T + delta[9:]
