"""The 32-byte-per-splat ``.splat`` format that web viewers load (antimatter15/splat and its descendants).

Each splat is 32 little-endian bytes, with no header; the file length is 32 N:

    offset  0  float32 x, y, z            position
    offset 12  float32 sx, sy, sz         scales (linear: exp of the PLY's log-scales)
    offset 24  uint8   r, g, b, a         colour = clamp(0.5 + SH_C0 * f_dc, 0, 1) * 255,
                                          alpha = sigmoid(opacity) * 255
    offset 28  uint8   qw, qx, qy, qz     normalised rotation, each component round(q * 128 + 128)
                                          clamped to 0..255

Only the SH DC term survives (view-dependent colour is dropped), colours and rotations are quantised to
8 bits, and splats are sorted by decreasing size x opacity, exp(s0 + s1 + s2) * sigmoid(opacity) (the
order the format's converters write, so that viewers stream the biggest splats first).

:func:`read_splat_model` turns a file back into Gaussians of SH degree 0 for rendering: opacities of 0 or
255 are moved half a quantisation step inside (0, 1) and zero scales to 1e-12, so that the logits and
log-scales stay finite.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..model import SH_C0, GaussianSplats, rgb_to_sh
from .atomic import atomic_open
from .paths import PathLike

__all__ = ["SPLAT_DTYPE", "splat_records", "write_splat", "read_splat", "read_splat_model"]


SPLAT_DTYPE = np.dtype(
    [("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)]
)


def splat_records(splats: GaussianSplats) -> np.ndarray:
    """The ``.splat`` records of ``splats`` (a structured array of SPLAT_DTYPE), sorted as written."""
    splats.validate()
    means = splats.means.detach().double().cpu().numpy()
    log_scales = splats.log_scales.detach().double().cpu().numpy()
    logits = splats.logit_opacities.detach().double().cpu().numpy()
    dc = splats.sh[:, 0].detach().double().cpu().numpy()
    quats = splats.quats.detach().double().cpu().numpy()

    opacity = 1.0 / (1.0 + np.exp(-logits))
    order = np.argsort(-np.exp(log_scales.sum(axis=1)) * opacity, kind="stable")
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    unit_quats = quats / np.where(norms > 0, norms, 1.0)

    records = np.empty(len(order), dtype=SPLAT_DTYPE)
    records["position"] = means[order]
    records["scale"] = np.exp(log_scales[order])
    rgb = np.clip(0.5 + SH_C0 * dc[order], 0.0, 1.0)
    records["rgba"] = np.round(np.concatenate([rgb, opacity[order, None]], axis=1) * 255.0).astype(np.uint8)
    records["rotation"] = np.clip(np.round(unit_quats[order] * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return records


def write_splat(path: PathLike, splats: GaussianSplats) -> None:
    """Write ``splats`` as a ``.splat`` file, atomically (ValueError before writing if they are invalid)."""
    try:
        records = splat_records(splats)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{os.fspath(path)}: cannot write splats: {error}") from None
    with atomic_open(path) as file:
        file.write(records.tobytes())


def read_splat(path: PathLike) -> dict[str, torch.Tensor]:
    """Decode a ``.splat`` file: means [N, 3], scales [N, 3], colors [N, 3] and opacities [N] in [0, 1],
    quats [N, 4] (w x y z, dequantised, not renormalised). ValueError if the size is not a multiple of 32."""
    with open(path, "rb") as file:
        data = file.read()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise ValueError(f"{os.fspath(path)}: {len(data)} bytes is not a whole number of 32-byte splats")
    records = np.frombuffer(data, dtype=SPLAT_DTYPE)
    rgba = records["rgba"].astype(np.float32) / 255.0
    return {
        "means": torch.from_numpy(records["position"].copy()),
        "scales": torch.from_numpy(records["scale"].copy()),
        "colors": torch.from_numpy(rgba[:, :3].copy()),
        "opacities": torch.from_numpy(rgba[:, 3].copy()),
        "quats": torch.from_numpy((records["rotation"].astype(np.float32) - 128.0) / 128.0),
    }


def read_splat_model(path: PathLike) -> GaussianSplats:
    """The Gaussians of a ``.splat`` file (SH degree 0; module docstring). ValueError naming the file if its
    size is not a multiple of 32 bytes."""
    decoded = read_splat(path)
    half_step = 0.5 / 255.0
    opacities = decoded["opacities"].double().clamp(half_step, 1.0 - half_step)
    quats = decoded["quats"]
    # a zero quaternion (all four bytes 128) has no rotation to normalise: take the identity
    zero = quats.abs().sum(dim=1) == 0
    quats[zero] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    return GaussianSplats(
        means=decoded["means"],
        quats=quats,
        log_scales=torch.log(decoded["scales"].clamp_min(1e-12)),
        logit_opacities=torch.log(opacities / (1.0 - opacities)).float(),
        sh=rgb_to_sh(decoded["colors"])[:, None, :],
    )
