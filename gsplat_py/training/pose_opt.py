"""Camera pose optimisation: a learnable SE(3) correction per training image.

Each image i owns 9 numbers, a translation t_i and a rotation in the continuous 6D representation
(Zhou et al. 2019: two columns of the matrix, Gram-Schmidt completed), both zero-initialised as offsets from
the identity. The corrected camera-to-world pose is ``camtoworld @ [[R_i, t_i], [0, 1]]``, i.e. the
correction acts in the camera's own frame (gsplat's ``CameraOptModule``). Gradients reach it through the
renderer's ``viewmats`` gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PoseCorrection", "rotation_6d_to_matrix"]

_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """[..., 6] -> [..., 3, 3] rotation matrices whose first two rows are the normalised inputs."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


class PoseCorrection(torch.nn.Module):
    """``num_cameras`` learnable SE(3) corrections, all starting at the identity."""

    identity_6d: Tensor

    def __init__(self, num_cameras: int):
        super().__init__()
        self.deltas = torch.nn.Parameter(torch.zeros(num_cameras, 9))
        self.register_buffer("identity_6d", torch.tensor(_IDENTITY_6D))

    def correction(self, camera_ids: Tensor) -> Tensor:
        """[C, 4, 4] correction transforms of ``camera_ids`` [C]."""
        delta = self.deltas[camera_ids]
        transform = torch.eye(4, dtype=delta.dtype, device=delta.device).repeat(delta.shape[0], 1, 1)
        transform[:, :3, :3] = rotation_6d_to_matrix(delta[:, 3:] + self.identity_6d)
        transform[:, :3, 3] = delta[:, :3]
        return transform

    def forward(self, camtoworlds: Tensor, camera_ids: Tensor) -> Tensor:
        """Corrected [C, 4, 4] camera-to-world poses."""
        return camtoworlds @ self.correction(camera_ids)
